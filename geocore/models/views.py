"""Where each network input comes from in the photo: one geometry for the photo and its segmentation map,
in training and at inference.

A *view* is a box of the photo, as fractions (left, top, right, bottom) of its width and height, and a flag
for a mirrored view. The same view cuts the RGB input out of the photo and the segmentation input out of
the photo's whole segmentation map (at any resolution with the photo's aspect), so the two always cover the
same scene: TransLocator's maps are computed once per photo, as the paper precomputes them, then cropped
exactly like the photo (`crop_map`), in training (`geocore.train.cells_data`), at inference
(`TransLocator.predict`) and in Grad-CAM (`geocore.explain.gradcam`).

Views:
- `centre_view`: what a model's eval `preprocess` keeps (resize + centre crop), one view;
- `ten_crop_views`: the ten-crop test of the papers (TransLocator supplement §0.A.2 / Table 0.A.1: resize to
  (256, 256), i.e. squashed, then the four corners and the centre at 224 and their mirror images; GeoDecoder's
  public code: the shorter side to 256, then the same ten crops), scaled to the model's input size.
`CellInputs` turns a PIL photo into the inputs a cell model's `predict` takes (`CellClassifier.prepare`);
`batch_inputs` stacks them (the CLI, `locate`, `evaluate`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from geocore.errors import InputError
from geocore.tensors import as_numpy

Box = tuple[float, float, float, float]  # (left, top, right, bottom), fractions of the photo's width / height
View = tuple[Box, bool]  # box, mirrored
TENCROP_RESIZE = 256  # the papers' resize before ten 224 crops; scaled by size / 224 for other input sizes
TENCROP_CROP = 224


def preprocess_box(preprocess: Any, size: tuple[int, int]) -> Box:
    """(left, top, right, bottom) in pixels of the photo (w, h) = `size` that `preprocess` keeps.

    Follows torchvision Resize / CenterCrop steps (whole pixels for `FloorCenterCrop`); anything
    unrecognised keeps the whole photo."""
    from geocore.models.clip_backbone import FloorCenterCrop

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


def centre_view(preprocess: Any, width: int, height: int) -> View:
    """The one view `preprocess` (resize + centre crop) takes of a width × height photo."""
    left, top, right, bottom = preprocess_box(preprocess, (width, height))
    return (left / width, top / height, right / width, bottom / height), False


def ten_crop_views(width: int, height: int, size: int, *, squash: bool, resize: int | None = None) -> list[View]:
    """The ten views of torchvision's `TenCrop(size)` after `Resize((r, r))` (`squash`) or `Resize(r)` (shorter
    side to r), r = `resize` (default 256 · size / 224): corners top-left, top-right, bottom-left,
    bottom-right, centre, then the same five of the mirrored photo, in TenCrop's order."""
    r = resize if resize is not None else max(size + 1, round(TENCROP_RESIZE * size / TENCROP_CROP))
    if squash:
        rw, rh = r, r
    elif width <= height:  # torchvision's Resize(int): the shorter side to r, the longer truncated
        rw, rh = r, int(r * height / width)
    else:
        rw, rh = int(r * width / height), r
    if min(rw, rh) < size:
        raise InputError(f"ten-crop: a {size}-pixel crop does not fit in {rw}x{rh}")
    corners = [(0, 0), (rw - size, 0), (0, rh - size), (rw - size, rh - size),
               (int(round((rw - size) / 2.0)), int(round((rh - size) / 2.0)))]
    five = [(x / rw, y / rh, (x + size) / rw, (y + size) / rh) for x, y in corners]
    mirrored = [(1.0 - r_, t, 1.0 - l, b) for l, t, r_, b in five]  # crops of the mirrored photo, as boxes of the photo
    return [(b, False) for b in five] + [(b, True) for b in mirrored]


def render_view(image: Image.Image, view: View, size: int, resample: int = Image.BILINEAR) -> Image.Image:
    """The `size` × `size` image of `view` of `image` (mirrored when the view is)."""
    (left, top, right, bottom), flip = view
    w, h = image.size
    out = image.resize((size, size), resample, box=(left * w, top * h, right * w, bottom * h))
    return out.transpose(Image.FLIP_LEFT_RIGHT) if flip else out


def crop_map(seg: Image.Image, view: View, size: int) -> Image.Image:
    """A whole-photo segmentation map (labels "L", or a colour map "RGB", at any resolution with the photo's
    aspect) cut like the photo: the same view, nearest neighbour (labels never blend)."""
    return render_view(seg, view, size, Image.NEAREST)


