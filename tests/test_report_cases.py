"""The case report with reference photos (`refs`), a joint answer (`same_place`) and a claimed location (`claim`),
in the library and through `geocore report` (geoclip-tiny over a 1000 km grid; a tiny reference set of real pixels)."""

from __future__ import annotations

import base64
import html
import io
import re

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from conftest import registered_tiny  # noqa: E402
from geocore.cli.main import main
from geocore.errors import InputError
from geocore.refs import build_reference_set
from geocore.report import build_report, render_report

pytestmark = pytest.mark.usefixtures("one_thread")

MODEL = "report-cases-tiny"
HOSTILE = "<img src=x onerror=alert(1)>.jpg"
IDS = [HOSTILE, "r1.jpg", "r2.jpg"]
LATLON = [(48.85, 2.35), (-33.87, 151.21), (40.71, -74.0)]


def _jpeg(seed: int, size=(96, 128)) -> bytes:
    arr = (np.random.default_rng(seed).random((*size, 3)) * 255).astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


@pytest.fixture(scope="module")
def tiny():
    """One registered instance: the set is built and the photos located with the same weights."""
    with registered_tiny(MODEL, grid_km=1000.0, seed=0) as model:
        model.model_name = MODEL  # as the registry names it when the CLI loads it
        yield model


@pytest.fixture(scope="module")
def ref_set(tiny, tmp_path_factory):
    """Three references with thumbnails, one with a hostile IMG_ID."""
    root = tmp_path_factory.mktemp("refs")
    (root / "images").mkdir()
    for i, name in enumerate(IDS):
        (root / "images" / name).write_bytes(_jpeg(100 + i))
    pd.DataFrame({"IMG_ID": IDS, "LAT": [p[0] for p in LATLON], "LON": [p[1] for p in LATLON]}).to_csv(
        root / "refs.csv", index=False)
    return build_reference_set(tiny, root / "refs.csv", images=root / "images", output=root / "my_refs",
                               thumbnails=True, batch_size=4, progress=False, accelerator="cpu")


def _data_uris(text: str, kind: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(rf'src="data:image/{kind};base64,([^"]+)"', text)]


def _assert_offline(text: str) -> None:
    assert "http://" not in text and "https://" not in text and "<script" not in text.lower()
    assert all(v.startswith("data:") for v in re.findall(r'\bsrc="([^"]*)"', text))
    assert all(v.startswith("#") for v in re.findall(r'\bhref="([^"]*)"', text))


def _section(text: str, start: str, end: str | None = None) -> str:
    i = text.index(start)
    return text[i:text.index(end, i)] if end else text[i:]


def test_neighbours_are_listed_escaped_with_thumbnails_and_the_set_is_recorded(tiny, ref_set):
    rep = build_report(tiny, [("q.jpg", _jpeg(1)), ("q2.jpg", _jpeg(2))], top_k=2, explain=False, refs=ref_set,
                       refs_k=3, refs_weight=1.5)
    text = rep.html
    assert HOSTILE not in text and "onerror=alert(1)>" not in text  # never raw
    assert html.escape(HOSTILE) in text
    for case in rep.cases:
        refs = case.result.references
        assert sorted(refs["IMG_ID"]) == sorted(IDS) and case.result.extras["refs"]["k"] == 3
        section = _section(text, f'id="photo-{case.index}"', "</section>")
        assert "Similar reference photos" in section and "similar reference photos as orange triangles" in section
        for r in refs.itertuples():
            assert html.escape(r.IMG_ID) in section and f"{r.similarity:.3f}" in section and f"{r.km:,.1f} km" in section
        assert section.count('class="ref"') == 3  # a thumbnail each
    # thumbnails re-drawn from pixels, no larger than REF_THUMB_SIDE; 2 photos + 6 neighbours; 2 world maps
    jpegs = [Image.open(io.BytesIO(d)) for d in _data_uris(text, "jpeg")]
    assert len(jpegs) == 8 and sum(max(im.size) <= 160 for im in jpegs) >= 6
    assert len(_data_uris(text, "png")) == 2
    header = text[:text.index("<h2>Summary")]
    assert "my_refs" in header and "3 references" in header and ref_set.fingerprint in header
    assert "K = 3 nearest, W = 1.5" in header
    _assert_offline(text)


def test_without_thumbnails_the_id_and_place_are_shown(tiny, ref_set):
    from dataclasses import replace

    bare = replace(ref_set, thumbnails=None)
    text = render_report(tiny, [("q.jpg", _jpeg(3))], top_k=1, explain=False, refs=bare)
    section = _section(text, 'id="photo-1"', "</section>")
    assert 'class="ref"' not in section and html.escape(HOSTILE) in section
    assert "no thumbnails stored" in text and len(_data_uris(text, "jpeg")) == 1


def test_a_set_of_other_weights_is_refused(ref_set):
    from geocore.models.registry import create_model

    other = create_model("geoclip-tiny")
    other.model_name = MODEL
    with torch.no_grad():  # other weights
        next(other.parameters()).add_(1.0)
    with pytest.raises(InputError, match="other weights"):
        render_report(other, [("q.jpg", _jpeg(4))], explain=False, refs=ref_set)
    with pytest.raises(InputError, match="need a reference set"):
        render_report(other, [("q.jpg", _jpeg(4))], explain=False, refs_k=3)


