"""The case report: one self-contained HTML file that records an analysis of one or more photos.

For each photo it holds the photo itself (a thumbnail re-encoded from the pixels, so no EXIF, GPS or camera
serial travels with it), the file's SHA-256, its EXIF time, camera and GPS, the top-k places, a static map
with the probability heat map and the search regions, a zoomed map when the widest region is small, the
Grad-CAM overlay of the top-1, and whether the answer agrees with the EXIF GPS. With a reference set
(`geocore.refs`) each photo also lists its most similar reference photos (thumbnails re-drawn from pixels when the
set stores them), marked on its maps. For a case, the joint answer of photos of one place (`same_place`) and a
claimed location checked against each answer (`claim`). A video clip among the inputs (by suffix, MP4, MOV, WebM,
MKV) gets a Video section: the clip's facts, a strip of its kept frames (thumbnails re-drawn from pixels, each with
its time, top-1 and localizability), each segment's joint answer, and the clip's joint answer with a map of the
per-frame track (the claim is checked against it too). The header records what produced the answers (model,
geocore version, weights SHA-256 or a loud RANDOM BACKBONE warning, hint, reference set and fusion parameters,
calibration, time of the analysis in UTC) and the responsible-use note.

The file opens offline and never makes a request: styles are inline, images are `data:` URIs, there are no
scripts, fonts or tiles, and a Content-Security-Policy forbids any other source. Photos are read in memory;
nothing is written to disk except the report asked for (`write_report`, atomically).
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from geocore.cases.claims import ClaimCheck
from geocore.cases.joint import JointResult
from geocore.data.images import ImageSource, load_image, read_exif_info
from geocore.data.safe_io import atomic_path, file_sha256 as _hash_file
from geocore.data.text import readable
from geocore.errors import GeocoreError, ImageError, InputError
from geocore.locate import LocateResult, locate
from geocore.models.base import GalleryModel, GeoLocator
from geocore.refs import FusionParams, ReferenceSet
from geocore.uncertainty.calibration import Calibration, validate_levels

RANDOM_WARNING = "RANDOM BACKBONE — predictions mean nothing"
RESPONSIBLE_USE = (
    "Locating someone else's private photos can endanger people (stalking, doxxing). The authors of "
    "GeoEstimation withdrew their public demo for this reason. Use geocore on your own photos or on public "
    "benchmarks. This report contains the photos it analyses: share it only with people entitled to see them."
)
THUMB_SIDE = 480  # px, longer side of the photo and Grad-CAM thumbnails
REF_THUMB_SIDE = 160  # px, longer side of a reference photo's thumbnail
FRAME_THUMB_SIDE = 160  # px, longer side of a video frame's thumbnail in the strip
ZOOM_MAX_DEG = (60.0, 40.0)  # a zoomed map is drawn when the widest region fits in this many degrees (lon, lat)
MAX_COUNTRIES = 15  # countries listed per region; the rest are counted
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
_REGION_STYLES = [("#1f4e9c", "-"), ("#00a0a0", "--"), ("#7b3294", ":"), ("#e66101", "-.")]
_HASH_CACHE: dict[tuple[str, int, int], str] = {}


@dataclass
class PhotoCase:
    """Everything the report shows about one photo (thumbnails and maps as data: URIs)."""

    index: int
    name: str
    sha256: str | None = None
    n_bytes: int | None = None
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
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


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
class VideoCase:
    """Everything the report shows about one video clip: the located clip, its frames' thumbnails (data: URIs,
    one per kept frame), each segment's joint answer and the clip's."""

    index: int
    name: str
    sha256: str | None = None
    n_bytes: int | None = None
    result: Any = None  # geocore.cases.clip.VideoResult
    thumbs: list = field(default_factory=list)
    segments: list = field(default_factory=list)  # JointCase per segment (no maps)
    clip: JointCase | None = None  # the joint of the segments, with the track maps and the claim
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


# ---------------------------------------------------------------- inputs


def is_video(name: str, source: ImageSource) -> bool:
    """Whether an input is a video clip, by the suffix of its path (or of its name for bytes and uploads), as
    `geocore.cli.cases.split_videos` tells them apart."""
    from geocore.data.video import VIDEO_SUFFIXES

    where = source if isinstance(source, (str, Path)) else name
    return Path(str(where)).suffix.lower() in VIDEO_SUFFIXES


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


def _read(source: ImageSource) -> tuple[bytes | None, ImageSource]:
    """The photo's bytes when they can be read (for the SHA-256 and everything after), else the source as given
    (the loader then names what is wrong with it)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        return data, data
    if isinstance(source, (str, Path)):
        try:
            path = Path(source)
            data = path.read_bytes() if path.is_file() else None
        except OSError:
            data = None
        return data, (data if data else source)
    if hasattr(source, "read"):  # an upload or an open binary file: read once, leave it where it was
        pos = source.tell() if getattr(source, "seekable", lambda: False)() else None
        data = source.read()
        if pos is not None:
            source.seek(pos)
        if isinstance(data, (bytes, bytearray)) and data:
            return bytes(data), bytes(data)
        return None, source
    return None, source


def _check_options(levels, calibration, top_k: int) -> tuple[tuple[float, ...], Calibration | None]:
    """The cheap checks, before any photo is read (locate() checks the hint and the calibration's fit)."""
    levels = validate_levels(levels, "regions")
    if int(top_k) < 1:
        raise InputError(f"top_k: expected at least 1, got {top_k}")
    if isinstance(calibration, (str, Path)):
        calibration = Calibration.load(calibration)
    return levels, calibration


def _check_refs(refs: ReferenceSet | str | Path | None, refs_k: int | None,
                refs_weight: float | None) -> dict:
    """`locate`'s reference-photo arguments (none without a set; a path is loaded; locate() checks the model)."""
    if refs is None:
        if refs_k is not None or refs_weight is not None:
            raise InputError("refs_k and refs_weight need a reference set (refs)")
        return {}
    if isinstance(refs, (str, Path)):
        from geocore.refs import load_reference_set

        refs = load_reference_set(refs)
    return {"refs": refs, "refs_k": FusionParams.k if refs_k is None else refs_k, "refs_weight": refs_weight}


def _resolve_claim(claim: str | tuple | None) -> tuple[float, float, str] | None:
    """A claim as (lat, lon, label): text is resolved offline ("Kharkiv, Ukraine", "49.99,36.23"); a (lat, lon)
    or (lat, lon, label) tuple is taken as resolved (InputError for an unknown name or bad coordinates)."""
    from geocore.cases.claims import resolve_claim

    if claim is None or isinstance(claim, str):
        return None if claim is None else resolve_claim(claim)
    lat, lon, label = resolve_claim(f"{float(claim[0])},{float(claim[1])}")  # the range checks
    return lat, lon, str(claim[2]) if len(claim) > 2 and claim[2] else label


def _check_claim(answer, claimed: tuple[float, float, str], model: GeoLocator,
                 calibration: Calibration | None) -> ClaimCheck:
    """The claimed location against one answer (a photo's or the joint one), labelled as resolved."""
    from geocore.cases.claims import check_claim

    check = check_claim(answer, claimed[:2], model.candidate_cells(), calibration, model=model.model_name)
    check.label = claimed[2]
    return check


# ---------------------------------------------------------------- pictures


