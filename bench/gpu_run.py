"""The one prepared GPU run (issues 10 and 11): real-size models in bf16, images/s against the chip's ceiling.

    python -m bench.gpu_run --out $OUT            # on the lent GPU; about 5–7 minutes on an H100/H200
    python -m bench.gpu_run --smoke --out /tmp/x  # tiny models on the CPU: checks the script itself (tests do)

What it measures, each model with random weights (speed does not depend on their values):
- the model caches this machine holds (~/.cache/huggingface, ~/.cache/torch, ~/.cache/clip) and nvidia-smi;
- per model (GeoCLIP ViT-L/14, TransLocator dual ViT-B/16, GeoDecoder ViT-B/16), one real-size training step
  as training runs it (GeoCLIP: frozen backbone + heads' contrastive loss; cell models: every parameter), bf16
  autocast, AdamW; images/s over timed steps after warm-up;
- evaluation batches (`model.predict` under `use_precision("bf16")`) at batch 64 and 256 (GeoCLIP), 64 (cells);
- each against the ceiling: forward FLOPs counted by torch's FlopCounterMode × images/s ÷ the chip's dense bf16
  peak (H100/H200 SXM: 989 TFLOP/s);
- the gallery scan (cosine + top-5 over float16 unit embeddings) at 10M and 100M points, batch 1 and 64.

Writes `gpu_results.json` and `gpu_section.md` (the "## GPU" section of bench/RESULTS.md) under --out.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0}  # dense, SXM where it varies
CACHES = ("~/.cache/huggingface", "~/.cache/torch", "~/.cache/clip")


def list_caches() -> dict[str, list[str]]:
    """Files (up to 200 per cache, with sizes) in the model caches: real CLIP weights would allow accuracy runs."""
    out = {}
    for c in CACHES:
        root = Path(c).expanduser()
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
        out[c] = [f"{p.relative_to(root)} ({p.stat().st_size / 1e6:,.1f} MB)" for p in files[:200]]
    return out


def device_info(device: torch.device) -> dict:
    info = {"device": str(device), "torch": torch.__version__, "cpu": platform.processor() or platform.machine()}
    if device.type == "cuda":
        info["name"] = torch.cuda.get_device_name(device)
        info["memory_gb"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
        try:
            info["nvidia_smi"] = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError) as err:
            info["nvidia_smi"] = f"unavailable: {err}"
    else:
        info["name"] = "CPU"
    return info


def peak_tflops(name: str) -> float | None:
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, warmup: int, steps: int) -> float:
    """Seconds per call (median-free mean over `steps` after `warmup`; GPU work is synchronised)."""
    for _ in range(warmup):
        fn()
    sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    sync(device)
    return (time.perf_counter() - t) / steps


def forward_flops(fn: Callable[[], object]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


# --- models -------------------------------------------------------------------------------------

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"  # ../shared beside the checkout


def partitions(counts: list[int]) -> list:
    """(coarse, middle, fine) cells: MP-16's published partitions when ../shared is here (their counts are the
    models' defaults), else S2 cells of the same counts (speed depends on the count, not on which cells)."""
    import pandas as pd
    import s2geometry as s2

    from geocore.geo.cells import load_partition, partition_from_frame

    files = [REFERENCE / f"cells_50_{n}.csv" for n in (5000, 2000, 1000)]
    if counts == [3298, 7202, 12893] and all(f.is_file() for f in files):
        return [load_partition(f) for f in files]
    out = []
    for n in counts:
        level = next(lv for lv in range(31) if 6 * 4**lv >= n)
        cell = s2.S2CellId.Begin(level)
        ids = []
        for _ in range(n):
            ids.append(cell)
            cell = cell.next()
        ll = [c.ToLatLng() for c in ids]
        frame = pd.DataFrame({"class_label": range(n), "hex_id": [c.ToToken() for c in ids], "imgs_per_cell": 100,
                              "latitude_mean": [p.lat().degrees() for p in ll],
                              "longitude_mean": [p.lng().degrees() for p in ll]}).astype(str)
        out.append(partition_from_frame(frame, f"synthetic S2 level {level}"))
    return out

