"""Where the micro VQA²'s rank errors come from, read from evaluate's results (no model run).

Per distortion class (family and strength): the clips' mean label, their mean score (×100) and
the difference; then three figures that split the overall SRCC into its parts:

  class means      SRCC of each clip's class-mean score against the labels: how well the model
                   orders the classes on average, its content variation taken out
  training means   SRCC of each clip's class-mean training label against the labels: a
                   content-blind recogniser that knows every clip's class exactly (the ceiling
                   for a model that sees the distortion and not the content)
  within class     Pearson correlation of score and label once each class's mean is taken from
                   both: how well the model follows the content's effect inside a class

then oracle bounds: the SRCC once each class's mean error (score minus label, on these clips)
is taken out of its clips' scores, for the temporal families, for the photometric ones (exposure,
contrast, saturation), for every class, and for every class and then every source. They say how
far a model would get whose only change was to place those classes right on average (a better
motion branch, say), its order inside each class as it is: where the rest of the gap lies. They
are bounds read off the test clips' own labels, not figures a model reached.

And how much the overall SRCC depends on which content the test split happened to get: its 90 %
interval when the test sources are drawn again with replacement (a source drawn twice counts its
clips twice), 2,000 draws. That is the test content's share of the uncertainty; the training
run's own (another seed) is measured by retraining (onnx/README, run 15).

    python -m qoe_onnx.micro.errors --data .cache/micro onnx/micro-results.json [onnx/micro-train-fit.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from .data import TEMPORAL

PHOTOMETRIC = ["overexposure", "underexposure", "low_contrast", "high_contrast", "oversaturation", "desaturation"]
# The oracle bounds' groups: which families' class offsets are taken out (None: every class).
OFFSET_GROUPS = {"temporal": TEMPORAL, "photometric": PHOTOMETRIC, "temporal and photometric": TEMPORAL + PHOTOMETRIC,
                 "every class": None}


def average_ranks(x) -> np.ndarray:
    """Ranks from 0, ties given their average rank (as scipy's rankdata, less one)."""
    _, inverse, counts = np.unique(np.asarray(x, dtype=float), return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts
    return (first + (counts - 1) / 2)[inverse]


def pearson(a, b) -> float:
    """Pearson's correlation; nan where either side is constant (nothing to correlate)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def srcc(a, b) -> float:
    return pearson(average_ranks(a), average_ranks(b))


def class_means(keys: list, values) -> np.ndarray:
    """Each item's value replaced by the mean over the items with its key."""
    values = np.asarray(values, dtype=float)
    groups: dict = {}
    for k, v in zip(keys, values):
        groups.setdefault(k, []).append(v)
    return np.array([np.mean(groups[k]) for k in keys])


def classes_labels_scores(per_clip: list[dict]) -> tuple[list, np.ndarray, np.ndarray]:
    """Each clip's class (family, strength), label and score (×100, the labels' scale)."""
    keys = [(c["family"], c["strength"]) for c in per_clip]
    mos = np.array([c["mos"] for c in per_clip], dtype=float)
    score = np.array([c["score"] for c in per_clip], dtype=float) * 100
    return keys, mos, score


def offsets_removed(per_clip: list[dict], families: list[str] | None, sources: bool = False) -> float:
    """The SRCC once each class of `families` (None: every class) has its mean error taken out of
    its scores, and with `sources` then each source's too (an oracle bound, module docstring)."""
    keys, mos, score = classes_labels_scores(per_clip)
    chosen = np.array([families is None or c["family"] in families for c in per_clip])
    score = score - np.where(chosen, class_means(keys, score - mos), 0)
    if sources:
        score = score - class_means([c["source"] for c in per_clip], score - mos)
    return srcc(score, mos)


def source_interval(per_clip: list[dict], draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    """The 5th and 95th percentile of the SRCC over `draws` resamplings of the sources."""
    sources = sorted({c["source"] for c in per_clip})
    by_source = {s: [c for c in per_clip if c["source"] == s] for s in sources}
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(draws):
        clips = [c for s in rng.choice(sources, len(sources)) for c in by_source[s]]
        values.append(srcc([c["score"] for c in clips], [c["mos"] for c in clips]))
    low, high = np.nanpercentile(values, [5, 95])
    return float(low), float(high)


def analyse(per_clip: list[dict], training_rows: list[dict]) -> dict:
    """The class table, the three figures and the oracle bounds of the module's docstring."""
    keys, mos, score = classes_labels_scores(per_clip)
    trained: dict = {}
    for r in training_rows:
        trained.setdefault((r["family"], r["strength"]), []).append(r["mos"])
    training_label = {k: float(np.mean(v)) for k, v in trained.items()}
    missing = sorted({k for k in keys if k not in training_label})
    if missing:
        raise ValueError(f"no training clips of class {missing[0]} (family, strength): wrong --data?")
    mean_mos, mean_score = class_means(keys, mos), class_means(keys, score)
    classes = {}
    for k, m, s in sorted(zip(keys, mean_mos, mean_score)):
        classes[f"{k[0]} {k[1]}"] = {"label": round(float(m), 1), "score": round(float(s), 1),
                                     "training_label": round(training_label[k], 1)}
    return {"overall": srcc(score, mos), "class_means": srcc(mean_score, mos),
            "training_means": srcc([training_label[k] for k in keys], mos),
            "within_class": pearson(score - mean_score, mos - mean_mos),
            "offsets_removed": {name: offsets_removed(per_clip, families) for name, families in OFFSET_GROUPS.items()}
            | {"every class and source": offsets_removed(per_clip, None, sources=True)},
            "classes": classes}


def read_rows(data: Path) -> list[dict]:
    """The data run's rows, DATA/clips.jsonl; its absence named."""
    rows_file = data / "clips.jsonl"
    if not rows_file.exists():
        raise SystemExit(f"{rows_file}: not there (the data run writes it; --data names its folder)")
    return [json.loads(line) for line in rows_file.read_text().splitlines()]


def read_per_clip(path: Path) -> list[dict]:
    """The per-clip scores of one of evaluate's results files; a missing or foreign file named."""
    if not path.is_file():
        raise SystemExit(f"{path}: missing (python -m qoe_onnx.micro.evaluate writes it)")
    per_clip = json.loads(path.read_text()).get("per_clip")
    if not per_clip:
        raise SystemExit(f"{path}: no per_clip list (not a results file of qoe_onnx.micro.evaluate?)")
    return per_clip


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(".cache/micro"), help="the data folder (its clips.jsonl)")
    ap.add_argument("results", type=Path, nargs="+", help="evaluate's results files (their per_clip)")
    args = ap.parse_args()
    training = [r for r in read_rows(args.data) if r["split"] == "train"]
    if not training:
        raise SystemExit(f"{args.data / 'clips.jsonl'}: no training clips (a `data --split test` folder? "
                         "the training labels are the content-blind figure's)")
    tables = {}
    for path in args.results:
        per_clip = read_per_clip(path)
        try:
            tables[path] = analyse(per_clip, training) | {"source_interval": source_interval(per_clip)}
        except ValueError as e:
            raise SystemExit(f"{path} against {args.data}: {e}")
    first = tables[args.results[0]]["classes"]
    print(f"{'class':18s}{'training label':>15s}" + "".join(f"{'label':>8s}{'score':>7s}{'error':>7s}" for _ in tables))
    for name in sorted(first, key=lambda n: first[n]["score"] - first[n]["label"]):
        cells = [t["classes"].get(name) for t in tables.values()]
        print(f"{name:18s}{first[name]['training_label']:15.1f}" + "".join(
            f"{c['label']:8.1f}{c['score']:7.1f}{c['score'] - c['label']:+7.1f}" if c else f"{'-':>22s}" for c in cells))
    for path, t in tables.items():
        low, high = t["source_interval"]
        print(f"{path}: SRCC {t['overall']:.3f} (90 % interval over resampled sources {low:.3f}–{high:.3f}); "
              f"class means {t['class_means']:.3f}, training means {t['training_means']:.3f}, "
              f"within class {t['within_class']:.3f}")
        print("  oracle bounds, the SRCC with these classes' mean errors taken out: " + ", ".join(
            f"{name} {value:.3f}" for name, value in t["offsets_removed"].items()))


if __name__ == "__main__":
    main()
