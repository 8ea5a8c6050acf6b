"""Great-circle distances on a spherical Earth (haversine, R = 6371 km).

Coordinates are `(lat, lon)` in degrees, stacked in the last axis; results are kilometres.
Every function takes numpy arrays or torch tensors and returns the same kind.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TypeVar

import numpy as np
import torch

EARTH_RADIUS_KM = 6371.0

Array = TypeVar("Array", np.ndarray, torch.Tensor)


def _lib(x):
    return torch if isinstance(x, torch.Tensor) else np


def _as_float(x):
    if isinstance(x, torch.Tensor):
        return x if x.is_floating_point() else x.double()
    return np.asarray(x, dtype=np.float64)


def haversine_km(a: Array, b: Array) -> Array:
    """Distance between matching points: `a` and `b` broadcast in `(..., 2)` → `(...)` km."""
    a, b = _as_float(a), _as_float(b)
    xp = _lib(a)
    lat1, lon1 = xp.deg2rad(a[..., 0]), xp.deg2rad(a[..., 1])
    lat2, lon2 = xp.deg2rad(b[..., 0]), xp.deg2rad(b[..., 1])
    h = xp.sin((lat2 - lat1) / 2) ** 2 + xp.cos(lat1) * xp.cos(lat2) * xp.sin((lon2 - lon1) / 2) ** 2
    # clip: rounding can push h a hair past 1 for antipodal points; atan2 stays accurate there
    h = xp.clip(h, 0.0, 1.0)
    return 2 * EARTH_RADIUS_KM * xp.arctan2(xp.sqrt(h), xp.sqrt(1 - h))


def haversine_matrix_km(a: Array, b: Array) -> Array:
    """All pairs: `a` `(N, 2)`, `b` `(M, 2)` → `(N, M)` km. Memory is N·M; see `iter_haversine_chunks`."""
    return haversine_km(a[:, None, :], b[None, :, :])


def iter_haversine_chunks(a: Array, b: Array, chunk_size: int = 1024) -> Iterator[tuple[int, Array]]:
    """Yield `(row_start, distances)` blocks of the N×M matrix, `chunk_size` rows of `a` at a time."""
    for start in range(0, len(a), chunk_size):
        yield start, haversine_matrix_km(a[start : start + chunk_size], b)


def nearest_km(a: Array, b: Array, chunk_size: int | None = None) -> tuple[Array, Array]:
    """For each point of `a`, the nearest point of `b`: `(distance_km (N,), index (N,))`.

    Chunked over rows so that memory stays near `chunk_size × M` floats: 10^5 × 10^5 runs in
    bounded memory (about 256 MB per chunk by default).
    """
    if chunk_size is None:
        chunk_size = max(1, int(32_000_000 // max(1, len(b))))
    xp = _lib(a)
    dists, idxs = [], []
    for _, block in iter_haversine_chunks(a, b, chunk_size):
        if xp is torch:
            d, i = block.min(dim=1)
        else:
            i = block.argmin(axis=1)
            d = np.take_along_axis(block, i[:, None], axis=1)[:, 0]
        dists.append(d)
        idxs.append(i)
    if not dists:
        return (torch.empty(0), torch.empty(0, dtype=torch.long)) if xp is torch else (np.empty(0), np.empty(0, int))
    cat = torch.cat if xp is torch else np.concatenate
    return cat(dists), cat(idxs)
