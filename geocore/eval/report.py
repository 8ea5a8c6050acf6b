"""The metrics table as the papers print it (Street 1 km … Continent 2500 km)."""

from __future__ import annotations

from rich import box
from rich.table import Table

from geocore.eval.metrics import LEVEL_NAMES, THRESHOLDS_KM, GeoMetrics


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
