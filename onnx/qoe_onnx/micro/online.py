"""Stage 1's online samples (run 7): crops of the training photographs, distorted on the fly.

The stored clips give the vision tower 64 training sources, each at three fixed strengths per
distortion. The pseudo-MOS depends on the content as much as on the distortion (the same noise
costs a textured picture more SSIM than a smooth one), so the tower must learn that interplay
from far more content than 64 sources. Here every sample is a new crop, at a new scale, of one
of the training photographs (DATA/stills, written by data.py; never a test photograph), with a
distortion of the same families at a continuous strength, a JPEG stand-in for the delivery
encoding, and its own label: the same `pseudo_mos` of the same SSIM as FFmpeg's `ssim` filter
computes on yuv420p (x264's 8x8 windows on a 4-pixel grid; Y, U and V weighted 4:1:1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from . import data as micro_data

# The spatial families of DISTORTIONS (compression needs x264 and stays with the stored clips),
# and the level each family's strength 0 stands for (no distortion).
FAMILIES = [d[0] for d in micro_data.DISTORTIONS if d[1] == "spatial"]
UNDISTORTED = {"jpeg": 100, "blur": 0.0, "motion_blur": 1, "noise": 0.0, "overexposure": 1.0, "underexposure": 1.0,
               "low_contrast": 1.0, "high_contrast": 1.0, "oversaturation": 1.0, "desaturation": 1.0, "block": 1,
               "downscale": 1.0, "banding": 1}
INTEGER_LEVELS = ("jpeg", "motion_blur", "block", "banding")
PRISTINE_SHARE = 0.15  # of the online samples, undistorted (the stored clips have 1 in 53)
DELIVERY_JPEG = 90  # a light lossy encoding after the distortion, as x264 CRF 18 is for the stored clips
REGION = (0.1, 0.45)  # a crop's side as a share of the still's width, log-uniform (the test pans: 0.22-0.36)


def load_stills(data: Path) -> list[np.ndarray]:
    folder = data / "stills"
    files = sorted(folder.glob("*.png")) if folder.is_dir() else []
    if not files:
        raise SystemExit(f"{folder}: no training stills; run `python -m qoe_onnx.micro.data` on this data "
                         "folder again (it writes them for finished data too, in seconds)")
    return [np.asarray(Image.open(f).convert("RGB")) for f in files]


def level_at(family: str, strength: float):
    """A family's level at a continuous strength in [0, 3]: linear between its graded levels,
    strength 0 being no distortion."""
    points = [UNDISTORTED[family]] + micro_data.LEVELS[family]
    i = min(int(strength), len(points) - 2)
    level = points[i] + (points[i + 1] - points[i]) * (strength - i)
    return int(round(level)) if family in INTEGER_LEVELS else float(level)


def random_crop(still: np.ndarray, size: int, rng) -> np.ndarray:
    h, w = still.shape[:2]
    side = min(h, int(w * np.exp(rng.uniform(*np.log(REGION)))))
    y0, x0 = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    return np.asarray(Image.fromarray(still[y0:y0 + side, x0:x0 + side]).resize((size, size), Image.BICUBIC))


def yuv420(rgb: np.ndarray) -> list[np.ndarray]:
    """BT.601 limited range (swscale's default for rgb24 to yuv420p), chroma averaged 2x2."""
    f = rgb.astype(np.float64)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    h, w = (rgb.shape[0] // 2) * 2, (rgb.shape[1] // 2) * 2

    def half(c):
        return c[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))

    return [np.round(y), np.round(half(u)), np.round(half(v))]


def plane_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """x264's SSIM (as FFmpeg's filter): sums over 4x4 blocks, 8x8 windows of 2x2 blocks."""
    h, w = (a.shape[0] // 4) * 4, (a.shape[1] // 4) * 4

    def blocks(x):
        return x[:h, :w].reshape(h // 4, 4, w // 4, 4).sum(axis=(1, 3))

    def windows(s):
        return s[:-1, :-1] + s[1:, :-1] + s[:-1, 1:] + s[1:, 1:]

    s1, s2, ss, s12 = (windows(blocks(x)) for x in (a, b, a * a + b * b, a * b))
    c1, c2 = 0.01 ** 2 * 255 ** 2 * 64, 0.03 ** 2 * 255 ** 2 * 64 * 63
    var = ss * 64 - s1 * s1 - s2 * s2
    covar = s12 * 64 - s1 * s2
    return float(np.mean((2 * s1 * s2 + c1) * (2 * covar + c2) / ((s1 * s1 + s2 * s2 + c1) * (var + c2))))


def ffmpeg_ssim(distorted: np.ndarray, reference: np.ndarray) -> float:
    """FFmpeg's `ssim` All of two RGB pictures as yuv420p: the planes weighted by their sizes."""
    planes = [plane_ssim(a, b) for a, b in zip(yuv420(distorted), yuv420(reference))]
    return (4 * planes[0] + planes[1] + planes[2]) / 6


def random_version(crop: np.ndarray, rng) -> tuple[np.ndarray, dict]:
    """The crop pristine or distorted at a random strength, delivered, and labelled."""
    if rng.random() < PRISTINE_SHARE:
        family, strength, pixels = "pristine", 0.0, crop
    else:
        family = FAMILIES[int(rng.integers(len(FAMILIES)))]
        strength = float(rng.uniform(0.25, 3.0))
        pixels = micro_data.spatial(family, level_at(family, strength), crop, rng)
    delivered = micro_data.jpeg(pixels, DELIVERY_JPEG)
    return delivered, {"family": family, "strength": strength,
                       "mos": micro_data.pseudo_mos(ffmpeg_ssim(delivered, crop))}


def random_pair(stills: list[np.ndarray], size: int, rng) -> list[tuple[np.ndarray, dict]]:
    """Two versions of one new crop, so what tells them apart is the distortion, not the content."""
    crop = random_crop(stills[int(rng.integers(len(stills)))], size, rng)
    return [random_version(crop, rng) for _ in range(2)]
