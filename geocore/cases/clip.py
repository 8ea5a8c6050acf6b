"""Locate a video clip: sampled frames → per-frame answers → segments (a cut starts one) → joint answers.

Frames come from `geocore.data.video.VideoFrames` (streamed; near-identical frames dropped before the model
runs) and go through `geocore.locate.locate` as `Photo`s holding the decoded frame (decoded once, by the video
decoder; the same path as photos, so hints, precision and regions behave the same). Each segment's frames are photos of one scene and
get a joint answer (`geocore.cases.joint`); the clip's answer is the joint of the segments' answers, whose
conflict flags say which segments may show another place. A calibration fitted on photo sets (`geocore calibrate
--sets`) calibrates the joint answers; one fitted on single photos marks them (`JointResult.calibration_note`). Memory: the decoder's frames plus, per kept
frame, its full distribution (max_frames × candidates × 4 bytes: 120 MB for 300 frames on the 100K gallery).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from geocore.cases.joint import JointResult, joint_from_log_probs, joint_locate, log_probs
from geocore.data.images import ImageSource, Photo
from geocore.data.video import VideoFrames, VideoInfo
from geocore.locate import LocateResult, locate
from geocore.request import DEFAULT_LEVELS, BoundRequest, LocateRequest
from geocore.uncertainty.calibration import validate_levels

LOCALIZABILITY_LEVEL = 0.9
FRAME_THUMB = 160  # px, the longer side of a kept frame's thumbnail
_SAMPLING = ("scene_cut", "duplicate", "probe_s", "max_side")  # VideoFrames' options


@dataclass(eq=False)
class VideoResult:
    """A located clip. frames: one row per kept frame (`time_s, segment, scene_cut, lat, lon, prob, place,
    country, localizability` = log10 km² of its 90 % region); segments: one joint answer per segment (with
    `start_s`, `end_s` in `segment_times`); clip: the joint of the segments; stats: decoding counts;
    thumbnails: each kept frame at most `FRAME_THUMB` px (for strips: no second decoding of the clip)."""

    name: str
    info: VideoInfo
    frames: pd.DataFrame
    segments: list[JointResult]
    segment_times: list[tuple[float, float]]
    clip: JointResult
    stats: dict
    results: list[LocateResult] = field(repr=False, default_factory=list)
    thumbnails: list = field(repr=False, default_factory=list)  # a small PIL copy of each kept frame, in order

    @property
    def track(self) -> pd.DataFrame:
        """The per-frame top-1 track: time_s, lat, lon, segment."""
        return self.frames[["time_s", "lat", "lon", "segment"]]

    def to_json(self) -> dict:
        return {"video": self.name, "info": vars(self.info), "stats": self.stats,
                "frames": self.frames.replace({np.nan: None}).to_dict(orient="records"),
                "segments": [{"start_s": a, "end_s": b, **s.to_json()}
                             for (a, b), s in zip(self.segment_times, self.segments)],
                "clip": self.clip.to_json()}


def locate_video(model, source: ImageSource, request: LocateRequest | BoundRequest | None = None, *,
                 name: str | None = None, hint_model=None, sampling: dict | None = None,
                 **options) -> VideoResult:
    """Locate a clip (path, bytes or binary file: MP4, MOV, WebM, MKV) as `request` says (its top-k, levels,
    calibration, hint, precision, batch size, `every_s` and `max_frames`; or `LocateRequest.build`'s options, with
    regions at 0.5 and 0.9 by default). `sampling`: VideoFrames' scene_cut, duplicate, probe_s, max_side.
    InputError/ImageError naming the file for unreadable clips."""
    sampling = dict(sampling or {}, **{k: options.pop(k) for k in _SAMPLING if k in options})
    if "levels" in options:  # the older name of `regions`
        options["regions"] = options.pop("levels")
    if request is None:
        request = LocateRequest.build(regions_needed=True, **options)
    elif options:
        raise TypeError(f"locate_video: pass a request or options, not both (got {', '.join(sorted(options))})")
    bound = request if isinstance(request, BoundRequest) else request.bind(model, hint_model)
    req = bound.request
    levels = validate_levels(tuple(req.levels or DEFAULT_LEVELS) + (LOCALIZABILITY_LEVEL,))
    bound = bound.with_levels(levels, full=True)
    frames = VideoFrames(source, name=name, every_s=req.every_s, max_frames=req.max_frames, **(sampling or {}))
    meta: list[tuple[float, bool]] = []
    thumbs: list = []

    def photos():
        for f in frames:
            meta.append((f.time_s, f.scene_cut))
            small = f.image.copy()
            small.thumbnail((FRAME_THUMB, FRAME_THUMB))
            thumbs.append(small)
            yield Photo(f"{frames.name}@{f.time_s:.2f}s", image=f.image)  # decoded once, by the video decoder

    results = locate(model, photos(), bound)
    calibration, top_k, hint_model = req.calibration, req.top_k, bound.hint_model
    times = np.array([t for t, _ in meta])
    segment = np.cumsum([cut for _, cut in meta]) - 1
    per_frame = pd.concat([r.table.iloc[[0]] for r in results], ignore_index=True)
    table = pd.DataFrame({"time_s": times, "segment": segment, "scene_cut": [c for _, c in meta]})
    table = pd.concat([table, per_frame[["lat", "lon", "prob", "place", "country"]]], axis=1)
    table["localizability"] = np.log10([r.region(LOCALIZABILITY_LEVEL).area_km2 for r in results])
    options = dict(levels=levels, calibration=calibration, top_k=top_k, hint_model=hint_model)
    segments = [joint_locate([results[i] for i in np.flatnonzero(segment == s)], model, **options)
                for s in range(segment.max() + 1)]
    bounds = [(float(times[segment == s].min()), float(times[segment == s].max())) for s in range(len(segments))]
    clip = _clip_joint(segments, bounds, model, levels, calibration, top_k)
    return VideoResult(frames.name, frames.info, table, segments, bounds, clip, dict(frames.stats), results, thumbs)


def _clip_joint(segments: list[JointResult], bounds, model, levels, calibration, top_k) -> JointResult:
    """The joint of the segments' answers, each segment counted as one photo (its hint taken out, added once); its
    regions are checked against the calibration's kind as an answer joining all the frames."""
    hint_term = segments[0].hint_logp
    logp = log_probs(torch.cat([s.prediction.probs_full for s in segments]))
    if hint_term is not None:
        logp = (logp - hint_term).log_softmax(-1)
    names = [f"segment {i + 1} ({a:.1f}–{b:.1f} s)" for i, (a, b) in enumerate(bounds)]
    return joint_from_log_probs(logp, names, segments[0].prediction.candidates, model.candidate_cells(),
                                hint_logp=hint_term, hint=segments[0].hint, levels=levels, calibration=calibration,
                                model=model.model_name, top_k=top_k, n_photos=sum(s.n for s in segments))
