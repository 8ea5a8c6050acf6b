"""Plotting helpers for notebooks: world maps with matplotlib over the shipped Natural Earth countries.

Every map is drawn in plain longitude/latitude (equirectangular) axes, x = lon in [-180, 180],
y = lat in [-90, 90], so any (lat, lon) data can be added with `ax.plot(lon, lat)`. Each helper
draws on `ax` when given one (for grids of maps), else on a new figure, and returns the axes.

- `world_axes`: empty world map (country outlines, optionally filled land).
- `plot_probability_map` / `plot_prediction`: a model's probability over its candidate points,
  with the numbered top-k and an optional true location.
- `latlon_grid`, `pca_rgb`, `plot_world_image`: a (rows, cols, D) field over the globe (e.g. location
  embeddings) shown as an image, D = 3 → RGB via PCA, D = 1 → colour map.
- `plot_choropleth`, `plot_accuracy_choropleth`: a value per country or per continent as colours.
- `plot_error_histogram`: the distribution of top-1 errors (log km) with the accuracy radii marked.
- `plot_abstention`, `plot_recall_vs_area`: what search regions and localizability buy (an abstention curve,
  recall against the area searched), from `geocore.eval.coverage.coverage_tables`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from geocore.present import REGION_STYLES, pct
from geocore.tensors import as_numpy

WORLD_FIGSIZE = (9.0, 4.6)
_OUTLINE = "#333333"
_SEA = "#f4f7fb"
_LAND = "#e6e6e6"


def _new_axes(ax=None, figsize: tuple[float, float] = WORLD_FIGSIZE):
    import matplotlib.pyplot as plt

    if ax is not None:
        return ax
    _, ax = plt.subplots(figsize=figsize, dpi=90, layout="constrained")
    return ax


def world_axes(ax=None, *, land: bool = False, figsize: tuple[float, float] = WORLD_FIGSIZE, zorder: float = 3):
    """A lon/lat world map with Natural Earth 1:110m country outlines (on top of whatever is drawn later).

    land: fill the land grey under the data (for sparse scatters); outlines are always drawn."""
    from geocore.geo.countries import countries

    ax = _new_axes(ax, figsize)
    world = countries()
    if land:
        ax.set_facecolor(_SEA)
        world.plot(ax=ax, color=_LAND, linewidth=0, zorder=0)
    world.boundary.plot(ax=ax, color=_OUTLINE, linewidth=0.3, zorder=zorder)
    ax.set_xlim(-180, 180)
    ax.set_ylim(-90, 90)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("")  # geopandas labels geographic axes; a world map needs none
    ax.set_ylabel("")
    return ax


def _marker_size(points: np.ndarray, ax) -> float:
    """Scatter marker area (pt²) that roughly tiles the globe for this many points at this axes width."""
    spacing_deg = np.sqrt(41253.0 / max(len(points), 1))  # the sphere is ~41,253 square degrees
    fig = ax.figure
    width_pt = ax.get_position().width * fig.get_figwidth() * 72.0
    diameter = 1.2 * spacing_deg * width_pt / 360.0  # a little overlap: no gaps between neighbours
    return float(np.clip(diameter, 0.6, 12.0) ** 2)


def plot_probability_map(
    latlon: Any,
    probs: Any,
    *,
    ax=None,
    top_k: int = 5,
    truth: tuple[float, float] | None = None,
    title: str | None = None,
    log: bool = True,
    dynamic_range: float = 1e3,
    cmap: str = "magma_r",
    colorbar: bool = True,
):
    """Probability of each candidate point (M, 2) (lat, lon) as coloured dots over the world map.

    log: colour on a log scale from max/`dynamic_range` to max (retrieval distributions are peaky).
    top_k: number the k most probable points (0: none). truth: a (lat, lon) drawn as a green star."""
    from matplotlib.colors import LogNorm, Normalize

    pts, p = as_numpy(latlon, np.float64).reshape(-1, 2), as_numpy(probs, np.float64).reshape(-1)
    if len(pts) != len(p):
        raise ValueError(f"plot_probability_map: {len(pts)} points but {len(p)} probabilities")
    ax = world_axes(ax)
    order = np.argsort(p)  # most probable drawn last, on top
    vmax = float(p.max()) if p.size else 1.0
    norm = LogNorm(vmin=vmax / dynamic_range, vmax=vmax) if log and vmax > 0 else Normalize(0.0, vmax)
    sc = ax.scatter(pts[order, 1], pts[order, 0], c=np.clip(p[order], norm.vmin, None), s=_marker_size(pts, ax),
                    cmap=cmap, norm=norm, linewidths=0, marker="o", zorder=2)
    if colorbar:
        ax.figure.colorbar(sc, ax=ax, shrink=0.7, label="probability" + (" (log)" if log else ""))
    for rank, i in reversed(list(enumerate(np.argsort(-p)[:top_k], start=1))):  # the top-1 drawn last, on top
        ax.plot(pts[i, 1], pts[i, 0], "o", ms=11, mfc="white", mec="#1f4e9c", mew=1.5, zorder=4)
        ax.annotate(str(rank), (pts[i, 1], pts[i, 0]), ha="center", va="center", fontsize=7, color="#1f4e9c",
                    zorder=5)
    if truth is not None:
        ax.plot(truth[1], truth[0], "*", ms=15, color="#2ca02c", mec="black", zorder=6, label="truth")
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def plot_prediction(prediction, index: int = 0, *, ax=None, top_k: int | None = None,
                    truth: tuple[float, float] | None = None, title: str | None = None, **kwargs: Any):
    """Heat map of image/query `index` of a `Prediction` made with `full=True` (its `probs_full` over `candidates`)."""
    if prediction.probs_full is None or prediction.candidates is None:
        raise ValueError("plot_prediction needs the full distribution: predict with full=True")
    k = prediction.coords.shape[1] if top_k is None else top_k
    return plot_probability_map(prediction.candidates, prediction.probs_full[index], ax=ax, top_k=k, truth=truth,
                                title=title, **kwargs)


def latlon_grid(step_deg: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cell centres `step_deg` apart: lats (R,) north to south, lons (C,) west to east, points (R*C, 2) (lat, lon).

    `points` is row-major, so values computed for it reshape to an (R, C, ...) image with north up."""
    if not 0 < step_deg <= 90:
        raise ValueError(f"step_deg must be in (0, 90], got {step_deg}")
    lats = np.arange(90 - step_deg / 2, -90, -step_deg)
    lons = np.arange(-180 + step_deg / 2, 180, step_deg)
    points = np.stack(np.meshgrid(lats, lons, indexing="ij"), -1).reshape(-1, 2)
    return lats, lons, points


