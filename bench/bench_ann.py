"""The approximate index (FAISS IVF-SQ8 + exact float16 re-ranking) against the exact float16 scan
(`python -m bench.bench_ann`, or `python -m bench.run --only ann`).

Gallery: real GeoCLIP location embeddings (the `geoclip` wheel's location encoder) of MP-16-like points: the
100K default gallery's coordinates repeated with a random offset of σ = 0.05° (≈ 5 km) in latitude and
longitude. The Fourier features run in float32 and the MLPs under bf16 autocast (≈ 2.4× faster on this CPU;
fine for a bench gallery, never used by geocore itself). Embeddings are cached as float16 .npy under
`--cache` (default /tmp/geocore-ann-bench), memory-mapped, so a 10M gallery (10.2 GB) is never held twice.

Queries: `n_queries` fresh jittered points (not in the gallery); a query is normalize(g(x) + σ z/√512) with g(x)
the point's own location embedding, σ = `noise` (as bench/bench_calibration.py makes stand-in photos).
Ground truth: the exact float16 scan (`geocore.models.retrieval.cosine_scores`), in chunks of the mmap.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

METHOD = """In-process; faiss-cpu 1.15.1. Gallery: real GeoCLIP location embeddings (the wheel's location encoder; Fourier features in float32, MLPs under bf16 autocast, max cosine deviation from fp32 2e-4) of the 100K gallery's coordinates jittered by σ = 0.05°, stored float16 and memory-mapped. Queries: 300 fresh jittered points' own location embeddings plus noise of norm 3 (as `bench_calibration` makes stand-in photos). Truth: the exact scan (float32 scores of the float16 rows). Index: `IVF512,SQ8`, inner product, the 1,000 candidates it proposes re-scored exactly from the float16 rows, plus an 8,192-point background sample for the outside mass. Exact = softmax + top-5 over the whole float16 matrix (`cosine_scores`)."""
NOTES = """Probabilities: the softmax is over the whole gallery. The retrieved points' share is exact; the share of the M − 1,000
other points is estimated from the background sample ((M − R)/|sample outside R| · Σ exp(logit), unbiased) and reported
as `Prediction.outside_mass`, with `outside_bound` = its value if every point outside scored as high as the last
retrieved one. `probs_full` (heat maps, hints, search regions) puts the outside mass as a flat floor on the points
outside R, so rows sum to 1. Search regions of an indexed gallery use the S2 cells that hold its points (level with
about M cells over the sphere), shared equally by the points in one cell (`geocore.geo.candidates.GalleryS2Cells`).

**100M and 1B, on paper (not measured).** Per point: `SQ8` codes 512 B, `PQ64` codes 64 B, ids 8 B; the float16
vectors for exact re-ranking 1 KB (on disk, memory-mapped, 1,000 random reads per query: ~1–2 ms on NVMe).
- 100M: `IVF65536_HNSW32,PQ64` (an HNSW graph over the centroids makes assignment cheap): 7.2 GB in RAM (codes + ids),
  100 GB of float16 vectors on NVMe for re-ranking; one machine, or one GPU (faiss GPU IVF-PQ: 7 GB of 80 GB). `SQ8`
  would need 52 GB of RAM. Train k-means on ~4M sampled points (64 per list), on a GPU.
- 1B: `IVF262144_HNSW32,PQ64`: 72 GB of codes + ids, 1 TB of float16 vectors. Shard by id range over 4 machines (18 GB of
  index RAM and 256 GB of vectors on each NVMe) or 2 GPUs (`faiss.IndexShards`, `index_cpu_to_all_gpus(shard=True)`),
  every shard answering its top-1,000 and the coordinator merging and re-ranking; the background sample (8K points) and
  the outside-mass estimate live on the coordinator. Embedding 1B points: ~14 h at this CPU's bf16 rate (19K points/s),
  minutes per shard on GPUs."""
CACHE = Path(os.environ.get("GEOCORE_ANN_BENCH_CACHE", "/tmp/geocore-ann-bench"))
JITTER_DEG = 0.05
CHUNK = 262_144


def _coords(n: int, seed: int) -> torch.Tensor:
    """(n, 2) jittered copies of the 100K default gallery (lat, lon), reproducible."""
    from geocore.geo.gallery import default_gallery

    base = default_gallery().double()
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, base.shape[0], (n,), generator=gen)
    pts = base[idx] + torch.randn(n, 2, generator=gen, dtype=torch.float64) * JITTER_DEG
    pts[:, 0] = pts[:, 0].clamp(-90.0, 90.0)
    pts[:, 1] = torch.remainder(pts[:, 1] + 180.0, 360.0) - 180.0
    return pts.float()


@torch.no_grad()
def _embed_bf16(enc, latlon: torch.Tensor) -> torch.Tensor:
    """Location embeddings with float32 Fourier features and bf16 MLPs (bench galleries only)."""
    from geocore.geo.projection import equal_earth

    xy = equal_earth(latlon)
    out = None
    for cap in enc.capsules:
        feats = cap.rff(xy)  # float32 phases
        with torch.autocast("cpu", dtype=torch.bfloat16):
            h = cap.head(cap.mlp(feats)).float()
        out = h if out is None else out + h
    return F.normalize(out, dim=-1)


