"""Search regions: the smallest area that holds a given share of a prediction's probability.

The region at mass q is the highest-posterior-density (HPD) set: candidates in decreasing order of
probability DENSITY (probability / area km²), taken until their probability adds up to more than q. No set
of candidates of smaller total area holds as much probability, so it is where to search first. Candidates
of equal density are taken together (a region never splits a tie).

The nonconformity score for calibration is `truth_mass`: the probability of every candidate strictly denser
than the truth's candidate, i.e. the mass the region has to pass before it takes the truth's candidate
(0 when the truth is in the densest candidate; 1.0 when it lies in no candidate's area). The region at
mass q contains the truth exactly when truth_mass ≤ q, so coverage measured on truth_mass is the coverage
of the regions shown (except at q = 1: a truth in no candidate's area is in no region). The probability of
the smallest region containing the truth, which also counts the truth's own candidate, would be a looser
score: with sharp predictions one candidate often holds most of the mass, and regions calibrated on it
cover far more often than asked (GeoCLIP stand-in photos: 69 % at the 50 % level, 97 % at 90 %).
Densities are compared as float32 log-densities, the same way everywhere, so that ties are consistent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch
from shapely.geometry import mapping
from shapely.geometry.base import BaseGeometry

from geocore.errors import InputError
from geocore.uncertainty.calibration import Calibration, validate_levels
from geocore.geo.candidates import CandidateCells
from geocore.geo.polygons import count_areas, countries_touched
from geocore.tensors import as_numpy

CHUNK = 64  # images per block: a (64, 100K) block of float64 is 51 MB
RAW_LEVEL = 0.9  # the raw (uncalibrated) region whose area is a photo's localizability and a Mondrian bin score


@dataclass(eq=False)
class SearchRegion:
    """The HPD region of one image at one level.

    level: nominal coverage asked for; mass: the probability threshold used (= level, or the calibrated
    mass); held_mass: probability the region actually holds (> mass); indices: candidates, densest first;
    area_km2: exact sum of their areas; outside_calibration: the image's raw localizability lies beyond the
    1st–99th percentile its calibration saw (coverage may not hold); calibration_kind: what its calibration was
    fitted on ("single photos", "sets of 2–5 photos"; "" when not calibrated); calibration_note: "" when that
    matches the answer (a single photo, or a joint answer of as many photos as the sets), else the sentence to show
    (`Calibration.note_for`). geometry, n_areas and countries are computed on first use.
    """

    level: float
    mass: float
    calibrated: bool
    indices: np.ndarray
    area_km2: float
    held_mass: float
    cells: CandidateCells = field(repr=False)
    outside_calibration: bool = False
    calibration_kind: str = ""
    calibration_note: str = ""

    @cached_property
    def geometry(self) -> BaseGeometry:
        """(Multi)Polygon in lon/lat degrees (EPSG:4326), split at the antimeridian."""
        return self.cells.polygons(self.indices)

    @cached_property
    def n_areas(self) -> int:
        """Separate areas to search; pieces meeting at the antimeridian or a pole count as one."""
        return count_areas(self.geometry)

    @cached_property
    def _countries(self) -> list[tuple[str, str]]:
        return countries_touched(self.geometry)

    @property
    def countries(self) -> list[str]:
        """ISO A3 codes of the countries the region touches, most covered first."""
        return [iso for iso, _ in self._countries]

    @property
    def country_names(self) -> list[str]:
        return [name for _, name in self._countries]

    def to_feature(self) -> dict:
        """A GeoJSON Feature (RFC 7946) with the region's numbers as properties."""
        return {
            "type": "Feature",
            "geometry": mapping(self.geometry),
            "properties": {
                "level": self.level, "mass": self.mass, "calibrated": self.calibrated,
                "area_km2": self.area_km2, "n_areas": self.n_areas, "countries": self.countries,
                "country_names": self.country_names, "held_mass": self.held_mass,
                "n_candidates": int(self.indices.size),
                "calibration_kind": self.calibration_kind or None, "calibration_note": self.calibration_note or None,
            },
        }