def build_models(smoke: bool, device: torch.device) -> dict[str, torch.nn.Module]:
    from geocore.models.registry import create_model

    tiny_vit = {"embed_dim": 48, "depth": 2, "num_heads": 2, "img_size": 224}
    if smoke:
        from geocore.geo.gallery import grid_gallery

        geoclip = create_model("geoclip-tiny")
        geoclip.set_gallery(grid_gallery(1000))  # a few hundred points: no 100K gallery to embed on the CPU
        models = {
            "geoclip": geoclip,
            "translocator": create_model("translocator", backbone_kwargs=tiny_vit, partitions=partitions([8, 16, 32]),
                                         head_hidden=[0, 16, 32]),
            "geodecoder": create_model("geodecoder", backbone_kwargs=tiny_vit, partitions=partitions([8, 16, 32]),
                                       decoder_heads=2, decoder_depth=1, decoder_mlp=32),
        }
    else:
        models = {
            "geoclip": create_model("geoclip", pretrained=None),  # ViT-L/14, random backbone, real heads
            # dual ViT-B/16, Table 0.A.2 heads, MP-16's 3298/7202/12893 cells
            "translocator": create_model("translocator", partitions=partitions([3298, 7202, 12893])),
            "geodecoder": create_model("geodecoder", partitions=partitions([3298, 7202, 12893])),
        }
    return {k: m.to(device) for k, m in models.items()}


def batch_for(name: str, model: torch.nn.Module, n: int, device: torch.device) -> dict:
    g = torch.Generator(device="cpu").manual_seed(0)
    batch = {"image": torch.randn(n, 3, 224, 224, generator=g).to(device), "img_id": [str(i) for i in range(n)],
             "lat": torch.rand(n, generator=g) * 160 - 80, "lon": torch.rand(n, generator=g) * 360 - 180}
    if name != "geoclip":
        cells = model.config["num_cells"]
        for level, k in zip(("coarse", "middle", "fine"), cells):
            batch[level] = torch.randint(0, k, (n,), generator=g).to(device)
        batch["scene"] = torch.randint(0, model.config["scene_classes"], (n,), generator=g).to(device)
        batch["seg"] = torch.randint(0, 150, (n, 224, 224), generator=g).to(device)
    return batch


def train_step_fn(name: str, model: torch.nn.Module, batch: dict, device: torch.device) -> Callable[[], float]:
    """One optimisation step as training runs it (the Lightning modules' own loss code), bf16 autocast."""
    if name == "geoclip":
        from geocore.train.geoclip_module import GeoCLIPModule, batch_gps

        module = GeoCLIPModule(model).to(device)
        params = module.trainable_parameters()
        gps = batch_gps(batch, device)

        def loss() -> torch.Tensor:
            return module.contrastive_loss(module.image_features(batch), gps)
    else:
        from geocore.train.cells_module import CellModule

        module = CellModule(model).to(device)
        params = [p for p in model.parameters() if p.requires_grad]

        def loss() -> torch.Tensor:
            return module.batch_loss(module.forward_batch(batch, teacher=True), batch)["total"]

    module.train()
    if name == "geoclip":
        model.clip.eval()  # frozen backbone, as GeoCLIPModule.on_train_epoch_start does
    opt = torch.optim.AdamW(params, lr=1e-5)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            value = loss()
        value.backward()
        opt.step()
        return float(value.detach())

    return step


def predict_fn(name: str, model: torch.nn.Module, batch: dict, device: torch.device) -> Callable[[], object]:
    from geocore.models.precision import use_precision

    pixels = batch["image"]
    extra = {}
    if name == "translocator":
        extra["seg"] = batch["seg"]

    @torch.no_grad()
    def run() -> object:
        with use_precision("bf16", device):
            return model.predict(pixels, 5, **extra)

    return run


def forward_only_fn(name: str, model: torch.nn.Module, batch: dict) -> Callable[[], object]:
    """The network's forward pass on the batch (for counting FLOPs)."""
    if name == "geoclip":
        return lambda: model.image_embeddings(batch["image"])
    if name == "translocator":
        return lambda: model(batch["image"], model.prepare_seg(batch["seg"], (224, 224)))
    return lambda: model(batch["image"])


def model_rows(smoke: bool, device: torch.device, peak: float | None) -> list[dict]:
    rows = []
    models = build_models(smoke, device)
    train_batch = 4 if smoke else 64
    eval_batches = {"geoclip": (4,) if smoke else (64, 256)}
    steps, warm = (2, 1) if smoke else (10, 3)
    for name, model in models.items():
        model.eval()
        with torch.autocast(device.type, dtype=torch.bfloat16):  # grad on: FlopCounterMode's tracker needs it
            flops = forward_flops(forward_only_fn(name, model, batch_for(name, model, 2, device))) / 2
        for bs in eval_batches.get(name, (4,) if smoke else (64,)):
            batch = batch_for(name, model, bs, device)
            s = timed(predict_fn(name, model, batch, device), device, warm, steps)
            rows.append(_row(name, "evaluate (predict, bf16)", bs, s, flops, peak))
        batch = batch_for(name, model, train_batch, device)
        s = timed(train_step_fn(name, model, batch, device), device, warm, steps)
        # training: GeoCLIP's backbone is frozen (forward only); the cell models run forward + backward (≈ 3×)
        rows.append(_row(name, "training step (bf16 autocast, AdamW)", train_batch, s,
                         flops * (1 if name == "geoclip" else 3), peak))
        model.to("cpu")
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def _row(model: str, what: str, batch: int, seconds: float, flops_per_image: float, peak: float | None) -> dict:
    ips = batch / seconds
    ceiling = peak * 1e12 / flops_per_image if peak and flops_per_image else None
    return {"model": model, "what": what, "batch": batch, "s_per_batch": seconds, "images_per_s": ips,
            "gflops_per_image": flops_per_image / 1e9, "ceiling_images_per_s": ceiling,
            "use_of_peak": ips / ceiling if ceiling else None}


