"""`make bench`: run every benchmark and rewrite bench/RESULTS.md.

`python -m bench.run --only geoclip` re-runs one section (geoclip, scaling, ann, encoder, refine, app, load, hostile,
calibration, hints, precision, startup, regions, shards, gpu) and replaces
it in RESULTS.md, keeping the others; `--quick` uses fewer runs.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import torch

from bench import bench_ann, bench_app, bench_calibration, bench_geoclip, bench_load, hint_weight, refine_heldout
from bench.timing import machine, write_section

OUT = Path(__file__).with_name("RESULTS.md")


def _ratio(base, ours) -> str:
    return f"{base.median_s / ours.median_s:,.0f}×"


def _header(runs: int) -> list[str]:
    return [
        "# Benchmark results",
        "",
        f"- machine: {machine()}",
        f"- each time is the median of {runs} runs (min–max); ratios are baseline / ours, measured in the same run.",
        "",
    ]


def section_geoclip(runs: int, quick: bool) -> list[str]:
    lines = [
        "## GeoCLIP against the reference `geoclip` package",
        "",
        "Same random ViT-L/14 weights on both sides (speed does not depend on the values); real heads and gallery.",
        "",
        "| what | baseline | baseline time | ours | speed-up |",
        "|---|---|---|---|---|",
    ]
    for r in bench_geoclip.locate_and_retrieval(runs):
        lines.append(f"| {r['name']} | {r['baseline']} | {r['baseline_t'].fmt()} | {r['ours_t'].fmt()} | "
                     f"{_ratio(r['baseline_t'], r['ours_t'])} |")
    ev = bench_geoclip.evaluate_throughput(n_images=8 if quick else 16)[0]
    lines += [
        "",
        f"`geocore evaluate` on this CPU (ViT-L/14, batch 8, {ev['n']} images): **{ev['ours_img_s']:.2f} images/s**; "
        f"a loop of `geoclip.predict` over {ev['n_ref']} of the same files: {ev['ref_img_s']:.3f} images/s "
        f"({ev['ours_img_s'] / ev['ref_img_s']:.0f}×).",
    ]
    return lines


def section_scaling(runs: int, quick: bool) -> list[str]:
    lines = [
        "## Retrieval against gallery size",
        "",
        "One query, softmax and top-5 over random unit embeddings (`geocore.models.retrieval.cosine_scores`); baseline = the 10K gallery.",
        "",
        "| gallery points | scan | time per query | × the 10K time | memory (embeddings) |",
        "|---|---|---|---|---|",
    ]
    rows = bench_geoclip.gallery_scaling(runs=runs)
    _plot_scaling(rows, OUT.with_name("scaling.png"))
    for r in rows:
        lines.append(f"| {r['gallery']:,} | {r['scan_dtype']} | {r['t'].fmt()} | "
                     f"{r['t'].median_s / rows[0]['t'].median_s:,.1f} | {r['memory_mb']:,.0f} MB |")
    lines += [
        "",
        "Galleries above 250K points are scanned from float16 (half the memory traffic; scores within 1e-4 of "
        "float32) and cached on disk in float16, memory-mapped (10.2 GB for 10M points, not 20.5 GB). The cost is "
        "linear in the gallery size and bound by memory bandwidth. Above 2M points "
        "(`geocore.models.ann_index.INDEX_ABOVE`) a FAISS approximate index takes over (next section); "
        "`index=\"exact\"` keeps the exact scan at any size.",
        "",
        "![Retrieval time and memory against gallery size](scaling.png)",
    ]
    return lines


def _plot_scaling(rows: list[dict], path: Path) -> None:
    """Time per query and memory against gallery size, log–log, as a PNG beside RESULTS.md."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = [r["gallery"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=100, layout="constrained")
    ax1.errorbar(m, [r["t"].median_s * 1e3 for r in rows], fmt="o-",
                 yerr=[[(r["t"].median_s - r["t"].min_s) * 1e3 for r in rows],
                       [(r["t"].max_s - r["t"].median_s) * 1e3 for r in rows]])
    ax1.set(xscale="log", yscale="log", xlabel="gallery points", ylabel="ms per query (median, min–max)",
            title="retrieval time")
    ax2.plot(m, [r["memory_mb"] for r in rows], "o-", color="tab:orange")
    ax2.set(xscale="log", yscale="log", xlabel="gallery points", ylabel="MB", title="embedding memory")
    for ax in (ax1, ax2):
        ax.grid(True, which="both", alpha=0.3)
    fig.savefig(path)
    plt.close(fig)


