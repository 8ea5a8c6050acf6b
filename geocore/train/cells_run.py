"""`train_cell_model`: train TransLocator or GeoDecoder on your own `IMG_FILE,LAT,LON` photos.

The run itself is `geocore.train.fit.fit` (one GPU, many GPUs, many nodes; bf16-mixed on a GPU, fp32 on CPU),
as for GeoCLIP. Writes into `output_dir`:
  <name>.safetensors         the trained model (last epoch), with its cells (S2 ids, centroids, hierarchy):
                             `create_model(name, pretrained=PATH)` loads it
  <name>-best.safetensors    the model of the best validation epoch (fine-cell top-1), as the paper keeps
  vit-mt/                    `--recipe paper` (TransLocator): the single-branch ViT-MT that initialises both
                             branches (vit-mt.safetensors, its logs)
  segmaps/<segmenter>/*.png  TransLocator's segmentation maps, computed once and reused by later runs
  lightning/last.ckpt        Lightning's checkpoint, to resume (`resume=True`)
  logs/.../metrics.csv       losses and validation accuracy per step and epoch
Partitions are three cell CSVs (coarse, middle, fine), e.g. cells_50_5000/2000/1000.csv; they fix the
classes. Scene labels come from the CSV (S3/S16/S365_Label, matching the model's scene classes); without
them the scene loss is skipped (labels from a scene model are not implemented).

Recipes (`recipe`, `geocore train translocator --recipe paper`): "fast", geocore's defaults (10 epochs,
AdamW 1e-4, random resized crops); "paper", TransLocator's published recipe (`PAPER_RECIPE`, §4.4 and
supplement §0.A.2–0.A.3): a single-branch ViT-MT trained for 10 epochs initialises both branches, then 40
epochs, batch 256, its augmentation with ten-crop training and validation (logits averaged), weight decay
1e-4, cosine schedule with 2 warm-up epochs, and the optimizer of the authors' released code (SGD, momentum
0.9, base rate 0.1 scaled by 0.2 for weights and 0.0048 for biases, cosine to 0.001 of it): the paper's
text says "AdamW ... base learning rate of 0.1, a momentum of 0.9", which is no AdamW setting (AdamW has no
momentum, and 0.1 makes it diverge); `optimizer="adamw"` takes the text literally. Options given
explicitly override a recipe's values.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
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
from geocore.train.fit import BestCheckpoint, RunConfig, fit, start_run, with_overrides
from geocore.weights.checkpoint import load_checkpoint
from geocore.weights.resolve import parse_pretrained

CELL_MODELS = ("translocator", "geodecoder")
RECIPES = ("fast", "paper")


@dataclass
class CellFitResult:
    checkpoint: Path  # the loadable model file (last epoch)
    best: Path | None  # the best validation epoch's model file (None without validation)
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
    """TransLocator / GeoDecoder training options as plain data (see `train_cell_model`): geocore's "fast"
    recipe; `recipe_config("paper")` is TransLocator's published one."""

    segmenter: Any = DEFAULT_SEGMENTER  # TransLocator only: weights name, transformers folder or Segmenter
    pretrained: str | None = "imagenet"  # "imagenet", a checkpoint to continue from, or None (random)
    model_kwargs: dict[str, Any] | None = None
    recipe: str = "fast"  # which recipe the other defaults come from (`recipe_config`)
    optimizer: str = "adamw"  # or "sgd" (with momentum)
    momentum: float = 0.9
    lr_factors: tuple[float, float] = (1.0, 1.0)  # lr multipliers: weights (≥ 2-d), biases and norms
    warmup_epochs: float | None = None  # cosine warm-up; None: 5% of the steps
    min_lr_factor: float = 0.0  # the cosine ends at lr × this
    augment: str = "fast"  # "fast" (random resized crop + flip) or "paper" (§0.A.2, ten-crop training)
    val_tencrop: bool = False  # validate on the ten crops (logits averaged)
    init_epochs: int = 0  # TransLocator: epochs of the single-branch ViT-MT that initialises both branches
    best_metric: str = "val_fine_top1"  # the validation score `<name>-best.safetensors` maximises


