"""The area each candidate of a model stands for: the sets that search regions are made of.

A model scores M candidates; probability mass on a candidate means "the photo was taken in its area".
Search regions need those areas as real surfaces: their size (km², exact, for ranking by density and for
the reported area), which one contains a point (for the truth's score), and their shapes (for display).

* `S2Cells` — cell classifiers (TransLocator, GeoDecoder): the candidates ARE S2 cells. Areas are
  `S2Cell.ExactArea() · R²`; shapes are the cells' four geodesic edges, densified (level-2 cells span
  thousands of km); `locate` is the partition's leaf-range binary search (`geocore.geo.cells`). Points
  outside the partition (open ocean, Antarctica) are in no candidate (-1).
* `GalleryCells` — retrieval (GeoCLIP): candidates are GPS points. Retrieval answers with the gallery
  point nearest (in embedding space) to the photo, so each point stands for the places closer to it than
  to any other point: its spherical Voronoi cell. A sparse gallery's cells are huge (a coastal point's cell
  runs far into the ocean), so each cell is clipped to a cap of radius `max_radius_km` around its point.
  Default ("auto"): the 99th percentile of the gallery's nearest-neighbour distances (clamped to
  [10, 1000] km), so a place drawn like the gallery's own points falls outside every cell about 1 % of the
  time while no point claims more than that radius of sea; for GeoCLIP's 100K MP-16 gallery this is
  ≈ 65 km (the held-out check: 1 % of 20K held-out gallery points lie farther than that from the other
  80K). Points closer than `SAME_SITE_M` (7 % of that gallery repeats a coordinate) share one cell, whose
  area is split equally between them, so identical points with identical scores keep the cell's true
  density; `locate` returns the first of them. Areas are exact (fan triangles and cap sectors,
  `sphere.py`); the unclipped cells tile the sphere (areas sum to 4πR²). Building the cells of the 100K
  gallery takes about 2 s (2 cores); `gallery_cells` keeps them in memory per gallery. Their polygons share
  edges vertex for vertex, so a region of 50K cells merges in well under a second (GEOS coverage union);
  each cell's lon/lat polygon is built once, on first use, and cached (about 50 MB for all 100K).
* `GalleryS2Cells` — retrieval through the approximate index (galleries of millions of points, whose Voronoi
  diagram is out of reach): each point stands for the S2 cell (level `s2_level_for(M)`, about M cells over
  the sphere: ~50 km² at 10M points) that holds it; points in one cell share its exact area equally, as
  same-site points do above. A region is the union of the S2 cells holding its points; `locate` returns the
  first point of the cell containing a place (-1 in a cell with no gallery point).
"""

from __future__ import annotations

import hashlib
import itertools
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import s2geometry as s2
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import SphericalVoronoi, cKDTree
from shapely.geometry.base import BaseGeometry

from geocore.errors import InputError
from geocore.geo.cells import (CellPartition, assign_cells, cell_ranges, check_latlon, ids_to_tokens,
                                leaf_cell_ids, parent_ids)
from geocore.geo.distance import EARTH_RADIUS_KM
from geocore.geo.polygons import CUT, ring_pieces, rings_to_polygons, union
from geocore.geo.sphere import EdgeClip, boundary, cell_areas, ring_edges, sort_ccw, to_xyz
from geocore.tensors import as_numpy

SAME_SITE_M = 10.0  # gallery points closer than this share one Voronoi cell
AUTO_QUANTILE = 0.99
AUTO_RANGE_KM = (10.0, 1000.0)
MAX_RADIUS_KM = 5000.0
STEP_KM = 10.0  # boundary sampling for display
MAX_CACHED_PIECES = 1_000_000  # polygon cache limit per cells object: ~0.5 GB (the 100K gallery needs 93K)


def _as_latlon(points, source: str) -> np.ndarray:
    return check_latlon(as_numpy(points) if hasattr(points, "detach") else points, source)


def _as_indices(indices, m: int) -> np.ndarray:
    idx = np.unique(np.asarray(indices, dtype=np.int64).ravel())
    if idx.size and (idx[0] < 0 or idx[-1] >= m):
        raise InputError(f"candidate indices must be in 0..{m - 1}, got {int(idx[0] if idx[0] < 0 else idx[-1])}")
    return idx


