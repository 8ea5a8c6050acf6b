"""GeoCLIP's location encoder: Equal Earth → random Fourier features at several σ → per-σ MLP, summed.

`LocationEncoder.from_geoclip_state_dict` loads the `geoclip` wheel's `location_encoder_weights.pth`;
the key renaming lives in `geoclip_key_map` and nowhere else.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from geocore.geo.projection import equal_earth
from geocore.models.layers.rff import GaussianFourierFeatures
from geocore.models.precision import full_precision

DEFAULT_SIGMAS: tuple[float, ...] = (2.0**0, 2.0**4, 2.0**8)


class LocationCapsule(nn.Module):
    """One σ branch: RFF (512) → 3 × (Linear 1024, ReLU) → head Linear 512."""

    def __init__(self, sigma: float, encoded_size: int = 256, hidden: int = 1024, out_dim: int = 512,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.rff = GaussianFourierFeatures(sigma, 2, encoded_size, generator=generator)
        self.mlp = nn.Sequential(
            nn.Linear(2 * encoded_size, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
        )
        self.head = nn.Linear(hidden, out_dim)

    def forward(self, xy: torch.Tensor) -> torch.Tensor:
        return self.head(self.mlp(self.rff(xy)))  # (N, 2) → (N, out_dim)


class LocationEncoder(nn.Module):
    """(N, 2) (lat, lon) degrees → (N, 512) GPS features (unnormalised, as GeoCLIP trains them).

    Always float32, even inside an autocast: the σ = 2^8 Fourier features have phases of thousands of radians,
    which bf16's 8-bit mantissa would scramble (`geocore.models.precision`)."""

    def __init__(self, sigmas: tuple[float, ...] = DEFAULT_SIGMAS, out_dim: int = 512,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.sigmas = tuple(float(s) for s in sigmas)
        self.out_dim = out_dim
        self.capsules = nn.ModuleList(LocationCapsule(s, out_dim=out_dim, generator=generator) for s in self.sigmas)

    def forward(self, latlon: torch.Tensor) -> torch.Tensor:
        with full_precision(latlon.device):
            xy = equal_earth(latlon.to(self.capsules[0].rff.b.dtype))  # (N, 2) scaled Equal Earth
            out = self.capsules[0](xy)  # (N, 512)
            for capsule in self.capsules[1:]:
                out = out + capsule(xy)
        return out

    @torch.no_grad()
    def embed(self, latlon: torch.Tensor, chunk_size: int = 65536) -> torch.Tensor:
        """Inference: L2-normalised (N, 512) embeddings, `chunk_size` points at a time (for millions)."""
        device = self.capsules[0].rff.b.device
        latlon = torch.as_tensor(latlon, dtype=torch.float32)
        out = torch.empty(latlon.shape[0], self.out_dim, dtype=torch.float32, device=device)
        for start in range(0, latlon.shape[0], chunk_size):
            chunk = latlon[start : start + chunk_size].to(device)
            out[start : start + chunk.shape[0]] = F.normalize(self(chunk).float(), dim=-1)
        return out

    # --- the geoclip wheel's weights ------------------------------------------------------------

    @staticmethod
    def geoclip_key_map(key: str) -> str:
        """`LocEnc{i}.capsule.{0|1|3|5}.*` / `LocEnc{i}.head.0.*` (geoclip) → our names."""
        m = re.fullmatch(r"LocEnc(\d+)\.(capsule|head)\.(\d+)\.(\w+)", key)
        if m is None:
            raise KeyError(f"unexpected key in a geoclip location encoder state dict: {key!r}")
        i, part, idx, leaf = m.group(1), m.group(2), int(m.group(3)), m.group(4)
        if part == "head":
            return f"capsules.{i}.head.{leaf}"
        if idx == 0:
            return f"capsules.{i}.rff.{leaf}"  # the B matrix
        return f"capsules.{i}.mlp.{idx - 1}.{leaf}"  # geoclip's Sequential starts with the RFF layer

    @classmethod
    def convert_geoclip_state_dict(cls, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {cls.geoclip_key_map(k): v for k, v in state_dict.items()}

    @classmethod
    def from_geoclip_file(cls, path: str | Path) -> "LocationEncoder":
        """Build and load from geoclip's `location_encoder_weights.pth`."""
        sd = torch.load(path, map_location="cpu", weights_only=True)
        enc = cls(DEFAULT_SIGMAS)
        enc.load_state_dict(cls.convert_geoclip_state_dict(sd), strict=True)
        return enc


def load_location_encoder() -> LocationEncoder:
    """GeoCLIP's released location encoder (from the installed `geoclip` wheel), in eval mode; no CLIP needed."""
    from geocore.weights.paths import geoclip_package_dir

    return LocationEncoder.from_geoclip_file(geoclip_package_dir() / "model" / "weights" /
                                             "location_encoder_weights.pth").eval()
