"""`geocore models` and `geocore weights status|download`: what can run here, and getting what is missing."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from geocore.data.text import terminal_text
from geocore.weights.download import download_weights
from geocore.weights.sources import SOURCES
from geocore.weights.status import weights_status

weights_app = typer.Typer(help="Pretrained weights: what is present here, and explicit downloads.", no_args_is_help=True)


@weights_app.command("status")
def status(as_json: bool = typer.Option(False, "--json", help="One JSON list of rows.")) -> None:
    """What weights are present, where, and their sizes; how to get the missing ones."""
    rows = weights_status()
    if as_json:
        typer.echo(json.dumps([r.as_dict() for r in rows]))
        return
    table = Table(title="weights")
    for col in ("name", "present", "size MB", "where", "how to get"):
        table.add_column(col, overflow="fold")
    for r in rows:
        size = "" if r.size_mb is None else f"{r.size_mb:,.1f}"
        table.add_row(terminal_text(r.name), "yes" if r.present else "no", size, terminal_text(r.where),
                      terminal_text(r.how_to_get))
    Console().print(table)


@weights_app.command("download")
def download(
    name: str = typer.Argument(..., help=f"Weights to fetch: {', '.join(SOURCES)}."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Download weights NAME (shows the size first, then a progress bar). Nothing downloads otherwise."""
    download_weights(name, progress=not quiet, echo=typer.echo)


def models(as_json: bool = typer.Option(False, "--json", help="One JSON list of rows.")) -> None:
    """List the registered models and whether their weights are present here."""
    rows = []
    from geocore.models.registry import list_models, model_entry  # torch: only when models are listed

    for name in list_models():
        entry = model_entry(name)
        info = entry.weights_info() if entry.weights_info else None
        rows.append({
            "name": name,
            "description": entry.description,
            "weights_present": None if info is None else info.present,
            "detail": "" if info is None else info.detail,
            "how_to_get": "" if info is None else info.how_to_get,
        })
    if as_json:
        typer.echo(json.dumps(rows))
        return
    table = Table(title="models")
    for col in ("name", "weights", "description", "how to get"):
        table.add_column(col, overflow="fold")
    for r in rows:
        present = {True: "present", False: "missing", None: "-"}[r["weights_present"]]
        table.add_row(*map(terminal_text, (r["name"], present, r["description"], r["how_to_get"] or r["detail"])))
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("models")(models)
    app.add_typer(weights_app, name="weights")
