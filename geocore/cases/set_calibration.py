"""Calibrating joint answers: split conformal on labelled sets of photos of one place.

Split conformal calibration (`geocore.uncertainty.calibration`) guarantees coverage for answers exchangeable with
the calibration ones. A joint answer (`geocore.cases.joint`: the tempered product of several photos of one place)
is not a single photo's answer: with look-alike places shared by a scene's photos, its 90 % region under a
calibration fitted on single photos covered 82–90 % on stand-ins built from the real GeoCLIP heads. Fitted on the
joint answers of labelled photo sets, each set with one true position, the guarantee is back (bench/RESULTS.md,
"Cases").

The nonconformity score of a set is its joint answer's truth mass (`truth_mass` on the joint distribution, exactly
as `joint_locate` computes it: hints counted once, unreadable photos left out); Mondrian bins on the joint
distribution's entropy as for photos (`geocore.uncertainty.conditional`); the fit check on its raw localizability
(log10 km² of its uncalibrated 90 % region). The calibration records the smallest and largest set
(`Calibration.photos_per_set`): a joint answer of another size, or a single photo, gets a note
(`Calibration.note_for`). Memory: each photo's full distribution is kept only until its set is scored
(`chunk` photos at a time).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch

from geocore.cases.joint import joint_inputs
from geocore.data.images import ImageSource
from geocore.errors import InputError
from geocore.geo.candidates import CandidateCells
from geocore.geo.gazetteer import check_latlon
from geocore.locate import locate
from geocore.request import BoundRequest, LocateRequest
from geocore.uncertainty.calibration import DEFAULT_LEVELS, Calibration, Levels, fit_calibration, validate_levels
from geocore.uncertainty.conditional import bin_score_columns
from geocore.uncertainty.regions import areas_at_masses, bin_scores, prob_matrix, truth_mass

CHUNK_PHOTOS = 64  # photos located per pass (their sets completed): (64, 100K) float32 distributions are 26 MB
LOCALIZABILITY_LEVEL = 0.9


@dataclass(eq=False)
class SetCalibration:
    """A calibration fitted on photo sets, and how it was made.

    sets: one row per set used (`set_id, n_photos, truth_mass, entropy, localizability`: the joint answer's score,
    its bin score and its raw log10 km² of the 90 % region); skipped: (set_id, photo, error) of photos that could
    not be read (left out of their set, as `joint_locate` leaves them out); dropped: sets none of whose photos
    could be read."""

    calibration: Calibration
    sets: pd.DataFrame
    skipped: list[tuple[str, str, str]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


def joint_scores(joint_probs, truths, cells: CandidateCells, n_photos) -> pd.DataFrame:
    """Per joint answer (B, M) with its true position (B, 2) and photo count (B,): `n_photos`, `truth_mass` (the
    nonconformity score), `entropy` and `localizability` (log10 km² of the raw 90 % region): the Mondrian bin
    scores, the second also the fit check's — computed as the search regions compute them at use."""
    p, _ = prob_matrix(joint_probs, len(cells))
    truths = np.asarray(truths, np.float64).reshape(-1, 2)
    return pd.DataFrame({
        "n_photos": np.asarray(n_photos, np.int64).reshape(-1),
        "truth_mass": truth_mass(p, cells, truths),
        "entropy": bin_scores(p, cells, "entropy"),
        "localizability": np.log10(areas_at_masses(p, cells, [LOCALIZABILITY_LEVEL])[:, 0]),
    })


def fit_on_sets(scores: pd.DataFrame, levels=DEFAULT_LEVELS, *, model: str, fingerprint, mondrian: bool = True,
                refs: str = "") -> Calibration:
    """The calibration from `joint_scores` rows of labelled sets: split conformal on their truth masses (Mondrian
    on their entropy and raw 90 % area unless `mondrian=False`), recording the smallest and largest set."""
    if not len(scores):
        raise InputError("no photo set to calibrate on: expected at least one set with a readable photo")
    sizes = scores["n_photos"].to_numpy(np.int64)
    return fit_calibration(scores["truth_mass"].to_numpy(np.float64), validate_levels(levels), model=model,
                           fingerprint=fingerprint,
                           bin_score=bin_score_columns(scores) if mondrian else None,
                           localizability=scores["localizability"].to_numpy(np.float64), refs=refs,
                           photos_per_set=(int(sizes.min()), int(sizes.max())))


