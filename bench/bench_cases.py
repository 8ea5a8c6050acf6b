"""Cases on the real GeoCLIP heads: joint answers, conflict flags, claims, video (`python -m bench.bench_cases`).

Stand-in photos as in bench/bench_calibration.py: held-out gallery points are the truths, the rest of the 100K
MP-16 gallery the candidates; a photo of x has the image embedding normalize(m(x) + σ·z), z a unit random
vector, scored with GeoCLIP's real logit scale. Photos of one scene are not independent: the scene looks like
its place and like `confusers` other places (random gallery points), the same for every photo of the case, so
m(x) = normalize(g(x) + Σ_j g(y_j)) (g: the real location encoder); σ differs per photo (uniform in SIGMAS).

- joint: sets of 2, 3 and 5 photos; t = n^-a for a in POWERS (a = 0: plain product; a = 1: geometric mean):
  mean log p(truth's cell), top-1 accuracy at 1/25/200/750/2500 km, 90 % region median area, coverage of the
  joint's 90 % region raw and with a calibration fitted on single photos; against the best single photo (the
  least noisy one) of the set.
- conflict: in half of the sets one photo is of a random other place; the flag's precision and recall.
- set calibration: joint answers (the library's t = 1/√n) of sets of 2, 3 and 5 photos, with and without shared
  look-alikes; coverage at 50/80/90/95 % and median 90 % area under no calibration (raw mass), calibrations fitted
  on single photos (marginal, and Mondrian on the entropy › raw 90 % area as `geocore calibrate --results` fits by
  default), one fitted on held-out sets of the same size and look-alikes (`geocore calibrate --sets`: Mondrian on
  the joint's entropy › raw area) and one fitted on those sets of all three sizes pooled (as a SETS.csv of mixed sizes gives).
- claims: single photos; true claims (the truth) and false ones 10/100/1000 km away: conformal p-values with
  the calibration's raw scores, and decisions from the calibration file's masses alone.
- video: geoclip-tiny on a synthetic clip, frames/s end to end against `locate` on the same frames saved as
  PNG files, and the decoding share; a long 1080p clip sampled to 300 frames: time, seeks, memory.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import torch
import torch.nn.functional as F

from geocore.cases.claims import conformal_p_value, p_value_bounds
from geocore.cases.joint import combine, leave_one_out
from geocore.metrics import THRESHOLDS_KM, accuracy_within
from geocore.geo.coords import destination_point
from geocore.geo.distance import haversine_km
from geocore.geo.gallery import default_gallery
from geocore.uncertainty import fit_calibration, gallery_cells
from geocore.uncertainty.conditional import DEFAULT_BIN_SCORES
from geocore.uncertainty.regions import areas_at_masses, bin_scores, prob_matrix, truth_mass

from bench.bench_calibration import _heads

POWERS = (0.0, 0.25, 0.5, 0.75, 1.0)
SIZES = (2, 3, 5)
SIGMAS = (2.0, 6.0)
CONFUSERS = (0, 2)
ALPHAS = (0.1, 0.05)
CLAIM_KM = (10.0, 100.0, 1000.0)
SET_LEVELS = (0.5, 0.8, 0.9, 0.95)
WITHIN = 0.02  # issue #19: calibrated coverage of joint regions within 2 points of nominal


class StandIns:
    """Truths, candidates, their cells and a function that turns (truth rows, σ, confusers) into log-probs."""

    def __init__(self, n_truths: int, seed: int) -> None:
        self.gen = torch.Generator().manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        full = default_gallery()
        perm = torch.randperm(full.shape[0], generator=self.gen)
        self.truth, self.cand = full[perm[:n_truths]].double().numpy(), full[perm[n_truths:]]
        enc, self.scale = _heads()
        with torch.no_grad():
            emb = enc.embed(full[perm])
        self.t_emb, self.c_emb = emb[:n_truths], emb[n_truths:]
        self.cells = gallery_cells(self.cand)
        self.cand_np = self.cand.double().numpy()
        self.truth_cell = self.cells.locate(self.truth)

    def log_probs(self, rows: np.ndarray, sigma: np.ndarray, confusers: np.ndarray | None) -> torch.Tensor:
        """(len(rows), M) log-probabilities of photos of truths `rows`; `confusers` (len(rows), k) candidate rows."""
        mix = self.t_emb[torch.as_tensor(rows)]
        if confusers is not None and confusers.size:
            mix = mix + self.c_emb[torch.as_tensor(confusers)].sum(1)
        z = F.normalize(torch.randn(mix.shape, generator=self.gen), dim=1)
        img = F.normalize(F.normalize(mix, dim=1) + torch.as_tensor(sigma, dtype=torch.float32)[:, None] * z, dim=1)
        return (self.scale * img @ self.c_emb.T).log_softmax(-1)


def _truth_logp(logp: torch.Tensor, cells: np.ndarray) -> np.ndarray:
    ok = cells >= 0
    out = np.full(cells.size, np.nan)
    out[ok] = logp[torch.as_tensor(np.flatnonzero(ok)), torch.as_tensor(cells[ok])].double().numpy()
    return out


def joint_sets(s: StandIns, n: int, k: int, cases: int, n_area: int, cal, outlier: bool = False) -> dict:
    """Metrics for `cases` sets of n photos (k shared confusers); with `outlier`, photo 0 of every other set
    shows a random other place."""
    rows = s.rng.choice(len(s.truth), cases)
    sig = s.rng.uniform(*SIGMAS, (cases, n))
    conf = s.rng.choice(len(s.cand), (cases, k)) if k else None
    photo_rows = np.repeat(rows, n)
    is_out = np.zeros((cases, n), bool)
    if outlier:
        is_out[::2, 0] = True
        photo_rows = photo_rows.reshape(cases, n)
        photo_rows[is_out] = s.rng.choice(len(s.truth), int(is_out.sum()))
        photo_rows = photo_rows.ravel()
    conf_rows = np.repeat(conf, n, axis=0) if conf is not None else None
    if outlier and conf is not None:  # the other place does not share the scene's look-alikes
        conf_rows = conf_rows.reshape(cases, n, k)
        conf_rows[is_out] = s.rng.choice(len(s.cand), (int(is_out.sum()), k))
        conf_rows = conf_rows.reshape(cases * n, k)
    out: dict = {"logp": {}, "err": {}, "mass": {}, "area": {}, "flag_joint": [], "flag_loo": [], "is_out": is_out}
    q90 = cal.mass_for(0.9)
    for start in range(0, cases, 100):
        sl = slice(start, min(cases, start + 100))
        b = sl.stop - sl.start
        lp = s.log_probs(photo_rows[sl.start * n : sl.stop * n], sig[sl].ravel(), None if conf_rows is None
                         else conf_rows[sl.start * n : sl.stop * n]).reshape(b, n, -1)
        truth, cells = s.truth[rows[sl]], s.truth_cell[rows[sl]]
        best = lp[torch.arange(b), torch.as_tensor(sig[sl].argmin(1))]  # the least noisy photo
        variants = {"best single": best, **{f"a={a:g}": combine(lp, n ** -a) for a in POWERS}}
        for key, jl in variants.items():
            out["logp"].setdefault(key, []).append(_truth_logp(jl, cells))
            out["err"].setdefault(key, []).append(haversine_km(s.cand_np[jl.argmax(-1).numpy()], truth))
            out["mass"].setdefault(key, []).append(truth_mass(jl.exp(), s.cells, truth))
            if start < n_area:
                keep = min(b, n_area - start)
                out["area"].setdefault(key, []).append(areas_at_masses(jl[:keep].exp(), s.cells, [0.9, q90]))
        if outlier:
            joint = combine(lp)  # the library's temperature
            own = lp.exp().reshape(b * n, -1)
            top1 = s.cand_np[joint.argmax(-1).numpy()]
            loo_top1 = s.cand_np[torch.stack([leave_one_out(x) for x in lp]).argmax(-1).numpy()]  # (b, n, 2)
            out["flag_joint"].append(truth_mass(own, s.cells, np.repeat(top1, n, axis=0)).reshape(b, n) > q90)
            out["flag_loo"].append(truth_mass(own, s.cells, loo_top1.reshape(b * n, 2)).reshape(b, n) > q90)
    for key in ("logp", "err", "mass", "area"):
        out[key] = {v: np.concatenate(x) for v, x in out[key].items()}
    for key in ("flag_joint", "flag_loo"):
        out[key] = np.concatenate(out[key]) if out[key] else None
    return out


def _pr(flag: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    tp = (flag & truth).sum()
    return tp / max(flag.sum(), 1), tp / max(truth.sum(), 1)


def calibrate(s: StandIns, k: int, n: int = 4000):
    """A calibration fitted on n single photos with k look-alikes (photos like the ones analysed), and its scores."""
    rows = s.rng.choice(len(s.truth), n)
    conf = s.rng.choice(len(s.cand), (n, k)) if k else None
    scores = np.concatenate([truth_mass(s.log_probs(r, s.rng.uniform(*SIGMAS, r.size), None if conf is None else
                                                    conf[r_i]).exp(), s.cells, s.truth[r])
                             for r, r_i in zip(np.array_split(rows, 20), np.array_split(np.arange(n), 20))])
    return fit_calibration(scores, (0.5, 0.8, 0.9, 0.95), model="stand-in", fingerprint=s.cells), scores


def run_joint(s: StandIns, cases: int, n_area: int) -> list[str]:
    lines = ["| photos | look-alikes | t | mean log p(truth) | " + " | ".join(f"≤{r} km" for r in THRESHOLDS_KM)
             + " | 90 % median area km² (raw) | coverage 90 % raw | calibrated coverage | calibrated area km² |",
             "|---|---|---|---|" + "---|" * len(THRESHOLDS_KM) + "---|---|---|---|"]
    best_a: dict = {}
    conflict = ["| photos | look-alikes | flag against | precision | recall |", "|---|---|---|---|---|"]
    cals = {k: calibrate(s, k)[0] for k in CONFUSERS}
    for n in SIZES:
        for k in CONFUSERS:
            cal = cals[k]
            q90 = cal.mass_for(0.9)
            r = joint_sets(s, n, k, cases, n_area, cal)
            for key, lp in r["logp"].items():
                acc = accuracy_within(r["err"][key], THRESHOLDS_KM)
                area, mass = r["area"][key], r["mass"][key]
                lines.append(f"| {n} | {k} | {key} | {np.nanmean(lp):.2f} | " + " | ".join(f"{acc[t]:.1%}" for t in
                             THRESHOLDS_KM) + f" | {np.median(area[:, 0]):,.0f} | {np.mean(mass <= 0.9):.1%} | "
                             f"{np.mean(mass <= q90):.1%} | {np.median(area[:, 1]):,.0f} |")
                if key.startswith("a="):
                    best_a.setdefault(key, []).append(np.nanmean(lp))
            o = joint_sets(s, n, k, cases, 0, cal, outlier=True)
            for rule in ("flag_joint", "flag_loo"):
                p, rc = _pr(o[rule], o["is_out"])
                conflict.append(f"| {n} | {k} | {'joint top-1' if rule == 'flag_joint' else 'top-1 of the others'} "
                                f"| {p:.1%} | {rc:.1%} |")
    mean = {a: float(np.mean(v)) for a, v in best_a.items()}
    summary = "Mean log p(truth) over the six settings: " + ", ".join(f"{a}: {v:.2f}" for a, v in mean.items())
    return lines + ["", summary + f" → best {max(mean, key=mean.get)}.", "", "Conflict flag (one photo of the set from "
                    "elsewhere in half of the sets; t = n^-0.5; calibrated 90 % regions):", ""] + conflict


def _scored(s: StandIns, p: torch.Tensor, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(truth mass, bin scores (b, 2): entropy and raw log10 90 % area) of answers (b, M), as the search regions
    compute them at use."""
    q, _ = prob_matrix(p, len(s.cells))
    return truth_mass(q, s.cells, truth), bin_scores(q, s.cells, DEFAULT_BIN_SCORES)


