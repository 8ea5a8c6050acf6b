"""`nearest_references`: the K references most similar to each query embedding.

Exact (one float16 matrix product) up to `store.INDEX_ABOVE` references; above it the set's FAISS index
(`geocore.models.ann_index`) proposes `CANDIDATES` per query and they are re-scored exactly, so every similarity
reported is exact. A reference whose SHA-256 equals the query photo's is never its own neighbour.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from geocore.errors import InputError
from geocore.refs.reweight import FusionParams, log_evidence
from geocore.refs.store import ReferenceSet

CANDIDATES = 256  # index candidates re-scored exactly per query (K ≤ 64 neighbours)
SCAN_ROWS = 262_144  # references scanned at a time (bounded memory for memory-mapped sets)


def _excluded(refs: ReferenceSet, exclude_sha256: Sequence[str | None] | None, b: int) -> torch.Tensor:
    """(E, 2) (query, reference) pairs that must not be neighbours: the query photo's own file (same SHA-256),
    and the references the set hides from every query (`ReferenceSet.excluding`)."""
    hidden = torch.zeros((0, 2), dtype=torch.long)
    if refs.excluded is not None:  # hidden from every query: (q, n) for each query and each hidden reference
        n = torch.from_numpy(refs.excluded)
        hidden = torch.stack([torch.arange(b).repeat_interleave(len(n)), n.repeat(b)], 1)
    if exclude_sha256 is None:
        return hidden
    if len(exclude_sha256) != b:
        raise InputError(f"exclude_sha256: expected one entry per query ({b}), got {len(exclude_sha256)}")
    where = refs.sha256_positions()
    pairs = [(q, int(n)) for q, sha in enumerate(exclude_sha256) if sha for n in where.get(sha, ())]
    return torch.cat([hidden, torch.tensor(pairs, dtype=torch.long).reshape(-1, 2)])


def _drop(s: torch.Tensor, i: torch.Tensor, pairs: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The best `k` of each row once the excluded (query, reference) pairs are removed."""
    if len(pairs):
        n = int(i.max()) + 2
        keys = torch.arange(i.shape[0])[:, None] * n + i
        s = s.masked_fill(torch.isin(keys, pairs[:, 0] * n + pairs[:, 1]), -np.inf)
    s, order = s.topk(min(k, s.shape[1]), dim=1)
    return s, i.gather(1, order)


def _exact(emb: np.ndarray, q: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    best_s = torch.full((q.shape[0], 0), -np.inf)
    best_i = torch.zeros((q.shape[0], 0), dtype=torch.long)
    qh = q.to(torch.float16)
    for start in range(0, emb.shape[0], SCAN_ROWS):  # chunks of rows: a memory-mapped set is read a chunk at a time
        block = torch.from_numpy(np.array(emb[start:start + SCAN_ROWS], dtype=np.float16))  # a copy: mmap is read-only
        sims = (qh @ block.T).float()
        s, i = sims.topk(min(k, block.shape[0]), dim=1)
        best_s, best_i = torch.cat([best_s, s], 1), torch.cat([best_i, i + start], 1)
        if best_s.shape[1] > k:
            best_s, order = best_s.topk(k, dim=1)
            best_i = best_i.gather(1, order)
    return best_s, best_i


def _indexed(refs: ReferenceSet, q: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = refs.index.search(q, max(CANDIDATES, 2 * k))  # (B, R); -1 pads
    valid = ids >= 0
    rows = torch.from_numpy(np.ascontiguousarray(refs.embeddings[ids.clamp_min(0).reshape(-1).numpy()]))
    sims = torch.einsum("bd,brd->br", q, rows.float().reshape(*ids.shape, -1))
    sims = sims.masked_fill(~valid, -np.inf)
    s, order = sims.topk(min(k, ids.shape[1]), dim=1)
    return s, ids.gather(1, order)


@torch.no_grad()
def nearest_references(refs: ReferenceSet, query_emb: torch.Tensor | np.ndarray, k: int = 10, *,
                       exclude_sha256: Sequence[str | None] | None = None, exact: bool | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per query (B, D) unit embedding, the `k` most similar references, best first: (similarities (B, k) float32,
    indices (B, k) int64 into `refs.table`); -inf / -1 pad when the set holds fewer. `exclude_sha256`: the query
    photos' SHA-256 (None entries exclude nothing). `exact`: force the scan (True) or the index (False)."""
    q = torch.as_tensor(np.asarray(query_emb, dtype=np.float32) if isinstance(query_emb, np.ndarray) else query_emb)
    q = q.detach().float().cpu()
    if q.dim() != 2 or q.shape[1] != refs.embeddings.shape[1]:
        raise InputError(f"query embeddings of shape {tuple(q.shape)} do not match the reference set's "
                         f"{refs.embeddings.shape[1]}-d embeddings")
    if k < 1:
        raise InputError(f"k: expected at least 1 neighbour, got {k}")
    pairs = _excluded(refs, exclude_sha256, q.shape[0])
    use_index = refs.index is not None if exact is None else not exact
    if use_index and refs.index is None:
        raise InputError("this reference set has no index (it is small enough to scan exactly)")
    extra = int(torch.bincount(pairs[:, 0]).max()) if len(pairs) else 0  # a file can be in the set twice
    s, i = _indexed(refs, q, k + extra) if use_index else _exact(refs.embeddings, q, k + extra)
    s, i = _drop(s, i, pairs, k)
    if s.shape[1] < k:  # fewer references than k
        pad = k - s.shape[1]
        s = torch.cat([s, torch.full((q.shape[0], pad), -np.inf)], 1)
        i = torch.cat([i, torch.full((q.shape[0], pad), -1, dtype=torch.long)], 1)
    i = torch.where(torch.isfinite(s), i, torch.full_like(i, -1))
    return s, i


@dataclass
class Neighbours:
    """Each query's K nearest references: similarities and indices (B, K) (−inf / −1 pads), their positions
    (B, K, 2) and log evidence (B, K) for fusion (`geocore.refs.reweight`)."""

    sims: torch.Tensor
    indices: torch.Tensor
    latlon: torch.Tensor
    log_a: torch.Tensor


def neighbours(refs: ReferenceSet, query_emb: torch.Tensor, params: FusionParams, *,
               exclude_sha256: Sequence[str | None] | None = None) -> Neighbours:
    """`nearest_references` (params.k) and the evidence each neighbour lends (`fusion.log_evidence`)."""
    sims, idx = nearest_references(refs, query_emb, params.k, exclude_sha256=exclude_sha256)
    latlon = torch.from_numpy(refs.latlon[idx.clamp_min(0).numpy()])  # (B, K, 2)
    return Neighbours(sims, idx, latlon, log_evidence(sims, float(refs.manifest["chance_similarity"]), params))
