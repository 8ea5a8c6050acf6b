"""The per-image results file that `geocore evaluate` writes and the app's Failures page reads.

Schema (one row per image; Parquet, or CSV when the path ends in .csv):

| column | type | meaning |
|---|---|---|
| IMG_ID | str | the benchmark's image id (file name) |
| LAT, LON | float | ground truth, degrees |
| PRED_LAT, PRED_LON | float | top-1 prediction (NaN when the image failed) |
| error_km | float | great-circle error of the top-1 (NaN when failed) |
| topk_lat, topk_lon, topk_prob | list[float] | the top-k, best first (JSON strings in CSV) |
| model | str | registry name of the model |
| S3_Label, S16_Label, S365_Label | int | scene labels, when the benchmark has them |
| status | str | "ok", or "error: <why the image could not be used>" |
| truth_mass, truth_area_km2 | float | mass and area of the smallest search region holding the truth |
| area_50_km2 … area_95_km2, area_curve_km2 | float, list[float] | search-region areas (`geocore.eval.coverage`) |
| localizability, entropy | float | log10 km² of the 90 % region (lower = more localizable); entropy in nats |
| candidates | str | fingerprint of the gallery / cells the model scored |

Rows are written in parts as batches finish (`<output>.parts/part-rank<R>-NNNNNN.parquet`: each process
(rank) of a run numbers its own parts, each written atomically) and merged into `<output>` by rank 0 at the
end (or, in a one-process run, on interruption), so a killed run loses no finished batch and `--resume`
carries on from parts and output alike, whichever rank wrote them. Merged rows follow the benchmark's order.
Every write goes through a temporary file unique to its writer and one rename (`geocore.data.safe_io.atomic_path`):
a kill leaves the old file or none, and the temporary files it may leave are never read.

In a CSV results file the list columns are JSON, and text cells that a spreadsheet would run as a
formula (starting with `=`, `+`, `-`, `@`, tab or carriage return) are written with a leading `'`,
as is any text cell already starting with `'`; `read_results` drops that one quote again, so IMG_IDs
read back exactly as written (`geocore.data.safe_io`). Numbers are never quoted.

`read_results` checks every row: a file that is not a results file, or a row with an unusable
field (missing or unparseable, coordinates out of range or infinite, top-k lists that are not lists
of numbers, duplicate or empty IMG_IDs), is a one-line InputError naming the file, the line (CSV)
or row (Parquet, counting from 1) and the field.
"""

from __future__ import annotations

import io
import json
import shutil
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from geocore.data.safe_io import atomic_path, neutralise_frame, read_limited, remove_stale_temps, restore_frame
from geocore.data.text import readable, utf8_safe
from geocore.errors import InputError
from geocore.geo.tables import decode_text, one_line, parse_csv, shorten, to_numbers
from geocore.runtime.parts import parts_dir

if TYPE_CHECKING:
    from geocore.locate import LocateResult

LIST_COLUMNS = ("topk_lat", "topk_lon", "topk_prob", "area_curve_km2")
REQUIRED_COLUMNS = ("IMG_ID", "LAT", "LON", "PRED_LAT", "PRED_LON", "error_km", "model", "status")
NUMBER_COLUMNS = ("truth_mass", "truth_area_km2", "localizability", "entropy", "S3_Label", "S16_Label", "S365_Label")
MAX_PARQUET_BYTES = 1 << 30  # uncompressed: far above any benchmark's results, far below a compressed bomb
MAX_RESULTS_BYTES = 1 << 30  # the file itself, read whole
_EXPECTED = "a results file written by `geocore evaluate` (Parquet, or CSV by its name)"


