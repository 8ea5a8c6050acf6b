"""Several people at once: one app server, many real browser sessions uploading photos at the same time.

The server runs as the browser tests run it (`serve_app` in tests/browser/test_app_browser.py: `streamlit run
app/Home.py` on a free 127.0.0.1 port, test model geoclip-tiny with its 1000 km grid gallery, offline), with
``GEOCORE_DATA_DIRS`` sharing one folder (a results file for the Failures page), a private ``TMPDIR`` and a
test-only hook (``GEOCORE_APP_TEST_LOAD_LOG``) writing one line per model load. Playwright (async API) drives
Debian's Chromium: one browser, one context (a separate user: own cookies, own Streamlit session) per session,
every request leaving 127.0.0.1 blocked and counted.

- Each **Locate** session keeps one page (one Streamlit session) open for the whole run and, again and again,
  removes its last photo and uploads a new one: a different generated JPEG each time, named ``s{session}_u{n}.jpg``
  with its own EXIF GPS. Timed: ``set_input_files`` → the result's heading and the heatmap drawn in its map. Then
  checked, once the script has finished: the only photo name on the page is this upload's, the EXIF position
  shown is this photo's, and there is no exception or error on the page.
- A **Text query** session types a new query, waits for its answer, reads it for 2 s, and again.
- A **Failures** session opens the page (a new session each time), waits for the metrics, types ``/etc`` into the
  folder box, checks it is refused with nothing listed, looks for 10 s, and again.

Measured: uploads served, latency percentiles (after each session's warm-up uploads), the server's RSS
(/proc/PID/status) when every Locate session has finished its warm-up and at the end, model loads (the hook's
lines), non-local requests, and afterwards the server's log, temp folder and cache scanned for the photos' names,
positions and bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import io
import re
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.bench_app import _browser_helpers

REPO = Path(__file__).resolve().parents[1]
BROWSER_TEST = REPO / "tests" / "browser" / "test_app_browser.py"
MODEL = "geoclip-tiny"
LOCAL = ("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:", "about:")
PHOTOS = ".st-key-uploads input[type=file]"  # the Locate page's photo uploader
TIMEOUT_MS = 240_000
POLL_MS = 100
NAME_RE = re.compile(r"s\d+_u\d+\.jpg")
TEXT_PAUSE_S = 2.0  # the Text query person reads each answer this long before the next query
FAILURES_PAUSE_S = 10.0  # the Failures person looks at the page this long before opening it again
QUERIES = ["coastal city", "desert", "mountain village", "rain forest", "harbour", "old town square",
           "ski resort", "rice terraces", "savanna", "fjord"]

_SETTLED = "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
_RESULT_DRAWN = """(name) => {
  const heads = [...document.querySelectorAll('h3')].some(h => h.textContent.trim() === name);
  if (!heads) return false;
  for (const f of document.querySelectorAll('iframe')) {
    try { if (f.contentDocument && f.contentDocument.querySelector('.leaflet-container img.leaflet-image-layer'))
      return true; } catch (e) {}
  }
  return false;
}"""
# the whole answer is on the page: its map comes first (app/ui/photo_answer.py), the EXIF line is the last element
_ANSWER_COMPLETE = "() => /EXIF GPS -?[0-9]/.test(document.body.innerText)"
_REFUSED = """() => document.body.innerText.includes('outside the folders this server shares')
  && !document.body.innerText.includes('of 60 images match the filters')"""
_EMPTY = """() => document.body.innerText.includes('Upload one or more photos to locate them.')
  && ![...document.querySelectorAll('h3')].some(h => h.textContent.trim().endsWith('.jpg'))"""


def photo(session: int, n: int) -> tuple[str, bytes, tuple[float, float]]:
    """Session `session`'s `n`-th photo: (name, JPEG bytes, the EXIF GPS it carries), different every time."""
    from PIL import Image

    rng = np.random.default_rng(1000 * session + n)
    h, w = 180, 240
    y = np.linspace(0, 1, h)[:, None, None]
    x = np.linspace(0, 1, w)[None, :, None]
    sky, ground = rng.uniform(60, 240, 3), rng.uniform(30, 160, 3)
    img = np.where(y < rng.uniform(0.35, 0.7), sky * (1 - 0.4 * y), ground * (0.8 + 0.4 * y)) * (0.85 + 0.3 * x)
    img = img + rng.normal(0, 6, (h, w, 3))
    lat, lon = round(float(rng.uniform(-60, 70)), 4), round(float(rng.uniform(-179, 179)), 4)
    exif = Image.Exif()
    exif[0x8825] = {1: "N" if lat >= 0 else "S", 2: (abs(lat), 0.0, 0.0),
                    3: "E" if lon >= 0 else "W", 4: (abs(lon), 0.0, 0.0)}
    buf = io.BytesIO()
    Image.fromarray(img.clip(0, 255).astype("uint8")).save(buf, format="JPEG", quality=85, exif=exif)
    return f"s{session}_u{n:03d}.jpg", buf.getvalue(), (lat, lon)


