"""Per-site polygon cache of candidate cells: cached shapes equal the ones computed from scratch (across the
antimeridian and over the poles, for every kind of cells), the cache is reused and safe under threads; and
`count_areas` agrees with its plain definition."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import s2geometry as s2
import shapely

from bench.bench_regions import count_areas_before  # count_areas as first written
from geocore.geo import candidates
from geocore.geo.candidates import CandidateCells, GalleryCells, GalleryS2Cells, S2Cells
from geocore.geo.polygons import GAP_DEG, count_areas, ring_pieces, rings_to_polygons
from geocore.uncertainty import search_regions

SPECIAL = [[10.0, 179.5], [10.0, -179.5], [89.9, 20.0], [-89.9, -40.0], [10.0, 100.0], [-30.0, 180.0]]


def random_latlon(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.c_[np.rad2deg(np.arcsin(rng.uniform(-1, 1, n))), rng.uniform(-180, 180, n)]


def s2_cells() -> S2Cells:
    """Faces 2 and 5 whole (each around a pole) and the level-2 cells of the other faces (face 3 straddles
    the antimeridian)."""
    faces = [s2.S2CellId.FromToken(t) for t in "13579b"]  # faces 0..5
    ids = [i for f, face in enumerate(faces) for i in ([face.id()] if f in (2, 5) else _children(face, 2))]
    return S2Cells(np.array(ids, dtype=np.uint64))


def _children(cell, level: int) -> list[int]:
    c, end = cell.child_begin(level), cell.child_end(level)
    out = []
    while c != end:
        out.append(c.id())
        c = c.next()
    return out


MAKERS = {
    "gallery-capped": lambda: GalleryCells(np.r_[SPECIAL, random_latlon(1000, 5)], max_radius_km=300.0),
    "gallery-free": lambda: GalleryCells(np.r_[SPECIAL, random_latlon(1000, 5)], max_radius_km=None),
    "s2": s2_cells,
    "gallery-s2-L0": lambda: GalleryS2Cells(np.r_[SPECIAL, random_latlon(500, 6)], level=0),
    "gallery-s2-L3": lambda: GalleryS2Cells(np.r_[SPECIAL, random_latlon(5000, 6)], level=3),
}


def near(cells: CandidateCells, lat: float, lon: float) -> np.ndarray:
    """Candidates whose area contains (lat, lon) or lies next to it (a few degrees around)."""
    rng = np.random.default_rng(0)
    probe = np.c_[lat + rng.uniform(-3, 3, 200), lon + rng.uniform(-3, 3, 200)]
    probe[:, 0] = np.clip(probe[:, 0], -90, 90)
    probe[:, 1] = (probe[:, 1] + 180.0) % 360.0 - 180.0
    hit = cells.locate(probe)
    return np.unique(hit[hit >= 0])


def assert_same(a, b) -> None:
    assert a.area == pytest.approx(b.area, rel=1e-9)
    assert shapely.symmetric_difference(a, b).area <= 1e-9 * a.area
    assert shapely.equals(a, b)


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_cached_polygons_equal_the_uncached_computation(kind):
    cells = MAKERS[kind]()
    rng = np.random.default_rng(1)
    for _ in range(2):  # fill the cache in unrelated batches first
        cells.polygons(rng.choice(len(cells), max(1, len(cells) // 4), replace=False))
    edge = np.r_[near(cells, 10.0, 180.0), near(cells, 90.0, 0.0), near(cells, -90.0, 0.0)]
    regions = [edge, np.r_[edge, rng.choice(len(cells), len(cells) // 3, replace=False)], np.arange(len(cells))]
    for idx in regions:
        cached, fresh = cells.polygons(idx), cells.polygons_uncached(idx)
        assert cached.is_valid and not cached.is_empty
        assert_same(cached, fresh)
        minx, miny, maxx, maxy = cached.bounds  # the region is cut at ±180° and reaches both poles
        assert (minx, maxx, miny, maxy) == (-180.0, 180.0, -90.0, 90.0)
        assert count_areas(cached) == count_areas(fresh)
        plain, cut = rings_to_polygons(*cells._rings(np.unique(idx)))
        pieces = cells.pieces(idx)
        assert len(pieces) == len(plain) + len(cut)
        assert shapely.equals_exact(np.asarray(pieces, dtype=object), np.asarray(plain + cut, dtype=object), 0).all()


def test_search_region_geometry_uses_the_cache(monkeypatch):
    cells = MAKERS["gallery-capped"]()
    p = np.zeros(len(cells))
    p[:4] = [0.3, 0.3, 0.2, 0.2]  # both sides of the antimeridian and both poles
    (region,) = search_regions(p, cells, levels=[0.99])
    assert_same(region.geometry, cells.polygons_uncached(region.indices))
    assert region.n_areas == count_areas(cells.polygons_uncached(region.indices))
    calls = counting(monkeypatch, cells)
    (again,) = search_regions(p, cells, levels=[0.99])
    assert shapely.equals_exact(again.geometry, region.geometry, 0) and calls == []


def counting(monkeypatch, cells: CandidateCells) -> list[np.ndarray]:
    """Record the sites whose rings `cells` builds from now on."""
    calls: list[np.ndarray] = []
    build = type(cells)._site_rings

    def record(self, sites):
        calls.append(np.array(sites))
        return build(self, sites)

    monkeypatch.setattr(type(cells), "_site_rings", record)
    return calls


@pytest.mark.parametrize("kind", ["gallery-capped", "s2", "gallery-s2-L3"])
def test_rings_are_built_once_per_site(monkeypatch, kind):
    cells = MAKERS[kind]()
    calls = counting(monkeypatch, cells)
    first = np.arange(0, len(cells), 3)
    cells.polygons(first)
    assert len(calls) == 1 and cells.cached_sites == calls[0].size
    cells.polygons(first[::2])
    cells.pieces(first)
    assert len(calls) == 1  # everything cached
    more = np.arange(0, len(cells), 2)
    cells.polygons(more)
    assert len(calls) == 2
    new_sites = calls[1]
    assert np.intersect1d(new_sites, calls[0]).size == 0  # only the sites not cached yet
    assert cells.cached_sites == np.union1d(calls[0], new_sites).size


def test_gallery_points_at_one_place_share_one_cached_site(monkeypatch):
    pts = random_latlon(500, 8)
    cells = GalleryCells(np.r_[pts, pts[:50]], max_radius_km=500.0)  # 50 points repeated
    calls = counting(monkeypatch, cells)
    twins = np.r_[np.arange(50), 500 + np.arange(50)]
    cells.polygons(twins)
    assert calls[0].size == 50 and cells.cached_sites == 50
    cells.polygons(500 + np.arange(50))
    assert len(calls) == 1
    assert_same(cells.polygons(500 + np.arange(50)), cells.polygons_uncached(np.arange(50)))


def test_cache_stops_growing_at_its_limit(monkeypatch):
    cells = MAKERS["gallery-capped"]()
    monkeypatch.setattr(candidates, "MAX_CACHED_PIECES", 300)
    cells.polygons(np.arange(250))
    assert cells.cached_sites == 250
    idx = np.arange(200, 400)
    assert_same(cells.polygons(idx), cells.polygons_uncached(idx))  # 400 pieces: computed, not kept
    assert cells.cached_sites == 250
    cells.clear_cache()
    assert cells.cached_sites == 0


def test_racing_threads_store_each_site_once(monkeypatch):
    cells = MAKERS["gallery-capped"]()
    a, b = np.arange(0, 400), np.arange(200, 600)  # sites 200..399 computed by both threads
    expected = [cells.polygons_uncached(a), cells.polygons_uncached(b)]
    barrier = threading.Barrier(2)
    build = type(cells)._site_rings

    def slow(self, sites):
        out = build(self, sites)
        barrier.wait(timeout=30)  # both threads have computed their missing sites before either stores them
        return out

    monkeypatch.setattr(type(cells), "_site_rings", slow)
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(cells.polygons, [a, b]))
    for geom, want in zip(results, expected):
        assert_same(geom, want)
    table = cells._piece_table
    assert np.array_equal(np.flatnonzero(table.start >= 0), cells._sites(np.arange(600)))
    assert table.pieces.size == table.count.sum()  # each site's pieces stored once
    monkeypatch.undo()
    assert_same(cells.polygons(np.arange(600)), cells.polygons_uncached(np.arange(600)))


@pytest.mark.parametrize("kind", ["gallery-capped", "s2"])
def test_warm_caches_every_site_and_later_regions_build_nothing(monkeypatch, kind):
    cells = MAKERS[kind]()
    assert cells.warm(batch=97) == cells.n_sites == cells.cached_sites
    idx = near(cells, 10.0, 179.5)
    expected = cells.polygons_uncached(idx)

    def no_build(self, sites):
        raise AssertionError(f"{sites.size} sites built again")

    monkeypatch.setattr(type(cells), "_site_rings", no_build)
    assert_same(cells.polygons(idx), expected)


def test_warm_stops_at_the_cache_limit(monkeypatch):
    cells = MAKERS["gallery-capped"]()
    monkeypatch.setattr(candidates, "MAX_CACHED_PIECES", 300)
    assert 0 < cells.warm(batch=100) <= 300 < cells.n_sites


def test_threads_asking_for_one_gallery_share_one_build(monkeypatch):
    """Sessions of the app ask for the same gallery's cells at once (a 100K gallery's take seconds): one build."""
    points = random_latlon(300, 11)
    built, started = [], threading.Event()
    real = candidates.GalleryCells

    def slow_cells(*args, **kwargs):
        built.append(1)
        started.set()
        threading.Event().wait(0.3)  # still building when the other threads ask
        return real(*args, **kwargs)

    monkeypatch.setattr(candidates, "GalleryCells", slow_cells)
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda _: candidates.gallery_cells(points), range(4)))
    assert len(built) == 1 and all(g is got[0] for g in got)


def test_ring_pieces_name_their_ring_and_do_not_depend_on_the_batch():
    cells = MAKERS["gallery-capped"]()
    points, ring = cells._rings(np.arange(len(cells)))
    pieces, ids, kind = ring_pieces(points, ring)
    plain, cut = rings_to_polygons(points, ring)
    assert shapely.equals_exact(pieces, np.asarray(plain + cut, dtype=object), 0).all()
    assert set(kind.tolist()) == {0, 2, 3}  # plain, cut at ±180°, around a pole
    for r in np.r_[np.unique(ids[kind >= 2]), 4]:  # cut, polar and an ordinary cell, each alone
        alone, alone_ids, alone_kind = ring_pieces(points[ring == r], ring[ring == r])
        assert (alone_ids == r).all() and (alone_kind == kind[ids == r]).all()
        assert shapely.equals_exact(alone, pieces[ids == r], 0).all()


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_count_areas_agrees_with_its_plain_definition(kind):
    cells = MAKERS[kind]()
    rng = np.random.default_rng(3)
    for share in (0.05, 0.2, 0.5):
        geom = cells.polygons(rng.choice(len(cells), max(2, int(share * len(cells))), replace=False))
        assert count_areas(geom) == count_areas_before(geom)
    boxes = [(0, 0, 1, 1), (1 + GAP_DEG / 2, 0, 2, 1), (3, 0, 4, 1), (179.5, 0, 180, 1), (-180, 0.5, -179, 2)]
    gap = shapely.MultiPolygon([shapely.box(*b) for b in boxes])  # within the gap; alone; across ±180°
    assert count_areas(gap) == count_areas_before(gap) == 3
