"""Locate: where were these photos taken, how sure is the model, and how large an area to search? Top-k table,
probability heatmap with the 50 % / 90 % search region, calibration, a text hint, EXIF truth and error, and a
downloadable case report."""

import sys
from pathlib import Path

APP_DIR = str(Path(__file__).resolve().parents[1])
if APP_DIR not in sys.path:  # the `ui` package in app/
    sys.path.insert(0, APP_DIR)

import streamlit as st  # noqa: E402

from geocore.errors import GeocoreError  # noqa: E402
from geocore.models.base import GalleryModel  # noqa: E402
from ui.models import (  # noqa: E402
    gallery_controls, gallery_view, hint_controls, load_model, model_picker, precision_note, precision_picker,
)
from ui.page import md_text, release_free_memory, session_memo, setup_page, show_error  # noqa: E402
from ui.search_regions import (  # noqa: E402
    LEVELS, calibration_upload, candidates_fingerprint, level_control, usable_calibration,
)
from ui.cases import (  # noqa: E402
    VIDEO_TYPES, claim_controls, is_video, locate_clips, remembered, render_joint, render_video, show_claim,
)
from ui.references import load_refs, refs_picker, uploaded_refs  # noqa: E402
from ui.photo_answer import render_locate_result  # noqa: E402

REPORT_STATE = "_case_report"  # (results key, HTML) of the last prepared report

setup_page("Locate", "📍")
st.title("Locate photos")
st.caption("JPEG, PNG, WebP or HEIC photos, MP4, MOV, WebM or MKV clips; one or many. Processed in memory only, "
           "never stored.")

