"""Search regions end to end: evaluate → calibrate → score → locate with a calibration, as a user runs them.

The model is a stand-in whose distribution is known: each photo's colour encodes a guess; the model spreads
its probability as a Gaussian (σ = 300 km) around the guess over a 5° grid; the truth lies 600 km from the
guess. So the model is over-confident: its raw 50 % region holds the truth for far fewer than half the photos,
and calibration must ask for more mass.
"""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from geocore.cli.main import main
from geocore.eval.results import read_results
from geocore.geo.coords import destination_point
from geocore.geo.distance import haversine_matrix_km
from geocore.geo.gallery import bbox_gallery
from geocore.models.base import GeoLocator
from geocore.models.prediction import Prediction
from geocore.models.registry import register_model, unregister_model

GRID = bbox_gallery(-60.0, -170.0, 70.0, 170.0, 400.0)  # candidates over most of the world
SIGMA_KM, OFFSET_KM = 300.0, 600.0


class GaussianLocator(GeoLocator):
    """p(candidate) ∝ exp(−d(guess, candidate)² / 2σ²), the guess read from the photo's colour."""

    def preprocess(self, image):
        r, g, _ = np.asarray(image.convert("RGB"), dtype=np.float32).reshape(-1, 3).mean(0)
        return torch.tensor([r / 255 * 120 - 55, g / 255 * 330 - 165])  # (lat, lon) of the guess

    def candidate_points(self):
        return GRID

    def predict(self, pixels, top_k=5, *, full=False):
        d = torch.as_tensor(haversine_matrix_km(pixels.double().numpy(), GRID.double().numpy()))
        return Prediction.from_scores(-(d ** 2) / (2 * SIGMA_KM ** 2), GRID, top_k, full=full)


@pytest.fixture
def gauss_model():
    register_model("test-gauss", description="test only", random_ok=True)(lambda pretrained=None: GaussianLocator())
    yield
    unregister_model("test-gauss")