def set_answers(s: StandIns, k: int, count: int, n_keep: int) -> dict:
    """Joint answers (t = 1/√n, as `joint_locate`) of `count` scenes sharing k look-alikes, for each set size n in
    SIZES: the first n of the scene's max(SIZES) photos (nested sets: each size's answers are exchangeable among
    themselves, at a third of the cost). Per size: truth mass and bin scores of each joint answer, and the joint
    distributions of the first `n_keep` (for region areas)."""
    rows = s.rng.choice(len(s.truth), count)
    big = max(SIZES)
    sig = s.rng.uniform(*SIGMAS, (count, big))
    conf = s.rng.choice(len(s.cand), (count, k)) if k else None
    out: dict = {n: {"mass": [], "bins": [], "keep": []} for n in SIZES}
    for start in range(0, count, 100):
        sl = slice(start, min(count, start + 100))
        b = sl.stop - sl.start
        lp = s.log_probs(np.repeat(rows[sl], big), sig[sl].ravel(),
                         None if conf is None else np.repeat(conf[sl], big, axis=0)).reshape(b, big, -1)
        for n in SIZES:
            joint = combine(lp[:, :n]).exp()
            mass, ent = _scored(s, joint, s.truth[rows[sl]])
            out[n]["mass"].append(mass)
            out[n]["bins"].append(ent)
            if start < n_keep:
                out[n]["keep"].append(joint[: n_keep - start])
    return {n: {"mass": np.concatenate(o["mass"]), "bins": np.concatenate(o["bins"]),
                "keep": torch.cat(o["keep"]) if o["keep"] else None} for n, o in out.items()}


