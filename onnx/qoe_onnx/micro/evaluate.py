"""Tables 1-3 of the micro VQA² on the content-disjoint test split, through the bundle's ONNX
graphs (onnxruntime, the same graphs the element runs) and against classic no-reference metrics.

    python -m qoe_onnx.micro.evaluate --data .cache/micro --bundle models/micro-vqa2-streaming \\
        --out onnx/micro-results.json

Each test clip is scored whole (its keyframes and motion frames as data.py cut them, exactly as
the element cuts a window; an ensemble bundle's models each, their level probabilities averaged,
as the element does). Table 1: SRCC/PLCC against the pseudo-MOS, per distortion family and
overall (UGC prompt), plus the streaming prompt with random stalls against the stall-lowered
labels, overall and per family (each clip's lowered label and score in `per_clip`). Table 2:
flip rate over same-source pairs at different compression levels (pristine, CRF 33/39/45/51).
Table 3: the same figures for BRISQUE (the brisque package's SVR), NIQE (scikit-video's
parameters; frames upscaled 2x, as it needs more than 192 rows), each on two keyframes a clip,
and FFmpeg's blockdetect and blurdetect on one frame in 25 (signs flipped so that higher means
better).
Scene cuts: each test clip joined at a cut to another test source's clip with the same impairment
(4 + 4 keyframes, the element's default 8-s window), as real video cuts between shots: SRCC/PLCC
against the two clips' mean label, and the pristine windows' score across a cut beside alone.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .. import bundle as bundle_format
from . import data as micro_data
from . import train as T
from .spec import LUMA_WEIGHTS
from .towers import MOTION_INPUTS


def log(*a):
    print(*a, file=sys.stderr, flush=True)


class Model:
    """The bundle's graphs, with the prompt prefix's keys and values cached. An ensemble's
    members each have their own encoders and projector; the level probabilities are averaged."""

    def __init__(self, folder: Path):
        opts = ort.SessionOptions()
        manifest = bundle_format.load(folder)
        s = lambda role: ort.InferenceSession(str(folder / manifest["parts"][role]["file"]), opts,  # noqa: E731
                                              providers=["CPUExecutionProvider"])
        self.members = [(s(f"keyframe_encoder{m}"), s(f"motion_encoder{m}"), s(f"motion_projector{m}"))
                        for m in bundle_format.models(manifest)]
        self.embed, self.decoder = s("token_embedding"), s("decoder_score")
        # The frames the motion graphs take: 64x64 RGB, or 128x128 for a branch that reads their luma
        # (the data's `motion_input` arrays, as `train.load_arrays` names them).
        sizes = {m[1].get_inputs()[0].shape[4] for m in self.members}
        by_size = {size: name for name, size in MOTION_INPUTS.items()}
        if len(sizes) != 1 or not sizes <= set(by_size):
            raise SystemExit(f"{folder}: motion graphs of frames {sorted(sizes)} wide, not one of "
                             f"{', '.join(f'{s} ({n})' for s, n in by_size.items())}")
        self.motion_input = by_size[sizes.pop()]
        # The keyframes the data holds for the manifest's rule (`data.KEYFRAME_ARRAYS`).
        self.keyframe_rule = manifest["sampling"]["keyframes"]["rule"]
        if self.keyframe_rule not in micro_data.KEYFRAME_ARRAYS:
            raise SystemExit(f"{folder}: sampling.keyframes.rule {self.keyframe_rule!r}, not one of "
                             f"{', '.join(micro_data.KEYFRAME_ARRAYS)}")
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.past_names = [i.name for i in self.decoder.get_inputs() if i.name.startswith("past_key_values.")]
        self.masked = any(i.name == "attention_mask" for i in self.decoder.get_inputs())
        empty = {n: np.zeros((1, 3, 0, 64), np.float32) for n in self.past_names}
        prefix = self.text(T.PREFIX)[None]
        out = self.decoder.run(None, {"inputs_embeds": prefix, **self.mask(prefix, 0), **empty})
        self.prefix = dict(zip(self.past_names, out[1:]))
        self.prefix_length = prefix.shape[1]

    def mask(self, embeds: np.ndarray, past: int) -> dict:
        """The attention mask a batching decoder takes: every token real (one row)."""
        return {"attention_mask": np.ones((1, past + embeds.shape[1]), np.int64)} if self.masked else {}

    def text(self, s: str) -> np.ndarray:
        ids = np.array(self.tok.encode(s).ids, np.int64)
        return self.embed.run(None, {"rows": ids})[0]

    def features(self, keyframes: np.ndarray, motion: np.ndarray) -> list:
        """Each model's keyframe tokens and motion token."""
        norm = lambda x: ((x.astype(np.float32) / 255.0 - 0.5) / 0.5)  # noqa: E731
        if motion.ndim == 3:  # luma (`motion_luma`): as grey RGB frames, whose luma the graph reads exactly
            motion = np.repeat(motion[..., None], 3, axis=-1)
        pixels, frames = norm(keyframes).transpose(0, 3, 1, 2), norm(motion).transpose(3, 0, 1, 2)[None]
        out = []
        for keyframe, fast, projector in self.members:
            kf = keyframe.run(None, {"pixel_values": pixels})[0][:, 0]
            feat = fast.run(None, {"frames": frames})[0]
            out.append((kf, projector.run(None, {"motion_feat": feat})[0]))
        return out

    def score(self, features: list, stall: str | None = None) -> float:
        tail = ([self.text(stall)] if stall is not None else []) + [self.text(T.SUFFIX)]
        p = np.zeros(len(T.LEVEL_WEIGHTS))
        for kf, mo in features:
            embeds = np.concatenate([kf, mo, *tail])[None]
            logits = self.decoder.run(["level_logits"], {"inputs_embeds": embeds, **self.prefix,
                                                         **self.mask(embeds, self.prefix_length)})[0][0]
            e = np.exp(logits - logits.max())
            p += e / e.sum() / len(features)
        return float(p @ np.array(T.LEVEL_WEIGHTS))


