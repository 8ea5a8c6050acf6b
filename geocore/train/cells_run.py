"""`train_cell_model`: train TransLocator or GeoDecoder on your own `IMG_FILE,LAT,LON` photos.

One GPU, many GPUs (`devices > 1` → DDP) and many nodes (`num_nodes > 1`, launched once per node) are the
same call; bf16-mixed on a GPU, fp32 on CPU. Writes into `output_dir`:
  <name>.pt                  the trained model, with its cell centroids and hierarchy:
                             `create_model(name, pretrained=PATH)` loads it
  segmaps/<segmenter>/*.png  TransLocator's segmentation maps, computed once and reused by later runs
  lightning/last.ckpt        Lightning's checkpoint, to resume (`resume=True`)
  logs/.../metrics.csv       losses and validation accuracy per step and epoch
Partitions are three cell CSVs (coarse, middle, fine), e.g. cells_50_5000/2000/1000.csv; they fix the
classes. Scene labels come from the CSV (S3/S16/S365_Label, matching the model's scene classes); without
them the scene loss is skipped (labels from a scene model are not implemented).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_info

from geocore.errors import InputError
from geocore.geo.cells import load_partitions
from geocore.models.cell_classifier import CellClassifier
from geocore.models.segmenter import DEFAULT_SEGMENTER, load_segmenter
from geocore.models.registry import create_model
from geocore.train.cells_data import CellDataModule
from geocore.train.cells_module import CellModule
from geocore.train.data import open_training_csv
from geocore.train.run import default_precision

CELL_MODELS = ("translocator", "geodecoder")



@dataclass
class CellFitResult:
    checkpoint: Path  # the loadable model file
    module: CellModule  # its `.model` is the trained model (TransLocator: segmenter attached)
    trainer: L.Trainer
    datamodule: CellDataModule


def _segmenter_key(segmenter: Any) -> str:
    """Cache sub-folder of a segmenter: its weights name, folder name, or `.name`."""
    if isinstance(segmenter, (str, Path)):
        return Path(str(segmenter)).name
    return str(getattr(segmenter, "name", "segmenter"))


def build_model(name: str, pretrained: str | Path | None, partitions: list[Any],
                model_kwargs: dict[str, Any] | None = None) -> CellClassifier:
    """The model to train: ImageNet backbone ("imagenet", local timm weights), a checkpoint, or random (None)."""
    if name not in CELL_MODELS:
        raise InputError(f"model {name!r}: expected one of {', '.join(CELL_MODELS)}")
    import geocore.models.geodecoder  # noqa: F401  (registers the models)
    import geocore.models.translocator  # noqa: F401

    kwargs = dict(model_kwargs or {})
    return create_model(name, pretrained=None if pretrained is None else str(pretrained), partitions=partitions,
                        **kwargs)


def fit_cell_model(name: str, csv: str | Path, images: str | Path, *, partitions: tuple[Any, Any, Any],
                   output_dir: str | Path, epochs: int = 10, batch_size: int = 64, lr: float = 1e-4,
                   weight_decay: float = 0.05, schedule: str = "cosine", val_fraction: float = 0.05,
                   devices: int | str = 1, num_nodes: int = 1, strategy: str | None = None,
                   precision: str | None = None, accelerator: str = "auto",
                   segmenter: Any = DEFAULT_SEGMENTER, pretrained: str | Path | None = "imagenet",
                   model_kwargs: dict[str, Any] | None = None, seed: int = 0, num_workers: int = 4,
                   resume: bool = False, log_every_n_steps: int = 50, progress: bool = True,
                   callbacks: list[Callback] | None = None) -> CellFitResult:
    """`train_cell_model`, returning the trained module, trainer and data module too (notebooks, tests)."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    L.seed_everything(seed, workers=True, verbose=False)
    precision = precision or default_precision(accelerator)
    dataset = open_training_csv(csv, images)  # bad paths fail before any weights load
    parts = load_partitions(partitions)
    seg = load_segmenter(segmenter) if name == "translocator" else None  # missing weights: fail early
    model = build_model(name, pretrained, parts, model_kwargs)
    gpu = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    dm = CellDataModule(csv, images, model=model, partitions=parts, batch_size=batch_size,
                        val_fraction=val_fraction, seed=seed, num_workers=num_workers, segmenter=seg,
                        seg_dir=out / "segmaps" / _segmenter_key(segmenter) if seg is not None else None,
                        seg_device="cuda" if gpu else "cpu", progress=progress, dataset=dataset)
    if dm.n_missing:
        rank_zero_info(f"{dm.n_missing} image(s) listed in {csv} are missing from {images}: skipped")
    if dm.n_outside:
        rank_zero_info(f"{dm.n_outside} image(s) lie outside every cell of the partitions: skipped")
    if dm.scene_column is None:
        rank_zero_info(f"no S{model.config['scene_classes']}_Label column in {csv}: the scene loss is skipped")
    module = CellModule(model, lr=lr, weight_decay=weight_decay, schedule=schedule)
    multi = num_nodes > 1 or (isinstance(devices, int) and (devices > 1 or devices == -1))
    world = num_nodes * (devices if isinstance(devices, int) and devices > 0 else 1)
    ckpt_dir = out / "lightning"
    trainer = L.Trainer(
        max_epochs=epochs, accelerator=accelerator, devices=devices, num_nodes=num_nodes,
        strategy=strategy or ("ddp" if multi else "auto"), precision=precision, default_root_dir=out,
        logger=CSVLogger(out, name="logs"),
        log_every_n_steps=max(1, min(log_every_n_steps, math.ceil(len(dm.train_set) / (batch_size * world)))),
        callbacks=[ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=0), *(callbacks or [])],
        limit_val_batches=None if dm.val_set is not None else 0, num_sanity_val_steps=0,
        enable_progress_bar=progress, enable_model_summary=progress,
    )
    last = ckpt_dir / "last.ckpt"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
        trainer.fit(module, datamodule=dm, ckpt_path=str(last) if resume and last.is_file() else None)
    final = out / f"{name}.safetensors"
    model = module.model.cpu().eval()
    if trainer.is_global_zero:
        model.save_checkpoint(final)
    trainer.strategy.barrier()
    if seg is not None:
        model.attach_segmenter(seg)
    return CellFitResult(final, module, trainer, dm)


def train_cell_model(name: str, csv: str | Path, images: str | Path, *, partitions: tuple[Any, Any, Any],
                     output_dir: str | Path, **options: Any) -> Path:
    """Train `name` ("translocator" | "geodecoder") on a CSV + image folder; returns the checkpoint's path.

    partitions: (coarse, middle, fine) cell CSVs (paths or CellPartitions); they set the classes and travel
    in the checkpoint. pretrained: "imagenet" (default: timm ViT weights from the local HF cache, else
    WeightsMissingError), a checkpoint to continue from, or None for random weights (`--from-scratch`).
    segmenter (TransLocator only): weights name (local, else WeightsMissingError naming
    `geocore weights download segformer-b0-ade`), a transformers folder, or a `Segmenter`.
    Other options: epochs 10, batch_size 64 (per device), lr 1e-4, weight_decay 0.05, schedule "cosine"
    (per step, 5% warm-up) | "step" | "none", val_fraction 0.05, devices, num_nodes, precision (default
    bf16-mixed on GPU, else 32-true), model_kwargs, seed, num_workers, resume, progress.
    """
    return fit_cell_model(name, csv, images, partitions=partitions, output_dir=output_dir, **options).checkpoint
