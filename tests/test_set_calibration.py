"""Calibrating joint answers on labelled photo sets (`geocore.cases.set_calibration`, `geocore calibrate --sets`).

The exact case: a stand-in model whose "red" photos give a distribution q over 60 candidates and whose grey photos
give the uniform one. A set of two red and two grey photos (grey first) has the joint (q·q·u·u)^(1/2) ∝ q under the
tempered product of `geocore.cases.joint` (t = 1/√4), so its truth masses are known in closed form: with q's
density strictly decreasing in candidate order, a truth in candidate r has truth mass Σ_{j<r} q_j. One set per
candidate: the fitted mass at level p must be the ⌈(N+1)p⌉-th smallest of them, and the joint regions must hold
the truth for exactly ⌈(N+1)p⌉ of the N sets. Any other combination (the plain product, the first photo alone, a
mixture) gives other masses.
"""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from conftest import registered_tiny  # noqa: E402
from geocore.cases.joint import joint_locate
from geocore.cases.set_calibration import calibrate_sets
from geocore.cli.main import main
from geocore.data.datasets import read_sets_csv
from geocore.errors import InputError
from geocore.locate import locate
from geocore.models.base import GeoLocator
from geocore.models.prediction import Prediction
from geocore.request import LocateRequest
from geocore.uncertainty.calibration import DEFAULT_LEVELS, SINGLE_ON_JOINT, Calibration, fit_calibration
from geocore.uncertainty.regions import truth_mass

M = 60
RED, GREY = (220, 20, 20), (90, 90, 90)


def _png(rgb) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), rgb).save(buf, format="PNG")
    return buf.getvalue()


class SharpOrFlat(GeoLocator):
    """Red photos: log q over the candidates; any other photo: the uniform distribution."""

    model_name = "test-sets"

    def __init__(self) -> None:
        super().__init__()
        rng = np.random.default_rng(3)
        xyz = rng.normal(size=(M, 3))
        xyz /= np.linalg.norm(xyz, axis=1, keepdims=True)
        self.points = torch.tensor(np.c_[np.degrees(np.arcsin(xyz[:, 2])),
                                         np.degrees(np.arctan2(xyz[:, 1], xyz[:, 0]))], dtype=torch.float32)
        area = self.candidate_cells().areas_km2.astype(np.float64)
        logq = np.log(area) - 0.2 * np.arange(M)  # density q_j / area_j ∝ exp(-0.2 j): strictly decreasing in j
        self.logq = torch.tensor(logq - np.logaddexp.reduce(logq), dtype=torch.float32)

    def preprocess(self, image):
        r, g, _ = np.asarray(image.convert("RGB"), dtype=np.float32).reshape(-1, 3).mean(0)
        return torch.tensor([1.0 if r > g + 50 else 0.0])

    def candidate_points(self):
        return self.points

    def predict(self, pixels, top_k=5, *, full=False):
        return Prediction.from_scores(pixels.reshape(-1, 1) * self.logq[None], self.points, top_k, full=full)


@pytest.fixture(scope="module")
def sharp():
    return SharpOrFlat().eval()


def _known_sets(model):
    """One set of four photos (grey, red, grey, red) per candidate, its truth at the candidate; the truth masses."""
    q = model.logq.double().exp().numpy()
    expected = np.concatenate([[0.0], np.cumsum(q)[:-1]])  # truth in candidate r: the mass of candidates 0..r-1
    photos = [(f"s{r}", f"s{r}-{i}.png", _png(GREY if i % 2 == 0 else RED)) for r in range(M) for i in range(4)]
    truths = {f"s{r}": tuple(model.points[r].tolist()) for r in range(M)}
    return photos, truths, expected


def test_the_fitted_masses_are_the_conformal_quantiles_of_the_joint_truth_masses(sharp):
    photos, truths, expected = _known_sets(sharp)
    done = calibrate_sets(sharp, photos, truths, LocateRequest.build(precision="fp32"), chunk=50)
    cal = done.calibration
    assert cal.n == M and cal.photos_per_set == (4, 4) and cal.on_sets and cal.kind == "sets of 4 photos"
    assert done.sets["n_photos"].tolist() == [4] * M and not done.skipped and not done.dropped
    np.testing.assert_allclose(done.sets["truth_mass"], expected, atol=2e-6)
    ranked = np.sort(expected)
    for level, mass in zip(cal.levels, cal.masses):
        k = math.ceil((M + 1) * level - 1e-9)
        assert mass == pytest.approx(ranked[k - 1], abs=2e-6), level
    assert tuple(cal.levels) == DEFAULT_LEVELS
    # used on the same joint answers, the regions hold the truth for exactly ⌈(N+1)p⌉ of the N sets
    results = locate(sharp, [(n, s) for _, n, s in photos], full=True, precision="fp32")
    held = {p: 0 for p in (0.5, 0.9)}
    for r in range(M):
        joint = joint_locate(results[4 * r : 4 * r + 4], sharp, levels=(0.5, 0.9), calibration=cal)
        assert joint.calibration_note == "" and joint.calibration_kind == "sets of 4 photos" and joint.calibrated
        for p in held:
            held[p] += r in set(joint.region(p).indices.tolist())
    assert held == {p: math.ceil((M + 1) * p - 1e-9) for p in held}


