"""The delivery impairments of the micro VQA² training data (#30): each family changes a real
clip as `data.py` says, and each ladder grows with its strength."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from qoe_onnx.micro import data, evaluate

CLIP = Path(__file__).resolve().parents[2] / "tests/fixtures/eval/photo_kokkini_3840x2160__pristine.mp4"


@pytest.fixture(scope="module")
def clip():
    frames, fps = data.decode(str(CLIP))
    return frames[:100], fps  # 4 s at 25 fps


def changed_frames(a, b, threshold=8):
    return np.abs(a.astype(int) - b).max(axis=(1, 2, 3)) > threshold


def test_every_new_family_has_three_graded_levels_after_the_old_ones():
    names = [d[0] for d in data.DISTORTIONS]
    assert names[:17][-1] == "freeze", "the families before #30 keep their places (and their clips' seeds)"
    for family in ("banding", "interlacing", "error_blocks", "black_frames", "transmission_h264", "transmission_hevc"):
        assert family in names[17:] and len(data.LEVELS[family]) == 3
    assert data.TRANSMISSION == ["transmission_h264", "transmission_hevc", "transmission_h264_hd"]


def test_the_hd_families_come_last_and_draw_nothing_from_the_shared_stream():
    """So that they can be added to finished data without changing any clip made before."""
    names = [d[0] for d in data.DISTORTIONS]
    assert names[-4:] == data.HD == ["compression_hd", "transmission_h264_hd", "compression_270p", "compression_540p"]
    assert set(data.SCALES) == set(data.HD) and data.frame_size(data.SCALES["compression_270p"]) == (480, 270)
    assert data.frame_size(data.SCALES["compression_540p"]) == (960, 540)
    for family in ("compression_hd", "compression_270p", "compression_540p"):
        assert data.LEVELS[family] == data.LEVELS["compression"] and data.base_family(family) == "compression"
    assert data.LEVELS["transmission_h264_hd"] == data.LEVELS["transmission_h264"]
    assert {kind for family, kind, _ in data.DISTORTIONS if family in data.HD} <= {"codec", "delivery"}


def test_stage1_counts_the_damage_done_at_640x360_as_the_same_damage():
    from qoe_onnx.micro import train

    assert not set(data.HD) & set(train.SPATIAL_CLASSES)
    assert train.spatial_class("compression_hd") == train.spatial_class("compression_540p") == "compression"
    assert train.spatial_class("transmission_h264_hd") == train.spatial_class("transmission_h264") == "transmission_h264"
    assert train.spatial_class("noise") == "noise" and train.spatial_class("stutter") is None


def test_a_larger_pristine_clip_shows_the_same_view(tmp_path):
    """pristine_frames at 2, 1.5 and 3 times 320x180: the same pan over the photograph (and the
    same low-resolution softness), larger; shrunk to 320x180 it is the 320x180 clip within rounding."""
    from PIL import Image

    y, x = np.mgrid[0:900, 0:1600]
    picture = np.stack([(x * 255 // 1600), (y * 255 // 900), ((x // 40 + y // 40) % 2) * 200], -1).astype(np.uint8)
    Image.fromarray(picture).save(tmp_path / "photo.png")
    for extra in ({}, {"lowres": data.LOWRES_WIDTH}):
        source = {"name": "p", "photo": str(tmp_path / "photo.png"), "seconds": 1, "seed": 4} | extra
        small, fps = data.pristine_frames(source)
        assert small.shape == (25, 180, 320, 3)
        for scale in (data.HD_SCALE, 1.5, 3):
            large, fps2 = data.pristine_frames(source, scale)
            assert fps == fps2 and large.shape == (25, *data.frame_size(scale)[::-1], 3)
            shrunk = np.stack([np.asarray(Image.fromarray(f).resize((320, 180), Image.BICUBIC)) for f in large])
            assert np.abs(shrunk.astype(int) - small).mean() < 4, (extra, scale)


def test_a_finished_source_gets_only_the_families_added_since(tmp_path, monkeypatch):
    """A source made before the hd families is read back, the new clips appended: delivered at
    640x360 (the kept test clip is that size), labelled there, shrunk to the model's sizes as the
    element shrinks a larger video; every clip made before stays as it was."""
    source = {"name": "carphone", "video": str(CLIP), "start": 0.0, "seconds": 2, "split": "test"}
    monkeypatch.setattr(data, "DISTORTIONS", [("noise", "spatial", [16.0])])
    first = data.make_source((source, str(tmp_path)))
    before = dict(np.load(tmp_path / "clips/carphone.npz"))
    assert [r["family"] for r in first] == ["pristine", "noise"]

    monkeypatch.setattr(data, "DISTORTIONS", [("noise", "spatial", [16.0]), ("compression_hd", "codec", [51])])
    rows = data.make_source((source, str(tmp_path)))
    after = np.load(tmp_path / "clips/carphone.npz")
    assert rows[:2] == first and [r["family"] for r in rows] == ["pristine", "noise", "compression_hd"]
    for name in data.INPUT_ARRAYS:
        assert np.array_equal(after[name][:2], before[name])
    kept = data.test_clip_path(tmp_path, "carphone", "compression_hd", 1)
    assert data.probe_size(str(kept)) == (640, 360)
    decoded, fps = data.decode(str(kept))
    keyframes, motion = data.model_inputs(decoded, fps)
    assert keyframes.keys() == set(data.KEYFRAME_ARRAYS.values()) and np.array_equal(after["motion"][2], motion)
    for name, array in keyframes.items():
        assert np.array_equal(after[name][2], array)
    # One keyframe a whole second: its first frame, and the first frame half a second in (as the
    # element's sampler picks them by stream time; 13 of 25, 15 of 30).
    per_second, half = round(fps), {25: 13, 30: 15}[round(fps)]
    assert len(keyframes["keyframes"]) == len(keyframes["keyframes_mid"]) == len(decoded) // per_second
    for k, frame in enumerate((0, half)):
        expected = np.asarray(Image.fromarray(decoded[frame]).resize((320, 180), Image.BICUBIC))
        assert np.array_equal(keyframes[["keyframes", "keyframes_mid"][k]][0], expected)
    assert np.array_equal(keyframes["keyframes_mid"][1],
                          np.asarray(Image.fromarray(decoded[per_second + half]).resize((320, 180), Image.BICUBIC)))
    # The luma of the same motion frames at 128x128, as the element would resize them, in 8 bits.
    luma = data.motion_luma(decoded)
    assert np.array_equal(after["motion_luma"][2], luma) and luma.shape == (len(motion), 128, 128)
    resized = np.asarray(Image.fromarray(decoded[2]).resize((128, 128), Image.BICUBIC)).astype(float)
    assert np.abs(luma[1] - (0.299 * resized[..., 0] + 0.587 * resized[..., 1] + 0.114 * resized[..., 2])).max() <= 0.5
    assert rows[2]["crf"] == 51 and rows[2]["ssim"] < rows[0]["ssim"]
    assert json.loads((tmp_path / "clips/carphone.json").read_text()) == rows
    assert data.make_source((source, str(tmp_path))) == rows, "a finished source is only read back"

    # Families that draw from the shared stream cannot be added afterwards: named, nothing written.
    monkeypatch.setattr(data, "DISTORTIONS", data.DISTORTIONS + [("blur", "spatial", [2.5])])
    with pytest.raises(SystemExit, match=r"carphone\.npz: made with 3 clips.*spatial or temporal"):
        data.make_source((source, str(tmp_path)))
    assert len(json.loads((tmp_path / "clips/carphone.json").read_text())) == 3

    # Data made before the luma was kept: its clips cannot be joined by clips that have it.
    np.savez(tmp_path / "clips/carphone.npz", **{k: after[k] for k in ("keyframes", "motion")})
    monkeypatch.setattr(data, "DISTORTIONS", data.DISTORTIONS[:2] + [("black_frames", "delivery", [0.5])])
    with pytest.raises(SystemExit, match=r"carphone\.npz: made before the data kept keyframes_mid, motion_luma"):
        data.make_source((source, str(tmp_path)))


def test_middle_keyframes_are_added_to_old_data(tmp_path, monkeypatch):
    """`data --add-middle-keyframes`: a source made before the data kept `keyframes_mid` gets them,
    equal to what a data run makes now, every other array as it was: a test source from its kept
    clips, a training source made again aside; a source that has them is left alone, one whose
    clips come out otherwise is refused, and nothing is written."""
    from qoe_onnx.micro import train
    source = {"name": "carphone", "video": str(CLIP), "start": 0.0, "seconds": 2, "split": "test"}
    monkeypatch.setattr(data, "DISTORTIONS", [("noise", "spatial", [16.0])])
    data.make_source((source, str(tmp_path)))
    made = dict(np.load(tmp_path / "clips/carphone.npz"))
    old = {k: v for k, v in made.items() if k != "keyframes_mid"}
    np.savez(tmp_path / "clips/carphone.npz", **old)
    with pytest.raises(SystemExit, match=r"carphone\.npz: no keyframes_mid array.*--add-middle-keyframes"):
        train.load_arrays(tmp_path, {"carphone"}, keyframe_rule="middle-frame-of-each-second")
    assert data.add_middle_keyframes(tmp_path, "carphone") == 2
    added = dict(np.load(tmp_path / "clips/carphone.npz"))
    assert added.keys() == made.keys() and all(np.array_equal(added[k], made[k]) for k in made)
    assert data.add_middle_keyframes(tmp_path, "carphone") == 0
    loaded = train.load_arrays(tmp_path, {"carphone"}, keyframe_rule="middle-frame-of-each-second")
    assert np.array_equal(loaded["carphone"]["keyframes"], made["keyframes_mid"])
    rows, arrays = train.load_clips(tmp_path, keyframe_rule="middle-frame-of-each-second")  # train --keyframe-rule
    assert np.array_equal(arrays["carphone"]["keyframes"], made["keyframes_mid"])
    assert {r["keyframe_rule"] for r in rows} == {"middle-frame-of-each-second"}

    # A training source's clips are not kept: it is made again aside, its labels and first-frame
    # keyframes checked against the stored ones.
    meta = tmp_path / "clips/carphone.json"
    meta.write_text(meta.read_text().replace('"split": "test"', '"split": "train"'))
    np.savez(tmp_path / "clips/carphone.npz", **old)
    with pytest.raises(SystemExit, match=r"carphone\.npz: a training source .*not among this run's sources"):
        data.add_middle_keyframes(tmp_path, "carphone")
    assert data.add_middle_keyframes(tmp_path, "carphone", source) == 2
    again = dict(np.load(tmp_path / "clips/carphone.npz"))
    assert again.keys() == made.keys() and all(np.array_equal(again[k], made[k]) for k in made)
    wrong = old | {"keyframes": old["keyframes"].copy()}
    wrong["keyframes"][1] ^= 1
    np.savez(tmp_path / "clips/carphone.npz", **wrong)
    with pytest.raises(SystemExit, match=r"carphone\.npz: made again, clips \[1\] differ from the stored ones"):
        data.add_middle_keyframes(tmp_path, "carphone", source)
    assert "keyframes_mid" not in np.load(tmp_path / "clips/carphone.npz"), "nothing written"


def test_banding_quantises_to_flat_bands(clip):
    frame = clip[0][0]
    for step in data.LEVELS["banding"]:
        banded = data.spatial("banding", step, frame, None)
        assert set(np.unique(banded)) <= {v * step + step // 2 for v in range(256 // step)}
        assert np.abs(banded.astype(int) - frame).max() <= step // 2 + 1
    assert np.array_equal(data.spatial("banding", 1, frame, None), frame)  # online.py's "undistorted"


def test_interlacing_weaves_the_next_frames_odd_rows_moved(clip):
    frames, fps = clip
    for shift in data.LEVELS["interlacing"]:
        woven = data.delivery_damage("interlacing", shift, frames, fps, seed=1)
        assert np.array_equal(woven[:, 0::2], frames[:, 0::2]), "the even field stays"
        assert np.array_equal(woven[:-1, 1::2, shift:], frames[1:, 1::2, :-shift])


def test_error_blocks_are_green_or_grey_macroblocks_that_grow_with_the_level(clip):
    frames, fps = clip
    hit = []
    for share in data.LEVELS["error_blocks"]:
        out = data.delivery_damage("error_blocks", share, frames, fps, seed=3)
        mask = np.any(out != frames, axis=-1)
        colours = {tuple(c) for c in out[mask]}
        assert colours <= {data.ERROR_GREEN, data.ERROR_GREY} and colours
        # Whole 16x16 macroblocks, and each second's last frame has `share` of the blocks hit.
        blocks = mask[:, :176].reshape(len(frames), 11, 16, 20, 16)
        assert np.all(blocks.all(axis=(2, 4)) == blocks.any(axis=(2, 4)))
        last = blocks[24].any(axis=(1, 3))
        assert abs(last.mean() - share) < 0.01
        hit.append(mask)
    assert np.all(hit[1][hit[0]]) and np.all(hit[2][hit[1]]), "a stronger level hits what a weaker one does"


def test_black_frames_start_on_a_whole_second_and_last_their_share(clip):
    frames, fps = clip
    for share in data.LEVELS["black_frames"]:
        out = data.delivery_damage("black_frames", share, frames, fps, seed=0)
        black = np.flatnonzero(out.max(axis=(1, 2, 3)) == 0)
        assert len(black) == round(share * len(frames)) and black[0] == 50  # 4 s clip: from 2 s
        assert np.all(np.diff(black) == 1)
        assert np.array_equal(np.delete(out, black, axis=0), np.delete(frames, black, axis=0))


def test_nal_units_split_an_annex_b_stream_at_its_start_codes():
    stream = b"\x00\x00\x00\x01\x67\xaa\x00\x00\x01\x68\xbb\x00\x00\x01\x65\xcc\xdd\x00\x00\x00\x01\x41\xee"
    units = data.nal_units(stream)
    assert b"".join(units) == stream and len(units) == 4
    assert [data.is_slice("h264", u) for u in units] == [(False, False), (False, False), (True, True), (True, False)]
    # HEVC: the type is bits 1-6 of the first header byte (IDR_W_RADL 19, TRAIL_R 1, SPS 33).
    assert data.is_slice("hevc", b"\x00\x00\x01\x26\x01") == (True, True)
    assert data.is_slice("hevc", b"\x00\x00\x01\x02\x01") == (True, False)
    assert data.is_slice("hevc", b"\x00\x00\x01\x42\x01") == (False, False)


@pytest.mark.parametrize("family", ["transmission_h264", "transmission_hevc"])
def test_transmission_errors_damage_more_as_more_slices_are_lost(family, clip, tmp_path):
    """Nothing lost decodes as the clean stream; the first keyframe arrives whole; each stronger
    level damages more frames and lowers FFmpeg's SSIM against the pristine clip."""
    frames, fps = clip
    codec = family.removeprefix("transmission_")
    clean = data.transmission_errors(codec, 0.0, frames, fps, np.random.default_rng(0))
    assert len(clean) == len(frames) and np.abs(clean.astype(int) - frames).mean() < 3
    data.encode(frames, fps, str(tmp_path / "reference.nut"), data.LOSSLESS)
    damaged, similarity = [], []
    for share in data.LEVELS[family]:
        out = data.delivery_damage(family, share, frames, fps, seed=5)
        assert out.shape == frames.shape
        assert np.array_equal(out[0], clean[0]), "the first keyframe arrives whole"
        damaged.append(changed_frames(out, clean).mean())
        data.encode(out, fps, str(tmp_path / "damaged.nut"), data.LOSSLESS)
        similarity.append(data.compare(str(tmp_path / "damaged.nut"), str(tmp_path / "reference.nut"))[0])
    assert 0 < damaged[0] < damaged[1] <= damaged[2] and damaged[2] > 0.5, damaged
    assert similarity[0] > similarity[1] > similarity[2], similarity


