"""Approximate nearest-neighbour retrieval (FAISS) for galleries of millions of points.

**When.** `index="auto"` (the default) scans exactly up to `INDEX_ABOVE` points and uses the index above;
`"exact"` and `"ivf"` force either way. The 100K default gallery is always scanned exactly (results equal the
reference `geoclip` package). Measured (bench/bench_ann.py, bench/RESULTS.md "Approximate index (FAISS)", 1M
real GeoCLIP location embeddings, this shared 2-core CPU under load): exact float16 scan 127 ms per query at
batch 1 (76 ms at batch 64), the index 48 ms (11 ms) at recall@1 0.993, and a 17 s build, cached on disk. The
scan grows linearly with M (about 50 ms per million points on an idle machine), the index barely. Up to 2M
points the exact scan stays interactive, exact, and keeps the Voronoi search regions; above it the scan
passes 100 ms per query and 2 GB of float16, so `INDEX_ABOVE = 2_000_000`.

**Index.** `IVF{nlist},SQ8` with inner product (the embeddings are unit vectors): nlist ≈ √M lists (a power of
two), 8-bit scalar-quantised codes (512 B per point, a quarter of float32), `nprobe` lists searched per query
(`nprobe_for`, chosen for recall@1 ≥ 0.99 in the bench). The index proposes `RETRIEVE` candidates; they are
re-scored exactly from the gallery embeddings (float16 above 250K points), so every score reported is exact.
Built once, with a progress bar: k-means on a sample of `TRAIN_PER_LIST` points per list, then codes added in
chunks; on a GPU when `faiss.get_num_gpus() > 0`. Saved with `faiss.write_index` beside the embedding cache
(same key + the index parameters), atomically; a corrupt or mismatched file is rebuilt with a warning.

**Probabilities.** The softmax runs over the whole gallery: Z = Z_R + Z_out, with Z_R summed exactly over the
retrieved set R and Z_out, the part of the M − |R| points outside it, estimated from a fixed uniform sample
of `BACKGROUND` gallery points scored exactly: (M − |R|) / |sample outside R| · Σ exp(logit) (unbiased; its
relative error is about 1/√(sample points outside R)). So retrieved probabilities are the full-gallery ones
(they sum to 1 − outside mass, ≤ 1); `Prediction.outside_mass` is the estimated mass outside R and
`Prediction.outside_bound` the most it can be, (M − |R|)·exp(smallest retrieved logit) over Z_R plus that, which
holds when R is the exact top-|R| (the index is tuned for the top few; its last candidates may miss a point
scoring a little higher, so the bound is a guide, not a guarantee; the estimate is never clipped to it).
`probs_full` (B, M), when asked for, spreads the outside mass evenly over the points outside R, so heat maps,
hints and search regions see a distribution that sums to 1: exact where the model looks, a flat floor
elsewhere (a region that needs more mass than R holds then spreads over the gallery's densest areas: its area
is pessimistic).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from geocore.data.safe_io import atomic_path
from geocore.errors import InputError
from geocore.tensors import as_numpy

INDEX_MODES = ("auto", "exact", "ivf")
INDEX_ABOVE = 2_000_000  # "auto" uses the index for galleries larger than this
RETRIEVE = 1_000  # candidates re-scored exactly per query
BACKGROUND = 8_192  # uniform gallery sample that estimates the softmax mass outside the retrieved set
TRAIN_PER_LIST = 64  # k-means sample: points per IVF list
ADD_CHUNK = 131_072


def check_mode(mode: str) -> str:
    """`index=` option: one of INDEX_MODES."""
    if mode not in INDEX_MODES:
        raise InputError(f"index: expected one of {', '.join(INDEX_MODES)}, got {mode!r}")
    return mode


def use_index(mode: str, num_points: int, threshold: int | None = None) -> bool:
    """True when a gallery of `num_points` is searched through the approximate index under `mode`."""
    check_mode(mode)
    if mode != "auto":
        return mode == "ivf"
    return num_points > (INDEX_ABOVE if threshold is None else threshold)


def nlist_for(num_points: int) -> int:
    """IVF lists: the power of two nearest √M / 2, in [16, 4096] (lists of ~2√M points)."""
    return int(np.clip(2 ** round(math.log2(max(math.sqrt(num_points) / 2, 1))), 16, 4096))


def nprobe_for(nlist: int) -> int:
    """Lists searched per query (recall@1 ≥ 0.99 on the bench galleries): 1/8 of the lists, at least 16."""
    return int(min(nlist, max(16, nlist // 8)))


def _faiss():
    import faiss  # lazy: only galleries that use the index need it

    return faiss


@dataclass
class AnnIndex:
    """A FAISS IVF-SQ8 inner-product index over M unit vectors."""

    index: object
    nprobe: int

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def nbytes(self) -> int:
        """Size of the serialised index (codes, ids, centroids)."""
        return int(_faiss().serialize_index(self._cpu()).nbytes)

    def _cpu(self):
        faiss = _faiss()
        return faiss.index_gpu_to_cpu(self.index) if hasattr(self.index, "getDevice") else self.index

    @classmethod
    def build(cls, emb: torch.Tensor, nlist: int | None = None, nprobe: int | None = None, *,
              progress: bool = True, seed: int = 0) -> "AnnIndex":
        """Train on a sample and add `emb` (M, D) (float16 or float32, memory-mapped is fine) in chunks."""
        from tqdm import tqdm

        faiss = _faiss()
        m, d = emb.shape
        nlist = min(nlist or nlist_for(m), m)
        index = faiss.index_factory(d, f"IVF{nlist},SQ8", faiss.METRIC_INNER_PRODUCT)
        if faiss.get_num_gpus() > 0:
            index = faiss.index_cpu_to_all_gpus(index)
        n_train = min(m, TRAIN_PER_LIST * nlist)
        sample = np.sort(np.random.default_rng(seed).choice(m, n_train, replace=False))
        bar = tqdm(total=m + n_train, desc=f"building the gallery index (IVF{nlist},SQ8, {m:,} points)",
                   unit="pt", unit_scale=True, disable=not progress)
        index.train(_f32(emb[torch.from_numpy(sample)]))
        bar.update(n_train)
        for start in range(0, m, ADD_CHUNK):
            chunk = _f32(emb[start : start + ADD_CHUNK])
            index.add(chunk)
            bar.update(chunk.shape[0])
        bar.close()
        return cls(index, nprobe or nprobe_for(nlist))

    def search(self, queries: torch.Tensor, k: int) -> torch.Tensor:
        """(B, k) int64 ids of approximate top-k inner products; -1 pads when fewer exist."""
        faiss = _faiss()
        params = faiss.SearchParametersIVF(nprobe=self.nprobe)
        _, ids = self.index.search(_f32(queries), min(k, self.ntotal), params=params)
        return torch.from_numpy(ids)

    def save(self, path: Path) -> None:
        """Write atomically (`faiss.write_index`); a failure warns and keeps the index in memory only."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                _faiss().write_index(self._cpu(), str(tmp))
        except (OSError, RuntimeError) as err:
            warnings.warn(f"could not write gallery index {path} ({err}); keeping it in memory only", stacklevel=3)

    @classmethod
    def load(cls, path: Path, num_points: int, dim: int, nprobe: int) -> "AnnIndex | None":
        """The index at `path` if it is readable and holds `num_points` × `dim` inner-product vectors, else None
        (with a warning when the file exists)."""
        if not path.is_file():
            return None
        faiss = _faiss()
        try:
            index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
            ok = (index.ntotal == num_points and index.d == dim and index.metric_type == faiss.METRIC_INNER_PRODUCT
                  and index.is_trained)
            if not ok:
                raise ValueError(f"holds {index.ntotal} × {index.d} vectors, expected {num_points} × {dim}")
        except (RuntimeError, ValueError) as err:
            warnings.warn(f"gallery index {path} is unreadable or stale ({err}); rebuilding", stacklevel=3)
            return None
        if faiss.get_num_gpus() > 0:
            index = faiss.index_cpu_to_all_gpus(index)
        return cls(index, nprobe)


