"""Reference photos (`geocore.refs`): does folding in the nearest geotagged references help, and is search fast?
`python -m bench.bench_refs [--quick]` prints the tables and writes the "Reference photos" section of RESULTS.md.

Stand-ins on the real GeoCLIP heads (as bench/bench_calibration.py and bench/hint_weight.py): held-out points of
the 100K MP-16 gallery; a photo taken at x has the image embedding normalize(g(x) + σ·z), g the real location
encoder, z a random unit vector (σ: noise/signal). The rest of the gallery is what GeoCLIP scores, with its logit
scale. References: held-out points in the Americas (longitude < −30), embedded the same way with their own noise.
Queries near references: at δ km from a reference in a random direction, their own noise σ (δ = 0: another photo
of the same spot; "copy": the reference's own embedding plus noise 0.1, a re-encoded copy). Queries with no
reference nearby: held-out points outside the Americas whose nearest reference is over 500 km away. Model alone =
GeoCLIP's top-1 over the gallery; with references = `refs.reweight` + `refs.fine_top_k` (reference positions
scored exactly by the location encoder), as `locate(..., refs=)` runs them.

Calibrated coverage with references (`coverage`, `--coverage-only`): the fused gallery distribution
(`refs.reweight` on GeoCLIP's, what `locate(..., refs=)` gives search regions and calibration) of a mix of queries
near references (the NEAR settings, equal shares) and with no reference nearby; each setting is split at random
into calibration and test halves; split-conformal `truth_mass` calibration, Mondrian (entropy bins, the default)
and marginal, fitted on the calibration half and measured on the test half, overall and per group.
"""

from __future__ import annotations

import argparse
import io
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from bench.bench_calibration import _heads
from bench.timing import write_section
from geocore.geo.coords import destination_point
from geocore.geo.distance import haversine_km, nearest_km
from geocore.geo.gallery import default_gallery
from geocore.models.location_encoder import load_location_encoder
from geocore.models.prediction import Prediction
from geocore.refs import FusionParams, fine_top_k, log_evidence, nearest_references, reweight, save_reference_set
from geocore.refs.store import ReferenceSet, chance_similarity
from geocore.uncertainty.conditional import DEFAULT_BIN_SCORES

OUT = Path(__file__).with_name("RESULTS.md")
THRESHOLDS = (1, 25, 200, 750, 2500)
# (label, δ km or "copy", σ of the query photo)
NEAR = (("copy", "copy", 0.1), ("same spot", 0.0, 1.0), ("1 km", 1.0, 1.0), ("5 km", 5.0, 1.0),
        ("25 km", 25.0, 1.0), ("same spot, σ 2", 0.0, 2.0), ("5 km, σ 2", 5.0, 2.0))
REF_SIGMA = 1.0
GRID = {"k": (5, 10, 20), "weight": (0.5, 1.0, 2.0), "t0": (0.0, 0.2, 0.4), "tau": (0.05, 0.1, 0.2),
        "scale_km": (5.0, 25.0, 100.0)}


def _noisy(clean: torch.Tensor, sigma: float, g: torch.Generator) -> torch.Tensor:
    return F.normalize(clean + sigma * F.normalize(torch.randn(clean.shape, generator=g), dim=1), dim=1)


