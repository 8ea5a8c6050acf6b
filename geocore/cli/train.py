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


def register(app: typer.Typer) -> None:
    app.add_typer(train_app, name="train")