PAPER_RECIPE: dict[str, Any] = dict(
    recipe="paper", epochs=40, init_epochs=10, batch_size=256, optimizer="sgd", lr=0.1, momentum=0.9,
    lr_factors=(0.2, 0.0048), weight_decay=1e-4, schedule="cosine", warmup_epochs=2.0, min_lr_factor=1e-3,
    augment="paper", val_tencrop=True)


def recipe_config(recipe: str = "fast") -> CellTrainConfig:
    """The defaults of a recipe: "fast" (geocore's) or "paper" (TransLocator's, `PAPER_RECIPE`)."""
    if recipe not in RECIPES:
        raise InputError(f"recipe: expected one of {', '.join(RECIPES)}, got {recipe!r}")
    return CellTrainConfig() if recipe == "fast" else CellTrainConfig(**PAPER_RECIPE)


def _module(model: CellClassifier, cfg: CellTrainConfig) -> CellModule:
    return CellModule(model, lr=cfg.lr, weight_decay=cfg.weight_decay, schedule=cfg.schedule,
                      optimizer=cfg.optimizer, momentum=cfg.momentum, lr_factors=tuple(cfg.lr_factors),
                      warmup_epochs=cfg.warmup_epochs, min_lr_factor=cfg.min_lr_factor)


def _data(model: CellClassifier, cfg: CellTrainConfig, csv: Any, images: Any, parts: list[Any], dataset: Any,
          seg: Any, seg_dir: Path | None) -> CellDataModule:
    gpu = cfg.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return CellDataModule(csv, images, model=model, partitions=parts, batch_size=cfg.batch_size,
                          val_fraction=cfg.val_fraction, seed=cfg.seed, num_workers=cfg.num_workers, segmenter=seg,
                          seg_dir=seg_dir, seg_device="cuda" if gpu else "cpu", progress=cfg.progress,
                          dataset=dataset, augment=cfg.augment, val_tencrop=cfg.val_tencrop)


def fit_vit_mt(cfg: CellTrainConfig, csv: Any, images: Any, parts: list[Any], dataset: Any, out: Path) -> Any:
    """Stage one of the paper recipe: the single-branch ViT-MT (RGB only, TransLocator's heads and loss)
    trained for `cfg.init_epochs` epochs into `out/vit-mt/`; reused as it is when `cfg.resume` finds it."""
    from geocore.models.translocator import ViTMT

    stage = out / "vit-mt"
    path = stage / "vit-mt.safetensors"
    kwargs = {k: v for k, v in (cfg.model_kwargs or {}).items() if k in ViTMT.DEFAULTS}
    if cfg.resume and path.is_file():
        ckpt = load_checkpoint(path, expect_model="vit-mt")
        model = ViTMT(ckpt.config)
        model.load_state_dict(ckpt.tensors)
        return model
    model = ViTMT({**kwargs, "num_cells": [len(p) for p in parts]}, imagenet=cfg.pretrained == "imagenet")
    model.set_cells(parts)
    stage.mkdir(parents=True, exist_ok=True)
    dm = _data(model, cfg, csv, images, parts, dataset, None, None)
    module = _module(model, cfg)
    rank_zero_info(f"paper recipe: training the single-branch ViT-MT for {cfg.init_epochs} epoch(s) first")
    fit(module, dm, replace(cfg, epochs=cfg.init_epochs), stage, n_train=len(dm.train_set),
        has_val=dm.val_set is not None, save=lambda: module.model.cpu().eval().save_checkpoint(path))
    return module.model.cpu()


