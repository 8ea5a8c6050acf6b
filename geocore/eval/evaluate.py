"""Batched, resumable evaluation of a model on a benchmark (CSV + image folder), on one device or many."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from geocore.data.datasets import BenchmarkDataset, collate_skip_errors
from geocore.data.safe_io import file_sha256
from geocore.data.text import readable
from geocore.errors import InputError
from geocore.metrics import GeoMetrics, compute_metrics
from geocore.runtime.predict_loop import BatchPredictor, loader_for, loop_options, predict_to_parts
from geocore.eval.results import collect_rows, merge_parts, ok_rows, parts_dir
from geocore.eval.coverage import coverage_columns
from geocore.geo.candidates import CandidateCells
from geocore.geo.distance import haversine_km
from geocore.locate import predict_batch, use_references
from geocore.models.base import GeoLocator
from geocore.models.precision import current_precision
from geocore.models.views import batch_inputs
from geocore.refs.store import ReferenceSet
from geocore.tensors import as_numpy, on_cpu

SCENE_COLUMNS = ("S3_Label", "S16_Label", "S365_Label")


@dataclass
class EvaluationReport:
    metrics: GeoMetrics
    results: pd.DataFrame
    n_missing: int
    n_failed: int
    n_resumed: int
    n_unfinished: int = 0  # images with no row after the run (a rank failed, or parts not visible to rank 0)
    precision: str | None = None  # what `precision` resolved to on rank 0's device (None: nothing was predicted)
    n_refs_excluded: int = 0  # references hidden because they are benchmark photos (same IMG_ID or SHA-256)


def _batch_rows(batch: dict, pred, model_name: str, cells: CandidateCells) -> list[dict]:
    true = torch.stack([torch.as_tensor(batch["lat"]), torch.as_tensor(batch["lon"])], dim=1).double()
    extra = coverage_columns(pred.probs_full, cells, true.numpy())
    top1 = on_cpu(pred.top1, torch.float64)
    errors = haversine_km(top1, true).numpy()
    coords, probs = as_numpy(pred.coords), as_numpy(pred.probs, np.float32)
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
            "model": model_name, "status": f"error: {readable(message)}",  # a message quoting any path: one line
        })
    return rows


def _references(refs: ReferenceSet | None, model: GeoLocator, dataset: BenchmarkDataset, k: int | None,
                weight: float | None):
    """The reference set to fuse, with the benchmark's own photos hidden (by IMG_ID and by SHA-256), and how many."""
    if refs is None:
        return None, 0
    use = use_references(refs, model, k, weight)
    names = dataset.frame.set_index("IMG_ID")["_name"]
    sha = []
    for img_id, name in names.items():  # each benchmark file hashed once; missing or refused files have none
        try:
            sha.append(file_sha256(dataset.image_path(name)))
        except (OSError, InputError):
            continue
    hidden = refs.overlap(names.index.astype(str), sha)
    use.refs = refs.excluding(hidden)
    return use, int(hidden.size)


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
    device: str | None = None,
    accelerator: str | None = None,
    devices: int | None = None,
    num_nodes: int | None = None,
    strategy: str | None = None,
    precision: str = "fp32",
    num_workers: int = 0,
    progress: bool = True,
    on_batch: Callable[[int], None] | None = None,
    tencrop: bool = False,
    refs: ReferenceSet | None = None,
    refs_k: int | None = None,
    refs_weight: float | None = None,
) -> EvaluationReport | None:
    """Evaluate `model` on a benchmark, writing per-image rows to `output` as batches finish.

    Each row also holds what search-region calibration needs (`geocore.eval.coverage`).

    Runs on Lightning's predict loop (`geocore.runtime.predict_loop`): `accelerator`, `devices` (per node),
    `num_nodes`, `strategy` (ddp when more than one device or node) as `geocore train` takes them, or the older
    `device` (cpu, cuda, cuda:N); `precision` auto | fp32 (default: exactly the reference) | bf16. Each rank
    writes its finished batches as its own part files; rank 0 merges them, in the CSV's order, and gets the report
    (the other ranks get None).

    With `resume`, images already in `output` (or its parts, whichever rank wrote them) are skipped. Missing image
    files are counted and reported; images that fail to load get a row with an error status. `tencrop`: the
    papers' ten crops, logits averaged (cell models). `on_batch(i)` is called after each batch's part is written.

    `refs`: a reference set (`geocore.refs`) fused into each answer as `locate(..., refs=)` does; references that
    are benchmark photos (the same IMG_ID or the same file by SHA-256) are hidden from every query — published
    gains on YFCC4k are partly such overlap — and counted in `n_refs_excluded`. Rows record the set's
    fingerprint (`refs` column), so a calibration fitted on them is refused without the same set.
    """
    output = Path(output)
    opts = loop_options(device=device, accelerator=accelerator, devices=devices, num_nodes=num_nodes,
                        strategy=strategy, precision=precision, batch_size=batch_size, num_workers=num_workers,
                        progress=progress)  # before touching any file
    if (output.exists() or parts_dir(output).exists()) and not (resume or overwrite):
        raise InputError(f"{output}: already exists; pass --resume to carry on or --overwrite to start again")
    if overwrite and not resume:  # every rank may do this: nothing is written before all ranks have started
        output.unlink(missing_ok=True)
        for p in parts_dir(output).glob("*"):
            p.unlink(missing_ok=True)
    output.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    dataset = BenchmarkDataset(dataset_csv, image_dir, transform=model.input_transform(tencrop))
    done = collect_rows(output) if resume else pd.DataFrame(columns=["IMG_ID"])
    todo = dataset.subset(exclude_ids=set(done["IMG_ID"]))  # the same on every rank: read before any rank writes
    truth = dataset.frame.set_index("IMG_ID")
    ref_use, n_excluded = _references(refs, model, dataset, refs_k, refs_weight)
    cells: list[CandidateCells] = []  # the candidates' areas, for search-region statistics (made once per rank)
    used: list[str] = []  # the precision in force in predict_step

    def rows(net: GeoLocator, batch: dict) -> pd.DataFrame | None:
        out = _error_rows(batch, net.model_name, truth)
        if len(batch["img_id"]):
            pixels, extra = batch_inputs(batch["image"], net.device)
            pred = (net.predict(pixels, top_k, full=True, **extra) if ref_use is None else
                    predict_batch(net, pixels, top_k, extra=extra, refs=ref_use))
            cells[:] = cells or [net.candidate_cells()]
            used[:] = [current_precision()]
            out = _batch_rows(batch, pred, net.model_name, cells[0]) + out
            if ref_use is not None:
                for row in out:
                    row["refs"] = ref_use.refs.set_fingerprint
        return pd.DataFrame(out) if out else None

    module = BatchPredictor(model, rows, opts.precision)
    loader = loader_for(todo, opts, collate_skip_errors)
    results = predict_to_parts(module, loader, output, opts, lambda: merge_parts(output, order=dataset.img_ids),
                               on_batch=on_batch, merge_on_failure=True)
    if results is None:  # not rank 0
        return None
    ok = ok_rows(results)
    metrics = compute_metrics(ok[["PRED_LAT", "PRED_LON"]].to_numpy(float), ok[["LAT", "LON"]].to_numpy(float))
    return EvaluationReport(
        metrics=metrics,
        results=results,
        n_missing=dataset.n_missing,
        n_failed=int((results["status"] != "ok").sum()),
        n_resumed=len(done),
        n_unfinished=len(set(dataset.img_ids) - set(results["IMG_ID"])),
        precision=used[0] if used else None,
        n_refs_excluded=n_excluded,
    )
