"""Video decoding for cases: frames sampled every N seconds and at scene cuts, streamed, never the whole clip.

PyAV (which bundles FFmpeg) reads MP4, MOV, WebM and MKV from a path, bytes or a binary file. Two regimes:

- dense (sampling step below `SEEK_STEP_S`): every frame is decoded in order (a non-key frame needs the ones
  before it), but only a probe every `probe_s` seconds, and every key frame, is shrunk to a 16×16 thumbnail; a
  large thumbnail difference between consecutive probes is a scene cut, and the frame after it is sampled.
- sparse (long clips: the step grows to duration / max_frames so that the samples span the whole clip): the
  decoder seeks to each sample time and decodes key frames only (`skip_frame = NONKEY`); a cut is a large
  difference between consecutive samples.

Near-identical frames (thumbnail difference below `duplicate`) are dropped before anyone runs a model on them.
Memory stays at the decoder's few frames plus the sampled frames' reduced images, whatever the clip's length.
Every failure (not a video, corrupt, truncated, no video stream, no frame) is one InputError/ImageError naming
the file.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from geocore.data.images import ImageSource
from geocore.errors import ImageError, InputError

VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".webm", ".mkv"}
THUMB = 16  # thumbnail side: fine enough to tell scenes apart, coarse enough that sensor noise averages out
SEEK_STEP_S = 8.0  # from this sampling step on, seeking to key frames beats decoding every frame
SCENE_CUT = 0.12  # mean absolute RGB difference of thumbnails (0..1) that marks a cut
DUPLICATE = 0.015  # below this, a sampled frame repeats the last kept one


@dataclass
class VideoInfo:
    """What the container says: duration (s, None if unknown), frame rate, size, codec."""

    name: str
    duration_s: float | None
    fps: float | None
    width: int
    height: int
    codec: str


@dataclass
class VideoFrame:
    """One sampled frame: its time, RGB image (longer side ≤ max_side), thumbnail and why it was sampled."""

    time_s: float
    image: Image.Image
    thumb: np.ndarray = field(repr=False)  # (THUMB, THUMB, 3) float32 in [0, 1]
    scene_cut: bool  # the first frame after a cut (or the clip's first frame)
    key_frame: bool


def thumb_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two thumbnails (0: identical, 1: black vs white)."""
    return float(np.abs(a - b).mean())


def _av():
    try:
        import av
    except ImportError:  # pragma: no cover - av is a requirement
        raise InputError("video needs PyAV: pip install av") from None
    return av


def _name(source: ImageSource, name: str | None) -> str:
    if name is not None:
        return name
    if isinstance(source, (str, Path)):
        return str(source)
    return getattr(source, "name", None) or "<upload>"


def _open_input(source: ImageSource, name: str):
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise InputError(f"{name}: no such video file")
        if path.stat().st_size == 0:
            raise ImageError(f"{name} is empty (0 bytes)")
        return str(path)
    if isinstance(source, (bytes, bytearray, memoryview)):
        if not len(source):
            raise ImageError(f"{name} is empty (0 bytes)")
        return io.BytesIO(bytes(source))
    if hasattr(source, "read"):
        return source
    raise InputError(f"{name} is a {type(source).__name__} (expected a path, bytes or a binary file)")


def _fail(name: str, err: BaseException) -> ImageError:
    why = " ".join(str(getattr(err, "strerror", None) or err).split())[:160] or type(err).__name__
    return ImageError(f"{name} is not a readable video or is truncated or corrupt ({why}); expected MP4, MOV, WebM "
                      "or MKV")