def pca_rgb(features: Any, *, clip_percentile: float = 1.0) -> np.ndarray:
    """(..., D) features → (..., 3) colours in [0, 1]: first three principal components, each stretched
    between its `clip_percentile` and `100 - clip_percentile` percentiles."""
    arr = as_numpy(features, np.float64)
    flat = arr.reshape(-1, arr.shape[-1])
    flat = flat - flat.mean(0)
    _, vecs = np.linalg.eigh(flat.T @ flat)  # (D, D) scatter matrix: far cheaper than an SVD of (N, D)
    comp = flat @ vecs[:, ::-1][:, :3]  # eigenvalues ascend: the last three are the principal axes
    lo = np.percentile(comp, clip_percentile, axis=0)
    hi = np.percentile(comp, 100 - clip_percentile, axis=0)
    return np.clip((comp - lo) / (hi - lo + 1e-12), 0, 1).reshape(*arr.shape[:-1], 3)


def plot_world_image(image: Any, *, ax=None, title: str | None = None, cmap: str | None = None,
                     colorbar: str | None = None, points: Mapping[str, tuple[float, float]] | None = None):
    """An (R, C) or (R, C, 3) image covering the globe (row 0 = north, as `latlon_grid` orders it).

    points: name → (lat, lon) marked and labelled on top."""
    ax = world_axes(ax)
    im = ax.imshow(as_numpy(image, np.float64), extent=(-180, 180, -90, 90), cmap=cmap, interpolation="bilinear",
                   zorder=1)
    if colorbar:
        ax.figure.colorbar(im, ax=ax, shrink=0.7, label=colorbar)
    for name, (lat, lon) in (points or {}).items():
        ax.plot(lon, lat, "o", ms=5, color="white", mec="black", zorder=6)
        ax.annotate(name, (lon, lat), xytext=(4, 3), textcoords="offset points", fontsize=7, zorder=6,
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.7})
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def _regions(by: str):
    from geocore.geo.countries import countries

    world = countries()
    if by == "continent":
        return world.dissolve(by="continent").reset_index(), "continent"
    if by in ("country", "iso_a3"):
        return world, "iso_a3"
    raise ValueError(f"by must be 'continent' or 'country', got {by!r}")