def test_kinds_that_do_not_match_are_said_and_single_photos_keep_their_meaning(sharp):
    photos, truths, expected = _known_sets(sharp)
    set_cal = calibrate_sets(sharp, photos[: 4 * 30], truths, levels=(0.5, 0.9), mondrian=False).calibration
    single = fit_calibration(expected, (0.5, 0.9), model=sharp.model_name, fingerprint=sharp.candidate_cells())
    assert single.photos_per_set == (1, 1) and not single.on_sets
    results = locate(sharp, [(n, s) for _, n, s in photos[:4]], full=True)
    # a single-photo calibration on a joint answer: still regions, calibrated, but marked
    joint = joint_locate(results, sharp, calibration=single)
    assert joint.calibrated and joint.calibration_note == SINGLE_ON_JOINT
    assert all(r.calibration_note == SINGLE_ON_JOINT for r in joint.regions)
    assert joint.to_json()["calibration_note"] == SINGLE_ON_JOINT
    assert joint.regions[0].to_feature()["properties"]["calibration_kind"] == "single photos"
    # the same calibration on single photos: calibrated, no note (as before)
    [alone] = locate(sharp, [photos[1][1:]], regions=(0.5, 0.9), calibration=single)
    assert alone.calibrated and all(r.calibration_note == "" for r in alone.regions)
    # a set calibration on one photo, and on a set of another size: said too
    [alone] = locate(sharp, [photos[1][1:]], regions=(0.5, 0.9), calibration=set_cal)
    assert alone.calibrated and "calibrated on photo sets (sets of 4 photos)" in alone.regions[0].calibration_note
    two = joint_locate(results[:2], sharp, calibration=set_cal)
    assert "this answer joins 2" in two.calibration_note
    assert joint_locate(results, sharp, calibration=set_cal).calibration_note == ""


def test_old_calibration_files_load_as_single_photo_ones(tmp_path):
    cal = fit_calibration(np.linspace(0, 1, 101), (0.5, 0.9), model="m", fingerprint="f", photos_per_set=(2, 5))
    data = cal.to_dict()
    assert data["photos_per_set"] == [2, 5]
    assert Calibration.from_bytes(json.dumps(data).encode()).photos_per_set == (2, 5)
    del data["photos_per_set"]  # as written before set calibrations
    old = Calibration.from_bytes(json.dumps(data).encode(), "old.json")
    assert old.photos_per_set == (1, 1) and old.kind == "single photos" and old.note_for(1) == ""
    assert old.note_for(3) == SINGLE_ON_JOINT and old.masses == cal.masses
    for bad in ([0, 2], [3, 2], [1], "2-5", [1.5, 2], [True, 2]):
        data["photos_per_set"] = bad
        with pytest.raises(InputError, match="field 'photos_per_set'") as err:
            Calibration.from_bytes(json.dumps(data).encode(), "bad.json")
        assert "\n" not in str(err.value)


# --- the command -------------------------------------------------------------------------------------------------

MODEL = "sets-tiny"


@pytest.fixture(scope="module")
def tiny():
    with registered_tiny(MODEL, grid_km=2000.0, seed=0) as model:
        yield model


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """24 sets of 2 or 3 noise photos with random true positions: SETS.csv and the folder."""
    folder = tmp_path_factory.mktemp("sets")
    rng = np.random.default_rng(1)
    rows = []
    for s in range(24):
        lat, lon = rng.uniform(-60, 70), rng.uniform(-180, 180)
        for i in range(2 + s % 2):
            name = f"set{s}_{i}.png"
            Image.fromarray((rng.random((24, 32, 3)) * 255).astype("uint8")).save(folder / name)
            rows.append({"SET_ID": f"set{s}", "IMG_ID": name, "LAT": round(lat, 4), "LON": round(lon, 4)})
    csv = folder / "sets.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv, folder


