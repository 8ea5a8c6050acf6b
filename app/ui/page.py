"""Page frame: configuration, error notices and the responsible-use text every page can show."""

from __future__ import annotations

import streamlit as st

RESPONSIBLE_USE = (
    "**Responsible use.** Locating someone else's private photos can endanger people (stalking, "
    "doxxing). The authors of GeoEstimation withdrew their public demo for this reason. Use this on "
    "your own photos or public benchmarks. Photos are processed in memory only: they are never "
    "written to disk or logged."
)


def setup_page(title: str, icon: str = "🌍") -> None:
    """Title, icon and wide layout; the first Streamlit call of every page."""
    st.set_page_config(page_title=f"{title} · geocore", page_icon=icon, layout="wide")


def show_error(err: BaseException) -> None:
    """A user-fixable error as one notice (never a traceback)."""
    st.error(str(err))


def show_unavailable(what: str, err: BaseException) -> None:
    """A notice that an optional piece (`what`) cannot be shown: not installed, or its weights are absent
    (a WeightsMissingError's message names the command that gets them)."""
    if isinstance(err, ImportError):
        st.info(f"{what} is not available in this installation ({err.name or err}).", icon="ℹ️")
    else:
        st.info(f"{what} is not available: {err}", icon="ℹ️")
