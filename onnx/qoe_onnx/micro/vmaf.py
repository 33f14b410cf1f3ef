"""VMAF of the test split's clips, beside their SSIM pseudo-MOS: would VMAF be the better label?

The issue allows VMAF as the label "if a registry package gives it to you". Debian 12's FFmpeg has
no libvmaf, but PyPI's `vmaf-torch` (requirements-micro.txt) is VMAF v0.6.1 (its SVM and features)
in PyTorch, within 0.03 of Netflix's C code by its authors' comparison. This scores each test clip
against its pristine reference on the luma plane as libvmaf does (VMAF reads no colour), at the
clips' own 320x180, then prints how the labels and the model's scores (evaluate's results) agree
with it: overall, per distortion family and per source.

    python -m qoe_onnx.micro.vmaf --data .cache/micro [--results onnx/micro-results.json] [--out onnx/micro-vmaf.json]

Measured at about 24 frames a second on two cores: the test split (424 clips, 80,560 frames) took 56 min.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from . import data as micro_data
from .errors import read_per_clip, read_rows, srcc


def luma(path: str | Path, width: int = micro_data.WIDTH, height: int = micro_data.HEIGHT) -> np.ndarray:
    """The clip's Y plane as FFmpeg decodes it to yuv420p (what libvmaf reads): [frames, 1, H, W] floats."""
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "yuv420p", "-"],
                         check=True, capture_output=True).stdout
    plane = width * height
    frames = np.frombuffer(raw, np.uint8)
    if frames.size % (plane * 3 // 2):
        raise SystemExit(f"{path}: not {width}x{height} yuv420p frames ({frames.size} bytes decoded)")
    return frames.reshape(-1, plane * 3 // 2)[:, :plane].reshape(-1, 1, height, width).astype(np.float32)


class Scorer:
    """VMAF v0.6.1 of a distorted clip against its reference, averaged over their common frames."""

    def __init__(self):
        import torch
        try:
            from vmaf_torch import VMAF
        except ImportError:
            raise SystemExit("vmaf-torch is not installed: pip install -r onnx/requirements-micro.txt") from None

        self.torch = torch
        self.vmaf = VMAF().eval()

    def __call__(self, reference: np.ndarray, distorted: np.ndarray) -> float:
        n = min(len(reference), len(distorted))
        with self.torch.no_grad():
            per_frame = self.vmaf(self.torch.from_numpy(reference[:n]), self.torch.from_numpy(distorted[:n]))
        return float(per_frame.mean())


def key(row: dict) -> str:
    return f"{row['source']}|{row['family']}|{row['strength']}"


def score_test_split(data: Path, sources: list[dict], rows: list[dict], scorer) -> dict[str, float]:
    """VMAF of every kept test clip of `sources`, the reference rebuilt as data.py builds it
    (the pristine frames, lossless)."""
    vmaf: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for source in sources:
            started = time.time()
            frames, fps = micro_data.pristine_frames(source)
            reference = Path(tmp) / "reference.nut"
            micro_data.encode(frames, fps, str(reference), micro_data.LOSSLESS)
            reference_y = luma(reference)
            mine = [r for r in rows if r["source"] == source["name"]]
            for r in mine:
                clip = micro_data.test_clip_path(data, r["source"], r["family"], r["strength"])
                if not clip.is_file():
                    raise SystemExit(f"{clip}: missing (python -m qoe_onnx.micro.data --split test keeps it)")
                vmaf[key(r)] = scorer(reference_y, luma(clip))
            print(f"{source['name']}: {len(mine)} clips in {time.time() - started:.0f} s", file=sys.stderr, flush=True)
    return vmaf


def agreement(per_clip: list[dict], vmaf: dict[str, float]) -> list[tuple]:
    """Rows (group, n, SRCC label~VMAF, SRCC score~VMAF, SRCC score~label, mean VMAF, mean label):
    overall, per family, per source."""
    clips = [c | {"vmaf": vmaf[key(c)]} for c in per_clip if key(c) in vmaf]
    groups = [("overall", clips)]
    for field in ("family", "source"):
        groups += [(name, [c for c in clips if c[field] == name]) for name in sorted({c[field] for c in clips})]
    out = []
    for name, cs in groups:
        label, score, v = ([c[f] for c in cs] for f in ("mos", "score", "vmaf"))
        out.append((name, len(cs), srcc(label, v), srcc(score, v), srcc(score, label), float(np.mean(v)),
                    float(np.mean(label))))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(".cache/micro"), help="the data folder (clips.jsonl, test_clips/)")
    ap.add_argument("--videos", type=Path, default=Path(".cache/videos"))
    ap.add_argument("--debs", type=Path, default=Path(".cache/debs/root"))
    ap.add_argument("--results", type=Path, default=Path("onnx/micro-results.json"),
                    help="evaluate's results (their per_clip scores)")
    ap.add_argument("--out", type=Path, default=Path("onnx/micro-vmaf.json"),
                    help="per-clip VMAF; read back instead of scoring again when it covers every test clip")
    args = ap.parse_args()
    per_clip = read_per_clip(args.results)
    rows = micro_data.scored_rows(read_rows(args.data))
    wanted = {key(r) for r in rows}
    vmaf = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if not wanted <= vmaf.keys():
        names = {r["source"] for r in rows}
        sources = [s for s in micro_data.all_sources(args.videos, args.debs) if s["name"] in names]
        vmaf = score_test_split(args.data, sources, rows, Scorer())
        args.out.write_text(json.dumps(vmaf, indent=0, sort_keys=True) + "\n")
    print(f"{'':28s} {'n':>4s} {'label~VMAF':>10s} {'score~VMAF':>10s} {'score~label':>11s} {'VMAF':>6s} {'label':>6s}")
    for name, n, lv, sv, sl, mv, ml in agreement(per_clip, vmaf):
        print(f"{name:28s} {n:4d} {lv:10.3f} {sv:10.3f} {sl:11.3f} {mv:6.1f} {ml:6.1f}")


if __name__ == "__main__":
    main()
