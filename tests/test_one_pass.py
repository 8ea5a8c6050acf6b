"""One request, one pass (issue #21): `locate` and `report` on two photos read each photo's bytes once, decode them
once, run the image tower once per photo, parse the levels once and score the hint once; a calibration for another
model fails before the model loads; the report shows the answers computed, with their precision and refinement."""

from __future__ import annotations

import io
from collections import Counter
from contextlib import contextmanager

import numpy as np
import pytest
from PIL import Image

from conftest import registered_tiny
from geocore.cli.main import main

MODEL = "geoclip-one-pass"


@pytest.fixture(scope="module")
def tiny():
    with registered_tiny(MODEL, grid_km=1000.0, seed=0) as model:
        yield model


def _photos(folder, n=2):
    paths = []
    for i in range(n):
        arr = (np.random.default_rng(i).random((90, 120, 3)) * 255).astype("uint8")
        path = folder / f"p{i}.jpg"
        Image.fromarray(arr).save(path)
        paths.append(path)
    return paths


def _calibration(model, folder, name=None):
    from geocore.uncertainty.calibration import fit_calibration

    cal = fit_calibration(np.linspace(0.05, 0.99, 60), levels=(0.5, 0.8, 0.9), model=name or MODEL,
                          fingerprint=model.candidate_cells())
    return cal.save(folder / "cal.json")


@contextmanager
def counting(monkeypatch, model):
    """Counts: photo bytes read, photos decoded, images through the image tower, levels parsed (the option's; any
    other: a calibration file's own field), hints scored."""
    import geocore.data.images as images
    import geocore.request as request
    import geocore.uncertainty.calibration as calibration

    seen: Counter = Counter()

    def wrap(module, name, key, count=lambda *a, **k: 1):
        original = getattr(module, name)

        def counted(*args, **kwargs):
            seen[key] += count(*args, **kwargs)
            return original(*args, **kwargs)
        monkeypatch.setattr(module, name, counted)

    wrap(images, "source_bytes", "bytes read")
    wrap(images, "load_image", "decoded")
    wrap(calibration, "parse_levels", "--regions parsed", lambda levels, source="levels": source == "--regions")
    wrap(calibration, "parse_levels", "other levels parsed", lambda levels, source="levels": source != "--regions")
    wrap(request, "text_log_probs", "hints scored")
    tower = model.image_embeddings

    def embeddings(pixels, *args, **kwargs):
        seen["tower images"] += int(pixels.shape[0])
        return tower(pixels, *args, **kwargs)
    monkeypatch.setattr(model, "image_embeddings", embeddings)
    yield seen


def test_locate_reads_decodes_and_embeds_each_photo_once(tiny, tmp_path, monkeypatch, capsys):
    paths = _photos(tmp_path)
    cal = _calibration(tiny, tmp_path)
    with counting(monkeypatch, tiny) as seen:
        assert main(["locate", *map(str, paths), "--model", MODEL, "--regions", "0.5,0.9", "--calibration", str(cal),
                     "--hint", "a coastal city", "--json"]) == 0
    assert seen == {"bytes read": 2, "decoded": 2, "tower images": 2, "--regions parsed": 1,
                    "other levels parsed": 1, "hints scored": 1}  # other: the calibration file's levels field
    assert '"calibrated": true' in capsys.readouterr().out


def test_a_table_of_many_batches_scores_the_hint_once(tiny, tmp_path, monkeypatch):
    paths = _photos(tmp_path, 5)
    with counting(monkeypatch, tiny) as seen:
        assert main(["locate", *map(str, paths), "--model", MODEL, "--hint", "a desert", "--batch-size", "2",
                     "--output", str(tmp_path / "out.csv")]) == 0
    assert seen["hints scored"] == 1 and seen["decoded"] == 5 and seen["tower images"] == 5


