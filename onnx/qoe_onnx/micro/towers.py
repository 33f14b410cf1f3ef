"""The micro VQA² encoders (PyTorch): VQA²'s topology at micro scale.

- VisionTower: a small CNN on 320x180 keyframes (SigLIP's place), one feature per keyframe
  (global mean and standard deviation of every stage's feature map); fully convolutional, so
  stage 1 trains it on crops.
- MotionBranch: a SlowFast-fast-pathway-style 3D CNN on dense 64x64 frames, one feature per
  frame, from the frames and their differences to the previous frame (computed in the graph);
  three temporal 3-tap convolutions, so 4 frames of context before and 3 after. With
  `pair_stats`, two parameter-free statistics of each frame's luma difference to the previous one
  follow the learned features (`frame_pair_stats`). `motion_input` "luma128" reads 128x128
  frames' luma and its difference instead, through a spatial stride-2 stem, so the same three
  layers see four times the pixels at the same temporal context.
- Projector: mlp2x_gelu (Linear, GELU, Linear) into the decoder's 576-d embedding space.
  The motion projector first pools the window's per-frame features over time (mean, max and
  standard deviation), so the motion block is one token whatever the window's length.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .spec import KEYFRAME_FEATURES, LUMA_WEIGHTS, MOTION_FEATURES, MOTION_LUMA_SIZE, MOTION_SIZE

MEAN, STD = 0.5, 0.5


def normalise(pixels_uint8: torch.Tensor) -> torch.Tensor:
    """[..., H, W, 3] uint8 -> [..., 3, H, W] float, as the manifest's preprocess says."""
    x = pixels_uint8.float() / 255.0
    return ((x - MEAN) / STD).movedim(-1, -3)


def motion_frames(frames_uint8: np.ndarray) -> torch.Tensor:
    """A clip's motion frames as a motion branch takes them: [F, S, S, 3] RGB -> [1, 3, F, S, S],
    or [F, S, S] luma (the data's `motion_luma`) -> [1, 1, F, S, S], normalised alike."""
    x = torch.from_numpy(frames_uint8)
    if x.dim() == 3:
        return ((x.float() / 255.0 - MEAN) / STD)[None, None]
    return normalise(x).permute(1, 0, 2, 3).unsqueeze(0)


def mean_and_std(y: torch.Tensor, dim) -> list[torch.Tensor]:
    """Mean and standard deviation over `dim` (the pooling of both towers)."""
    mean = y.mean(dim=dim)
    return [mean, (y.pow(2).mean(dim=dim) - mean.pow(2)).clamp_min(1e-6).sqrt()]


def conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


TOWER_INPUT_CHANNELS = {"rgb": 3, "rgb+mscn": 4}  # what the first convolution takes
TOWER_INPUTS = tuple(TOWER_INPUT_CHANNELS)
MSCN_WINDOW = 7
MSCN_C = 2 / 255  # BRISQUE's C = 1 on 0..255, in the normalised [-1, 1] range


def bt601_luma(x: torch.Tensor, channels: int) -> torch.Tensor:
    """The BT.601 luma of RGB along dimension `channels` (which it removes)."""
    (wr, wg, wb), (r, g, b) = LUMA_WEIGHTS, x.unbind(channels)
    return wr * r + wg * g + wb * b