class VideoFrames:
    """Iterable of `VideoFrame`s sampled from one clip; opening checks the file (errors name it).

    every_s: sampling step (s), raised to duration / max_frames for long clips; max_frames: most frames kept;
    scene_cut / duplicate: thumbnail differences for a cut and for a repeat; probe_s: how often, in dense mode,
    frames are compared for cuts; max_side: longer side of the images handed out. After iterating, `stats` holds
    `decoded` (frames the decoder produced), `kept`, `duplicates` (dropped), `cuts`, `seeks`, `mode`.
    """

    def __init__(self, source: ImageSource, *, name: str | None = None, every_s: float = 1.0, max_frames: int = 300,
                 scene_cut: float = SCENE_CUT, duplicate: float = DUPLICATE, probe_s: float = 0.25,
                 max_side: int = 448) -> None:
        if not (every_s > 0 and math.isfinite(every_s)):
            raise InputError(f"every_s: expected a positive number of seconds, got {every_s}")
        if max_frames < 1:
            raise InputError(f"max_frames: expected at least 1, got {max_frames}")
        self.name = _name(source, name)
        self._source = source
        self.max_frames, self.scene_cut, self.duplicate = int(max_frames), scene_cut, duplicate
        self.probe_s, self.max_side = probe_s, max_side
        av = _av()
        with self._container() as container:
            if not container.streams.video:
                kinds = sorted({s.type for s in container.streams}) or ["no streams"]
                raise InputError(f"{self.name} has no video stream ({', '.join(kinds)} only)")
            stream = container.streams.video[0]
            ctx = stream.codec_context
            duration = (float(stream.duration * stream.time_base) if stream.duration else
                        container.duration / av.time_base if container.duration else None)
            rate = stream.average_rate or stream.guessed_rate
            self.info = VideoInfo(self.name, duration, float(rate) if rate else None, ctx.width, ctx.height, ctx.name)
        self.every_s = max(float(every_s), duration / self.max_frames) if duration else float(every_s)
        self.stats = {"decoded": 0, "kept": 0, "duplicates": 0, "cuts": 0, "seeks": 0,
                      "mode": "sparse" if self.every_s >= SEEK_STEP_S else "dense"}
        self._last_t = -math.inf  # the last decoded frame's time: a clip that stops early is truncated

    def _container(self):
        av = _av()
        try:
            return av.open(_open_input(self._source, self.name), mode="r", metadata_errors="ignore")
        except (av.FFmpegError, OSError, UnicodeDecodeError, ValueError) as err:
            raise _fail(self.name, err) from None

    def _thumb(self, frame) -> np.ndarray:
        small = frame.reformat(width=THUMB, height=THUMB, format="rgb24", interpolation="AREA")
        return small.to_ndarray().astype(np.float32) / 255.0

    def _image(self, frame) -> Image.Image:
        w, h = frame.width, frame.height
        scale = min(1.0, self.max_side / max(w, h))
        return frame.to_image(width=max(1, round(w * scale)), height=max(1, round(h * scale)),
                              interpolation="AREA")

    def __iter__(self) -> Iterator[VideoFrame]:
        av = _av()
        kept_thumb = None
        try:
            with self._container() as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                frames = self._sparse(container, stream) if self.stats["mode"] == "sparse" else self._dense(container, stream)
                for frame, thumb, cut in frames:
                    if not cut and kept_thumb is not None and thumb_distance(thumb, kept_thumb) < self.duplicate:
                        self.stats["duplicates"] += 1
                        continue
                    kept_thumb = thumb
                    self.stats["kept"] += 1
                    self.stats["cuts"] += int(cut and self.stats["kept"] > 1)
                    yield VideoFrame(float(frame.time or 0.0), self._image(frame), thumb, cut, bool(frame.key_frame))
                    if self.stats["kept"] >= self.max_frames:
                        return
        except (av.FFmpegError, OSError, MemoryError) as err:
            raise _fail(self.name, err) from None
        if self.stats["kept"] == 0:
            raise InputError(f"{self.name} has no decodable video frame (zero frames or all corrupt)")
        end = self.info.duration_s
        frame_s = 1.0 / self.info.fps if self.info.fps else 0.1  # a few frames' slack: variable frame rates
        slack = max(3 * frame_s, 0.02 * (end or 0)) + (self.every_s if self.stats["mode"] == "sparse" else 0.0)
        if end and self._last_t < end - slack:
            raise ImageError(f"{self.name} is truncated: its frames stop at {self._last_t:.1f} s of the "
                             f"{end:.1f} s it declares")

    def _dense(self, container, stream):
        """Every frame decoded; probes every probe_s and at key frames; yields (frame, thumb, cut) samples."""
        next_sample, next_probe, last = 0.0, 0.0, None
        for frame in self._counted(container.decode(stream)):
            t = float(frame.time or 0.0)
            due = t >= next_sample - 1e-6
            if not (due or frame.key_frame or t >= next_probe - 1e-6):
                continue
            next_probe = t + self.probe_s
            thumb = self._thumb(frame)
            cut = last is None or thumb_distance(thumb, last) > self.scene_cut
            last = thumb
            if due or cut:
                next_sample = t + self.every_s
                yield frame, thumb, cut

    def _sparse(self, container, stream):
        """Seek to each sample time; key frames only; a cut is a large change from the previous sample."""
        stream.codec_context.skip_frame = "NONKEY"
        target, last, last_t = 0.0, None, -math.inf
        end = self.info.duration_s or math.inf
        while target < end:
            try:
                container.seek(int(target / stream.time_base), stream=stream, backward=True)
                self.stats["seeks"] += 1
            except av_errors():
                pass  # not seekable: read on from here
            frame = next((f for f in self._counted(container.decode(stream))
                          if float(f.time or 0.0) >= target - self.every_s / 2), None)
            if frame is None:
                return
            t = float(frame.time or 0.0)
            if t > last_t:
                thumb = self._thumb(frame)
                yield frame, thumb, last is None or thumb_distance(thumb, last) > self.scene_cut
                last, last_t = thumb, t
            target = max(target + self.every_s, t + self.every_s / 2)

    def _counted(self, frames):
        for f in frames:
            self.stats["decoded"] += 1
            self._last_t = max(self._last_t, float(f.time or 0.0))
            yield f


