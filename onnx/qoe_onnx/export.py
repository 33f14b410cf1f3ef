"""Exports a VQA² checkpoint (LLaVA-OneVision-Qwen2 + SlowFast) to a gst-qoe model bundle.

    python -m qoe_onnx.export --checkpoint CKPT_DIR --out BUNDLE_DIR --variant ugc

Graphs (spec section 11): ``keyframe_encoder`` (SigLIP without its last layer and post-LN,
projector, 27→14 bilinear pool), ``motion_fast`` (fast pathway, mean over H and W),
``motion_projector`` (position table + MLP), ``embed_tokens`` (token embedding rows) and
``decoder_score`` (Qwen2 on ``inputs_embeds``, only the level words' ``lm_head`` rows, at the
last position; the runtime drops the tokens after the logit position, which cannot affect it
under a causal mask).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from . import bundle, prompts, vqa2
from .checkpoint import CheckpointError
from .slowfast import FEATURES, TEMPORAL_CONTEXT

VARIANTS = ("ugc", "ugc-2411", "streaming", "assistant")
OPSET = 17
PREPROCESS = {
    "resize": "pillow-bicubic",
    "rescale": 1.0 / 255.0,
    "mean": [0.5, 0.5, 0.5],
    "std": [0.5, 0.5, 0.5],
    "channels": "rgb",
    "layout": "nchw",
}


class TokenEmbedding(nn.Module):
    def __init__(self, rows: torch.Tensor) -> None:
        super().__init__()
        self.table = nn.Embedding.from_pretrained(rows, freeze=True)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return self.table(rows)


def vocabulary_rows(tokenizer_json: Path, variant: dict, vocab_size: int, subset: bool) -> list[int] | None:
    """Token ids the bundle's embedding table keeps: all (None), or those the prompts, the
    stall texts and the level words can produce (small test bundles)."""
    if not subset:
        return None
    from tokenizers import Tokenizer

    from .reference import fill, stall_text

    tok = Tokenizer.from_file(str(tokenizer_json))
    texts = [s["text"] for s in variant["segments"] if "text" in s]
    # The same segments as filled at run time, since filling changes word boundaries (".How").
    for fmt in prompts.STALL_TEXT:
        sample = {"K": 8, "T": 240, "question": "How would you rate the quality of this video?", "stall": stall_text(fmt, None)}
        texts += [fill(text, sample) for text in texts]
    texts += list(prompts.STALL_TEXT.values()) + prompts.LEVELS + [prompts.ASSISTANT_INTRO]
    texts += [str(d) for d in range(10)] + [".", " ", ",", " 0", " 1", "-", "?"]
    ids = set()
    for text in texts:
        ids.update(tok.encode(text).ids)
    return sorted(i for i in ids if i < vocab_size)


def export_graph(module: nn.Module, args: tuple, path: Path, inputs: list[dict], outputs: list[dict], dynamic: dict) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            args,
            str(path),
            input_names=[i["name"] for i in inputs],
            output_names=[o["name"] for o in outputs],
            dynamic_axes=dynamic,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    return {"file": path.name, "inputs": inputs, "outputs": outputs}


def to_fp16(path: Path) -> None:
    """fp16 weights and compute, fp32 inputs and outputs; normalisations and softmax stay
    fp32 (spec section 11.4)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(path))
    model = convert_float_to_float16(
        model,
        keep_io_types=True,
        op_block_list=["LayerNormalization", "ReduceMean", "Pow", "Sqrt", "Softmax", "Div", "Erf", "Tanh"],
    )
    onnx.save(model, str(path))


