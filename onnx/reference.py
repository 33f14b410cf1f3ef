#!/usr/bin/env python3
"""Scores a video with the PyTorch reference of the VQA² pipeline (qoe_onnx.reference).

    python onnx/reference.py --checkpoint CKPT_DIR --video clip.mp4 [--variant ugc]

The video is decoded to RGB by FFmpeg (all frames, as decord does in the original scripts).
Prints the score, the level probabilities and the sequence length, as JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tokenizers import Tokenizer  # noqa: E402

from qoe_onnx import prompts, reference, vqa2  # noqa: E402
from qoe_onnx.checkpoint import CheckpointError  # noqa: E402


def decode(video: Path) -> tuple[np.ndarray, float]:
    """All frames of ``video`` as uint8 RGB [n, h, w, 3], and its average frame rate."""
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height,avg_frame_rate", "-of", "json", str(video)],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        raise ValueError(f"{video}: ffprobe cannot read it: {probe.stderr.strip()}")
    streams = json.loads(probe.stdout).get("streams", [])
    if not streams:
        raise ValueError(f"{video}: no video stream")
    w, h, rate = streams[0]["width"], streams[0]["height"], float(Fraction(streams[0]["avg_frame_rate"]))
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(video), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True
    )
    if raw.returncode != 0:
        raise ValueError(f"{video}: ffmpeg cannot decode it: {raw.stderr.decode().strip()}")
    frames = np.frombuffer(raw.stdout, np.uint8)
    return frames.reshape(-1, h, w, 3), rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--video", type=Path, required=True)
    parser.add_argument("--variant", default="ugc", help="ugc, ugc-2411 or streaming")
    parser.add_argument("--stall-format", default="none")
    args = parser.parse_args(argv)
    try:
        frames, fps = decode(args.video)
        model = vqa2.load(args.checkpoint)
        tokenizer = Tokenizer.from_file(str(args.checkpoint / "tokenizer.json"))
        r = reference.run(model, tokenizer, frames, fps, args.variant, args.stall_format)
    except (CheckpointError, ValueError) as e:
        print(f"reference.py: {e}", file=sys.stderr)
        return 2
    levels = [w.strip() for w in prompts.LEVELS]
    print(json.dumps({"score": r.score, "probabilities": dict(zip(levels, r.probabilities)), "keyframes": len(r.keyframe_indices), "motion_frames": len(r.motion_indices), "sequence_length": len(r.token_ids)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
