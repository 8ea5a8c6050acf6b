"""Country lookup without geopandas gives what the geopandas spatial index gives."""

import geopandas as gpd
import numpy as np

from geocore.geo.countries import COAST_TOLERANCE_DEG, countries, country_of, country_shapes


def test_shapes_match_the_geodataframe():
    table, geoms, _ = country_shapes()
    world = countries()
    assert list(table["iso_a3"]) == list(world["iso_a3"])
    assert all(a.equals(b) for a, b in zip(geoms, world.geometry))


def test_country_of_equals_a_geopandas_lookup():
    rng = np.random.default_rng(1)
    pts = np.c_[rng.uniform(-90, 90, 20000), rng.uniform(-180, 180, 20000)]
    pts[:3] = [(48.8566, 2.3522), (35.0, 139.0), (-33.9, 18.4)]  # Paris, Japan, Cape Town
    world = countries()
    geo = gpd.GeoSeries(gpd.points_from_xy(pts[:, 1], pts[:, 0]), crs=world.crs)
    idx = np.full(len(pts), -1)
    p, c = world.sindex.query(geo, predicate="intersects")
    idx[p] = c
    miss = np.flatnonzero(idx < 0)
    p, c = world.sindex.nearest(geo.iloc[miss], max_distance=COAST_TOLERANCE_DEG, return_all=False)
    idx[miss[p]] = c
    expected = np.where(idx >= 0, world["iso_a3"].to_numpy()[np.maximum(idx, 0)], "")
    got = country_of(pts)["iso_a3"].to_numpy()
    assert (got == expected).all()
    assert list(got[:3]) == ["FRA", "JPN", "ZAF"]
    assert 5000 < (got != "").sum() < 10000  # about 30 % of the globe is land (plus the coastal tolerance)
