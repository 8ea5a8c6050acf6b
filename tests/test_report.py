"""`geocore report` and `geocore.report`: the self-contained case report (tiny random backbone, small galleries)."""

from __future__ import annotations

import base64
import hashlib
import html
import io
import re
import stat

import numpy as np
import pytest
from PIL import Image

import geocore
from geocore.cli.main import main
from geocore.errors import InputError
from geocore.geo.gallery import grid_gallery
from geocore.locate import locate
from geocore.models.registry import create_model, register_model, unregister_model
from geocore.report import RANDOM_WARNING, build_report, render_report, weights_record, write_report
from geocore.uncertainty.calibration import fit_calibration

pytestmark = pytest.mark.usefixtures("one_thread")

TEST_MODEL = "report-test-tiny"
EUROPE = (42.0, -5.0, 52.0, 10.0)  # south, west, north, east: a gallery whose regions are small → a zoomed map


@pytest.fixture(scope="module")
def tiny():
    model = create_model("geoclip-tiny")
    model.set_gallery(grid_gallery(1000.0))  # ~500 points: fast regions and maps
    return model


@pytest.fixture(scope="module")
def europe(tiny):
    return tiny.with_gallery(grid_gallery(150.0, bbox=EUROPE))


@pytest.fixture(scope="module", autouse=True)
def cli_model():
    """A registered random model for the CLI (geoclip-tiny over the small world grid), labelled random."""

    @register_model(TEST_MODEL, description="geoclip-tiny over a 1000 km grid (tests)", random_ok=True)
    def _build(pretrained=None, **kwargs):
        model = create_model("geoclip-tiny")
        model.set_gallery(grid_gallery(1000.0))
        return model

    yield TEST_MODEL
    unregister_model(TEST_MODEL)


def _jpeg(seed=0, gps=None, camera=None, when=None, size=(96, 128)) -> bytes:
    arr = (np.random.default_rng(seed).random((*size, 3)) * 255).astype("uint8")
    exif = Image.Exif()
    if gps:
        lat, lon = gps
        exif[0x8825] = {1: "N" if lat >= 0 else "S", 2: (abs(lat), 0.0, 0.0),
                        3: "E" if lon >= 0 else "W", 4: (abs(lon), 0.0, 0.0)}
    if camera:
        exif[0x010F], exif[0x0110] = camera
    if when:
        exif.get_ifd(0x8769)[0x9003] = when
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", exif=exif)
    return buf.getvalue()


def _data_uris(text: str, kind: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(rf'src="data:image/{kind};base64,([^"]+)"', text)]


def _assert_offline(text: str) -> None:
    """No URL, no script, no external resource: every src is a data: URI, the CSP forbids anything else."""
    assert "http://" not in text and "https://" not in text and "//" not in re.sub(r'"data:[^"]*"', "", text)
    assert "<script" not in text.lower() and "@import" not in text and "url(" not in text
    assert all(v.startswith("data:") for v in re.findall(r'\bsrc="([^"]*)"', text))
    assert all(v.startswith("#") for v in re.findall(r'\bhref="([^"]*)"', text))
    assert "default-src 'none'" in text


def test_report_holds_provenance_answers_and_errors(tiny):
    paris = _jpeg(0, gps=(48.8566, 2.3522), camera=("Canon", "EOS 5D"), when="2023:05:01 12:34:56")
    plain = _jpeg(1)

    class Upload(io.BytesIO):  # what the app hands over: a named in-memory file
        name = "upload.png"

    upload = Upload(_jpeg(2))
    photos = [("paris.jpg", paris), ("plain.jpg", plain), ("broken.jpg", b"not a photo at all"),
              ("upload.png", upload)]
    rep = build_report(tiny, photos, top_k=3)
    text = rep.html
    assert [c.ok for c in rep.cases] == [True, True, False, True] and rep.n_ok == 3
    assert upload.tell() == 0  # the caller's stream is left where it was

    for data in (paris, plain, b"not a photo at all", upload.getvalue()):
        assert hashlib.sha256(data).hexdigest() in text
    assert "geoclip-tiny" in text and RANDOM_WARNING in text and geocore.__version__ in text
    assert "2023:05:01 12:34:56" in text and "Canon EOS 5D" in text
    assert "GeoEstimation withdrew their public demo" in text and "not calibrated" in text
    # the same answers, computed independently: places, EXIF distance, region areas
    ref = locate(tiny, [("paris.jpg", paris), ("plain.jpg", plain)], top_k=3, regions=(0.5, 0.9))
    for res in ref:
        for place in res.table["place"]:
            if place:
                assert html.escape(place) in text
        for region in res.regions:
            assert f"{region.area_km2:,.0f} km²" in text
    assert f"{ref[0].exif_error_km:,.1f} km" in text
    inside = "yes" if ref[0].exif_in_region(0.9) else "no"
    assert re.search(rf"EXIF GPS inside the 90 % region</th><td><span class=\"\w+\">{inside}<", text)
    # summary with anchors; the bad photo has its own section with the error
    assert all(f'href="#photo-{i}"' in text and f'id="photo-{i}"' in text for i in range(1, 5))
    section = text[text.index('id="photo-3"'):text.index('id="photo-4"')]
    assert "not an image PIL can read" in section and 'class="error"' in section
    _assert_offline(text)
    # 3 photos × (thumbnail + Grad-CAM) as JPEG, 3 world maps as PNG (the world grid: regions too wide to zoom)
    assert len(_data_uris(text, "jpeg")) == 6 and len(_data_uris(text, "png")) == 3


