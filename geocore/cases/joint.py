"""Several photos of one place → one joint distribution over the same candidates.

p_joint ∝ (Π_i p_i)^t · p_text^w: a tempered product of the photos' image distributions (hints, when the
photos carry one, are taken out of each photo and counted once). Photos of one scene are not independent
evidence — they share what makes the scene look like other places — so the plain product (t = 1) is
over-confident. t = n^(-TEMPERATURE_POWER) = 1/√n: chosen by `bench/bench_cases.py` on stand-ins built from
the real GeoCLIP heads (see TEMPERATURE_POWER and bench/RESULTS.md).

Per photo: its own top-1, how much it narrowed the answer (the joint 90 % area without it over the joint 90 %
area with it: leave-one-out) and a conflict flag when its own 90 % region misses the top-1 of the other photos'
joint ("may not be the same place"; against the joint of all photos, which the odd photo drags towards itself,
the flag found 3–78 % of the odd photos on the stand-ins, against 42–80 % this way: bench/RESULTS.md).

Calibration: the joint regions take the masses of the calibration given. One fitted on the joint answers of
labelled photo sets (`geocore.cases.set_calibration`, `geocore calibrate --sets`) covers as it says; one fitted
on single photos still gives regions, each carrying `calibration_note` (`Calibration.note_for`): on stand-ins
with shared look-alikes it covered 82–90 % at 90 % (bench/RESULTS.md, "Cases"). The per-photo 90 % regions of
the conflict flag and the narrowing use the same calibration's 90 % mass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from geocore.errors import InputError
from geocore.geo.candidates import CandidateCells
from geocore.geo.distance import haversine_km
from geocore.hints import hint_model_for, text_log_probs
from geocore.locate import LocateResult, prediction_table
from geocore.models.prediction import Prediction
from geocore.uncertainty.calibration import Calibration, validate_levels
from geocore.uncertainty.regions import SearchRegion, areas_at_masses, search_regions, truth_mass
from geocore.tensors import as_numpy

# t = n^-0.5 (bench/bench_cases.py, 2/3/5 photos, with and without shared look-alikes): mean log p(truth) −4.85
# (a = 0.25: −4.74, plain product a = 0: −4.95, a = 1: −6.08), and the joint's 90 % region under a
# single-photo calibration covers 82–90 % (a = 0.25: 62–88 %; a = 0: 51–84 %)
TEMPERATURE_POWER = 0.5
CONFLICT_LEVEL = 0.9
_TINY = torch.finfo(torch.float32).tiny


def temperature(n: int) -> float:
    """The exponent t of the tempered product of n photos: n^-TEMPERATURE_POWER (1 for one photo)."""
    return float(max(n, 1)) ** -TEMPERATURE_POWER


def log_probs(probs: torch.Tensor) -> torch.Tensor:
    """log of probabilities, zeros clamped to the smallest float32 (as hints do)."""
    return probs.float().clamp_min(_TINY).log()


def combine(image_logp: torch.Tensor, t: float | None = None) -> torch.Tensor:
    """(..., n, M) log-probabilities of n photos → (..., M) normalised log p_joint ∝ t · Σ_i log p_i."""
    t = temperature(image_logp.shape[-2]) if t is None else t
    return (t * image_logp.sum(dim=-2)).log_softmax(dim=-1)


def leave_one_out(image_logp: torch.Tensor) -> torch.Tensor:
    """(n, M) → (n, M): row i is the joint of every photo but i (n ≥ 2)."""
    n = image_logp.shape[0]
    rest = image_logp.sum(dim=0, keepdim=True) - image_logp
    return (temperature(n - 1) * rest).log_softmax(dim=-1)


@dataclass(eq=False)
class JointResult:
    """One answer for several photos (or video segments) of one place.

    prediction: batch of one with `probs_full` (the joint distribution); table: its top-k with places;
    regions: one per level; photos: per photo `name, lat, lon` (its own top-1), `km_from_joint`,
    `area90_km2` (its own 90 % region), `area90_without_km2` (the joint's without it), `narrowing`
    (without / with: how many times smaller the joint 90 % region is thanks to this photo), `conflict`.
    """

    names: list[str]
    temperature: float
    prediction: Prediction
    table: pd.DataFrame
    regions: list[SearchRegion]
    photos: pd.DataFrame
    hint: dict | None = None
    hint_logp: torch.Tensor | None = field(default=None, repr=False)  # the weighted hint term it contains, (M,)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name, error) of photos left out

    @property
    def n(self) -> int:
        return len(self.names)

    def region(self, level: float) -> SearchRegion | None:
        """The joint search region at `level`, if computed."""
        return next((r for r in self.regions if abs(r.level - level) < 1e-9), None)

    @property
    def calibrated(self) -> bool:
        return bool(self.regions) and all(r.calibrated for r in self.regions)

    @property
    def calibration_kind(self) -> str:
        """What the regions' calibration was fitted on ("single photos", "sets of 2–5 photos"; "" : none)."""
        return next((r.calibration_kind for r in self.regions if r.calibration_kind), "")

    @property
    def calibration_note(self) -> str:
        """"" unless the calibration was fitted on another kind of answer (e.g. single photos): what to tell."""
        return next((r.calibration_note for r in self.regions if r.calibration_note), "")

    @property
    def conflicts(self) -> list[str]:
        """Names of the photos that may not show the same place."""
        return self.photos.loc[self.photos["conflict"], "name"].tolist()

    def to_json(self) -> dict:
        """Plain data for `--json`'s "joint" entry: top-k, regions as GeoJSON features, per-photo rows."""
        photos = self.photos.replace({np.nan: None}).to_dict(orient="records")
        return {"n_photos": self.n, "temperature": self.temperature, "calibrated": self.calibrated,
                "calibration_kind": self.calibration_kind or None, "calibration_note": self.calibration_note or None,
                "topk": self.table.replace({np.nan: None}).to_dict(orient="records"),
                "regions": [r.to_feature() for r in self.regions], "photos": photos,
                "conflicts": self.conflicts, "hint": self.hint,
                "skipped": [{"name": n, "error": e} for n, e in self.skipped]}


def joint_log_prob(image_logp: torch.Tensor, hint_logp: torch.Tensor | None = None) -> torch.Tensor:
    """(n, M) per-photo image log-probabilities (hint taken out) → (M,) the joint's normalised log-probabilities:
    the tempered product (t = `temperature(n)`) with the weighted hint term `hint_logp` added once."""
    image_logp = image_logp.float().cpu()
    extra = torch.zeros(image_logp.shape[-1]) if hint_logp is None else hint_logp.float().cpu()
    return (combine(image_logp, temperature(image_logp.shape[-2])) + extra).log_softmax(-1)


def _mass(level: float, calibration: Calibration | None) -> float:
    return calibration.mass_for(level) if calibration is not None else level


def joint_from_log_probs(image_logp: torch.Tensor, names: Sequence[str], candidates: torch.Tensor,
                         cells: CandidateCells, *, hint_logp: torch.Tensor | None = None, hint: dict | None = None,
                         levels=(0.5, 0.9), calibration: Calibration | None = None, model: str | None = None,
                         top_k: int = 5, n_photos: int | None = None) -> JointResult:
    """The joint answer from (n, M) per-photo image log-probabilities (hint taken out), `hint_logp` (M,) already
    weighted (added once), over `candidates` (M, 2) with areas `cells`. `n_photos`: how many photos the answer
    joins, when a row is itself a joint (a clip's segments); n by default (the regions' `calibration_note`)."""
    n, m = image_logp.shape
    if n == 0:
        raise InputError("a joint answer needs at least one photo")
    levels = validate_levels(levels)
    extra = torch.zeros(m) if hint_logp is None else hint_logp.float().cpu()
    image_logp = image_logp.float().cpu()
    t = temperature(n)
    joint_lp = joint_log_prob(image_logp, hint_logp)
    pred = Prediction.from_scores(joint_lp[None], candidates, min(top_k, m), full=True)
    regions = search_regions(pred.probs_full[0], cells, levels, calibration=calibration, model=model,
                             n_photos=n if n_photos is None else int(n_photos))
    own = (image_logp + extra).softmax(-1)  # (n, M) each photo as it was shown (with the hint)
    top1 = as_numpy(pred.coords[0, 0], np.float64)
    own_top1 = as_numpy(candidates[own.argmax(-1)], np.float64)
    q = _mass(CONFLICT_LEVEL, calibration)
    if calibration is not None:
        calibration.check_compatible(model if model is not None else calibration.model, cells.fingerprint)
    # one HPD sort per row: the joint, each photo alone, and the joint of the others (leave-one-out)
    others = (leave_one_out(image_logp) + extra).softmax(-1) if n > 1 else None
    areas = areas_at_masses(torch.cat([pred.probs_full, own] + ([others] if n > 1 else [])), cells, [q])[:, 0]
    without = areas[1 + n:] if n > 1 else np.full(n, np.nan)
    # against the others' joint top-1, not the joint's: a photo from elsewhere drags the joint towards itself
    conflict = truth_mass(own, cells, as_numpy(candidates[others.argmax(-1)], np.float64)) > q if n > 1 else False
    photos = pd.DataFrame({
        "name": list(names), "lat": own_top1[:, 0], "lon": own_top1[:, 1],
        "km_from_joint": haversine_km(own_top1, top1[None]), "area90_km2": areas[1 : 1 + n],
        "area90_without_km2": without, "narrowing": without / areas[0], "conflict": conflict,
    })
    return JointResult(names=list(names), temperature=t, prediction=pred, table=prediction_table(pred),
                       regions=list(regions), photos=photos, hint=hint, hint_logp=hint_logp)


def _hint_terms(results: Sequence[LocateResult], model, hint_model, candidates: torch.Tensor
                ) -> tuple[torch.Tensor | None, list[torch.Tensor | None], dict | None]:
    """The one weighted hint term to add back, each result's (to take out) and the hint's description."""
    hints = [r.extras.get("hint") for r in results]
    if not any(hints):
        return None, [None] * len(results), None
    scorer = hint_model_for(model, hint_model)
    cache: dict[tuple[str, float], torch.Tensor] = {}
    for h in filter(None, hints):
        key = (h["text"], float(h["weight"]))
        if key not in cache:
            cache[key] = key[1] * text_log_probs(scorer, key[0], candidates).float()
    per_photo = [cache[(h["text"], float(h["weight"]))] if h else None for h in hints]
    if len(cache) > 1:
        raise InputError("the photos were located with different text hints; locate them with one hint "
                         "(or none) to combine them")
    (key, term), = cache.items()
    return term, per_photo, {"text": key[0], "weight": key[1]}


@dataclass(eq=False)
class JointInputs:
    """What a joint answer is made of: the photos used (`ok`), those left out (name, error), the candidates, each
    photo's image log-probabilities with its hint taken out (n, M), and the hint term to add once (M,)."""

    ok: list[LocateResult]
    skipped: list[tuple[str, str]]
    candidates: torch.Tensor
    image_logp: torch.Tensor
    hint_logp: torch.Tensor | None
    hint: dict | None

    def joint_log_prob(self) -> torch.Tensor:
        """(M,) the joint answer's log-probabilities, exactly as `joint_locate` computes them."""
        return joint_log_prob(self.image_logp, self.hint_logp)


def joint_inputs(results: Sequence[LocateResult], model, hint_model=None) -> JointInputs:
    """The inputs of `joint_locate` (checks included: at least one readable photo, full distributions, one set of
    candidates, one hint)."""
    ok = [r for r in results if r.ok]
    skipped = [(r.name, r.error or "") for r in results if not r.ok]
    if not ok:
        raise InputError("no photo could be read: " + "; ".join(e for _, e in skipped))
    missing = [r.name for r in ok if r.prediction is None or r.prediction.probs_full is None]
    if missing:
        raise InputError(f"{missing[0]}: no full distribution; locate the photos with full=True")
    candidates = ok[0].prediction.candidates
    for r in ok[1:]:
        c = r.prediction.candidates
        if c is not candidates and (c.shape != candidates.shape or not torch.equal(c, candidates)):
            raise InputError(f"{r.name}: located over other candidates than {ok[0].name}; locate all photos with "
                             "one model and gallery")
    term, per_photo, hint = _hint_terms(ok, model, hint_model, candidates)
    logp = log_probs(torch.cat([r.prediction.probs_full.cpu() for r in ok]))
    if term is not None:
        logp = torch.stack([lp - h if h is not None else lp for lp, h in zip(logp, per_photo)]).log_softmax(-1)
    return JointInputs(ok, skipped, candidates, logp, term, hint)


def joint_locate(results: Sequence[LocateResult], model, *, levels=(0.5, 0.9), calibration: Calibration | None = None,
                 top_k: int = 5, hint_model=None) -> JointResult:
    """One joint answer for the photos of `locate(model, ..., full=True)` (failed photos are left out and listed
    in `skipped`). A hint the photos were located with is counted once (needs `hint_model`, the text model that
    scored it: the model itself for GeoCLIP). With a calibration fitted on photo sets (`geocore calibrate
    --sets`) the joint regions cover as it says; with one fitted on single photos they carry a note."""
    inp = joint_inputs(results, model, hint_model)
    out = joint_from_log_probs(inp.image_logp, [r.name for r in inp.ok], inp.candidates, model.candidate_cells(),
                               hint_logp=inp.hint_logp, hint=inp.hint, levels=levels, calibration=calibration,
                               model=model.model_name, top_k=top_k)
    out.skipped = inp.skipped
    return out