def _bound_for_sets(model, request: LocateRequest | BoundRequest | None, hint_model) -> BoundRequest:
    """The request each photo is located with: full distributions, no regions, no calibration (fitting one)."""
    if request is None:
        request = LocateRequest.build()
    changes = dict(full=True, levels=Levels(()), calibration=None)
    if isinstance(request, BoundRequest):
        if request.model is not model:
            raise InputError("calibrate sets: the request was bound to another model")
        return replace(request, request=request.request.with_(**changes))
    return request.with_(**changes).bind(model, hint_model)


def calibrate_sets(model, photos: Iterable[tuple[str, str, ImageSource]], truths: Mapping[str, tuple[float, float]],
                   request: LocateRequest | BoundRequest | None = None, *, levels=None, mondrian: bool = True,
                   hint_model=None, chunk: int = CHUNK_PHOTOS,
                   progress: Callable[[int, int], None] | None = None) -> SetCalibration:
    """Fit a calibration on the joint answers of labelled photo sets.

    photos: (set_id, name, source) rows (a set's photos need not be adjacent); truths: set_id → its true (lat, lon).
    Each photo is located once (`geocore.locate.locate`, full distribution) as `request` says (top-k, hint,
    precision, ten crops, reference set; its levels, when given, are the levels fitted unless `levels` is), each
    set's joint answer formed as `joint_locate` forms it, and the calibration fitted on their truth masses.
    `progress(sets_done, sets)` is called after each pass. InputError for a set without a true position or none
    at all; photos that cannot be read are left out of their set (listed in `skipped`)."""
    groups: dict[str, list[tuple[str, ImageSource]]] = {}
    for set_id, name, source in photos:
        groups.setdefault(str(set_id), []).append((str(name), source))
    if not groups:
        raise InputError("no photo set to calibrate on: expected (set_id, photo, source) rows")
    missing = [s for s in groups if s not in truths]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise InputError(f"set {missing[0]!r} has no true position{more}; expected one (lat, lon) per set")
    where = {s: check_latlon(truths[s], f"set {s!r}") for s in groups}
    asked = request.request if isinstance(request, BoundRequest) else request
    fit_levels = validate_levels(levels if levels is not None else
                                 (asked.levels if asked is not None and asked.levels else DEFAULT_LEVELS))
    bound = _bound_for_sets(model, request, hint_model)
    req = bound.request
    cells = model.candidate_cells()
    order = list(groups)
    frames: list[pd.DataFrame] = []
    used: list[str] = []
    skipped: list[tuple[str, str, str]] = []
    dropped: list[str] = []
    done = 0
    while done < len(order):
        batch, n_photos = [], 0
        while done + len(batch) < len(order) and (not batch or n_photos + len(groups[order[done + len(batch)]]) <= chunk):
            batch.append(order[done + len(batch)])
            n_photos += len(groups[batch[-1]])
        results = locate(model, [p for s in batch for p in groups[s]], bound)
        joints, truth_rows, sizes = [], [], []
        start = 0
        for s in batch:
            mine = results[start : start + len(groups[s])]
            start += len(mine)
            skipped += [(s, r.name, r.error or "") for r in mine if not r.ok]
            if not any(r.ok for r in mine):
                dropped.append(s)
                continue
            inp = joint_inputs(mine, model, bound.hint_model)
            joints.append(inp.joint_log_prob().exp())
            truth_rows.append(where[s])
            sizes.append(len(inp.ok))
            used.append(s)
        if joints:
            frames.append(joint_scores(torch.stack(joints), truth_rows, cells, sizes))
        done += len(batch)
        if progress is not None:
            progress(done, len(order))
    scores = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    cal = fit_on_sets(scores, fit_levels, model=model.model_name, fingerprint=cells, mondrian=mondrian,
                      refs=req.refs.set_fingerprint if req.refs is not None else "")
    scores.insert(0, "set_id", used)
    return SetCalibration(cal, scores, skipped, dropped)
