"""Benchmark datasets: a ground-truth CSV plus a folder of images.

The CSV format is that of Im2GPS, Im2GPS3k, YFCC4k/26k (``IMG_ID,AUTHOR,LAT,LON,S3_Label,...``)
and GeoCLIP (``IMG_FILE,LAT,LON``). Missing or unreadable images never crash a run: they are
counted (missing) or returned as error items (unreadable) for the evaluator to report.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch.utils.data import Dataset, default_collate

from geocore.data.images import load_image
from geocore.data.roots import resolve_inside
from geocore.data.safe_io import read_csv_limited
from geocore.errors import ImageError, InputError
from geocore.geo.tables import column_list, shorten, to_numbers

SCENE_LABELS = ("S3_Label", "S16_Label", "S365_Label")
_CANONICAL = ("IMG_ID", "IMG_FILE", "LAT", "LON", *SCENE_LABELS)
_SHOW = 5  # how many bad rows / duplicates a message names
_MAX_NAME = 1024  # characters of an IMG_ID / IMG_FILE: a file name (path) is never longer


def _line_list(lines: list[int]) -> str:
    shown = ", ".join(str(n) for n in lines[:_SHOW])
    return shown + (f" (and {len(lines) - _SHOW} more)" if len(lines) > _SHOW else "")


def _check_coord(frame: pd.DataFrame, field: str, limit: float) -> str | None:
    raw = frame[field]
    values = pd.Series(to_numbers(raw), index=raw.index)
    bad = values.isna() | (values.abs() > limit)
    if not bad.any():
        frame[field] = values
        return None
    lines = [int(i) + 2 for i in bad[bad].index]  # +1 for 1-based, +1 for the header line
    got = ", ".join(shorten(str(v)) for v in raw[bad].head(3))
    return f"line(s) {_line_list(lines)}: field {field} must be a number in [-{limit:g}, {limit:g}] (got {got})"


def _too_long(frame: pd.DataFrame, col: str, expected: str = "") -> list[str]:
    """The problem of `col`'s values longer than a file name can be (none: [])."""
    long = frame.index[frame[col].fillna("").astype(str).str.len() > _MAX_NAME]
    return [f"line(s) {_line_list([int(i) + 2 for i in long])}: field {col} is longer than {_MAX_NAME} characters"
            f"{expected}"] if len(long) else []


def _raise_problems(frame: pd.DataFrame, path: Path, problems: list[str]) -> None:
    """Checks LAT and LON (made numbers in place) and raises one InputError naming every problem found."""
    problems = problems + [p for p in (_check_coord(frame, "LAT", 90), _check_coord(frame, "LON", 180)) if p]
    if problems:
        raise InputError(f"{path}: " + "; ".join(problems))


def _canonical_header(frame: pd.DataFrame, path: Path, names) -> tuple[pd.DataFrame, str | None]:
    """The frame with its header names matched case- and space-insensitively to `names` (e.g. "lat", " LON"), and
    its ID column (IMG_ID, else IMG_FILE, else None); InputError for a name given twice."""
    canonical = {k.upper(): k for k in names}
    frame = frame.rename(columns=lambda c: canonical.get(str(c).strip().upper(), c))
    twice = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
    if twice:
        raise InputError(f"{path}: column(s) {', '.join(twice)} appear more than once in the header "
                         "(names are matched ignoring case and spaces); expected one each")
    id_col = "IMG_ID" if "IMG_ID" in frame.columns else "IMG_FILE" if "IMG_FILE" in frame.columns else None
    return frame, id_col


