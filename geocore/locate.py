"""Locate photos: the one path the CLI, the app, reports and the notebooks share.

Each photo is read with the safe loader (in memory; uploads never touch the disk), predicted in
batches, optionally re-weighted by a text hint, described offline (nearest place, country), and given its
search regions (the smallest areas holding 50 % / 90 % of the probability, calibrated when a calibration is
given). A photo that cannot be read gets an error in its result; the others are still processed. The image and
text towers run at the precision asked for (fp32 by default: exactly the reference; bf16 or auto,
`geocore.models.precision`). With a reference set (`geocore.refs`), each photo also gets its nearest geotagged
reference photos, folded into its answer.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from geocore.data.images import ImageSource, Photo, read_photo
from geocore.errors import InputError
from geocore.geo.countries import describe
from geocore.geo.distance import haversine_km
from geocore.hints import apply_hint
from geocore.models.base import GalleryModel, GeoLocator
from geocore.models.precision import use_precision
from geocore.models.prediction import Prediction
from geocore.models.views import batch_inputs
from geocore.refs import FusionParams, Neighbours, ReferenceSet, fine_top_k, neighbours, reweight
from geocore.refs.embed import reference_embeddings
from geocore.request import BoundRequest, LocateRequest
from geocore.tensors import as_numpy
from geocore.uncertainty.regions import SearchRegion, search_regions

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif", ".bmp", ".tif", ".tiff", ".gif"}


@dataclass
class LocateResult:
    """One photo's answer: top-k table (rank, lat, lon, prob, place, admin1, country, …) or an error."""

    name: str
    prediction: Prediction | None = None  # batch of one, with `probs_full` when asked for
    table: pd.DataFrame | None = None
    exif_error_km: float | None = None
    error: str | None = None
    regions: list[SearchRegion] = field(default_factory=list)  # one per level asked for, smallest level first
    extras: dict = field(default_factory=dict)
    precision: str = "fp32"  # the towers' precision used: "fp32" or "bf16"
    # the photo's raw localizability lies beyond the 1st–99th percentile the calibration saw: coverage may not hold
    outside_calibration: bool = False
    references: pd.DataFrame | None = None  # with a reference set: the K nearest references (`reference_table`)
    refined: bool = False  # the answer was zoomed in (`--refine`)
    photo: Photo | None = None  # the photo as read, without its bytes and pixels (name, SHA-256, EXIF)

    @property
    def exif_gps(self) -> tuple[float, float] | None:
        """The photo's EXIF GPS position (lat, lon), read with the photo; None when it has none."""
        return None if self.photo is None else self.photo.exif_gps

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
    coords = as_numpy(pred.coords[0], np.float64)
    table = pd.DataFrame({
        "rank": np.arange(1, len(coords) + 1),
        "lat": coords[:, 0],
        "lon": coords[:, 1],
        "prob": as_numpy(pred.probs[0], np.float64),
    })
    return pd.concat([table, describe(coords)], axis=1)


@dataclass
class _Refs:
    """A reference set and how it is used: fusion parameters, and the batch's photos' SHA-256 (exclusion)."""

    refs: ReferenceSet
    params: FusionParams
    sha256: list[str | None] = field(default_factory=list)
    found: Neighbours | None = None  # the last batch's neighbours


def use_references(refs: ReferenceSet, model: GeoLocator, k: int | None = None, weight: float | None = None) -> _Refs:
    """A reference set checked against `model`, with its fusion parameters (defaults: `FusionParams`)."""
    refs.check_model(model)
    return _Refs(refs, FusionParams.from_options(k, weight))


def predict_batch(model: GeoLocator, pixels: torch.Tensor, top_k: int, *, extra: dict | None = None,
                  refs: _Refs | None = None) -> Prediction:
    """One batch's prediction with its full distribution, fused with reference photos when `refs` is given
    (`use_references`): what `locate` does per batch, for batch jobs such as `evaluate`."""
    return _predict(model, pixels, top_k, True, False, None, 0.0, extra, refs)