def rss_mb(pid: int) -> float:
    """Resident memory of process `pid` in MB (VmRSS of /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time process `pid` has used so far (/proc/PID/stat)."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


@dataclass
class Upload:
    session: int
    n: int
    seconds: float
    done_at: float


@dataclass
class Run:
    """Shared state of one load run: what was served, what went wrong, when to stop."""

    locate_sessions: int
    warmup: int
    per_session: int | None
    min_seconds: float
    min_after_warmup: int
    max_seconds: float
    pid: int
    t0: float = field(default_factory=time.perf_counter)
    uploads: list[Upload] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    mixups: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    text_queries: list[float] = field(default_factory=list)
    failures_views: list[float] = field(default_factory=list)
    refusals: int = 0
    rss_start: float = 0.0
    rss_baseline: float | None = None
    baseline_uploads: int = 0
    baseline_at: float = 0.0
    rss_samples: list[tuple[float, float]] = field(default_factory=list)
    locate_done: int = 0
    names: set[str] = field(default_factory=set)
    positions: set[str] = field(default_factory=set)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def after_warmup(self) -> int:
        return len(self.uploads) - self.baseline_uploads if self.rss_baseline is not None else 0

    def keep_going(self, done: int) -> bool:
        if self.per_session is not None:
            return done < self.per_session
        if self.elapsed() > self.max_seconds:
            return False
        return self.elapsed() < self.min_seconds or self.after_warmup() < self.min_after_warmup

    def record(self, up: Upload) -> None:
        self.uploads.append(up)
        if self.rss_baseline is None:
            counts = Counter(u.session for u in self.uploads)
            if len(counts) == self.locate_sessions and min(counts.values()) >= self.warmup:
                self.rss_baseline, self.baseline_uploads = rss_mb(self.pid), len(self.uploads)
                self.baseline_at = self.elapsed()


async def _new_page(browser, run: Run, label: str):
    ctx = await browser.new_context(viewport={"width": 1280, "height": 900})

    async def gate(route):
        if route.request.url.startswith(LOCAL):
            await route.continue_()
        else:
            run.blocked.append(route.request.url)
            await route.abort()

    await ctx.route("**/*", gate)
    page = await ctx.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.on("pageerror", lambda exc: run.errors.append(f"{label}: page error {exc}"))
    return ctx, page


async def _page_problems(page) -> list[str]:
    out = []
    if await page.locator("[data-testid='stException']").count():
        out.append("exception on the page")
    errors = await page.locator("[data-testid='stAlertContentError']").all_inner_texts()
    out += [f"error notice: {e[:160]}" for e in errors]
    return out


async def locate_session(browser, url: str, sid: int, run: Run) -> None:
    """Upload a new photo again and again in one Streamlit session; check each answer is this photo's."""
    label = f"locate session {sid}"
    ctx, page = await _new_page(browser, run, label)
    try:
        await page.goto(url + "/Locate")
        await page.wait_for_selector(PHOTOS, state="attached")
        await page.wait_for_function(_SETTLED, polling=POLL_MS)
        n = 0
        while run.keep_going(n):
            name, data, (lat, lon) = photo(sid, n)
            run.names.add(name)
            run.positions |= {f"{lat:.4f}", f"{lon:.4f}"}
            try:
                if n:  # remove the last photo: this session's page then holds none
                    await page.locator("[data-testid='stFileChipDeleteBtn']").first.click()
                    await page.wait_for_function(_EMPTY, polling=POLL_MS)
                    await page.wait_for_function(_SETTLED, polling=POLL_MS)
                t = time.perf_counter()
                await page.set_input_files(PHOTOS, files=[{"name": name, "mimeType": "image/jpeg", "buffer": data}])
                await page.wait_for_function(_RESULT_DRAWN, arg=name, polling=POLL_MS)
                seconds = time.perf_counter() - t
                await page.wait_for_function(_ANSWER_COMPLETE, polling=POLL_MS)
                await page.wait_for_function(_SETTLED, polling=POLL_MS)
                text = await page.evaluate("document.body.innerText")
                seen = set(NAME_RE.findall(text))
                if seen != {name}:
                    run.mixups.append(f"{label}, upload {name}: the page shows {sorted(seen)}")
                if f"EXIF GPS {lat:.4f}, {lon:.4f}" not in text:
                    run.mixups.append(f"{label}, upload {name}: its EXIF position {lat:.4f}, {lon:.4f} is not shown")
                run.errors += [f"{label}, upload {name}: {p}" for p in await _page_problems(page)]
                run.record(Upload(sid, n, seconds, run.elapsed()))
            except Exception as exc:  # a timeout or a vanished element: say so, start the page afresh
                run.errors.append(f"{label}, upload {name}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
                await page.goto(url + "/Locate")
                await page.wait_for_selector(PHOTOS, state="attached")
            n += 1
    finally:
        run.locate_done += 1
        await ctx.close()


async def text_session(browser, url: str, run: Run) -> None:
    """Type a new query into Query A again and again while the Locate sessions run."""
    label = "text session"
    ctx, page = await _new_page(browser, run, label)
    try:
        await page.goto(url + "/Text_query")
        box = page.get_by_label("Query A")
        await box.wait_for()
        i = 0
        while run.locate_done < run.locate_sessions:
            query = f"{QUERIES[i % len(QUERIES)]} {i}"
            try:
                t = time.perf_counter()
                await box.fill(query)
                await box.press("Enter")
                await page.get_by_text(f"“{query}” → top-1").first.wait_for()
                run.text_queries.append(time.perf_counter() - t)
                await page.wait_for_function(_SETTLED, polling=POLL_MS)
                run.errors += [f"{label}, {query!r}: {p}" for p in await _page_problems(page)]
            except Exception as exc:
                run.errors.append(f"{label}, {query!r}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
                await page.goto(url + "/Text_query")
                await box.wait_for()
            i += 1
            await _pause(run, TEXT_PAUSE_S)
    finally:
        await ctx.close()


async def failures_session(browser, url: str, run: Run) -> None:
    """Open the Failures page again and again (a new session each time); `/etc` in the folder box is refused."""
    label = "failures session"
    ctx, page = await _new_page(browser, run, label)
    try:
        while run.locate_done < run.locate_sessions:
            try:
                t = time.perf_counter()
                await page.goto(url + "/Failures")
                await page.get_by_text("of 60 images match the filters").wait_for()
                run.failures_views.append(time.perf_counter() - t)
                await page.wait_for_function(_SETTLED, polling=POLL_MS)
                run.errors += [f"{label}: {p}" for p in await _page_problems(page)]
                folder = page.locator("input[aria-label='Results: folder']")
                await folder.fill("/etc")
                await folder.press("Enter")
                await page.wait_for_function(_REFUSED, polling=POLL_MS)  # refused, and the results gone
                await page.wait_for_function(_SETTLED, polling=POLL_MS)
                text = await page.evaluate("document.body.innerText")
                if "passwd" in text or "of 60 images match" in text:
                    run.errors.append(f"{label}: /etc was not refused cleanly")
                else:
                    run.refusals += 1
            except Exception as exc:
                run.errors.append(f"{label}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            await _pause(run, FAILURES_PAUSE_S)
    finally:
        await ctx.close()


async def _pause(run: Run, seconds: float) -> None:
    """A person reading the answer before the next question (cut short when the Locate sessions are done)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end and run.locate_done < run.locate_sessions:
        await asyncio.sleep(0.2)


async def _sample_rss(run: Run, every_s: float = 1.0) -> None:
    while True:
        with contextlib.suppress(OSError, RuntimeError):
            run.rss_samples.append((run.elapsed(), rss_mb(run.pid)))
        await asyncio.sleep(every_s)


async def _drive(url: str, run: Run, helpers, *, text: bool, failures: bool) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=helpers.CHROMIUM, args=helpers.CHROME_ARGS,
                                           headless=True)
        sampler = asyncio.create_task(_sample_rss(run))
        try:
            jobs = [locate_session(browser, url, sid, run) for sid in range(run.locate_sessions)]
            jobs += [text_session(browser, url, run)] if text else []
            jobs += [failures_session(browser, url, run)] if failures else []
            await asyncio.gather(*jobs)
        finally:
            sampler.cancel()
            await browser.close()


def _scan_for_uploads(folders: list[Path], run: Run, photos: list[bytes]) -> list[str]:
    """Files under `folders` that are images or hold any uploaded photo's bytes."""
    chunks = [p[len(p) // 2: len(p) // 2 + 48] for p in photos]
    found = []
    for folder in folders:
        for path in folder.rglob("*") if folder.is_dir() else []:
            if not path.is_file():
                continue
            data = path.read_bytes()
            if data[:3] == b"\xff\xd8\xff" or data[:4] == b"\x89PNG" or any(c in data for c in chunks):
                found.append(str(path))
    return found


def run_load(locate_sessions: int = 8, *, uploads_per_session: int | None = None, warmup: int = 2,
             min_seconds: float = 120.0, min_after_warmup: int = 200, max_seconds: float = 480.0,
             text: bool = True, failures: bool = True, server_env: dict[str, str] | None = None) -> dict:
    """One server, `locate_sessions` Locate sessions (plus a Text query and a Failures session), each uploading
    until `uploads_per_session` (when given) or until `min_seconds` have passed and `min_after_warmup` uploads
    were served after every session's `warmup` uploads (at most `max_seconds`). Returns the figures, or
    {"skipped": reason} when Chromium or Playwright is missing."""
    try:
        helpers = _browser_helpers()
    except Exception as err:
        return {"skipped": f"cannot load the browser test's helpers from {BROWSER_TEST.relative_to(REPO)}: {err}"}
    if not Path(helpers.CHROMIUM).exists():
        return {"skipped": f"{helpers.CHROMIUM} not found (apt-get install chromium)"}
    if importlib.util.find_spec("playwright") is None:
        return {"skipped": "playwright (Python) is not installed"}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        shared, server_tmp, loads = tmp / "shared", tmp / "server_tmp", tmp / "model_loads.txt"
        shared.mkdir()
        server_tmp.mkdir()
        helpers._results(shared)
        with helpers.serve_app(tmp, GEOCORE_APP_TEST_MODEL=MODEL, GEOCORE_DATA_DIRS=str(shared),
                               GEOCORE_RESULTS_DIR=str(shared), GEOCORE_APP_TEST_LOAD_LOG=str(loads),
                               TMPDIR=str(server_tmp), **(server_env or {})) as url:
            run = Run(locate_sessions, warmup, uploads_per_session, min_seconds, min_after_warmup, max_seconds,
                      url.pid)
            run.rss_start, cpu_start = rss_mb(url.pid), cpu_seconds(url.pid)
            asyncio.run(_drive(url, run, helpers, text=text, failures=failures))
            time.sleep(2.0)  # let the last reruns finish before the last reading
            rss_end, cpu = rss_mb(url.pid), cpu_seconds(url.pid) - cpu_start
            log = url.log_path.read_text(errors="replace")
        model_loads = Counter(loads.read_text().split()) if loads.is_file() else Counter()
        photos = [photo(u.session, u.n)[1] for u in run.uploads]
        written = _scan_for_uploads([server_tmp, tmp / "cache"], run, photos)
    leaks = sorted({n for n in run.names if n in log} | {p for p in run.positions if p in log})
    after = [u.seconds for u in run.uploads if u.n >= warmup]
    cold = [u.seconds for u in run.uploads if u.n < warmup]
    peak = max((m for t, m in run.rss_samples if t >= run.baseline_at), default=rss_end) \
        if run.rss_baseline is not None else rss_end
    return {
        "sessions": locate_sessions + int(text) + int(failures),
        "locate_sessions": locate_sessions,
        "uploads": len(run.uploads),
        "uploads_after_warmup": run.after_warmup(),
        "warmup": warmup,
        "seconds": run.elapsed(),
        "p50": percentile(after, 50), "p90": percentile(after, 90), "p99": percentile(after, 99),
        "max": max(after, default=float("nan")),
        "cold_median": statistics.median(cold) if cold else float("nan"),
        "per_session": dict(sorted(Counter(u.session for u in run.uploads).items())),
        "text_queries": len(run.text_queries),
        "text_p50": percentile(run.text_queries, 50), "text_p90": percentile(run.text_queries, 90),
        "failures_views": len(run.failures_views),
        "failures_p50": percentile(run.failures_views, 50),
        "refusals": run.refusals,
        "rss_start_mb": run.rss_start,
        "rss_baseline_mb": run.rss_baseline,
        "rss_end_mb": rss_end,
        "rss_peak_mb": peak,
        "growth": (rss_end / run.rss_baseline - 1) if run.rss_baseline else float("nan"),
        "server_cpu_s": cpu,
        "server_env": dict(server_env or {}),
        "model_loads": dict(model_loads),
        "errors": run.errors,
        "mixups": run.mixups,
        "blocked": run.blocked,
        "log_leaks": leaks,
        "written": written,
        "rss_samples": run.rss_samples,
        "upload_times": [(u.done_at, u.seconds) for u in run.uploads],
    }


def table(r: dict) -> list[str]:
    """The `load` section's lines for bench/RESULTS.md."""
    ok = not (r["errors"] or r["mixups"] or r["blocked"] or r["log_leaks"] or r["written"])
    env = ", ".join(f"`{k}={v}`" for k, v in r["server_env"].items())
    return [
        "| browser sessions at once | uploads served (after warm-up) | upload → results drawn p50 / p90 / p99 (max) "
        "| server RSS after warm-up → end | growth | model loads |",
        "|---|---|---|---|---|---|",
        f"| {r['sessions']} ({r['locate_sessions']} Locate, 1 Text query, 1 Failures) | {r['uploads']:,} "
        f"({r['uploads_after_warmup']:,}) in {r['seconds']:.0f} s | {r['p50']:.1f} / {r['p90']:.1f} / "
        f"{r['p99']:.1f} s ({r['max']:.1f} s) | {r['rss_baseline_mb']:,.0f} MB → {r['rss_end_mb']:,.0f} MB "
        f"(peak {r['rss_peak_mb']:,.0f} MB) | {100 * r['growth']:+.1f} % | "
        + ", ".join(f"{k}: {v}" for k, v in r["model_loads"].items()) + " |",
        "",
        f"Uploads per Locate session: {', '.join(str(v) for v in r['per_session'].values())}; the first "
        f"{r['warmup']} of each (model load, first maps) took {r['cold_median']:.1f} s (median) and are left out of "
        f"the percentiles. Text query: {r['text_queries']} queries answered, p50 {r['text_p50']:.1f} s, p90 "
        f"{r['text_p90']:.1f} s. Failures: {r['failures_views']} page loads (p50 {r['failures_p50']:.1f} s to the "
        f"metrics), `/etc` refused {r['refusals']} times with nothing listed. The server used "
        f"{r['server_cpu_s']:,.0f} CPU seconds ({r['server_cpu_s'] / max(r['uploads'], 1):.2f} s per upload, "
        f"everything else included; Chromium had the rest of the 2 cores). Server RSS at start "
        f"{r['rss_start_mb']:,.0f} MB" + (f"; server environment: {env}" if env else "") + ".",
        "",
        ("Every check held: " if ok else "**Problems:** ")
        + f"{len(r['mixups'])} answers showing another session's photo or position, {len(r['errors'])} errors or "
          f"exceptions, {len(r['blocked'])} non-local requests, {len(r['log_leaks'])} photo names or positions in "
          f"the server log, {len(r['written'])} files in the server's temp folder or cache holding an upload."
        + ("" if ok else " First: " + "; ".join((r["mixups"] + r["errors"] + r["blocked"] + r["log_leaks"]
                                                 + r["written"])[:3])),
    ]


if __name__ == "__main__":  # python -m bench.bench_load [sessions uploads warmup mix]: a quick look
    import json
    import sys

    args = [int(a) for a in sys.argv[1:5]] + [3, 3, 1, 1][len(sys.argv[1:5]):]
    out = run_load(args[0], uploads_per_session=args[1], warmup=args[2], text=bool(args[3]),
                   failures=bool(args[3]))
    print(json.dumps({k: v for k, v in out.items() if k not in ("rss_samples", "upload_times")}, indent=1,
                     default=str))