def test_thumbnails_carry_no_metadata(tiny):
    photo = _jpeg(3, gps=(35.68, 139.65), camera=("SONY", "ILCE-7M3"), when="2022:01:02 03:04:05")
    assert Image.open(io.BytesIO(photo)).getexif()  # the input has EXIF
    text = render_report(tiny, [("tokyo.jpg", photo)], top_k=2)
    jpegs = _data_uris(text, "jpeg")
    assert len(jpegs) == 2
    for data in jpegs:
        img = Image.open(io.BytesIO(data))
        assert img.format == "JPEG" and img.width > 0
        assert not img.getexif() and "exif" not in img.info and "icc_profile" not in img.info
        assert b"Exif" not in data and b"SONY" not in data and b"ILCE" not in data
    for data in _data_uris(text, "png"):
        assert b"matplotlib" not in data.lower()  # no tool metadata (and no URL) in the maps


def test_zoomed_map_calibration_and_atomic_write(europe, tmp_path):
    cal = fit_calibration(np.linspace(0.05, 0.99, 40), levels=(0.5, 0.8, 0.9), model=europe.model_name,
                          fingerprint=europe.candidate_cells())
    path = cal.save(tmp_path / "cal.json")
    out = tmp_path / "case.html"
    assert write_report(europe, [("a.jpg", _jpeg(4, gps=(48.85, 2.35)))], out, calibration=path,
                        levels=(0.5, 0.9), explain=False) == out
    text = out.read_text(encoding="utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cal.json", "case.html"]  # no temporary file left
    assert stat.S_IMODE(out.stat().st_mode) == 0o600  # it holds the photos
    assert "calibrated (split conformal) on n = 40" in text and "90 % → " in text
    assert text.count("(calibrated)") == 2  # both regions use calibrated masses
    assert len(_data_uris(text, "png")) == 2 and "zoom on the 90 % region" in text  # world map + zoom
    assert len(_data_uris(text, "jpeg")) == 1  # the photo; no Grad-CAM asked for
    _assert_offline(text)


def test_weights_sha256_recorded(tiny, tmp_path, monkeypatch):
    ckpt = tmp_path / "model.safetensors"
    ckpt.write_bytes(b"weights" * 1000)
    digest = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert weights_record(tiny, ckpt)["sha256"] == digest
    assert weights_record(tiny)["sha256"] is None  # random backbone: nothing to hash
    # a pretrained GeoCLIP: the CLIP backbone file that resolve_clip_checkpoint finds is hashed
    monkeypatch.setattr(tiny, "random_backbone", False)
    monkeypatch.setitem(tiny.config, "clip_pretrained", "openai")
    monkeypatch.setattr("geocore.weights.resolve.resolve_clip_checkpoint", lambda arch, tag, weights=None: ckpt)
    rec = weights_record(tiny)
    assert rec["sha256"] == digest and rec["file"] == str(ckpt)
    text = render_report(tiny, [("a.jpg", _jpeg(5))], top_k=1, explain=False)
    assert digest in text and RANDOM_WARNING not in text


def test_cli_report_with_a_bad_photo_and_a_hint(tmp_path, capsys):
    (tmp_path / "good.jpg").write_bytes(_jpeg(6, gps=(-33.87, 151.21)))
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    out = tmp_path / "reports" / "case.html"
    out.parent.mkdir()  # the CLI refuses an output folder that does not exist (test_hostile_cli)
    rc = main(["report", str(tmp_path / "good.jpg"), str(tmp_path / "broken.jpg"), "--model", TEST_MODEL,
               "--top-k", "2", "--regions", "0.5,0.9", "--hint", "a beach", "--hint-weight", "0.25",
               "--output", str(out)])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "RANDOM backbone" in err and "1 photo(s) analysed, 1 could not be read" in err
    text = out.read_text(encoding="utf-8")
    assert "“a beach”, weight 0.25" in text and "broken.jpg" in text and "not an image PIL can read" in text
    assert "geocore report" in text and "--hint-weight 0.25" in text  # the command that reproduces it
    _assert_offline(text)


