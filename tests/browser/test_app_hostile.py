"""Strings from outside (file names, a calibration's model, results rows, a hint, a text query) driven through every
page that shows them, in a real Chromium, with an HTTP listener on 127.0.0.1 that they all point at.

Rendered as Markdown, `![a](http:127.0.0.1:PORT).jpg` would make the browser fetch from the listener (a tracking
beacon) and `www.`/`http://` names would become links. The test fails if the listener receives any request, if a
name is not shown as its literal text, or if any frame holds a link or an image pointing at the listener.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_app_browser import CHROME_ARGS, CHROMIUM, TIMEOUT_MS, _free_port, _photo_bytes, _settle, serve_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]


class _Listener(http.server.ThreadingHTTPServer):
    """Records every request it gets (the beacon the page must never send)."""

    def __init__(self, port: int) -> None:
        self.requests: list[str] = []
        listener = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                listener.requests.append(self.path)
                self.send_response(204)
                self.end_headers()

            do_POST = do_HEAD = do_GET  # noqa: N815

            def log_message(self, *args) -> None:
                pass

        super().__init__(("127.0.0.1", port), Handler)


@contextlib.contextmanager
def listening() -> Iterator[_Listener]:
    server = _Listener(_free_port())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _names(port: int) -> dict[str, str]:
    """The hostile strings, each pointing at the listener (file names cannot hold a slash)."""
    return {
        "photo": f"![a](http:127.0.0.1:{port}).jpg",
        "broken": f"<img src=http:127.0.0.1:{port}> www.127.0.0.1.nip.io.jpg",
        "model": f"![x](http://127.0.0.1:{port}/c) www.example.org",
        "hint": f"![h](http://127.0.0.1:{port}/h)",
        "query": f"![q](http://127.0.0.1:{port}/q) http://127.0.0.1:{port}/link",
        "status": f"![s](http://127.0.0.1:{port}/s)",
        "failed_id": f"![f](http:127.0.0.1:{port}) www.example.org.jpg",
    }


def _results_csv(folder: Path, names: dict[str, str]) -> None:
    """A results CSV whose IMG_ID, model, status and country cells hold the hostile strings: the worst row (the
    photo, present in the image folder) first, then a failed one."""
    n = 6
    lat, lon = np.full(n, 48.8566), np.full(n, 2.3522)
    pred_lat = lat + np.array([30.0, 0.0, 5.0, 1.0, 0.5, 0.1])
    error = (pred_lat - lat) * 111.195
    df = pd.DataFrame({
        "IMG_ID": [names["photo"], names["failed_id"]] + [f"im{i}.jpg" for i in range(n - 2)],
        "LAT": lat, "LON": lon, "PRED_LAT": pred_lat, "PRED_LON": lon, "error_km": error, "model": names["model"],
        "status": "ok", "country": names["status"],
    })
    df.loc[1, ["PRED_LAT", "PRED_LON", "error_km", "status"]] = [None, None, None, names["status"]]
    df.to_csv(folder / "results.csv", index=False)


def _calibration(model: str) -> bytes:
    from geocore.uncertainty.calibration import fit_calibration

    cal = fit_calibration(np.linspace(0.05, 0.99, 40), levels=(0.5, 0.9), model=model, fingerprint="grid:x")
    return json.dumps(cal.to_dict()).encode()


@pytest.fixture(scope="module")
def hostile_app(tmp_path_factory):
    """(page, app URL, listener, names): one server sharing the results CSV and an image folder."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (make test does when it can)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (Python) is not installed")
    tmp = tmp_path_factory.mktemp("hostile")
    shared = tmp / "shared"
    images = shared / "images"
    images.mkdir(parents=True)
    with listening() as listener:
        names = _names(listener.server_address[1])
        _results_csv(shared, names)
        (images / names["photo"]).write_bytes(_photo_bytes())
        with serve_app(tmp, GEOCORE_DATA_DIRS=str(shared), GEOCORE_RESULTS_DIR=str(shared),
                       GEOCORE_IMAGES_DIR=str(images)) as url, sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROME_ARGS, headless=True)
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            yield page, url, listener, names
            context.close()
            browser.close()


