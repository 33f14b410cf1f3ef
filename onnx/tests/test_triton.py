"""`python -m qoe_onnx.triton`: one server model per graph, named by the bundle's digest, with
configs that declare the manifest's tensors; batching only where every tensor leads with the
same named dimension. (tests/remote.rs serves such repositories from a real Triton.)"""

import json
import shutil
from pathlib import Path

import pytest

from qoe_onnx import triton

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "bundles"


def test_one_model_per_graph_with_the_manifests_tensors(tmp_path):
    bundle = FIXTURES / "vqa2-tiny-streaming"
    manifest = json.loads((bundle / "bundle.json").read_text())
    names = triton.write_repository(bundle, tmp_path / "repo", backend="python")
    digest = triton.bundle_digest(bundle)
    assert sorted(names) == sorted(triton.model_name(digest, p) for p in manifest["parts"])
    for part_name, part in manifest["parts"].items():
        folder = tmp_path / "repo" / triton.model_name(digest, part_name)
        config = (folder / "config.pbtxt").read_text()
        assert (folder / "1" / "model.onnx").read_bytes() == (bundle / part["file"]).read_bytes()
        assert (folder / "1" / "model.py").is_file()
        for tensor in part["inputs"] + part["outputs"]:
            assert f'name: "{tensor["name"]}"' in config
        assert f'string_value: "{digest}"' in config
        # Keyframe encoders (one item per keyframe) and the batching decoder (one row per window).
        batched = part_name.startswith("keyframe_encoder") or part_name == "decoder_score"
        assert ("max_batch_size: 64" in config) == batched, (part_name, config)
        assert ("dynamic_batching" in config) == batched


def test_the_digest_follows_every_graph_file(tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(FIXTURES / "vqa2-tiny-ugc", bundle)
    before = triton.bundle_digest(bundle)
    graph = bundle / json.loads((bundle / "bundle.json").read_text())["parts"]["decoder_score"]["file"]
    graph.write_bytes(graph.read_bytes() + b"\0")
    assert triton.bundle_digest(bundle) != before


def test_onnxruntime_backend_has_no_python_model(tmp_path):
    bundle = FIXTURES / "vqa2-tiny-ugc"
    triton.write_repository(bundle, tmp_path / "r", backend="python")
    triton.write_repository(bundle, tmp_path / "r", backend="onnxruntime")
    assert not list((tmp_path / "r").glob("*/1/model.py"))
    assert all('backend: "onnxruntime"' in c.read_text() for c in (tmp_path / "r").glob("*/config.pbtxt"))


def test_bad_bundles_are_named(tmp_path, capsys):
    assert triton.main(["--bundle", str(tmp_path), "--out", str(tmp_path / "r")]) == 1
    assert f"{tmp_path / 'bundle.json'}: no bundle manifest here" in capsys.readouterr().err
    bundle = tmp_path / "b"
    shutil.copytree(FIXTURES / "vqa2-tiny-ugc", bundle)
    (bundle / "keyframe_encoder.onnx").unlink()
    with pytest.raises(triton.RepositoryError, match=r"keyframe_encoder\.onnx: missing"):
        triton.write_repository(bundle, tmp_path / "r2")


def test_external_data_travels_with_its_graph_and_counts_in_the_digest(tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(FIXTURES / "vqa2-tiny-ugc", bundle)
    before = triton.bundle_digest(bundle)
    data = bundle / "decoder_score.onnx.data"
    data.write_bytes(b"weights")
    assert triton.bundle_digest(bundle) != before
    triton.write_repository(bundle, tmp_path / "r")
    folder = tmp_path / "r" / triton.model_name(triton.bundle_digest(bundle), "decoder_score")
    assert (folder / "1" / "decoder_score.onnx.data").read_bytes() == b"weights"
