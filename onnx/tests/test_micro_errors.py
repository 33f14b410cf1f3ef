"""The micro VQA²'s error analysis (qoe_onnx.micro.errors): pure arithmetic on evaluate's results."""

import json
import sys

import pytest

from qoe_onnx.micro import errors


def test_ties_share_their_average_rank():
    assert errors.average_ranks([3, 1, 3, 2]).tolist() == [2.5, 0, 2.5, 1]
    assert errors.srcc([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1)
    assert errors.srcc([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1)


def clip(family, strength, mos, score):
    return {"source": "s", "family": family, "strength": strength, "mos": mos, "score": score}


def test_the_figures_split_class_order_from_content():
    """A model that orders the two classes the wrong way round but follows the content inside
    each exactly: its class means are reversed, within a class it is perfect, and the training
    labels' class means order the classes right."""
    per_clip = [clip("noise", 1, 80, 0.30), clip("noise", 1, 90, 0.40),
                clip("noise", 3, 20, 0.80), clip("noise", 3, 30, 0.90)]
    training = [{"family": "noise", "strength": 1, "mos": 85.0}, {"family": "noise", "strength": 3, "mos": 25.0}]
    out = errors.analyse(per_clip, training)
    # Class-mean ranks 0.5 0.5 2.5 2.5 against the labels' 2 3 0 1: -4 / (2 * sqrt(5)).
    assert out["class_means"] == pytest.approx(-2 / 5 ** 0.5)
    assert out["training_means"] == pytest.approx(2 / 5 ** 0.5)
    assert out["within_class"] == pytest.approx(1)
    assert out["classes"]["noise 1"] == {"label": 85.0, "score": 35.0, "training_label": 85.0}
    with pytest.raises(ValueError, match=r"\('noise', 3\)"):
        errors.analyse(per_clip, training[:1])


def test_oracle_bounds_take_out_only_the_named_classes_offsets():
    """Shake scored 55 points too high, its order inside the class right: taking out the
    temporal classes' mean errors orders every clip; taking out the photometric ones changes
    nothing; every class and source reaches 1 too."""
    per_clip = [clip("noise", 1, 80, 0.78), clip("noise", 1, 90, 0.88),
                clip("shake", 3, 30, 0.85), clip("shake", 3, 40, 0.95)]
    as_is = errors.srcc([c["score"] for c in per_clip], [c["mos"] for c in per_clip])
    assert as_is < 0.5
    assert errors.offsets_removed(per_clip, errors.TEMPORAL) == pytest.approx(1)
    assert errors.offsets_removed(per_clip, errors.PHOTOMETRIC) == pytest.approx(as_is)
    assert errors.offsets_removed(per_clip, None, sources=True) == pytest.approx(1)
    assert set(errors.analyse(per_clip, [{"family": f, "strength": k, "mos": 50.0} for f, k in
                                          [("noise", 1), ("shake", 3)]])["offsets_removed"]) == {
        "temporal", "photometric", "temporal and photometric", "every class", "every class and source"}


def test_the_source_interval_spans_what_the_sources_disagree_on():
    """Sources that agree give no spread; a source the model gets backwards widens the interval
    below the overall figure (drawn without it, the SRCC is 1)."""
    def source(name, flipped=False):
        return [{"source": name, "family": "noise", "strength": k, "mos": 20.0 * k,
                 "score": (1 - 0.2 * k if flipped else 0.2 * k)} for k in range(1, 5)]
    same = [c for n in "abcd" for c in source(n)]
    assert errors.source_interval(same, draws=200) == pytest.approx((1, 1))
    mixed = [c for n in "abc" for c in source(n)] + source("d", flipped=True)
    overall = errors.srcc([c["score"] for c in mixed], [c["mos"] for c in mixed])
    low, high = errors.source_interval(mixed, draws=500)
    assert low < overall < high == pytest.approx(1)


def test_the_command_names_what_is_missing(tmp_path, monkeypatch, capsys):
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"per_clip": [clip("noise", 1, 80, 0.3), clip("pristine", 0, 98, 0.9)]}))
    monkeypatch.setattr(sys, "argv", ["errors", "--data", str(tmp_path), str(results)])
    with pytest.raises(SystemExit, match="clips.jsonl: not there"):
        errors.main()
    (tmp_path / "clips.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"split": "train", "family": "noise", "strength": 1, "mos": 82.0},
        {"split": "train", "family": "pristine", "strength": 0, "mos": 99.0},
        {"split": "test", "family": "blur", "strength": 1, "mos": 50.0}]))
    errors.main()
    out = capsys.readouterr().out
    assert "noise 1" in out and "SRCC 1.000" in out
    assert "within class nan" in out  # one clip a class: no content variation to follow
    (tmp_path / "other.json").write_text("{}")
    monkeypatch.setattr(sys, "argv", ["errors", "--data", str(tmp_path), str(tmp_path / "other.json")])
    with pytest.raises(SystemExit, match="other.json: no per_clip"):
        errors.main()
    (tmp_path / "results.json").write_text(json.dumps({"per_clip": [clip("noise", 2, 60, 0.5)]}))
    monkeypatch.setattr(sys, "argv", ["errors", "--data", str(tmp_path), str(results)])
    with pytest.raises(SystemExit, match=r"results.json against .*: no training clips of class \('noise', 2\)"):
        errors.main()
    (tmp_path / "clips.jsonl").write_text(json.dumps({"split": "test", "family": "blur", "strength": 1, "mos": 50.0}))
    with pytest.raises(SystemExit, match="clips.jsonl: no training clips"):
        errors.main()