def correlations(pred, mos) -> dict:
    # scipy is in requirements-micro.txt: the tables need it, scoring a bundle (Model) does not.
    from scipy.stats import pearsonr, spearmanr

    pred, mos = np.asarray(pred), np.asarray(mos)
    if len(pred) < 3 or np.std(pred) == 0:
        return {"srcc": float("nan"), "plcc": float("nan"), "n": len(pred)}
    return {"srcc": float(spearmanr(pred, mos)[0]), "plcc": float(pearsonr(pred, mos)[0]), "n": len(pred)}


def flip_rate(rows, pred, family: str = "compression") -> float:
    """Wrongly ordered same-source pairs on one family's ladder: its pristine clip (strength 0) and
    its graded strengths (the compression ladder: pristine, CRF 33, 39, 45, 51). Ties count as wrong."""
    wrong = total = 0
    by_source: dict[str, list] = {}
    for r, p in zip(rows, pred):
        if r["family"] in ("pristine", family):
            by_source.setdefault(r["source"], []).append((r["strength"], p))
    for items in by_source.values():
        for (s1, p1), (s2, p2) in itertools.combinations(items, 2):
            if s1 == s2:
                continue
            better, worse = ((p1, p2) if s1 < s2 else (p2, p1))
            wrong += better <= worse
            total += 1
    return wrong / max(total, 1)


def table(rows, pred) -> dict:
    """SRCC and PLCC overall and per impairment family (each with the pristine clips), the
    compression ladder's flip rate, and each family's ladder flip rate (the transmission-error
    ladders among them)."""
    families = family_correlations(rows, pred)
    return {"overall": correlations(pred, [r["mos"] for r in rows]), "flip_rate": flip_rate(rows, pred),
            "families": families, "flip_rates": {fam: flip_rate(rows, pred, fam) for fam in families}}


def family_correlations(rows, pred) -> dict:
    """SRCC and PLCC per impairment family, each with the pristine clips, by family name."""
    out = {}
    for fam in sorted({r["family"] for r in rows} - {"pristine"}):
        idx = [i for i, r in enumerate(rows) if r["family"] in (fam, "pristine")]
        out[fam] = correlations([pred[i] for i in idx], [rows[i]["mos"] for i in idx])
    return out


