"""Offline folium (Leaflet) maps: the countries basemap, the probability heatmap, a prediction's map.

Maps work with no network at all:
- Leaflet 1.9.4 comes from npm at `make setup` into `app/static/vendor/` (git-ignored). Each map is the HTML
  of a `srcdoc` iframe (`st.iframe`). The server serves app/static/ (`enableStaticServing` in
  .streamlit/config.toml): the map's page loads Leaflet and the countries' GeoJSON (`countries_json`, written
  once to app/static/vendor/geocore/ under a content-hashed name) from there by URLs relative to the page
  (`STATIC_URL`; a srcdoc frame resolves them against its parent's URL, so a proxy's base path is kept), and the
  browser caches them: each map's page is ~25 kB instead of ~390 kB with both inlined, less to send, decode and
  parse per map (bench/RESULTS.md, "App: upload to drawn heatmap"). Started without that setting (Streamlit
  reads its config from the folder it starts in) or unable to write the countries' file, the maps inline
  everything, as they always did. folium's other default assets (jQuery, Bootstrap, awesome-markers, Font
  Awesome) are dropped: nothing here uses them.
- The basemap is the Natural Earth 1:110m countries layer shipped with geocore (tiles=None);
  OpenStreetMap tiles are added on top only when a cached ≤1 s reachability check succeeds.
- The probability heatmap is our own PNG (Web-Mercator rows, so it lines up with Leaflet) placed with
  `L.imageOverlay` as a data URI: no HeatMap plugin JS to fetch. It sits in its own pane between the basemap
  and the vector overlays, so search regions, markers and lines draw on top of it. It has only as many pixels
  as its blur needs, one palette byte each, and the browser stretches it smoothly: a 720² RGBA PNG encoded with
  `optimize=True` used to be most of the time from an upload to the drawn map (bench/RESULTS.md).
- The countries layer is serialised once per server (`countries_json`) and, when inlined, like the heatmap
  written into each map's script as it is (`raw_script`), not re-serialised, re-styled and template-compiled
  per map.
- The overlays (the search region, the top-k markers, the truth and its error line, the view) are one script
  of Leaflet calls written here (`region_js`, `circle_js`) rather than a dozen folium elements, whose template
  rendering took ~20 ms a map. A search region is an `L.geoJson` layer of its (Multi)Polygon (split at the
  antimeridian), outlined in the report's colour for its level, its SVG paths of class `REGION_CLASS`. Tooltip
  texts are HTML-escaped (`tip`): Leaflet shows them as HTML, and a results file's IMG_ID is user-supplied.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Hashable
from functools import lru_cache
from html import escape as html_escape
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from geocore.present import km, km2, pct, place_label
from geocore.tensors import as_numpy

from ui.page import session_memo
from ui.search_regions import REGION_CLASS, REGION_STYLES, calibration_text

APP_STATIC = Path(__file__).resolve().parents[1] / "static"
VENDOR = APP_STATIC / "vendor"
# app/static/ as Streamlit serves it, relative to the page: a srcdoc frame resolves URLs against its parent's,
# so this holds behind a proxy's base path too
STATIC_URL = "app/static/"
COUNTRIES_GLOBAL = "GEOCORE_COUNTRIES"  # the countries' GeoJSON in a served script
OLD_MTIME = 946_684_800  # 2000-01-01: the served countries' script's date (see _static_asset_urls)
LEAFLET_DIRS = (VENDOR / "node_modules" / "leaflet" / "dist", VENDOR / "leaflet" / "dist", VENDOR / "leaflet")
TILE_HOST = ("tile.openstreetmap.org", 443)
OFFLINE_ENV = "GEOCORE_APP_OFFLINE"  # test-only: skip the tile check
MERCATOR_MAX_LAT = 85.0511287798
HEATMAP_MAX_PX = 720  # the heatmap image's width (= height) for a dense gallery
HEATMAP_MIN_PX = 128
HEATMAP_PX_PER_SIGMA = 4.0  # pixels per blur radius: a smooth surface needs no more


def _leaflet_dir() -> Path | None:
    return next((d for d in LEAFLET_DIRS if (d / "leaflet.js").is_file() and (d / "leaflet.css").is_file()), None)


@lru_cache(maxsize=1)
def leaflet_assets() -> tuple[str, str] | None:
    """(leaflet.js, leaflet.css) text from app/static/vendor, or None when `make setup` has not run."""
    d = _leaflet_dir()
    if d is None:
        return None
    return (d / "leaflet.js").read_text(encoding="utf-8"), (d / "leaflet.css").read_text(encoding="utf-8")


def static_serving() -> bool:
    """Whether this server serves app/static/ at `STATIC_URL` (`server.enableStaticServing`, set in
    .streamlit/config.toml, which Streamlit reads from the folder it is started in)."""
    try:
        return bool(st.get_option("server.enableStaticServing"))
    except Exception:  # no Streamlit runtime config (a plain import): inline everything
        return False


@lru_cache(maxsize=1)
def _static_asset_urls() -> tuple[str, str, str] | None:
    """(leaflet.js, leaflet.css, countries script) as URLs under `STATIC_URL`, the countries' script written once
    into app/static/vendor/geocore/ under a content-hashed name; None when Leaflet is missing or the file cannot
    be written (the maps then inline everything)."""
    leaflet = _leaflet_dir()
    if leaflet is None:
        return None
    text = f"window.{COUNTRIES_GLOBAL} = {countries_json()};\n"
    path = VENDOR / "geocore" / f"countries-{hashlib.sha256(text.encode()).hexdigest()[:12]}.js"
    try:
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
        # Streamlit serves app/static/ without Cache-Control, so a browser keeps a file for a tenth of its age:
        # date the content-hashed file (new content, new name) far back, or every map would ask if it changed
        os.utime(path, (OLD_MTIME, OLD_MTIME))
    except OSError:
        return None

    files = (leaflet / "leaflet.js", leaflet / "leaflet.css", path)
    root = os.path.realpath(APP_STATIC)
    if any(os.path.commonpath([root, os.path.realpath(f)]) != root for f in files):
        return None  # a link out of app/static/ (e.g. a shared vendor folder): Streamlit refuses to serve it
    return tuple(STATIC_URL + f.relative_to(APP_STATIC).as_posix() for f in files)


def served_assets() -> tuple[str, str, str] | None:
    """`_static_asset_urls()` when this server serves app/static/, else None (the maps inline everything)."""
    return _static_asset_urls() if static_serving() else None


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


@lru_cache(maxsize=1)
def countries_json() -> str:
    """`countries_geojson()` as JSON text (`js_value`), made once per server: every map embeds or loads this same
    string."""
    return js_value(countries_geojson())


@lru_cache(maxsize=1)
def _raw_script_class():
    """A folium child whose JavaScript goes into the map's <script> as it is. (branca compiles every macro's output
    as a Jinja template before writing it: for the countries' 200 kB that alone took ~16 ms a map.)"""
    from branca.element import Element, MacroElement

    class _Text(Element):
        def __init__(self, text: str):
            super().__init__()
            self._text = text

        def render(self, **kwargs) -> str:
            return self._text

    class RawScript(MacroElement):
        def __init__(self, name: str, js: str):
            super().__init__()
            self._name, self._js = name, js

        def render(self, **kwargs) -> None:
            js = self._js.replace("__MAP__", self._parent.get_name()).replace("__SELF__", self.get_name())
            self.get_root().script.add_child(_Text(js), name=self.get_name())

    return RawScript


