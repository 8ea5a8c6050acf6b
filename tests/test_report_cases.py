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
