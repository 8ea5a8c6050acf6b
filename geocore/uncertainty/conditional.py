"""Coverage that holds for hard photos too: Mondrian split conformal over bins of localizability.

Split conformal calibration (`calibration.py`) guarantees coverage on average over photos like the
calibration ones. Averages hide the photos an analyst worries about: with stand-in photos of mixed
difficulty on the real GeoCLIP heads, marginally calibrated 50 % regions held the truth for 38.8 % of the
hardest third of photos and for far more than 50 % of the easiest. Mondrian conformal prediction fixes this
by calibrating separately within bins of a score computed from the prediction alone: a photo's bin is known
before its truth is, and within a bin the split-conformal argument holds unchanged, so each bin's regions
cover at least their level for new photos that fall in that bin (Vovk et al., "Algorithmic Learning in a
Random World", ch. 4; for our scores, the per-bin guarantee is ≥ p and < p + 1/(n_b + 1) without ties).

The bin scores (`BIN_SCORES`) are the entropy of the photo's distribution and its raw localizability: log10
km² of its *uncalibrated* 90 % region (the score `geocore.uncertainty.localizability` reports; `evaluate`
stores it as `localizability`). Bins are cut at quantiles of the calibration photos' scores. The default
(chosen by `bench/bench_conditional.py`) nests the two: 10 bins of the entropy, each cut in 3 at quantiles of
the raw area of its own photos, so coverage holds within terciles of either score, and a diffuse answer spread
over small candidates is told apart from one spread over large ones. Finite-sample rule: every bin holds
at least `min_bin_count(levels)` photos (enough for the highest level to get a mass below 1.0, and at least
`MIN_BIN`): with fewer photos, fewer bins are cut, and a bin left short by tied scores is merged with its
smaller neighbour; so is a bin whose lowest level would need no mass (most of its truths lie in their photo's
densest candidate, which every region holds: its coverage cannot come down to the level); how many bins were given
up is recorded (`merged`) and reported.

Fit check: the calibration stores the quantiles of the scores it saw. A photo outside its 1st–99th
percentile, or a set of photos whose scores differ from it (two-sample Kolmogorov–Smirnov), is one the
guarantee may not cover: the callers say so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from geocore.errors import InputError

BIN_SCORES: tuple[str, ...] = ("log_area90", "entropy")
RESULT_COLUMNS = {"entropy": "entropy", "log_area90": "localizability"}  # where `evaluate`'s results keep each
DEFAULT_BIN_SCORE = "entropy"
DEFAULT_BINS = 10
DEFAULT_INNER_SCORE = "log_area90"  # each entropy bin cut again by the raw 90 % area of its photos
DEFAULT_INNER_BINS = 3
DEFAULT_BIN_SCORES = (DEFAULT_BIN_SCORE, DEFAULT_INNER_SCORE)  # what `geocore calibrate` bins on (nested)
MIN_BIN = 50
QUANTILES = tuple(np.round(np.linspace(0.0, 1.0, 101), 2).tolist())  # 0 %, 1 %, …, 100 %
SHIFT_ALPHA = 0.01  # a results set whose scores differ from the calibration's at this level gets the warning


def min_bin_count(levels: Sequence[float]) -> int:
    """The fewest photos a bin needs so that the highest level's mass is a real quantile (not 1.0):
    ⌈(n+1)p⌉ ≤ n ⇔ n ≥ p / (1 − p); never fewer than `MIN_BIN`."""
    p = max(levels)
    return max(MIN_BIN, math.ceil(p / (1.0 - p) - 1e-9))


def conformal_masses(scores: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """(L,) split-conformal masses: the ⌈(n+1)p⌉-th smallest score per level (1.0 past n), non-decreasing."""
    s = np.sort(np.asarray(scores, np.float64))
    k = np.ceil((s.size + 1) * np.asarray(levels, np.float64) - 1e-9).astype(int)  # tolerance: (n+1)p in floats
    out = np.where(k <= s.size, s[np.clip(k - 1, 0, max(s.size - 1, 0))] if s.size else 1.0, 1.0)
    return np.maximum.accumulate(out)


def _merge_at(edges: list[float], counts: list[int], i: int) -> tuple[list[float], list[int], int]:
    """Bin `i` merged into its smaller neighbour (needs two bins or more)."""
    j = i - 1 if i == len(counts) - 1 or (i > 0 and counts[i - 1] <= counts[i + 1]) else i + 1
    lo = min(i, j)
    counts[lo : lo + 2] = [counts[i] + counts[j]]
    del edges[lo]  # the edge between bins lo and lo + 1
    return edges, counts, 1


def _merge_small(edges: list[float], counts: list[int], need: int) -> tuple[list[float], list[int], int]:
    """Merge each bin under `need` photos into its smaller neighbour until none is left (or one bin remains)."""
    merged = 0
    while len(counts) > 1 and min(counts) < need:
        edges, counts, _ = _merge_at(edges, counts, int(np.argmin(counts)))
        merged += 1
    return edges, counts, merged


def _quantile_edges(scores: np.ndarray, n_bins: int) -> list[float]:
    """Edges near the k/n_bins quantiles, each halfway between two distinct scores so that tied scores (a
    binary score, a saturated area) always fall on one side; duplicates dropped."""
    u = np.unique(scores)
    if u.size < 2 or n_bins < 2:
        return []
    first = np.sort(scores)[np.minimum(scores.size - 1, np.round(scores.size * np.arange(1, n_bins) / n_bins)
                                       .astype(int))]  # the first score of each upper bin
    i = np.clip(np.searchsorted(u, first), 1, u.size - 1)  # the edge goes just below it (above the minimum)
    return np.unique((u[i - 1] + u[i]) / 2).tolist()


def bin_score_columns(table, names: Sequence[str] = DEFAULT_BIN_SCORES) -> np.ndarray:
    """(N,) or (N, k) bin scores from a results table's columns (`entropy`, `localizability` for log_area90);
    InputError naming a missing column."""
    columns = [RESULT_COLUMNS[n] for n in names]
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise InputError(f"results: the calibration bins on {', '.join(missing)}, a column these results lack "
                         "(re-run evaluate with this version of geocore)")
    values = table[columns].to_numpy(np.float64)
    return values[:, 0] if len(columns) == 1 else values


def score_matrix(score, n_scores: int) -> np.ndarray:
    """(B, n_scores) float scores from (B,) (one score) or (B, n_scores) (one column per score)."""
    s = np.asarray(score, np.float64)
    return s.reshape(-1, 1) if n_scores == 1 else s.reshape(-1, n_scores)


@dataclass(frozen=True)
class Bins:
    """Per-bin calibrated masses: bin b holds scores in [edges[b-1], edges[b]) (open at both ends).

    Nested (`inner_score` set): each of the B_o bins of `score` is cut again at its own `inner_edges[o]` of
    `inner_score`; `counts` and `masses` are then per leaf, outer bin by outer bin, and a photo's bin score is a
    row (its `score`, its `inner_score`)."""

    score: str
    edges: tuple[float, ...]  # B_o − 1 interior edges of `score`, increasing
    counts: tuple[int, ...]  # calibration photos per bin (per leaf when nested)
    masses: tuple[tuple[float, ...], ...]  # (B, L): per bin, the mass for each fitted level
    merged: int = 0  # bins merged by the minimum-count rule
    inner_score: str | None = None
    inner_edges: tuple[tuple[float, ...], ...] = ()  # per outer bin, the interior edges of `inner_score`

    @property
    def scores(self) -> tuple[str, ...]:
        """The scores a photo's bin is read from, in the order of its bin-score row."""
        return (self.score,) if self.inner_score is None else (self.score, self.inner_score)

    def _leaves(self) -> np.ndarray:
        """(B_o + 1,) first leaf of each outer bin (and the total)."""
        sizes = [len(e) + 1 for e in self.inner_edges] if self.inner_score else [1] * (len(self.edges) + 1)
        return np.concatenate([[0], np.cumsum(sizes)]).astype(int)

    def bin_of(self, score) -> np.ndarray:
        """(B,) bin index of each photo's score, (B,) or (B, 2) when nested (NaN scores, e.g. no region, go to the
        hardest bin)."""
        s = score_matrix(score, len(self.scores))
        outer = np.where(np.isnan(s[:, 0]), len(self.edges), np.searchsorted(self.edges, s[:, 0], side="right"))
        if self.inner_score is None:
            return outer
        first = self._leaves()
        inner = np.zeros(len(s), int)
        for o, edges in enumerate(self.inner_edges):
            sel = outer == o
            x = s[sel, 1]
            inner[sel] = np.where(np.isnan(x), len(edges), np.searchsorted(edges, x, side="right"))
        return first[outer] + inner

    def labels(self) -> list[str]:
        """A readable range per bin, e.g. "log_area90 < 3.2", "3.2 – 5.1", "≥ 5.1" (per leaf when nested)."""
        outer = _range_labels(self.score, self.edges)
        if self.inner_score is None:
            return outer
        return [f"{o}; {i}" for o, edges in zip(outer, self.inner_edges)
                for i in _range_labels(self.inner_score, edges)]

    def describe(self) -> str:
        """The bins in one phrase: "10 bins of entropy" or "24 bins: 10 of entropy, each cut by log_area90"."""
        outer = f"{len(self.edges) + 1} bin(s) of {self.score}"
        if self.inner_score is None:
            return outer
        if len(self.counts) == len(self.edges) + 1:
            return f"{outer}, too few photos to cut them by {self.inner_score}"
        return (f"{len(self.counts)} bins: {len(self.edges) + 1} of {self.score}, each cut in up to "
                f"{max(len(e) + 1 for e in self.inner_edges)} by {self.inner_score}")

    def to_dict(self) -> dict:
        out = {"score": self.score, "edges": list(self.edges), "counts": list(self.counts),
               "masses": [list(m) for m in self.masses], "merged": self.merged}
        if self.inner_score is not None:
            out |= {"inner_score": self.inner_score, "inner_edges": [list(e) for e in self.inner_edges]}
        return out

    @classmethod
    def from_dict(cls, data: object, source: str, n_levels: int) -> "Bins":
        """Validated bins from a calibration file's `bins` field; InputError naming `source` and the field."""
        where = f"{source}: field 'bins'"
        if not isinstance(data, dict):
            raise InputError(f"{where}: expected an object with score, edges, counts, masses")
        score, inner_score = data.get("score"), data.get("inner_score")
        if score not in BIN_SCORES or (inner_score is not None and inner_score not in BIN_SCORES):
            raise InputError(f"{where}.score: expected one of {', '.join(BIN_SCORES)}")
        try:
            edges = np.asarray(data.get("edges"), np.float64).reshape(-1)
            counts = np.asarray(data.get("counts"), np.int64).reshape(-1)
            masses = np.asarray(data.get("masses"), np.float64)
            merged = int(data.get("merged", 0))
            inner = [np.asarray(e, np.float64).reshape(-1) for e in (data.get("inner_edges") or [])]
        except (TypeError, ValueError, OverflowError):
            raise InputError(f"{where}: expected lists of numbers (edges, counts, masses)") from None
        for name, e in [("edges", edges), *(("inner_edges", e) for e in inner)]:
            if not np.isfinite(e).all() or (np.diff(e) <= 0).any():
                raise InputError(f"{where}.{name}: expected finite, increasing numbers")
        if inner_score is not None and len(inner) != edges.size + 1:
            raise InputError(f"{where}.inner_edges: expected one list of edges per bin of {score} ({edges.size + 1})")
        n_bins = sum(e.size + 1 for e in inner) if inner_score is not None else edges.size + 1
        if counts.size != n_bins or masses.shape != (n_bins, n_levels):
            raise InputError(f"{where}: expected {n_bins} counts and {n_bins} × {n_levels} masses for these edges")
        if (counts < 1).any() or not ((masses >= 0) & (masses <= 1)).all() or (np.diff(masses, axis=1) < 0).any():
            raise InputError(f"{where}: expected positive counts and masses in [0, 1] not decreasing with level")
        return cls(score=score, edges=tuple(edges.tolist()), counts=tuple(int(c) for c in counts),
                   masses=tuple(tuple(row) for row in masses.tolist()), merged=max(0, merged),
                   inner_score=inner_score, inner_edges=tuple(tuple(e.tolist()) for e in inner) if inner_score else ())


