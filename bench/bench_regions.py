"""Search-region geometry with the per-site polygon cache (`python -m bench.bench_regions`), in-process.

For the 1,000 km grid gallery (the app's test model) and GeoCLIP's 100K MP-16 gallery: the 50 % and 90 %
regions of several random-ish probability vectors (softmax of a few bumps of random width plus noise, at
temperatures from sharp to nearly flat). Per region, interleaved in one run: the computation without the
cache (`CandidateCells.polygons_uncached`: rings, lon/lat pieces, union), `SearchRegion.geometry` with an
empty cache (cold), and again with the cache filled (warm, median of 2); and `SearchRegion.n_areas` against
`count_areas` as it was before. Cached and uncached geometries are checked to be identical. Last, the memory
the cache holds when every site of the 100K gallery is in it. About 1–2 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import gc
import statistics
import time

import numpy as np
import shapely
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from geocore.geo.candidates import CandidateCells, gallery_cells
from geocore.geo.gallery import default_gallery, grid_gallery
from geocore.geo.polygons import GAP_DEG, count_areas
from geocore.geo.sphere import to_xyz
from geocore.uncertainty import search_regions
from geocore.uncertainty.regions import SearchRegion

LEVELS = (0.5, 0.9)
REPEATS = 3
# per gallery, from sharp to nearly flat: 90 % regions of ~15 to ~400 grid cells, ~1,500 to ~85,000 MP-16 cells
TEMPERATURES = {"grid": (10.0, 20.0, 40.0, 60.0, 100.0, 200.0), "mp16": (1.0, 2.0, 4.0, 8.0, 30.0, 100.0)}


def probability_vectors(latlon: np.ndarray, temperatures, seed: int = 0) -> np.ndarray:
    """(len(temperatures), M) distributions: softmax(score / T), score = the highest of 3 bumps around random
    places (concentration 20–400) plus N(0, 1) noise."""
    rng = np.random.default_rng(seed)
    xyz = to_xyz(latlon)
    rows = []
    for t in temperatures:
        centres = rng.normal(size=(3, 3))
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        kappa = rng.uniform(20.0, 400.0, 3)
        score = (xyz @ centres.T * kappa).max(axis=1) + rng.normal(size=xyz.shape[0])
        z = score / t
        p = np.exp(z - z.max())
        rows.append(p / p.sum())
    return np.stack(rows)


def count_areas_before(geometry, gap_deg: float = GAP_DEG) -> int:
    """`polygons.count_areas` as it was: every part queried against all parts with STRtree dwithin."""
    parts = np.asarray([p for p in shapely.get_parts(geometry) if not p.is_empty], dtype=object)
    n = parts.size
    if n <= 1:
        return n
    tree = shapely.STRtree(parts)
    links = [tree.query(parts, predicate="dwithin", distance=gap_deg)]
    bounds = shapely.bounds(parts)
    west = np.flatnonzero(bounds[:, 0] <= -180.0 + gap_deg)
    a, b = tree.query(shapely.transform(parts[west], lambda xy: xy + [360.0, 0.0]), predicate="dwithin",
                      distance=gap_deg)
    links.append(np.array([west[a], b]))
    for touches in (bounds[:, 3] >= 90.0 - gap_deg, bounds[:, 1] <= -90.0 + gap_deg):
        at_pole = np.flatnonzero(touches)
        links.append(np.array([at_pole, np.full(at_pole.size, at_pole[0] if at_pole.size else 0)]))
    rows, cols = np.concatenate(links, axis=1).astype(np.int64)
    return connected_components(coo_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n)), directed=False)[0]


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def time_region(region: SearchRegion, repeats: int = REPEATS) -> dict:
    """Best of `repeats` seconds for one region (the machine is shared): uncached, cold and warm geometry
    (interleaved), n_areas now and before; whether the cached geometry is identical to the uncached one and
    n_areas the same as before."""
    cells = region.cells

    def uncached_call():
        return _timed(lambda: cells.polygons_uncached(region.indices))

    def cold_call():
        cells.clear_cache()
        return _timed(lambda: dataclasses.replace(region).geometry)  # a new region: geometry not yet computed

    uncached, cold, warm, count, before = [], [], [], [], []
    for k in range(repeats):
        if k % 2 == 0:  # alternate the order, so that drift in the machine's load hits both
            (fresh, t_uncached), (cold_geom, t_cold) = uncached_call(), cold_call()
        else:
            (cold_geom, t_cold), (fresh, t_uncached) = cold_call(), uncached_call()
        uncached.append(t_uncached)
        cold.append(t_cold)
        warm.append(_timed(lambda: dataclasses.replace(region).geometry)[1])
        n_now, t_now = _timed(lambda: count_areas(cold_geom))
        n_before, t_before = _timed(lambda: count_areas_before(cold_geom))
        count.append(t_now)
        before.append(t_before)
    return {"cells": region.indices.size, "uncached": min(uncached), "cold": min(cold), "warm": min(warm),
            "count": min(count), "count_before": min(before),
            "identical": bool(shapely.equals_exact(fresh, cold_geom, 0)), "same_count": n_now == n_before}


def _row(name: str, label: str, res: list[dict]) -> str:
    """A markdown row: medians over the regions `res`, ratios of the medians."""
    keys = ("uncached", "cold", "warm", "count", "count_before")
    med = {k: statistics.median(x[k] for x in res) * 1e3 for k in keys}
    size = [x["cells"] for x in res]
    cells = f"{size[0]:,}" if len(res) == 1 else f"{statistics.median(size):,.0f} ({min(size):,}–{max(size):,})"
    same = f"{sum(x['identical'] for x in res)}/{len(res)}, {sum(x['same_count'] for x in res)}/{len(res)}"
    uncached, before = med["uncached"], med["count_before"]
    return (f"| {name} | {label} | {cells} | {uncached:,.1f} | {med['cold']:,.1f} ({uncached / med['cold']:.2f}×) | "
            f"{med['warm']:,.1f} ({uncached / med['warm']:.2f}×) | {before:,.1f} → {med['count']:,.1f} "
            f"({before / med['count']:.2f}×) | {same} |")


def run_gallery(name: str, cells: CandidateCells, latlon: np.ndarray, temperatures) -> list[str]:
    """Markdown rows for one gallery: per level the median region, then the largest region."""
    regions = search_regions(probability_vectors(latlon, temperatures), cells, levels=LEVELS)
    res = [[time_region(r) for r in per_image] for per_image in regions]  # (vectors, levels)
    rows = [_row(name, f"{level:.0%}, median of {len(res)}", [r[j] for r in res]) for j, level in enumerate(LEVELS)]
    largest = max((x for r in res for x in r), key=lambda x: x["cells"])
    return rows + [_row(name, "largest region", [largest])]


def _rss_mb() -> float:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back, so RSS shows what is held
    except OSError:
        pass
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def cache_memory(cells: CandidateCells, batch: int = 10_000) -> str:
    """One line: what the cache holds with every site in it (RSS growth, filled in batches of `batch`)."""
    cells.clear_cache()
    before = _rss_mb()
    t0 = time.perf_counter()
    for start in range(0, len(cells), batch):
        cells.polygons(np.arange(start, min(start + batch, len(cells))))
    seconds = time.perf_counter() - t0
    grown = _rss_mb() - before
    pieces = cells.pieces(np.arange(len(cells)))
    coords = int(shapely.get_num_coordinates(np.asarray(pieces, dtype=object)).sum())
    return (f"Cache with all {cells.cached_sites:,} sites of the 100K gallery: {len(pieces):,} pieces, "
            f"{coords:,} vertices, RSS +{grown:.0f} MB; filling it in batches of {batch:,} took {seconds:.1f} s.")


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    t0 = time.perf_counter()
    lines = ["| gallery | regions | cells: median (range) | uncached ms | cold ms (ratio) | warm ms (ratio) | "
             "n_areas ms before → now (ratio) | identical geometry, same n_areas |",
             "|---|---|---|---|---|---|---|---|"]
    grid = grid_gallery(1000.0).numpy()
    lines += run_gallery("1,000 km grid", gallery_cells(grid), grid, TEMPERATURES["grid"])
    full = default_gallery().numpy()
    cells = gallery_cells(full)
    lines += run_gallery("100K MP-16", cells, full, TEMPERATURES["mp16"])
    lines += ["", f"Each region: best of {REPEATS} (shared machine), interleaved in one run; a row gives the median "
              "over its regions. Ratios: uncached ÷ cached, before ÷ now.", cache_memory(cells),
              f"Total {time.perf_counter() - t0:.0f} s."]
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    main()