def raw_script(name: str, js: str):
    """A folium element adding `js` to the map's script; `__MAP__` in it names the map, `__SELF__` the element."""
    return _raw_script_class()(name, js)


_ESCAPE_JS = 'function (c) { return "&#" + c.charCodeAt(0) + ";"; }'


def countries_layer(fill_opacity: float):
    """The countries basemap in the "basemap" pane: `countries_json()` from the served script (`served_assets`)
    or inlined as it is, one style for every country, its name as a tooltip (HTML-escaped in the browser)."""
    style = json.dumps({"fillColor": "#f4f1e8", "color": "#8a8a8a", "weight": 0.6, "fillOpacity": fill_opacity})
    data = f"window.{COUNTRIES_GLOBAL}" if served_assets() is not None else countries_json()
    return raw_script("countries", (
        f"var __SELF__ = L.geoJson({data}, {{pane: \"basemap\", style: {style}}})\n"
        f"  .bindTooltip(function (layer) {{ return String(layer.feature.properties.name)"
        f".replace(/[&<>\"'`]/g, {_ESCAPE_JS}); }}, {{sticky: true}})\n"
        "  .addTo(__MAP__);\n"))


def tip(text: str) -> str:
    """Tooltip text as HTML-safe text: Leaflet shows a tooltip as HTML, and names can come from a user's file (a
    results file's IMG_ID), so ``<``, ``>``, ``&`` and quotes are escaped; so are backticks, ``${`` and backslashes,
    which once broke folium's template literals (a name such as "Sha`biyat")."""
    return (html_escape(str(text), quote=True).replace("\\", "&#92;").replace("`", "&#96;")
            .replace("${", "&#36;{"))


