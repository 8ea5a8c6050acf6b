"""Files that survive kills and spreadsheets: atomic writes, and CSV cells a spreadsheet never runs as formulas.

**Atomic writes.** Every file geocore writes for later use goes through :func:`atomic_path`: the bytes go to a
hidden temporary file beside the target (``.<name>.<pid>.<random>.tmp``: unique per writer, so concurrent
writers never share one, and never matched by a reader's glob of real files), are flushed to disk, and the
temporary file is renamed over the target. A kill at any moment leaves the old file or none, never a torn one
(a kill can leave the temporary file behind; nothing reads it).

Reading CSVs safely (one-line errors naming file and line) is `geocore.geo.tables`.

**Bounded reads.** Every file the CLI reads whole (calibrations, results, benchmark and point CSVs) goes through
:func:`read_limited`: the file is opened once, ``fstat`` on that descriptor refuses a regular file over the
limit before a byte is read, a device (``/dev/zero``, a terminal) or a folder is refused outright, and a pipe is
read to at most limit + 1 bytes. :func:`read_csv_limited` is that plus `geocore.geo.tables.parse_csv`.

**Outputs checked first.** :func:`check_output` refuses an output path whose folder is missing or not writable,
which is a folder itself, or whose suffix the command does not write, before any analysis starts.

**Formula injection.** A spreadsheet runs a CSV cell that starts with ``=``, ``+``, ``-`` or ``@`` (and
some also one starting with a tab or a carriage return) as a formula. CSVs geocore writes from names and IDs a
user supplied (image names, IMG_IDs, place names) pass through :func:`neutralise_frame`, which follows OWASP:

- a text cell starting with ``=``, ``+``, ``-``, ``@``, tab or carriage return gets a single quote ``'``
  in front, and so does a text cell that already starts with ``'`` (so that reading back is exact);
- a text cell that is a plain decimal number (``-33.86``, ``+2``, ``1e-5``) is left alone: a number is not a
  formula, and negative longitudes stay numbers; numeric columns are never touched.

:func:`restore_frame` undoes it (one leading ``'`` is dropped from every text cell that has one), so
``restore(neutralise(x)) == x`` for every string; ``geocore.eval.results.read_results`` applies it to results
CSVs. :func:`neutralise_cell` also writes the bytes of a file name that were not UTF-8 as ``\\udcff``-style
escapes (`geocore.data.text.utf8_safe`), so such a name never crashes a write; reading back keeps the escaped
form (a pandas string column cannot hold the lone surrogates) and `geocore.data.text.from_utf8_safe` of a cell
gives the original name.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import stat
import uuid
from collections.abc import Iterator
from typing import BinaryIO
from pathlib import Path

import pandas as pd

from geocore.data.text import utf8_safe
from geocore.errors import InputError

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


# ---- bounded reads and checked outputs --------------------------------------------------------------------

MAX_INPUT_BYTES = 1 << 30  # a whole file read into memory: far above any benchmark, gallery or results file


def _open_bounded(path: str | Path, expected: str, limit: int, *, pipes: bool) -> BinaryIO:
    """`path` opened for reading once `fstat` on it found a regular file of at most `limit` bytes (or, with
    `pipes`, a pipe, read with a bound by the caller); InputError naming the file otherwise."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 - the caller closes it; fstat must see the file that is read
    except FileNotFoundError:
        raise InputError(f"{path}: no such file; expected {expected}") from None
    except IsADirectoryError:
        raise InputError(f"{path}: a folder, not a regular file; expected {expected}") from None
    except (OSError, ValueError) as err:  # ValueError: a NUL byte in the name
        raise InputError(f"{path}: cannot be read ({getattr(err, 'strerror', None) or err}); "
                         f"expected {expected}") from None
    mode = os.fstat(fh.fileno())
    regular, pipe = stat.S_ISREG(mode.st_mode), stat.S_ISFIFO(mode.st_mode) and pipes
    if not (regular or pipe) or (regular and mode.st_size > limit):
        fh.close()
        if not regular:  # a folder, /dev/zero, a terminal, a socket
            raise InputError(f"{path}: not a regular file; expected {expected}")
        raise InputError(f"{path}: {mode.st_size:,} bytes, over the {limit:,} allowed for {expected}")
    return fh


def read_limited(path: str | Path, expected: str, limit: int | None = None) -> bytes:
    """The bytes of `path`, at most `limit` (default MAX_INPUT_BYTES); InputError naming the file, and the limit
    when it is over it. `expected` says what the file should be ("a calibration file")."""
    limit = MAX_INPUT_BYTES if limit is None else int(limit)
    with _open_bounded(path, expected, limit, pipes=True) as fh:
        try:
            data = fh.read(limit + 1)
        except OSError as err:
            raise InputError(f"{path}: cannot be read ({err.strerror or err}); expected {expected}") from None
    if len(data) > limit:  # a pipe, or a file that grew since fstat
        raise InputError(f"{path}: more than the {limit:,} bytes allowed for {expected}")
    return data


def check_input_size(path: str | Path, expected: str, limit: int | None = None) -> None:
    """Refuse `path` as :func:`read_limited` would (pipes too: checking one would consume it), for a reader that
    opens the file itself (`geocore.geo.gallery.gallery_from_csv`, `geocore.geo.cells.load_partition`). A missing
    file passes: the reader names it in its own words."""
    if os.path.lexists(path):
        _open_bounded(path, expected, MAX_INPUT_BYTES if limit is None else int(limit), pipes=False).close()


def read_csv_limited(path: str | Path, expected: str, limit: int | None = None, **kwargs) -> pd.DataFrame:
    """:func:`read_limited`, decoded strictly and parsed as `geocore.geo.tables.parse_csv` does (one-line
    InputErrors naming the file and line); `kwargs` go to ``pandas.read_csv``."""
    from geocore.geo.tables import decode_text, parse_csv

    return parse_csv(path, decode_text(Path(path), read_limited(path, expected, limit), expected), expected, **kwargs)


def check_output(path: str | Path, suffixes: tuple[str, ...], option: str = "--output", *,
                 create: bool = False) -> Path:
    """`path` when a command can write it: its folder exists (made first when `create`, for the commands that
    always made it) and is writable, it is not a folder, and its suffix is one of `suffixes` (lower case, with
    the dot); otherwise InputError in one line. Called before the work."""
    path = Path(path)
    expected = " or ".join(suffixes)
    if path.suffix.lower() not in suffixes:
        raise InputError(f"{option} {path}: expected a {expected} file name")
    folder = path.parent
    if path.is_dir():
        raise InputError(f"{option} {path}: a folder; expected a {expected} file name")
    if create and not folder.exists():
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise InputError(f"{option} {path}: cannot create the folder {folder} ({err.strerror})") from None
    if not folder.is_dir():
        raise InputError(f"{option} {path}: the folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{option} {path}: the folder {folder} is not writable")
    return path


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """The SHA-256 (hex) of a file's bytes, read a chunk at a time."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


# ---- formula injection ------------------------------------------------------------------------------------


def neutralise_cell(value: object) -> object:
    """`value` with a leading `'` when a spreadsheet would run it as a formula (see the module docstring), and
    bytes of a file name that were not UTF-8 written as escapes (`geocore.data.text.utf8_safe`)."""
    if not isinstance(value, str) or not value:
        return value
    value = utf8_safe(value)
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