def save_external(path: Path) -> None:
    model = onnx.load(str(path))
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=path.name + ".data")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def export(
    checkpoint: Path,
    out: Path,
    variant_name: str,
    dtype: str = "fp32",
    vocab_subset: bool = False,
    stall_format: str = "none",
    external_data: bool = False,
    name: str | None = None,
) -> dict:
    if variant_name not in VARIANTS:
        raise CheckpointError(f"unknown variant {variant_name!r}; choose one of {', '.join(VARIANTS)}")
    if dtype not in ("fp32", "fp16"):
        raise CheckpointError(f"unknown dtype {dtype!r}; choose fp32 or fp16")
    tokenizer_json = checkpoint / "tokenizer.json"
    if not tokenizer_json.exists():
        raise CheckpointError(f"{checkpoint}: no tokenizer.json (python -m qoe_onnx.tokenizer builds Qwen2's)")
    variant = prompts.variant(variant_name, stall_format)
    model = vqa2.load(checkpoint)
    cfg = model.cfg
    h, size, grid = cfg.hidden_size, cfg.vision["image_size"], cfg.grid
    pooled = model.keyframe.pooled
    out.mkdir(parents=True, exist_ok=True)
    parts = {}

    with torch.no_grad():
        parts["keyframe_encoder"] = export_graph(
            model.keyframe,
            (torch.zeros(2, 3, size, size),),
            out / "keyframe_encoder.onnx",
            [bundle.tensor("pixel_values", ["keyframes", 3, size, size])],
            [bundle.tensor("keyframe_embeds", ["keyframes", pooled * pooled, h])],
            {"pixel_values": {0: "keyframes"}, "keyframe_embeds": {0: "keyframes"}},
        )
        parts["motion_encoder"] = export_graph(
            model.motion,
            (torch.zeros(1, 3, 4, size, size),),
            out / "motion_fast.onnx",
            [bundle.tensor("frames", [1, 3, "frames", size, size])],
            [bundle.tensor("motion_feat", ["frames", FEATURES])],
            {"frames": {2: "frames"}, "motion_feat": {0: "frames"}},
        )
        parts["motion_projector"] = export_graph(
            model.motion_projector,
            (torch.zeros(4, FEATURES), torch.arange(4)),
            out / "motion_projector.onnx",
            [bundle.tensor("motion_feat", ["frames", FEATURES]), bundle.tensor("positions", ["frames"], "int64")],
            [bundle.tensor("motion_embeds", ["frames", h])],
            {"motion_feat": {0: "frames"}, "positions": {0: "frames"}, "motion_embeds": {0: "frames"}},
        )
        rows = vocabulary_rows(tokenizer_json, variant, cfg.llm["vocab_size"], vocab_subset)
        table = model.llm.embed_tokens.weight if rows is None else model.llm.embed_tokens.weight[rows]
        parts["token_embedding"] = export_graph(
            TokenEmbedding(table.clone()),
            (torch.zeros(3, dtype=torch.int64),),
            out / "embed_tokens.onnx",
            [bundle.tensor("rows", ["tokens"], "int64")],
            [bundle.tensor("token_embeds", ["tokens", h])],
            {"rows": {0: "tokens"}, "token_embeds": {0: "tokens"}},
        )
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(tokenizer_json))
        level_ids = [tok.encode(w).ids for w in prompts.LEVELS]
        if any(len(ids) != 1 for ids in level_ids):
            raise CheckpointError(f"{tokenizer_json}: level words are not single tokens: {level_ids}")
        level_ids = [ids[0] for ids in level_ids]
        # Batched: rows of different lengths, left-padded (the example's second row is).
        parts["decoder_score"] = {**export_graph(
            vqa2.ScoreDecoder(model.llm, model.level_rows(level_ids)),
            (torch.zeros(2, 7, h), torch.tensor([[1] * 7, [0, 0] + [1] * 5])),
            out / "decoder_score.onnx",
            [bundle.tensor("inputs_embeds", ["batch", "sequence", h]),
             bundle.tensor("attention_mask", ["batch", "sequence"], "int64")],
            [bundle.tensor("level_logits", ["batch", len(level_ids)])],
            {"inputs_embeds": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
             "level_logits": {0: "batch"}},
        ), "batch": True}

        head_rows = model.lm_head if rows is None else model.lm_head[rows]
        layers, kv = cfg.llm["num_hidden_layers"], cfg.llm["num_key_value_heads"]
        head_dim = h // cfg.llm["num_attention_heads"]
        past_names = [f"past_key_values.{i}.{t}" for i in range(layers) for t in ("key", "value")]
        present_names = [f"present.{i}.{t}" for i in range(layers) for t in ("key", "value")]
        dynamic = {"inputs_embeds": {1: "sequence"}, "attention_mask": {1: "total"}, "position_ids": {1: "sequence"}}
        dynamic.update({n: {2: "past"} for n in past_names})
        dynamic.update({"logits": {1: "sequence"}, **{n: {2: "total"} for n in present_names}})
        parts["decoder_generate"] = export_graph(
            vqa2.GenerateDecoder(model.llm, head_rows.clone()),
            (
                torch.zeros(1, 2, h),
                torch.ones(1, 5, dtype=torch.int64),
                torch.tensor([[3, 4]]),
                *[torch.zeros(1, kv, 3, head_dim) for _ in past_names],
            ),
            out / "decoder_generate.onnx",
            [
                bundle.tensor("inputs_embeds", [1, "sequence", h]),
                bundle.tensor("attention_mask", [1, "total"], "int64"),
                bundle.tensor("position_ids", [1, "sequence"], "int64"),
            ]
            + [bundle.tensor(n, [1, kv, "past", head_dim]) for n in past_names],
            [bundle.tensor("logits", [1, "sequence", head_rows.shape[0]])]
            + [bundle.tensor(n, [1, kv, "total", head_dim]) for n in present_names],
            dynamic,
        )

    if dtype == "fp16":
        for part in parts.values():
            to_fp16(out / part["file"])
    if external_data:
        for part in parts.values():
            save_external(out / part["file"])

    shutil.copy(tokenizer_json, out / "tokenizer.json")
    constants = {"image_newline": bundle.write_raw(out, "image_newline.f32", model.image_newline.numpy().astype(np.float32))}
    if rows is not None:
        constants["vocabulary_rows"] = bundle.write_raw(out, "vocabulary_rows.i64", np.array(rows, dtype=np.int64))

    keyframe_pre = {**PREPROCESS, "size": [size, size]}
    score = {"mode": "none"}  # the Assistant explains; it does not score
    if variant_name != "assistant":
        score = {
            "mode": "level-logits",
            "part": "decoder_score",
            "logit_position": variant["logit_position"],
            "levels": [
                {"word": w, "token_id": i, "weight": wt} for w, i, wt in zip(prompts.LEVELS, level_ids, variant["weights"])
            ],
        }
    manifest = {
        "format": bundle.FORMAT,
        "format_version": bundle.BATCH_FORMAT_VERSION,  # decoder_score batches
        "name": name or f"vqa2-{variant_name}",
        "family": "vqa2",
        "variant": variant_name,
        "precision": dtype,
        "source": {
            "checkpoint": checkpoint.name,
            "config_sha256": sha256(checkpoint / "config.json"),
            "exporter": "qoe_onnx.export",
            "opset": OPSET,
        },
        "sampling": {
            "keyframes": {"per_second": 1, "rule": "first-frame-of-each-second", "count": None},
            "motion": {
                "mode": "frames",
                "stride": variant["motion_stride"],
                "trim_before_stride": 8 if variant["motion_stride"] == 8 else 1,
                "multiple": variant["motion_trim"],
                "max_frames": cfg.motion_positions,
                "context_frames": TEMPORAL_CONTEXT,
            },
        },
        "parts": {
            **{k: v for k, v in parts.items()},
        },
        "preprocess": {"keyframe_encoder": keyframe_pre, "motion_encoder": keyframe_pre},
        "tokens": {
            "keyframe_tokens": pooled * pooled,
            "patch_grid": [grid, grid],
            "pool": {"to": [pooled, pooled], "mode": "bilinear", "in_graph": True},
            "newline": {"constant": "image_newline", "position": "after-all-keyframes"},
            "motion_tokens_per_frame": 1,
            "motion_positions": cfg.motion_positions,
        },
        "decoder": {
            "architecture": "qwen2",
            "hidden_size": h,
            "layers": cfg.llm["num_hidden_layers"],
            "attention_heads": cfg.llm["num_attention_heads"],
            "kv_heads": cfg.llm["num_key_value_heads"],
            "head_dim": h // cfg.llm["num_attention_heads"],
            "vocab_size": cfg.llm["vocab_size"],
            "max_sequence": 10000,
            "score_output": "level_logits",
            "generation": {
                "past_inputs": "past_key_values.{layer}.{key|value}",
                "present_outputs": "present.{layer}.{key|value}",
                "eos_token_ids": [151645, 151643],
                "logits_over": "vocabulary rows",
            },
        },
        "vocabulary": {"size": cfg.llm["vocab_size"], "rows": "all" if rows is None else "subset", "rows_constant": None if rows is None else "vocabulary_rows"},
        "constants": constants,
        "tokenizer": "tokenizer.json",
        "prompt": {
            "blocks": {"keyframes": ["keyframes", "newline"], "motion": ["motion"]},
            "segments": variant["segments"],
            "stall_format": variant.get("stall_format", "none"),
            "stall_text": prompts.STALL_TEXT,
        },
        "score": score,
    }
    (out / bundle.MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    bundle.validate(out)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="LLaVA-Qwen VQA² checkpoint folder")
    parser.add_argument("--out", type=Path, required=True, help="bundle folder to write")
    parser.add_argument("--variant", required=True, help="ugc (spec 8.1), ugc-2411 (8.2), streaming (8.3), assistant (8.4)")
    parser.add_argument("--dtype", default="fp32", help="fp32 or fp16 (fp16 weights, fp32 inputs and outputs)")
    parser.add_argument("--stall-format", default="none", help="streaming only: none (as released), summary, per-frame")
    parser.add_argument("--vocab-subset", action="store_true", help="keep only the embedding rows the prompts use")
    parser.add_argument("--external-data", action="store_true", help="weights in .data files (needed over 2 GB)")
    parser.add_argument("--name", help="bundle name (default vqa2-VARIANT)")
    args = parser.parse_args(argv)
    try:
        manifest = export(
            args.checkpoint, args.out, args.variant, args.dtype, args.vocab_subset, args.stall_format, args.external_data, args.name
        )
    except (CheckpointError, bundle.BundleError, ValueError) as e:
        print(f"qoe_onnx.export: {e}", file=sys.stderr)
        return 2
    print(f"wrote bundle {manifest['name']} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
