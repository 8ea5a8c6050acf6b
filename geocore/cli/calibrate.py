"""`geocore calibrate`: fit how much probability a search region needs to hold the truth as often as it says."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from geocore.data.safe_io import check_output
from geocore.data.text import terminal_text


def calibrate(
    results: Path = typer.Option(..., "--results", help="Results of `geocore evaluate` on labelled photos the model "
                                 "was not trained on (.parquet or .csv)."),
    output: Path = typer.Option(..., "--output", help="Calibration file to write (.json)."),
    levels: str = typer.Option("0.5,0.8,0.9,0.95", "--levels", help="Nominal coverage levels to calibrate."),
    marginal: bool = typer.Option(False, "--marginal", help="One mass per level (coverage on average) instead of "
                                  "per bin of localizability (Mondrian, the default: hard photos covered too)."),
) -> None:
    """Split-conformal calibration of search regions: at level p, the region holds the truth for ≥ p of photos."""
    from geocore.cli.locate import parse_levels
    from geocore.cli.tables import uncertainty_report
    from geocore.eval.results import read_results
    from geocore.eval.coverage import calibrate_results, uncertainty_tables

    check_output(output, (".json",), create=True)
    chosen = parse_levels(levels, "--levels")
    frame = read_results(results)
    cal = calibrate_results(frame, chosen, mondrian=not marginal)
    cal.save(output)
    console = Console()
    for table in uncertainty_report(uncertainty_tables(frame, None, chosen), calibrated=False)[:1]:
        console.print(table)
    console.print(f"calibrated on {cal.n} images of {terminal_text(cal.model)}: masses "
                  + ", ".join(f"{100 * p:g} % → {q:.3f}" for p, q in zip(cal.levels, cal.masses))
                  + f" → {terminal_text(output)}")
    if cal.bins is not None:
        console.print(f"Mondrian calibration: {len(cal.bins.counts)} bins of {cal.bins.score} ("
                      + ", ".join(f"{label}: {n}" for label, n in zip(cal.bins.labels(), cal.bins.counts)) + ")"
                      + (f"; {cal.bins.merged} bin(s) given up to keep at least "
                         f"{min(cal.bins.counts)} photos in each" if cal.bins.merged else ""))
        console.print("Coverage holds within each bin, hard photos included, for new photos like these (same model, "
                      "same gallery or cells, similar images).")
    else:
        console.print("Coverage holds for new photos like these (same model, same gallery or cells, similar images).")


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate)