def as_map_image(seg: Any) -> Image.Image:
    """A (H, W) integer label map or a (3, H, W) colour map (float in [0, 1] or uint8) as a PIL image."""
    if isinstance(seg, Image.Image):
        return seg
    arr = as_numpy(seg)
    if arr.ndim == 2:
        if arr.min(initial=0) < 0 or arr.max(initial=0) > 255:
            arr = np.where((arr >= 0) & (arr < 255), arr, 255)  # unlabelled: 255, rendered black
        return Image.fromarray(arr.astype(np.uint8), mode="L")
    if arr.ndim == 3 and arr.shape[0] == 3:
        arr = np.rint(arr * 255.0) if np.issubdtype(arr.dtype, np.floating) else arr
        return Image.fromarray(np.ascontiguousarray(arr.transpose(1, 2, 0)).astype(np.uint8), mode="RGB")
    raise InputError(f"segmentation map: expected (H, W) labels or a (3, H, W) colour map, got {arr.shape}")


def map_tensor(seg: Image.Image) -> torch.Tensor:
    """A cropped map back as a tensor: labels (H, W) uint8, colour (3, H, W) float in [0, 1]."""
    arr = np.array(seg, dtype=np.uint8)
    return torch.from_numpy(arr) if arr.ndim == 2 else torch.from_numpy(arr).permute(2, 0, 1).float() / 255.0


def crop_like_photo(seg: Any, preprocess: Any, photo_size: tuple[int, int], size: int) -> torch.Tensor:
    """A whole-photo map (labels (H, W) or colour (3, H, W), any resolution) cut like `preprocess` cuts the
    photo of `photo_size` (w, h), at `size` × `size`."""
    return map_tensor(crop_map(as_map_image(seg), centre_view(preprocess, *photo_size), size))


@dataclass
class SegmentInputs:
    """What a photo's whole-image segmentation needs, computed where the photo is read (a DataLoader worker):
    the segmenter's own input of the whole photo, and the size of the label map it is stored at."""

    processor: Any  # the segmenter's image processor (resizes the whole photo to its input size)
    short_side: int  # the label map's shorter side (`geocore.models.segmenter.SEG_SHORT_SIDE`)

    def __call__(self, image: Image.Image) -> dict[str, torch.Tensor]:
        from geocore.models.segmenter import map_size

        pixels = self.processor(images=image, return_tensors="pt")["pixel_values"][0]
        return {"seg_photo": pixels, "seg_size": torch.tensor(map_size(image.width, image.height, self.short_side))}


@dataclass
class CellInputs:
    """PIL photo → the inputs of a cell model's `predict`: "pixels" (3, H, W) for the centre view, or
    (10, 3, H, W) for the ten-crop views; with `segment`, also what `predict` needs to segment the whole
    photo and cut the map like each view ("seg_photo", "seg_views" (V, 5), "seg_size"). Picklable (no model)."""

    preprocess: Callable[[Image.Image], torch.Tensor]
    size: int
    mean: Sequence[float]
    std: Sequence[float]
    tencrop: bool = False
    squash: bool = False  # ten-crop: resize to (r, r) (TransLocator) or the shorter side to r (GeoDecoder)
    segment: SegmentInputs | None = None

    def views(self, image: Image.Image) -> list[View]:
        if self.tencrop:
            return ten_crop_views(image.width, image.height, self.size, squash=self.squash)
        return [centre_view(self.preprocess, image.width, image.height)]

    def __call__(self, image: Image.Image) -> dict[str, torch.Tensor]:
        image = image.convert("RGB")
        views = self.views(image)
        if self.tencrop:
            pixels = torch.stack([TF.normalize(TF.to_tensor(render_view(image, v, self.size)), list(self.mean),
                                               list(self.std)) for v in views])  # (10, 3, H, W)
        else:
            pixels = self.preprocess(image)  # (3, H, W), exactly the model's eval transform
        out = {"pixels": pixels}
        if self.segment is not None:
            out.update(self.segment(image))
            out["seg_views"] = torch.tensor([[*box, float(flip)] for box, flip in views], dtype=torch.float64)
        return out


def views_from_tensor(rows: torch.Tensor) -> list[View]:
    """(V, 5) rows (left, top, right, bottom, mirrored) → views."""
    return [((float(r[0]), float(r[1]), float(r[2]), float(r[3])), bool(r[4] > 0.5)) for r in rows.tolist()]


def batch_inputs(items: Sequence[Any] | torch.Tensor, device: torch.device | str | None = None
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-photo inputs (tensors, or `CellInputs` dicts) → (pixels batch, the other inputs batched), on `device`."""
    if isinstance(items, torch.Tensor):
        return items.to(device) if device is not None else items, {}
    if not items:
        raise InputError("no inputs to batch")
    if isinstance(items[0], torch.Tensor):
        pixels = torch.stack(list(items))
        return (pixels.to(device) if device is not None else pixels), {}
    keys = list(items[0])
    batched = {k: torch.stack([item[k] for item in items]) for k in keys}
    if device is not None:
        batched = {k: v.to(device) if k != "seg_views" else v for k, v in batched.items()}
    return batched.pop("pixels"), batched
