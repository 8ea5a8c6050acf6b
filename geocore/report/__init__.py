"""The case report: one self-contained HTML file that records an analysis of one or more photos and clips.

For each photo it holds the photo itself (a thumbnail re-encoded from the pixels, so no EXIF, GPS or camera
serial travels with it), the file's SHA-256, its EXIF time, camera and GPS, the top-k places, a static map
with the probability heat map and the search regions, a zoomed map when the widest region is small, the
Grad-CAM overlay of the top-1, and whether the answer agrees with the EXIF GPS. With a reference set
(`geocore.refs`) each photo also lists its most similar reference photos, marked on its maps. For a case, the
joint answer of photos of one place (`same_place`) and a claimed location checked against each answer (`claim`).
A video clip among the inputs (by suffix: MP4, MOV, WebM, MKV) gets a Video section: the clip's facts, a strip of
its kept frames, each segment's joint answer, and the clip's joint answer with a map of the per-frame track. The
header records what produced the answers (model, geocore version, weights SHA-256 or a loud RANDOM BACKBONE
warning, hint, precision, refinement, reference set and fusion, calibration, time in UTC) and the
responsible-use note.

A report is built from a `geocore.cases.analyse.Case` — the answers already computed (the app passes what its
page shows; `geocore report` analyses once) — in three parts: `contents.py` (the sections, from the case),
`figures.py` (thumbnails and maps) and `html.py` (the page). The file opens offline and never makes a request.
Photos are read in memory; nothing is written to disk except the report asked for (`write_report`, atomically).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from geocore.cases.analyse import Case, analyse_case, is_video
from geocore.data.images import ImageSource, Photo
from geocore.errors import InputError
from geocore.models.base import GalleryModel, GeoLocator
from geocore.report.contents import (CaseReport, JointCase, PhotoCase, VideoCase, contents, file_sha256,
                                     weights_record)
from geocore.report.figures import world_map, zoom_box, zoom_map
from geocore.report.html import CSP, RANDOM_WARNING, RESPONSIBLE_USE, render_html, write_html
from geocore.request import LocateRequest

__all__ = ["CSP", "Case", "CaseReport", "JointCase", "PhotoCase", "RANDOM_WARNING", "RESPONSIBLE_USE", "VideoCase",
           "build_report", "file_sha256", "is_video", "render_report", "report_from_case", "weights_record",
           "world_map", "write_html", "write_report", "zoom_box", "zoom_map"]

def report_from_case(case: Case, *, weights_file: str | Path | None = None, explain: bool = True,
                     command: str | None = None) -> CaseReport:
    """The report of answers already computed (`geocore.cases.analyse.analyse_case`, or what the app's page shows):
    nothing is located again. `weights_file`: the checkpoint the model was loaded from, for its SHA-256. `explain`:
    Grad-CAM of each photo's top-1. `command`: the command line to record."""
    photos, joint, videos = contents(case, explain=explain)
    text = render_html(case, photos, joint, videos, weights=weights_record(case.model, weights_file), command=command)
    return CaseReport(text, photos, joint, videos)


def _request(options: dict) -> LocateRequest:
    """The report's request from `build_report`'s keyword options (regions shown by default)."""
    if "levels" in options:  # the report's older name of `regions`
        options["regions"] = options.pop("levels")
    return LocateRequest.build(regions_needed=True, full=True, **options)


def build_report(model: GeoLocator, photos: Sequence[tuple[str, ImageSource] | Photo] | Case,
                 request: LocateRequest | None = None, *, weights_file: str | Path | None = None,
                 explain: bool = True, command: str | None = None, hint_model: GalleryModel | None = None,
                 **options) -> CaseReport:
    """Analyse `photos` once (video clips among them by suffix) and render the report; or render a `Case`
    already analysed. `request` (or `LocateRequest.build`'s options: hint, hint_weight, calibration, top_k,
    levels/regions, refs, refs_k, refs_weight, same_place, claim, every_s, max_frames, precision, refine)
    says how; the cases and videos of the result tell which inputs failed."""
    if isinstance(photos, Case):
        if request is not None or options:
            raise TypeError("build_report: a Case was analysed with its own request; pass no other options")
        return report_from_case(photos, weights_file=weights_file, explain=explain, command=command)
    if not photos:
        raise InputError("no photos given")
    request = request if request is not None else _request(dict(options))
    case = analyse_case(model, photos, request.with_(full=True), hint_model=hint_model)
    return report_from_case(case, weights_file=weights_file, explain=explain, command=command)


def render_report(model: GeoLocator, photos: Sequence[tuple[str, ImageSource] | Photo] | Case, **kwargs) -> str:
    """The case report of `photos` ((name, path-or-bytes) pairs, `Photo`s, or an analysed `Case`) as one
    self-contained HTML string (see `build_report`). Works from bytes in memory (uploads are never written
    anywhere). A photo that cannot be read gets its own section with the error; a bad option (a level outside
    (0, 1), an empty hint, a calibration for another model or candidate set, an unknown claimed place) fails
    before any photo is read."""
    return build_report(model, photos, **kwargs).html


def write_report(model: GeoLocator, photos: Sequence[tuple[str, ImageSource] | Photo] | Case, output: str | Path,
                 **kwargs) -> Path:
    """`render_report` written to `output` atomically (see `write_html`); returns the path."""
    if Path(output).is_dir():  # before the work, not after
        raise InputError(f"{output} is a folder; expected a file name such as case.html")
    return write_html(render_report(model, photos, **kwargs), output)
