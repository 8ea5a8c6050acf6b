"""Split conformal calibration: the quantile, coverage on synthetic models with known coverage, the file."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from geocore.errors import InputError
from geocore.uncertainty import Calibration, S2Cells, fit_calibration, search_regions, truth_mass, validate_levels
from test_uncertainty_cells import level_ids  # noqa: E402  (all S2 cells of a level)

LEVELS = (0.5, 0.8, 0.9, 0.95)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def cells() -> S2Cells:
    return S2Cells(level_ids(3))  # 384 cells covering the sphere


def sample(cells: S2Cells, n: int, truth_temperature: float, seed: int) -> np.ndarray:
    """truth_mass of n images: prediction softmax(l); truth drawn from softmax(l / T) (T = 1: calibrated)."""
    rng = np.random.default_rng(seed)
    m = len(cells)
    # sharper and more diffuse images; no candidate holds much mass, so that the discreteness of
    # truth_mass (P(truth_mass ≤ q) ≤ q, by at most the mass of the candidate at the threshold) stays small
    logits = rng.normal(size=(n, m)) * rng.uniform(0.3, 2.0, size=(n, 1))
    pred, true = softmax(logits), softmax(logits / truth_temperature)
    idx = (true.cumsum(axis=1) < rng.uniform(size=(n, 1))).sum(axis=1).clip(max=m - 1)
    return truth_mass(pred, cells, cells._lookup.centroids[idx])


def test_conformal_quantile_index():
    scores = np.arange(1, 100) / 100.0  # n = 99: ⌈100 p⌉-th smallest
    cal = fit_calibration(scores, LEVELS, model="m", fingerprint="f")
    assert cal.masses == pytest.approx([0.50, 0.80, 0.90, 0.95])
    small = fit_calibration(np.linspace(0.1, 0.9, 9), (0.5, 0.95), model="m", fingerprint="f")
    assert small.masses == pytest.approx([0.5, 1.0])  # ⌈10·0.95⌉ = 10 > n = 9 → everything
    assert cal.n == 99 and cal.model == "m" and cal.fingerprint == "f"


@pytest.mark.parametrize("temperature, raw_ok", [(1.0, True), (2.5, False)])
def test_calibrated_coverage_on_synthetic_models(cells, temperature, raw_ok):
    scores = sample(cells, 40_000, temperature, seed=int(temperature * 10))
    fit, test = scores[:20_000], scores[20_000:]
    cal = fit_calibration(fit, LEVELS, model="synthetic", fingerprint=cells)
    for p in LEVELS:
        raw = np.mean(test <= p)
        assert (abs(raw - p) < 0.02) == raw_ok, (p, raw)  # truth from the prediction: raw mass is calibrated
        assert abs(np.mean(test <= cal.mass_for(p)) - p) < 0.02
    if not raw_ok:
        assert cal.mass_for(0.9) > 0.95  # an over-confident model needs more mass


def test_expected_coverage_over_random_splits_is_the_conformal_rank():
    scores = np.random.default_rng(3).uniform(size=400)
    rng = np.random.default_rng(4)
    cover = []
    for _ in range(300):
        perm = rng.permutation(400)
        cal = fit_calibration(scores[perm[:99]], (0.9,), model="m", fingerprint="f")
        cover.append(np.mean(scores[perm[99:]] <= cal.masses[0]))
    assert np.mean(cover) == pytest.approx(math.ceil(100 * 0.9) / 100, abs=0.006)


def test_mass_for_interpolates_and_refuses_outside():
    cal = fit_calibration(np.arange(1, 100) / 100.0, (0.5, 0.9), model="m", fingerprint="f")
    assert cal.mass_for(0.7) == pytest.approx(0.7)
    assert cal.mass_for(0.9) == pytest.approx(0.9)
    for level in (0.3, 0.95):
        with pytest.raises(InputError, match="outside the calibrated levels 0.5..0.9"):
            cal.mass_for(level)


def test_calibrated_regions_use_the_calibrated_mass(cells):
    p = softmax(np.random.default_rng(5).normal(size=(1, len(cells))) * 3)[0]
    cal = fit_calibration(np.full(50, 0.97), LEVELS, model="synthetic", fingerprint=cells)
    (region,) = search_regions(p, cells, levels=[0.5], calibration=cal, model="synthetic")
    assert region.calibrated and region.level == 0.5 and region.mass == pytest.approx(0.97)
    assert region.held_mass >= 0.97
    with pytest.raises(InputError, match="'synthetic', not 'geoclip'"):
        search_regions(p, cells, levels=[0.5], calibration=cal, model="geoclip")


def test_round_trip(tmp_path):
    cal = fit_calibration(np.random.default_rng(6).uniform(size=500), LEVELS, model="geoclip", fingerprint="g:1")
    path = cal.save(tmp_path / "sub" / "geoclip.json")
    assert Calibration.load(path) == cal
    assert [f.name for f in path.parent.iterdir()] == ["geoclip.json"]  # no temporary file left behind
    data = json.loads(path.read_text())
    assert data["levels"] == list(LEVELS) and data["version"] and data["created"]


def write(tmp_path, data) -> str:
    path = tmp_path / "cal.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("edit, words", [
    (lambda d: d.pop("masses"), "field 'masses' is missing"),
    (lambda d: d.update(masses=[0.5, 0.8, 0.9, 1.3]), "field 'masses': expected values in [0, 1], got 1.3"),
    (lambda d: d.update(masses=[0.5, 0.9, 0.8, 0.95]), "field 'masses': expected masses that do not decrease"),
    (lambda d: d.update(levels=[0.5, 0.8, 0.9, 1.5]), "field 'levels': level 1.5 is outside (0, 1)"),
    (lambda d: d.update(n="many"), "field 'n'"),
    (lambda d: d.update(model=3), "field 'model'"),
])
def test_load_rejects_bad_files(tmp_path, edit, words):
    data = fit_calibration(np.linspace(0, 1, 20), LEVELS, model="m", fingerprint="f").to_dict()
    edit(data)
    path = write(tmp_path, data)
    with pytest.raises(InputError) as err:
        Calibration.load(path)
    assert path in one_line(err) and words in one_line(err)


def test_load_rejects_corrupt_and_missing_files(tmp_path):
    path = write(tmp_path, '{"model": "geoclip", "masses": [0.5,')
    with pytest.raises(InputError) as err:
        Calibration.load(path)
    assert path in one_line(err) and "not a calibration file" in one_line(err)
    with pytest.raises(InputError, match="no such file; expected a calibration file"):
        Calibration.load(tmp_path / "nope.json")
    with pytest.raises(InputError, match="JSON object"):
        Calibration.load(write(tmp_path, "[1, 2]"))


def test_model_and_candidate_mismatch():
    cal = fit_calibration(np.linspace(0, 1, 20), LEVELS, model="geoclip", fingerprint="gallery:100000:65km:ab")
    cal.check_compatible("geoclip", "gallery:100000:65km:ab")
    with pytest.raises(InputError) as err:
        cal.check_compatible("translocator", "gallery:100000:65km:ab")
    assert "'geoclip'" in one_line(err) and "'translocator'" in one_line(err)
    with pytest.raises(InputError) as err:
        cal.check_compatible("geoclip", "s2:3298:cd")
    assert "gallery:100000:65km:ab" in one_line(err) and "s2:3298:cd" in one_line(err)


def test_validate_levels():
    assert validate_levels("0.9,0.5") == (0.5, 0.9)
    assert validate_levels([0.5]) == (0.5,)
    for text, words in (("0.5,1.2", "level 1.2 is outside (0, 1)"), ("0", "level 0 is outside"),
                        ("1", "level 1 is outside"), ("90", "write 0.9 for 90 %"), ("0.5,abc", "'abc' is not a number"),
                        ("", "not a number")):
        with pytest.raises(InputError) as err:
            validate_levels(text, "--regions")
        assert words in one_line(err) and one_line(err).startswith("--regions")
    with pytest.raises(InputError, match="truth_mass"):
        fit_calibration(np.array([0.5, 1.5]), model="m", fingerprint="f")
