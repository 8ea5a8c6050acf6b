"""Reference photos on the Locate page: a reference set picked from the shared folders, opened once per server and
refused in one line when another model made it (each answer's strip of similar references: `ui.results`)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from geocore.errors import GeocoreError
from geocore.models.base import GeoLocator

from ui.folders import data_roots, folder_input, folders_holding, shared_folder
from ui.page import show_error

SET_MARKER = "manifest.json"  # a reference set is a folder holding this (geocore.refs.store)
NO_SET = "none"


def refs_picker() -> Path | None:
    """Sidebar: a reference set inside the shared folders (the folder box, then the sets in it: the folder itself
    or its subfolders holding `manifest.json`), default none. Returns the set's resolved folder, or None."""
    st.sidebar.subheader("Reference photos")
    if not data_roots().enabled:
        st.sidebar.caption("Reference sets (`geocore refs build`) are opened from the folders this server shares; "
                           "it shares none.")
        return None
    with st.sidebar:
        folder = folder_input("Reference sets: folder", key="refs_dir")
        names = folders_holding(folder, SET_MARKER) if folder is not None else []
        if not names:
            st.caption("No reference set (a folder holding manifest.json) in this folder.")
            return None
        pick = st.selectbox("Reference set", [NO_SET, *names], key="refs_set",
                            help="Each answer then lists its most similar reference photos and is fused with them.")
        if pick == NO_SET:
            return None
        try:
            return shared_folder(folder, pick)
        except GeocoreError as err:
            show_error(err)
            return None


@st.cache_resource(show_spinner="Opening the reference set…", max_entries=4)
def _open_set(path: str, stamp: int, model_name: str, _model: GeoLocator):
    """The reference set at `path` checked against the model named `model_name` (one per server), opened once per
    server; `stamp` (the manifest's mtime) opens a rebuilt set again. Embeddings stay memory-mapped."""
    from geocore.refs import load_reference_set

    return load_reference_set(path, _model)


def load_refs(path: Path | None, model: GeoLocator):
    """The reference set at `path` for `model` (cached), or None: none chosen, or a one-line notice (another
    model or other weights, an incomplete or broken set) and the page goes on without references."""
    if path is None:
        return None
    try:
        return _open_set(str(path), (path / SET_MARKER).stat().st_mtime_ns, model.model_name, model)
    except (GeocoreError, OSError) as err:
        show_error(err, where=st.sidebar, prefix="Reference set not used: ")
        return None

