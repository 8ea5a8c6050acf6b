"""GeoCLIP benchmarks against the reference `geoclip` package, measured in the same run.

Both sides use the same random ViT-L/14 backbone weights (real CLIP weights are not on this machine;
speed does not depend on the values) and the real heads and 100K gallery from the geoclip wheel.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.timing import measure
from geocore.locate import locate
from geocore.models.convert_hf_clip import hf_clip_to_open_clip, open_clip_cfg_from_hf_config
from geocore.models.clip_backbone import build_clip
from geocore.models.geoclip import geoclip_from_clip
from geocore.models.registry import create_model


def _reference_and_ours():
    import geoclip

    ref = geoclip.GeoCLIP(clip_pretrained=False).eval()  # real heads + random ViT-L/14 (transformers)
    cfg = open_clip_cfg_from_hf_config(ref.image_encoder.CLIP.config)
    clip = build_clip(None, cfg, state_dict=hf_clip_to_open_clip(ref.image_encoder.CLIP.state_dict()))
    ours = geoclip_from_clip(clip, clip_model="ViT-L-14", tag="openai").eval()
    return ref, ours


def locate_and_retrieval(runs: int = 5) -> list[dict]:
    """End-to-end locate of one photo, and the retrieval step alone, ours vs `geoclip.predict`."""
    torch.manual_seed(0)
    ref, ours = _reference_and_ours()
    photo = Path(tempfile.mkdtemp()) / "photo.jpg"
    Image.fromarray((np.random.default_rng(0).random((480, 640, 3)) * 255).astype("uint8")).save(photo)
    ours.gallery_embeddings()  # the one-time cache fill, not part of a prediction
    with torch.no_grad():
        t_ref = measure(lambda: ref.predict(str(photo), top_k=5), runs=runs)
        t_ours = measure(lambda: locate(ours, [("photo", photo)], top_k=5), runs=runs)
        emb = ours.image_embeddings(ours.preprocess(Image.open(photo).convert("RGB"))[None])
        gallery = ref.gps_gallery

        def ref_retrieval():  # what predict() does after the image encoder: re-encode the gallery
            loc = torch.nn.functional.normalize(ref.location_encoder(gallery), dim=1)
            return (ref.logit_scale.exp() * emb @ loc.T).softmax(-1).topk(5)

        r_ref = measure(ref_retrieval, runs=runs)
        r_ours = measure(lambda: ours.predict_embeddings(emb, 5), runs=max(runs, 20))
    return [
        {"name": "locate one photo end to end (ViT-L/14, 100K gallery)", "baseline": "geoclip.predict",
         "baseline_t": t_ref, "ours_t": t_ours},
        {"name": "retrieval given the image embedding (100K gallery)", "baseline": "geoclip (re-encodes gallery)",
         "baseline_t": r_ref, "ours_t": r_ours},
    ]


def _unit_gallery(m: int, half: bool, chunk: int = 500_000) -> torch.Tensor:
    """(m, 512) random unit embeddings, built chunk by chunk straight into the scan dtype (10M fp16 = 10 GB)."""
    out = torch.empty(m, 512, dtype=torch.float16 if half else torch.float32)
    g = torch.Generator().manual_seed(m)
    for start in range(0, m, chunk):
        n = min(chunk, m - start)
        out[start : start + n] = torch.nn.functional.normalize(torch.randn(n, 512, generator=g), dim=1)
    return out


def gallery_scaling(sizes=(10_000, 100_000, 1_000_000, 10_000_000), runs: int = 5) -> list[dict]:
    """Per-query retrieval time and gallery memory against gallery size (random unit embeddings).

    Above 250K points the gallery is held in float16 only, the way a scan at that size must be stored.
    """
    from geocore.models.retrieval import HALF_PRECISION_ABOVE, cosine_scores

    rows = []
    q = torch.nn.functional.normalize(torch.randn(1, 512), dim=1)
    for m in sizes:
        half = m > HALF_PRECISION_ABOVE
        g = _unit_gallery(m, half)
        t = measure(lambda: cosine_scores(q, g, half=half).softmax(-1).topk(5), runs=runs)
        rows.append({"gallery": m, "t": t, "memory_mb": g.numel() * g.element_size() / 1e6,
                     "scan_dtype": "float16" if half else "float32"})
        del g
    return rows


def location_encoder_throughput(n: int = 20_000, runs: int = 5) -> list[dict]:
    """Points per second through the location encoder, float32 vs bfloat16 (CPU autocast)."""
    model = create_model("geoclip-tiny")
    pts = torch.stack([torch.rand(n) * 180 - 90, torch.rand(n) * 360 - 180], 1)
    enc = model.location_encoder
    with torch.no_grad():
        t32 = measure(lambda: enc(pts), runs=runs)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            t16 = measure(lambda: enc(pts), runs=runs)
            diff = torch.nn.functional.cosine_similarity(enc(pts).float(), model.embed_locations(pts)).min()
    return [{"n": n, "fp32": t32, "bf16": t16, "bf16_min_cosine": float(diff)}]


def evaluate_throughput(n_images: int = 16, batch_size: int = 8) -> list[dict]:
    """`geocore evaluate` images/s on this CPU (ViT-L/14) vs a loop of `geoclip.predict` over the same files."""
    import time

    import pandas as pd

    from geocore.eval.evaluate import evaluate

    torch.manual_seed(0)
    ref, ours = _reference_and_ours()
    ours.gallery_embeddings()
    folder = Path(tempfile.mkdtemp())
    rng = np.random.default_rng(1)
    rows = []
    for i in range(n_images):
        name = f"img{i:03d}.jpg"
        Image.fromarray((rng.random((360, 480, 3)) * 255).astype("uint8")).save(folder / name)
        rows.append({"IMG_ID": name, "LAT": float(rng.uniform(-60, 60)), "LON": float(rng.uniform(-180, 180))})
    csv = folder / "bench.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    t0 = time.perf_counter()
    evaluate(ours, csv, folder, folder / "results.parquet", batch_size=batch_size, progress=False)
    ours_s = time.perf_counter() - t0
    n_ref = min(4, n_images)  # the reference takes ~15 s an image here
    t0 = time.perf_counter()
    with torch.no_grad():
        for r in rows[:n_ref]:
            ref.predict(str(folder / r["IMG_ID"]), top_k=5)
    ref_s = time.perf_counter() - t0
    return [{"ours_img_s": n_images / ours_s, "ref_img_s": n_ref / ref_s, "n": n_images, "n_ref": n_ref}]
