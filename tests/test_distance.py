import math

import numpy as np
import pytest
import torch

from geocore.geo.coords import destination_point, validate_latlon, wrap_longitude
from geocore.geo.distance import (
    EARTH_RADIUS_KM,
    haversine_km,
    haversine_matrix_km,
    iter_haversine_chunks,
    nearest_km,
)
from geocore.errors import InputError

PARIS, LONDON = (48.8566, 2.3522), (51.5074, -0.1278)
NASHVILLE, LAX = (36.12, -86.67), (33.94, -118.40)


def test_known_distances_numpy():
    # Nashville–LAX: 2887.26 km at R = 6372.8 (the textbook haversine example) → scaled to R = 6371
    assert haversine_km(np.array(NASHVILLE), np.array(LAX)) == pytest.approx(2887.2599506 * 6371 / 6372.8, abs=1e-3)
    assert haversine_km(np.array(PARIS), np.array(LONDON)) == pytest.approx(343.556, abs=0.01)
    one_degree = 2 * math.pi * EARTH_RADIUS_KM / 360
    assert haversine_km(np.array([0.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(one_degree, rel=1e-12)
    assert haversine_km(np.array([90.0, 0.0]), np.array([-90.0, 0.0])) == pytest.approx(math.pi * EARTH_RADIUS_KM)


def test_antimeridian_and_antipodes_are_finite():
    d = haversine_km(np.array([[0.0, 179.5], [10.0, 20.0]]), np.array([[0.0, -179.5], [-10.0, -160.0]]))
    assert d[0] == pytest.approx(2 * math.pi * EARTH_RADIUS_KM / 360, rel=1e-9)
    assert d[1] == pytest.approx(math.pi * EARTH_RADIUS_KM, rel=1e-7)  # exact antipode, no NaN


def test_torch_matches_numpy_and_keeps_type():
    rng = np.random.default_rng(0)
    a = np.column_stack([rng.uniform(-90, 90, 500), rng.uniform(-180, 180, 500)])
    b = np.column_stack([rng.uniform(-90, 90, 500), rng.uniform(-180, 180, 500)])
    d_np = haversine_km(a, b)
    d_t = haversine_km(torch.from_numpy(a), torch.from_numpy(b))
    assert isinstance(d_t, torch.Tensor) and d_t.dtype == torch.float64
    np.testing.assert_allclose(d_t.numpy(), d_np, rtol=1e-12)
    d_f32 = haversine_km(torch.from_numpy(a).float(), torch.from_numpy(b).float())
    np.testing.assert_allclose(d_f32.numpy(), d_np, atol=0.5)


def test_matrix_chunks_and_nearest_agree():
    rng = np.random.default_rng(1)
    a = np.column_stack([rng.uniform(-90, 90, 300), rng.uniform(-180, 180, 300)])
    b = np.column_stack([rng.uniform(-90, 90, 200), rng.uniform(-180, 180, 200)])
    full = haversine_matrix_km(a, b)
    assert full.shape == (300, 200)
    assert full[17, 33] == pytest.approx(haversine_km(a[17], b[33]))
    stitched = np.concatenate([blk for _, blk in iter_haversine_chunks(a, b, chunk_size=64)])
    np.testing.assert_array_equal(stitched, full)
    d, i = nearest_km(a, b, chunk_size=7)
    np.testing.assert_array_equal(i, full.argmin(axis=1))
    np.testing.assert_allclose(d, full.min(axis=1))
    dt, it = nearest_km(torch.from_numpy(a), torch.from_numpy(b), chunk_size=50)
    np.testing.assert_array_equal(it.numpy(), i)


def test_nearest_large_runs_in_bounded_chunks():
    # 12K × 12K would be 1.2 GB as one float64 matrix; the default chunking keeps it small.
    rng = np.random.default_rng(2)
    a = np.column_stack([rng.uniform(-90, 90, 12_000), rng.uniform(-180, 180, 12_000)])
    d, i = nearest_km(a, a)
    assert np.all(d < 1e-6) and np.array_equal(i, np.arange(12_000))


def test_destination_point_round_trip():
    start = np.array([[48.8566, 2.3522]] * 4)
    bearings = np.array([0.0, 90.0, 200.0, 315.0])
    for dist in (1.0, 500.0, 5000.0):
        end = destination_point(start, bearings, dist)
        np.testing.assert_allclose(haversine_km(start, end), dist, rtol=1e-9)
    north = destination_point([0.0, 0.0], 0.0, math.pi * EARTH_RADIUS_KM / 2)
    assert north[0] == pytest.approx(90.0)
    across = destination_point([0.0, 179.0], 90.0, 2 * 111.19492664455873)
    assert across[1] == pytest.approx(-179.0)  # wrapped across the antimeridian


def test_validate_latlon_names_bad_rows():
    ok = validate_latlon([[0, 0], [90, 180], [-90, -180]])
    assert ok.dtype == np.float64 and ok.shape == (3, 2)
    with pytest.raises(InputError, match=r"LAT .*rows: 1 \(95\.0\)"):
        validate_latlon([[0, 0], [95, 0]])
    with pytest.raises(InputError, match=r"LON .*rows: 2 \(nan\)"):
        validate_latlon([[0, 0], [1, 1], [1, float("nan")]])
    with pytest.raises(InputError, match=r"shape"):
        validate_latlon([1, 2, 3])


def test_wrap_longitude():
    np.testing.assert_allclose(wrap_longitude([190, -190, 360, 180, -180]), [-170, 170, 0, -180, -180])
