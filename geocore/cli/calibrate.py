"""`geocore calibrate`: fit how much probability a search region needs to hold the truth as often as it says: on
single photos (`--results` of `geocore evaluate`), or on the joint answers of labelled photo sets (`--sets`, for
`geocore locate --same-place`)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from geocore.cli.cases import REFS_K_OPT, REFS_OPT, REFS_WEIGHT_OPT
from geocore.cli.options import PRECISION_OPT, PRETRAINED_OPT, warn_random_backbone
from geocore.data.safe_io import check_output
from geocore.data.text import terminal_text
from geocore.errors import InputError


def calibrate(
    results: Path = typer.Option(None, "--results", help="Results of `geocore evaluate` on labelled photos the model "
                                 "was not trained on (.parquet or .csv)."),
    output: Path = typer.Option(..., "--output", help="Calibration file to write (.json)."),
    levels: str = typer.Option("0.5,0.8,0.9,0.95", "--levels", help="Nominal coverage levels to calibrate."),
    marginal: bool = typer.Option(False, "--marginal", help="One mass per level (coverage on average) instead of "
                                  "per bin of localizability (Mondrian, the default: hard photos covered too)."),
    sets: Path = typer.Option(None, "--sets", help="Instead of --results: a CSV of labelled photo sets, SET_ID,IMG_ID,"
                              "LAT,LON (one true position per set), for the joint answers of --same-place."),
    images: Path = typer.Option(None, "--images", help="With --sets: the folder holding the photos (IMG_ID names)."),
    model: str = typer.Option(None, "--model", help="With --sets: the model to calibrate (default geoclip)."),
    pretrained: str = PRETRAINED_OPT,
    precision: str = PRECISION_OPT,
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="With --sets: photos per forward pass."),
    tencrop: bool = typer.Option(False, "--tencrop", help="With --sets, cell models: the papers' ten crops."),
    refs: Path = REFS_OPT,
    refs_k: int = REFS_K_OPT,
    refs_weight: float = REFS_WEIGHT_OPT,
) -> None:
    """Split-conformal calibration of search regions: at level p, the region holds the truth for ≥ p of photos
    (--results) or of the joint answers of photo sets like the labelled ones (--sets)."""
    if (results is None) == (sets is None):
        raise InputError("give --results (an `evaluate` run: single photos) or --sets with --images (labelled "
                         "photo sets: joint answers), one of the two")
    if sets is not None:
        return _calibrate_sets(sets, images, model or "geoclip", pretrained, output, levels, marginal, precision,
                               batch_size, tencrop, refs, refs_k, refs_weight)
    given = [opt for opt, v in (("--images", images), ("--model", model), ("--pretrained", pretrained),
                                ("--refs", refs), ("--refs-k", refs_k), ("--refs-weight", refs_weight)) if v is not None]
    if given or tencrop:
        raise InputError(f"{(given or ['--tencrop'])[0]} goes with --sets; --results already holds the model's "
                         "answers (set such options on `geocore evaluate`)")
    from geocore.cli.tables import coverage_report
    from geocore.eval.results import read_results
    from geocore.eval.coverage import calibrate_results, coverage_tables
    from geocore.uncertainty.calibration import validate_levels

    check_output(output, (".json",), create=True)
    chosen = validate_levels(levels, "--levels")
    frame = read_results(results)
    cal = calibrate_results(frame, chosen, mondrian=not marginal)
    cal.save(output)
    console = Console()
    for table in coverage_report(coverage_tables(frame, None, chosen), calibrated=False)[:1]:
        console.print(table)
    console.print(f"calibrated on {cal.n} images of {terminal_text(cal.model)}: masses "
                  + f"{_masses_text(cal)} → {terminal_text(output)}")
    if cal.bins is not None:
        console.print(f"Mondrian calibration: {_bins_line(cal.bins, 'photos')}")
        console.print("Coverage holds within each bin, hard photos included, for new photos like these (same model, "
                      "same gallery or cells, similar images).")
    else:
        console.print("Coverage holds for new photos like these (same model, same gallery or cells, similar images).")


def _masses_text(cal) -> str:
    """The calibrated mass of each level, e.g. "50 % → 0.213, 90 % → 0.702"."""
    return ", ".join(f"{100 * p:g} % → {q:.3f}" for p, q in zip(cal.levels, cal.masses))


def _bins_line(bins, unit: str) -> str:
    """The bins in one line: how many, of what, how many photos (or sets) each, how many were given up."""
    counts = (" (" + ", ".join(f"{label}: {n}" for label, n in zip(bins.labels(), bins.counts)) + ")"
              if bins.inner_score is None else f" ({min(bins.counts)}–{max(bins.counts)} {unit} each)")
    given_up = (f"; {bins.merged} bin(s) given up to keep at least {min(bins.counts)} {unit} in each"
                if bins.merged else "")
    return bins.describe() + counts + given_up


def _calibrate_sets(sets: Path, images: Path | None, model: str, pretrained: str | None, output: Path, levels: str,
                    marginal: bool, precision: str, batch_size: int, tencrop: bool, refs, refs_k, refs_weight) -> None:
    """`geocore calibrate --sets`: the photos of each labelled set located once, their joint answer formed as
    `--same-place` forms it, and the calibration fitted on the joint answers' truth masses."""
    from geocore.data.datasets import read_sets_csv
    from geocore.data.roots import resolve_inside
    from geocore.uncertainty.calibration import validate_levels
    from geocore.weights.preflight import check_default_weights

    check_output(output, (".json",), create=True)
    chosen = validate_levels(levels, "--levels")
    if images is None:
        raise InputError("--sets needs --images, the folder holding the photos its IMG_ID column names")
    if not images.is_dir():
        raise InputError(f"--images {terminal_text(images)} is not a directory (expected the folder holding the "
                         "photos of --sets)")
    frame = read_sets_csv(sets)  # every row checked before the model loads
    rows = []
    for r in frame.itertuples():
        try:
            rows.append((r.SET_ID, r.IMG_ID, resolve_inside(images, r.IMG_ID)))
        except InputError as err:
            raise InputError(f"{sets}: line {r.line}: field IMG_ID: {err}") from None
    truths = {s: (g["LAT"].iloc[0], g["LON"].iloc[0]) for s, g in frame.groupby("SET_ID", sort=False)}
    check_default_weights(model, pretrained)
    from geocore.cases.set_calibration import calibrate_sets
    from geocore.models.registry import load_model_for_user
    from geocore.request import LocateRequest

    request = LocateRequest.build(precision=precision, batch_size=batch_size, tencrop=tencrop, refs=refs,
                                  refs_k=refs_k, refs_weight=refs_weight, full=True, model_name=model)
    net = load_model_for_user(model, pretrained)
    console = Console(soft_wrap=True)
    warn_random_backbone(net, model, console, "this calibration means nothing for real photos")
    done = calibrate_sets(net, rows, truths, request, levels=chosen, mondrian=not marginal)
    cal, scores = done.calibration, done.sets
    cal.save(output)
    errors = Console(stderr=True, soft_wrap=True)
    for set_id, name, error in done.skipped:
        errors.print(f"[red]left out[/] {terminal_text(name)} (set {terminal_text(set_id)}): {terminal_text(error)}")
    if done.dropped:
        errors.print(f"[red]no photo could be read[/] in {len(done.dropped)} set(s): "
                     + ", ".join(terminal_text(s) for s in done.dropped[:5]) + (" …" if len(done.dropped) > 5 else ""))
    raw = scores["truth_mass"].to_numpy()
    console.print("raw joint regions held the truth for: "
                  + ", ".join(f"{100 * p:g} % → {100 * (raw <= p).mean():.1f} %" for p in cal.levels))
    lo, hi = cal.photos_per_set
    console.print(f"calibrated on the joint answers of {cal.n} set(s) of {lo if lo == hi else f'{lo}–{hi}'} photo(s) "
                  f"({int(scores['n_photos'].sum())} photos) of {terminal_text(cal.model)}: masses "
                  + f"{_masses_text(cal)} → {terminal_text(output)}")
    if cal.bins is not None:
        console.print(f"Mondrian calibration on the joint answers: {_bins_line(cal.bins, 'sets')}")
    console.print("Coverage holds for joint answers (geocore locate --same-place --calibration) of sets like these: "
                  "same model, same gallery or cells, as many photos, similar scenes.")
    if lo != hi:
        console.print("[bold yellow]note:[/] the sets hold different numbers of photos: coverage holds on average over "
                      "this mix of sizes, not for each size (on stand-ins a pooled calibration missed some sizes by over "
                      "4 points); for a guarantee per size, fit one on sets of that size")


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate)
