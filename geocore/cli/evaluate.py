"""`geocore evaluate`: run a model over a benchmark and write per-image results."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console



def evaluate(
    model: str = typer.Option("geoclip", "--model", help="Registered model name (see `geocore models`)."),
    pretrained: str = typer.Option(None, "--pretrained", help="Weights tag or checkpoint path (default: the model's own)."),
    dataset: Path = typer.Option(..., "--dataset", help="Benchmark CSV (IMG_ID or IMG_FILE, LAT, LON)."),
    images: Path = typer.Option(..., "--images", help="Folder holding the benchmark's images."),
    output: Path = typer.Option(..., "--output", help="Results file (.parquet or .csv)."),
    resume: bool = typer.Option(False, "--resume", help="Skip images already in OUTPUT and carry on."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUTPUT."),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    top_k: int = typer.Option(5, "--top-k", min=1),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
    workers: int = typer.Option(0, "--workers", min=0, help="Data-loading worker processes."),
    tencrop: bool = typer.Option(False, "--tencrop", help="Cell models: average the papers' ten crops."),
) -> None:
    """Evaluate a model on a benchmark; interrupted runs keep finished rows (use --resume)."""
    console = Console(stderr=True)
    from geocore.eval.evaluate import evaluate as run_evaluation  # torch loads only when evaluating
    from geocore.eval.report import metrics_table
    from geocore.models.registry import load_model_for_user

    net = load_model_for_user(model, pretrained)
    report = run_evaluation(
        net, dataset, images, output, resume=resume, overwrite=overwrite,
        batch_size=batch_size, top_k=top_k, device=device, num_workers=workers, tencrop=tencrop,
    )
    if report.n_missing:
        console.print(f"{report.n_missing} image file(s) listed in {dataset.name} are missing from {images}: skipped")
    if report.n_failed:
        console.print(f"{report.n_failed} image(s) could not be read: see the status column of {output}")
    if report.n_resumed:
        console.print(f"resumed: {report.n_resumed} image(s) were already done")
    Console().print(metrics_table(report.metrics, title=f"{model} on {dataset.name}"))
    console.print(f"per-image results: {output}")


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
