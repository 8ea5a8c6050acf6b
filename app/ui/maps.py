"""Offline folium (Leaflet) maps: the countries basemap, the probability heatmap, a prediction's map.

Maps work with no network at all:
- Leaflet 1.9.4 comes from npm at `make setup` into `app/static/vendor/` (git-ignored) and its JS and
  CSS are INLINED into the HTML handed to `st.iframe`. That is a `srcdoc` iframe: inlined code needs no
  server route, no `enableStaticServing`, no base-path knowledge behind a proxy, and nothing is requested
  when the frame loads. folium's other default assets (jQuery, Bootstrap, awesome-markers, Font Awesome)
  are dropped: nothing here uses them.
- The basemap is the Natural Earth 1:110m countries layer shipped with geocore (tiles=None);
  OpenStreetMap tiles are added on top only when a cached ≤1 s reachability check succeeds.
- The probability heatmap is our own PNG (Web-Mercator rows, so it lines up with Leaflet) placed
  with `folium.raster_layers.ImageOverlay` as a data URI: no HeatMap plugin JS to fetch. It sits in its own
  pane between the basemap and the vector overlays, so search regions, markers and lines draw on top of it.
- A search region is a `folium.GeoJson` layer of its (Multi)Polygon (split at the antimeridian), outlined in
  the report's colour for its level, its SVG paths of class `REGION_CLASS`.
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

from geocore.eval.regions import place_label

from ui.regions import REGION_CLASS, REGION_STYLES, calibration_text, km2, pct

VENDOR = Path(__file__).resolve().parents[1] / "static" / "vendor"
LEAFLET_DIRS = (VENDOR / "node_modules" / "leaflet" / "dist", VENDOR / "leaflet" / "dist", VENDOR / "leaflet")
TILE_HOST = ("tile.openstreetmap.org", 443)
OFFLINE_ENV = "GEOCORE_APP_OFFLINE"  # test-only: skip the tile check
MERCATOR_MAX_LAT = 85.0511287798


@lru_cache(maxsize=1)
def leaflet_assets() -> tuple[str, str] | None:
    """(leaflet.js, leaflet.css) text from app/static/vendor, or None when `make setup` has not run."""
    for d in LEAFLET_DIRS:
        js, css = d / "leaflet.js", d / "leaflet.css"
        if js.is_file() and css.is_file():
            return js.read_text(encoding="utf-8"), css.read_text(encoding="utf-8")
    return None


def tiles_reachable() -> bool:
    """Cached (5 min) ≤1 s TCP check that OpenStreetMap tiles can be reached from here."""
    if os.environ.get(OFFLINE_ENV):
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


def tip(text: str) -> str:
    """Tooltip text safe inside folium's JS template literals (a backtick, as in "Sha`biyat", breaks the map)."""
    return str(text).replace("\\", "&#92;").replace("`", "&#96;").replace("${", "&#36;{")


def base_map(center: tuple[float, float] = (20.0, 0.0), zoom: int = 2):
    """A folium map with the offline countries basemap (and OSM tiles when reachable)."""
    import folium

    online = tiles_reachable()
    m = folium.Map(location=list(center), zoom_start=zoom, tiles=None, world_copy_jump=True, control_scale=True)
    m.get_root().header.add_child(folium.Element("<style>.leaflet-container{background:#cfe3f0}</style>"))
    if online:
        folium.TileLayer("OpenStreetMap", name="OpenStreetMap", opacity=0.6).add_to(m)
    # the countries sit in their own pane under the overlays, so heatmaps and markers draw on top of land
    folium.map.CustomPane("basemap", z_index=250, pointer_events=True).add_to(m)
    style = {"fillColor": "#f4f1e8", "color": "#8a8a8a", "weight": 0.6, "fillOpacity": 0.2 if online else 1.0}
    folium.GeoJson(countries_geojson(), name="countries", pane="basemap", style_function=lambda f: style,
                   tooltip=folium.GeoJsonTooltip(["name"], labels=False)).add_to(m)
    return m


def map_html(m) -> str | None:
    """Self-contained HTML of a folium map: Leaflet inlined, no external URL left; None without Leaflet."""
    assets = leaflet_assets()
    if assets is None:
        return None
    js, css = assets
    # no CDN links: set on this map only (the class attributes stay as they are, so maps rendered at the same
    # time in other sessions' threads never see them swapped)
    m.default_js, m.default_css = [], []
    html = m.get_root().render()
    return html.replace("<head>", f"<head>\n<style>{css}</style>\n<script>{js}</script>\n", 1)


def forget_parsed_urls() -> None:
    """Empty `urllib.parse.urlsplit`'s cache. Since Python 3.11 it keeps the last 128 strings it parsed, and
    `st.iframe` (is this a URL?) and folium's image overlay pass each map's whole HTML (~1 MB) and heatmap data
    URI through it: a busy server would hold the last 128 maps (~0.4 GB) for nothing."""
    import urllib.parse

    cache_clear = getattr(urllib.parse.urlsplit, "cache_clear", None)
    if cache_clear is not None:
        cache_clear()


def show_map(m, height: int = 460) -> None:
    """Draw a folium map (or say how to install Leaflet when it is missing)."""
    html = map_html(m)
    if html is None:
        st.warning("Map scripts are missing (app/static/vendor): run `make setup` to install Leaflet locally.")
        return
    st.iframe(html, height=height)
    forget_parsed_urls()


def _mercator_y(lat: np.ndarray) -> np.ndarray:
    lat = np.clip(lat, -MERCATOR_MAX_LAT, MERCATOR_MAX_LAT)
    return np.log(np.tan(np.pi / 4 + np.deg2rad(lat) / 2))


