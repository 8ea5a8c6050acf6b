"""`geocore refs build|info`: reference sets of geotagged photos (`geocore.refs`)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from geocore.cli.options import (ACCELERATOR_OPT, DEVICE_OPT, DEVICES_OPT, NODES_OPT, PRECISION_OPT, PRETRAINED_OPT,
                                 STRATEGY_OPT, WORKERS_OPT, warn_random_backbone)
from geocore.cli.precision import check_precision
from geocore.data.text import terminal_text
from geocore.weights.preflight import check_default_weights

refs_app = typer.Typer(help="Reference photos: your geotagged photos, searched for each query and folded into "
                            "its answer (geocore locate --refs).", no_args_is_help=True)


@refs_app.command("build")
def build(
    source: Path = typer.Argument(..., help="A CSV (IMG_ID, LAT, LON, optional columns) with --images, a folder "
                                  "of photos whose GPS comes from their EXIF, or local WebDataset shards (a .tar, or "
                                  "a pattern such as 'shards-{000..009}.tar'; IMG_ID is each sample's key)."),
    output: Path = typer.Option(..., "--output", help="The reference set to write (a folder)."),
    model: str = typer.Option("geoclip", "--model", help="The model whose image tower embeds the photos (the one "
                              "you will locate with)."),
    pretrained: str = PRETRAINED_OPT,
    images: Path = typer.Option(None, "--images", help="Folder holding the CSV's photos."),
    thumbnails: bool = typer.Option(False, "--thumbnails", help="Also keep a small thumbnail of each photo (off by "
                                    "default: the set then holds no picture of anyone's photo)."),
    resume: bool = typer.Option(False, "--resume", help="Carry on a killed build of the same source and model."),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    device: str = DEVICE_OPT,
    accelerator: str = ACCELERATOR_OPT,
    devices: int = DEVICES_OPT,
    num_nodes: int = NODES_OPT,
    strategy: str = STRATEGY_OPT,
    precision: str = PRECISION_OPT,
    workers: int = WORKERS_OPT,
) -> None:
    """Embed geotagged photos with a model's own image tower into a reference set (resumable, many devices)."""
    check_default_weights(model, pretrained)  # before torch loads
    check_precision(precision)
    from geocore.models.registry import load_model_for_user
    from geocore.refs import build_reference_set

    console = Console(stderr=True, soft_wrap=True)
    net = load_model_for_user(model, pretrained)
    warn_random_backbone(net, model, console, "these embeddings mean nothing")
    built = build_reference_set(net, source, output=output, images=images, thumbnails=thumbnails, resume=resume,
                                batch_size=batch_size, device=device, accelerator=accelerator, devices=devices,
                                num_nodes=num_nodes, strategy=strategy, precision=precision, num_workers=workers)
    if built is None:  # not rank 0
        return
    for row in built.skipped.itertuples() if len(built.skipped) else []:
        console.print(f"[yellow]skipped[/] {terminal_text(row.name)}: {terminal_text(row.reason)}")
    console.print(f"{len(built):,} reference(s) → {terminal_text(output)}"
                  + (f"; {len(built.skipped):,} skipped (listed above)" if len(built.skipped) else ""))


@refs_app.command("info")
def info(refs: Path = typer.Argument(..., help="A reference set folder from `geocore refs build`.")) -> None:
    """Size, model, and where the references are (per continent and country)."""
    from geocore.refs import load_reference_set, reference_info

    data = reference_info(load_reference_set(refs))
    console = Console(soft_wrap=True)
    console.print(f"{terminal_text(refs)}: {data['count']:,} references, model {terminal_text(data['model'])} "
                  f"({data['embedding']}, {data['dim']}-d, fingerprint {data['fingerprint']}), "
                  f"{data['embeddings_mb']:,.1f} MB of embeddings, index: {terminal_text(data['index'] or 'exact scan')}, "
                  f"thumbnails: {'yes' if data['thumbnails'] else 'no'}, skipped at build: {data['skipped']:,}"
                  + (" — RANDOM backbone" if data["random_backbone"] else ""))
    for key in ("continents", "countries"):
        frame = data[key]
        t = Table(title="references per " + {"continents": "continent", "countries": "country"}[key])
        for col in frame.columns:
            t.add_column(col)
        for row in frame.head(25).itertuples(index=False):
            t.add_row(terminal_text(row[0]), f"{row[1]:,}")
        console.print(t)


def register(app: typer.Typer) -> None:
    app.add_typer(refs_app, name="refs")