def mscn_luma(pixel_values: torch.Tensor) -> torch.Tensor:
    """[K, 3, H, W] normalised RGB -> [K, 1, H, W]: the luma's mean-subtracted contrast-normalised
    coefficients (BRISQUE's MSCN, a 7x7 box window instead of the Gaussian): local structure with
    the content's local brightness and contrast divided out, the statistics classic no-reference
    measures read noise, blur and blocking from whatever the content."""
    luma = bt601_luma(pixel_values, 1).unsqueeze(1)

    def local_mean(x):
        return F.avg_pool2d(x, MSCN_WINDOW, 1, MSCN_WINDOW // 2, count_include_pad=False)

    mu = local_mean(luma)
    sigma = (local_mean(luma * luma) - mu * mu).clamp_min(0).sqrt()
    return (luma - mu) / (sigma + MSCN_C)


class VisionTower(nn.Module):
    """Five stride-2 stages after a full-resolution one; every stage's mean and standard deviation
    are pooled, so the fine-scale statistics that noise, blocking and blur change reach the
    feature directly, not only through the coarse last map. `tower_input` "rgb+mscn" adds the
    luma's MSCN coefficients (`mscn_luma`, computed in the graph) as a fourth input channel."""

    def __init__(self, tower_input: str = "rgb"):
        super().__init__()
        if tower_input not in TOWER_INPUTS:
            raise ValueError(f"tower input {tower_input!r}: one of {', '.join(TOWER_INPUTS)}")
        self.tower_input = tower_input
        self.stages = nn.ModuleList([conv(TOWER_INPUT_CHANNELS[tower_input], 32, 1), conv(32, 32, 2), conv(32, 64, 2), conv(64, 96, 2),
                                     conv(96, 128, 2)])

    @staticmethod
    def input_of(first_conv_weight: torch.Tensor) -> str:
        """The tower input a first convolution's weight [32, C, 3, 3] takes (`TOWER_INPUT_CHANNELS`;
        another C is taken for rgb, whose shape check then names the mismatch)."""
        by_channels = {c: name for name, c in TOWER_INPUT_CHANNELS.items()}
        return by_channels.get(first_conv_weight.shape[1], "rgb")

    @classmethod
    def from_state(cls, tower_state: dict) -> "VisionTower":
        """A tower holding a trained state dict, with the input it was trained on."""
        tower = cls(cls.input_of(tower_state["stages.0.0.weight"]))
        tower.load_state_dict(tower_state)
        return tower

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:  # [K, 3, H, W] -> [K, 704]
        if self.tower_input == "rgb+mscn":
            pixel_values = torch.cat([pixel_values, mscn_luma(pixel_values)], dim=1)
        pooled, y = [], pixel_values
        for stage in self.stages:
            y = stage(y)
            pooled += mean_and_std(y, dim=(2, 3))
        return torch.cat(pooled, dim=1)


def conv3d(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, 3, (1, 2, 2), 1), nn.BatchNorm3d(cout), nn.ReLU(inplace=True))


PAIR_STATS = 2  # frame_pair_stats' statistics per frame
STILL_STEP = 2 / 255  # one 8-bit step of luma in the normalised [-1, 1] range
CHANGE_FLOOR = 1e-3  # log10's floor under the mean absolute difference (a repeated frame's 0)
# Each statistic's mean and standard deviation over the micro data's motion frames (every 6th
# source, every 7th clip): standardised, they vary as much as the learned features do, so a
# projector column starting at zero learns them at the rate it learns the others.
PAIR_STATS_MEAN, PAIR_STATS_STD = (0.65, -1.97), (0.26, 0.46)
# Then scaled up: under Adam a weight moves about its learning rate a step whatever its
# gradient's size, so an input's scale is its zero-started column's rate in function space;
# at 1, 300 steps of stage 3 left those columns a thirtieth of the others' size (onnx/README).
PAIR_STATS_GAIN = 10.0


def frame_luma(frames: torch.Tensor) -> torch.Tensor:
    """[1, 3, F, H, W] normalised RGB frames -> [F, H, W] BT.601 luma (normalised alike, since the
    weights sum to 1); [1, 1, F, H, W] frames are luma already (the data's `motion_luma`)."""
    if frames.shape[1] == 1:
        return frames[0, 0]
    return bt601_luma(frames[0], 0)


def frame_pair_stats(frames: torch.Tensor) -> torch.Tensor:
    """[1, 3, F, H, W] normalised frames (or [1, 1, F, H, W] luma) -> [F, 2]: per frame, the share of pixels whose luma moved
    by less than one 8-bit step since the previous frame, and log10 of the luma's mean absolute
    difference to it (the first frame: no change), each standardised (PAIR_STATS_MEAN and _STD)
    and scaled by PAIR_STATS_GAIN. A repeated frame reads (1, -3) before standardising, whatever
    the content; the learned features see repeats only as a trained convolution makes of them,
    and a ridge probe read freezes, stutter and transmission damage better from such statistics
    than from the 144 pooled features (onnx/README, #30's eleventh session). An exported graph
    holds the constants it was made with; training goes on from one with today's, so the
    recipes name them (`pair_stats_recipe`)."""
    luma = frame_luma(frames)  # [F, H, W]
    diff = torch.cat([torch.zeros_like(luma[:1]), luma[1:] - luma[:-1]]).abs()
    still = (diff < STILL_STEP).float().mean(dim=(1, 2))
    change = torch.log10(diff.mean(dim=(1, 2)) + CHANGE_FLOOR)
    stats = torch.stack([still, change], dim=1)
    return PAIR_STATS_GAIN * (stats - torch.tensor(PAIR_STATS_MEAN)) / torch.tensor(PAIR_STATS_STD)


def pair_stats_recipe() -> dict:
    """What a recipe records of the frame-pair statistics: their constants."""
    return {"mean": list(PAIR_STATS_MEAN), "std": list(PAIR_STATS_STD), "gain": PAIR_STATS_GAIN}


