"""`train_geoclip`: fine-tune (or train) GeoCLIP on your own `IMG_FILE,LAT,LON` photos.

One GPU, many GPUs (`devices > 1` → DDP) and many nodes (`num_nodes > 1`, launched once per node by
your scheduler, e.g. `srun`) are the same call. Writes into `output_dir`:
  geoclip.safetensors   the trained model: `create_model("geoclip", pretrained=PATH)` loads it
  gallery.csv           LAT,LON of the training points (a gallery for the new region)
  lightning/last.ckpt   Lightning's checkpoint, to resume (`resume=True`)
  logs/.../metrics.csv  losses and validation accuracy per step and epoch
  features.pt           the backbone feature cache (`cache_features=True`)
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_info

from geocore.errors import InputError
from geocore.models.geoclip import GeoCLIP
from geocore.models.registry import load_model_for_user
from geocore.train.data import GeoImageDataModule, open_training_csv, train_transform_for
from geocore.train.features import FeatureDataModule
from geocore.train.geoclip_module import GeoCLIPModule

CHECKPOINT_NAME = "geoclip.safetensors"
CKPT_SUFFIXES = {".pt", ".pth", ".safetensors"}


@dataclass
class FitResult:
    checkpoint: Path  # the loadable model file
    module: GeoCLIPModule  # the trained module (its `.model` is the GeoCLIP that was saved)
    trainer: L.Trainer


def default_precision(accelerator: str = "auto") -> str:
    """`bf16-mixed` on a CUDA GPU that supports it, else `32-true`."""
    gpu = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return "bf16-mixed" if gpu and torch.cuda.is_bf16_supported() else "32-true"


def build_geoclip(model: str = "geoclip", pretrained: str | None = None, *, from_scratch: bool = False,
                  seed: int = 0, **model_kwargs: Any) -> GeoCLIP:
    """The model to train: GeoCLIP's released heads (fine-tuning) or random heads (`from_scratch`).

    `pretrained=None` takes the model's default weights ("openai" for geoclip); a missing backbone is a
    WeightsMissingError saying how to get it.
    """
    import geocore.models.geoclip  # noqa: F401  (registers the geoclip models)

    if from_scratch:
        if pretrained is not None and (Path(pretrained).is_file() or Path(pretrained).suffix in CKPT_SUFFIXES):
            raise InputError(f"from_scratch starts from random heads, not from the checkpoint {pretrained}; "
                             "leave one of them out")
        model_kwargs["heads"] = None
    net = load_model_for_user(model, pretrained, seed=seed, **model_kwargs)
    if not isinstance(net, GeoCLIP):
        raise InputError(f"model {model!r} is not a GeoCLIP model; train_geoclip trains geoclip models only")
    return net


@dataclass(frozen=True)
class GeoCLIPTrainConfig:
    """Training options as plain data. Defaults follow the paper (see `train_geoclip`)."""

    epochs: int = 10
    batch_size: int = 512
    lr: float = 3e-5
    weight_decay: float = 1e-6
    queue_size: int = 4096
    queue_noise_m: float = 0.0
    schedule: str = "step"
    val_fraction: float = 0.05
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str | None = None
    precision: str | None = None
    accelerator: str = "auto"
    cache_features: bool = False
    feature_views: int = 0
    pretrained: str | None = None
    from_scratch: bool = False
    model: str = "geoclip"
    model_kwargs: dict[str, Any] | None = None
    seed: int = 0
    num_workers: int = 4
    resume: bool = False
    log_every_n_steps: int = 50
    progress: bool = True


def _config(config: GeoCLIPTrainConfig | None, overrides: dict[str, Any]) -> GeoCLIPTrainConfig:
    unknown = set(overrides) - set(GeoCLIPTrainConfig.__dataclass_fields__)
    if unknown:
        raise InputError(f"unknown training option(s): {', '.join(sorted(unknown))}")
    return replace(config or GeoCLIPTrainConfig(), **overrides)


def fit_geoclip(csv: str | Path, images: str | Path, *, output_dir: str | Path,
                config: GeoCLIPTrainConfig | None = None, callbacks: list[Callback] | None = None,
                **overrides: Any) -> FitResult:
    """`train_geoclip`, returning the trained module and trainer too (for notebooks and tests)."""
    cfg = _config(config, overrides)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    precision = cfg.precision or default_precision(cfg.accelerator)
    dataset = open_training_csv(csv, images)  # bad paths fail before the backbone loads
    net = build_geoclip(cfg.model, cfg.pretrained, from_scratch=cfg.from_scratch, seed=cfg.seed,
                        **(cfg.model_kwargs or {}))
    common = dict(batch_size=cfg.batch_size, val_fraction=cfg.val_fraction, seed=cfg.seed,
                  num_workers=cfg.num_workers, dataset=dataset)
    if cfg.cache_features:
        dm: GeoImageDataModule | FeatureDataModule = FeatureDataModule(
            net, csv, images, out / "features.pt", views=cfg.feature_views, bf16=precision.startswith("bf16"),
            progress=cfg.progress, **common)
        has_val, n_train = bool(dm.val_ids), len(dm.train_ids)
    else:
        dm = GeoImageDataModule(csv, images, val_transform=net.preprocess,
                                train_transform=train_transform_for(net.preprocess), **common)
        has_val, n_train = dm.val_set is not None, len(dm.train_set)
    if dm.n_missing:
        rank_zero_info(f"{dm.n_missing} image(s) listed in {csv} are missing from {images}: skipped")
    module = GeoCLIPModule(net, lr=cfg.lr, weight_decay=cfg.weight_decay, queue_size=cfg.queue_size,
                           queue_noise_m=cfg.queue_noise_m, schedule=cfg.schedule, gallery=dm.gallery)
    multi = cfg.num_nodes > 1 or (isinstance(cfg.devices, int) and (cfg.devices > 1 or cfg.devices == -1))
    world = cfg.num_nodes * (cfg.devices if isinstance(cfg.devices, int) and cfg.devices > 0 else 1)
    ckpt_dir = out / "lightning"
    trainer = L.Trainer(
        max_epochs=cfg.epochs, accelerator=cfg.accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes,
        strategy=cfg.strategy or ("ddp" if multi else "auto"), precision=precision, default_root_dir=out,
        logger=CSVLogger(out, name="logs"),
        log_every_n_steps=max(1, min(cfg.log_every_n_steps, math.ceil(n_train / (cfg.batch_size * world)))),
        callbacks=[ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=0), *(callbacks or [])],
        limit_val_batches=None if has_val else 0, num_sanity_val_steps=0,
        enable_progress_bar=cfg.progress, enable_model_summary=cfg.progress,
    )
    last = ckpt_dir / "last.ckpt"
    with warnings.catch_warnings():  # the frozen backbone is in eval mode on purpose
        warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
        trainer.fit(module, datamodule=dm, ckpt_path=str(last) if cfg.resume and last.is_file() else None)
    final = out / CHECKPOINT_NAME
    if trainer.is_global_zero:
        net.save_checkpoint(final, gallery=dm.gallery)  # locate scores the run's own points
        g = dm.gallery.numpy()
        pd.DataFrame({"LAT": g[:, 0], "LON": g[:, 1]}).to_csv(out / "gallery.csv", index=False)
    trainer.strategy.barrier()
    return FitResult(final, module, trainer)


def train_geoclip(csv: str | Path, images: str | Path, *, output_dir: str | Path,
                  config: GeoCLIPTrainConfig | None = None, **overrides: Any) -> Path:
    """Train GeoCLIP on a CSV + image folder and return the loadable checkpoint's path.

    Defaults follow the paper: frozen CLIP backbone, AdamW lr 3e-5 and weight decay 1e-6, learning
    rate × 0.87 each epoch (`schedule="cosine"` anneals per step instead), batch 512, a queue of 4096
    past GPS as extra negatives, bf16-mixed on GPU. `pretrained` None or "openai" fine-tunes the
    released GeoCLIP heads on the local CLIP ViT-L/14; a checkpoint path continues from that model;
    `from_scratch` starts from random heads. `cache_features` runs the backbone once (plus
    `feature_views` augmented views per image) and trains the heads on the cache.
    """
    return fit_geoclip(csv, images, output_dir=output_dir, config=config, **overrides).checkpoint
