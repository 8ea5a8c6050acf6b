"""Explain: where the model looked (Grad-CAM), what is in the photo (segmentation), what kind of scene.

The explain pieces are imported lazily: when one is not installed or its weights are absent, the page
says so and shows the rest.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streamlit as st  # noqa: E402

import components as ui  # noqa: E402
from geocore.errors import GeocoreError  # noqa: E402

ui.setup_page("Explain", "🔬")
st.title("Explain a prediction")
st.caption("Grad-CAM of the model's answer, semantic segmentation (ADE20K classes) and the scene type.")


@st.cache_resource(show_spinner="Loading the segmenter…")
def segmenter(name: str):
    from geocore.explain.segmentation import Segmenter

    return Segmenter.from_pretrained(name)


def unavailable(what: str, err: BaseException) -> None:
    if isinstance(err, ImportError):
        st.info(f"{what} is not available in this installation ({err.name or err}).", icon="ℹ️")
    else:
        st.info(f"{what} is not available: {err}", icon="ℹ️")


name = ui.model_picker(key="model_explain")
model = ui.load_model(name) if name else None
if model is not None:
    up = st.file_uploader("Photo", type=["jpg", "jpeg", "png", "webp", "heic", "heif"], key="explain_upload")
    files = list(st.session_state.get("_test_uploads") or [])[:1]  # test seam (AppTest cannot upload)
    if up is not None:
        files = [(up.name, up.getvalue())]
    if not files:
        st.info("Upload a photo to explain the model's answer.")
    else:
        from geocore.data.images import load_image
        from geocore.locate import locate

        photo_name, data = files[0]
        try:
            image = load_image(data, name=photo_name)
            res = locate(model, [(photo_name, data)], top_k=min(5, len(getattr(model, "gallery", [0] * 5))))[0]
        except GeocoreError as err:
            ui.show_error(err)
            st.stop()
        if not res.ok:
            st.error(res.error)
            st.stop()
        ui.random_label(model)
        table = res.table
        choice = st.selectbox("Explain the answer", list(range(len(table))), key="explain_target",
                              format_func=lambda i: f"#{i + 1} {ui.place_label(table.iloc[i])}, "
                                                    f"{table.iloc[i]['country'] or '(sea)'} "
                                                    f"(p={table.iloc[i]['prob']:.3f})")
        col_cam, col_seg = st.columns(2)
        with col_cam:
            st.subheader("Grad-CAM")
            try:
                from geocore.explain.gradcam import gradcam

                target = (float(table.iloc[choice]["lat"]), float(table.iloc[choice]["lon"])) \
                    if hasattr(model, "embed_locations") else None
                with st.spinner("Computing Grad-CAM…"):
                    cam = gradcam(model, image, target)
                st.image(cam.overlay, caption=f"where the model looked for: {cam.target_desc}", width="stretch")
            except (ImportError, GeocoreError) as err:
                unavailable("Grad-CAM", err)
        with col_seg:
            st.subheader("Segmentation")
            try:
                from geocore.explain.segmentation import DEFAULT_SEGMENTER, overlay

                seg = segmenter(DEFAULT_SEGMENTER)
                labels = seg.segment(image)
                st.image(overlay(image, labels), caption=f"{seg.name}: ADE20K classes", width="stretch")
                st.dataframe(seg.legend(labels).head(10).assign(share=lambda d: (100 * d["share"]).round(1)),
                             hide_index=True, width="stretch")
            except (ImportError, GeocoreError) as err:  # WeightsMissingError included: a notice with the command
                unavailable("Segmentation", err)
        st.subheader("Scene")
        try:
            from geocore.explain.scene import classify_scene

            scene = classify_scene(model, image)
            st.write(f"**{scene.s3_name}** — " + ", ".join(f"{k} {v:.0%}" for k, v in scene.s3_probs.items()))
        except (ImportError, GeocoreError) as err:
            unavailable("Scene recognition", err)
