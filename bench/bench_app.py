"""The app's own overhead: upload a photo on the Locate page → heatmap drawn, against `locate()` itself.

The app runs as the browser test runs it (tests/browser/test_app_browser.py): `streamlit run
app/Home.py` on a free 127.0.0.1 port with the test-only settings GEOCORE_APP_TEST_MODEL=geoclip-tiny
(random tiny backbone) and GEOCORE_APP_TEST_GALLERY=small (1000 km grid gallery), offline, driven by
Playwright in Debian's Chromium that resolves no host but 127.0.0.1 (any other request is recorded;
no request interception, which would turn the browser's cache off). Each timed run opens a fresh Locate
page (untimed: a new session, so the uploader holds one photo and no earlier map is on the page; its
script finished, the network idle and 0.5 s more, as when someone picks a photo), then times the upload
two ways. In the page, on its own clock (`IN_PAGE_PROBE`, the headline figure): from the photo uploader's
`change` event (the file picked) to the first animation frame in which the probability heatmap
(`img.leaflet-image-layer`, loaded) is in the Leaflet map inside the component iframe, i.e. the frame that
paints it. From outside, as the browser test sees it: from Playwright's `set_input_files` until its polling
finds that overlay; every poll is a DevTools round trip that waits for the page's busy main thread, so this
figure runs 100–400 ms late (Chrome traces of these runs put the image in the DOM that much before the poll
returned). Every run uploads a different generated JPEG, so neither the page's result
cache nor anything else can skip work. One untimed upload first: the model load and the gallery
embedding happen then.

Baseline, in the same run: the same model (same registry name and small grid gallery) and the same
photos through the library, `geocore.locate.locate(model, [(name, bytes)], top_k=5, full=True,
regions=(0.5, 0.9), precision="auto")`, exactly what the Locate page calls (the gallery embedded by one
untimed call first). The two sides are interleaved photo by photo (library, then app), so on a shared
machine both see the same load: with 2 cores and other work running, the tiny model's `locate()` alone
swings from ~12 ms to ~270 ms.
Ratio = app median (in the page) / library median: what the app adds over the prediction itself.

Breakdown of each app run, from the browser's side (events as Playwright reports them, so each mark is
late by up to one ~10 ms poll): the photo's upload request finished; the websocket message carrying the
map's HTML arrived (the page script ran up to the map: locate, regions, map building); the heatmap in
the DOM (the browser parsed the map's page and Leaflet drew it). Also counted: the map HTML's size,
everything the server sent, and the messages the browser sent (one rerun request per upload). In the
same process, the app's map code on the library's result: the heatmap PNG and the whole map
(`prediction_map` + `map_html`).

`python -m bench.bench_app [--runs N] [--before PATH/app/Home.py]` prints the RESULTS.md section;
`--before` also serves a saved copy of an earlier app (e.g. `git archive HEAD app | tar -x -C DIR`, with
app/static/vendor copied beside it) on a second port and times it interleaved with the current one.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import statistics
import tempfile
import sys
import time
from pathlib import Path

import numpy as np

from bench.timing import Timing

REPO = Path(__file__).resolve().parents[1]
BROWSER_TEST = REPO / "tests" / "browser" / "test_app_browser.py"
MODEL = "geoclip-tiny"
GALLERY_KM = 1000.0  # what GEOCORE_APP_TEST_GALLERY=small gives the test model (app/ui/models.py)
TOP_K = 5  # the Locate page's default top-k slider value
HEATMAP = ".leaflet-container img.leaflet-image-layer"  # the heatmap overlay in a map's iframe
PRECISION = "auto"  # the Locate page's default precision (bf16 on a CPU with AVX512-BF16 or AMX)
TIMEOUT_S = 180.0
LOCAL = ("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:", "about:")
LOCAL_ONLY = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"  # Chromium resolves no other host
NON_LOCAL = re.compile("^(?!(?:" + "|".join(re.escape(p) for p in LOCAL) + "))")  # any URL not starting so
PHOTOS = ".st-key-uploads input[type=file]"  # the Locate page's photo uploader (the sidebar has two more)
IDLE_MS = 500  # the pause on a loaded, idle page before each timed upload
# a websocket message this large carries a map's HTML (≥ 15 kB with its heatmap; the others are < 5 kB)
MAP_MESSAGE_BYTES = 12_000


def _browser_helpers():
    """CHROMIUM, CHROME_ARGS, serve_app and _settle from the browser test, loaded by path.

    Importing that module only defines names (its fixtures are not run), so the bench and the test
    share one Chromium path, one set of flags and one "script finished" condition.
    """
    app = str(REPO / "app")
    if app not in sys.path:  # the test imports the app's `ui` package (pytest's `pythonpath = ["app"]`)
        sys.path.insert(0, app)
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
    """Yields `one(photo) -> (seconds, result)` timing `locate()` as the Locate page calls it, on the app's test
    model."""
    import torch

    from geocore.geo.gallery import grid_gallery
    from geocore.locate import locate
    from geocore.models.registry import load_model_for_user

    levels = _app_ui("regions").LEVELS  # the search regions the Locate page asks for

    with tempfile.TemporaryDirectory() as tmp, _env(GEOCORE_CACHE_DIR=tmp, HF_HUB_OFFLINE="1",
                                                    TRANSFORMERS_OFFLINE="1"):
        model = load_model_for_user(MODEL)  # what the app's _load_model_cached does in test mode
        model.set_gallery(grid_gallery(GALLERY_KM))
        top = min(TOP_K, len(model.gallery))

        def one(photo: tuple[str, bytes]):
            t0 = time.perf_counter()
            with torch.no_grad():
                res = locate(model, [photo], top_k=top, full=True, regions=levels, precision=PRECISION)
            t = time.perf_counter() - t0
            assert res[0].ok and res[0].prediction.probs_full is not None, res[0].error
            return t, res[0]

        yield one


def _app_ui(module: str):
    """The app's `ui.<module>` (app/ui/, this checkout), importable as the pages import it."""
    import importlib
    import sys

    app_dir = str(REPO / "app")
    if app_dir not in sys.path:
        sys.path.insert(0, app_dir)
    return importlib.import_module(f"ui.{module}")


