"""geocore: the Streamlit app's front page."""

import streamlit as st

st.set_page_config(page_title="geocore", page_icon="🌍", layout="wide")
st.title("geocore")
st.write(
    "Worldwide image geo-localization you can see into: upload a photo and see where on Earth "
    "it was taken, with the evidence the model used."
)