def fit_cell_model(name: str, csv: str | Path, images: str | Path, *, partitions: tuple[Any, Any, Any],
                   output_dir: str | Path, config: CellTrainConfig | None = None,
                   callbacks: list[Callback] | None = None, **overrides: Any) -> CellFitResult:
    """`train_cell_model`, returning the trained module, trainer and data module too (notebooks, tests)."""
    recipe = overrides.pop("recipe", None)
    base = recipe_config(recipe) if recipe is not None else (config or CellTrainConfig())
    cfg = with_overrides(base, overrides)
    if name == "geodecoder" and (cfg.recipe != "fast" or cfg.init_epochs):
        raise InputError("--recipe paper is TransLocator's published recipe; GeoDecoder's paper (the abstract here) "
                         "gives none and its public code is not reproduced (docs/faithfulness.md)")
    out = start_run(cfg, output_dir)
    dataset = open_training_csv(csv, images)  # bad paths fail before any weights load
    parts = load_partitions(partitions)
    seg = load_segmenter(cfg.segmenter) if name == "translocator" else None  # missing weights: fail early
    model = build_model(name, cfg.pretrained, parts, cfg.model_kwargs)
    if name == "translocator" and cfg.init_epochs > 0 and parse_pretrained(cfg.pretrained).kind != "file":
        model.init_branches(fit_vit_mt(cfg, csv, images, list(parts), dataset, out))
    dm = _data(model, cfg, csv, images, list(parts), dataset, seg,
               out / "segmaps" / _segmenter_key(cfg.segmenter) if seg is not None else None)
    if dm.n_missing:
        rank_zero_info(f"{dm.n_missing} image(s) listed in {csv} are missing from {images}: skipped")
    if dm.n_outside:
        rank_zero_info(f"{dm.n_outside} image(s) lie outside every cell of the partitions: skipped")
    if dm.scene_column is None:
        rank_zero_info(f"no S{model.config['scene_classes']}_Label column in {csv}: the scene loss is skipped")
    module = _module(model, cfg)
    final, best = out / f"{name}.safetensors", out / f"{name}-best.safetensors"
    has_val = dm.val_set is not None
    keep_best = [BestCheckpoint(cfg.best_metric, lambda: module.model.save_checkpoint(best))] if has_val else []
    trainer = fit(module, dm, cfg, out, n_train=len(dm.train_set), has_val=has_val,
                  save=lambda: module.model.cpu().eval().save_checkpoint(final),
                  callbacks=[*keep_best, *(callbacks or [])])
    model = module.model.cpu().eval()
    if seg is not None:
        model.attach_segmenter(seg)
    return CellFitResult(final, best if best.is_file() else None, module, trainer, dm)


def train_cell_model(name: str, csv: str | Path, images: str | Path, *, partitions: tuple[Any, Any, Any],
                     output_dir: str | Path, **options: Any) -> Path:
    """Train `name` ("translocator" | "geodecoder") on a CSV + image folder; returns the checkpoint's path.

    partitions: (coarse, middle, fine) cell CSVs (paths or CellPartitions); they set the classes and travel
    in the checkpoint. Options are the fields of `CellTrainConfig` (defaults there): pretrained "imagenet"
    (timm ViT weights from the local HF cache, else WeightsMissingError), a checkpoint to continue from, or
    None for random weights; segmenter (TransLocator only); recipe "fast" (the defaults below) or "paper"
    (TransLocator: `PAPER_RECIPE`); epochs 10, batch_size 64 (per device), optimizer "adamw", lr 1e-4,
    weight_decay 0.05, schedule "cosine" (per step, 5% warm-up) | "step" | "none", augment "fast" | "paper",
    val_tencrop, init_epochs, val_fraction 0.05, devices, num_nodes, precision (default bf16-mixed on GPU,
    else 32-true), model_kwargs, seed, resume. Writes the last epoch's model (returned) and, with validation,
    the best validation epoch's (`<name>-best.safetensors`).
    """
    return fit_cell_model(name, csv, images, partitions=partitions, output_dir=output_dir, **options).checkpoint
