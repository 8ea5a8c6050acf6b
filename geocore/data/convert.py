"""An upstream ground-truth table → geocore's benchmark table ``IMG_ID,LAT,LON[,AUTHOR,S3_Label,...]``.

Streamed row by row (OSV-5M's train table is 2.9 GB), written through a temporary file and renamed. The ID,
latitude and longitude columns are found by name, ignoring case and spaces (``IMG_ID`` / ``IMG_FILE`` / ``id``,
``LAT`` / ``latitude``, ``LON`` / ``lng`` / ``longitude``); the ID goes through the catalog's
:class:`~geocore.data.catalog.TableFormat`. ``AUTHOR`` and the scene labels are kept when present, other columns
are left out (the result must stay under `geocore.data.safe_io.MAX_INPUT_BYTES`, which every reader applies).
Rows that `geocore.data.datasets.read_benchmark_csv` would refuse (an empty ID, a coordinate that is not a number
in range, a repeated ID) are left out and counted, so the table always reads.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

from geocore.data.catalog import TableFormat
from geocore.data.safe_io import atomic_path
from geocore.data.text import readable
from geocore.errors import InputError

_ID = ("IMG_ID", "IMG_FILE", "ID")
_LAT = ("LAT", "LATITUDE")
_LON = ("LON", "LNG", "LONGITUDE")
KEPT = ("AUTHOR", "S3_Label", "S16_Label", "S365_Label")
_MAX_ID = 1024


@dataclass
class TableReport:
    """Rows written, and rows left out by reason."""

    rows: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def drop(self, why: str) -> None:
        self.dropped[why] = self.dropped.get(why, 0) + 1


def _find(header: list[str], names: tuple[str, ...]) -> int | None:
    keys = [h.strip().upper() for h in header]
    for name in names:
        if name.upper() in keys:
            return keys.index(name.upper())
    return None


def _coord(text: str, limit: float) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and abs(value) <= limit else None


def convert_table(source: Path, dest: Path, fmt: TableFormat, label: str | None = None) -> TableReport:
    """Write `source` (an upstream table) as geocore's benchmark table `dest`; see the module docstring."""
    label = label or source.name
    report = TableReport()
    seen: set[str] = set()
    csv.field_size_limit(1 << 20)
    with open(source, "rb") as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="strict", newline="")
        reader = csv.reader(text)
        try:
            header = next(reader)
        except StopIteration:
            raise InputError(f"{label} is empty (expected a table with an image ID, latitude and longitude)") from None
        except (UnicodeDecodeError, csv.Error) as err:
            raise InputError(f"{label}: not a readable CSV ({readable(err)})") from None
        cols = [_find(header, names) for names in (_ID, _LAT, _LON)]
        if None in cols:
            raise InputError(f"{label} has no {'/'.join(n for n, c in zip(('ID', 'latitude', 'longitude'), cols) if c is None)}"
                             f" column (found {', '.join(readable(h) for h in header[:12])}); expected e.g. "
                             "IMG_ID,LAT,LON or id,latitude,longitude")
        kept = [(name, i) for name in KEPT if (i := _find(header, (name,))) is not None]
        id_col, lat_col, lon_col = cols
        with atomic_path(dest) as tmp, open(tmp, "w", encoding="utf-8", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(["IMG_ID", "LAT", "LON", *(name for name, _ in kept)])
            try:
                for row in reader:
                    if not row:
                        continue
                    if len(row) <= max(c for c in cols if c is not None):
                        report.drop("short row")
                        continue
                    img_id = row[id_col].strip()
                    for old, new in fmt.id_replace:
                        img_id = img_id.replace(old, new)
                    img_id = fmt.id_template.format(img_id) if img_id else ""
                    lat, lon = _coord(row[lat_col], 90.0), _coord(row[lon_col], 180.0)
                    if not img_id or len(img_id) > _MAX_ID:
                        report.drop("empty or over-long ID")
                    elif lat is None or lon is None:
                        report.drop("latitude/longitude not a number in range")
                    elif img_id in seen:
                        report.drop("repeated ID")
                    else:
                        seen.add(img_id)
                        writer.writerow([img_id, row[lat_col].strip(), row[lon_col].strip(),
                                         *(row[i] if i < len(row) else "" for _, i in kept)])
                        report.rows += 1
            except (UnicodeDecodeError, csv.Error) as err:
                raise InputError(f"{label}, line {reader.line_num}: not readable ({readable(err)})") from None
    if not report.rows:
        dest.unlink(missing_ok=True)
        raise InputError(f"{label} has no usable row (an image ID with a latitude and longitude in range)")
    return report


def table_ids(path: Path) -> list[str]:
    """The IMG_IDs of a benchmark table written by :func:`convert_table`, in order."""
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        next(reader, None)
        return [row[0] for row in reader if row]
