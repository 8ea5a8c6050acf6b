"""`python -m bench.run --only NAME` replaces that section of bench/RESULTS.md in place and keeps every other one,
those other scripts write included."""

from __future__ import annotations

from bench import run

OLD = """# Benchmark results

- machine: x

## GeoCLIP against the reference `geoclip` package

old geoclip

## Coverage for hard photos: Mondrian calibration (`python -m bench.bench_conditional`)

written by another script

## App: several people at once

_measured 2026-12-02 15:59 UTC_

old load
"""


def test_only_one_section_is_replaced_and_every_other_kept(tmp_path, monkeypatch, capsys):
    out = tmp_path / "RESULTS.md"
    out.write_text(OLD)
    monkeypatch.setattr(run, "OUT", out)
    monkeypatch.setattr(run, "SECTIONS", {
        "geoclip": lambda runs, quick: ["## GeoCLIP against the reference `geoclip` package", "", "new geoclip"],
        "load": lambda runs, quick: ["## App: several people at once", "", f"new load, {runs} runs"]})
    run.main(["--only", "load"])
    text = out.read_text()
    assert "new load, 5 runs" in text and "old load" not in text and "2026-12-02" not in text
    assert "old geoclip" in text and "new geoclip" not in text and "written by another script" in text
    assert text.index("GeoCLIP") < text.index("Coverage for hard photos") < text.index("App: several people")
    assert text.count("## App: several people at once") == 1 and "_measured " in text
