"""The options several commands share (model, weights, top-k, devices, precision) and the note a model with a
random backbone prints. Nothing heavy at import time (`geocore --help` stays free of torch)."""

from __future__ import annotations

from typing import Any

import typer

from geocore.cli.precision import PRECISION_OPT  # noqa: F401 - shared from here with the others
from geocore.data.text import terminal_text

MODEL_OPT = typer.Option("geoclip", "--model", help="Registered model name (see `geocore models`).")
PRETRAINED_OPT = typer.Option(None, "--pretrained", help="Weights tag or checkpoint path (default: the model's own).")
GALLERY_MODEL_OPT = typer.Option("geoclip", "--model", help="A GeoCLIP model; only its location encoder is used.")
TOPK_OPT = typer.Option(5, "--top-k", min=1, help="How many locations to return.")

# the options of every command that runs on the predict loop (`geocore.runtime.predict_loop`); None = not given
DEVICE_OPT = typer.Option(None, "--device", help="One device: cpu, cuda or cuda:N (or use --accelerator).")
ACCELERATOR_OPT = typer.Option(None, "--accelerator", help="auto, cpu or gpu (default auto: a GPU when there is one).")
DEVICES_OPT = typer.Option(None, "--devices", min=1, help="Devices per node (more than one: DDP; default 1).")
NODES_OPT = typer.Option(None, "--num-nodes", min=1, help="Machines (start the command on each, e.g. srun; default 1).")
STRATEGY_OPT = typer.Option(None, "--strategy", help="ddp (the default with more than one device or node) or auto.")
WORKERS_OPT = typer.Option(0, "--workers", min=0, help="Data-loading worker processes (per device).")


def warn_random_backbone(net: Any, name: str, console: Any, meaning: str = "these predictions mean nothing") -> None:
    """The red note when `net`'s backbone has random weights (tests, demos): "geoclip-tiny has a RANDOM backbone:
    these predictions mean nothing"."""
    if net.random_backbone:
        console.print(f"[bold red]note:[/] {terminal_text(name)} has a RANDOM backbone: {meaning}")
