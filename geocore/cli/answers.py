"""How an answer prints in the terminal: its top-k table and one line per search region (`locate`, the joint
answers and clips of `cases`)."""

from __future__ import annotations

import pandas as pd
from rich.console import Console
from rich.table import Table

from geocore.data.text import terminal_text
from geocore.present import NOT_CALIBRATED, km2, pct, place_label, region_countries, region_label


def print_topk(title: str, table: pd.DataFrame, console: Console) -> None:
    """A top-k table (rank, lat, lon, prob, place with admin1, country) under `title`, shown as text."""
    t = Table(title=terminal_text(title))
    for col in ("#", "lat", "lon", "prob", "place", "country"):
        t.add_column(col, justify="right" if col in ("#", "lat", "lon", "prob") else "left")
    for r in table.itertuples():
        t.add_row(str(r.rank), f"{r.lat:.4f}", f"{r.lon:.4f}", f"{r.prob:.3f}",
                  terminal_text(place_label(r.place, r.admin1)), terminal_text(region_label(r.country)))
    console.print(t)


def region_line(region) -> str:
    """"90 % search region: 1,234,567 km² in 3 areas (FRA, ESP … and 2 more) — calibrated" for the console."""
    countries = region_countries(region, 6, iso=True) if len(region.countries) else ""
    status = "calibrated" if region.calibrated else NOT_CALIBRATED
    return (f"{pct(region.level)} search region: {km2(region.area_km2)} in {region.n_areas} "
            f"area{'s' if region.n_areas != 1 else ''}" + (f" ({countries})" if countries else "") + f" — {status}")