name = model_picker()
model = load_model(name) if name else None
if model is not None:
    precision = precision_picker()
    top_k = st.sidebar.slider("Top-k", 1, 20, 5, key="top_k")
    choice = gallery_controls(model)
    refine = st.sidebar.toggle("Refine (zoom in around the top-k)", value=False, key="refine",
                               disabled=not isinstance(model, GalleryModel))
    st.sidebar.subheader("Search regions")
    level = level_control()
    uploaded_cal = calibration_upload("calibration_up")
    hint = hint_controls(model)
    st.sidebar.subheader("Cases")
    same_place = st.sidebar.checkbox("These photos show one place", key="same_place",
                                     help="One joint answer for all the photos (a tempered product of their "
                                          "distributions), each photo's part, and photos that may not fit.")
    claim = claim_controls()
    refs = load_refs(refs_picker(), model) or uploaded_refs(model)

    def joint_answer(results, net, key, *, k, levels, calibration, hint_model, level, claim) -> None:
        """The "Joint answer" block after the photos' answers: one answer for the readable photos (kept in the
        session with the results), and the claim's verdict on it."""
        from geocore.cases.joint import joint_locate

        with st.container(border=True):
            if sum(r.ok for r in results) < 2:
                st.subheader("Joint answer")
                st.caption("A joint answer needs at least two readable photos.")
                return
            joint = remembered(key, "joint", lambda: joint_locate(
                results, net, levels=levels or LEVELS, calibration=calibration, top_k=k, hint_model=hint_model))
            if joint is None:
                return
            render_joint(joint, title=f"Joint answer: {joint.n} photos of one place", level=level,
                         memo=(key, "joint"))
            if claim is not None:
                show_claim(joint, claim, net, calibration, "the joint answer")

    @st.fragment
    def photos_and_answers() -> None:
        """The uploader and its answers. A fragment: an upload (or preparing the report) reruns only this
        part of the page, not the sidebar, so the browser redraws less (bench/RESULTS.md, "App: upload to drawn
        heatmap")."""
        uploads = st.file_uploader("Photos", type=["jpg", "jpeg", "png", "webp", "heic", "heif", "gif", "bmp",
                                                   "tif", "tiff", *VIDEO_TYPES], accept_multiple_files=True,
                                   key="uploads")
        # Test seam: tests put [(name, bytes), ...] here (they can also drive the uploader itself).
        files = list(st.session_state.get("_test_uploads") or [])
        files += [(u.name, u.getvalue()) for u in uploads or []]

        try:
            net = gallery_view(model, choice)
        except GeocoreError as err:
            show_error(err)
            net = None
        fingerprint, no_regions = None, None
        if net is not None and (files or uploaded_cal.calibration is not None):  # the cells' areas only when needed
            fingerprint, no_regions = candidates_fingerprint(net, (name, choice))
        levels = LEVELS if fingerprint is not None else None
        calibration = usable_calibration(uploaded_cal, net, fingerprint) if net is not None else None

        if net is None:
            pass
        elif not files:
            st.info("Upload one or more photos to locate them.")
        else:
            from geocore.data.images import image_bytes_digest
            from geocore.locate import locate

            k = min(top_k, net.num_candidates())
            key = (name, precision, k, choice, bool(refine), hint.text, hint.weight,
                   uploaded_cal.digest if calibration is not None else None, levels,
                   refs.set_fingerprint if refs is not None else None,
                   tuple(image_bytes_digest(b) + n for n, b in files))
            photos = [(n, b) for n, b in files if not is_video(n)]
            clips = [(n, b) for n, b in files if is_video(n)]
            cached = session_memo("_locate_cache", key)
            results, videos = cached.get("answers", (None, None))
            if no_regions:
                st.info(f"No search regions for these candidates: {md_text(no_regions)}", icon="ℹ️")
            if results is None:
                try:
                    with st.spinner(f"Locating {len(photos)} photo(s) and {len(clips)} clip(s)…"):
                        results = locate(net, photos, top_k=k, full=True, refine=bool(refine), regions=levels,
                                         calibration=calibration, hint=hint.text, hint_weight=hint.weight,
                                         hint_model=hint.scorer, precision=precision,
                                         refs=refs) if photos else []
                        videos = locate_clips(net, clips, top_k=k, levels=levels or LEVELS,
                                              calibration=calibration, hint=hint.text, hint_weight=hint.weight,
                                              hint_model=hint.scorer, precision=precision)
                except GeocoreError as err:
                    show_error(err)
                    results = None
                else:
                    cached["answers"] = (results, videos)
            hint_model = hint.scorer or (net if hint.text else None)
            if videos is not None:
                for clip_name, error in videos[1]:
                    show_error(f"{clip_name}: {error}")
                for i, video in enumerate(videos[0]):
                    with st.container(border=True):
                        render_video(video, level=level, memo=(key, f"clip {i}"))
                        if claim is not None:
                            show_claim(video.clip, claim, net, calibration, f"{video.name} (whole clip)")
            if results:
                bad = sum(not r.ok for r in results)
                st.write(f"{len(results) - bad} photo(s) located" + (f", {bad} could not be read" if bad else "") + ".")
                precision_note(precision, net.device, net)
                data = dict(files)
                for i, res in enumerate(results):
                    with st.container(border=True):
                        render_locate_result(res, model, image_bytes=data.get(res.name), level=level,
                                             map_memo=(key, i))
                        if claim is not None and res.ok and not same_place:
                            show_claim(res, claim, net, calibration, "this photo")
                if same_place:
                    joint_answer(results, net, key, k=k, levels=levels, calibration=calibration,
                                 hint_model=hint_model, level=level, claim=claim)
                release_free_memory()  # the maps' HTML and the photos' decoded pixels are garbage now

                st.subheader("Case report")
                st.caption("One self-contained HTML file for the record: each photo (re-encoded, no metadata) with "
                           "its SHA-256, EXIF, top-k, maps with the search regions, Grad-CAM, and what produced the "
                           "answers (model, weights, hint, calibration). It opens offline."
                           + (" The report ranks without refinement." if refine else "")
                           + (" It runs at fp32 (the reference precision)." if results[0].precision != "fp32" else ""))
                if st.button("Prepare case report (HTML)", key="report_prepare"):
                    from geocore.report import render_report

                    try:
                        with st.spinner("Writing the case report (Grad-CAM of every photo)…"):
                            html = render_report(net, photos, hint=hint.text, hint_weight=hint.weight,
                                                 calibration=calibration, top_k=k, levels=LEVELS,
                                                 hint_model=hint.scorer)
                    except GeocoreError as err:
                        show_error(err)
                    else:
                        st.session_state[REPORT_STATE] = (key, html)
                report = st.session_state.get(REPORT_STATE)
                if report is not None and report[0] == key:
                    st.download_button("Download case report (HTML)", report[1], file_name="geocore_case_report.html",
                                       mime="text/html", key="report_download", on_click="ignore", type="primary")
                elif report is not None:
                    st.caption("The settings or photos changed since the last report: prepare it again.")

    photos_and_answers()
