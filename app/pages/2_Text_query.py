"""Text query: where does a description point? CLIP text tower → GeoCLIP MLP → similarity over the gallery."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streamlit as st  # noqa: E402

import components as ui  # noqa: E402
from geocore.errors import GeocoreError  # noqa: E402

EXAMPLES = ["Pyramids of Giza", "Burj Khalifa", "Great Wall of China", "desert", "Boston, Massachusetts"]

ui.setup_page("Text query", "💬")
st.title("Text query")
st.caption("GeoCLIP maps text into the same space as photos: type a place or a kind of landscape.")

name = ui.model_picker(need="predict_text")
model = ui.load_model(name) if name else None
if model is not None and not hasattr(model, "predict_text"):
    st.info(f"{name} has no text tower: text queries need a GeoCLIP model.")
    model = None
if model is not None:
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
    cols = st.columns(len(EXAMPLES))
    for i, (col, ex) in enumerate(zip(cols, EXAMPLES)):
        col.button(ex, key=f"ex_{i}", on_click=use_example, args=(ex,))
    panes = st.columns(2) if compare else [st.container()]
    keys = ["query_a", "query_b"][: len(panes)]
    for pane, key in zip(panes, keys):
        with pane:
            query = st.text_input("Query " + key[-1].upper(), key=key)
            if not query.strip():
                st.info("Type a query.")
                continue
            try:
                top = min(top_k, len(model.gallery))
                pred = model.predict_text([query.strip()], top, full=True)
                from geocore.locate import prediction_table

                table = prediction_table(pred)
            except GeocoreError as err:
                ui.show_error(err)
                continue
            random_label = ui.is_random(model)
            if random_label:
                ui.random_label(model)
            st.markdown(f"**“{query.strip()}”** → top-1: {ui.place_label(table.iloc[0])}, "
                        f"{table.iloc[0]['country'] or '(sea)'}")
            ui.show_map(ui.prediction_map(pred, table), height=360)
            st.dataframe(ui.topk_display(table), hide_index=True, width="stretch")
