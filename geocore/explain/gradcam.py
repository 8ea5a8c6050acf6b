"""Grad-CAM (Selvaraju et al., ICCV 2017) for every geocore model, through `pytorch_grad_cam`.

What is explained:
- GeoCLIP: the image's similarity to one location (a gallery point, default the top-1, or any (lat, lon)),
  at the input of the last CLIP block (`resblocks[-1].ln_1`: the image embedding is read from the class token
  only, so the last block's own patch outputs get no gradient).
- TransLocator: the logit of one fine geo-cell (default the top-1) at `rgb_blocks[-1].norm1` of the RGB branch
  (class-token readout, as above), with the segmentation map held fixed.
- GeoDecoder: the logit of one fine geo-cell at `backbone_blocks[-1]` (the decoder attends to every token).

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


def _geoclip_target(model: Any, pixels: torch.Tensor,
                    target: int | tuple[float, float] | None) -> tuple[torch.Tensor, str]:
    if target is None or isinstance(target, (int, np.integer)):
        if target is None:
            with torch.no_grad():
                target = int(model.predict(pixels, top_k=1).indices[0, 0])
        n = int(model.gallery.shape[0])
        if not 0 <= int(target) < n:
            raise InputError(f"target gallery point {target} out of range 0..{n - 1}")
        lat, lon = (float(v) for v in model.gallery[int(target)].tolist())
        emb = model.gallery_embeddings()[int(target)][None]
        return emb, f"similarity to gallery point #{int(target)} ({lat:.4f}, {lon:.4f})"
    lat, lon = (float(v) for v in target)
    emb = model.embed_locations(torch.tensor([[lat, lon]]))
    return emb, f"similarity to ({lat:.4f}, {lon:.4f})"


def _seg_input(model: Any, seg: Any, image: Image.Image, box: tuple[float, ...], pixels: torch.Tensor) -> torch.Tensor:
    """TransLocator's normalised S-branch input: from `seg` (labels (H, W) / colour map at the image's or the
    input's size), else the attached segmenter."""
    if seg is None:
        if getattr(model, "segmenter", None) is None:
            raise InputError("TransLocator needs a segmentation map: pass seg= or attach a segmenter "
                             "(geocore.explain.segmentation.Segmenter(...).attach(model))")
        seg = model.segmenter(pixels)
    seg = torch.as_tensor(np.asarray(seg)) if not isinstance(seg, torch.Tensor) else seg
    if seg.dim() == 2 or (seg.dim() == 3 and seg.shape[0] == 3 and seg.is_floating_point()):
        seg = seg[None]
    if tuple(seg.shape[-2:]) == (image.height, image.width) != tuple(pixels.shape[-2:]):
        left, top, right, bottom = (int(round(v)) for v in box)
        seg = seg[..., max(top, 0):bottom, max(left, 0):right]  # the same crop as the photo
    return model.prepare_seg(seg, tuple(pixels.shape[-2:])).detach()


def gradcam(model: nn.Module, image: Image.Image, target: int | tuple[float, float] | None = None, *,
            seg: Any = None) -> CamResult:
    """Grad-CAM of `model` on a PIL image. target: GeoCLIP — a gallery index or a (lat, lon) (default top-1);
    TransLocator / GeoDecoder — a fine-cell index (default top-1). seg: TransLocator's segmentation map."""
    from pytorch_grad_cam import GradCAM

    if not isinstance(image, Image.Image):
        raise InputError(f"gradcam: expected a PIL image, got {type(image).__name__}")
    image = image.convert("RGB")
    box = crop_box(model.preprocess, image.size)
    pixels = model.preprocess(image)[None].to(model.device)
    kind = type(model).__name__
    if hasattr(model, "clip"):  # GeoCLIP
        emb, desc = _geoclip_target(model, pixels, target)
        fn = lambda x: model.image_embeddings(x) @ emb.T  # noqa: E731  (B, 1) cosine similarity
        layer, index = model.clip.visual.transformer.resblocks[-1].ln_1, 0
        grid, prefix = tuple(model.clip.visual.grid_size), 1
        reshape = lambda t: _tokens_to_map(t, grid, prefix)  # noqa: E731
    elif hasattr(model, "rgb_blocks"):  # TransLocator
        seg_in = _seg_input(model, seg, image, box, pixels)
        fn = lambda x: model(x, seg_in.expand(x.shape[0], -1, -1, -1))["fine"]  # noqa: E731
        layer, reshape = model.rgb_blocks[-1].norm1, model.reshape_transform
        index, desc = _cell_target(model, pixels, target, seg=seg_in)
    elif hasattr(model, "backbone_blocks"):  # GeoDecoder
        fn = lambda x: model(x)["fine"]  # noqa: E731
        layer, reshape = model.backbone_blocks[-1], model.reshape_transform
        index, desc = _cell_target(model, pixels, target)
    else:
        raise InputError(f"Grad-CAM does not know model {kind}")

    was_training, maps = model.training, None
    saved = [(prm, prm.requires_grad, prm.grad) for prm in model.parameters()]
    model.requires_grad_(False)  # gradients reach the activations through the input; no parameter grads
    try:  # the context manager removes GradCAM's hooks on exit
        with torch.enable_grad(), GradCAM(model=_Scalar(model, fn), target_layers=[layer],
                                          reshape_transform=reshape) as cam:
            x = pixels.detach().clone().requires_grad_(True)  # the backbone is frozen: grads flow from the input
            maps = cam(input_tensor=x, targets=[lambda out: out[index]])  # (1, h_in, w_in) in [0, 1]
    finally:
        model.train(was_training)
        for prm, flag, grad in saved:  # as they were (GradCAM's zero_grad would drop existing grads)
            prm.requires_grad_(flag)
            prm.grad = grad
    if maps is None:  # pytorch_grad_cam's __exit__ swallows IndexError
        raise RuntimeError(f"Grad-CAM failed for {kind} ({desc})")
    result = _to_original(maps[0], image, box)
    return CamResult(result, overlay_cam(image, result, box), desc)


def _tokens_to_map(tokens: torch.Tensor, grid: tuple[int, int], prefix: int) -> torch.Tensor:
    """(B, prefix + h·w, C) batch-first CLIP tokens → (B, C, h, w), class token dropped."""
    x = tokens[:, prefix:]
    if x.shape[1] != grid[0] * grid[1]:
        raise InputError(f"Grad-CAM: {x.shape[1]} patch tokens do not form a {grid[0]}x{grid[1]} grid")
    return x.reshape(x.shape[0], grid[0], grid[1], x.shape[2]).permute(0, 3, 1, 2)


def _cell_target(model: Any, pixels: torch.Tensor, target: Any, **kw: Any) -> tuple[int, str]:
    """The fine cell to explain: `target`, else the model's top-1 prediction (levels combined as it predicts)."""
    n = int(model.config["num_cells"][2])
    known = bool(model.cells_known)
    if target is None:
        with torch.no_grad():
            probs = model.level_probs(pixels, **kw)
            target = int((model.probs_to_prediction(probs, 1, False).indices[0, 0] if known
                          else probs[2][0].argmax()))
    if isinstance(target, (tuple, list)) or not 0 <= int(target) < n:
        raise InputError(f"target: expected a fine-cell index 0..{n - 1}, got {target!r}")
    where = "centroid {:.4f}, {:.4f}".format(*model.centroids[int(target)].tolist()) if known else "no centroids"
    return int(target), f"logit of fine cell #{int(target)} ({where})"