def section_ann(runs: int, quick: bool) -> list[str]:
    points = [1_000_000] if quick else [1_000_000, 10_000_000]
    rows = [r for n in points for r in bench_ann.run(n, runs=runs)]
    return ["## Approximate index (FAISS)", "", bench_ann.METHOD, "", *bench_ann.table(rows), "", bench_ann.NOTES]


def section_encoder(runs: int, quick: bool) -> list[str]:
    enc = bench_geoclip.location_encoder_throughput(runs=runs)[0]
    return [
        "## Location encoder throughput",
        "",
        f"{enc['n']:,} points: fp32 {enc['fp32'].fmt()} = **{enc['n'] / enc['fp32'].median_s:,.0f} points/s**; "
        f"bf16 autocast {enc['bf16'].fmt()} = {enc['n'] / enc['bf16'].median_s:,.0f} points/s "
        f"({enc['fp32'].median_s / enc['bf16'].median_s:.2f}× fp32), min cosine to fp32 {enc['bf16_min_cosine']:.4f}. "
        "The cached gallery embeddings are computed in fp32 (training keeps the heads in fp32 too).",
    ]


def section_refine(runs: int, quick: bool) -> list[str]:
    n_refine = 100 if quick else 300
    lines = [
        f"## Refinement (zooming in), on {n_refine:,} held-out gallery points",
        "",
        "Each held-out point's own location embedding (plus noise of the given norm, standing in for an imperfect "
        "image embedding) queries the other 99K points; top-1 error before and after refinement.",
        "",
        "| noise | median km (global) | median km (refined) | ≤1 km global | ≤1 km refined | ≤25 km global | ≤25 km refined | improved | worse |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in refine_heldout.run(n_queries=n_refine):
        lines.append(
            f"| {r['noise']} | {r['median_km_global']:.2f} | {r['median_km_refined']:.2f} | "
            f"{100 * r['acc_1km_global']:.1f}% | {100 * r['acc_1km_refined']:.1f}% | {100 * r['acc_25km_global']:.1f}% | "
            f"{100 * r['acc_25km_refined']:.1f}% | {100 * r['share_improved']:.0f}% | {100 * r['share_worse']:.0f}% |")
    return lines


def section_app(runs: int, quick: bool) -> list[str]:
    return bench_app.section_lines(bench_app.upload_to_heatmap(runs=runs))


def section_load(runs: int, quick: bool) -> list[str]:
    lines = ["## App: several people at once", ""]
    r = bench_load.run_load(8, warmup=2, min_seconds=60.0 if quick else 120.0, min_after_warmup=60 if quick else 200,
                            server_env={"MALLOC_ARENA_MAX": "2"})  # as app/README.md says to run a shared server
    if "skipped" in r:
        return lines + [f"Skipped: {r['skipped']}."]
    return lines + [
        "One app server (`streamlit run app/Home.py`, test model geoclip-tiny with its 1,000 km grid gallery, "
        "offline, `GEOCORE_DATA_DIRS` sharing one folder) and one headless Chromium with a context per person "
        "(`bench/bench_load.py`): 8 Locate sessions, each keeping its page open and again and again removing its "
        "photo and uploading a new one (a different JPEG each time, with its own name and EXIF GPS), plus a Text "
        "query session typing new queries and a Failures session reopening the page and typing `/etc` into the "
        "folder box, all at once on this 2-core machine. Latency: `set_input_files` → the photo's heading and its "
        "heatmap drawn. Each answer is checked to show only that upload's name and EXIF position. Memory: the "
        "server's RSS when every Locate session had finished its warm-up uploads, and at the end. The server runs "
        "as app/README.md says to run a shared one, with `MALLOC_ARENA_MAX=2`: with glibc's default (up to 8 "
        "memory arenas per core, and Streamlit runs each rerun in a new thread) a run of this bench on 2026-12-02 "
        "(the Text and Failures sessions without pauses) grew +11.8 % over 207 uploads after warm-up "
        "(1,465 → 1,637 MB, peak 1,899 MB).",
        "",
        *bench_load.table(r),
    ]


def section_calibration(runs: int, quick: bool) -> list[str]:
    torch.set_num_threads(2)
    result = bench_calibration.run(n_holdout=6_000 if quick else 20_000, n_area=500 if quick else 2_000)
    return [
        "## Calibrated search regions on the real GeoCLIP heads",
        "",
        "Stand-in photos from held-out points of the 100K gallery (`bench/bench_calibration.py`: the real location "
        "encoder and logit scale; the photo's embedding is its place's embedding plus noise of relative norm σ). "
        "Half the photos calibrate (split conformal), the other half test. Raw = regions at the nominal mass; "
        "calibrated = at the mass `geocore calibrate` fits. Requirement: calibrated coverage within 2 points of "
        "nominal at every σ.",
        "",
        *bench_calibration.table(result),
    ]


def section_hints(runs: int, quick: bool) -> list[str]:
    rows = hint_weight.run(n_queries=300 if quick else 1000)
    return [
        "## Text hint weight",
        "",
        "p ∝ p_image · p_text^w on stand-ins built from the real GeoCLIP heads (`bench/hint_weight.py`): a photo "
        "that looks like its place and 1–4 other places, a hint naming the right region (some hints wrong). Each "
        "cell: mean log-probability of the truth's gallery cell (top-1 within 200 km). Baseline: w = 0 (no hint), "
        "same photos.",
        "",
        hint_weight.table(rows),
    ]


def section_hostile(runs: int, quick: bool) -> list[str]:
    """The long variants of the suite's safety tests: 5,000+ fuzzed images and 8,000 tables; 20 kills."""
    import contextlib
    import io
    import os
    import subprocess
    import time

    from bench import bench_fuzz

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = bench_fuzz.main(["--cases", "1000" if quick else "5000", "--table-cases", "200" if quick else "1000"])
    start = time.perf_counter()
    kills = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "slow", "tests/test_kill_resume.py",
                            "-p", "no:cacheprovider"], capture_output=True, text=True,
                           env={**os.environ, "GEOCORE_KILL_RESUME": "20"}, cwd=Path(__file__).resolve().parents[1])
    tail = (kills.stdout.strip().splitlines() or ["(no output)"])[-1]
    return [
        "## Hostile files and kills",
        "",
        "`bench/bench_fuzz.py` (seeded mutations of valid JPEG, PNG, WebP, HEIC, TIFF and GIF files plus crafted bombs; "
        "every CSV / JSON / Parquet reader fed mutated files): each outcome must be an image or the project's one-line "
        "error, within the time and memory bounds. " + ("No escapes." if status == 0 else "**Escapes found: see below.**"),
        "",
        "```text",
        out.getvalue().strip(),
        "```",
        "",
        f"`GEOCORE_KILL_RESUME=20 pytest -m slow tests/test_kill_resume.py` (evaluate SIGKILLed at 20 random moments, "
        f"Parquet and CSV, resumed each time, compared with an uninterrupted run): `{tail}` "
        f"({time.perf_counter() - start:.0f} s).",
    ]