def _map_build(res) -> dict[str, float]:
    """Seconds the app's map code (app/ui/maps.py, this checkout) takes on a library result, in this process:
    the heatmap PNG alone, and the whole map with its 90 % region (`prediction_map` + `map_html`, the PNG and the
    region's geometry included)."""
    maps = _app_ui("maps")

    from geocore.tensors import as_numpy

    pred = res.prediction
    latlon, probs = as_numpy(pred.candidates, np.float64), as_numpy(pred.probs_full[0], np.float64)
    t0 = time.perf_counter()
    maps.probability_png(latlon, probs)
    t1 = time.perf_counter()
    html = maps.map_html(maps.prediction_map(pred, res.table, truth=res.exif_gps, truth_km=res.exif_error_km,
                                             region=res.region(0.9)))
    t2 = time.perf_counter()
    assert html is not None, "Leaflet is not installed in app/static/vendor (make setup)"
    return {"png": t1 - t0, "map": t2 - t1}


def _heatmap_drawn(page) -> bool:
    """True once a component iframe holds a Leaflet map with the heatmap overlay image in it."""
    for el in page.query_selector_all("iframe"):  # as the browser test does (srcdoc frames are not in page.frames)
        try:
            frame = el.content_frame()
            if frame and frame.query_selector(HEATMAP):
                return True
        except Exception:  # the iframe was replaced while Streamlit re-rendered: look again
            continue
    return False