def test_same_place_has_a_joint_section_with_one_row_per_photo_and_the_claim(tiny):
    photos = [("a.jpg", _jpeg(5)), ("b.jpg", _jpeg(6)), ("c.jpg", _jpeg(7)), ("bad.jpg", b"nope")]
    rep = build_report(tiny, photos, top_k=3, explain=False, same_place=True, claim="Paris, France")
    text = rep.html
    joint = rep.joint.result
    assert joint is not None and joint.n == 3
    section = _section(text, 'id="joint"', "</section>")
    assert section.count('<a href="#photo-') == 3 and "bad.jpg" not in section.split("Each photo")[1]
    for r in joint.photos.itertuples():
        assert f">{r.name}</a>" in section and f"{r.narrowing:,.1f}×" in section
        assert ("may not be the same place" in section) == bool(joint.photos["conflict"].any())
    top = joint.table.iloc[0]
    assert f"{top.lat:.4f}" in section and f"t = {joint.temperature:.2f}" in section
    for region in joint.regions:
        assert f"{region.area_km2:,.0f} km²" in section
    # the claim against the joint answer only; a map of the joint with the claimed cross
    assert rep.joint.claim is not None and html.escape(rep.joint.claim.verdict) in section
    assert "Paris" in rep.joint.claim.label and "the claimed location as a red cross" in section
    assert all(c.claim is None for c in rep.cases) and text.count("Claimed location</h3>") == 1
    assert len(_data_uris(text, "png")) == 4  # the joint's world map and each readable photo's
    assert "checked against the joint answer" in text
    _assert_offline(text)


def test_a_claim_is_checked_per_photo_without_same_place(tiny):
    rep = build_report(tiny, [("a.jpg", _jpeg(8)), ("b.jpg", _jpeg(9))], top_k=2, explain=False,
                       claim=(-33.87, 151.21, "Sydney <b>"))
    assert rep.joint is None and 'id="joint"' not in rep.html
    for case in rep.cases:
        section = _section(rep.html, f'id="photo-{case.index}"', "</section>")
        assert case.claim is not None and html.escape(case.claim.verdict) in section
        assert "Sydney &lt;b&gt;" in section  # the label escaped
        assert f"{case.claim.km_from_top1:,.1f} km" in section and "p-value</th><td>none (not calibrated" in section
        assert ("inside the 90 % region</th><td><span class=\"yes\">" in section) == case.claim.in_90
    assert "Sydney <b>" not in rep.html
    with pytest.raises(InputError, match="claim"):
        render_report(tiny, [("a.jpg", _jpeg(8))], claim="Nowhereville, Atlantis")


# ---------------------------------------------------------------- CLI


def test_cli_report_with_refs_same_place_and_claim(tiny, ref_set, tmp_path, capsys):
    for i in range(2):
        (tmp_path / f"p{i}.jpg").write_bytes(_jpeg(10 + i))
    out = tmp_path / "case.html"
    rc = main(["report", str(tmp_path / "p0.jpg"), str(tmp_path / "p1.jpg"), "--model", MODEL, "--no-gradcam",
               "--refs", str(ref_set.path), "--refs-k", "2", "--same-place", "--claim", "49.99,36.23",
               "--output", str(out)])
    err = capsys.readouterr().err
    assert rc == 0, err
    text = out.read_text(encoding="utf-8")
    assert html.escape(HOSTILE) in text or "r1.jpg" in text
    assert HOSTILE not in text and 'id="joint"' in text and "Claimed location" in text
    assert "K = 2 nearest" in text and "my_refs" in text
    command = _section(text, "command</th>", "</tr>")
    assert "--refs" in command and "--refs-k 2" in command and "--same-place" in command
    assert "--claim 49.99,36.23" in command
    _assert_offline(text)


