"""Files that survive kills and spreadsheets: atomic writes, and CSV cells a spreadsheet never runs as formulas.

**Atomic writes.** Every file geocore writes for later use goes through :func:`atomic_path`: the bytes go to a
hidden temporary file beside the target (``.<name>.<pid>.<random>.tmp``: unique per writer, so concurrent
writers never share one, and never matched by a reader's glob of real files), are flushed to disk, and the
temporary file is renamed over the target. A kill at any moment leaves the old file or none, never a torn one
(a kill can leave the temporary file behind; nothing reads it).

Reading CSVs safely (one-line errors naming file and line) is `geocore.geo.tables`.

**Formula injection.** A spreadsheet runs a CSV cell that starts with ``=``, ``+``, ``-`` or ``@`` (and
some also one starting with a tab or a carriage return) as a formula. CSVs geocore writes from names and IDs a
user supplied (image names, IMG_IDs, place names) pass through :func:`neutralise_frame`, which follows OWASP:

- a text cell starting with ``=``, ``+``, ``-``, ``@``, tab or carriage return gets a single quote ``'``
  in front, and so does a text cell that already starts with ``'`` (so that reading back is exact);
- a text cell that is a plain decimal number (``-33.86``, ``+2``, ``1e-5``) is left alone: a number is not a
  formula, and negative longitudes stay numbers; numeric columns are never touched.

:func:`restore_frame` undoes it (one leading ``'`` is dropped from every text cell that has one), so
``restore(neutralise(x)) == x`` for every string; ``geocore.eval.results.read_results`` applies it to results
CSVs.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_QUOTE = "'"
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


# ---- atomic writes ----------------------------------------------------------------------------------------


def temp_path(path: Path) -> Path:
    """A temporary name beside `path`, unique to this writer (process id and a random part)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")


@contextlib.contextmanager
def atomic_path(path: str | Path, *, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path` in one rename, on failure it is removed.

    >>> with atomic_path("out.parquet") as tmp:
    ...     frame.to_parquet(tmp)
    """
    path = Path(path)
    tmp = temp_path(path)
    try:
        yield tmp
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` so that a kill leaves the old file or none."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write UTF-8 `text` to `path` so that a kill leaves the old file or none."""
    write_bytes_atomic(path, text.encode("utf-8"))


def remove_stale_temps(path: str | Path) -> int:
    """Remove the temporary files of `path` that killed writers left behind (their process is gone).

    A writer still running (or a reused process id) keeps its file. Returns how many were removed.
    """
    path = Path(path)
    removed = 0
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+)\.[0-9a-f]+\.tmp")
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        m = pattern.fullmatch(tmp.name)
        if m is None or int(m.group(1)) == os.getpid() or _alive(int(m.group(1))):
            continue
        tmp.unlink(missing_ok=True)
        removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, but not ours to signal
        return True
    return True


# ---- formula injection ------------------------------------------------------------------------------------


def neutralise_cell(value: object) -> object:
    """`value` with a leading `'` when a spreadsheet would run it as a formula (see the module docstring)."""
    if not isinstance(value, str) or not value:
        return value
    if value[0] == _QUOTE or (value.startswith(FORMULA_STARTS) and not _NUMBER.fullmatch(value)):
        return _QUOTE + value
    return value


def restore_cell(value: object) -> object:
    """Undo :func:`neutralise_cell`."""
    if isinstance(value, str) and value.startswith(_QUOTE):
        return value[1:]
    return value


def _text_columns(df: pd.DataFrame) -> list:
    return [c for c in df.columns if pd.api.types.is_object_dtype(df[c]) or pd.api.types.is_string_dtype(df[c])]


def neutralise_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of `df` whose text cells (and column names) are safe to open in a spreadsheet; numbers untouched."""
    out = df.copy()
    for col in _text_columns(out):
        out[col] = out[col].map(neutralise_cell)
    return out.rename(columns=lambda c: neutralise_cell(c) if isinstance(c, str) else c)


def restore_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Undo :func:`neutralise_frame` on a frame read back from CSV (in place; returns it)."""
    for col in _text_columns(df):
        df[col] = df[col].map(restore_cell)
    return df.rename(columns=lambda c: restore_cell(c) if isinstance(c, str) else c)


def to_csv_text(df: pd.DataFrame) -> str:
    """`df` as CSV text for spreadsheets: neutralised cells, no index."""
    return neutralise_frame(df).to_csv(index=False)
