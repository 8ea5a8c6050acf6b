"""Unit-sphere geometry for candidate areas: unit vectors, exact spherical areas, cap clipping, boundaries.

Everything here works on the unit sphere (areas are solid angles in steradians; multiply by R² for km²).
A cell is a convex spherical polygon given by its vertices in counter-clockwise order (seen from outside),
optionally clipped to a spherical cap of angular radius r around its generator point p (which lies inside
the polygon). Areas are exact: the cell is split into the fan triangles (p, A, B) of its edges; the part of a
fan triangle outside the cap is replaced by the cap sector of the same azimuth span, (1 − cos r)·Δφ.
"""

from __future__ import annotations

import numpy as np

ARC_STEP = np.deg2rad(3.0)  # cap circles: at most 3° of azimuth per chord (area lost < 0.05 %)


def to_xyz(latlon: np.ndarray) -> np.ndarray:
    """(N, 2) (lat, lon) degrees → (N, 3) unit vectors."""
    lat, lon = np.deg2rad(np.asarray(latlon, np.float64)).T
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=1)


def to_latlon(xyz: np.ndarray) -> np.ndarray:
    """(N, 3) vectors → (N, 2) (lat, lon) degrees."""
    x, y, z = np.asarray(xyz, np.float64).T
    return np.rad2deg(np.stack([np.arctan2(z, np.hypot(x, y)), np.arctan2(y, x)], axis=1))


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", a, b)


