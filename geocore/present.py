"""How geocore writes things for people, in one place: the CLI, the app and the case report use these.

Labels for places (`SEA` when a point lies in no country), levels as percentages, areas in km², distances in km,
the countries a region touches, and the colours search regions are drawn in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

SEA = "(sea)"
NO_COUNTRY = f"none {SEA}"  # a region that touches no country
MAX_COUNTRIES = 8  # countries named per region by default; the rest are counted
DASH = "—"  # a number that is not there (NaN, infinite, None)
NOT_CALIBRATED = "not calibrated (raw probability mass)"  # a search region without a calibration


def region_label(name: str | None) -> str:
    """A country, continent or region name for display: `SEA` when there is none (the point is at sea)."""
    return name if isinstance(name, str) and name else SEA


def place_label(place: str | None, admin1: str | None = "") -> str:
    """A nearest place and its first-level region ("Paris, Île-de-France") for display; `SEA` when both are empty."""
    return region_label(", ".join(x for x in (place, admin1) if isinstance(x, str) and x))


def _missing(x: Any) -> bool:
    return x is None or not math.isfinite(x)


def pct(level: float) -> str:
    """A level or share as a percentage: 0.9 → "90 %", 0.725 → "72.5 %"."""
    return f"{100 * level:g} %"


def km2(area: float | None, *, unit: bool = True) -> str:
    """An area: "12,345 km²" (whole km² from 10 km², two decimals below); `DASH` when there is none."""
    if _missing(area):
        return DASH
    text = f"{area:,.0f}" if area >= 10 else f"{area:,.2f}"
    return f"{text} km²" if unit else text


def km(dist: float | None, decimals: int = 1) -> str:
    """A distance: "1,234.5 km"; `DASH` when there is none."""
    return DASH if _missing(dist) else f"{dist:,.{decimals}f} km"


def countries_text(names: Sequence[str], limit: int = MAX_COUNTRIES) -> str:
    """At most `limit` names, then how many more ("France, Spain … and 3 more"); `NO_COUNTRY` for none."""
    if not len(names):
        return NO_COUNTRY
    more = len(names) - limit
    return ", ".join(names[:limit]) + (f" … and {more} more" if more > 0 else "")


def region_countries(region: Any, limit: int = MAX_COUNTRIES, *, iso: bool = False) -> str:
    """The countries a search region touches (`countries`, `country_names`): names (ISO codes with `iso`, or
    where a name is missing), as `countries_text` writes them."""
    names = list(region.countries) if iso else [n or c for c, n in zip(region.countries, region.country_names)]
    return countries_text(names, limit)


class RegionStyle(NamedTuple):
    """How a search region is drawn: its colour, matplotlib line style and SVG dash array (Leaflet)."""

    colour: str
    linestyle: str
    dash: str | None


# an answer's 1st, 2nd, ... region, smallest level first (50 %, 90 %: solid blue, dashed teal); more cycle
REGION_STYLES: tuple[RegionStyle, ...] = (RegionStyle("#1f4e9c", "-", None), RegionStyle("#00a0a0", "--", "7 5"),
                                          RegionStyle("#7b3294", ":", "2 4"), RegionStyle("#e66101", "-.", "7 4 2 4"))


def region_style(index: int) -> RegionStyle:
    """The style of an answer's `index`-th region (0: the smallest level)."""
    return REGION_STYLES[index % len(REGION_STYLES)]
