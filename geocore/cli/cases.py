"""`geocore locate` for cases: several photos of one place (`--same-place`), video clips, a claimed location
(`--claim`). Printing and plain-data records only; the analysis is `geocore.cases`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from geocore.cli.answers import print_topk, region_line
from geocore.data.text import terminal_text, utf8_safe
from geocore.errors import InputError
from geocore.present import km, km2, pct, place_label, region_label

# The options `locate` and `report` share for reference photos and cases.
REFS_OPT = typer.Option(None, "--refs", help="A reference set from `geocore refs build` (same model): each answer "
                        "lists its nearest reference photos and is fused with them.")
REFS_K_OPT = typer.Option(None, "--refs-k", min=1, help="How many nearest references to use (default 5, measured).")
REFS_WEIGHT_OPT = typer.Option(None, "--refs-weight", min=0.0, help="W in p ∝ p_model · L^W (default 2, measured).")
SAME_PLACE_OPT = typer.Option(False, "--same-place", help="The photos show one place: one joint answer (tempered "
                              "product), each photo's part, and photos that may not belong.")
EVERY_S_OPT = typer.Option(1.0, "--every-s", min=0.05, help="Videos: sample a frame every N seconds (and at scene "
                           "changes).")
MAX_FRAMES_OPT = typer.Option(300, "--max-frames", min=1, help="Videos: at most this many frames a clip.")
CLAIM_OPT = typer.Option(None, "--claim", help='A claimed location to check: "Kharkiv, Ukraine" (offline '
                         'gazetteer) or "49.99,36.23".')


def case_inputs(claim: str | None, refs: Path | None, refs_k: int | None, refs_weight: float | None):
    """(claim resolved, reference set loaded), before the model loads: an unknown or ambiguous name, a missing or
    incomplete set, or --refs-k / --refs-weight without --refs is one line."""
    claimed = ref_set = None
    if claim is not None:
        from geocore.cases.claims import resolve_claim

        claimed = resolve_claim(claim)
    if refs is None and (refs_k is not None or refs_weight is not None):
        raise InputError("--refs-k and --refs-weight need --refs")
    if refs is not None:
        from geocore.refs import load_reference_set

        ref_set = load_reference_set(refs)
    return claimed, ref_set


def split_videos(paths: list[Path]) -> tuple[list[Path], list[Path]]:
    """(photos, videos) by file suffix (MP4, MOV, WebM, MKV are videos)."""
    from geocore.data.video import VIDEO_SUFFIXES

    videos = [p for p in paths if p.suffix.lower() in VIDEO_SUFFIXES]
    return [p for p in paths if p.suffix.lower() not in VIDEO_SUFFIXES], videos


def print_joint(joint, console: Console, title: str) -> None:
    """The joint answer: top-k, its regions, and per photo how much it narrowed the answer or conflicts."""
    print_topk(title, joint.table, console)
    for reg in joint.regions:
        console.print(region_line(reg))
    if joint.calibration_note:
        console.print(f"[bold yellow]note:[/] {joint.calibration_note}")
    per = Table(title=f"each photo's part (tempered product, t = {joint.temperature:.2f})")
    for col in ("photo", "own top-1 → joint", "own 90 % km²", "joint 90 % km² without it", "narrowed ×", "same place?"):
        per.add_column(col)
    for r in joint.photos.itertuples():
        per.add_row(terminal_text(r.name), km(r.km_from_joint, 0), km2(r.area90_km2, unit=False),
                    km2(r.area90_without_km2, unit=False), f"{r.narrowing:,.1f}",
                    "[bold red]may not be the same place[/]" if r.conflict else "yes")
    console.print(per)
    for name, error in joint.skipped:
        console.print(f"[red]left out[/] {terminal_text(name)}: {terminal_text(error)}")


def print_claim(check, console: Console, what: str) -> None:
    """The claim check in one sentence, with where it stands against the regions."""
    regions = f"inside the 50 % region: {'yes' if check.in_50 else 'no'}; the 90 %: {'yes' if check.in_90 else 'no'}"
    level = "" if check.level is None else f"; smallest region holding it: {pct(round(check.level, 3))}"
    console.print(f"claim vs {terminal_text(what)} — {terminal_text(check.verdict)} ({regions}{level})")


def print_video(video, console: Console) -> None:
    """A clip: its frames (time, segment, top-1, localizability), each segment's joint answer, the clip's."""
    info = video.info
    length = "unknown length" if info.duration_s is None else f"{info.duration_s:,.1f} s"
    console.print(f"{terminal_text(video.name)}: {length}, {info.width}×{info.height}; "
                  f"{len(video.frames)} frame(s) kept in {len(video.segments)} segment(s)")
    t = Table(title="frames (top-1 each)")
    for col in ("time s", "segment", "lat", "lon", "place", "country", "log10 km² (90 %)"):
        t.add_column(col)
    for r in video.frames.itertuples():
        t.add_row(f"{r.time_s:.1f}", str(r.segment + 1), f"{r.lat:.4f}", f"{r.lon:.4f}",
                  terminal_text(place_label(r.place)), terminal_text(region_label(r.country)), f"{r.localizability:.1f}")
    console.print(t)
    for (start, end), seg in zip(video.segment_times, video.segments):
        top = seg.table.iloc[0]
        console.print(f"segment {start:.1f}–{end:.1f} s ({seg.n} frame(s)): {top.lat:.4f}, {top.lon:.4f} "
                      f"{terminal_text(place_label(top.place, top.admin1))}, {terminal_text(region_label(top.country))} "
                      f"(p = {top.prob:.3f})")
    print_joint(video.clip, console, f"{video.name}: the whole clip")


def case_record(photos: list[dict], joint=None, videos=(), claims: dict | None = None) -> dict:
    """`--json` for a case: the per-photo records, the joint answer beside them, videos, claim checks."""
    out: dict = {"photos": photos}
    if joint is not None:
        out["joint"] = joint.to_json()
    if videos:
        out["videos"] = [v.to_json() for v in videos]
    if claims:
        out["claims"] = {utf8_safe(k): c.to_json() for k, c in claims.items()}
    return out