def test_flip_rate_orders_any_ladder_by_strength(monkeypatch):
    rows = [{"source": s, "family": f, "strength": k}
            for s in ("a", "b") for f, k in (("pristine", 0), ("transmission_h264", 1), ("transmission_h264", 2),
                                             ("transmission_h264", 3), ("compression", 1))]
    pred = [0.9, 0.7, 0.5, 0.3, 0.8, 0.9, 0.5, 0.7, 0.3, 0.8]  # source b: strengths 1 and 2 swapped
    assert evaluate.flip_rate(rows, pred, "transmission_h264") == 1 / 12
    assert evaluate.flip_rate(rows, pred) == 0.0
    monkeypatch.setattr(evaluate, "correlations", lambda pred, mos: {})  # scipy: requirements-micro.txt only
    t = evaluate.table([r | {"mos": 50.0 + i} for i, r in enumerate(rows)], pred)
    assert t["flip_rates"]["transmission_h264"] == 1 / 12 and t["flip_rates"]["compression"] == 0.0


def test_the_streaming_table_reads_each_family_against_the_stall_lowered_labels(monkeypatch):
    rows = [{"source": "a", "family": f, "strength": k, "mos": 90.0 - 10 * i}
            for i, (f, k) in enumerate((("pristine", 0), ("noise", 1), ("freeze", 1)))]
    lowered = [45.0, 40.0, 20.0]
    monkeypatch.setattr(evaluate, "correlations", lambda pred, mos: {"pred": list(pred), "mos": list(mos)})
    t = evaluate.streaming_table(rows, [0.9, 0.8, 0.1], lowered)
    assert t["overall"] == {"pred": [0.9, 0.8, 0.1], "mos": lowered}
    assert t["families"] == {"freeze": {"pred": [0.9, 0.1], "mos": [45.0, 20.0]},
                             "noise": {"pred": [0.9, 0.8], "mos": [45.0, 40.0]}}
    assert set(t) == {"overall", "families"}  # no flip rates: each clip draws its own stalls
    with pytest.raises(ValueError):
        evaluate.streaming_table(rows, [0.9, 0.8, 0.1], lowered[:2])


