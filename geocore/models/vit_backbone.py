"""timm ViT backbones of the cell classifiers: built with no network, and their eval preprocessing."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import timm
import torch
from timm.data import create_transform, resolve_data_config
from timm.models.vision_transformer import VisionTransformer

from geocore.errors import InputError
from geocore.models.precision import compute_autocast


def create_vit(name: str, kwargs: Mapping[str, Any] | None = None, *, imagenet: bool = False) -> VisionTransformer:
    """A timm ViT with no classifier: random init, or timm's pretrained weights from the local HF cache only."""
    kw = {"num_classes": 0, **(kwargs or {})}
    try:
        if imagenet:
            from geocore.weights.resolve import resolve_timm_weights

            file = resolve_timm_weights(name)
            model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(file)}, **kw)
        else:
            model = timm.create_model(name, pretrained=False, **kw)
    except RuntimeError as err:  # unknown model name
        raise InputError(f"backbone {name!r}: {err}") from None
    if not isinstance(model, VisionTransformer) or model.cls_token is None:
        raise InputError(f"backbone {name!r}: expected a timm VisionTransformer with a class token")
    return model


def vit_features(vit: VisionTransformer, pixels: torch.Tensor) -> torch.Tensor:
    """`vit.forward_features(pixels)`: (B, N, C) tokens, computed at the current precision (bf16 autocast inside
    `use_precision("bf16")`, `geocore.models.precision`) and returned as float32 for the layers after it."""
    with compute_autocast(pixels.device):
        tokens = vit.forward_features(pixels)
    return tokens.float()


def vit_preprocess(vit: VisionTransformer) -> tuple[Callable, torch.Tensor, torch.Tensor]:
    """timm's eval transform for `vit` at its input size (PIL → (3, H, W)), and its mean and std (1, 3, 1, 1)."""
    size = vit.patch_embed.img_size
    cfg = resolve_data_config({"input_size": (3, *size)}, model=vit)
    stats = [torch.tensor(cfg[k], dtype=torch.float32).view(1, 3, 1, 1) for k in ("mean", "std")]
    return create_transform(**cfg), stats[0], stats[1]


def vit_grid(vit: VisionTransformer) -> tuple[tuple[int, int], int]:
    """((h, w) patch grid, number of prefix tokens) of a timm ViT, for `tokens_to_map`."""
    return tuple(vit.patch_embed.grid_size), int(vit.num_prefix_tokens)
