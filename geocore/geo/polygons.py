"""Spherical rings → lon/lat polygons (EPSG:4326) that are right across the antimeridian and at the poles.

A ring (densified unit vectors, CCW seen from outside) is converted to (lon, lat) with its longitudes
unwrapped, so that it never jumps by 360°. Its winding then tells what it encloses:

* winding 0: an ordinary ring; where it leaves [−180, 180] it is cut at the antimeridian and the part beyond
  is shifted by ∓360° (a region around lon 180 becomes two touching pieces, never a band around the world);
* winding ±360°: the ring circles a pole (+: North, −: South, for a CCW ring); it is closed along the pole's
  latitude and cut at the antimeridian, so the polygon covers the polar cap.

A vertex exactly on a pole gets two lon/lat copies, at the longitudes of its two neighbours.
Polygons are merged with a fixed precision grid (`GRID_DEG`), which makes the union robust to the last-bit
differences between the two sides of an edge. `count_areas` counts connected pieces, joining pieces that
meet at the antimeridian or at a pole, or that lie within `GAP_DEG` of each other.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import shapely
import shapely.errors
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from shapely.geometry.base import BaseGeometry

from geocore.geo.sphere import to_latlon

GRID_DEG = 1e-7  # ~1 cm: union precision
MAX_DLON = np.deg2rad(0.5)  # longitude per boundary step, at most
GAP_DEG = 1e-3  # ~100 m: pieces closer than this are one area (covers edge-sampling slivers)
_POLE_EPS = 1e-9
_WORLD = shapely.box(-180.0, -90.0, 180.0, 90.0)
_SHIFTS = (-360.0, 0.0, 360.0)
PLAIN, PLAIN_FIXED, CUT, POLE = 0, 1, 2, 3  # kinds of `ring_pieces`, in `rings_to_polygons`' order


def _pole_split(lonlat: np.ndarray, ring: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Give each pole vertex two copies at its ring neighbours' longitudes."""
    pole = np.abs(lonlat[:, 1]) > 90.0 - _POLE_EPS
    if not pole.any():
        return lonlat, ring
    first = np.r_[True, ring[1:] != ring[:-1]]
    last = np.r_[ring[1:] != ring[:-1], True]
    start = np.maximum.accumulate(np.where(first, np.arange(ring.size), 0))
    end = np.minimum.accumulate(np.where(last, np.arange(ring.size), ring.size)[::-1])[::-1]
    prev = np.where(first, end, np.arange(ring.size) - 1)
    nxt = np.where(last, start, np.arange(ring.size) + 1)
    counts = np.where(pole, 2, 1)
    out = np.repeat(lonlat, counts, axis=0)
    pos = np.cumsum(counts) - counts  # first copy of each point in `out`
    idx = np.flatnonzero(pole)
    out[pos[idx], 0] = lonlat[prev[idx], 0]
    out[pos[idx] + 1, 0] = lonlat[nxt[idx], 0]
    out[pos[idx], 1] = out[pos[idx] + 1, 1] = np.sign(lonlat[idx, 1]) * 90.0
    return out, np.repeat(ring, counts)


