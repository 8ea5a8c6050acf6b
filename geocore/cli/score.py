"""`geocore score`: metrics of a predictions CSV against ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from geocore.data.text import terminal_text
from geocore.errors import InputError


def score(
    pred: Path = typer.Option(None, "--pred", help="Predictions CSV with IMG_ID,LAT,LON."),
    truth: Path = typer.Option(None, "--truth", help="Ground-truth CSV (IMG_ID or IMG_FILE, LAT, LON)."),
    results: Path = typer.Option(None, "--results", help="Or: a results file of `geocore evaluate` (metrics, "
                                 "search-region coverage, abstention curve, recall against area)."),
    calibration: Path = typer.Option(None, "--calibration", help="With --results: judge calibrated regions."),
    as_json: bool = typer.Option(False, "--json", help="Print exactly one JSON object."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Drop bad rows and report how many, instead of failing."),
    papers: bool = typer.Option(False, "--papers", help="Print the published figures (GeoCLIP, TransLocator, "
                                "GeoDecoder and the papers' baselines) beside this run, with the difference."),
    papers_dataset: str = typer.Option(None, "--papers-dataset", help="The benchmark for --papers: im2gps3k, im2gps, "
                                       "yfcc4k or yfcc26k (default: read from the file names)."),
) -> None:
    """Score predictions against ground truth: accuracy at 1/25/200/750/2500 km, median km, GeoScore."""
    from geocore.cli.papers import papers_json, pick_dataset, print_papers

    pick = pick_dataset(papers_dataset, results, truth, pred) if papers or papers_dataset else None
    if results is not None:
        if pred is not None or truth is not None:
            raise InputError("give either --results, or --pred and --truth")
        return _score_results(results, calibration, as_json, pick)
    if pred is None or truth is None:
        raise InputError("give --pred and --truth (or --results from `geocore evaluate`)")
    from geocore.cli.tables import metrics_table  # numpy/torch load only when scoring
    from geocore.eval.score import score_files

    result = score_files(pred, truth, skip_bad=skip_bad)
    if as_json:
        typer.echo(json.dumps({**result.metrics.to_dict(), **papers_json(pick, result.metrics.to_dict())}))
        if result.skipped:
            typer.echo(f"skipped: {json.dumps(result.skipped)}", err=True)
        return
    console = Console()
    console.print(metrics_table(result.metrics, title=terminal_text(f"{pred.name} vs {truth.name}")))
    for what, count in result.skipped.items():
        console.print(f"skipped {count} row(s): {what}")
    print_papers(console, pick, result.metrics.to_dict())


def calibration_note(cal, fit) -> str:
    """One line on the calibration used: its method and whether these photos look like the ones it saw."""
    method = ("Mondrian: coverage holds within each of its bins of localizability" if cal.method == "mondrian"
              else "marginal: coverage holds on average over photos")
    if fit is None:
        return f"calibration {method}; it records no localizability, so its fit cannot be checked"
    if fit.shifted:
        return (f"calibration {method}. [bold red]Coverage may not hold here:[/] these photos' localizability differs "
                f"from the calibration's (two-sample KS D = {fit.statistic:.3f}, p = {fit.p_value:.2g})")
    return f"calibration {method}; these photos' localizability matches it (KS p = {fit.p_value:.2g})"


def _score_results(path: Path, calibration: Path | None, as_json: bool, pick=None) -> None:
    from geocore.cli.papers import papers_json, print_papers
    from geocore.metrics import compute_metrics
    from geocore.cli.tables import metrics_table, coverage_report
    from geocore.eval.results import ok_rows, read_results
    from geocore.eval.coverage import calibration_fit, has_coverage_columns, coverage_tables
    from geocore.uncertainty.calibration import Calibration

    frame = read_results(path)
    ok = ok_rows(frame)
    metrics = compute_metrics(ok[["PRED_LAT", "PRED_LON"]].to_numpy(float), ok[["LAT", "LON"]].to_numpy(float))
    cal = Calibration.load(calibration) if calibration is not None else None
    tables = coverage_tables(frame, cal) if has_coverage_columns(frame) else {}
    if as_json:
        typer.echo(json.dumps({**metrics.to_dict(), **{k: v.to_dict("records") for k, v in tables.items()},
                               **papers_json(pick, metrics.to_dict())}))
        return
    console = Console()
    console.print(metrics_table(metrics, title=terminal_text(path.name)))
    print_papers(console, pick, metrics.to_dict())
    if not tables:
        console.print("(no search-region columns in this file: re-run `geocore evaluate` to get coverage tables)")
    for table in coverage_report(tables, calibrated=cal is not None) if tables else []:
        console.print(table)
    if cal is not None and tables:
        console.print(calibration_note(cal, calibration_fit(frame, cal)))


def register(app: typer.Typer) -> None:
    app.command("score")(score)
