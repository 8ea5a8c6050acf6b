"""Synthetic comparisons behind the faithfulness choices (docs/faithfulness.md): each choice trained both ways
on the same synthetic tasks, on CPU, with tiny random models (no weights, no network).

`python -m bench.faithfulness_compare [--seeds 3] [--steps 120] [--only translocator|geodecoder|pipeline]`
prints markdown tables (mean ± standard deviation over seeds, held-out accuracy):

- TransLocator, tensors: fusion (Eq. 4 between layers with shared f, g, vs geocore's former after-every-layer
  per-branch projections), heads (Table 0.A.2 vs linear), prediction rule (fine vs product). The RGB image
  says the coarse cell, the segmentation map says which of its four fine cells: both branches are needed.
- GeoDecoder, tensors: scene routing (the authors' predicted scene vs teacher forcing) × loss (the authors'
  0.5/0.3/0.2 with label smoothing 0.1 vs geocore's former unweighted, unsmoothed sum). The scene decides
  where in the image the location is shown.
- Pipeline, image files (Lightning, `fit_cell_model`): recipe fast vs paper (scaled down), best vs last
  checkpoint, single view vs ten-crop, and whether inference sees the segmentation map training saw.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from geocore.models.registry import create_model
from tests.test_translocator import tiny_partitions  # the suite's nested S2 partitions (5 / 10 / 20 cells)

TINY = {"embed_dim": 32, "depth": 2, "num_heads": 2, "img_size": 32}
TINY_DECODER = {"decoder_depth": 2, "decoder_heads": 2, "decoder_mlp": 64, "decoder_dropout": 0.0}


def markdown(frame: pd.DataFrame) -> str:
    """A frame as a markdown table (no `tabulate` needed)."""
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def _mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


# ---- TransLocator ----------------------------------------------------------------------------------------

def translocator_data(parents: torch.Tensor, n: int, seed: int, seg_noise: float = 0.8,
                      rgb_noise: float = 5.0) -> tuple[torch.Tensor, ...]:
    """RGB: a colour per coarse cell (+ noise); segmentation labels: class 10 + (fine index within its coarse
    cell) on a random `1 − seg_noise` of the pixels, random classes elsewhere. Returns rgb, seg, coarse,
    middle, fine, scene."""
    g = torch.Generator().manual_seed(10_000 + seed)
    base = torch.Generator().manual_seed(0)
    hues = torch.rand(5, 3, generator=base) * 2 - 1
    fine = torch.randint(20, (n,), generator=g)
    coarse = parents[fine, 1]
    rgb = hues[coarse][:, :, None, None] + rgb_noise * torch.randn(n, 3, 32, 32, generator=g)
    within = fine % 4  # which of the coarse cell's four fine cells (tiny_partitions are nested 1 → 2 → 2)
    seg = torch.randint(150, (n, 32, 32), generator=g)
    keep = torch.rand(n, 32, 32, generator=g) >= seg_noise
    seg = torch.where(keep, (10 + within)[:, None, None].expand(-1, 32, 32), seg)
    return rgb, seg, coarse, parents[fine, 0], fine, fine % 3


def train_translocator(cfg: dict[str, Any], seed: int, steps: int, batch: int = 32, lr: float = 3e-3,
                       n_test: int = 400) -> dict[str, float]:
    """Train a tiny TransLocator with `cfg` for `steps` AdamW steps; held-out accuracies."""
    torch.manual_seed(seed)
    m = create_model("translocator", partitions=tiny_partitions(), backbone_kwargs=TINY, **cfg).train()
    opt = torch.optim.AdamW(m.parameters(), lr=lr)
    for step in range(steps):
        rgb, seg, *labels = translocator_data(m.parents, batch, seed * 100_000 + step)
        loss = m.loss(m(rgb, m.prepare_seg(seg, (32, 32))), *labels)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    rgb, seg, coarse, _, fine, _ = translocator_data(m.parents, n_test, 99_999)
    out: dict[str, float] = {}
    with torch.no_grad():
        logits = m(rgb, m.prepare_seg(seg, (32, 32)))
        out["coarse"] = float((logits["coarse"].argmax(-1) == coarse).float().mean())
        for mode in ("fine", "product"):
            m.combine = mode
            out[f"fine top-1 ({mode})"] = float((m.predict(rgb, 1, seg=seg).indices[:, 0] == fine).float().mean())
        out["weight on seg"] = float(logits["weights"][:, 1].mean())
    return out


TRANSLOCATOR_SETTINGS: dict[str, dict[str, Any]] = {
    "paper (default): fusion between layers, shared f/g; Table 0.A.2 heads": {},
    "fusion after every layer, per-branch projections (former)": {"fusion_layers": "all",
                                                                  "fusion_projections": "per_branch"},
    "fusion after every layer, shared f/g": {"fusion_layers": "all"},
    "fusion between layers, per-branch projections": {"fusion_projections": "per_branch"},
    "linear heads (former), paper fusion": {"head_hidden": [0, 0, 0]},
    "former model: every-layer per-branch fusion, linear heads": {
        "fusion_layers": "all", "fusion_projections": "per_branch", "head_hidden": [0, 0, 0]},
}


def compare_translocator(seeds: int = 3, steps: int = 120) -> pd.DataFrame:
    rows = []
    for name, cfg in TRANSLOCATOR_SETTINGS.items():
        runs = [train_translocator(cfg, seed, steps) for seed in range(seeds)]
        rows.append({"setting": name, **{k: _mean_sd([r[k] for r in runs]) for k in runs[0]}})
    return pd.DataFrame(rows)


# ---- GeoDecoder ------------------------------------------------------------------------------------------

def geodecoder_data(parents: torch.Tensor, n: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Three scenes; the location (a colour per fine cell, near its coarse cell's hue) is painted in the
    scene's own quarter of the image (top-left, top-right, bottom-left), the other two quarters get random
    colours, and the bottom-right quarter's brightness shows the scene. Returns rgb, coarse, middle, fine,
    scene."""
    g = torch.Generator().manual_seed(20_000 + seed)
    base = torch.Generator().manual_seed(1)
    hues = torch.rand(5, 3, generator=base) * 2 - 1
    palette = hues[parents[:, 1]] + 0.6 * (torch.rand(20, 3, generator=base) * 2 - 1)  # (20, 3)
    fine = torch.randint(20, (n,), generator=g)
    scene = torch.randint(3, (n,), generator=g)
    rgb = torch.zeros(n, 3, 32, 32)
    quarters = [(slice(0, 16), slice(0, 16)), (slice(0, 16), slice(16, 32)), (slice(16, 32), slice(0, 16))]
    for q, (ys, xs) in enumerate(quarters):
        colour = torch.where((scene == q)[:, None], palette[fine], torch.rand(n, 3, generator=g) * 2 - 1)
        rgb[:, :, ys, xs] = colour[:, :, None, None]
    rgb[:, :, 16:, 16:] = (scene.float() - 1.0)[:, None, None, None]  # the scene's sign: -1, 0, 1
    rgb = rgb + 0.2 * torch.randn(rgb.shape, generator=g)
    return rgb, parents[fine, 1], parents[fine, 0], fine, scene