def _range_labels(score: str, e: Sequence[float]) -> list[str]:
    if not e:
        return ["all photos"]
    return [f"{score} < {e[0]:.3g}"] + [f"{a:.3g} – {b:.3g}" for a, b in zip(e, e[1:])] + [f"{score} ≥ {e[-1]:.3g}"]


def fit_bins(truth_mass, score, levels: Sequence[float], *, score_name: str = DEFAULT_BIN_SCORE,
             n_bins: int = DEFAULT_BINS, min_count: int | None = None, inner_score: str | None = None,
             n_inner: int = DEFAULT_INNER_BINS) -> Bins:
    """Mondrian calibration: bins at quantiles of `score`, split-conformal masses per bin at `levels`.

    `score` (N,) for one score; with `inner_score`, (N, 2) (`score_name`, then `inner_score`): each bin of the
    first is cut again in up to `n_inner` at quantiles of its own photos' second score, by the same rules."""
    tm = np.asarray(truth_mass, np.float64).ravel()
    n_scores = 1 if inner_score is None else 2
    s = np.asarray(score, np.float64)
    if s.size != tm.size * n_scores:
        raise InputError(f"bin scores: expected {n_scores} per calibration photo ({tm.size} photos), got {s.size}")
    for name in (score_name, inner_score or score_name):
        if name not in BIN_SCORES:
            raise InputError(f"bin score: expected one of {', '.join(BIN_SCORES)}, got {name!r}")
    if n_bins < 1 or n_inner < 1:
        raise InputError(f"bins: expected at least 1, got {min(n_bins, n_inner)}")
    s = score_matrix(s, n_scores)
    need = min_count or min_bin_count(levels)
    outer = _fit_1d(tm, s[:, 0], levels, score_name, n_bins, need)
    if inner_score is None:
        return outer
    which = outer.bin_of(s[:, 0])
    inner = [_fit_1d(tm[which == o], s[which == o, 1], levels, inner_score, n_inner, need)
             for o in range(len(outer.counts))]
    return Bins(score_name, outer.edges, tuple(c for b in inner for c in b.counts),
                tuple(m for b in inner for m in b.masses), outer.merged + sum(b.merged for b in inner),
                inner_score, tuple(b.edges for b in inner))


