"""The exporter: every graph equals PyTorch on ONNX Runtime (fp32 and fp16), the bundle
pipeline equals the reference end to end, and bad input is refused by name."""

import json
import shutil

import numpy as np
import onnxruntime as ort
import pytest
import torch
from tokenizers import Tokenizer

from qoe_onnx import bundle, export, ort_pipeline, prompts, reference
from qoe_onnx.checkpoint import CheckpointError
from qoe_onnx.micro.smollm import left_padded

# fp32 graphs: ORT and PyTorch differ only by kernel rounding. fp16 graphs keep fp32 inputs,
# outputs and normalisations; the tolerance is relative to the output's scale.
FP32 = dict(rtol=1e-4, atol=1e-5)
FP16_RELATIVE = 2e-2


def session(folder, part):
    manifest = json.loads((folder / "bundle.json").read_text())
    return ort.InferenceSession(str(folder / manifest["parts"][part]["file"]), providers=["CPUExecutionProvider"])


def graph_cases(model):
    g = torch.Generator().manual_seed(3)
    h = model.cfg.hidden_size
    pixels = torch.rand(2, 3, 384, 384, generator=g) * 2 - 1
    frames = torch.rand(1, 3, 6, 384, 384, generator=g) * 2 - 1
    feat = torch.randn(6, 256, generator=g)
    positions = torch.tensor([0, 1, 2, 3, 4, 200])
    embeds = torch.randn(1, 40, h, generator=g)
    level_ids = [1550, 1661, 6624, 7852, 3347]
    with torch.no_grad():
        return {
            "keyframe_encoder": ({"pixel_values": pixels}, model.keyframe(pixels)),
            "motion_encoder": ({"frames": frames}, model.motion(frames)),
            "motion_projector": ({"motion_feat": feat, "positions": positions}, model.motion_projector(feat, positions)),
            "decoder_score": (
                {"inputs_embeds": embeds, "attention_mask": torch.ones(1, 40, dtype=torch.int64)},
                (model.llm(inputs_embeds=embeds).last_hidden_state[:, -1] @ model.lm_head[level_ids].T),
            ),
        }


@pytest.mark.parametrize("part", ["keyframe_encoder", "motion_encoder", "motion_projector", "decoder_score"])
def test_fp32_graph_equals_pytorch(export_bundle, tiny_model, part):
    folder = export_bundle()
    inputs, expected = graph_cases(tiny_model)[part]
    got = session(folder, part).run(None, {k: v.numpy() for k, v in inputs.items()})[0]
    np.testing.assert_allclose(got, expected.numpy(), **FP32)


@pytest.mark.parametrize("part", ["keyframe_encoder", "motion_encoder", "motion_projector", "decoder_score"])
def test_fp16_graph_is_close_to_pytorch(export_bundle, tiny_model, part):
    folder = export_bundle(dtype="fp16")
    inputs, expected = graph_cases(tiny_model)[part]
    got = session(folder, part).run(None, {k: v.numpy() for k, v in inputs.items()})[0]
    assert got.dtype == np.float32, "fp16 bundles keep fp32 inputs and outputs"
    scale = float(np.abs(expected.numpy()).max())
    assert float(np.abs(got - expected.numpy()).max()) <= FP16_RELATIVE * scale


def test_batched_decoder_rows_score_as_alone(export_bundle, tiny_model):
    """Windows of different lengths in one decoder_score call, left-padded under the mask,
    give each window's level logits within 1e-4 of PyTorch on that window alone."""
    folder = export_bundle()
    manifest = json.loads((folder / "bundle.json").read_text())
    assert manifest["parts"]["decoder_score"]["batch"] is True
    g = torch.Generator().manual_seed(5)
    h = tiny_model.cfg.hidden_size
    rows = [torch.randn(n, h, generator=g) for n in (40, 23, 7, 23)]
    level_ids = [1550, 1661, 6624, 7852, 3347]
    with torch.no_grad():
        alone = np.stack([(tiny_model.llm(inputs_embeds=r[None]).last_hidden_state[0, -1]
                           @ tiny_model.lm_head[level_ids].T).numpy() for r in rows])
    embeds, mask = left_padded([r.numpy() for r in rows], past=0)
    got = session(folder, "decoder_score").run(None, {"inputs_embeds": embeds, "attention_mask": mask})[0]
    np.testing.assert_allclose(got, alone, atol=1e-4)
    assert np.abs(alone[0] - alone[2]).max() > 1e-3, "different windows must score differently"