def _write_table(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".csv":
            out = df.copy()
            for col in LIST_COLUMNS:
                if col in out:
                    out[col] = out[col].map(lambda v: json.dumps([float(x) for x in v]) if _is_list(v) else "[]")
            neutralise_frame(out).to_csv(tmp, index=False)
        else:
            df.to_parquet(tmp, index=False)


def _is_list(value: object) -> bool:
    return isinstance(value, (list, tuple)) or hasattr(value, "__array__")


def read_results(path: str | Path, data: bytes | None = None) -> pd.DataFrame:
    """Read a results file (Parquet, or CSV by its name) and check its schema and every row.

    With `data`, the file's bytes are read from memory (an upload) and `path` only names it. At most
    MAX_RESULTS_BYTES are read (`geocore.data.safe_io.read_limited`).
    """
    path = Path(path)
    is_csv = path.suffix.lower() == ".csv"
    raw = read_limited(path, _EXPECTED, MAX_RESULTS_BYTES) if data is None else bytes(data)
    if len(raw) > MAX_RESULTS_BYTES:
        raise InputError(f"{path}: {len(raw):,} bytes, over the {MAX_RESULTS_BYTES:,} allowed for {_EXPECTED}")
    df = _read_csv(path, raw) if is_csv else _read_parquet(path, raw)
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"{path}: not a geocore results file; missing column(s) {', '.join(missing)}")
    where = (lambda i: f"line {i + 2}") if is_csv else (lambda i: f"row {i + 1}")
    return _check_rows(df.reset_index(drop=True), str(path), where)


def _read_csv(path: Path, raw: bytes) -> pd.DataFrame:
    text = decode_text(path, raw, _EXPECTED)
    df = parse_csv(path, text, _EXPECTED, dtype={"IMG_ID": str, "model": str, "status": str, "candidates": str})
    df = restore_frame(df)  # undo the quotes written against spreadsheet formulas
    for col in LIST_COLUMNS:
        if col in df:
            df[col] = [_json_list(v, str(path), i, col) for i, v in enumerate(df[col].tolist())]
    return df


def _json_list(value: object, source: str, i: int, col: str) -> list:
    if not isinstance(value, str):  # an empty cell
        return []
    try:
        out = json.loads(value)
    except (ValueError, RecursionError) as err:
        raise InputError(f"{source}: line {i + 2}: field '{col}': expected a JSON list of numbers, got "
                         f"{shorten(value)} ({one_line(err, 80)})") from None
    if isinstance(out, list) and any(isinstance(x, bool) for x in out):
        return value  # JSON true/false are no numbers: left as text, which the row check refuses
    return out


def _read_parquet(path: Path, raw: bytes) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not raw:
        raise InputError(f"{path} is empty; expected {_EXPECTED}")
    try:
        meta = pq.ParquetFile(io.BytesIO(raw)).metadata
        size = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        if size > MAX_PARQUET_BYTES:
            raise InputError(f"{path}: {size:,} bytes of data once decompressed, over the {MAX_PARQUET_BYTES:,} "
                             "allowed (refused as a possible decompression bomb)")
        table = pq.read_table(io.BytesIO(raw))
        table.validate(full=True)  # e.g. text that is not UTF-8, which pandas would only trip over later
        return table.to_pandas()
    except InputError:
        raise
    except (pa.ArrowException, OSError, ValueError, TypeError, KeyError, IndexError, OverflowError, MemoryError,
            NotImplementedError) as err:
        raise InputError(f"{path}: not a readable results file ({one_line(err, 160)}); expected {_EXPECTED}") from None


def _numbers(df: pd.DataFrame, col: str) -> tuple[np.ndarray, np.ndarray]:
    """(values as float64, mask of cells that were not numbers at all: text, lists, ...)."""
    raw = df[col]
    values = to_numbers(raw)
    missing = raw.map(_missing).to_numpy(dtype=bool)
    return values, np.isnan(values) & ~missing


def _missing(value: object) -> bool:
    """An empty cell: None, NaN or pd.NA (never a list, which pd.isna would answer element by element)."""
    return not isinstance(value, (list, tuple, dict, np.ndarray)) and bool(pd.isna(value))