@pytest.mark.parametrize("args, message", [
    (["--claim", "Nowhereville, Atlantis"], "claim"),
    (["--claim", "91,0"], "claim"),
    (["--refs", "no_such_set"], "no_such_set"),
    (["--refs-k", "3"], "need --refs"),
])
def test_cli_bad_claim_or_set_is_one_line_before_the_model_loads(tmp_path, capsys, monkeypatch, args, message):
    def no_model(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("geocore.models.registry.load_model_for_user", no_model)
    (tmp_path / "a.jpg").write_bytes(_jpeg(12))
    out = tmp_path / "case.html"
    rc = main(["report", str(tmp_path / "a.jpg"), "--model", MODEL, "--output", str(out), *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and "\n" not in err and message in err, err
    assert not out.exists()


# ---------------------------------------------------------------- video


def _clip(path=None):
    """A 4 s clip of two scenes (noise, then flat red): two segments."""
    from geocore.data.video import encode_frames

    rng = np.random.default_rng(0)
    noise = (rng.random((64, 64, 3)) * 255).astype("uint8")
    red = np.zeros((64, 64, 3), np.uint8) + np.array([200, 30, 30], np.uint8)
    return encode_frames([noise] * 20 + [red] * 20, path, fps=10)


def test_a_clip_has_a_video_section_with_its_frames_segments_track_and_the_claim(tiny):
    rep = build_report(tiny, [("a.jpg", _jpeg(13)), ("clip <b>.mp4", _clip())], top_k=2, explain=False,
                       every_s=0.5, claim="Paris, France")
    text = rep.html
    assert [c.name for c in rep.cases] == ["a.jpg"] and len(rep.videos) == 1
    video = rep.videos[0]
    assert video.ok, video.error
    v = video.result
    assert len(v.segments) == 2 and len(v.frames) >= 2 and v.clip.n == 2
    section = _section(text, 'id="video-1"', "</section>")
    assert "Video 1. clip &lt;b&gt;.mp4" in section and "clip <b>" not in text  # the name escaped
    # the clip's facts
    assert f"{v.info.duration_s:,.1f} s" in section and f"{v.info.width} × {v.info.height}" in section
    assert f"frames kept</th><td>{len(v.frames)} " in section and "segments</th><td>2 " in section
    # one thumbnail per kept frame, re-drawn from pixels, small; each captioned with time, place, localizability
    strip = _section(section, 'class="strip"', "</div>")
    thumbs = [base64.b64decode(m) for m in re.findall(r'class="frame" src="data:image/jpeg;base64,([^"]+)"', strip)]
    assert len(thumbs) == len(v.frames) == len(video.thumbs)
    assert all(max(Image.open(io.BytesIO(d)).size) <= 160 for d in thumbs)
    for r in v.frames.itertuples():
        assert f"{r.time_s:.1f} s" in strip and f"10<sup>{r.localizability:.1f}</sup>" in strip
    # each segment's joint answer, then the clip's with the track on its map and the claim checked against it
    for s, seg in enumerate(v.segments, start=1):
        part = _section(section, f'id="video-1-segment-{s}"', "</div>")
        assert f"{seg.table.iloc[0].lat:.4f}" in part and "frame(s) combined" in part
        assert part.count('<a href="#video-1-frame-') == seg.n
    clip = _section(section, 'id="video-1-clip"')
    assert "2 segment(s) combined" in clip and f"{v.clip.table.iloc[0].lat:.4f}" in clip
    assert clip.count('<a href="#video-1-segment-') == 2
    assert "per-frame top-1s as a grey line" in clip
    assert video.clip.claim is not None and html.escape(video.clip.claim.verdict) in clip
    assert "the claimed location as a red cross" in clip
    # the photo keeps its own claim; the header and the summary name the clip
    assert rep.cases[0].claim is not None and text.count("Claimed location</h3>") == 2
    header = text[:text.index("<h2>Summary")]
    assert "video clips</th><td>1 (1 analysed, 0 could not be read)" in header
    assert "each video clip's joint answer" in header
    assert '<a href="#video-1">' in _section(text, "<h2>Summary", "<section")
    # maps: the photo's world map, the clip's (no zoom for a 1000 km grid's wide regions is fine either way)
    assert len(_data_uris(text, "png")) >= 2
    _assert_offline(text)


def test_a_corrupt_clip_is_one_line_and_a_photo_beside_it_is_still_analysed(tiny):
    rep = build_report(tiny, [("a.jpg", _jpeg(14)), ("bad.mkv", b"\x1aE\xdf\xa3 truncated")], top_k=2,
                       explain=False)
    assert rep.n_ok == 1 and rep.cases[0].ok and len(rep.videos) == 1 and not rep.videos[0].ok
    section = _section(rep.html, 'id="video-1"', "</section>")
    assert section.count("<p") == 1 and "could not be read" in section and "bad.mkv" in section
    assert "<h2>" not in section and 'class="strip"' not in section
    assert 'id="photo-1"' in rep.html and len(_data_uris(rep.html, "jpeg")) == 1  # the photo only
    assert "1 (0 analysed, 1 could not be read)" in rep.html
    _assert_offline(rep.html)


def test_cli_report_takes_a_clip_among_the_inputs(tiny, tmp_path, capsys):
    (tmp_path / "p.jpg").write_bytes(_jpeg(15))
    clip = _clip(tmp_path / "clip.mp4")
    (tmp_path / "bad.webm").write_bytes(b"not a video")
    out = tmp_path / "case.html"
    rc = main(["report", str(tmp_path / "p.jpg"), str(clip), str(tmp_path / "bad.webm"), "--model", MODEL,
               "--no-gradcam", "--every-s", "0.5", "--claim", "49.99,36.23", "--output", str(out)])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "1 video(s) analysed, 1 could not be read" in err and "bad.webm" in err
    text = out.read_text(encoding="utf-8")
    assert 'id="video-1"' in text and 'id="video-1-clip"' in text and 'id="video-2"' in text
    assert "--every-s 0.5" in _section(text, "command</th>", "</tr>")
    _assert_offline(text)
