"""Locate: where were these photos taken, how sure is the model, and how large an area to search? Top-k table,
probability heatmap with the 50 % / 90 % search region, calibration, a text hint, EXIF truth and error, and a
downloadable case report."""

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
    with st.sidebar.expander("Video clips: frame sampling"):
        every_s = st.slider("A frame every … seconds (and at scene cuts)", 0.25, 10.0, 1.0, step=0.25, key="every_s")
        max_frames = st.slider("At most … frames a clip", 10, 600, 300, step=10, key="max_frames",
                               help="Frames beyond this are not sampled; near-identical frames are dropped first.")
    refs = load_refs(refs_picker(), model) or uploaded_refs(model)

    def joint_answer(results, net, key, *, k, levels, calibration, hint_model, level, claim):
        """The "Joint answer" block after the photos' answers: one answer for the readable photos (kept in the
        session with the results), and the claim's verdict on it."""
        from geocore.cases.joint import joint_locate

        with st.container(border=True):
            if sum(r.ok for r in results) < 2:
                st.subheader("Joint answer")
                st.caption("A joint answer needs at least two readable photos.")
                return None
            joint = remembered(key, "joint", lambda: joint_locate(
                results, net, levels=levels or LEVELS, calibration=calibration, top_k=k, hint_model=hint_model))
            if joint is None:
                return None
            render_joint(joint, title=f"Joint answer: {joint.n} photos of one place", level=level,
                         memo=(key, "joint"))
            if claim is not None:
                show_claim(joint, claim, net, calibration, "the joint answer")
            return joint

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
            from geocore.cases.analyse import Case, ClipAnswer
            from geocore.data.images import image_bytes_digest, read_photo
            from geocore.locate import locate
            from geocore.request import LocateRequest

            k = min(top_k, net.num_candidates())
            key = (name, precision, k, choice, bool(refine), hint.text, hint.weight,
                   uploaded_cal.digest if calibration is not None else None, levels,
                   refs.set_fingerprint if refs is not None else None, bool(same_place),
                   (float(every_s), int(max_frames)) if any(is_video(n) for n, _ in files) else None,
                   tuple(image_bytes_digest(b) + n for n, b in files))
            clips = [(n, b) for n, b in files if is_video(n)]
            cached = session_memo("_locate_cache", key)
            case = cached.get("case")
            if no_regions:
                st.info(f"No search regions for these candidates: {md_text(no_regions)}", icon="ℹ️")
            if case is None:
                try:
                    # one request, checked and bound once; each photo read once (bytes, SHA-256, pixels, EXIF)
                    bound = LocateRequest.build(
                        top_k=k, regions=levels, calibration=calibration, hint=hint.text, hint_weight=hint.weight,
                        refine=bool(refine), precision=precision, refs=refs, full=True, same_place=bool(same_place),
                        every_s=float(every_s), max_frames=int(max_frames),
                    ).bind(net, hint.scorer)
                    photos = [read_photo(b, name=n) for n, b in files if not is_video(n)]
                    with st.spinner(f"Locating {len(photos)} photo(s) and {len(clips)} clip(s)…"):
                        results = locate(net, photos, bound) if photos else []
                        located, failed = (locate_clips(net, clips, request=bound.with_levels(levels or LEVELS))
                                           if clips else ([], []))
                except GeocoreError as err:
                    show_error(err)
                else:
                    answers = iter(located)
                    failures = dict(failed)
                    case = cached["case"] = Case(bound, photos, results, clips=[
                        ClipAnswer(i, n, image_bytes_digest(b), len(b), error=failures.get(n),
                                   result=None if n in failures else next(answers))
                        for i, (n, b) in enumerate(clips, start=1)])
            results = case.results if case is not None else None
            videos = ([c.result for c in case.clips if c.ok], [(c.name, c.error) for c in case.clips if not c.ok]) \
                if case is not None else None
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
                for i, (photo, res) in enumerate(zip(case.photos, results)):
                    with st.container(border=True):
                        render_locate_result(res, model, image=photo.image, level=level, map_memo=(key, i))
                        if claim is not None and res.ok and not same_place:
                            show_claim(res, claim, net, calibration, "this photo")
                if same_place:
                    case.joint = joint_answer(results, net, key, k=k, levels=levels, calibration=calibration,
                                              hint_model=hint_model, level=level, claim=claim)
                release_free_memory()  # the maps' HTML is garbage now (the pixels stay in the case, for its report)

                st.subheader("Case report")
                st.caption("One self-contained HTML file for the record: each photo (re-encoded, no metadata) with "
                           "its SHA-256, EXIF, top-k, maps with the search regions, Grad-CAM, and what produced the "
                           "answers (model, weights, hint, precision, refinement, calibration). It shows the answers "
                           "on this page, as they are. It opens offline.")
                if st.button("Prepare case report (HTML)", key="report_prepare"):
                    from geocore.report import report_from_case

                    try:
                        with st.spinner("Writing the case report (Grad-CAM of every photo)…"):
                            shown = case
                            if claim is not None and case.request.cells is not None:  # the claim shown, checked
                                from dataclasses import replace

                                bound = replace(case.request, request=case.request.request.with_(claim=claim))
                                shown = replace(case, request=bound)
                            html = report_from_case(shown).html  # the answers shown here: nothing located again
                    except GeocoreError as err:
                        show_error(err)
                    else:
                        st.session_state[REPORT_STATE] = ((key, claim), html)
                report = st.session_state.get(REPORT_STATE)
                if report is not None and report[0] == (key, claim):
                    st.download_button("Download case report (HTML)", report[1], file_name="geocore_case_report.html",
                                       mime="text/html", key="report_download", on_click="ignore", type="primary")
                elif report is not None:
                    st.caption("The settings or photos changed since the last report: prepare it again.")

    photos_and_answers()