def section_precision(runs: int, quick: bool) -> list[str]:
    from bench import bench_precision

    return bench_precision.section(bench_precision.run(n_geoclip=16 if quick else 48, n_cells=16 if quick else 32))


def section_startup(runs: int, quick: bool) -> list[str]:
    from bench import bench_startup

    return bench_startup.section(bench_startup.run(runs), runs)


def section_regions(runs: int, quick: bool) -> list[str]:
    from bench import bench_regions

    return [
        "## Search-region geometry (cell polygon cache)",
        "",
        "`python -m bench.bench_regions`, in-process: `SearchRegion.geometry` of 50 % and 90 % regions over the "
        "1,000 km grid gallery (the app's test model) and GeoCLIP's 100K MP-16 gallery, with each cell's lon/lat "
        "polygon pieces cached per cells object (`geocore.geo.candidates`), against the computation without the "
        "cache (`polygons_uncached`) in the same run; `n_areas` against `count_areas` as it was before. Cold: the "
        "cache empty (the first region over those cells), warm: filled (every later region: the cells are shared "
        "by every photo and, in the app, every session).",
        "",
        *bench_regions.main([]),
    ]


def section_gpu(runs: int, quick: bool) -> list[str]:
    """The prepared GPU run (`bench/gpu_run.py`) when a GPU is here."""
    if not torch.cuda.is_available():
        return ["## GPU", "", "No GPU was available for this run: no GPU training/evaluation figures. On a GPU, "
                "`python -m bench.gpu_run --out DIR` (about 5–7 minutes) writes this section."]
    import tempfile

    from bench import gpu_run

    with tempfile.TemporaryDirectory() as out:
        gpu_run.main(["--out", out])
        lines = (Path(out) / "gpu_section.md").read_text().rstrip("\n").splitlines()
    return [line for line in lines if not line.startswith("_measured")]  # _stamp adds it