def probability_png(latlon: np.ndarray, probs: np.ndarray, width: int = 720, sigma_px: float | None = None,
                    cmap: str = "inferno_r") -> str:
    """A world probability heatmap as a PNG data URI, rows spaced in Web-Mercator y (Leaflet's projection).

    The blur follows the candidates' spacing (about 0.6 of the mean gap between points), so a sparse
    gallery reads as a surface rather than isolated dots, and the 100K gallery keeps its detail.
    """
    from matplotlib import colormaps
    from PIL import Image
    from scipy.ndimage import gaussian_filter

    if sigma_px is None:
        spacing_deg = math.sqrt(41253.0 / max(len(latlon), 1))  # sphere area in deg² / points
        sigma_px = float(np.clip(0.6 * spacing_deg * width / 360.0, 1.5, 24.0))
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


def add_heatmap(m, latlon: np.ndarray, probs: np.ndarray) -> None:
    """The probability of each (lat, lon) candidate as a heatmap layer of `m`."""
    import folium

    folium.map.CustomPane("heatmap", z_index=300, pointer_events=False).add_to(m)  # above land, under overlays
    folium.raster_layers.ImageOverlay(
        probability_png(np.asarray(latlon, np.float64), np.asarray(probs, np.float64)),
        bounds=[[-MERCATOR_MAX_LAT, -180.0], [MERCATOR_MAX_LAT, 180.0]], name="probability", opacity=1.0,
        interactive=False, zindex=2, pane="heatmap",
    ).add_to(m)


def region_geojson(region, tolerance_deg: float | None = None) -> dict:
    """A search region as a GeoJSON Feature for Leaflet: its geometry simplified by `tolerance_deg` (default: a
    300th of the region's size, 0.01°–0.1°, invisible at the zoom that shows it whole) and rounded to 0.001°,
    with its level, area and calibration as properties."""
    from shapely.geometry import mapping

    if tolerance_deg is None:
        tolerance_deg = float(np.clip(math.sqrt(max(region.area_km2, 0.0)) / 111.2 / 300.0, 0.01, 0.1))
    geom = region.geometry
    if not geom.is_empty and tolerance_deg > 0:
        geom = geom.simplify(tolerance_deg, preserve_topology=True)

    def rnd(c):
        return [rnd(x) for x in c] if isinstance(c[0], (list, tuple)) else [round(c[0], 3), round(c[1], 3)]

    gj = mapping(geom)
    if gj.get("coordinates"):
        gj = {"type": gj["type"], "coordinates": rnd(gj["coordinates"])}
    return {"type": "Feature", "geometry": gj,
            "properties": {"level": region.level, "area_km2": round(float(region.area_km2), 1),
                           "n_areas": int(region.n_areas), "calibrated": bool(region.calibrated)}}


def add_region(m, region) -> None:
    """A search region outlined (and lightly filled) on `m`, over the heatmap; its tooltip gives its numbers."""
    import folium

    style = REGION_STYLES.get(round(region.level, 2), {"color": "#00a0a0", "dashArray": None})
    feature = region_geojson(region)
    if not feature["geometry"].get("coordinates"):
        return
    look = {"color": style["color"], "weight": 2.5, "opacity": 1.0, "fill": True, "fillColor": style["color"],
            "fillOpacity": 0.12, "dashArray": style["dashArray"], "className": REGION_CLASS}
    folium.GeoJson(feature, name=f"{pct(region.level)} search region", style_function=lambda f: look,
                   tooltip=tip(f"{pct(region.level)} search region: {km2(region.area_km2)} km², "
                               f"{region.n_areas} area(s), {calibration_text(region)}")).add_to(m)


def prediction_map(pred, table, *, truth: tuple[float, float] | None = None, truth_km: float | None = None,
                   truth_label: str = "EXIF GPS (truth)", recorded: tuple[float, float] | None = None,
                   recorded_label: str = "recorded prediction", region=None):
    """Heatmap of the full distribution + a search region + numbered top-k markers (+ the truth and its error line).

    `pred`: a one-image `Prediction` (its heatmap drawn when made with `full=True`); `table`: its
    `geocore.locate.prediction_table`. `recorded`: another prediction of the same image (e.g. the one in a
    results file), marked with an orange ring; the error line then goes from the truth to it instead of to
    this run's top-1. `region`: a `SearchRegion` to outline (the view then fits it too).
    """
    import folium

    m = base_map()
    if pred is not None and pred.probs_full is not None and pred.candidates is not None:
        add_heatmap(m, pred.candidates.detach().cpu().double().numpy(),
                    pred.probs_full[0].detach().cpu().double().numpy())
    if region is not None:
        add_region(m, region)
    for r in table.itertuples():
        folium.CircleMarker(
            [r.lat, r.lon], radius=9 if r.rank == 1 else 6, color="#1f4e9c", weight=2, fill=True,
            fill_color="#4f8ef7" if r.rank > 1 else "#0b3d91", fill_opacity=0.9,
            tooltip=tip(f"#{r.rank} {place_label(r.place, r.admin1)} — p={r.prob:.3f}"),
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
    if region is not None and not region.geometry.is_empty:
        west, south, east, north = region.geometry.bounds
        pts = np.vstack([pts, [[south, west], [north, east]]])
    if len(pts):
        lo, hi = pts.min(0), pts.max(0)
        m.fit_bounds([[lo[0] - 2, lo[1] - 2], [hi[0] + 2, hi[1] + 2]], padding=(20, 20), max_zoom=6)
    return m
