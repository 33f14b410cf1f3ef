"""Tiny LMM-VQA-shaped and CP-LLM-shaped models, checkpoints, exporters and references: they
prove that the bundle format expresses the other seed families (spec section 13, design
section 3). They are shaped like those models, not ports of their code: the real LMM-VQA and
CP-LLM checkpoint layouts are not available here.

* **LMM-VQA**: CLIP keyframes (224 px, CLIP normalisation, 1 fps, padded or trimmed to 8),
  per-second SlowFast chunks (32 frames from each second's first frame, 224 px, Kinetics
  normalisation; slow input every 4th frame) pooled to one 2304-d token per chunk, projected
  to the CLIP width; each frame's 257 CLIP tokens plus its motion token, averaged over frames
  into 258 tokens, then a visual projector into the decoder (a Llama); the score is answered
  as text and parsed as a number.
* **CP-LLM**: a high-level (ViT) and a low-level (CNN, 448 px) vision encoder per keyframe and
  an MLP quality head giving a per-frame score, averaged over keyframes; no decoder.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import CLIPVisionConfig, LlamaConfig, SiglipVisionConfig
from transformers.models.clip.modeling_clip import CLIPVisionModel
from transformers.models.llama.modeling_llama import LlamaModel
from transformers.models.siglip.modeling_siglip import SiglipVisionModel

from . import bundle, checkpoint as ck, export
from .fake import randomize_module
from .reference import keyframe_indices, preprocess_normalised
from .slowfast import FastPathway

CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
KINETICS_MEAN, KINETICS_STD = [0.45, 0.45, 0.45], [0.225, 0.225, 0.225]
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
LMM_KEYFRAMES = 8
CHUNK_FRAMES = 32


# ---------------------------------------------------------------------------------------
# LMM-VQA-shaped


class TinySlowFast(nn.Module):
    """[chunks, 3, 32, S, S] → [chunks, 2304]: the fast pathway (real shapes) pooled to 256,
    and a small slow pathway on every 4th frame pooled to 2048."""

    def __init__(self) -> None:
        super().__init__()
        self.fast = FastPathway()
        self.slow = nn.Sequential(
            nn.Conv3d(3, 16, (1, 7, 7), stride=(1, 4, 4), padding=(0, 3, 3)),
            nn.ReLU(),
            nn.Conv3d(16, 32, (3, 3, 3), stride=(1, 2, 2), padding=1),
            nn.ReLU(),
        )
        self.slow_out = nn.Linear(32, 2048)

    def forward(self, chunks: torch.Tensor) -> torch.Tensor:
        fast = chunks
        for block in self.fast.feature_extraction:
            fast = block(fast)
        slow = self.slow(chunks[:, :, ::4]).mean(dim=(2, 3, 4))
        return torch.cat([self.slow_out(slow), fast.mean(dim=(2, 3, 4))], 1)


class LmmVqa(nn.Module):
    def __init__(self, cfg: dict) -> None:
        super().__init__()
        vision = CLIPVisionConfig(**cfg["vision_config"])
        vision._attn_implementation = "eager"
        self.vis_encoder = CLIPVisionModel(vision)
        self.motion_encoder = TinySlowFast()
        width = vision.hidden_size
        self.motion_projection = nn.Sequential(nn.Linear(2304, width), nn.LayerNorm(width, eps=1e-12))
        self.projection = nn.Sequential(nn.Linear(width, cfg["hidden_size"]), nn.LayerNorm(cfg["hidden_size"], eps=1e-12))
        llama = LlamaConfig(
            hidden_size=cfg["hidden_size"],
            intermediate_size=cfg["intermediate_size"],
            num_hidden_layers=cfg["num_hidden_layers"],
            num_attention_heads=cfg["num_attention_heads"],
            num_key_value_heads=cfg["num_key_value_heads"],
            vocab_size=cfg["vocab_size"],
            tie_word_embeddings=False,
        )
        llama._attn_implementation = "eager"
        self.lang_decoder = LlamaModel(llama)
        self.lm_head = nn.Linear(cfg["hidden_size"], cfg["vocab_size"], bias=False)


class ClipTokens(nn.Module):
    def __init__(self, clip: CLIPVisionModel) -> None:
        super().__init__()
        self.clip = clip

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.clip(pixel_values=pixel_values).last_hidden_state


class MotionTokens(nn.Module):
    def __init__(self, encoder: TinySlowFast, projection: nn.Module) -> None:
        super().__init__()
        self.encoder, self.projection = encoder, projection

    def forward(self, chunks: torch.Tensor) -> torch.Tensor:
        return self.projection(self.encoder(chunks))


class VisualProjector(nn.Module):
    """[frames, 257, C] CLIP tokens and [frames, C] motion tokens → [258, H]: per-frame
    concatenation, mean over frames, projection."""

    def __init__(self, projection: nn.Module) -> None:
        super().__init__()
        self.projection = projection

    def forward(self, clip_tokens: torch.Tensor, motion_tokens: torch.Tensor) -> torch.Tensor:
        fused = torch.cat([clip_tokens, motion_tokens[:, None]], 1).mean(0)
        return self.projection(fused)


TINY_LMM_CONFIG = {
    "architectures": ["LmmVqaForCausalLM"],
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 152064,
    "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 224, "patch_size": 14},
}

LMM_SEGMENTS = [
    {"text": "<|im_start|>user"},
    {"text": "\n"},
    {"embed": "visual"},
    {"text": "\nHow would you rate the quality of this video?"},
    {"text": "<|im_end|>"},
    {"text": "\n"},
    {"text": "<|im_start|>assistant"},
    {"text": "\n"},
    {"text": "The quality score of this video is"},
]


def _randomize(module: nn.Module, seed: int) -> None:
    randomize_module(module, torch.Generator().manual_seed(seed))


def _write(folder: Path, model: nn.Module, config: dict, tokenizer_json: Path | None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    if tokenizer_json:
        shutil.copy(tokenizer_json, folder / "tokenizer.json")
    return folder


def _load(folder: Path, model: nn.Module, what: str) -> nn.Module:
    tensors = load_file(str(ck.shard_files(folder)[0]))
    ck.take(tensors, "", model, what)
    return model.eval()


def write_lmm_vqa(folder: Path, tokenizer_json: Path, seed: int = 1) -> Path:
    model = LmmVqa(TINY_LMM_CONFIG)
    _randomize(model, seed)
    return _write(folder, model, TINY_LMM_CONFIG, tokenizer_json)


def load_lmm_vqa(folder: Path) -> LmmVqa:
    return _load(folder, LmmVqa(ck.read_config(folder)), "LMM-VQA-shaped model")


def lmm_chunk_indices(n: int, fps: float) -> list[list[int]]:
    """For every second, 32 frames from its first frame, the last frame repeated past the end."""
    r = max(1, round(fps))
    return [[min(start + i, n - 1) for i in range(CHUNK_FRAMES)] for start in range(0, n, r)]


def lmm_keyframe_indices(n: int, fps: float, count: int = LMM_KEYFRAMES) -> list[int]:
    """1 fps keyframes, trimmed or padded (last one repeated) to ``count``."""
    idx = keyframe_indices(n, fps)[:count]
    return idx + [idx[-1]] * (count - len(idx))


def parse_number(text: str, low: float, high: float) -> float | None:
    """The first number in ``text`` mapped from [low, high] to [0, 1], or None."""
    match = re.search(r"\d+(?:\.\d+)?", text)
    if not match:
        return None
    return float(np.clip((float(match.group()) - low) / (high - low), 0.0, 1.0))


def lmm_inputs(frames: np.ndarray, fps: float) -> tuple[torch.Tensor, torch.Tensor, list[int], list[list[int]]]:
    kf = lmm_keyframe_indices(len(frames), fps)
    chunks = lmm_chunk_indices(len(frames), fps)
    pixels = preprocess_normalised(frames[kf], 224, CLIP_MEAN, CLIP_STD)
    motion = torch.stack([preprocess_normalised(frames[c], 224, KINETICS_MEAN, KINETICS_STD).permute(1, 0, 2, 3) for c in chunks])
    return pixels, motion, kf, chunks


def lmm_reference(model: LmmVqa, tokenizer, frames: np.ndarray, fps: float, rows: list[int], max_new_tokens: int = 8) -> dict:
    """The LMM-VQA-shaped pipeline in PyTorch, greedy answer without a cache."""
    pixels, motion, kf, chunks = lmm_inputs(frames, fps)
    with torch.no_grad():
        clip_tokens = model.vis_encoder(pixel_values=pixels).last_hidden_state
        motion_tokens = model.motion_projection(model.motion_encoder(motion))
        # One motion token per second: keyframe i takes chunk i (repeated past the last chunk).
        per_frame_motion = motion_tokens[[min(i, len(chunks) - 1) for i in range(LMM_KEYFRAMES)]]
        visual = VisualProjector(model.projection)(clip_tokens, per_frame_motion)
        pieces = []
        for seg in LMM_SEGMENTS:
            if "embed" in seg:
                pieces.append(visual)
            else:
                ids = tokenizer.encode(seg["text"]).ids
                pieces.append(model.lang_decoder.embed_tokens(torch.tensor(ids)))
        sequence = torch.cat(pieces)
        head = model.lm_head.weight[rows]
        out = []
        for _ in range(max_new_tokens):
            hidden = model.lang_decoder(inputs_embeds=sequence[None]).last_hidden_state[0, -1]
            token = rows[int(torch.argmax(hidden @ head.T))]
            if token in (151645, 151643):
                break
            out.append(token)
            sequence = torch.cat([sequence, model.lang_decoder.embed_tokens(torch.tensor([token]))])
    text = tokenizer.decode(out)
    return {"generated_ids": out, "text": text, "score": parse_number(text, 1.0, 5.0), "visual": visual.numpy()}


def export_lmm_vqa(ckpt: Path, out: Path, name: str = "lmm-vqa-tiny") -> dict:
    from tokenizers import Tokenizer

    model = load_lmm_vqa(ckpt)
    cfg = ck.read_config(ckpt)
    h, width = cfg["hidden_size"], cfg["vision_config"]["hidden_size"]
    tok_path = ckpt / "tokenizer.json"
    tok = Tokenizer.from_file(str(tok_path))
    texts = [s["text"] for s in LMM_SEGMENTS if "text" in s] + [str(d) for d in range(10)] + [".", " "]
    rows = sorted({i for t in texts for i in tok.encode(t).ids} | {151645})
    out.mkdir(parents=True, exist_ok=True)
    layers, kv = cfg["num_hidden_layers"], cfg["num_key_value_heads"]
    head_dim = h // cfg["num_attention_heads"]
    past = [f"past_key_values.{i}.{t}" for i in range(layers) for t in ("key", "value")]
    present = [f"present.{i}.{t}" for i in range(layers) for t in ("key", "value")]
    from .vqa2 import GenerateDecoder

    with torch.no_grad():
        parts = {
            "keyframe_encoder": export.export_graph(
                ClipTokens(model.vis_encoder), (torch.zeros(2, 3, 224, 224),), out / "clip_encoder.onnx",
                [bundle.tensor("pixel_values", ["keyframes", 3, 224, 224])],
                [bundle.tensor("clip_tokens", ["keyframes", 257, width])],
                {"pixel_values": {0: "keyframes"}, "clip_tokens": {0: "keyframes"}},
            ),
            "motion_encoder": export.export_graph(
                MotionTokens(model.motion_encoder, model.motion_projection), (torch.zeros(2, 3, CHUNK_FRAMES, 224, 224),),
                out / "slowfast_chunks.onnx",
                [bundle.tensor("chunks", ["chunks", 3, CHUNK_FRAMES, 224, 224])],
                [bundle.tensor("motion_tokens", ["chunks", width])],
                {"chunks": {0: "chunks"}, "motion_tokens": {0: "chunks"}},
            ),
            "visual_projector": export.export_graph(
                VisualProjector(model.projection), (torch.zeros(LMM_KEYFRAMES, 257, width), torch.zeros(LMM_KEYFRAMES, width)),
                out / "visual_projector.onnx",
                [bundle.tensor("clip_tokens", [LMM_KEYFRAMES, 257, width]), bundle.tensor("motion_tokens", [LMM_KEYFRAMES, width])],
                [bundle.tensor("visual_embeds", [258, h])],
                {},
            ),
            "token_embedding": export.export_graph(
                export.TokenEmbedding(model.lang_decoder.embed_tokens.weight[rows].clone()), (torch.zeros(3, dtype=torch.int64),),
                out / "embed_tokens.onnx",
                [bundle.tensor("rows", ["tokens"], "int64")], [bundle.tensor("token_embeds", ["tokens", h])],
                {"rows": {0: "tokens"}, "token_embeds": {0: "tokens"}},
            ),
        }
        dynamic = {"inputs_embeds": {1: "sequence"}, "attention_mask": {1: "total"}, "position_ids": {1: "sequence"}, "logits": {1: "sequence"}}
        dynamic.update({n: {2: "past"} for n in past})
        dynamic.update({n: {2: "total"} for n in present})
        parts["decoder_generate"] = export.export_graph(
            GenerateDecoder(model.lang_decoder, model.lm_head.weight[rows].clone()),
            (torch.zeros(1, 2, h), torch.ones(1, 5, dtype=torch.int64), torch.tensor([[3, 4]]), *[torch.zeros(1, kv, 3, head_dim) for _ in past]),
            out / "decoder_generate.onnx",
            [bundle.tensor("inputs_embeds", [1, "sequence", h]), bundle.tensor("attention_mask", [1, "total"], "int64"),
             bundle.tensor("position_ids", [1, "sequence"], "int64")] + [bundle.tensor(n, [1, kv, "past", head_dim]) for n in past],
            [bundle.tensor("logits", [1, "sequence", len(rows)])] + [bundle.tensor(n, [1, kv, "total", head_dim]) for n in present],
            dynamic,
        )
    shutil.copy(tok_path, out / "tokenizer.json")
    pre = {"resize": "pillow-bicubic", "rescale": 1 / 255, "channels": "rgb", "layout": "nchw", "size": [224, 224]}
    manifest = {
        "format": bundle.FORMAT,
        "format_version": bundle.FORMAT_VERSION,
        "name": name,
        "family": "lmm-vqa",
        "variant": "shaped-tiny",
        "precision": "fp32",
        "source": {"checkpoint": ckpt.name, "exporter": "qoe_onnx.families"},
        "sampling": {
            "keyframes": {"per_second": 1, "rule": "first-frame-of-each-second", "count": LMM_KEYFRAMES, "pad": "repeat-last"},
            "motion": {"mode": "chunks", "every_seconds": 1, "chunk_frames": CHUNK_FRAMES, "pad": "repeat-last", "slow_stride": 4},
        },
        "parts": parts,
        "preprocess": {
            "keyframe_encoder": {**pre, "mean": CLIP_MEAN, "std": CLIP_STD},
            "motion_encoder": {**pre, "mean": KINETICS_MEAN, "std": KINETICS_STD},
        },
        "tokens": {
            "keyframe_tokens": 257,
            "motion_tokens_per_chunk": 1,
            # Keyframe i (second i) takes chunk i; padded keyframes take the last chunk.
            "motion_for_keyframe": "chunk-of-the-same-second",
            "fusion": {"part": "visual_projector", "rule": "concat-per-frame-mean-over-frames"},
            "visual_tokens": 258,
        },
        "decoder": {
            "architecture": "llama",
            "hidden_size": h,
            "layers": layers,
            "attention_heads": cfg["num_attention_heads"],
            "kv_heads": kv,
            "head_dim": head_dim,
            "vocab_size": cfg["vocab_size"],
            "max_sequence": 4096,
            "generation": {"eos_token_ids": [151645, 151643], "logits_over": "vocabulary rows"},
        },
        "vocabulary": {"size": cfg["vocab_size"], "rows": "subset", "rows_constant": "vocabulary_rows"},
        "constants": {"vocabulary_rows": bundle.write_raw(out, "vocabulary_rows.i64", np.array(rows, np.int64))},
        "tokenizer": "tokenizer.json",
        "prompt": {"blocks": {"visual": ["visual"]}, "segments": LMM_SEGMENTS, "stall_format": "none", "stall_text": {}},
        "score": {"mode": "generated-number", "max_new_tokens": 8, "range": [1.0, 5.0]},
    }
    (out / bundle.MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    bundle.validate(out)
    return manifest


# ---------------------------------------------------------------------------------------
# CP-LLM-shaped


class CpLlm(nn.Module):
    def __init__(self, cfg: dict) -> None:
        super().__init__()
        vision = SiglipVisionConfig(**cfg["high_level_config"], vision_use_head=False)
        vision._attn_implementation = "eager"
        self.high_level = SiglipVisionModel(vision)
        c = cfg["low_level_channels"]
        self.low_level = nn.Sequential(
            nn.Conv2d(3, c, 7, stride=4, padding=3), nn.GELU(),
            nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(2 * c, 2 * c, 3, stride=2, padding=1), nn.GELU(),
        )
        dim = vision.hidden_size + 2 * c
        self.quality_head = nn.Sequential(nn.Linear(dim, cfg["head_hidden"]), nn.GELU(), nn.Linear(cfg["head_hidden"], 1))


class HighLevel(nn.Module):
    def __init__(self, vit: SiglipVisionModel) -> None:
        super().__init__()
        self.vit = vit

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.vit(pixel_values=pixel_values).last_hidden_state.mean(1)


class LowLevel(nn.Module):
    def __init__(self, cnn: nn.Module) -> None:
        super().__init__()
        self.cnn = cnn

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.cnn(pixel_values).mean(dim=(2, 3))


class QualityHead(nn.Module):
    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.head(torch.cat([high, low], 1)))[:, 0]


TINY_CP_CONFIG = {
    "architectures": ["CpLlmQualityHead"],
    "high_level_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 224, "patch_size": 16},
    "low_level_channels": 8,
    "head_hidden": 32,
}


def write_cp_llm(folder: Path, seed: int = 2) -> Path:
    model = CpLlm(TINY_CP_CONFIG)
    _randomize(model, seed)
    with torch.no_grad():
        model.quality_head[2].weight.mul_(20.0)  # spread the random scores over (0, 1)
    return _write(folder, model, TINY_CP_CONFIG, None)


def load_cp_llm(folder: Path) -> CpLlm:
    return _load(folder, CpLlm(ck.read_config(folder)), "CP-LLM-shaped model")


def cp_reference(model: CpLlm, frames: np.ndarray, fps: float) -> dict:
    kf = keyframe_indices(len(frames), fps)
    with torch.no_grad():
        high = HighLevel(model.high_level)(preprocess_normalised(frames[kf], 224, CLIP_MEAN, CLIP_STD))
        low = LowLevel(model.low_level)(preprocess_normalised(frames[kf], 448, IMAGENET_MEAN, IMAGENET_STD))
        per_frame = QualityHead(model.quality_head)(high, low)
    return {"frame_scores": per_frame.numpy(), "score": float(per_frame.double().mean()), "keyframe_indices": kf}


def export_cp_llm(ckpt: Path, out: Path, tokenizer_json: Path, name: str = "cp-llm-tiny") -> dict:
    model = load_cp_llm(ckpt)
    cfg = ck.read_config(ckpt)
    dh, dl = cfg["high_level_config"]["hidden_size"], 2 * cfg["low_level_channels"]
    out.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        parts = {
            "high_level_encoder": export.export_graph(
                HighLevel(model.high_level), (torch.zeros(2, 3, 224, 224),), out / "high_level.onnx",
                [bundle.tensor("pixel_values", ["keyframes", 3, 224, 224])], [bundle.tensor("high_level", ["keyframes", dh])],
                {"pixel_values": {0: "keyframes"}, "high_level": {0: "keyframes"}},
            ),
            "low_level_encoder": export.export_graph(
                LowLevel(model.low_level), (torch.zeros(2, 3, 448, 448),), out / "low_level.onnx",
                [bundle.tensor("pixel_values", ["keyframes", 3, 448, 448])], [bundle.tensor("low_level", ["keyframes", dl])],
                {"pixel_values": {0: "keyframes"}, "low_level": {0: "keyframes"}},
            ),
            "quality_head": export.export_graph(
                QualityHead(model.quality_head), (torch.zeros(2, dh), torch.zeros(2, dl)), out / "quality_head.onnx",
                [bundle.tensor("high_level", ["keyframes", dh]), bundle.tensor("low_level", ["keyframes", dl])],
                [bundle.tensor("frame_scores", ["keyframes"])],
                {"high_level": {0: "keyframes"}, "low_level": {0: "keyframes"}, "frame_scores": {0: "keyframes"}},
            ),
        }
    # CP-LLM can also explain with its LLM; the scoring path needs none, but the format
    # keeps a tokenizer for every bundle.
    shutil.copy(tokenizer_json, out / "tokenizer.json")
    pre = {"resize": "pillow-bicubic", "rescale": 1 / 255, "channels": "rgb", "layout": "nchw"}
    manifest = {
        "format": bundle.FORMAT,
        "format_version": bundle.FORMAT_VERSION,
        "name": name,
        "family": "cp-llm",
        "variant": "shaped-tiny",
        "precision": "fp32",
        "source": {"checkpoint": ckpt.name, "exporter": "qoe_onnx.families"},
        "sampling": {"keyframes": {"per_second": 1, "rule": "first-frame-of-each-second", "count": None}, "motion": None},
        "parts": parts,
        "preprocess": {
            "high_level_encoder": {**pre, "size": [224, 224], "mean": CLIP_MEAN, "std": CLIP_STD},
            "low_level_encoder": {**pre, "size": [448, 448], "mean": IMAGENET_MEAN, "std": IMAGENET_STD},
        },
        "tokens": None,
        "decoder": None,
        "vocabulary": None,
        "constants": {},
        "tokenizer": "tokenizer.json",
        "prompt": None,
        "score": {"mode": "quality-head", "part": "quality_head", "aggregate": "mean-over-keyframes", "range": [0.0, 1.0]},
    }
    (out / bundle.MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    bundle.validate(out)
    return manifest

