"""Several people at once, short: one server, three Chromium sessions uploading three photos each while a Text
query session types. The long run (8 + 2 sessions, 200+ uploads, memory) is the `load` bench section
(`python -m bench.run --only load`, bench/bench_load.py); this is the same driver, sized for the suite."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"


def test_three_sessions_at_once_each_see_only_their_own_results():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (make test does when it can)")
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("playwright (Python) is not installed")
    sys.path.insert(0, str(REPO))
    from bench.bench_load import run_load

    r = run_load(3, uploads_per_session=3, warmup=1, text=True, failures=False)
    assert "skipped" not in r, r.get("skipped")
    assert not r["mixups"], r["mixups"]  # each answer shows its own upload's name and EXIF position only
    assert not r["errors"], r["errors"]  # no exception, no error notice, no timeout
    assert not r["blocked"], r["blocked"][:5]  # nothing requested beyond 127.0.0.1
    assert r["per_session"] == {0: 3, 1: 3, 2: 3} and r["text_queries"] >= 1
    assert r["model_loads"] == {"geoclip-tiny": 1}  # one model for every session
    assert not r["log_leaks"], r["log_leaks"]  # the server's log names no photo and no position
    assert not r["written"], r["written"]  # no upload in the server's temp folder or cache