def _predict(model: GeoLocator, pixels: torch.Tensor, top_k: int, full: bool, refine: bool,
             hint_logp: torch.Tensor | None, hint_weight: float, extra: dict | None = None,
             refs: _Refs | None = None) -> Prediction:
    full = full or hint_logp is not None or refs is not None
    if refine and not isinstance(model, GalleryModel):
        raise InputError(f"refinement needs a GPS-gallery model (geoclip); {model.model_name} has none")
    if not refine and refs is None:
        pred = model.predict(pixels, top_k, full=full, **(extra or {}))
        return pred if hint_logp is None else apply_hint(pred, hint_logp, hint_weight, top_k)
    with torch.no_grad():
        if isinstance(model, GalleryModel):
            emb = model.image_embeddings(pixels.to(model.device))
            coarse = model.predict_embeddings(emb, top_k, full)
        else:  # a cell model with references: its prediction, and its embedding for the search
            coarse = model.predict(pixels, top_k, full=full, **(extra or {}))
            emb = reference_embeddings(model, pixels)
        if hint_logp is not None:
            coarse = apply_hint(coarse, hint_logp, hint_weight, top_k)
        if refs is not None:
            found = refs.found = neighbours(refs.refs, emb, refs.params, exclude_sha256=refs.sha256 or None)
            coarse = reweight(coarse, found.latlon, found.log_a, refs.params, top_k)
        if not refine:
            fine = fine_top_k(coarse, found.latlon, found.log_a, refs.params, top_k)
        else:
            from geocore.models.refine import refine as refine_fn

            fine = refine_fn(model, emb, coarse, top_k)
            if refs is not None:
                fine = fine_top_k(coarse, found.latlon, found.log_a, refs.params, top_k, extra_points=fine.coords,
                                  point_logits=_point_logits(model, emb))
    fine.candidates, fine.probs_full = coarse.candidates, coarse.probs_full
    return fine


def _point_logits(model: GalleryModel, emb: torch.Tensor):
    """(B, P, 2) points → (B, P) the model's logits for each query at its own points (location encoder)."""
    def logits(points: torch.Tensor) -> torch.Tensor:
        b, n, _ = points.shape
        loc = model.embed_locations(points.reshape(-1, 2)).to(emb.device)  # (B·P, D)
        return model.similarity_logits(emb, loc).reshape(b, b, n)[torch.arange(b), torch.arange(b)]
    return logits


def reference_table(refs: ReferenceSet, found: Neighbours, i: int, top1: np.ndarray) -> pd.DataFrame:
    """Query `i`'s nearest references: IMG_ID, lat, lon, similarity, weight (its share of the evidence; 0: it did
    not move the answer), km from the answer's top-1, place, country; `thumbnail` (JPEG bytes) when stored."""
    keep = found.indices[i] >= 0
    idx = found.indices[i][keep].numpy()
    latlon = refs.latlon[idx]
    a = found.log_a[i][keep].exp().numpy()
    table = pd.DataFrame({
        "IMG_ID": refs.table["IMG_ID"].to_numpy()[idx].astype(str),
        "lat": latlon[:, 0], "lon": latlon[:, 1],
        "similarity": found.sims[i][keep].double().numpy(),
        "weight": a / (1.0 + a.sum()),
        "km": haversine_km(latlon, top1[None]) if len(idx) else np.zeros(0),
    })
    where = describe(latlon) if len(idx) else pd.DataFrame({"place": [], "country": []})
    table = pd.concat([table, where[["place", "country"]].reset_index(drop=True)], axis=1)
    if refs.thumbnails is not None:
        table["thumbnail"] = [refs.thumbnail(x) for x in table["IMG_ID"]]
    return table


