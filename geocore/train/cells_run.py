"""`train_cell_model`: train TransLocator or GeoDecoder on your own `IMG_FILE,LAT,LON` photos.

The run itself is `geocore.train.fit.fit` (one GPU, many GPUs, many nodes; bf16-mixed on a GPU, fp32 on CPU),
as for GeoCLIP. Writes into `output_dir`:
  <name>.safetensors         the trained model, with its cells (S2 ids, centroids, hierarchy):
                             `create_model(name, pretrained=PATH)` loads it
  segmaps/<segmenter>/*.png  TransLocator's segmentation maps, computed once and reused by later runs
  lightning/last.ckpt        Lightning's checkpoint, to resume (`resume=True`)
  logs/.../metrics.csv       losses and validation accuracy per step and epoch
Partitions are three cell CSVs (coarse, middle, fine), e.g. cells_50_5000/2000/1000.csv; they fix the
classes. Scene labels come from the CSV (S3/S16/S365_Label, matching the model's scene classes); without
them the scene loss is skipped (labels from a scene model are not implemented).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from geocore.errors import InputError
from geocore.geo.cells import load_partitions
from geocore.models.cell_classifier import CellClassifier
from geocore.models.segmenter import DEFAULT_SEGMENTER, load_segmenter
from geocore.models.registry import create_model
from geocore.train.cells_data import CellDataModule
from geocore.train.cells_module import CellModule
from geocore.train.data import open_training_csv
from geocore.train.fit import RunConfig, fit, start_run, with_overrides

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


@dataclass(frozen=True)
class CellTrainConfig(RunConfig):
    """TransLocator / GeoDecoder training options as plain data (see `train_cell_model`)."""

    segmenter: Any = DEFAULT_SEGMENTER  # TransLocator only: weights name, transformers folder or Segmenter
    pretrained: str | None = "imagenet"  # "imagenet", a checkpoint to continue from, or None (random)
    model_kwargs: dict[str, Any] | None = None


def fit_cell_model(name: str, csv: str | Path, images: str | Path, *, partitions: tuple[Any, Any, Any],
                   output_dir: str | Path, config: CellTrainConfig | None = None,
                   callbacks: list[Callback] | None = None, **overrides: Any) -> CellFitResult:
    """`train_cell_model`, returning the trained module, trainer and data module too (notebooks, tests)."""
    cfg = with_overrides(config or CellTrainConfig(), overrides)
    out = start_run(cfg, output_dir)
    dataset = open_training_csv(csv, images)  # bad paths fail before any weights load
    parts = load_partitions(partitions)
    seg = load_segmenter(cfg.segmenter) if name == "translocator" else None  # missing weights: fail early
    model = build_model(name, cfg.pretrained, parts, cfg.model_kwargs)
    gpu = cfg.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    dm = CellDataModule(csv, images, model=model, partitions=parts, batch_size=cfg.batch_size,
                        val_fraction=cfg.val_fraction, seed=cfg.seed, num_workers=cfg.num_workers, segmenter=seg,
                        seg_dir=out / "segmaps" / _segmenter_key(cfg.segmenter) if seg is not None else None,
                        seg_device="cuda" if gpu else "cpu", progress=cfg.progress, dataset=dataset)
    if dm.n_missing:
        rank_zero_info(f"{dm.n_missing} image(s) listed in {csv} are missing from {images}: skipped")
    if dm.n_outside:
        rank_zero_info(f"{dm.n_outside} image(s) lie outside every cell of the partitions: skipped")
    if dm.scene_column is None:
        rank_zero_info(f"no S{model.config['scene_classes']}_Label column in {csv}: the scene loss is skipped")
    module = CellModule(model, lr=cfg.lr, weight_decay=cfg.weight_decay, schedule=cfg.schedule)
    final = out / f"{name}.safetensors"
    trainer = fit(module, dm, cfg, out, n_train=len(dm.train_set), has_val=dm.val_set is not None,
                  save=lambda: module.model.cpu().eval().save_checkpoint(final), callbacks=callbacks)
    model = module.model.cpu().eval()
    if seg is not None:
        model.attach_segmenter(seg)
    return CellFitResult(final, module, trainer, dm)


def train_cell_model(name: str, csv: str | Path, images: str | Path, *, partitions: tuple[Any, Any, Any],
                     output_dir: str | Path, **options: Any) -> Path:
    """Train `name` ("translocator" | "geodecoder") on a CSV + image folder; returns the checkpoint's path.

    partitions: (coarse, middle, fine) cell CSVs (paths or CellPartitions); they set the classes and travel
    in the checkpoint. Options are the fields of `CellTrainConfig` (defaults there): pretrained "imagenet"
    (timm ViT weights from the local HF cache, else WeightsMissingError), a checkpoint to continue from, or
    None for random weights; segmenter (TransLocator only); epochs 10, batch_size 64 (per device), lr 1e-4,
    weight_decay 0.05, schedule "cosine" (per step, 5% warm-up) | "step" | "none", val_fraction 0.05,
    devices, num_nodes, precision (default bf16-mixed on GPU, else 32-true), model_kwargs, seed, resume.
    """
    return fit_cell_model(name, csv, images, partitions=partitions, output_dir=output_dir, **options).checkpoint