def _check_rows(df: pd.DataFrame, source: str, where: Callable[[int], str]) -> pd.DataFrame:
    problems: list[str] = []

    def flag(mask: np.ndarray, col: str, expected: str) -> None:
        bad = np.flatnonzero(mask)
        if bad.size:
            i = int(bad[0])
            more = f" (and {bad.size - 1} more row(s))" if bad.size > 1 else ""
            problems.append(f"{where(i)}: field '{col}': expected {expected}, got {shorten(df[col].iat[i])}{more}")

    ids = df["IMG_ID"]
    bad_id = ~ids.map(lambda v: isinstance(v, str) and v.strip() != "").to_numpy(dtype=bool)
    flag(bad_id, "IMG_ID", "a non-empty image id")
    flag(ids.duplicated(keep="first").to_numpy(dtype=bool) & ~bad_id, "IMG_ID", "unique ids (this one repeats)")
    coords = (("LAT", 90, False), ("LON", 180, False), ("PRED_LAT", 90, True), ("PRED_LON", 180, True))
    for col, limit, nan_ok in coords:
        values, text = _numbers(df, col)
        finite = np.isfinite(values)
        bad = text | (~finite & ~np.isnan(values)) | (finite & (np.abs(values) > limit))
        if not nan_ok:
            bad |= np.isnan(values)
        flag(bad, col, f"a number in [-{limit}, {limit}]" + (" (empty when the image failed)" if nan_ok else ""))
        df[col] = values
    values, text = _numbers(df, "error_km")
    flag(text | np.isinf(values) | (values < 0), "error_km", "a distance >= 0 in km (empty when the image failed)")
    df["error_km"] = values
    for col in ("model", "status"):
        flag(~df[col].map(lambda v: isinstance(v, str) and v != "").to_numpy(dtype=bool), col, "text")
    for col in NUMBER_COLUMNS + tuple(c for c in df.columns if str(c).startswith("area_") and c not in LIST_COLUMNS):
        if col in df and not pd.api.types.is_numeric_dtype(df[col]):  # numeric columns keep their dtype
            values, text = _numbers(df, col)
            flag(text, col, "a number")
            df[col] = values
    lengths: dict[str, np.ndarray] = {}
    for col in LIST_COLUMNS:
        if col in df:
            finite = col != "area_curve_km2"  # areas may be infinite (no candidate holds the truth)
            lists, ok = _number_lists(df[col].tolist(), finite)
            flag(~ok, col, "a list of numbers" if not finite else "a list of finite numbers")
            df[col] = lists
            lengths[col] = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
    if "topk_lat" in lengths:
        for col in ("topk_lon", "topk_prob"):
            if col in lengths:
                flag(lengths[col] != lengths["topk_lat"], col, "as many values as topk_lat")
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more problem(s)" if len(problems) > 3 else "")
        raise InputError(f"{source}: not a usable results file: {shown}")
    return df


_EMPTY = np.empty(0)


def _number_lists(values: list, finite: bool) -> tuple[list[list[float]], np.ndarray]:
    """Each cell as a list of floats ([] when empty: a failed image's row) and whether it was a list of numbers
    (no text, booleans, nesting or NaN; no infinity either when `finite`), checked column-wise."""
    n = len(values)
    ok = np.ones(n, dtype=bool)
    arrays = []
    for i, value in enumerate(values):
        arr = _EMPTY
        if isinstance(value, (list, tuple, np.ndarray)):
            try:
                arr = np.asarray(value, dtype=np.float64)  # text, huge integers, ragged nesting: refused here
            except (ValueError, TypeError, OverflowError):
                ok[i], arr = False, _EMPTY
            if arr.ndim != 1 or (isinstance(value, np.ndarray) and value.size and value.dtype.kind not in "iuf"):
                ok[i], arr = False, _EMPTY
        elif not _missing(value):
            ok[i] = False
        arrays.append(arr)
    lengths = np.fromiter((a.size for a in arrays), dtype=np.int64, count=n)
    flat = np.concatenate(arrays) if arrays else _EMPTY
    bad = np.isnan(flat) | (np.isinf(flat) if finite else False)
    if bad.any():
        ok[np.unique(np.repeat(np.arange(n), lengths)[bad])] = False
    return [a.tolist() if good else [] for a, good in zip(arrays, ok)], ok


