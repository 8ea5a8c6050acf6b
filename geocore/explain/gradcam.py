"""Grad-CAM (Selvaraju et al., ICCV 2017) for every geocore model, through `pytorch_grad_cam`.

What is explained, and where, is each model's own `gradcam_spec` (target layer, reshape, score):
- GeoCLIP: the image's similarity to one location (a gallery point, default the top-1, or any (lat, lon)).
- TransLocator: the logit of one fine geo-cell (default the top-1) in the RGB branch, the segmentation map
  held fixed.
- GeoDecoder: the logit of one fine geo-cell at the encoder's last block.

The map is computed on the model's own input (its preprocessing: resize + centre crop) and placed back at the
original image's size; parts the crop cut off get 0 and are dimmed in the overlay.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision import transforms as T

from geocore.errors import InputError
from geocore.models.base import GeoLocator
from geocore.models.clip_backbone import FloorCenterCrop


@dataclass(frozen=True)
class CamResult:
    """cam: (H, W) float32 in [0, 1] at the original image size; overlay: the heat map over the photo."""

    cam: np.ndarray
    overlay: Image.Image
    target_desc: str


class _Scalar(nn.Module):
    """Wraps `fn(pixels) -> (B, K)` as a module, so GradCAM can call it and find its parameters."""

    def __init__(self, model: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.model, self.fn = model, fn

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.fn(pixels)


def crop_box(preprocess: Any, size: tuple[int, int]) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of the original image (w, h) = `size` that `preprocess` keeps.

    Follows torchvision Resize / CenterCrop steps; anything unrecognised keeps the whole image."""
    w, h = float(size[0]), float(size[1])
    box = [0.0, 0.0, w, h]  # in original pixels
    cur_w, cur_h = w, h  # current image size during the pipeline
    for t in getattr(preprocess, "transforms", []):
        if isinstance(t, T.Resize):
            s = t.size
            if isinstance(s, int) or (isinstance(s, (list, tuple)) and len(s) == 1):
                s = s if isinstance(s, int) else s[0]
                scale = s / min(cur_w, cur_h)
                new_w, new_h = cur_w * scale, cur_h * scale
            else:
                new_h, new_w = float(s[0]), float(s[1])
            cur_w, cur_h = new_w, new_h
        elif isinstance(t, T.CenterCrop):
            ch, cw = (t.size, t.size) if isinstance(t.size, int) else (t.size[0], t.size[-1])
            fx, fy = (box[2] - box[0]) / cur_w, (box[3] - box[1]) / cur_h  # original px per current px
            left, top = (cur_w - cw) / 2.0, (cur_h - ch) / 2.0
            if isinstance(t, FloorCenterCrop):  # whole pixels, rounded down
                left, top = float(int(left)), float(int(top))
            box = [box[0] + left * fx, box[1] + top * fy, box[0] + (left + cw) * fx, box[1] + (top + ch) * fy]
            cur_w, cur_h = float(cw), float(ch)
    return box[0], box[1], box[2], box[3]


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


def _seg_input(model: GeoLocator, seg: Any, image: Image.Image, box: tuple[float, ...],
               pixels: torch.Tensor) -> torch.Tensor:
    """The fixed segmentation input of a `needs_segmentation` model: `seg` (labels (H, W) / colour map at the
    image's or the input's size), cropped like the photo and normalised."""
    seg = torch.as_tensor(np.asarray(seg)) if not isinstance(seg, torch.Tensor) else seg
    if seg.dim() == 2 or (seg.dim() == 3 and seg.shape[0] == 3 and seg.is_floating_point()):
        seg = seg[None]
    if tuple(seg.shape[-2:]) == (image.height, image.width) != tuple(pixels.shape[-2:]):
        left, top, right, bottom = (int(round(v)) for v in box)
        seg = seg[..., max(top, 0):bottom, max(left, 0):right]  # the same crop as the photo
    return model.prepare_seg(seg, tuple(pixels.shape[-2:])).detach()


def gradcam(model: GeoLocator, image: Image.Image, target: int | tuple[float, float] | None = None, *,
            seg: Any = None) -> CamResult:
    """Grad-CAM of `model` on a PIL image. target: GeoCLIP — a gallery index or a (lat, lon) (default top-1);
    TransLocator / GeoDecoder — a fine-cell index (default top-1). seg: TransLocator's segmentation map."""
    from pytorch_grad_cam import GradCAM

    if not isinstance(image, Image.Image):
        raise InputError(f"gradcam: expected a PIL image, got {type(image).__name__}")
    image = image.convert("RGB")
    box = crop_box(model.preprocess, image.size)
    pixels = model.preprocess(image)[None].to(model.device)
    inputs: dict[str, Any] = {}
    if model.needs_segmentation and seg is not None:  # else the model segments its own input
        inputs["seg"] = _seg_input(model, seg, image, box, pixels)
    spec = model.gradcam_spec(pixels, target, **inputs)

    was_training, maps = model.training, None
    saved = [(prm, prm.requires_grad, prm.grad) for prm in model.parameters()]
    model.requires_grad_(False)  # gradients reach the activations through the input; no parameter grads
    try:  # the context manager removes GradCAM's hooks on exit
        with torch.enable_grad(), GradCAM(model=_Scalar(model, spec.score), target_layers=[spec.target_layer],
                                          reshape_transform=spec.reshape_transform) as cam:
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
    return CamResult(result, overlay_cam(image, result, box), spec.description)
