"""`geocore locate`, `geocore text` and `geocore embed`: GeoCLIP from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from geocore.cli.answers import print_topk, region_line
from geocore.cli.cases import (CLAIM_OPT, EVERY_S_OPT, MAX_FRAMES_OPT, REFS_K_OPT, REFS_OPT, REFS_WEIGHT_OPT,
                               SAME_PLACE_OPT, case_record, print_claim, print_joint, print_video, split_videos)
from geocore.cli.options import (ACCELERATOR_OPT, DEVICES_OPT, MODEL_OPT, NODES_OPT, PRECISION_OPT, PRETRAINED_OPT,
                                 STRATEGY_OPT, TOPK_OPT, warn_random_backbone)
from geocore.cli.precision import check_precision, describe_precision
from geocore.data import safe_io
from geocore.data.text import terminal_text, utf8_safe
from geocore.errors import InputError
from geocore.tensors import as_numpy
from geocore.weights.preflight import check_default_weights

LOCATE_SUFFIXES = (".csv", ".parquet", ".geojson", ".json")
GALLERY_EXPECTED = "a gallery CSV with LAT,LON columns"


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
        safe_io.check_input_size(gallery, GALLERY_EXPECTED)
        net.set_gallery(galleries.gallery_from_csv(gallery))
    elif grid_km:
        net.set_gallery(galleries.grid_gallery(grid_km, bbox=box))
    elif box:
        net.set_gallery(galleries.filter_gallery(net.gallery, box))
    return net


def _rows(name: str, table: pd.DataFrame, extra: dict | None = None) -> list[dict]:
    return [{"image": name, **(extra or {}), **row} for row in table.to_dict("records")]


def _image_record(res) -> dict:
    """One located photo as plain data: top-k rows, EXIF, hint, search regions as GeoJSON features."""
    records = json.loads(res.table.to_json(orient="records"))
    exif = None
    if res.exif_gps:
        exif = {"lat": res.exif_gps[0], "lon": res.exif_gps[1], "error_km": res.exif_error_km,
                "inside_90": res.exif_in_region(0.9)}
    # a name's bytes that are not UTF-8 as \udcXX escapes: any strict JSON reader takes the file
    refs = None
    if res.references is not None:
        refs = json.loads(res.references.drop(columns=["thumbnail"], errors="ignore").to_json(orient="records"))
    return {"image": utf8_safe(res.name), "topk": records, "exif": exif, "hint": res.extras.get("hint"),
            "calibrated": res.calibrated, "regions": [r.to_feature() for r in res.regions],
            "precision": res.precision, "references": refs, "outside_calibration": res.outside_calibration}


def _write(results: list, output: Path) -> None:
    """CSV or Parquet: one row per top-k answer (+ region areas); GeoJSON: top-k Points and one Feature per
    region."""
    if output.suffix.lower() in (".geojson", ".json"):
        feats = []
        for rec in map(_image_record, results):
            for r in rec["topk"]:
                props = {k: v for k, v in r.items() if k not in ("lat", "lon")}
                feats.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [r["lon"], r["lat"]]},
                              "properties": {"image": rec["image"], "kind": "candidate", **props}})
            for f in rec["regions"]:
                feats.append({**f, "properties": {"image": rec["image"], "kind": "search_region", **f["properties"]}})
        safe_io.write_text_atomic(output, json.dumps({"type": "FeatureCollection", "features": feats}))
        return
    from geocore.eval.results import located_table

    if output.suffix.lower() == ".parquet":
        with safe_io.atomic_path(output) as tmp:
            located_table(results).to_parquet(tmp, index=False)
        return
    safe_io.write_text_atomic(output, safe_io.to_csv_text(located_table(results)))  # no spreadsheet formulas


def _locate_table(net, paths: list[Path], output: Path, loop: dict, bound) -> None:
    """Many photos into one table on the predict loop (`geocore.runtime.predict_loop`; Lightning loads here only)."""
    from geocore.eval.batch_locate import locate_to_table
    from geocore.runtime.predict_loop import loop_options

    request = bound.request
    opts = loop_options(**loop, precision=request.precision, batch_size=request.batch_size, progress=False)
    done = locate_to_table(net, paths, output, opts, bound)
    if done is None:  # another rank than 0: rank 0 writes and reports
        return
    console = Console(stderr=True, soft_wrap=True)
    for error in done.errors:
        console.print(f"[red]skipped[/] {terminal_text(error)}")
    n_ok = int(done.table["image"].nunique()) if len(done.table) else 0
    console.print(f"{n_ok} image(s) located, {len(done.errors)} skipped → {terminal_text(output)}")
    if not n_ok:
        raise InputError("none of the images could be read")


def print_references(table: pd.DataFrame, console: Console) -> None:
    """The nearest reference photos: ID, position, similarity, km from the top-1, place and country."""
    t = Table(title="similar reference photos")
    for col in ("IMG_ID", "lat", "lon", "similarity", "km from top-1", "place", "country"):
        t.add_column(col)
    for r in table.itertuples():
        t.add_row(terminal_text(r.IMG_ID), f"{r.lat:.4f}", f"{r.lon:.4f}", f"{r.similarity:.3f}", f"{r.km:,.1f}",
                  terminal_text(r.place), terminal_text(r.country))
    console.print(t)


def locate(
    images: list[Path] = typer.Argument(..., help="Image files or folders."),
    model: str = MODEL_OPT,
    pretrained: str = PRETRAINED_OPT,
    top_k: int = TOPK_OPT,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON list, one object per image."),
    output: Path = typer.Option(None, "--output", help="Write all results to .csv or .parquet (one table, on one "
                                "device or many: --devices, --num-nodes) or .geojson."),
    gallery: Path = typer.Option(None, "--gallery", help="CSV of candidate points (LAT,LON)."),
    bbox: str = typer.Option(None, "--bbox", help="Restrict answers to SOUTH,WEST,NORTH,EAST."),
    grid_km: float = typer.Option(None, "--grid-km", help="Score a regular grid of this spacing instead."),
    refine: bool = typer.Option(False, "--refine", help="Zoom in: re-rank dense local points around the top-k."),
    regions: str = typer.Option(None, "--regions", help="Search regions holding these shares of the probability, "
                                "e.g. 0.5,0.9: area in km², separate areas, countries."),
    calibration: Path = typer.Option(None, "--calibration", help="Calibration from `geocore calibrate`: the regions "
                                     "then hold the truth for that share of photos."),
    hint: str = typer.Option(None, "--hint", help='Text hint combined with the photo, e.g. "coastal city in South America".'),
    hint_weight: float = typer.Option(None, "--hint-weight", help="w in p ∝ p_image · p_text^w (default 0.5)."),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    tencrop: bool = typer.Option(False, "--tencrop", help="Cell models: average the papers' ten crops."),
    precision: str = PRECISION_OPT,
    refs: Path = REFS_OPT,
    refs_k: int = REFS_K_OPT,
    refs_weight: float = REFS_WEIGHT_OPT,
    same_place: bool = SAME_PLACE_OPT,
    claim: str = CLAIM_OPT,
    every_s: float = EVERY_S_OPT,
    max_frames: int = MAX_FRAMES_OPT,
    accelerator: str = ACCELERATOR_OPT,
    devices: int = DEVICES_OPT,
    num_nodes: int = NODES_OPT,
    strategy: str = STRATEGY_OPT,
) -> None:
    """Where was each photo (or video clip: MP4, MOV, WebM, MKV) taken? Top-k locations with probabilities, place
    and country (offline), and how large an area to search; with --same-place one joint answer, with --claim a
    check of a claimed location."""
    check_default_weights(model, pretrained)  # before torch loads: a missing-weights error in a blink
    if output is not None:  # the user's files and options, before torch loads too
        safe_io.check_output(output, LOCATE_SUFFIXES)
    from geocore.locate import expand_paths, locate as run_locate
    from geocore.request import LocateRequest

    table_out = output is not None and output.suffix.lower() in (".csv", ".parquet") and not as_json
    paths, videos = split_videos(expand_paths(images))
    case = same_place or claim is not None or bool(videos)
    if refs is not None and table_out:
        raise InputError("--refs prints its answer (or --json, or --output .geojson); a .csv/.parquet table of "
                         "many photos does not take references yet")
    if case and output is not None and output.suffix.lower() in (".csv", ".parquet"):
        raise InputError("--same-place, --claim and videos print their answer (or --json); --output takes single "
                         "photos only")
    request = LocateRequest.build(  # every option checked once, before the model loads
        top_k=top_k, regions=regions, calibration=calibration, hint=hint, hint_weight=hint_weight, refine=refine,
        tencrop=tencrop, precision=precision, refs=refs, refs_k=refs_k, refs_weight=refs_weight, full=case,
        same_place=same_place, claim=claim, every_s=every_s, max_frames=max_frames, batch_size=batch_size,
        regions_needed=case, model_name=model)
    loop = dict(accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy=strategy)
    if table_out:  # a mistaken device option fails before the model loads too
        from geocore.runtime.predict_loop import loop_options

        loop_options(**loop, precision=precision, batch_size=batch_size, progress=False)
    net = _load(model, pretrained, gallery, bbox, grid_km)
    console = Console(stderr=as_json or output is not None, soft_wrap=True)
    warn_random_backbone(net, model, console)
    _, line = describe_precision(precision, net.device, net)
    console.print(line)
    bound = request.bind(net)  # the calibration's fit, the hint scored: once, before any photo is read
    if table_out:  # a table: many photos, on the predict loop
        return _locate_table(net, paths, output, loop, bound)
    if case:  # photos, the joint answer and clips in one pass (`analyse_case`, as `report` and the app)
        from geocore.cases.analyse import analyse_case

        analysed = analyse_case(net, [(str(p), p) for p in [*paths, *videos]], bound)
        results = analysed.results
    else:
        results = run_locate(net, [(str(p), p) for p in paths], bound)
    ok = [res for res in results if res.ok]
    for res in results:
        if not res.ok:
            Console(stderr=True, soft_wrap=True).print(f"[red]skipped[/] {terminal_text(res.error)}")
        elif not as_json and not output:
            print_answer(res, console)
    if output:
        _write(ok, output)
        console.print(f"{len(ok)} image(s) located, {len(results) - len(ok)} skipped → {terminal_text(output)}")
    if case:
        return _print_case(analysed, ok, console, as_json=as_json)
    if as_json:
        typer.echo(json.dumps([_image_record(res) for res in ok]))
    if not ok:
        raise InputError("none of the images could be read")


def print_answer(res, console: Console) -> None:
    """One photo's answer as the terminal shows it: top-k, EXIF GPS, search regions, references, fit warning."""
    print_topk(res.name, res.table, console)
    if res.exif_gps:
        inside = res.exif_in_region(0.9)
        console.print(f"EXIF GPS {res.exif_gps[0]:.4f}, {res.exif_gps[1]:.4f}: top-1 is "
                      f"{res.exif_error_km:,.1f} km away"
                      + ("" if inside is None else f"; {'inside' if inside else 'outside'} the 90 % region"))
    for reg in res.regions:
        console.print(region_line(reg))
    note = next((r.calibration_note for r in res.regions if r.calibration_note), "")
    if note:
        console.print(f"[bold yellow]note:[/] {note}")
    if res.references is not None:
        print_references(res.references, console)
    if res.outside_calibration:
        console.print("[bold red]note:[/] this photo's localizability lies outside what the calibration saw "
                      "(beyond its 1st–99th percentile): coverage may not hold here")


