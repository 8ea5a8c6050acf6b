"""How an answer prints in the terminal: its top-k table and one line per search region (`locate`, the joint
answers and clips of `cases`)."""

from __future__ import annotations

import pandas as pd
from rich.console import Console
from rich.table import Table

from geocore.data.text import terminal_text


def print_topk(title: str, table: pd.DataFrame, console: Console) -> None:
    """A top-k table (rank, lat, lon, prob, place with admin1, country) under `title`, shown as text."""
    t = Table(title=terminal_text(title))
    for col in ("#", "lat", "lon", "prob", "place", "country"):
        t.add_column(col, justify="right" if col in ("#", "lat", "lon", "prob") else "left")
    for r in table.itertuples():
        place = ", ".join(x for x in (r.place, r.admin1) if x)
        t.add_row(str(r.rank), f"{r.lat:.4f}", f"{r.lon:.4f}", f"{r.prob:.3f}", terminal_text(place),
                  terminal_text(r.country or "(sea)"))
    console.print(t)


def region_line(region) -> str:
    """"90 % search region: 1,234,567 km² in 3 areas (FRA, ESP, …) — calibrated" for the console."""
    countries = ", ".join(region.countries[:6]) + (", …" if len(region.countries) > 6 else "")
    status = "calibrated" if region.calibrated else "not calibrated (raw probability mass)"
    return (f"{100 * region.level:g} % search region: {region.area_km2:,.0f} km² in {region.n_areas} "
            f"area{'s' if region.n_areas != 1 else ''}" + (f" ({countries})" if countries else "") + f" — {status}")