def js_value(value: Any) -> str:
    """`value` as JSON for the map's <script>, with "</" escaped so no string in it can close the script."""
    return json.dumps(value).replace("</", "<\\/")


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
    countries_layer(0.2 if online else 1.0).add_to(m)
    return m


def map_html(m) -> str | None:
    """HTML of a folium map that needs nothing beyond this server: Leaflet and the countries from app/static/
    when the server serves it (`served_assets`: the browser caches them, each map's page is ~25 kB), otherwise
    inlined (~390 kB); no CDN or other external URL either way. None without Leaflet."""
    assets = leaflet_assets()
    if assets is None:
        return None
    # no CDN links: set on this map only (the class attributes stay as they are, so maps rendered at the same
    # time in other sessions' threads never see them swapped)
    m.default_js, m.default_css = [], []
    html = m.get_root().render()
    served = served_assets()
    if served is not None:
        js_url, css_url, countries_url = served
        head = (f'<link rel="stylesheet" href="{css_url}">\n<script src="{js_url}"></script>\n'
                f'<script src="{countries_url}"></script>\n')
    else:
        js, css = assets
        head = f"<style>{css}</style>\n<script>{js}</script>\n"
    return html.replace("<head>", "<head>\n" + head, 1)


def forget_parsed_urls() -> None:
    """Empty `urllib.parse.urlsplit`'s cache. Since Python 3.11 it keeps the last 128 strings it parsed, and
    `st.iframe` (is this a URL?) and folium's image overlay pass each map's whole HTML (~1 MB) and heatmap data
    URI through it: a busy server would hold the last 128 maps (~0.4 GB) for nothing."""
    import urllib.parse

    cache_clear = getattr(urllib.parse.urlsplit, "cache_clear", None)
    if cache_clear is not None:
        cache_clear()


NO_LEAFLET = "Map scripts are missing (app/static/vendor): run `make setup` to install Leaflet locally."
MAP_MEMO = "_map_html"  # session state: (group, {key: HTML}), the maps of the latest results only


def show_map(m, height: int = 460) -> None:
    """Draw a folium map (or say how to install Leaflet when it is missing)."""
    html = map_html(m)
    if html is None:
        st.warning(NO_LEAFLET)
        return
    st.iframe(html, height=height)
    forget_parsed_urls()


def show_remembered_map(group: Hashable, key: Hashable, build: Callable[[], Any], height: int = 460) -> None:
    """`show_map(build())`, its HTML remembered in this session under (`group`, `key`) while `group` (e.g. the
    results the map belongs to) stays the same. A rerun that changes nothing on the map (preparing the report)
    neither builds it again nor reloads its frame: folium gives every build new element ids, so a rebuilt map
    is a new page for the browser. In memory, in this session only, like the results it is drawn from."""
    memo = session_memo(MAP_MEMO, group)
    html = memo.get(key)
    if html is None:
        html = map_html(build())
        if html is None:
            st.warning(NO_LEAFLET)
            return
        memo[key] = html
    st.iframe(html, height=height)
    forget_parsed_urls()


def _mercator_y(lat: np.ndarray) -> np.ndarray:
    lat = np.clip(lat, -MERCATOR_MAX_LAT, MERCATOR_MAX_LAT)
    return np.log(np.tan(np.pi / 4 + np.deg2rad(lat) / 2))


def heatmap_blur_deg(n_points: int) -> float:
    """The heatmap's blur radius in degrees of longitude: about 0.6 of the mean gap between `n_points` candidates
    (so a sparse gallery reads as a surface rather than isolated dots), between 0.75° and 12°."""
    spacing_deg = math.sqrt(41253.0 / max(n_points, 1))  # sphere area in deg² / points
    return float(np.clip(0.6 * spacing_deg, 0.75, 12.0))


