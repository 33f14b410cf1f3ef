"""SlowFast-R50's fast pathway, written from the spec (section 5), with pytorchvideo's
parameter names so that checkpoint keys load as they are.

Only the fast pathway is needed: it never reads the slow pathway (the fusion feeds fast into
slow, not back), so its output equals the full network's fast features exactly.

Checkpoint keys (under ``model.slowfast.feature_extraction.``)::

    0.multipathway_blocks.1.{conv,norm}.*                                  stem
    {1..4}.multipathway_blocks.1.res_blocks.{i}.branch1_{conv,norm}.*     shortcut (block 0)
    {1..4}.multipathway_blocks.1.res_blocks.{i}.branch2.{conv,norm}_{a,b,c}.*
"""

from __future__ import annotations

import torch
from torch import nn

# (in, inner, out, depth, spatial stride) of res2..res5.
STAGES = ((8, 8, 32, 3, 1), (32, 16, 64, 4, 2), (64, 32, 128, 6, 2), (128, 64, 256, 3, 2))
FEATURES = 256
# Stem ±2 frames, then 16 blocks with a temporal kernel of 3 (±1 each): zero padding reaches
# 18 frames into a clip, so a chunk needs 18 frames of real context on each side to equal
# whole-clip features.
TEMPORAL_CONTEXT = 18


class Stem(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 8, (5, 7, 7), stride=(1, 2, 2), padding=(2, 3, 3), bias=False)
        self.norm = nn.BatchNorm3d(8, eps=1e-5)
        self.pool = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(torch.relu(self.norm(self.conv(x))))


class Bottleneck(nn.Module):
    def __init__(self, dim_in: int, inner: int, dim_out: int) -> None:
        super().__init__()
        self.conv_a = nn.Conv3d(dim_in, inner, (3, 1, 1), padding=(1, 0, 0), bias=False)
        self.norm_a = nn.BatchNorm3d(inner, eps=1e-5)
        self.conv_b = nn.Conv3d(inner, inner, (1, 3, 3), padding=(0, 1, 1), bias=False)
        self.norm_b = nn.BatchNorm3d(inner, eps=1e-5)
        self.conv_c = nn.Conv3d(inner, dim_out, 1, bias=False)
        self.norm_c = nn.BatchNorm3d(dim_out, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.norm_a(self.conv_a(x)))
        x = torch.relu(self.norm_b(self.conv_b(x)))
        return self.norm_c(self.conv_c(x))


class ResBlock(nn.Module):
    def __init__(self, dim_in: int, inner: int, dim_out: int, stride: int, shortcut: bool) -> None:
        super().__init__()
        if shortcut:
            self.branch1_conv = nn.Conv3d(dim_in, dim_out, 1, stride=(1, stride, stride), bias=False)
            self.branch1_norm = nn.BatchNorm3d(dim_out, eps=1e-5)
        else:
            self.branch1_conv = None
        self.branch2 = Bottleneck(dim_in, inner, dim_out)
        self.branch2.conv_b.stride = (1, stride, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.branch1_conv is None else self.branch1_norm(self.branch1_conv(x))
        return torch.relu(skip + self.branch2(x))


class Stage(nn.Module):
    def __init__(self, dim_in: int, inner: int, dim_out: int, depth: int, stride: int) -> None:
        super().__init__()
        self.res_blocks = nn.ModuleList(
            ResBlock(dim_in if i == 0 else dim_out, inner, dim_out, stride if i == 0 else 1, shortcut=i == 0)
            for i in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.res_blocks:
            x = block(x)
        return x


class PathwayBlock(nn.Module):
    """One ``feature_extraction.{i}`` entry, holding only the fast pathway (index 1)."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.multipathway_blocks = nn.ModuleDict({"1": block})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.multipathway_blocks["1"](x)


class FastPathway(nn.Module):
    """``frames`` [1, 3, T, H, W] (normalised) → per-frame features [T, 256] (mean over H, W)."""

    def __init__(self) -> None:
        super().__init__()
        self.feature_extraction = nn.ModuleList(
            [PathwayBlock(Stem())] + [PathwayBlock(Stage(*stage)) for stage in STAGES]
        )

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames
        for block in self.feature_extraction:
            x = block(x)
        # AdaptiveAvgPool2d(1) on a 5-D tensor is a mean over the last two axes.
        return x.mean(dim=(-2, -1))[0].transpose(0, 1)


def fast_pathway_keys(prefix: str = "model.slowfast.feature_extraction.") -> dict[str, tuple[int, ...]]:
    """Every checkpoint key of the fast pathway, with its shape."""
    return {prefix + k: tuple(v.shape) for k, v in FastPathway().feature_extraction.state_dict().items()}
