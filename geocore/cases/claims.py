"""A claimed location ("filmed in Kharkiv") checked against a photo's (or a joint) distribution.

`resolve_claim` (`geocore.geo.gazetteer`, offline) turns "Kharkiv, Ukraine" or "49.99,36.23" into (lat, lon, label).

`check_claim` reports whether the claim lies in the 50 % and 90 % search regions, the smallest region holding
it, its distance from the top-1 and, with a calibration, a split-conformal p-value: the share of calibration
photos whose truth needed at least as much probability mass, (1 + #{s_i ≥ s}) / (n + 1). A calibration file
stores only its masses at the fitted levels (order statistics of the scores), so without the raw scores the
p-value is known only between two bounds; the decision at α = 1 − (a fitted level) is exact either way (it
is "outside the calibrated region at that level").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from geocore.errors import InputError
from geocore.geo.candidates import CandidateCells
from geocore.geo.distance import haversine_km
from geocore.geo.gazetteer import check_latlon, resolve_claim
from geocore.uncertainty.calibration import Calibration
from geocore.uncertainty.regions import bin_scores, truth_mass
from geocore.tensors import as_numpy

@dataclass
class ClaimCheck:
    """How a claimed location fares against a distribution.

    mass: probability of the candidates the model ranks above the claim's (the smallest region holding the
    claim holds just over this); level: the smallest nominal level whose region holds it (calibrated levels
    with a calibration; None beyond the fitted ones); in_50 / in_90: inside those regions; p_value (exact,
    with the raw calibration scores) or p_low..p_high (its bounds from a calibration file's masses).
    """

    lat: float
    lon: float
    label: str
    mass: float
    level: float | None
    in_50: bool
    in_90: bool
    km_from_top1: float
    calibrated: bool
    in_candidates: bool
    p_value: float | None = None
    p_low: float | None = None
    p_high: float | None = None

    def rejected(self, alpha: float) -> bool | None:
        """Whether the photo argues against the claim at significance α (None: not known from the bounds)."""
        if not self.calibrated:
            return None
        if self.p_value is not None:
            return self.p_value <= alpha
        return True if self.p_high <= alpha + 1e-12 else (False if self.p_low > alpha else None)

    @property
    def verdict(self) -> str:
        """One sentence for a non-statistician."""
        where = f"{self.label}: {self.km_from_top1:,.0f} km from the top answer"
        if not self.in_candidates:
            return f"{where}; the model has no candidate there (open sea or outside its gallery), so it cannot judge"
        if not self.calibrated:
            inside = "inside" if self.in_90 else "outside"
            return (f"{where}; {inside} the 90 % search region (raw probability, not calibrated: no p-value; "
                    "give a calibration for one)")
        p = (f"p = {self.p_value:.2g}" if self.p_value is not None else
             f"p ≤ {self.p_high:.2g}" if self.p_high < 1 else f"p > {self.p_low:.2g}")
        if self.rejected(0.05):
            return (f"{where}; the photo argues against it ({p}): fewer than 5 % of calibration photos had their "
                    "true place ranked this low")
        if self.rejected(0.1):
            return f"{where}; the photo weakly argues against it ({p}): outside the calibrated 90 % region"
        return f"{where}; consistent with the photo at the 90 % level ({p})"

    def to_json(self) -> dict:
        return {**asdict(self), "verdict": self.verdict}


def conformal_p_value(score: float | np.ndarray, calibration_scores) -> np.ndarray:
    """(1 + #{s_i ≥ s}) / (n + 1) for each score s against the calibration photos' truth masses s_i."""
    cal = np.sort(np.asarray(calibration_scores, np.float64).ravel())
    s = np.atleast_1d(np.asarray(score, np.float64))
    return (1 + cal.size - np.searchsorted(cal, s, side="left")) / (cal.size + 1)


def p_value_bounds(score: float, calibration: Calibration) -> tuple[float, float]:
    """Bounds on the conformal p-value from the stored masses: mass q_j is the k_j-th smallest of the n scores,
    k_j = ⌈(n+1)·level_j⌉; s > q_j ⇒ p ≤ (n+1−k_j)/(n+1); s ≤ q_j ⇒ p ≥ (n+2−k_j)/(n+1)."""
    n = calibration.n
    k = np.ceil((n + 1) * np.asarray(calibration.levels) - 1e-9)
    q = np.asarray(calibration.masses)
    known = k <= n  # k > n: the mass is 1.0 by convention, no order statistic behind it
    above = known & (score > q)
    high = np.min(np.where(above, (n + 1 - k) / (n + 1), 1.0))
    low = np.max(np.where(known & ~above, (n + 2 - k) / (n + 1), 1 / (n + 1)))
    return float(low), float(high)


def check_resolved_claim(answer, claimed: tuple[float, float, str], model, calibration: Calibration | None = None,
                         cells: CandidateCells | None = None) -> ClaimCheck:
    """`check_claim` for a claim resolved to (lat, lon, label), labelled with it; `cells` defaults to the model's
    candidates. What the CLI, the report and the app show."""
    cells = cells if cells is not None else model.candidate_cells()
    check = check_claim(answer, claimed[:2], cells, calibration, model=model.model_name)
    check.label = claimed[2]
    return check


def _probs(answer) -> torch.Tensor:
    pred = getattr(answer, "prediction", answer)
    probs = getattr(pred, "probs_full", None)
    if probs is None:
        raise InputError("check_claim needs the full distribution: locate with full=True (or pass a joint answer)")
    return probs


def check_claim(answer, claim, cells: CandidateCells, calibration: Calibration | None = None, *,
                model: str | None = None, calibration_scores=None) -> ClaimCheck:
    """Check a claimed location against a `LocateResult`, a `JointResult` or a `Prediction` (with `probs_full`).

    claim: "Kharkiv, Ukraine", "49.99,36.23" or (lat, lon). With `calibration` (and `model`, checked against
    it) the regions are calibrated and a p-value is given: exact from the calibration photos' scores (those of
    this answer's bin for a Mondrian calibration) when the file keeps them or `calibration_scores` gives them,
    else bounds from its masses.
    """
    lat, lon, label = resolve_claim(claim) if isinstance(claim, str) else (*check_latlon(claim), "")
    label = label or f"{lat:.4f}, {lon:.4f}"
    probs = _probs(answer)
    point = np.array([[lat, lon]])
    s = float(truth_mass(probs, cells, point)[0])
    in_cands = bool(cells.locate(point)[0] >= 0)
    top1 = as_numpy(getattr(answer, "prediction", answer).coords[0, 0], np.float64)
    km = float(haversine_km(point[0], top1))
    if calibration is None:
        return ClaimCheck(lat, lon, label, s, s if in_cands else None, in_cands and s <= 0.5, in_cands and s <= 0.9,
                          km, False, in_cands)
    calibration.check_compatible(model if model is not None else calibration.model, cells.fingerprint)
    bin_score = None
    if calibration.bins is not None:  # Mondrian: this answer's own bin decides its masses and its peers
        p_matrix = as_numpy(probs, np.float32).reshape(1, -1)
        bin_score = bin_scores(p_matrix / p_matrix.sum(), cells, calibration.bins.scores)[:1]  # (1, k)
    masses = np.asarray(calibration.masses_for(calibration.levels, bin_score), np.float64).reshape(-1)
    level = float(np.interp(s, masses, calibration.levels)) if in_cands and s <= masses[-1] else None
    inside = [in_cands and s <= float(np.interp(p, calibration.levels, masses)) for p in (0.5, 0.9)]
    out = ClaimCheck(lat, lon, label, s, level, inside[0], inside[1], km, True, in_cands)
    if calibration_scores is None:
        calibration_scores = calibration.scores_like(bin_score)
    if calibration_scores is not None:
        out.p_value = float(conformal_p_value(s, calibration_scores)[0])
    else:
        out.p_low, out.p_high = p_value_bounds(s, calibration)
    return out
