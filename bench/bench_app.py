"""The app's own overhead: upload a photo on the Locate page → heatmap drawn, against `locate()` itself.

The app runs as the browser test runs it (tests/browser/test_app_browser.py): `streamlit run
app/Home.py` on a free 127.0.0.1 port with the test-only settings GEOCORE_APP_TEST_MODEL=geoclip-tiny
(random tiny backbone) and GEOCORE_APP_TEST_GALLERY=small (1000 km grid gallery), offline, driven by
Playwright in Debian's Chromium with every non-local request blocked. Each timed run opens a fresh
Locate page (untimed: a new session, so the uploader holds one photo and no earlier map is on the
page), then times from `set_input_files` until the probability heatmap overlay
(`img.leaflet-image-layer`) is present in the Leaflet map inside the component iframe (the condition
the browser test checks). Every run uploads a different generated JPEG, so neither the page's result
cache nor anything else can skip work. One untimed upload first: the model load and the gallery
embedding happen then.

Baseline, in the same run: the same model (same registry name and small grid gallery) and the same
photos through the library, `geocore.locate.locate(model, [(name, bytes)], top_k=5, full=True)`,
exactly what the Locate page calls (the gallery embedded by one untimed call first). The two sides
are interleaved photo by photo (library, then app), so on a shared machine both see the same load:
with 2 cores and other work running, the tiny model's `locate()` alone swings from ~12 ms to ~270 ms.
Ratio = app median / library median: what the app adds over the prediction itself.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.timing import Timing

REPO = Path(__file__).resolve().parents[1]
BROWSER_TEST = REPO / "tests" / "browser" / "test_app_browser.py"
MODEL = "geoclip-tiny"
GALLERY_KM = 1000.0  # what GEOCORE_APP_TEST_GALLERY=small gives the test model (app/ui/models.py)
TOP_K = 5  # the Locate page's default top-k slider value
TIMEOUT_S = 180.0
LOCAL = ("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:", "about:")


def _browser_helpers():
    """CHROMIUM, CHROME_ARGS, serve_app and _settle from the browser test, loaded by path.

    Importing that module only defines names (its fixtures are not run), so the bench and the test
    share one Chromium path, one set of flags and one "script finished" condition.
    """
    spec = importlib.util.spec_from_file_location("_geocore_browser_test_helpers", BROWSER_TEST)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _photo(i: int) -> tuple[str, bytes]:
    """A different smooth 'landscape' JPEG per `i` (320×240, EXIF GPS), like the browser test's photo."""
    from PIL import Image

    rng = np.random.default_rng(i)
    h, w = 240, 320
    y = np.linspace(0, 1, h)[:, None, None]
    x = np.linspace(0, 1, w)[None, :, None]
    sky, ground = rng.uniform(60, 240, 3), rng.uniform(30, 160, 3)
    horizon = rng.uniform(0.35, 0.7)
    img = np.where(y < horizon, sky * (1 - 0.4 * y), ground * (0.8 + 0.4 * y)) * (0.85 + 0.3 * x)
    img = img + rng.normal(0, 6, (h, w, 3))
    lat, lon = rng.uniform(-60, 70), rng.uniform(-179, 179)
    exif = Image.Exif()
    exif[0x8825] = {1: "N" if lat >= 0 else "S", 2: (float(int(abs(lat))), float(int(abs(lat) % 1 * 60)), 0.0),
                    3: "E" if lon >= 0 else "W", 4: (float(int(abs(lon))), float(int(abs(lon) % 1 * 60)), 0.0)}
    buf = io.BytesIO()
    Image.fromarray(img.clip(0, 255).astype("uint8")).save(buf, format="JPEG", quality=85, exif=exif)
    return f"photo{i:02d}.jpg", buf.getvalue()


def _timing(times: list[float]) -> Timing:
    return Timing(statistics.median(times), min(times), max(times), len(times))


@contextlib.contextmanager
def _env(**values: str):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _library_locate():
    """Yields `one(photo) -> seconds` timing `locate()` as the Locate page calls it, on the app's test model."""
    import torch

    from geocore.geo.gallery import grid_gallery
    from geocore.locate import locate
    from geocore.models.registry import load_model_for_user

    with tempfile.TemporaryDirectory() as tmp, _env(GEOCORE_CACHE_DIR=tmp, HF_HUB_OFFLINE="1",
                                                    TRANSFORMERS_OFFLINE="1"):
        model = load_model_for_user(MODEL)  # what the app's _load_model_cached does in test mode
        model.set_gallery(grid_gallery(GALLERY_KM))
        top = min(TOP_K, len(model.gallery))

        def one(photo: tuple[str, bytes]) -> float:
            t0 = time.perf_counter()
            with torch.no_grad():
                res = locate(model, [photo], top_k=top, full=True)
            t = time.perf_counter() - t0
            assert res[0].ok and res[0].prediction.probs_full is not None, res[0].error
            return t

        yield one