def streaming_table(rows, pred, lowered) -> dict:
    """The streaming prompt's SRCC and PLCC against the stall-lowered labels, overall and per
    impairment family (each with the pristine clips), so that a loss can be traced to the
    families where it is. No flip rates: each clip draws its own stalls, so a ladder's labels
    need not keep their order."""
    lowered_rows = [r | {"mos": m} for r, m in zip(rows, lowered, strict=True)]
    return {"overall": correlations(pred, lowered), "families": family_correlations(lowered_rows, pred)}


# The levels an operator acts on (#30's calibration goals): clips labelled poor or low must score
# below POOR_BELOW on average, the pristine clips (delivered at CRF 18) above PRISTINE_ABOVE.
POOR_BELOW, PRISTINE_ABOVE = 0.45, 0.70


def calibration(rows, pred) -> dict:
    """The mean score of the clips labelled poor or low (pseudo-MOS under 40) and of the pristine
    clips, and how many of each."""
    poor = [p for r, p in zip(rows, pred) if micro_data.level_of(r["mos"]) >= 3]
    pristine = [p for r, p in zip(rows, pred) if r["family"] == "pristine"]
    mean = lambda xs: float(np.mean(xs)) if xs else float("nan")  # noqa: E731
    return {"poor_or_low": mean(poor), "poor_or_low_n": len(poor),
            "pristine": mean(pristine), "pristine_n": len(pristine)}


# Keyframes on each side of a scene cut: 4 + 4, the element's default window of 8 s.
CUT_KEYFRAMES = 4


def cut_windows(rows, arrays):
    """Each test clip cut, as real video cuts between shots, to the clip of the next test source
    (in name order, the last to the first) that has the same impairment: its first CUT_KEYFRAMES
    keyframes and their motion frames, then the other's last CUT_KEYFRAMES. Yields the joined
    keyframes and motion frames, the label (the two clips' mean pseudo-MOS) and each clip's index
    in `rows`."""
    sources = sorted({r["source"] for r in rows})
    next_source = dict(zip(sources, sources[1:] + sources[:1]))
    at = {(r["source"], r["family"], r["strength"]): i for i, r in enumerate(rows)}
    for i, r in enumerate(rows):
        j = at.get((next_source[r["source"]], r["family"], r["strength"]))
        if j is None:
            continue
        shots = []
        for n, head in ((i, True), (j, False)):
            a = arrays[rows[n]["source"]]
            keyframes, frames = a["keyframes"][rows[n]["index"]], a["motion"][rows[n]["index"]]
            w = min(CUT_KEYFRAMES, len(keyframes))
            s0 = 0 if head else len(keyframes) - w
            f0, f1 = T.window_span(len(keyframes), len(frames), s0, w)
            shots.append((keyframes[s0:s0 + w], frames[f0:f1]))
        yield (np.concatenate([kf for kf, _ in shots]), np.concatenate([mo for _, mo in shots]),
               (rows[i]["mos"] + rows[j]["mos"]) / 2, i, j)


def scene_cuts(model: "Model", rows, arrays, alone: list[float]) -> dict:
    """SRCC and PLCC of the cut windows (`cut_windows`) against their labels, and what a cut costs
    pristine content: the cut pristine windows' mean score beside the mean of their two clips'
    own scores (`alone`, in `rows`' order)."""
    scores, labels, pristine_cut, pristine_alone = [], [], [], []
    for keyframes, frames, label, i, j in cut_windows(rows, arrays):
        scores.append(model.score(model.features(keyframes, frames)))
        labels.append(label)
        if rows[i]["family"] == "pristine":
            pristine_cut.append(scores[-1])
            pristine_alone.append((alone[i] + alone[j]) / 2)
    return {"overall": correlations(scores, labels),
            "pristine_cut": float(np.mean(pristine_cut)), "pristine_alone": float(np.mean(pristine_alone))}


# ---------------------------------------------------------------- baselines


def brisque_scores(rows, data: Path):
    from brisque import BRISQUE

    class Fixed(BRISQUE):  # the package's features come as 1-element arrays under numpy 2
        def scale_features(self, features):
            return super().scale_features([np.asarray(f, dtype=np.float64).ravel()[0] for f in features])

    b = Fixed(url=False)
    full = clip_frames(rows, data)
    return [-finite_mean([b.score(f) for f in frames], "BRISQUE", clip_path(r, data))
            for frames, r in zip(full, rows)]


