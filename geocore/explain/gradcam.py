"""Grad-CAM (Selvaraju et al., ICCV 2017) for every geocore model, through `pytorch_grad_cam`.

What is explained, and where, is each model's own `gradcam_spec` (target layer, reshape, score):
- GeoCLIP: the image's similarity to one location (a gallery point, default the top-1, or any (lat, lon)).
- TransLocator: the logit of one fine geo-cell (default the top-1) in the RGB branch, the segmentation map
  held fixed.
- GeoDecoder: the logit of one fine geo-cell at the encoder's last block.

The map is computed on the model's own input (its preprocessing: resize + centre crop) and placed back at the
original image's size; parts the crop cut off get 0 and are dimmed in the overlay.

`precision="bf16"` runs the forward and backward pass of the backbone under bf16 autocast
(`geocore.models.precision`); activations and gradients are taken in float32 for the map.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from geocore.errors import InputError
from geocore.models.base import GeoLocator
from geocore.models.cell_classifier import CellClassifier
from geocore.models.precision import use_precision
from geocore.models.views import crop_like_photo, preprocess_box


@dataclass(frozen=True)
class CamResult:
    """cam: (H, W) float32 in [0, 1] at the original image size; overlay: the heat map over the photo."""

    cam: np.ndarray
    overlay: Image.Image
    target_desc: str
    precision: str = "fp32"  # the precision the backbone ran at ("fp32" or "bf16")


class _Scalar(nn.Module):
    """Wraps `fn(pixels) -> (B, K)` as a module, so GradCAM can call it and find its parameters."""

    def __init__(self, model: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.model, self.fn = model, fn

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.fn(pixels)


def crop_box(preprocess: Any, size: tuple[int, int]) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of the original image (w, h) = `size` that `preprocess` keeps
    (`geocore.models.views.preprocess_box`, the one geometry of training and inference)."""
    return preprocess_box(preprocess, size)


def _to_original(cam: np.ndarray, image: Image.Image, box: tuple[float, float, float, float]) -> np.ndarray:
    """Paste a (h, w) input-sized map into the crop box of an original-size zero map."""
    left, top, right, bottom = (int(round(v)) for v in box)
    left, top = max(left, 0), max(top, 0)
    right, bottom = min(right, image.width), min(bottom, image.height)
    out = np.zeros((image.height, image.width), dtype=np.float32)
    patch = Image.fromarray(cam.astype(np.float32), mode="F").resize((right - left, bottom - top),
                                                                      Image.Resampling.BILINEAR)
    out[top:bottom, left:right] = np.asarray(patch)
    return np.clip(out, 0.0, 1.0)


def overlay_cam(image: Image.Image, cam: np.ndarray, box: tuple[float, float, float, float] | None = None,
                image_weight: float = 0.5) -> Image.Image:
    """Jet heat map of `cam` blended over the photo; outside `box` (unseen by the model) is dimmed."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    out = show_cam_on_image(rgb, cam, use_rgb=True, image_weight=image_weight)  # (H, W, 3) uint8
    if box is not None:
        left, top, right, bottom = (int(round(v)) for v in box)
        mask = np.ones(cam.shape, dtype=bool)
        mask[max(top, 0):bottom, max(left, 0):right] = False
        out[mask] = (rgb[mask] * 255 * 0.35).astype(np.uint8)
    return Image.fromarray(out)


def _seg_input(model: GeoLocator, seg: Any, image: Image.Image, pixels: torch.Tensor) -> torch.Tensor | None:
    """The fixed segmentation input of a `needs_segmentation` model, cut like the photo as the model predicts:
    `seg` (labels (H, W) / colour map (3, H, W)) of the whole image, cut by `crop_like_photo`, or at the input's
    size, used as it is; None: the model's own segmenter on the whole photo (`photo_seg`), or (a plain
    callable segmenter) None, and the model segments its input itself."""
    size = tuple(pixels.shape[-2:])
    if seg is None:
        seg = model.photo_seg(image) if isinstance(model, CellClassifier) else None
        if seg is None:
            return None
    else:
        seg = torch.as_tensor(np.asarray(seg)) if not isinstance(seg, torch.Tensor) else seg
        if tuple(seg.shape[-2:]) == (image.height, image.width) != size:
            seg = crop_like_photo(seg, model.preprocess, image.size, size[-1])  # the same view as the photo
    if seg.dim() == 2 or (seg.dim() == 3 and seg.shape[0] == 3 and seg.is_floating_point()):
        seg = seg[None]
    return model.prepare_seg(seg, size).detach()


def gradcam(model: GeoLocator, image: Image.Image, target: int | tuple[float, float] | None = None, *,
            seg: Any = None, precision: str = "fp32") -> CamResult:
    """Grad-CAM of `model` on a PIL image. target: GeoCLIP — a gallery index or a (lat, lon) (default top-1);
    TransLocator / GeoDecoder — a fine-cell index (default top-1). seg: TransLocator's segmentation map.
    precision: "fp32" | "bf16" | "auto" for the backbone's forward and backward (the default top-1 is the one
    `predict` gives at that precision)."""
    if not isinstance(image, Image.Image):
        raise InputError(f"gradcam: expected a PIL image, got {type(image).__name__}")
    with use_precision(precision, model.device, model) as used:
        cam, overlay, desc = _gradcam(model, image, target, seg)
    return CamResult(cam, overlay, desc, used)


def _gradcam(model: GeoLocator, image: Image.Image, target: Any, seg: Any) -> tuple[np.ndarray, Image.Image, str]:
    from pytorch_grad_cam import GradCAM

    image = image.convert("RGB")
    box = crop_box(model.preprocess, image.size)
    pixels = model.preprocess(image)[None].to(model.device)
    inputs: dict[str, Any] = {}
    if model.needs_segmentation:
        seg_in = _seg_input(model, seg, image, pixels)
        if seg_in is not None:  # else the model segments its own input
            inputs["seg"] = seg_in
    spec = model.gradcam_spec(pixels, target, **inputs)

    was_training, maps = model.training, None
    saved = [(prm, prm.requires_grad, prm.grad) for prm in model.parameters()]
    model.requires_grad_(False)  # gradients reach the activations through the input; no parameter grads
    try:  # the context manager removes GradCAM's hooks on exit
        # float32 maps: pytorch_grad_cam hands activations and gradients to numpy, which has no bfloat16
        reshape = lambda t: spec.reshape_transform(t).float()  # noqa: E731
        with torch.enable_grad(), GradCAM(model=_Scalar(model, spec.score), target_layers=[spec.target_layer],
                                          reshape_transform=reshape) as cam:
            x = pixels.detach().clone().requires_grad_(True)  # the backbone is frozen: grads flow from the input
            maps = cam(input_tensor=x, targets=[lambda out: out[spec.index]])  # (1, h_in, w_in) in [0, 1]
    finally:
        model.train(was_training)
        for prm, flag, grad in saved:  # as they were (GradCAM's zero_grad would drop existing grads)
            prm.requires_grad_(flag)
            prm.grad = grad
    if maps is None:  # pytorch_grad_cam's __exit__ swallows IndexError
        raise RuntimeError(f"Grad-CAM failed for {type(model).__name__} ({spec.description})")
    result = _to_original(maps[0], image, box)
    return result, overlay_cam(image, result, box), spec.description
