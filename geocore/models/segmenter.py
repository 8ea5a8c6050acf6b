"""Semantic segmentation into the 150 ADE20K classes with a transformers SegFormer: TransLocator's second input.

`load_segmenter("segformer-b0-ade")` loads a local snapshot folder (found by `geocore.weights.resolve`, never
downloaded here; `geocore weights download segformer-b0-ade` gets it). `Segmenter.segment(image)` gives a
label map at the image's size; calling the segmenter on a batch of network inputs gives the colour maps
TransLocator's segmentation branch takes (`create_model("translocator", ..., segmenter=NAME)` attaches it).
Colours are `geocore.models.layers.seg_palette.ade20k_palette`, the palette TransLocator is trained with.

One geometry everywhere: a photo is segmented whole (`SegformerImageProcessor` resizes it to the network's
512 × 512), the logits are upsampled to `map_size` (shorter side `SEG_SHORT_SIDE`) and arg-maxed
(`label_maps`); training caches exactly these maps, and inference computes them the same way, then both cut
them like the photo (`geocore.models.views.crop_map`).

Not the paper's segmenter: TransLocator (§3.2) used "HRNet [62] pre-trained on ADE20K and scene parsing
datasets" (the CSAIL scene-parsing HRNetV2). SegFormer (ADE20K, the same 150 classes) is our substitute: its
weights are on the Hugging Face Hub, where `geocore.weights` fetches from; the packages that ship ADE20K
HRNet weights (`mit-semseg`, last released 2021; `mmsegmentation` + `mmcv`) download them from their own
servers, not from the Hub or a wheel, so geocore does not offer HRNet (docs/faithfulness.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image

from geocore.errors import InputError
from geocore.models.layers.seg_palette import ade20k_palette, render_segmentation
from geocore.weights.resolve import parse_pretrained
from geocore.tensors import as_numpy, on_cpu

DEFAULT_SEGMENTER = "segformer-b0-ade"
SEG_SHORT_SIDE = 256  # shorter side of a photo's stored label map (SegFormer's logits are 128x128 anyway)


def map_size(width: int, height: int, short_side: int = SEG_SHORT_SIDE) -> tuple[int, int]:
    """(h, w) of a width × height photo's label map: its shorter side at most `short_side`, aspect kept."""
    scale = min(1.0, short_side / min(width, height))
    return max(1, round(height * scale)), max(1, round(width * scale))


