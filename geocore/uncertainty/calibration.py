"""Split conformal calibration of search regions: which mass q gives regions that cover the truth p of the time.

A model's probabilities are rarely calibrated: a region holding 90 % of an over-confident model's mass
covers the truth far less than 90 % of the time. Given the nonconformity scores s_i = `truth_mass` of n
held-out images (the mass of the smallest HPD region containing the truth), the calibrated mass for level p
is q̂(p) = the ⌈(n+1)p⌉-th smallest s_i (1.0 when ⌈(n+1)p⌉ > n). For a new image exchangeable with the
calibration images, P(truth_mass ≤ q̂(p)) ≥ p, and the HPD region at mass q̂(p) contains the truth exactly
when truth_mass ≤ q̂(p): marginal coverage ≥ p, and < p + 1/(n+1) without ties. (Ties push it up: when more
than a share p of the truths lie in their image's densest candidate, q̂ = 0 and the region is that candidate.
A truth in no candidate's area scores 1.0; q̂ = 1.0, "everything", counts it as covered though no region
holds it; the default cap radius keeps such truths near 1 %, well below 1 − p for the usual levels.)

`mass_for(p)` is exact at fitted levels; between two fitted levels it interpolates linearly (monotone;
coverage lies between the two levels' guarantees). A level outside the fitted range is refused rather than
extrapolated: below it no guarantee is known, above it the only safe mass would be 1.0 (everything).

A calibration belongs to one model on one candidate set (gallery or partition, and the areas given to
them): it records the model name and the candidates' `fingerprint`, and refuses others. It also records what kind
of answer it was fitted on (`photos_per_set`): single photos, (1, 1), or the joint answers of labelled photo sets
(`geocore.cases.set_calibration`; the smallest and largest set). The guarantee holds for answers of that kind:
`note_for(n)` says, for an answer joining n photos, when it was fitted on another (a single-photo calibration on
a joint answer covered 82–90 % at the 90 % level on stand-ins with look-alikes: bench/RESULTS.md, "Cases").
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from geocore.data.safe_io import read_limited, write_text_atomic
from geocore.errors import InputError
from geocore.uncertainty.conditional import (DEFAULT_BIN_SCORES, DEFAULT_BINS, DEFAULT_INNER_BINS, Bins, fit_bins,
                                             outside_range, score_quantiles)
from geocore.geo.tables import shorten
from geocore.tensors import as_numpy

FORMAT = "geocore-calibration"
SCORE = "hpd-truth-mass"
DEFAULT_LEVELS: tuple[float, ...] = (0.5, 0.8, 0.9, 0.95)
_FIELDS = ("model", "fingerprint", "n", "levels", "masses", "created", "version")
MAX_LEVELS = 10  # each level is a region to draw and write: 100 levels made a 55 MB GeoJSON in 88 s
MAX_CALIBRATION_BYTES = 1 << 20  # a calibration of MAX_LEVELS levels is under 1 KB
SINGLE_PHOTOS = (1, 1)  # `photos_per_set` of a calibration fitted on single photos (and of files without the field)
SINGLE_ON_JOINT = ("calibrated on single photos: coverage of a joint answer may be lower; fit one on photo sets "
                   "(geocore calibrate --sets)")
_EXPECTED = "a calibration file (JSON written by `geocore calibrate`)"
_MAX_DIGITS = sys.get_int_max_str_digits() or 4300  # Python's own limit for int("…")


class _HugeInteger:
    """A JSON integer too long to convert (refused by the field checks, which name the field)."""

    def __init__(self, digits: str) -> None:
        self.n_digits = len(digits.lstrip("-"))

    def __repr__(self) -> str:
        return f"an integer of {self.n_digits:,} digits"


def _parse_int(digits: str) -> int | _HugeInteger:
    return int(digits) if len(digits) <= _MAX_DIGITS else _HugeInteger(digits)


class Levels(tuple):
    """Coverage levels already checked by `validate_levels` (sorted, unique, in (0, 1)): passed on as they are."""


def validate_levels(levels, source: str = "levels") -> Levels:
    """Coverage levels as sorted unique floats in (0, 1), at most MAX_LEVELS; accepts "0.5,0.9", a number or a
    sequence. InputError naming `source` (the option or field) for anything else, an empty item included.
    Levels this returned are not parsed again (a request's levels are checked once, at the boundary)."""
    if isinstance(levels, Levels):
        return levels
    return parse_levels(levels, source)


def parse_levels(levels, source: str = "levels") -> Levels:
    """The parsing and checks of `validate_levels`, every time."""
    items = levels.split(",") if isinstance(levels, str) else np.atleast_1d(np.asarray(levels, dtype=object)).tolist()
    out = []
    for item in items:
        try:
            value = float(item.strip() if isinstance(item, str) else item)
        except (TypeError, ValueError):
            raise InputError(f"{source}: {item!r} is not a number; expected fractions such as 0.5,0.9") from None
        if not 0.0 < value < 1.0:  # also rejects NaN
            hint = f" (write {value / 100:g} for {value:g} %)" if 1.0 < value < 100.0 else ""
            raise InputError(f"{source}: level {value:g} is outside (0, 1); expected fractions such as 0.5,0.9{hint}")
        out.append(value)
    if not out:
        raise InputError(f"{source}: no levels given; expected fractions such as 0.5,0.9")
    if len(set(out)) > MAX_LEVELS:
        raise InputError(f"{source}: {len(set(out))} levels; at most {MAX_LEVELS} (each is a region to compute)")
    return Levels(sorted(set(out)))


def _version() -> str:
    from geocore import __version__

    return __version__


@dataclass(frozen=True)
class Calibration:
    """Calibrated masses per nominal level for one model and candidate set."""

    model: str
    fingerprint: str
    n: int
    levels: tuple[float, ...]
    masses: tuple[float, ...]
    created: str
    version: str
    score: str = SCORE
    bins: Bins | None = None  # Mondrian: masses per bin of localizability (None: one mass per level, marginal)
    localizability: tuple[float, ...] = ()  # quantiles 0..100 % of the calibration photos' raw localizability
    truth_masses: tuple[float, ...] = ()  # each calibration photo's score (exact claim p-values); () when too many
    photo_bins: tuple[int, ...] = ()  # each calibration photo's bin (Mondrian), parallel to truth_masses
    refs: str = ""  # the fingerprint of the reference set the photos were located with ("" : none)
    photos_per_set: tuple[int, int] = SINGLE_PHOTOS  # fitted on answers of this many photos (min, max); (1, 1): single

    @property
    def on_sets(self) -> bool:
        """Fitted on the joint answers of photo sets (not on single photos)."""
        return tuple(self.photos_per_set) != SINGLE_PHOTOS

    @property
    def kind(self) -> str:
        """What it was fitted on, in words: "single photos", "sets of 3 photos", "sets of 2–5 photos"."""
        lo, hi = self.photos_per_set
        if not self.on_sets:
            return "single photos"
        return f"sets of {lo} photos" if lo == hi else f"sets of {lo}–{hi} photos"

    def note_for(self, n_photos: int) -> str:
        """"" when this calibration was fitted on answers like one joining `n_photos` photos (1: a single photo);
        else the sentence to show beside its regions (they are still drawn, at this calibration's masses)."""
        lo, hi = self.photos_per_set
        n = int(n_photos)
        if lo <= n <= hi:
            return ""
        if not self.on_sets:
            return SINGLE_ON_JOINT
        if n == 1:
            return (f"calibrated on photo sets ({self.kind}): coverage of a single photo's regions may differ; fit "
                    "one on single photos (geocore calibrate --results)")
        return (f"calibrated on {self.kind}, and this answer joins {n}: coverage may differ; fit one on sets of "
                "this size (geocore calibrate --sets)")

    def check_references(self, fingerprint: str) -> None:
        """InputError unless this calibration was fitted with the reference set `fingerprint` ("" : none):
        references change the distribution, so its masses hold only for the same set."""
        if fingerprint != self.refs:
            fitted = f"with reference set {self.refs}" if self.refs else "without reference photos"
            used = f"with reference set {fingerprint}" if fingerprint else "without reference photos"
            raise InputError(f"calibration for model '{self.model}' was fitted {fitted}, but these photos are located "
                             f"{used}; fit a calibration on results located the same way (evaluate --refs)")

    def scores_like(self, bin_score: float | None = None) -> np.ndarray | None:
        """The calibration photos' scores a new photo is compared with: those of its own bin (Mondrian, from its
        `bin_score`), else all; None when the file does not keep them."""
        if not self.truth_masses:
            return None
        scores = np.asarray(self.truth_masses, np.float64)
        if self.bins is None or bin_score is None or len(self.photo_bins) != scores.size:
            return scores
        return scores[np.asarray(self.photo_bins) == int(self.bins.bin_of(bin_score)[0])]

    @property
    def method(self) -> str:
        """"mondrian" (coverage within bins of localizability) or "marginal" (on average over photos)."""
        return "mondrian" if self.bins is not None else "marginal"

    def masses_for(self, levels, bin_score=None) -> np.ndarray:
        """Masses for `levels`: (L,) for a marginal calibration; (B, L), one row per photo, for a Mondrian one,
        from each photo's bin scores (`self.bins.scores` of its distribution:
        `geocore.uncertainty.regions.bin_scores`)."""
        levels = validate_levels(levels, "levels")
        shared = np.asarray([self.mass_for(p) for p in levels], np.float64)
        if self.bins is None or bin_score is None:
            return shared
        per_bin = np.asarray(self.bins.masses, np.float64)  # (K, fitted L)
        table = np.stack([[np.interp(p, self.levels, row) for p in levels] for row in per_bin])  # (K, L)
        return table[self.bins.bin_of(bin_score)]

    def outside(self, localizability) -> np.ndarray:
        """(B,) True where a photo's raw localizability lies outside the 1st–99th percentile this calibration
        saw: its coverage may not hold there. All False for files without the quantiles."""
        return outside_range(localizability, self.localizability)

    def mass_for(self, level: float) -> float:
        """The mass to use for nominal `level` (exact at fitted levels, interpolated between them)."""
        p = float(level)
        if not 0.0 < p < 1.0:  # also rejects NaN
            raise InputError(f"level {level!r} is outside (0, 1); expected a fraction such as 0.9")
        lo, hi = self.levels[0], self.levels[-1]
        if p < lo - 1e-12 or p > hi + 1e-12:
            raise InputError(f"level {p:g} is outside the calibrated levels {lo:g}..{hi:g} of the calibration "
                             f"for model '{self.model}'; fit a calibration that includes it")
        return float(np.interp(p, self.levels, self.masses))

    def check_compatible(self, model_name: str, fingerprint: str) -> None:
        """InputError unless this calibration was fitted for `model_name` on the candidates `fingerprint`."""
        if model_name != self.model:
            raise InputError(f"calibration was fitted for model '{self.model}', not '{model_name}'; "
                             f"fit a calibration for '{model_name}'")
        if fingerprint != self.fingerprint:
            raise InputError(f"calibration for model '{self.model}' was fitted on candidates {self.fingerprint}, "
                             f"not {fingerprint}; fit a calibration for this gallery or partition")

    def to_dict(self) -> dict:
        out = {"format": FORMAT, **asdict(self), "levels": list(self.levels), "masses": list(self.masses),
               "method": self.method, "localizability": list(self.localizability),
               "photos_per_set": list(self.photos_per_set)}
        out["bins"] = self.bins.to_dict() if self.bins is not None else None
        return out

    def save(self, path: str | Path) -> Path:
        """Write as JSON atomically (temporary file in the same folder, then os.replace)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(self.to_dict(), indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Calibration":
        """Read and validate a calibration file (at most MAX_CALIBRATION_BYTES); InputError names the file and
        the field on any problem."""
        return cls.from_bytes(read_limited(path, _EXPECTED, MAX_CALIBRATION_BYTES), str(path))

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "calibration") -> "Calibration":
        """A calibration from a file's bytes (e.g. an upload, kept in memory); InputError naming `source` and the
        field on any problem."""
        if len(data) > MAX_CALIBRATION_BYTES:
            raise InputError(f"{source}: {len(data):,} bytes, over the {MAX_CALIBRATION_BYTES:,} allowed for "
                             f"{_EXPECTED}")
        try:
            obj = json.loads(data.decode("utf-8"), parse_int=_parse_int)
        except RecursionError:
            raise InputError(f"{source}: not a calibration file (JSON nested too deeply); expected JSON written by "
                             "geocore") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            where = f"{err.msg} at line {err.lineno}" if isinstance(err, json.JSONDecodeError) else "not UTF-8 text"
            raise InputError(f"{source}: not a calibration file ({where}); expected JSON written by geocore") from None
        if not isinstance(obj, dict):
            raise InputError(f"{source}: expected a JSON object with fields {', '.join(_FIELDS)}")
        return cls(**_parse(obj, source))


def _field(data: dict, source: str, name: str, kind, expected: str):
    if name not in data:
        raise InputError(f"{source}: field '{name}' is missing; expected {expected}")
    value = data[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise InputError(f"{source}: field '{name}': expected {expected}, got {shorten(value)}")
    return value


def _numbers(data: dict, source: str, name: str) -> list[float]:
    values = _field(data, source, name, list, "a list of numbers")
    if not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise InputError(f"{source}: field '{name}': expected a non-empty list of numbers, got {shorten(values)}")
    try:
        return [float(v) for v in values]
    except OverflowError:
        raise InputError(f"{source}: field '{name}': a number too large for a float") from None


def _parse(data: dict, source: str) -> dict:
    if data.get("format", FORMAT) != FORMAT:
        raise InputError(f"{source}: field 'format': expected '{FORMAT}', got {shorten(data['format'])}")
    if data.get("score", SCORE) != SCORE:
        raise InputError(f"{source}: field 'score': expected '{SCORE}', got {shorten(data['score'])}")
    out = {name: _field(data, source, name, str, "a string") for name in ("model", "fingerprint", "created", "version")}
    out["n"] = _field(data, source, "n", int, "a positive integer (calibration images)")
    if out["n"] < 1:
        raise InputError(f"{source}: field 'n': expected a positive integer (calibration images), got {out['n']}")
    levels, masses = _numbers(data, source, "levels"), _numbers(data, source, "masses")
    if tuple(levels) != tuple(parse_levels(levels, f"{source}: field 'levels'")):
        raise InputError(f"{source}: field 'levels': expected increasing levels without repeats, got {shorten(levels)}")
    if len(masses) != len(levels):
        raise InputError(f"{source}: field 'masses': expected one mass per level ({len(levels)}), got {len(masses)}")
    bad = [m for m in masses if not 0.0 <= m <= 1.0]
    if bad:
        raise InputError(f"{source}: field 'masses': expected values in [0, 1], got {bad[0]}")
    if any(b < a for a, b in zip(masses, masses[1:])):
        raise InputError(f"{source}: field 'masses': expected masses that do not decrease as levels grow, got {shorten(masses)}")
    out.update(levels=tuple(levels), masses=tuple(masses))
    if data.get("bins") is not None:  # files written before Mondrian calibration have none: marginal
        out["bins"] = Bins.from_dict(data["bins"], source, len(levels))
    if data.get("refs"):
        out["refs"] = _field(data, source, "refs", str, "the fingerprint of a reference set")
    kept = data.get("truth_masses") or []
    if kept:
        scores = _numbers(data, source, "truth_masses")
        if len(scores) != out["n"] or not all(0.0 <= v <= 1.0 for v in scores):
            raise InputError(f"{source}: field 'truth_masses': expected {out['n']} scores in [0, 1]")
        out["truth_masses"] = tuple(scores)
        if data.get("photo_bins"):
            which = _numbers(data, source, "photo_bins")
            n_bins = len(out["bins"].counts) if "bins" in out else 1
            if len(which) != len(scores) or not all(v == int(v) and 0 <= v < n_bins for v in which):
                raise InputError(f"{source}: field 'photo_bins': expected one bin index in 0..{n_bins - 1} per photo")
            out["photo_bins"] = tuple(int(v) for v in which)
    quantiles = data.get("localizability") or []
    if quantiles:
        q = _numbers(data, source, "localizability")
        if len(q) != 101 or any(b < a for a, b in zip(q, q[1:])):
            raise InputError(f"{source}: field 'localizability': expected 101 non-decreasing quantiles")
        out["localizability"] = tuple(q)
    if data.get("photos_per_set") is not None:  # files written before set calibrations: single photos
        out["photos_per_set"] = _photos_per_set(data["photos_per_set"], source)
    return out


def _photos_per_set(value, source: str) -> tuple[int, int]:
    ok = (isinstance(value, list) and len(value) == 2
          and all(isinstance(v, int) and not isinstance(v, bool) for v in value) and 1 <= value[0] <= value[1])
    if not ok:
        raise InputError(f"{source}: field 'photos_per_set': expected [smallest, largest] photos per set, two "
                         f"integers with 1 ≤ smallest ≤ largest, got {shorten(value)}")
    return int(value[0]), int(value[1])


def conformal_mass(scores: np.ndarray, level: float) -> float:
    """The ⌈(n+1)p⌉-th smallest score (1.0 when that exceeds n): split conformal quantile."""
    s = np.sort(np.asarray(scores, np.float64))
    k = math.ceil((s.size + 1) * level - 1e-9)  # tolerance: (n+1)p computed in floating point
    return float(s[k - 1]) if k <= s.size else 1.0


def fit_calibration(truth_mass, levels=DEFAULT_LEVELS, *, model: str, fingerprint,
                    created: str | None = None, bin_score=None, localizability=None,
                    n_bins: int = DEFAULT_BINS, bin_score_names: Sequence[str] | None = None,
                    n_inner: int = DEFAULT_INNER_BINS, refs: str = "",
                    photos_per_set: tuple[int, int] = SINGLE_PHOTOS) -> Calibration:
    """Calibrate masses on held-out truth masses (N,) (see `regions.truth_mass`).

    `fingerprint`: the candidates' fingerprint, or the `CandidateCells` themselves. With `bin_score` the
    calibration is Mondrian (`geocore.uncertainty.conditional`): (N,) one score per photo (`bin_score_names`,
    entropy by default) cut in `n_bins`, or (N, 2) two (default: entropy, then the raw 90 % area) nested, each
    of the `n_bins` bins of the first cut in up to `n_inner` by the second; `localizability` (N,) (raw log10 km²
    of the 90 % region) is kept as quantiles for the fit check. `photos_per_set`: (smallest, largest) set when
    the scores are those of the joint answers of photo sets (`geocore.cases.set_calibration`); (1, 1) for single
    photos.
    """
    scores = as_numpy(truth_mass, np.float64).ravel()
    if scores.size == 0:
        raise InputError("truth_mass: no calibration images; expected at least one score")
    if not np.isfinite(scores).all() or (scores < 0).any() or (scores > 1 + 1e-6).any():
        raise InputError("truth_mass: expected scores in [0, 1] (the mass of the HPD region holding the truth)")
    scores = np.minimum(scores, 1.0)
    levels = validate_levels(levels)
    fingerprint = getattr(fingerprint, "fingerprint", fingerprint)
    masses = np.maximum.accumulate([conformal_mass(scores, p) for p in levels])
    bins = None
    if bin_score is not None:
        columns = 1 if np.ndim(bin_score) == 1 else int(np.shape(bin_score)[1])
        names = tuple(bin_score_names or DEFAULT_BIN_SCORES[:columns])
        bins = fit_bins(scores, bin_score, levels, score_name=names[0], n_bins=n_bins,
                        inner_score=names[1] if len(names) > 1 else None, n_inner=n_inner)
    return Calibration(model=str(model), fingerprint=str(fingerprint), n=int(scores.size), levels=levels,
                       masses=tuple(float(m) for m in masses),
                       created=created or datetime.now(timezone.utc).isoformat(timespec="seconds"),
                       version=_version(), bins=bins,
                       localizability=() if localizability is None else score_quantiles(localizability),
                       refs=str(refs or ""), photos_per_set=_photos_per_set([int(v) for v in photos_per_set], "photos_per_set"),
                       **_kept_scores(scores, bins, bin_score))


MAX_KEPT_SCORES = 50_000  # each photo's score kept for exact p-values while the file stays well under 1 MiB


def _kept_scores(scores: np.ndarray, bins: Bins | None, bin_score) -> dict:
    """The calibration photos' scores (rounded to 1e-6) and bins, when there are few enough to keep."""
    if scores.size > MAX_KEPT_SCORES:
        return {}
    kept = {"truth_masses": tuple(np.round(scores, 6).tolist())}
    if bins is not None:
        kept["photo_bins"] = tuple(int(b) for b in bins.bin_of(bin_score))
    return kept
