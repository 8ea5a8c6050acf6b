"""Failure analysis of an evaluation results file: error bands, where each image is, metrics, two runs compared.

`annotate_results` adds, once per results frame, what every view of it needs (the app's Failures page, the
notebooks): an `ok` flag, the error band, the true and predicted country and continent, and a per-image
country hit. The other functions work on that annotated frame:

- `results_metrics` / `metrics_row`: the metrics of the located images, as numbers or as the papers print them;
- `accuracy_by_true_region`: accuracy within a radius per country or continent of the true location;
- `compare_results`: which images each of two runs gets right within a radius;
- `most_localizable`: the rows kept when answering only the most localizable share of the photos (the
  abstention curve's order, `geocore.eval.coverage`).

Figures of these live in `geocore.viz` (`plot_error_histogram`, `plot_choropleth`, `plot_abstention`,
`plot_recall_vs_area`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from geocore.geo.countries import country_of
from geocore.metrics import LEVEL_NAMES, THRESHOLDS_KM, GeoMetrics, metrics_from_errors
from geocore.present import SEA
from geocore.eval.results import ok_mask, ok_rows

FAILED = "failed"  # the band of an image with no prediction


@dataclass(frozen=True)
class ErrorBand:
    """Errors in (lo_km, hi_km] (the first band includes 0), named and coloured for plots and legends."""

    name: str
    lo_km: float
    hi_km: float
    color: str


ERROR_BANDS: tuple[ErrorBand, ...] = (
    ErrorBand("≤ 1 km", 0.0, 1.0, "#1a9850"),
    ErrorBand("1–25 km", 1.0, 25.0, "#66bd63"),
    ErrorBand("25–200 km", 25.0, 200.0, "#a6d96a"),
    ErrorBand("200–750 km", 200.0, 750.0, "#fdae61"),
    ErrorBand("750–2500 km", 750.0, 2500.0, "#f46d43"),
    ErrorBand("> 2500 km", 2500.0, math.inf, "#a50026"),
)
BAND_NAMES: tuple[str, ...] = tuple(b.name for b in ERROR_BANDS)
BAND_COLORS: dict[str, str] = {b.name: b.color for b in ERROR_BANDS}


def error_bands(errors_km) -> np.ndarray:
    """The `ERROR_BANDS` name of each error (km); NaN (no prediction) → `FAILED`. Object array of str."""
    err = np.asarray(errors_km, dtype=np.float64).reshape(-1)
    out = np.full(err.shape, FAILED, dtype=object)
    for band in ERROR_BANDS:
        low = err >= band.lo_km if band.lo_km == 0 else err > band.lo_km
        out[low & (err <= band.hi_km)] = band.name
    return out


def annotate_results(results: pd.DataFrame) -> pd.DataFrame:
    """A results frame (as `geocore evaluate` writes it) with the columns every failure view needs.

    Adds, on a copy with a fresh 0..N-1 index and `IMG_ID` as str:
    - `ok`: status "ok" and an error present;
    - `country`, `continent`: of the true location, `SEA` ("(sea)") when in no country; `iso_a3` ("" at sea);
    - `pred_country`: of the top-1 prediction (`SEA` at sea, "" for failed images);
    - `country_hit`: 1.0 / 0.0 whether the prediction lies in the true country, NaN when the truth is at sea
      or the image failed (what country accuracy averages);
    - `band`: the error band (`error_bands`).
    """
    df = results.reset_index(drop=True).copy()
    df["IMG_ID"] = df["IMG_ID"].astype(str)
    ok = ok_mask(df).to_numpy()
    df["ok"] = ok
    true = country_of(df[["LAT", "LON"]].to_numpy(np.float64))
    df["country"] = true["country"].replace("", SEA).to_numpy()
    df["iso_a3"] = true["iso_a3"].to_numpy()
    df["continent"] = true["continent"].replace("", SEA).to_numpy()
    pred_iso = np.full(len(df), "", dtype=object)
    pred_country = np.full(len(df), "", dtype=object)
    if ok.any():
        pred = country_of(df.loc[ok, ["PRED_LAT", "PRED_LON"]].to_numpy(np.float64))
        pred_iso[ok] = pred["iso_a3"].to_numpy()
        pred_country[ok] = pred["country"].replace("", SEA).to_numpy()
    df["pred_country"] = pred_country
    hit = (pred_iso == df["iso_a3"].to_numpy()).astype(np.float64)
    hit[(df["iso_a3"].to_numpy() == "") | ~ok] = np.nan
    df["country_hit"] = hit
    df["band"] = error_bands(df["error_km"].to_numpy(np.float64))
    return df


def results_metrics(annotated: pd.DataFrame) -> GeoMetrics:
    """The metrics of the located images of an `annotate_results` frame (failed images left out)."""
    ok = annotated[annotated["ok"]]
    return metrics_from_errors(ok["error_km"].to_numpy(np.float64), ok["country_hit"].to_numpy(np.float64))


def fmt_pct(x: float | None) -> str:
    """A fraction as the papers print accuracy: 0.253 → "25.3"; None or NaN → "—"."""
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def metrics_row(annotated: pd.DataFrame, label: str) -> dict[str, str | int]:
    """One row of a metrics table, as the papers print it: accuracy (%) per radius named by level
    ("City 25 km"), median and mean error, GeoScore, country accuracy; `failed images` when there are any."""
    m = results_metrics(annotated).to_dict()
    row: dict[str, str | int] = {"results": label, "n": int(m["n"])}
    row.update({f"{LEVEL_NAMES[r]} {r} km": fmt_pct(m[f"acc_{r}km"]) for r in THRESHOLDS_KM})
    row.update({"Median km": f"{m['median_km']:.1f}", "Mean km": f"{m['mean_km']:.1f}",
                "GeoScore": f"{m['geoscore']:.0f}", "Country acc": fmt_pct(m["country_acc"])})
    failed = int((~annotated["ok"]).sum())
    if failed:
        row["failed images"] = failed
    return row


def accuracy_by_true_region(annotated: pd.DataFrame, radius_km: float, by: str = "country") -> pd.DataFrame:
    """Per region of the TRUE location: `images` and `accuracy` (fraction with error ≤ radius_km).

    The annotated-frame counterpart of `accuracy_by_region` (same index and columns, no
    second point-in-country lookup). by="country": indexed by ISO A3 code with the country's `name` too;
    by="continent": by continent name. Truths at sea are grouped under `SEA`; failed images are left out.
    Sorted by image count, largest first.
    """
    if by not in ("continent", "country"):
        raise ValueError(f"by must be 'continent' or 'country', got {by!r}")
    ok = annotated[annotated["ok"]]
    region = ok["continent"] if by == "continent" else ok["iso_a3"].replace("", SEA)
    hit = (ok["error_km"].to_numpy(np.float64) <= radius_km).astype(float)
    table = (pd.DataFrame({by: region.to_numpy(), "hit": hit}).groupby(by)
             .agg(images=("hit", "size"), accuracy=("hit", "mean"))
             .sort_values("images", ascending=False, kind="stable"))
    if by == "country":
        from geocore.geo.countries import countries

        names = countries().set_index("iso_a3")["name"].to_dict() | {SEA: SEA}
        table.insert(0, "name", [names.get(i, i) for i in table.index])
    return table


def compare_results(a: pd.DataFrame, b: pd.DataFrame, radius_km: float) -> pd.DataFrame:
    """The images two annotated results frames share: `IMG_ID, error_km_a, country, error_km_b, right`.

    `right` says which run is within `radius_km` of the truth: "only a", "only b", "both" or "neither"
    (a failed image is never right)."""
    both = a[["IMG_ID", "error_km", "country"]].merge(b[["IMG_ID", "error_km"]], on="IMG_ID", suffixes=("_a", "_b"))
    right_a = (both["error_km_a"] <= radius_km).to_numpy()
    right_b = (both["error_km_b"] <= radius_km).to_numpy()
    both["right"] = np.select([right_a & right_b, right_a, right_b], ["both", "only a", "only b"], "neither")
    return both


def most_localizable(results: pd.DataFrame, share: float, column: str = "localizability") -> np.ndarray:
    """(N,) bool: the rows kept when answering only the most localizable `share` in (0, 1] of the photos.

    Photos are ranked by `column` (log10 km² of the 90 % search region: lower = more localizable), lowest first
    and ties in row order, and the first max(1, ⌈share · n⌉) of the n photos with a score are kept, as
    `geocore.uncertainty.localizability.abstention_curve` counts them. Rows without a score (failed images) are
    kept only when `share` is 1 (no filter)."""
    share = float(share)
    if not 0.0 < share <= 1.0:
        raise ValueError(f"share must be in (0, 1], got {share}")
    n_rows = len(results)
    if share >= 1.0:
        return np.ones(n_rows, bool)
    score = pd.to_numeric(results[column], errors="coerce").to_numpy(np.float64)
    scored = np.flatnonzero(np.isfinite(score))
    keep = np.zeros(n_rows, bool)
    if scored.size:
        n = max(1, math.ceil(share * scored.size - 1e-9))
        keep[scored[np.argsort(score[scored], kind="stable")[:n]]] = True
    return keep

def accuracy_by_region(results: pd.DataFrame, radius_km: float = 2500.0, by: str = "continent") -> pd.DataFrame:
    """Per region of the TRUE point: `images` and `accuracy` (fraction with error ≤ radius_km).

    `results` has `LAT, LON, error_km, status` as `geocore evaluate` writes them; failed images are left out;
    `by` is "continent" or "country" (ISO A3 codes); truths at sea are grouped under "(sea)".
    Sorted by image count, largest first.
    """
    if by not in ("continent", "country"):
        raise ValueError(f"by must be 'continent' or 'country', got {by!r}")
    ok = ok_rows(results)
    where = country_of(ok[["LAT", "LON"]].to_numpy(np.float64))
    region = where["continent" if by == "continent" else "iso_a3"].replace("", SEA).to_numpy()
    hit = (ok["error_km"].to_numpy(np.float64) <= radius_km).astype(float)
    return (pd.DataFrame({by: region, "hit": hit}).groupby(by)
            .agg(images=("hit", "size"), accuracy=("hit", "mean"))
            .sort_values("images", ascending=False))
