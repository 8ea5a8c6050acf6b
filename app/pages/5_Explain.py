"""Explain: where the model looked (Grad-CAM), what is in the photo (segmentation), what kind of scene.

The explain pieces are imported lazily: when one is not installed or its weights are absent, the page
says so and shows the rest.
"""

import streamlit as st

from geocore.errors import GeocoreError
from geocore.models.base import GalleryModel
from ui.models import load_model, model_picker, precision_note, precision_picker, random_label
from ui.page import release_free_memory, setup_page, show_error, show_unavailable
from ui.photo_answer import pixels_only, place_text
from ui.safe_tables import show_table

setup_page("Explain", "🔬")
st.title("Explain a prediction")
st.caption("Grad-CAM of the model's answer, semantic segmentation (ADE20K classes) and the scene type.")


@st.cache_resource(show_spinner="Loading the segmenter…")
def segmenter():
    from geocore.models.segmenter import DEFAULT_SEGMENTER, load_segmenter

    return load_segmenter(DEFAULT_SEGMENTER)


name = model_picker(key="model_explain")
model = load_model(name) if name else None
if model is not None:
    precision = precision_picker(key="precision_explain")
    up = st.file_uploader("Photo", type=["jpg", "jpeg", "png", "webp", "heic", "heif"], key="explain_upload")
    files = list(st.session_state.get("_test_uploads") or [])[:1]  # test seam: [(name, bytes)]
    if up is not None:
        files = [(up.name, up.getvalue())]
    if not files:
        st.info("Upload a photo to explain the model's answer.")
        st.stop()
    from geocore.data.images import load_image
    from geocore.locate import locate

    photo_name, data = files[0]
    try:
        image = load_image(data, name=photo_name)
        res = locate(model, [(photo_name, data)], top_k=min(5, model.num_candidates()), precision=precision)[0]
    except GeocoreError as err:
        show_error(err)
        st.stop()
    if not res.ok:
        show_error(res.error)
        st.stop()
    random_label(model)
    precision_note(precision, model.device, model)
    table = res.table
    choice = st.selectbox("Explain the answer", list(range(len(table))), key="explain_target",
                          format_func=lambda i: f"#{i + 1} {place_text(table.iloc[i])} (p={table.iloc[i]['prob']:.3f})")
    # the chosen answer: a location for a gallery model, the candidate (fine cell) index for a cell classifier
    target = ((float(table.iloc[choice]["lat"]), float(table.iloc[choice]["lon"])) if isinstance(model, GalleryModel)
              else int(res.prediction.indices[0, choice]))

    labels, seg_error = None, None
    try:
        seg = segmenter()
        labels = seg.segment(image)
    except (ImportError, GeocoreError) as err:  # WeightsMissingError included: a notice with the command
        seg_error = err

    col_cam, col_seg = st.columns(2)
    with col_cam:
        st.subheader("Grad-CAM")
        try:
            from geocore.explain.gradcam import gradcam

            with st.spinner("Computing Grad-CAM…"):  # a TransLocator reuses the segmentation shown beside it
                cam = gradcam(model, image, target, seg=labels if model.needs_segmentation else None,
                              precision=precision)
            st.image(pixels_only(cam.overlay), caption=f"where the model looked for: {cam.target_desc}",
                     width="stretch")
        except (ImportError, GeocoreError) as err:
            show_unavailable("Grad-CAM", err)
    with col_seg:
        st.subheader("Segmentation")
        if labels is None:
            show_unavailable("Segmentation", seg_error)
        else:
            from geocore.explain.segmentation import overlay

            st.image(pixels_only(overlay(image, labels)), caption=f"{seg.name}: ADE20K classes", width="stretch")
            show_table(seg.legend(labels).head(10).assign(share=lambda d: (100 * d["share"]).round(1)))
    st.subheader("Scene")
    try:
        from geocore.explain.scene import classify_scene

        scene = classify_scene(model, image, precision=precision)
        st.write(f"**{scene.s3_name}** — " + ", ".join(f"{k} {v:.0%}" for k, v in scene.s3_probs.items()))
    except (ImportError, GeocoreError) as err:
        show_unavailable("Scene recognition", err)
    release_free_memory()  # the photo's pixels, Grad-CAM and segmentation are garbage now