# --- gallery scan --------------------------------------------------------------------------------

def scan_rows(sizes: list[int], device: torch.device) -> list[dict]:
    """Exact float16 scan + top-5 at each gallery size, if it fits in memory (else a row saying so)."""
    from geocore.models.retrieval import cosine_scores

    rows = []
    for m in sizes:
        need = m * 512 * 2
        free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else 8 * 2**30
        if need > 0.8 * free:
            rows.append({"points": m, "skipped": f"needs {need / 2**30:.0f} GiB, {free / 2**30:.0f} GiB free"})
            continue
        gallery = torch.empty(m, 512, dtype=torch.float16, device=device)
        for i in range(0, m, 1 << 22):  # filled in chunks: no float32 copy of the whole gallery
            gallery[i:i + (1 << 22)] = F.normalize(torch.randn(min(1 << 22, m - i), 512, device=device), dim=-1)
        for b in (1, 64):
            q = F.normalize(torch.randn(b, 512, device=device), dim=-1)
            s = timed(lambda: cosine_scores(q, gallery).topk(5, dim=-1), device, 2, 5)
            rows.append({"points": m, "queries": b, "ms_per_batch": s * 1e3, "ms_per_query": s * 1e3 / b,
                         "gb_per_s": need / s / 1e9})
        del gallery
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


# --- report ---------------------------------------------------------------------------------------

def section(info: dict, rows: list[dict], scans: list[dict], caches: dict[str, list[str]]) -> str:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = ["## GPU", "", f"_measured {when}_", "",
             f"{info['name']} ({info.get('memory_gb', '?')} GB), torch {info['torch']}; `python -m bench.gpu_run`. "
             "Random weights, real sizes; ceiling = the chip's dense bf16 peak ÷ the forward FLOPs torch counts "
             "(GeoCLIP training runs the frozen backbone forward only; cell models forward + backward ≈ 3×).", "",
             "| model | what | batch | images/s | GFLOPs/image | ceiling images/s | share of peak |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        ceil = f"{r['ceiling_images_per_s']:,.0f}" if r["ceiling_images_per_s"] else "–"
        use = f"{100 * r['use_of_peak']:.0f} %" if r["use_of_peak"] else "–"
        lines.append(f"| {r['model']} | {r['what']} | {r['batch']} | {r['images_per_s']:,.1f} | "
                     f"{r['gflops_per_image']:.1f} | {ceil} | {use} |")
    lines += ["", "Gallery scan (float16 unit embeddings, cosine + top-5, exact):", "",
              "| points | queries per batch | ms per batch | ms per query | GB/s read |", "|---|---|---|---|---|"]
    for s in scans:
        if "skipped" in s:
            lines.append(f"| {s['points']:,} | – | {s['skipped']} | – | – |")
        else:
            lines.append(f"| {s['points']:,} | {s['queries']} | {s['ms_per_batch']:.2f} | {s['ms_per_query']:.3f} | "
                         f"{s['gb_per_s']:,.0f} |")
    found = {k: len(v) for k, v in caches.items()}
    lines += ["", "Model caches on the machine (files): " + ", ".join(f"`{k}`: {n}" for k, n in found.items()) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--smoke", action="store_true", help="tiny models, CPU allowed: checks the script")
    ap.add_argument("--scan-sizes", default=None, help="gallery sizes, e.g. 10000000,100000000")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and not args.smoke:
        print("no GPU here: run with --smoke to check the script on the CPU")
        return 2
    caches = list_caches()
    print(json.dumps(caches, indent=1))
    info = device_info(device)
    print(info.get("nvidia_smi", info["name"]))
    torch.backends.cuda.matmul.allow_tf32 = True
    rows = model_rows(args.smoke, device, peak_tflops(info["name"]))
    sizes = ([int(s) for s in args.scan_sizes.split(",")] if args.scan_sizes
             else [100_000] if args.smoke else [10_000_000, 100_000_000])
    scans = scan_rows(sizes, device)
    (args.out / "gpu_results.json").write_text(json.dumps({"info": info, "models": rows, "scan": scans,
                                                           "caches": caches}, indent=1))
    text = section(info, rows, scans, caches)
    (args.out / "gpu_section.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
