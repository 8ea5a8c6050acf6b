"""Refinement ("zooming in", as the GeoCLIP poster shows): after the global top-k over the gallery,
score a dense local gallery around the best candidates to answer finer than the gallery's spacing.

The local gallery around each candidate is a polar grid: rings at `RING_KM` × `BEARINGS` directions,
plus the candidate itself. Probabilities are a softmax over the union of all local points of one
image, so they rank the refined points against each other (not against the whole world).
"""

from __future__ import annotations

import numpy as np
import torch

from geocore.geo.coords import destination_point
from geocore.models.prediction import Prediction
from geocore.tensors import as_numpy

RING_KM: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
BEARINGS = 16


def local_grid(centres: np.ndarray, rings_km=RING_KM, bearings: int = BEARINGS) -> np.ndarray:
    """(K, 2) centres → (K · (1 + rings·bearings), 2) points: each centre, then its rings."""
    angles = np.arange(bearings) * 360.0 / bearings
    r, a = np.meshgrid(np.asarray(rings_km, np.float64), angles, indexing="ij")  # (R, A)
    ring = destination_point(centres[:, None, :], a.ravel()[None, :], r.ravel()[None, :])  # (K, R·A, 2)
    pts = np.concatenate([centres[:, None, :], ring], axis=1)  # (K, 1 + R·A, 2)
    return pts.reshape(-1, 2)


@torch.no_grad()
def refine(model, embeddings: torch.Tensor, coarse: Prediction, top_k: int | None = None,
           rings_km=RING_KM, bearings: int = BEARINGS) -> Prediction:
    """Re-rank dense local points around each image's global top-k.

    model:      a GeoCLIP (needs `location_encoder`, `logit_scale`, `embed_locations`)
    embeddings: (B, 512) normalised image (or text) embeddings
    coarse:     the global prediction, whose top-k centres are refined
    """
    top_k = top_k or coarse.coords.shape[1]
    B, K, _ = coarse.coords.shape
    centres = as_numpy(coarse.coords, np.float64).reshape(B * K, 2)
    pts = torch.as_tensor(local_grid(centres, rings_km, bearings), dtype=torch.float32)
    pts = pts.reshape(B, -1, 2)  # (B, P, 2): each image's own local gallery
    loc = model.embed_locations(pts.reshape(-1, 2)).reshape(B, pts.shape[1], -1).to(embeddings.device)  # (B, P, 512)
    logits = model.logit_scale.exp() * torch.einsum("bd,bpd->bp", embeddings, loc)  # (B, P)
    probs = logits.float().softmax(dim=-1)
    top = probs.topk(min(top_k, pts.shape[1]), dim=-1)
    coords = torch.gather(pts.to(embeddings.device), 1, top.indices[..., None].expand(-1, -1, 2))
    return Prediction(coords=coords, probs=top.values)