def _heatmap_drawn(page) -> bool:
    """True once a component iframe holds a Leaflet map with the heatmap overlay image in it."""
    for el in page.query_selector_all("iframe"):  # as the browser test does (srcdoc frames are not in page.frames)
        try:
            frame = el.content_frame()
            if frame and frame.query_selector(".leaflet-container img.leaflet-image-layer"):
                return True
        except Exception:  # the iframe was replaced while Streamlit re-rendered: look again
            continue
    return False


def _upload_and_wait(page, photo: tuple[str, bytes]) -> float:
    """Seconds from `set_input_files` to the heatmap overlay present in the map's iframe."""
    name, data = photo
    t0 = time.perf_counter()
    page.set_input_files("input[type=file]", files=[{"name": name, "mimeType": "image/jpeg", "buffer": data}])
    deadline = t0 + TIMEOUT_S
    while not _heatmap_drawn(page):
        if time.perf_counter() > deadline:
            raise TimeoutError(f"no heatmap drawn {TIMEOUT_S:.0f} s after uploading {name}")
        time.sleep(0.01)
    return time.perf_counter() - t0


@contextlib.contextmanager
def _app_locate(helpers, blocked: list[str]):
    """Starts the app and Chromium; yields `one(photo) -> seconds`, each on a fresh Locate page."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, \
            helpers.serve_app(Path(tmp), GEOCORE_APP_TEST_MODEL=MODEL, GEOCORE_RESULTS_DIR=tmp) as url, \
            sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=helpers.CHROMIUM, args=helpers.CHROME_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})

        def gate(route):
            if route.request.url.startswith(LOCAL):
                route.continue_()
            else:
                blocked.append(route.request.url)
                route.abort()

        context.route("**/*", gate)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_S * 1000)

        def one(photo: tuple[str, bytes]) -> float:
            page.goto(url + "/Locate")  # untimed: fresh session, one photo in the uploader, no earlier map
            page.wait_for_selector("input[type=file]", state="attached")
            helpers._settle(page)
            return _upload_and_wait(page, photo)

        try:
            yield one
        finally:
            context.close()
            browser.close()


def upload_to_heatmap(runs: int = 5) -> dict:
    """App (upload → heatmap drawn) vs library (`locate`) on the same photos and model.

    Returns {"app": Timing, "library": Timing, "ratio": app/library, "model", "gallery", "runs",
    "blocked": non-local requests the page tried}, or {"skipped": reason} when Chromium or
    Playwright (or the browser test's helpers) is missing.
    """
    try:
        helpers = _browser_helpers()
    except Exception as err:  # e.g. pytest not installed: the helpers live in the browser test module
        return {"skipped": f"cannot load the browser test's helpers from {BROWSER_TEST.relative_to(REPO)}: {err}"}
    if not Path(helpers.CHROMIUM).exists():
        return {"skipped": f"{helpers.CHROMIUM} not found (apt-get install chromium)"}
    if importlib.util.find_spec("playwright") is None:
        return {"skipped": "playwright (Python) is not installed"}
    photos = [_photo(i) for i in range(runs + 1)]  # photos[0]: the untimed warm-up on both sides
    blocked: list[str] = []
    lib_t, app_t = [], []
    with _library_locate() as lib, _app_locate(helpers, blocked) as app:
        lib(photos[0])  # gallery embedding
        app(photos[0])  # model load and gallery embedding in the server
        for photo in photos[1:]:  # interleaved, so both sides see the same load on a shared machine
            lib_t.append(lib(photo))
            app_t.append(app(photo))
    app_timing, lib_timing = _timing(app_t), _timing(lib_t)
    return {"app": app_timing, "library": lib_timing, "ratio": app_timing.median_s / lib_timing.median_s,
            "runs": runs, "model": f"{MODEL} (random tiny backbone)", "gallery": f"{GALLERY_KM:,.0f} km grid",
            "blocked": blocked}