def prob_matrix(probs, m: int) -> tuple[np.ndarray, bool]:
    """(B, M) float32 probabilities (rows rescaled to sum to 1) and whether the input was 1-D."""
    from geocore.models.prediction import Prediction

    if isinstance(probs, Prediction):
        if probs.probs_full is None:
            raise InputError("prediction has no full distribution (probs_full); predict with full=True")
        probs = probs.probs_full
    arr = as_numpy(probs, np.float32)
    single = arr.ndim == 1
    arr = arr[None] if single else arr
    if arr.ndim != 2 or arr.shape[1] != m:
        raise InputError(f"probs: expected shape (M,) or (B, M) with M = {m} candidates, got {tuple(np.shape(probs))}")
    total = arr.sum(axis=1, dtype=np.float64)
    if not (arr.min(initial=0.0) >= 0.0) or not (np.abs(total - 1.0) <= 1e-3).all():  # NaN fails both
        raise InputError("probs: expected finite, non-negative probabilities whose rows sum to 1")
    if (np.abs(total - 1.0) > 1e-6).any():
        arr = arr / total[:, None].astype(np.float32)
    return arr, single


_TINY = np.finfo(np.float32).smallest_subnormal


def _keys(p: np.ndarray, log_area: np.ndarray) -> np.ndarray:
    """(b, M) float32 log-density. Zero probabilities count as the smallest float32, so that they stay
    ordered by area instead of forming one huge tie (which also slows sorting down)."""
    return np.log(np.maximum(p, _TINY)) - log_area


def bin_scores(p: np.ndarray, cells: CandidateCells, name: str | Sequence[str], *,
               log_area90: np.ndarray | None = None) -> np.ndarray:
    """The score(s) a Mondrian calibration bins photos on, from their probabilities (B, M) alone: (B,) for one
    name, (B, k) for k names (a nested calibration's `Bins.scores`). `log_area90`: the raw localizability when
    the caller has already sorted these photos' distributions (else it is computed here)."""
    if not isinstance(name, str):
        return np.stack([bin_scores(p, cells, n, log_area90=log_area90) for n in name], axis=1)
    if name == "entropy":
        with np.errstate(divide="ignore", invalid="ignore"):
            return -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1, dtype=np.float64)
    if log_area90 is not None:
        return log_area90
    return np.log10(areas_at_masses(p, cells, [RAW_LEVEL])[:, 0])  # log_area90: the raw localizability


def _masses(levels, calibration: Calibration | None, cells: CandidateCells, model: str | None,
            p: np.ndarray | None = None, log_area90: np.ndarray | None = None) -> np.ndarray:
    """(L,) masses shared by every image, or (B, L) per image for a Mondrian calibration (needs `p`)."""
    levels = validate_levels(levels)
    if calibration is None:
        return np.asarray(levels, np.float64)
    calibration.check_compatible(model if model is not None else calibration.model, cells.fingerprint)
    if calibration.bins is None or p is None:
        return calibration.masses_for(levels)
    return calibration.masses_for(levels, bin_scores(p, cells, calibration.bins.scores, log_area90=log_area90))


class _Sorted:
    """One block of images in HPD order: cumulative mass and area, and where each mass is reached."""

    def __init__(self, p: np.ndarray, cells: CandidateCells, log_area: np.ndarray) -> None:
        keys = _keys(p, log_area)  # (b, M)
        self.order = np.argsort(-keys, axis=1)  # (b, M) densest first
        self.neg_keys = -np.take_along_axis(keys, self.order, axis=1)  # (b, M) ascending
        mass = np.cumsum(np.take_along_axis(p, self.order, axis=1), axis=1, dtype=np.float64)
        self.mass = mass / mass[:, -1:]
        self.area = np.cumsum(cells.areas_km2.astype(np.float32)[self.order], axis=1, dtype=np.float64)

    def ends(self, q: np.ndarray) -> np.ndarray:
        """(b, L) last position of the region at each mass q: (L,) for every image, or (b, L) one row per image
        (a calibration conditional on localizability gives each image its own masses); ties included."""
        b, m = self.mass.shape
        q = np.asarray(q, np.float64)
        q = torch.from_numpy(np.broadcast_to(q if q.ndim == 2 else q.reshape(1, -1), (b, q.shape[-1])).copy())
        first = torch.searchsorted(torch.from_numpy(self.mass), q, right=True).clamp_(max=m - 1)  # first cumsum > q
        neg_keys = torch.from_numpy(self.neg_keys)
        return (torch.searchsorted(neg_keys, neg_keys.gather(1, first), right=True) - 1).numpy()