def _print_case(case, ok: list, console: Console, *, as_json: bool) -> None:
    """The joint answer of photos of one place, each video clip, and the claim checked against each answer."""
    req = case.request.request
    if req.same_place and not ok:
        raise InputError("none of the photos could be read")
    if case.joint is not None and not as_json:
        print_joint(case.joint, console, f"{len(ok)} photo(s) of one place: the joint answer")
    located = []
    for clip in case.clips:
        if not clip.ok:
            Console(stderr=True, soft_wrap=True).print(f"[red]skipped[/] {terminal_text(clip.error)}")
            continue
        located.append(clip.result)
        if not as_json:
            print_video(clip.result, console)
    if not ok and not located:
        raise InputError("none of the photos or videos could be read")
    checks = {}
    if req.claim is not None:
        answers = ([("the joint answer", case.joint)] if case.joint is not None else [(r.name, r) for r in ok]) + \
                  [(f"{v.name} (whole clip)", v.clip) for v in located]
        for what, answer in answers:
            checks[what] = case.check_claim(answer)
            if not as_json:
                print_claim(checks[what], console, what)
    if as_json:
        typer.echo(json.dumps(case_record([_image_record(r) for r in ok], case.joint, located, checks)))


def text(
    query: list[str] = typer.Argument(..., help='Text queries, e.g. "Pyramids of Giza".'),
    model: str = MODEL_OPT,
    pretrained: str = PRETRAINED_OPT,
    top_k: int = TOPK_OPT,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON list."),
    precision: str = PRECISION_OPT,
) -> None:
    """Where does a text point? CLIP text tower → GeoCLIP's MLP → similarity over the gallery."""
    check_default_weights(model, pretrained)  # before torch loads: a missing-weights error in a blink
    from geocore.locate import prediction_table
    from geocore.models.precision import use_precision

    check_precision(precision)
    net = _load(model, pretrained, None, None, None)
    if not net.supports_text:
        raise InputError(f"text queries need GeoCLIP, not {model}")
    used, line = describe_precision(precision, net.device, net)
    with use_precision(used, net.device):
        pred = net.predict_text(list(query), top_k)
    rows = []
    console = Console(stderr=as_json)
    console.print(line)
    for i, q in enumerate(query):
        table = prediction_table(pred[i])
        rows += _rows(q, table, {"precision": used})
        if not as_json:
            print_topk(q, table, console)
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

    target = output if output.suffix == ".npy" else output.with_name(output.name + ".npy")  # as np.save names it
    safe_io.check_output(target, (".npy",))
    safe_io.check_input_size(coords, GALLERY_EXPECTED)
    points = gallery_from_csv(coords)
    if model == "geoclip" and pretrained is None:  # the released encoder ships in the geoclip wheel: no CLIP needed
        emb = load_location_encoder().embed(points)
    else:
        net = load_model_for_user(model, pretrained)
        if not isinstance(net, GalleryModel):
            raise InputError(f"embed needs a GPS-gallery model (geoclip), not {model}")
        emb = net.embed_locations(points)
    emb = as_numpy(emb, np.float32)
    with safe_io.atomic_path(target) as tmp, open(tmp, "wb") as fh:  # a kill leaves the old file or none
        np.save(fh, emb)
    Console(stderr=True).print(f"{len(emb)} embeddings of dimension {emb.shape[1]} → {terminal_text(target)}")


def register(app: typer.Typer) -> None:
    app.command("locate")(locate)
    app.command("text")(text)
    app.command("embed")(embed)
