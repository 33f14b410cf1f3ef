"""Which path of the model reads each damage: the keyframes or the motion branch.

Each damaged test clip is scored three times through the bundle, as `evaluate` scores it (the UGC
prompt): as it is; with its own keyframes and its source's pristine motion frames; and with the
pristine keyframes and its own motion frames. Where the second reads like the pristine clip and
the third like the clip itself, only the motion branch sees that damage (and the other way round).
Means per family and strength, beside the label:

    python -m qoe_onnx.micro.paths --data .cache/micro --bundle models/micro-vqa2-streaming
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from . import data as micro_data
from .evaluate import Model
from .train import load_arrays

FAMILIES = ["transmission_h264", "transmission_hevc", "transmission_h264_hd", "error_blocks", "black_frames",
            "freeze", "stutter", "shake", "compression"]


def swapped_scores(model, keyframes: np.ndarray, motion: np.ndarray, pristine_keyframes: np.ndarray,
                   pristine_motion: np.ndarray) -> tuple[float, float, float]:
    """(as it is, own keyframes + pristine motion, pristine keyframes + own motion). The pristine
    motion frames are cut to the clip's count where they are more."""
    return (model.score(model.features(keyframes, motion)),
            model.score(model.features(keyframes, pristine_motion[:len(motion)])),
            model.score(model.features(pristine_keyframes, motion)))


def path_table(model, rows: list[dict], arrays: dict, families: list[str]) -> dict[str, dict[int, list[float]]]:
    """{family: {strength: [label, as it is, pristine motion, pristine keyframes]}}: means over the
    sources that have the family and a pristine clip."""
    found: dict[str, dict[int, list[tuple]]] = {}
    for source in sorted({r["source"] for r in rows}):
        clips = arrays[source]
        pristine = [r for r in rows if r["source"] == source and r["family"] == "pristine"]
        if not pristine:
            continue
        pk, pm = clips["keyframes"][pristine[0]["index"]], clips["motion"][pristine[0]["index"]]
        for r in rows:
            if r["source"] == source and r["family"] in families:
                scores = swapped_scores(model, clips["keyframes"][r["index"]], clips["motion"][r["index"]], pk, pm)
                found.setdefault(r["family"], {}).setdefault(r["strength"], []).append((r["mos"] / 100, *scores))
    return {f: {s: [float(v) for v in np.mean(found[f][s], axis=0)] for s in sorted(found[f])}
            for f in families if f in found}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(".cache/micro"))
    ap.add_argument("--bundle", type=Path, default=Path("models/micro-vqa2-streaming"))
    ap.add_argument("--families", default=",".join(FAMILIES), help="comma-separated families (default: %(default)s)")
    args = ap.parse_args()
    families = [f for f in args.families.split(",") if f]
    unknown = [f for f in families if f not in micro_data.LEVELS]
    if unknown:
        raise SystemExit(f"--families: {', '.join(unknown)} is not a family of micro/data.py "
                         f"({', '.join(micro_data.LEVELS)})")
    rows = [r for r in micro_data.finished_rows(args.data) if r["split"] == "test"]
    if not rows:
        raise SystemExit(f"{args.data}: no test clips")
    model = Model(args.bundle)
    table = path_table(model, rows, load_arrays(args.data, {r["source"] for r in rows}, model.motion_input,
                                                     model.keyframe_rule), families)
    print("family strength: label | as it is | own keyframes + pristine motion | pristine keyframes + own motion")
    for family, strengths in table.items():
        for strength, (label, own, keyframes_only, motion_only) in strengths.items():
            print(f"{family:22s} {strength}: {label:.2f} | {own:.2f} | {keyframes_only:.2f} | {motion_only:.2f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
