"""Reference photos on the Locate page: a reference set picked from the shared folders, opened once per server and
refused in one line when another model made it (each answer's strip of similar references: `ui.photo_answer`)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from geocore.errors import GeocoreError
from geocore.models.base import GeoLocator

from ui.folders import data_roots, folder_input, folders_holding, shared_folder
from ui.page import md_text, session_memo, show_error

SET_MARKER = "manifest.json"  # a reference set is a folder holding this (geocore.refs.store)
NO_SET = "none"


def refs_picker() -> Path | None:
    """Sidebar: a reference set inside the shared folders (the folder box, then the sets in it: the folder itself
    or its subfolders holding `manifest.json`), default none. Returns the set's resolved folder, or None."""
    st.sidebar.subheader("Reference photos")
    if not data_roots().enabled:
        st.sidebar.caption("Reference sets (`geocore refs build`) are opened from the folders this server shares; "
                           "it shares none. You can upload geotagged reference photos below.")
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



REF_TYPES = ["jpg", "jpeg", "png", "webp", "heic", "heif", "tif", "tiff"]
REFS_MEMO = "_uploaded_refs"  # session memo: (uploads digest, model) → {"set": the set built from them}


def uploaded_refs(model: GeoLocator):
    """Sidebar: reference photos with EXIF GPS uploaded for this session, built into a set in memory (never
    written; `geocore.refs.reference_set_from_photos`), rebuilt only when the uploads or the model change.
    Photos without GPS or unreadable are listed; None when nothing usable was uploaded."""
    import hashlib

    from geocore.refs import reference_set_from_photos

    files = st.sidebar.file_uploader("…or upload reference photos with EXIF GPS (kept in memory for this session)",
                                     type=REF_TYPES, accept_multiple_files=True, key="refs_up")
    if not files:
        return None
    photos = [(f.name, f.getvalue()) for f in files]
    digest = hashlib.sha256(b"".join(hashlib.sha256(b).digest() for _, b in photos)).hexdigest()
    memo = session_memo(REFS_MEMO, (digest, model.model_name, id(model)))
    if "set" not in memo:
        try:
            with st.spinner("Embedding the reference photos…"):
                memo["set"] = reference_set_from_photos(model, photos)
        except GeocoreError as err:
            show_error(err, where=st.sidebar, prefix="Reference photos not used: ")
            return None
    refs = memo["set"]
    st.sidebar.caption(f"{len(refs)} reference photo(s) in memory"
                       + (f"; {len(refs.skipped)} left out (no EXIF GPS or unreadable): "
                          + md_text(", ".join(refs.skipped["name"].astype(str)[:5])) if len(refs.skipped) else ""))
    return refs
