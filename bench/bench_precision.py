"""bf16 against fp32 inference on real-size random backbones: how often the answers agree, and the speed.

GeoCLIP: open_clip ViT-L/14 with random weights (no backbone weights on this machine) and the real heads and
100K gallery from the `geoclip` wheel (`create_model("geoclip", pretrained=None)`). TransLocator: its two
ViT-B/16 branches and the paper's heads, random, on 12,893 fine cells. bf16 = `use_precision("bf16")` (the
towers under bf16 autocast; location encoder, gallery scan and softmax in float32), fp32 = the default.

Photos are stand-ins with natural image statistics: crops (random place, size, mirror) of the three photos that
ship with scikit-learn and matplotlib, and hill-shaded elevation models from matplotlib's sample data. A random
backbone maps noise images to nearly one embedding, which would make agreement meaningless; the number of
distinct fp32 top-1s is reported so the reader can judge how spread the answers are.

Each batch runs fp32 then bf16, batch after batch (both see the same load on this shared CPU), after one
untimed batch of each; images/s = images / summed batch times, in-process, on preprocessed pixels: GeoCLIP's
image embedding and its exact softmax over the 100K gallery, TransLocator's fine-cell probabilities.

`python -m bench.bench_precision [N_GEOCLIP N_CELLS]` prints the RESULTS.md section; `bench.run --only precision`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from geocore.models.precision import cpu_bf16_flags, use_precision
from geocore.models.registry import create_model


def _source_images() -> list[Image.Image]:
    """Natural photos and terrain renderings bundled with installed packages (no download)."""
    import matplotlib
    import sklearn
    from matplotlib import cm
    from matplotlib.colors import LightSource

    sample = Path(matplotlib.get_data_path()) / "sample_data"
    photos = [Path(sklearn.__file__).parent / "datasets" / "images" / name for name in ("china.jpg", "flower.jpg")]
    out = [Image.open(p).convert("RGB") for p in (*photos, sample / "grace_hopper.jpg")]
    light = LightSource(azdeg=315, altdeg=45)
    dems = [np.load(sample / "jacksboro_fault_dem.npz")["elevation"], np.load(sample / "topobathy.npz")["topo"]]
    for dem, cmap in [(dems[0], cm.gist_earth), (dems[0], cm.terrain), (dems[1], cm.gist_earth)]:
        rgb = light.shade(dem.astype(float), cmap=cmap, blend_mode="soft", vert_exag=2)[..., :3]
        out.append(Image.fromarray((rgb * 255).astype(np.uint8)).resize((480, 400), Image.Resampling.BICUBIC))
    return out


def stand_in_photos(n: int, seed: int = 0) -> list[Image.Image]:
    """`n` crops (random place, 35–100 % of the shorter side, mirrored half the time) of the source images."""
    rng = np.random.default_rng(seed)
    sources = _source_images()
    out = []
    for i in range(n):
        img = sources[i % len(sources)]
        side = int(min(img.size) * rng.uniform(0.35, 1.0))
        w, h = int(side * rng.uniform(1.0, 1.4)), side
        w = min(w, img.width)
        left, top = int(rng.integers(0, img.width - w + 1)), int(rng.integers(0, img.height - h + 1))
        crop = img.crop((left, top, left + w, top + h))
        out.append(crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else crop)
    return out


def _timed(fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _compare(run: Callable[[torch.Tensor], torch.Tensor], batches: list) -> dict:
    """Run every batch in fp32 then bf16 (interleaved); (N, K) probabilities of each and the summed times."""
    with torch.no_grad():
        for precision in ("fp32", "bf16"):  # untimed warm-up: first-call costs (oneDNN kernels, caches)
            with use_precision(precision):
                run(batches[0])
        probs: dict[str, list[torch.Tensor]] = {"fp32": [], "bf16": []}
        secs = {"fp32": 0.0, "bf16": 0.0}
        for batch in batches:
            for precision in ("fp32", "bf16"):
                with use_precision(precision):
                    p, s = _timed(lambda: run(batch))
                probs[precision].append(p)
                secs[precision] += s
    return {"p32": torch.cat(probs["fp32"]), "p16": torch.cat(probs["bf16"]), "s32": secs["fp32"],
            "s16": secs["bf16"]}


def agreement(p32: torch.Tensor, p16: torch.Tensor, k: int = 5) -> dict:
    """Top-1 and top-k set agreement, largest |Δprob| over the whole distribution, spread of the fp32 answers."""
    top32, top16 = p32.topk(k, dim=1).indices, p16.topk(k, dim=1).indices
    per_image = (p32 - p16).abs().amax(1)  # (N,)
    return {
        "n": int(p32.shape[0]),
        "top1": float((top32[:, 0] == top16[:, 0]).float().mean()),
        "topk_set": float((top32.sort(1).values == top16.sort(1).values).all(1).float().mean()),
        "top1_in_topk": float((top16[:, :1] == top32).any(1).float().mean()),
        "max_dprob": float(per_image.max()),
        "median_dprob": float(per_image.median()),
        "median_top1_prob": float(p32.amax(1).median()),
        "distinct_top1": len(set(top32[:, 0].tolist())),
        "candidates": int(p32.shape[1]),
        "disagree": (top32[:, 0] != top16[:, 0]).nonzero().flatten().tolist(),
        "top1_32": top32[:, 0], "top1_16": top16[:, 0],
    }


def geoclip_agreement(n: int = 48, batch_size: int = 8, n_cam: int = 4) -> dict:
    """GeoCLIP (random ViT-L/14, real heads, 100K gallery): agreement and images/s, fp32 vs bf16; Grad-CAM too."""
    from geocore.geo.distance import haversine_km

    model = create_model("geoclip", pretrained=None)
    locations = model.gallery_embeddings()  # the one-time gallery cache fill, not part of a prediction
    photos = stand_in_photos(n)
    pixels = torch.stack([model.preprocess(im) for im in photos])
    batches = list(pixels.split(batch_size))
    res = _compare(lambda x: model.similarity_logits(model.image_embeddings(x), locations).softmax(-1), batches)
    out = {**agreement(res["p32"], res["p16"]), "s32": res["s32"], "s16": res["s16"], "batch": batch_size}
    gallery = model.gallery.double().numpy()
    km = haversine_km(gallery[out["top1_32"].numpy()], gallery[out["top1_16"].numpy()])
    out["disagree_km"] = [float(km[i]) for i in out["disagree"]]
    emb = {}
    with torch.no_grad():
        for precision in ("fp32", "bf16"):
            with use_precision(precision):
                emb[precision] = model.image_embeddings(batches[0])
    out["min_cosine"] = float(torch.nn.functional.cosine_similarity(emb["fp32"], emb["bf16"]).min())
    out["cam"] = gradcam_agreement(model, photos[:n_cam], out["top1_32"][:n_cam].tolist())
    return out


def gradcam_agreement(model: torch.nn.Module, photos: list[Image.Image], targets: list[int]) -> dict:
    """Grad-CAM maps of the same targets in fp32 and bf16: Pearson correlation (of maps that are not flat: a
    random backbone can give a map of zeros), largest difference, time."""
    from geocore.explain.gradcam import gradcam

    corr, diff, flat, secs = [], [], [], {"fp32": 0.0, "bf16": 0.0}
    for img, target in zip(photos, targets):
        cams = {}
        for precision in ("fp32", "bf16"):
            cams[precision], s = _timed(lambda: gradcam(model, img, target, precision=precision).cam)
            secs[precision] += s
        a, b = cams["fp32"].ravel(), cams["bf16"].ravel()
        if a.std() > 0 and b.std() > 0:
            corr.append(float(np.corrcoef(a, b)[0, 1]))
        else:
            flat.append((float(a.max()), float(b.max())))
        diff.append(float(np.abs(a - b).max()))
    return {"n": len(photos), "min_corr": min(corr, default=float("nan")), "n_corr": len(corr), "flat": flat,
            "max_diff": max(diff), "s32": secs["fp32"], "s16": secs["bf16"]}


def _seg_labels(pixels: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(B, H, W) stand-in ADE20K label maps from the photos' colours (sky, tree, grass, water, road, building…)."""
    rgb = (pixels * std + mean).clamp(0, 1)  # (B, 3, H, W)
    bright = (rgb.mean(1) * 2.999).long()  # 0..2
    dominant = rgb.argmax(1)  # 0 red, 1 green, 2 blue
    # building, road, tree, wall, grass, sky, sidewalk, mountain, water
    ade = torch.tensor([1, 6, 4, 0, 9, 2, 11, 17, 21])
    return ade[bright * 3 + dominant]


