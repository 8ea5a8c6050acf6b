"""geocore: the Streamlit app's front page (what it does, which models have weights, responsible use)."""

import pandas as pd
import streamlit as st

from ui.models import download_command, model_rows
from ui.page import RESPONSIBLE_USE, setup_page

setup_page("Home")
st.title("geocore")
st.write(
    "Worldwide image geo-localization you can see into: upload a photo and see where on Earth "
    "it was taken, with the evidence the model used."
)
st.markdown(
    """
- **Locate**: top-k places for your photos, a probability heatmap on a world map, and the error against the photo's EXIF GPS when it has one.
- **Text query**: where does a description point ("Pyramids of Giza", "desert")? Two queries side by side.
- **Failures**: open an evaluation results file: the metrics table, error distribution, truth → prediction lines, per-country and per-continent accuracy, worst images first (each opens with its heatmap and Grad-CAM when the image folder is given), two runs compared.
- **Location embeddings**: what GeoCLIP's location encoder has learned, as colours over the globe and as similarity to a point (click the map to choose it).
- **Explain**: Grad-CAM and scene segmentation for a photo (when those pieces are installed).
"""
)

st.header("Models on this machine")
rows = model_rows()
table = pd.DataFrame({
    "model": [r.name for r in rows],
    "weights": ["random (demo only)" if r.random and r.present else ("present" if r.present else "missing")
                for r in rows],
    "what": [r.description for r in rows],
    "how to get the weights": [r.how_to_get or "—" for r in rows],
})
st.dataframe(table, hide_index=True, width="stretch")
if not any(r.present and not r.random for r in rows):
    cmd = download_command(rows)
    st.info("No pretrained weights here yet: the model pages run only with random-backbone demo models. "
            + (f"Get GeoCLIP's backbone with `{cmd}`. " if cmd else "")
            + "Failures and Location embeddings work without them.", icon="ℹ️")
with st.expander("Where each model's weights were looked for"):
    for r in rows:
        st.markdown(f"**{r.name}**: {r.detail}")

st.header("Responsible use")
st.markdown(RESPONSIBLE_USE)
