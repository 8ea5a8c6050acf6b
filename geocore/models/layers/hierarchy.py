"""Shared by the geo-cell classifiers (TransLocator, GeoDecoder): hierarchy tables, probability
combination, the multi-level loss, checkpoint files, and a synthetic comparison of combination rules.

Levels are always ordered (coarse, middle, fine), e.g. the published MP-16 partitions
`cells_50_5000`, `cells_50_2000`, `cells_50_1000` (3298 / 7202 / 12893 cells).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from geocore.errors import InputError
from geocore.geo.cells import CellPartition, cell_hierarchy, load_partition

LEVELS = ("coarse", "middle", "fine")
COMBINE_MODES = ("fine", "product")


def load_partitions(partitions: Sequence[str | Path | CellPartition]) -> list[CellPartition]:
    """(coarse, middle, fine) partitions from CSV paths or ready `CellPartition`s."""
    if len(partitions) != 3:
        raise InputError(f"partitions: expected 3 (coarse, middle, fine), got {len(partitions)}")
    return [p if isinstance(p, CellPartition) else load_partition(p) for p in partitions]


def parent_table(coarse: CellPartition, middle: CellPartition, fine: CellPartition) -> np.ndarray:
    """(n_fine, 2) int64: column 0 the middle cell holding each fine cell, column 1 the coarse one; -1: none."""
    return cell_hierarchy(fine, middle, coarse)


def combine_probs(coarse: torch.Tensor, middle: torch.Tensor, fine: torch.Tensor,
                  parents: torch.Tensor | None, mode: str = "product") -> torch.Tensor:
    """(B, n_fine) distribution over fine cells from per-level probabilities (B, n_level).

    "fine": the fine head alone. "product" (ISNs, GeoEstimation, GeoDecoder):
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


def masked_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over labels >= 0 (-1: image outside the partition); 0 when none is labelled."""
    if not bool((labels >= 0).any()):
        return logits.sum() * 0.0  # keeps the graph, avoids the 0/0 NaN of an all-ignored batch
    return F.cross_entropy(logits.float(), labels.long(), ignore_index=-1)


def weighted_loss(out: Mapping[str, torch.Tensor], labels: Mapping[str, torch.Tensor | None],
                  weights: Mapping[str, float]) -> dict[str, torch.Tensor]:
    """Σ_k weights[k] · CE(out[k], labels[k]) over the heads with labels; returns each term and `total`."""
    terms = {k: masked_ce(out[k], y) for k, y in labels.items() if y is not None and weights.get(k, 0.0)}
    if not terms:
        raise InputError("loss: no labels given for any head")
    total = sum(weights[k] * v for k, v in terms.items())
    return {**terms, "total": total}


# ---- checkpoints -------------------------------------------------------------------------------------------

def save_checkpoint(path: str | Path, state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> Path:
    """Write `{"state_dict": tensors, "config": plain data}`, loadable with `torch.load(weights_only=True)`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {k: v.detach().cpu() for k, v in state_dict.items()}, "config": dict(config)}, path)
    return path


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state_dict, config) of a checkpoint written by `save_checkpoint`; InputError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found; expected a file written by save_checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickles with code, truncated or foreign files
        raise InputError(f"{path}: not a loadable checkpoint ({type(err).__name__})") from None
    if not (isinstance(ckpt, dict) and isinstance(ckpt.get("state_dict"), dict)
            and isinstance(ckpt.get("config"), dict)):
        raise InputError(f"{path}: expected a dict with 'state_dict' and 'config'")
    return ckpt["state_dict"], ckpt["config"]


# ---- synthetic comparison of combination rules ---------------------------------------------------------------

def compare_hierarchy(n_coarse: int = 5, branching: tuple[int, int] = (2, 2), n: int = 4000,
                      signal: tuple[float, float, float] = (3.0, 2.0, 1.0), noise: float = 1.0,
                      seed: int = 0) -> dict[str, float]:
    """Top-1 fine-cell accuracy of each combination rule on noisy synthetic logits.

    A nested hierarchy of `n_coarse` coarse cells, each split into branching[0] middle cells, each split into
    branching[1] fine cells. Each image has a uniform fine label; the logits of each level are
    `signal[level] · onehot(true cell) + noise · N(0, 1)`, so a larger signal means a more reliable head.
    """
    g = torch.Generator().manual_seed(seed)
    n_mid = n_coarse * branching[0]
    n_fine = n_mid * branching[1]
    fine_ids = torch.arange(n_fine)
    parents = torch.stack([fine_ids // branching[1], fine_ids // (branching[0] * branching[1])], dim=1)
    y = torch.randint(n_fine, (n,), generator=g)
    labels = (y // (branching[0] * branching[1]), y // branching[1], y)  # coarse, middle, fine
    probs = []
    for lab, size, s in zip(labels, (n_coarse, n_mid, n_fine), signal):
        logits = s * F.one_hot(lab, size).float() + noise * torch.randn(n, size, generator=g)
        probs.append(logits.softmax(-1))
    return {mode: float((combine_probs(*probs, parents, mode).argmax(-1) == y).float().mean())
            for mode in COMBINE_MODES}
