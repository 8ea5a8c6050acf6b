"""Where fetched datasets live, and when one counts as complete.

The data dir is ``--data-dir`` / ``--to`` when given, else ``$GEOCORE_DATA_HOME``, else
``~/.cache/geocore/data``. A dataset ``NAME`` is the folder ``<data dir>/NAME/`` (layout in
:mod:`geocore.data.catalog`). Its completion marker ``.complete`` is a small JSON file written last, atomically,
listing the parts (``metadata``, ``images``) that were fetched whole; a fetch first takes the parts it is about to
replace out of the marker, so a fetch that dies half-way never leaves a part looking complete.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from geocore.data.catalog import CATALOG, DatasetEntry, get_entry
from geocore.data.safe_io import write_text_atomic
from geocore.errors import InputError

DATA_HOME_ENV = "GEOCORE_DATA_HOME"
MARKER = ".complete"
CHECKSUMS = "checksums.json"
IMAGES = "images"
MAX_MARKER_BYTES = 1 << 20


def data_home(given: str | os.PathLike | None = None) -> Path:
    """The data dir: `given`, else ``$GEOCORE_DATA_HOME``, else ``~/.cache/geocore/data`` (``~`` expanded)."""
    if given is not None and str(given).strip():
        return Path(os.path.expanduser(os.fspath(given)))
    env = os.environ.get(DATA_HOME_ENV, "").strip()
    return Path(os.path.expanduser(env)) if env else Path.home() / ".cache" / "geocore" / "data"


@dataclass(frozen=True)
class DatasetDir:
    """The paths of one dataset in a data dir."""

    root: Path
    name: str

    @property
    def folder(self) -> Path:
        return self.root / self.name

    @property
    def csv(self) -> Path:
        """The benchmark table `evaluate --dataset` and `train --csv` read."""
        return self.folder / f"{self.name}.csv"

    @property
    def images(self) -> Path:
        return self.folder / IMAGES

    @property
    def marker(self) -> Path:
        return self.folder / MARKER

    @property
    def checksums(self) -> Path:
        return self.folder / CHECKSUMS

    @property
    def downloads(self) -> Path:
        """Downloads in progress (``*.part``) and finished, kept until the dataset is complete."""
        return self.root / ".downloads" / self.name

    def read_marker(self) -> dict:
        """The marker's content (``{"parts": {...}}``), or an empty one when there is none or it is unreadable."""
        try:
            with open(self.marker, "rb") as fh:
                raw = fh.read(MAX_MARKER_BYTES + 1)
            data = json.loads(raw.decode("utf-8"))
        except (OSError, ValueError):
            return {"parts": {}}
        if not isinstance(data, dict) or not isinstance(data.get("parts"), dict):
            return {"parts": {}}
        return data

    def complete_parts(self) -> dict[str, dict]:
        """The parts the marker records as complete (part name → what was recorded about it)."""
        return {k: v for k, v in self.read_marker()["parts"].items() if isinstance(v, dict)}

    def write_marker(self, parts: dict[str, dict]) -> None:
        """Record `parts` as the complete ones (atomically); no parts → no marker."""
        if not parts:
            self.marker.unlink(missing_ok=True)
            return
        write_text_atomic(self.marker, json.dumps({"dataset": self.name, "parts": parts}, indent=1))

    def read_checksums(self) -> dict[str, str]:
        """File name → SHA-256 recorded by earlier fetches (empty when none)."""
        try:
            data = json.loads(self.checksums.read_bytes()[:MAX_MARKER_BYTES].decode("utf-8"))
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def write_checksums(self, sums: dict[str, str]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.checksums, json.dumps(dict(sorted(sums.items())), indent=1))


def dataset_dir(name: str, root: str | os.PathLike | None = None) -> DatasetDir:
    """The :class:`DatasetDir` of catalog dataset `name` under the data dir `root` (see :func:`data_home`)."""
    return DatasetDir(data_home(root), get_entry(name).name)


def is_catalog_name(text: str | os.PathLike) -> bool:
    """Whether `text` names a catalog dataset (``im2gps3k``), as opposed to a path."""
    return str(text).strip().lower() in CATALOG


def resolve_benchmark(dataset: str | os.PathLike, images: str | os.PathLike | None,
                      data_dir: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """The (CSV, image folder) that `dataset` and `images` stand for.

    `dataset` is a CSV path (then `images` is required), or a catalog name when no such file exists: then the
    fetched table and, unless `images` is given, the fetched images folder. A dataset that is not fetched, or
    not completely, is refused in one line saying which command fetches it.
    """
    path = Path(dataset)
    if path.exists() or not is_catalog_name(dataset):
        if images is not None:  # a CSV path, checked by its reader
            return path, Path(images)
        if path.exists():
            raise InputError(f"--dataset {dataset} is a CSV file: give --images FOLDER too (or a dataset name "
                             f"from `geocore data list`)")
        raise InputError(f"--dataset {dataset}: no such file, and no dataset of that name (known: "
                         f"{', '.join(CATALOG)}; see `geocore data list`)")
    entry: DatasetEntry = get_entry(str(dataset))
    where = DatasetDir(data_home(data_dir), entry.name)
    done = where.complete_parts()
    fetch = f"geocore data fetch {entry.name}" + ("" if data_dir is None else f" --to {where.root}")
    if "metadata" not in done or not where.csv.is_file():
        raise InputError(f"{entry.name} is not fetched, or not completely, in {where.root} (no complete "
                         f"ground-truth table): run `{fetch}`")
    if images is not None:
        return where.csv, Path(images)
    if "images" not in entry.parts:
        raise InputError(f"{entry.name} has no image archive to fetch ({entry.notes}): give --images FOLDER")
    if "images" not in done or not where.images.is_dir():
        raise InputError(f"{entry.name}'s images are not fetched, or not completely, in {where.root}: run "
                         f"`{fetch} --part images`")
    return where.csv, where.images
