"""The bundle format carries the LMM-VQA-shaped and CP-LLM-shaped families too: exported tiny
models give the reference's answers and scores on ONNX Runtime."""

import numpy as np
import pytest
from tokenizers import Tokenizer

from qoe_onnx import bundle, families, ort_pipeline, reference


@pytest.fixture(scope="module")
def lmm(qwen_tokenizer_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("lmm")
    ckpt = families.write_lmm_vqa(root / "ckpt", qwen_tokenizer_path)
    families.export_lmm_vqa(ckpt, root / "bundle")
    return families.load_lmm_vqa(ckpt), root / "bundle"


@pytest.fixture(scope="module")
def cp(qwen_tokenizer_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("cp")
    ckpt = families.write_cp_llm(root / "ckpt")
    families.export_cp_llm(ckpt, root / "bundle", qwen_tokenizer_path)
    return families.load_cp_llm(ckpt), root / "bundle"


@pytest.mark.parametrize("shape", [(20, 48, 64, 8.0), (9, 30, 40, 4.0), (90, 24, 32, 10.0)])
def test_lmm_vqa_answer_and_score_equal_the_reference(lmm, qwen_tokenizer_path, shape):
    model, folder = lmm
    n, h, w, fps = shape
    frames = reference.synthetic_frames(n, h, w, seed=n)
    runner = ort_pipeline.Runner(folder)
    rows = [int(t) for t in runner.constants["vocabulary_rows"]]
    expected = families.lmm_reference(model, Tokenizer.from_file(str(qwen_tokenizer_path)), frames, fps, rows)
    got = runner.score(frames, fps)
    np.testing.assert_allclose(got["visual"], expected["visual"], rtol=1e-4, atol=1e-5)
    assert got["generated_ids"] == expected["generated_ids"]
    assert got["score"] == expected["score"]


@pytest.mark.parametrize("shape", [(20, 48, 64, 8.0), (9, 30, 40, 4.0), (3, 500, 460, 1.0)])
def test_cp_llm_head_score_equals_the_reference(cp, shape):
    model, folder = cp
    n, h, w, fps = shape
    frames = reference.synthetic_frames(n, h, w, seed=n)
    expected = families.cp_reference(model, frames, fps)
    got = ort_pipeline.Runner(folder).score(frames, fps)
    np.testing.assert_allclose(got["frame_scores"], expected["frame_scores"], rtol=1e-4, atol=1e-6)
    assert abs(got["score"] - expected["score"]) < 1e-4


def test_manifests_say_how_each_family_scores(lmm, cp):
    lmm_manifest, cp_manifest = bundle.validate(lmm[1]), bundle.validate(cp[1])
    assert lmm_manifest["score"]["mode"] == "generated-number"
    assert lmm_manifest["sampling"]["motion"] == {
        "mode": "chunks", "every_seconds": 1, "chunk_frames": 32, "pad": "repeat-last", "slow_stride": 4
    }
    assert lmm_manifest["preprocess"]["motion_encoder"]["mean"] == [0.45, 0.45, 0.45]
    assert cp_manifest["score"] == {
        "mode": "quality-head", "part": "quality_head", "aggregate": "mean-over-keyframes", "range": [0.0, 1.0]
    }
    assert cp_manifest["decoder"] is None
    assert set(cp_manifest["parts"]) == {"high_level_encoder", "low_level_encoder", "quality_head"}


def test_answer_parsing():
    assert families.parse_number("The score is 4.5.", 1.0, 5.0) == pytest.approx(0.875)
    assert families.parse_number("quality 9", 1.0, 5.0) == 1.0
    assert families.parse_number("no digits here", 1.0, 5.0) is None


def test_chunks_start_every_second_and_repeat_the_last_frame():
    chunks = families.lmm_chunk_indices(40, 25.0)
    assert [c[0] for c in chunks] == [0, 25]
    assert chunks[1][:15] == list(range(25, 40)) and chunks[1][15:] == [39] * 17
    assert families.lmm_keyframe_indices(30, 10.0) == [0, 10, 20, 20, 20, 20, 20, 20]