@pytest.fixture
def photos(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "img"
    folder.mkdir()
    rows = []
    for i in range(80):
        rgb = rng.integers(30, 226, 3)
        Image.new("RGB", (8, 8), tuple(int(v) for v in rgb)).save(folder / f"p{i:02d}.png")
        guess = np.array([rgb[0] / 255 * 120 - 55, rgb[1] / 255 * 330 - 165])
        truth = destination_point(guess[None], rng.uniform(0, 360, 1), np.array([OFFSET_KM]))[0]
        rows.append({"IMG_ID": f"p{i:02d}.png", "LAT": truth[0], "LON": truth[1]})
    csv = tmp_path / "bench.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv, folder


def test_evaluate_calibrate_score_and_locate(gauss_model, photos, tmp_path, capsys):
    csv, folder = photos
    results = tmp_path / "r.parquet"
    assert main(["evaluate", "--model", "test-gauss", "--dataset", str(csv), "--images", str(folder),
                 "--output", str(results), "--batch-size", "16"]) == 0
    frame = read_results(results)
    assert {"truth_mass", "area_90_km2", "localizability", "candidates"} <= set(frame.columns)
    assert (frame["area_50_km2"] < frame["area_90_km2"]).all()
    raw_50 = float((frame["truth_mass"] <= 0.5).mean())
    assert raw_50 < 0.3  # over-confident: the truth is two σ away

    cal_path = tmp_path / "cal.json"
    assert main(["calibrate", "--results", str(results), "--output", str(cal_path)]) == 0
    cal = json.loads(cal_path.read_text())
    assert cal["model"] == "test-gauss" and cal["n"] == 80 and cal["levels"] == [0.5, 0.8, 0.9, 0.95]
    assert cal["masses"][0] > 0.5 and cal["masses"] == sorted(cal["masses"])
    capsys.readouterr()

    assert main(["score", "--results", str(results), "--calibration", str(cal_path), "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    for row in scored["coverage"]:  # split conformal: coverage ≥ nominal on the calibration set itself
        assert row["coverage"] >= row["nominal"] - 1e-9
    assert main(["score", "--results", str(results), "--json"]) == 0
    raw = json.loads(capsys.readouterr().out)
    assert raw["coverage"][0]["coverage"] == pytest.approx(raw_50)
    assert [r["fraction"] for r in raw["abstention"]][-1] == 1.0 and raw["recall_vs_area"]
    assert main(["score", "--results", str(results)]) == 0
    assert "not calibrated" in capsys.readouterr().out

    photo = folder / "p00.png"
    assert main(["locate", str(photo), "--model", "test-gauss", "--regions", "0.5,0.9", "--json"]) == 0
    [raw_rec] = json.loads(capsys.readouterr().out)
    assert main(["locate", str(photo), "--model", "test-gauss", "--regions", "0.5,0.9",
                 "--calibration", str(cal_path), "--json"]) == 0
    [cal_rec] = json.loads(capsys.readouterr().out)
    assert cal_rec["calibrated"] is True and raw_rec["calibrated"] is False
    raw_area = [f["properties"]["area_km2"] for f in raw_rec["regions"]]
    cal_area = [f["properties"]["area_km2"] for f in cal_rec["regions"]]
    assert cal_area[0] > raw_area[0] and all(f["geometry"]["type"] in ("Polygon", "MultiPolygon")
                                            for f in cal_rec["regions"])
    out = tmp_path / "case.geojson"
    assert main(["locate", str(photo), "--model", "test-gauss", "--regions", "0.5,0.9", "--calibration",
                 str(cal_path), "--output", str(out), "--top-k", "3"]) == 0
    fc = json.loads(out.read_text())
    kinds = [f["properties"]["kind"] for f in fc["features"]]
    assert kinds == ["candidate"] * 3 + ["search_region"] * 2
    assert [f["properties"]["level"] for f in fc["features"][3:]] == [0.5, 0.9]
    assert all(f["properties"]["calibrated"] is True and f["properties"]["area_km2"] > 0 for f in fc["features"][3:])


def test_bad_levels_and_calibration_files_are_one_line_errors(gauss_model, photos, tmp_path, capsys):
    csv, folder = photos
    photo = str(folder / "p00.png")
    for levels in ("1.5", "0", "0.5,abc", "1"):
        assert main(["locate", photo, "--model", "test-gauss", "--regions", levels]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--regions" in err
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert main(["locate", photo, "--model", "test-gauss", "--calibration", str(broken)]) == 2
    assert "not a calibration file" in capsys.readouterr().err
    other = tmp_path / "other.json"
    from geocore.uncertainty.calibration import fit_calibration

    fit_calibration(np.linspace(0, 1, 50), model="geoclip", fingerprint="abc").save(other)
    assert main(["locate", photo, "--model", "test-gauss", "--calibration", str(other)]) == 2
    assert "fitted for model 'geoclip'" in capsys.readouterr().err
    assert main(["calibrate", "--results", str(tmp_path / "nope.parquet"), "--output", str(other)]) == 2
    assert "no such file; expected a results file" in capsys.readouterr().err


def test_mondrian_calibration_end_to_end(gauss_model, photos, tmp_path, capsys):
    """calibrate writes a Mondrian file by default (with --marginal one mass per level); score shows coverage
    per localizability tercile and whether the photos fit the calibration; locate warns for a photo outside it."""
    csv, folder = photos
    results = tmp_path / "r.parquet"
    assert main(["evaluate", "--model", "test-gauss", "--dataset", str(csv), "--images", str(folder),
                 "--output", str(results), "--batch-size", "16"]) == 0
    cal_path, marginal_path = tmp_path / "cal.json", tmp_path / "marginal.json"
    assert main(["calibrate", "--results", str(results), "--output", str(cal_path)]) == 0
    said = " ".join(capsys.readouterr().out.split())
    # 80 photos: one bin of ≥ 50, too few to cut it by the raw area too
    assert "Mondrian calibration: 1 bin(s) of entropy, too few photos to cut them by log_area90" in said
    cal = json.loads(cal_path.read_text())
    assert cal["method"] == "mondrian" and cal["bins"]["counts"] == [80] and cal["bins"]["merged"] == 9 + 2
    assert cal["bins"]["inner_score"] == "log_area90" and cal["bins"]["inner_edges"] == [[]]
    assert len(cal["localizability"]) == 101 and cal["localizability"] == sorted(cal["localizability"])
    assert cal["bins"]["masses"] == [cal["masses"]]  # one bin: the marginal masses exactly
    assert main(["calibrate", "--results", str(results), "--output", str(marginal_path), "--marginal"]) == 0
    assert json.loads(marginal_path.read_text())["bins"] is None
    capsys.readouterr()

    assert main(["score", "--results", str(results), "--calibration", str(cal_path)]) == 0
    out = capsys.readouterr().out
    assert "coverage per localizability tercile (calibrated)" in out and "least localizable third" in out
    assert "Mondrian" in out and "matches it" in out

    # a calibration that saw only far more localizable photos: the fit check speaks up
    shifted = dict(cal, localizability=[v - 10.0 for v in cal["localizability"]])
    shifted_path = tmp_path / "shifted.json"
    shifted_path.write_text(json.dumps(shifted))
    assert main(["score", "--results", str(results), "--calibration", str(shifted_path)]) == 0
    assert "Coverage may not hold here" in capsys.readouterr().out
    photo = str(folder / "p00.png")
    assert main(["locate", photo, "--model", "test-gauss", "--regions", "0.5,0.9", "--calibration",
                 str(shifted_path)]) == 0
    assert "outside what the calibration saw" in capsys.readouterr().out
    assert main(["locate", photo, "--model", "test-gauss", "--regions", "0.5,0.9", "--calibration",
                 str(cal_path)]) == 0
    assert "outside what the calibration saw" not in capsys.readouterr().out