def niqe_scores(rows, data: Path):
    import scipy.misc
    import skvideo.measure
    from PIL import Image as _Image

    def imresize(img, size, interp="bicubic", mode="F"):
        # scikit-video 1.1.11 calls scipy.misc.imresize, gone from SciPy since 1.3: the same
        # float bicubic resize through Pillow (what SciPy's did).
        h, w = img.shape
        # (a 2-D float32 array is Pillow's mode "F"; naming the mode is deprecated in Pillow 11.3)
        return np.asarray(_Image.fromarray(img.astype(np.float32)).resize(
            (int(w * size), int(h * size)), _Image.BICUBIC))

    scipy.misc.imresize = imresize
    for alias, real in (("int", int), ("float", float), ("bool", bool)):  # numpy 2 dropped these
        if alias not in np.__dict__:
            setattr(np, alias, real)

    from PIL import Image

    out = []
    for frames in clip_frames(rows, data):
        # scikit-video's NIQE needs frames over 192 pixels high: 2x bicubic up from 320x180.
        grey = np.stack([np.asarray(Image.fromarray(f).resize((2 * f.shape[1], 2 * f.shape[0]), Image.BICUBIC))
                         @ np.array(LUMA_WEIGHTS) for f in frames])
        out.append(-float(np.mean(skvideo.measure.niqe(grey))))
    return out


