"""The case report in a real Chromium, opened from file:// with every request that is not file: or data: aborted.

It must make none: the test fails if the page tried any, or if an image did not decode. With
GEOCORE_SAVE_SCREENSHOTS=1 the top of the report is saved to docs/screenshots/report.png for the README.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from test_app_browser import CHROME_ARGS, CHROMIUM, _photo_bytes, _shot  # same Chromium, flags and screenshots

pytestmark = pytest.mark.browser


def _noise_jpeg(seed: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(seed).random((120, 160, 3)) * 255).astype("uint8")).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def report_file(tmp_path_factory) -> Path:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (make test does when it can)")
    pytest.importorskip("playwright.sync_api", reason="playwright (Python) is not installed")
    import torch

    from geocore.geo.gallery import grid_gallery
    from geocore.models.registry import create_model
    from geocore.report import write_report

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = create_model("geoclip-tiny")
        model.set_gallery(grid_gallery(150.0, bbox=(42.0, -5.0, 52.0, 10.0)))  # small regions: a zoomed map too
        out = tmp_path_factory.mktemp("report") / "case.html"
        return write_report(model, [("paris.jpg", _photo_bytes()), ("noise.jpg", _noise_jpeg(1)),
                                    ("broken.jpg", b"not a photo")], out, top_k=3)
    finally:
        torch.set_num_threads(before)


def _open_offline(path: Path, check, shot: str | None = None) -> None:
    """Open `path` from file:// with every other request aborted, run `check(page)`, and fail on any request."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROME_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1280, "height": 1500})
        blocked: list[str] = []

        def gate(route):
            url = route.request.url
            if url.startswith(("file:", "data:")):
                route.continue_()
            else:
                blocked.append(url)
                route.abort()

        context.route("**/*", gate)
        page = context.new_page()
        page.on("request", lambda req: None if req.url.startswith(("file:", "data:")) else blocked.append(req.url))
        page.goto(path.as_uri(), wait_until="load")
        check(page)
        if shot:
            page.evaluate("window.scrollTo(0, 0)")
            _shot(page, shot)
        context.close()
        browser.close()
    assert not blocked, f"the report tried to reach the network: {blocked[:5]}"


def _images(page) -> list:
    images = page.evaluate("Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])")
    assert all(complete and width > 0 for _, complete, width in images), images
    return images


def test_report_opens_offline_with_every_image(report_file):
    def check(page):
        # 2 photos × (photo, Grad-CAM, world map, zoomed map); the broken photo has only its error section
        assert len(_images(page)) == 8
        assert page.locator("#photo-3 .error").inner_text().startswith("Could not be analysed")
        assert page.get_by_text("RANDOM BACKBONE").count() == 1

    _open_offline(report_file, check, shot="report")


def test_case_report_with_references_joint_and_claim_opens_offline(report_file, tmp_path):
    """Reference thumbnails (one with a hostile ID), the joint answer and the claim, all inline (`report_file`:
    skips where Chromium or playwright is missing)."""
    import pandas as pd

    from geocore.models.registry import create_model
    from geocore.refs import build_reference_set
    from geocore.report import write_report

    model = create_model("geoclip-tiny")
    (tmp_path / "images").mkdir()
    ids = ["<img src=x onerror=alert(1)>.jpg", "r1.jpg"]
    for i, name in enumerate(ids):
        (tmp_path / "images" / name).write_bytes(_noise_jpeg(10 + i))
    pd.DataFrame({"IMG_ID": ids, "LAT": [48.85, 40.7], "LON": [2.35, -74.0]}).to_csv(tmp_path / "refs.csv", index=False)
    refs = build_reference_set(model, tmp_path / "refs.csv", images=tmp_path / "images", output=tmp_path / "set",
                               thumbnails=True, progress=False, accelerator="cpu")
    out = write_report(model, [("a.jpg", _noise_jpeg(2)), ("b.jpg", _noise_jpeg(3))], tmp_path / "case.html",
                       top_k=2, explain=False, refs=refs, same_place=True, claim="Paris, France")

    def check(page):
        alts = [alt for alt, _, _ in _images(page)]
        # the joint's map + 2 × (photo, world map, 2 reference thumbnails), and zoomed maps where regions are small
        assert len(alts) >= 9 and sum(a.startswith("reference ") for a in alts) == 4, alts
        assert ids[0] in page.locator("#photo-1").inner_text()  # shown as text, never run
        assert page.locator("#joint .verdict").count() == 1

    _open_offline(out, check)