def test_calibration_averages_the_poor_or_low_clips_and_the_pristine_ones():
    rows = [{"family": "pristine", "mos": 95.0}, {"family": "pristine", "mos": 85.0},
            {"family": "transmission_h264", "mos": 39.9}, {"family": "compression", "mos": 5.0},
            {"family": "blur", "mos": 40.0}]
    c = evaluate.calibration(rows, [0.8, 0.6, 0.5, 0.2, 0.1])
    assert c == {"poor_or_low": 0.35, "poor_or_low_n": 2, "pristine": 0.7, "pristine_n": 2}


def test_ffmpegs_detectors_measure_a_clip_with_black_frames(clip, tmp_path):
    """blurdetect gives NaN on a black frame: the baseline averages the frames it can measure."""
    frames, fps = clip
    row = {"source": "kokkini", "family": "black_frames", "strength": 3}
    damaged = data.delivery_damage("black_frames", 0.5, frames, fps, seed=5)
    path = data.test_clip_path(tmp_path, row["source"], row["family"], row["strength"])
    path.parent.mkdir(parents=True)
    data.deliver(damaged, fps, 18, str(path))
    block, blur = evaluate.ffmpeg_detect([row], tmp_path)
    assert np.isfinite(block[0]) and np.isfinite(blur[0]) and blur[0] < 0


