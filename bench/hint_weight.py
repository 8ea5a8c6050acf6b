"""Which default weight w for text hints (p ∝ p_image · p_text^w)? Stand-ins on the real GeoCLIP heads.

No real photos or CLIP text tower are needed to see how the product of two distributions behaves. Held-out
gallery points are the truths. A photo is ambiguous the way real photos are: it looks like its place and like
`confusers` other places, so its stand-in embedding is the normalised sum of the truth's location embedding and
those places' (random gallery points), plus noise of norm `img_noise`. The hint names the right region, not the
spot: the embedding of a place `hint_km` from the truth plus noise (norm 0.5); with probability `wrong` it names
a random other place instead (analysts are sometimes wrong). Both are scored against the rest of the 100K
gallery with GeoCLIP's logit scale. For each w: mean log-probability of the truth's gallery cell (its nearest
gallery point) and top-1 accuracy within 200 km. `python -m bench.hint_weight`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from geocore.geo.coords import destination_point
from geocore.geo.distance import haversine_km, nearest_km
from geocore.geo.gallery import default_gallery
from geocore.models.location_encoder import load_location_encoder
from geocore.weights.paths import geoclip_package_dir

WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
# (confusers, img_noise, hint_km, wrong)
SETTINGS = ((2, 0.5, 300.0, 0.0), (2, 0.5, 300.0, 0.2), (4, 0.5, 500.0, 0.0), (4, 0.5, 500.0, 0.2),
            (1, 0.5, 1000.0, 0.2))


def _noisy(clean: torch.Tensor, norm: float, g: torch.Generator) -> torch.Tensor:
    return F.normalize(clean + norm * F.normalize(torch.randn(clean.shape, generator=g), dim=1), dim=1)


@torch.no_grad()
def run(n_queries: int = 1000, seed: int = 0) -> list[dict]:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    enc = load_location_encoder()
    scale_file = geoclip_package_dir() / "model" / "weights" / "logit_scale_weights.pth"
    scale = torch.load(scale_file, weights_only=True).exp().reshape(())
    gallery = default_gallery()
    rng = np.random.default_rng(seed)
    held = rng.choice(len(gallery), n_queries, replace=False)
    keep = np.ones(len(gallery), bool)
    keep[held] = False
    cand, truth = gallery[keep], gallery[held].double().numpy()
    cand_emb = enc.embed(cand)  # (M, 512)
    _, truth_idx = nearest_km(truth, cand.double().numpy())
    g = torch.Generator().manual_seed(seed)
    rows = []
    for confusers, img_noise, hint_km, wrong in SETTINGS:
        hint_pts = destination_point(truth, rng.uniform(0, 360, n_queries), np.full(n_queries, hint_km))
        misled = rng.random(n_queries) < wrong
        hint_pts[misled] = cand[rng.choice(len(cand), int(misled.sum()))].double().numpy()
        mix = enc.embed(torch.as_tensor(truth, dtype=torch.float32))
        for _ in range(confusers):
            mix = mix + cand_emb[torch.as_tensor(rng.choice(len(cand), n_queries))]
        img = _noisy(F.normalize(mix, dim=1), img_noise, g)
        txt = _noisy(enc.embed(torch.as_tensor(hint_pts, dtype=torch.float32)), 0.5, g)
        log_img = (scale * img @ cand_emb.T).log_softmax(-1)  # (N, M)
        log_txt = (scale * txt @ cand_emb.T).log_softmax(-1)
        for w in WEIGHTS:
            logp = (log_img + w * log_txt).log_softmax(-1)
            ll = logp[torch.arange(n_queries), torch.as_tensor(truth_idx)].mean().item()
            err = haversine_km(cand[logp.argmax(-1)].double().numpy(), truth)
            rows.append({"confusers": confusers, "img_noise": img_noise, "hint_km": hint_km, "wrong": wrong, "w": w,
                         "mean_log_p_truth": ll, "acc_25km": float((err <= 25).mean()),
                         "acc_200km": float((err <= 200).mean())})
    return rows


def table(rows: list[dict]) -> str:
    """Per setting and w: mean log p(truth) (top-1 within 200 km); the last row averages the settings."""
    lines = ["| look-alike places | hint off by | wrong hints | " + " | ".join(f"w = {w:g}" for w in WEIGHTS)
             + " | best w |", "|---|---|---|" + "---|" * (len(WEIGHTS) + 1)]
    keys = list(dict.fromkeys((r["confusers"], r["hint_km"], r["wrong"]) for r in rows))
    for key in keys:
        sub = [r for r in rows if (r["confusers"], r["hint_km"], r["wrong"]) == key]
        best = max(sub, key=lambda r: r["mean_log_p_truth"])["w"]
        cells = [f"{r['mean_log_p_truth']:.2f} ({100 * r['acc_200km']:.0f} %)" for r in sub]
        lines.append(f"| {key[0]} | {key[1]:g} km | {100 * key[2]:.0f} % | " + " | ".join(cells) + f" | {best:g} |")
    mean = {w: np.mean([r["mean_log_p_truth"] for r in rows if r["w"] == w]) for w in WEIGHTS}
    acc = {w: np.mean([r["acc_200km"] for r in rows if r["w"] == w]) for w in WEIGHTS}
    lines.append("| **mean** | | | " + " | ".join(f"**{mean[w]:.2f}** ({100 * acc[w]:.0f} %)" for w in WEIGHTS)
                 + f" | **{max(mean, key=mean.get):g}** |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(run()))
