"""What weights are on this machine: one row per entry of `geocore.weights.sources.SOURCES`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from geocore.errors import WeightsMissingError
from geocore.weights.paths import geoclip_package_dir
from geocore.weights.resolve import find_local, looked_in
from geocore.weights.sources import SOURCES, WeightsSource, download_command


@dataclass(frozen=True)
class WeightsRow:
    name: str
    present: bool
    where: str  # the file/folder when present, the places searched when not
    size_mb: float | None  # on disk when present, expected download size when not
    how_to_get: str  # "" when present
    description: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def _mb(paths: list[Path]) -> float:
    return round(sum(p.stat().st_size for p in paths) / 1e6, 1)


def wheel_files(src: WeightsSource) -> list[Path]:
    """The files of a wheel-bundled source (WeightsMissingError if the package is absent)."""
    root = geoclip_package_dir() if src.package == "geoclip" else None
    if root is None:
        raise WeightsMissingError(f"unknown package {src.package!r} for weights {src.name!r}")
    return [root / f for f in src.package_files]


def source_status(src: WeightsSource) -> WeightsRow:
    """Presence, location and size of one source; never touches the network."""
    if src.kind == "wheel":
        try:
            files = wheel_files(src)
        except WeightsMissingError as err:
            return WeightsRow(src.name, False, str(err), None, f"pip install {src.package}", src.description)
        missing = [f for f in files if not f.is_file()]
        if missing:
            return WeightsRow(src.name, False, f"missing {missing[0]}", None,
                              f"pip install --force-reinstall {src.package}", src.description)
        return WeightsRow(src.name, True, f"{files[0].parent.parent} (in the {src.package} wheel)",
                          _mb(files), "", src.description)
    hit = find_local(src)
    if hit is None:
        return WeightsRow(src.name, False, f"not found in {looked_in(src)}", src.size_mb,
                          download_command(src.name), src.description)
    files = sorted(f for f in hit.iterdir() if f.is_file()) if hit.is_dir() else [hit]  # snapshot folder
    return WeightsRow(src.name, True, str(hit), _mb(files), "", src.description)


def weights_status() -> list[WeightsRow]:
    """One row per known weights: name, present, where, size_mb, how_to_get."""
    return [source_status(s) for s in SOURCES.values()]
