"""The prepared GPU run (bench/gpu_run.py) works end to end: checked here with tiny models on the CPU."""

import json

from bench import gpu_run


def test_smoke_run_writes_every_figure(tmp_path, one_thread):
    assert gpu_run.main(["--smoke", "--out", str(tmp_path), "--scan-sizes", "20000"]) == 0
    data = json.loads((tmp_path / "gpu_results.json").read_text())
    got = {(r["model"], r["what"].split(" (")[0]) for r in data["models"]}
    assert got == {(m, w) for m in ("geoclip", "translocator", "geodecoder") for w in ("evaluate", "training step")}
    assert all(r["images_per_s"] > 0 and r["gflops_per_image"] > 0 for r in data["models"])
    assert [(s["points"], s["queries"]) for s in data["scan"]] == [(20000, 1), (20000, 64)]
    assert set(data["caches"]) == set(gpu_run.CACHES)
    text = (tmp_path / "gpu_section.md").read_text()
    assert text.startswith("## GPU") and text.count("| geoclip |") == 2


def test_ceiling_uses_the_chip_peak():
    assert gpu_run.peak_tflops("NVIDIA H200") == 989.0 and gpu_run.peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    row = gpu_run._row("geoclip", "evaluate", 64, 0.02, 156e9, 989.0)
    assert round(row["ceiling_images_per_s"]) == 6340 and abs(row["use_of_peak"] - 3200 / 6340) < 1e-3
