"""Search regions in the app: which level to draw, an uploaded calibration (parsed in memory), and each photo's
regions as a compact table (area, separate areas, countries, calibrated or not)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import partial

import pandas as pd
import streamlit as st

from geocore.errors import GeocoreError, InputError
from geocore.locate import LocateResult
from geocore.models.base import GeoLocator
from geocore.present import NOT_CALIBRATED, REGION_STYLES as STYLES, km2 as km2_with_unit, pct, region_countries
from geocore.uncertainty.calibration import Calibration

from ui.page import md_text, session_memo, show_error

LEVELS: tuple[float, ...] = (0.5, 0.9)  # the regions every located photo carries
LEVEL_CHOICES = {"50 %": 0.5, "90 %": 0.9}
CALIBRATION_SEAM = "_test_calibration"  # test seam: tests put (name, bytes) here
# drawn over the heatmap in the colours of `geocore.present` (the report's): 50 % solid, 90 % dashed
REGION_STYLES = {lv: {"color": s.colour, "dashArray": s.dash} for lv, s in zip(LEVELS, STYLES)}
REGION_CLASS = "geocore-region"  # the SVG paths' class on the Leaflet map
km2 = partial(km2_with_unit, unit=False)  # for a column headed "(km²)": "12,345"


def calibration_text(region) -> str:
    """Always says which: calibrated (and the probability mass that takes), or raw probability mass."""
    if region.calibrated:
        return f"calibrated (holds {100 * region.mass:.1f} % of the probability)"
    return NOT_CALIBRATED


def region_table(res: LocateResult, drawn: float | None = None) -> pd.DataFrame:
    """One row per level: region, area km², separate areas, countries touched, calibration (and whether the
    EXIF GPS lies inside, when the photo has it; which one is on the map)."""
    rows = []
    for reg in res.regions:
        row = {"region": pct(reg.level) + (" (on the map)" if drawn is not None and abs(reg.level - drawn) < 1e-9
                                            else ""),
               "area (km²)": km2(reg.area_km2), "separate areas": int(reg.n_areas),
               "calibration": calibration_text(reg)}
        if res.exif_gps is not None:
            inside = res.exif_in_region(reg.level)
            row["EXIF GPS inside"] = "—" if inside is None else ("yes" if inside else "no")
        row["countries"] = region_countries(reg)
        rows.append(row)
    return pd.DataFrame(rows)


def level_control(key: str = "region_level") -> float:
    """Sidebar: which search region the maps draw (default 90 %)."""
    label = st.sidebar.radio("Draw the region holding", list(LEVEL_CHOICES), index=1, horizontal=True, key=key,
                             help="The smallest area holding this share of the probability: where to search first.")
    return LEVEL_CHOICES[label]


@dataclass(frozen=True)
class UploadedCalibration:
    """A calibration file read from an upload: the calibration (None when unreadable), its digest, the error."""

    calibration: Calibration | None = None
    digest: str | None = None
    error: str | None = None


def parse_calibration(name: str, data: bytes) -> Calibration:
    """A calibration file's bytes (an upload, never written to disk) → Calibration; InputError in one line (also
    for what the reader lets through as a ValueError, e.g. an integer of more digits than Python converts)."""
    try:
        return Calibration.from_bytes(data, name)
    except InputError:
        raise
    except ValueError as err:
        raise InputError(f"{name}: not a calibration file ({err})") from None


def calibration_upload(key: str, where=None) -> UploadedCalibration:
    """An optional calibration file (JSON from `geocore calibrate`), parsed in memory, with its status; in the
    sidebar unless `where` (a container) is given."""
    where = st.sidebar if where is None else where
    up = where.file_uploader("Calibration (optional, JSON from `geocore calibrate`)", type=["json"], key=key,
                                  help="Makes the regions cover the truth as often as they say, measured on "
                                       "held-out photos of the same model and gallery.")
    seam = st.session_state.get(CALIBRATION_SEAM)
    source = (up.name, up.getvalue()) if up is not None else (tuple(seam) if seam else None)
    if source is None:
        where.caption("No calibration: the regions hold the model's raw probability mass.")
        return UploadedCalibration()
    name, data = source
    digest = hashlib.sha256(data).hexdigest()
    try:
        cal = parse_calibration(name, data)
    except InputError as err:
        show_error(err, where=where)
        return UploadedCalibration(None, digest, str(err))
    what = "photos" if not cal.on_sets else f"photo sets ({cal.kind}: for joint answers)"
    where.success(f"Calibrated on {cal.n:,} {what} of {md_text(cal.model)}.")
    return UploadedCalibration(cal, digest)


def candidates_fingerprint(model: GeoLocator, key) -> tuple[str | None, str | None]:
    """(fingerprint of the candidates' areas, None), or (None, why `model`'s candidates have no areas, e.g. a
    gallery of fewer than 4 points): search regions need them. Remembered in the session per `key` (the model
    and its gallery choice), since cell areas can take a moment to build."""
    memo = session_memo("_candidates_fingerprint", key)
    if "out" not in memo:
        try:
            memo["out"] = (model.candidate_cells().fingerprint, None)
        except GeocoreError as err:
            memo["out"] = (None, str(err))
    return memo["out"]


def usable_calibration(up: UploadedCalibration, model: GeoLocator, fingerprint: str | None,
                       levels=LEVELS) -> Calibration | None:
    """The uploaded calibration when it fits `model` (its name and candidates' `fingerprint`) and covers
    `levels`; otherwise a one-line notice where it is called (the Locate page: above the answers) and None (the
    regions are then shown uncalibrated)."""
    cal = up.calibration
    if cal is None:
        return None
    if fingerprint is None:
        st.error("Calibration not used: these candidates have no search regions.")
        return None
    try:
        cal.check_compatible(model.model_name, fingerprint)
        for level in levels:
            cal.mass_for(level)
    except GeocoreError as err:
        show_error(err, prefix="Calibration not used: ")
        return None
    return cal
