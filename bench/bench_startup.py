"""Start-up of the `geocore` command, whole-process, against `python -c "import torch, open_clip"` in the same run.

Each command runs in a fresh interpreter (what a user waits for at the shell); the runs of all commands are
interleaved round by round so that the load of this shared machine falls on each alike.

    python -m bench.bench_startup [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

BASELINE = "python -c 'import torch, open_clip'"
NOTE = ("`--help` and the missing-weights error import none of torch, open_clip, timm, lightning, geopandas, faiss or "
        "transformers (the weights are checked from the weights table before any model code loads; "
        "`tests/test_startup.py`). Locating with GeoCLIP imports neither lightning, geopandas, faiss nor the cell "
        "models' modules; open_clip itself imports timm and transformers, so they stay.")


def _photo(folder: Path) -> Path:
    path = folder / "photo.jpg"
    Image.fromarray((np.random.default_rng(0).random((480, 640, 3)) * 255).astype("uint8")).save(path)
    return path


def commands(folder: Path) -> dict[str, list[str]]:
    """What is timed: the baseline, then geocore's commands as a user types them."""
    py, photo = sys.executable, str(_photo(folder))
    geocore = [py, "-m", "geocore"]
    return {
        BASELINE: [py, "-c", "import torch, open_clip"],
        "geocore --help": [*geocore, "--help"],
        "geocore locate photo.jpg (CLIP weights missing: the error)": [*geocore, "locate", photo],
        "geocore locate photo.jpg --model geoclip-tiny (100K gallery, embeddings cached)":
            [*geocore, "locate", photo, "--model", "geoclip-tiny"],
    }


def run(runs: int = 7) -> list[dict]:
    """Median / min / max seconds per command; the first round is untimed (fills caches: OS, gallery embeddings)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        env = {**os.environ, "GEOCORE_WEIGHTS_DIR": str(folder / "no-weights"), "HF_HUB_CACHE": str(folder / "hf"),
               "HF_HUB_OFFLINE": "1"}
        cmds = commands(folder)
        times: dict[str, list[float]] = {k: [] for k in cmds}
        for round_ in range(runs + 1):
            for name, argv in cmds.items():
                t = time.perf_counter()
                proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900)
                if round_:
                    times[name].append(time.perf_counter() - t)
                if round_ == 0 and proc.returncode not in (0, 3):  # 3: the missing-weights exit code
                    raise RuntimeError(f"{name}: exit {proc.returncode}\n{proc.stderr[-1000:]}")
    base = statistics.median(times[BASELINE])
    return [{"command": k, "median_s": statistics.median(v), "min_s": min(v), "max_s": max(v),
             "x_baseline": statistics.median(v) / base} for k, v in times.items()]


def section(rows: list[dict], runs: int) -> list[str]:
    lines = ["## Start-up", "",
             f"Whole-process wall time of each command in a fresh interpreter (median of {runs} runs, min–max, after "
             "one untimed round; the commands interleaved round by round), against "
             f"`{BASELINE}` measured in the same run.", "",
             "| command | time | × the baseline |", "|---|---|---|"]
    for r in rows:
        lines.append(f"| `{r['command']}` | {r['median_s']:.2f} s ({r['min_s']:.2f}–{r['max_s']:.2f}) | "
                     f"{r['x_baseline']:.2f} |")
    return lines + ["", NOTE]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    print("\n".join(section(run(args.runs), args.runs)))


if __name__ == "__main__":
    main()
