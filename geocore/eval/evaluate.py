"""Batched, resumable evaluation of a model on a benchmark (CSV + image folder)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from geocore.data.datasets import BenchmarkDataset, collate_skip_errors
from geocore.errors import InputError
from geocore.eval.metrics import GeoMetrics, compute_metrics
from geocore.eval.results import collect_rows, merge_parts, parts_dir, write_part
from geocore.eval.uncertainty import uncertainty_columns
from geocore.geo.distance import haversine_km
from geocore.locate import input_transform
from geocore.models.base import GeoLocator
from geocore.models.views import batch_inputs
from geocore.geo.candidates import CandidateCells

SCENE_COLUMNS = ("S3_Label", "S16_Label", "S365_Label")


@dataclass
class EvaluationReport:
    metrics: GeoMetrics
    results: pd.DataFrame
    n_missing: int
    n_failed: int
    n_resumed: int


def resolve_device(device: str) -> torch.device:
    """`cpu`, `cuda` or `cuda:N`; a clear error when CUDA is asked for and absent."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise InputError(f"--device {device}: expected cpu, cuda or cuda:N")
    return torch.device(device)


def _batch_rows(batch: dict, pred, model_name: str, cells: CandidateCells) -> list[dict]:
    true = torch.stack([torch.as_tensor(batch["lat"]), torch.as_tensor(batch["lon"])], dim=1).double()
    extra = uncertainty_columns(pred.probs_full, cells, true.numpy())
    top1 = pred.top1.detach().cpu().double()
    errors = haversine_km(top1, true).numpy()
    coords, probs = pred.coords.detach().cpu().numpy(), pred.probs.detach().cpu().float().numpy()
    rows = []
    for i, img_id in enumerate(batch["img_id"]):
        row = {
            "IMG_ID": img_id,
            "LAT": float(true[i, 0]),
            "LON": float(true[i, 1]),
            "PRED_LAT": float(top1[i, 0]),
            "PRED_LON": float(top1[i, 1]),
            "error_km": float(errors[i]),
            "topk_lat": coords[i, :, 0].astype(float).tolist(),
            "topk_lon": coords[i, :, 1].astype(float).tolist(),
            "topk_prob": probs[i].astype(float).tolist(),
            "model": model_name,
            "status": "ok",
            **{k: v[i] for k, v in extra.items()},
        }
        for col in SCENE_COLUMNS:
            if col in batch:
                row[col] = int(batch[col][i])
        rows.append(row)
    return rows


def _error_rows(batch: dict, model_name: str, truth: pd.DataFrame) -> list[dict]:
    rows = []
    for img_id, message in batch.get("errors", []):
        lat, lon = truth.loc[img_id, ["LAT", "LON"]]
        rows.append({
            "IMG_ID": img_id, "LAT": float(lat), "LON": float(lon),
            "PRED_LAT": np.nan, "PRED_LON": np.nan, "error_km": np.nan,
            "topk_lat": [], "topk_lon": [], "topk_prob": [],
            "model": model_name, "status": f"error: {message}",
        })
    return rows


@torch.no_grad()
def evaluate(
    model: GeoLocator,
    dataset_csv: str | Path,
    image_dir: str | Path,
    output: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    batch_size: int = 32,
    top_k: int = 5,
    device: str = "cpu",
    num_workers: int = 0,
    progress: bool = True,
    on_batch: Callable[[int], None] | None = None,
    tencrop: bool = False,
) -> EvaluationReport:
    """Evaluate `model` on a benchmark, writing per-image rows to `output` as batches finish.

    Each row also holds what search-region calibration needs (`geocore.eval.uncertainty`).

    With `resume`, images already in `output` (or its parts) are skipped. Missing image files
    are counted and reported; images that fail to load get a row with an error status. `tencrop`: the
    papers' ten crops, logits averaged (cell models).
    """
    output = Path(output)
    torch_device = resolve_device(device)  # before touching any file
    if (output.exists() or parts_dir(output).exists()) and not (resume or overwrite):
        raise InputError(f"{output}: already exists; pass --resume to carry on or --overwrite to start again")
    if overwrite and not resume:
        output.unlink(missing_ok=True)
        for p in parts_dir(output).glob("*"):
            p.unlink()
    output.parent.mkdir(parents=True, exist_ok=True)
    model = model.to(torch_device).eval()
    dataset = BenchmarkDataset(dataset_csv, image_dir, transform=input_transform(model, tencrop))
    done = collect_rows(output) if resume else pd.DataFrame(columns=["IMG_ID"])
    todo = dataset.subset(exclude_ids=set(done["IMG_ID"]))
    truth = dataset.frame.set_index("IMG_ID")
    loader = DataLoader(todo, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_skip_errors)
    # after the highest part on disk (a count could land on an existing part if a merge was killed mid-cleanup)
    n_parts = 1 + max((int(p.stem.split("-")[1]) for p in parts_dir(output).glob("part-[0-9]*.parquet")), default=-1)
    cells: CandidateCells | None = None  # the candidates' areas, for search-region statistics (made once)
    try:
        for step, batch in enumerate(tqdm(loader, desc=f"evaluate {model.model_name}", disable=not progress)):
            rows = _error_rows(batch, model.model_name, truth)
            if len(batch["img_id"]):
                pixels, extra = batch_inputs(batch["image"], model.device)
                pred = model.predict(pixels, top_k, full=True, **extra)
                cells = cells if cells is not None else model.candidate_cells()
                rows = _batch_rows(batch, pred, model.model_name, cells) + rows
            if rows:
                write_part(pd.DataFrame(rows), output, n_parts + step)
            if on_batch is not None:
                on_batch(step)
    finally:
        results = merge_parts(output)
    ok = results[results["status"] == "ok"]
    metrics = compute_metrics(ok[["PRED_LAT", "PRED_LON"]].to_numpy(float), ok[["LAT", "LON"]].to_numpy(float))
    return EvaluationReport(
        metrics=metrics,
        results=results,
        n_missing=dataset.n_missing,
        n_failed=int((results["status"] != "ok").sum()),
        n_resumed=len(done),
    )
