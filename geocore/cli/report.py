"""`geocore report`: one self-contained, offline HTML case report for one or more photos."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer
from rich.console import Console

from geocore.cli.cases import CLAIM_OPT, REFS_K_OPT, REFS_OPT, REFS_WEIGHT_OPT, SAME_PLACE_OPT, case_inputs
from geocore.cli.locate import check_hint_options, parse_levels
from geocore.data.safe_io import check_output
from geocore.data.text import terminal_text
from geocore.errors import InputError
from geocore.weights.preflight import check_default_weights

REPORT_SUFFIXES = (".html", ".htm")


def _command(images: list[Path], explain: bool, **options) -> str:
    """The command line that reproduces this report (the options given, in a fixed order; True: a bare flag)."""
    parts = ["geocore", "report", *map(str, images)]
    for flag, value in options.items():
        if value is True:
            parts.append(f"--{flag.replace('_', '-')}")
        elif value is not None and value is not False:
            parts += [f"--{flag.replace('_', '-')}", str(value)]
    return shlex.join(parts + ([] if explain else ["--no-gradcam"]))


def report(
    images: list[Path] = typer.Argument(..., help="Photos or folders of photos."),
    output: Path = typer.Option(..., "--output", "-o", help="The report to write, e.g. case.html."),
    model: str = typer.Option("geoclip", "--model", help="Registered model name (see `geocore models`)."),
    pretrained: str = typer.Option(None, "--pretrained",
                                   help="Weights tag or checkpoint path (default: the model's own)."),
    hint: str = typer.Option(None, "--hint", help="A text hint about the place, e.g. 'a beach in the tropics'."),
    hint_weight: float = typer.Option(None, "--hint-weight", help="How much the hint counts (default: locate's)."),
    calibration: Path = typer.Option(None, "--calibration", help="Calibration file (JSON) for the search regions."),
    top_k: int = typer.Option(5, "--top-k", min=1, help="How many places to list per photo."),
    regions: str = typer.Option(None, "--regions", help="Search-region levels, fractions (default 0.5,0.9, or the "
                                "calibration's outer levels when it was not fitted at those)."),
    explain: bool = typer.Option(True, "--gradcam/--no-gradcam", help="Grad-CAM of the top-1 (slow on CPU)."),
    refs: Path = REFS_OPT,
    refs_k: int = REFS_K_OPT,
    refs_weight: float = REFS_WEIGHT_OPT,
    same_place: bool = SAME_PLACE_OPT,
    claim: str = CLAIM_OPT,
) -> None:
    """A reproducible case report: photos, SHA-256s, EXIF, top-k, maps with search regions, Grad-CAM, provenance;
    with --refs similar reference photos, with --same-place a joint answer, with --claim a claim check.

    One HTML file that opens offline and makes no request (images inline; no scripts, fonts or tiles)."""
    check_default_weights(model, pretrained)  # before torch loads: a missing-weights error in a blink
    from geocore.locate import expand_paths
    from geocore.models.registry import load_model_for_user
    from geocore.report import build_report, write_html
    from geocore.uncertainty.calibration import Calibration

    # the user's mistakes first, before any model is loaded
    check_output(output, REPORT_SUFFIXES, create=True)
    levels = parse_levels(regions)
    check_hint_options(hint, hint_weight)
    cal = Calibration.load(calibration) if calibration is not None else None
    if levels is None:  # as `geocore locate` chooses them
        levels = (0.5, 0.9) if cal is None or set(cal.levels) >= {0.5, 0.9} else (cal.levels[0], cal.levels[-1])
    claimed, ref_set = case_inputs(claim, refs, refs_k, refs_weight)
    paths = expand_paths(images)

    net = load_model_for_user(model, pretrained)
    console = Console(stderr=True, soft_wrap=True)
    if net.random_backbone:
        console.print(f"[bold red]note:[/] {terminal_text(model)} has a RANDOM backbone: these predictions mean "
                      "nothing")
    weights_file = Path(pretrained) if pretrained and Path(pretrained).is_file() else None
    command = _command(paths, explain, output=output, model=model, pretrained=pretrained, hint=hint,
                       hint_weight=hint_weight, calibration=calibration, top_k=top_k,
                       regions=",".join(f"{v:g}" for v in levels), refs=refs, refs_k=refs_k,
                       refs_weight=refs_weight, same_place=same_place, claim=claim)
    console.print(f"analysing {len(paths)} photo(s) with {terminal_text(model)} …")
    rep = build_report(net, [(str(p), p) for p in paths], hint=hint, hint_weight=hint_weight, calibration=cal,
                       top_k=top_k, levels=levels, weights_file=weights_file, explain=explain, command=command,
                       refs=ref_set, refs_k=refs_k, refs_weight=refs_weight, same_place=same_place,
                       claim=claimed)
    write_html(rep.html, output)
    for case in rep.cases:
        if not case.ok:
            console.print(f"[red]could not read[/] {terminal_text(case.error)}")
    console.print(f"{rep.n_ok} photo(s) analysed, {len(rep.cases) - rep.n_ok} could not be read → "
                  f"{terminal_text(output)}")
    if rep.joint is not None and rep.joint.result is not None and rep.joint.result.conflicts:
        console.print("[bold red]may not be the same place:[/] "
                      + ", ".join(terminal_text(n) for n in rep.joint.result.conflicts))
    if rep.n_ok == 0:
        raise InputError(f"none of the photos could be read; the errors are in {output}")


def register(app: typer.Typer) -> None:
    app.command("report")(report)
