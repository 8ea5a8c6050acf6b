"""Locate photos: the one path the CLI, the app, reports and the notebooks share.

Each photo is read with the safe loader (in memory; uploads never touch the disk), predicted in
batches, optionally re-weighted by a text hint, described offline (nearest place, country), and given its
search regions (the smallest areas holding 50 % / 90 % of the probability, calibrated when a calibration is
given). A photo that cannot be read gets an error in its result; the others are still processed. The image and
text towers run at the precision asked for (fp32 by default: exactly the reference; bf16 or auto,
`geocore.models.precision`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from geocore.data.images import ImageSource, load_image, read_exif_gps
from geocore.errors import ImageError, InputError
from geocore.geo.countries import describe
from geocore.geo.distance import haversine_km
from geocore.hints import apply_hint, check_hint, hint_model_for, text_log_probs
from geocore.models.base import GalleryModel, GeoLocator
from geocore.models.cell_classifier import CellClassifier
from geocore.models.precision import use_precision
from geocore.models.prediction import Prediction
from geocore.models.views import batch_inputs
from geocore.uncertainty.calibration import Calibration, validate_levels
from geocore.uncertainty.regions import SearchRegion, search_regions

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
    regions: list[SearchRegion] = field(default_factory=list)  # one per level asked for, smallest level first
    extras: dict = field(default_factory=dict)
    precision: str = "fp32"  # the towers' precision used: "fp32" or "bf16"

    def region(self, level: float) -> SearchRegion | None:
        """The search region at `level` (e.g. 0.9), if it was computed."""
        return next((r for r in self.regions if abs(r.level - level) < 1e-9), None)

    @property
    def calibrated(self) -> bool:
        """True when the regions' masses come from a calibration (coverage measured on held-out photos)."""
        return bool(self.regions) and all(r.calibrated for r in self.regions)

    def exif_in_region(self, level: float = 0.9) -> bool | None:
        """Whether the EXIF GPS position lies inside the region at `level` (None: no EXIF GPS or no region)."""
        reg = self.region(level)
        if reg is None or self.exif_gps is None:
            return None
        return bool(np.isin(reg.cells.locate(np.asarray([self.exif_gps]))[0], reg.indices))

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


def _predict(model: GeoLocator, pixels: torch.Tensor, top_k: int, full: bool, refine: bool,
             hint_logp: torch.Tensor | None, hint_weight: float, extra: dict | None = None) -> Prediction:
    full = full or hint_logp is not None
    if not refine:
        pred = model.predict(pixels, top_k, full=full, **(extra or {}))
        return pred if hint_logp is None else apply_hint(pred, hint_logp, hint_weight, top_k)
    if not isinstance(model, GalleryModel):
        raise InputError(f"refinement needs a GPS-gallery model (geoclip); {model.model_name} has none")
    from geocore.models.refine import refine as refine_fn

    with torch.no_grad():
        emb = model.image_embeddings(pixels.to(model.device))
        coarse = model.predict_embeddings(emb, top_k, full)
        if hint_logp is not None:
            coarse = apply_hint(coarse, hint_logp, hint_weight, top_k)
        fine = refine_fn(model, emb, coarse, top_k)
    fine.candidates, fine.probs_full = coarse.candidates, coarse.probs_full
    return fine


def input_transform(model: GeoLocator, tencrop: bool = False):
    """PIL photo → what `model.predict` takes: a cell model's `input_transform` (the whole photo segmented for
    TransLocator; ten crops with `tencrop`), else the model's `preprocess`."""
    if isinstance(model, CellClassifier):
        return model.input_transform(tencrop)
    if tencrop:
        raise InputError(f"--tencrop: ten-crop averaging is defined for the cell models (translocator, geodecoder), "
                         f"not {model.model_name}")
    return model.preprocess


def locate(
    model: GeoLocator,
    sources: Iterable[tuple[str, ImageSource]],
    *,
    top_k: int = 5,
    full: bool = False,
    refine: bool = False,
    batch_size: int = 8,
    regions: Sequence[float] | None = None,
    calibration: Calibration | None = None,
    hint: str | None = None,
    hint_weight: float | None = None,
    hint_model: GalleryModel | None = None,
    tencrop: bool = False,
    precision: str = "fp32",
) -> list[LocateResult]:
    """Predict each `(name, path-or-bytes)`; results in input order, failures carried as errors.

    regions: levels in (0, 1) (e.g. (0.5, 0.9)) whose search regions each result carries; `calibration` (fitted
    by `geocore calibrate` for this model and candidates) makes them calibrated. hint: a text query combined as
    p ∝ p_image · p_text^hint_weight (`geocore.hints`); `hint_model` scores it when `model` takes no text.
    tencrop: average the papers' ten crops (cell models; `CellClassifier.prepare`).
    precision: "fp32" (default, exact reference parity), "bf16" or "auto" (bf16 where the hardware runs it fast):
    the image and text towers' precision (`geocore.models.precision`); the location encoder, gallery scan and
    softmax stay float32. Each result's `precision` says which was used.
    """
    with use_precision(precision, model.device, model) as used:
        results = _locate(model, sources, top_k=top_k, full=full, refine=refine, batch_size=batch_size,
                          regions=regions, calibration=calibration, hint=hint, hint_weight=hint_weight,
                          hint_model=hint_model, tencrop=tencrop)
    for res in results:
        res.precision = used
    return results


def _locate(model: GeoLocator, sources: Iterable[tuple[str, ImageSource]], *, top_k: int, full: bool, refine: bool,
            batch_size: int, regions: Sequence[float] | None, calibration: Calibration | None, hint: str | None,
            hint_weight: float | None, hint_model: GalleryModel | None, tencrop: bool) -> list[LocateResult]:
    prepare = input_transform(model, tencrop)
    levels = validate_levels(regions, "--regions") if regions is not None else ()
    if calibration is not None and not levels:
        raise InputError("a calibration applies to search regions: ask for them too (--regions 0.5,0.9)")
    if not 1 <= top_k <= model.num_candidates():
        raise InputError(f"top-k must be between 1 and {model.num_candidates()} (the model's candidates), got {top_k}")
    hint_logp, weight = None, 0.0
    if hint is not None or hint_weight is not None:
        text, weight = check_hint(hint, hint_weight)
        scorer = hint_model_for(model, hint_model)
        hint_logp = text_log_probs(scorer, text, model.candidate_points())
    need_full = full or bool(levels) or hint_logp is not None
    cells = model.candidate_cells() if levels else None
    results: list[LocateResult] = []
    ready: list[tuple[LocateResult, torch.Tensor]] = []

    def flush() -> None:
        if not ready:
            return
        pixels, extra = batch_inputs([px for _, px in ready], model.device)
        pred = _predict(model, pixels, top_k, need_full, refine, hint_logp, weight, extra)
        per_image = (search_regions(pred.probs_full, cells, levels, calibration=calibration, model=model.model_name)
                     if levels else [[] for _ in ready])
        for i, (res, _) in enumerate(ready):
            res.prediction = pred[i]
            res.table = prediction_table(res.prediction)
            res.regions = list(per_image[i])
            if res.exif_gps is not None:
                res.exif_error_km = float(haversine_km(np.array(res.exif_gps), res.table[["lat", "lon"]].to_numpy()[0]))
            if hint_logp is not None:
                res.extras["hint"] = {"text": text, "weight": weight}
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
        ready.append((res, prepare(image)))
        if len(ready) >= batch_size:
            flush()
    flush()
    return results
