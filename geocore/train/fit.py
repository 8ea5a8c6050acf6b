"""The one training loop setup both model families use: Lightning Trainer, devices and nodes, precision,
checkpointing, saving the model on rank 0, and the barrier every rank waits at.

One GPU, many GPUs (`devices > 1` → DDP, the rule of `geocore.runtime.devices`) and many nodes (`num_nodes > 1`, launched once per node by your
scheduler, e.g. `srun`) are the same call; bf16-mixed on a GPU that supports it, fp32 elsewhere.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, TypeVar

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from geocore.errors import InputError
from geocore.runtime.devices import DeviceOptions


@dataclass(frozen=True)
class RunConfig:
    """What every training run takes, as plain data; each model family's config adds its own fields and
    holds the only defaults (CLI options default to "not given")."""

    epochs: int = 10
    batch_size: int = 64  # per device
    lr: float = 1e-4
    weight_decay: float = 0.05
    schedule: str = "cosine"
    val_fraction: float = 0.05
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str | None = None
    precision: str | None = None  # None: bf16-mixed on a GPU that supports it, else 32-true
    accelerator: str = "auto"
    seed: int = 0
    num_workers: int = 4
    resume: bool = False  # continue from OUTPUT_DIR/lightning/last.ckpt
    log_every_n_steps: int = 50
    progress: bool = True


C = TypeVar("C", bound=RunConfig)


def with_overrides(config: C, overrides: dict[str, Any]) -> C:
    """`config` with the given options replaced; an unknown option is an InputError naming it."""
    known = {f.name for f in fields(config)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise InputError(f"unknown training option(s): {', '.join(unknown)}; expected some of {', '.join(sorted(known))}")
    return replace(config, **overrides)


def default_precision(accelerator: str = "auto") -> str:
    """`bf16-mixed` on a CUDA GPU that supports it, else `32-true`."""
    gpu = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return "bf16-mixed" if gpu and torch.cuda.is_bf16_supported() else "32-true"


def run_precision(cfg: RunConfig) -> str:
    return cfg.precision or default_precision(cfg.accelerator)


def start_run(cfg: RunConfig, output_dir: str | Path) -> Path:
    """Create the output folder and seed everything (every rank does this first)."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    return out


class BestCheckpoint(Callback):
    """Calls `save()` on rank 0 after each validation whose `monitor` is the best so far (`mode` "max" or
    "min"): the model of the best validation epoch, next to the last one. Its best score is part of Lightning's
    checkpoint, so a resumed run keeps it."""

    def __init__(self, monitor: str, save: Callable[[], None], mode: str = "max") -> None:
        if mode not in ("max", "min"):
            raise InputError(f"mode: expected 'max' or 'min', got {mode!r}")
        self.monitor, self.save, self.mode = monitor, save, mode
        self.best: float | None = None
        self.best_epoch: int | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])
        better = self.best is None or (value > self.best if self.mode == "max" else value < self.best)
        if better:
            self.best, self.best_epoch = value, int(trainer.current_epoch)
            if trainer.is_global_zero:
                self.save()

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best, self.best_epoch = state_dict.get("best"), state_dict.get("best_epoch")


def fit(module: L.LightningModule, datamodule: L.LightningDataModule, cfg: RunConfig, out: Path, *,
        n_train: int, has_val: bool, save: Callable[[], None], callbacks: list[Callback] | None = None) -> L.Trainer:
    """Train `module` on `datamodule` as `cfg` says, then `save()` on rank 0 and wait for every rank.

    Writes `out/lightning/last.ckpt` (resume with `cfg.resume`) and `out/logs/.../metrics.csv`; a
    `BestCheckpoint` among `callbacks` also saves the best validation epoch's model."""
    where = DeviceOptions(cfg.accelerator, cfg.devices, cfg.num_nodes, cfg.strategy)
    world = where.world_size()
    ckpt_dir = out / "lightning"
    trainer = L.Trainer(
        max_epochs=cfg.epochs, accelerator=cfg.accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes,
        strategy=where.trainer_strategy, precision=run_precision(cfg), default_root_dir=out,
        logger=CSVLogger(out, name="logs"),
        log_every_n_steps=max(1, min(cfg.log_every_n_steps, math.ceil(n_train / (cfg.batch_size * world)))),
        callbacks=[ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=0), *(callbacks or [])],
        limit_val_batches=None if has_val else 0, num_sanity_val_steps=0,
        enable_progress_bar=cfg.progress, enable_model_summary=cfg.progress,
    )
    last = ckpt_dir / "last.ckpt"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")  # frozen backbones
        warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=r".*IterableDataset. has .__len__. defined.*")  # shards: planned
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if cfg.resume and last.is_file() else None)
    if trainer.is_global_zero:
        save()
    trainer.strategy.barrier()
    return trainer
