"""The VMAF label check (qoe_onnx.micro.vmaf): its luma reading, its bookkeeping and its table.
VMAF itself (vmaf-torch, requirements-micro.txt) is not installed for these tests: a stand-in
scorer takes its place, so what is checked is what this module adds around it."""

import numpy as np
import pytest

from qoe_onnx.micro import data as micro_data
from qoe_onnx.micro import vmaf


def test_luma_reads_the_y_plane_as_libvmaf_does(tmp_path):
    """A lossless clip of grey frames comes back as limited-range Y (RGB 0 -> 16, 255 -> 235), one
    plane per frame; a clip of another size is refused, named."""
    frames = np.zeros((3, micro_data.HEIGHT, micro_data.WIDTH, 3), np.uint8)
    frames[1] = 255
    frames[2, :, : micro_data.WIDTH // 2] = 255
    clip = tmp_path / "grey.mkv"
    micro_data.encode(frames, 25, str(clip), micro_data.LOSSLESS)
    y = vmaf.luma(clip)
    assert y.shape == (3, 1, micro_data.HEIGHT, micro_data.WIDTH) and y.dtype == np.float32
    assert y[0].max() == y[0].min() == 16 and y[1].max() == y[1].min() == 235
    assert y[2, 0, :, 0].tolist() == [235] * micro_data.HEIGHT and y[2, 0, :, -1].tolist() == [16] * micro_data.HEIGHT
    small = tmp_path / "small.mkv"
    micro_data.encode(frames[:, :90, :160], 25, str(small), micro_data.LOSSLESS)
    with pytest.raises(SystemExit, match="small.mkv: not 320x180"):
        vmaf.luma(small)


def test_every_kept_clip_is_scored_against_its_rebuilt_reference(tmp_path, monkeypatch):
    """Each test clip is compared with the reference rebuilt from its source (the same frames for
    all of a source's clips); a clip missing from test_clips/ stops the run, named."""
    frames = np.full((4, micro_data.HEIGHT, micro_data.WIDTH, 3), 128, np.uint8)
    monkeypatch.setattr(micro_data, "pristine_frames", lambda source: (frames, 25.0))
    rows = [{"source": "a", "family": "pristine", "strength": 0}, {"source": "a", "family": "noise", "strength": 2}]
    for r, value in zip(rows, (128, 60)):
        path = micro_data.test_clip_path(tmp_path, r["source"], r["family"], r["strength"])
        path.parent.mkdir(parents=True, exist_ok=True)
        micro_data.deliver(np.full_like(frames, value), 25.0, micro_data.DELIVERY_CRF, str(path))
    seen = []

    def mean_difference(reference, distorted):
        seen.append(reference.mean())
        return float(np.abs(reference - distorted).mean())

    out = vmaf.score_test_split(tmp_path, [{"name": "a"}], rows, mean_difference)
    assert out["a|pristine|0"] == 0 and out["a|noise|2"] > 50
    assert seen[0] == seen[1] > 100
    rows.append({"source": "a", "family": "blur", "strength": 1})
    with pytest.raises(SystemExit, match="a__blur_1.mp4: missing"):
        vmaf.score_test_split(tmp_path, [{"name": "a"}], rows, mean_difference)


def test_the_table_groups_overall_per_family_and_per_source():
    """Label and score each against VMAF, per group, from the clips VMAF covers."""
    per_clip = [{"source": s, "family": f, "strength": k, "mos": m, "score": sc}
                for s, f, k, m, sc in [("x", "noise", 1, 80, 0.9), ("x", "noise", 3, 20, 0.2),
                                       ("y", "noise", 1, 70, 0.3), ("y", "noise", 3, 30, 0.4),
                                       ("y", "blur", 1, 50, 0.5)]]
    v = {"x|noise|1": 90.0, "x|noise|3": 10.0, "y|noise|1": 60.0, "y|noise|3": 40.0}
    rows = {name: rest for name, *rest in vmaf.agreement(per_clip, v)}
    assert list(rows) == ["overall", "noise", "x", "y"]  # the blur clip has no VMAF: left out
    n, label_v, score_v, score_label, mean_v, mean_label = rows["overall"]
    assert n == 4 and label_v == pytest.approx(1) and mean_v == 50 and mean_label == 50
    assert score_v == pytest.approx(score_label) == pytest.approx(0.8)
    assert rows["y"][2] == pytest.approx(-1)  # y's scores run against its VMAF


def test_missing_inputs_are_named(tmp_path, monkeypatch, capsys):
    """No results file, or no clips.jsonl: the run stops at once naming the file and what writes it."""
    results = tmp_path / "results.json"
    monkeypatch.setattr("sys.argv", ["vmaf", "--data", str(tmp_path), "--results", str(results)])
    with pytest.raises(SystemExit, match="results.json: missing .*evaluate"):
        vmaf.main()
    results.write_text('{"per_clip": [{"source": "a", "family": "pristine", "strength": 0, "mos": 90, "score": 0.8}]}')
    with pytest.raises(SystemExit, match="clips.jsonl: not there .*data run"):
        vmaf.main()
    results.write_text("{}")
    (tmp_path / "clips.jsonl").write_text("")
    with pytest.raises(SystemExit, match="results.json: no per_clip"):
        vmaf.main()