def test_cli_all_photos_bad_still_writes_the_report(tmp_path, capsys):
    (tmp_path / "a.jpg").write_bytes(b"nope")
    out = tmp_path / "case.html"
    assert main(["report", str(tmp_path / "a.jpg"), "--model", TEST_MODEL, "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "none of the photos could be read" in err
    assert "not an image PIL can read" in out.read_text(encoding="utf-8")


@pytest.mark.parametrize("args, message", [
    (["--regions", "0.5,1.5"], "outside (0, 1)"),
    (["--regions", "90"], "outside (0, 1)"),
    (["--hint", "   "], "--hint"),
    (["--hint-weight", "0.5"], "without --hint"),
    (["--hint", "x", "--hint-weight", "-1"], "--hint-weight"),
    (["--calibration", "missing.json"], "no such file; expected a calibration file"),
])
def test_cli_bad_options_are_one_line(tmp_path, capsys, args, message):
    (tmp_path / "a.jpg").write_bytes(_jpeg(7))
    out = tmp_path / "case.html"
    rc = main(["report", str(tmp_path / "a.jpg"), "--model", TEST_MODEL, "--output", str(out), *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and "\n" not in err and message in err, err
    assert not out.exists()


def test_cli_calibration_of_another_model_is_refused(tmp_path, capsys, tiny):
    cal = fit_calibration(np.linspace(0.1, 0.9, 10), levels=(0.5, 0.9), model="geoclip",
                          fingerprint=tiny.candidate_cells())
    path = cal.save(tmp_path / "cal.json")
    (tmp_path / "a.jpg").write_bytes(_jpeg(8))
    rc = main(["report", str(tmp_path / "a.jpg"), "--model", TEST_MODEL, "--calibration", str(path),
               "--output", str(tmp_path / "case.html")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("error: ") and "fitted for model 'geoclip'" in err[-1], err
    assert sum(line.startswith("error") for line in err) == 1


def test_library_rejects_bad_options(tiny):
    photo = [("a.jpg", _jpeg(9))]
    with pytest.raises(InputError, match="outside"):
        render_report(tiny, photo, levels=(0.0, 0.9))
    with pytest.raises(InputError, match="hint"):
        render_report(tiny, photo, hint="  ")
    with pytest.raises(InputError, match="no photos"):
        render_report(tiny, [])


def test_cell_classifier_report_explains_the_top1_cell():
    from test_geodecoder import tiny_model as tiny_geodecoder  # shared tiny S2 partitions and backbone

    model = tiny_geodecoder()
    rep = build_report(model, [("a.jpg", _jpeg(10, gps=(29.5, -55.5)))], top_k=3)
    case = rep.cases[0]
    assert case.ok and [r.level for r in case.regions] == [0.5, 0.9]
    top1 = int(case.result.prediction.indices.reshape(-1)[0])
    assert case.gradcam and f"fine cell #{top1} " in case.gradcam_note
    assert "geodecoder" in rep.html and f"{case.regions[-1].area_km2:,.0f} km²" in rep.html
    _assert_offline(rep.html)


def test_failing_region_polygons_cost_only_the_drawing(tiny, monkeypatch):
    from geocore.uncertainty.regions import SearchRegion

    def broken(self):
        raise ValueError("degenerate ring")

    monkeypatch.setattr(SearchRegion, "geometry", property(broken))
    rep = build_report(tiny, [("a.jpg", _jpeg(11))], top_k=2, explain=False)
    case = rep.cases[0]
    assert case.ok and case.world_map and "degenerate ring" in case.region_note
    assert "degenerate ring" in rep.html and f"{case.regions[-1].area_km2:,.0f} km²" in rep.html


def test_cli_records_the_checkpoint_sha256(tmp_path, capsys):
    ckpt = tmp_path / "tiny.safetensors"  # the test model's builder ignores it; the CLI hashes what it was given
    ckpt.write_bytes(b"checkpoint" * 500)
    (tmp_path / "a.jpg").write_bytes(_jpeg(12))
    out = tmp_path / "case.html"
    rc = main(["report", str(tmp_path / "a.jpg"), "--model", TEST_MODEL, "--pretrained", str(ckpt),
               "--no-gradcam", "--top-k", "1", "--output", str(out)])
    assert rc == 0, capsys.readouterr().err
    text = out.read_text(encoding="utf-8")
    assert hashlib.sha256(ckpt.read_bytes()).hexdigest() in text and "(tiny.safetensors)" in text
    assert RANDOM_WARNING in text and "--no-gradcam" in text
    assert len(_data_uris(text, "jpeg")) == 1  # the photo only