def test_token_embedding_rows_follow_the_subset(export_bundle, tiny_model):
    folder = export_bundle()
    runner = ort_pipeline.Runner(folder)
    ids = [151644, 872, 198, 1550, 3347]
    np.testing.assert_allclose(runner.embed(ids), tiny_model.llm.embed_tokens.weight[ids].detach().numpy(), **FP32)
    with pytest.raises(bundle.BundleError, match="token 99999 is not in this bundle's vocabulary subset"):
        runner.embed([99999])


@pytest.mark.parametrize(
    "variant,stall_format",
    [("ugc", "none"), ("ugc-2411", "none"), ("streaming", "none"), ("streaming", "summary"), ("streaming", "per-frame")],
)
@pytest.mark.parametrize("shape", [(20, 48, 64, 8.0), (6, 400, 480, 2.0), (33, 36, 36, 30.0)])
def test_end_to_end_score_equals_reference(export_bundle, tiny_model, qwen_tokenizer_path, variant, stall_format, shape):
    n, h, w, fps = shape
    frames = reference.synthetic_frames(n, h, w, seed=n)
    if variant == "ugc-2411" and n < 32:
        # Every 8th of the frames trimmed to a multiple of 8, then to a multiple of 4: none.
        for run in (lambda: reference.run(tiny_model, Tokenizer.from_file(str(qwen_tokenizer_path)), frames, fps, variant),
                    lambda: ort_pipeline.Runner(export_bundle(variant)).score(frames, fps)):
            with pytest.raises(ValueError, match="give no motion frames"):
                run()
        return
    stall = {"count": 1, "total": 0.8, "durations": [0.8], "initial": 0.3, "ratio": 0.05, "since": 1.0, "sequence": [0, 0, 1, 1, 0]}
    expected = reference.run(tiny_model, Tokenizer.from_file(str(qwen_tokenizer_path)), frames, fps, variant, stall_format, stall)
    got = ort_pipeline.Runner(export_bundle(variant, stall_format=stall_format)).score(frames, fps, stall)
    assert abs(got["score"] - expected.score) < 1e-4
    np.testing.assert_allclose(got["probabilities"], expected.probabilities, atol=1e-4)
    assert got["sequence_length"] == len(expected.token_ids)


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_kv_cache_generation_equals_uncached_reference(export_bundle, tiny_model, qwen_tokenizer_path, dtype):
    folder = export_bundle("assistant", dtype=dtype)
    runner = ort_pipeline.Runner(folder)
    frames = reference.synthetic_frames(8, 40, 40, seed=4)
    # Tiny bundles keep only the rows their prompts use; this question is one of them.
    question = "How would you rate the quality of this video?"
    got_logits, expected_logits = [], []
    got = runner.generate(frames, 4.0, question, max_new_tokens=12, step_logits=got_logits)
    rows = [int(t) for t in runner.constants["vocabulary_rows"]]
    expected = reference.generate(
        tiny_model, Tokenizer.from_file(str(qwen_tokenizer_path)), frames, 4.0, question, rows, 12, expected_logits
    )
    if dtype == "fp32":
        assert got == expected
        # Every cached step's logits equal a full recomputation's.
        for step, (g, e) in enumerate(zip(got_logits, expected_logits)):
            np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4, err_msg=f"step {step}")
    else:  # fp16 may flip a near tie late in the answer
        assert got[:4] == expected[:4]
    assert len(got) > 0


def test_prompt_matches_the_spec_token_ids(qwen_tokenizer_path):
    """Spec 8.1: system + [151644, 872, 198, -200, -200, 151645, 198] + [151644, 77091, 198, 151645, 198]."""
    tok = Tokenizer.from_file(str(qwen_tokenizer_path))
    ids = []
    for seg in prompts.variant("ugc")["segments"]:
        ids += [-200] if "embed" in seg else tok.encode(seg["text"]).ids
    system = [151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198]
    assert ids == system + [151644, 872, 198, -200, -200, 151645, 198] + [151644, 77091, 198, 151645, 198]
    # The logit position -3 is the newline after "assistant".
    assert ids[-3] == 198 and ids[-4] == 77091