def clip_frames(rows, data: Path):
    """Two keyframes of each kept test clip at its delivered resolution: the first and the
    middle second's first frames (BRISQUE and NIQE take about half a second a picture)."""
    from .data import decode

    for r in rows:
        frames, fps = decode(str(clip_path(r, data)))
        keyframes = frames[::max(1, round(fps))]
        yield keyframes[[0, len(keyframes) // 2]]


def clip_path(r, data: Path) -> Path:
    return micro_data.test_clip_path(data, r["source"], r["family"], r["strength"])


def finite_mean(values, measure: str, path: Path) -> float:
    """The mean of the values a measure could give (BRISQUE and blurdetect give NaN on a black
    picture); none at all is an error naming the clip."""
    finite = [float(v) for v in values if np.isfinite(v)]
    if not finite:
        raise SystemExit(f"{path}: {measure} measured none of its {len(values)} pictures")
    return float(np.mean(finite))


def ffmpeg_detect(rows, data: Path) -> list[list[float]]:
    """FFmpeg's blockdetect and blurdetect in one pass over each clip, mean over one frame in 25:
    over the frames each can measure (blurdetect gives NaN on a black frame)."""
    block, blur = [], []
    for r in rows:
        path = clip_path(r, data)
        err = subprocess.run(["ffmpeg", "-v", "info", "-nostats", "-i", str(path), "-vf",
                              "select='not(mod(n\\,25))',blockdetect,blurdetect,metadata=mode=print",
                              "-f", "null", "-"], capture_output=True, text=True).stderr
        for name, out in (("block", block), ("blur", blur)):
            values = [float(v) for v in re.findall(rf"lavfi\.{name}=(\S+)", err)]
            out.append(-finite_mean(values, f"FFmpeg's {name}detect", path))
    return [block, blur]


# Table 3's classic no-reference metrics: each scorer gives the test clips' scores (higher meaning
# better) for each of the names beside it, in their order.
BASELINES = {
    ("BRISQUE",): lambda rows, data: [brisque_scores(rows, data)],
    ("NIQE",): lambda rows, data: [niqe_scores(rows, data)],
    ("FFmpeg blockdetect", "FFmpeg blurdetect"): ffmpeg_detect,
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(".cache/micro"))
    ap.add_argument("--bundle", type=Path, default=Path("models/micro-vqa2-streaming"))
    ap.add_argument("--out", type=Path,
                    help="results (default onnx/micro-results.json; with --train-every, onnx/micro-train-fit.json)")
    ap.add_argument("--no-baselines", action="store_true",
                    help="skip the classic baselines (8 min); those already in --out are kept when it "
                         "holds the same test clips (they do not depend on the bundle)")
    ap.add_argument("--train-every", type=int, default=0, metavar="N",
                    help="score every N-th training source instead of the test split: how well the model "
                         "fits what it was trained on (baselines skipped)")
    args = ap.parse_args()
    args.out = args.out or Path("onnx/micro-train-fit.json" if args.train_every else "onnx/micro-results.json")
    micro_data.scored_rows([], args.train_every)  # a bad --train-every is refused before a minute of loading
    rows = micro_data.finished_rows(args.data)
    # The baselines need the test clips' video files (data.py keeps only those); the model, the arrays,
    # of the scored sources only (all of them would take 10 GB: the test split alone is 1 GB).
    rows = [r for r in micro_data.scored_rows(rows, args.train_every) if args.train_every or clip_path(r, args.data).exists()]
    model = Model(args.bundle)
    arrays = T.load_arrays(args.data, {r["source"] for r in rows}, model.motion_input, model.keyframe_rule)
    split = f"training (every {args.train_every}-th source)" if args.train_every else "test"
    log(f"{len(rows)} {split} clips from {len({r['source'] for r in rows})} sources")
    started = time.time()
    rng = np.random.default_rng(1)
    ugc, streaming, lowered = [], [], []
    for r in rows:
        a = arrays[r["source"]]
        features = model.features(a["keyframes"][r["index"]], a["motion"][r["index"]])
        ugc.append(model.score(features))
        count, total, initial = T.random_stalls(rng)
        streaming.append(model.score(features, T.stall_sentence(count, total, initial)))
        lowered.append(r["mos"] * T.stall_factor(count, total, initial))
    log(f"scored in {time.time() - started:.0f} s")
    started = time.time()
    cuts = scene_cuts(model, rows, arrays, ugc)
    log(f"scene cuts scored in {time.time() - started:.0f} s")
    results = {"split": split, "clips": len(rows), "sources": sorted({r["source"] for r in rows}),
               "micro-vqa2 (ugc prompt)": table(rows, ugc) | {"calibration": calibration(rows, ugc)},
               "micro-vqa2 (streaming prompt, random stalls)": streaming_table(rows, streaming, lowered),
               "micro-vqa2 (ugc prompt, windows across a scene cut)": cuts,
               "per_clip": [{"source": r["source"], "family": r["family"], "strength": r["strength"],
                             "mos": r["mos"], "score": s, "streaming_mos": m, "streaming_score": t}
                            for r, s, m, t in zip(rows, ugc, lowered, streaming)]}
    if args.no_baselines or args.train_every:
        previous = json.loads(args.out.read_text()) if args.out.exists() else {}
        if (previous.get("clips"), previous.get("sources")) == (results["clips"], results["sources"]):
            kept = [name for names in BASELINES for name in names if name in previous]
            results.update({name: previous[name] for name in kept})
            log(f"baselines kept from {args.out}: {', '.join(kept) or 'none there'}")
    else:
        for names, scorer in BASELINES.items():
            # Written before each baseline, so that one that fails loses only itself (a rerun with
            # --no-baselines keeps those written).
            args.out.write_text(json.dumps(results, indent=1) + "\n")
            started = time.time()
            results.update({name: table(rows, scores) for name, scores in zip(names, scorer(rows, args.data), strict=True)})
            log(f"{', '.join(names)} in {time.time() - started:.0f} s")
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    for name, t in results.items():
        if isinstance(t, dict) and "overall" in t:
            o = t["overall"]
            log(f"{name:45s} SRCC {o['srcc']:.3f}  PLCC {o['plcc']:.3f}  flip {t.get('flip_rate', float('nan')):.3f}"
                + "".join(f"  {fam} flip {rate:.3f}" for fam, rate in t.get("flip_rates", {}).items()
                          if fam in micro_data.TRANSMISSION or fam in micro_data.HD))
    c = results["micro-vqa2 (ugc prompt)"]["calibration"]
    log(f"calibration: poor or low clips score {c['poor_or_low']:.3f} on average (goal < {POOR_BELOW}, "
        f"{c['poor_or_low_n']} clips), pristine {c['pristine']:.3f} (goal > {PRISTINE_ABOVE}, {c['pristine_n']} clips)")
    log(f"scene cuts: pristine windows across a cut score {cuts['pristine_cut']:.3f}, their clips alone "
        f"{cuts['pristine_alone']:.3f}")


if __name__ == "__main__":
    main()
