"""Locate photos: the one path the CLI, the app and the notebooks share.

Each photo is read with the safe loader (in memory; uploads never touch the disk), predicted in
batches, and described offline (nearest place, country). A photo that cannot be read gets an
error in its result; the others are still processed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from geocore.data.images import ImageSource, load_image, read_exif_gps
from geocore.errors import ImageError, InputError
from geocore.geo.countries import describe
from geocore.geo.distance import haversine_km
from geocore.models.base import GalleryModel, GeoLocator
from geocore.models.prediction import Prediction

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif", ".bmp", ".tif", ".tiff", ".gif"}


@dataclass
class LocateResult:
    """One photo's answer: top-k table (rank, lat, lon, prob, place, admin1, country, …) or an error."""

    name: str
    prediction: Prediction | None = None  # batch of one, with `probs_full` when asked for
    table: pd.DataFrame | None = None
    exif_gps: tuple[float, float] | None = None
    exif_error_km: float | None = None
    error: str | None = None
    extras: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders expanded to the images inside them (sorted); InputError for missing paths."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        elif p.exists():
            out.append(p)
        else:
            raise InputError(f"{p}: no such file or folder")
    if not out:
        raise InputError("no images found in " + ", ".join(map(str, paths)))
    return out


def prediction_table(pred: Prediction) -> pd.DataFrame:
    """Top-k of a single-image prediction as a table with offline place names."""
    coords = pred.coords[0].detach().cpu().double().numpy()
    table = pd.DataFrame({
        "rank": np.arange(1, len(coords) + 1),
        "lat": coords[:, 0],
        "lon": coords[:, 1],
        "prob": pred.probs[0].detach().cpu().double().numpy(),
    })
    return pd.concat([table, describe(coords)], axis=1)


def _predict(model: GeoLocator, pixels: torch.Tensor, top_k: int, full: bool, refine: bool) -> Prediction:
    if not refine:
        return model.predict(pixels, top_k, full=full)
    if not isinstance(model, GalleryModel):
        raise InputError(f"refinement needs a GPS-gallery model (geoclip); {model.model_name} has none")
    from geocore.models.refine import refine as refine_fn

    with torch.no_grad():
        emb = model.image_embeddings(pixels.to(model.device))
        coarse = model.predict_embeddings(emb, top_k, full)
        fine = refine_fn(model, emb, coarse, top_k)
    fine.candidates, fine.probs_full = coarse.candidates, coarse.probs_full
    return fine


def locate(
    model: GeoLocator,
    sources: Iterable[tuple[str, ImageSource]],
    *,
    top_k: int = 5,
    full: bool = False,
    refine: bool = False,
    batch_size: int = 8,
) -> list[LocateResult]:
    """Predict each `(name, path-or-bytes)`; results in input order, failures carried as errors."""
    results: list[LocateResult] = []
    ready: list[tuple[LocateResult, torch.Tensor]] = []

    def flush() -> None:
        if not ready:
            return
        pixels = torch.stack([px for _, px in ready])
        pred = _predict(model, pixels, top_k, full, refine)
        for i, (res, _) in enumerate(ready):
            res.prediction = pred[i]
            res.table = prediction_table(res.prediction)
            if res.exif_gps is not None:
                res.exif_error_km = float(haversine_km(np.array(res.exif_gps), res.table[["lat", "lon"]].to_numpy()[0]))
        ready.clear()

    for name, source in sources:
        res = LocateResult(name=name)
        results.append(res)
        try:
            image = load_image(source, name=name)
            res.exif_gps = read_exif_gps(source, name=name)
        except ImageError as err:
            res.error = str(err)
            continue
        ready.append((res, model.preprocess(image)))
        if len(ready) >= batch_size:
            flush()
    flush()
    return results
