"""Offline deck.gl maps (pydeck, bundled with Streamlit: WebGL, nothing fetched) and their click selection.

`map_provider=None` is what keeps deck.gl offline: with it pydeck writes its "__MAP_STYLE__" sentinel,
which Streamlit drops without putting its default Carto basemap (a network style + tiles) underneath.
The basemap is the same Natural Earth GeoJSON as the folium maps. No TextLayer (it would need fonts).
Literal string props are quoted for pydeck (`radius_units="'pixels'"`); bare strings are accessors.
"""

from __future__ import annotations

import math

import streamlit as st

from ui.maps import countries_geojson

OCEAN_RGBA = [207, 227, 240, 255]


def hex_rgba(color: str, alpha: int = 255) -> list[int]:
    """"#rrggbb" → [r, g, b, alpha], as deck.gl colour accessors take it."""
    c = color.lstrip("#")
    return [int(c[i:i + 2], 16) for i in (0, 2, 4)] + [alpha]


def world_deck(layers: list, *, tooltip: dict | None = None, zoom: float = 0.7,
               center: tuple[float, float] = (20.0, 0.0), outlines_on_top: bool = False):
    """A pydeck Deck over the offline countries basemap, with no map provider (nothing to fetch).

    outlines_on_top: for layers that cover the globe, draw the countries as outlines above them instead.
    """
    import pydeck as pdk

    ocean = pdk.Layer("PolygonLayer", [{"polygon": [[-180, -85], [180, -85], [180, 85], [-180, 85]]}], id="ocean",
                      get_polygon="polygon", get_fill_color=OCEAN_RGBA, stroked=False, pickable=False)
    if outlines_on_top:
        outlines = pdk.Layer("GeoJsonLayer", countries_geojson(), id="countries", stroked=True, filled=False,
                             get_line_color=[30, 30, 30, 200], line_width_min_pixels=0.6, pickable=False)
        stack = [ocean, *layers, outlines]
    else:
        land = pdk.Layer("GeoJsonLayer", countries_geojson(), id="countries", stroked=True, filled=True,
                         get_fill_color=[244, 241, 232, 255], get_line_color=[138, 138, 138, 255],
                         line_width_min_pixels=0.6, pickable=False)
        stack = [ocean, land, *layers]
    return pdk.Deck(layers=stack, map_provider=None,
                    initial_view_state=pdk.ViewState(latitude=center[0], longitude=center[1], zoom=zoom),
                    views=[pdk.View(type="MapView", controller=True)], tooltip=tooltip or False)


def selected_point(selection, layer_id: str) -> tuple[float, float] | None:
    """(lat, lon) of the first object picked in `layer_id` of an `st.pydeck_chart` selection, else None.

    `selection` is what Streamlit returns (`state.selection`, or `st.session_state[key]["selection"]`):
    `{"indices": {layer: [i]}, "objects": {layer: [{...}]}}`; the objects carry our `lat`/`lon` fields.
    """
    try:
        obj = ((selection or {}).get("objects", {}).get(layer_id) or [])[0]
        lat, lon = float(obj["lat"]), float(obj["lon"])
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        return None
    if math.isnan(lat + lon) or not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        return None
    return lat, lon


def apply_selected_point(chart_key: str, layer_id: str, lat_key: str, lon_key: str) -> tuple[float, float] | None:
    """`on_select` callback of a pickable `st.pydeck_chart`: copy the picked object's (lat, lon) into the
    number inputs `lat_key`/`lon_key` (callbacks run before the script, so the widgets take the new values)."""
    state = st.session_state.get(chart_key)  # Streamlit's chart state: a dict {"selection": {...}}
    point = selected_point(state.get("selection") if isinstance(state, dict) else None, layer_id)
    if point is not None:
        st.session_state[lat_key], st.session_state[lon_key] = point
    return point