class World:
    """The gallery GeoCLIP scores, the reference set and the heads (built once)."""

    def __init__(self, n_refs: int, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.g = torch.Generator().manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.enc, self.scale = _heads()  # the released location encoder and logit scale, as the other benches
        full = default_gallery()
        perm = torch.randperm(len(full), generator=self.g)
        held, self.gallery = full[perm[:25_000]], full[perm[25_000:]]
        self.g_emb = self.enc.embed(self.gallery)
        americas = held[:, 1] < -30
        ref_pts = held[americas][:n_refs]
        self.others = held[~americas].double().numpy()
        emb = _noisy(self.enc.embed(ref_pts), REF_SIGMA, self.g).to(torch.float16).numpy()
        table = pd.DataFrame({"IMG_ID": [f"r{i}" for i in range(len(ref_pts))], "LAT": ref_pts[:, 0].double().numpy(),
                              "LON": ref_pts[:, 1].double().numpy(), "SHA256": [f"{i:064x}" for i in range(len(ref_pts))]})
        chance, _ = chance_similarity(table[["LAT", "LON"]].to_numpy(), emb)
        manifest = {"model": "stand-in", "fingerprint": "-", "embedding": "stand-in", "dim": 512,
                    "count": len(table), "complete": True, "chance_similarity": chance}
        self.refs = ReferenceSet(manifest, table, emb)

    def queries(self, n: int, near: tuple | None) -> tuple[np.ndarray, torch.Tensor]:
        """(truth (n, 2), query embeddings (n, 512)) near references (`near` = (δ, σ)), or with none nearby."""
        if near is None:
            d, _ = nearest_km(self.others, self.refs.latlon)
            pts = self.others[d > 500][:n]
            return pts, _noisy(self.enc.embed(torch.as_tensor(pts, dtype=torch.float32)), 1.0, self.g)
        delta, sigma = near
        pick = self.rng.choice(len(self.refs), n, replace=False)
        if delta == "copy":
            emb = torch.from_numpy(self.refs.embeddings[pick].astype(np.float32))
            return self.refs.latlon[pick], _noisy(emb, sigma, self.g)
        pts = destination_point(self.refs.latlon[pick], self.rng.uniform(0, 360, n), np.full(n, delta))
        return pts, _noisy(self.enc.embed(torch.as_tensor(pts, dtype=torch.float32)), sigma, self.g)

    def model_alone(self, emb: torch.Tensor) -> Prediction:
        return Prediction.from_scores(self.scale * emb @ self.g_emb.T, self.gallery, 1, full=True)

    def point_logits(self, emb: torch.Tensor):
        def logits(points: torch.Tensor) -> torch.Tensor:
            loc = self.enc.embed(points.reshape(-1, 2).float()).reshape(*points.shape[:2], -1)
            return self.scale * torch.einsum("bd,bpd->bp", emb, loc)
        return logits

    def fused(self, emb: torch.Tensor, coarse: Prediction, params: FusionParams) -> np.ndarray:
        sims, idx = nearest_references(self.refs, emb, params.k)
        latlon = torch.from_numpy(self.refs.latlon[idx.clamp_min(0).numpy()])
        log_a = log_evidence(sims, float(self.refs.manifest["chance_similarity"]), params)
        fused = reweight(coarse, latlon, log_a, params, 1)
        fine = fine_top_k(fused, latlon, log_a, params, 1, point_logits=self.point_logits(emb))
        return fine.coords[:, 0].double().numpy()


def _acc(pred: np.ndarray, truth: np.ndarray) -> dict:
    err = haversine_km(pred, truth)
    return {**{f"acc_{t}km": float((err <= t).mean()) for t in THRESHOLDS}, "median_km": float(np.median(err))}


def accuracy(world: World, params: FusionParams, n: int) -> list[dict]:
    """Per setting: accuracy of GeoCLIP alone and with references."""
    rows = []
    for label, delta, sigma in (*NEAR, ("no reference within 500 km", None, 1.0)):
        truth, emb = world.queries(n, None if delta is None else (delta, sigma))
        coarse = world.model_alone(emb)
        alone = _acc(coarse.coords[:, 0].double().numpy(), truth)
        withr = _acc(world.fused(emb, coarse, params), truth)
        rows.append({"setting": label, "n": len(truth), "alone": alone, "refs": withr})
    return rows


def choose_defaults(world: World, n: int) -> tuple[FusionParams, list[dict]]:
    """One parameter at a time around the defaults: the mean over the near settings of accuracy at 1 and 25 km,
    subject to losing at most 1 point at any threshold on queries with no reference nearby."""
    cache = {}
    for label, delta, sigma in (*NEAR, ("far", None, 1.0)):
        truth, emb = world.queries(n, None if delta is None else (delta, sigma))
        cache[label] = (truth, emb, world.model_alone(emb))
    base = {k: _acc(c.coords[:, 0].double().numpy(), t) for k, (t, _, c) in cache.items()}
    best, rows = FusionParams(), []
    for name, values in GRID.items():
        scored = []
        for v in values:
            p = FusionParams(**{**best.__dict__, name: v})
            res = {k: _acc(world.fused(e, c, p), t) for k, (t, e, c) in cache.items()}
            near = np.mean([(r["acc_1km"] + r["acc_25km"]) / 2 for k, r in res.items() if k != "far"])
            loss = max(base["far"][f"acc_{t}km"] - res["far"][f"acc_{t}km"] for t in THRESHOLDS)
            rows.append({"parameter": name, "value": v, "near": near, "far_loss": loss})
            scored.append((loss <= 0.01, near, v))
        ok = [s for s in scored if s[0]] or scored
        best = FusionParams(**{**best.__dict__, name: max(ok, key=lambda s: s[1])[2]})
    return best, rows


COVERAGE_LEVELS = (0.5, 0.8, 0.9, 0.95)
COVERAGE_CHUNK = 128  # queries per block: reweight's (B, K + 1, M) float64 kernel terms are ~0.5 GB at M = 75K


def _fused_scores(world: World, emb: torch.Tensor, truth: np.ndarray, params: FusionParams, cells,
                  calibrations: dict | None = None) -> dict:
    """Per query, in blocks: truth_mass and entropy of the fused gallery distribution (`refs.reweight` on the
    model's, as `locate(..., refs=)` computes `probs_full`); with `calibrations` (name → Calibration) also the
    90 % region's area at the raw mass and at each calibration's mass for that query."""
    from geocore.refs import neighbours
    from geocore.uncertainty.regions import areas_at_masses, bin_scores, truth_mass

    out = {"mass": [], "entropy": [], "bin_scores": [], "area90": []}
    for s in range(0, len(truth), COVERAGE_CHUNK):
        e, t = emb[s:s + COVERAGE_CHUNK], truth[s:s + COVERAGE_CHUNK]
        with torch.no_grad():
            found = neighbours(world.refs, e, params)
            fused = reweight(world.model_alone(e), found.latlon, found.log_a, params, 1)
        p = fused.probs_full.numpy()
        scores = bin_scores(p, cells, DEFAULT_BIN_SCORES)  # (b, 2): entropy, raw log10 90 % area
        out["mass"].append(truth_mass(p, cells, t))
        out["entropy"].append(scores[:, 0])
        out["bin_scores"].append(scores)
        if calibrations is not None:
            q = [np.full(len(t), 0.9)]
            q += [np.broadcast_to(c.masses_for([0.9], _bin_input(c, scores)), (len(t), 1))[:, 0]
                  for c in calibrations.values()]
            out["area90"].append(areas_at_masses(p, cells, np.stack(q, 1)))
    return {k: np.concatenate(v) if v else None for k, v in out.items()}


def _bin_input(cal, scores: np.ndarray):
    """What a calibration's bins read: nothing (marginal), the entropy column, or both columns (nested)."""
    if cal.bins is None:
        return None
    return scores if cal.bins.inner_score is not None else scores[:, 0]


def coverage(world: World, params: FusionParams | None = None, n_near: int = 7_000, n_far: int = 5_000,
             seed: int = 0) -> dict:
    """Calibrated coverage of search regions with references, on queries near references (`n_near`, equal shares
    of the NEAR settings) and with no reference within 500 km (`n_far`): each setting split at random into
    calibration and test halves; Mondrian (entropy bins) and marginal calibration fitted on the calibration half
    of the mix, coverage and median 90 % area measured on the test half, overall and per group."""
    from geocore.uncertainty import gallery_cells
    from geocore.uncertainty.calibration import fit_calibration

    t0 = time.perf_counter()
    params = params or FusionParams()
    cells = gallery_cells(world.gallery)
    rng = np.random.default_rng(seed)
    per = n_near // len(NEAR)
    settings = [(label, (delta, sigma), per) for label, delta, sigma in NEAR]
    settings.append(("no reference within 500 km", None, n_far))
    halves = {"cal": [], "test": []}  # (setting label, truth, emb)
    for label, near, n in settings:
        truth, emb = world.queries(n, near)
        order = rng.permutation(len(truth))
        h = len(truth) // 2
        for name, idx in (("cal", order[:h]), ("test", order[h:])):
            halves[name].append((label, truth[idx], emb[torch.as_tensor(idx)]))

    def stack(half):
        return (np.concatenate([[lab] * len(t) for lab, t, _ in half]), np.concatenate([t for _, t, _ in half]),
                torch.cat([e for _, _, e in half]))

    lab_c, truth_c, emb_c = stack(halves["cal"])
    fit = _fused_scores(world, emb_c, truth_c, params, cells)
    opts = dict(model="geoclip-stand-in", fingerprint=cells)
    cals = {"Mondrian (entropy › raw area, the default)": fit_calibration(fit["mass"], COVERAGE_LEVELS,
                                                                          bin_score=fit["bin_scores"], **opts),
            "Mondrian (entropy bins)": fit_calibration(fit["mass"], COVERAGE_LEVELS, bin_score=fit["entropy"], **opts),
            "marginal": fit_calibration(fit["mass"], COVERAGE_LEVELS, **opts)}
    t_cal = time.perf_counter() - t0
    lab_t, truth_t, emb_t = stack(halves["test"])
    ev = _fused_scores(world, emb_t, truth_t, params, cells, cals)
    masses = {"raw (uncalibrated)": np.broadcast_to(np.asarray(COVERAGE_LEVELS), (len(lab_t), len(COVERAGE_LEVELS)))}
    for name, c in cals.items():
        m = c.masses_for(COVERAGE_LEVELS, _bin_input(c, ev["bin_scores"]))
        masses[name] = np.broadcast_to(m, (len(lab_t), len(COVERAGE_LEVELS)))
    near = lab_t != "no reference within 500 km"
    groups = {"all": np.ones(len(lab_t), bool), "near a reference": near, "no reference within 500 km": ~near}
    rows = []
    for j, (method, m) in enumerate(masses.items()):  # area90 columns: raw, then the calibrations in order
        covered = ev["mass"][:, None] <= m
        for g, sel in groups.items():
            rows.append({"method": method, "group": g, "n": int(sel.sum()), "coverage": covered[sel].mean(0),
                         "zero": float((ev["mass"][sel] == 0).mean()),
                         "area90": float(np.median(ev["area90"][sel, j]))})
    per_setting = []
    for label, _, _ in settings:
        sel = lab_t == label
        per_setting.append({"setting": label, "n": int(sel.sum()),
                            **{method: float((ev["mass"][sel] <= m[sel, COVERAGE_LEVELS.index(0.9)]).mean())
                               for method, m in masses.items()}})
    mond = cals["Mondrian (entropy › raw area, the default)"]
    tied = np.flatnonzero(np.asarray(mond.bins.masses)[:, 0] == 0)  # bins whose 50 % mass is 0: all ties
    in_tied = np.isin(mond.bins.bin_of(ev["bin_scores"]), tied)
    ties = {"bins": len(tied), "share": float(in_tied.mean()),
            "cov50": float((ev["mass"][in_tied] == 0).mean()) if in_tied.any() else float("nan")}
    return {"rows": rows, "per_setting": per_setting, "n_cal": len(lab_c), "n_test": len(lab_t), "ties": ties,
            "n_cal_near": int((lab_c != "no reference within 500 km").sum()), "params": params,
            "marginal_masses": cals["marginal"].masses, "n_bins": len(mond.bins.masses), "bins": mond.bins.describe(),
            "truth_outside": float(np.mean(ev["mass"] >= 1.0)), "gallery": len(cells), "refs": len(world.refs),
            "t_cal": t_cal, "t_total": time.perf_counter() - t0}


def coverage_lines(res: dict) -> list[str]:
    """The "Calibrated coverage with references" subsection (markdown lines)."""
    p = res["params"]
    lv = " / ".join(f"{100 * v:.0f}" for v in COVERAGE_LEVELS)
    lines = ["### Calibrated coverage with references", "",
             f"`python -m bench.bench_refs --coverage-only`: the fused gallery distribution (`refs.reweight`, what "
             f"`locate(..., refs=)` gives search regions; default `FusionParams()`: K = {p.k}, W = {p.weight:g}, "
             f"t₀ = {p.t0:g}, τ = {p.tau:g}, ℓ = {p.scale_km:g} km), {res['refs']:,} references, "
             f"{res['gallery']:,} gallery points. Queries: the {len(NEAR)} near settings above in equal shares and "
             "queries with no reference within 500 km; each setting split at random into halves: "
             f"{res['n_cal']:,} calibration queries ({res['n_cal_near']:,} near) and {res['n_test']:,} test queries. "
             f"Split-conformal calibration on `truth_mass` at {lv} %, Mondrian on the fused distribution ({res['bins']}, "
             "the default; and on its entropy alone, the default before) and marginal, all fitted on the whole "
             "calibration mix. "
             f"Test coverage (%) at {lv} % and the median area of the 90 % region:", "",
             "| calibration | queries | n | coverage " + lv + " % | max deviation (points) | median 90 % area (km²) "
             "| truth in the densest cell |", "|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        dev = 100 * (r["coverage"] - np.asarray(COVERAGE_LEVELS))
        worst = dev[np.argmax(np.abs(dev))]
        lines.append(f"| {r['method']} | {r['group']} | {r['n']:,} | "
                     + " / ".join(f"{100 * c:.1f}" for c in r["coverage"])
                     + f" | {worst:+.1f} | {r['area90']:,.0f} | {100 * r['zero']:.1f} % |")
    methods = [k for k in res["per_setting"][0] if k not in ("setting", "n")]
    half_width = 100 * 1.96 * (0.09 / res["per_setting"][0]["n"]) ** 0.5
    lines += ["", f"90 % coverage per setting (test half; ±{half_width:.1f} points at 95 % for the near settings' n):", "",
              "| queries | n | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    for r in res["per_setting"]:
        lines.append(f"| {r['setting']} | {r['n']:,} | " + " | ".join(f"{100 * r[m]:.1f}" for m in methods) + " |")
    ok: dict[str, float] = {}  # per method, the worst deviation over its rows (all queries and both groups)
    for r in res["rows"]:
        if r["method"] != "raw (uncalibrated)":
            dev = float(np.max(np.abs(100 * (r["coverage"] - np.asarray(COVERAGE_LEVELS)))))
            ok[r["method"]] = max(ok.get(r["method"], 0.0), dev)
    lines += ["", "Within 2 points of nominal at every level, overall and in both groups: "
              + "; ".join(f"{m}: {'yes' if d <= 2 else 'no'} (worst {d:.2f} points)" for m, d in ok.items())
              + f". Marginal calibrated masses: {', '.join(f'{m:.4f}' for m in res['marginal_masses'])}; "
              f"{100 * res['truth_outside']:.1f} % of test truths lie in no gallery cell (truth_mass 1). "
              "A truth in the densest cell (truth_mass 0) is covered at any mass: where that share exceeds a level, "
              "coverage there cannot come down to nominal (ties), whatever the calibration: "
              f"{res['ties']['bins']} of the {res['n_bins']} Mondrian bins have 50 % mass 0 "
              f"({100 * res['ties']['share']:.1f} % of test queries; their 50 % coverage "
              f"{100 * res['ties']['cov50']:.1f} %). "
              f"Time: {res['t_total']:.0f} s on {torch.get_num_threads()} thread(s) (calibration half "
              f"{res['t_cal']:.0f} s, after the world was built).", ""]
    return lines


def write_subsection(lines: list[str], title: str = "### Calibrated coverage with references") -> None:
    """Put `lines` (a ### subsection) into the "## Reference photos" section of RESULTS.md, replacing the
    subsection of the same title if there is one, else at the end of the section; the rest is kept as is."""
    text = OUT.read_text(encoding="utf-8") if OUT.exists() else "# Benchmark results\n"
    block = "\n".join(lines).rstrip("\n") + "\n"
    sec = re.compile(r"^## Reference photos\n.*?(?=^## |\Z)", re.S | re.M).search(text)
    if sec is None:
        text = text.rstrip("\n") + "\n\n## Reference photos\n\n" + block
    else:
        body = sec.group(0)
        sub = re.compile(r"^" + re.escape(title) + r"\n.*?(?=^### |^## |\Z)", re.S | re.M)
        if sub.search(body):
            body = sub.sub(lambda _: block + "\n", body)
        else:
            body = body.rstrip("\n") + "\n\n" + block
        body = body.rstrip("\n") + "\n" + ("\n" if sec.end() < len(text) else "")
        text = text[:sec.start()] + body + text[sec.end():]
    OUT.write_text(text, encoding="utf-8")


def search_speed(sizes=(100_000, 1_000_000), n_queries: int = 200, seed: int = 0) -> list[dict]:
    """Exact scan and FAISS index at each set size: time per photo (one query at a time) and recall@10."""
    from bench.timing import measure

    g = torch.Generator().manual_seed(seed)
    enc = load_location_encoder()
    gallery = default_gallery()
    rows = []
    for size in sizes:
        rng = np.random.default_rng(seed)
        base = gallery[torch.as_tensor(rng.integers(0, len(gallery), size))].double().numpy()
        pts = destination_point(base, rng.uniform(0, 360, size), rng.uniform(0, 30, size))  # photos around places
        emb = torch.cat([_noisy(enc.embed(torch.as_tensor(pts[s:s + 262_144], dtype=torch.float32)), REF_SIGMA, g)
                         for s in range(0, size, 262_144)]).to(torch.float16).numpy()
        table = pd.DataFrame({"IMG_ID": np.arange(size).astype(str), "LAT": pts[:, 0], "LON": pts[:, 1],
                              "SHA256": np.arange(size).astype(str)})
        manifest = {"model": "stand-in", "fingerprint": "-", "embedding": "stand-in", "dim": 512, "count": size,
                    "complete": True, "chance_similarity": 0.0}
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            refs = save_reference_set(ReferenceSet(manifest, table, emb), Path(tmp) / "R", index_above=0,
                                      progress=False)
            build_s = time.perf_counter() - t0
            q = _noisy(enc.embed(torch.as_tensor(pts[rng.choice(size, n_queries)], dtype=torch.float32)), 1.0, g)
            _, exact = nearest_references(refs, q, 10, exact=True)
            _, approx = nearest_references(refs, q, 10, exact=False)
            recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact.tolist(), approx.tolist())]))
            one = q[:1]
            t_exact = measure(lambda: nearest_references(refs, one, 10, exact=True), runs=5)
            t_index = measure(lambda: nearest_references(refs, one, 10, exact=False), runs=5)
            t_exact8 = measure(lambda: nearest_references(refs, q[:8], 10, exact=True), runs=3)
        rows.append({"size": size, "recall10": recall, "exact": t_exact, "index": t_index, "exact_b8": t_exact8,
                     "build_s": build_s, "nprobe": refs.index.nprobe, "nlist": refs.index.index.nlist})
    return rows