def train_geodecoder(cfg: dict[str, Any], seed: int, steps: int, batch: int = 32, lr: float = 3e-3,
                     n_test: int = 400) -> dict[str, float]:
    torch.manual_seed(seed)
    m = create_model("geodecoder", partitions=tiny_partitions(), backbone_kwargs=TINY, scene_classes=3,
                     **{**TINY_DECODER, **cfg}).train()
    opt = torch.optim.AdamW(m.parameters(), lr=lr)
    for step in range(steps):
        rgb, *labels = geodecoder_data(m.parents, batch, seed * 100_000 + step)
        loss = m.loss(m(rgb, scene=labels[-1]), *labels)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    rgb, coarse, _, fine, scene = geodecoder_data(m.parents, n_test, 99_999)
    with torch.no_grad():
        out = m(rgb)
        res = {"scene": float((out["scene"].argmax(-1) == scene).float().mean()),
               "coarse": float((out["coarse"].argmax(-1) == coarse).float().mean())}
        for mode in ("product", "fine"):
            m.combine = mode
            res[f"fine top-1 ({mode})"] = float((m.predict(rgb, 1).indices[:, 0] == fine).float().mean())
    return res


AUTHORS_LOSS = {"level_weights": [0.5, 0.3, 0.2], "label_smoothing": 0.1}
FORMER_LOSS = {"level_weights": [1.0, 1.0, 1.0], "label_smoothing": 0.0}
GEODECODER_SETTINGS: dict[str, dict[str, Any]] = {
    "predicted scene (authors), authors' loss": {"teacher_forcing": False, **AUTHORS_LOSS},
    "true scene (teacher forcing), authors' loss": {"teacher_forcing": True, **AUTHORS_LOSS},
    "predicted scene (authors), former loss": {"teacher_forcing": False, **FORMER_LOSS},
    "true scene (teacher forcing), former loss": {"teacher_forcing": True, **FORMER_LOSS},
}


