"""The case report's contents: what each photo, the joint answer and each clip show, assembled from a `Case`
(`geocore.cases.analyse`) that was computed once — thumbnails, Grad-CAM, maps, claim checks — before any HTML."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geocore.cases.analyse import Case, CaseInput, ClipAnswer
from geocore.cases.claims import ClaimCheck
from geocore.cases.joint import JointResult
from geocore.data.images import Photo
from geocore.data.safe_io import file_sha256 as _hash_file
from geocore.errors import GeocoreError
from geocore.locate import LocateResult
from geocore.models.base import GalleryModel, GeoLocator
from geocore.report.figures import (FRAME_THUMB_SIDE, gradcam_uri, jpeg_uri, maps, reference_thumbs,
                                    region_note)

_HASH_CACHE: dict[tuple[str, int, int], str] = {}


@dataclass
class PhotoCase(CaseInput):
    """Everything the report shows about one photo (thumbnails and maps as data: URIs)."""

    result: LocateResult | None = None
    regions: list = field(default_factory=list)  # SearchRegion per level, ascending
    exif: dict = field(default_factory=dict)
    size: tuple[int, int] | None = None
    thumbnail: str | None = None
    gradcam: str | None = None
    gradcam_note: str | None = None
    world_map: str | None = None
    zoom_map: str | None = None
    inside: dict = field(default_factory=dict)  # level → EXIF GPS inside that region
    region_note: str | None = None  # why the regions' polygons (maps, separate areas, countries) are missing
    ref_thumbs: list = field(default_factory=list)  # per reference neighbour: a data: URI, or None
    claim: ClaimCheck | None = None  # the claimed location checked against this photo's answer


@dataclass
class JointCase:
    """The joint answer of photos of one place, as the report shows it (maps as data: URIs)."""

    result: JointResult | None = None
    regions: list = field(default_factory=list)  # SearchRegion per level, ascending
    world_map: str | None = None
    zoom_map: str | None = None
    region_note: str | None = None
    claim: ClaimCheck | None = None
    error: str | None = None
    track: Any = None  # a clip's per-frame top-1s (time_s, lat, lon, segment), drawn as a line on its maps


@dataclass
class VideoCase(ClipAnswer):
    """Everything the report shows about one video clip: the located clip, its frames' thumbnails (data: URIs,
    one per kept frame), each segment's joint answer and the clip's."""

    thumbs: list = field(default_factory=list)
    segments: list = field(default_factory=list)  # JointCase per segment (no maps)
    clip: JointCase | None = None  # the joint of the segments, with the track maps and the claim


@dataclass
class CaseReport:
    """A rendered report: the HTML and the per-photo cases behind it."""

    html: str
    cases: list[PhotoCase]
    joint: JointCase | None = None  # with same_place
    videos: list[VideoCase] = field(default_factory=list)  # the video clips among the inputs

    @property
    def n_ok(self) -> int:
        return sum(c.ok for c in self.cases)


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file, read in 1 MiB chunks (cached per path, size and modification time)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASH_CACHE:
        _HASH_CACHE[key] = _hash_file(path)
    return _HASH_CACHE[key]


def weights_record(model: GeoLocator, weights_file: str | Path | None = None) -> dict:
    """What the model's weights were: {"file", "sha256", "note"} (file and sha256 None when unknown).

    `weights_file`: the checkpoint the model was loaded from, when it was one; otherwise, for GeoCLIP with a
    pretrained tag, the CLIP backbone file found locally."""
    out: dict[str, Any] = {"file": None, "sha256": None, "note": None}
    path: Path | None = Path(weights_file) if weights_file is not None else None
    config = getattr(model, "config", None) or {}
    if path is None and isinstance(model, GalleryModel) and not model.random_backbone and config.get("clip_pretrained"):
        from geocore.weights.resolve import resolve_clip_checkpoint

        try:
            path = resolve_clip_checkpoint(config.get("clip_model") or "ViT-L-14", config["clip_pretrained"])
        except GeocoreError as err:
            out["note"] = f"backbone file not found: {err}"
    if path is not None:
        try:
            out.update(file=str(path), sha256=file_sha256(path))
        except OSError as err:
            out["note"] = f"{path}: cannot be read ({err.strerror or err})"
    elif out["note"] is None:
        out["note"] = "not recorded (the model was not loaded from a weights file geocore knows)"
    return out


def photo_case(index: int, photo: Photo, res: LocateResult, case: Case, *, explain: bool = True,
               claim: bool = True) -> PhotoCase:
    """One photo's section, from the photo as read and its answer as computed (nothing is located again)."""
    out = PhotoCase(index=index, name=res.name, sha256=photo.sha256, n_bytes=photo.n_bytes, result=res)
    if not res.ok:
        out.error = res.error
        return out
    image = photo.image
    out.exif = dict(photo.exif)
    out.size = image.size if image is not None else None
    out.thumbnail = jpeg_uri(image) if image is not None else None
    out.regions = sorted(res.regions, key=lambda r: r.level)
    if res.exif_gps is not None:
        out.inside = {r.level: res.exif_in_region(r.level) for r in out.regions}
    out.ref_thumbs = reference_thumbs(res.references)
    if claim:
        out.claim = case.check_claim(res)
    out.world_map, out.zoom_map, out.region_note = maps(res, out.regions, out.claim)
    if explain and image is not None:
        out.gradcam, out.gradcam_note = gradcam_uri(case.model, image, res)
    return out


def joint_case(joint: JointResult, case: Case, *, claim: bool = True, with_maps: bool = True, track=None,
               levels=None) -> JointCase:
    """A joint answer as the report shows it: its regions (at `levels` when given: a clip's answers also hold the
    localizability level), the claim checked against it, its maps (with a clip's track) when `with_maps`."""
    regions = sorted(joint.regions, key=lambda r: r.level)
    if levels is not None:
        regions = [r for r in regions if any(abs(r.level - lv) < 1e-9 for lv in levels)]
    out = JointCase(result=joint, regions=regions, track=track)
    if claim:
        out.claim = case.check_claim(joint)
    if with_maps:
        out.world_map, out.zoom_map, out.region_note = maps(joint, out.regions, out.claim, track)
    else:
        out.region_note = region_note(out.regions)
    return out


def video_case(clip: ClipAnswer, case: Case) -> VideoCase:
    """A clip's section: its frames' thumbnails, each segment's joint answer, the clip's joint answer and track."""
    out = VideoCase(index=clip.index, name=clip.name, sha256=clip.sha256, n_bytes=clip.n_bytes, result=clip.result,
                    error=clip.error)
    if not clip.ok:
        return out
    video, levels = clip.result, case.request.request.levels
    out.thumbs = [jpeg_uri(t, FRAME_THUMB_SIDE) for t in video.thumbnails]
    out.segments = [joint_case(seg, case, claim=False, with_maps=False, levels=levels) for seg in video.segments]
    out.clip = joint_case(video.clip, case, track=video.track, levels=levels)
    return out


def contents(case: Case, *, explain: bool = True) -> tuple[list[PhotoCase], JointCase | None, list[VideoCase]]:
    """Every section of the report of `case`: the photos', the joint answer's (with `same_place`), the clips'."""
    same_place = case.request.request.same_place and bool(case.photos)
    photos = [photo_case(i, photo, res, case, explain=explain, claim=not same_place)
              for i, (photo, res) in enumerate(zip(case.photos, case.results), start=1)]
    joint = None
    if same_place:
        joint = (joint_case(case.joint, case) if case.joint is not None
                 else JointCase(error="no photo could be read: there is no joint answer"))
    return photos, joint, [video_case(clip, case) for clip in case.clips]
