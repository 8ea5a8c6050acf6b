"""The metrics table as the papers print it (Street 1 km … Continent 2500 km)."""

from __future__ import annotations

from rich import box
from rich.table import Table

from geocore.metrics import LEVEL_NAMES, THRESHOLDS_KM, GeoMetrics


def metrics_table(metrics: GeoMetrics, title: str | None = None) -> Table:
    """A rich table: accuracy (%) per radius, then median/mean km, GeoScore, country accuracy (%).

    Fits an 80-column terminal: the image count goes in the title.
    """
    d = metrics.to_dict()
    table = Table(title=f"{title or 'metrics'} (n = {d['n']})", box=box.SIMPLE_HEAVY, padding=(0, 1), pad_edge=False)
    headers = [f"{LEVEL_NAMES[r]}\n{r} km" for r in THRESHOLDS_KM]
    headers += ["Median\nkm", "Mean\nkm", "Geo\nScore", "Country\nacc"]
    for h in headers:
        table.add_column(h, justify="right", no_wrap=True, min_width=max(len(w) for w in h.split("\n")))
    table.add_row(
        *(f"{100 * d[f'acc_{r}km']:.1f}" for r in THRESHOLDS_KM),
        f"{d['median_km']:.1f}",
        f"{d['mean_km']:.1f}",
        f"{d['geoscore']:.0f}",
        f"{100 * d['country_acc']:.1f}",
    )
    return table


def frame_table(frame, title: str, formats: dict[str, str] | None = None) -> Table:
    """Any small DataFrame as a rich table; `formats` maps a column to a format spec (e.g. ".1%", ",.0f")."""
    formats = formats or {}
    table = Table(title=title, box=box.SIMPLE_HEAVY, padding=(0, 1), pad_edge=False)
    for col in frame.columns:
        table.add_column(str(col), justify="right", no_wrap=True)
    for row in frame.itertuples(index=False):
        table.add_row(*(format(v, formats.get(c, "")) if c in formats else str(v) for c, v in zip(frame.columns, row)))
    return table


def coverage_report(tables: dict, calibrated: bool) -> list[Table]:
    """Rich tables of `geocore.eval.coverage.coverage_tables`: coverage, abstention, recall vs area."""
    cov = tables["coverage"].rename(columns={"median_area_km2": "median km²", "mean_area_km2": "mean km²"})
    acc = {f"acc_{r}km": f"{r} km" for r in THRESHOLDS_KM}
    abst = tables["abstention"].rename(columns={**acc, "fraction": "answered", "median_km": "median km"})
    rec = tables["recall_vs_area"].rename(columns={"area_km2": "searched km²", "recall": "truth inside"})
    pct = {c: ".1%" for c in ("nominal", "coverage", "answered", "truth inside", *acc.values())}
    return [
        frame_table(cov, "search regions: " + ("calibrated" if calibrated else "raw probability mass (not calibrated)"),
                    {**pct, "mass": ".3f", "median km²": ",.0f", "mean km²": ",.0f"}),
        frame_table(abst, "answering only the most localizable photos", {**pct, "median km": ",.1f"}),
        frame_table(rec, "recall against searched area", {**pct, "searched km²": ",.0f"}),
        *([frame_table(tables["coverage_by_localizability"], "coverage per localizability tercile"
                       + (" (calibrated)" if calibrated else " (raw mass)"),
                       {c: ".1%" for c in tables["coverage_by_localizability"].columns if c.endswith("%")})]
          if "coverage_by_localizability" in tables else []),
    ]