def photo_calibrations(s: StandIns, k: int, n: int = 4000) -> dict:
    """Calibrations fitted on n single photos with k look-alikes: marginal and Mondrian (entropy › raw area, the
    default)."""
    rows = s.rng.choice(len(s.truth), n)
    conf = s.rng.choice(len(s.cand), (n, k)) if k else None
    mass, ent = [], []
    for sl in (slice(a, min(n, a + 200)) for a in range(0, n, 200)):
        p = s.log_probs(rows[sl], s.rng.uniform(*SIGMAS, sl.stop - sl.start), None if conf is None else conf[sl]).exp()
        m, e = _scored(s, p, s.truth[rows[sl]])
        mass.append(m)
        ent.append(e)
    mass, ent = np.concatenate(mass), np.concatenate(ent)
    opts = dict(model="stand-in", fingerprint=s.cells)
    return {"single photos, marginal": fit_calibration(mass, SET_LEVELS, **opts),
            "single photos, Mondrian": fit_calibration(mass, SET_LEVELS, bin_score=ent, **opts)}


def _masses(cal, scores: np.ndarray) -> np.ndarray:
    """(B, L) the masses each joint answer's regions take at SET_LEVELS (None: raw mass), from its bin scores
    (B, 2)."""
    if cal is None:
        return np.broadcast_to(np.asarray(SET_LEVELS), (len(scores), len(SET_LEVELS)))
    m = cal.masses_for(SET_LEVELS, scores if cal.bins is not None else None)
    return np.broadcast_to(m, (len(scores), len(SET_LEVELS)))