@dataclass(frozen=True, eq=False)
class _PieceTable:
    """The lon/lat pieces (`polygons.ring_pieces`) of the sites cached so far; never changed once published.

    A site's pieces lie contiguous in `pieces`, from `start[site]` (-1: not cached yet), `count[site]` of them.
    """

    pieces: np.ndarray  # (N,) shapely geometries
    kind: np.ndarray  # (N,) int8, polygons.PLAIN ... POLE
    start: np.ndarray  # (S,) int64
    count: np.ndarray  # (S,) int64

    @classmethod
    def empty(cls, n_sites: int) -> "_PieceTable":
        return cls(np.empty(0, dtype=object), np.empty(0, np.int8), np.full(n_sites, -1, np.int64),
                   np.zeros(n_sites, np.int64))

    def missing(self, sites: np.ndarray) -> np.ndarray:
        """The sites of `sites` not cached yet."""
        return sites[self.start[sites] < 0]

    def added(self, sites: np.ndarray, pieces: np.ndarray, ring: np.ndarray, kind: np.ndarray) -> "_PieceTable":
        """A new table with the pieces of `sites` (unique) added, given as `ring_pieces` output whose ring ids are
        positions in `sites`; sites cached meanwhile (by another thread) keep their pieces."""
        new = self.start[sites] < 0
        take = np.flatnonzero(new[ring])
        take = take[np.argsort(ring[take], kind="stable")]  # grouped by site, each site's pieces in order
        count = np.bincount(ring[take], minlength=sites.size)[new]
        start, counts = self.start.copy(), self.count.copy()
        start[sites[new]] = self.pieces.size + np.cumsum(count) - count
        counts[sites[new]] = count
        return _PieceTable(np.concatenate([self.pieces, pieces[take]]), np.concatenate([self.kind, kind[take]]),
                           start, counts)

    def gather(self, sites: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pieces of cached `sites` (ascending) in `ring_pieces` order (kind, site, shift): (pieces, kind)."""
        count = self.count[sites]
        rows = np.repeat(self.start[sites] - (np.cumsum(count) - count), count) + np.arange(count.sum())
        rows = rows[np.argsort(self.kind[rows], kind="stable")]
        return self.pieces[rows], self.kind[rows]


_PIECES_LOCK = threading.Lock()  # guards publishing a `_PieceTable` (microseconds), not computing pieces


class CandidateCells(ABC):
    """The areas of M candidates: sizes (km²), point location, and shapes (lon/lat, EPSG:4326).

    Shapes are built per site (a candidate's area; gallery points at one place share a site) and cached:
    each site's lon/lat pieces are computed once, in one batch for the sites a call needs that are not
    cached yet, and shared by every later region (and every thread) using these cells, up to
    `MAX_CACHED_PIECES` pieces (beyond, new sites are computed per call and not kept).
    """

    step_km: float = STEP_KM
    _coverage: bool = False  # pieces share edges vertex for vertex (see polygons.union)
    _piece_table: _PieceTable | None = None

    @property
    @abstractmethod
    def areas_km2(self) -> np.ndarray:
        """(M,) area of each candidate, km²."""

    @property
    @abstractmethod
    def fingerprint(self) -> str:
        """Identity of the candidate set and its areas (calibrations are tied to it)."""

    @abstractmethod
    def locate(self, latlon) -> np.ndarray:
        """(N,) index of the candidate whose area contains each (lat, lon) point; -1 where none does."""

    @property
    @abstractmethod
    def n_sites(self) -> int:
        """Number of distinct areas (sites) the candidates stand for."""

    @abstractmethod
    def _sites(self, idx: np.ndarray) -> np.ndarray:
        """The sites (unique, ascending) of candidates `idx` (unique)."""

    @abstractmethod
    def _site_rings(self, sites: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Densified CCW boundaries of `sites` (unique): unit vectors (P, 3) and ring ids (P,), positions in
        `sites`."""

    def _rings(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Densified CCW boundaries of candidates `idx` (unique), one ring per site: (P, 3) and ring ids (P,)."""
        return self._site_rings(self._sites(idx))

    def __len__(self) -> int:
        return int(self.areas_km2.shape[0])

    def _cached_pieces(self, indices) -> tuple[np.ndarray, np.ndarray]:
        """Pieces of candidates `indices` and their kinds, in `ring_pieces` order, computing missing sites."""
        return self._site_pieces(self._sites(_as_indices(indices, len(self))))

    def _site_pieces(self, sites: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pieces of `sites` (unique, ascending) and their kinds, computing and caching the missing ones."""
        table = self._table()
        missing = table.missing(sites)
        if missing.size:
            pieces, ring, kind = ring_pieces(*self._site_rings(missing))
            with _PIECES_LOCK:  # entries are complete and written once; a race only repeats the computation
                table = self._table().added(missing, pieces, ring, kind)
                if table.pieces.size <= MAX_CACHED_PIECES:
                    self._piece_table = table
        return table.gather(sites)  # this call's table: holds `sites` even if the cache is cleared meanwhile

    def _table(self) -> _PieceTable:
        table = self._piece_table  # one read: the table is replaced whole, never changed
        return _PieceTable.empty(self.n_sites) if table is None else table

    def pieces(self, indices) -> list[BaseGeometry]:
        """The lon/lat polygons of candidates `indices`, not merged (cells cut at ±180° give two)."""
        return list(self._cached_pieces(indices)[0])

    def polygons(self, indices) -> BaseGeometry:
        """Union of the areas of candidates `indices`: a (Multi)Polygon in lon/lat degrees (EPSG:4326),
        split at the antimeridian, closed over a pole it contains."""
        pieces, kind = self._cached_pieces(indices)
        return union(pieces[kind < CUT], pieces[kind >= CUT], coverage=self._coverage)

    def polygons_uncached(self, indices) -> BaseGeometry:
        """`polygons` computed from scratch, without the cache (a reference for tests and benchmarks)."""
        plain, cut = rings_to_polygons(*self._rings(_as_indices(indices, len(self))))
        return union(plain, cut, coverage=self._coverage)

    def warm(self, batch: int = 10_000) -> int:
        """Build and cache every site's pieces, `batch` sites at a time (up to `MAX_CACHED_PIECES`), so that no
        region over these cells pays for building them (the app does this in the background when it loads a
        model: ~4 s and ~50 MB for the 100K gallery). Returns the number of sites cached."""
        for first in range(0, self.n_sites, max(1, int(batch))):
            self._site_pieces(np.arange(first, min(first + batch, self.n_sites)))  # builds the missing ones
            if self._table().pieces.size >= MAX_CACHED_PIECES:
                break
        return self.cached_sites

    @property
    def cached_sites(self) -> int:
        """Number of sites whose pieces are cached."""
        table = self._piece_table
        return 0 if table is None else int((table.start >= 0).sum())

    def clear_cache(self) -> None:
        """Forget the cached pieces (their memory goes when no call still uses them); later calls rebuild them."""
        self._piece_table = None


def _merge_sites(xyz: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Group points within `tol` (chord) of each other: (site of each point (M,), first point of each site (S,))."""
    pairs = cKDTree(xyz).query_pairs(tol, output_type="ndarray")
    m = xyz.shape[0]
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(m, m))
    n_sites, label = connected_components(graph, directed=False)
    first = np.full(n_sites, m, dtype=np.int64)
    np.minimum.at(first, label, np.arange(m))
    # number sites by their first point, so site order follows candidate order
    rank = np.empty(n_sites, np.int64)
    rank[np.argsort(first)] = np.arange(n_sites)
    return rank[label], np.sort(first)


def auto_radius_km(site_xyz: np.ndarray) -> float:
    """The default cap radius: 99th percentile of nearest-neighbour distances, clamped to `AUTO_RANGE_KM`."""
    if site_xyz.shape[0] < 2:
        return AUTO_RANGE_KM[1]
    chord, _ = cKDTree(site_xyz).query(site_xyz, k=2)
    km = 2.0 * np.arcsin(np.clip(chord[:, 1] / 2.0, 0.0, 1.0)) * EARTH_RADIUS_KM
    return float(np.clip(np.quantile(km, AUTO_QUANTILE), *AUTO_RANGE_KM))


class _PointCells(CandidateCells):
    """Candidates that are gallery points, each holding a share of an area: the areas and the points' digest."""

    _areas: np.ndarray
    _latlon32: np.ndarray
    site_of: np.ndarray  # (M,) site of each candidate
    site_first: np.ndarray  # (S,) first candidate of each site

    @property
    def areas_km2(self) -> np.ndarray:
        return self._areas

    def _digest(self) -> str:
        return hashlib.sha256(self._latlon32.tobytes()).hexdigest()[:16]

    @property
    def n_sites(self) -> int:
        return int(self.site_first.size)

    def _sites(self, idx: np.ndarray) -> np.ndarray:
        return np.unique(self.site_of[idx])


class GalleryCells(_PointCells):
    """Spherical Voronoi cells of gallery points (M, 2), each clipped to a cap of `max_radius_km`.

    `max_radius_km`: a radius in km, "auto" (see the module docstring) or None (no clipping: the cells
    tile the sphere).
    """

    _coverage = True

    def __init__(self, points, max_radius_km: float | str | None = "auto", *, step_km: float = STEP_KM) -> None:
        latlon = _as_latlon(points, "gallery points")
        if latlon.shape[0] < 4:
            raise InputError(f"gallery points: need at least 4 points for Voronoi cells, got {latlon.shape[0]}")
        self.step_km = step_km
        self._latlon32 = latlon.astype(np.float32)
        xyz = to_xyz(latlon)
        tol = 2.0 * np.sin(SAME_SITE_M / 1000.0 / EARTH_RADIUS_KM / 2.0)
        self.site_of, self.site_first = _merge_sites(xyz, tol)  # (M,), (S,)
        self.site_xyz = xyz[self.site_first]
        self.site_size = np.bincount(self.site_of, minlength=self.site_first.size)  # (S,)
        self.max_radius_km = self._radius(max_radius_km)
        self._cos_r = None if self.max_radius_km is None else np.cos(self.max_radius_km / EARTH_RADIUS_KM)

        sv = SphericalVoronoi(self.site_xyz, threshold=tol / 2.0)
        counts = np.fromiter(map(len, sv.regions), dtype=np.int64, count=len(sv.regions))
        if (counts < 3).any():  # qhull dropped a near-coplanar point: cannot happen after merging
            raise RuntimeError(f"Voronoi: {(counts < 3).sum()} gallery sites have no cell")
        flat = np.fromiter(itertools.chain.from_iterable(sv.regions), dtype=np.int64, count=int(counts.sum()))
        cell = np.repeat(np.arange(counts.size), counts)
        self._vertices = sv.vertices  # (T, 3)
        self._flat = flat[sort_ccw(self.site_xyz, cell, sv.vertices[flat])]  # (K,) CCW per site
        self._counts = counts  # (S,)
        self._first = np.cumsum(counts) - counts
        self._tree = cKDTree(self.site_xyz)
        site_area = cell_areas(*self._clip(np.arange(counts.size)), counts.size) * EARTH_RADIUS_KM**2
        self.site_areas_km2 = site_area  # (S,)
        self._areas = site_area[self.site_of] / self.site_size[self.site_of]  # (M,)

    def _radius(self, value: float | str | None) -> float | None:
        if value is None:
            return None
        if isinstance(value, str):
            if value != "auto":
                raise InputError(f"max_radius_km: expected a number of km, 'auto' or None, got {value!r}")
            return auto_radius_km(self.site_xyz)
        if not 0.0 < float(value) <= MAX_RADIUS_KM:
            raise InputError(f"max_radius_km: expected a radius in (0, {MAX_RADIUS_KM:g}] km, got {value}")
        return float(value)

    def _clip(self, sites: np.ndarray) -> tuple[np.ndarray, EdgeClip]:
        """Edges of `sites`' cells (ordered by site, CCW) with their caps: (position in `sites` (E,), edges)."""
        counts = self._counts[sites]
        cell, pos, nxt = ring_edges(counts)
        rows = np.repeat(self._first[sites], counts) + (pos - np.repeat(np.cumsum(counts) - counts, counts))
        nxt_rows = rows - pos + nxt
        a, b = self._vertices[self._flat[rows]], self._vertices[self._flat[nxt_rows]]
        cos_r = None if self._cos_r is None else np.full(rows.size, self._cos_r)
        return cell, EdgeClip(self.site_xyz[sites][cell], a, b, cos_r)

    @property
    def fingerprint(self) -> str:
        radius = "none" if self.max_radius_km is None else f"{self.max_radius_km:.3f}km"
        return f"gallery:{len(self)}:{radius}:{self._digest()}"

    def locate(self, latlon) -> np.ndarray:
        xyz = to_xyz(_as_latlon(latlon, "points to locate"))
        chord, site = self._tree.query(xyz)
        inside = np.ones(site.shape, bool)
        if self.max_radius_km is not None:
            inside = chord <= 2.0 * np.sin(self.max_radius_km / EARTH_RADIUS_KM / 2.0) * (1 + 1e-12)
        return np.where(inside, self.site_first[site], -1).astype(np.int64)

    def _site_rings(self, sites: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return boundary(*self._clip(sites), self.step_km / EARTH_RADIUS_KM)


def _quad_rings(vertices: np.ndarray, step_km: float) -> tuple[np.ndarray, np.ndarray]:
    """Densified boundaries of S2 cells given by their CCW vertices (K, 4, 3): (P, 3) and ring ids (P,)."""
    a = vertices.reshape(-1, 3)  # (4K, 3)
    b = np.roll(vertices, -1, axis=1).reshape(-1, 3)
    cell = np.repeat(np.arange(vertices.shape[0]), 4)
    return boundary(cell, EdgeClip(np.zeros_like(a), a, b, None), step_km / EARTH_RADIUS_KM)


class S2Cells(CandidateCells):
    """S2 cells given as ids (uint64) or tokens, one per candidate, non-overlapping."""

    def __init__(self, cells, *, step_km: float = STEP_KM) -> None:
        ids = self._parse(cells)
        self.step_km = step_km
        lo, hi = cell_ranges(ids)
        order = np.argsort(lo, kind="stable")
        clash = np.flatnonzero(lo[order][1:] <= hi[order][:-1])
        tokens = ids_to_tokens(ids)
        if clash.size:
            a, b = order[clash[0]], order[clash[0] + 1]
            raise InputError(f"S2 cells: cells must not overlap; '{tokens[a]}' and '{tokens[b]}' do")
        cells_ = [s2.S2Cell(s2.S2CellId(int(i))) for i in ids.tolist()]
        verts = [(v.x(), v.y(), v.z()) for c in cells_ for v in (c.GetVertex(k) for k in range(4))]
        self._vertices = np.asarray(verts, np.float64).reshape(-1, 4, 3)  # (M, 4, 3) CCW
        self._areas = np.fromiter((c.ExactArea() for c in cells_), np.float64, len(cells_)) * EARTH_RADIUS_KM**2
        self.cell_ids = ids
        center = self._vertices.sum(axis=1)
        center /= np.linalg.norm(center, axis=1, keepdims=True)
        lat = np.rad2deg(np.arcsin(np.clip(center[:, 2], -1, 1)))
        lon = np.rad2deg(np.arctan2(center[:, 1], center[:, 0]))
        self._lookup = CellPartition(class_label=np.arange(ids.size), tokens=tokens, cell_ids=ids,
                                     imgs_per_cell=np.zeros(ids.size, np.int64), centroids=np.c_[lat, lon])

    @staticmethod
    def _parse(cells) -> np.ndarray:
        arr = np.asarray(cells)
        if arr.ndim != 1 or arr.size == 0:
            raise InputError(f"S2 cells: expected a non-empty 1-D list of cell ids or tokens, got shape {arr.shape}")
        if arr.dtype.kind in "US":
            ids = np.array([s2.S2CellId.FromToken(str(t)).id() for t in arr.tolist()], dtype=np.uint64)
        elif arr.dtype.kind in "ui":
            ids = arr.astype(np.uint64)
        else:
            raise InputError(f"S2 cells: expected cell ids (integers) or tokens (strings), got dtype {arr.dtype}")
        bad = [i for i, v in enumerate(ids.tolist()) if not s2.S2CellId(int(v)).is_valid()]
        if bad:
            raise InputError(f"S2 cells: entry {bad[0]} ({arr[bad[0]]!r}) is not a valid S2 cell id or token")
        return ids

    @classmethod
    def from_partition(cls, partition: CellPartition, **kwargs) -> "S2Cells":
        """The cells of a classifier's partition, in class order."""
        return cls(partition.cell_ids, **kwargs)

    @property
    def areas_km2(self) -> np.ndarray:
        return self._areas

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256(self.cell_ids.astype("<u8").tobytes()).hexdigest()[:16]
        return f"s2:{len(self)}:{digest}"

    def locate(self, latlon) -> np.ndarray:
        return assign_cells(self._lookup, _as_latlon(latlon, "points to locate"))

    @property
    def n_sites(self) -> int:
        return len(self)

    def _sites(self, idx: np.ndarray) -> np.ndarray:
        return idx

    def _site_rings(self, sites: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _quad_rings(self._vertices[sites], self.step_km)


def s2_level_for(num_points: int) -> int:
    """The S2 level with about as many cells as points (6 · 4^L ≈ M), in [6, 13]."""
    return int(np.clip(round(np.log(max(num_points, 6) / 6.0) / np.log(4.0)), 6, 13))


class GalleryS2Cells(_PointCells):
    """Gallery points (M, 2), each standing for the level-`level` S2 cell that holds it (shared equally)."""

    def __init__(self, points, level: int | None = None, *, step_km: float = STEP_KM) -> None:
        latlon = _as_latlon(points, "gallery points")
        self.step_km = step_km
        self._latlon32 = latlon.astype(np.float32)
        self.level = s2_level_for(latlon.shape[0]) if level is None else int(level)
        if not 0 <= self.level <= 30:
            raise InputError(f"S2 level: expected 0..30, got {level}")
        self.cell_ids, self.site_of = np.unique(parent_ids(leaf_cell_ids(latlon), self.level), return_inverse=True)
        n_sites = self.cell_ids.size
        self.site_first = np.full(n_sites, latlon.shape[0], dtype=np.int64)
        np.minimum.at(self.site_first, self.site_of, np.arange(latlon.shape[0]))
        cells_ = [s2.S2Cell(s2.S2CellId(int(i))) for i in self.cell_ids.tolist()]
        verts = [(v.x(), v.y(), v.z()) for c in cells_ for v in (c.GetVertex(k) for k in range(4))]
        self._vertices = np.asarray(verts, np.float64).reshape(-1, 4, 3)  # (S, 4, 3) CCW
        site_area = np.fromiter((c.ExactArea() for c in cells_), np.float64, n_sites) * EARTH_RADIUS_KM**2
        size = np.bincount(self.site_of, minlength=n_sites)
        self._areas = site_area[self.site_of] / size[self.site_of]  # (M,)

    @property
    def fingerprint(self) -> str:
        return f"gallery-s2:{len(self)}:L{self.level}:{self._digest()}"

    def locate(self, latlon) -> np.ndarray:
        cell = parent_ids(leaf_cell_ids(_as_latlon(latlon, "points to locate")), self.level)
        pos = np.clip(np.searchsorted(self.cell_ids, cell), 0, self.cell_ids.size - 1)
        return np.where(self.cell_ids[pos] == cell, self.site_first[pos], -1).astype(np.int64)

    def _site_rings(self, sites: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _quad_rings(self._vertices[sites], self.step_km)


_S2_CACHE: OrderedDict[tuple, GalleryS2Cells] = OrderedDict()
_CACHE: OrderedDict[tuple, GalleryCells] = OrderedDict()
_CACHE_SIZE = 4
_CACHE_LOCK = threading.Lock()  # guards the caches' dicts and `_BUILDING`
_BUILDING: dict[tuple, threading.Lock] = {}  # one lock per cells object being built


def _cached_build(cache: OrderedDict, size: int, key: tuple, build):
    """`cache[key]`, built by `build()` on first use and kept among the last `size`. Threads asking for the same
    key at once wait for one build (a 100K gallery's Voronoi cells take seconds) instead of each making its own."""
    with _CACHE_LOCK:
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        building = _BUILDING.setdefault(key, threading.Lock())
    with building:
        with _CACHE_LOCK:
            if key in cache:  # built by the thread we waited for
                cache.move_to_end(key)
                return cache[key]
        try:
            value = build()
        except BaseException:  # e.g. too few points: the next caller tries afresh
            with _CACHE_LOCK:
                _BUILDING.pop(key, None)
            raise
        with _CACHE_LOCK:  # cached before its lock goes, so no caller can start a second build in between
            cache[key] = value
            while len(cache) > size:
                cache.popitem(last=False)
            _BUILDING.pop(key, None)
        return value


def gallery_s2_cells(points) -> GalleryS2Cells:
    """`GalleryS2Cells` of a gallery at the automatic level, built once per gallery (the last 2 kept)."""
    latlon = _as_latlon(points, "gallery points").astype(np.float32)
    key = (hashlib.sha256(latlon.tobytes()).hexdigest(), latlon.shape[0])
    return _cached_build(_S2_CACHE, 2, key, lambda: GalleryS2Cells(latlon))


def gallery_cells(points, max_radius_km: float | str | None = "auto") -> GalleryCells:
    """`GalleryCells` of a gallery, built once per (gallery, radius) and kept in memory (the last 4); threads
    asking at once share one build."""
    latlon = _as_latlon(points, "gallery points").astype(np.float32)
    key = (hashlib.sha256(latlon.tobytes()).hexdigest(), latlon.shape[0], max_radius_km)
    return _cached_build(_CACHE, _CACHE_SIZE, key, lambda: GalleryCells(latlon, max_radius_km))
