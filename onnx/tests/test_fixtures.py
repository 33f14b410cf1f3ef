"""The committed fixtures under tests/fixtures are what the code makes: the tiny bundles
validate and reproduce their golden scores on ONNX Runtime, and Pillow still resizes the
golden images as recorded."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from qoe_onnx import bundle, fixtures, ort_pipeline

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures"


@pytest.fixture(scope="module", autouse=True)
def tokenizers(qwen_tokenizer_path):
    fixtures.write_tokenizers(FIXTURES, qwen_tokenizer_path.parent)


@pytest.mark.parametrize("name", sorted(fixtures.FAMILY_BUNDLES))
def test_committed_family_bundle_reproduces_its_golden_outputs(name):
    runner = ort_pipeline.Runner(FIXTURES / "bundles" / name)
    golden = json.loads((FIXTURES / "golden" / name / "golden.json").read_text())
    for seq, g in golden["sequences"].items():
        spec = g["frames"]
        frames = np.frombuffer((FIXTURES / "golden" / name / spec["file"]).read_bytes(), np.uint8).reshape(spec["shape"])
        got = runner.score(frames, g["fps"])
        if "generated_ids" in g:
            assert got["generated_ids"] == g["generated_ids"]
        else:
            np.testing.assert_allclose(got["frame_scores"], g["frame_scores"], atol=1e-5)
        assert got["score"] == pytest.approx(g["score"], abs=1e-4)


@pytest.mark.parametrize("name", sorted(fixtures.BUNDLES))
def test_committed_bundle_reproduces_its_golden_outputs(name):
    folder = FIXTURES / "bundles" / name
    runner = ort_pipeline.Runner(folder)
    golden = json.loads((FIXTURES / "golden" / name / "golden.json").read_text())
    if golden["variant"] == "assistant":
        for seq, g in golden["sequences"].items():
            spec = g["frames"]
            frames = np.frombuffer((FIXTURES / "golden" / name / spec["file"]).read_bytes(), np.uint8).reshape(spec["shape"])
            assert runner.generate(frames, g["fps"], golden["question"], g["max_new_tokens"]) == g["generated_ids"]
        return
    for seq, g in golden["sequences"].items():
        spec = g["frames"]
        frames = np.frombuffer((FIXTURES / "golden" / name / spec["file"]).read_bytes(), np.uint8).reshape(spec["shape"])
        got = runner.score(frames, g["fps"], golden["stall"])
        assert abs(got["score"] - g["score"]) < 1e-4, (name, seq)
        np.testing.assert_allclose(got["probabilities"], g["probabilities"], atol=1e-4)
        embeds = bundle.read_raw(FIXTURES / "golden" / name, g["tensors"]["keyframe_embeds"])
        np.testing.assert_allclose(got["keyframe_embeds"], embeds, rtol=1e-4, atol=1e-5)
        assert got["sequence_length"] == len(g["token_ids"])


def test_pillow_golden_is_current_pillow():
    folder = FIXTURES / "golden" / "pillow"
    for case in json.loads((folder / "cases.json").read_text())["cases"]:
        src = np.frombuffer((folder / case["source"]).read_bytes(), np.uint8).reshape(case["source_shape"])
        want = np.frombuffer((folder / case["resized"]).read_bytes(), np.uint8).reshape(case["resized_shape"])
        h, w, _ = case["resized_shape"]
        got = np.asarray(Image.fromarray(src).resize((w, h), Image.BICUBIC))
        assert np.array_equal(got, want), case