def _jpeg_uri(image, side: int = THUMB_SIDE) -> str:
    """A JPEG data: URI of the image's pixels only (no EXIF, ICC or XMP is carried over)."""
    from PIL import Image

    rgb = image.convert("RGB")
    rgb = Image.frombytes("RGB", rgb.size, rgb.tobytes())  # a fresh image: the pixels and nothing else
    rgb.thumbnail((side, side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    rgb.save(buf, format="JPEG", quality=85, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _png_uri(fig) -> str:
    """A PNG data: URI of a matplotlib figure, palette-compressed (a map is ~80 KB instead of ~260 KB)."""
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})  # no tool URL in the file
    img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(size: tuple[float, float]):
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    return Figure(figsize=size, dpi=100, layout="constrained")


def _draw_regions(ax, regions, *, fill: bool = False) -> list:
    """Each region's outline (one collection per region: thousands of Voronoi pieces draw fast); legend handles."""
    import shapely
    from matplotlib.collections import LineCollection, PolyCollection
    from matplotlib.lines import Line2D

    handles = []
    for region, (color, style) in zip(regions, _REGION_STYLES):
        polys = [g for g in shapely.get_parts(region.geometry) if g.geom_type == "Polygon" and not g.is_empty]
        rings = [np.asarray(r.coords)[:, :2] for g in polys for r in (g.exterior, *g.interiors)]
        if fill and polys:
            ax.add_collection(PolyCollection([np.asarray(g.exterior.coords)[:, :2] for g in polys], facecolors=color,
                                             alpha=0.12, linewidths=0, zorder=2.5))
        if rings:
            ax.add_collection(LineCollection(rings, colors=color, linestyles=style, linewidths=1.2, zorder=4.5))
        handles.append(Line2D([], [], color=color, linestyle=style, linewidth=1.4,
                              label=f"{_pct(region.level)} region, {_km2(region.area_km2)}"))
    return handles


def _draw_points(ax, answer, claim: ClaimCheck | None = None) -> list:
    """The answer's numbered top-k, its similar reference photos (small triangles), the EXIF GPS (green star) and
    the claimed location (red cross); legend handles of what was drawn besides the top-k."""
    handles = []
    refs = getattr(answer, "references", None)
    if refs is not None and len(refs):
        handles += ax.plot(refs["lon"], refs["lat"], "^", ms=5, color="#e66101", mec="black", mew=0.5, ls="none",
                           zorder=5.5, label="similar reference photos")
    for row in reversed(list(answer.table.itertuples())):  # the top-1 drawn last, on top
        ax.plot(row.lon, row.lat, "o", ms=11, mfc="white", mec="#1f4e9c", mew=1.5, zorder=6)
        ax.annotate(str(row.rank), (row.lon, row.lat), ha="center", va="center", fontsize=7, color="#1f4e9c",
                    zorder=7)
    exif_gps = getattr(answer, "exif_gps", None)
    if exif_gps is not None:
        handles += ax.plot(exif_gps[1], exif_gps[0], "*", ms=15, color="#2ca02c", mec="black", zorder=8,
                           label="EXIF GPS")
    if claim is not None:
        handles += ax.plot(claim.lon, claim.lat, "X", ms=11, color="#b00020", mec="black", zorder=8,
                           label="claimed location")
    return handles


def _draw_track(ax, track) -> list:
    """A clip's per-frame top-1s as a line in time order (broken where it would cross the whole map at the
    antimeridian), its frames as dots, the first frame ringed; legend handles."""
    if track is None or not len(track):
        return []
    lat = np.asarray(track["lat"], dtype=float)
    lon = np.asarray(track["lon"], dtype=float)
    jump = np.flatnonzero(np.abs(np.diff(lon)) > 180.0) + 1
    line_lat, line_lon = np.insert(lat, jump, np.nan), np.insert(lon, jump, np.nan)
    handles = ax.plot(line_lon, line_lat, "-", color="#333333", linewidth=1.0, alpha=0.8, zorder=5.2,
                      label="per-frame top-1 track")
    ax.plot(lon, lat, "o", ms=3.5, color="#333333", ls="none", zorder=5.3)
    handles += ax.plot(lon[:1], lat[:1], "o", ms=8, mfc="none", mec="#333333", mew=1.5, ls="none", zorder=5.4,
                       label="first frame")
    return handles


def world_map(res: LocateResult | JointResult, regions, claim: ClaimCheck | None = None, track=None) -> str:
    """The world map of a photo's (or the joint) answer: probability heat map, numbered top-k, region outlines,
    similar reference photos, EXIF GPS (green star), the claimed location (red cross), a clip's per-frame track."""
    from geocore.viz import WORLD_FIGSIZE, plot_probability_map

    fig = _figure(WORLD_FIGSIZE)
    ax = fig.add_subplot()
    pred = res.prediction
    plot_probability_map(pred.candidates, pred.probs_full[0], ax=ax, top_k=0)
    handles = _draw_regions(ax, regions) + _draw_track(ax, track) + _draw_points(ax, res, claim)
    if handles:
        ax.legend(handles=handles, loc="lower left", fontsize=7, framealpha=0.85)
    return _png_uri(fig)


def zoom_box(region) -> tuple[float, float, float, float] | None:
    """(west, south, east, north) around a region that fits in `ZOOM_MAX_DEG`, else None (the world map will do)."""
    west, south, east, north = region.geometry.bounds
    if east - west > ZOOM_MAX_DEG[0] or north - south > ZOOM_MAX_DEG[1]:
        return None
    pad = max(0.25 * max(east - west, north - south), 0.5)
    return max(west - pad, -180.0), max(south - pad, -90.0), min(east + pad, 180.0), min(north + pad, 90.0)


def zoom_map(res: LocateResult | JointResult, regions, box: tuple[float, float, float, float],
             claim: ClaimCheck | None = None, track=None) -> str:
    """A map of `box`: countries, candidates coloured by probability, filled regions, top-k, similar reference
    photos, EXIF GPS, the claimed location and a clip's per-frame track."""
    from matplotlib.colors import LogNorm

    from geocore.viz import world_axes

    west, south, east, north = box
    fig = _figure((6.4, 4.8))
    ax = world_axes(fig.add_subplot(), land=True)
    pts = res.prediction.candidates.detach().cpu().double().numpy()
    p = res.prediction.probs_full[0].detach().cpu().double().numpy()
    view = (pts[:, 1] >= west) & (pts[:, 1] <= east) & (pts[:, 0] >= south) & (pts[:, 0] <= north)
    if view.any():
        vmax = float(p[view].max())
        norm = LogNorm(vmin=vmax / 1e3, vmax=vmax) if vmax > 0 else None
        spacing = np.sqrt((east - west) * (north - south) / view.sum())
        size = float(np.clip(1.2 * spacing * 6.4 * 72 * 0.8 / (east - west), 2.0, 30.0) ** 2)
        order = np.flatnonzero(view)[np.argsort(p[view])]
        sc = ax.scatter(pts[order, 1], pts[order, 0], c=np.clip(p[order], vmax / 1e3, None), s=size,
                        cmap="magma_r", norm=norm, linewidths=0, zorder=2)
        fig.colorbar(sc, ax=ax, shrink=0.7, label="probability (log)")
    handles = _draw_regions(ax, regions, fill=True) + _draw_track(ax, track) + _draw_points(ax, res, claim)
    ax.set_xlim(west, east)
    ax.set_ylim(south, north)
    ax.set_aspect(1.0 / max(np.cos(np.radians((south + north) / 2)), 0.2))
    ax.tick_params(labelsize=7)
    ax.set_xticks(np.linspace(west, east, 5))
    ax.set_yticks(np.linspace(south, north, 5))
    ax.set_xticklabels([f"{abs(v):.1f}°{'E' if v >= 0 else 'W'}" for v in ax.get_xticks()])
    ax.set_yticklabels([f"{abs(v):.1f}°{'N' if v >= 0 else 'S'}" for v in ax.get_yticks()])
    ax.legend(handles=handles, loc="lower left", fontsize=7, framealpha=0.85)
    return _png_uri(fig)


def _gradcam(model: GeoLocator, image, res: LocateResult) -> tuple[str | None, str | None]:
    """The Grad-CAM overlay explaining the reported top-1 (after any hint), and what it explains."""
    from geocore.explain.gradcam import gradcam

    if isinstance(model, GalleryModel):  # the top-1 point itself
        target = (float(res.table["lat"].iloc[0]), float(res.table["lon"].iloc[0]))
    else:  # the top-1 fine cell
        idx = res.prediction.indices
        target = int(idx.reshape(-1)[0]) if idx is not None else None
    try:
        cam = gradcam(model, image, target)
    except (GeocoreError, RuntimeError, ValueError) as err:
        return None, f"Grad-CAM could not be computed: {err}"
    return _jpeg_uri(cam.overlay), cam.target_desc


# ---------------------------------------------------------------- analysis


def _region_note(regions: list) -> str | None:
    """Why the regions' polygons (maps, separate areas, countries) are missing, or None when they are computed."""
    try:  # the polygons, once (cached on the regions), before anything draws or lists them
        for region in regions:
            region.n_areas, region.countries  # noqa: B018
    except Exception as err:  # noqa: BLE001 - one answer's polygons must not cost the whole report
        return f"the search regions' polygons could not be computed ({type(err).__name__}: {err})"
    return None


def _maps(answer: LocateResult | JointResult, regions: list, claim: ClaimCheck | None = None,
          track=None) -> tuple[str, str | None, str | None]:
    """(world map, zoomed map or None, why the regions are not drawn or None) of a photo's or the joint answer;
    `track`: a clip's per-frame top-1s, drawn as a line."""
    note = _region_note(regions)
    drawn = [] if note else regions
    box = zoom_box(drawn[-1]) if drawn else None
    return (world_map(answer, drawn, claim, track),
            (zoom_map(answer, drawn, box, claim, track) if box else None), note)


def _reference_thumbs(table) -> list[str | None]:
    """Each neighbour's stored thumbnail re-drawn from its pixels (None when not stored or unreadable)."""
    from PIL import Image

    if table is None or "thumbnail" not in table:
        return [None] * (0 if table is None else len(table))
    out: list[str | None] = []
    for data in table["thumbnail"]:
        try:
            out.append(_jpeg_uri(Image.open(io.BytesIO(data)), REF_THUMB_SIDE) if data else None)
        except Exception:  # noqa: BLE001 - a damaged thumbnail costs only its picture
            out.append(None)
    return out


def analyse(model: GeoLocator, photos: Sequence[tuple[str, ImageSource]], *, levels=(0.5, 0.9),
            calibration: Calibration | None = None, hint: str | None = None, hint_weight: float | None = None,
            top_k: int = 5, explain: bool = True, hint_model: GalleryModel | None = None,
            refs: ReferenceSet | str | Path | None = None, refs_k: int | None = None,
            refs_weight: float | None = None, claim: str | tuple | None = None) -> list[PhotoCase]:
    """Locate each photo and gather what its section shows; a photo that cannot be read gets `error`.

    refs: a reference set built with `model` (or its folder): each photo's answer is fused with its nearest
    references, which its section lists. claim: checked against each photo's answer (see `_resolve_claim`)."""
    ref_options = _check_refs(refs, refs_k, refs_weight)
    claimed = _resolve_claim(claim)
    cases, items = [], []
    for i, (name, source) in enumerate(photos, start=1):
        data, src = _read(source)
        case = PhotoCase(index=i, name=str(name))
        if data is not None:
            case.sha256, case.n_bytes = hashlib.sha256(data).hexdigest(), len(data)
        cases.append(case)
        items.append((case.name, src))
    results = locate(model, items, top_k=top_k, full=True, regions=levels, calibration=calibration, hint=hint,
                     hint_weight=hint_weight, hint_model=hint_model, **ref_options)
    for case, res, (_, src) in zip(cases, results, items):
        case.result = res
        if not res.ok:
            case.error = res.error
            continue
        try:
            image = load_image(src, name=case.name)
            case.exif = read_exif_info(src, name=case.name)
        except ImageError as err:  # locate() read it already; kept for safety
            case.error = str(err)
            continue
        case.size = image.size
        case.thumbnail = _jpeg_uri(image)
        case.regions = sorted(res.regions, key=lambda r: r.level)
        if res.exif_gps is not None:
            case.inside = {r.level: res.exif_in_region(r.level) for r in case.regions}
        case.ref_thumbs = _reference_thumbs(res.references)
        if claimed is not None:
            case.claim = _check_claim(res, claimed, model, calibration)
        case.world_map, case.zoom_map, case.region_note = _maps(res, case.regions, case.claim)
        if explain:
            case.gradcam, case.gradcam_note = _gradcam(model, image, res)
    return cases


def analyse_joint(model: GeoLocator, cases: list[PhotoCase], *, levels, calibration: Calibration | None,
                  top_k: int, hint: str | None = None, hint_model: GalleryModel | None = None,
                  claim: str | tuple | None = None) -> JointCase:
    """The joint answer of the analysed photos of one place (`geocore.cases.joint`), its maps, and the claim
    checked against it; `error` when no photo could be read."""
    from geocore.cases.joint import joint_locate
    from geocore.hints import hint_model_for

    claimed = _resolve_claim(claim)
    results = [c.result for c in cases if c.result is not None and c.ok]
    if not results:
        return JointCase(error="no photo could be read: there is no joint answer")
    scorer = hint_model_for(model, hint_model) if hint is not None else None
    joint = joint_locate(results, model, levels=levels, calibration=calibration, top_k=top_k, hint_model=scorer)
    return _joint_case(joint, model, calibration, claimed)


def _joint_case(joint: JointResult, model: GeoLocator, calibration: Calibration | None,
                claimed: tuple[float, float, str] | None = None, *, maps: bool = True, track=None,
                levels=None) -> JointCase:
    """A joint answer as the report shows it: its regions (at `levels` when given: a clip's answers also hold
    the localizability level), the claim checked against it, its maps (with a clip's track) when `maps`."""
    regions = sorted(joint.regions, key=lambda r: r.level)
    if levels is not None:
        regions = [r for r in regions if any(abs(r.level - lv) < 1e-9 for lv in levels)]
    out = JointCase(result=joint, regions=regions, track=track)
    if claimed is not None:
        out.claim = _check_claim(joint, claimed, model, calibration)
    if maps:
        out.world_map, out.zoom_map, out.region_note = _maps(joint, out.regions, out.claim, track)
    else:
        out.region_note = _region_note(out.regions)
    return out


def analyse_videos(model: GeoLocator, clips: Sequence[tuple[int, str, ImageSource]], *, levels=(0.5, 0.9),
                   calibration: Calibration | None = None, hint: str | None = None,
                   hint_weight: float | None = None, top_k: int = 5, hint_model: GalleryModel | None = None,
                   every_s: float = 1.0, max_frames: int = 300,
                   claim: str | tuple | None = None) -> list[VideoCase]:
    """Locate each clip ((index, name, path-or-bytes); `geocore.cases.clip.locate_video`) and gather what its
    section shows; a clip that cannot be read gets `error` and costs nothing else. claim: checked against each
    clip's joint answer."""
    from geocore.cases.clip import locate_video
    from geocore.hints import hint_model_for

    claimed = _resolve_claim(claim)
    scorer = hint_model_for(model, hint_model) if hint is not None else hint_model
    out = []
    for index, name, source in clips:
        case = VideoCase(index=index, name=str(name))
        out.append(case)
        src = source
        if isinstance(source, (str, Path)):  # hashed in chunks: a clip is never read whole into memory
            try:
                case.sha256, case.n_bytes = file_sha256(source), Path(source).stat().st_size
            except OSError:
                pass
        else:
            data, src = _read(source)
            if data is not None:
                case.sha256, case.n_bytes = hashlib.sha256(data).hexdigest(), len(data)
        try:
            video = locate_video(model, src, name=case.name, every_s=every_s, max_frames=max_frames,
                                 levels=levels, calibration=calibration, top_k=top_k, hint=hint,
                                 hint_weight=hint_weight, hint_model=scorer)
        except (GeocoreError, OSError, ValueError) as err:
            case.error = str(err)
            continue
        case.result = video
        case.thumbs = [_jpeg_uri(t, FRAME_THUMB_SIDE) for t in video.thumbnails]
        case.segments = [_joint_case(seg, model, calibration, maps=False, levels=levels) for seg in video.segments]
        case.clip = _joint_case(video.clip, model, calibration, claimed, track=video.track, levels=levels)
    return out


# ---------------------------------------------------------------- HTML


def _e(value: Any) -> str:
    """Text for the HTML: controls, bidi overrides and non-UTF-8 bytes shown as escapes, then HTML-escaped."""
    return html.escape(readable(value), quote=True)


def _pct(level: float) -> str:
    return f"{100 * level:g} %"


def _km2(area: float) -> str:
    return f"{area:,.0f} km²" if area >= 10 else f"{area:,.2f} km²"


def _km(dist: float | None) -> str:
    return "—" if dist is None else f"{dist:,.1f} km"  # as `geocore locate` prints it


def _place(place: Any, admin1: Any) -> str:
    parts = [str(x) for x in (place, admin1) if isinstance(x, str) and x]
    return ", ".join(parts) if parts else "(sea)"


def _countries(region) -> str:
    names = [n or iso for iso, n in zip(region.countries, region.country_names)]
    if not names:
        return "none (sea)"
    more = len(names) - MAX_COUNTRIES
    return ", ".join(names[:MAX_COUNTRIES]) + (f" and {more} more" if more > 0 else "")


def _rows(pairs: Sequence[tuple[str, str]]) -> str:
    """Key/value rows; values are HTML already."""
    return "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in pairs)


def _exif_rows(case: PhotoCase) -> list[tuple[str, str]]:
    ex, res = case.exif, case.result
    when, offset = ex.get("datetime_original"), ex.get("offset_time_original")
    if when:
        when_text = _e(when + (f" (UTC{offset})" if offset else " (time zone not recorded)"))
    else:
        when_text = "none" + (f" (file time {_e(ex['datetime'])})" if ex.get("datetime") else "")
    camera = " ".join(x for x in (ex.get("make"), ex.get("model")) if x)
    rows = [("EXIF time (DateTimeOriginal)", when_text), ("EXIF camera", _e(camera) if camera else "none")]
    if res.exif_gps is None:
        rows.append(("EXIF GPS", "none: agreement cannot be checked"))
        return rows
    lat, lon = res.exif_gps
    rows.append(("EXIF GPS", f"{lat:.5f}, {lon:.5f}"))
    rows.append(("top-1 distance from EXIF GPS", f"<strong>{_km(res.exif_error_km)}</strong>"))
    for region in case.regions:
        rows.append((f"EXIF GPS inside the {_pct(region.level)} region", _yes_no(case.inside.get(region.level))))
    return rows


def _photo_section(case: PhotoCase, top_k_levels: str) -> str:
    head = f'<section class="photo" id="photo-{case.index}"><h2>{case.index}. {_e(case.name)}</h2>'
    file_rows = [("file", _e(case.name)),
                 ("SHA-256 of the file", f"<code>{_e(case.sha256)}</code>" if case.sha256 else "unavailable"),
                 ("size", f"{case.n_bytes:,} bytes" if case.n_bytes is not None else "unavailable")]
    if not case.ok:
        return (head + f'<p class="error">Could not be analysed: {_e(case.error)}</p>'
                f"<table class=\"kv\">{_rows(file_rows)}</table></section>")
    res = case.result
    file_rows.append(("pixels", f"{case.size[0]} × {case.size[1]} (after EXIF orientation)"))
    pics = f'<figure><img src="{case.thumbnail}" alt="photo {_e(case.name)}"><figcaption>the photo (pixels only, ' \
           "metadata removed)</figcaption></figure>"
    if case.gradcam:
        pics += (f'<figure><img src="{case.gradcam}" alt="Grad-CAM of {_e(case.name)}"><figcaption>Grad-CAM: '
                 f"{_e(case.gradcam_note)}</figcaption></figure>")
    elif case.gradcam_note:
        pics += f'<p class="note">{_e(case.gradcam_note)}</p>'
    return (head + f'<div class="pics">{pics}</div>'
            f'<table class="kv">{_rows(file_rows + _exif_rows(case))}</table>'
            + _answer_tables(res.table, case.regions, case.region_note)
            + _references_html(res.references, case.ref_thumbs)
            + (_claim_html(case.claim) if case.claim else "")
            + _maps_html(case, case.name, top_k_levels, len(res.table), res.exif_gps is not None)
            + "</section>")


def _answer_tables(table, regions: list, region_note: str | None) -> str:
    """An answer's top-k places and its search regions (areas, separate areas, countries touched)."""
    top = "".join(
        f"<tr><td>{r.rank}</td><td>{_e(_place(r.place, r.admin1))}</td><td>{_e(r.country or '(sea)')}</td>"
        f"<td>{_e(r.iso_a3 or '')}</td><td>{r.lat:.4f}</td><td>{r.lon:.4f}</td><td>{r.prob:.4f}</td></tr>"
        for r in table.itertuples())
    rows = "".join(
        f"<tr><td>{_pct(g.level)}</td><td>{g.mass:.4f}{' (calibrated)' if g.calibrated else ''}</td>"
        f"<td>{g.held_mass:.4f}</td><td>{_km2(g.area_km2)}</td>"
        + ("<td>—</td><td>—</td>" if region_note else f"<td>{g.n_areas}</td><td>{_e(_countries(g))}</td>")
        + "</tr>" for g in regions)
    if region_note:
        rows += f'<tr><td colspan="6" class="error">{_e(region_note)}</td></tr>'
    return (f"<h3>Top-{len(table)} places</h3><table class=\"grid\"><tr><th>#</th><th>place</th><th>country</th>"
            f"<th>ISO</th><th>lat</th><th>lon</th><th>prob</th></tr>{top}</table>"
            f"<h3>Search regions</h3><table class=\"grid\"><tr><th>level</th><th>mass used</th><th>mass held</th>"
            f"<th>area</th><th>separate areas</th><th>countries touched</th></tr>{rows}</table>")


def _maps_html(case: PhotoCase | JointCase, name: str, top_k_levels: str, k: int, exif: bool) -> str:
    """The world map and the zoomed one (when drawn) of a photo's or the joint answer, with what they show."""
    refs = getattr(case.result, "references", None)
    shown = ([] if case.region_note else [f"search regions {top_k_levels} outlined"]) \
        + (["similar reference photos as orange triangles"] if refs is not None and len(refs) else []) \
        + (["EXIF GPS as a green star"] if exif else []) \
        + (["the claimed location as a red cross"] if case.claim else []) \
        + (["the per-frame top-1s as a grey line in time order (first frame ringed)"]
           if getattr(case, "track", None) is not None else [])
    maps = f'<figure class="map"><img src="{case.world_map}" alt="world map for {_e(name)}"><figcaption>' \
           f"probability over the candidates (log colour), top-{k} numbered" \
           + "".join(f", {x}" for x in shown) + "</figcaption></figure>"
    if case.zoom_map:
        maps += (f'<figure class="map"><img src="{case.zoom_map}" alt="zoomed map for {_e(name)}">'
                 f"<figcaption>zoom on the {_pct(case.regions[-1].level)} region</figcaption></figure>")
    return f'<div class="maps">{maps}</div>'


def _references_html(table, thumbs: list[str | None]) -> str:
    """The similar reference photos: thumbnail (when stored) or ID, place, similarity, share of the evidence,
    km from the top-1 (empty without a reference set)."""
    if table is None:
        return ""
    if not len(table):
        return "<h3>Similar reference photos</h3><p class=\"note\">none found in the reference set</p>"
    rows = []
    for r, thumb in zip(table.itertuples(), thumbs):
        pic = f'<img class="ref" src="{thumb}" alt="reference {_e(r.IMG_ID)}">' if thumb else "—"
        rows.append(f"<tr><td>{pic}</td><td><code>{_e(r.IMG_ID)}</code></td><td>{_e(r.place or '(sea)')}</td>"
                    f"<td>{_e(r.country or '')}</td><td>{r.lat:.4f}</td><td>{r.lon:.4f}</td>"
                    f"<td>{r.similarity:.3f}</td><td>{r.weight:.3f}</td><td>{_km(r.km)}</td></tr>")
    return ("<h3>Similar reference photos</h3><table class=\"grid refs\"><tr><th>photo</th><th>ID</th>"
            "<th>place</th><th>country</th><th>lat</th><th>lon</th><th>similarity</th><th>weight</th>"
            "<th>km from top-1</th></tr>" + "".join(rows) + "</table>")


def _claim_html(check: ClaimCheck) -> str:
    """The claimed location against one answer: the verdict sentence, the regions, the distance, the p-value."""
    if check.p_value is not None:
        p = f"{check.p_value:.3g} (exact, from the calibration photos' scores)"
    elif check.p_low is not None:
        p = f"between {check.p_low:.3g} and {check.p_high:.3g} (bounds from the calibration's masses)"
    else:
        p = "none (not calibrated: give a calibration for one)"
    rows = [("claim", f"{_e(check.label)} ({check.lat:.4f}, {check.lon:.4f})"),
            ("inside the 50 % region", _yes_no(check.in_50)), ("inside the 90 % region", _yes_no(check.in_90)),
            ("smallest region holding it", "beyond the regions" if check.level is None else _pct(round(check.level, 3))),
            ("distance from the top-1", _km(check.km_from_top1)), ("p-value", p)]
    return (f'<h3>Claimed location</h3><p class="verdict">{_e(check.verdict)}</p>'
            f'<table class="kv">{_rows(rows)}</table>')


def _yes_no(value: bool) -> str:
    return '<span class="yes">yes</span>' if value else '<span class="no">no</span>'


def _joint_section(joint: JointCase, cases: list[PhotoCase], top_k_levels: str) -> str:
    """The joint answer of photos of one place: top-k, regions, map, each photo's part, the claim."""
    head = '<section class="joint" id="joint"><h2>Joint answer: the photos as one place</h2>'
    if joint.error:
        return head + f'<p class="error">{_e(joint.error)}</p></section>'
    links = {c.name: f"photo-{c.index}" for c in cases}
    return head + _joint_body(joint, top_k_levels, links, what="photo", name="the joint answer") + "</section>"


def _joint_body(joint: JointCase, top_k_levels: str, links: dict[str, str], *, what: str, name: str,
                maps: bool = True) -> str:
    """A joint answer's parts (the photos', a segment's frames' or a clip's segments' joint): how they were
    combined, top-k, regions, each part's share (linked to `links[name]` anchors), the claim, the maps."""
    res = joint.result
    rows = "".join(
        f"<tr><td>{_link(r.name, links)}</td><td>{_km(r.km_from_joint)}</td>"
        f"<td>{_km2(r.area90_km2)}</td><td>{'—' if np.isnan(r.area90_without_km2) else _km2(r.area90_without_km2)}"
        f"</td><td>{'—' if np.isnan(r.narrowing) else f'{r.narrowing:,.1f}×'}</td><td>"
        + ('<span class="no">may not be the same place</span>' if r.conflict else '<span class="yes">yes</span>')
        + "</td></tr>" for r in res.photos.itertuples())
    skipped = "".join(f'<p class="error">left out {_e(n)}: {_e(e)}</p>' for n, e in res.skipped)
    return (f'<p class="note">{res.n} {what}(s) combined as a tempered product, p ∝ Π p_i^t with '
            f"t = {res.temperature:.2f} ({what}s of one scene are not independent)</p>"
            + _answer_tables(res.table, joint.regions, joint.region_note)
            + f"<h3>Each {what}'s part</h3><table class=\"grid\"><tr><th>{what}</th><th>own top-1 → joint top-1</th>"
            "<th>own 90 % area</th><th>joint 90 % area without it</th><th>narrowed</th><th>same place?</th></tr>"
            + rows + "</table>" + skipped
            + (_claim_html(joint.claim) if joint.claim else "")
            + (_maps_html(joint, name, top_k_levels, len(res.table), False) if maps and joint.world_map else ""))


def _link(name: str, links: dict[str, str]) -> str:
    anchor = links.get(name)
    return f'<a href="#{anchor}">{_e(name)}</a>' if anchor else _e(name)


def _video_section(case: VideoCase, top_k_levels: str) -> str:
    """A clip: its facts, the strip of kept frames, each segment's joint answer, the clip's joint answer (with the
    per-frame track on its maps and the claim). A clip that cannot be read is one line."""
    anchor = f"video-{case.index}"
    if not case.ok:
        return (f'<section class="video" id="{anchor}"><p class="error">Video {case.index}. {_e(case.name)} could '
                f"not be read: {_e(case.error)}</p></section>")
    v = case.result
    info, stats = v.info, v.stats
    rows = [("file", _e(case.name)),
            ("SHA-256 of the file", f"<code>{_e(case.sha256)}</code>" if case.sha256 else "unavailable"),
            ("size", f"{case.n_bytes:,} bytes" if case.n_bytes is not None else "unavailable"),
            ("duration", "unknown" if info.duration_s is None else f"{info.duration_s:,.1f} s"),
            ("frame size", f"{info.width} × {info.height} ({_e(info.codec)}"
                           + (f", {info.fps:g} frames/s)" if info.fps else ")")),
            ("frames kept", f"{len(v.frames)} (of {stats.get('decoded', 0):,} decoded; "
                            f"{stats.get('duplicates', 0)} near-duplicates dropped; {_e(stats.get('mode', ''))} "
                            "sampling)"),
            ("segments", f"{len(v.segments)} (a scene cut starts one)")]
    frame_link = {}
    figs = []
    for j, (r, thumb) in enumerate(zip(v.frames.itertuples(), case.thumbs), start=1):
        fid = f"{anchor}-frame-{j}"
        if j - 1 < len(v.results):
            frame_link[v.results[j - 1].name] = fid
        pic = f'<img class="frame" src="{thumb}" alt="frame at {r.time_s:.2f} s">'
        place = r.place if isinstance(r.place, str) and r.place else "(sea)"
        country = r.country if isinstance(r.country, str) and r.country else "(sea)"
        figs.append(f'<figure class="frame" id="{fid}">{pic}<figcaption><strong>{r.time_s:.1f} s</strong> · '
                    f"segment {int(r.segment) + 1}<br>{_e(place)}, {_e(country)}<br>"
                    f"90 % region 10<sup>{r.localizability:.1f}</sup> km²</figcaption></figure>")
    strip = f'<h3>Frames ({len(v.frames)} kept)</h3><div class="strip">{"".join(figs)}</div>' \
        + '<p class="note">each kept frame (pixels only) with its time, segment, top-1 place and localizability (the ' \
          "area of its own 90 % region: smaller means the frame says more about where it is)</p>"
    seg_rows, seg_parts, seg_link = [], [], {}
    names = list(v.clip.photos["name"]) if len(v.clip.photos) == len(v.segments) else []
    for s, ((start, end), seg) in enumerate(zip(v.segment_times, case.segments), start=1):
        sid = f"{anchor}-segment-{s}"
        if s - 1 < len(names):
            seg_link[names[s - 1]] = sid
        top = seg.result.table.iloc[0]
        area = seg.regions[-1].area_km2 if seg.regions else None
        seg_rows.append(f'<tr><td><a href="#{sid}">{s}</a></td><td>{start:.1f}–{end:.1f} s</td>'
                        f"<td>{seg.result.n}</td><td>{_e(_place(top['place'], top['admin1']))}</td><td>{_e(top['country'] or '(sea)')}</td>"
                        f"<td>{top['prob']:.4f}</td><td>{_km2(area) if area is not None else '—'}</td></tr>")
        seg_parts.append(f'<div class="segment" id="{sid}"><h3>Segment {s} ({start:.1f}–{end:.1f} s): joint answer '
                         f"of its {seg.result.n} frame(s)</h3>"
                         + _joint_body(seg, top_k_levels, frame_link, what="frame", name=f"segment {s}", maps=False)
                         + "</div>")
    widest = _pct(case.segments[0].regions[-1].level) if case.segments and case.segments[0].regions else "widest"
    segments = ("<h3>Segments</h3><table class=\"grid\"><tr><th>#</th><th>time</th><th>frames</th><th>top-1 place</th>"
                f"<th>country</th><th>prob</th><th>{widest} area</th></tr>" + "".join(seg_rows) + "</table>"
                + "".join(seg_parts))
    clip = (f'<div class="clipjoint" id="{anchor}-clip"><h3>The whole clip: joint answer of its '
            f"{len(v.segments)} segment(s)</h3>"
            + _joint_body(case.clip, top_k_levels, seg_link, what="segment", name=f"the clip {case.name}")
            + "</div>")
    return (f'<section class="video" id="{anchor}"><h2>Video {case.index}. {_e(case.name)}</h2>'
            f'<table class="kv">{_rows(rows)}</table>' + strip + segments + clip + "</section>")


def _video_summary(videos: list[VideoCase]) -> str:
    """One row per clip: length, frames, segments and the clip's joint top-1."""
    rows = []
    for v in videos:
        link = f'<a href="#video-{v.index}">{_e(v.name)}</a>'
        if not v.ok:
            rows.append(f'<tr><td>{v.index}</td><td>{link}</td><td colspan="7" class="error">could not be read</td>'
                        "</tr>")
            continue
        info, clip = v.result.info, v.clip
        top = clip.result.table.iloc[0]
        region = clip.regions[-1] if clip.regions else None
        rows.append(f"<tr><td>{v.index}</td><td>{link}</td>"
                    f"<td>{'—' if info.duration_s is None else f'{info.duration_s:,.1f} s'}</td>"
                    f"<td>{len(v.result.frames)}</td><td>{len(v.result.segments)}</td>"
                    f"<td>{_e(_place(top['place'], top['admin1']))}</td><td>{_e(top['country'] or '(sea)')}</td>"
                    f"<td>{top['prob']:.4f}</td><td>{_km2(region.area_km2) if region else '—'}</td></tr>")
    return ("<table class=\"grid summary\"><tr><th>#</th><th>video</th><th>duration</th><th>frames</th>"
            "<th>segments</th><th>clip top-1 place</th><th>country</th><th>prob</th><th>widest region</th></tr>"
            + "".join(rows) + "</table>")


def _summary(cases: list[PhotoCase]) -> str:
    widest = next((c.regions[-1].level for c in cases if c.regions), None)
    label = _pct(widest) if widest is not None else "widest"
    rows = []
    for c in cases:
        link = f'<a href="#photo-{c.index}">{_e(c.name)}</a>'
        if not c.ok:
            rows.append(f'<tr><td>{c.index}</td><td>{link}</td><td colspan="6" class="error">{_e(c.error)}</td></tr>')
            continue
        top = c.result.table.iloc[0]
        region = c.regions[-1] if c.regions else None
        inside = "—" if not c.inside or region is None else ("yes" if c.inside.get(region.level) else "no")
        rows.append(f"<tr><td>{c.index}</td><td>{link}</td><td>{_e(_place(top['place'], top['admin1']))}</td>"
                    f"<td>{_e(top['country'] or '(sea)')}</td><td>{top['prob']:.4f}</td>"
                    f"<td>{_km2(region.area_km2) if region else '—'}</td><td>{_km(c.result.exif_error_km)}</td>"
                    f"<td>{inside}</td></tr>")
    return ("<table class=\"grid summary\"><tr><th>#</th><th>photo</th><th>top-1 place</th><th>country</th>"
            f"<th>prob</th><th>{label} area</th><th>EXIF error</th><th>EXIF in {label} region</th></tr>"
            + "".join(rows) + "</table>")


def _refs_rows(refs: ReferenceSet | None, cases: list[PhotoCase], refs_k: int | None,
               refs_weight: float | None) -> list[tuple[str, str]]:
    """The reference set (folder name, size, model and fingerprint from its manifest) and the fusion used."""
    if refs is None:
        return [("reference photos", "none")]
    used = next((c.result.extras.get("refs") for c in cases if c.ok and c.result.extras.get("refs")), None)
    k, w = (used["k"], used["weight"]) if used else (refs_k or FusionParams.k, refs_weight)
    w = FusionParams.weight if w is None else w
    where = Path(refs.path).name if refs.path is not None else "(in memory)"
    return [("reference photos", f"<code>{_e(where)}</code>: {len(refs):,} references, built with "
                                 f"{_e(refs.model)} (fingerprint <code>{_e(refs.fingerprint)}</code>)"
                                 + ("" if refs.thumbnails is not None else "; no thumbnails stored")),
            ("reference fusion", f"K = {k} nearest, W = {w:g} (p ∝ p_model · L^W, ℓ = {FusionParams.scale_km:g} km)"
                                 + ("" if used else " (not applied: no photo could be read)"))]


def _case_rows(same_place: bool, claimed: tuple[float, float, str] | None, n_photos: int = 1,
               n_videos: int = 0) -> list[tuple[str, str]]:
    """What the case asked: photos of one place (a joint answer) and a claimed location."""
    rows = [("photos of one place", '<a href="#joint">yes: a joint answer</a>')] if same_place else []
    if claimed is not None:
        against = ([("the joint answer" if same_place else "each photo's answer")] if n_photos else []) \
            + (["each video clip's joint answer"] if n_videos else [])
        rows.append(("claimed location", f"{_e(claimed[2])} ({claimed[0]:.4f}, {claimed[1]:.4f}), checked against "
                                         + " and ".join(against)))
    return rows


def _video_rows(videos: list[VideoCase], every_s: float, max_frames: int) -> list[tuple[str, str]]:
    """The clips and how they were sampled (none: no row)."""
    if not videos:
        return []
    n_ok = sum(v.ok for v in videos)
    return [("video clips", f"{len(videos)} ({n_ok} analysed, {len(videos) - n_ok} could not be read); a frame "
                            f"every {every_s:g} s and at scene cuts, at most {max_frames} a clip, near-duplicates "
                            "dropped; each segment and the clip as a joint answer")]


def _header(model: GeoLocator, cases: list[PhotoCase], *, weights: dict, calibration: Calibration | None,
            hint: str | None, hint_weight: float | None, levels, top_k: int, created: str,
            command: str | None, extra: Sequence[tuple[str, str]] = (), videos: Sequence[VideoCase] = ()) -> str:
    from geocore import __version__

    if weights["sha256"]:
        wtext = f"<code>{_e(weights['sha256'])}</code> ({_e(Path(weights['file']).name)})"
    else:
        wtext = _e(weights["note"])
    if calibration is None:
        ctext = ("not calibrated: a region holds that share of the model's probability, which is not the chance "
                 "that it contains the true place (models are often over-confident)")
    else:
        fitted = ", ".join(f"{_pct(lv)} → {m:.3f}" for lv, m in zip(calibration.levels, calibration.masses))
        ctext = (f"calibrated (split conformal) on n = {calibration.n} held-out photos; fitted levels and masses: "
                 f"{_e(fitted)}; fitted {_e(calibration.created)} with geocore {_e(calibration.version)}")
    n_ok = sum(c.ok for c in cases)
    rows = [("analysed (UTC)", _e(created)), ("geocore version", _e(__version__)),
            ("model", f"<strong>{_e(model.model_name)}</strong> ({_e(type(model).__name__)}, "
                      f"{model.num_candidates():,} candidates)"),
            ("weights SHA-256", wtext),
            ("hint", _hint_text(cases, hint, hint_weight, videos)),
            ("search regions", ", ".join(_pct(lv) for lv in levels)), ("calibration", ctext),
            ("top-k", str(top_k)), ("photos", f"{len(cases)} ({n_ok} analysed, {len(cases) - n_ok} could not be read)"),
            *extra]
    if command:
        rows.append(("command", f"<code>{_e(command)}</code>"))
    banner = f'<p class="random">{_e(RANDOM_WARNING)}</p>' if model.random_backbone else ""
    return banner + f'<table class="kv">{_rows(rows)}</table>'


def _hint_text(cases: list[PhotoCase], hint: str | None, hint_weight: float | None,
               videos: Sequence[VideoCase] = ()) -> str:
    used = next((c.result.extras.get("hint") for c in cases if c.ok and c.result.extras.get("hint")), None)
    if used is None and videos:
        used = next((r.extras.get("hint") for v in videos if v.ok for r in v.result.results[:1]
                     if r.extras.get("hint")), None)
    if used:  # the text and weight locate() applied (its default weight when none was given)
        return (f"“{_e(used['text'])}”, weight {used['weight']:g} (p ∝ p_image · p_text^weight)"
                + ("" if hint_weight is not None else " (the default weight)"))
    return f"“{_e(hint)}” (not applied: no photo could be read)" if hint else "none"


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;margin:0 auto;
max-width:1100px;padding:1.2em;color:#1d1d1f;background:#fff;line-height:1.4}
h1{font-size:1.6em;margin:.2em 0}h2{font-size:1.25em;border-bottom:2px solid #1f4e9c;padding-bottom:.2em}
h3{font-size:1.05em;margin:1em 0 .3em}
table{border-collapse:collapse;margin:.4em 0;font-size:.92em}
th,td{border:1px solid #d0d4da;padding:.25em .5em;text-align:left;vertical-align:top}
table.kv th{background:#f2f4f7;font-weight:600;white-space:nowrap}
table.grid th{background:#e8edf5}table.grid td{white-space:nowrap}table.grid td:last-child{white-space:normal}
code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em;word-break:break-all}
.random{background:#b00020;color:#fff;font-weight:700;font-size:1.3em;padding:.5em .8em;border-radius:4px}
.use{background:#fff7e0;border-left:4px solid #e0a800;padding:.6em .9em}
.error{color:#b00020;font-weight:600}.yes{color:#1a7f37;font-weight:600}.no{color:#b00020;font-weight:600}
.pics,.maps{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}
figure{margin:.4em 0}figure img{max-width:100%;border:1px solid #d0d4da}
.pics img{max-height:360px}figcaption{font-size:.85em;color:#555}
section.photo,section.joint{margin-top:2em}.note{color:#555}
img.ref{max-height:96px;max-width:128px}.verdict{font-weight:600}
section.video{margin-top:2em}.strip{display:flex;flex-wrap:wrap;gap:.5em;align-items:flex-start}
figure.frame{width:170px;margin:0}img.frame{max-width:160px;max-height:120px}
"""


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


def build_report(model: GeoLocator, photos: Sequence[tuple[str, ImageSource]], *, hint: str | None = None,
                 hint_weight: float | None = None, calibration: Calibration | str | Path | None = None,
                 top_k: int = 5, levels=(0.5, 0.9), weights_file: str | Path | None = None,
                 explain: bool = True, command: str | None = None,
                 hint_model: GalleryModel | None = None, refs: ReferenceSet | str | Path | None = None,
                 refs_k: int | None = None, refs_weight: float | None = None, same_place: bool = False,
                 claim: str | tuple | None = None, every_s: float = 1.0, max_frames: int = 300) -> CaseReport:
    """Analyse `photos` (video clips among them by suffix) and render the report (see `render_report`); the
    cases and videos tell which inputs failed."""
    if not photos:
        raise InputError("no photos given")
    levels, calibration = _check_options(levels, calibration, top_k)
    ref_options = _check_refs(refs, refs_k, refs_weight)
    claimed = _resolve_claim(claim)
    stills = [(n, src) for n, src in photos if not is_video(str(n), src)]
    clips = [(i, str(n), src) for i, (n, src) in
             enumerate(((n, src) for n, src in photos if is_video(str(n), src)), start=1)]
    if clips and (not (every_s > 0 and np.isfinite(every_s)) or int(max_frames) < 1):
        raise InputError(f"video sampling: expected every_s > 0 and max_frames ≥ 1, got {every_s} and {max_frames}")
    same_place = same_place and bool(stills)  # the photos' joint answer; clips get their own
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    weights = weights_record(model, weights_file)
    cases = analyse(model, stills, levels=levels, calibration=calibration, hint=hint, hint_weight=hint_weight,
                    top_k=top_k, explain=explain, hint_model=hint_model, claim=None if same_place else claimed,
                    **ref_options) if stills else []
    joint = (analyse_joint(model, cases, levels=levels, calibration=calibration, top_k=top_k, hint=hint,
                           hint_model=hint_model, claim=claimed) if same_place else None)
    videos = analyse_videos(model, clips, levels=levels, calibration=calibration, hint=hint,
                            hint_weight=hint_weight, top_k=top_k, hint_model=hint_model, every_s=every_s,
                            max_frames=max_frames, claim=claimed) if clips else []
    shown_k = next((len(c.result.table) for c in cases if c.ok), top_k)
    extra = (_refs_rows(ref_options.get("refs"), cases, refs_k, refs_weight)
             + _video_rows(videos, every_s, max_frames) + _case_rows(same_place, claimed, len(stills), len(clips)))
    header = _header(model, cases, weights=weights, calibration=calibration, hint=hint, hint_weight=hint_weight,
                     levels=levels, top_k=shown_k, created=created, command=command, extra=extra, videos=videos)
    level_text = " and ".join(_pct(lv) for lv in levels)
    body = ("" if joint is None else _joint_section(joint, cases, level_text)) \
        + "".join(_photo_section(c, level_text) for c in cases) \
        + "".join(_video_section(v, level_text) for v in videos)
    summary = (_summary(cases) if cases else "") + (_video_summary(videos) if videos else "")
    what = f"{len(cases)} photo(s)" + (f", {len(videos)} video(s)" if videos else "")
    text = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<meta name="referrer" content="no-referrer">'
            f"<title>geocore case report — {what}, {_e(created)}</title><style>{_CSS}</style></head>"
            f"<body><h1>geocore case report</h1>{header}"
            f'<p class="use"><strong>Responsible use.</strong> {_e(RESPONSIBLE_USE)}</p>'
            f"<h2>Summary</h2>{summary}{body}</body></html>\n")
    return CaseReport(text, cases, joint, videos)


def render_report(model: GeoLocator, photos: Sequence[tuple[str, ImageSource]], *, hint: str | None = None,
                  hint_weight: float | None = None, calibration: Calibration | str | Path | None = None,
                  top_k: int = 5, levels=(0.5, 0.9), weights_file: str | Path | None = None,
                  explain: bool = True, command: str | None = None,
                  hint_model: GalleryModel | None = None, refs: ReferenceSet | str | Path | None = None,
                  refs_k: int | None = None, refs_weight: float | None = None, same_place: bool = False,
                  claim: str | tuple | None = None, every_s: float = 1.0,
                  max_frames: int = 300) -> str:
    """The case report of `photos` ((name, path-or-bytes) pairs) as one self-contained HTML string.

    Works from bytes in memory (uploads are never written anywhere). A photo that cannot be read gets its own
    section with the error. InputError for bad options (a level outside (0, 1), an empty hint, a calibration
    fitted for another model or candidate set or not covering the levels, or a calibration file that is
    missing). `weights_file`: the checkpoint the model was loaded from, for its SHA-256. `explain`: Grad-CAM
    of the top-1. `command`: the command line to record (the CLI passes its own). `hint_model`: the text
    model that scores the hint when `model` takes no text (see `geocore.locate.locate`).

    refs: a reference set built with `model` (or its folder; `geocore.refs`), `refs_k` / `refs_weight` its
    fusion (`locate`'s defaults when None): each photo lists its similar reference photos, marked on its maps.
    same_place: the photos show one place: a joint answer (`geocore.cases.joint`) with each photo's part.
    claim: "City, Country", "lat,lon" or a (lat, lon[, label]) tuple, checked against the joint answer with
    `same_place`, else against each photo's, and against each video clip's joint answer (`geocore.cases.claims`);
    an unknown name fails before any work.
    Video clips among `photos` (by the suffix of the path, or of the name for bytes: MP4, MOV, WebM, MKV) are
    located with `geocore.cases.clip.locate_video`, sampling a frame every `every_s` seconds and at scene cuts,
    at most `max_frames` a clip: each gets a Video section (frame strip, segments' and clip's joint answers, a
    map of the per-frame track); a clip that cannot be read is one line and costs nothing else."""
    return build_report(model, photos, hint=hint, hint_weight=hint_weight, calibration=calibration, top_k=top_k,
                        levels=levels, weights_file=weights_file, explain=explain, command=command,
                        hint_model=hint_model, refs=refs, refs_k=refs_k, refs_weight=refs_weight,
                        same_place=same_place, claim=claim, every_s=every_s,
                        max_frames=max_frames).html


def write_html(text: str, output: str | Path) -> Path:
    """Write `text` to `output` atomically (a temporary file beside it, then os.replace).

    The file is readable by its owner only (0600): a report holds the photos."""
    output = Path(output)
    if output.is_dir():
        raise InputError(f"{output} is a folder; expected a file name such as case.html")
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(output) as tmp:
        tmp.touch(mode=0o600)  # created private, before any byte of the photos is in it
        tmp.write_text(text, encoding="utf-8")
    return output


def write_report(model: GeoLocator, photos: Sequence[tuple[str, ImageSource]], output: str | Path, *,
                 hint: str | None = None, hint_weight: float | None = None,
                 calibration: Calibration | str | Path | None = None, top_k: int = 5, levels=(0.5, 0.9),
                 weights_file: str | Path | None = None, explain: bool = True, command: str | None = None,
                 hint_model: GalleryModel | None = None, refs: ReferenceSet | str | Path | None = None,
                 refs_k: int | None = None, refs_weight: float | None = None, same_place: bool = False,
                 claim: str | tuple | None = None, every_s: float = 1.0,
                 max_frames: int = 300) -> Path:
    """`render_report` written to `output` atomically (see `write_html`); returns the path."""
    if Path(output).is_dir():  # before the work, not after
        raise InputError(f"{output} is a folder; expected a file name such as case.html")
    text = render_report(model, photos, hint=hint, hint_weight=hint_weight, calibration=calibration, top_k=top_k,
                         levels=levels, weights_file=weights_file, explain=explain, command=command,
                         hint_model=hint_model, refs=refs, refs_k=refs_k, refs_weight=refs_weight,
                         same_place=same_place, claim=claim, every_s=every_s,
                         max_frames=max_frames)
    return write_html(text, output)
