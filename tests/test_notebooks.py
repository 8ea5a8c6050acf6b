"""The exploration notebooks run top to bottom in a fresh kernel, and are committed without outputs.

Each notebook is executed with nbclient in a `python3` kernel whose spec is written into a temporary
JUPYTER_PATH by this venv's ipykernel, so the kernel is this interpreter (never a `python` found on PATH).
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED = ["01_quickstart", "02_text_queries", "03_location_embeddings", "04_evaluation_and_failures",
            "05_search_regions_and_calibration", "06_reference_photos", "07_cases"]
RANDOM_LABEL = "RANDOM backbone — predictions mean nothing"
CELL_TIMEOUT_S = 300


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def _texts(nb: nbformat.NotebookNode) -> str:
    """Everything a user would read in the outputs: streams, plain-text reprs and HTML tables."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                parts.append(out.text)
            elif out.output_type in ("execute_result", "display_data"):
                parts += [str(out.data.get(k, "")) for k in ("text/plain", "text/html")]
    return "\n".join(parts)


def _n_images(nb: nbformat.NotebookNode) -> int:
    return sum("image/png" in out.get("data", {}) for cell in nb.cells for out in cell.get("outputs", []))


def _geoclip_weights_present() -> bool:
    from geocore.models.registry import model_entry

    return model_entry("geoclip").weights_info().present


# --- committed form --------------------------------------------------------------------------------------


def test_every_expected_notebook_is_there():
    assert set(EXPECTED) <= {p.stem for p in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_has_no_outputs(path: Path):
    nb = _read(path)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name} cell {i} has outputs: strip them before committing"
            assert cell.execution_count is None, f"{path.name} cell {i} has an execution count"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_thin(path: Path):
    """Notebooks call geocore and explain; functions and classes belong in the library."""
    nb = _read(path)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "geocore" in code
    assert not re.search(r"^\s*(def|class)\s", code, flags=re.M), f"{path.name} defines functions or classes"
    assert any(c.cell_type == "markdown" for c in nb.cells)


# --- executed --------------------------------------------------------------------------------------------


@pytest.fixture
def venv_kernel(tmp_path, monkeypatch) -> str:
    """A `python3` kernel spec for this interpreter, first on JUPYTER_PATH; returns the kernel name."""
    from ipykernel.kernelspec import install
    from jupyter_client.kernelspec import KernelSpecManager

    prefix = tmp_path / "jupyter-prefix"
    install(kernel_name="python3", prefix=str(prefix))
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    monkeypatch.setenv("GEOCORE_CACHE_DIR", str(tmp_path / "geocore-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # let the kernel use the inline backend (figures as PNG)
    spec = KernelSpecManager().get_kernel_spec("python3")
    assert spec.argv[0] == sys.executable, f"kernel python3 would run {spec.argv[0]}, not {sys.executable}"
    return "python3"


def _execute(path: Path, kernel: str, workdir: Path) -> tuple[nbformat.NotebookNode, float]:
    from nbclient import NotebookClient

    nb = _read(path)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name=kernel,
                            resources={"metadata": {"path": str(workdir)}})
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error
    seconds = time.perf_counter() - start
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors
    print(f"{path.stem}: executed in {seconds:.1f} s")
    return nb, seconds


def _check_01_quickstart(nb: nbformat.NotebookNode, text: str) -> None:
    if _geoclip_weights_present():
        assert "model: geoclip — GeoCLIP" in text
    else:
        assert "GeoCLIP weights missing:" in text and "geocore weights download" in text
        assert f"model: geoclip-tiny — {RANDOM_LABEL}" in text
    assert "Grad-CAM of the similarity to" in text
    assert "place" in text and "country" in text  # the top-k table
    assert _n_images(nb) >= 3  # photo, heat map, Grad-CAM


def _check_02_text_queries(nb: nbformat.NotebookNode, text: str) -> None:
    if _geoclip_weights_present():
        assert "model: geoclip — GeoCLIP" in text
    else:
        assert f"model: geoclip-tiny — {RANDOM_LABEL}" in text
    for query in ("Pyramids of Giza", "Burj Khalifa", "Great Wall of China", "desert", "Boston, Massachusetts"):
        assert query in text
    assert "km from the landmark" in text
    assert _n_images(nb) >= 1  # the maps


def _check_03_location_embeddings(nb: nbformat.NotebookNode, text: str) -> None:
    m = re.search(r"held-out accuracy: ([\d.]+)% \(chance, always the most common continent: ([\d.]+)%\)", text)
    assert m, "the downstream classifier's accuracy is not printed"
    accuracy, chance = float(m.group(1)), float(m.group(2))
    assert accuracy > chance + 20, (accuracy, chance)
    assert "identical on reload: True" in text
    assert "nearest by embedding" in text
    assert _n_images(nb) >= 1  # the PCA map


def _check_04_evaluation_and_failures(nb: nbformat.NotebookNode, text: str) -> None:
    assert f"model: geoclip-tiny — {RANDOM_LABEL}" in text
    assert "12 images evaluated, 0 missing, 0 unreadable" in text
    assert "(n = 12)" in text and "Continent" in text and "Median" in text  # the metrics table
    assert "error_km" in text and "predicted_place" in text  # the worst failures
    assert "accuracy ≤ 2500 km (%)" in text  # the per-continent table
    assert _n_images(nb) >= 2  # the generated images, the choropleth


def _check_05_search_regions_and_calibration(nb: nbformat.NotebookNode, text: str) -> None:
    assert f"model: geoclip-tiny — {RANDOM_LABEL}" in text
    assert "separate areas" in text and "countries" in text  # the regions table
    m = re.search(r"coverage, calibrated.*?\n0\s+50 %\s+[\d.]+\s+([\d.]+)", text, flags=re.S)
    assert m and abs(float(m.group(1)) - 50.0) < 6.0, "calibrated 50 % coverage not near 50 %"
    assert "acc_25km" in text  # the abstention curve
    assert "links to anything outside the file: False" in text and "random-backbone warning: True" in text
    assert _n_images(nb) >= 2  # the map with regions, the abstention curve


def _check_06_reference_photos(nb: nbformat.NotebookNode, text: str) -> None:
    assert f"model: geoclip-tiny — {RANDOM_LABEL}" in text
    assert "12 references" in text and "continent" in text
    m = re.search(r"with references: top-1 ([\d.]+) km from its reference", text)
    assert m and float(m.group(1)) < 1.0, "a re-encoded copy did not answer at its reference"
    assert "the file finds itself: False" in text
    assert "similarity" in text and "ref02.jpg" in text  # the neighbours table


def _check_07_cases(nb: nbformat.NotebookNode, text: str) -> None:
    assert f"model: geoclip-tiny — {RANDOM_LABEL}" in text
    assert "joint (t = 0.58)" in text and "narrowing" in text
    assert "Kharkiv" in text and "km from the top answer" in text and "ambiguous:" in text
    assert re.search(r"\d+ frames kept in 2 segments", text), "the cut did not start a second segment"


CHECKS = {
    "01_quickstart": _check_01_quickstart,
    "02_text_queries": _check_02_text_queries,
    "03_location_embeddings": _check_03_location_embeddings,
    "04_evaluation_and_failures": _check_04_evaluation_and_failures,
    "05_search_regions_and_calibration": _check_05_search_regions_and_calibration,
    "06_reference_photos": _check_06_reference_photos,
    "07_cases": _check_07_cases,
}


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path: Path, venv_kernel, tmp_path):
    """Runs top to bottom with no error, and shows what a user should see."""
    nb, _ = _execute(path, venv_kernel, tmp_path)
    check = CHECKS.get(path.stem)
    if check is not None:  # a new notebook must at least run
        check(nb, _texts(nb))


