"""`geocore data list|fetch`: the benchmark and training datasets, from their sources into the layout
`evaluate --dataset NAME` and `train` read."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from geocore.data.catalog import CATALOG, PARTS, DatasetEntry, get_entry
from geocore.data.fetched import DatasetDir, data_home
from geocore.data.text import terminal_text
from geocore.errors import InputError

data_app = typer.Typer(help="Benchmark and training datasets: what there is, and fetching them.",
                       no_args_is_help=True)
DATA_DIR_HELP = "Data dir (default $GEOCORE_DATA_HOME, else ~/.cache/geocore/data)."


def _size(n: int) -> str:
    if not n:
        return "-"
    if n < 1e6:
        return f"{n / 1e3:,.0f} kB"
    return f"{n / 1e9:,.1f} GB" if n >= 1e8 else f"{n / 1e6:,.1f} MB"


def _approx(entry: DatasetEntry, part: str) -> str:
    files = entry.part_files(part)  # type: ignore[arg-type]
    if not files:
        return "-"
    exact = all(f.size_verified for f in files)
    return ("" if exact else "~") + _size(entry.part_size(part))  # type: ignore[arg-type]


def _terms(console: Console, entry: DatasetEntry) -> None:
    console.print(f"  licence: {terminal_text(entry.licence)}")
    console.print(f"  cite: {terminal_text(entry.citation)}")


@data_app.command("list")
def list_datasets(
    data_dir: Path = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    as_json: bool = typer.Option(False, "--json", help="One JSON list of rows."),
) -> None:
    """The datasets `geocore data fetch` knows: what each is, sizes, licence, citation, and what is here."""
    root = data_home(data_dir)
    rows = []
    for entry in CATALOG.values():
        here = DatasetDir(root, entry.name).complete_parts()
        rows.append({"name": entry.name, "title": entry.title, "what": entry.what, "images": entry.n_images,
                     "parts": list(entry.parts), "metadata_bytes": entry.part_size("metadata"),
                     "images_bytes": entry.part_size("images"), "here": sorted(here), "licence": entry.licence,
                     "citation": entry.citation, "homepage": entry.homepage, "notes": entry.notes,
                     "files": [{"name": f.name, "url": f.url, "role": f.role, "size": f.size, "sha256": f.sha256,
                                "url_verified": f.url_verified, "size_verified": f.size_verified}
                               for f in entry.files]})
    if as_json:
        typer.echo(json.dumps({"data_dir": str(root), "datasets": rows}))
        return
    console = Console()
    table = Table(title=f"datasets (data dir {terminal_text(root)})")
    for col in ("name", "images", "metadata", "images size", "fetched here"):
        table.add_column(col, overflow="fold")
    for entry, row in zip(CATALOG.values(), rows):
        here = ", ".join(row["here"]) or "no"
        table.add_row(entry.name, f"{entry.n_images:,}", _approx(entry, "metadata"), _approx(entry, "images"),
                      terminal_text(here))
    console.print(table)
    console.print("(~: the catalog's estimate; the source does not state it. `--json` lists every file's name, "
                  "address and size: a --from mirror holds the same names)")
    for entry in CATALOG.values():
        console.print(f"[bold]{entry.name}[/]: {terminal_text(entry.what)}")
        _terms(console, entry)
        if entry.notes:
            console.print(f"  note: {terminal_text(entry.notes)}")


def _rich_progress(console: Console) -> Callable:
    @contextlib.contextmanager
    def progress(label: str, total: int | None, done: int) -> Iterator[Callable[[int], None]]:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                   TimeRemainingColumn())
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task(terminal_text(label), total=total, completed=done)
            yield lambda n: bar.update(task, advance=n)

    return progress


@data_app.command("fetch")
def fetch(
    name: str = typer.Argument(..., help=f"Dataset to fetch: {', '.join(CATALOG)}."),
    to: Path = typer.Option(None, "--to", help=DATA_DIR_HELP),
    mirror: str = typer.Option(None, "--from", help="A local folder or an http(s) URL prefix holding the same file "
                               "names as the source (default: the source itself)."),
    part: str = typer.Option("both", "--part", help="metadata, images or both."),
    on_corrupt: str = typer.Option("refuse", "--on-corrupt", help="A corrupt archive member: skip it (named) or "
                                   "refuse the archive."),
    keep_downloads: bool = typer.Option(False, "--keep-downloads", help="Keep the downloaded archives."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Fetch a dataset (resumable, checksummed) into DATA_DIR/NAME: NAME.csv + images/ + a completion marker."""
    from geocore.data.fetch import fetch_dataset
    from geocore.data.transfer import no_progress

    entry = get_entry(name)
    if part not in ("both", *PARTS):
        raise InputError(f"--part {part!r}: expected metadata, images or both")
    if on_corrupt not in ("skip", "refuse"):
        raise InputError(f"--on-corrupt {on_corrupt!r}: expected skip or refuse")
    err = Console(stderr=True)
    err.print(f"[bold]{entry.title}[/]: {terminal_text(entry.what)}")
    _terms(err, entry)
    err.print(f"  from: {terminal_text(mirror or entry.homepage + ' (the sources in `geocore data list`)')}")
    result = fetch_dataset(entry, root=to, parts=None if part == "both" else [part], mirror=mirror,  # type: ignore[list-item]
                           on_corrupt=on_corrupt, keep_downloads=keep_downloads,
                           progress=no_progress if quiet else _rich_progress(err),
                           echo=lambda s: err.print(terminal_text(s)))
    for note in result.notes:
        err.print(terminal_text(note))
    meta, images = result.parts.get("metadata"), result.parts.get("images")
    if meta:
        err.print(f"table: {terminal_text(result.folder / (entry.name + '.csv'))} ({meta.get('rows', 0):,} rows)")
    if images:
        present = (f", {images['present']:,} of the {images['listed']:,} listed images present"
                   if "listed" in images else "")
        err.print(f"images: {terminal_text(result.folder / 'images')} ({images['unpacked']:,} files{present})")
    missing = [p for p in entry.parts if p not in result.parts]
    if missing:
        err.print(f"not fetched yet: {', '.join(missing)} (`geocore data fetch {entry.name} --part {missing[0]}`)")
    data_dir = "" if to is None else f" --data-dir {terminal_text(to)}"
    err.print(f"complete: {', '.join(result.parts)}. Evaluate with: geocore evaluate --model geoclip --dataset "
              f"{entry.name}{data_dir} --output {entry.name}.parquet")


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