def _f32(t: torch.Tensor | np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(as_numpy(t), dtype=np.float32)


def index_path(embedding_path: Path, nlist: int) -> Path:
    """Where the index of a gallery is cached: beside its embeddings, same key, plus the index parameters."""
    return embedding_path.with_name(f"{embedding_path.stem}.ivf{nlist}-sq8.faiss")


def load_or_build(emb: torch.Tensor, path: Path | None, *, progress: bool = True) -> AnnIndex:
    """The cached index of `emb` at `path` (None: memory only), built and saved when missing or bad."""
    m, d = emb.shape
    nlist = min(nlist_for(m), m)
    if path is not None:
        found = AnnIndex.load(path, m, d, nprobe_for(nlist))
        if found is not None:
            return found
    index = AnnIndex.build(emb, nlist, progress=progress)
    if path is not None:
        index.save(path)
    return index


def background_sample(num_points: int, size: int = BACKGROUND, seed: int = 0) -> torch.Tensor:
    """(S,) sorted gallery positions of the fixed uniform sample that estimates the outside mass."""
    size = min(size, num_points)
    return torch.from_numpy(np.sort(np.random.default_rng(seed).choice(num_points, size, replace=False)))


@dataclass
class Retrieved:
    """Exact logits of each query's retrieved set and of the background sample.

    ids: (B, R) gallery positions, best first (-1 pads); logits: (B, R) (−inf on pads);
    bg_ids: (S,); bg_logits: (B, S); num_points: M.
    """

    ids: torch.Tensor
    logits: torch.Tensor
    bg_ids: torch.Tensor
    bg_logits: torch.Tensor
    num_points: int


def retrieve(index: AnnIndex, queries: torch.Tensor, emb: torch.Tensor, scale: torch.Tensor | float,
             bg_ids: torch.Tensor, r: int = RETRIEVE, bg_emb: torch.Tensor | None = None) -> Retrieved:
    """Approximate top-`r` from the index, re-scored exactly against `emb` (M, D), best first; `bg_emb`:
    the background sample's rows of `emb` as float32, when kept (saves a gather per call)."""
    q = queries.detach().float().cpu()
    scale = float(torch.as_tensor(scale).detach())
    ids = index.search(q, r)  # (B, r)
    valid = ids >= 0
    rows = emb[ids.clamp_min(0).reshape(-1)].float().reshape(*ids.shape, -1)  # (B, r, D) gathered (mmap-safe)
    cos = torch.einsum("bd,brd->br", q, rows)
    logits = torch.where(valid, scale * cos, torch.tensor(-math.inf))
    order = logits.argsort(dim=1, descending=True)
    ids, logits = ids.gather(1, order), logits.gather(1, order)
    bg_emb = emb[bg_ids].float() if bg_emb is None else bg_emb
    bg = scale * (q @ bg_emb.T)  # (B, S)
    return Retrieved(ids, logits, bg_ids, bg, int(emb.shape[0]))


def outside_log_mass(ret: Retrieved) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) log Z_out estimate and (B,) log of its hard bound, both over the points outside the retrieved set."""
    b, _ = ret.ids.shape
    m = ret.num_points
    valid = ret.ids >= 0
    n_out = (m - valid.sum(1)).double()  # (B,)
    # which background points were retrieved, per row, without a Python loop: row-tagged keys
    keys = torch.arange(b)[:, None] * m + ret.ids.clamp_min(0)
    keys = torch.where(valid, keys, torch.tensor(-1))
    bg_keys = torch.arange(b)[:, None] * m + ret.bg_ids[None]
    outside = ~torch.isin(bg_keys, keys)  # (B, S)
    n_bg = outside.sum(1).double()
    lse_bg = torch.logsumexp(torch.where(outside, ret.bg_logits.double(), torch.tensor(-math.inf,
                                                                                      dtype=torch.float64)), 1)
    estimate = torch.where(n_bg > 0, lse_bg + (n_out / n_bg.clamp_min(1)).log(), torch.tensor(-math.inf,
                                                                                              dtype=torch.float64))
    lowest = torch.where(valid, ret.logits.double(), torch.tensor(math.inf, dtype=torch.float64)).amin(1)
    bound = torch.where(n_out > 0, n_out.clamp_min(1).log() + lowest, torch.tensor(-math.inf, dtype=torch.float64))
    return estimate, bound


def indexed_prediction(ret: Retrieved, candidates: torch.Tensor, top_k: int, *, full: bool = False):
    """A `Prediction` from retrieved logits: full-gallery probabilities of the retrieved points (see the module
    docstring), `outside_mass` / `outside_bound`, and optionally `probs_full` (B, M)."""
    from geocore.models.prediction import Prediction

    m = ret.num_points
    if not 1 <= top_k <= min(m, ret.ids.shape[1]):
        raise ValueError(f"top_k must be between 1 and {min(m, ret.ids.shape[1])}, got {top_k}")
    log_out, log_bound = outside_log_mass(ret)
    lz_r = torch.logsumexp(ret.logits.double(), 1)  # (B,)
    lz = torch.logaddexp(lz_r, log_out)
    probs = (ret.logits.double() - lz[:, None]).exp()  # (B, R); pads → 0
    outside = (log_out - lz).exp()
    bound = (log_bound - torch.logaddexp(lz_r, log_bound)).exp()
    idx = ret.ids[:, :top_k]
    pred = Prediction(coords=candidates[idx.to(candidates.device)], probs=probs[:, :top_k].float(),
                      candidates=candidates, indices=idx, outside_mass=outside.float(), outside_bound=bound.float())
    if full:
        n_out = (m - (ret.ids >= 0).sum(1)).clamp_min(1).double()
        dense = (outside / n_out)[:, None].expand(-1, m + 1).clone()  # (B, M + 1) flat floor outside R
        dense.scatter_(1, torch.where(ret.ids >= 0, ret.ids, m), probs)  # pads land in the dropped column M
        pred.probs_full = dense[:, :m].float().to(candidates.device)
    return pred
