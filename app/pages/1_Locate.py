"""Locate: where were these photos taken? Top-k table, probability heatmap, EXIF truth and error."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streamlit as st  # noqa: E402

import components as ui  # noqa: E402
from geocore.errors import GeocoreError  # noqa: E402

ui.setup_page("Locate", "📍")
st.title("Locate photos")
st.caption("JPEG, PNG, WebP or HEIC; one or many. Processed in memory only, never stored.")

name = ui.model_picker()
model = ui.load_model(name) if name else None
if model is not None:
    top_k = st.sidebar.slider("Top-k", 1, 20, 5, key="top_k")
    mode, box, spacing = ui.gallery_controls(model)
    refine = st.sidebar.toggle("Refine (zoom in around the top-k)", value=False, key="refine",
                               disabled=not hasattr(model, "embed_locations"))

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

        key = (name, top_k, mode, box, spacing, bool(refine), tuple(image_bytes_digest(b) + n for n, b in files))
        cached = st.session_state.get("_locate_cache")
        results = cached[1] if cached and cached[0] == key else None
        if results is None:
            try:
                with st.spinner(f"Locating {len(files)} photo(s)…"), \
                        ui.gallery_applied(model, mode, box, spacing) as net:
                    top = min(top_k, len(net.gallery)) if hasattr(net, "gallery") else top_k
                    results = locate(net, files, top_k=top, full=True, refine=bool(refine))
            except GeocoreError as err:
                ui.show_error(err)
                results = None
            else:
                st.session_state["_locate_cache"] = (key, results)
        if results is not None:
            bad = sum(not r.ok for r in results)
            st.write(f"{len(results) - bad} photo(s) located" + (f", {bad} could not be read" if bad else "") + ".")
            data = dict(files)
            for res in results:
                with st.container(border=True):
                    ui.render_locate_result(res, model, image_bytes=data.get(res.name))