def heatmap_width(n_points: int) -> int:
    """Pixels across the heatmap image: `HEATMAP_PX_PER_SIGMA` per blur radius, 128 to 720. The surface is smooth
    at that scale, so the browser's stretching loses nothing; the 100K gallery keeps the full 720."""
    return int(np.clip(round(HEATMAP_PX_PER_SIGMA * 360.0 / heatmap_blur_deg(n_points)), HEATMAP_MIN_PX,
                       HEATMAP_MAX_PX))


def probability_png(latlon: np.ndarray, probs: np.ndarray, width: int | None = None, sigma_px: float | None = None,
                    cmap: str = "inferno_r") -> str:
    """A world probability heatmap as a PNG data URI, rows spaced in Web-Mercator y (Leaflet's projection).

    The blur follows the candidates' spacing (`heatmap_blur_deg`) and the image has as many pixels as that blur
    needs (`heatmap_width`, unless `width` is given). Saved without `optimize` (zlib's default effort): for
    a smooth 720² heatmap that search bought ~7 % in size for ~6× the time.
    """
    from matplotlib import colormaps
    from PIL import Image
    from scipy.ndimage import gaussian_filter

    if width is None:
        width = heatmap_width(len(latlon)) if sigma_px is None else HEATMAP_MAX_PX
    if sigma_px is None:
        sigma_px = heatmap_blur_deg(len(latlon)) * width / 360.0
    height = width  # Mercator world square between ±85.05°
    ymax = _mercator_y(np.array([MERCATOR_MAX_LAT]))[0]
    col = np.clip(((latlon[:, 1] + 180.0) / 360.0 * width).astype(int), 0, width - 1)
    row = np.clip(((ymax - _mercator_y(latlon[:, 0])) / (2 * ymax) * height).astype(int), 0, height - 1)
    grid = np.zeros((height, width), np.float64)
    np.add.at(grid, (row, col), probs.astype(np.float64))
    grid = gaussian_filter(grid, sigma_px, mode="wrap")
    if grid.max() > 0:
        grid = grid / grid.max()
    # colour and opacity are both functions of the value: a 256-entry RGBA palette and one byte per pixel
    levels = np.linspace(0.0, 1.0, 256)
    palette = colormaps[cmap](levels)
    palette[:, 3] = np.clip(levels ** 0.5 * 1.2, 0, 0.85)
    img = Image.fromarray(np.rint(grid * 255).astype(np.uint8), "P")
    img.putpalette((palette * 255).round().astype(np.uint8).tobytes(), rawmode="RGBA")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def add_heatmap(m, latlon: np.ndarray, probs: np.ndarray) -> None:
    """The probability of each (lat, lon) candidate as a heatmap layer of `m`: an `L.imageOverlay` of
    `probability_png` in its own pane (above land, under the overlays), stretched smoothly by the browser."""
    import folium

    folium.map.CustomPane("heatmap", z_index=300, pointer_events=False).add_to(m)
    uri = probability_png(np.asarray(latlon, np.float64), np.asarray(probs, np.float64))
    bounds = [[-MERCATOR_MAX_LAT, -180.0], [MERCATOR_MAX_LAT, 180.0]]
    raw_script("heatmap", f"var __SELF__ = L.imageOverlay({json.dumps(uri)}, {json.dumps(bounds)}, "
                          '{pane: "heatmap", opacity: 1.0, interactive: false, zIndex: 2}).addTo(__MAP__);\n').add_to(m)


def _simplify_for_drawing(geom, tolerance_deg: float):
    """A (Multi)Polygon simplified part by part with plain Douglas-Peucker (~1 ms, against ~30 ms for shapely's
    topology-preserving kind on a 1,000 km grid's 90 % region): at a 300th of the region's size a self-crossing
    it could make is below a pixel, and a part it would erase (smaller than the tolerance) is kept as it is."""
    import shapely

    if geom.geom_type not in ("Polygon", "MultiPolygon"):
        return geom.simplify(tolerance_deg, preserve_topology=True)
    parts = shapely.get_parts(geom)
    simple = shapely.simplify(parts, tolerance_deg, preserve_topology=False)
    simple = np.where(shapely.is_empty(simple), parts, simple)
    # GEOS repairs a part that simplifying made self-crossing, which can return a MultiPolygon or a collection:
    # flatten again and keep the polygons
    simple = shapely.get_parts(simple)
    simple = simple[shapely.get_type_id(simple) == shapely.GeometryType.POLYGON]
    if len(simple) == 0:
        return geom
    return simple[0] if len(simple) == 1 else shapely.multipolygons(simple)


