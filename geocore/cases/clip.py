"""Locate a video clip: sampled frames → per-frame answers → segments (a cut starts one) → joint answers.

Frames come from `geocore.data.video.VideoFrames` (streamed; near-identical frames dropped before the model
runs) and go through `geocore.locate.locate` as in-memory BMP images (no compression cost; the same path as
photos, so hints, precision and regions behave the same). Each segment's frames are photos of one scene and
get a joint answer (`geocore.cases.joint`); the clip's answer is the joint of the segments' answers, whose
conflict flags say which segments may show another place. Memory: the decoder's frames plus, per kept
frame, its full distribution (max_frames × candidates × 4 bytes: 120 MB for 300 frames on the 100K gallery).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from geocore.cases.joint import JointResult, joint_from_log_probs, joint_locate, log_probs
from geocore.data.images import ImageSource
from geocore.data.video import VideoFrames, VideoInfo
from geocore.locate import LocateResult, locate
from geocore.uncertainty.calibration import Calibration, validate_levels

LOCALIZABILITY_LEVEL = 0.9
FRAME_THUMB = 160  # px, the longer side of a kept frame's thumbnail


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


def _bmp(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="BMP")
    return buf.getvalue()


def locate_video(model, source: ImageSource, *, name: str | None = None, every_s: float = 1.0, max_frames: int = 300,
                 top_k: int = 5, levels: Sequence[float] = (0.5, 0.9), calibration: Calibration | None = None,
                 hint: str | None = None, hint_weight: float | None = None, hint_model=None,
                 precision: str = "fp32", batch_size: int = 8, **sampling) -> VideoResult:
    """Locate a clip (path, bytes or binary file: MP4, MOV, WebM, MKV). `sampling`: VideoFrames' scene_cut,
    duplicate, probe_s, max_side. InputError/ImageError naming the file for unreadable clips."""
    frames = VideoFrames(source, name=name, every_s=every_s, max_frames=max_frames, **sampling)
    levels = validate_levels(tuple(levels) + (LOCALIZABILITY_LEVEL,))
    meta: list[tuple[float, bool]] = []
    thumbs: list = []

    def sources():
        for f in frames:
            meta.append((f.time_s, f.scene_cut))
            small = f.image.copy()
            small.thumbnail((FRAME_THUMB, FRAME_THUMB))
            thumbs.append(small)
            yield f"{frames.name}@{f.time_s:.2f}s", _bmp(f.image)

    results = locate(model, sources(), top_k=top_k, full=True, regions=levels, calibration=calibration, hint=hint,
                     hint_weight=hint_weight, hint_model=hint_model, precision=precision, batch_size=batch_size)
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
    """The joint of the segments' answers, each segment counted as one photo (its hint taken out, added once)."""
    hint_term = segments[0].hint_logp
    logp = log_probs(torch.cat([s.prediction.probs_full for s in segments]))
    if hint_term is not None:
        logp = (logp - hint_term).log_softmax(-1)
    names = [f"segment {i + 1} ({a:.1f}–{b:.1f} s)" for i, (a, b) in enumerate(bounds)]
    return joint_from_log_probs(logp, names, segments[0].prediction.candidates, model.candidate_cells(),
                                hint_logp=hint_term, hint=segments[0].hint, levels=levels, calibration=calibration,
                                model=model.model_name, top_k=top_k)
