"""`geocore train`: train or fine-tune models on your own photos (`geocore train geoclip ...`).

Every option defaults to "not given": the defaults live in one place, the family's config dataclass
(`GeoCLIPTrainConfig`, `CellTrainConfig`), and `geocore train X --help` shows them from there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from geocore.cli.options import DEVICES_OPT, NODES_OPT
from geocore.data.text import terminal_text
from geocore.errors import InputError

train_app = typer.Typer(help="Train or fine-tune models on your own geotagged photos.", no_args_is_help=True)

CSV_OPT = typer.Option(..., "--csv", help="Training CSV: IMG_FILE (or IMG_ID), LAT, LON[, S3_Label, S16_Label, ...].")
IMAGES_OPT = typer.Option(..., "--images", help="Folder holding the images (IMG_FILE is relative to it).")
OUT_OPT = typer.Option(..., "--output-dir", help="Where the checkpoint, logs and caches go.")
EPOCHS_OPT = typer.Option(None, "--epochs", min=1, help="Default 10.")
LR_OPT = typer.Option(None, "--lr", min=0.0, help="Default: GeoCLIP 3e-5, cell models 1e-4.")
VAL_OPT = typer.Option(None, "--val-fraction", min=0.0, max=0.9, help="Held out for validation (default 0.05).")
SEED_OPT = typer.Option(None, "--seed")
WORKERS_OPT = typer.Option(None, "--workers", min=0, help="Data-loading worker processes (default 4).")
RESUME_OPT = typer.Option(False, "--resume", help="Continue from OUTPUT_DIR/lightning/last.ckpt.")
SCRATCH_OPT = typer.Option(False, "--from-scratch", help="Start from random weights / heads.")
PARTITIONS_OPT = typer.Option(..., "--partitions", help="Cell CSVs COARSE MIDDLE FINE, e.g. cells_50_5000.csv "
                              "cells_50_2000.csv cells_50_1000.csv.")
CELLS_PRETRAINED_OPT = typer.Option(None, "--pretrained",
                                    help="imagenet (default: timm ViT weights, local) or a checkpoint to continue from.")
MODEL_CONFIG_OPT = typer.Option(None, "--model-config", hidden=True)  # JSON model options (tiny tests)


def given(**options: Any) -> dict[str, Any]:
    """The options the user gave: None (and a False flag) mean "not given", so the config's default holds."""
    return {k: v for k, v in options.items() if v is not None and v is not False}


def _done(model: str, ckpt: Path) -> None:
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank != 0:  # DDP: the other processes stay quiet
        return
    console = Console(stderr=True)
    console.print(f"checkpoint: {terminal_text(ckpt)}")
    best = ckpt.with_name(f"{model}-best.safetensors")
    if best.is_file():
        console.print(f"best validation epoch: {terminal_text(best)}")
    console.print(f"use it: geocore evaluate --model {terminal_text(model)} --pretrained {terminal_text(ckpt)} ...")


@train_app.command("geoclip")
def geoclip(
    csv: Path | None = typer.Option(None, "--csv", help="Training CSV: IMG_FILE (or IMG_ID), LAT, LON (or use "
                                    "--shards)."),
    images: Path | None = typer.Option(None, "--images", help="Folder holding the images (IMG_FILE is relative "
                                       "to it)."),
    shards: str | None = typer.Option(None, "--shards", help="WebDataset shards instead of --csv/--images, streamed "
                                      "(e.g. 'osv5m-train-{000000..000489}.tar'; globs, ::-joined lists and "
                                      "pipe:/http URLs too): each sample a .jpg/.png/.webp and a .json with "
                                      "latitude/longitude (or lat/lon)."),
    val_shards: str | None = typer.Option(None, "--val-shards", help="Validation shards (default: "
                                          "--val-fraction of the --shards held out, whole shards)."),
    output_dir: Path = OUT_OPT, epochs: int = EPOCHS_OPT,
    batch_size: int = typer.Option(None, "--batch-size", min=1, help="Per device (default 512)."),
    lr: float = LR_OPT,
    queue_size: int = typer.Option(None, "--queue-size", min=0, help="Past GPS kept as extra negatives (default 4096)."),
    val_fraction: float = VAL_OPT, devices: int = DEVICES_OPT, num_nodes: int = NODES_OPT,
    cache_features: bool = typer.Option(False, "--cache-features",
                                        help="Run the frozen backbone once and train on cached features."),
    pretrained: str | None = typer.Option(None, "--pretrained",
                                          help="openai (default: fine-tune GeoCLIP) or a geocore checkpoint path."),
    from_scratch: bool = SCRATCH_OPT, seed: int = SEED_OPT, workers: int = WORKERS_OPT, resume: bool = RESUME_OPT,
    model: str = typer.Option(None, "--model", hidden=True),  # geoclip-tiny: random tiny backbone (tests)
) -> None:
    """Fine-tune GeoCLIP on a CSV of geotagged images or WebDataset shards (frozen CLIP, trainable heads, GPS queue)."""
    from geocore.train.run import train_geoclip  # torch/lightning load only when training

    options = given(epochs=epochs, batch_size=batch_size, lr=lr, queue_size=queue_size, val_fraction=val_fraction,
                    devices=devices, num_nodes=num_nodes, cache_features=cache_features, pretrained=pretrained,
                    from_scratch=from_scratch, model=model, seed=seed, num_workers=workers, resume=resume,
                    shards=shards, val_shards=val_shards)
    _done(model or "geoclip", train_geoclip(csv, images, output_dir=output_dir, **options))


