"""Candidate areas: Voronoi cells of a gallery (exact areas, cap clipping) and S2 cells; their polygons
across the antimeridian and at the poles."""

from __future__ import annotations

import numpy as np
import pytest
import s2geometry as s2
import shapely

from geocore.errors import InputError
from geocore.geo.cells import assign_cells, cell_levels, load_partition
from geocore.geo.distance import EARTH_RADIUS_KM as R
from geocore.geo.gallery import default_gallery
from geocore.uncertainty import GalleryCells, S2Cells, gallery_cells, search_regions
from geocore.geo.polygons import area_km2, count_areas

SPHERE = 4 * np.pi * R**2


def random_latlon(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.c_[np.rad2deg(np.arcsin(rng.uniform(-1, 1, n))), rng.uniform(-180, 180, n)]


def cap_km2(r_km: float) -> float:
    return 2 * np.pi * (1 - np.cos(r_km / R)) * R**2


def level_ids(level: int) -> np.ndarray:
    ids, c, end = [], s2.S2CellId.Begin(level), s2.S2CellId.End(level)
    while c != end:
        ids.append(c.id())
        c = c.next()
    return np.array(ids, dtype=np.uint64)


@pytest.fixture(scope="module")
def partition(reference_dir):
    return load_partition(reference_dir / "cells_50_5000.csv")


# ---- Voronoi areas ----------------------------------------------------------------------------------------


def test_unclipped_voronoi_areas_tile_the_sphere():
    cells = GalleryCells(random_latlon(20_000, 0), max_radius_km=None)
    assert cells.areas_km2.sum() == pytest.approx(SPHERE, rel=1e-3)
    assert (cells.areas_km2 > 0).all()


def test_full_gallery_voronoi_areas_tile_the_sphere_with_duplicates_sharing_a_cell():
    gallery = default_gallery()
    cells = GalleryCells(gallery, max_radius_km=None)
    assert cells.areas_km2.sum() == pytest.approx(SPHERE, rel=1e-3)
    dup = np.flatnonzero(cells.site_size[cells.site_of] > 1)[0]  # the MP-16 gallery repeats coordinates
    twins = np.flatnonzero(cells.site_of == cells.site_of[dup])
    assert np.allclose(cells.areas_km2[twins], cells.areas_km2[twins[0]])
    assert (cells.locate(gallery[twins].numpy()) == twins[0]).all()


@pytest.mark.parametrize("radius", [100.0, 400.0, 2000.0])
def test_clipped_cells_are_at_most_the_cap_and_at_most_the_cell(radius):
    pts = random_latlon(3000, 1)
    free, clipped = GalleryCells(pts, None), GalleryCells(pts, radius)
    assert (clipped.areas_km2 <= cap_km2(radius) * (1 + 1e-9)).all()
    assert (clipped.areas_km2 <= free.areas_km2 * (1 + 1e-9)).all()


def test_clipped_areas_agree_with_monte_carlo_point_location():
    cells = GalleryCells(random_latlon(500, 2), max_radius_km=500.0)
    probe = random_latlon(300_000, 3)
    hit = cells.locate(probe)
    covered = cells.areas_km2.sum() / SPHERE
    assert (hit >= 0).mean() == pytest.approx(covered, abs=0.004)  # 3.5 standard errors
    nearest = cells.locate(random_latlon(1, 4))
    assert nearest.shape == (1,)


def test_auto_radius_and_its_validation():
    cells = gallery_cells(default_gallery())
    assert 20 < cells.max_radius_km < 200  # 99th percentile of neighbour spacing: ≈ 65 km
    assert gallery_cells(default_gallery()) is cells  # built once per gallery
    assert cells.fingerprint != GalleryCells(random_latlon(100, 0), 50.0).fingerprint
    with pytest.raises(InputError, match="max_radius_km"):
        GalleryCells(random_latlon(100, 0), max_radius_km=-5)
    with pytest.raises(InputError, match="gallery points"):
        GalleryCells(np.array([[95.0, 0.0]] * 10))


# ---- antimeridian and poles -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def edge_gallery() -> GalleryCells:
    special = [[10.0, 179.5], [10.0, -179.5], [89.9, 20.0], [-89.9, -40.0], [10.0, 100.0]]
    return GalleryCells(np.r_[special, random_latlon(3000, 5)], max_radius_km=300.0)


def onehot(cells, probs: dict[int, float]) -> np.ndarray:
    p = np.zeros(len(cells))
    for i, v in probs.items():
        p[i] = v
    return p


def test_region_across_the_antimeridian_is_one_area(edge_gallery):
    for probs in ({0: 0.5, 1: 0.5}, {0: 1.0}, {1: 1.0}):
        (region,) = search_regions(onehot(edge_gallery, probs), edge_gallery, levels=[0.99])
        geom = region.geometry
        assert geom.is_valid and not geom.is_empty
        assert region.n_areas == 1
        for part in shapely.get_parts(geom):  # pieces hug ±180, none is a band around the world
            lo, _, hi, _ = part.bounds
            assert hi - lo < 10
        assert area_km2(geom) == pytest.approx(region.area_km2, rel=1e-3)
        assert region.area_km2 == pytest.approx(edge_gallery.areas_km2[sorted(probs)].sum())
    (both,) = search_regions(onehot(edge_gallery, {0: 0.5, 1: 0.5}), edge_gallery, levels=[0.99])
    assert both.geometry.contains(shapely.Point(180.0 - 1e-6, 10.0))
    assert both.geometry.contains(shapely.Point(-180.0 + 1e-6, 10.0))
    (apart,) = search_regions(onehot(edge_gallery, {0: 0.5, 4: 0.5}), edge_gallery, levels=[0.99])
    assert apart.n_areas == 2


@pytest.mark.parametrize("index, pole", [(2, 90.0), (3, -90.0)])
def test_cells_at_the_poles_contain_the_pole(edge_gallery, index, pole):
    geom = edge_gallery.polygons([index])
    assert geom.is_valid
    assert geom.intersects(shapely.Point(0.0, pole)) and geom.intersects(shapely.Point(123.0, pole))
    assert area_km2(geom) == pytest.approx(edge_gallery.areas_km2[index], rel=1e-3)
    assert count_areas(geom) == 1


def test_s2_cells_meeting_at_the_north_pole():
    face = s2.S2CellId.FromToken("5")  # face 2 is centred on the North pole; its children share it as a vertex
    kids = np.array([face.child(k).id() for k in range(4)], dtype=np.uint64)
    cells = S2Cells(kids)
    for k in range(4):
        geom = cells.polygons([k])
        assert geom.is_valid
        assert area_km2(geom) == pytest.approx(cells.areas_km2[k], rel=1e-3)
    whole = cells.polygons(np.arange(4))
    assert whole.is_valid and count_areas(whole) == 1
    assert whole.contains(shapely.Point(45.0, 89.0)) and whole.contains(shapely.Point(-135.0, 89.0))
    assert area_km2(whole) == pytest.approx(SPHERE / 6, rel=1e-3)
    opposite = cells.polygons([0, 2])  # two quadrants touching only at the pole: one area
    assert count_areas(opposite) == 1


# ---- S2 cells of a real partition -------------------------------------------------------------------------


def test_s2_areas_and_coarse_cell_polygon(partition):
    cells = S2Cells.from_partition(partition)
    level = cell_levels(partition.cell_ids)
    coarse = int(np.flatnonzero(level == 2)[0])
    exact = s2.S2Cell(s2.S2CellId(int(partition.cell_ids[coarse]))).ExactArea() * R**2
    assert cells.areas_km2[coarse] == pytest.approx(exact, rel=1e-12)
    geom = cells.polygons([coarse])
    assert geom.is_valid
    assert area_km2(geom) == pytest.approx(exact, rel=1e-3)  # geodesic edges densified, not straight in lon/lat


def test_s2_locate_matches_assign_cells(partition):
    cells = S2Cells.from_partition(partition)
    pts = np.r_[random_latlon(3000, 6), partition.centroids]
    assert np.array_equal(cells.locate(pts), assign_cells(partition, pts))


def test_s2_polygons_contain_their_centroids(partition):
    cells = S2Cells.from_partition(partition)
    own = np.flatnonzero(assign_cells(partition, partition.centroids) == np.arange(len(partition)))
    assert own.size > 0.95 * len(partition)
    pick = own[:: max(1, own.size // 200)]
    outside = [i for i in pick if not cells.polygons([i]).contains(shapely.Point(partition.centroids[i][::-1]))]
    assert outside == []


def test_s2_cells_input_errors():
    with pytest.raises(InputError, match="overlap"):
        S2Cells(["89c", "89c4"])
    with pytest.raises(InputError, match="not a valid S2 cell"):
        S2Cells(np.array([0], dtype=np.uint64))
    assert len(S2Cells(level_ids(1))) == 24