def read_benchmark_csv(path: str | Path) -> pd.DataFrame:
    """Read and validate a benchmark CSV.

    Returns a frame with a string ``IMG_ID`` column (taken from ``IMG_ID``, else ``IMG_FILE``,
    which is kept too), float ``LAT``/``LON`` and every other column as found. Raises InputError
    naming the file, the 1-based CSV lines and the field for bad coordinates, duplicate IDs or
    missing columns, or a file over `geocore.data.safe_io.MAX_INPUT_BYTES`.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist (expected a benchmark CSV with IMG_ID/IMG_FILE,LAT,LON)")
    id_cols = {"IMG_ID": str, "IMG_FILE": str, "AUTHOR": str}
    frame = read_csv_limited(path, "a benchmark CSV with a header IMG_ID (or IMG_FILE),LAT,LON", dtype=id_cols,
                             keep_default_na=False, na_values=[""])
    frame, id_col = _canonical_header(frame, path, _CANONICAL)
    missing = [c for c in ("LAT", "LON") if c not in frame.columns] + ([] if id_col else ["IMG_ID or IMG_FILE"])
    if missing:
        raise InputError(
            f"{path} lacks column(s) {', '.join(missing)}: found {column_list(frame.columns)}; "
            "expected IMG_ID (or IMG_FILE), LAT, LON"
        )
    if frame.empty:
        raise InputError(f"{path} has a header but no rows (expected one row per image: IMG_ID (or IMG_FILE),LAT,LON)")
    frame["IMG_ID"] = frame[id_col].fillna("").astype(str).str.strip()
    problems = []
    empty = frame.index[frame["IMG_ID"] == ""]
    if len(empty):
        problems.append(f"line(s) {_line_list([int(i) + 2 for i in empty])}: field {id_col} is empty")
    for col in dict.fromkeys((id_col, "IMG_FILE")):
        if col in frame.columns:
            problems += _too_long(frame, col, " (expected an image file name)")
    _raise_problems(frame, path, problems)
    dup = frame["IMG_ID"].duplicated(keep=False)
    if dup.any():
        groups: dict[str, list[int]] = {}
        for i, img_id in frame.loc[dup, "IMG_ID"].items():
            groups.setdefault(img_id, []).append(int(i) + 2)
        names = [f"{k} (lines {', '.join(map(str, v))})" for k, v in list(groups.items())[:_SHOW]]
        more = f" and {len(groups) - _SHOW} more" if len(groups) > _SHOW else ""
        raise InputError(f"{path}: duplicate {id_col} values: {'; '.join(names)}{more} (expected unique IDs)")
    return frame


SETS_EXPECTED = "a photo-sets CSV with a header SET_ID,IMG_ID,LAT,LON (one position per set)"


def read_sets_csv(path: str | Path) -> pd.DataFrame:
    """Read and validate a CSV of labelled photo sets: ``SET_ID, IMG_ID, LAT, LON``, one row per photo, the photos
    of a set sharing one true position (given on each of its rows). Header names are matched ignoring case and
    spaces; ``IMG_FILE`` may stand for ``IMG_ID``.

    Returns a frame with string ``SET_ID`` and ``IMG_ID``, float ``LAT``/``LON`` and ``line`` (the CSV line), in
    file order. InputError in one line naming the file, the 1-based CSV line(s) and the field: an empty SET_ID or
    IMG_ID, a bad coordinate, a set given two positions, an image listed twice in one set, a missing column."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist (expected {SETS_EXPECTED})")
    frame = read_csv_limited(path, SETS_EXPECTED, dtype={"SET_ID": str, "IMG_ID": str, "IMG_FILE": str},
                             keep_default_na=False, na_values=[""])
    frame, id_col = _canonical_header(frame, path, ("SET_ID", "IMG_ID", "IMG_FILE", "LAT", "LON"))
    missing = [c for c in ("SET_ID", "LAT", "LON") if c not in frame.columns] + ([] if id_col else ["IMG_ID"])
    if missing:
        raise InputError(f"{path} lacks column(s) {', '.join(missing)}: found {column_list(frame.columns)}; "
                         f"expected {SETS_EXPECTED}")
    if frame.empty:
        raise InputError(f"{path} has a header but no rows (expected one row per photo: SET_ID,IMG_ID,LAT,LON)")
    problems = []
    for col, name in (("SET_ID", "SET_ID"), (id_col, id_col)):
        frame[name] = frame[col].fillna("").astype(str).str.strip()
        empty = frame.index[frame[name] == ""]
        if len(empty):
            problems.append(f"line(s) {_line_list([int(i) + 2 for i in empty])}: field {name} is empty")
        problems += _too_long(frame, name)
    _raise_problems(frame, path, problems)
    frame["IMG_ID"] = frame[id_col]
    frame["line"] = frame.index.to_numpy() + 2  # +1 for 1-based, +1 for the header line
    first = frame.groupby("SET_ID", sort=False)[["LAT", "LON", "line"]].transform("first")
    moved = frame.index[(frame["LAT"] != first["LAT"]) | (frame["LON"] != first["LON"])]
    if len(moved):
        i = moved[0]
        field = "LAT" if frame.at[i, "LAT"] != first.at[i, "LAT"] else "LON"
        raise InputError(f"{path}: line(s) {_line_list([int(j) + 2 for j in moved])}: field {field}: set "
                         f"{shorten(frame.at[i, 'SET_ID'])} is at {first.at[i, 'LAT']:g}, {first.at[i, 'LON']:g} on "
                         f"line {int(first.at[i, 'line'])} and {frame.at[i, 'LAT']:g}, {frame.at[i, 'LON']:g} on line "
                         f"{int(i) + 2} (expected one true position per set, the same on each of its rows)")
    dup = frame.index[frame.duplicated(["SET_ID", "IMG_ID"], keep="first")]
    if len(dup):
        i = dup[0]
        raise InputError(f"{path}: line(s) {_line_list([int(j) + 2 for j in dup])}: field {id_col}: "
                         f"{shorten(frame.at[i, 'IMG_ID'])} is listed twice in set {shorten(frame.at[i, 'SET_ID'])} "
                         "(expected each photo once per set)")
    return frame[["SET_ID", "IMG_ID", "LAT", "LON", "line"]].reset_index(drop=True)


