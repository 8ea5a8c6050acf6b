"""Text query: where does a description point? CLIP text tower → GeoCLIP MLP → similarity over the gallery."""

import streamlit as st

from geocore.errors import GeocoreError
from ui.maps import prediction_map, show_map
from ui.models import load_model, model_picker, precision_note, precision_picker, random_label
from ui.page import md_text, release_free_memory, setup_page, show_error
from ui.photo_answer import place_text, topk_display
from ui.safe_tables import show_table

EXAMPLES = ["Pyramids of Giza", "Burj Khalifa", "Great Wall of China", "desert", "Boston, Massachusetts"]

setup_page("Text query", "💬")
st.title("Text query")
st.caption("GeoCLIP maps text into the same space as photos: type a place or a kind of landscape.")

name = model_picker()
model = load_model(name) if name else None
if model is not None and not model.supports_text:
    st.info(f"{name} has no text tower: text queries need a GeoCLIP model.")
    model = None
if model is not None:
    precision = precision_picker(key="precision_text")
    top_k = st.sidebar.slider("Top-k", 1, 20, 5, key="top_k_text")
    compare = st.sidebar.toggle("Compare two queries side by side", value=True, key="compare")

    st.session_state.setdefault("query_a", EXAMPLES[0])
    st.session_state.setdefault("query_b", EXAMPLES[3])

    def use_example(ex: str) -> None:
        # fills query B when comparing and A already holds another query, else query A
        if compare and st.session_state.get("query_a") and st.session_state.get("query_a") != ex:
            st.session_state["query_b"] = ex
        else:
            st.session_state["query_a"] = ex

    st.write("Examples from the GeoCLIP paper (one click):")
    for i, (col, ex) in enumerate(zip(st.columns(len(EXAMPLES)), EXAMPLES)):
        col.button(ex, key=f"ex_{i}", on_click=use_example, args=(ex,))
    panes = st.columns(2) if compare else [st.container()]
    for pane, key in zip(panes, ["query_a", "query_b"]):
        with pane:
            query = st.text_input("Query " + key[-1].upper(), key=key).strip()
            if not query:
                st.info("Type a query.")
                continue
            try:
                from geocore.locate import prediction_table
                from geocore.models.precision import use_precision

                with use_precision(precision, model.device, model) as used:
                    pred = model.predict_text([query], min(top_k, model.num_candidates()), full=True)
                table = prediction_table(pred)
            except GeocoreError as err:
                show_error(err)
                continue
            random_label(model)
            st.markdown(f"**“{md_text(query)}”** → top-1: {place_text(table.iloc[0])}")
            show_map(prediction_map(pred, table), height=360)
            show_table(topk_display(table))
            precision_note(precision, model.device, model)
    release_free_memory()  # the maps' HTML is garbage now
