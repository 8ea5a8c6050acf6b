"""`geocore evaluate`: run a model over a benchmark and write per-image results."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from geocore.cli.options import (ACCELERATOR_OPT, DEVICE_OPT, DEVICES_OPT, MODEL_OPT, NODES_OPT, PRECISION_OPT,
                                 PRETRAINED_OPT, STRATEGY_OPT, TOPK_OPT, WORKERS_OPT)
from geocore.data.safe_io import check_output
from geocore.data.fetched import resolve_benchmark
from geocore.data.text import terminal_text
from geocore.weights.preflight import check_default_weights


def evaluate(
    model: str = MODEL_OPT,
    pretrained: str = PRETRAINED_OPT,
    dataset: Path = typer.Option(..., "--dataset", help="Benchmark CSV (IMG_ID or IMG_FILE, LAT, LON), or a dataset "
                                 "fetched by `geocore data fetch` (im2gps3k, yfcc4k, ...)."),
    images: Path = typer.Option(None, "--images", help="Folder holding the benchmark's images (with a fetched "
                                "dataset: its own images/ by default)."),
    data_dir: Path = typer.Option(None, "--data-dir", help="Where `geocore data fetch` put the datasets (default "
                                  "$GEOCORE_DATA_HOME, else ~/.cache/geocore/data)."),
    output: Path = typer.Option(..., "--output", help="Results file (.parquet or .csv)."),
    resume: bool = typer.Option(False, "--resume", help="Skip images already in OUTPUT and carry on."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUTPUT."),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    top_k: int = TOPK_OPT,
    device: str = DEVICE_OPT,
    accelerator: str = ACCELERATOR_OPT,
    devices: int = DEVICES_OPT,
    num_nodes: int = NODES_OPT,
    strategy: str = STRATEGY_OPT,
    precision: str = PRECISION_OPT,
    workers: int = WORKERS_OPT,
    tencrop: bool = typer.Option(False, "--tencrop", help="Cell models: average the papers' ten crops."),
    refs: Path = typer.Option(None, "--refs", help="A reference set (geocore refs build) fused into each answer; "
                              "references that are benchmark photos (same IMG_ID or file) are left out."),
    refs_k: int = typer.Option(None, "--refs-k", min=1, help="Nearest references used (default 5)."),
    refs_weight: float = typer.Option(None, "--refs-weight", min=0.0, help="W in p ∝ p_model · L^W (default 2)."),
) -> None:
    """Evaluate a model on a benchmark, on one device or many; interrupted runs keep finished rows (use --resume)."""
    console = Console(stderr=True)
    dataset, images = resolve_benchmark(dataset, images, data_dir)  # a fetched dataset's name → its CSV and images
    check_output(output, (".parquet", ".csv"), create=True)
    check_default_weights(model, pretrained)  # before torch loads: a missing-weights error in a blink
    from geocore.eval.evaluate import evaluate as run_evaluation  # torch and lightning load only when evaluating
    from geocore.runtime.predict_loop import loop_options
    from geocore.cli.tables import metrics_table
    from geocore.models.registry import load_model_for_user

    loop_options(device=device, accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy=strategy,
                 precision=precision)  # a mistaken option fails before the model loads
    ref_set = None
    if refs is not None:
        from geocore.refs import load_reference_set

        ref_set = load_reference_set(refs)  # a missing or incomplete set fails before the model loads
    net = load_model_for_user(model, pretrained)
    report = run_evaluation(
        net, dataset, images, output, resume=resume, overwrite=overwrite, batch_size=batch_size, top_k=top_k,
        device=device, accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy=strategy,
        precision=precision, num_workers=workers, tencrop=tencrop, refs=ref_set, refs_k=refs_k,
        refs_weight=refs_weight,
    )
    if report is None:  # another rank than 0: rank 0 merges and reports
        return
    if report.n_missing:
        console.print(f"{report.n_missing} image file(s) listed in {terminal_text(dataset.name)} are missing from "
                      f"{terminal_text(images)}: skipped")
    if report.n_failed:
        console.print(f"{report.n_failed} image(s) could not be read: see the status column of "
                      f"{terminal_text(output)}")
    if ref_set is not None:
        console.print(f"reference set {terminal_text(refs)}: {len(ref_set) - report.n_refs_excluded:,} used, "
                      f"{report.n_refs_excluded:,} left out because they are benchmark photos (same IMG_ID or file)")
    if report.n_resumed:
        console.print(f"resumed: {report.n_resumed} image(s) were already done")
    if report.n_unfinished:
        console.print(f"[red]{report.n_unfinished} image(s) have no row[/] (a process failed, or its parts are not "
                      f"visible here): run again with --resume")
    Console().print(metrics_table(report.metrics, title=terminal_text(f"{model} on {dataset.name}")))
    if report.precision:
        console.print(f"precision: {report.precision} (--precision {terminal_text(precision)})")
    console.print(f"per-image results: {terminal_text(output)}")


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