# What a motion branch reads: its frames' size, and whether it reads their colour or only their luma;
# and the data's array that holds such frames.
MOTION_INPUTS = {"rgb": MOTION_SIZE, "luma128": MOTION_LUMA_SIZE}
MOTION_ARRAYS = {"rgb": "motion", "luma128": "motion_luma"}


def time_diff(x: torch.Tensor) -> torch.Tensor:
    """[1, C, F, H, W] -> each frame's difference to the previous one (the first: none)."""
    return torch.cat([torch.zeros_like(x[:, :, :1]), x[:, :, 1:] - x[:, :, :-1]], dim=2)


class MotionBranch(nn.Module):
    """`pair_stats`: `frame_pair_stats` after the learned features (`features` wide in all).
    `motion_input` "rgb": 64x64 RGB frames and their differences (6 channels) into three stride-2
    layers. "luma128": 128x128 frames' luma and its difference (2 channels) into a stem that
    halves them without looking across time, then the same three layers (the same context:
    `MOTION_CONTEXT`). Its graph takes RGB frames, as the element gives them; training feeds the
    data's luma directly ([1, 1, F, H, W]), which the graph's own luma equals to 8-bit rounding."""

    def __init__(self, pair_stats: bool = False, motion_input: str = "rgb"):
        super().__init__()
        if motion_input not in MOTION_INPUTS:
            raise ValueError(f"motion input {motion_input!r}: one of {', '.join(MOTION_INPUTS)}")
        self.pair_stats, self.motion_input = pair_stats, motion_input
        self.size = MOTION_INPUTS[motion_input]
        self.features = MOTION_FEATURES + (PAIR_STATS if pair_stats else 0)
        if motion_input == "rgb":
            self.body = nn.Sequential(conv3d(6, 16), conv3d(16, 32), conv3d(32, MOTION_FEATURES))
        else:
            stem = nn.Sequential(nn.Conv3d(2, 16, (1, 3, 3), (1, 2, 2), (0, 1, 1)), nn.BatchNorm3d(16),
                                 nn.ReLU(inplace=True))
            self.body = nn.Sequential(stem, conv3d(16, 16), conv3d(16, 32), conv3d(32, MOTION_FEATURES))

    @staticmethod
    def input_of(first_conv_weight: torch.Tensor) -> str:
        """The motion input a first convolution's weight takes: [16, 6, 3, 3, 3] for rgb,
        [16, 2, 1, 3, 3] for luma128."""
        return "luma128" if first_conv_weight.shape[1] == 2 else "rgb"

    def forward(self, frames: torch.Tensor) -> torch.Tensor:  # [1, 3 or 1, F, S, S] -> [F, features]
        # Differences to the previous frame make repeats, drops and jitter plain to see.
        if self.motion_input == "rgb":
            x = torch.cat([frames, time_diff(frames)], dim=1)
        else:
            luma = frame_luma(frames)[None, None]
            x = torch.cat([luma, time_diff(luma)], dim=1)
        y = self.body(x)  # [1, C, F, 8, 8]
        learned = y.mean(dim=(3, 4))[0].transpose(0, 1)
        return torch.cat([learned, frame_pair_stats(frames)], dim=1) if self.pair_stats else learned


class Projector(nn.Module):
    """mlp2x_gelu."""

    def __init__(self, cin: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(cin, hidden), nn.GELU(), nn.Linear(hidden, hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def motion_pool(per_frame: torch.Tensor) -> torch.Tensor:
    """[F, C] -> [3C]: mean, max and standard deviation over the window's frames."""
    mean, std = mean_and_std(per_frame, dim=0)
    return torch.cat([mean, per_frame.max(dim=0).values, std])


class KeyframeEncoder(nn.Module):
    """The exported keyframe graph: tower + projector, one token per keyframe."""

    def __init__(self, tower: VisionTower, projector: Projector):
        super().__init__()
        self.tower, self.projector = tower, projector

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:  # [K, 3, H, W] -> [K, 1, 576]
        return self.projector(self.tower(pixel_values)).unsqueeze(1)


class MotionProjector(nn.Module):
    """The exported motion projector graph: temporal pooling + mlp2x_gelu, one token."""

    def __init__(self, projector: Projector):
        super().__init__()
        self.projector = projector

    def forward(self, motion_feat: torch.Tensor) -> torch.Tensor:  # [F, features] -> [1, 576]
        return self.projector(motion_pool(motion_feat)).unsqueeze(0)
