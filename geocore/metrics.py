"""The field's geo-localization metrics, as plain functions and as an accumulating object.

Accuracy at radius r counts an error `<= r` km, as GeoCLIP's evaluation does.
GeoScore is the mean of 5000·exp(−d / 1492.7), the GeoGuessr-style score used by OSV-5M.
Country accuracy counts a prediction right when it falls in the true point's country
(Natural Earth 1:110m); images whose true point lies in no country are left out of it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from geocore.geo.distance import haversine_km
from geocore.tensors import as_numpy

THRESHOLDS_KM: tuple[int, ...] = (1, 25, 200, 750, 2500)
LEVEL_NAMES: dict[int, str] = {1: "Street", 25: "City", 200: "Region", 750: "Country", 2500: "Continent"}
GEOSCORE_SCALE_KM = 1492.7


def accuracy_within(errors_km, thresholds_km=THRESHOLDS_KM) -> dict[int, float]:
    """Share of errors `<= r` for each radius r (fractions in [0, 1]); NaN for no errors."""
    err = as_numpy(errors_km, np.float64)
    if err.size == 0:
        return {int(r): float("nan") for r in thresholds_km}
    hits = err[:, None] <= np.asarray(thresholds_km, dtype=np.float64)[None, :]
    return {int(r): float(v) for r, v in zip(thresholds_km, hits.mean(axis=0))}


def geoscore(errors_km) -> float:
    """Mean GeoScore, 5000·exp(−d/1492.7): 5000 for a perfect guess, ~0 at the antipode."""
    err = as_numpy(errors_km, np.float64)
    return float(np.mean(5000.0 * np.exp(-err / GEOSCORE_SCALE_KM))) if err.size else float("nan")


def country_match(pred_latlon, true_latlon) -> np.ndarray:
    """Per image: 1.0 when the prediction lies in the true point's country, 0.0 when not, NaN when the truth is at sea."""
    from geocore.geo.countries import country_of

    pred_c = country_of(as_numpy(pred_latlon, np.float64))["iso_a3"].to_numpy()
    true_c = country_of(as_numpy(true_latlon, np.float64))["iso_a3"].to_numpy()
    out = (pred_c == true_c).astype(np.float64)
    out[true_c == ""] = np.nan
    return out


@dataclass(frozen=True)
class GeoMetrics:
    """The metrics table of one evaluation; accuracies are fractions in [0, 1]."""

    n: int
    acc_1km: float
    acc_25km: float
    acc_200km: float
    acc_750km: float
    acc_2500km: float
    median_km: float
    mean_km: float
    geoscore: float
    country_acc: float

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def metrics_from_errors(errors_km, country_hits=None) -> GeoMetrics:
    """All metrics from per-image errors (km) and optional per-image country hits (1/0/NaN)."""
    err = as_numpy(errors_km, np.float64)
    acc = accuracy_within(err)
    hits = np.asarray([] if country_hits is None else country_hits, dtype=np.float64)
    known = hits[~np.isnan(hits)]
    return GeoMetrics(
        n=int(err.size),
        **{f"acc_{r}km": acc[r] for r in THRESHOLDS_KM},
        median_km=float(np.median(err)) if err.size else float("nan"),
        mean_km=float(np.mean(err)) if err.size else float("nan"),
        geoscore=geoscore(err),
        country_acc=float(known.mean()) if known.size else float("nan"),
    )


def compute_metrics(pred_latlon, true_latlon, *, country: bool = True) -> GeoMetrics:
    """Metrics of N predictions against N truths, both `(N, 2)` (lat, lon) degrees."""
    errors = haversine_km(as_numpy(pred_latlon, np.float64), as_numpy(true_latlon, np.float64))
    hits = country_match(pred_latlon, true_latlon) if country else None
    return metrics_from_errors(errors, hits)


class GeoMetricAccumulator:
    """Batched evaluation: `update(pred, truth)` per batch, `compute()` at the end.

    Keeps one error (and one country hit) per image: the median needs them all, and 8 bytes an
    image is nothing next to the images themselves.
    """

    def __init__(self, *, country: bool = True) -> None:
        self.country = country
        self.reset()

    def reset(self) -> None:
        self._errors: list[np.ndarray] = []
        self._hits: list[np.ndarray] = []

    def update(self, pred_latlon, true_latlon) -> np.ndarray:
        """Add a batch; returns its per-image errors in km."""
        pred = as_numpy(pred_latlon, np.float64).reshape(-1, 2)
        true = as_numpy(true_latlon, np.float64).reshape(-1, 2)
        err = haversine_km(pred, true)
        self._errors.append(err)
        if self.country:
            self._hits.append(country_match(pred, true))
        return err

    def compute(self) -> GeoMetrics:
        err = np.concatenate(self._errors) if self._errors else np.empty(0)
        hits = np.concatenate(self._hits) if self._hits else None
        return metrics_from_errors(err, hits)
