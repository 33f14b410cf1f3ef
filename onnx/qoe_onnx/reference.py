"""The whole VQA² scoring pipeline in PyTorch, exactly as the spec describes it: frame
sampling, Pillow bicubic resize, normalisation, both branches, sequence assembly, prompt,
level softmax and score. Everything else (ONNX graphs, the ONNX Runtime pipeline, the Rust
runtime) is checked against it.

It runs the decoder on the whole sequence and reads the logits at the logit position with the
full ``lm_head``: the plain method, not the bundle's shortcut.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer

from . import prompts, vqa2


def keyframe_indices(n: int, fps: float) -> list[int]:
    """The first frame of every (possibly partial) second (spec section 2)."""
    r = max(1, round(fps))
    return list(range(0, n, r)) if n >= r else [0]


def motion_indices(n: int, stride: int = 1, trim_before_stride: int = 1, multiple: int = 4) -> list[int]:
    """All frames (or every ``stride``-th after trimming to ``trim_before_stride``), trimmed to a
    multiple of ``multiple``."""
    idx = list(range(n // trim_before_stride * trim_before_stride))[::stride]
    return idx[: len(idx) // multiple * multiple]


def preprocess_normalised(frames: np.ndarray, size: int, mean: list[float], std: list[float]) -> torch.Tensor:
    """uint8 RGB [n, H, W, 3] → float [n, 3, size, size]: Pillow bicubic squash to size×size,
    x/255, (x − mean)/std per channel."""
    mean_a, std_a = np.array(mean, np.float32), np.array(std, np.float32)
    out = []
    for frame in frames:
        resized = Image.fromarray(frame).resize((size, size), Image.BICUBIC)
        x = np.asarray(resized, dtype=np.float32) / 255.0
        out.append(((x - mean_a) / std_a).transpose(2, 0, 1))
    return torch.from_numpy(np.stack(out))


def preprocess(frames: np.ndarray, size: int) -> torch.Tensor:
    """SigLIP's normalisation, (x/255 − 0.5)/0.5 (spec section 3)."""
    return preprocess_normalised(frames, size, [0.5, 0.5, 0.5], [0.5, 0.5, 0.5])


def stall_text(fmt: str, stall: dict | None, templates: dict | None = None) -> str:
    """The stall sentence of a streaming prompt (templates: ``prompts.STALL_TEXT`` or a
    bundle's ``prompt.stall_text``)."""
    templates = templates or prompts.STALL_TEXT
    if fmt == "none":
        return ""
    stall = stall or {}
    if fmt == "per-frame":
        return templates[fmt].format(sequence=" ".join(str(v) for v in stall.get("sequence", [])))
    durations = stall.get("durations", [])
    return templates[fmt].format(
        count=stall.get("count", 0),
        total=f"{stall.get('total', 0.0):.1f}",
        durations=", ".join(f"{d:.1f}" for d in durations) if durations else "none",
        initial=f"{stall.get('initial', 0.0):.1f}",
        ratio=f"{100.0 * stall.get('ratio', 0.0):.1f}",
        since=f"{stall.get('since', 0.0):.1f}",
    )


def fill(text: str, fields: dict) -> str:
    for key, value in fields.items():
        text = text.replace("{" + key + "}", str(value))
    return text


@dataclass
class Result:
    score: float
    probabilities: list[float]
    level_logits: list[float]
    token_ids: list[int]  # -1 where an embedding block stands
    keyframe_indices: list[int]
    motion_indices: list[int]
    tensors: dict[str, np.ndarray] = field(default_factory=dict)


