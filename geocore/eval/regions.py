"""Accuracy per region (country or continent) of the true location, from an evaluation results frame."""

from __future__ import annotations

import numpy as np
import pandas as pd

from geocore.geo.countries import country_of

SEA = "(sea)"


def accuracy_by_region(results: pd.DataFrame, radius_km: float = 2500.0, by: str = "continent") -> pd.DataFrame:
    """Per region of the TRUE point: `images` and `accuracy` (fraction with error ≤ radius_km).

    `results` has `LAT, LON, error_km, status` as `geocore evaluate` writes them; failed images are left out;
    `by` is "continent" or "country" (ISO A3 codes); truths at sea are grouped under "(sea)".
    Sorted by image count, largest first.
    """
    if by not in ("continent", "country"):
        raise ValueError(f"by must be 'continent' or 'country', got {by!r}")
    ok = results[results["status"].astype(str).eq("ok") & results["error_km"].notna()]
    where = country_of(ok[["LAT", "LON"]].to_numpy(np.float64))
    region = where["continent" if by == "continent" else "iso_a3"].replace("", SEA).to_numpy()
    hit = (ok["error_km"].to_numpy(np.float64) <= radius_km).astype(float)
    return (pd.DataFrame({by: region, "hit": hit}).groupby(by)
            .agg(images=("hit", "size"), accuracy=("hit", "mean"))
            .sort_values("images", ascending=False))


def region_label(name: str | None) -> str:
    """A country, continent or region name for display: `SEA` when there is none (the point is at sea)."""
    return name if name else SEA


def place_label(place: str | None, admin1: str | None = "") -> str:
    """A nearest place and its first-level region ("Paris, Île-de-France") for display; `SEA` when both are empty."""
    return region_label(", ".join(x for x in (place, admin1) if x))