def _assert_nothing_points_at(page, listener: _Listener) -> None:
    """No request reached the listener; no frame holds a link or an image (or any element) pointing at it."""
    page.wait_for_timeout(500)  # an image the page had just drawn would be fetched by now
    port = str(listener.server_address[1])
    for frame in page.frames:
        found = frame.evaluate(
            """port => [...document.querySelectorAll('[href], [src], [srcset]')]
                .filter(e => ['href', 'src', 'srcset'].some(a => (e.getAttribute(a) || '').includes(':' + port)))
                .map(e => (e.closest('[data-testid]') || e).outerHTML.slice(0, 600))""", port)
        assert not found, (frame.url, found)
    assert not listener.requests, f"the page fetched from the listener: {listener.requests[:5]}"


def _shown(page, text: str) -> None:
    """Wait until `text` is shown literally on the page (the word joiners `md_text` puts in autolink starts are
    invisible, and left out)."""
    page.wait_for_function("t => document.body.innerText.replaceAll('\\u2060', '').includes(t)", arg=text,
                           timeout=30_000)


def test_hostile_strings_stay_text_on_every_page(hostile_app):
    page, url, listener, names = hostile_app

    # Locate: the calibration's model, a hint, a photo and a broken upload named as markup
    page.goto(url + "/Locate")
    page.wait_for_selector(".st-key-uploads input[type=file]", state="attached")
    _settle(page)
    hint = page.get_by_label("Text hint (optional)", exact=True)
    if hint.is_enabled():
        hint.fill(names["hint"])
        hint.press("Enter")
        _settle(page)
    page.set_input_files(".st-key-calibration_up input[type=file]", files=[
        {"name": "cal.json", "mimeType": "application/json", "buffer": _calibration(names["model"])}])
    page.get_by_text("Calibrated on 40 photos of").wait_for()
    page.set_input_files(".st-key-uploads input[type=file]", files=[
        {"name": names["photo"], "mimeType": "image/jpeg", "buffer": _photo_bytes()},
        {"name": names["broken"], "mimeType": "image/jpeg", "buffer": b"not a jpeg"},
    ])
    page.get_by_text("1 photo(s) located, 1 could not be read.").wait_for()
    for key in ("photo", "broken", "model") + (("hint",) if hint.is_enabled() else ()):
        _shown(page, names[key])
    page.locator("[data-testid='stImage']").filter(has_text="![a](").first.wait_for()  # the photo's caption
    page.locator("h3").filter(has_text="![a](").first.wait_for()  # the result's heading
    _settle(page)
    _assert_nothing_points_at(page, listener)

    # Text query: a query with an image and a bare URL in it
    page.goto(url + "/Text_query")
    box = page.get_by_label("Query A", exact=True)
    box.fill(names["query"])
    box.press("Enter")
    _shown(page, names["query"])
    _settle(page)
    _assert_nothing_points_at(page, listener)

    # Explain: an unreadable upload named as markup gets its one-line error
    page.goto(url + "/Explain")
    page.wait_for_selector("input[type=file]", state="attached")
    page.set_input_files("input[type=file]", files=[
        {"name": names["photo"], "mimeType": "image/jpeg", "buffer": b"not a jpeg"}])
    page.locator("[data-testid='stAlert']").filter(has_text="![a](").first.wait_for()
    _settle(page)
    _assert_nothing_points_at(page, listener)

    # Failures: the results file's model; the worst row opens with its photo (caption: its IMG_ID) and heatmap
    # (the failed row's status in the drill-down: tests/test_app_pages.py)
    page.goto(url + "/Failures")
    page.get_by_text("of 6 images match the filters").wait_for()
    page.get_by_role("tab", name="Worst first").click()
    page.locator("[data-testid='stImage']").filter(has_text="![a](").first.wait_for()  # its caption
    _shown(page, names["model"])
    _settle(page)
    _assert_nothing_points_at(page, listener)