def compare_geodecoder(seeds: int = 5, steps: int = 200) -> pd.DataFrame:
    rows = []
    for name, cfg in GEODECODER_SETTINGS.items():
        runs = [train_geodecoder(cfg, seed, steps) for seed in range(seeds)]
        rows.append({"setting": name, **{k: _mean_sd([r[k] for r in runs]) for k in runs[0]}})
    return pd.DataFrame(rows)


# ---- the image pipeline (Lightning) ----------------------------------------------------------------------

REGIONS = [(48.86, 2.35), (40.71, -74.01), (35.68, 139.69), (-33.87, 151.21)]
COLOURS = [(220, 40, 40), (40, 200, 60), (40, 60, 220), (230, 220, 40)]


def synthetic_photos(folder: Path, per_region: int = 30, seed: int = 0, size: tuple[int, int] = (48, 40),
                     noise: float = 25.0) -> tuple[Path, tuple[str, str, str]]:
    """Photos whose colour says which of four regions they were taken in, a label CSV and 3 partitions."""
    from PIL import Image

    from geocore.geo.cells_build import build_partition, write_partition

    rng = np.random.default_rng(seed)
    rows = []
    for r, ((lat, lon), colour) in enumerate(zip(REGIONS, COLOURS)):
        for i in range(per_region):
            pixels = np.clip(np.array(colour) + rng.normal(0, noise, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"img_{r}_{i}.png")
            rows.append({"IMG_FILE": f"img_{r}_{i}.png", "LAT": lat + rng.uniform(-1.5, 1.5),
                         "LON": lon + rng.uniform(-1.5, 1.5), "S3_Label": r % 3})
    frame = pd.DataFrame(rows)
    frame.to_csv(folder / "train.csv", index=False)
    latlon = frame[["LAT", "LON"]].to_numpy()
    parts = tuple(str(write_partition(build_partition(latlon, min_images=1, max_images=m), folder / f"cells_{m}.csv"))
                  for m in (40, 16, 8))
    return folder / "train.csv", parts  # type: ignore[return-value]


def tiny_segmenter() -> Any:
    from transformers import SegformerConfig

    from geocore.models.segmenter import Segmenter

    cfg = SegformerConfig(num_labels=150, hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1],
                          decoder_hidden_size=16, num_attention_heads=[1, 1, 1, 1], mlp_ratios=[2, 2, 2, 2])
    return Segmenter.from_config(cfg, image_size=64)


def _val_metrics(out: Path) -> pd.DataFrame:
    metrics = pd.read_csv(next(out.glob("logs/*/metrics.csv")))
    return metrics.dropna(subset=["val_acc_2500km"])


