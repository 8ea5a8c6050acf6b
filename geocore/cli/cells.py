"""`geocore cells`: assign coordinates to S2 geo-cell classes, build partitions from training coordinates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import typer
from rich.console import Console

from geocore.data.safe_io import atomic_path, check_input_size, check_output, neutralise_frame, read_csv_limited
from geocore.data.text import readable
from geocore.errors import InputError
from geocore.geo.cells import assign_cells, check_latlon, load_partition
from geocore.geo.cells_build import build_partition, write_partition
from geocore.geo.tables import column_list

cells_app = typer.Typer(help="S2 geo-cell partitions: assign points, build partitions.", no_args_is_help=True)


def read_coords(path: Path, lat_col: str, lon_col: str) -> tuple[pd.DataFrame, np.ndarray]:
    """Read a CSV with every field kept as text, and its validated (N, 2) (lat, lon) array."""
    if not path.exists():
        raise InputError(f"{path}: file not found; expected a CSV with columns {lat_col},{lon_col}")
    frame = read_csv_limited(path, f"a CSV with columns {lat_col},{lon_col}", dtype=str, keep_default_na=False)
    missing = [c for c in (lat_col, lon_col) if c not in frame.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}; expected {lat_col} and {lon_col}, "
                         f"got {column_list(frame.columns)}")
    latlon = np.c_[pd.to_numeric(frame[lat_col].str.strip(), errors="coerce"),
                   pd.to_numeric(frame[lon_col].str.strip(), errors="coerce")]
    return frame, check_latlon(latlon, source=str(path), first_line=2)


@cells_app.command("assign")
def assign(
    partition: Path = typer.Option(..., "--partition", help="Partition CSV (class_label,hex_id,...)."),
    input_csv: Path = typer.Option(..., "--input", help="CSV with LAT,LON (other columns are kept)."),
    output: Path = typer.Option(..., "--output", help="Output CSV: the input plus class_label,cell_lat,cell_lon."),
    lat_col: str = typer.Option("LAT", "--lat-col", help="Latitude column."),
    lon_col: str = typer.Option("LON", "--lon-col", help="Longitude column."),
) -> None:
    """Add each point's class label (-1: in no cell) and that class's centroid."""
    check_output(output, (".csv",), create=True)
    check_input_size(partition, "a partition CSV")
    cells = load_partition(partition)
    frame, latlon = read_coords(input_csv, lat_col, lon_col)
    labels = assign_cells(cells, latlon)
    centre = cells.centroids_for(labels)
    frame = frame.assign(class_label=labels, cell_lat=centre[:, 0], cell_lon=centre[:, 1])
    with atomic_path(output) as tmp:  # the input's own fields are kept: neutralised against spreadsheet formulas
        neutralise_frame(frame).to_csv(tmp, index=False)
    typer.echo(f"{len(frame)} points, {int((labels < 0).sum())} unassigned (in no cell of {readable(cells.name)}, "
               f"{len(cells)} cells) -> {readable(output)}")


@cells_app.command("build")
def build(
    input_csv: Path = typer.Option(..., "--input", help="Training CSV with LAT,LON."),
    output: Path = typer.Option(..., "--output", help="Partition CSV to write."),
    min_images: int = typer.Option(50, "--min-images", help="Drop cells with this many images or fewer."),
    max_images: int = typer.Option(5000, "--max-images", help="Split cells with more images than this."),
    max_level: int = typer.Option(30, "--max-level", help="Deepest S2 level to split to (0..30)."),
    lat_col: str = typer.Option("LAT", "--lat-col", help="Latitude column."),
    lon_col: str = typer.Option("LON", "--lon-col", help="Longitude column."),
) -> None:
    """Partition training coordinates into S2 cells (adaptive subdivision, as in GeoEstimation)."""
    check_output(output, (".csv",), create=True)
    _, latlon = read_coords(input_csv, lat_col, lon_col)
    with Console(stderr=True).status(f"partitioning {len(latlon)} points into S2 cells..."):
        table = build_partition(latlon, min_images=min_images, max_images=max_images, max_level=max_level)
    with atomic_path(output) as tmp:  # tokens and numbers only: nothing a spreadsheet could run
        write_partition(table, tmp)
    kept = int(table["imgs_per_cell"].sum())
    typer.echo(f"{len(table)} cells; {kept} images kept, {len(latlon) - kept} dropped "
               f"(in cells with <= {min_images} images) -> {readable(output)}")


def register(app: typer.Typer) -> None:
    """Add `geocore cells ...` to the main app."""
    app.add_typer(cells_app, name="cells")