def section_shards(runs: int, quick: bool) -> list[str]:
    from bench import bench_shards

    n = 512 if quick else 2048
    return bench_shards.section(bench_shards.run(n, 128 if quick else 512, runs), runs)


SECTIONS = {
    "geoclip": section_geoclip,
    "scaling": section_scaling,
    "ann": section_ann,
    "encoder": section_encoder,
    "refine": section_refine,
    "app": section_app,
    "load": section_load,
    "calibration": section_calibration,
    "hints": section_hints,
    "hostile": section_hostile,
    "precision": section_precision,
    "startup": section_startup,
    "regions": section_regions,
    "shards": section_shards,
    "gpu": section_gpu,
}


def _stamp(lines: list[str]) -> str:
    when = f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC"
    return "\n".join([lines[0], "", f"_measured {when}_", *lines[1:]])


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    quick = "--quick" in argv
    runs = 3 if quick else 5
    only = argv[argv.index("--only") + 1] if "--only" in argv else None
    if only is not None and only not in SECTIONS:
        raise SystemExit(f"--only: expected one of {', '.join(SECTIONS)}, got {only!r}")
    if not OUT.is_file():
        OUT.write_text("\n".join(_header(runs)) + "\n")
    for name, fn in SECTIONS.items():
        if only is None or name == only:  # each section replaced in place; every other one (other scripts' too) kept
            write_section(_stamp(fn(runs, quick)).split("\n"), SECTION_TITLES[name], OUT)
    print(OUT.read_text())


SECTION_TITLES = {
    "geoclip": "GeoCLIP against the reference",
    "scaling": "Retrieval against gallery size",
    "ann": "Approximate index (FAISS)",
    "encoder": "Location encoder throughput",
    "refine": "Refinement (zooming in)",
    "app": "App: upload to drawn heatmap",
    "load": "App: several people at once",
    "calibration": "Calibrated search regions",
    "hints": "Text hint weight",
    "hostile": "Hostile files and kills",
    "precision": "Precision: bf16 against fp32",
    "startup": "Start-up",
    "regions": "Search-region geometry",
    "shards": "Training from shards",
    "gpu": "GPU",
}


if __name__ == "__main__":
    main()
