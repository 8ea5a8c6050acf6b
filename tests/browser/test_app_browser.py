"""The app in a real Chromium (Playwright, sync API), fully offline.

Starts `streamlit run app/Home.py` on a free local port with the test-only model settings
(GEOCORE_APP_TEST_MODEL=geoclip-tiny, GEOCORE_APP_TEST_GALLERY=small), uploads a photo on the
Locate page and checks that the Leaflet map really rendered inside the component iframe, with the
search region drawn over the heatmap. Every request leaving 127.0.0.1 is blocked and recorded: the
test fails if the page tried any.

Screenshots go to test-artifacts/ (git-ignored). With GEOCORE_SAVE_SCREENSHOTS=1 the main pages
(and the Failures page's "How sure was the model" section) are also saved, palette-compressed, to
docs/screenshots/ for the README.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
from ui.search_regions import REGION_CLASS, REGION_STYLES  # noqa: E402
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts"
DOCS_SHOTS = REPO / "docs" / "screenshots"
CHROME_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 180_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _photo_bytes() -> bytes:
    """A smooth 'landscape' JPEG with EXIF GPS (Paris), small and quick to encode."""
    from PIL import Image

    h, w = 240, 320
    y = np.linspace(0, 1, h)[:, None, None]
    sky, ground = np.array([110, 160, 230]), np.array([70, 120, 60])
    img = np.where(y < 0.55, sky * (1 - 0.4 * y), ground * (0.8 + 0.4 * y)) * np.ones((1, w, 1))
    exif = Image.Exif()
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 24.0), 3: "E", 4: (2.0, 21.0, 8.0)}
    buf = io.BytesIO()
    Image.fromarray(img.clip(0, 255).astype("uint8")).save(buf, format="JPEG", quality=85, exif=exif)
    return buf.getvalue()


def _results(folder: Path) -> None:
    """A small synthetic results file for the Failures page (truths over land, noisy predictions), with the
    search-region columns of probabilities over a 250 km grid gallery: sharp for the close predictions, spread
    out for the far ones (an honest model)."""
    from geocore.eval.coverage import coverage_columns
    from geocore.geo.distance import haversine_km
    from geocore.geo.gallery import grid_gallery
    from geocore.geo.candidates import gallery_cells

    rng = np.random.default_rng(0)
    truth = np.array([[48.86, 2.35], [40.71, -74.0], [35.68, 139.65], [-33.87, 151.21], [30.04, 31.24],
                      [-22.91, -43.17], [51.51, -0.13], [55.76, 37.62], [19.43, -99.13], [28.61, 77.21],
                      [-1.29, 36.82], [39.90, 116.40], [34.05, -118.24], [-34.60, -58.38], [1.35, 103.82]])
    truth = np.repeat(truth, 4, axis=0) + rng.normal(0, 1.0, (60, 2))
    spread = rng.choice([0.05, 1.0, 8.0, 30.0], (60, 1))
    pred = truth + rng.normal(0, 1, (60, 2)) * spread
    pred[:, 0] = pred[:, 0].clip(-89, 89)
    pred[:, 1] = (pred[:, 1] + 180) % 360 - 180
    gallery = grid_gallery(250.0).numpy().astype(np.float64)
    scale_km = 40.0 + 60.0 * spread * rng.uniform(0.5, 1.5, (60, 1))  # km: how spread out each answer is
    logits = -np.stack([haversine_km(p[None], gallery) for p in pred]) / scale_km
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    pd.DataFrame({
        "IMG_ID": [f"im{i:03d}.jpg" for i in range(60)], "LAT": truth[:, 0], "LON": truth[:, 1],
        "PRED_LAT": pred[:, 0], "PRED_LON": pred[:, 1], "error_km": haversine_km(truth, pred),
        "topk_lat": [[v] for v in pred[:, 0]], "topk_lon": [[v] for v in pred[:, 1]], "topk_prob": [[1.0]] * 60,
        "model": "geoclip", "S3_Label": rng.integers(0, 3, 60), "status": "ok",
        **coverage_columns(probs, gallery_cells(gallery), truth),
    }).to_parquet(folder / "demo_results.parquet", index=False)


class ServedApp(str):
    """The served app's URL (a str), with the server's process id and log file: the load bench reads its memory
    (/proc/PID/status) and its log."""

    pid: int
    log_path: Path


@contextlib.contextmanager
def serve_app(tmp: Path, *, home: Path | None = None, **env_extra: str) -> Iterator[ServedApp]:
    """`streamlit run app/Home.py` in test mode on a free 127.0.0.1 port; yields its URL (the benches use it too).
    home: another copy of the app's Home.py to serve (bench/bench_app.py times a saved earlier version beside
    this one)."""
    port = _free_port()
    env = {**os.environ, "GEOCORE_APP_TEST_MODEL": "geoclip-tiny", "GEOCORE_APP_TEST_GALLERY": "small",
           "GEOCORE_APP_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "GEOCORE_CACHE_DIR": str(tmp / "cache"), "MPLBACKEND": "Agg", **env_extra}
    log_path = tmp / "streamlit.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(home or "app/Home.py"), "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + 120
            while True:
                try:
                    with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if proc.poll() is not None or time.time() > deadline:
                    log.flush()
                    raise RuntimeError("streamlit did not start:\n" + log_path.read_text()[-3000:])
                time.sleep(0.2)
            served = ServedApp(url)
            served.pid, served.log_path = proc.pid, log_path
            yield served
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        print(f"skipping: {CHROMIUM} not found (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (make test does when it can)")
    pytest.importorskip("playwright.sync_api", reason="playwright (Python) is not installed")
    tmp = tmp_path_factory.mktemp("app")
    results = tmp / "results"
    results.mkdir()
    _results(results)
    try:
        with serve_app(tmp, GEOCORE_DATA_DIRS=str(results), GEOCORE_RESULTS_DIR=str(results)) as url:
            yield url
    except RuntimeError as err:
        pytest.fail(str(err))


@pytest.fixture(scope="module")
def browser_page(app_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROME_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        blocked: list[str] = []

        def gate(route):
            u = route.request.url
            if u.startswith(("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:", "about:")):
                route.continue_()
            else:
                blocked.append(u)
                route.abort()

        context.route("**/*", gate)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.blocked = blocked  # type: ignore[attr-defined]
        yield page
        context.close()
        browser.close()


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    if os.environ.get("GEOCORE_SAVE_SCREENSHOTS"):
        from PIL import Image

        DOCS_SHOTS.mkdir(parents=True, exist_ok=True)
        img = Image.open(path).convert("RGB")
        img = img.resize((img.width * 3 // 4, img.height * 3 // 4), Image.LANCZOS)
        img.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(DOCS_SHOTS / f"{name}.png", optimize=True)


def _settle(page) -> None:
    """Wait until Streamlit has finished running the script."""
    page.wait_for_selector("[data-testid='stApp']")
    page.wait_for_function("!document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=TIMEOUT_MS)


def _map_frames(page, n: int):
    """The first `n` component iframes holding a rendered Leaflet map with drawn paths."""
    deadline = time.time() + TIMEOUT_MS / 1000
    while time.time() < deadline:
        frames = []
        for el in page.query_selector_all("iframe"):
            f = el.content_frame()
            if f and f.query_selector(".leaflet-container") and len(f.query_selector_all("path")) > 0:
                frames.append(f)
        if len(frames) >= n:
            return frames
        time.sleep(0.5)
    raise AssertionError(f"fewer than {n} rendered Leaflet map(s) on {page.url}")


def test_locate_upload_renders_map_offline(browser_page, app_url):
    page = browser_page
    page.goto(app_url + "/Locate")
    photos = ".st-key-uploads input[type=file]"  # the photo uploader (the sidebar has two more)
    page.wait_for_selector(photos, state="attached")
    page.set_input_files(photos, files=[
        {"name": "paris.jpg", "mimeType": "image/jpeg", "buffer": _photo_bytes()},
        {"name": "broken.jpg", "mimeType": "image/jpeg", "buffer": b"definitely not a jpeg"},
    ])
    page.get_by_text("1 photo(s) located, 1 could not be read.").wait_for(timeout=TIMEOUT_MS)
    page.get_by_text("random backbone, predictions mean nothing").first.wait_for()
    page.get_by_text("not an image PIL can read").first.wait_for()
    page.get_by_text("km away").first.wait_for()  # EXIF truth → error line in km
    frame = _map_frames(page, 1)[0]
    assert frame.query_selector(".leaflet-container")
    assert len(frame.query_selector_all("path.leaflet-interactive")) > 100  # countries + markers + error line
    assert frame.query_selector("img.leaflet-image-layer")  # the probability heatmap overlay
    # a small image (as many pixels as its blur needs) that the browser stretches smoothly, not in blocks
    assert frame.evaluate("getComputedStyle(document.querySelector('img.leaflet-image-layer')).imageRendering") \
        == "auto"
    assert 0 < frame.evaluate("document.querySelector('img.leaflet-image-layer').naturalWidth") < 720
    page.get_by_text("Precision: ").first.wait_for()  # which precision ran (auto by default)
    region = frame.query_selector_all(f"path.{REGION_CLASS}")  # the 90 % search region, drawn over the heatmap
    assert region and all(p.get_attribute("stroke") == REGION_STYLES[0.9]["color"] for p in region)
    assert any(len(p.get_attribute("d") or "") > 20 for p in region)  # a drawn outline, not an empty path
    heat_z = frame.evaluate("getComputedStyle(document.querySelector('img.leaflet-image-layer').parentNode).zIndex")
    region_z = frame.evaluate(f"getComputedStyle(document.querySelector('path.{REGION_CLASS}')"
                              ".closest('.leaflet-pane')).zIndex")
    assert int(region_z) > int(heat_z), (region_z, heat_z)
    _settle(page)
    page.evaluate("""() => [...document.querySelectorAll('h3')].find(e => e.textContent.includes('paris.jpg'))
        .scrollIntoView({block: 'start'})""")  # the result: photo, top-k, map with its region, the regions' table
    page.wait_for_timeout(800)
    _shot(page, "locate")
    assert not page.blocked, f"the page tried to reach the network: {page.blocked[:5]}"


def test_text_query_two_maps(browser_page, app_url):
    page = browser_page
    page.goto(app_url + "/Text_query")
    page.get_by_text("Query B").wait_for()
    frames = _map_frames(page, 2)
    assert all(f.query_selector("img.leaflet-image-layer") for f in frames[:2])
    _settle(page)
    page.get_by_text("Query A").first.scroll_into_view_if_needed()
    page.wait_for_timeout(800)
    _shot(page, "text_query")
    assert not page.blocked, f"the page tried to reach the network: {page.blocked[:5]}"


def test_failures_page(browser_page, app_url):
    page = browser_page
    page.goto(app_url + "/Failures")
    page.get_by_text("of 60 images match the filters").wait_for()
    page.get_by_text("City 25 km").first.wait_for(state="attached")  # the metrics table's header
    page.get_by_role("tab", name="Per country / continent").click()
    page.locator("[data-testid='stImage'] img, [data-testid='stImageContainer'] img").filter(visible=True).first.wait_for()
    _settle(page)
    page.wait_for_timeout(800)
    _shot(page, "failures")
    # how sure the model was: the coverage table and the two figures of the section
    page.get_by_text("How sure was the model").first.scroll_into_view_if_needed()
    page.get_by_text("coverage (%)").first.wait_for(state="attached")
    _settle(page)
    page.evaluate("""() => {const h = [...document.querySelectorAll('h3')].find(e => e.textContent.includes(
        'How sure was the model')); h.scrollIntoView({block: 'start'});}""")
    page.wait_for_timeout(800)
    _shot(page, "failures_uncertainty")
    page.get_by_role("tab", name="Truth → prediction").click()
    chart = page.locator("[data-testid='stDeckGlJsonChart']").filter(visible=True).first
    chart.wait_for()
    canvas = chart.locator("canvas").first
    canvas.wait_for()
    box = canvas.bounding_box()
    assert box and box["width"] > 300 and box["height"] > 200, box
    _settle(page)
    chart.scroll_into_view_if_needed()
    page.wait_for_timeout(1500)
    _shot(page, "failures_lines")
    drawn = _deck_colours(chart.screenshot())
    assert drawn["land"] > 2000, drawn  # the Natural Earth countries (GeoJsonLayer)
    assert drawn["ocean"] > 2000, drawn  # the ocean rectangle under them
    assert drawn["lines"] > 200, drawn  # the error arcs / truth dots in the band colours
    assert not page.blocked, f"the page tried to reach the network: {page.blocked[:5]}"


def _deck_colours(png: bytes) -> dict:
    """Pixels of a deck.gl chart screenshot near the land, ocean and error-band colours."""
    from PIL import Image

    px = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3).astype(int)

    def near(rgb, tol=14):
        return int((np.abs(px - np.array(rgb)).max(1) <= tol).sum())

    bands = [(26, 152, 80), (102, 189, 99), (166, 217, 106), (253, 174, 97), (244, 109, 67), (165, 0, 38)]
    return {"land": near((244, 241, 232), 6), "ocean": near((207, 227, 240), 6),
            "lines": sum(near(c, 40) for c in bands)}


def test_location_embeddings_page(browser_page, app_url):
    page = browser_page
    page.goto(app_url + "/Location_embeddings")
    page.locator("[data-testid='stImage'] img, [data-testid='stImageContainer'] img").filter(visible=True).first.wait_for()
    _settle(page)
    page.wait_for_timeout(800)
    _shot(page, "location_embeddings")
    # similarity to a point: a click on the deck.gl map chooses the point
    page.get_by_role("tab", name="Similarity to a point").click()
    lat_input = page.get_by_label("Latitude")
    assert abs(float(lat_input.input_value()) - 48.8566) < 1e-3
    chart = page.locator("[data-testid='stDeckGlJsonChart']").filter(visible=True).first
    chart.locator("canvas").first.wait_for(state="attached")
    _settle(page)
    chart.scroll_into_view_if_needed()
    page.wait_for_timeout(1500)
    box = chart.bounding_box()
    assert box and box["width"] > 300 and box["height"] > 200, box
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)  # the view's centre: (20°N, 0°E)
    page.wait_for_function("() => Math.abs(parseFloat(document.querySelector('input[aria-label=\"Latitude\"]')"
                           ".value) - 20) < 4", timeout=60_000)
    _settle(page)
    page.wait_for_timeout(1500)
    _shot(page, "location_embeddings_pick")
    lon = float(page.get_by_label("Longitude").input_value())
    assert abs(lon) < 4, lon
    assert not page.blocked, f"the page tried to reach the network: {page.blocked[:5]}"