# Installed in the page before each timed upload: the page's own clock from the uploader's `change` event (the
# file picked) to the first animation frame in which the heatmap image is in the map's iframe and decoded, so
# painted in that frame. Playwright's polling from outside waits for the page's busy main thread on every
# call, which makes it see the map late (by ~100-400 ms in Chrome traces of these runs); both are reported.
IN_PAGE_PROBE = """([sel, heatmap]) => {
  const probe = window.__geocoreProbe = {picked: null, drawn: null};
  const drawn = () => {
    for (const f of document.querySelectorAll("iframe")) {
      let img = null;
      try { img = f.contentDocument && f.contentDocument.querySelector(heatmap); }
      catch (e) { continue; }
      if (img && img.complete && img.naturalWidth > 0) return true;
    }
    return false;
  };
  const tick = () => { if (drawn()) probe.drawn = performance.now(); else requestAnimationFrame(tick); };
  document.addEventListener("change", e => {
    if (probe.picked === null && e.target.matches && e.target.matches(sel)) {
      probe.picked = e.timeStamp;
      requestAnimationFrame(tick);
    }
  }, true);
}"""


def _upload_and_wait(page, photo: tuple[str, bytes], events: list) -> dict[str, float]:
    """One timed upload: seconds from `set_input_files` to the heatmap overlay present in the map's iframe
    ("total"), with the breakdown marks (see the module docstring) read from `events`, which the page's
    listeners fill with (kind, perf_counter time, size)."""
    name, data = photo
    events.clear()
    t0 = time.perf_counter()
    page.set_input_files(PHOTOS, files=[{"name": name, "mimeType": "image/jpeg", "buffer": data}])
    deadline = t0 + TIMEOUT_S
    frame_at = None
    while not _heatmap_drawn(page):
        if frame_at is None and page.query_selector("iframe"):
            frame_at = time.perf_counter()
        if time.perf_counter() > deadline:
            raise TimeoutError(f"no heatmap drawn {TIMEOUT_S:.0f} s after uploading {name}")
        time.sleep(0.01)
    t = time.perf_counter()
    page.wait_for_function("() => window.__geocoreProbe && window.__geocoreProbe.drawn !== null")
    probe = page.evaluate("() => window.__geocoreProbe")
    seen = list(events)
    uploaded = [when for kind, when, _ in seen if kind == "uploaded"]
    maps = [(when, size) for kind, when, size in seen if kind == "in" and size >= MAP_MESSAGE_BYTES]
    out = {"total": t - t0, "in_page": (probe["drawn"] - probe["picked"]) / 1e3,
           "ws_bytes": float(sum(size for kind, _, size in seen if kind == "in")),
           "sent": float(sum(kind == "out" for kind, _, _ in seen))}
    if uploaded:
        out["upload"] = uploaded[0] - t0
    out["frame"] = (frame_at or t) - t0  # the map's iframe in the page
    if maps:
        out["map_message"], out["map_bytes"] = maps[0][0] - t0, float(maps[0][1])
    return out


def _listen(page, events: list) -> None:
    """Record the upload request's end and every websocket message (kind, time, bytes) into `events`."""
    def on_ws(ws):
        ws.on("framereceived", lambda p: events.append(("in", time.perf_counter(), len(p))))
        ws.on("framesent", lambda p: events.append(("out", time.perf_counter(), len(p))))

    page.on("websocket", on_ws)
    page.on("requestfinished", lambda r: events.append(("uploaded", time.perf_counter(), 0))
            if "/_stcore/upload_file/" in r.url and r.method == "PUT" else None)


