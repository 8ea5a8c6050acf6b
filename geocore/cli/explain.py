"""`geocore segment` and `geocore explain`: what is in the photo, and where the model looked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from geocore.cli.options import PRECISION_OPT, PRETRAINED_OPT, warn_random_backbone
from geocore.cli.precision import check_precision, describe_precision
from geocore.data.safe_io import check_output
from geocore.data.text import terminal_text
from geocore.errors import InputError
from geocore.weights.preflight import check_default_weights

SEGMENTER_OPT = typer.Option("segformer-b0-ade", "--segmenter",
                             help="Segmentation weights for TransLocator's segmentation branch.")


def _latlon(text: str) -> tuple[float, float]:
    try:
        lat, lon = (float(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--target-latlon {text!r}: expected LAT,LON in degrees, e.g. 48.86,2.35") from None
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise InputError(f"--target-latlon {text!r}: latitude must be in -90..90 and longitude in -180..180")
    return lat, lon


def segment(
    image: Path = typer.Argument(..., help="Image file."),
    output: Path = typer.Option(..., "--output", help="PNG: the photo and its colour map side by side."),
    model: str = typer.Option("segformer-b0-ade", "--model", help="segformer-b0-ade or segformer-b2-ade."),
    weights: Path = typer.Option(None, "--weights", help="A local transformers SegFormer folder instead."),
    legend: Path = typer.Option(None, "--legend", help="Write the classes present (id, name, colour, share) as CSV."),
    overlay: bool = typer.Option(False, "--overlay", help="Blend the colour map over the photo instead."),
    top: int = typer.Option(10, "--top", min=1, help="How many classes to print."),
) -> None:
    """Semantic segmentation into the 150 ADE20K classes (SegFormer, offline); prints the largest classes."""
    from geocore.data.images import load_image
    from geocore.explain.segmentation import overlay as blend, side_by_side
    from geocore.models.segmenter import Segmenter

    check_output(output, (".png",))
    if legend is not None:
        check_output(legend, (".csv",), "--legend")
    photo = load_image(image)
    seg = Segmenter.from_pretrained(model, weights)
    labels = seg.segment(photo)
    table = seg.legend(labels)
    (blend(photo, labels) if overlay else side_by_side(photo, labels)).save(output)
    if legend is not None:
        table.to_csv(legend, index=False)
    t = Table(title=terminal_text(f"{image.name}: {seg.name}"))
    for col in ("class", "name", "share"):
        t.add_column(col, justify="left" if col == "name" else "right")
    for r in table.head(top).itertuples():
        t.add_row(str(r.class_id), f"[{r.colour}]■[/] {terminal_text(r.name)}", f"{r.share:.1%}")
    console = Console(soft_wrap=True)
    console.print(t)
    console.print(f"{len(table)} classes → {terminal_text(output)}"
                  + (f", legend → {terminal_text(legend)}" if legend else ""))


def explain(
    image: Path = typer.Argument(..., help="Image file."),
    model: str = typer.Option(..., "--model", help="Registered model name (see `geocore models`)."),
    pretrained: str = PRETRAINED_OPT,
    target: int = typer.Option(None, "--target", min=0,
                               help="Gallery point (geoclip) or fine cell (translocator, geodecoder); default top-1."),
    target_latlon: str = typer.Option(None, "--target-latlon", help="LAT,LON to explain (geoclip only)."),
    output: Path = typer.Option(..., "--output", help="PNG: the Grad-CAM heat map over the photo."),
    raw_map: Path = typer.Option(None, "--raw-map", help="Also save the (H, W) float32 map in [0, 1] as .npy."),
    segmenter: str = SEGMENTER_OPT,
    precision: str = PRECISION_OPT,
) -> None:
    """Grad-CAM: which parts of the photo drove the model towards a location (default: its top answer)."""
    check_default_weights(model, pretrained)  # before torch loads: a missing-weights error in a blink
    from geocore.data.images import load_image
    from geocore.explain.gradcam import gradcam
    from geocore.models.base import GalleryModel
    from geocore.models.registry import load_model_for_user
    from geocore.models.segmenter import load_segmenter

    check_output(output, (".png",))
    if raw_map is not None:
        check_output(raw_map, (".npy",), "--raw-map")
    check_precision(precision)
    if target is not None and target_latlon:
        raise InputError("give either --target or --target-latlon, not both")
    photo = load_image(image)
    net = load_model_for_user(model, pretrained, segmenter=segmenter)
    if target_latlon and not isinstance(net, GalleryModel):
        raise InputError(f"--target-latlon needs a GPS-gallery model (geoclip), not {model}; use --target CELL")
    console = Console(soft_wrap=True)
    warn_random_backbone(net, model, console, "this map means nothing")
    # a segmentation model: segment the whole photo once, Grad-CAM crops it like the photo
    seg = load_segmenter(segmenter).segment(photo) if net.needs_segmentation else None
    chosen = _latlon(target_latlon) if target_latlon else target
    used, line = describe_precision(precision, net.device, net)
    console.print(line)
    result = gradcam(net, photo, chosen, seg=seg, precision=used)
    result.overlay.save(output)
    if raw_map is not None:
        np.save(raw_map, result.cam.astype(np.float32))
    console.print(f"explained: {terminal_text(result.target_desc)} → {terminal_text(output)}"
                  + (f", raw map → {terminal_text(raw_map)}" if raw_map else ""))


def register(app: typer.Typer) -> None:
    app.command("segment")(segment)
    app.command("explain")(explain)
