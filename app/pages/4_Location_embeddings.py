"""Location embeddings: what GeoCLIP's location encoder has learned, over the whole globe.

Needs only the location encoder that ships in the `geoclip` wheel (no backbone weights), so it works everywhere.
"""

import numpy as np
import streamlit as st
import torch

from geocore import viz
from geocore.errors import GeocoreError
from ui.deck import apply_selected_point, world_deck
from ui.page import setup_page, show_error, show_figure
from ui.photo_answer import place_text

PICK_LAYER = "grid"

setup_page("Location embeddings", "🧭")
st.title("Location embeddings")
st.caption("GeoCLIP encodes a (lat, lon) as a 512-d vector (Equal Earth projection → random Fourier features "
           "at three scales → MLPs). Here: those vectors over a lat/lon grid.")


@st.cache_resource(show_spinner="Loading the location encoder…")
def encoder():
    from geocore.models.location_encoder import load_location_encoder

    return load_location_encoder()


def embed(points: np.ndarray) -> np.ndarray:
    """(N, 2) (lat, lon) → (N, 512) location embeddings."""
    return encoder().embed(torch.as_tensor(points, dtype=torch.float32)).numpy()


@st.cache_data(show_spinner="Encoding the globe…", max_entries=4)
def grid_embeddings(step: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lats (R,), lons (C,), embeddings (R, C, 512)) on cell centres `step` degrees apart."""
    lats, lons, points = viz.latlon_grid(step)
    return lats, lons, embed(points).reshape(len(lats), len(lons), -1)


def png(ax) -> bytes:
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    ax.figure.savefig(buf, format="png")
    plt.close(ax.figure)
    return buf.getvalue()


@st.cache_data(show_spinner=False, max_entries=4)
def pca_png(step: float) -> bytes:
    lats, lons, emb = grid_embeddings(step)
    title = (f"First 3 principal components of {emb.shape[-1]}-d location features "
             f"({len(lats)}×{len(lons)} grid) as RGB")
    return png(viz.plot_world_image(viz.pca_rgb(emb), title=title))


def similarity_deck(step: float, q: np.ndarray, point: tuple[float, float]):
    """A pickable deck.gl map of the grid cells coloured by similarity to `point` (click one to move it)."""
    import pydeck as pdk
    from matplotlib import colormaps

    lats, lons, emb = grid_embeddings(step)
    grid = viz.latlon_grid(step)[2]
    sim = emb.reshape(len(grid), -1) @ q
    rgb = (colormaps["magma"]((sim - sim.min()) / (np.ptp(sim) + 1e-12))[:, :3] * 255).astype(int)
    keep = np.abs(grid[:, 0]) < 85.0  # Web Mercator stops at ±85°
    data = [{"lat": round(float(a), 3), "lon": round(float(b), 3), "s": f"{v:.3f}", "c": [*map(int, c), 225]}
            for (a, b), v, c in zip(grid[keep], sim[keep], rgb[keep])]
    h = step / 2  # each grid point as its lat/lon cell: the whole map is clickable, at every latitude
    cells = pdk.Layer("PolygonLayer", data, id=PICK_LAYER, get_fill_color="c", stroked=False, filled=True,
                      get_polygon=f"[[lon - {h}, lat - {h}], [lon + {h}, lat - {h}], [lon + {h}, lat + {h}], "
                                  f"[lon - {h}, lat + {h}]]", pickable=True, auto_highlight=True)
    star = pdk.Layer("ScatterplotLayer", [{"lat": point[0], "lon": point[1]}], id="point",
                     get_position=["lon", "lat"], get_fill_color=[255, 255, 255, 255], get_line_color=[0, 0, 0, 255],
                     stroked=True, get_radius=7, radius_units="'pixels'", line_width_min_pixels=2, pickable=False)
    return world_deck([cells, star], outlines_on_top=True,
                      tooltip={"text": "{lat}, {lon}: similarity {s} (click to choose)"})


step = st.sidebar.select_slider("Grid spacing (degrees)", [1.0, 2.0, 3.0, 4.0], value=3.0, key="emb_step")
try:
    lats, lons, emb = grid_embeddings(step)
except GeocoreError as err:
    show_error(err)
    st.stop()

tab_pca, tab_sim = st.tabs(["Embeddings as colours (PCA)", "Similarity to a point"])
with tab_pca:
    st.image(pca_png(step), width="stretch")
    st.caption("Places with similar colours have similar location features: GeoCLIP has learned regions, "
               "coastlines and climate-like bands without being told about them.")
with tab_sim:
    c1, c2 = st.columns(2)
    lat = c1.number_input("Latitude", -90.0, 90.0, 48.8566, format="%.4f", key="sim_lat")
    lon = c2.number_input("Longitude", -180.0, 180.0, 2.3522, format="%.4f", key="sim_lon")
    q = embed(np.array([[lat, lon]]))[0]
    sim = emb @ q
    deck_step = max(step, 3.0)
    st.caption(f"Click the map to choose the point (or type it above). Cells: a {deck_step:g}° grid, "
               "bright = similar.")
    # a new key per point: each map starts unselected (Streamlit dims the unpicked dots of a selection)
    pick_key = f"sim_pick_{lat:.4f}_{lon:.4f}"
    st.pydeck_chart(similarity_deck(deck_step, q, (lat, lon)), height=420, key=pick_key,
                    on_select=lambda k=pick_key: apply_selected_point(k, PICK_LAYER, "sim_lat", "sim_lon"),
                    selection_mode="single-object")
    ax = viz.plot_world_image(sim, title=f"Cosine similarity to ({lat:.2f}, {lon:.2f})", cmap="magma",
                              colorbar="cosine similarity", points={f"{lat:.2f}, {lon:.2f}": (lat, lon)})
    show_figure(ax.figure)
    from geocore.geo.countries import describe

    st.markdown(f"Point: **{place_text(describe(np.array([[lat, lon]])).iloc[0])}** · "
                f"similarity range {sim.min():.2f} … {sim.max():.2f}")
