"""Localizability score, abstention curve, coverage table, recall against searched area."""

from __future__ import annotations

import numpy as np
import pytest
import s2geometry as s2

from geocore.metrics import THRESHOLDS_KM, accuracy_within
from geocore.uncertainty import (
    S2Cells,
    abstention_curve,
    coverage_table,
    entropy,
    fit_calibration,
    localizability,
    recall_vs_area,
    region_areas,
)


def test_abstention_curve_with_a_perfect_score():
    rng = np.random.default_rng(0)
    errors = rng.lognormal(mean=5.0, sigma=2.0, size=2000)  # km: from street to continent
    curve = abstention_curve(errors, score=errors)
    assert curve["fraction"].tolist() == pytest.approx([0.1 * k for k in range(1, 11)])
    assert curve["n"].iloc[0] == 200 and curve["n"].iloc[-1] == 2000
    for r in THRESHOLDS_KM:
        col = curve[f"acc_{r}km"].to_numpy()
        assert (np.diff(col) <= 1e-12).all()  # answering fewer, better ranked photos never lowers accuracy
    assert curve["acc_200km"].iloc[0] > curve["acc_200km"].iloc[-1]
    assert curve["median_km"].iloc[0] < curve["median_km"].iloc[-1]
    full = abstention_curve(errors, rng.uniform(size=2000), fractions=1.0)
    assert len(full) == 1
    assert {r: full[f"acc_{r}km"].iloc[0] for r in THRESHOLDS_KM} == pytest.approx(accuracy_within(errors))
    assert full["median_km"].iloc[0] == pytest.approx(np.median(errors))
    with pytest.raises(ValueError, match="fractions"):
        abstention_curve(errors, errors, fractions=(0.0, 0.5))


def test_coverage_table_raw_and_calibrated():
    rng = np.random.default_rng(1)
    tm = rng.uniform(size=1000) ** 0.5  # an over-confident model: truth masses skew high
    areas = np.c_[np.full(1000, 10.0), np.full(1000, 100.0)]
    raw = coverage_table(tm, areas, (0.5, 0.9))
    assert raw["nominal"].tolist() == [0.5, 0.9] and raw["mass"].tolist() == [0.5, 0.9]
    assert raw["coverage"].tolist() == pytest.approx([np.mean(tm <= 0.5), np.mean(tm <= 0.9)])
    assert raw["median_area_km2"].tolist() == [10.0, 100.0] and raw["mean_area_km2"].tolist() == [10.0, 100.0]
    cal = fit_calibration(tm, (0.5, 0.9), model="m", fingerprint="f")
    table = coverage_table(tm, areas, (0.5, 0.9), calibration=cal)
    assert table["mass"].tolist() == pytest.approx(list(cal.masses))
    assert (table["coverage"] >= table["nominal"]).all()


def test_recall_vs_area():
    truth_area = np.array([5.0, 50.0, 500.0, np.inf])  # the last truth lies in no candidate's area
    table = recall_vs_area(truth_area, [1, 5, 100, 1e12])
    assert table["recall"].tolist() == [0.0, 0.25, 0.5, 0.75]


def test_localizability_score_is_log_area_of_the_90_region():
    ids, c = [], s2.S2CellId.Begin(1)
    while c != s2.S2CellId.End(1):
        ids.append(c.id())
        c = c.next()
    cells = S2Cells(np.array(ids, dtype=np.uint64))
    sharp, flat = np.zeros(24), np.full(24, 1 / 24)
    sharp[3] = 1.0
    table = localizability(np.stack([sharp, flat]), cells)
    assert table["area_km2"].tolist() == pytest.approx(region_areas(np.stack([sharp, flat]), cells, [0.9])[:, 0])
    assert table["score"].tolist() == pytest.approx(np.log10(table["area_km2"]).tolist())
    assert table["score"].iloc[0] < table["score"].iloc[1]
    assert entropy(np.stack([sharp, flat])) == pytest.approx([0.0, np.log(24)])
