"""S2 geo-cell partitions (the classes of TransLocator / GeoDecoder): load, assign points, relate levels.

A partition is a set of non-overlapping S2 cells of mixed levels, one class per cell, as published with
GeoEstimation (Müller-Budack et al., ECCV 2018): CSV columns
`class_label,hex_id,imgs_per_cell,latitude_mean,longitude_mean`, where `hex_id` is an S2 cell token and
(latitude_mean, longitude_mean) is the coordinate a classifier predicts for that class.

A point belongs to the cell whose token is an ancestor of the point's S2 leaf cell. Every S2 cell covers one
contiguous range of leaf ids `[range_min, range_max]`, so assignment is a binary search over sorted ranges.
Partitions built from photo collections (MP-16) do not cover the whole Earth: open ocean, Antarctica and
other places without enough photos lie in no cell and get the label -1 (the published training code drops
such images). Coordinates are (lat, lon) in degrees throughout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import s2geometry as s2

from geocore.errors import InputError
from geocore.geo.tables import column_list, read_csv, shorten

COLUMNS = ("class_label", "hex_id", "imgs_per_cell", "latitude_mean", "longitude_mean")
MAX_LEVEL = 30
UNASSIGNED = -1
_ONE = np.uint64(1)


@dataclass(frozen=True, eq=False)
class CellPartition:
    """A validated partition; row i is class i (`class_label == arange(n)`), arrays aligned by row.

    `range_min`/`range_max` are each cell's inclusive S2 leaf-id range. A copy sorted by range is kept
    privately for lookup. Build one with `load_partition` or `partition_from_frame`, which validate.
    """

    class_label: np.ndarray  # int64 (n,)
    tokens: np.ndarray  # str (n,), canonical S2 tokens
    cell_ids: np.ndarray  # uint64 (n,)
    imgs_per_cell: np.ndarray  # int64 (n,)
    centroids: np.ndarray  # float64 (n, 2): (lat, lon) the class predicts
    name: str = ""
    range_min: np.ndarray = field(init=False, repr=False)
    range_max: np.ndarray = field(init=False, repr=False)
    _sorted_min: np.ndarray = field(init=False, repr=False)
    _sorted_max: np.ndarray = field(init=False, repr=False)
    _sorted_label: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not np.array_equal(self.class_label, np.arange(self.class_label.shape[0])):
            raise InputError(f"partition {self.name!r}: rows must be ordered by class_label 0..n-1")
        lo, hi = cell_ranges(self.cell_ids)
        order = np.argsort(lo, kind="stable")
        for key, value in (("range_min", lo), ("range_max", hi), ("_sorted_min", lo[order]),
                           ("_sorted_max", hi[order]), ("_sorted_label", self.class_label[order])):
            object.__setattr__(self, key, value)

    def __len__(self) -> int:
        return int(self.class_label.shape[0])

    def centroids_for(self, labels: np.ndarray) -> np.ndarray:
        """(N, 2) class centroids for `labels`; rows with label -1 are NaN."""
        labels = np.asarray(labels, dtype=np.int64)
        out = np.full((labels.shape[0], 2), np.nan)
        ok = labels >= 0
        out[ok] = self.centroids[labels[ok]]
        return out


# ---- S2 ids, vectorised on uint64 -------------------------------------------------------------------------


def _lsb_for_level(level: int) -> np.uint64:
    return np.uint64(1 << (2 * (MAX_LEVEL - level)))


def parent_ids(ids: np.ndarray, level: int) -> np.ndarray:
    """The level-`level` ancestor of each S2 cell id (same as `S2CellId.parent(level)`)."""
    lsb = _lsb_for_level(level)
    return (np.asarray(ids, dtype=np.uint64) & ~(lsb - _ONE)) | lsb


def cell_ranges(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inclusive leaf-id range of each cell: `range_min().id()`, `range_max().id()`."""
    ids = np.asarray(ids, dtype=np.uint64)
    lsb = ids & (~ids + _ONE)  # lowest set bit
    return ids - (lsb - _ONE), ids + (lsb - _ONE)


