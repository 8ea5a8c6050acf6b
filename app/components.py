"""Shared widgets of the geocore app: model picker, notices, offline maps, result rendering.

Maps work with no network at all:
- Leaflet 1.9.4 comes from npm at `make setup` into `app/static/vendor/` (git-ignored) and its JS and
  CSS are INLINED into the HTML handed to `st.components.v1.html`. That component is a `srcdoc`
  iframe: inlined code needs no server route, no `enableStaticServing`, no base-path knowledge
  behind a proxy, and nothing is requested when the frame loads. folium's other default assets
  (jQuery, Bootstrap, awesome-markers, Font Awesome) are dropped: nothing here uses them.
- The basemap is the Natural Earth 1:110m countries layer shipped with geocore (tiles=None);
  OpenStreetMap tiles are added on top only when a cached ≤1 s reachability check succeeds.
- The probability heatmap is our own PNG (Web-Mercator rows, so it lines up with Leaflet) placed
  with `folium.raster_layers.ImageOverlay` as a data URI: no HeatMap plugin JS to fetch.

Test-only environment variables (never set them for real use):
- GEOCORE_APP_TEST_MODEL=<registry name>: preselect this (random, labelled) model.
- GEOCORE_APP_TEST_GALLERY=small: give that model a small 1000 km grid gallery (fast on CPU).
- GEOCORE_APP_OFFLINE=1: skip the tile reachability check (always offline basemap).
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import socket
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import streamlit as st

from geocore.errors import GeocoreError, WeightsMissingError

APP_DIR = Path(__file__).resolve().parent
VENDOR = APP_DIR / "static" / "vendor"
LEAFLET_DIRS = (VENDOR / "node_modules" / "leaflet" / "dist", VENDOR / "leaflet" / "dist", VENDOR / "leaflet")
RANDOM_LABEL = "random backbone, predictions mean nothing"
TILE_HOST = ("tile.openstreetmap.org", 443)
MERCATOR_MAX_LAT = 85.0511287798
RESPONSIBLE_USE = (
    "**Responsible use.** Locating someone else's private photos can endanger people (stalking, "
    "doxxing). The authors of GeoEstimation withdrew their public demo for this reason. Use this on "
    "your own photos or public benchmarks. Photos are processed in memory only: they are never "
    "written to disk or logged."
)
TEST_MODEL_ENV = "GEOCORE_APP_TEST_MODEL"
TEST_GALLERY_ENV = "GEOCORE_APP_TEST_GALLERY"


def setup_page(title: str, icon: str = "🌍") -> None:
    st.set_page_config(page_title=f"{title} · geocore", page_icon=icon, layout="wide")


def show_error(err: BaseException) -> None:
    """A user-fixable error as one notice (never a traceback)."""
    st.error(str(err))


# --- models ---------------------------------------------------------------------------------------


def model_rows() -> list[dict]:
    """Every registered model: name, description, present, selectable, random, detail, how_to_get."""
    from geocore.models.registry import list_models, model_entry

    rows = []
    for name in list_models():
        entry = model_entry(name)
        if entry.weights_info is None:
            detail = "random weights (demo/test)" if entry.random_ok else "no weights information"
            present, how = entry.random_ok, ""
        else:
            try:
                info = entry.weights_info()
                detail, present, how = info.detail, info.present, info.how_to_get
            except GeocoreError as err:  # a broken status check is a missing-weights notice, not a crash
                detail, present, how = str(err), False, ""
        rows.append({"name": name, "description": entry.description, "present": bool(present),
                     "random": bool(entry.random_ok), "detail": detail, "how_to_get": how})
    return rows


def model_label(row: dict) -> str:
    return f"{row['name']} — random backbone (demo)" if row["random"] else row["name"]


def model_picker(*, need: str | None = None, key: str = "model", prefer: str | None = None) -> str | None:
    """Sidebar model selector: only models whose weights are here; the rest listed with how to get them.

    Shows ONE notice when the real (non-random) models have no weights. `need` keeps only models
    with that method (e.g. "predict_text"); checked on the model class's registry name.
    `prefer`: the name selected first when it is ready (e.g. the model a results file names).
    Returns the chosen registry name, or None when nothing can run.
    """
    rows = [r for r in model_rows() if need is None or _supports(r["name"], need)]
    ready = [r for r in rows if r["present"]]
    real_ready = [r for r in ready if not r["random"]]
    missing = [r for r in rows if not r["present"]]
    if not real_ready:
        cmds = sorted({r["how_to_get"] for r in missing if r["how_to_get"].startswith("geocore weights download")})
        cmd = cmds[0] if cmds else (missing[0]["how_to_get"] if missing else "")
        st.info(
            "No pretrained model weights are on this machine, so real predictions are not available. "
            f"Get GeoCLIP's backbone with:\n\n```\n{cmd}\n```\n"
            + ("You can still try the page with a **random backbone (demo)** model: its predictions mean nothing."
               if ready else ""),
            icon="ℹ️",
        )
    with st.sidebar:
        if missing:
            with st.expander(f"{len(missing)} model(s) without weights here"):
                for r in missing:
                    how = r["how_to_get"]
                    st.markdown(f"**{r['name']}**: {r['detail']}"
                                + (f" — get with `{how}`" if how and how not in r["detail"] else ""))
        if not ready:
            return None
        names = [r["name"] for r in real_ready] + [r["name"] for r in ready if r["random"]]
        labels = {r["name"]: model_label(r) for r in ready}
        test_model = os.environ.get(TEST_MODEL_ENV)
        index = names.index(prefer) if prefer in names else names.index(test_model) if test_model in names else 0
        return st.selectbox("Model", names, index=index, format_func=labels.get, key=key)


NO_TEXT_MODULES = ("geocore.models.translocator", "geocore.models.geodecoder")


def _supports(name: str, method: str) -> bool:
    """False for models known not to have `method` (cell classifiers have no text tower); pages re-check after loading."""
    from geocore.models.registry import model_entry

    if method == "predict_text":
        return not getattr(model_entry(name).builder, "__module__", "").startswith(NO_TEXT_MODULES)
    return True


@st.cache_resource(show_spinner="Loading model…", max_entries=4)
def _load_model_cached(name: str, gallery_spec: str):
    from geocore.geo.gallery import grid_gallery
    from geocore.models.registry import load_model_for_user

    model = load_model_for_user(name)
    if gallery_spec == "small" and hasattr(model, "set_gallery"):
        model.set_gallery(grid_gallery(1000.0))
    return model


def load_model(name: str):
    """The model `name` (cached for the server's life); GeocoreError → notice and None."""
    spec = os.environ.get(TEST_GALLERY_ENV, "") if name == os.environ.get(TEST_MODEL_ENV) else ""
    try:
        return _load_model_cached(name, spec)
    except WeightsMissingError as err:
        st.info(str(err), icon="ℹ️")
    except GeocoreError as err:
        show_error(err)
    return None


def is_random(model) -> bool:
    from geocore.models.registry import model_entry

    if getattr(model, "random_backbone", False):
        return True
    try:
        return bool(model_entry(getattr(model, "model_name", "")).random_ok)
    except GeocoreError:
        return False


def random_label(model) -> None:
    """The visible label every result of a random model carries."""
    if is_random(model):
        st.warning(f"⚠️ {getattr(model, 'model_name', 'model')}: {RANDOM_LABEL}")


def gallery_controls(model) -> tuple[str, tuple[float, float, float, float] | None, float]:
    """Sidebar: model's gallery, or a region (bbox) filter of it, or a grid over a region."""
    if not hasattr(model, "set_gallery"):
        st.sidebar.caption("This model scores its own geo-cells (no gallery choice).")
        return "default", None, 0.0
    mode = st.sidebar.radio("Candidates", ["Model gallery", "Gallery inside a region", "Grid over a region"],
                            key="gallery_mode")
    if mode == "Model gallery":
        return "default", None, 0.0
    c1, c2 = st.sidebar.columns(2)
    south = c1.number_input("South", -90.0, 90.0, 35.0, key="bb_s")
    north = c2.number_input("North", -90.0, 90.0, 60.0, key="bb_n")
    west = c1.number_input("West", -180.0, 180.0, -10.0, key="bb_w")
    east = c2.number_input("East", -180.0, 180.0, 30.0, key="bb_e")
    spacing = 0.0
    if mode == "Grid over a region":
        spacing = st.sidebar.number_input("Grid spacing (km)", 1.0, 5000.0, 50.0, key="bb_km")
    return ("bbox" if mode.startswith("Gallery") else "grid"), (south, west, north, east), spacing


class gallery_applied:
    """Context manager: score another gallery through a view of the shared model (weights shared,
    gallery its own), so other sessions using the cached model never see this one's region."""

    def __init__(self, model, mode: str, box, spacing: float):
        self.model, self.mode, self.box, self.spacing = model, mode, box, spacing

    def __enter__(self):
        from geocore.errors import InputError
        from geocore.geo import gallery as galleries

        if self.mode == "default" or not hasattr(self.model, "with_gallery"):
            return self.model
        new = (galleries.filter_gallery(self.model.gallery, self.box) if self.mode == "bbox"
               else galleries.grid_gallery(self.spacing, bbox=self.box))
        if len(new) == 0:
            raise InputError("no gallery points inside this region: widen the box or use a grid")
        return self.model.with_gallery(new)

    def __exit__(self, *exc):
        return False


# --- maps -----------------------------------------------------------------------------------------


def leaflet_assets() -> tuple[str, str] | None:
    """(leaflet.js, leaflet.css) text from app/static/vendor, or None when `make setup` has not run."""
    return _leaflet_assets()


@lru_cache(maxsize=1)
def _leaflet_assets() -> tuple[str, str] | None:
    for d in LEAFLET_DIRS:
        js, css = d / "leaflet.js", d / "leaflet.css"
        if js.is_file() and css.is_file():
            return js.read_text(encoding="utf-8"), css.read_text(encoding="utf-8")
    return None


def tiles_reachable() -> bool:
    """Cached (5 min) ≤1 s TCP check that OpenStreetMap tiles can be reached from here."""
    if os.environ.get("GEOCORE_APP_OFFLINE"):
        return False
    return _tiles_reachable(int(time.time() // 300))


@lru_cache(maxsize=2)
def _tiles_reachable(_bucket: int) -> bool:
    try:
        with socket.create_connection(TILE_HOST, timeout=1.0):
            return True
    except OSError:
        return False


@lru_cache(maxsize=1)
def countries_geojson() -> dict:
    """Natural Earth countries as GeoJSON with coordinates rounded to 0.01° (smaller pages)."""
    from geocore.geo.countries import countries

    gj = json.loads(countries()[["name", "iso_a3", "continent", "geometry"]].to_json())

    def rnd(c):
        return [rnd(x) for x in c] if isinstance(c[0], list) else [round(c[0], 2), round(c[1], 2)]

    for f in gj["features"]:
        f["geometry"]["coordinates"] = rnd(f["geometry"]["coordinates"])
    return gj


def base_map(center=(20.0, 0.0), zoom: int = 2):
    """A folium map with the offline countries basemap (and OSM tiles when reachable)."""
    import folium

    m = folium.Map(location=list(center), zoom_start=zoom, tiles=None, world_copy_jump=True,
                   control_scale=True, prefer_canvas=False)
    m.get_root().header.add_child(folium.Element(
        "<style>.leaflet-container{background:#cfe3f0}</style>"))
    if tiles_reachable():
        folium.TileLayer("OpenStreetMap", name="OpenStreetMap", opacity=0.6).add_to(m)
    # the countries sit in their own pane under the overlays, so heatmaps and markers draw on top of land
    folium.map.CustomPane("basemap", z_index=250, pointer_events=True).add_to(m)
    folium.GeoJson(countries_geojson(), name="countries", pane="basemap",
                   style_function=lambda f: {"fillColor": "#f4f1e8", "color": "#8a8a8a", "weight": 0.6,
                                             "fillOpacity": 1.0 if not tiles_reachable() else 0.2},
                   tooltip=folium.GeoJsonTooltip(["name"], labels=False)).add_to(m)
    return m


def map_html(m) -> str | None:
    """Self-contained HTML of a folium map: Leaflet inlined, no external URL left."""
    import folium

    assets = leaflet_assets()
    if assets is None:
        return None
    js, css = assets
    saved_js, saved_css = folium.Map.default_js, folium.Map.default_css
    folium.Map.default_js, folium.Map.default_css = [], []
    try:
        html = m.get_root().render()
    finally:
        folium.Map.default_js, folium.Map.default_css = saved_js, saved_css
    inline = f"<style>{css}</style>\n<script>{js}</script>\n"
    return html.replace("<head>", "<head>\n" + inline, 1)


def show_map(m, height: int = 460, key: str | None = None) -> None:
    html = map_html(m)
    if html is None:
        st.warning("Map scripts are missing (app/static/vendor): run `make setup` to install Leaflet locally.")
        return
    st.iframe(html, height=height)


def _mercator_y(lat: np.ndarray) -> np.ndarray:
    lat = np.clip(lat, -MERCATOR_MAX_LAT, MERCATOR_MAX_LAT)
    return np.log(np.tan(np.pi / 4 + np.deg2rad(lat) / 2))


def probability_png(latlon: np.ndarray, probs: np.ndarray, width: int = 720, sigma_px: float | None = None,
                    cmap: str = "inferno_r") -> str:
    """A world probability heatmap as a PNG data URI, rows spaced in Web-Mercator y (Leaflet's projection).

    The blur follows the candidates' spacing (about 0.6 of the mean gap between points), so a sparse
    gallery reads as a surface rather than isolated dots, and the 100K gallery keeps its detail.
    """
    if sigma_px is None:
        spacing_deg = math.sqrt(41253.0 / max(len(latlon), 1))  # sphere area in deg² / points
        sigma_px = float(np.clip(0.6 * spacing_deg * width / 360.0, 1.5, 24.0))
    from matplotlib import colormaps
    from PIL import Image
    from scipy.ndimage import gaussian_filter

    height = width  # Mercator world square between ±85.05°
    ymax = _mercator_y(np.array([MERCATOR_MAX_LAT]))[0]
    col = np.clip(((latlon[:, 1] + 180.0) / 360.0 * width).astype(int), 0, width - 1)
    row = np.clip(((ymax - _mercator_y(latlon[:, 0])) / (2 * ymax) * height).astype(int), 0, height - 1)
    grid = np.zeros((height, width), np.float64)
    np.add.at(grid, (row, col), probs.astype(np.float64))
    grid = gaussian_filter(grid, sigma_px, mode="wrap")
    if grid.max() > 0:
        grid = grid / grid.max()
    rgba = colormaps[cmap](grid)
    rgba[..., 3] = np.clip(grid ** 0.5 * 1.2, 0, 0.85)
    buf = io.BytesIO()
    Image.fromarray((rgba * 255).astype(np.uint8), "RGBA").save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def add_heatmap(m, latlon: np.ndarray, probs: np.ndarray, name: str = "probability") -> None:
    import folium

    folium.raster_layers.ImageOverlay(
        probability_png(np.asarray(latlon, np.float64), np.asarray(probs, np.float64)),
        bounds=[[-MERCATOR_MAX_LAT, -180.0], [MERCATOR_MAX_LAT, 180.0]], name=name, opacity=1.0,
        interactive=False, zindex=2,
    ).add_to(m)


def prediction_map(pred, table, *, truth: tuple[float, float] | None = None, truth_km: float | None = None,
                   truth_label: str = "EXIF GPS (truth)", recorded: tuple[float, float] | None = None,
                   recorded_label: str = "recorded prediction"):
    """Heatmap of the full distribution + numbered top-k markers (+ the truth and its error line).

    `recorded`: another prediction of the same image (e.g. the one in a results file), marked with an
    orange ring; the error line then goes from the truth to it instead of to this run's top-1.
    """
    import folium

    m = base_map()
    if pred is not None and pred.probs_full is not None and pred.candidates is not None:
        add_heatmap(m, pred.candidates.detach().cpu().double().numpy(),
                    pred.probs_full[0].detach().cpu().double().numpy())
    for r in table.itertuples():
        folium.CircleMarker(
            [r.lat, r.lon], radius=9 if r.rank == 1 else 6, color="#1f4e9c", weight=2, fill=True,
            fill_color="#4f8ef7" if r.rank > 1 else "#0b3d91", fill_opacity=0.9,
            tooltip=tip(f"#{r.rank} {place_label(r)} — p={r.prob:.3f}"),
        ).add_to(m)
    if recorded is not None:
        folium.CircleMarker(list(recorded), radius=10, color="#e6550d", weight=3, fill=True, fill_color="#fdae6b",
                            fill_opacity=0.8, tooltip=tip(recorded_label)).add_to(m)
    if truth is not None:
        folium.CircleMarker(list(truth), radius=8, color="#0a7d2c", weight=3, fill=True, fill_color="#35c46a",
                            fill_opacity=0.9, tooltip=tip(truth_label)).add_to(m)
        end = list(recorded) if recorded is not None else [table.iloc[0].lat, table.iloc[0].lon]
        folium.PolyLine([list(truth), end], color="#d62728", weight=2.5, dash_array="6 4",
                        tooltip=f"error {truth_km:,.1f} km" if truth_km is not None else "error").add_to(m)
    pts = table[["lat", "lon"]].to_numpy(np.float64)
    for extra in (truth, recorded):
        if extra is not None:
            pts = np.vstack([pts, np.asarray(extra, np.float64)[None]])
    if len(pts):
        lo, hi = pts.min(0), pts.max(0)
        m.fit_bounds([[lo[0] - 2, lo[1] - 2], [hi[0] + 2, hi[1] + 2]], padding=(20, 20), max_zoom=6)
    return m


def tip(text: str) -> str:
    """Tooltip text safe inside folium's JS template literals (a backtick, as in "Sha`biyat", breaks the map)."""
    return str(text).replace("\\", "&#92;").replace("`", "&#96;").replace("${", "&#36;{")


def place_label(r) -> str:
    place = ", ".join(x for x in (getattr(r, "place", ""), getattr(r, "admin1", "")) if x)
    return place or "(sea)"


def topk_display(table):
    """The top-k table as users read it: rank, place, country, probability, lat, lon."""
    import pandas as pd

    return pd.DataFrame({
        "rank": table["rank"].astype(int),
        "place": [place_label(r) for r in table.itertuples()],
        "country": [c or "(sea)" for c in table["country"]],
        "probability": table["prob"].round(4),
        "lat": table["lat"].round(4),
        "lon": table["lon"].round(4),
    })


def render_locate_result(res, model, *, image_bytes: bytes | None = None, map_height: int = 420) -> None:
    """One photo's answer: photo, top-k table, heatmap map, EXIF truth and error (or its error notice)."""
    st.subheader(res.name)
    if not res.ok:
        st.error(f"{res.name}: {res.error}")
        return
    random_label(model)
    left, right = st.columns([1, 2])
    with left:
        if image_bytes is not None:
            try:
                from geocore.data.images import load_image

                img = load_image(image_bytes, name=res.name)
                img.thumbnail((640, 640))
                st.image(img, caption=res.name, width="stretch")
            except GeocoreError:
                pass
        st.dataframe(topk_display(res.table), hide_index=True, width="stretch")
        if res.exif_gps is not None:
            st.success(f"EXIF GPS {res.exif_gps[0]:.4f}, {res.exif_gps[1]:.4f}: top-1 is "
                       f"**{res.exif_error_km:,.1f} km** away")
        else:
            st.caption("No GPS position in this photo's EXIF, so no error to show.")
    with right:
        show_map(prediction_map(res.prediction, res.table, truth=res.exif_gps, truth_km=res.exif_error_km),
                 height=map_height)
        st.caption("Shading: probability over the candidate points. Dots: top-k (dark = top-1)."
                   + (" Green: EXIF GPS; red dashes: error of the top-1." if res.exif_gps else ""))


def world_outline_axes(ax) -> None:
    """Country outlines (Natural Earth) on a lon/lat matplotlib axes."""
    from geocore.geo.countries import countries

    countries().boundary.plot(ax=ax, color="#333333", linewidth=0.3)
    ax.set_xlim(-180, 180)
    ax.set_ylim(-90, 90)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("")
    ax.set_ylabel("")


def fmt_pct(x: float) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


# --- pydeck (deck.gl, bundled with Streamlit: WebGL, nothing fetched) ------------------------------
# `map_provider=None` is what keeps deck.gl offline: with it pydeck writes its "__MAP_STYLE__" sentinel,
# which Streamlit drops without putting its default Carto basemap (a network style + tiles) underneath.
# The basemap is the same Natural Earth GeoJSON as the folium maps. No TextLayer (it would need fonts).


def hex_rgb(color: str, alpha: int = 255) -> list[int]:
    c = color.lstrip("#")
    return [int(c[i:i + 2], 16) for i in (0, 2, 4)] + [alpha]


def deck_countries_layer():
    """Natural Earth countries as a deck.gl GeoJsonLayer (the offline basemap)."""
    import pydeck as pdk

    return pdk.Layer("GeoJsonLayer", countries_geojson(), id="countries", stroked=True, filled=True,
                     get_fill_color=[244, 241, 232, 255], get_line_color=[138, 138, 138, 255],
                     line_width_min_pixels=0.6, pickable=False)


def world_deck(layers: list, *, tooltip: dict | None = None, zoom: float = 0.7, center=(20.0, 0.0),
               outlines_on_top: bool = False):
    """A pydeck Deck over the offline countries basemap, with no map provider (nothing to fetch).

    outlines_on_top: for layers that cover the globe, draw the countries as outlines above them instead.
    """
    import pydeck as pdk

    ocean = pdk.Layer("PolygonLayer", [{"polygon": [[-180, -85], [180, -85], [180, 85], [-180, 85]]}], id="ocean",
                      get_polygon="polygon", get_fill_color=[207, 227, 240, 255], stroked=False, pickable=False)
    if outlines_on_top:
        outlines = pdk.Layer("GeoJsonLayer", countries_geojson(), id="countries", stroked=True, filled=False,
                             get_line_color=[30, 30, 30, 200], line_width_min_pixels=0.6, pickable=False)
        stack = [ocean, *layers, outlines]
    else:
        stack = [ocean, deck_countries_layer(), *layers]
    return pdk.Deck(layers=stack, map_provider=None,
                    initial_view_state=pdk.ViewState(latitude=center[0], longitude=center[1], zoom=zoom),
                    views=[pdk.View(type="MapView", controller=True)], tooltip=tooltip or False)


def selected_point(selection, layer_id: str) -> tuple[float, float] | None:
    """(lat, lon) of the first object picked in `layer_id` of an `st.pydeck_chart` selection, else None.

    `selection` is what Streamlit returns (`state.selection`, or `st.session_state[key]["selection"]`):
    `{"indices": {layer: [i]}, "objects": {layer: [{...}]}}`; the objects carry our `lat`/`lon` fields.
    """
    try:
        objs = (selection or {}).get("objects", {}).get(layer_id) or []
        obj = objs[0]
        lat, lon = float(obj["lat"]), float(obj["lon"])
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        return None
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0) or math.isnan(lat + lon):
        return None
    return lat, lon


def apply_selected_point(chart_key: str, layer_id: str, lat_key: str, lon_key: str) -> tuple[float, float] | None:
    """`on_select` callback of a pickable `st.pydeck_chart`: copy the picked object's (lat, lon) into the
    number inputs `lat_key`/`lon_key` (callbacks run before the script, so the widgets take the new values)."""
    state = st.session_state.get(chart_key) or {}
    point = selected_point(state.get("selection") if hasattr(state, "get") else None, layer_id)
    if point is not None:
        st.session_state[lat_key], st.session_state[lon_key] = point
    return point