def compare_pipeline(seeds: int = 2, fast_epochs: int = 10, paper_epochs: int = 10, init_epochs: int = 3,
                     noise: float = 25.0) -> pd.DataFrame:
    """Recipe fast vs paper (scaled down) on synthetic photos (the colour tells the region, nothing tells the
    fine cell within it): held-out accuracy within 2500 km of the last and the best checkpoint (best by
    validation accuracy within 2500 km), centre view and ten-crop."""
    from geocore.data.images import load_image
    from geocore.geo.distance import haversine_km
    from geocore.models.views import batch_inputs
    from geocore.train.cells_run import fit_cell_model

    rows = []
    fast = dict(val_fraction=0.25, accelerator="cpu", num_workers=0, log_every_n_steps=1, progress=False,
                batch_size=16, best_metric="val_acc_2500km")
    recipes = {
        "fast (AdamW 1e-3 here, random resized crops)": dict(recipe="fast", lr=1e-3, epochs=fast_epochs),
        "paper (SGD as the authors' code, ViT-MT init, paper augmentation, ten-crop)": dict(
            recipe="paper", epochs=paper_epochs, init_epochs=init_epochs),
        "paper, AdamW at the text's lr 0.1": dict(recipe="paper", epochs=paper_epochs, init_epochs=init_epochs,
                                                  optimizer="adamw", lr=0.1, lr_factors=(1.0, 1.0)),
    }
    for name, opts in recipes.items():
        runs: list[dict[str, float]] = []
        for seed in range(seeds):
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp)
                csv, parts = synthetic_photos(folder, seed=seed, noise=noise)
                t0 = time.perf_counter()
                res = fit_cell_model("translocator", csv, folder, partitions=parts, output_dir=folder / "run",
                                     segmenter=tiny_segmenter(), pretrained=None, seed=seed,
                                     model_kwargs={"backbone_kwargs": TINY}, **{**fast, **opts})
                seconds = time.perf_counter() - t0
                val = _val_metrics(folder / "run")
                ids = res.datamodule.val_ids
                truth = torch.as_tensor(res.datamodule.dataset.frame.set_index("IMG_ID").loc[ids, ["LAT", "LON"]]
                                        .to_numpy(np.float64))
                row = {"seconds": seconds, "val acc@2500km, last epoch": float(val["val_acc_2500km"].iloc[-1]),
                       "best epoch": float(val["val_acc_2500km"].max())}
                for label, path in (("last", res.checkpoint), ("best", res.best)):
                    model = create_model("translocator", pretrained=str(path), segmenter=tiny_segmenter()).eval()
                    photos = [load_image(folder / i) for i in ids]
                    for tencrop in (False, True):
                        pixels, extra = batch_inputs([model.prepare(p, tencrop) for p in photos])
                        top1 = model.predict(pixels, 1, **extra).top1.double()
                        hit = haversine_km(top1, truth) <= 2500
                        row[f"{label} ckpt, {'ten-crop' if tencrop else 'centre view'}"] = float(hit.float().mean())
                runs.append(row)
        rows.append({"recipe": name, **{k: _mean_sd([r[k] for r in runs]) for k in runs[0]}})
    return pd.DataFrame(rows)


def segmentation_agreement(n: int = 12, seed: int = 0) -> dict[str, float]:
    """Share of pixels where the segmentation input at inference equals the one training used (the cached
    whole-photo map, cut like the photo): the whole-photo path vs the former one (the segmenter run on the
    network input, the centre crop, upsampled to its own input size)."""
    from PIL import Image

    from geocore.models.layers.seg_palette import render_segmentation
    from geocore.models.segmenter import SEG_SHORT_SIDE, map_size
    from geocore.models.views import centre_view, crop_map

    rng = np.random.default_rng(seed)
    seg = tiny_segmenter()
    model = create_model("translocator", partitions=tiny_partitions(), backbone_kwargs=TINY, segmenter=seg).eval()
    whole, former = [], []
    for _ in range(n):
        w, h = int(rng.integers(40, 160)), int(rng.integers(40, 160))
        photo = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        cached = seg.label_maps(seg.photo_input(photo)[None], [map_size(w, h, SEG_SHORT_SIDE)])[0]  # cache_segmaps
        train = np.asarray(crop_map(Image.fromarray(cached, mode="L"), centre_view(model.preprocess, w, h), 32))
        inp = model.prepare(photo)
        now = model.segment_views(inp["seg_photo"][None], inp["seg_views"][None], inp["seg_size"][None])[0, 0]
        whole.append(float((now.numpy() == train).mean()))
        old = seg(model.preprocess(photo)[None])  # (1, 3, 32, 32) colour map of the crop itself
        former.append(float((old == render_segmentation(torch.from_numpy(train)[None].long())).all(1).float().mean()))
    return {"whole photo, cut like the photo (now)": statistics.mean(whole),
            "segmenter on the centre crop (former)": statistics.mean(former)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--only", choices=("translocator", "geodecoder", "pipeline"), default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    jobs: dict[str, Callable[[], Any]] = {
        "translocator": lambda: compare_translocator(args.seeds, args.steps),
        "geodecoder": lambda: compare_geodecoder(args.seeds + 2, args.steps + 80),
        "pipeline": lambda: (compare_pipeline(max(1, args.seeds - 1)),
                             compare_pipeline(max(1, args.seeds - 1), 4, 4, 1, noise=120.0),
                             segmentation_agreement()),
    }
    for name, job in jobs.items():
        if args.only not in (None, name):
            continue
        t0 = time.perf_counter()
        result = job()
        print(f"\n### {name} ({time.perf_counter() - t0:.0f} s)\n")
        for part in result if isinstance(result, tuple) else (result,):
            print(markdown(part) if isinstance(part, pd.DataFrame) else part, flush=True)


if __name__ == "__main__":
    main()