def test_sequence_length_follows_the_spec_formula(tiny_model, qwen_tokenizer_path):
    """L = 21 + (196·K + 1) + T for the current UGC prompt (spec section 6)."""
    frames = reference.synthetic_frames(20, 48, 64, seed=1)
    r = reference.run(tiny_model, Tokenizer.from_file(str(qwen_tokenizer_path)), frames, 8.0, "ugc")
    assert len(r.token_ids) == 21 + 196 * 3 + 1 + 20


def test_sampling_rules():
    assert reference.keyframe_indices(20, 8.0) == [0, 8, 16]
    assert reference.keyframe_indices(5, 30.0) == [0]  # fewer frames than a second
    assert reference.keyframe_indices(60, 29.97) == [0, 30]
    assert reference.motion_indices(23) == list(range(20))
    assert reference.motion_indices(70, stride=8, trim_before_stride=8) == [0, 8, 16, 24, 32, 40, 48, 56]


def test_external_data_bundle_runs(export_bundle):
    folder = export_bundle(external_data=True)
    assert (folder / "decoder_score.onnx.data").exists()
    frames = reference.synthetic_frames(8, 32, 32, seed=5)
    assert 0.2 <= ort_pipeline.Runner(folder).score(frames, 4.0)["score"] <= 1.0


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_missing_shard_is_named(tiny_checkpoint, tmp_path):
    ckpt = _copy(tiny_checkpoint, tmp_path / "ckpt")
    (ckpt / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="shard model-00002-of-00002.safetensors listed in model.safetensors.index.json is missing"):
        export.export(ckpt, tmp_path / "out", "ugc")


def test_missing_key_is_named(tiny_checkpoint, tmp_path):
    from safetensors.torch import load_file, save_file

    ckpt = _copy(tiny_checkpoint, tmp_path / "ckpt")
    index = json.loads((ckpt / "model.safetensors.index.json").read_text())
    key = "model.mm_projector.2.weight"
    shard = ckpt / index["weight_map"][key]
    tensors = load_file(str(shard))
    del tensors[key]
    save_file(tensors, str(shard))
    with pytest.raises(CheckpointError, match=r"missing key model\.mm_projector\.2\.weight \(keyframe projector\)"):
        export.export(ckpt, tmp_path / "out", "ugc")


def test_shape_mismatch_is_named(tiny_checkpoint, tmp_path):
    ckpt = _copy(tiny_checkpoint, tmp_path / "ckpt")
    config = json.loads((ckpt / "config.json").read_text())
    config["mm_hidden_size"] = 48  # the checkpoint's projector takes 32
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"shape mismatch for model\.mm_projector\.0\.weight"):
        export.export(ckpt, tmp_path / "out", "ugc")


def test_unknown_variant_and_dtype_are_refused(tiny_checkpoint, tmp_path):
    with pytest.raises(CheckpointError, match="unknown variant 'mos'"):
        export.export(tiny_checkpoint, tmp_path / "out", "mos")
    with pytest.raises(CheckpointError, match="unknown dtype 'int4'"):
        export.export(tiny_checkpoint, tmp_path / "out", "ugc", dtype="int4")


