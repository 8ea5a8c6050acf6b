"""How localizable a photo is, and what answering only the most localizable photos buys.

Score: log10 of the area (km²) of the image's 90 % search region (calibrated when a calibration is given);
lower = more localizable. It is in the unit an analyst acts on ("search 10^3.2 km²"), it is the quantity
that coverage guarantees are about, and it accounts for candidate areas: entropy over candidates does not
(a distribution spread over 50 city-sized gallery cells and one over 50 country-sized S2 cells have the same
entropy). Entropy (nats) is kept as a secondary column for comparison with the literature.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from geocore.metrics import THRESHOLDS_KM, accuracy_within
from geocore.uncertainty.calibration import Calibration, validate_levels
from geocore.geo.candidates import CandidateCells
from geocore.uncertainty.regions import bin_scores, prob_matrix, region_areas
from geocore.tensors import as_numpy

DEFAULT_FRACTIONS: tuple[float, ...] = tuple(round(0.1 * k, 1) for k in range(1, 11))


def entropy(probs, m: int | None = None) -> np.ndarray:
    """(B,) Shannon entropy (nats) of each row of probabilities."""
    p, _ = prob_matrix(probs, m if m is not None else np.shape(probs)[-1])
    return bin_scores(p, None, "entropy")


def localizability(probs, cells: CandidateCells, *, level: float = 0.9, calibration: Calibration | None = None,
                   model: str | None = None) -> pd.DataFrame:
    """Per image: `score` (log10 km² of the `level` region; lower = more localizable), `area_km2`, `entropy`."""
    area = region_areas(probs, cells, [level], calibration=calibration, model=model)[:, 0]
    return pd.DataFrame({"score": np.log10(area), "area_km2": area, "entropy": entropy(probs, len(cells))})


def _vector(x, name: str) -> np.ndarray:
    arr = as_numpy(x, np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {arr.shape}")
    return arr


def abstention_curve(errors_km, score, fractions=DEFAULT_FRACTIONS) -> pd.DataFrame:
    """Accuracy when answering only the most localizable share of photos (lowest `score` first).

    One row per fraction: `fraction`, `n` answered, `acc_{r}km` for r in THRESHOLDS_KM, `median_km`.
    """
    err, s = _vector(errors_km, "errors_km"), _vector(score, "score")
    if err.shape != s.shape:
        raise ValueError(f"errors_km and score must have the same length, got {err.size} and {s.size}")
    order = np.argsort(s, kind="stable")
    rows = []
    for f in np.atleast_1d(np.asarray(fractions, np.float64)):
        if not 0.0 < f <= 1.0:
            raise ValueError(f"fractions must be in (0, 1], got {f}")
        n = max(1, int(np.ceil(f * err.size - 1e-9))) if err.size else 0
        kept = err[order[:n]]
        acc = accuracy_within(kept, THRESHOLDS_KM)
        rows.append({"fraction": float(f), "n": n, **{f"acc_{r}km": acc[r] for r in THRESHOLDS_KM},
                     "median_km": float(np.median(kept)) if n else float("nan")})
    return pd.DataFrame(rows)


def coverage_table(truth_mass, areas, levels, calibration: Calibration | None = None, bin_score=None) -> pd.DataFrame:
    """Per level: `nominal`, `mass` used (the median over photos for a Mondrian calibration, whose masses
    depend on each photo's `bin_score`), empirical `coverage` (share with truth_mass ≤ its mass), and the
    `median_area_km2` / `mean_area_km2` of the regions `areas` (N, L), computed at those same masses."""
    tm = _vector(truth_mass, "truth_mass")
    levels = validate_levels(levels)
    areas = np.asarray(areas, np.float64).reshape(tm.size, len(levels))
    masses = (np.asarray(levels, np.float64) if calibration is None else calibration.masses_for(levels, bin_score))
    masses = np.broadcast_to(masses, (tm.size, len(levels)))
    return pd.DataFrame({
        "nominal": levels,
        "mass": np.median(masses, axis=0) if tm.size else np.asarray(levels),
        "coverage": (tm[:, None] <= masses).mean(axis=0),
        "median_area_km2": np.median(areas, axis=0),
        "mean_area_km2": areas.mean(axis=0),
    })


def recall_vs_area(truth_area_km2, area_grid) -> pd.DataFrame:
    """Share of images whose truth lies in the HPD region when at most `area_km2` may be searched.

    `truth_area_km2` (N,): area of each image's smallest HPD region containing the truth (inf when none).
    """
    ta = np.sort(_vector(truth_area_km2, "truth_area_km2"))
    grid = np.asarray(area_grid, np.float64).ravel()
    recall = np.searchsorted(ta, grid, side="right") / max(ta.size, 1)
    return pd.DataFrame({"area_km2": grid, "recall": recall})