def av_errors() -> tuple[type[BaseException], ...]:
    """What a failed seek raises."""
    return (_av().FFmpegError, OSError, ValueError)


def encode_frames(frames, path: str | Path | None = None, *, fps: int = 10, codec: str = "libx264",
                  container: str = "mp4", gop: int | None = None, audio_s: float = 0.0,
                  options: dict | None = None) -> bytes | Path:
    """Encode (H, W, 3) uint8 frames (any iterable: streamed) into a clip; bytes unless `path` is given.
    For demos, tests and benchmarks; `audio_s` > 0 adds a silent AAC/Opus track, and no frames gives an
    audio-only file; `options`: the encoder's FFmpeg options."""
    av = _av()
    sink = io.BytesIO() if path is None else str(path)
    with av.open(sink, mode="w", format=container) as out:
        stream = None
        for arr in frames:
            if stream is None:
                stream = out.add_stream(codec, rate=fps)
                stream.height, stream.width = arr.shape[:2]
                stream.pix_fmt = "yuv420p"
                stream.options = dict(options or {})  # e.g. {"preset": "ultrafast"} for libx264
                if gop:
                    stream.codec_context.gop_size = gop
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")):
                out.mux(packet)
        if stream is not None:
            out.mux(stream.encode())
        if audio_s > 0 or stream is None:
            _silence(av, out, "libopus" if container in ("webm", "mkv", "matroska") else "aac", max(audio_s, 1.0))
    return sink.getvalue() if path is None else Path(path)


def _silence(av, out, codec: str, seconds: float) -> None:
    audio = out.add_stream(codec, rate=48000)
    samples = 960
    for i in range(int(seconds * 48000 / samples)):
        frame = av.AudioFrame.from_ndarray(np.zeros((1, samples), np.float32), format="flt", layout="mono")
        frame.sample_rate, frame.pts = 48000, i * samples
        for packet in audio.encode(frame):
            out.mux(packet)
    out.mux(audio.encode())
