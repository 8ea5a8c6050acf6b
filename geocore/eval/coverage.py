"""What `evaluate` stores per image so that search regions can be calibrated and judged, and the tables made
from it: coverage per level, the abstention curve, recall against searched area, and the calibration itself.

Per image (columns of the results file):
- `truth_mass`: the probability of the candidates strictly denser than the truth's own — the search region at
  mass q holds the truth exactly when truth_mass ≤ q, which makes it the nonconformity score split-conformal
  calibration needs (1.0 when the truth lies in no candidate's area);
- `truth_area_km2`: that region's area (inf when the truth lies in no candidate's area);
- `area_curve_km2`: the area of the region holding each mass of `MASS_GRID` (a list), and `area_50_km2`,
  `area_80_km2`, `area_90_km2`, `area_95_km2` taken from it; calibrated areas are read off this curve
  (log-area interpolated between grid masses);
- `localizability`: log10 of the 90 % region's area (lower = more localizable; `geocore.uncertainty.localizability`),
  `entropy` (nats) beside it;
- `candidates`: the fingerprint of the candidates (gallery or cells), so a calibration is never applied to
  another gallery.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from geocore.errors import InputError
from geocore.eval.results import area_column, ok_rows
from geocore.uncertainty.calibration import DEFAULT_LEVELS, Calibration, fit_calibration, validate_levels
from geocore.uncertainty.conditional import bin_score_columns
from geocore.geo.candidates import CandidateCells
from geocore.uncertainty.localizability import abstention_curve, coverage_table, entropy, recall_vs_area
from geocore.uncertainty.regions import areas_at_masses, truth_stats

# calibrated masses can be small (sharp models): the grid starts at 0 (the densest candidate alone)
MASS_GRID: tuple[float, ...] = (0.0, 0.01, 0.02, *(round(0.05 * k, 2) for k in range(1, 20)), 0.99)
NAMED_LEVELS: tuple[float, ...] = (0.5, 0.8, 0.9, 0.95)
AREA_GRID_KM2: tuple[float, ...] = (1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8)
UNCERTAINTY_COLUMNS = ("truth_mass", "truth_area_km2", "area_curve_km2", "localizability", "entropy", "candidates")


def coverage_columns(probs, cells: CandidateCells, truth_latlon) -> dict[str, object]:
    """The per-image coverage columns for a batch: probs (B, M) over `cells`, truth (B, 2)."""
    mass, area = truth_stats(probs, cells, truth_latlon)
    curve = areas_at_masses(probs, cells, MASS_GRID)  # (B, G)
    out: dict[str, object] = {"truth_mass": mass, "truth_area_km2": area,
                              "area_curve_km2": [row.tolist() for row in curve]}
    for level in NAMED_LEVELS:
        out[area_column(level)] = curve[:, MASS_GRID.index(level)]
    out["localizability"] = np.log10(curve[:, MASS_GRID.index(0.9)])
    out["entropy"] = entropy(probs, len(cells))
    out["candidates"] = [cells.fingerprint] * len(mass)
    return out


def has_coverage_columns(results: pd.DataFrame) -> bool:
    return all(c in results.columns for c in UNCERTAINTY_COLUMNS)


def _ok(results: pd.DataFrame, what: str) -> pd.DataFrame:
    if not has_coverage_columns(results):
        missing = [c for c in UNCERTAINTY_COLUMNS if c not in results.columns]
        raise InputError(f"results: {what} needs the columns {', '.join(missing)}, which `geocore evaluate` writes "
                         "(re-run evaluate with this version of geocore)")
    ok = ok_rows(results, "truth_mass")
    if ok.empty:
        raise InputError(f"results: no image with status ok to {what}")
    return ok


def _one(ok: pd.DataFrame, column: str, what: str) -> str:
    values = ok[column].astype(str).unique()
    if len(values) != 1:
        raise InputError(f"results: {what} needs one {column}, found {len(values)} ({', '.join(values[:3])})")
    return str(values[0])


def calibrate_results(results: pd.DataFrame, levels=DEFAULT_LEVELS, *, mondrian: bool = True) -> Calibration:
    """Split-conformal calibration from an `evaluate` run on labelled photos the model was not trained on:
    Mondrian (coverage within bins of the photos' entropy, each cut again by their raw 90 % area:
    `geocore.uncertainty.conditional`) unless
    `mondrian=False` (one mass per level, coverage on average)."""
    ok = _ok(results, "calibrate")
    return fit_calibration(ok["truth_mass"].to_numpy(np.float64), validate_levels(levels),
                           model=_one(ok, "model", "calibration"), fingerprint=_one(ok, "candidates", "calibration"),
                           bin_score=bin_score_columns(ok) if mondrian else None,
                           localizability=ok["localizability"].to_numpy(np.float64),
                           refs=_one(ok, "refs", "calibration") if "refs" in ok.columns else "")


def coverage_by_bin(truth_mass: np.ndarray, masses: np.ndarray, levels, localizability: np.ndarray,
                    n_bins: int = 3) -> pd.DataFrame:
    """Coverage per level within bins of localizability (terciles by default, easiest first), beside the
    overall figure: where marginal coverage hides that hard photos are under-covered."""
    edges = np.quantile(localizability, np.arange(1, n_bins) / n_bins) if len(localizability) else []
    which = np.searchsorted(edges, localizability, side="right")
    names = ["most localizable third", "middle third", "least localizable third"] if n_bins == 3 else \
        [f"bin {b + 1} of {n_bins}" for b in range(n_bins)]
    rows = []
    for b, name in [(None, "all photos"), *enumerate(names)]:
        keep = np.ones(len(truth_mass), bool) if b is None else which == b
        rows.append({"photos": name, "n": int(keep.sum()),
                     **{f"{round(100 * p)} %": float(np.mean(truth_mass[keep] <= masses[keep, j])) if keep.any()
                        else float("nan") for j, p in enumerate(levels)}})
    return pd.DataFrame(rows)


def calibration_fit(results: pd.DataFrame, calibration: Calibration):
    """The two-sample test of the results' localizability against the calibration's (None when the file
    has no quantiles): `.shifted` → "coverage may not hold here"."""
    from geocore.uncertainty.conditional import shift_test

    ok = _ok(results, "check a calibration")
    return shift_test(ok["localizability"].to_numpy(np.float64), calibration.localizability, calibration.n)


def areas_from_curve(results: pd.DataFrame, masses) -> np.ndarray:
    """(N, L) region areas at masses (L,) shared or (N, L) per image, read off each image's stored area curve
    (log-area interpolation)."""
    curve = np.log(np.asarray(results["area_curve_km2"].tolist(), np.float64))  # (N, G)
    grid = np.asarray(MASS_GRID)
    q = np.clip(np.broadcast_to(np.asarray(masses, np.float64), (len(results), np.shape(masses)[-1])),
                grid[0], grid[-1])
    hi = np.searchsorted(grid, q)  # (N, L)
    lo = np.maximum(hi - 1, 0)
    t = np.where(hi == lo, 0.0, (q - grid[lo]) / np.where(hi == lo, 1.0, grid[np.minimum(hi, len(grid) - 1)] - grid[lo]))
    at = lambda idx: np.take_along_axis(curve, np.minimum(idx, len(grid) - 1), axis=1)  # noqa: E731
    return np.exp((1 - t) * at(lo) + t * at(hi))


def coverage_tables(results: pd.DataFrame, calibration: Calibration | None = None,
                       levels=NAMED_LEVELS) -> dict[str, pd.DataFrame]:
    """`coverage` (per level: nominal, mass, coverage, median/mean area; calibrated when given), `abstention`
    (accuracy when answering only the most localizable x %), `recall_vs_area`."""
    ok = _ok(results, "judge search regions")
    levels = validate_levels(levels)
    if calibration is not None:
        calibration.check_compatible(_one(ok, "model", "a calibration"), _one(ok, "candidates", "a calibration"))
    bin_score = bin_score_columns(ok, calibration.bins.scores) if calibration is not None and calibration.bins else None
    masses = calibration.masses_for(levels, bin_score) if calibration is not None else np.asarray(levels)
    tm = ok["truth_mass"].to_numpy(np.float64)
    coverage = coverage_table(tm, areas_from_curve(ok, masses), levels, calibration, bin_score)
    return {
        "coverage": coverage,
        "coverage_by_localizability": coverage_by_bin(tm, np.broadcast_to(masses, (len(ok), len(levels))), levels,
                                                      ok["localizability"].to_numpy(np.float64)),
        "abstention": abstention_curve(ok["error_km"].to_numpy(np.float64), ok["localizability"].to_numpy(np.float64)),
        "recall_vs_area": recall_vs_area(ok["truth_area_km2"].to_numpy(np.float64), AREA_GRID_KM2),
    }
