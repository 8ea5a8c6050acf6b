"""`geocore train`: train or fine-tune models on your own photos (`geocore train geoclip ...`)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

train_app = typer.Typer(help="Train or fine-tune models on your own geotagged photos.", no_args_is_help=True)


@train_app.command("geoclip")
def geoclip(
    csv: Path = typer.Option(..., "--csv", help="Training CSV: IMG_FILE (or IMG_ID), LAT, LON."),
    images: Path = typer.Option(..., "--images", help="Folder holding the images (IMG_FILE is relative to it)."),
    output_dir: Path = typer.Option(..., "--output-dir", help="Where the checkpoint, logs and caches go."),
    epochs: int = typer.Option(10, "--epochs", min=1),
    batch_size: int = typer.Option(512, "--batch-size", min=1, help="Per device."),
    lr: float = typer.Option(3e-5, "--lr", min=0.0),
    queue_size: int = typer.Option(4096, "--queue-size", min=0, help="Past GPS kept as extra negatives."),
    val_fraction: float = typer.Option(0.05, "--val-fraction", min=0.0, max=0.9, help="Held out for validation."),
    devices: int = typer.Option(1, "--devices", min=1, help="GPUs per node (more than one: DDP)."),
    num_nodes: int = typer.Option(1, "--num-nodes", min=1, help="Machines (start the command on each)."),
    cache_features: bool = typer.Option(False, "--cache-features",
                                        help="Run the frozen backbone once and train on cached features."),
    pretrained: str | None = typer.Option(None, "--pretrained",
                                          help="openai (default: fine-tune GeoCLIP) or a geocore checkpoint path."),
    from_scratch: bool = typer.Option(False, "--from-scratch", help="Start from random heads, not GeoCLIP's."),
    seed: int = typer.Option(0, "--seed"),
    workers: int = typer.Option(4, "--workers", min=0, help="Data-loading worker processes."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUTPUT_DIR/lightning/last.ckpt."),
    model: str = typer.Option("geoclip", "--model", hidden=True),  # geoclip-tiny: random tiny backbone (tests)
) -> None:
    """Fine-tune GeoCLIP on a CSV of geotagged images (frozen CLIP, trainable heads, GPS queue)."""
    from geocore.train.run import train_geoclip  # torch/lightning load only when training

    ckpt = train_geoclip(
        csv, images, output_dir=output_dir, epochs=epochs, batch_size=batch_size, lr=lr, queue_size=queue_size,
        val_fraction=val_fraction, devices=devices, num_nodes=num_nodes, cache_features=cache_features,
        pretrained=pretrained, from_scratch=from_scratch, model=model, seed=seed, num_workers=workers,
        resume=resume,
    )
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank != 0:  # DDP: the other processes stay quiet
        return
    console = Console(stderr=True)
    console.print(f"checkpoint: {ckpt}")
    console.print(f"use it: geocore evaluate --model {model} --pretrained {ckpt} ...")


def _train_cells(name: str, csv: Path, images: Path, partitions: tuple[Path, Path, Path], output_dir: Path,
                 options: dict, model_config: str | None) -> None:
    """Shared body of `train translocator` / `train geodecoder`."""
    import json

    from geocore.errors import InputError
    from geocore.train.cells_run import train_cell_model  # torch/lightning load only when training

    try:
        model_kwargs = json.loads(model_config) if model_config else None
    except json.JSONDecodeError as err:
        raise InputError(f"--model-config: not JSON ({err})") from None
    if options.pop("from_scratch"):
        if options["pretrained"] not in (None, "imagenet"):
            raise InputError(f"--from-scratch starts from random weights, not from {options['pretrained']}; "
                             "leave one of them out")
        options["pretrained"] = None
    ckpt = train_cell_model(name, csv, images, partitions=partitions, output_dir=output_dir,
                            model_kwargs=model_kwargs, **options)
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank != 0:
        return
    console = Console(stderr=True)
    console.print(f"checkpoint: {ckpt}")
    console.print(f"use it: geocore evaluate --model {name} --pretrained {ckpt} ...")


CELLS_CSV = typer.Option(..., "--csv", help="Training CSV: IMG_FILE (or IMG_ID), LAT, LON[, S3_Label, S16_Label, ...].")
CELLS_IMAGES = typer.Option(..., "--images", help="Folder holding the images (IMG_FILE is relative to it).")
CELLS_PARTITIONS = typer.Option(..., "--partitions", help="Cell CSVs COARSE MIDDLE FINE, e.g. cells_50_5000.csv "
                                "cells_50_2000.csv cells_50_1000.csv.")
CELLS_OUT = typer.Option(..., "--output-dir", help="Where the checkpoint, logs and caches go.")
CELLS_PRETRAINED = typer.Option("imagenet", "--pretrained",
                                help="imagenet (timm ViT weights, local) or a checkpoint to continue from.")
CELLS_SCRATCH = typer.Option(False, "--from-scratch", help="Start from random weights.")
CELLS_MODEL_CONFIG = typer.Option(None, "--model-config", hidden=True)  # JSON model options (tiny tests)


@train_app.command("translocator")
def translocator(
    csv: Path = CELLS_CSV, images: Path = CELLS_IMAGES, partitions: tuple[Path, Path, Path] = CELLS_PARTITIONS,
    output_dir: Path = CELLS_OUT,
    epochs: int = typer.Option(10, "--epochs", min=1),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Per device."),
    lr: float = typer.Option(1e-4, "--lr", min=0.0),
    val_fraction: float = typer.Option(0.05, "--val-fraction", min=0.0, max=0.9, help="Held out for validation."),
    devices: int = typer.Option(1, "--devices", min=1, help="GPUs per node (more than one: DDP)."),
    num_nodes: int = typer.Option(1, "--num-nodes", min=1, help="Machines (start the command on each)."),
    segmenter: str = typer.Option("segformer-b0-ade", "--segmenter",
                                  help="Segmentation weights (segformer-b0-ade, segformer-b2-ade) or a folder."),
    pretrained: str = CELLS_PRETRAINED, from_scratch: bool = CELLS_SCRATCH,
    seed: int = typer.Option(0, "--seed"),
    workers: int = typer.Option(4, "--workers", min=0, help="Data-loading worker processes."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUTPUT_DIR/lightning/last.ckpt."),
    model_config: str = CELLS_MODEL_CONFIG,
) -> None:
    """Train TransLocator (RGB + segmentation ViT) on geotagged images; segmentation maps are cached once."""
    _train_cells("translocator", csv, images, partitions, output_dir, dict(
        epochs=epochs, batch_size=batch_size, lr=lr, val_fraction=val_fraction, devices=devices,
        num_nodes=num_nodes, segmenter=segmenter, pretrained=pretrained, from_scratch=from_scratch, seed=seed,
        num_workers=workers, resume=resume), model_config)


@train_app.command("geodecoder")
def geodecoder(
    csv: Path = CELLS_CSV, images: Path = CELLS_IMAGES, partitions: tuple[Path, Path, Path] = CELLS_PARTITIONS,
    output_dir: Path = CELLS_OUT,
    epochs: int = typer.Option(10, "--epochs", min=1),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Per device."),
    lr: float = typer.Option(1e-4, "--lr", min=0.0),
    val_fraction: float = typer.Option(0.05, "--val-fraction", min=0.0, max=0.9, help="Held out for validation."),
    devices: int = typer.Option(1, "--devices", min=1, help="GPUs per node (more than one: DDP)."),
    num_nodes: int = typer.Option(1, "--num-nodes", min=1, help="Machines (start the command on each)."),
    pretrained: str = CELLS_PRETRAINED, from_scratch: bool = CELLS_SCRATCH,
    seed: int = typer.Option(0, "--seed"),
    workers: int = typer.Option(4, "--workers", min=0, help="Data-loading worker processes."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUTPUT_DIR/lightning/last.ckpt."),
    model_config: str = CELLS_MODEL_CONFIG,
) -> None:
    """Train GeoDecoder (ViT + scene × hierarchy queries) on geotagged images (S16_Label column: scene loss)."""
    _train_cells("geodecoder", csv, images, partitions, output_dir, dict(
        epochs=epochs, batch_size=batch_size, lr=lr, val_fraction=val_fraction, devices=devices,
        num_nodes=num_nodes, pretrained=pretrained, from_scratch=from_scratch, seed=seed, num_workers=workers,
        resume=resume), model_config)


def register(app: typer.Typer) -> None:
    app.add_typer(train_app, name="train")