@contextlib.contextmanager
def _app_locate(helpers, pw, blocked: list[str], home: Path | None = None):
    """Starts the app (`home`: another copy of Home.py) and a Chromium of Playwright `pw`; yields
    `one(photo) -> marks`, each on a fresh Locate page (`_upload_and_wait`)."""
    with tempfile.TemporaryDirectory() as tmp, \
            helpers.serve_app(Path(tmp), home=home, GEOCORE_APP_TEST_MODEL=MODEL, GEOCORE_RESULTS_DIR=tmp) as url:
        # No request interception here (the browser test routes every request to check it): Playwright turns the
        # HTTP cache off while routing, so each fresh page fetched Streamlit's lazily loaded scripts again from
        # the server busy with the upload, ~1 s more per upload than a browser with its cache. Chromium resolves
        # no host but 127.0.0.1 instead, and every non-local request the page tries is recorded.
        browser = pw.chromium.launch(executable_path=helpers.CHROMIUM, headless=True,
                                     args=[*helpers.CHROME_ARGS, LOCAL_ONLY])
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.on("request", lambda r: blocked.append(r.url) if NON_LOCAL.search(r.url) else None)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_S * 1000)
        events: list = []
        _listen(page, events)

        def one(photo: tuple[str, bytes]) -> dict[str, float]:
            page.goto(url + "/Locate")  # untimed: fresh session, one photo in the uploader, no earlier map
            page.wait_for_selector(PHOTOS, state="attached")
            helpers._settle(page)
            # and idle, as a page is when someone picks a photo: the script's end is not the end of the page's
            # own loading (scripts, fonts, layout), which would otherwise be timed with the upload
            page.wait_for_load_state("networkidle")
            page.wait_for_timeout(IDLE_MS)
            page.evaluate(IN_PAGE_PROBE, [PHOTOS, HEATMAP])
            return _upload_and_wait(page, photo, events)

        try:
            yield one
        finally:
            context.close()
            browser.close()


def _medians(runs: list[dict[str, float]]) -> dict[str, float]:
    """Median of each mark over the runs that have it."""
    keys = {k for r in runs for k in r}
    return {k: statistics.median(r[k] for r in runs if k in r) for k in sorted(keys)}


def upload_to_heatmap(runs: int = 5, before: Path | None = None) -> dict:
    """App (upload → heatmap drawn) vs library (`locate`) on the same photos and model.

    Returns {"app": Timing (in the page), "app_polled": Timing (Playwright's polling), "library": Timing,
    "ratio": app/library, "model", "gallery", "runs", "blocked":
    non-local requests the page tried, "breakdown": median marks of the app runs (seconds, bytes, counts),
    "map_build": median in-process seconds of the map code ("png", "map")}; with `before` (an earlier copy's
    Home.py) also "before": Timing, "before_breakdown", timed interleaved with the others. Or {"skipped":
    reason} when Chromium or Playwright (or the browser test's helpers) is missing.
    """
    try:
        helpers = _browser_helpers()
    except Exception as err:  # e.g. pytest not installed: the helpers live in the browser test module
        return {"skipped": f"cannot load the browser test's helpers from {BROWSER_TEST.relative_to(REPO)}: {err}"}
    if not Path(helpers.CHROMIUM).exists():
        return {"skipped": f"{helpers.CHROMIUM} not found (apt-get install chromium)"}
    if importlib.util.find_spec("playwright") is None:
        return {"skipped": "playwright (Python) is not installed"}
    photos = [_photo(i) for i in range(runs + 1)]  # photos[0]: the untimed warm-up on every side
    blocked: list[str] = []
    lib_t, app_runs, old_runs, builds = [], [], [], []
    from playwright.sync_api import sync_playwright

    with contextlib.ExitStack() as stack:
        lib = stack.enter_context(_library_locate())
        pw = stack.enter_context(sync_playwright())
        app = stack.enter_context(_app_locate(helpers, pw, blocked))
        old = stack.enter_context(_app_locate(helpers, pw, blocked, home=before)) if before else None
        _map_build(lib(photos[0])[1])  # gallery embedding; the map code's imports
        app(photos[0])  # model load and gallery embedding in the server
        if old:
            old(photos[0])
        for photo in photos[1:]:  # interleaved, so every side sees the same load on a shared machine
            t, res = lib(photo)
            lib_t.append(t)
            builds.append(_map_build(res))
            if old:
                old_runs.append(old(photo))
            app_runs.append(app(photo))
    app_timing, lib_timing = _timing([r["in_page"] for r in app_runs]), _timing(lib_t)
    out = {"app": app_timing, "app_polled": _timing([r["total"] for r in app_runs]), "library": lib_timing,
           "ratio": app_timing.median_s / lib_timing.median_s,
           "runs": runs, "model": f"{MODEL} (random tiny backbone)", "gallery": f"{GALLERY_KM:,.0f} km grid",
           "blocked": blocked, "breakdown": _medians(app_runs), "map_build": _medians(builds)}
    if old:
        out["before"], out["before_breakdown"] = _timing([r["in_page"] for r in old_runs]), _medians(old_runs)
    return out


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.0f} ms"


