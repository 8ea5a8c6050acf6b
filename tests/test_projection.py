import torch
from geoclip.model.location_encoder import equal_earth_projection as reference_projection

from geocore.geo.projection import equal_earth


def test_equal_earth_matches_geoclip_reference():
    g = torch.Generator().manual_seed(0)
    pts = torch.cat([
        torch.stack([torch.rand(5000, generator=g) * 180 - 90, torch.rand(5000, generator=g) * 360 - 180], 1),
        torch.tensor([[90.0, 0.0], [-90.0, 0.0], [0.0, 180.0], [0.0, -180.0], [0.0, 0.0], [89.999, 179.999]]),
    ])
    torch.testing.assert_close(equal_earth(pts), reference_projection(pts), rtol=1e-6, atol=1e-6)


def test_equal_earth_known_values():
    # On the equator y = 0 and x grows linearly with longitude; the poles sit at the maximum |y|.
    out = equal_earth(torch.tensor([[0.0, 0.0], [0.0, 90.0], [0.0, 180.0], [90.0, 0.0], [-90.0, 0.0]]))
    assert out[0].abs().max() < 1e-7
    assert torch.isclose(out[2, 0], 2 * out[1, 0])
    assert out[3, 1] > 0 and torch.isclose(out[3, 1], -out[4, 1])
    # Equal Earth's published extents: x ≤ 2.7066 (R = 1), y ≤ 1.3173; GeoCLIP scales by 66.50336 / 180.
    assert torch.isclose(out[2, 0], torch.tensor(2.70663 * 66.50336 / 180), rtol=1e-4)
    assert torch.isclose(out[3, 1], torch.tensor(1.31733 * 66.50336 / 180), rtol=1e-4)
