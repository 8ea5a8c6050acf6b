"""Drawing semantic segmentation maps: colour maps, overlays, side by side (the segmenter is `geocore.models.segmenter`)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from geocore.errors import InputError
from geocore.models.layers.seg_palette import render_segmentation


def colorize(labels: np.ndarray) -> Image.Image:
    """RGB image of an (H, W) ADE20K label map (the TransLocator palette; out-of-range ids black)."""
    labels = torch.as_tensor(np.asarray(labels)).long()
    if labels.dim() != 2:
        raise InputError(f"colorize: expected an (H, W) label map, got {tuple(labels.shape)}")
    rgb = render_segmentation(labels[None])[0].permute(1, 2, 0).numpy()  # (H, W, 3) in [0, 1]
    return Image.fromarray(np.round(rgb * 255).astype(np.uint8))


def overlay(image: Image.Image, labels: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """The photo blended with its colour map (`alpha` = weight of the colours)."""
    colours = colorize(labels)
    if colours.size != image.size:
        raise InputError(f"overlay: label map {colours.size} and image {image.size} differ in size")
    return Image.blend(image.convert("RGB"), colours, float(np.clip(alpha, 0.0, 1.0)))


def side_by_side(image: Image.Image, labels: np.ndarray) -> Image.Image:
    """The photo and its colour map next to each other."""
    colours = colorize(labels)
    out = Image.new("RGB", (image.width + colours.width, max(image.height, colours.height)), "white")
    out.paste(image.convert("RGB"), (0, 0))
    out.paste(colours, (image.width, 0))
    return out
