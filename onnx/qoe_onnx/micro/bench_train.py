"""Side-by-side timing of stage 1's vision step, uncompiled and compiled (train.CompiledStep).

    python -m qoe_onnx.micro.bench_train --data .cache/micro [--rounds 3] [--anchor]

The step train.py runs most (about half of a training run): the vision tower and its head,
forward and backward with AdamW, on a batch of 32 random 128x128 crops of real keyframes (of
the first source in DATA; `data --split test` is enough). Both versions start from the same
weights and alternate in rounds of 10 steps, so a busy machine slows both alike; prints each
round, the medians and their ratio. Compiling (once, before the first round) needs g++ and
Python's headers (pipelines/install-deps.sh installs both).

With --anchor, the step of an anchored refresh (`train --refresh-anchor`): both versions run the
tower and head compiled and add the FeatureAnchor's loss; what differs is the anchor's frozen
reference tower, uncompiled against compiled.

With --heap, the compiled step with freed memory kept in the process (what `train` sets, heap.py)
against glibc's warmed-up default (large buffers unmapped on free), alternating rounds in one
process; it prints each round's time and page faults a step, and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import heap
from . import train as T
from .towers import VisionTower, normalise

BATCH = 32  # 16 pairs, as stage 1's steps


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(".cache/micro"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10, help="steps a round")
    ap.add_argument("--anchor", action="store_true",
                    help="time the anchored refresh's step: the anchor's reference uncompiled against compiled")
    ap.add_argument("--heap", action="store_true",
                    help="time the compiled step with freed memory kept against glibc's default")
    args = ap.parse_args()
    if args.heap and args.anchor:
        raise SystemExit("--heap and --anchor: one comparison at a time")
    if args.heap and heap.LIBC is None:
        raise SystemExit("--heap: malloc here is not glibc's, so there is no default to compare with")
    _, arrays = T.load_clips(args.data)
    source = sorted(arrays)[0]
    keyframes = arrays[source]["keyframes"]  # [clips, K, 180, 320, 3]
    # Clips made at the model's size, so the anchor holds every crop of a step.
    rows = [{"source": source, "index": c, "family": "noise"} for c in range(keyframes.shape[0])]
    items = [(r, k) for r in rows for k in range(keyframes.shape[1])]
    rng = np.random.default_rng(0)

    def batch() -> torch.Tensor:
        clips, k = rng.integers(keyframes.shape[0], size=BATCH), rng.integers(keyframes.shape[1], size=BATCH)
        ys = rng.integers(0, T.KEYFRAME_HEIGHT - T.CROP + 1, size=BATCH)
        xs = rng.integers(0, T.KEYFRAME_WIDTH - T.CROP + 1, size=BATCH)
        return normalise(torch.from_numpy(np.stack([keyframes[c, i, y:y + T.CROP, x:x + T.CROP]
                                                    for c, i, y, x in zip(clips, k, ys, xs)])))

    # --heap: one compiled step, run under each malloc setting in turn
    settings = {"glibc default": heap.map_as_glibc_does, "kept": heap.keep_freed_memory} if args.heap else {}
    versions = {}
    for name, compile_it in ((("uncompiled", False), ("compiled", True)) if not args.heap else
                             (("compiled", True),)):
        torch.manual_seed(0)
        tower = VisionTower()
        net = T.FeaturesAndHead(tower, nn.Linear(T.KEYFRAME_FEATURES, len(T.SPATIAL_CLASSES) + 2))
        anchor = T.FeatureAnchor(tower, items, arrays, 1.0, compile_it) if args.anchor else None
        versions[name] = (T.CompiledStep(net, compile_it or args.anchor), torch.optim.AdamW(net.parameters(), 2e-3),
                          anchor)
    classes = torch.arange(BATCH) % len(T.SPATIAL_CLASSES)
    what = "the anchor's reference " if args.anchor else ""

    def seconds_a_step(name: str, steps: int) -> float:
        step, opt, anchor = versions[name]
        started = time.time()
        for _ in range(steps):
            pix = batch()
            out = step(pix)
            loss = F.cross_entropy(out[:, T.KEYFRAME_FEATURES:][:, :len(T.SPATIAL_CLASSES)], classes)
            if anchor:
                loss = loss + anchor.loss(pix, out[:, :T.KEYFRAME_FEATURES], [rows[0]] * BATCH)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return (time.time() - started) / steps

    for name in versions:
        seconds_a_step(name, 2)  # warm-up; compiles the compiled one
    if args.heap:
        faults: dict[str, list[float]] = {name: [] for name in settings}
        times: dict[str, list[float]] = {name: [] for name in settings}
        for r in range(args.rounds):
            for name, apply in settings.items():
                apply()
                seconds_a_step("compiled", 1)  # the first step after a switch meets the other's heap
                before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                times[name].append(seconds_a_step("compiled", args.steps))
                faults[name].append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / args.steps)
            print(f"round {r + 1}: " + ", ".join(f"{n} {times[n][-1] * 1000:.0f} ms and {faults[n][-1]:.0f} page "
                                                 f"faults a step" for n in settings), flush=True)
        released, kept = (statistics.median(times[n]) for n in settings)
        print(f"median: glibc default {released * 1000:.0f} ms, kept {kept * 1000:.0f} ms a step "
              f"({torch.get_num_threads()} threads); kept / glibc default = {kept / released:.2f}")
        return
    times = {name: [] for name in versions}
    for r in range(args.rounds):
        for name in versions:
            times[name].append(seconds_a_step(name, args.steps))
        print(f"round {r + 1}: " + ", ".join(f"{what}{n} {t[-1] * 1000:.0f} ms a step" for n, t in times.items()),
              flush=True)
    plain, compiled = (statistics.median(times[n]) for n in versions)
    print(f"median: {what}uncompiled {plain * 1000:.0f} ms, compiled {compiled * 1000:.0f} ms a step "
          f"({torch.get_num_threads()} threads); compiled / uncompiled = {compiled / plain:.2f}")


if __name__ == "__main__":
    main()