def run_set_calibration(s: StandIns, n_cal: int, n_test: int, n_area: int) -> tuple[list[str], dict]:
    """Coverage of joint regions (sets of SIZES photos, CONFUSERS look-alikes) under each calibration."""
    head = ("| photos | look-alikes | calibration | " + " | ".join(f"{100 * p:g} %" for p in SET_LEVELS)
            + " | within 2 points? | median 90 % area km² |")
    lines = [head, "|---|---|---|" + "---|" * len(SET_LEVELS) + "---|---|"]
    summary: dict = {}
    j90 = SET_LEVELS.index(0.9)
    for k in CONFUSERS:
        photo_cals = photo_calibrations(s, k)
        cal_sets = set_answers(s, k, n_cal, 0)
        tests = set_answers(s, k, n_test, n_area)
        pooled = {key: np.concatenate([cal_sets[n][key] for n in SIZES]) for key in ("mass", "bins")}
        mixed = fit_calibration(pooled["mass"], SET_LEVELS, model="stand-in", fingerprint=s.cells,
                                bin_score=pooled["bins"], photos_per_set=(min(SIZES), max(SIZES)))
        for n in SIZES:
            test = tests[n]
            own = fit_calibration(cal_sets[n]["mass"], SET_LEVELS, model="stand-in", fingerprint=s.cells,
                                  bin_score=cal_sets[n]["bins"], photos_per_set=(n, n))
            cals = {"none (raw mass)": None, **photo_cals, f"sets of {n} (held out)": own,
                    f"sets of {min(SIZES)}–{max(SIZES)} pooled": mixed}
            masses = {name: _masses(c, test["bins"]) for name, c in cals.items()}
            keep = test["keep"].shape[0]
            areas = areas_at_masses(test["keep"], s.cells, np.stack([m[:keep, j90] for m in masses.values()], 1))
            for (name, m), area in zip(masses.items(), areas.T):
                cov = (test["mass"][:, None] <= m).mean(0)
                miss = [f"{100 * p:g} %: {100 * (c - p):+.1f}" for p, c in zip(SET_LEVELS, cov) if abs(c - p) > WITHIN]
                verdict = "yes" if not miss else "no (" + ", ".join(miss) + ")"
                lines.append(f"| {n} | {k} | {name} | " + " | ".join(f"{c:.1%}" for c in cov)
                             + f" | {verdict} | {np.median(area):,.0f} |")
                summary[(n, k, name)] = (cov, float(np.median(area)))
    se = ", ".join(f"{100 * p:g} %: ±{100 * np.sqrt(p * (1 - p) / n_test):.1f}" for p in SET_LEVELS)
    note = (f"Calibration: {n_cal:,} held-out sets per size (the pooled one: all {len(SIZES) * n_cal:,}), 4,000 single "
            f"photos; {n_test:,} test sets per row (one standard error of a coverage: {se} points; the calibration "
            f"draw adds as much again); areas over the first {n_area} test sets. Sets are nested (the sets of 2 and 3 "
            f"are the first photos of the sets of 5), so rows of one look-alike setting share their scenes.")
    return [note, ""] + lines, summary