def test_report_reads_decodes_and_embeds_each_photo_once(tiny, tmp_path, monkeypatch):
    paths = _photos(tmp_path)
    cal = _calibration(tiny, tmp_path)
    out = tmp_path / "case.html"
    with counting(monkeypatch, tiny) as seen:
        assert main(["report", *map(str, paths), "--model", MODEL, "--regions", "0.5,0.9", "--calibration", str(cal),
                     "--hint", "a coastal city", "--no-gradcam", "--output", str(out)]) == 0
    assert seen == {"bytes read": 2, "decoded": 2, "tower images": 2, "--regions parsed": 1,
                    "other levels parsed": 1, "hints scored": 1}
    with counting(monkeypatch, tiny) as seen:  # Grad-CAM explains the decoded photo: no second read or decode
        assert main(["report", *map(str, paths), "--model", MODEL, "--output", str(out)]) == 0
    assert seen["bytes read"] == 2 and seen["decoded"] == 2


def test_locate_and_report_choose_the_same_levels(tiny, tmp_path, capsys):
    """One default rule: with a calibration of 50/80/90 %, both show all three regions."""
    import json

    [photo] = _photos(tmp_path, 1)
    cal = _calibration(tiny, tmp_path)
    assert main(["locate", str(photo), "--model", MODEL, "--calibration", str(cal), "--json"]) == 0
    [rec] = json.loads(capsys.readouterr().out)
    assert [f["properties"]["level"] for f in rec["regions"]] == [0.5, 0.8, 0.9]
    out = tmp_path / "case.html"
    assert main(["report", str(photo), "--model", MODEL, "--calibration", str(cal), "--no-gradcam",
                 "--output", str(out)]) == 0
    assert "50 %, 80 %, 90 %" in out.read_text(encoding="utf-8")


def test_a_calibration_for_another_model_fails_before_the_model_loads(tiny, tmp_path, monkeypatch, capsys):
    import geocore.models.registry as registry

    [photo] = _photos(tmp_path, 1)
    cal = _calibration(tiny, tmp_path, name="geoclip")

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded")
    monkeypatch.setattr(registry, "load_model_for_user", no_load)
    for command in (["locate", str(photo)], ["report", str(photo), "--output", str(tmp_path / "r.html")]):
        assert main([*command, "--model", MODEL, "--calibration", str(cal)]) == 2
        assert "fitted for model 'geoclip'" in capsys.readouterr().err


def test_the_report_shows_the_answers_computed_with_their_precision_and_refinement(tiny, tmp_path):
    """The app's path: a Case analysed once (refined, a hint) → its report holds exactly those answers."""
    from geocore.cases.analyse import analyse_case
    from geocore.data.images import read_photo
    from geocore.report import report_from_case
    from geocore.request import LocateRequest

    photos = [read_photo(p.read_bytes(), name=p.name) for p in _photos(tmp_path)]
    request = LocateRequest.build(top_k=3, refine=True, full=True, regions_needed=True)
    case = analyse_case(tiny, photos, request)
    html = report_from_case(case, explain=False).html
    assert "re-ranked over dense local points" in html and "fp32 (asked: fp32" in html
    for res in case.results:  # the refined top-1 (off the gallery) is the one the report prints
        lat, lon = res.table[["lat", "lon"]].to_numpy()[0]
        assert f"{lat:.4f}" in html and f"{lon:.4f}" in html
    assert all(r.photo.image is None and r.photo.sha256 == p.sha256 for r, p in zip(case.results, photos))


def test_a_photo_is_read_once_into_bytes_hash_pixels_and_exif():
    from geocore.data.images import read_photo

    img = Image.new("RGB", (64, 48), "red")
    exif = Image.Exif()
    exif[0x8825] = {1: "N", 2: (48.0, 30.0, 0.0), 3: "E", 4: (2.0, 15.0, 0.0)}
    exif[0x010F] = "ACME"
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif)
    photo = read_photo(buf.getvalue(), name="x.jpg")
    assert photo.ok and photo.image.size == (64, 48) and photo.n_bytes == len(buf.getvalue())
    assert photo.exif_gps == pytest.approx((48.5, 2.25)) and photo.exif["make"] == "ACME"
    import hashlib

    assert photo.sha256 == hashlib.sha256(buf.getvalue()).hexdigest()
    bad = read_photo(b"not an image", name="bad.jpg")
    assert not bad.ok and "bad.jpg" in bad.error and bad.image is None
    assert read_photo(photo) is photo
