"""`train_geoclip`: fine-tune (or train) GeoCLIP on your own `IMG_FILE,LAT,LON` photos.

One GPU, many GPUs (`devices > 1` → DDP) and many nodes (`num_nodes > 1`, launched once per node by
your scheduler, e.g. `srun`) are the same call. Writes into `output_dir`:
  geoclip.safetensors   the trained heads, the backbone's name and the run's gallery (the training points):
                        `create_model("geoclip", pretrained=PATH)` loads it and scores that gallery
  gallery.csv           LAT,LON of the same training points, for reading
  lightning/last.ckpt   Lightning's checkpoint, to resume (`resume=True`)
  logs/.../metrics.csv  losses and validation accuracy per step and epoch
  features.pt           the backbone feature cache (`cache_features=True`)
  shards-index.npz      the shards' sample counts and positions (`shards=`: WebDataset shards, streamed)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from geocore.errors import InputError
from geocore.models.geoclip import GeoCLIP
from geocore.models.registry import load_model_for_user
from geocore.train.data import GeoImageDataModule, open_training_csv, train_transform_for
from geocore.train.features import FeatureDataModule
from geocore.train.fit import RunConfig, fit, run_precision, start_run, with_overrides
from geocore.train.geoclip_module import GeoCLIPModule
from geocore.train.shard_data import SHUFFLE_BUFFER, ShardDataModule, index_training_shards
from geocore.weights.resolve import parse_pretrained

CHECKPOINT_NAME = "geoclip.safetensors"


@dataclass
class FitResult:
    checkpoint: Path  # the loadable model file
    module: GeoCLIPModule  # the trained module (its `.model` is the GeoCLIP that was saved)
    trainer: L.Trainer


def build_geoclip(model: str = "geoclip", pretrained: str | None = None, *, from_scratch: bool = False,
                  seed: int = 0, **model_kwargs: Any) -> GeoCLIP:
    """The model to train: GeoCLIP's released heads (fine-tuning) or random heads (`from_scratch`).

    `pretrained=None` takes the model's default weights ("openai" for geoclip); a missing backbone is a
    WeightsMissingError saying how to get it.
    """
    if from_scratch:
        if parse_pretrained(pretrained).kind == "file":
            raise InputError(f"from_scratch starts from random heads, not from the checkpoint {pretrained}; "
                             "leave one of them out")
        model_kwargs["heads"] = None
    net = load_model_for_user(model, pretrained, seed=seed, **model_kwargs)
    if not isinstance(net, GeoCLIP):
        raise InputError(f"model {model!r} is not a GeoCLIP model; train_geoclip trains geoclip models only")
    return net


@dataclass(frozen=True)
class GeoCLIPTrainConfig(RunConfig):
    """GeoCLIP training options as plain data; the defaults follow the paper (see `train_geoclip`)."""

    batch_size: int = 512
    lr: float = 3e-5
    weight_decay: float = 1e-6
    schedule: str = "step"
    queue_size: int = 4096
    queue_noise_m: float = 0.0
    cache_features: bool = False
    feature_views: int = 0
    pretrained: str | None = None
    from_scratch: bool = False
    model: str = "geoclip"
    model_kwargs: dict[str, Any] | None = None
    shards: str | None = None  # WebDataset shards instead of a CSV and folder (`geocore.train.shard_data`)
    val_shards: str | None = None  # validation shards (default: round(val_fraction × shards) held out)
    shuffle_buffer: int = SHUFFLE_BUFFER  # samples each shard stream shuffles among


def _check_sources(cfg: GeoCLIPTrainConfig, csv: str | Path | None, images: str | Path | None) -> None:
    """A CSV with its image folder, or shards: one of the two, whole."""
    if cfg.shards:
        if csv is not None or images is not None:
            raise InputError("--shards reads images and positions from the shards; leave out --csv and --images "
                             "(or leave out --shards)")
        if cfg.cache_features:
            raise InputError("--cache-features needs --csv and --images; with --shards the frozen backbone runs "
                             "on each batch")
    else:
        if csv is None or images is None:
            raise InputError("give --csv and --images (a CSV of IMG_FILE,LAT,LON and its image folder), "
                             "or --shards (WebDataset shards)")
        if cfg.val_shards:
            raise InputError("--val-shards goes with --shards; with --csv a --val-fraction of the rows is held out")


def fit_geoclip(csv: str | Path | None, images: str | Path | None, *, output_dir: str | Path,
                config: GeoCLIPTrainConfig | None = None, callbacks: list[Callback] | None = None,
                **overrides: Any) -> FitResult:
    """`train_geoclip`, returning the trained module and trainer too (for notebooks and tests)."""
    cfg = with_overrides(config or GeoCLIPTrainConfig(), overrides)
    _check_sources(cfg, csv, images)
    out = start_run(cfg, output_dir)
    if cfg.shards:  # bad or damaged shards fail before the backbone loads
        split = index_training_shards(cfg.shards, cfg.val_shards, val_fraction=cfg.val_fraction, seed=cfg.seed,
                                      cache_dir=out, progress=cfg.progress)
    else:
        dataset = open_training_csv(csv, images)  # bad paths fail before the backbone loads
    net = build_geoclip(cfg.model, cfg.pretrained, from_scratch=cfg.from_scratch, seed=cfg.seed,
                        **(cfg.model_kwargs or {}))
    if cfg.shards:
        dm: GeoImageDataModule | FeatureDataModule | ShardDataModule = ShardDataModule(
            split, train_transform=train_transform_for(net.preprocess), val_transform=net.preprocess,
            batch_size=cfg.batch_size, num_workers=cfg.num_workers, seed=cfg.seed, shuffle_buffer=cfg.shuffle_buffer)
        has_val, n_train = dm.has_val, dm.n_train
        callbacks = [*(callbacks or []), *dm.callbacks()]
    elif cfg.cache_features:
        common = dict(batch_size=cfg.batch_size, val_fraction=cfg.val_fraction, seed=cfg.seed,
                      num_workers=cfg.num_workers, dataset=dataset)
        dm = FeatureDataModule(
            net, csv, images, out / "features.pt", views=cfg.feature_views,
            bf16=run_precision(cfg).startswith("bf16"), progress=cfg.progress, **common)
        has_val, n_train = bool(dm.val_ids), len(dm.train_ids)
    else:
        dm = GeoImageDataModule(csv, images, val_transform=net.preprocess,
                                train_transform=train_transform_for(net.preprocess), batch_size=cfg.batch_size,
                                val_fraction=cfg.val_fraction, seed=cfg.seed, num_workers=cfg.num_workers,
                                dataset=dataset)
        has_val, n_train = dm.val_set is not None, len(dm.train_set)
    if dm.n_missing:
        rank_zero_info(f"{dm.n_missing} image(s) listed in {csv} are missing from {images}: skipped")
    module = GeoCLIPModule(net, lr=cfg.lr, weight_decay=cfg.weight_decay, queue_size=cfg.queue_size,
                           queue_noise_m=cfg.queue_noise_m, schedule=cfg.schedule, gallery=dm.gallery)
    final = out / CHECKPOINT_NAME

    def save() -> None:
        net.save_checkpoint(final, gallery=dm.gallery)  # `locate` scores the run's own points
        g = dm.gallery.numpy()
        pd.DataFrame({"LAT": g[:, 0], "LON": g[:, 1]}).to_csv(out / "gallery.csv", index=False)

    trainer = fit(module, dm, cfg, out, n_train=n_train, has_val=has_val, save=save, callbacks=callbacks)
    return FitResult(final, module, trainer)


def train_geoclip(csv: str | Path | None, images: str | Path | None, *, output_dir: str | Path,
                  config: GeoCLIPTrainConfig | None = None, **overrides: Any) -> Path:
    """Train GeoCLIP on a CSV + image folder (or on WebDataset shards: `shards=`, csv and images None) and return
    the loadable checkpoint's path.

    Defaults follow the paper: frozen CLIP backbone, AdamW lr 3e-5 and weight decay 1e-6, learning
    rate × 0.87 each epoch (`schedule="cosine"` anneals per step instead), batch 512, a queue of 4096
    past GPS as extra negatives, bf16-mixed on GPU. `pretrained` None or "openai" fine-tunes the
    released GeoCLIP heads on the local CLIP ViT-L/14; a checkpoint path continues from that model;
    `from_scratch` starts from random heads. `cache_features` runs the backbone once (plus
    `feature_views` augmented views per image) and trains the heads on the cache.
    """
    return fit_geoclip(csv, images, output_dir=output_dir, config=config, **overrides).checkpoint
