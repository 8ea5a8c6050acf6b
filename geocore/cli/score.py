"""`geocore score`: metrics of a predictions CSV against ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from geocore.eval.report import metrics_table
from geocore.eval.score import score_files


def score(
    pred: Path = typer.Option(..., "--pred", help="Predictions CSV with IMG_ID,LAT,LON."),
    truth: Path = typer.Option(..., "--truth", help="Ground-truth CSV (IMG_ID or IMG_FILE, LAT, LON)."),
    as_json: bool = typer.Option(False, "--json", help="Print exactly one JSON object."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Drop bad rows and report how many, instead of failing."),
) -> None:
    """Score predictions against ground truth: accuracy at 1/25/200/750/2500 km, median km, GeoScore."""
    result = score_files(pred, truth, skip_bad=skip_bad)
    if as_json:
        typer.echo(json.dumps(result.metrics.to_dict()))
        if result.skipped:
            typer.echo(f"skipped: {json.dumps(result.skipped)}", err=True)
        return
    console = Console()
    console.print(metrics_table(result.metrics, title=f"{pred.name} vs {truth.name}"))
    for what, count in result.skipped.items():
        console.print(f"skipped {count} row(s): {what}")


def register(app: typer.Typer) -> None:
    app.command("score")(score)