def test_cli_reports_errors_without_a_traceback(tiny_checkpoint, tmp_path, capsys):
    code = export.main(["--checkpoint", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"), "--variant", "ugc"])
    assert code == 2
    assert "nowhere: no tokenizer.json" in capsys.readouterr().err


def test_bundle_validation_names_the_field(export_bundle, tmp_path):
    folder = _copy(export_bundle(), tmp_path / "b")
    manifest = json.loads((folder / "bundle.json").read_text())
    manifest["format_version"] = 99
    (folder / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(bundle.BundleError, match="field format_version is 99"):
        bundle.validate(folder)
    manifest["format_version"] = 1
    manifest["parts"]["decoder_score"]["inputs"][0]["name"] = "embeds"
    (folder / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(bundle.BundleError, match=r"decoder_score.onnx: inputs are \['inputs_embeds', 'attention_mask'\], "
                                                 r"the manifest declares \['embeds', 'attention_mask'\]"):
        bundle.validate(folder)
    manifest["parts"]["decoder_score"]["inputs"][0]["name"] = "inputs_embeds"
    (folder / "bundle.json").write_text(json.dumps(manifest))
    (folder / "motion_fast.onnx").write_bytes(b"truncated")
    with pytest.raises(bundle.BundleError, match="motion_fast.onnx: not a readable ONNX model"):
        bundle.validate(folder)


def test_bad_ensembles_are_refused_naming_the_field(export_bundle, tmp_path):
    """The checks of "ensemble" that the Rust reader makes (its messages differ in quoting, and
    a member part without an ensemble is reported as a part whose member is not in it)."""
    import shutil

    folder = _copy(export_bundle(), tmp_path / "b")
    manifest = json.loads((folder / "bundle.json").read_text())
    (folder / "m").mkdir()
    for role in bundle.MEMBER_ROLES:
        file = manifest["parts"][role]["file"]
        shutil.copy(folder / file, folder / "m" / file)
        manifest["parts"][f"{role}@m"] = {**manifest["parts"][role], "file": f"m/{file}"}
    manifest["ensemble"], manifest["format_version"] = ["m"], bundle.ENSEMBLE_FORMAT_VERSION
    (folder / "bundle.json").write_text(json.dumps(manifest))
    assert bundle.validate(folder)["ensemble"] == ["m"]
    assert bundle.models(manifest) == ["", "@m"]
    cases = [
        ({"format_version": 1}, "ensemble needs format_version 2"),
        ({"ensemble": ["m", "m"]}, r"ensemble\[1\] 'm' must be a new, non-empty name"),
        ({"ensemble": []}, "parts.keyframe_encoder@m: 'm' is not in ensemble"),
        ({"parts": {k: v for k, v in manifest["parts"].items() if k != "motion_projector@m"}},
         "ensemble member 'm' needs parts.motion_projector and parts.motion_projector@m"),
        ({"parts": {**manifest["parts"], "keyframe_encoder@m": {**manifest["parts"]["keyframe_encoder@m"], "outputs": []}}},
         "parts.keyframe_encoder@m must declare the inputs and outputs of parts.keyframe_encoder"),
    ]
    for change, message in cases:
        (folder / "bundle.json").write_text(json.dumps({**manifest, **change}))
        with pytest.raises(bundle.BundleError, match=message):
            bundle.validate(folder)


def test_reference_cli_scores_a_real_encoded_video(tiny_checkpoint, tmp_path, capsys):
    import subprocess

    video = tmp_path / "clip.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=96x64:rate=10:duration=2", "-pix_fmt", "yuv420p", str(video)],
        check=True,
    )
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("reference_cli", Path(__file__).resolve().parents[1] / "reference.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    assert cli.main(["--checkpoint", str(tiny_checkpoint), "--video", str(video)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["keyframes"] == 2 and out["motion_frames"] == 20
    assert 0.2 <= out["score"] <= 1.0
    assert cli.main(["--checkpoint", str(tiny_checkpoint), "--video", str(tmp_path / "none.mp4")]) == 2


def test_fast_pathway_chunks_with_18_frames_of_context_equal_the_whole_clip():
    """Spec section 5: the fast pathway's temporal reach is ±18 frames, so features computed
    in chunks with 18 frames of context each side equal whole-clip features (how the runtime
    reuses per-frame motion features across windows)."""
    from qoe_onnx.slowfast import TEMPORAL_CONTEXT, FastPathway
    from qoe_onnx import fake

    model = FastPathway().eval()
    fake.randomize_module(model, torch.Generator().manual_seed(9))
    clip = torch.randn(1, 3, 70, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole = model(clip)
        parts = []
        for a in range(0, 70, 16):
            b = min(a + 16, 70)
            lo, hi = max(0, a - TEMPORAL_CONTEXT), min(70, b + TEMPORAL_CONTEXT)
            parts.append(model(clip[:, :, lo:hi])[a - lo : b - lo])
        chunked = torch.cat(parts)
        np.testing.assert_allclose(chunked.numpy(), whole.numpy(), rtol=1e-4, atol=1e-5)
        # The reach is exactly 18: a frame 18 away changes a feature, one 19 away does not.
        for distance, changes in ((TEMPORAL_CONTEXT, True), (TEMPORAL_CONTEXT + 1, False)):
            nudged = clip.clone()
            nudged[:, :, 30 + distance] += 1.0
            delta = (model(nudged)[30] - whole[30]).abs().max().item()
            assert (delta > 0) == changes, (distance, delta)