def cell_levels(ids: np.ndarray) -> np.ndarray:
    """S2 level (0..30) of each cell id."""
    ids = np.asarray(ids, dtype=np.uint64)
    lsb = (ids & (~ids + _ONE)).astype(np.float64)  # exact: a power of two
    return (MAX_LEVEL - np.log2(lsb).astype(np.int64) // 2).astype(np.int64)


def ids_to_tokens(ids: np.ndarray) -> np.ndarray:
    """S2 tokens of cell ids (via the S2 library)."""
    return np.array([s2.S2CellId(i).ToToken() for i in np.asarray(ids, dtype=np.uint64).tolist()], dtype=str)


def check_latlon(latlon: np.ndarray, source: str = "coordinates", first_line: int | None = None) -> np.ndarray:
    """Validate (N, 2) (lat, lon) degrees; return them as float64.

    Raises InputError naming the first bad rows: 0-based indices, or file line numbers when `first_line`
    (the line of row 0) is given.
    """
    try:
        arr = np.asarray(latlon, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise InputError(f"{source}: coordinates must be numbers (lat, lon), got {err}") from None
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise InputError(f"{source}: expected an (N, 2) array of (lat, lon) degrees, got shape {arr.shape}")
    lat, lon = arr[:, 0], arr[:, 1]
    bad = ~(np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90) & (np.abs(lon) <= 180))
    if bad.any():
        rows = np.flatnonzero(bad)
        where = "line" if first_line is not None else "row"
        shown = ", ".join(f"{where} {r + (first_line or 0)} (lat={lat[r]}, lon={lon[r]})" for r in rows[:5])
        more = f" and {rows.size - 5} more" if rows.size > 5 else ""
        raise InputError(f"{source}: {rows.size} invalid coordinates, expected lat in [-90, 90], lon in "
                         f"[-180, 180], no NaN: {shown}{more}")
    return arr


def leaf_cell_ids(latlon: np.ndarray) -> np.ndarray:
    """S2 leaf (level 30) cell id of each (lat, lon) point, uint64 (N,)."""
    arr = check_latlon(latlon)
    from_deg, cell = s2.S2LatLng.FromDegrees, s2.S2CellId  # the S2 binding is scalar-only
    return np.fromiter((cell(from_deg(a, b)).id() for a, b in arr.tolist()), dtype=np.uint64, count=len(arr))


# ---- lookup -----------------------------------------------------------------------------------------------


def _containing(partition: CellPartition, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Label of the partition cell containing each leaf range [lo, hi], -1 where none does."""
    if len(partition) == 0:
        return np.full(lo.shape, UNASSIGNED, dtype=np.int64)
    pos = np.searchsorted(partition._sorted_min, lo, side="right") - 1
    safe = np.clip(pos, 0, None)
    inside = (pos >= 0) & (hi <= partition._sorted_max[safe])
    return np.where(inside, partition._sorted_label[safe], UNASSIGNED)


def assign_cells(partition: CellPartition, latlon: np.ndarray) -> np.ndarray:
    """Class label (int64) of the cell holding each (lat, lon) point; -1 for points in no cell.

    MP-16 partitions do not cover the whole Earth (open ocean, Antarctica, empty land), so -1 is normal;
    the published training code discards such images.
    """
    leaf = leaf_cell_ids(latlon)
    return _containing(partition, leaf, leaf).astype(np.int64)


def cell_hierarchy(fine: CellPartition, *coarser: CellPartition) -> np.ndarray:
    """(len(fine), len(coarser)) labels: column j is the cell of `coarser[j]` containing each fine cell.

    -1 where no cell of that partition contains the fine cell (it was dropped there, or it is larger).
    """
    out = np.full((len(fine), len(coarser)), UNASSIGNED, dtype=np.int64)
    for j, coarse in enumerate(coarser):
        out[:, j] = _containing(coarse, fine.range_min, fine.range_max)
    return out


# ---- loading and validation -------------------------------------------------------------------------------


def _fail(source: str, row: int | None, column: str, expected: str, got: object = None) -> InputError:
    line = "" if row is None else f" line {row + 2}"  # row 0 is on line 2, after the header
    got = got.item() if isinstance(got, np.generic) else got
    seen = "" if got is None else f", got {shorten(got)}"
    return InputError(f"{source}:{line} field '{column}': expected {expected}{seen}")


def _parse_numbers(df: pd.DataFrame, column: str, source: str, integer: bool) -> np.ndarray:
    values = pd.to_numeric(df[column].str.strip(), errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if integer:
        bad |= (values != np.round(values)) | (np.abs(values) > 2**53)  # beyond 2^53 a float is no exact integer
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise _fail(source, r, column, "an integer" if integer else "a finite number", df[column].iat[r])
    return values.astype(np.int64) if integer else values


def _check_labels(labels: np.ndarray, source: str) -> None:
    n = labels.shape[0]
    out = np.flatnonzero((labels < 0) | (labels >= n))
    if out.size:
        r = int(out[0])
        raise _fail(source, r, "class_label", f"a label in 0..{n - 1} (one per row)", int(labels[r]))
    dup = np.flatnonzero(pd.Series(labels).duplicated().to_numpy())
    if dup.size:
        r = int(dup[0])
        first = int(np.flatnonzero(labels == labels[r])[0])
        raise _fail(source, r, "class_label", f"unique labels; {labels[r]} already on line {first + 2}",
                    int(labels[r]))


def _check_ranges(source: str, frame: pd.DataFrame, lat: np.ndarray, lon: np.ndarray) -> None:
    if (np.abs(lat) > 90).any():
        r = int(np.flatnonzero(np.abs(lat) > 90)[0])
        raise _fail(source, r, "latitude_mean", "a latitude in [-90, 90]", frame["latitude_mean"].iat[r])
    if (np.abs(lon) > 180).any():
        r = int(np.flatnonzero(np.abs(lon) > 180)[0])
        raise _fail(source, r, "longitude_mean", "a longitude in [-180, 180]", frame["longitude_mean"].iat[r])


def _parse_tokens(tokens: pd.Series, source: str) -> np.ndarray:
    ids = np.zeros(len(tokens), dtype=np.uint64)
    for r, tok in enumerate(tokens.str.strip().tolist()):
        cell = s2.S2CellId.FromToken(tok)
        if not tok or not cell.is_valid():
            raise _fail(source, r, "hex_id", "a valid S2 cell token (hex, e.g. '8747c')", tokens.iat[r])
        ids[r] = cell.id()
    return ids


def _check_overlaps(ids: np.ndarray, tokens: np.ndarray, source: str) -> None:
    lo, hi = cell_ranges(ids)
    order = np.argsort(lo, kind="stable")
    clash = np.flatnonzero(lo[order][1:] <= hi[order][:-1])
    if clash.size:
        a, b = sorted((int(order[clash[0]]), int(order[clash[0] + 1])))
        how = "repeats" if ids[a] == ids[b] else "overlaps"
        raise _fail(source, b, "hex_id", f"cells that do not overlap; '{tokens[b]}' {how} "
                    f"'{tokens[a]}' on line {a + 2}", str(tokens[b]))


def partition_from_frame(frame: pd.DataFrame, source: str, name: str = "") -> CellPartition:
    """Validate a table of string fields in the published format and build a CellPartition."""
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(f"{source}: missing column(s) {', '.join(missing)}; expected header "
                         f"{','.join(COLUMNS)}, got {column_list(frame.columns)}")
    if frame.empty:
        raise InputError(f"{source}: no rows; expected at least one cell")
    frame = frame.reset_index(drop=True).astype(str)
    labels = _parse_numbers(frame, "class_label", source, integer=True)
    counts = _parse_numbers(frame, "imgs_per_cell", source, integer=True)
    if (counts < 0).any():
        r = int(np.flatnonzero(counts < 0)[0])
        raise _fail(source, r, "imgs_per_cell", "a count >= 0", frame["imgs_per_cell"].iat[r])
    lat = _parse_numbers(frame, "latitude_mean", source, integer=False)
    lon = _parse_numbers(frame, "longitude_mean", source, integer=False)
    _check_ranges(source, frame, lat, lon)
    _check_labels(labels, source)
    ids = _parse_tokens(frame["hex_id"], source)
    tokens = ids_to_tokens(ids)
    _check_overlaps(ids, tokens, source)
    order = np.argsort(labels)  # row i is class i
    return CellPartition(class_label=labels[order], tokens=tokens[order], cell_ids=ids[order],
                         imgs_per_cell=counts[order], centroids=np.c_[lat, lon][order], name=name)


def load_partition(path: str | Path) -> CellPartition:
    """Read and validate a partition CSV; InputError names the file, line and field on any problem."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: partition file not found; expected a CSV with columns {','.join(COLUMNS)}")
    frame = read_csv(path, f"a partition CSV with columns {','.join(COLUMNS)}", dtype=str, keep_default_na=False,
                     skipinitialspace=True)
    return partition_from_frame(frame, str(path), name=path.stem)


def load_partitions(partitions) -> list[CellPartition]:
    """(coarse, middle, fine) partitions from CSV paths or ready `CellPartition`s."""
    if len(partitions) != 3:
        raise InputError(f"partitions: expected 3 (coarse, middle, fine), got {len(partitions)}")
    return [p if isinstance(p, CellPartition) else load_partition(p) for p in partitions]