def translocator_agreement(n: int = 32, batch_size: int = 8) -> dict:
    """TransLocator (two random ViT-B/16 branches, the paper's heads, 12,893 fine cells): fine-cell agreement
    and images/s, fp32 vs bf16 (the default `combine="fine"` predicts from these probabilities)."""
    torch.manual_seed(0)
    model = create_model("translocator", pretrained=None).eval()
    pixels = torch.stack([model.preprocess(im) for im in stand_in_photos(n, seed=1)])
    seg = model.prepare_seg(_seg_labels(pixels, model.mean, model.std), tuple(pixels.shape[-2:]))
    batches = list(zip(pixels.split(batch_size), seg.split(batch_size)))
    res = _compare(lambda b: model.level_probs(b[0], seg=b[1])[2], batches)
    return {**agreement(res["p32"], res["p16"]), "s32": res["s32"], "s16": res["s16"], "batch": batch_size}


def run(n_geoclip: int = 48, n_cells: int = 32) -> dict:
    """Both measurements (about 10 minutes on 2 busy EPYC cores at the defaults)."""
    return {"geoclip": geoclip_agreement(n_geoclip), "translocator": translocator_agreement(n_cells)}


def _cpu() -> str:
    flags = cpu_bf16_flags()
    return f"this CPU has {', '.join(flags)}" if flags else "this CPU has no native bf16 (AMX / AVX512-BF16)"


