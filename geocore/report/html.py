"""The case report's HTML: one self-contained page (styles inline, images as `data:` URIs, no scripts, fonts or
tiles; a Content-Security-Policy forbids any other source). Every string from outside is escaped (`_e`)."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from geocore.cases.analyse import Case
from geocore.cases.claims import ClaimCheck
from geocore.data.safe_io import atomic_path
from geocore.data.text import readable
from geocore.errors import InputError
from geocore.present import SEA, km, km2, pct, place_label, region_countries
from geocore.report.contents import JointCase, PhotoCase, VideoCase
from geocore.request import LocateRequest

RANDOM_WARNING = "RANDOM BACKBONE — predictions mean nothing"
RESPONSIBLE_USE = (
    "Locating someone else's private photos can endanger people (stalking, doxxing). The authors of "
    "GeoEstimation withdrew their public demo for this reason. Use geocore on your own photos or on public "
    "benchmarks. This report contains the photos it analyses: share it only with people entitled to see them."
)
MAX_COUNTRIES = 15  # countries listed per region; the rest are counted
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


def _e(value: Any) -> str:
    """Text for the HTML: controls, bidi overrides and non-UTF-8 bytes shown as escapes, then HTML-escaped."""
    return html.escape(readable(value), quote=True)


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
    rows.append(("top-1 distance from EXIF GPS", f"<strong>{km(res.exif_error_km)}</strong>"))
    for region in case.regions:
        rows.append((f"EXIF GPS inside the {pct(region.level)} region", _yes_no(case.inside.get(region.level))))
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
        f"<tr><td>{r.rank}</td><td>{_e(place_label(r.place, r.admin1))}</td><td>{_e(r.country or SEA)}</td>"
        f"<td>{_e(r.iso_a3 or '')}</td><td>{r.lat:.4f}</td><td>{r.lon:.4f}</td><td>{r.prob:.4f}</td></tr>"
        for r in table.itertuples())
    rows = "".join(
        f"<tr><td>{pct(g.level)}</td><td>{g.mass:.4f}{' (calibrated)' if g.calibrated else ''}</td>"
        f"<td>{g.held_mass:.4f}</td><td>{km2(g.area_km2)}</td>"
        + ("<td>—</td><td>—</td>" if region_note else f"<td>{g.n_areas}</td><td>{_e(region_countries(g, MAX_COUNTRIES))}</td>")
        + "</tr>" for g in regions)
    if region_note:
        rows += f'<tr><td colspan="6" class="error">{_e(region_note)}</td></tr>'
    cal_note = next((g.calibration_note for g in regions if getattr(g, "calibration_note", "")), "")
    if cal_note:  # a calibration fitted on another kind of answer (single photos for a joint one, or sets for one)
        rows += f'<tr><td colspan="6" class="error">note: {_e(cal_note)}</td></tr>'
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
                 f"<figcaption>zoom on the {pct(case.regions[-1].level)} region</figcaption></figure>")
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
        rows.append(f"<tr><td>{pic}</td><td><code>{_e(r.IMG_ID)}</code></td><td>{_e(r.place or SEA)}</td>"
                    f"<td>{_e(r.country or '')}</td><td>{r.lat:.4f}</td><td>{r.lon:.4f}</td>"
                    f"<td>{r.similarity:.3f}</td><td>{r.weight:.3f}</td><td>{km(r.km)}</td></tr>")
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
            ("smallest region holding it", "beyond the regions" if check.level is None else pct(round(check.level, 3))),
            ("distance from the top-1", km(check.km_from_top1)), ("p-value", p)]
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
        f"<tr><td>{_link(r.name, links)}</td><td>{km(r.km_from_joint)}</td>"
        f"<td>{km2(r.area90_km2)}</td><td>{km2(r.area90_without_km2)}"
        f"</td><td>{'—' if math.isnan(r.narrowing) else f'{r.narrowing:,.1f}×'}</td><td>"
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
        place = r.place if isinstance(r.place, str) and r.place else SEA
        country = r.country if isinstance(r.country, str) and r.country else SEA
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
                        f"<td>{seg.result.n}</td><td>{_e(place_label(top['place'], top['admin1']))}</td><td>{_e(top['country'] or SEA)}</td>"
                        f"<td>{top['prob']:.4f}</td><td>{km2(area) if area is not None else '—'}</td></tr>")
        seg_parts.append(f'<div class="segment" id="{sid}"><h3>Segment {s} ({start:.1f}–{end:.1f} s): joint answer '
                         f"of its {seg.result.n} frame(s)</h3>"
                         + _joint_body(seg, top_k_levels, frame_link, what="frame", name=f"segment {s}", maps=False)
                         + "</div>")
    widest = pct(case.segments[0].regions[-1].level) if case.segments and case.segments[0].regions else "widest"
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
                    f"<td>{_e(place_label(top['place'], top['admin1']))}</td><td>{_e(top['country'] or SEA)}</td>"
                    f"<td>{top['prob']:.4f}</td><td>{km2(region.area_km2) if region else '—'}</td></tr>")
    return ("<table class=\"grid summary\"><tr><th>#</th><th>video</th><th>duration</th><th>frames</th>"
            "<th>segments</th><th>clip top-1 place</th><th>country</th><th>prob</th><th>widest region</th></tr>"
            + "".join(rows) + "</table>")


def _summary(cases: list[PhotoCase]) -> str:
    widest = next((c.regions[-1].level for c in cases if c.regions), None)
    label = pct(widest) if widest is not None else "widest"
    rows = []
    for c in cases:
        link = f'<a href="#photo-{c.index}">{_e(c.name)}</a>'
        if not c.ok:
            rows.append(f'<tr><td>{c.index}</td><td>{link}</td><td colspan="6" class="error">{_e(c.error)}</td></tr>')
            continue
        top = c.result.table.iloc[0]
        region = c.regions[-1] if c.regions else None
        inside = "—" if not c.inside or region is None else ("yes" if c.inside.get(region.level) else "no")
        rows.append(f"<tr><td>{c.index}</td><td>{link}</td><td>{_e(place_label(top['place'], top['admin1']))}</td>"
                    f"<td>{_e(top['country'] or SEA)}</td><td>{top['prob']:.4f}</td>"
                    f"<td>{km2(region.area_km2) if region else '—'}</td><td>{km(c.result.exif_error_km)}</td>"
                    f"<td>{inside}</td></tr>")
    return ("<table class=\"grid summary\"><tr><th>#</th><th>photo</th><th>top-1 place</th><th>country</th>"
            f"<th>prob</th><th>{label} area</th><th>EXIF error</th><th>EXIF in {label} region</th></tr>"
            + "".join(rows) + "</table>")


def _refs_rows(request: LocateRequest, cases: list[PhotoCase]) -> list[tuple[str, str]]:
    """The reference set (folder name, size, model and fingerprint from its manifest) and the fusion used."""
    refs = request.refs
    if refs is None:
        return [("reference photos", "none")]
    used = next((c.result.extras.get("refs") for c in cases if c.ok and c.result.extras.get("refs")), None)
    k, w = request.fusion.k, request.fusion.weight
    where = Path(refs.path).name if refs.path is not None else "(in memory)"
    return [("reference photos", f"<code>{_e(where)}</code>: {len(refs):,} references, built with "
                                 f"{_e(refs.model)} (fingerprint <code>{_e(refs.fingerprint)}</code>)"
                                 + ("" if refs.thumbnails is not None else "; no thumbnails stored")),
            ("reference fusion", f"K = {k} nearest, W = {w:g} (p ∝ p_model · L^W, ℓ = {request.fusion.scale_km:g} km)"
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


def _header(case: Case, cases: list[PhotoCase], *, weights: dict, top_k: int, command: str | None,
            extra: Sequence[tuple[str, str]] = (), videos: Sequence[VideoCase] = ()) -> str:
    from geocore import __version__

    model, request = case.model, case.request.request
    calibration, levels, created = request.calibration, request.levels, case.created
    if weights["sha256"]:
        wtext = f"<code>{_e(weights['sha256'])}</code> ({_e(Path(weights['file']).name)})"
    else:
        wtext = _e(weights["note"])
    if calibration is None:
        ctext = ("not calibrated: a region holds that share of the model's probability, which is not the chance "
                 "that it contains the true place (models are often over-confident)")
    else:
        fitted = ", ".join(f"{pct(lv)} → {m:.3f}" for lv, m in zip(calibration.levels, calibration.masses))
        fitted_on = "photos" if not calibration.on_sets else f"photo sets ({calibration.kind}; joint answers)"
        ctext = (f"calibrated (split conformal) on n = {calibration.n} held-out {fitted_on}; fitted levels and masses: "
                 f"{_e(fitted)}; fitted {_e(calibration.created)} with geocore {_e(calibration.version)}")
    n_ok = sum(c.ok for c in cases)
    rows = [("analysed (UTC)", _e(created)), ("geocore version", _e(__version__)),
            ("model", f"<strong>{_e(model.model_name)}</strong> ({_e(type(model).__name__)}, "
                      f"{model.num_candidates():,} candidates)"),
            ("weights SHA-256", wtext),
            ("hint", _hint_text(cases, request, videos)),
            ("precision", _precision_text(case)), ("refinement", _refine_text(case)),
            ("search regions", ", ".join(pct(lv) for lv in levels)), ("calibration", ctext),
            ("top-k", str(top_k)), ("photos", f"{len(cases)} ({n_ok} analysed, {len(cases) - n_ok} could not be read)"),
            *extra]
    if command:
        rows.append(("command", f"<code>{_e(command)}</code>"))
    banner = f'<p class="random">{_e(RANDOM_WARNING)}</p>' if model.random_backbone else ""
    return banner + f'<table class="kv">{_rows(rows)}</table>'


def _precision_text(case: Case) -> str:
    """The towers' precision the answers were computed at, and the choice it came from."""
    used = next((r.precision for r in case.results if r.ok), case.request.precision)
    return f"{_e(used)} (asked: {_e(case.request.request.precision)}; the location encoder and gallery scan stay fp32)"


