"""Coordinate validation, longitude wrapping, and the destination-point formula."""

from __future__ import annotations

import numpy as np

from geocore.errors import InputError
from geocore.geo.distance import EARTH_RADIUS_KM


def validate_latlon(latlon, *, source: str = "coordinates", row_offset: int = 0) -> np.ndarray:
    """Return `latlon` as a float64 `(N, 2)` array, or raise InputError naming the bad rows.

    Latitude must lie in [-90, 90] and longitude in [-180, 180]; NaN and infinities are rejected.
    `row_offset` is added to reported row indices (e.g. 2 for 1-based CSV lines after a header).
    Longitudes are never wrapped here: an out-of-range value is more often a swapped or corrupt
    column than a deliberate 0–360 convention; call `wrap_longitude` where that is clearly meant.
    """
    arr = np.asarray(latlon, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise InputError(f"{source}: expected (lat, lon) pairs of shape (N, 2), got shape {arr.shape}")
    problems = []
    for name, col, lo, hi in (("LAT", arr[:, 0], -90.0, 90.0), ("LON", arr[:, 1], -180.0, 180.0)):
        bad = ~np.isfinite(col) | (col < lo) | (col > hi)
        if bad.any():
            rows = np.flatnonzero(bad)
            shown = ", ".join(f"{r + row_offset} ({float(col[r])!r})" for r in rows[:5])
            more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
            problems.append(f"{name} must be a number in [{lo:g}, {hi:g}]; bad rows: {shown}{more}")
    if problems:
        raise InputError(f"{source}: " + "; ".join(problems))
    return arr


def wrap_longitude(lon):
    """Wrap longitudes into [-180, 180) (e.g. 190 → -170, 360 → 0)."""
    return (np.asarray(lon, dtype=np.float64) + 180.0) % 360.0 - 180.0


def destination_point(latlon, bearing_deg, distance_km) -> np.ndarray:
    """Point reached from `latlon` (…, 2) travelling `distance_km` along initial `bearing_deg` (great circle)."""
    latlon = np.asarray(latlon, dtype=np.float64)
    lat1, lon1 = np.deg2rad(latlon[..., 0]), np.deg2rad(latlon[..., 1])
    theta = np.deg2rad(np.asarray(bearing_deg, dtype=np.float64))
    delta = np.asarray(distance_km, dtype=np.float64) / EARTH_RADIUS_KM
    sin_lat2 = np.sin(lat1) * np.cos(delta) + np.cos(lat1) * np.sin(delta) * np.cos(theta)
    lat2 = np.arcsin(np.clip(sin_lat2, -1.0, 1.0))
    lon2 = lon1 + np.arctan2(
        np.sin(theta) * np.sin(delta) * np.cos(lat1), np.cos(delta) - np.sin(lat1) * sin_lat2
    )
    return np.stack([np.rad2deg(lat2), wrap_longitude(np.rad2deg(lon2))], axis=-1)