def section(result: dict) -> list[str]:
    """The RESULTS.md section (title first) for `run()`'s result."""
    g, t = result["geoclip"], result["translocator"]
    cam = g["cam"]

    def row(name: str, r: dict) -> str:
        return (f"| {name} | {r['n']} | {r['distinct_top1']} | {100 * r['top1']:.1f} % | {100 * r['topk_set']:.1f} % | "
                f"{100 * r['top1_in_topk']:.1f} % | {r['max_dprob']:.2g} (median {r['median_dprob']:.2g}) | "
                f"{r['median_top1_prob']:.2g} | {r['n'] / r['s32']:.2f} | {r['n'] / r['s16']:.2f} | "
                f"{r['s32'] / r['s16']:.2f}× |")

    km = " and ".join(f"{v:,.0f}" for v in g["disagree_km"])
    differ = (f"where the top-1s differ ({len(g['disagree_km'])} photos), they are {km} km apart"
              if km else "the top-1s never differ")
    flat = (f"; {len(cam['flat'])} pair(s) with a flat map (max fp32, bf16: "
            + ", ".join(f"{a:.2f}, {b:.2f}" for a, b in cam["flat"]) + ")") if cam["flat"] else ""
    return [
        "## Precision: bf16 against fp32",
        "",
        f"`bench/bench_precision.py`, in-process, {torch.get_num_threads()} torch threads, {_cpu()}: batches of "
        f"{g['batch']} preprocessed stand-in photos (crops of the photos bundled with scikit-learn and matplotlib "
        "and hill-shaded elevation maps), each batch in fp32 then in bf16 (`use_precision`: the towers under bf16 "
        "autocast; location encoder, gallery scan and softmax in float32). Random real-size backbones (no weights "
        "here): GeoCLIP = open_clip ViT-L/14 + the real heads and 100K gallery; TransLocator = two ViT-B/16 branches "
        "+ the paper's heads, 12,893 fine cells. Timed: GeoCLIP's image embedding and exact softmax over the gallery, "
        "TransLocator's fine-cell probabilities. Agreement is of bf16 with fp32 on the same photos.",
        "",
        "| model | photos | distinct fp32 top-1s | top-1 agrees | top-5 set agrees | bf16 top-1 in fp32 top-5 | "
        "max \\|Δprob\\| over the full distribution | median fp32 top-1 prob | fp32 images/s | bf16 images/s | "
        "bf16 speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        row("GeoCLIP (ViT-L/14)", g),
        row("TransLocator (2 × ViT-B/16)", t),
        "",
        f"GeoCLIP: the smallest cosine between a photo's fp32 and bf16 image embedding was {g['min_cosine']:.4f} "
        f"(first batch); {differ}. Grad-CAM (`geocore explain`: forward and backward under bf16) on {cam['n']} "
        f"photos, the fp32 top-1 as target: map correlation with fp32 ≥ {cam['min_corr']:.3f} over {cam['n_corr']} "
        f"photo(s){flat}; largest pixel difference {cam['max_diff']:.2f} (maps in [0, 1]); "
        f"{cam['s32'] / cam['s16']:.2f}× the fp32 speed. The backbones are random, so the distributions are flat "
        f"(median fp32 top-1 probability {g['median_top1_prob']:.2g} over {g['candidates']:,} points) and the "
        "answers less spread than a trained model's; agreement with trained weights was not measured.",
    ]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    sizes = [int(v) for v in argv[:2]]
    print("\n".join(section(run(*sizes))))


if __name__ == "__main__":
    main()
