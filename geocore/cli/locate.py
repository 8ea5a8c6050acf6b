"""`geocore locate`, `geocore text` and `geocore embed`: GeoCLIP from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from geocore.errors import InputError

MODEL_OPT = typer.Option("geoclip", "--model", help="Registered model name (see `geocore models`).")
PRETRAINED_OPT = typer.Option(None, "--pretrained", help="Weights tag or checkpoint path (default: the model's own).")
TOPK_OPT = typer.Option(5, "--top-k", min=1, help="How many locations to return.")


def _bbox(text: str | None) -> tuple[float, float, float, float] | None:
    if not text:
        return None
    try:
        south, west, north, east = (float(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--bbox {text!r}: expected SOUTH,WEST,NORTH,EAST in degrees, e.g. 35,-10,60,30") from None
    return south, west, north, east


def _load(model: str, pretrained: str | None, gallery: Path | None, bbox: str | None, grid_km: float | None):
    from geocore.geo import gallery as galleries
    from geocore.models.base import GalleryModel
    from geocore.models.registry import load_model_for_user

    net = load_model_for_user(model, pretrained)
    box = _bbox(bbox)
    if (gallery or box or grid_km) and not isinstance(net, GalleryModel):
        raise InputError(f"--gallery/--bbox/--grid-km need a GPS-gallery model (geoclip), not {model}")
    if gallery is not None:
        net.set_gallery(galleries.gallery_from_csv(gallery))
    elif grid_km:
        net.set_gallery(galleries.grid_gallery(grid_km, bbox=box))
    elif box:
        net.set_gallery(galleries.filter_gallery(net.gallery, box))
    return net


def _rows(name: str, table: pd.DataFrame, extra: dict | None = None) -> list[dict]:
    return [{"image": name, **(extra or {}), **row} for row in table.to_dict("records")]


def _write(rows: list[dict], output: Path) -> None:
    df = pd.DataFrame(rows)
    if output.suffix.lower() in (".geojson", ".json"):
        feats = [{
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [r["lon"], r["lat"]]},
            "properties": {k: v for k, v in r.items() if k not in ("lat", "lon")},
        } for r in json.loads(df.to_json(orient="records"))]
        output.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    else:
        df.to_csv(output, index=False)


def _print_table(title: str, table: pd.DataFrame, console: Console) -> None:
    t = Table(title=title)
    for col in ("#", "lat", "lon", "prob", "place", "country"):
        t.add_column(col, justify="right" if col in ("#", "lat", "lon", "prob") else "left")
    for r in table.itertuples():
        place = ", ".join(x for x in (r.place, r.admin1) if x)
        t.add_row(str(r.rank), f"{r.lat:.4f}", f"{r.lon:.4f}", f"{r.prob:.3f}", place, r.country or "(sea)")
    console.print(t)


def locate(
    images: list[Path] = typer.Argument(..., help="Image files or folders."),
    model: str = MODEL_OPT,
    pretrained: str = PRETRAINED_OPT,
    top_k: int = TOPK_OPT,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON list."),
    output: Path = typer.Option(None, "--output", help="Write all results to .csv or .geojson."),
    gallery: Path = typer.Option(None, "--gallery", help="CSV of candidate points (LAT,LON)."),
    bbox: str = typer.Option(None, "--bbox", help="Restrict answers to SOUTH,WEST,NORTH,EAST."),
    grid_km: float = typer.Option(None, "--grid-km", help="Score a regular grid of this spacing instead."),
    refine: bool = typer.Option(False, "--refine", help="Zoom in: re-rank dense local points around the top-k."),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
) -> None:
    """Where was each photo taken? Top-k locations with probabilities, place and country (offline)."""
    from geocore.locate import expand_paths, locate as run_locate

    paths = expand_paths(images)
    net = _load(model, pretrained, gallery, bbox, grid_km)
    console = Console(stderr=as_json or output is not None, soft_wrap=True)
    if net.random_backbone:
        console.print(f"[bold red]note:[/] {model} has a RANDOM backbone: these predictions mean nothing")
    results = run_locate(net, [(str(p), p) for p in paths], top_k=top_k, refine=refine, batch_size=batch_size)
    rows, failed = [], 0
    for res in results:
        if not res.ok:
            failed += 1
            Console(stderr=True, soft_wrap=True).print(f"[red]skipped[/] {res.error}")
            continue
        extra = {}
        if res.exif_gps:
            extra = {"exif_lat": res.exif_gps[0], "exif_lon": res.exif_gps[1], "exif_error_km": res.exif_error_km}
        rows += _rows(res.name, res.table, extra)
        if not as_json and not output:
            _print_table(res.name, res.table, console)
            if res.exif_gps:
                console.print(f"EXIF GPS {res.exif_gps[0]:.4f}, {res.exif_gps[1]:.4f}: top-1 is "
                              f"{res.exif_error_km:,.1f} km away")
    if output:
        _write(rows, output)
        console.print(f"{len(results) - failed} image(s) located, {failed} skipped → {output}")
    if as_json:
        typer.echo(pd.DataFrame(rows).to_json(orient="records"))
    if failed == len(results):
        raise InputError("none of the images could be read")


def text(
    query: list[str] = typer.Argument(..., help='Text queries, e.g. "Pyramids of Giza".'),
    model: str = MODEL_OPT,
    pretrained: str = PRETRAINED_OPT,
    top_k: int = TOPK_OPT,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON list."),
) -> None:
    """Where does a text point? CLIP text tower → GeoCLIP's MLP → similarity over the gallery."""
    from geocore.locate import prediction_table

    net = _load(model, pretrained, None, None, None)
    if not net.supports_text:
        raise InputError(f"text queries need GeoCLIP, not {model}")
    pred = net.predict_text(list(query), top_k)
    rows = []
    console = Console()
    for i, q in enumerate(query):
        table = prediction_table(pred[i])
        rows += _rows(q, table)
        if not as_json:
            _print_table(q, table, console)
    if as_json:
        typer.echo(pd.DataFrame(rows).rename(columns={"image": "query"}).to_json(orient="records"))


def embed(
    coords: Path = typer.Argument(..., help="CSV with LAT,LON columns."),
    output: Path = typer.Option(..., "--output", help="Where to write the (N, 512) float32 .npy."),
    model: str = typer.Option("geoclip", "--model", help="A GeoCLIP model; only its location encoder is used."),
    pretrained: str = PRETRAINED_OPT,
) -> None:
    """Location embeddings of GPS coordinates: one L2-normalised 512-d row per LAT,LON row, in input order."""
    from geocore.geo.gallery import gallery_from_csv
    from geocore.models.base import GalleryModel
    from geocore.models.location_encoder import load_location_encoder
    from geocore.models.registry import load_model_for_user

    points = gallery_from_csv(coords)
    if model == "geoclip" and pretrained is None:  # the released encoder ships in the geoclip wheel: no CLIP needed
        emb = load_location_encoder().embed(points)
    else:
        net = load_model_for_user(model, pretrained)
        if not isinstance(net, GalleryModel):
            raise InputError(f"embed needs a GPS-gallery model (geoclip), not {model}")
        emb = net.embed_locations(points)
    emb = emb.cpu().numpy().astype(np.float32)
    np.save(output, emb)
    Console(stderr=True).print(f"{len(emb)} embeddings of dimension {emb.shape[1]} → {output}")


def register(app: typer.Typer) -> None:
    app.command("locate")(locate)
    app.command("text")(text)
    app.command("embed")(embed)
