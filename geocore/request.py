"""One request, checked once: what a user asked of `locate` (and of a case, a report, a batch job).

`LocateRequest.build(...)` checks every option at the boundary, before any model loads: levels (with one default
rule, `default_levels`), top-k, the hint's text and weight, precision, refinement, a calibration (its file, the
model it was fitted for, its levels, the reference set it was fitted with), a reference set and its fusion, a
claimed location (resolved offline), video sampling. `request.bind(model)` then does, once per model, what
depends on the model: the calibration's fit to its candidates, the hint's text scores, the reference set's
embedding check, the precision actually used, the input transform. The CLI, the app, the report and the predict
loop all pass these two values; nothing downstream validates or resolves an option again.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from geocore.errors import InputError
from geocore.geo.candidates import CandidateCells
from geocore.geo.gazetteer import check_latlon, resolve_claim
from geocore.hints import check_hint, hint_model_for, text_log_probs
from geocore.models.base import GalleryModel, GeoLocator
from geocore.models.precision import resolve_precision
from geocore.refs import FusionParams, ReferenceSet
from geocore.uncertainty.calibration import Calibration, Levels, validate_levels

DEFAULT_LEVELS = (0.5, 0.9)  # the search regions a case, a report or the app shows when none are asked for


def default_levels(levels, calibration: Calibration | None, *, regions_needed: bool,
                   option: str = "--regions") -> tuple[float, ...]:
    """The one rule for the levels of an answer's search regions: the levels asked for; else, with a calibration,
    its levels (all of them when they include 0.5 and 0.9, else its lowest and highest); else `DEFAULT_LEVELS`
    when regions are needed (a case, a report, the app), else none."""
    if levels is not None:
        return validate_levels(levels, option)
    if calibration is not None:
        cal = calibration.levels
        return Levels(cal if set(cal) >= set(DEFAULT_LEVELS) else (cal[0], cal[-1]))
    return Levels(DEFAULT_LEVELS if regions_needed else ())


def _claim(claim) -> tuple[float, float, str] | None:
    """A claim as (lat, lon, label): text resolved offline ("Kharkiv, Ukraine", "49.99,36.23"); a (lat, lon) or
    (lat, lon, label) tuple taken as resolved after the range checks."""
    if claim is None or isinstance(claim, str):
        return None if claim is None else resolve_claim(claim)
    lat, lon = check_latlon(tuple(claim)[:2], "claim")
    label = str(claim[2]) if len(claim) > 2 and claim[2] else f"{lat:.4f}, {lon:.4f}"
    return lat, lon, label


@dataclass(frozen=True)
class LocateRequest:
    """What was asked, checked (`build`); `bind(model)` adds what depends on the model."""

    top_k: int = 5
    levels: tuple[float, ...] = ()
    calibration: Calibration | None = None
    hint: str | None = None
    hint_weight: float = 0.0  # the weight applied (the default one when none was given)
    hint_weight_given: bool = False
    refine: bool = False
    tencrop: bool = False
    precision: str = "fp32"  # as asked: auto | fp32 | bf16 (`bind` resolves it on the model's device)
    refs: ReferenceSet | None = None
    fusion: FusionParams = FusionParams()
    full: bool = False  # keep each photo's whole distribution
    same_place: bool = False
    claim: tuple[float, float, str] | None = None
    every_s: float = 1.0
    max_frames: int = 300
    batch_size: int = 8

    @classmethod
    def build(cls, *, top_k: int = 5, regions=None, calibration: Calibration | str | Path | None = None,
              hint: str | None = None, hint_weight: float | None = None, refine: bool = False,
              tencrop: bool = False, precision: str = "fp32", refs: ReferenceSet | str | Path | None = None,
              refs_k: int | None = None, refs_weight: float | None = None, full: bool = False,
              same_place: bool = False, claim=None, every_s: float = 1.0, max_frames: int = 300,
              batch_size: int = 8, regions_needed: bool = False, model_name: str | None = None,
              regions_option: str = "--regions") -> LocateRequest:
        """Every option checked once, naming the option at fault; files (calibration, reference set) loaded.

        regions: levels in (0, 1) ("0.5,0.9" or a sequence); None: `default_levels`. regions_needed: a case or a
        report (regions by default). model_name: the model that will run, when known before it loads: a
        calibration fitted for another model fails here, before the model loads."""
        if int(top_k) < 1:
            raise InputError(f"--top-k: expected at least 1, got {top_k}")
        resolve_precision(precision)  # an unknown name names --precision
        if isinstance(calibration, (str, Path)):
            calibration = Calibration.load(calibration)
        case = same_place or claim is not None
        levels = default_levels(regions, calibration, regions_needed=regions_needed or case, option=regions_option)
        if calibration is not None:
            if not levels:
                raise InputError("a calibration applies to search regions: ask for them too (--regions 0.5,0.9)")
            for level in levels:
                calibration.mass_for(level)  # a level outside the calibrated ones, named
            if model_name is not None and model_name != calibration.model:
                raise InputError(f"calibration was fitted for model '{calibration.model}', not '{model_name}'; "
                                 f"fit a calibration for '{model_name}'")
        text, weight = (None, 0.0)
        if hint_weight is not None and hint is None:
            raise InputError("--hint-weight: given without --hint")
        if hint is not None:
            text, weight = check_hint(hint, hint_weight)
        if refs is None and (refs_k is not None or refs_weight is not None):
            raise InputError("--refs-k and --refs-weight need --refs (they need a reference set to use)")
        if isinstance(refs, (str, Path)):
            from geocore.refs import load_reference_set

            refs = load_reference_set(refs)
        fusion = FusionParams.from_options(refs_k, refs_weight)
        if calibration is not None:
            calibration.check_references(refs.set_fingerprint if refs is not None else "")
        if not (isinstance(every_s, (int, float)) and math.isfinite(every_s) and every_s > 0) or int(max_frames) < 1:
            raise InputError(f"video sampling: expected --every-s > 0 and --max-frames ≥ 1, got {every_s} and "
                             f"{max_frames}")
        if int(batch_size) < 1:
            raise InputError(f"--batch-size: expected at least 1, got {batch_size}")
        return cls(top_k=int(top_k), levels=levels, calibration=calibration, hint=text, hint_weight=weight,
                   hint_weight_given=hint_weight is not None, refine=bool(refine), tencrop=bool(tencrop),
                   precision=precision, refs=refs, fusion=fusion, full=bool(full), same_place=bool(same_place),
                   claim=_claim(claim), every_s=float(every_s), max_frames=int(max_frames),
                   batch_size=int(batch_size))

    def with_(self, **changes: Any) -> LocateRequest:
        """A copy with some fields changed (no new checks: for fields already checked, such as `full`)."""
        return replace(self, **changes)

    def bind(self, model: GeoLocator, hint_model: GalleryModel | None = None) -> BoundRequest:
        """The request for `model`: checks what needs the model (top-k against its candidates, the calibration's
        candidates, the reference set's embeddings, refinement, ten crops), scores the hint once, resolves the
        precision once. Nothing here reads a photo or runs the image tower."""
        n = model.num_candidates()
        if self.top_k > n:
            raise InputError(f"top-k must be between 1 and {n} (the model's candidates), got {self.top_k}")
        if self.refine and not isinstance(model, GalleryModel):
            raise InputError(f"refinement needs a GPS-gallery model (geoclip); {model.model_name} has none")
        prepare = model.input_transform(self.tencrop)
        cells = model.candidate_cells() if self.levels else None
        if self.calibration is not None:
            self.calibration.check_compatible(model.model_name, cells.fingerprint)
        if self.refs is not None:
            self.refs.check_model(model)
        scorer, hint_logp = None, None
        if self.hint is not None:
            scorer = hint_model_for(model, hint_model)
        used = resolve_precision(self.precision, model.device, model)
        if scorer is not None:
            from geocore.models.precision import use_precision

            with use_precision(used, model.device, model):
                hint_logp = text_log_probs(scorer, self.hint, model.candidate_points())
        return BoundRequest(self, model, prepare, cells, used, scorer, hint_logp)


@dataclass
class BoundRequest:
    """A request bound to one model: the checked options and what was computed once for that model."""

    request: LocateRequest
    model: GeoLocator
    prepare: Callable[[Any], Any]  # PIL photo → what `model.predict` takes
    cells: CandidateCells | None  # the candidates' areas (when regions are asked for)
    precision: str  # the precision used: fp32 or bf16
    hint_model: GalleryModel | None = None
    hint_logp: torch.Tensor | None = None  # (M,) the hint's log-probabilities over the candidates, scored once

    def with_levels(self, levels, *, full: bool | None = None) -> BoundRequest:
        """This bound request with other region levels (and `full`), keeping what was computed for the model."""
        levels = validate_levels(levels, "levels")
        if self.request.calibration is not None:
            for level in levels:
                self.request.calibration.mass_for(level)
        request = self.request.with_(levels=levels, full=self.request.full if full is None else full)
        cells = self.cells if self.cells is not None else self.model.candidate_cells()
        return replace(self, request=request, cells=cells)

    @property
    def hint_record(self) -> dict | None:
        """The hint as applied ({"text", "weight"}), or None."""
        r = self.request
        return None if r.hint is None else {"text": r.hint, "weight": r.hint_weight}