def breakdown_rows(marks: dict[str, float]) -> list[str]:
    """Table cells (upload sent, map message, heatmap drawn in the page, heatmap found by the poll, map HTML,
    sent by the server, sent by the browser) from `upload_to_heatmap`'s median marks."""
    get = marks.get
    return [_ms(get("upload", float("nan"))), _ms(get("map_message", float("nan"))), _ms(marks["in_page"]),
            _ms(marks["total"]), f"{get('map_bytes', 0) / 1e3:,.0f} kB", f"{marks['ws_bytes'] / 1e3:,.0f} kB",
            f"{marks['sent']:.0f}"]


def section_lines(app: dict) -> list[str]:
    """The "App: upload to drawn heatmap" section of bench/RESULTS.md from `upload_to_heatmap`'s result."""
    lines = ["## App: upload to drawn heatmap", ""]
    if "skipped" in app:
        return lines + [f"Skipped: {app['skipped']}."]
    lines += [
        f"Locate page in headless Chromium (Playwright, offline), a different photo each run on a fresh Locate "
        f"page that has finished loading (network idle, then 0.5 s), one untimed upload first. Headline: the "
        f"page's own clock from the uploader's `change` event (the photo picked) to the first animation frame "
        f"with the heatmap image loaded in the map's iframe (the frame that paints it). Also: from Playwright's "
        f"`set_input_files` until its polling finds the overlay (each poll waits for the page's busy main thread, "
        f"so it runs late). Baseline: the same photos through `geocore.locate.locate(model, [(name, bytes)], "
        f"top_k=5, full=True, regions=(0.5, 0.9), precision=\"auto\")` (as the page calls it), interleaved "
        f"photo by photo with the app runs (same load on this shared machine). Model {app['model']}, "
        f"{app['gallery']} gallery (the app's test mode): the figure measures the app's own overhead, not "
        f"ViT-L. Whole process (a Streamlit server and Chromium beside the bench).",
        "",
        "| app: photo picked → heatmap drawn (page's clock) | as Playwright's polling sees it | library: `locate()` "
        "| app / library |",
        "|---|---|---|---|",
        f"| {app['app'].fmt()} | {app['app_polled'].fmt()} | {app['library'].fmt()} | {app['ratio']:,.0f}× |",
        "",
        "Where the time goes (medians; `python -m bench.bench_app`): from `set_input_files`, the photo's upload "
        "request finished and the websocket message with the map's HTML arrived (the page script ran to the "
        "map); the heatmap drawn (page's clock, from the `change` event) and found by the poll; the map HTML and "
        "everything the server sent per upload; messages the browser sent (the uploader's file-URL request and "
        "one rerun request).",
        "",
        "| app | upload sent | map message | heatmap drawn | found by the poll | map HTML | server → browser "
        "| browser → server |",
        "|---|---|---|---|---|---|---|---|",
    ]
    if "before" in app:
        lines.append("| before (earlier copy, same run) | " + " | ".join(breakdown_rows(app["before_breakdown"]))
                     + " |")
    lines.append("| now | " + " | ".join(breakdown_rows(app["breakdown"])) + " |")
    build = app["map_build"]
    lines += ["", f"The map code in-process on the library's results (app/ui/maps.py): heatmap PNG "
                  f"{_ms(build['png'])}, whole map (`prediction_map` + `map_html`) {_ms(build['map'])}. "
                  f"Non-local requests the pages tried (blocked): {len(app['blocked'])}."]
    return lines


def main(argv: list[str] | None = None) -> None:
    """`python -m bench.bench_app [--runs N] [--before PATH/Home.py]`: print the RESULTS.md section."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--before", type=Path, default=None, help="an earlier copy's app/Home.py, timed beside")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    print("\n".join(section_lines(upload_to_heatmap(args.runs, before=args.before))))


if __name__ == "__main__":
    main()
