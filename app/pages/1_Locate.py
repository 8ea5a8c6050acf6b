"""Locate: where were these photos taken? Top-k table, probability heatmap, EXIF truth and error."""

import sys
from pathlib import Path

APP_DIR = str(Path(__file__).resolve().parents[1])
if APP_DIR not in sys.path:  # the `ui` package in app/
    sys.path.insert(0, APP_DIR)

import streamlit as st  # noqa: E402

from geocore.errors import GeocoreError  # noqa: E402
from geocore.models.base import GalleryModel  # noqa: E402
from ui.models import gallery_controls, gallery_view, load_model, model_picker  # noqa: E402
from ui.page import setup_page, show_error  # noqa: E402
from ui.results import render_locate_result  # noqa: E402

setup_page("Locate", "📍")
st.title("Locate photos")
st.caption("JPEG, PNG, WebP or HEIC; one or many. Processed in memory only, never stored.")

name = model_picker()
model = load_model(name) if name else None
if model is not None:
    top_k = st.sidebar.slider("Top-k", 1, 20, 5, key="top_k")
    choice = gallery_controls(model)
    refine = st.sidebar.toggle("Refine (zoom in around the top-k)", value=False, key="refine",
                               disabled=not isinstance(model, GalleryModel))

    uploads = st.file_uploader("Photos", type=["jpg", "jpeg", "png", "webp", "heic", "heif", "gif", "bmp",
                                               "tif", "tiff"], accept_multiple_files=True, key="uploads")
    # Test seam: AppTest cannot upload files, so tests put [(name, bytes), ...] here.
    files = list(st.session_state.get("_test_uploads") or [])
    files += [(u.name, u.getvalue()) for u in uploads or []]

    if not files:
        st.info("Upload one or more photos to locate them.")
    else:
        from geocore.data.images import image_bytes_digest
        from geocore.locate import locate

        key = (name, top_k, choice, bool(refine), tuple(image_bytes_digest(b) + n for n, b in files))
        cached = st.session_state.get("_locate_cache")
        results = cached[1] if cached and cached[0] == key else None
        if results is None:
            try:
                with st.spinner(f"Locating {len(files)} photo(s)…"):
                    net = gallery_view(model, choice)
                    results = locate(net, files, top_k=min(top_k, net.num_candidates()), full=True,
                                     refine=bool(refine))
            except GeocoreError as err:
                show_error(err)
            else:
                st.session_state["_locate_cache"] = (key, results)
        if results is not None:
            bad = sum(not r.ok for r in results)
            st.write(f"{len(results) - bad} photo(s) located" + (f", {bad} could not be read" if bad else "") + ".")
            data = dict(files)
            for res in results:
                with st.container(border=True):
                    render_locate_result(res, model, image_bytes=data.get(res.name))