def region_geojson(region, tolerance_deg: float | None = None) -> dict:
    """A search region as a GeoJSON Feature for Leaflet: its geometry simplified by `tolerance_deg` (default: a
    300th of the region's size, 0.01°–0.1°, invisible at the zoom that shows it whole) and rounded to 0.001°,
    with its level, area and calibration as properties."""
    from shapely.geometry import mapping

    if tolerance_deg is None:
        tolerance_deg = float(np.clip(math.sqrt(max(region.area_km2, 0.0)) / 111.2 / 300.0, 0.01, 0.1))
    geom = region.geometry
    if not geom.is_empty and tolerance_deg > 0:
        geom = _simplify_for_drawing(geom, tolerance_deg)

    def rnd(c):
        return [rnd(x) for x in c] if isinstance(c[0], (list, tuple)) else [round(c[0], 3), round(c[1], 3)]

    gj = mapping(geom)
    if gj.get("coordinates"):
        gj = {"type": gj["type"], "coordinates": rnd(gj["coordinates"])}
    return {"type": "Feature", "geometry": gj,
            "properties": {"level": region.level, "area_km2": round(float(region.area_km2), 1),
                           "n_areas": int(region.n_areas), "calibrated": bool(region.calibrated)}}


def region_js(region) -> str:
    """JavaScript drawing a search region on `__MAP__`: outlined (and lightly filled) in the report's colour for
    its level, over the heatmap, its SVG paths of class `REGION_CLASS`; its tooltip gives its numbers. "" for an
    empty region."""
    style = REGION_STYLES.get(round(region.level, 2), {"color": "#00a0a0", "dashArray": None})
    feature = region_geojson(region)
    if not feature["geometry"].get("coordinates"):
        return ""
    look = {"color": style["color"], "weight": 2.5, "opacity": 1.0, "fill": True, "fillColor": style["color"],
            "fillOpacity": 0.12, "dashArray": style["dashArray"], "className": REGION_CLASS}
    text = (f"{pct(region.level)} search region: {km2(region.area_km2)}, {region.n_areas} area(s), "
            f"{calibration_text(region)}")
    return (f"L.geoJson({js_value(feature)}, {{style: function () {{ return {js_value(look)}; }}}})"
            f".bindTooltip({js_value(tip(text))}, {{sticky: true}}).addTo(__MAP__);\n")


def circle_js(at, text: str, *, radius: float, color: str, weight: float, fill_color: str,
              fill_opacity: float) -> str:
    """JavaScript adding a circle marker at (lat, lon) `at` to `__MAP__`, with `text` as its tooltip."""
    look = {"radius": radius, "color": color, "weight": weight, "fill": True, "fillColor": fill_color,
            "fillOpacity": fill_opacity}
    return (f"L.circleMarker({js_value([float(at[0]), float(at[1])])}, {js_value(look)})"
            f".bindTooltip({js_value(tip(text))}).addTo(__MAP__);\n")


REFERENCE_COLOR = "#7b3294"  # the similar reference photos' markers
TRACK_COLOR = "#e6550d"  # a video's per-frame top-1 track


def references_js(refs) -> str:
    """JavaScript marking an answer's nearest reference photos (`LocateResult.references`: IMG_ID, lat, lon,
    similarity, km) on `__MAP__` as small purple dots; tooltips name them as text (`tip`)."""
    return "".join(
        circle_js((r.lat, r.lon), f"reference {r.IMG_ID} — similarity {r.similarity:.2f}, {km(r.km)} from the top-1",
                  radius=5, color=REFERENCE_COLOR, weight=2, fill_color="#c2a5cf",
                  fill_opacity=0.9)
        for r in refs.itertuples())


