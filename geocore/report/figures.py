"""The case report's pictures: photo and Grad-CAM thumbnails and maps, as `data:` URIs (pixels only: no EXIF,
ICC or XMP travels with a thumbnail; maps are matplotlib figures without pyplot's global state)."""

from __future__ import annotations

import base64
import io

import numpy as np

from geocore.cases.claims import ClaimCheck
from geocore.cases.joint import JointResult
from geocore.errors import GeocoreError
from geocore.locate import LocateResult
from geocore.models.base import GalleryModel, GeoLocator
from geocore.present import km2, pct, region_style
from geocore.tensors import as_numpy

THUMB_SIDE = 480  # px, longer side of the photo and Grad-CAM thumbnails
REF_THUMB_SIDE = 160  # px, longer side of a reference photo's thumbnail
FRAME_THUMB_SIDE = 160  # px, longer side of a video frame's thumbnail in the strip
ZOOM_MAX_DEG = (60.0, 40.0)  # a zoomed map is drawn when the widest region fits in this many degrees (lon, lat)


def jpeg_uri(image, side: int = THUMB_SIDE) -> str:
    """A JPEG data: URI of the image's pixels only (no EXIF, ICC or XMP is carried over)."""
    from PIL import Image

    rgb = image.convert("RGB")
    rgb = Image.frombytes("RGB", rgb.size, rgb.tobytes())  # a fresh image: the pixels and nothing else
    rgb.thumbnail((side, side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    rgb.save(buf, format="JPEG", quality=85, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def png_uri(fig) -> str:
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
    for i, region in enumerate(regions):
        color, style, _ = region_style(i)
        polys = [g for g in shapely.get_parts(region.geometry) if g.geom_type == "Polygon" and not g.is_empty]
        rings = [np.asarray(r.coords)[:, :2] for g in polys for r in (g.exterior, *g.interiors)]
        if fill and polys:
            ax.add_collection(PolyCollection([np.asarray(g.exterior.coords)[:, :2] for g in polys], facecolors=color,
                                             alpha=0.12, linewidths=0, zorder=2.5))
        if rings:
            ax.add_collection(LineCollection(rings, colors=color, linestyles=style, linewidths=1.2, zorder=4.5))
        handles.append(Line2D([], [], color=color, linestyle=style, linewidth=1.4,
                              label=f"{pct(region.level)} region, {km2(region.area_km2)}"))
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
    return png_uri(fig)


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
    pts = as_numpy(res.prediction.candidates, np.float64)
    p = as_numpy(res.prediction.probs_full[0], np.float64)
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
    return png_uri(fig)


def gradcam_uri(model: GeoLocator, image, res: LocateResult) -> tuple[str | None, str | None]:
    """The Grad-CAM overlay explaining the reported top-1 (after any hint), and what it explains."""
    if isinstance(model, GalleryModel):  # the top-1 point itself
        target = (float(res.table["lat"].iloc[0]), float(res.table["lon"].iloc[0]))
    else:  # the top-1 fine cell
        idx = res.prediction.indices
        target = int(idx.reshape(-1)[0]) if idx is not None else None
    from geocore.explain.gradcam import gradcam

    try:
        cam = gradcam(model, image, target)
    except (GeocoreError, RuntimeError, ValueError) as err:
        return None, f"Grad-CAM could not be computed: {err}"
    return jpeg_uri(cam.overlay), cam.target_desc


def region_note(regions: list) -> str | None:
    """Why the regions' polygons (maps, separate areas, countries) are missing, or None when they are computed."""
    try:  # the polygons, once (cached on the regions), before anything draws or lists them
        for region in regions:
            region.n_areas, region.countries  # noqa: B018
    except Exception as err:  # noqa: BLE001 - one answer's polygons must not cost the whole report
        return f"the search regions' polygons could not be computed ({type(err).__name__}: {err})"
    return None


def maps(answer: LocateResult | JointResult, regions: list, claim: ClaimCheck | None = None,
          track=None) -> tuple[str, str | None, str | None]:
    """(world map, zoomed map or None, why the regions are not drawn or None) of a photo's or the joint answer;
    `track`: a clip's per-frame top-1s, drawn as a line."""
    note = region_note(regions)
    drawn = [] if note else regions
    box = zoom_box(drawn[-1]) if drawn else None
    return (world_map(answer, drawn, claim, track),
            (zoom_map(answer, drawn, box, claim, track) if box else None), note)


def reference_thumbs(table) -> list[str | None]:
    """Each neighbour's stored thumbnail re-drawn from its pixels (None when not stored or unreadable)."""
    from PIL import Image

    if table is None or "thumbnail" not in table:
        return [None] * (0 if table is None else len(table))
    out: list[str | None] = []
    for data in table["thumbnail"]:
        try:
            out.append(jpeg_uri(Image.open(io.BytesIO(data)), REF_THUMB_SIDE) if data else None)
        except Exception:  # noqa: BLE001 - a damaged thumbnail costs only its picture
            out.append(None)
    return out
