"""Shared by the geo-cell classifiers (TransLocator, GeoDecoder): the combination of level probabilities into
one distribution over fine cells, and the multi-level loss.

Levels are always ordered (coarse, middle, fine), e.g. the published MP-16 partitions
`cells_50_5000`, `cells_50_2000`, `cells_50_1000` (3298 / 7202 / 12893 cells).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from geocore.errors import InputError

LEVELS = ("coarse", "middle", "fine")
COMBINE_MODES = ("fine", "product")


def combine_probs(coarse: torch.Tensor, middle: torch.Tensor, fine: torch.Tensor,
                  parents: torch.Tensor | None, mode: str = "product") -> torch.Tensor:
    """(B, n_fine) distribution over fine cells from per-level probabilities (B, n_level).

    "fine": the fine head alone (TransLocator's default: supplement §0.A.1, the hierarchical ensemble gave no
    consistent gain). "product" (ISNs, GeoEstimation, GeoDecoder's validation code):
    p(f) ∝ p_fine(f) · p_middle(parent_m(f)) · p_coarse(parent_c(f)), renormalised over fine cells. A fine cell
    with no parent at a level (its cell was dropped there; never the case for the nested published partitions)
    gets the uniform factor 1 / n_level for that level, i.e. that level is treated as uninformative for it.
    """
    if mode == "fine":
        return fine / fine.sum(-1, keepdim=True)
    if mode != "product":
        raise InputError(f"combine: expected one of {', '.join(COMBINE_MODES)}, got {mode!r}")
    if parents is None or (parents < 0).all():
        raise InputError("combine='product' needs the cell hierarchy: build the model with partitions or "
                         "load a checkpoint that carries it, or use combine='fine'")
    out = fine.clone()
    for col, level in ((0, middle), (1, coarse)):
        idx = parents[:, col]  # (n_fine,)
        factor = level[:, idx.clamp_min(0)]  # (B, n_fine)
        out = out * torch.where(idx >= 0, factor, torch.full_like(factor, 1.0 / level.shape[-1]))
    return out / out.sum(-1, keepdim=True).clamp_min(torch.finfo(out.dtype).tiny)


def masked_ce(logits: torch.Tensor, labels: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy over labels >= 0 (-1: image outside the partition), with label smoothing
    `smoothing`; 0 when none is labelled."""
    if not bool((labels >= 0).any()):
        return logits.sum() * 0.0  # keeps the graph, avoids the 0/0 NaN of an all-ignored batch
    return F.cross_entropy(logits.float(), labels.long(), ignore_index=-1, label_smoothing=float(smoothing))


def weighted_loss(out: Mapping[str, torch.Tensor], labels: Mapping[str, torch.Tensor | None],
                  weights: Mapping[str, float], smoothing: Mapping[str, float] | None = None
                  ) -> dict[str, torch.Tensor]:
    """Σ_k weights[k] · CE(out[k], labels[k]) over the heads with labels (label smoothing `smoothing[k]`,
    default 0); returns each term and `total`."""
    smooth = dict(smoothing or {})
    terms = {k: masked_ce(out[k], y, smooth.get(k, 0.0)) for k, y in labels.items()
             if y is not None and weights.get(k, 0.0)}
    if not terms:
        raise InputError("loss: no labels given for any head")
    total = sum(weights[k] * v for k, v in terms.items())
    return {**terms, "total": total}
