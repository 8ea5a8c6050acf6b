"""GPS galleries: the wheel's 100K points, CSV galleries, equal-area grids, bbox filtering."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geocore.errors import InputError
from geocore.geo.distance import haversine_km
from geocore.geo.gallery import bbox_gallery, default_gallery, filter_gallery, gallery_from_csv, grid_gallery


def test_default_gallery_is_the_wheels_100k():
    g = default_gallery()
    assert g.shape == (100_000, 2) and g.dtype == torch.float32
    assert torch.allclose(g[0], torch.tensor([-50.943392, -72.935664]))
    assert g[:, 0].abs().max() <= 90 and g[:, 1].abs().max() <= 180
    g[0] = 0  # callers get a copy
    assert default_gallery()[0, 0] != 0


def test_gallery_from_csv(tmp_path):
    p = tmp_path / "g.csv"
    p.write_text("id,LAT,LON\na,48.85,2.35\nb,-33.9,151.2\n")
    g = gallery_from_csv(p)
    assert g.dtype == torch.float32 and torch.allclose(g, torch.tensor([[48.85, 2.35], [-33.9, 151.2]]))
    p.write_text("latitude,longitude\n10,20\n")
    assert gallery_from_csv(p).shape == (1, 2)


@pytest.mark.parametrize(
    "text, match",
    [
        ("x,y\n1,2\n", r"g\.csv: needs LAT and LON columns; found fields: x, y"),
        ("LAT,LON\n", r"g\.csv: no rows"),
        ("LAT,LON\n10,20\n95,20\nabc,1\n", r"g\.csv: LAT must be a number in \[-90, 90\]; bad rows: 3 \(95\.0\), 4 \(nan\)"),
        ("LAT,LON\n10,200\n", r"LON must be a number in \[-180, 180\]; bad rows: 2"),
    ],
)
def test_gallery_from_csv_errors_name_file_rows_fields(tmp_path, text, match):
    p = tmp_path / "g.csv"
    p.write_text(text)
    with pytest.raises(InputError, match=match):
        gallery_from_csv(p)


def test_gallery_from_missing_csv(tmp_path):
    with pytest.raises(InputError, match="nope.csv: gallery file not found"):
        gallery_from_csv(tmp_path / "nope.csv")


def test_grid_gallery_is_roughly_equal_area():
    g = grid_gallery(200.0)
    assert g.dtype == torch.float32 and g.ndim == 2 and g.shape[1] == 2
    lat = g[:, 0].double().numpy()
    # points per band ∝ band area (2πR²·Δsin φ)
    bands = [(-10, 10), (30, 50), (60, 80)]
    density = []
    for lo, hi in bands:
        n = ((lat >= lo) & (lat < hi)).sum()
        density.append(n / (np.sin(np.deg2rad(hi)) - np.sin(np.deg2rad(lo))))
    assert max(density) / min(density) < 1.15
    # no duplicates at the antimeridian, none beyond the poles
    assert g[:, 1].min() > -180 and g[:, 1].max() < 180 and g[:, 0].abs().max() < 90
    # neighbours along a row are ~spacing apart
    row = g[g[:, 0] == g[g[:, 0] > 40][0, 0]]
    d = haversine_km(row[:-1].double(), row[1:].double())
    assert d.min() > 150 and d.max() < 250


def test_bbox_gallery_and_antimeridian():
    g = bbox_gallery(40, -10, 50, 10, 50)
    assert (g[:, 0] >= 40).all() and (g[:, 0] <= 50).all() and (g[:, 1] >= -10).all() and (g[:, 1] <= 10).all()
    # ~ area / spacing²
    area = 111.19**2 * 10 * 20 * np.cos(np.deg2rad(45))
    assert 0.8 < len(g) / (area / 50**2) < 1.25
    across = bbox_gallery(-10, 170, 10, -170, 100)  # crosses ±180
    assert ((across[:, 1] >= 170) | (across[:, 1] <= -170)).all() and len(across) > 20
    assert torch.equal(grid_gallery(300, bbox=(40, -10, 50, 10)), bbox_gallery(40, -10, 50, 10, 300))


@pytest.mark.parametrize(
    "args, match",
    [((50, 0, 40, 10, 10), "south < north"), ((0, 0, 10, 190, 10), "east must be in"),
     ((0, 0, 10, 10, 0), "spacing_km must be a positive"), ((-90, -180, 90, 180, 0.5), "max 5,000,000")],
)
def test_bbox_gallery_rejects_bad_input(args, match):
    with pytest.raises(InputError, match=match):
        bbox_gallery(*args)


def test_filter_gallery():
    g = torch.tensor([[48.8, 2.3], [35.7, 139.7], [-33.9, 151.2], [64.0, -179.0], [65.0, 179.5]])
    assert torch.equal(filter_gallery(g, (30, 0, 60, 150)), g[:2])
    assert torch.equal(filter_gallery(g, (60, 170, 70, -170)), g[3:])  # across the antimeridian
    assert filter_gallery(g, (0, 0, 1, 1)).shape == (0, 2)