def run(
    model: vqa2.VQA2,
    tokenizer: Tokenizer,
    frames: np.ndarray,
    fps: float,
    variant_name: str,
    stall_format: str = "none",
    stall: dict | None = None,
    question: str = "",
    _score: bool = True,
) -> Result:
    variant = prompts.variant(variant_name, stall_format)
    size = model.cfg.vision["image_size"]
    kf_idx = keyframe_indices(len(frames), fps)
    trim_before = 8 if variant["motion_stride"] == 8 else 1
    mo_idx = motion_indices(len(frames), variant["motion_stride"], trim_before, variant["motion_trim"])
    if not mo_idx:
        raise ValueError(f"{len(frames)} frames give no motion frames (a multiple of {variant['motion_trim']} is needed)")
    with torch.no_grad():
        kf_pixels = preprocess(frames[kf_idx], size)
        keyframe_embeds = model.keyframe(kf_pixels)
        kf_block = torch.cat([keyframe_embeds.flatten(0, 1), model.image_newline[None]], 0)
        mo_pixels = preprocess(frames[mo_idx], size)
        motion_feat = model.motion(mo_pixels.permute(1, 0, 2, 3)[None])
        motion_embeds = model.motion_projector(motion_feat, torch.arange(len(mo_idx)))
        blocks = {"keyframes": kf_block, "motion": motion_embeds}
        fields = {"K": len(kf_idx), "T": len(mo_idx), "question": question, "stall": stall_text(stall_format, stall)}
        pieces, token_ids = [], []
        for segment in variant["segments"]:
            if "embed" in segment:
                pieces.append(blocks[segment["embed"]])
                token_ids += [-1] * len(blocks[segment["embed"]])
            else:
                ids = tokenizer.encode(fill(segment["text"], fields)).ids
                token_ids += ids
                if ids:
                    pieces.append(model.llm.embed_tokens(torch.tensor(ids)))
        inputs_embeds = torch.cat(pieces, 0)[None]
        if not _score:
            return Result(0.0, [], [], token_ids, kf_idx, mo_idx, {"inputs_embeds": inputs_embeds[0].numpy()})
        hidden = model.llm(inputs_embeds=inputs_embeds, use_cache=False).last_hidden_state
        logits = hidden[0, variant["logit_position"]] @ model.lm_head.T
    level_ids = [tokenizer.encode(w).ids[0] for w in prompts.LEVELS]
    level_logits = logits[level_ids].double()
    probs = torch.softmax(level_logits, 0)
    score = float(probs @ torch.tensor(variant["weights"], dtype=torch.float64))
    return Result(
        score=score,
        probabilities=probs.tolist(),
        level_logits=level_logits.tolist(),
        token_ids=token_ids,
        keyframe_indices=kf_idx,
        motion_indices=mo_idx,
        tensors={
            "keyframe_pixels": kf_pixels.numpy(),
            "motion_pixels": mo_pixels.numpy(),
            "keyframe_embeds": keyframe_embeds.numpy(),
            "motion_feat": motion_feat.numpy(),
            "motion_embeds": motion_embeds.numpy(),
            "inputs_embeds": inputs_embeds[0].numpy(),
        },
    )


def generate(
    model: vqa2.VQA2,
    tokenizer: Tokenizer,
    frames: np.ndarray,
    fps: float,
    question: str,
    rows: list[int] | None = None,
    max_new_tokens: int = 32,
    step_logits: list | None = None,
) -> list[int]:
    """Greedy generation without a cache: the whole sequence again at every step, argmax over
    ``lm_head`` (or its ``rows``), until an end token."""
    r = run(model, tokenizer, frames, fps, "assistant", question=question, _score=False)
    sequence = torch.from_numpy(r.tensors["inputs_embeds"])
    head = model.lm_head if rows is None else model.lm_head[rows]
    out = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            hidden = model.llm(inputs_embeds=sequence[None], use_cache=False).last_hidden_state[0, -1]
            logits = hidden @ head.T
            if step_logits is not None:
                step_logits.append(logits.numpy())
            row = int(torch.argmax(logits))
            token = row if rows is None else rows[row]
            if token in (151645, 151643):
                break
            out.append(token)
            sequence = torch.cat([sequence, model.llm.embed_tokens(torch.tensor([token]))])
    return out


def synthetic_frames(n: int, height: int, width: int, seed: int) -> np.ndarray:
    """Deterministic moving pictures (gradients, a moving square, noise) as uint8 RGB."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    frames = []
    base = rng.integers(0, 256, size=(height, width, 3))
    for t in range(n):
        f = np.stack([(x * 255 // max(1, width - 1) + 9 * t) % 256, (y * 255 // max(1, height - 1)) % 256, (x + y + 17 * t) % 256], -1)
        f = (f + base) // 2
        s = max(2, min(height, width) // 4)
        oy, ox = (3 * t) % max(1, height - s), (5 * t) % max(1, width - s)
        f[oy : oy + s, ox : ox + s] = [250, 30, 30]
        frames.append(f.astype(np.uint8))
    return np.stack(frames)
