"""Failure analysis of a results file (`geocore.eval.analysis`), display labels (`geocore.present`) and the
error histogram (`geocore.viz`): on hand-made results whose answers are known."""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pandas as pd
import pytest

from geocore.eval.analysis import (
    BAND_COLORS, BAND_NAMES, ERROR_BANDS, FAILED, accuracy_by_true_region, annotate_results, compare_results,
    error_bands, fmt_pct, metrics_row, most_localizable, results_metrics,
)
from geocore.eval.analysis import accuracy_by_region
from geocore.present import SEA, place_label, region_label
from geocore.geo.distance import haversine_km

matplotlib.use("Agg")

PARIS = (48.8566, 2.3522)
TOKYO = (35.6762, 139.6503)
MID_ATLANTIC = (30.0, -40.0)  # in no country


def _results(truths, errors_km, status=None) -> pd.DataFrame:
    """Predictions due north of each truth at the given distances (NaN: a failed image)."""
    lat, lon = np.array(truths, np.float64).T
    err = np.asarray(errors_km, np.float64)
    pred_lat = np.where(np.isnan(err), np.nan, lat + np.nan_to_num(err) / 111.195)
    pred_lon = np.where(np.isnan(err), np.nan, lon)
    exact = haversine_km(np.stack([lat, lon], 1), np.stack([np.nan_to_num(pred_lat), lon], 1))
    return pd.DataFrame({
        "IMG_ID": np.arange(len(err)), "LAT": lat, "LON": lon, "PRED_LAT": pred_lat, "PRED_LON": pred_lon,
        "error_km": np.where(np.isnan(err), np.nan, exact), "model": "m",
        "status": status or ["ok" if not math.isnan(e) else "error: unreadable" for e in err],
    }, index=np.arange(10, 10 + len(err)))


def test_error_bands_cover_every_error_once():
    errors = [0.0, 1.0, 1.0001, 25.0, 200.0, 750.0, 2500.0, 2500.1, 20000.0, np.nan]
    assert list(error_bands(errors)) == [BAND_NAMES[0], BAND_NAMES[0], BAND_NAMES[1], BAND_NAMES[1], BAND_NAMES[2],
                                         BAND_NAMES[3], BAND_NAMES[4], BAND_NAMES[5], BAND_NAMES[5], FAILED]
    # contiguous, from 0 to infinity, each with a colour
    assert ERROR_BANDS[0].lo_km == 0 and ERROR_BANDS[-1].hi_km == math.inf
    assert all(a.hi_km == b.lo_km for a, b in zip(ERROR_BANDS, ERROR_BANDS[1:]))
    assert list(BAND_COLORS) == list(BAND_NAMES) and all(c.startswith("#") for c in BAND_COLORS.values())


def test_annotate_results_adds_where_each_image_is():
    df = annotate_results(_results([PARIS, PARIS, TOKYO, MID_ATLANTIC, PARIS], [10.0, 1000.0, 5.0, 3.0, np.nan]))
    assert list(df.index) == [0, 1, 2, 3, 4] and df["IMG_ID"].map(type).eq(str).all()
    assert list(df["ok"]) == [True, True, True, True, False]
    assert list(df["country"]) == ["France", "France", "Japan", SEA, "France"]
    assert list(df["iso_a3"]) == ["FRA", "FRA", "JPN", "", "FRA"]
    assert list(df["continent"]) == ["Europe", "Europe", "Asia", SEA, "Europe"]
    # 1000 km north of Paris is the North Sea; a failed image has no predicted country
    assert list(df["pred_country"]) == ["France", SEA, "Japan", SEA, ""]
    hit = df["country_hit"].to_numpy()
    assert list(hit[:3]) == [1.0, 0.0, 1.0] and np.isnan(hit[3]) and np.isnan(hit[4])  # at sea / failed: no hit
    assert list(df["band"]) == ["1–25 km", "750–2500 km", "1–25 km", "1–25 km", FAILED]


def test_metrics_leave_failed_images_out_and_count_them():
    df = annotate_results(_results([PARIS] * 5, [0.5, 10.0, 100.0, 1000.0, np.nan]))
    m = results_metrics(df)
    assert m.n == 4 and m.acc_1km == 0.25 and m.acc_25km == 0.5 and m.acc_2500km == 1.0
    assert m.country_acc == 0.75
    row = metrics_row(df, "run")
    assert row["results"] == "run" and row["n"] == 4 and row["failed images"] == 1
    assert row["Street 1 km"] == "25.0" and row["City 25 km"] == "50.0" and row["Country acc"] == "75.0"
    assert float(row["Median km"]) == pytest.approx(55.0, abs=0.1)
    assert "failed images" not in metrics_row(df[df["ok"]], "ok only")


def test_fmt_pct():
    assert fmt_pct(0.2534) == "25.3" and fmt_pct(1.0) == "100.0" and fmt_pct(0) == "0.0"
    assert fmt_pct(float("nan")) == fmt_pct(None) == "—"