class Segmenter:
    """A SegFormer semantic segmenter (ADE20K, 150 classes) with its image processor."""

    def __init__(self, model: Any, processor: Any, name: str = "segformer") -> None:
        self.model = model.eval().requires_grad_(False)
        self.processor = processor
        self.name = name
        mean, std = self._stats()
        # statistics the pixels given to __call__ are normalised with (default: the processor's own)
        self.input_mean, self.input_std = mean, std

    # ---- construction ---------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, name: str = DEFAULT_SEGMENTER, weights: str | Path | None = None) -> "Segmenter":
        """Load weights `name` (e.g. "segformer-b0-ade", "segformer-b2-ade") from this machine, or the
        transformers folder `weights`; WeightsMissingError naming the download command when absent."""
        from transformers import SegformerForSemanticSegmentation, SegformerImageProcessor

        from geocore.weights.resolve import resolve_snapshot

        folder = resolve_snapshot(name, weights)
        model = SegformerForSemanticSegmentation.from_pretrained(folder, local_files_only=True)
        if (folder / "preprocessor_config.json").is_file():
            processor = SegformerImageProcessor.from_pretrained(folder, local_files_only=True)
        else:  # the ADE20K checkpoints' settings: 512x512, ImageNet mean/std
            processor = SegformerImageProcessor()
        return cls(model, processor, name)

    @classmethod
    def from_config(cls, config: Any, image_size: int = 512, seed: int = 0) -> "Segmenter":
        """A randomly initialised segmenter from a `SegformerConfig` (tests); inputs resized to `image_size`."""
        from transformers import SegformerForSemanticSegmentation, SegformerImageProcessor

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = SegformerForSemanticSegmentation(config)
        processor = SegformerImageProcessor(size={"height": image_size, "width": image_size})
        return cls(model, processor, "segformer-random")

    def _stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.tensor(self.processor.image_mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(self.processor.image_std, dtype=torch.float32).view(1, 3, 1, 1)
        return mean, std

    def set_input_stats(self, mean: torch.Tensor, std: torch.Tensor) -> "Segmenter":
        """The statistics the pixels given to `__call__` are normalised with (a TransLocator's own)."""
        self.input_mean = on_cpu(mean, torch.float32).view(1, 3, 1, 1)
        self.input_std = on_cpu(std, torch.float32).view(1, 3, 1, 1)
        return self

    # ---- classes --------------------------------------------------------------------------------------

    @property
    def num_classes(self) -> int:
        return int(self.model.config.num_labels)

    @property
    def class_names(self) -> list[str]:
        """Class names by id, from the model config's id2label."""
        id2label = {int(k): v for k, v in self.model.config.id2label.items()}
        return [id2label.get(i, f"class {i}") for i in range(self.num_classes)]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> "Segmenter":
        """Move the network to `device` (inputs follow it; results come back on the caller's device)."""
        self.model.to(device)
        return self

    # ---- inference ------------------------------------------------------------------------------------

    @torch.no_grad()
    def logits(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) SegFormer inputs → (B, K, h/4, w/4) class logits."""
        return self.model(pixel_values=pixel_values.to(self.device)).logits

    @torch.no_grad()
    def labels(self, pixel_values: torch.Tensor, size: tuple[int, int], chunk: int = 16) -> torch.Tensor:
        """(B, 3, h, w) SegFormer inputs → (B, *size) class ids: logits upsampled bilinearly, then argmax."""
        return upsample_argmax(self.logits(pixel_values), size, chunk)

    @torch.no_grad()
    def label_maps(self, pixel_values: torch.Tensor, sizes: list[tuple[int, int]]) -> list[np.ndarray]:
        """(B, 3, h, w) inputs of whole photos (the processor's) → each photo's (h_i, w_i) = sizes[i] uint8
        label map: the one computation behind TransLocator's cached training maps and its inference maps."""
        if self.num_classes > 256:
            raise InputError(f"segmenter has {self.num_classes} classes; uint8 label maps hold at most 256")
        low = self.logits(pixel_values)
        return [as_numpy(upsample_argmax(low[k:k + 1], tuple(int(v) for v in size))[0].to(torch.uint8))
                for k, size in enumerate(sizes)]

    def photo_input(self, image: Image.Image) -> torch.Tensor:
        """(3, h, w) network input of a whole photo (the processor resizes it)."""
        return self.processor(images=image.convert("RGB"), return_tensors="pt")["pixel_values"][0]

    def segment(self, image: Image.Image) -> np.ndarray:
        """(H, W) int64 class ids 0..classes-1 of a PIL image, at the image's size."""
        if not isinstance(image, Image.Image):
            raise InputError(f"segment: expected a PIL image, got {type(image).__name__}")
        return as_numpy(self.labels(self.photo_input(image)[None], (image.height, image.width))[0], np.int64)

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        """The legacy hook: (B, 3, H, W) network inputs → (B, 3, H, W) colour maps in [0, 1] of those inputs
        (their own geometry, not the whole photo's: `TransLocator.predict` uses `label_maps` of the whole
        photo when it has it)."""
        if pixels.dim() != 4 or pixels.shape[1] != 3:
            raise InputError(f"segmenter: expected (B, 3, H, W) pixels, got {tuple(pixels.shape)}")
        size = tuple(pixels.shape[-2:])
        rgb = (pixels.detach().float().cpu() * self.input_std + self.input_mean).clamp(0, 1)  # back to [0, 1]
        mean, std = self._stats()
        target = self.processor.size
        x = F.interpolate(rgb, size=(target["height"], target["width"]), mode="bilinear", align_corners=False)
        labels = self.labels((x - mean) / std, size)  # (B, H, W)
        return render_segmentation(labels.cpu()).to(pixels.device)

    # ---- presentation ---------------------------------------------------------------------------------

    def legend(self, labels: np.ndarray) -> pd.DataFrame:
        """Classes present in `labels`: class_id, name, colour (hex), share of pixels; largest share first."""
        labels = np.asarray(labels)
        ids, counts = np.unique(labels[(labels >= 0) & (labels < self.num_classes)], return_counts=True)
        pal, names = ade20k_palette(self.num_classes), self.class_names
        frame = pd.DataFrame({
            "class_id": ids.astype(int),
            "name": [names[i] for i in ids],
            "colour": ["#{:02x}{:02x}{:02x}".format(*pal[i]) for i in ids],
            "share": counts / max(int(counts.sum()), 1),
        })
        return frame.sort_values(["share", "class_id"], ascending=[False, True], ignore_index=True)


def upsample_argmax(low: torch.Tensor, size: tuple[int, int], chunk: int = 16) -> torch.Tensor:
    """(B, K, h, w) logits → (B, *size) class ids: upsampled bilinearly, then argmax.

    Classes are upsampled `chunk` at a time (a running argmax), so a 2048-pixel photo never holds all 150
    full-size logit planes at once; ties keep the lower class id, as a single argmax would."""
    best = torch.full((low.shape[0], *size), -torch.inf, device=low.device)
    arg = torch.zeros((low.shape[0], *size), dtype=torch.long, device=low.device)
    for start in range(0, low.shape[1], chunk):
        up = F.interpolate(low[:, start:start + chunk].float(), size=size, mode="bilinear", align_corners=False)
        value, idx = up.max(1)
        better = value > best  # strict: ties keep the lower class id
        best = torch.where(better, value, best)
        arg = torch.where(better, idx + start, arg)
    return arg


def load_segmenter(segmenter: Any = DEFAULT_SEGMENTER) -> Segmenter:
    """A `Segmenter`: given as one, by weights name ("segformer-b0-ade"), or as a local transformers folder."""
    if isinstance(segmenter, Segmenter):
        return segmenter
    ref = parse_pretrained(segmenter)
    if ref.kind == "folder":
        return Segmenter.from_pretrained(DEFAULT_SEGMENTER, weights=ref.path)
    if ref.kind != "tag":
        raise InputError(f"segmenter: expected a weights name such as {DEFAULT_SEGMENTER} or a transformers "
                         f"folder, got {segmenter!r}")
    return Segmenter.from_pretrained(str(ref.value))
