"""Build an S2 geo-cell partition from training coordinates (the GeoEstimation method), and write it.

Adaptive quadtree subdivision, as published (Müller-Budack et al., ECCV 2018, `partitioning/create_cells.py`):
start with every image's S2 cell at `init_level`; a cell holding more than `max_images` images is split into
its four children (level + 1), recursively, until `max_level`; finally cells holding `min_images` or fewer
images are dropped together with their images. Runs level by level on uint64 leaf ids, vectorised.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from geocore.errors import InputError
from geocore.geo.cells import COLUMNS, MAX_LEVEL, ids_to_tokens, leaf_cell_ids, parent_ids


def _check_params(min_images: int, max_images: int, max_level: int, init_level: int) -> None:
    if min_images < 0 or max_images < 1 or max_images <= min_images:
        raise InputError(f"cell sizes: expected 0 <= min_images < max_images, got min_images={min_images}, "
                         f"max_images={max_images}")
    if not 0 <= init_level <= max_level <= MAX_LEVEL:
        raise InputError(f"cell levels: expected 0 <= init_level <= max_level <= {MAX_LEVEL}, got "
                         f"init_level={init_level}, max_level={max_level}")


def subdivide(leaf: np.ndarray, max_images: int, max_level: int = MAX_LEVEL, init_level: int = 2) -> np.ndarray:
    """Final (not yet filtered) cell id of each leaf id under adaptive subdivision."""
    cell_of = np.zeros(leaf.shape[0], dtype=np.uint64)
    active = np.arange(leaf.shape[0])
    level = init_level
    while active.size:
        parents = parent_ids(leaf[active], level)
        _, inverse, counts = np.unique(parents, return_inverse=True, return_counts=True)
        split = (counts[inverse] > max_images) & (level < max_level)
        cell_of[active[~split]] = parents[~split]
        active, level = active[split], level + 1
    return cell_of


def build_partition(latlon: np.ndarray, min_images: int = 50, max_images: int = 5000,
                    max_level: int = MAX_LEVEL, init_level: int = 2) -> pd.DataFrame:
    """Partition (lat, lon) points into S2 cells; a DataFrame in the published CSV format.

    Kept cells hold more than `min_images` images (the published rule: the reference `cells_50_*` files all
    have at least 51) and at most `max_images`, except cells at `max_level`, which cannot be split (e.g. many
    photos sharing one GPS position). Class labels are 0..n-1 in cell-id (Hilbert curve) order; centroids are
    the arithmetic mean lat and lon of the member points, as published.
    """
    _check_params(min_images, max_images, max_level, init_level)
    latlon = np.asarray(latlon, dtype=np.float64)
    leaf = leaf_cell_ids(latlon)  # validates the coordinates
    cells, inverse, counts = np.unique(subdivide(leaf, max_images, max_level, init_level),
                                       return_inverse=True, return_counts=True)
    lat_mean = np.bincount(inverse, weights=latlon[:, 0], minlength=cells.size) / np.maximum(counts, 1)
    lon_mean = np.bincount(inverse, weights=latlon[:, 1], minlength=cells.size) / np.maximum(counts, 1)
    keep = counts > min_images
    return pd.DataFrame({
        "class_label": np.arange(int(keep.sum()), dtype=np.int64),
        "hex_id": ids_to_tokens(cells[keep]),
        "imgs_per_cell": counts[keep].astype(np.int64),
        "latitude_mean": lat_mean[keep],
        "longitude_mean": lon_mean[keep],
    })


def write_partition(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a partition table as CSV in the published column order; returns the path."""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"partition table: missing column(s) {', '.join(missing)}; expected {','.join(COLUMNS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    df.loc[:, list(COLUMNS)].to_csv(path, index=False)
    return path
