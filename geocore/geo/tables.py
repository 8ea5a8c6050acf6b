"""Reading the CSV tables the project is given safely: benchmarks, predictions, galleries, partitions, points,
results.

:func:`read_csv` is ``pandas.read_csv`` with every way a file can be unreadable — missing, a folder, no
permission, empty, binary (a NUL byte), not UTF-8, ragged rows, an unterminated quote — turned into a
one-line :class:`InputError` naming the file and, where there is one, the line. The callers then check
columns and fields and name the line and field of the first bad value, shortened by :func:`shorten` so a
huge field never floods the message.
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from geocore.errors import InputError

_SHOW = 60  # characters of a bad value a message shows


def shorten(value: object, limit: int = _SHOW) -> str:
    """`repr(value)` cut to `limit` characters: a huge field must not flood a one-line message."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(str(value)):,} characters)"


def column_list(columns, limit: int = 12) -> str:
    """A header's names for a message: the first `limit`, each shortened (a hostile header can be huge)."""
    names = [str(c) if len(str(c)) <= 40 else str(c)[:40] + "…" for c in list(columns)[:limit]]
    more = f" and {len(columns) - limit:,} more" if len(columns) > limit else ""
    return (", ".join(names) or "none") + more


def to_numbers(values: pd.Series) -> np.ndarray:
    """Each cell as float64: NaN where it is not a number (text, a list, empty), ±inf for an integer too large for
    a float (pandas reads such literals as Python ints, and `pd.to_numeric` then raises OverflowError)."""
    try:
        return pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError, OverflowError):
        return np.array([_to_float(v) for v in values.tolist()], dtype=np.float64)


def _to_float(value: object) -> float:
    if isinstance(value, bool):
        return math.nan
    if isinstance(value, (int, np.integer)):
        try:
            return float(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, str) and "_" not in value:  # float() takes "1_000"; pandas, and so we, do not
        try:
            return float(value)
        except ValueError:
            return math.nan
    return math.nan


def one_line(err: BaseException, limit: int = 200) -> str:
    """An exception's message on one line, cut to `limit` characters."""
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[:limit] + "…"


def decode_text(path: Path, data: bytes, expected: str) -> str:
    """`data` as UTF-8 text (a BOM is dropped); InputError naming the line of the first bad byte or NUL."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise InputError(f"{path}: line {line}: not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start}); "
                         f"expected {expected}") from None
    nul = text.find("\0")
    if nul >= 0:
        line = text.count("\n", 0, nul) + 1
        raise InputError(f"{path}: line {line}: a NUL byte: this is a binary file, not text; expected {expected}")
    return text


def read_csv(path: str | Path, expected: str, **kwargs) -> pd.DataFrame:
    """``pandas.read_csv(path, **kwargs)``; any unreadable file is a one-line InputError naming it.

    `expected` says what the file should be ("a CSV with columns IMG_ID,LAT,LON"). The file is read whole
    and decoded strictly first, so bad UTF-8 and binary content are reported with their line.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file; expected {expected}")
    if not path.is_file():
        raise InputError(f"{path}: not a regular file; expected {expected}")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise InputError(f"{path}: cannot be read ({err.strerror or one_line(err)}); expected {expected}") from None
    return parse_csv(path, decode_text(path, data, expected), expected, **kwargs)


def parse_csv(path: str | Path, text: str, expected: str, **kwargs) -> pd.DataFrame:
    """``pandas.read_csv`` of decoded `text` (from `path`), every failure a one-line InputError naming it."""
    if not text.strip():
        raise InputError(f"{path} is empty; expected {expected}")
    kwargs.setdefault("index_col", False)  # never silently turn a row's extra first field into the index
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            return pd.read_csv(io.StringIO(text), **kwargs)
    except pd.errors.ParserWarning:  # index_col=False met a first row longer than the header
        raise InputError(f"{path}: line 2 has more fields than the header; expected {expected}") from None
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: no header line; expected {expected}") from None
    except pd.errors.ParserError as err:
        raise InputError(f"{path}: not a readable CSV ({one_line(err).removeprefix('Error tokenizing data. ')}); "
                         f"expected {expected}") from None
    except (ValueError, OverflowError, MemoryError) as err:
        raise InputError(f"{path}: not a readable CSV ({one_line(err)}); expected {expected}") from None