def embedding_choice(n_photos: int = 60, seed: int = 0) -> dict:
    """geoclip-tiny on real pixels: retrieval of re-encoded copies (JPEG 85, resized to 90 %) among the originals,
    by the CLIP feature before GeoCLIP's MLP and by `image_embeddings` after it: top-1 rate and the margin
    t = (s_true − s_best_other) / (1 − s_chance)."""
    from PIL import Image

    from geocore.models.registry import create_model
    from tests.test_refs import _jpeg, _photo

    torch.manual_seed(seed)
    model = create_model("geoclip-tiny").eval()
    originals = [_photo(1000 + i) for i in range(n_photos)]
    copies = [Image.open(io.BytesIO(_jpeg(im.resize((int(im.width * .9), int(im.height * .9))), 85))).convert("RGB")
              for im in originals]
    out = {}
    with torch.no_grad():
        feats = [model.forward_features(torch.stack([model.preprocess(im) for im in ims])) for ims in (originals,
                                                                                                        copies)]
        for name, f in (("CLIP feature (before the MLP)", lambda x: F.normalize(x, dim=1)),
                        ("image_embeddings (after the MLP)", lambda x: F.normalize(model.mlp(x), dim=1))):
            a, b = f(feats[0]), f(feats[1])
            sims = b @ a.T
            true = sims.diag()
            other = sims.masked_fill(torch.eye(n_photos, dtype=torch.bool), -2).max(1).values
            chance = float((a @ a.T).masked_fill(torch.eye(n_photos, dtype=torch.bool), -2).max(1).values.median())
            out[name] = {"top1": float((true > other).float().mean()),
                         "margin": float(((true - other) / (1 - chance)).median())}
    return out