def _unwrap(lonlat: np.ndarray, ring: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unwrapped longitudes (P,), each ring's first index (R,) and winding in degrees (R,)."""
    starts = np.flatnonzero(np.r_[True, ring[1:] != ring[:-1]])
    lon = lonlat[:, 0]
    step = np.r_[0.0, np.diff(lon)]
    step = (step + 180.0) % 360.0 - 180.0
    step[starts] = 0.0
    cum = np.cumsum(step)
    sizes = np.diff(np.r_[starts, lon.size])
    unwrapped = np.repeat(lon[starts] - cum[starts], sizes) + cum
    # lon + 360·k exactly: the cumulative sum's rounding would make a ring's coordinates depend on the rings
    # before it in the batch, and cached pieces (computed in different batches) must match vertex for vertex
    unwrapped = lon + 360.0 * np.round((unwrapped - lon) / 360.0)
    ends = np.r_[starts[1:], lon.size] - 1
    closing = (lon[starts] - lon[ends] + 180.0) % 360.0 - 180.0
    winding = unwrapped[ends] - unwrapped[starts] + closing
    return unwrapped, starts, np.round(winding / 360.0) * 360.0


def _cut(polys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The parts of unwrapped polygons (N,) inside [−180, 180], shifted back into it: (parts, their polygon),
    each polygon's parts in shift order (−360°, 0°, +360°)."""
    moved = np.stack([shapely.transform(polys, lambda xy, d=shift: xy + [d, 0.0]) for shift in _SHIFTS], axis=1)
    parts = shapely.intersection(moved, _WORLD).ravel()  # (3N,) polygon-major
    keep = ~shapely.is_empty(parts) & (shapely.area(parts) > 0)
    return parts[keep], np.repeat(np.arange(polys.size), len(_SHIFTS))[keep]


def _pole_caps(coords: np.ndarray, starts: np.ndarray, ends: np.ndarray, winding: np.ndarray) -> np.ndarray:
    """Polygons (unwrapped, 360° wide) of the rings `starts`/`ends` (R,) that circle a pole (winding ±360°),
    closed along the pole's latitude so that they cover the polar cap."""
    n = ends - starts
    first = coords[starts]  # (R, 2)
    end_lon = first[:, 0] + winding
    pole = np.where(winding > 0, 90.0, -90.0)
    extra = np.stack([np.c_[end_lon, first[:, 1]], np.c_[end_lon, pole], np.c_[first[:, 0], pole]], axis=1)
    sizes = n + 3
    ring = np.repeat(np.arange(n.size), sizes)
    pos = np.arange(ring.size) - np.repeat(np.cumsum(sizes) - sizes, sizes)  # position within its ring
    own = pos < n[ring]
    out = np.empty((ring.size, 2))
    out[own] = coords[starts[ring[own]] + pos[own]]
    out[~own] = extra.reshape(-1, 2)
    return shapely.polygons(shapely.linearrings(out, indices=ring))


def _made_valid(polys: np.ndarray) -> np.ndarray:
    """`polys` with the invalid ones replaced by `shapely.make_valid` (a new array)."""
    out = polys.copy()
    bad = ~shapely.is_valid(out)
    out[bad] = shapely.make_valid(out[bad])
    return out


def _refine(points: np.ndarray, ring: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Insert great-circle points where a step spans more than `MAX_DLON` of longitude (near the poles a
    short step sweeps many degrees, and a straight lon/lat segment would stray from the boundary)."""
    nxt = np.arange(ring.size) + 1
    last = np.r_[ring[1:] != ring[:-1], True]
    starts = np.flatnonzero(np.r_[True, ring[1:] != ring[:-1]])
    nxt[last] = starts[np.cumsum(np.r_[True, ring[1:] != ring[:-1]])[last] - 1]
    lon = np.arctan2(points[:, 1], points[:, 0])
    dlon = np.abs((lon[nxt] - lon + np.pi) % (2 * np.pi) - np.pi)
    polar = (np.abs(points[:, 2]) > 1 - 1e-12) | (np.abs(points[nxt, 2]) > 1 - 1e-12)
    extra = np.where(polar, 0, np.maximum(np.ceil(dlon / MAX_DLON) - 1, 0)).astype(np.int64)
    if not extra.any():
        return points, ring
    counts = extra + 1
    src = np.repeat(np.arange(ring.size), counts)
    t = (np.arange(src.size) - np.repeat(np.cumsum(counts) - counts, counts)) / counts[src]
    a, b = points[src], points[nxt[src]]
    mid = a * (1 - t)[:, None] + b * t[:, None]
    return mid / np.linalg.norm(mid, axis=1, keepdims=True), ring[src]


def ring_pieces(points: np.ndarray, ring: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`rings_to_polygons`' pieces with the ring each came from: (pieces (N,) object, ring id (N,), kind (N,)).

    `kind` is PLAIN (inside [−180, 180], valid), PLAIN_FIXED (inside, repaired by `make_valid`), CUT (cut at
    the antimeridian) or POLE (closed over a pole, then cut); pieces are ordered by kind, then by ring, then
    (several pieces of one ring) by shift. A ring's pieces do not depend on the other rings passed with it.
    """
    empty = np.empty(0, dtype=object), np.empty(0, np.int64), np.empty(0, np.int8)
    if points.shape[0] == 0:
        return empty
    points, ring = _refine(points, ring)
    lonlat = to_latlon(points)[:, ::-1].copy()  # (P, 2) lon, lat
    lonlat, ring = _pole_split(lonlat, ring)
    lon, starts, winding = _unwrap(lonlat, ring)
    ids = ring[starts]  # (R,)
    coords = np.round(np.c_[lon, lonlat[:, 1]] / GRID_DEG) * GRID_DEG
    ends = np.r_[starts[1:], lon.size]
    plain = np.flatnonzero(winding == 0)
    keep = np.repeat(winding == 0, ends - starts)
    rings = shapely.linearrings(coords[keep], indices=np.repeat(np.arange(plain.size), (ends - starts)[plain]))
    polys = shapely.polygons(rings)
    inside = (np.minimum.reduceat(lon, starts)[plain] >= -180.0) & (np.maximum.reduceat(lon, starts)[plain] <= 180.0)
    cut, cut_src = _cut(polys[~inside])
    polar = np.flatnonzero(winding != 0)
    caps, cap_src = _cut(_pole_caps(coords, starts[polar], ends[polar], winding[polar]))
    inner, inner_ids = polys[inside], ids[plain[inside]]
    valid = shapely.is_valid(inner)
    groups = [  # (pieces, their ring ids, kind), in output order
        (inner[valid], inner_ids[valid], PLAIN),
        (shapely.make_valid(inner[~valid]), inner_ids[~valid], PLAIN_FIXED),
        (_made_valid(cut), ids[plain[~inside][cut_src]], CUT),
        (_made_valid(caps), ids[polar[cap_src]], POLE),
    ]
    return (np.concatenate([g for g, _, _ in groups]), np.concatenate([r for _, r, _ in groups]),
            np.concatenate([np.full(r.size, k, np.int8) for _, r, k in groups]))


def rings_to_polygons(points: np.ndarray, ring: np.ndarray) -> tuple[list[BaseGeometry], list[BaseGeometry]]:
    """Polygons (lon, lat degrees) of rings given as unit vectors (P, 3) and ring ids (P,), rings contiguous.

    Returns (plain, cut): rings inside [−180, 180], with coordinates rounded to `GRID_DEG` (so that edges
    shared by two cells match exactly), and the pieces of rings cut at the antimeridian or closed at a pole.
    `ring_pieces` gives the same pieces with the ring each came from.
    """
    pieces, _, kind = ring_pieces(points, ring)
    is_plain = kind < CUT
    return list(pieces[is_plain]), list(pieces[~is_plain])


def _union_all(polys: list[BaseGeometry]) -> BaseGeometry:
    arr = np.asarray(polys, dtype=object)
    try:
        return shapely.union_all(arr)
    except shapely.errors.GEOSException:  # robustness failure: snap-rounding overlay always succeeds
        return shapely.union_all(arr, grid_size=GRID_DEG)


def union(plain: Sequence[BaseGeometry], cut: Sequence[BaseGeometry], *, coverage: bool = False) -> BaseGeometry:
    """Union of `rings_to_polygons` output (lists or object arrays) as a (Multi)Polygon.

    `coverage=True` promises that `plain` pieces do not overlap and share edges vertex for vertex (Voronoi
    cells): they are merged by GEOS's fast coverage union, checked, and merged by a full overlay if the
    promise was broken. Cut pieces are merged with the parts they touch by a full overlay.
    """
    merged = None
    if coverage and len(plain):
        try:
            merged = shapely.coverage_union_all(np.asarray(plain, dtype=object))
            merged = merged if merged.is_valid else None
        except shapely.errors.GEOSException:
            merged = None
    if merged is None:
        merged = _union_all(plain) if len(plain) else shapely.Polygon()
    parts = np.asarray([p for p in shapely.get_parts(merged) if not p.is_empty], dtype=object)
    if len(cut):
        touch = np.zeros(parts.size, bool)
        if parts.size:
            hit = shapely.STRtree(parts).query(np.asarray(cut, dtype=object), predicate="intersects")[1]
            touch[hit] = True
        joined = _union_all(list(parts[touch]) + list(cut))
        parts = np.concatenate([parts[~touch], np.asarray(list(shapely.get_parts(joined)), dtype=object)])
    kept = [p for p in parts if p.geom_type == "Polygon" and p.area > 0]
    return shapely.MultiPolygon(kept) if len(kept) != 1 else kept[0]


def _envelope_pairs(tree: shapely.STRtree, geoms: np.ndarray, gap: float) -> tuple[np.ndarray, np.ndarray]:
    """(i, j): `geoms[i]` and tree geometry j whose envelopes, grown by `gap`, meet (candidates for dwithin)."""
    b = shapely.bounds(geoms)
    return tree.query(shapely.box(b[:, 0] - gap, b[:, 1] - gap, b[:, 2] + gap, b[:, 3] + gap))


def _dwithin(a: np.ndarray, b: np.ndarray, gap: float) -> np.ndarray:
    """Elementwise `shapely.dwithin` of prepared geometries, each pair tested from its larger geometry: a small
    part against a prepared (indexed) large one is cheap, the other way round scans the large one each time."""
    big = shapely.get_num_coordinates(a) >= shapely.get_num_coordinates(b)
    out = np.empty(a.size, bool)
    out[big] = shapely.dwithin(a[big], b[big], gap)
    out[~big] = shapely.dwithin(b[~big], a[~big], gap)
    return out


def count_areas(geometry: BaseGeometry, gap_deg: float = GAP_DEG) -> int:
    """Connected areas of a lon/lat geometry on the sphere.

    Pieces within `gap_deg` of each other, pieces that meet at the antimeridian (one touching lon 180,
    the other lon −180 at overlapping latitudes) and pieces touching the same pole count as one area.
    """
    parts = np.asarray([p for p in shapely.get_parts(geometry) if not p.is_empty], dtype=object)
    n = parts.size
    if n <= 1:
        return int(n)
    shapely.prepare(parts)  # `get_parts` returns copies: the caller's geometry is not touched
    tree = shapely.STRtree(parts)
    i, j = _envelope_pairs(tree, parts, gap_deg)
    once = i < j  # each pair once, no self-pairs
    i, j = i[once], j[once]
    near = _dwithin(parts[i], parts[j], gap_deg)
    links = [(i[near], j[near])]
    bounds = shapely.bounds(parts)  # (n, 4) minx, miny, maxx, maxy
    west = np.flatnonzero(bounds[:, 0] <= -180.0 + gap_deg)
    if west.size:
        moved = shapely.transform(parts[west], lambda xy: xy + [360.0, 0.0])
        shapely.prepare(moved)
        a, b = _envelope_pairs(tree, moved, gap_deg)
        near = _dwithin(moved[a], parts[b], gap_deg)
        links.append((west[a[near]], b[near]))
    for touches in (bounds[:, 3] >= 90.0 - gap_deg, bounds[:, 1] <= -90.0 + gap_deg):
        at_pole = np.flatnonzero(touches)
        links.append((at_pole, np.full(at_pole.size, at_pole[0] if at_pole.size else 0)))
    rows = np.concatenate([np.asarray(a, np.int64) for a, _ in links])
    cols = np.concatenate([np.asarray(b, np.int64) for _, b in links])
    graph = coo_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n))
    return int(connected_components(graph, directed=False)[0])


def countries_touched(geometry: BaseGeometry) -> list[tuple[str, str]]:
    """(ISO A3, name) of the Natural Earth countries a lon/lat geometry touches, most covered first.

    Order: by the summed area of the geometry's pieces that touch each country (a piece on a border counts
    for both). A geometry that touches no country polygon (coarse 1:110m coastlines) gets the countries
    within `COAST_TOLERANCE_DEG` instead; open ocean gives an empty list.
    """
    from geocore.geo.countries import COAST_TOLERANCE_DEG, country_shapes

    parts = np.asarray([p for p in shapely.get_parts(geometry) if not p.is_empty], dtype=object)
    if parts.size == 0:
        return []
    table, _, tree = country_shapes()
    part_i, country_i = tree.query(parts, predicate="intersects")
    if country_i.size == 0:
        part_i, country_i = tree.query(parts, predicate="dwithin", distance=COAST_TOLERANCE_DEG)
    if country_i.size == 0:
        return []
    weight = np.bincount(country_i, weights=shapely.area(parts[part_i]), minlength=len(table))
    order = np.unique(country_i)
    order = order[np.argsort(-weight[order], kind="stable")]
    iso, name = table["iso_a3"].to_numpy(), table["name"].to_numpy()
    return [(str(iso[k]), str(name[k])) for k in order]


def area_km2(geometry: BaseGeometry) -> float:
    """Area of a lon/lat geometry on the sphere (R = 6371 km), via the cylindrical equal-area projection.

    Exact for the polygons' own straight lon/lat segments in that projection; for densified geodesic
    boundaries the difference from the exact spherical area is far below 0.1 %.
    """
    from geocore.geo.distance import EARTH_RADIUS_KM

    k = np.pi / 180.0
    cea = shapely.transform(geometry, lambda xy: np.c_[xy[:, 0] * k, np.sin(xy[:, 1] * k)] * EARTH_RADIUS_KM)
    return float(cea.area)