def run_claims(s: StandIns, cal_scores: np.ndarray, cal, n: int) -> list[str]:
    rows = s.rng.choice(len(s.truth), n)
    sig = s.rng.uniform(*SIGMAS, n)
    claims = {"true claim": s.truth[rows]}
    for km in CLAIM_KM:
        claims[f"false, {km:g} km off"] = destination_point(s.truth[rows], s.rng.uniform(0, 360, n), np.full(n, km))
    scores = {name: [] for name in claims}
    for start in range(0, n, 200):
        sl = slice(start, min(n, start + 200))
        with torch.no_grad():
            p = s.log_probs(rows[sl], sig[sl], None).exp()
        for name, pts in claims.items():
            scores[name].append(truth_mass(p, s.cells, pts[sl]))
    lines = ["| claim | share judged (in a candidate's area) | " + " | ".join(
        f"rejected at α = {a:g} (exact p) | from the file's masses" for a in ALPHAS) + " |",
             "|---|---|" + "---|---|" * len(ALPHAS)]
    for name, sc in scores.items():
        sc = np.concatenate(sc)
        inside = s.cells.locate(claims[name]) >= 0
        pv = conformal_p_value(sc[inside], cal_scores)
        bounds = np.array([p_value_bounds(x, cal) for x in sc[inside]])
        cells = [f"{np.mean(pv <= a):.1%} | {np.mean(bounds[:, 1] <= a + 1e-12):.1%}" for a in ALPHAS]
        lines.append(f"| {name} | {inside.mean():.1%} | " + " | ".join(cells) + " |")
    return lines