def _refine_text(case: Case) -> str:
    """Whether the answers were zoomed in on dense local points (`--refine`)."""
    return ("yes: the top-k re-ranked over dense local points around the coarse answer" if case.request.request.refine
            else "no")


def _hint_text(cases: list[PhotoCase], request: LocateRequest, videos: Sequence[VideoCase] = ()) -> str:
    hint, hint_weight = request.hint, (request.hint_weight if request.hint_weight_given else None)
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


def render_html(case: Case, photos: list[PhotoCase], joint: JointCase | None, videos: list[VideoCase], *,
                weights: dict, command: str | None = None) -> str:
    """The report page of `case`, from its sections (`geocore.report.contents.contents`)."""
    request = case.request.request
    levels = request.levels
    shown_k = next((len(c.result.table) for c in photos if c.ok), request.top_k)
    same_place = joint is not None
    extra = (_refs_rows(request, photos) + _video_rows(videos, request.every_s, request.max_frames)
             + _case_rows(same_place, request.claim, len(photos), len(videos)))
    header = _header(case, photos, weights=weights, top_k=shown_k, command=command, extra=extra, videos=videos)
    level_text = " and ".join(pct(lv) for lv in levels)
    body = ("" if joint is None else _joint_section(joint, photos, level_text)) \
        + "".join(_photo_section(c, level_text) for c in photos) \
        + "".join(_video_section(v, level_text) for v in videos)
    summary = (_summary(photos) if photos else "") + (_video_summary(videos) if videos else "")
    what = f"{len(photos)} photo(s)" + (f", {len(videos)} video(s)" if videos else "")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<meta name="referrer" content="no-referrer">'
            f"<title>geocore case report — {what}, {_e(case.created)}</title><style>{_CSS}</style></head>"
            f"<body><h1>geocore case report</h1>{header}"
            f'<p class="use"><strong>Responsible use.</strong> {_e(RESPONSIBLE_USE)}</p>'
            f"<h2>Summary</h2>{summary}{body}</body></html>\n")


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
