"""`geocore report`: one self-contained, offline HTML case report for one or more photos and video clips."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer
from rich.console import Console

from geocore.cli.cases import (CLAIM_OPT, EVERY_S_OPT, MAX_FRAMES_OPT, REFS_K_OPT, REFS_OPT, REFS_WEIGHT_OPT,
                               SAME_PLACE_OPT)
from geocore.cli.options import MODEL_OPT, PRETRAINED_OPT, warn_random_backbone
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
    images: list[Path] = typer.Argument(..., help="Photos, folders of photos, or video clips (MP4, MOV, WebM, MKV)."),
    output: Path = typer.Option(..., "--output", "-o", help="The report to write, e.g. case.html."),
    model: str = MODEL_OPT,
    pretrained: str = PRETRAINED_OPT,
    hint: str = typer.Option(None, "--hint", help="A text hint about the place, e.g. 'a beach in the tropics'."),
    hint_weight: float = typer.Option(None, "--hint-weight", help="How much the hint counts (default: locate's)."),
    calibration: Path = typer.Option(None, "--calibration", help="Calibration file (JSON) for the search regions."),
    top_k: int = typer.Option(5, "--top-k", min=1, help="How many places to list per photo."),
    regions: str = typer.Option(None, "--regions", help="Search-region levels, fractions (default: a calibration's "
                                "levels, else 0.5,0.9; the rule `geocore locate` follows)."),
    explain: bool = typer.Option(True, "--gradcam/--no-gradcam", help="Grad-CAM of the top-1 (slow on CPU)."),
    refs: Path = REFS_OPT,
    refs_k: int = REFS_K_OPT,
    refs_weight: float = REFS_WEIGHT_OPT,
    same_place: bool = SAME_PLACE_OPT,
    claim: str = CLAIM_OPT,
    every_s: float = EVERY_S_OPT,
    max_frames: int = MAX_FRAMES_OPT,
) -> None:
    """A reproducible case report: photos, SHA-256s, EXIF, top-k, maps with search regions, Grad-CAM, provenance;
    with --refs similar reference photos, with --same-place a joint answer, with --claim a claim check; a video clip
    gets its frames, segments and the clip's joint answer with a map of the per-frame track.

    One HTML file that opens offline and makes no request (images inline; no scripts, fonts or tiles)."""
    check_default_weights(model, pretrained)  # before torch loads: a missing-weights error in a blink
    from geocore.cases.analyse import analyse_case
    from geocore.cli.cases import split_videos
    from geocore.locate import expand_paths
    from geocore.models.registry import load_model_for_user
    from geocore.report import report_from_case, write_html
    from geocore.request import LocateRequest

    # the user's mistakes first, before any model is loaded
    check_output(output, REPORT_SUFFIXES, create=True)
    request = LocateRequest.build(
        top_k=top_k, regions=regions, calibration=calibration, hint=hint, hint_weight=hint_weight, refs=refs,
        refs_k=refs_k, refs_weight=refs_weight, same_place=same_place, claim=claim, every_s=every_s,
        max_frames=max_frames, full=True, regions_needed=True, model_name=model)
    paths = expand_paths(images)  # folders: their images; files as given, video clips among them
    stills, clips = split_videos(paths)

    net = load_model_for_user(model, pretrained)
    console = Console(stderr=True, soft_wrap=True)
    warn_random_backbone(net, model, console)
    bound = request.bind(net)  # the calibration's fit, the hint scored: once, before any photo is read
    weights_file = Path(pretrained) if pretrained and Path(pretrained).is_file() else None
    command = _command(paths, explain, output=output, model=model, pretrained=pretrained, hint=hint,
                       hint_weight=hint_weight, calibration=calibration, top_k=top_k,
                       regions=",".join(f"{v:g}" for v in request.levels), refs=refs, refs_k=refs_k,
                       refs_weight=refs_weight, same_place=same_place, claim=claim,
                       every_s=every_s if clips and every_s != 1.0 else None,
                       max_frames=max_frames if clips and max_frames != 300 else None)
    console.print(f"analysing {len(stills)} photo(s)" + (f" and {len(clips)} video(s)" if clips else "")
                  + f" with {terminal_text(model)} …")
    case = analyse_case(net, [(str(p), p) for p in paths], bound)  # each photo read once, located once
    rep = report_from_case(case, weights_file=weights_file, explain=explain, command=command)
    write_html(rep.html, output)
    for case in [*rep.cases, *rep.videos]:
        if not case.ok:
            console.print(f"[red]could not read[/] {terminal_text(case.error)}")
    n_videos = sum(v.ok for v in rep.videos)
    console.print(f"{rep.n_ok} photo(s) analysed, {len(rep.cases) - rep.n_ok} could not be read"
                  + (f"; {n_videos} video(s) analysed, {len(rep.videos) - n_videos} could not be read"
                     if rep.videos else "") + f" → {terminal_text(output)}")
    if rep.joint is not None and rep.joint.result is not None and rep.joint.result.conflicts:
        console.print("[bold red]may not be the same place:[/] "
                      + ", ".join(terminal_text(n) for n in rep.joint.result.conflicts))
    for v in rep.videos:
        if v.ok and v.result.clip.conflicts:
            console.print(f"[bold red]{terminal_text(v.name)}: segments that may show another place:[/] "
                          + ", ".join(terminal_text(n) for n in v.result.clip.conflicts))
    if rep.n_ok == 0 and not any(v.ok for v in rep.videos):
        raise InputError(f"none of the photos{' or videos' if rep.videos else ''} could be read; the errors are in "
                         f"{output}")


def register(app: typer.Typer) -> None:
    app.command("report")(report)
