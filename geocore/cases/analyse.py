"""A case analysed in one pass: each photo read once (`Photo`), located once on one bound request, the joint answer
of photos of one place, each video clip located once. What the CLI's `report`, the app's case report and
notebooks build on, so a report shows the answers that were computed, not a second run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from geocore.cases.claims import ClaimCheck, check_resolved_claim
from geocore.cases.clip import VideoResult, locate_video
from geocore.cases.joint import JointResult, joint_locate
from geocore.data.images import ImageSource, Photo, image_bytes_digest, read_photo, source_bytes
from geocore.data.safe_io import file_sha256
from geocore.data.video import VIDEO_SUFFIXES
from geocore.errors import GeocoreError
from geocore.locate import LocateResult, locate
from geocore.models.base import GalleryModel, GeoLocator
from geocore.request import BoundRequest, LocateRequest


@dataclass
class CaseInput:
    """One input of a case as a file: its place in the case, its name, the file's SHA-256 and size, and why it could
    not be used (`error`; None when it was)."""

    index: int
    name: str
    sha256: str | None = None
    n_bytes: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class ClipAnswer(CaseInput):
    """One video clip of a case: its file's identity and its located clip, or why it could not be read."""

    result: VideoResult | None = None


@dataclass
class Case:
    """What one analysis computed: the photos as read, their answers (in the same order), the joint answer with
    `same_place`, the clips, the bound request they were all made with, and when (UTC)."""

    request: BoundRequest
    photos: list[Photo] = field(default_factory=list)
    results: list[LocateResult] = field(default_factory=list)
    joint: JointResult | None = None
    clips: list[ClipAnswer] = field(default_factory=list)
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @property
    def model(self) -> GeoLocator:
        return self.request.model

    def check_claim(self, answer) -> ClaimCheck | None:
        """The request's claimed location against one answer (a photo's, the joint one, a clip's), labelled as
        resolved; None when the request makes no claim."""
        req = self.request.request
        return (None if req.claim is None else
                check_resolved_claim(answer, req.claim, self.model, req.calibration, self.request.cells))


def is_video(name: str, source: Any) -> bool:
    """Whether an input is a video clip, by the suffix of its path (or of its name for bytes and uploads)."""
    where = source if isinstance(source, (str, Path)) else name
    return Path(str(where)).suffix.lower() in VIDEO_SUFFIXES


def _clip_identity(source: ImageSource, name: str) -> tuple[str | None, int | None, ImageSource]:
    """(SHA-256, size, what to decode): a file is hashed in chunks (a clip is never read whole into memory)."""
    if isinstance(source, (str, Path)):
        try:
            return file_sha256(source), Path(source).stat().st_size, source
        except OSError:
            return None, None, source
    try:
        data = source_bytes(source, name=name)
    except GeocoreError:
        return None, None, source
    return image_bytes_digest(data), len(data), data


def analyse_case(model: GeoLocator, inputs: Sequence[tuple[str, ImageSource] | Photo],
                 request: LocateRequest | BoundRequest, *, hint_model: GalleryModel | None = None) -> Case:
    """Analyse photos and clips ((name, path-or-bytes) pairs or `Photo`s; clips by suffix) once: each photo read
    and located once, the joint answer when `request.same_place`, each clip located once. A photo or clip that
    cannot be read carries its error; the others are analysed."""
    bound = request if isinstance(request, BoundRequest) else request.bind(model, hint_model)
    req = bound.request
    photos: list[Photo] = []
    clip_inputs: list[tuple[str, ImageSource]] = []
    for item in inputs:
        if isinstance(item, Photo):
            photos.append(item)
        elif is_video(str(item[0]), item[1]):
            clip_inputs.append((str(item[0]), item[1]))
        else:
            photos.append(read_photo(item[1], name=str(item[0])))
    results = locate(model, photos, bound) if photos else []
    case = Case(bound, photos, results)
    ok = [r for r in results if r.ok]
    if req.same_place and ok:
        case.joint = joint_locate(ok, model, levels=req.levels, calibration=req.calibration, top_k=req.top_k,
                                  hint_model=bound.hint_model)
    for index, (name, source) in enumerate(clip_inputs, start=1):
        sha, size, src = _clip_identity(source, name)
        clip = ClipAnswer(index, name, sha, size)
        try:
            clip.result = locate_video(model, src, bound, name=name)
        except (GeocoreError, OSError, ValueError) as err:
            clip.error = str(err)
        case.clips.append(clip)
    return case