EXTRA_LOCATE_COLUMNS = ("calibrated", "exif_lat", "exif_lon", "exif_error_km")


def area_column(level: float) -> str:
    """The column of the `level` search region's area, in results files and locate tables: "area_50_km2"."""
    return f"area_{round(100 * level)}_km2"


def ok_rows(results: pd.DataFrame, column: str = "error_km") -> pd.DataFrame:
    """The rows of a results frame whose image was used: status "ok" and `column` (the error) present."""
    return results[ok_mask(results, column)]


def ok_mask(results: pd.DataFrame, column: str = "error_km") -> pd.Series:
    """Per row of a results frame: status "ok" and `column` present (`ok_rows`)."""
    return results["status"].astype(str).eq("ok") & results[column].notna()


def located_table(results: Sequence[LocateResult]) -> pd.DataFrame:
    """The table `geocore locate --output FILE.csv|.parquet` writes: one row per top-k answer of each located photo
    (`image`, then the regions' areas `area_50_km2`, … as in results files, `calibrated` and EXIF GPS when there are
    any, then the top-k table's columns)."""
    rows = []
    for res in results:
        extra = {area_column(r.level): r.area_km2 for r in res.regions}
        if res.regions:
            extra["calibrated"] = res.calibrated
        if res.exif_gps:
            extra.update(exif_lat=res.exif_gps[0], exif_lon=res.exif_gps[1], exif_error_km=res.exif_error_km)
        name = utf8_safe(res.name)  # a file name's bytes that are not UTF-8, as escapes (Parquet needs UTF-8)
        rows += [{"image": name, **extra, **row} for row in res.table.to_dict("records")]
    return locate_columns(pd.DataFrame(rows))


def locate_columns(df: pd.DataFrame) -> pd.DataFrame:
    """`df`'s columns in `located_table`'s order, whichever photo brought them (EXIF may come with a later one)."""
    front = [c for c in df.columns if str(c).startswith("area_")] + [c for c in EXTRA_LOCATE_COLUMNS if c in df]
    rest = [c for c in df.columns if c != "image" and c not in front]
    return df[(["image"] if "image" in df else []) + front + rest]


def collect_rows(output: Path) -> pd.DataFrame:
    """Everything finished so far: the merged output plus any parts, last write of an IMG_ID winning.

    Only finished files are read: temporary files a killed writer left (`.*.tmp`) never match
    `part-*.parquet`. A part that cannot be read anyway (a disk fault) is skipped with a warning: its
    images are simply evaluated again.
    """
    frames = []
    if output.is_file():
        frames.append(read_results(output))
    folder = parts_dir(output)
    if folder.is_dir():
        for p in sorted(folder.glob("part-*.parquet")):
            try:
                frames.append(read_results(p))
            except InputError as err:
                warnings.warn(f"{readable(err)}; its images will be evaluated again", stacklevel=2)
    if not frames:
        return pd.DataFrame(columns=list(REQUIRED_COLUMNS))
    df = pd.concat(frames, ignore_index=True)
    return df.drop_duplicates("IMG_ID", keep="last").reset_index(drop=True)


def in_order(df: pd.DataFrame, order: Sequence[str], column: str = "IMG_ID") -> pd.DataFrame:
    """`df`'s rows sorted by the position of `column` in `order` (stable; values not in `order` go last)."""
    pos = pd.Index(order).get_indexer(df[column].astype(str))
    pos = np.where(pos < 0, len(order), pos)
    return df.iloc[np.argsort(pos, kind="stable")].reset_index(drop=True)


def merge_parts(output: Path, order: Sequence[str] | None = None) -> pd.DataFrame:
    """Fold parts into `output` (atomically), rows in the order of the IMG_IDs in `order` if given, then remove
    the parts."""
    df = collect_rows(output)
    if order is not None:
        df = in_order(df, order)
    _write_table(df, output)
    shutil.rmtree(parts_dir(output), ignore_errors=True)
    remove_stale_temps(output)  # what writers killed while merging left behind
    return df
