"""Location embeddings: what GeoCLIP's location encoder has learned, over the whole globe.

Needs only the heads that ship in the `geoclip` wheel (no backbone weights), so it works everywhere.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import streamlit as st  # noqa: E402

import components as ui  # noqa: E402
from geocore.errors import GeocoreError  # noqa: E402

ui.setup_page("Location embeddings", "🧭")
st.title("Location embeddings")
st.caption("GeoCLIP encodes a (lat, lon) as a 512-d vector (Equal Earth projection → random Fourier features "
           "at three scales → MLPs). Here: those vectors over a lat/lon grid.")


@st.cache_resource(show_spinner="Loading the location encoder…")
def encoder():
    from geocore.models.location_encoder import LocationEncoder
    from geocore.weights.paths import geoclip_package_dir

    return LocationEncoder.from_geoclip_file(
        geoclip_package_dir() / "model" / "weights" / "location_encoder_weights.pth").eval()


@st.cache_data(show_spinner="Encoding the globe…", max_entries=4)
def grid_embeddings(step: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lats (R,), lons (C,), embeddings (R, C, 512)) on cell centres `step` degrees apart."""
    import torch

    lats = np.arange(90 - step / 2, -90, -step)
    lons = np.arange(-180 + step / 2, 180, step)
    grid = np.stack(np.meshgrid(lats, lons, indexing="ij"), -1).reshape(-1, 2)
    emb = encoder().embed(torch.as_tensor(grid, dtype=torch.float32)).numpy()
    return lats, lons, emb.reshape(len(lats), len(lons), -1)


def pca_rgb(emb: np.ndarray) -> np.ndarray:
    flat = emb.reshape(-1, emb.shape[-1]).astype(np.float64)
    flat = flat - flat.mean(0)
    _, _, vt = np.linalg.svd(flat, full_matrices=False)
    comp = flat @ vt[:3].T
    lo, hi = np.percentile(comp, 1, axis=0), np.percentile(comp, 99, axis=0)
    return np.clip((comp - lo) / (hi - lo + 1e-12), 0, 1).reshape(*emb.shape[:2], 3)


def world_image(img: np.ndarray, title: str, cmap=None, point=None, colorbar: str | None = None):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.6), dpi=90)
    im = ax.imshow(img, extent=(-180, 180, -90, 90), cmap=cmap, interpolation="bilinear", aspect="auto")
    ui.world_outline_axes(ax)
    if point is not None:
        ax.plot(point[1], point[0], marker="*", color="white", markersize=14, markeredgecolor="black")
    if colorbar:
        fig.colorbar(im, ax=ax, shrink=0.7, label=colorbar)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


PICK_LAYER = "grid"


def similarity_deck(step: float, q: np.ndarray, point: tuple[float, float]):
    """A pickable deck.gl map of the grid cells coloured by similarity to `point` (click one to move it)."""
    import pydeck as pdk
    from matplotlib import colormaps

    lats, lons, emb = grid_embeddings(step)
    grid = np.stack(np.meshgrid(lats, lons, indexing="ij"), -1).reshape(-1, 2)
    sim = emb.reshape(len(grid), -1) @ q
    norm = (sim - sim.min()) / (np.ptp(sim) + 1e-12)
    rgb = (colormaps["magma"](norm)[:, :3] * 255).astype(int)
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
    return ui.world_deck([cells, star], outlines_on_top=True,
                         tooltip={"text": "{lat}, {lon}: similarity {s} (click to choose)"})


def png(fig) -> bytes:
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


@st.cache_data(show_spinner=False, max_entries=4)
def pca_png(step: float) -> bytes:
    lats, lons, emb = grid_embeddings(step)
    return png(world_image(pca_rgb(emb), f"First 3 principal components of {emb.shape[-1]}-d location features "
                                         f"({len(lats)}×{len(lons)} grid) as RGB"))


step = st.sidebar.select_slider("Grid spacing (degrees)", [1.0, 2.0, 3.0, 4.0], value=3.0, key="emb_step")
try:
    lats, lons, emb = grid_embeddings(step)
except GeocoreError as err:
    ui.show_error(err)
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
    import torch

    q = encoder().embed(torch.tensor([[lat, lon]], dtype=torch.float32)).numpy()[0]
    sim = emb @ q
    st.caption("Click the map to choose the point (or type it above). Cells: a "
               f"{max(step, 3.0):g}° grid, bright = similar.")
    # a new key per point: each map starts unselected (Streamlit dims the unpicked dots of a selection)
    pick_key = f"sim_pick_{lat:.4f}_{lon:.4f}"
    st.pydeck_chart(similarity_deck(max(step, 3.0), q, (lat, lon)), height=420, key=pick_key,
                    on_select=lambda k=pick_key: ui.apply_selected_point(k, PICK_LAYER, "sim_lat", "sim_lon"),
                    selection_mode="single-object")
    st.pyplot(world_image(sim, f"Cosine similarity to ({lat:.2f}, {lon:.2f})", cmap="magma", point=(lat, lon),
                          colorbar="cosine similarity"), clear_figure=True)
    from geocore.geo.countries import describe

    where = describe(np.array([[lat, lon]]))
    st.markdown(f"Point: **{ui.place_label(where.iloc[0])}**, {where.iloc[0]['country'] or '(sea)'} · "
                f"similarity range {sim.min():.2f} … {sim.max():.2f}")
