"""ViT helpers shared by every model: the one token → activation-map reshape (Grad-CAM), ten-crop."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torchvision.transforms import TenCrop

from geocore.errors import InputError


def tokens_to_map(tokens: torch.Tensor, grid: tuple[int, int] | None = None,
                  num_prefix_tokens: int = 1) -> torch.Tensor:
    """Batch-first ViT tokens (B, prefix + h·w, C) → (B, C, h, w) activation maps, prefix tokens dropped.

    `grid` (h, w) defaults to a square. This is the `reshape_transform` pytorch-grad-cam takes for ViTs
    (timm and open_clip alike)."""
    x = tokens[:, num_prefix_tokens:]  # (B, h*w, C)
    if grid is None:
        side = math.isqrt(x.shape[1])
        grid = (side, side)
    if grid[0] * grid[1] != x.shape[1]:
        raise InputError(f"reshape_transform: {x.shape[1]} patch tokens do not form a {grid[0]}x{grid[1]} grid")
    return x.reshape(x.shape[0], grid[0], grid[1], x.shape[2]).permute(0, 3, 1, 2)


def ten_crop(x: torch.Tensor, size: int, mode: str = "bilinear") -> torch.Tensor:
    """(B, C, H, W) -> (10·B, C, size, size): 4 corners + centre and their mirror images, crop-major.

    Crops are `size` when the image is at least size / 0.875 (the usual 256 → 224); otherwise 0.875 of the
    shorter side, resized to `size` (`mode` "nearest" for colour-coded label maps).
    """
    short = min(x.shape[-2:])
    crop = size if short * 0.875 >= size else max(1, round(0.875 * short))
    crops = torch.stack(TenCrop(crop)(x)).flatten(0, 1)  # (10·B, C, crop, crop)
    if crop != size:
        crops = F.interpolate(crops, size=(size, size), mode=mode,
                              **({} if mode == "nearest" else {"align_corners": False}))
    return crops


def average_crops(fn: Callable[..., tuple[torch.Tensor, ...]], crops: Sequence[torch.Tensor],
                  n: int = 10) -> tuple[torch.Tensor, ...]:
    """Run `fn` on crop-major batches (n·B, ...) and average each output's probabilities over the n crops."""
    out = fn(*crops)
    return tuple(p.view(n, -1, p.shape[-1]).mean(0) for p in out)
