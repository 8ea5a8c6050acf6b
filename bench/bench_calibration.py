"""Calibrated search regions on the real GeoCLIP heads and the full gallery (`python -m bench.bench_calibration`).

Stand-in photos (no image encoder needed): `n_holdout` points are held out of the 100K MP-16 gallery and
the other points are the gallery. A photo taken at x gets the image embedding

    normalize(g(x) + σ · z / √512),   z ~ N(0, I_512),

where g(x) is the unit location embedding of the real GeoCLIP location encoder, so σ is the ratio of the
noise's norm to the signal's (σ = 0: a perfect image encoder; σ = 1: noise as large as the signal).
probs = softmax(exp(logit_scale) · emb @ gallery_emb.T), with the real logit scale. All σ share the same
z (common random numbers). Half of the held-out photos calibrate (split conformal on `truth_mass`), the
other half test: coverage = share of test photos whose truth lies in the region (truth_mass ≤ mass).
Runs in a few minutes on 2 threads (`--threads`).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from geocore.metrics import accuracy_within
from geocore.geo.distance import haversine_km
from geocore.geo.gallery import default_gallery
from geocore.uncertainty import fit_calibration, gallery_cells
from geocore.uncertainty.regions import areas_at_masses, truth_mass

LEVELS = (0.5, 0.8, 0.9, 0.95)
NOISES = (0.0, 3.0, 5.0, 8.0)
CHUNK = 500


def _heads():
    from geocore.models.location_encoder import LocationEncoder
    from geocore.weights.paths import geoclip_package_dir

    folder = geoclip_package_dir() / "model" / "weights"
    enc = LocationEncoder.from_geoclip_file(folder / "location_encoder_weights.pth").eval()
    scale = torch.load(folder / "logit_scale_weights.pth", weights_only=True).exp().item()
    return enc, scale


def _chunks(n: int):
    for s in range(0, n, CHUNK):
        yield slice(s, min(n, s + CHUNK))


def _probs(a: torch.Tensor, z: torch.Tensor, gz: torch.Tensor, sigma: float, scale: float) -> torch.Tensor:
    """Softmax over the gallery for noise σ, from a = g·G (b, M), z = z'·G (b, M), gz = g·z' (b,)."""
    norm = torch.sqrt(1.0 + 2.0 * sigma * gz + sigma**2)  # ‖g + σ z'‖ for unit g and z'

    return (scale * (a + sigma * z) / norm[:, None]).softmax(dim=-1)


def run(n_holdout: int = 20_000, noises=NOISES, levels=LEVELS, seed: int = 0, n_area: int = 2_000) -> dict:
    """Calibrate on half of the held-out photos, test on the other half, for every noise σ.

    Coverage uses every test photo; region areas (one sort of the gallery per photo) the first `n_area`.
    """
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    full = default_gallery()
    perm = torch.randperm(full.shape[0], generator=gen)
    held, gallery = full[perm[:n_holdout]], full[perm[n_holdout:]]
    enc, scale = _heads()
    emb_all = enc.embed(full[perm])  # (100K, 512) unit
    q_emb, g_emb = emb_all[:n_holdout], emb_all[n_holdout:]
    t_embed = time.perf_counter() - t0
    cells = gallery_cells(gallery)
    t_cells = time.perf_counter() - t0 - t_embed
    noise = torch.randn(n_holdout, 512, generator=gen) / 512**0.5
    noise = noise / noise.norm(dim=1, keepdim=True)  # ‖z'‖ = 1 exactly: σ is exactly the noise/signal ratio
    half = n_holdout // 2
    cal, test = slice(0, half), slice(half, n_holdout)
    gallery_np = gallery.double().numpy()

    def scores(rows: slice, calibrations=None):
        """truth_mass and top-1 error for rows, and (test) region areas at raw and calibrated masses."""
        out = {s: {"mass": [], "err": [], "area": []} for s in noises}
        for sl in _chunks(rows.stop - rows.start):
            idx = slice(rows.start + sl.start, rows.start + sl.stop)
            a, z = q_emb[idx] @ g_emb.T, noise[idx] @ g_emb.T
            gz = (q_emb[idx] * noise[idx]).sum(-1)
            truth = held[idx].double().numpy()
            for s in noises:
                p = _probs(a, z, gz, s, scale)
                out[s]["mass"].append(truth_mass(p, cells, truth))
                out[s]["err"].append(haversine_km(gallery_np[p.argmax(-1).numpy()], truth))
                if calibrations is not None and idx.start < rows.start + n_area:
                    keep = min(idx.stop, rows.start + n_area) - idx.start
                    q = np.r_[levels, [calibrations[s].mass_for(lv) for lv in levels]]
                    out[s]["area"].append(areas_at_masses(p[:keep], cells, q))
        return {s: {k: np.concatenate(v) if v else None for k, v in d.items()} for s, d in out.items()}

    with torch.no_grad():
        fit = scores(cal)
        calibrations = {s: fit_calibration(fit[s]["mass"], levels, model="geoclip", fingerprint=cells) for s in noises}
        ev = scores(test, calibrations)
    return {"calibrations": calibrations, "test": ev, "cells": cells, "n_cal": half, "n_test": n_holdout - half,
            "n_area": min(n_area, n_holdout - half),
            "levels": levels, "t_embed": t_embed, "t_cells": t_cells, "t_total": time.perf_counter() - t0}


def table(result: dict) -> list[str]:
    """Markdown: one table per noise σ."""
    levels, lines = result["levels"], []
    cells = result["cells"]
    lines += [f"Gallery: {len(cells):,} points (Voronoi cells clipped at {cells.max_radius_km:.0f} km); "
              f"{result['n_cal']:,} calibration and {result['n_test']:,} test photos per σ (median areas over "
              f"{result['n_area']:,} of them).", ""]
    for s, ev in result["test"].items():
        cal = result["calibrations"][s]
        acc = accuracy_within(ev["err"], (25, 750))
        lines += [f"**σ = {s:g}** — top-1 accuracy: {acc[25]:.1%} within 25 km, {acc[750]:.1%} within 750 km; "
                  f"median truth mass {np.median(ev['mass']):.3f}", "",
                  "| level | coverage raw | coverage calibrated | calibrated mass | median area raw (km²) "
                  "| median area calibrated (km²) |",
                  "|---|---|---|---|---|---|"]
        area = ev["area"]  # (N, 2L): raw masses, then calibrated
        for j, lv in enumerate(levels):
            q = cal.mass_for(lv)
            lines.append(f"| {lv:.0%} | {np.mean(ev['mass'] <= lv):.1%} | {np.mean(ev['mass'] <= q):.1%} | {q:.4f} "
                         f"| {np.median(area[:, j]):,.0f} | {np.median(area[:, len(levels) + j]):,.0f} |")
        lines.append("")
    lines.append(f"Time: {result['t_total']:.0f} s on {torch.get_num_threads()} thread(s) (location embeddings "
                 f"{result['t_embed']:.0f} s, Voronoi cells {result['t_cells']:.1f} s).")
    return lines


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--holdout", type=int, default=20_000)
    parser.add_argument("--area-photos", type=int, default=2_000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    lines = table(run(args.holdout, n_area=args.area_photos))
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    main()
