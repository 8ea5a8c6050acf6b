"""GPS galleries: the candidate points a retrieval model (GeoCLIP) scores.

Every function returns a float32 `(M, 2)` tensor of (lat, lon) degrees.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from geocore.errors import InputError
from geocore.geo.coords import validate_latlon, wrap_longitude
from geocore.geo.distance import EARTH_RADIUS_KM
from geocore.geo.tables import column_list, read_csv, to_numbers

KM_PER_DEG = EARTH_RADIUS_KM * math.pi / 180  # ≈ 111.19 km per degree of latitude
MAX_GRID_POINTS = 5_000_000
_LAT_NAMES = ("lat", "latitude")
_LON_NAMES = ("lon", "lng", "long", "longitude")


@lru_cache(maxsize=1)
def _default_gallery_np() -> np.ndarray:
    from geocore.weights.paths import geoclip_package_dir

    path = geoclip_package_dir() / "model" / "gps_gallery" / "coordinates_100K.csv"
    return _read_csv(path).astype(np.float32)


def default_gallery() -> torch.Tensor:
    """GeoCLIP's 100K MP-16 gallery, read from the installed `geoclip` wheel: (100000, 2)."""
    return torch.from_numpy(_default_gallery_np().copy())


def _read_csv(path: Path) -> np.ndarray:
    if not path.exists():
        raise InputError(f"{path}: gallery file not found")
    df = read_csv(path, "a gallery CSV with LAT,LON columns")
    cols: dict[str, list] = {}
    for c in df.columns:
        cols.setdefault(str(c).strip().lower(), []).append(c)
    lat = next((cols[n] for n in _LAT_NAMES if n in cols), None)  # the first of the accepted names present
    lon = next((cols[n] for n in _LON_NAMES if n in cols), None)
    if lat is None or lon is None:
        raise InputError(f"{path}: needs LAT and LON columns; found fields: {column_list(df.columns)}")
    if len(lat) > 1 or len(lon) > 1:  # "LAT" and "lat ": which one?
        raise InputError(f"{path}: columns {column_list(lat if len(lat) > 1 else lon)} differ only in case or "
                         "spaces; expected one LAT and one LON column")
    lat, lon = lat[0], lon[0]
    if df.empty:
        raise InputError(f"{path}: no rows")
    values = np.c_[to_numbers(df[lat]), to_numbers(df[lon])]
    return validate_latlon(values, source=str(path), row_offset=2)  # row 2 = first data line


def gallery_from_csv(path: str | Path) -> torch.Tensor:
    """A gallery from a CSV with LAT, LON columns (InputError naming the file, rows and fields)."""
    return torch.from_numpy(_read_csv(Path(path)).astype(np.float32))


def _check_bbox(south: float, west: float, north: float, east: float) -> None:
    if not (-90 <= south < north <= 90):
        raise InputError(f"bbox: need -90 <= south < north <= 90, got south={south}, north={north}")
    for name, v in (("west", west), ("east", east)):
        if not -180 <= v <= 180:
            raise InputError(f"bbox: {name} must be in [-180, 180], got {v}")


def _lon_span(west: float, east: float) -> float:
    """Degrees from west to east going eastwards; a box crossing the antimeridian has west > east."""
    span = (east - west) % 360.0
    return 360.0 if span == 0 and west != east else span  # -180..180 is the whole circle


def bbox_gallery(south: float, west: float, north: float, east: float, spacing_km: float) -> torch.Tensor:
    """A roughly equal-area grid inside a box: rows `spacing_km` apart, points `spacing_km` apart along each row.

    Points are cell centres (so a whole-globe grid has no duplicate at ±180 and none on the poles).
    `west > east` means the box crosses the antimeridian.
    """
    _check_bbox(south, west, north, east)
    if not spacing_km > 0 or not math.isfinite(spacing_km):
        raise InputError(f"spacing_km must be a positive number, got {spacing_km}")
    n_lat = max(1, round((north - south) * KM_PER_DEG / spacing_km))
    lats = south + (np.arange(n_lat) + 0.5) * (north - south) / n_lat  # (R,)
    span = _lon_span(west, east)
    row_km = span * KM_PER_DEG * np.cos(np.deg2rad(lats))  # (R,) length of each row
    n_lon = np.maximum(1, np.round(row_km / spacing_km)).astype(np.int64)  # (R,)
    total = int(n_lon.sum())
    if total > MAX_GRID_POINTS:
        raise InputError(f"a {spacing_km:g} km grid over this box has {total:,} points (max {MAX_GRID_POINTS:,}); "
                         "use a larger spacing_km or a smaller box")
    row = np.repeat(np.arange(n_lat), n_lon)  # (M,)
    pos = np.arange(total) - np.repeat(np.cumsum(n_lon) - n_lon, n_lon)  # (M,) index within its row
    lon = wrap_longitude(west + (pos + 0.5) * span / n_lon[row])
    return torch.from_numpy(np.stack([lats[row], lon], axis=1).astype(np.float32))


def grid_gallery(spacing_km: float, bbox: tuple[float, float, float, float] | None = None) -> torch.Tensor:
    """A roughly equal-area grid over the globe, or over `bbox` = (south, west, north, east)."""
    south, west, north, east = bbox if bbox is not None else (-90.0, -180.0, 90.0, 180.0)
    return bbox_gallery(south, west, north, east, spacing_km)


def filter_gallery(coords: torch.Tensor, bbox: tuple[float, float, float, float]) -> torch.Tensor:
    """The points of `coords` (M, 2) inside `bbox` = (south, west, north, east), edges included."""
    south, west, north, east = bbox
    _check_bbox(south, west, north, east)
    coords = torch.as_tensor(coords, dtype=torch.float32)
    lat, lon = coords[:, 0], coords[:, 1]
    in_lat = (lat >= south) & (lat <= north)
    in_lon = (lon >= west) & (lon <= east) if west <= east else (lon >= west) | (lon <= east)
    return coords[in_lat & in_lon]