def _clip_frames(seconds: float, fps: int, size: tuple[int, int], scenes: int, rng) -> list:
    """Scenes of textured images with a slow pan: (H, W, 3) uint8 frames, generated lazily."""
    h, w = size
    def scene():
        layout = np.kron(rng.integers(0, 255, (4, 6, 3)), np.ones((h // 4 + 3, w // 6 + 4, 1)))  # where things are
        texture = np.kron(rng.integers(-40, 40, (h // 8 + 2, w // 8 + 3, 3)), np.ones((8, 8, 1)))
        return np.clip(layout[: h + 8, : w + 16] + texture[: h + 8, : w + 16], 0, 255).astype(np.uint8)

    bases = [scene() for _ in range(scenes)]
    n = int(seconds * fps)
    for i in range(n):
        base = bases[i * scenes // n]
        shift = (i % fps) // 2
        yield base[:h, shift : shift + w]


def run_video(seconds: float, long_minutes: float) -> list[str]:
    from geocore.cases.clip import locate_video
    from geocore.data.video import VideoFrames, encode_frames
    from geocore.locate import locate
    from geocore.models.registry import create_model

    rng = np.random.default_rng(0)
    model = create_model("geoclip-tiny")
    clip = encode_frames(_clip_frames(seconds, 25, (360, 640), 3, rng), fps=25)
    lines = []
    locate_video(model, clip, name="warm-up.mp4", every_s=0.5)  # the gallery's cells and caches, built once
    t0 = time.perf_counter()
    frames = list(VideoFrames(clip, name="clip.mp4", every_s=0.5))
    t_decode = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = locate_video(model, clip, name="clip.mp4", every_s=0.5)
    t_video = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, f in enumerate(frames):
            paths.append(Path(tmp) / f"{i:04d}.png")
            f.image.save(paths[-1])
        t0 = time.perf_counter()
        locate(model, [(p.name, p) for p in paths], full=True, regions=(0.5, 0.9))
        t_images = time.perf_counter() - t0
    n = len(res.frames)
    lines += [f"Clip: {seconds:g} s, 640×360, 25 fps, 3 scenes, sampled every 0.5 s: {n} frames kept "
              f"({res.stats['duplicates']} near-duplicates dropped), {len(res.segments)} segments, on "
              f"{torch.get_num_threads()} thread(s), geoclip-tiny.", "",
              "| what | time | frames/s | ratio |", "|---|---|---|---|",
              f"| `locate` on the same frames saved as PNG (baseline) | {t_images:.2f} s | {n / t_images:.1f} | 1.00 |",
              f"| `locate_video` end to end (decode, sample, locate, segments, joints) | {t_video:.2f} s | "
              f"{n / t_video:.1f} | {t_images / t_video:.2f}× |",
              f"| of which decoding and sampling alone | {t_decode:.2f} s | | {t_decode / t_video:.0%} of the total |",
              ""]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long.mp4"
        t0 = time.perf_counter()
        encode_frames(_clip_frames(long_minutes * 60, 1, (1080, 1920), 12, rng), path, fps=1, gop=10,
                      options={"preset": "ultrafast"})
        t_enc = time.perf_counter() - t0
        proc = psutil.Process()
        base = proc.memory_info().rss
        peak = base
        t0 = time.perf_counter()
        v = VideoFrames(path, max_frames=300)
        kept = 0
        for _ in v:
            kept += 1
            peak = max(peak, proc.memory_info().rss)
        t_long = time.perf_counter() - t0
        lines += [f"Long clip: {long_minutes:g} min of 1920×1080 at 1 fps (key frame every 10 s; {path.stat().st_size / 1e6:.0f} MB, "
                  f"encoded in {t_enc:.0f} s), max_frames = 300: {kept} frames kept in {t_long:.1f} s "
                  f"({v.stats['mode']}: {v.stats['seeks']} seeks, {v.stats['decoded']} frames decoded of "
                  f"{int(long_minutes * 60)}); resident memory grew by {(peak - base) / 1e6:.0f} MB (the whole "
                  f"clip decoded would be {long_minutes * 60 * 1920 * 1080 * 3 / 1e9:.1f} GB)."]
    return lines


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--truths", type=int, default=4000)
    parser.add_argument("--cases", type=int, default=300)
    parser.add_argument("--area-cases", type=int, default=60)
    parser.add_argument("--claims", type=int, default=2000)
    parser.add_argument("--clip-seconds", type=float, default=20)
    parser.add_argument("--long-minutes", type=float, default=60)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set-cal", type=int, default=2500, help="held-out calibration sets per size")
    parser.add_argument("--set-test", type=int, default=2500, help="test sets per size")
    parser.add_argument("--set-area", type=int, default=200, help="test sets whose region areas are measured")
    parser.add_argument("--quick", action="store_true", help="a few minutes: fewer truths, sets, claims, a short clip")
    parser.add_argument("--skip", nargs="*", default=[], choices=["joint", "claims", "sets", "video"])
    args = parser.parse_args(argv)
    if args.quick:
        args.truths, args.cases, args.area_cases, args.claims = 2000, 100, 20, 500
        args.clip_seconds, args.long_minutes = 5.0, 2.0
        args.set_cal, args.set_test, args.set_area = 800, 800, 60
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    lines = []
    if not {"joint", "claims", "sets"} <= set(args.skip):
        s = StandIns(args.truths, seed=0)
        lines += [f"Candidates: {len(s.cells):,} gallery points; {args.truths:,} held-out truths; σ uniform in "
                  f"{SIGMAS}; calibrations fitted on 4,000 single photos with the same look-alikes (their truths "
                  f"drawn from the same held-out points, other noise).", ""]
        with torch.no_grad():
            cal, cal_scores = calibrate(s, 0)
            if "joint" not in args.skip:
                t1 = time.perf_counter()
                lines += run_joint(s, args.cases, args.area_cases) + ["", f"(joint: {time.perf_counter() - t1:.0f} s)", ""]
            if "claims" not in args.skip:
                lines += ["Claims (single photos, no look-alikes; calibration: the 4,000 photos above):", ""]
                lines += run_claims(s, cal_scores, cal, args.claims) + [""]
            if "sets" not in args.skip:
                t1 = time.perf_counter()
                lines += ["Joint regions by calibration (t = 1/√n; coverage at each level, the levels missed by more "
                          "than 2 points, median 90 % area):", ""]
                lines += run_set_calibration(s, args.set_cal, args.set_test, args.set_area)[0]
                lines += ["", f"(set calibration: {time.perf_counter() - t1:.0f} s)", ""]
    if "video" not in args.skip:
        lines += run_video(args.clip_seconds, args.long_minutes)
    lines += ["", f"Total: {time.perf_counter() - t0:.0f} s on {args.threads} thread(s)."]
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