def _train_cells(name: str, csv: Path, images: Path, partitions: tuple[Path, Path, Path], output_dir: Path,
                 options: dict[str, Any], from_scratch: bool, model_config: str | None) -> None:
    """Shared body of `train translocator` / `train geodecoder`."""
    from geocore.train.cells_run import train_cell_model  # torch/lightning load only when training

    try:
        if model_config:
            options["model_kwargs"] = json.loads(model_config)
    except json.JSONDecodeError as err:
        raise InputError(f"--model-config: not JSON ({err})") from None
    if from_scratch:
        if options.get("pretrained") not in (None, "imagenet"):
            raise InputError(f"--from-scratch starts from random weights, not from {options['pretrained']}; "
                             "leave one of them out")
        options["pretrained"] = None
    _done(name, train_cell_model(name, csv, images, partitions=partitions, output_dir=output_dir, **options))


@train_app.command("translocator")
def translocator(
    csv: Path = CSV_OPT, images: Path = IMAGES_OPT, partitions: tuple[Path, Path, Path] = PARTITIONS_OPT,
    output_dir: Path = OUT_OPT, epochs: int = EPOCHS_OPT,
    batch_size: int = typer.Option(None, "--batch-size", min=1, help="Per device (default 64)."),
    lr: float = LR_OPT, val_fraction: float = VAL_OPT, devices: int = DEVICES_OPT, num_nodes: int = NODES_OPT,
    segmenter: str = typer.Option(None, "--segmenter", help="Segmentation weights (default segformer-b0-ade; "
                                  "segformer-b2-ade) or a transformers folder."),
    pretrained: str = CELLS_PRETRAINED_OPT, from_scratch: bool = SCRATCH_OPT, seed: int = SEED_OPT,
    workers: int = WORKERS_OPT, resume: bool = RESUME_OPT, model_config: str = MODEL_CONFIG_OPT,
    recipe: str = typer.Option(None, "--recipe", help="fast (default: 10 epochs, AdamW 1e-4, random crops) or paper "
                               "(the paper's: ViT-MT init for 10 epochs, then 40 epochs, batch 256, its augmentation "
                               "and ten-crop, SGD + cosine as the authors' code); options given override it."),
) -> None:
    """Train TransLocator (RGB + segmentation ViT) on geotagged images; segmentation maps are cached once."""
    _train_cells("translocator", csv, images, partitions, output_dir, given(
        epochs=epochs, batch_size=batch_size, lr=lr, val_fraction=val_fraction, devices=devices, num_nodes=num_nodes,
        segmenter=segmenter, pretrained=pretrained, seed=seed, num_workers=workers, resume=resume, recipe=recipe),
        from_scratch, model_config)


@train_app.command("geodecoder")
def geodecoder(
    csv: Path = CSV_OPT, images: Path = IMAGES_OPT, partitions: tuple[Path, Path, Path] = PARTITIONS_OPT,
    output_dir: Path = OUT_OPT, epochs: int = EPOCHS_OPT,
    batch_size: int = typer.Option(None, "--batch-size", min=1, help="Per device (default 64)."),
    lr: float = LR_OPT, val_fraction: float = VAL_OPT, devices: int = DEVICES_OPT, num_nodes: int = NODES_OPT,
    pretrained: str = CELLS_PRETRAINED_OPT, from_scratch: bool = SCRATCH_OPT, seed: int = SEED_OPT,
    workers: int = WORKERS_OPT, resume: bool = RESUME_OPT, model_config: str = MODEL_CONFIG_OPT,
) -> None:
    """Train GeoDecoder (ViT + scene × hierarchy queries) on geotagged images (S16_Label column: scene loss)."""
    _train_cells("geodecoder", csv, images, partitions, output_dir, given(
        epochs=epochs, batch_size=batch_size, lr=lr, val_fraction=val_fraction, devices=devices, num_nodes=num_nodes,
        pretrained=pretrained, seed=seed, num_workers=workers, resume=resume), from_scratch, model_config)


def register(app: typer.Typer) -> None:
    app.add_typer(train_app, name="train")
