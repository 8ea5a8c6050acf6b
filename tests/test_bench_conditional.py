"""The conditional-coverage bench's own machinery (bench/bench_conditional.py), on synthetic photos whose
per-group coverage is known: no GeoCLIP heads needed."""

from __future__ import annotations

import numpy as np

from bench import bench_conditional as bc


def _versions(n: int = 3000, seed: int = 0) -> list[dict]:
    """Three difficulties (σ = 0, 1, 2): truth masses ~ U^(1/(1+2σ)) (harder = larger), an entropy that sees σ
    only through noise, and the area curve the bench reads areas off."""
    rng = np.random.default_rng(seed)
    out = []
    for sigma in (0.0, 1.0, 2.0):
        mass = rng.random(n) ** (1.0 / (1.0 + 2.0 * sigma))
        curve = np.tile(np.log10(1.0 + 1e6 * bc.GRID), (n, 1)).astype(np.float32)
        out.append({"mass": mass, "entropy": sigma + rng.normal(0, 0.3, n), "log_area90": rng.random(n),
                    "max_logit": -sigma + rng.normal(0, 3.0, n), "sigma": np.full(n, sigma), "curve": curve})
    return out


def test_each_point_keeps_one_photo_and_the_halves_are_disjoint():
    versions = _versions(100)
    for v, version in enumerate(versions):
        version["point"] = np.arange(100) + 1000 * v  # which point and which of its photos
    cal, test = bc._split(versions, np.random.default_rng(1))
    assert len(cal["mass"]) == len(test["mass"]) == 50
    points = np.concatenate([cal["point"], test["point"]]) % 1000
    assert sorted(points.tolist()) == list(range(100))  # every point once, in one half only
    assert set(np.unique(cal["sigma"])) <= {0.0, 1.0, 2.0}


def test_the_oracle_holds_every_group_and_marginal_does_not():
    bands = [(0.0, 0.0), (1.0, 1.0), (2.0, 2.0)]
    rows = bc._mixture(_versions(), bands, splits=20, rng=np.random.default_rng(0), tempered=False)
    oracle, marginal = rows["bench only: ORACLE σ bins"]["coverage"], rows["marginal"]["coverage"]
    assert bc._worst(oracle, ("σ",)) < 2.5  # calibrated within each σ: nominal in expectation
    assert bc._worst(marginal, ("σ",)) > 15  # one mass for all: the easy over-covered, the hard under
    assert abs(marginal["all"][2] - 0.9) < 0.015  # ... though right overall
    # entropy sees σ well here (noise 0.3 against a step of 1): its bins come close to the oracle
    assert bc._worst(rows["Mondrian entropy ×10"]["coverage"], ("σ",)) < 6
    # bins of a score blind to σ (the raw area is noise here) cannot hold per-σ coverage, however many
    assert bc._worst(rows["Mondrian log_area90 ×10"]["coverage"], ("σ",)) > 15


def test_auc_says_how_well_a_score_tells_two_groups_apart():
    rng = np.random.default_rng(0)
    same = bc._auc(rng.normal(size=4000), rng.normal(size=4000))
    apart = bc._auc(rng.normal(size=4000), rng.normal(3.0, 1.0, 4000))
    assert abs(same - 0.5) < 0.03 and apart > 0.97