def track_js(track) -> str:
    """JavaScript drawing a video's per-frame top-1 track (`VideoResult.track`: time_s, lat, lon, segment) on
    `__MAP__`: a polyline in time order and a small dot per frame with its time and segment as tooltip."""
    line = [[float(r.lat), float(r.lon)] for r in track.itertuples()]
    js = [f"L.polyline({js_value(line)}, {{color: \"{TRACK_COLOR}\", weight: 2, opacity: 0.8}})"
          f".bindTooltip({js_value(tip('per-frame top-1 track'))}).addTo(__MAP__);\n"]
    js += [circle_js((r.lat, r.lon), f"{r.time_s:.1f} s, segment {int(r.segment) + 1}", radius=3, color=TRACK_COLOR,
                     weight=1, fill_color=TRACK_COLOR, fill_opacity=0.9) for r in track.itertuples()]
    return "".join(js)


def prediction_map(pred, table, *, truth: tuple[float, float] | None = None, truth_km: float | None = None,
                   truth_label: str = "EXIF GPS (truth)", recorded: tuple[float, float] | None = None,
                   recorded_label: str = "recorded prediction", region=None, references=None, track=None):
    """Heatmap of the full distribution + a search region + numbered top-k markers (+ the truth and its error line).

    `pred`: a one-image `Prediction` (its heatmap drawn when made with `full=True`); `table`: its
    `geocore.locate.prediction_table`. `recorded`: another prediction of the same image (e.g. the one in a
    results file), marked with an orange ring; the error line then goes from the truth to it instead of to
    this run's top-1. `region`: a `SearchRegion` to outline (the view then fits it too). `references`: the
    answer's nearest reference photos (`references_js`); `track`: a video's per-frame top-1 track (`track_js`).
    """
    m = base_map()
    if pred is not None and pred.probs_full is not None and pred.candidates is not None:
        add_heatmap(m, as_numpy(pred.candidates, np.float64), as_numpy(pred.probs_full[0], np.float64))
    # the overlays as one script written here (folium's templates for a dozen elements took ~20 ms a map)
    js = [region_js(region) if region is not None else ""]
    for r in table.itertuples():
        js.append(circle_js((r.lat, r.lon), f"#{r.rank} {place_label(r.place, r.admin1)} — p={r.prob:.3f}",
                            radius=9 if r.rank == 1 else 6, color="#1f4e9c", weight=2,
                            fill_color="#4f8ef7" if r.rank > 1 else "#0b3d91", fill_opacity=0.9))
    if references is not None and len(references):
        js.append(references_js(references))
    if track is not None and len(track):
        js.append(track_js(track))
    if recorded is not None:
        js.append(circle_js(recorded, recorded_label, radius=10, color="#e6550d", weight=3, fill_color="#fdae6b",
                            fill_opacity=0.8))
    if truth is not None:
        js.append(circle_js(truth, truth_label, radius=8, color="#0a7d2c", weight=3, fill_color="#35c46a",
                            fill_opacity=0.9))
        end = list(recorded) if recorded is not None else [table.iloc[0].lat, table.iloc[0].lon]
        line = [[float(truth[0]), float(truth[1])], [float(end[0]), float(end[1])]]
        text = f"error {km(truth_km)}" if truth_km is not None else "error"
        js.append(f"L.polyline({js_value(line)}, {{color: \"#d62728\", weight: 2.5, dashArray: \"6 4\"}})"
                  f".bindTooltip({js_value(tip(text))}).addTo(__MAP__);\n")
    pts = table[["lat", "lon"]].to_numpy(np.float64)
    for extra in (truth, recorded):
        if extra is not None:
            pts = np.vstack([pts, np.asarray(extra, np.float64)[None]])
    for more in (references, track):
        if more is not None and len(more):
            pts = np.vstack([pts, more[["lat", "lon"]].to_numpy(np.float64)])
    if region is not None and not region.geometry.is_empty:
        west, south, east, north = region.geometry.bounds
        pts = np.vstack([pts, [[south, west], [north, east]]])
    if len(pts):
        lo, hi = pts.min(0), pts.max(0)
        bounds = [[float(lo[0]) - 2, float(lo[1]) - 2], [float(hi[0]) + 2, float(hi[1]) + 2]]
        js.append(f"__MAP__.fitBounds({js_value(bounds)}, {{padding: [20, 20], maxZoom: 6}});\n")
    raw_script("overlays", "".join(js)).add_to(m)
    return m