def gallery_file(n: int, cache: Path = CACHE) -> Path:
    """The float16 embeddings of an `n`-point bench gallery (seed 1), computed once into `cache`."""
    from tqdm import tqdm

    from geocore.data.safe_io import atomic_path
    from geocore.models.location_encoder import load_location_encoder

    path = cache / f"gallery-{n}.f16.npy"
    if path.is_file():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    enc = load_location_encoder().eval()
    coords = _coords(n, seed=1)
    with atomic_path(path) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(n, 512))
        for s in tqdm(range(0, n, CHUNK), desc=f"embedding {n:,} points (bf16 MLPs)", unit="chunk"):
            out[s : s + CHUNK] = _embed_bf16(enc, coords[s : s + CHUNK]).half().numpy()
        out.flush()
        del out
    return path


def queries(n: int, noise: float, seed: int = 2) -> torch.Tensor:
    """(n, 512) stand-in image embeddings: fresh points' float32 location embeddings plus noise, normalised."""
    from geocore.models.location_encoder import load_location_encoder

    g = load_location_encoder().eval().embed(_coords(n, seed))
    z = torch.randn(n, 512, generator=torch.Generator().manual_seed(seed)) / 512**0.5
    return F.normalize(g + noise * z, dim=-1)


def _median_ms(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def exact_top5(q: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    """(Q, 5) exact top-5 over the float16 gallery (scores in float32), chunk by chunk over the memory map."""
    best_v, best_i = None, None
    for s in range(0, emb.shape[0], 4 * CHUNK):
        sc = q @ emb[s : s + 4 * CHUNK].float().T  # float32 scores of the float16 rows (fp16 outputs would tie)
        v, i = sc.topk(5, dim=1)
        i = i + s
        if best_v is not None:
            v, j = torch.cat([best_v, v], 1).topk(5, dim=1)
            i = torch.cat([best_i, i], 1).gather(1, j)
        best_v, best_i = v, i
    return best_i


def run(n: int, n_queries: int = 300, noise: float = 3.0, runs: int = 5, nprobes=None) -> list[dict]:
    """Recall@1/@5 vs the exact float16 scan, ms/query (batch 1 and 64) for both, index size, build time."""
    from geocore.models import ann_index as ai
    from geocore.models.prediction import Prediction
    from geocore.models.retrieval import cosine_scores

    emb = torch.from_numpy(np.load(gallery_file(n), mmap_mode="c"))  # (n, 512) float16
    q = queries(n_queries, noise)
    scale = 39.687  # GeoCLIP's logit scale (exp of the wheel's value)
    truth = exact_top5(q, emb)
    cand = torch.zeros(n, 2)

    def exact(b):
        Prediction.from_scores(scale * cosine_scores(q[:b], emb), cand, 5)

    exact_ms = {b: _median_ms(lambda b=b: exact(b), runs) / b for b in (1, 64)}
    t0 = time.perf_counter()
    index = ai.AnnIndex.build(emb)
    build_s = time.perf_counter() - t0
    nlist = int(index.index.nlist)
    bg = ai.background_sample(n)
    bg_emb = emb[bg].float()
    rows = []
    for nprobe in nprobes or sorted({max(1, nlist // 64), max(1, nlist // 32), ai.nprobe_for(nlist)}):
        index.nprobe = nprobe

        def ivf(b, qq=None):
            ret = ai.retrieve(index, q[:b] if qq is None else qq, emb, scale, bg, bg_emb=bg_emb)
            return ai.indexed_prediction(ret, cand, 5)

        got = torch.cat([ivf(0, q[s : s + 64]).indices for s in range(0, n_queries, 64)])
        r1 = (got[:, 0] == truth[:, 0]).float().mean().item()
        r5 = float(np.mean([len(set(a) & set(b)) / 5 for a, b in zip(got.tolist(), truth.tolist())]))
        ivf_ms = {b: _median_ms(lambda b=b: ivf(b), runs) / b for b in (1, 64)}
        rows.append({"points": n, "nlist": nlist, "nprobe": nprobe, "recall1": r1, "recall5": r5,
                     "ivf_ms": ivf_ms, "exact_ms": exact_ms, "index_mb": index.nbytes / 1e6, "build_s": build_s,
                     "rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6})
        print(rows[-1], flush=True)
    return rows


def table(rows: list[dict]) -> list[str]:
    """RESULTS.md rows."""
    out = ["| points | index | nprobe | recall@1 | recall@5 | ms/query, batch 1: index / exact (speed-up) | "
           "ms/query, batch 64: index / exact (speed-up) | index MB | build s | peak RSS |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = [f"{r['ivf_ms'][b]:.2f} / {r['exact_ms'][b]:.1f} ({r['exact_ms'][b] / r['ivf_ms'][b]:.0f}×)"
                 for b in (1, 64)]
        out.append(f"| {r['points']:,} | IVF{r['nlist']},SQ8 + exact re-rank of 1,000 | {r['nprobe']} | "
                   f"{r['recall1']:.3f} | {r['recall5']:.3f} | {cells[0]} | {cells[1]} | {r['index_mb']:,.0f} | "
                   f"{r['build_s']:.0f} | {r['rss_gb']:.1f} GB |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--embed", type=int, nargs="*", default=[], help="only compute these bench galleries")
    ap.add_argument("--points", type=int, nargs="*", default=[1_000_000, 10_000_000])
    ap.add_argument("--queries", type=int, default=300)
    args = ap.parse_args()
    for n in args.embed:
        t0 = time.perf_counter()
        print(gallery_file(n), f"{time.perf_counter() - t0:.0f} s",
              f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB", flush=True)
    if args.embed:
        return
    rows = [r for n in args.points for r in run(n, args.queries)]
    print("\n".join(table(rows)))


if __name__ == "__main__":
    main()
