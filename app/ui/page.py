"""Page frame: configuration, error notices and the responsible-use text every page can show."""

from __future__ import annotations

import functools
from collections.abc import Hashable

import streamlit as st

from geocore.data.text import markdown_text
from geocore.errors import WeightsMissingError

RESPONSIBLE_USE = (
    "**Responsible use.** Locating someone else's private photos can endanger people (stalking, "
    "doxxing). The authors of GeoEstimation withdrew their public demo for this reason. Use this on "
    "your own photos or public benchmarks. Photos are processed in memory only: they are never "
    "written to disk or logged."
)


def setup_page(title: str, icon: str = "🌍") -> None:
    """Title, icon and wide layout; the first Streamlit call of every page."""
    st.set_page_config(page_title=f"{title} · geocore", page_icon=icon, layout="wide")


# A name, a field or a message quoting them, from outside, shown as itself in Streamlit's Markdown: every ASCII
# punctuation escaped and no autolink (`geocore.data.text.markdown_text`).
md_text = markdown_text


def session_memo(slot: str, group: Hashable) -> dict:
    """This session's dict under `slot` for `group` (the results, uploads or model its contents belong to),
    emptied when `group` changes, so what it holds always belongs to the current inputs. In memory, in this
    session only; stored as (group, dict)."""
    memo = st.session_state.get(slot)
    if memo is None or memo[0] != group:
        memo = (group, {})
        st.session_state[slot] = memo
    return memo[1]


def show_error(err: BaseException | str, *, where=None, prefix: str = "") -> None:
    """A user-fixable error as one notice (never a traceback), in `where` (a container; default the page).
    Its text may quote names from files, so it is shown as text (`md_text`); `prefix` is the page's own
    markdown."""
    (st if where is None else where).error(prefix + md_text(err))


def show_unavailable(what: str, err: BaseException) -> None:
    """A notice that an optional piece (`what`) cannot be shown: not installed, or its weights are absent
    (a WeightsMissingError's message names the command that gets them)."""
    if isinstance(err, ImportError):
        st.info(f"{what} is not available in this installation ({md_text(err.name or err)}).", icon="ℹ️")
    else:  # our own notice with its command in `code`; any other error may quote a file's name
        text = str(err) if isinstance(err, WeightsMissingError) else md_text(err)
        st.info(f"{what} is not available: {text}", icon="ℹ️")


def show_figure(fig) -> None:
    """A matplotlib figure on the page, then closed: pyplot keeps every figure it made until closed, so a
    figure only cleared (`st.pyplot(..., clear_figure=True)`) would stay in the server's memory for good."""
    import matplotlib.pyplot as plt

    try:
        st.pyplot(fig)
    finally:
        plt.close(fig)


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's `malloc_trim`, or None (another C library, another system)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


def release_free_memory() -> None:
    """Hand the memory the server has freed back to the system (glibc's `malloc_trim(0)`; a no-op elsewhere).

    Streamlit runs every rerun in a new thread, and glibc gives threads their own memory arenas (up to 8 per
    core) that keep what was freed in them: in the load test (bench/bench_load.py) the server's RSS kept climbing
    by several MB per located photo without this, although nothing is kept; with it, it levels off. Called after
    a page's heavy work; takes a few ms. (`MALLOC_ARENA_MAX=2` in the server's environment does better still.)"""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
