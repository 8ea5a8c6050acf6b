"""HPD search regions and the truth's mass on hand-made distributions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import s2geometry as s2
import torch

from geocore.errors import InputError
from geocore.models.prediction import Prediction
from geocore.uncertainty import (
    GalleryCells,
    S2Cells,
    areas_at_masses,
    fit_calibration,
    region_areas,
    search_regions,
    truth_mass,
    truth_region_area,
)
from test_uncertainty_cells import level_ids  # noqa: E402  (all S2 cells of a level)


def centers(cells: S2Cells) -> np.ndarray:
    return cells._lookup.centroids  # cell centres (lat, lon)


@pytest.fixture(scope="module")
def equal() -> S2Cells:
    """The 24 level-1 S2 cells: equal areas (up to rounding), covering the sphere."""
    return S2Cells(level_ids(1))


@pytest.fixture(scope="module")
def mixed() -> S2Cells:
    """A whole face at level 1 (4 cells), level 2 (16) and level 3 (64) on three faces: unequal areas."""
    ids = []
    for face, level in ((0, 1), (1, 2), (2, 3)):
        ids += [i for i in level_ids(level).tolist() if s2.S2CellId(i).face() == face]
    return S2Cells(np.array(ids, dtype=np.uint64))


def test_hpd_region_on_equal_areas(equal):
    p = np.zeros(24)
    p[[3, 7, 11, 15]] = [0.4, 0.3, 0.2, 0.1]
    r50, r85, r99 = search_regions(p, equal, levels=(0.5, 0.85, 0.99))
    assert r50.indices.tolist() == [3, 7] and r50.held_mass == pytest.approx(0.7)  # 0.4 alone is not > 0.5
    assert r85.indices.tolist() == [3, 7, 11]
    assert sorted(r99.indices.tolist()) == [3, 7, 11, 15]
    assert r50.area_km2 == pytest.approx(equal.areas_km2[[3, 7]].sum())
    assert (r50.level, r50.mass, r50.calibrated) == (0.5, 0.5, False)
    truth = centers(equal)[[11, 3, 0, 15]]  # mass strictly denser than the truth's cell
    assert truth_mass(np.tile(p, (4, 1)), equal, truth) == pytest.approx([0.7, 0.0, 1.0, 0.9])
    assert truth_region_area(np.tile(p, (4, 1)), equal, truth)[0] == pytest.approx(equal.areas_km2[[3, 7, 11]].sum())


def test_density_not_probability_orders_the_region(mixed):
    areas = mixed.areas_km2
    big, small = 0, 4 + 16  # a level-1 cell and a level-3 cell (about 1/16 of its area)
    assert areas[big] > 10 * areas[small]
    p = np.full(len(mixed), 0.2 / (len(mixed) - 2))
    p[big], p[small] = 0.5, 0.3
    region = search_regions(p, mixed, levels=[0.25])[0]
    assert region.indices.tolist() == [small]  # less probable, but 10× denser
    assert search_regions(p, mixed, levels=[0.75])[0].indices.tolist() == [small, big]
    m = truth_mass(np.tile(p, (2, 1)), mixed, centers(mixed)[[big, small]])
    assert m == pytest.approx([0.3, 0.0])
    assert truth_region_area(p[None], mixed, centers(mixed)[[big]])[0] == pytest.approx(areas[[big, small]].sum())


def test_truth_mass_matches_brute_force_and_region_membership(mixed):
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.full(len(mixed), 0.3), size=200)  # (200, M)
    truth_idx = rng.integers(0, len(mixed), 200)
    got = truth_mass(p, mixed, centers(mixed)[truth_idx])
    density = p / mixed.areas_km2
    expect = (p * (density > density[np.arange(200), truth_idx][:, None])).sum(1)
    assert got == pytest.approx(expect, abs=1e-5)
    q = rng.uniform(0.05, 0.99, 200)
    for b in range(0, 200, 20):
        (region,) = search_regions(p[b], mixed, levels=[q[b]])
        assert (truth_idx[b] in region.indices) == (got[b] <= q[b])
        assert region.held_mass > q[b]
        assert region.held_mass - p[b][region.indices[-1]] <= q[b] + 1e-6  # the smallest such set


def test_region_areas_match_search_regions(mixed):
    rng = np.random.default_rng(1)
    p = torch.from_numpy(rng.dirichlet(np.full(len(mixed), 0.5), size=30)).float()
    areas = region_areas(p, mixed, levels=(0.5, 0.9))
    regions = search_regions(p, mixed, levels=(0.5, 0.9))
    assert len(regions) == 30 and len(regions[0]) == 2
    assert areas == pytest.approx(np.array([[r.area_km2 for r in row] for row in regions]), rel=1e-6)
    assert (areas[:, 1] >= areas[:, 0]).all()
    assert areas_at_masses(p, mixed, [1.0])[:, 0] == pytest.approx(mixed.areas_km2[mixed.areas_km2 > 0].sum(), rel=1e-6)


def test_duplicate_gallery_points_tie_and_are_taken_together():
    rng = np.random.default_rng(2)
    pts = np.c_[rng.uniform(-60, 60, 200), rng.uniform(-180, 180, 200)]
    pts[1] = pts[0]  # a duplicate: one Voronoi cell, area split in two
    cells = GalleryCells(pts, max_radius_km=500.0)
    assert cells.areas_km2[0] == cells.areas_km2[1]
    p = np.full(200, 0.5 / 198)
    p[0] = p[1] = 0.25
    (region,) = search_regions(p, cells, levels=[0.2])
    assert sorted(region.indices.tolist()) == [0, 1]  # a tie is never split
    assert truth_mass(p[None], cells, pts[[0]])[0] == 0.0  # nothing is denser than the tied pair


def test_feature_and_prediction_input(equal):
    p = torch.zeros(2, 24)
    p[:, 5] = 1.0
    pred = Prediction.from_scores(torch.log(p.clamp_min(1e-12)), torch.from_numpy(centers(equal)), 3, full=True)
    regions = search_regions(pred, equal, levels=(0.5, 0.9))
    feature = regions[1][1].to_feature()
    json.dumps(feature)
    assert feature["type"] == "Feature" and feature["geometry"]["type"] in ("Polygon", "MultiPolygon")
    props = feature["properties"]
    assert props["level"] == 0.9 and props["n_areas"] == 1 and props["calibrated"] is False
    assert props["area_km2"] == pytest.approx(equal.areas_km2[5])
    assert set(props) >= {"level", "mass", "area_km2", "n_areas", "countries", "calibrated"}
    with pytest.raises(InputError, match="full=True"):
        search_regions(Prediction.from_scores(p, torch.from_numpy(centers(equal)), 3), equal)


def test_countries_of_a_region():
    cells = GalleryCells(np.array([[48.86, 2.35], [52.52, 13.40], [40.42, -3.70], [-33.9, 151.2], [35.7, 139.7]]),
                         max_radius_km=50.0)
    (region,) = search_regions(np.array([0.6, 0.1, 0.1, 0.1, 0.1]), cells, levels=[0.5])
    assert region.countries == ["FRA"] and region.country_names == ["France"]


def test_input_errors(equal):
    with pytest.raises(InputError, match="24 candidates"):
        search_regions(np.ones(23) / 23, equal)
    with pytest.raises(InputError, match="sum to 1"):
        search_regions(np.ones(24), equal)
    with pytest.raises(InputError, match="outside"):
        search_regions(np.ones(24) / 24, equal, levels=[0.5, 1.0])
    other = fit_calibration(np.linspace(0, 1, 50), model="m", fingerprint="gallery:1:x")
    with pytest.raises(InputError, match="fitted on candidates"):
        region_areas(np.ones(24) / 24, equal, calibration=other)
    with pytest.raises(InputError, match="one per image"):
        truth_mass(np.ones((2, 24)) / 24, equal, np.zeros((3, 2)))