def locate(
    model: GeoLocator,
    sources: Iterable[tuple[str, ImageSource] | Photo],
    request: LocateRequest | BoundRequest | None = None,
    *,
    hint_model: GalleryModel | None = None,
    **options,
) -> list[LocateResult]:
    """Locate each photo — a `Photo` (`geocore.data.images.read_photo`: read once, carried on) or a
    `(name, path-or-bytes)` pair — in input order; failures are carried as errors.

    The options are a `LocateRequest` (checked once by `LocateRequest.build`, or already bound to `model` by
    `request.bind(model)`), or `LocateRequest.build`'s keyword arguments: top_k, full, refine, batch_size,
    regions (levels in (0, 1) whose search regions each result carries; a `calibration` fitted by
    `geocore calibrate` for this model and candidates makes them calibrated), hint and hint_weight (p ∝ p_image ·
    p_text^hint_weight, `geocore.hints`; `hint_model` scores it when `model` takes no text), tencrop (cell
    models: the papers' ten crops), precision ("fp32", the default and exact reference; "bf16" or "auto":
    the image and text towers only, `geocore.models.precision`), refs / refs_k / refs_weight (a reference set
    built with this model: each result carries its nearest references, `res.references`, never the photo's own
    file by SHA-256, and an answer fused with them, `geocore.refs.reweight`).
    """
    if request is None:
        request = LocateRequest.build(**options)
    elif options:
        raise TypeError(f"locate: pass a request or options, not both (got {', '.join(sorted(options))})")
    bound = request if isinstance(request, BoundRequest) else request.bind(model, hint_model)
    if bound.model is not model:
        raise InputError("locate: the request was bound to another model")
    ref_use = (_Refs(bound.request.refs, bound.request.fusion) if bound.request.refs is not None else None)
    with use_precision(bound.precision, model.device, model) as used:
        results = _locate(bound, sources, ref_use)
    for res in results:
        res.precision = used
    return results


def _locate(bound: BoundRequest, sources: Iterable[tuple[str, ImageSource] | Photo],
            refs: _Refs | None) -> list[LocateResult]:
    req, model = bound.request, bound.model
    levels = req.levels
    need_full = req.full or bool(levels) or bound.hint_logp is not None
    results: list[LocateResult] = []
    ready: list[tuple[LocateResult, torch.Tensor, str | None]] = []

    def flush() -> None:
        if not ready:
            return
        pixels, extra = batch_inputs([px for _, px, _ in ready], model.device)
        if refs is not None:
            refs.sha256 = [sha for _, _, sha in ready]
        pred = _predict(model, pixels, req.top_k, need_full, req.refine, bound.hint_logp, req.hint_weight, extra,
                        refs)
        per_image = (search_regions(pred.probs_full, bound.cells, levels, calibration=req.calibration,
                                    model=model.model_name) if levels else [[] for _ in ready])
        for i, (res, _, sha) in enumerate(ready):
            res.prediction = pred[i]
            res.table = prediction_table(res.prediction)
            if refs is not None:
                res.references = reference_table(refs.refs, refs.found, i, res.table[["lat", "lon"]].to_numpy()[0])
                res.extras["refs"] = {"k": refs.params.k, "weight": refs.params.weight, "sha256": sha}
            res.regions = list(per_image[i])
            res.outside_calibration = any(r.outside_calibration for r in res.regions)
            if res.exif_gps is not None:
                res.exif_error_km = float(haversine_km(np.array(res.exif_gps), res.table[["lat", "lon"]].to_numpy()[0]))
            if bound.hint_record is not None:
                res.extras["hint"] = bound.hint_record
            res.refined = req.refine
        ready.clear()

    for item in sources:
        photo = item if isinstance(item, Photo) else read_photo(item[1], name=item[0])
        res = LocateResult(name=photo.name if isinstance(item, Photo) else item[0], photo=photo.described())
        results.append(res)
        if not photo.ok:
            res.error = photo.error
            continue
        ready.append((res, bound.prepare(photo.image), photo.sha256))
        if len(ready) >= req.batch_size:
            flush()
    flush()
    return results