def plot_choropleth(values: Mapping[str, float] | pd.Series, *, by: str = "continent", ax=None,
                    label: str = "", title: str | None = None, cmap: str = "RdYlGn",
                    vmin: float | None = 0.0, vmax: float | None = 1.0,
                    annotate: Mapping[str, str] | None = None):
    """Colour each continent (names as Natural Earth spells them) or country (ISO A3 codes) by `values`.

    Regions with no value are light grey. annotate: region → text written at its representative point."""
    regions, key = _regions(by)
    vals = pd.Series(values, dtype="float64", name="value")
    g = regions.merge(vals, left_on=key, right_index=True, how="left")
    ax = _new_axes(ax)
    g.plot(column="value", ax=ax, cmap=cmap, vmin=vmin, vmax=vmax, legend=True, edgecolor="#555555",
           linewidth=0.2, missing_kwds={"color": _LAND, "label": "no data"},
           legend_kwds={"label": label, "shrink": 0.6})
    for region, text in (annotate or {}).items():
        row = g[g[key] == region]
        if len(row):
            pt = row.geometry.iloc[0].representative_point()
            ax.annotate(text, (pt.x, pt.y), ha="center", va="center", fontsize=7,
                        bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})
    ax.set_xlim(-180, 180)
    ax.set_ylim(-90, 90)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def plot_accuracy_choropleth(results: pd.DataFrame, *, radius_km: float = 2500.0, by: str = "continent", ax=None,
                             title: str | None = None):
    """Accuracy within `radius_km` per region of the TRUE location, from an evaluation results frame
    (`LAT, LON, error_km, status` as `geocore.eval.evaluate` writes them).

    Returns (ax, table): the table has, per region, the number of images and the accuracy (%);
    failed images are left out; images whose truth is at sea are counted under '(sea)' in the table."""
    from geocore.eval.analysis import accuracy_by_region

    table = accuracy_by_region(results, radius_km, by)
    ax = plot_choropleth(table["accuracy"], by=by, ax=ax, label=f"accuracy ≤ {radius_km:g} km",
                         title=title or f"Accuracy ≤ {radius_km:g} km per {by} of the true location "
                                        "(grey: no images)",
                         annotate={r: f"{100 * a:.0f}% (n={n})" for r, a, n in
                                   zip(table.index, table["accuracy"], table["images"])})
    table = table.assign(accuracy=lambda t: (100 * t["accuracy"]).round(1)).rename(
        columns={"accuracy": f"accuracy ≤ {radius_km:g} km (%)"})
    return ax, table