def section(n: int, quick: bool) -> list[str]:
    world = World(n_refs=10_000 if quick else 20_000)
    t0 = time.perf_counter()
    best, sweep = choose_defaults(world, max(100, n // 2))
    rows = accuracy(world, best, n)
    lines = ["## Reference photos", "",
             f"`python -m bench.bench_refs` (stand-ins on the real GeoCLIP heads, see the script's docstring): "
             f"{len(world.refs):,} references (held-out MP-16 gallery points in the Americas, noise σ = {REF_SIGMA:g}), "
             f"{len(world.gallery):,} gallery points scored; {n} queries per setting. Accuracy (%) within "
             "1 / 25 / 200 / 750 / 2500 km and median km, GeoCLIP alone → with references "
             f"(K = {best.k}, W = {best.weight:g}, t₀ = {best.t0:g}, τ = {best.tau:g}, ℓ = {best.scale_km:g} km):", "",
             "| queries | n | 1 km | 25 km | 200 km | 750 km | 2500 km | median km |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = [f"{100 * r['alone'][f'acc_{t}km']:.1f} → {100 * r['refs'][f'acc_{t}km']:.1f}" for t in THRESHOLDS]
        lines.append(f"| {r['setting']} | {r['n']} | " + " | ".join(cells)
                     + f" | {r['alone']['median_km']:,.1f} → {r['refs']['median_km']:,.1f} |")
    lines += ["", "Choosing the defaults (one parameter at a time, the others at their chosen values; score = mean over "
              "the near settings of accuracy within 1 and 25 km; a value is allowed only if queries with no reference "
              "within 500 km lose at most 1 point at every threshold):", "",
              "| parameter | value | near score | worst loss, no reference nearby |", "|---|---|---|---|"]
    for r in sweep:
        lines.append(f"| {r['parameter']} | {r['value']:g} | {100 * r['near']:.1f} | {100 * r['far_loss']:+.1f} |")
    lines += ["", f"(fusion sweep and table: {time.perf_counter() - t0:,.0f} s)", ""]
    lines += coverage_lines(coverage(world, n_near=1_400 if quick else 7_000, n_far=1_000 if quick else 5_000))
    emb = embedding_choice(30 if quick else 60)
    lines += ["### Which embedding (geoclip-tiny, real pixels: re-encoded copies among the originals)", "",
              "| embedding | copies found top-1 | median margin (t) |", "|---|---|---|"]
    lines += [f"| {k} | {100 * v['top1']:.0f} % | {v['margin']:.3f} |" for k, v in emb.items()]
    speed = search_speed((100_000,) if quick else (100_000, 1_000_000))
    lines += ["", "### Search", "",
              "One photo at a time (median of 5, min–max), float16 embeddings, top-10; FAISS IVF-SQ8 "
              "(`geocore.models.ann_index`), its candidates re-scored exactly; recall@10 against the exact scan over "
              "200 queries.", "",
              "| references | exact scan | FAISS index | exact ÷ index | exact, batch of 8 (per photo) | recall@10 | "
              "nlist / nprobe | index build |", "|---|---|---|---|---|---|---|---|"]
    for r in speed:
        lines.append(f"| {r['size']:,} | {r['exact'].fmt()} | {r['index'].fmt()} | "
                     f"{r['exact'].median_s / r['index'].median_s:.1f}× | {r['exact_b8'].median_s / 8 * 1e3:.1f} ms | "
                     f"{r['recall10']:.3f} | {r['nlist']} / {r['nprobe']} | {r['build_s']:.0f} s |")
    return lines


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("-n", type=int, default=400)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--coverage-only", action="store_true",
                    help="only the calibrated coverage with references; writes its subsection of RESULTS.md")
    ap.add_argument("--near", type=int, default=7_000, help="--coverage-only: queries near references (all settings)")
    ap.add_argument("--far", type=int, default=5_000, help="--coverage-only: queries with no reference nearby")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.coverage_only:
        out = coverage_lines(coverage(World(n_refs=10_000 if args.quick else 20_000), n_near=args.near,
                                      n_far=args.far))
        print("\n".join(out))
        if not args.no_write:
            write_subsection(out)
        raise SystemExit(0)
    out = section(args.n if not args.quick else 100, args.quick)
    print("\n".join(out))
    if not args.no_write:
        write_section(out, "Reference photos")