def _blocks(p: np.ndarray):
    for start in range(0, p.shape[0], CHUNK):
        yield start, p[start : start + CHUNK]


def _rows(q: np.ndarray, start: int, stop: int) -> np.ndarray:
    """The masses of images start..stop: q itself when shared (K,), else its rows (B, K)."""
    return q if q.ndim == 1 else q[start:stop]


def areas_at_masses(probs, cells: CandidateCells, masses) -> np.ndarray:
    """(B, K) area km² of each image's HPD region at each probability mass in [0, 1]: masses (K,) shared by
    every image, or (B, K) one row per image."""
    p, _ = prob_matrix(probs, len(cells))
    q = np.asarray(masses, np.float64)
    q = q if q.ndim == 2 else np.atleast_1d(q)
    if q.ndim == 2 and q.shape[0] != p.shape[0]:
        raise InputError(f"masses: expected (K,) or ({p.shape[0]}, K), got {q.shape}")
    if not ((q >= 0) & (q <= 1)).all():
        raise InputError(f"masses: expected values in [0, 1], got {np.unique(q)[:8].tolist()}")
    log_area = np.log(cells.areas_km2).astype(np.float32)
    out = np.empty((p.shape[0], q.shape[-1]))
    for start, block in _blocks(p):
        stop = start + block.shape[0]
        s = _Sorted(block, cells, log_area)
        out[start:stop] = np.take_along_axis(s.area, s.ends(_rows(q, start, stop)), axis=1)
    return out


def _calibrated_blocks(p: np.ndarray, cells: CandidateCells, levels, calibration: Calibration | None,
                       model: str | None):
    """Per block of images: (start, their HPD sort, their masses (b, L), their raw log10 90 % areas or None
    without a calibration). One sort per image serves the regions, a Mondrian calibration's bin and the fit
    check."""
    q = _masses(levels, calibration, cells, model)  # also checks the calibration against these candidates
    mondrian = calibration is not None and calibration.bins is not None
    log_area = np.log(cells.areas_km2).astype(np.float32)
    for start, block in _blocks(p):
        s = _Sorted(block, cells, log_area)
        raw90 = None
        if calibration is not None:
            raw90 = np.log10(np.take_along_axis(s.area, s.ends(np.array([RAW_LEVEL])), axis=1)[:, 0])
        qb = _masses(levels, calibration, cells, model, block, raw90) if mondrian else q
        yield start, s, np.broadcast_to(qb, (block.shape[0], len(q))), raw90


def region_areas(probs, cells: CandidateCells, levels=(0.5, 0.9), *, calibration: Calibration | None = None,
                 model: str | None = None) -> np.ndarray:
    """(B, L) area km² of each image's HPD region at each level (no polygons; for evaluation)."""
    p, _ = prob_matrix(probs, len(cells))
    levels = validate_levels(levels)
    out = np.empty((p.shape[0], len(levels)))
    for start, s, qb, _ in _calibrated_blocks(p, cells, levels, calibration, model):
        out[start : start + qb.shape[0]] = np.take_along_axis(s.area, s.ends(qb), axis=1)
    return out


