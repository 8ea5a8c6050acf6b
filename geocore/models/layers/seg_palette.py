"""Colour-code semantic segmentation index maps for TransLocator's segmentation (S) branch.

TransLocator (Pramanick et al., ECCV 2022) feeds its second ViT branch the ADE20K semantic segmentation map
of the image rendered as a colour image, one fixed colour per class. Any fixed palette works as long as
training and inference use the same one; ours is the bit-interleaving colour map of PASCAL VOC (distinct
colours for up to 255 classes), shifted by one so that black is reserved for "no label". It is *not* the
colour table of the ADE20K toolkit: segmentation PNGs rendered with that table need `render_segmentation`
to be run on their index maps instead.
"""

from __future__ import annotations

import numpy as np
import torch

from geocore.errors import InputError

ADE20K_CLASSES = 150


def ade20k_palette(num_classes: int = ADE20K_CLASSES) -> np.ndarray:
    """(num_classes, 3) uint8 colours; class i gets VOC colour-map entry i + 1 (entry 0, black, is unused)."""
    if not 1 <= num_classes <= 255:
        raise InputError(f"palette: expected 1..255 classes, got {num_classes}")
    out = np.zeros((num_classes, 3), dtype=np.uint8)
    for i in range(num_classes):
        label, rgb = i + 1, [0, 0, 0]
        for bit in range(8):
            for ch in range(3):
                rgb[ch] |= ((label >> ch) & 1) << (7 - bit)
            label >>= 3
        out[i] = rgb
    return out


def render_segmentation(index_map: torch.Tensor, palette: np.ndarray | torch.Tensor | None = None) -> torch.Tensor:
    """Colour image (B, 3, H, W) float in [0, 1] of a (B, H, W) or (B, 1, H, W) integer class-index map.

    Indices outside 0..len(palette)-1 (e.g. -1 or 255, "unlabelled") are rendered black.
    """
    if index_map.dim() == 4 and index_map.shape[1] == 1:
        index_map = index_map[:, 0]
    if index_map.dim() != 3 or index_map.is_floating_point():
        raise InputError(f"segmentation map: expected an integer (B, H, W) class-index map, got "
                         f"{tuple(index_map.shape)} {index_map.dtype}")
    table = torch.as_tensor(ade20k_palette() if palette is None else palette, device=index_map.device)
    table = torch.cat([table.float() / 255.0, table.new_zeros(1, 3).float()])  # last row: black
    idx = index_map.long()
    idx = torch.where((idx >= 0) & (idx < table.shape[0] - 1), idx, table.shape[0] - 1)
    return table[idx].permute(0, 3, 1, 2).contiguous()  # (B, H, W, 3) -> (B, 3, H, W)