def test_calibrate_sets_end_to_end_and_its_use(tiny, labelled, tmp_path, capsys):
    csv, folder = labelled
    out = tmp_path / "sets.calibration.json"
    assert main(["calibrate", "--sets", str(csv), "--images", str(folder), "--model", MODEL, "--output", str(out),
                 "--precision", "fp32"]) == 0
    printed = capsys.readouterr().out
    assert "24 set(s) of 2–3 photo(s) (60 photos)" in printed
    cal = Calibration.load(out)
    assert cal.model == MODEL and cal.n == 24 and cal.photos_per_set == (2, 3)
    assert cal.fingerprint == tiny.candidate_cells().fingerprint and cal.bins is not None
    # the scores are the truth masses of the joint answers `locate --same-place` gives
    frame = read_sets_csv(csv)
    expected = []
    for set_id, group in frame.groupby("SET_ID", sort=False):
        results = locate(tiny, [(n, folder / n) for n in group["IMG_ID"]], full=True, precision="fp32")
        joint = joint_locate(results, tiny)
        expected.append(truth_mass(joint.prediction.probs_full, tiny.candidate_cells(),
                                   group[["LAT", "LON"]].to_numpy()[:1])[0])
    np.testing.assert_allclose(cal.truth_masses, expected, atol=2e-6)

    photos = [str(folder / "set0_0.png"), str(folder / "set0_1.png")]
    assert main(["locate", *photos, "--model", MODEL, "--same-place", "--calibration", str(out), "--json"]) == 0
    joint = json.loads(capsys.readouterr().out)["joint"]
    assert joint["calibrated"] and joint["calibration_kind"] == "sets of 2–3 photos" and joint["calibration_note"] is None
    single = tmp_path / "single.calibration.json"
    fit_calibration(np.linspace(0, 1, 200), model=MODEL, fingerprint=tiny.candidate_cells()).save(single)
    assert main(["locate", *photos, "--model", MODEL, "--same-place", "--calibration", str(single)]) == 0
    printed = capsys.readouterr().out
    assert SINGLE_ON_JOINT in printed.replace("\n", " ") and "calibrated" in printed
    assert main(["locate", photos[0], "--model", MODEL, "--calibration", str(out)]) == 0
    assert "calibrated on photo sets (sets of 2–3 photos)" in capsys.readouterr().out.replace("\n", " ")
    # --results is unchanged, and the two ways do not mix
    assert main(["calibrate", "--output", str(out)]) == 2
    assert "--results" in capsys.readouterr().err
    assert main(["calibrate", "--results", str(tmp_path / "r.parquet"), "--images", str(folder), "--output",
                 str(out)]) == 2
    assert "--images goes with --sets" in capsys.readouterr().err


@pytest.mark.parametrize("rows, expected", [
    ("SET_ID,IMG_ID,LAT,LON\na,set0_0.png,10,20\n,set0_1.png,10,20\n", "line(s) 3: field SET_ID is empty"),
    ("SET_ID,IMG_ID,LAT,LON\na,set0_0.png,north,20\n", "line(s) 2: field LAT must be a number"),
    ("SET_ID,IMG_ID,LAT,LON\na,set0_0.png,10,200\n", "line(s) 2: field LON must be a number in [-180, 180]"),
    ("SET_ID,IMG_ID,LAT,LON\na,set0_0.png,10,20\nb,set1_0.png,0,0\na,set0_1.png,11,20\n",
     "line(s) 4: field LAT: set 'a' is at 10, 20 on line 2 and 11, 20 on line 4"),
    ("SET_ID,IMG_ID,LAT,LON\na,set0_0.png,10,20\na,set0_0.png,10,20\n",
     "line(s) 3: field IMG_ID: 'set0_0.png' is listed twice in set 'a'"),
    ("IMG_ID,LAT,LON\nset0_0.png,10,20\n", "lacks column(s) SET_ID"),
    ("SET_ID,IMG_ID,LAT,LON\na,../set0_0.png,10,20\n", "line 2: field IMG_ID"),
])
def test_bad_sets_rows_are_one_line_errors_naming_line_and_field(tiny, labelled, tmp_path, capsys, rows, expected):
    _, folder = labelled
    csv = tmp_path / "bad.csv"
    csv.write_text(rows)
    out = tmp_path / "never.json"
    assert main(["calibrate", "--sets", str(csv), "--images", str(folder), "--model", MODEL, "--output",
                 str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err, err
    assert not out.exists()