def search_regions(probs, cells: CandidateCells, levels=(0.5, 0.9), *, calibration: Calibration | None = None,
                   model: str | None = None, n_photos: int = 1) -> list[SearchRegion] | list[list[SearchRegion]]:
    """HPD search regions: for probs (M,) a list over levels; for (B, M) a list per image of lists over levels.

    With `calibration`, the mass used for level p is the calibrated mass `calibration.mass_for(p)` (per image for a
    Mondrian one); the calibration must have been fitted on these candidates (and on `model`, when given). Its
    fit check (`outside_calibration`) and a Mondrian calibration's bin read each image's raw 90 % area off the
    same sort. `n_photos`: how many photos each answer joins (1: single photos; a joint answer's n), against what
    the calibration was fitted on (`calibration_note`).
    """
    p, single = prob_matrix(probs, len(cells))
    levels = validate_levels(levels)
    kind = calibration.kind if calibration is not None else ""
    note = calibration.note_for(n_photos) if calibration is not None else ""
    out: list[list[SearchRegion]] = []
    for _, s, qb, raw90 in _calibrated_blocks(p, cells, levels, calibration, model):
        ends = s.ends(qb)  # (b, L)
        outside = np.zeros(qb.shape[0], bool)
        if calibration is not None and calibration.localizability:
            outside = calibration.outside(raw90)
        for r in range(qb.shape[0]):
            out.append([SearchRegion(level=float(lv), mass=float(qq), calibrated=calibration is not None,
                                     indices=s.order[r, : e + 1].copy(), area_km2=float(s.area[r, e]),
                                     held_mass=float(s.mass[r, e]), cells=cells,
                                     outside_calibration=bool(outside[r]), calibration_kind=kind,
                                     calibration_note=note)
                        for lv, qq, e in zip(levels, qb[r], ends[r])])
    return out[0] if single else out


def _truth(probs, cells: CandidateCells, truth_latlon, with_area: bool) -> tuple[np.ndarray, np.ndarray | None]:
    p, _ = prob_matrix(probs, len(cells))
    truth = as_numpy(truth_latlon, np.float64).reshape(-1, 2)
    if truth.shape[0] != p.shape[0]:
        raise InputError(f"truth_latlon: expected {p.shape[0]} (lat, lon) rows, one per image, got {truth.shape[0]}")
    where = cells.locate(truth)  # (B,)
    log_area = np.log(cells.areas_km2).astype(np.float32)
    areas32 = cells.areas_km2.astype(np.float32)
    mass, area = np.ones(p.shape[0]), np.full(p.shape[0], np.inf)
    for start, block in _blocks(p):
        idx = where[start : start + block.shape[0]]
        ok = np.flatnonzero(idx >= 0)
        if ok.size == 0:
            continue
        keys = _keys(block[ok], log_area)  # (k, M)
        at = keys[np.arange(ok.size), idx[ok]][:, None]
        mass[start + ok] = np.minimum(np.where(keys > at, block[ok], 0.0).sum(axis=1, dtype=np.float64), 1.0)
        if with_area:
            area[start + ok] = np.where(keys >= at, areas32, np.float32(0.0)).sum(axis=1, dtype=np.float64)
    return mass, area if with_area else None


def truth_stats(probs, cells: CandidateCells, truth_latlon) -> tuple[np.ndarray, np.ndarray]:
    """Per image: (truth_mass, area km² of the smallest HPD region containing the truth), both (B,).

    truth_mass: the probability of all candidates strictly denser than the truth's candidate (1.0 when the
    truth is in no candidate's area); the area counts those candidates and the truth's own (and its ties;
    inf when in none). No sorting needed.
    """
    return _truth(probs, cells, truth_latlon, with_area=True)


def truth_mass(probs, cells: CandidateCells, truth_latlon) -> np.ndarray:
    """(B,) nonconformity score: probability of the candidates strictly denser than the truth's candidate
    (1.0 when the truth is in none). The region at mass q contains the truth exactly when this is ≤ q."""
    return _truth(probs, cells, truth_latlon, with_area=False)[0]


def truth_region_area(probs, cells: CandidateCells, truth_latlon) -> np.ndarray:
    """(B,) area km² of the smallest HPD region containing the truth (inf when the truth is in no area)."""
    return truth_stats(probs, cells, truth_latlon)[1]