def test_a_baseline_averages_what_it_could_measure_and_names_a_clip_it_could_not():
    assert evaluate.finite_mean([2.0, float("nan"), 4.0], "BRISQUE", Path("a.mp4")) == 3.0
    with pytest.raises(SystemExit, match=r"a\.mp4: BRISQUE measured none of its 2 pictures"):
        evaluate.finite_mean([float("nan"), float("-nan")], "BRISQUE", Path("a.mp4"))


def test_a_receiver_shows_each_frame_that_arrived_until_the_next_is_due():
    """`shown_on_time`: frames that arrived are shown at their places, each held until the next is
    due (a loss freezes the picture there, and the clip goes on on time); a decoder that gave
    another number of frames than arrived gives no timing: shown in turn, the last held."""
    decoded = np.arange(3)[:, None, None, None] * np.ones((3, 2, 2, 3), np.uint8)
    assert data.shown_on_time(decoded, [0, 1, 4], 6)[:, 0, 0, 0].tolist() == [0, 1, 1, 1, 2, 2]
    assert data.shown_on_time(decoded, [0, 4], 6)[:, 0, 0, 0].tolist() == [0, 1, 2, 2, 2, 2]


def test_transmission_errors_keep_the_clip_on_time(clip):
    """A frame lost whole (HEVC sends one slice a frame) leaves the frame before it on screen,
    and every frame decoded without damage is shown at its own time, never early: the clip does
    not run ahead of its pristine self after a loss. (Before the eleventh session it did: with
    these draws, 23 of the clean frames were shown early.)"""
    frames, fps = clip
    out = data.transmission_errors("hevc", 0.01, frames, fps, np.random.default_rng(0))
    held = int((np.abs(np.diff(out.astype(int), axis=0)).max(axis=(1, 2, 3)) == 0).sum())
    assert held > 0, "some frame was lost whole and held"
    clean = data.transmission_errors("hevc", 0.0, frames, fps, np.random.default_rng(0))
    undamaged = 0
    for t in range(len(out)):
        near = range(max(0, t - 10), min(len(clean), t + 11))
        errors = [np.abs(out[t].astype(int) - clean[u]).mean() for u in near]
        if min(errors) < 1.0:  # decoded without damage: it is one of the clean frames
            undamaged += 1
            assert near[int(np.argmin(errors))] <= t, f"frame {t} shows clean frame {near[int(np.argmin(errors))]}"
    assert undamaged > 50, undamaged


