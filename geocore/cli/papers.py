"""`geocore score --papers`: the published figures (`geocore.eval.published`) beside a run, with the difference."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table

from geocore.data.text import readable, terminal_text
from geocore.errors import InputError
from geocore.eval.published import THRESHOLDS_KM, canonical_dataset, dataset_from_name, datasets, published_for


@dataclass(frozen=True)
class PapersPick:
    """The benchmark whose published rows are shown, and how it was picked (said to the user)."""

    dataset: str
    how: str


def pick_dataset(option: str | None, *files: Path | None) -> PapersPick:
    """The benchmark named by ``--papers-dataset``, else the first of `files` whose name names one; InputError
    (one line, the choices listed) otherwise."""
    choices = ", ".join(datasets())
    if option is not None:
        ds = canonical_dataset(option)
        if ds is None:
            raise InputError(f"--papers-dataset {option!r}: no published figures for it here; expected one of "
                             f"{choices}")
        return PapersPick(ds, "--papers-dataset")
    for path in files:
        if path is not None and (ds := dataset_from_name(path.name)) is not None:
            return PapersPick(ds, f"the file name {path.name}")
    names = ", ".join(p.name for p in files if p is not None)
    raise InputError(f"--papers: cannot tell the benchmark from the file name(s) {names}; give --papers-dataset "
                     f"(one of {choices})")


def _run_acc(metrics: dict) -> list[float]:
    return [100.0 * float(metrics[f"acc_{r}km"]) for r in THRESHOLDS_KM]


def papers_json(pick: PapersPick | None, metrics: dict) -> dict:
    """The published rows and the differences (run − paper, in points), for ``--json``."""
    if pick is None:
        return {}
    run = _run_acc(metrics)
    rows = []
    for p in published_for(pick.dataset):
        row = {"system": p.system, "venue": p.venue, "source": p.source, "checked": p.checked}
        row.update({f"acc_{r}km": a for r, a in zip(THRESHOLDS_KM, p.acc)})
        row.update({f"diff_{r}km": round(mine - a, 2) for r, mine, a in zip(THRESHOLDS_KM, run, p.acc)})
        rows.append(row)
    return {"papers": {"dataset": pick.dataset, "picked_from": pick.how, "rows": rows}}


def print_papers(console: Console, pick: PapersPick | None, metrics: dict) -> None:
    """A table: this run's accuracy, then each published row with run − paper in points, then the sources."""
    if pick is None:
        return
    run = _run_acc(metrics)
    rows = published_for(pick.dataset)
    console.print(f"published figures on {pick.dataset} (picked from {terminal_text(pick.how)}; "
                  "--papers-dataset chooses another)", soft_wrap=True)
    table = Table(title="accuracy (%); Δ = this run − paper, in points", box=box.SIMPLE_HEAVY, padding=(0, 1),
                  pad_edge=False)
    table.add_column("system", no_wrap=True)
    for r in THRESHOLDS_KM:
        table.add_column(f"{r} km", justify="right", no_wrap=True)
    table.add_row(f"this run (n = {int(metrics['n']):,})", *(f"{a:.1f}" for a in run), end_section=True)
    for i, p in enumerate(rows, 1):
        table.add_row(f"{terminal_text(p.system)} [{i}]", *(f"{a:g}" for a in p.acc))
        table.add_row("  Δ", *(f"{mine - a:+.1f}" for mine, a in zip(run, p.acc)), style="dim")
    console.print(table)
    for i, p in enumerate(rows, 1):
        mark = "" if p.checked else " — not checked against the paper here"
        console.print(f"[{i}] {readable(p.system)} ({p.venue}): {readable(p.source)}{mark}", markup=False,
                      highlight=False, soft_wrap=True)