# --- the notebooks' plotting helpers (geocore.viz) -------------------------------------------------------


def test_viz_helpers_draw_and_check_their_input():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd
    import torch

    from geocore import viz
    from geocore.models.prediction import Prediction

    lats, lons, grid = viz.latlon_grid(30.0)
    assert (len(lats), len(lons), grid.shape) == (6, 12, (72, 2))
    assert lats[0] > lats[-1] and lons[0] < lons[-1]  # north up, west left
    rgb = viz.pca_rgb(np.random.default_rng(0).normal(size=(6, 12, 16)))
    assert rgb.shape == (6, 12, 3) and 0 <= rgb.min() and rgb.max() <= 1
    viz.plot_world_image(rgb, title="t", points={"Paris": (48.9, 2.35)})

    probs = torch.softmax(torch.randn(1, len(grid)), -1)
    full = Prediction.from_scores(probs.log(), torch.as_tensor(grid, dtype=torch.float32), 3, full=True)
    ax = viz.plot_prediction(full, truth=(0.0, 0.0), title="p")
    assert ax.get_title() == "p" and ax.get_xlim() == (-180, 180)
    with pytest.raises(ValueError, match="full=True"):
        viz.plot_prediction(Prediction.from_scores(probs.log(), torch.as_tensor(grid), 3))

    results = pd.DataFrame({"LAT": [48.86, 30.04, -1.29, 0.0], "LON": [2.35, 31.24, 36.82, -30.0],
                            "error_km": [100.0, 3000.0, 20.0, np.nan], "status": ["ok", "ok", "ok", "error: x"]})
    _, table = viz.plot_accuracy_choropleth(results, radius_km=2500)
    assert table.loc["Africa", "images"] == 2 and table.loc["Africa", "accuracy ≤ 2500 km (%)"] == 50.0
    assert table.loc["Europe", "accuracy ≤ 2500 km (%)"] == 100.0 and "(sea)" not in table.index
    with pytest.raises(ValueError, match="continent"):
        viz.plot_choropleth({"FRA": 1.0}, by="planet")
    plt.close("all")