def _fit_1d(tm: np.ndarray, s: np.ndarray, levels: Sequence[float], score_name: str, n_bins: int, need: int) -> Bins:
    """One score's bins: as many as the photos allow (≥ `need` each), short bins merged, masses per bin."""
    finite = s[np.isfinite(s)]
    edges = _quantile_edges(finite, max(1, min(n_bins, finite.size // need)))  # as many bins as photos allow
    proto = Bins(score_name, tuple(edges), (1,) * (len(edges) + 1), ((0.0,),) * (len(edges) + 1))
    counts = np.bincount(proto.bin_of(s), minlength=len(edges) + 1).tolist()
    edges, counts, _ = _merge_small(edges, counts, need)  # ties can still leave a bin short
    while True:
        proto = Bins(score_name, tuple(edges), tuple(counts), ((0.0,),) * len(counts))
        which = proto.bin_of(s)
        masses = tuple(tuple(conformal_masses(tm[which == b], levels).tolist()) for b in range(len(counts)))
        # A bin whose lowest level needs no mass at all holds so many truths in its photos' densest candidate (a
        # score of 0, tied) that every region there covers more than that level: no region can be smaller than
        # one candidate. Such a bin joins its smaller neighbour, whose photos bring the quantile back to a level.
        tied = [b for b, m in enumerate(masses) if m[0] <= 0.0]
        if not tied or len(counts) < 2:
            break
        edges, counts, _ = _merge_at(edges, counts, tied[0])
    merged = n_bins - len(counts)
    return Bins(score_name, tuple(edges), tuple(int(c) for c in counts), masses, merged)


def score_quantiles(score) -> tuple[float, ...]:
    """The 0 %, 1 %, …, 100 % quantiles of the finite scores (what the fit check compares against)."""
    s = np.asarray(score, np.float64)
    s = s[np.isfinite(s)]
    return tuple(np.quantile(s, QUANTILES).tolist()) if s.size else ()


def outside_range(score, quantiles: Sequence[float]) -> np.ndarray:
    """(B,) True where a score lies outside the calibration's 1st–99th percentile (or is not finite)."""
    s = np.asarray(score, np.float64)
    if len(quantiles) != len(QUANTILES):
        return np.zeros(s.shape, bool)
    lo, hi = quantiles[1], quantiles[-2]
    return ~np.isfinite(s) | (s < lo) | (s > hi)


@dataclass(frozen=True)
class ShiftTest:
    """Two-sample Kolmogorov–Smirnov test of a results set's scores against the calibration's."""

    statistic: float
    p_value: float
    n: int

    @property
    def shifted(self) -> bool:
        return self.p_value < SHIFT_ALPHA


def shift_test(score, quantiles: Sequence[float], n_calibration: int) -> ShiftTest | None:
    """KS distance between the scores' empirical CDF and the calibration's (read off its stored quantiles,
    interpolated), with the asymptotic two-sample p-value for sizes (n, n_calibration). None when either
    side has no scores."""
    from scipy.stats import kstwobign

    s = np.sort(np.asarray(score, np.float64)[np.isfinite(np.asarray(score, np.float64))])
    if s.size == 0 or len(quantiles) != len(QUANTILES) or n_calibration < 1:
        return None
    q = np.asarray(quantiles, np.float64)
    qs = np.unique(q)  # repeated quantiles (ties): the CDF jumps there, to the last level sharing the value
    cdf = np.asarray(QUANTILES)[np.searchsorted(q, qs, side="right") - 1]
    cal = np.interp(s, qs, cdf, left=0.0, right=1.0)
    n = s.size
    ecdf_hi = np.arange(1, n + 1) / n  # the scores' CDF just after each point
    ecdf_lo = np.arange(0, n) / n  # … and just before it
    d = float(max(np.max(np.abs(ecdf_hi - cal)), np.max(np.abs(ecdf_lo - cal))))
    en = math.sqrt(n * n_calibration / (n + n_calibration))
    return ShiftTest(statistic=d, p_value=float(kstwobign.sf(en * d)), n=n)