def plot_error_histogram(errors_km: Any, *, ax=None, title: str | None = None, bins: int = 40,
                         figsize: tuple[float, float] = (7.0, 3.2)):
    """Histogram of top-1 errors (km) on a log axis from 0.1 km to half the Earth's circumference, with the
    accuracy radii (`geocore.metrics.THRESHOLDS_KM`) dashed and named by level. NaN errors are left out;
    errors under 0.1 km count in the first bin."""
    from geocore.metrics import LEVEL_NAMES, THRESHOLDS_KM

    err = as_numpy(errors_km, np.float64).reshape(-1)
    err = err[~np.isnan(err)]
    ax = _new_axes(ax, figsize)
    ax.hist(np.clip(err, 0.1, None), bins=np.logspace(-1, np.log10(20040), bins + 1), color="#4f8ef7",
            edgecolor="white")
    ax.set_xscale("log")
    top = ax.get_ylim()[1]
    for r in THRESHOLDS_KM:
        ax.axvline(r, color="#888888", linestyle="--", linewidth=0.8)
        ax.text(r, top * 0.95, f" {LEVEL_NAMES[r]}", fontsize=7, color="#555555", va="top")
    ax.set_xlabel("error of the top-1 (km, log scale)")
    ax.set_ylabel("images")
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def plot_abstention(curve: pd.DataFrame, *, ax=None, title: str | None = None,
                    figsize: tuple[float, float] = (6.0, 3.4)):
    """Accuracy (%) within each radius against the share of photos answered, most localizable first.

    `curve`: `geocore.uncertainty.localizability.abstention_curve` (`fraction`, `acc_{r}km` for the radii of
    `geocore.metrics.THRESHOLDS_KM`). One line per radius, named by level ("City 25 km"); at 100 % answered
    the accuracy is the whole run's. A model whose uncertainty means something has lines that fall to the right."""
    from geocore.metrics import LEVEL_NAMES, THRESHOLDS_KM

    ax = _new_axes(ax, figsize)
    x = 100.0 * as_numpy(curve["fraction"], np.float64)
    colors = ["#1a9850", "#66bd63", "#fdae61", "#f46d43", "#a50026"]
    for r, color in zip(THRESHOLDS_KM, colors):
        col = f"acc_{r}km"
        if col in curve:
            ax.plot(x, 100.0 * as_numpy(curve[col], np.float64), "o-", ms=3.5, lw=1.6, color=color,
                    label=f"{LEVEL_NAMES[r]} {r} km")
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 100)
    ax.set_xlabel("photos answered (%), most localizable first")
    ax.set_ylabel("accuracy (%)")
    ax.grid(True, color="#dddddd", linewidth=0.6)
    ax.legend(fontsize=7, loc="best", title="within", title_fontsize=7)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def plot_recall_vs_area(table: pd.DataFrame, *, coverage: pd.DataFrame | None = None, ax=None,
                        title: str | None = None, figsize: tuple[float, float] = (6.0, 3.4)):
    """Share of photos (%) whose true location lies in the searched part of the search region, against the
    area searched (km², log axis): `geocore.uncertainty.localizability.recall_vs_area` (`area_km2`, `recall`).

    coverage: a `coverage_table` (`nominal`, `coverage`, `median_area_km2`): each level's regions are marked at
    their median area and empirical coverage ("90 %")."""
    ax = _new_axes(ax, figsize)
    area, recall = as_numpy(table["area_km2"], np.float64), 100.0 * as_numpy(table["recall"], np.float64)
    ax.plot(area, recall, "o-", ms=3.5, lw=1.8, color=REGION_STYLES[0].colour, label="truth inside the searched area")
    if coverage is not None and len(coverage):
        medians = as_numpy(coverage["median_area_km2"], np.float64)
        covered = 100.0 * as_numpy(coverage["coverage"], np.float64)
        ax.plot(medians, covered, "D", ms=6, color=REGION_STYLES[1].colour, mec="black", mew=0.6, ls="none",
                label="search regions (median area, coverage)")
        for i, (a, c, lv) in enumerate(zip(medians, covered, as_numpy(coverage["nominal"], np.float64))):
            ax.annotate(pct(lv), (a, c), xytext=(6, -10) if i % 2 == 0 else (-6, 4), fontsize=7,
                        textcoords="offset points", ha="left" if i % 2 == 0 else "right")  # neighbours sit close
    ax.set_xscale("log")
    ax.set_ylim(0, 100)
    ax.set_xlabel("area searched (km², log scale)")
    ax.set_ylabel("photos with the truth inside (%)")
    ax.grid(True, which="major", color="#dddddd", linewidth=0.6)
    ax.legend(fontsize=7, loc="upper left")
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def plot_images(images: Sequence[Any], titles: Sequence[str] | None = None, *, ncols: int = 4,
                size: float = 2.4):
    """A row (or grid) of PIL images / arrays with titles; returns the axes array."""
    import matplotlib.pyplot as plt

    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), dpi=90, squeeze=False,
                             layout="constrained")
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i < n:
            ax.imshow(np.asarray(images[i]))
            if titles is not None:
                ax.set_title(titles[i], fontsize=8)
    return axes