def _normalize(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def triangle_area(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Signed solid angle of spherical triangles (Van Oosterom & Strackee); > 0 when a, b, c run CCW."""
    return 2.0 * np.arctan2(_dot(a, np.cross(b, c)), 1.0 + _dot(a, b) + _dot(b, c) + _dot(c, a))


def azimuth_span(p: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Signed angle at p from the direction of x to the direction of y (radians, CCW positive)."""
    return np.arctan2(_dot(p, np.cross(x, y)), _dot(x, y) - _dot(p, x) * _dot(p, y))


def cap_area(radius_rad: float) -> float:
    """Solid angle of a spherical cap of angular radius `radius_rad`."""
    return 2.0 * np.pi * (1.0 - np.cos(radius_rad))


def ring_edges(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For rings of `counts` vertices stored back to back: (cell (V,), start (V,), next (V,)) vertex positions."""
    counts = np.asarray(counts, np.int64)
    cell = np.repeat(np.arange(counts.size), counts)  # (V,)
    first = np.cumsum(counts) - counts  # (C,)
    pos = np.arange(cell.size) - first[cell]
    return cell, np.arange(cell.size), first[cell] + (pos + 1) % counts[cell]


def sort_ccw(center: np.ndarray, cell: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Order that sorts vertices (V, 3) of each cell CCW (seen from outside) around its center (C, 3)."""
    p = center[cell]  # (V, 3)
    axis = np.where(np.abs(p[:, 2:3]) < 0.9, [[0.0, 0.0, 1.0]], [[1.0, 0.0, 0.0]])
    e1 = _normalize(np.cross(axis, p))
    e2 = np.cross(p, e1)  # (e1, e2, p) right-handed: increasing angle is CCW from outside
    angle = np.arctan2(_dot(verts, e2), _dot(verts, e1))
    return np.lexsort((angle, cell))


class EdgeClip:
    """Great-circle edges A→B of cells with generators p, intersected with caps cos(r) around p.

    Each edge X(s) = A cos s + U sin s, s ∈ [0, L], is split at the cap boundary into an inside part
    [s0, s1] (empty when s0 == s1) and the outside parts [0, s0] and [s1, L]. With `cos_r=None` nothing is
    clipped: s0 = 0, s1 = L.
    """

    def __init__(self, p: np.ndarray, a: np.ndarray, b: np.ndarray, cos_r: np.ndarray | None) -> None:
        self.p, self.a, self.cos_r = p, a, cos_r
        ab = _dot(a, b)
        self.length = np.arctan2(np.linalg.norm(np.cross(a, b), axis=1), ab)  # (E,)
        perp = b - ab[:, None] * a
        norm = np.linalg.norm(perp, axis=1, keepdims=True)
        self.u = np.divide(perp, norm, out=np.zeros_like(perp), where=norm > 0)  # (E, 3) tangent at A
        if cos_r is None:
            self.s0, self.s1 = np.zeros_like(self.length), self.length
            return
        pa, pu = _dot(p, a), _dot(p, self.u)
        m = np.hypot(pa, pu)  # p·X(s) = m cos(s − σ)
        sigma = np.arctan2(pu, pa)
        sigma += 2 * np.pi * np.round((self.length / 2 - sigma) / (2 * np.pi))  # the copy nearest the edge
        delta = np.arccos(np.clip(cos_r / np.maximum(m, 1e-300), -1.0, 1.0))
        reach = m > cos_r
        s0 = np.clip(sigma - delta, 0.0, self.length)
        s1 = np.clip(sigma + delta, 0.0, self.length)
        empty = ~reach | (s0 >= s1)
        self.s0 = np.where(empty, self.length, s0)
        self.s1 = np.where(empty, self.length, s1)

    def point(self, s: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Points X(s) on edges `rows` (all edges when None)."""
        a, u = (self.a, self.u) if rows is None else (self.a[rows], self.u[rows])
        return a * np.cos(s)[:, None] + u * np.sin(s)[:, None]

    def areas(self) -> np.ndarray:
        """(E,) signed solid angle of each edge's fan triangle (p, A, B) ∩ cap."""
        x0, x1 = self.point(self.s0), self.point(self.s1)
        inside = triangle_area(self.p, x0, x1)
        if self.cos_r is None:
            return inside
        sector = 1.0 - self.cos_r
        outside = azimuth_span(self.p, self.a, x0) + azimuth_span(self.p, x1, self.point(self.length))
        return np.where(self.s1 > self.s0, inside, 0.0) + sector * outside


def cell_areas(cell: np.ndarray, clip: EdgeClip, n_cells: int) -> np.ndarray:
    """(C,) solid angle of every (clipped) cell: its fan triangles summed."""
    return np.bincount(cell, weights=clip.areas(), minlength=n_cells)


def boundary(cell: np.ndarray, clip: EdgeClip, step_rad: float) -> tuple[np.ndarray, np.ndarray]:
    """Densified boundary of each cell, CCW: points (P, 3) and their cell (P,), cells contiguous.

    Edges must be ordered by cell and CCW within a cell. Inside parts of edges are sampled along the great
    circle every ≤ `step_rad`; outside parts are replaced by the cap circle between the same azimuths, sampled
    every ≤ `step_rad` and ≤ `ARC_STEP` of azimuth.
    Each part contributes its start point and interior samples; its end is the next part's start.
    """
    e = clip.length.size
    start = np.stack([np.zeros(e), clip.s0, clip.s1], axis=1).ravel()  # (3E,) outside, inside, outside
    arc = np.stack([clip.s0, clip.s1, clip.length], axis=1).ravel() - start
    edge = np.repeat(np.arange(e), 3)  # part → edge
    outside = np.zeros(3 * e, bool) if clip.cos_r is None else np.tile([True, False, True], e)
    length, span = arc, np.zeros(3 * e)
    if clip.cos_r is not None:
        span = azimuth_span(clip.p[edge], clip.point(start, edge), clip.point(start + arc, edge))
        on_circle = np.maximum(np.abs(span) * np.sqrt(1.0 - clip.cos_r[edge] ** 2), np.abs(span) * step_rad / ARC_STEP)
        length = np.where(outside, on_circle, arc)
    n = np.where(arc > 1e-15, np.maximum(1, np.ceil(length / step_rad)), 0).astype(np.int64)  # (3E,)
    part = np.repeat(np.arange(3 * e), n)  # (P,)
    frac = (np.arange(part.size) - np.repeat(np.cumsum(n) - n, n)) / np.maximum(n[part], 1)
    pts = np.empty((part.size, 3))
    ins = ~outside[part]
    pts[ins] = clip.point(start[part[ins]] + arc[part[ins]] * frac[ins], edge[part[ins]])
    if (~ins).any():  # the cap circle: the part's start, pulled onto the circle, rotated about p
        po = part[~ins]
        eo = edge[po]
        x = _pull(clip.p[eo], clip.point(start[po], eo), clip.cos_r[eo])
        pts[~ins] = _rotate(x, clip.p[eo], span[po] * frac[~ins])
    return pts, cell[edge[part]]


def _pull(p: np.ndarray, x: np.ndarray, cos_r: np.ndarray) -> np.ndarray:
    """Move x along the great circle from p to angular distance r from p."""
    t = _normalize(x - _dot(p, x)[:, None] * p)
    return p * cos_r[:, None] + t * np.sqrt(1.0 - cos_r**2)[:, None]


def _rotate(x: np.ndarray, axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rotate x about unit `axis` by `angle` (right-handed), Rodrigues."""
    c, s = np.cos(angle)[:, None], np.sin(angle)[:, None]
    return x * c + np.cross(axis, x) * s + axis * _dot(axis, x)[:, None] * (1 - c)
