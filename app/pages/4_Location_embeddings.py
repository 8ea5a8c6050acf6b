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
    st.pyplot(world_image(sim, f"Cosine similarity to ({lat:.2f}, {lon:.2f})", cmap="magma", point=(lat, lon),
                          colorbar="cosine similarity"), clear_figure=True)
    from geocore.geo.countries import describe

    where = describe(np.array([[lat, lon]]))
    st.markdown(f"Point: **{ui.place_label(where.iloc[0])}**, {where.iloc[0]['country'] or '(sea)'} · "
                f"similarity range {sim.min():.2f} … {sim.max():.2f}")
