"""Equal Earth projection (Šavrič, Patterson & Jenny 2018), as GeoCLIP's location encoder applies it.

GeoCLIP scales the projected coordinates by `SF / 180` so that they lie in roughly [-1.5, 1.5];
`equal_earth` reproduces that exactly so that the pretrained random Fourier features see the same inputs.
"""

from __future__ import annotations

import math

import torch

A1, A2, A3, A4 = 1.340264, -0.081106, 0.000893, 0.003796
SF = 66.50336  # GeoCLIP's scale factor
_SQRT3 = math.sqrt(3.0)


def equal_earth(latlon: torch.Tensor) -> torch.Tensor:
    """Project `(N, 2)` (lat, lon) degrees to GeoCLIP's scaled Equal Earth `(N, 2)` (x, y)."""
    lat = torch.deg2rad(latlon[..., 0])
    lon = torch.deg2rad(latlon[..., 1])
    theta = torch.asin(_SQRT3 / 2 * torch.sin(lat))
    # Same evaluation order as the reference: the RFF at σ = 256 amplify rounding differences.
    x = 2 * _SQRT3 * lon * torch.cos(theta) / (3 * (9 * A4 * theta**8 + 7 * A3 * theta**6 + 3 * A2 * theta**2 + A1))
    y = A4 * theta**9 + A3 * theta**7 + A2 * theta**3 + A1 * theta
    return torch.stack((x, y), dim=-1) * SF / 180
