"""Does refinement help? Held-out gallery points as queries.

1,000 points are taken out of GeoCLIP's 100K gallery. Each one's own location embedding (optionally
with noise, standing in for an imperfect image embedding) is the query; the remaining 99K points are
the gallery. We compare the top-1 error of the global retrieval with the refined one.
Needs only the wheel weights (the location encoder).
"""

from __future__ import annotations

import numpy as np
import torch

from geocore.geo.distance import haversine_km
from geocore.geo.gallery import default_gallery
from geocore.models.refine import refine
from geocore.models.registry import create_model


def run(n_queries: int = 1000, noise_levels=(0.0, 0.5, 1.0), seed: int = 0) -> list[dict]:
    model = create_model("geoclip-tiny")
    gallery = default_gallery()
    rng = np.random.default_rng(seed)
    held = rng.choice(len(gallery), n_queries, replace=False)
    keep = np.ones(len(gallery), bool)
    keep[held] = False
    truth = gallery[held]
    model.set_gallery(gallery[keep])
    clean = model.embed_locations(truth)
    rows = []
    g = torch.Generator().manual_seed(seed)
    for noise in noise_levels:
        # noise: a random direction of this norm relative to the unit embedding
        q = torch.nn.functional.normalize(clean + noise * torch.nn.functional.normalize(
            torch.randn(clean.shape, generator=g), dim=1) * 1.0, dim=1)
        coarse = model.predict_embeddings(q, top_k=5)
        fine = refine(model, q, coarse, top_k=5)
        e0 = haversine_km(coarse.top1.double(), truth.double()).numpy()
        e1 = haversine_km(fine.top1.double(), truth.double()).numpy()
        rows.append({
            "noise": noise,
            "median_km_global": float(np.median(e0)), "median_km_refined": float(np.median(e1)),
            "acc_1km_global": float((e0 <= 1).mean()), "acc_1km_refined": float((e1 <= 1).mean()),
            "acc_25km_global": float((e0 <= 25).mean()), "acc_25km_refined": float((e1 <= 25).mean()),
            "share_improved": float((e1 < e0).mean()), "share_worse": float((e1 > e0).mean()),
        })
    return rows


if __name__ == "__main__":
    import json

    for row in run():
        print(json.dumps(row))