def _is_file(path: Path) -> bool:
    """Path.is_file, with names the file system refuses (too long, a NUL byte) counted as missing files."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


class BenchmarkDataset(Dataset):
    """Rows of a benchmark CSV paired with images in ``image_dir``.

    Items are dicts ``{"image", "img_id", "lat", "lon", "index", "error"}`` plus ``S3_Label``,
    ``S16_Label``, ``S365_Label`` (int, -1 if blank) when the CSV has them. ``index`` is the row's
    0-based position in the CSV, stable across :meth:`subset`. ``image`` is ``transform(img)``
    (or the RGB PIL image) and ``error`` is None; an unreadable image gives ``image=None`` and
    ``error`` set to the message. Missing files are listed in ``.missing`` (their IMG_IDs) and,
    with ``skip_missing``, left out of ``len()``; otherwise they come back as error items. A name that would
    leave ``image_dir`` (``../x.jpg``, an absolute path, a link leading out) is an error item, never opened.
    """

    def __init__(
        self,
        csv_path: str | Path,
        image_dir: str | Path,
        transform: Callable[[Any], Any] | None = None,
        *,
        skip_missing: bool = True,
    ) -> None:
        self.csv_path = Path(csv_path)
        self.image_dir = Path(image_dir)
        if not self.image_dir.is_dir():
            raise InputError(f"{self.image_dir} is not a directory (expected the folder holding the benchmark images)")
        self.transform = transform
        frame = read_benchmark_csv(self.csv_path)
        file_col = "IMG_FILE" if "IMG_FILE" in frame.columns else "IMG_ID"
        frame["_name"] = [str(f).strip() for f in frame[file_col]]
        frame["_path"] = [self.image_dir / name for name in frame["_name"]]
        frame["_row"] = range(len(frame))
        present = frame["_path"].map(_is_file)
        self.missing: list[str] = frame.loc[~present, "IMG_ID"].tolist()
        self.frame = (frame[present] if skip_missing else frame).reset_index(drop=True)
        self.labels = [c for c in SCENE_LABELS if c in frame.columns]

    def image_path(self, name: str) -> Path:
        """The file of IMG_FILE (or IMG_ID) `name`, resolved inside ``image_dir``; InputError (one line) for a name
        that would leave it: ``../x.jpg``, an absolute path, a NUL byte, a link leading out."""
        return resolve_inside(self.image_dir, name)

    @property
    def n_missing(self) -> int:
        return len(self.missing)

    def __len__(self) -> int:
        return len(self.frame)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        row = self.frame.iloc[idx]
        item: dict[str, Any] = {
            "image": None,
            "img_id": str(row["IMG_ID"]),
            "lat": float(row["LAT"]),
            "lon": float(row["LON"]),
            "index": int(row["_row"]),
            "error": None,
        }
        for col in self.labels:
            value = pd.to_numeric(row[col], errors="coerce")
            item[col] = -1 if pd.isna(value) or not math.isfinite(value) else int(value)
        try:  # checked here, just before the open, not for all rows up front (millions in a training set)
            path = self.image_path(row["_name"])
        except InputError as err:  # ../outside.jpg, /etc/x, a link leading out: never opened
            item["error"] = f"refused: {err}"
            return item
        if not _is_file(path):
            item["error"] = f"{path} does not exist (image for {item['img_id']} listed in {self.csv_path})"
            return item
        try:
            image = load_image(path)
        except ImageError as exc:
            item["error"] = str(exc)
            return item
        item["image"] = self.transform(image) if self.transform is not None else image
        return item

    @property
    def img_ids(self) -> list[str]:
        return self.frame["IMG_ID"].tolist()

    def subset(self, exclude_ids: Iterable[str]) -> BenchmarkDataset:
        """A copy without ``exclude_ids`` (e.g. images already evaluated, when resuming)."""
        drop = {str(i) for i in exclude_ids}
        return self._with_frame(self.frame[~self.frame["IMG_ID"].isin(drop)])

    def _with_frame(self, frame: pd.DataFrame) -> BenchmarkDataset:
        clone = copy.copy(self)
        clone.frame = frame.reset_index(drop=True)
        return clone


def image_ids_subset(dataset: BenchmarkDataset, ids: Iterable[str]) -> BenchmarkDataset:
    """A copy of ``dataset`` keeping only rows whose IMG_ID is in ``ids`` (CSV order kept)."""
    keep = {str(i) for i in ids}
    return dataset._with_frame(dataset.frame[dataset.frame["IMG_ID"].isin(keep)])


def collate_skip_errors(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """DataLoader ``collate_fn``: batch the good items, list the failed ones.

    Tensor images are stacked (PIL images stay a list); numbers become tensors, strings lists.
    ``batch["errors"]`` is a list of ``(img_id, message)``. A batch with no good item has an
    empty list for every key.
    """
    ok = [b.get("error") is None and b.get("image") is not None for b in batch]
    good = [b for b, fine in zip(batch, ok) if fine]
    errors = [(str(b["img_id"]), str(b.get("error") or "no image")) for b, fine in zip(batch, ok) if not fine]
    keys = [k for k in (batch[0] if batch else {}) if k != "error"]
    out: dict[str, Any] = {}
    for key in keys:
        values = [b[key] for b in good]
        if not values:
            out[key] = []
        elif key == "image" and not all(isinstance(v, torch.Tensor) for v in values):
            out[key] = values
        else:
            out[key] = default_collate(values)
    out["errors"] = errors
    return out
