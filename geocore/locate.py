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

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from geocore.data.images import ImageSource, image_bytes_digest, load_image, read_exif_gps, source_bytes
from geocore.errors import ImageError, InputError
from geocore.geo.countries import describe
from geocore.geo.distance import haversine_km
from geocore.hints import apply_hint, check_hint, hint_model_for, text_log_probs
from geocore.models.base import GalleryModel, GeoLocator
from geocore.models.cell_classifier import CellClassifier
from geocore.models.precision import use_precision
from geocore.models.prediction import Prediction
from geocore.models.views import batch_inputs
from geocore.refs import FusionParams, Neighbours, ReferenceSet, fine_top_k, neighbours, reweight
from geocore.refs.embed import reference_embeddings
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
    # the photo's raw localizability lies beyond the 1st–99th percentile the calibration saw: coverage may not hold
    outside_calibration: bool = False
    references: pd.DataFrame | None = None  # with a reference set: the K nearest references (`reference_table`)

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
    params = FusionParams(k=FusionParams.k if k is None else int(k),
                          weight=FusionParams.weight if weight is None else float(weight))
    return _Refs(refs, params.check())


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
    refs: ReferenceSet | None = None,
    refs_k: int = FusionParams.k,
    refs_weight: float | None = None,
) -> list[LocateResult]:
    """Predict each `(name, path-or-bytes)`; results in input order, failures carried as errors.

    regions: levels in (0, 1) (e.g. (0.5, 0.9)) whose search regions each result carries; `calibration` (fitted
    by `geocore calibrate` for this model and candidates) makes them calibrated. hint: a text query combined as
    p ∝ p_image · p_text^hint_weight (`geocore.hints`); `hint_model` scores it when `model` takes no text.
    tencrop: average the papers' ten crops (cell models; `CellClassifier.prepare`).
    precision: "fp32" (default, exact reference parity), "bf16" or "auto" (bf16 where the hardware runs it fast):
    the image and text towers' precision (`geocore.models.precision`); the location encoder, gallery scan and
    softmax stay float32. Each result's `precision` says which was used.
    refs: a reference set built with this model (`geocore.refs.build_reference_set`); each result then carries
    its `refs_k` nearest references (`res.references`, see `reference_table`; the photo's own file, by SHA-256,
    is never among them) and an answer fused with them (p ∝ p_model · L^refs_weight, `geocore.refs.reweight`):
    the top-k over gallery ∪ reference positions, regions and calibration over the re-weighted gallery.
    """
    ref_use = use_references(refs, model, refs_k, refs_weight) if refs is not None else None
    if calibration is not None:
        calibration.check_references(refs.set_fingerprint if refs is not None else "")
    with use_precision(precision, model.device, model) as used:
        results = _locate(model, sources, top_k=top_k, full=full, refine=refine, batch_size=batch_size,
                          regions=regions, calibration=calibration, hint=hint, hint_weight=hint_weight,
                          hint_model=hint_model, tencrop=tencrop, refs=ref_use)
    for res in results:
        res.precision = used
    return results


def _locate(model: GeoLocator, sources: Iterable[tuple[str, ImageSource]], *, top_k: int, full: bool, refine: bool,
            batch_size: int, regions: Sequence[float] | None, calibration: Calibration | None, hint: str | None,
            hint_weight: float | None, hint_model: GalleryModel | None, tencrop: bool,
            refs: _Refs | None = None) -> list[LocateResult]:
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
    ready: list[tuple[LocateResult, torch.Tensor, str | None]] = []

    def flush() -> None:
        if not ready:
            return
        pixels, extra = batch_inputs([px for _, px, _ in ready], model.device)
        if refs is not None:
            refs.sha256 = [sha for _, _, sha in ready]
        pred = _predict(model, pixels, top_k, need_full, refine, hint_logp, weight, extra, refs)
        per_image = (search_regions(pred.probs_full, cells, levels, calibration=calibration, model=model.model_name)
                     if levels else [[] for _ in ready])
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
            if hint_logp is not None:
                res.extras["hint"] = {"text": text, "weight": weight}
        ready.clear()

    for name, source in sources:
        res = LocateResult(name=name)
        results.append(res)
        sha = None
        try:
            if refs is not None:  # read the bytes once: hashed (a photo never finds itself), then decoded
                source = source_bytes(source, name=name)
                sha = image_bytes_digest(source)
            image = load_image(source, name=name)
            res.exif_gps = read_exif_gps(source, name=name)
        except ImageError as err:
            res.error = str(err)
            continue
        ready.append((res, prepare(image), sha))
        if len(ready) >= batch_size:
            flush()
    flush()
    return results
