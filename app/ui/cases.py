"""Cases on the Locate page: photos of one place (the joint answer), a claimed location checked against each
answer, and video clips (frames, the per-frame track, the clip's joint answer). The library computes
(`geocore.cases`); this lays it out. Names from outside (file names, places) are shown as text."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from pathlib import PurePath
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from geocore.errors import GeocoreError
from geocore.present import pct, place_label, region_label
from geocore.models.base import GeoLocator

from ui.maps import prediction_map, show_remembered_map
from ui.page import md_text, session_memo, show_error
from ui.search_regions import region_table
from ui.photo_answer import topk_display

VIDEO_TYPES = ("mp4", "mov", "webm", "mkv")
CASE_MEMO = "_case_memo"  # session state: (results key, {what: answer}) of the latest results only
SAME_PLACE_FLAG = "may not be the same place"


def is_video(name: str) -> bool:
    """Whether an upload's name says it is a video clip (MP4, MOV, WebM, MKV)."""
    return PurePath(name).suffix.lower().lstrip(".") in VIDEO_TYPES


def remembered(group: Hashable, what: Hashable, make: Callable[[], Any]) -> Any:
    """`make()` kept in this session under `what` while `group` (the results' key) stays the same, so a rerun
    that changes nothing (the level toggle, preparing the report) does not compute it again. A GeocoreError is
    one notice and None (not kept)."""
    memo = session_memo(CASE_MEMO, group)
    if what not in memo:
        try:
            memo[what] = make()
        except GeocoreError as err:
            show_error(err)
            return None
    return memo[what]


# --- a claimed location ---------------------------------------------------------------------------------------

def claim_controls(key: str = "claim") -> tuple[float, float, str] | None:
    """Sidebar: "Claimed location" (a name or lat,lon), resolved offline (`geocore.cases.claims.resolve_claim`);
    an unknown or ambiguous name is one line. Returns (lat, lon, label) or None."""
    from geocore.cases.claims import resolve_claim

    text = st.sidebar.text_input("Claimed location (optional)", key=key,
                                 placeholder="e.g. Kharkiv, Ukraine or 49.99,36.23",
                                 help="Checked against each answer: inside the 50 % / 90 % regions, km from the "
                                      "top-1 and, with a calibration, a p-value.").strip()
    if not text:
        return None
    try:
        return resolve_claim(text)
    except GeocoreError as err:
        show_error(err, where=st.sidebar)
        return None


def show_claim(answer, claim: tuple[float, float, str], net: GeoLocator, calibration, what: str) -> None:
    """The claim's verdict on `answer` (a LocateResult or JointResult) in one sentence, as text."""
    from geocore.cases.claims import check_resolved_claim

    try:
        check = check_resolved_claim(answer, claim, net, calibration)
    except GeocoreError as err:
        show_error(err)
        return
    st.info(md_text(f"Claimed location, against {what}: {check.verdict}."), icon="⚖️")


# --- a joint answer (photos of one place, a clip's segments) ---------------------------------------------------

def parts_display(photos: pd.DataFrame, unit: str = "photo") -> pd.DataFrame:
    """A joint answer's per-photo rows as users read them: its own top-1, km from the joint top-1, how many times
    smaller the joint 90 % region is thanks to it, and the "may not be the same place" flag."""
    narrowing = photos["narrowing"].to_numpy(np.float64)
    return pd.DataFrame({
        unit: photos["name"].astype(str),
        "own top-1 (lat, lon)": [f"{a:.4f}, {b:.4f}" for a, b in zip(photos["lat"], photos["lon"])],
        "km from the joint top-1": [f"{k:,.1f}" for k in photos["km_from_joint"]],
        "narrowing (×)": ["—" if not np.isfinite(x) else f"{x:,.2f}" for x in narrowing],
        "conflict": [SAME_PLACE_FLAG if c else "—" for c in photos["conflict"]],
    })


def render_joint(joint, *, title: str, level: float, memo: tuple, unit: str = "photo", track=None) -> None:
    """A joint answer: the map of its distribution with the `level` region (and a video's `track`), its regions,
    top-k and per-part table (narrowing, conflict), and the parts that may show another place."""
    st.subheader(title)
    left, right = st.columns([1, 2])
    with right:  # the map first, as for each photo
        def build():
            return prediction_map(joint.prediction, joint.table, region=joint.region(level), track=track)

        show_remembered_map(memo[0], (memo[1], level), build)
        st.caption(f"Shading: the joint probability (tempered product, t = {joint.temperature:.2f}). Outlined: its "
                   f"{pct(level)} search region. Dots: top-k." + (" Orange: the per-frame top-1 track."
                                                                   if track is not None else ""))
        if joint.regions:
            st.table(region_table(SimpleNamespace(regions=joint.regions, exif_gps=None), drawn=level),
                     hide_index=True, border="horizontal")
        if joint.calibration_note:  # e.g. a calibration fitted on single photos, used on a joint answer
            note = joint.calibration_note
            st.warning(md_text(note[:1].upper() + note[1:] + "."), icon="⚠️")
    with left:
        st.table(topk_display(joint.table), hide_index=True, border="horizontal")
    st.table(parts_display(joint.photos, unit), hide_index=True, border="horizontal")
    if joint.conflicts:
        st.warning(md_text(f"{SAME_PLACE_FLAG.capitalize()}: " + ", ".join(joint.conflicts)
                           + f" (its own 90 % region misses the top-1 of the other {unit}s)."), icon="⚠️")
    for name, error in joint.skipped:
        st.caption(md_text(f"Left out: {name} ({error})"))


# --- video -----------------------------------------------------------------------------------------------------

def frames_display(frames: pd.DataFrame) -> pd.DataFrame:
    """A clip's kept frames as users read them: time, segment (from 1), top-1 place and country, localizability
    (log10 of the 90 % region's km²: smaller is more localizable)."""
    return pd.DataFrame({
        "time (s)": frames["time_s"].round(2),
        "segment": frames["segment"].astype(int) + 1,
        "top-1 place": [f"{place_label(p)}, {region_label(c)}" for p, c in zip(frames["place"], frames["country"])],
        "localizability (log10 km²)": frames["localizability"].round(2),
    })


def locate_clips(net: GeoLocator, clips: list[tuple[str, bytes]], **options) -> tuple[list, list[tuple[str, str]]]:
    """`locate_video` on each clip's bytes (in memory): the located clips, and (name, one-line error) of those
    that could not be read (the others are still located)."""
    from geocore.cases.clip import locate_video

    done, errors = [], []
    for name, data in clips:
        try:
            done.append(locate_video(net, data, name=name, **options))
        except GeocoreError as err:
            errors.append((name, str(err)))
    return done, errors


def render_video(video, *, level: float, memo: tuple) -> None:
    """A located clip: its joint answer over the segments with the per-frame top-1 track on the map, then the
    kept frames' table."""
    st.subheader(md_text(video.name))
    st.write(f"{len(video.frames)} frame(s) kept, {len(video.segments)} segment(s).")
    render_joint(video.clip, title="The whole clip", level=level, memo=memo, unit="segment", track=video.track)
    st.table(frames_display(video.frames), hide_index=True, border="horizontal")
