import math

import numpy as np
import pytest
import torch

from geocore.metrics import (
    GeoMetricAccumulator,
    accuracy_within,
    compute_metrics,
    country_match,
    geoscore,
    metrics_from_errors,
)
from geocore.geo.coords import destination_point
from geocore.geo.countries import country_of, describe

# Truths spread over land; each prediction sits a known distance from its truth.
TRUTH = np.array([
    [48.8566, 2.3522],    # Paris
    [40.7128, -74.0060],  # New York
    [35.6762, 139.6503],  # Tokyo
    [-33.8688, 151.2093], # Sydney
    [-23.5505, -46.6333], # São Paulo
    [30.0444, 31.2357],   # Cairo
    [55.7558, 37.6173],   # Moscow
    [19.4326, -99.1332],  # Mexico City
])
DISTANCES = np.array([0.5, 1.0, 20.0, 150.0, 700.0, 2000.0, 2500.0, 9000.0])


def _preds():
    return destination_point(TRUTH, np.linspace(0, 315, len(TRUTH)), DISTANCES)


def test_accuracy_counts_errors_at_the_radius():
    acc = accuracy_within(DISTANCES)
    # <= r counts: 1.0 km is inside 1 km, 2500 km inside 2500 km
    assert acc == {1: 2 / 8, 25: 3 / 8, 200: 4 / 8, 750: 5 / 8, 2500: 7 / 8}


def test_metrics_from_known_distances():
    m = compute_metrics(_preds(), TRUTH, country=False)
    assert m.n == 8
    assert m.acc_1km == pytest.approx(0.25)
    assert m.acc_2500km == pytest.approx(0.875)
    assert m.median_km == pytest.approx((150 + 700) / 2, rel=1e-6)
    assert m.mean_km == pytest.approx(DISTANCES.mean(), rel=1e-6)
    assert m.geoscore == pytest.approx(np.mean(5000 * np.exp(-DISTANCES / 1492.7)), rel=1e-6)
    assert math.isnan(m.country_acc)


def test_geoscore_bounds():
    assert geoscore([0.0]) == 5000.0
    assert geoscore([1492.7]) == pytest.approx(5000 / math.e)
    assert geoscore([20015.0]) < 1.0


def test_country_accuracy():
    truth = np.array([[48.8566, 2.3522], [52.52, 13.405], [0.0, -150.0]])  # Paris, Berlin, Pacific
    pred = np.array([[45.764, 4.8357], [48.8566, 2.3522], [0.0, -150.0]])  # Lyon (France), Paris (wrong), sea
    hits = country_match(pred, truth)
    assert hits[0] == 1.0 and hits[1] == 0.0 and np.isnan(hits[2])
    assert compute_metrics(pred, truth).country_acc == pytest.approx(0.5)


def test_accumulator_equals_one_shot():
    acc = GeoMetricAccumulator()
    preds = _preds()
    for lo in range(0, 8, 3):
        acc.update(torch.from_numpy(preds[lo : lo + 3]), TRUTH[lo : lo + 3])
    assert acc.compute() == compute_metrics(preds, TRUTH)
    acc.reset()
    assert acc.compute().n == 0


def test_empty_metrics_are_nan_not_crash():
    m = metrics_from_errors([])
    assert m.n == 0 and math.isnan(m.median_km) and math.isnan(m.acc_1km)


def test_country_of_known_points():
    out = country_of([[48.8584, 2.2945], [40.6892, -74.0445], [-33.8568, 151.2153], [0.0, -150.0], [64.1466, -21.9426]])
    assert list(out["iso_a3"]) == ["FRA", "USA", "AUS", "", "ISL"]
    assert list(out["continent"]) == ["Europe", "North America", "Oceania", "", "Europe"]


def test_describe_names_the_nearest_place():
    out = describe([[40.7128, -74.0060], [-33.8688, 151.2093]])
    assert list(out["place"]) == ["New York City", "Sydney"]
    assert out["place_km"].max() < 2.0


def test_accuracy_by_region():
    import pandas as pd

    from geocore.eval.analysis import accuracy_by_region

    results = pd.DataFrame({
        "LAT": [48.85, 45.76, 40.71, 0.0, 35.68],
        "LON": [2.35, 4.84, -74.0, -150.0, 139.65],
        "error_km": [10.0, 3000.0, 100.0, 50.0, float("nan")],
        "status": ["ok", "ok", "ok", "ok", "error: unreadable"],
    })
    by_cont = accuracy_by_region(results, 2500, "continent")
    assert by_cont.loc["Europe"].tolist() == [2, 0.5]
    assert by_cont.loc["North America"].tolist() == [1, 1.0]
    assert by_cont.loc["(sea)"].tolist() == [1, 1.0] and "Asia" not in by_cont.index  # failed rows left out
    assert accuracy_by_region(results, 25, "country").loc["FRA"].tolist() == [2, 0.5]
