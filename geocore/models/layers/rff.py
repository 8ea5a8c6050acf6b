"""Random Fourier features (Tancik et al. 2020), the Gaussian encoding GeoCLIP uses.

γ(v) = [cos(2π B v), sin(2π B v)] with a fixed B ~ N(0, σ²) of shape (encoded_size, input_size).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class GaussianFourierFeatures(nn.Module):
    """(…, input_size) → (…, 2·encoded_size) random Fourier features with a fixed, saved `b` matrix."""

    def __init__(self, sigma: float, input_size: int = 2, encoded_size: int = 256,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.sigma = float(sigma)
        # persistent buffer: saved with the model, never trained
        self.register_buffer("b", torch.randn(encoded_size, input_size, generator=generator) * sigma)

    @property
    def out_features(self) -> int:
        return 2 * self.b.shape[0]

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        # same operation order as the `rff` package: (2π·v) @ Bᵀ, so float32 phases match bit for bit
        vp = (2 * math.pi * v) @ self.b.T  # (…, encoded_size)
        return torch.cat((torch.cos(vp), torch.sin(vp)), dim=-1)  # (…, 2·encoded_size)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma:g}, input_size={self.b.shape[1]}, encoded_size={self.b.shape[0]}"