def test_accuracy_by_true_region_agrees_with_accuracy_by_region():
    raw = _results([PARIS, PARIS, PARIS, TOKYO, MID_ATLANTIC, TOKYO], [10.0, 1000.0, 3000.0, 5.0, 3.0, np.nan])
    df = annotate_results(raw)
    for by in ("country", "continent"):
        ours = accuracy_by_true_region(df, 750.0, by)
        ref = accuracy_by_region(raw, 750.0, by)
        pd.testing.assert_frame_equal(ours[["images", "accuracy"]].sort_index(), ref.sort_index())
    countries = accuracy_by_true_region(df, 750.0, "country")
    assert list(countries["images"]) == [3, 1, 1]  # most images first; the failed Tokyo image left out
    assert dict(zip(countries.index, countries["name"])) == {"FRA": "France", "JPN": "Japan", SEA: SEA}
    assert countries.index[0] == "FRA"
    assert countries.loc["FRA", "accuracy"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        accuracy_by_true_region(df, 750.0, "planet")


def test_compare_results_says_who_is_right():
    a = annotate_results(_results([PARIS] * 4, [0.5, 10.0, 100.0, np.nan]))
    b = annotate_results(_results([PARIS] * 4, [50.0, 20.0, 5.0, 1.0]))
    both = compare_results(a, b, 25.0)
    assert list(both.columns) == ["IMG_ID", "error_km_a", "country", "error_km_b", "right"]
    assert list(both["right"]) == ["only a", "both", "only b", "only b"]  # a failed image is never right
    assert list(compare_results(a, b, 0.1)["right"]) == ["neither", "neither", "neither", "neither"]


def test_region_and_place_labels():
    assert region_label("France") == "France"
    assert region_label("") == region_label(None) == SEA
    assert place_label("Paris", "Île-de-France") == "Paris, Île-de-France"
    assert place_label("Paris", "") == place_label("Paris") == "Paris"
    assert place_label("", "") == SEA


def test_error_histogram_counts_every_located_image():
    from geocore import viz

    errors = np.array([0.01, 0.5, 10.0, 100.0, 1000.0, 5000.0, np.nan])
    ax = viz.plot_error_histogram(errors, title="t")
    heights = [p.get_height() for p in ax.patches]
    assert sum(heights) == 6  # NaN left out; errors under 0.1 km in the first bin
    assert heights[0] == 1 and ax.get_xscale() == "log" and ax.get_title() == "t"
    assert len(ax.lines) == 5  # the five accuracy radii
    import matplotlib.pyplot as plt

    plt.close(ax.figure)


def test_most_localizable_keeps_the_abstention_curves_photos():
    from geocore.uncertainty.localizability import abstention_curve

    score = np.array([3.0, np.nan, 1.0, 5.0, 1.0, 2.0, 4.0])  # NaN: a failed image; a tie at 1.0
    df = pd.DataFrame({"localizability": score, "error_km": [30.0, np.nan, 5.0, 900.0, 50.0, 10.0, 300.0]})
    assert list(most_localizable(df, 1.0)) == [True] * 7  # no filter: failed images stay
    assert np.flatnonzero(most_localizable(df, 0.5)).tolist() == [2, 4, 5]  # ⌈0.5 · 6 scored⌉ = 3 photos
    kept = most_localizable(df, 1 / 3)
    assert np.flatnonzero(kept).tolist() == [2, 4]  # the two lowest scores, ties in row order
    assert most_localizable(df, 0.01).sum() == 1 and most_localizable(df, 0.01)[2]  # at least one photo
    # the same photos as the abstention curve answers at each share
    ok = df[np.isfinite(score)]
    curve = abstention_curve(ok["error_km"], ok["localizability"], fractions=(0.5, 1 / 3))
    for share, n in zip((0.5, 1 / 3), curve["n"]):
        mask = most_localizable(df, share)
        assert mask.sum() == n
        assert np.median(df.loc[mask, "error_km"]) == curve.loc[curve["n"] == n, "median_km"].iloc[0]
    with pytest.raises(ValueError):
        most_localizable(df, 0.0)


def test_uncertainty_figures_plot_the_tables():
    import matplotlib.pyplot as plt

    from geocore import viz
    from geocore.uncertainty.localizability import abstention_curve, coverage_table, recall_vs_area

    rng = np.random.default_rng(0)
    errors, score = rng.exponential(500.0, 40), rng.normal(4.0, 1.0, 40)
    curve = abstention_curve(errors, score)
    ax = viz.plot_abstention(curve, title="abstention")
    assert len(ax.lines) == 5 and ax.get_title() == "abstention"  # one line per accuracy radius
    city = next(line for line in ax.lines if line.get_label() == "City 25 km")
    assert list(city.get_xdata()) == pytest.approx(100 * curve["fraction"])
    assert list(city.get_ydata()) == pytest.approx(100 * curve["acc_25km"])
    plt.close(ax.figure)

    truth_area = np.r_[rng.uniform(1e2, 1e7, 30), [np.inf] * 2]
    table = recall_vs_area(truth_area, (1e1, 1e3, 1e5, 1e7, 1e8))
    cov = coverage_table(rng.uniform(0, 1, 32), rng.uniform(1e3, 1e6, (32, 2)), (0.5, 0.9))
    ax = viz.plot_recall_vs_area(table, coverage=cov)
    assert ax.get_xscale() == "log"
    curve_line, marks = ax.lines[:2]
    assert list(curve_line.get_ydata()) == pytest.approx(100 * table["recall"])
    assert list(marks.get_xdata()) == pytest.approx(cov["median_area_km2"])
    assert [t.get_text() for t in ax.texts] == ["50 %", "90 %"]
    plt.close(ax.figure)
