"""ViT helpers shared by every model: the one token → activation-map reshape (Grad-CAM), view averaging."""

from __future__ import annotations

import math

import torch

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


def flatten_views(pixels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(B, 3, H, W) → itself, 1; (B, V, 3, H, W) views → (B·V, 3, H, W), V (undone by `average_views`)."""
    if pixels.dim() == 5:
        return pixels.flatten(0, 1), int(pixels.shape[1])
    return pixels, 1


def average_views(logits: torch.Tensor, views: int) -> torch.Tensor:
    """(B·V, n) logits of V views per image, image-major (as `flatten(0, 1)` of (B, V, ...) inputs) → (B, n)
    mean logits: both papers' authors average the ten crops' logits before the softmax (train and test)."""
    if views == 1:
        return logits
    return logits.view(-1, views, logits.shape[-1]).mean(1)