def test_remake_makes_delivery_families_again_in_their_places(tmp_path, monkeypatch):
    """`data --remake FAMILY`: a finished source's clips of that delivery family are made again
    where they were (their rows, arrays and kept test clip), every other clip kept as it was; a
    family that draws from the shared stream is refused, named, before anything is made."""
    source = {"name": "carphone", "video": str(CLIP), "start": 0.0, "seconds": 2, "split": "test"}
    monkeypatch.setattr(data, "DISTORTIONS", [("noise", "spatial", [16.0]), ("black_frames", "delivery", [0.5])])
    first = data.make_source((source, str(tmp_path)))
    before = dict(np.load(tmp_path / "clips/carphone.npz"))
    kept = data.test_clip_path(tmp_path, "carphone", "black_frames", 1)
    kept.unlink()
    monkeypatch.setattr(data, "delivery_damage", lambda family, level, frames, fps, seed: frames // 2)  # "fixed"
    rows = data.make_source((source, str(tmp_path), ["black_frames"]))
    after = np.load(tmp_path / "clips/carphone.npz")
    assert [r["family"] for r in rows] == ["pristine", "noise", "black_frames"] and rows[:2] == first[:2]
    for name in data.INPUT_ARRAYS:
        assert np.array_equal(after[name][:2], before[name][:2])
        assert not np.array_equal(after[name][2], before[name][2])
    assert rows[2]["index"] == 2 and rows[2]["ssim"] != first[2]["ssim"] and kept.exists()
    assert json.loads((tmp_path / "clips/carphone.json").read_text()) == rows
    monkeypatch.setattr(sys, "argv", ["data", "--out", str(tmp_path), "--remake", "black_frames,noise"])
    with pytest.raises(SystemExit, match=r"--remake noise: only delivery families"):
        data.main()


def test_either_rule_reads_each_seconds_keyframe_from_one_rule(tmp_path, monkeypatch):
    """`train --keyframe-rule either-frame-of-each-second`: every clip's second is read from the
    first-frame or the middle-frame keyframes, as the seeded draw says, about half from each,
    one keyframe at a time as a whole clip at a time; another seed draws otherwise and its rows
    fingerprint otherwise (so no checkpoint of one is taken for the other)."""
    from qoe_onnx.micro import train
    source = {"name": "carphone", "video": str(CLIP), "start": 0.0, "seconds": 4, "split": "train"}
    monkeypatch.setattr(data, "DISTORTIONS", [("noise", "spatial", [16.0]), ("blur", "spatial", [2.0])])
    data.make_source((source, str(tmp_path)))
    made = dict(np.load(tmp_path / "clips/carphone.npz"))
    first, middle = made["keyframes"], made["keyframes_mid"]
    assert all(not np.array_equal(first[c, k], middle[c, k]) for c in range(len(first)) for k in range(first.shape[1]))

    rows, arrays = train.load_clips(tmp_path, keyframe_rule=train.EITHER_RULE, seed=0)
    either = arrays["carphone"]["keyframes"]
    assert either.shape == first.shape
    drawn = np.zeros(first.shape[:2], dtype=bool)
    for c in range(first.shape[0]):
        whole = either[c]
        for k in range(first.shape[1]):
            one = either[c, k]
            assert np.array_equal(one, middle[c, k]) or np.array_equal(one, first[c, k])
            drawn[c, k] = np.array_equal(one, middle[c, k])
            assert np.array_equal(whole[k], one)
            assert np.array_equal(either[c, k, 10:20, 30:40], one[10:20, 30:40])  # a crop, as stage 1 takes
    assert 0 < drawn.mean() < 1, drawn
    with pytest.raises(TypeError, match="one clip or one keyframe at a time"):
        either[0:2]

    other_rows, other = train.load_clips(tmp_path, keyframe_rule=train.EITHER_RULE, seed=1)
    assert not np.array_equal(other["carphone"]["keyframes"].from_middle, drawn)
    assert train.data_fingerprint(other_rows) != train.data_fingerprint(rows)
    first_rows, _ = train.load_clips(tmp_path)
    assert train.data_fingerprint(first_rows) != train.data_fingerprint(rows)

    # Data made before the middle keyframes: the either rule names the file, the array and the command.
    np.savez(tmp_path / "clips/carphone.npz", **{k: v for k, v in made.items() if k != "keyframes_mid"})
    with pytest.raises(SystemExit, match=r"carphone\.npz: no keyframes_mid array.*either-frame-of-each-second"
                                         r".*--add-middle-keyframes"):
        train.load_clips(tmp_path, keyframe_rule=train.EITHER_RULE)
