"""Training data for the geo-cell classifiers (TransLocator, GeoDecoder): CSV + images → labelled batches.

Rows of an `IMG_FILE,LAT,LON[,S3_Label,S16_Label,S365_Label]` CSV get their (coarse, middle, fine) cell
labels once, with `geocore.geo.cells.assign_cells` (−1 outside a partition: ignored by the loss; rows
outside all three are dropped and counted). Scene labels come from the CSV column matching the model's
scene classes (3 → S3_Label, 16 → S16_Label, 365 → S365_Label); without it the scene loss is skipped.

TransLocator's segmentation maps are computed once per image from the whole photo (`cache_segmaps`, in
`prepare_data`; `Segmenter.label_maps`, the same computation inference uses) and stored as uint8 label PNGs
`<cache>/<quoted IMG_ID>.png` at most `SEG_SHORT_SIDE` pixels on the short side (SegFormer's logits are
128×128 anyway); training loads them next to the image and cuts both by the same views
(`geocore.models.views`). Cached maps are reused as they are: delete the folder after changing the images.

Augmentation (`JointTransform`): "fast" (geocore's default: random resized crop + flip) or "paper"
(TransLocator supplement §0.A.2: RandomAffine, ColorJitter on the photo only, flip, Resize((256, 256)) and
the ten 224 crops, whose logits the model averages, as the authors' code does).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from geocore.data.datasets import BenchmarkDataset, collate_skip_errors, image_ids_subset
from geocore.data.images import load_image
from geocore.errors import ImageError, InputError
from geocore.geo.cells import CellPartition, assign_cells
from geocore.models.layers.hierarchy import LEVELS
from geocore.models.segmenter import SEG_SHORT_SIDE, map_size
from geocore.models.views import View, centre_view, crop_map, render_view, ten_crop_views
from geocore.train.data import SplitDataModule, open_training_csv, split_ids

AUGMENTS = ("fast", "paper")
SCENE_COLUMNS = {3: "S3_Label", 16: "S16_Label", 365: "S365_Label"}


def segmap_path(folder: Path, img_id: str) -> Path:
    """Cache file of one image: the IMG_ID percent-quoted (so sub/a.jpg never collides with sub_a.jpg)."""
    return Path(folder) / f"{quote(img_id, safe='')}.png"


class _ToSegment(Dataset):
    """Images still missing from the cache, as SegFormer inputs (3, S, S) and their stored map size."""

    def __init__(self, frame: Any, processor: Any) -> None:
        self.rows = list(zip(frame["IMG_ID"], frame["_path"]))
        self.processor = processor

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        img_id, path = self.rows[i]
        try:
            image = load_image(path)
        except ImageError:
            return {"img_id": img_id, "image": None, "size": None, "error": "unreadable"}
        size = torch.tensor(map_size(image.width, image.height, SEG_SHORT_SIDE))
        pixels = self.processor(images=image, return_tensors="pt")["pixel_values"][0]
        return {"img_id": img_id, "image": pixels, "size": size, "error": None}


@torch.no_grad()
def cache_segmaps(segmenter: Any, dataset: BenchmarkDataset, folder: str | Path, *, batch_size: int = 16,
                  num_workers: int = 0, device: str | torch.device = "cpu", progress: bool = False) -> int:
    """Segment every image of `dataset` without a cache file in `folder`; returns how many were written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    todo = dataset.frame[[not segmap_path(folder, i).is_file() for i in dataset.frame["IMG_ID"]]]
    if len(todo) == 0:
        return 0
    if segmenter.num_classes > 256:
        raise InputError(f"segmenter has {segmenter.num_classes} classes; label PNGs hold at most 256")
    segmenter.to(device)
    loader = DataLoader(_ToSegment(todo, segmenter.processor), batch_size=batch_size, num_workers=num_workers,
                        collate_fn=collate_skip_errors)
    if progress:
        from tqdm.auto import tqdm

        loader = tqdm(loader, desc="segmentation maps", unit="batch")
    written = 0
    for batch in loader:
        if len(batch["img_id"]) == 0:
            continue
        maps = segmenter.label_maps(batch["image"], [tuple(int(v) for v in size) for size in batch["size"]])
        for labels, img_id in zip(maps, batch["img_id"]):
            target = segmap_path(folder, img_id)
            tmp = target.with_name(target.name + f".{os.getpid()}.tmp")
            Image.fromarray(labels, mode="L").save(tmp, format="PNG")
            os.replace(tmp, target)  # atomic: concurrent writers (several nodes) never leave half a file
            written += 1
    segmenter.to("cpu")
    return written


class JointTransform:
    """Image (and its whole-photo segmentation map) → tensors, both cut by the same views.

    train, augment "fast": a random resized crop (scale `scale`, ratio 3/4–4/3) and a flip, applied to both.
    train, augment "paper" (TransLocator supplement §0.A.2): RandomAffine(degrees=(0, 15)) on both (the map
    filled with 255, "no label"), ColorJitter(0.4, 0.4, 0.4, 0.1) with probability 0.8 on the photo only,
    a horizontal flip (p 0.5) on both, then the ten views of Resize((256, 256)) + TenCrop(224) (scaled to the
    model's input): pixels (10, 3, H, W), map (10, H, W).
    eval: the model's `preprocess` and its centre view for the map; with `tencrop`, the ten views.
    """

    def __init__(self, preprocess: Callable[..., Any], size: int, mean: Sequence[float], std: Sequence[float],
                 train: bool, scale: tuple[float, float] = (0.08, 1.0), augment: str = "fast",
                 tencrop: bool = False, squash: bool = True) -> None:
        if augment not in AUGMENTS:
            raise InputError(f"augment: expected one of {', '.join(AUGMENTS)}, got {augment!r}")
        self.preprocess, self.size, self.mean, self.std = preprocess, size, list(mean), list(std)
        self.train, self.scale, self.augment, self.tencrop, self.squash = train, scale, augment, tencrop, squash
        self.jitter = T.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)

    def _paper_augment(self, image: Image.Image, seg: Image.Image | None) -> tuple[Image.Image, Image.Image | None]:
        angle = float(torch.empty(()).uniform_(0.0, 15.0))  # RandomAffine(degrees=(0, 15)): rotation only
        affine = dict(angle=angle, translate=[0, 0], scale=1.0, shear=[0.0, 0.0],
                      interpolation=T.InterpolationMode.NEAREST)  # RandomAffine's default interpolation
        image = TF.affine(image, fill=0, **affine)
        seg = TF.affine(seg, fill=255, **affine) if seg is not None else None  # 255: no label (black)
        if bool(torch.rand(()) < 0.8):
            image = self.jitter(image)  # the photo only (§0.A.2: "We apply ColorJitter only in the RGB channel")
        if bool(torch.rand(()) < 0.5):
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
            seg = seg.transpose(Image.FLIP_LEFT_RIGHT) if seg is not None else None
        return image, seg

    def views(self, image: Image.Image) -> list[View]:
        """The views of this (augmented) photo."""
        n = self.size
        if self.train and self.augment == "fast":
            top, left, h, w = T.RandomResizedCrop.get_params(image, list(self.scale), [3 / 4, 4 / 3])
            box = (left / image.width, top / image.height, (left + w) / image.width, (top + h) / image.height)
            return [(box, bool(torch.rand(()) < 0.5))]
        if (self.train and self.augment == "paper") or self.tencrop:
            return ten_crop_views(image.width, image.height, n, squash=self.squash)
        return [centre_view(self.preprocess, image.width, image.height)]

    def __call__(self, image: Image.Image, seg: Image.Image | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        n = self.size
        if self.train and self.augment == "paper":
            image, seg = self._paper_augment(image, seg)
        views = self.views(image)
        if not self.train and not self.tencrop:
            pixels = self.preprocess(image)  # exactly the model's eval transform
        else:
            resample = Image.BICUBIC if self.augment == "fast" and self.train else Image.BILINEAR
            crops = [TF.normalize(TF.to_tensor(render_view(image, v, n, resample)), self.mean, self.std)
                     for v in views]
            pixels = crops[0] if len(crops) == 1 else torch.stack(crops)
        if seg is None:
            return pixels, None
        maps = [torch.from_numpy(np.array(crop_map(seg, v, n), dtype=np.uint8)) for v in views]
        return pixels, maps[0] if len(maps) == 1 else torch.stack(maps)


class CellDataset(Dataset):
    """Items: image, seg (uint8 (H, W) labels, or None without a cache), coarse/middle/fine, scene (when known)."""

    def __init__(self, base: BenchmarkDataset, transform: JointTransform, seg_dir: Path | None,
                 scene_column: str | None) -> None:
        self.base, self.transform, self.seg_dir, self.scene_column = base, transform, seg_dir, scene_column

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        item = self.base[idx]  # PIL image (the base has no transform), or an error
        row = self.base.frame.iloc[idx]
        image, item["image"] = item.pop("image"), None
        item.update({level: int(row[f"_{level}"]) for level in LEVELS})
        if self.scene_column is not None:
            item["scene"] = item.get(self.scene_column, -1)
        if self.seg_dir is not None:
            item["seg"] = None  # every item has the same keys, error items included (collate_skip_errors)
        if item["error"] is not None:
            return item
        seg = None
        if self.seg_dir is not None:
            path = segmap_path(self.seg_dir, item["img_id"])
            if not path.is_file():
                item["error"] = f"{path}: segmentation map missing (delete the cache folder to rebuild it)"
                return item
            seg = Image.open(path)
            seg.load()
        pixels, seg_t = self.transform(image, seg)
        item["image"] = pixels
        if self.seg_dir is not None:
            item["seg"] = seg_t
        return item


def model_geometry(model: Any) -> tuple[int, list[float], list[float]]:
    """(input size, mean, std) of a TransLocator or GeoDecoder."""
    return model.image_size, model.mean.flatten().tolist(), model.std.flatten().tolist()


class CellDataModule(SplitDataModule):
    """Labelled images for `CellModule`; with a `segmenter`, segmentation maps cached under `seg_dir`."""

    def __init__(self, csv: str | Path, images: str | Path, *, model: Any, partitions: Sequence[CellPartition],
                 batch_size: int = 64, val_fraction: float = 0.05, seed: int = 0, num_workers: int = 4,
                 segmenter: Any = None, seg_dir: str | Path | None = None, seg_device: str = "cpu",
                 progress: bool = False, dataset: BenchmarkDataset | None = None, augment: str = "fast",
                 val_tencrop: bool = False) -> None:
        super().__init__()
        if segmenter is not None and seg_dir is None:
            raise InputError("a segmenter needs seg_dir, the folder its maps are cached in")
        data = dataset if dataset is not None else open_training_csv(csv, images)
        latlon = data.frame[["LAT", "LON"]].to_numpy(np.float64)
        for level, part in zip(LEVELS, partitions):
            data.frame[f"_{level}"] = assign_cells(part, latlon)
        outside = (data.frame[[f"_{level}" for level in LEVELS]] < 0).all(axis=1)
        self.n_missing, self.n_outside = data.n_missing, int(outside.sum())
        if self.n_outside == len(data.frame):
            raise InputError(f"none of the {len(data.frame)} image(s) of {csv} lies in a cell of the partitions")
        data = image_ids_subset(data, data.frame.loc[~outside, "IMG_ID"])
        self.dataset = data
        column = SCENE_COLUMNS.get(int(model.config["scene_classes"]))
        self.scene_column = column if column in data.labels else None
        self.segmenter, self.seg_dir, self.seg_device = segmenter, Path(seg_dir) if seg_dir else None, seg_device
        self.batch_size, self.num_workers, self.progress = batch_size, num_workers, progress
        size, mean, std = model_geometry(model)
        self.train_ids, self.val_ids = split_ids(data.img_ids, val_fraction, seed)
        seg = self.seg_dir if segmenter is not None else None
        squash = bool(getattr(model, "TENCROP_SQUASH", True))

        def subset(ids: list[str], train: bool) -> CellDataset:
            transform = JointTransform(model.preprocess, size, mean, std, train=train, augment=augment,
                                       tencrop=val_tencrop and not train, squash=squash)
            return CellDataset(image_ids_subset(data, ids), transform, seg, self.scene_column)

        self.train_set = subset(self.train_ids, True)
        self.val_set = subset(self.val_ids, False) if self.val_ids else None

    def prepare_data(self) -> None:
        """Segment the images not cached yet (once per node, before training starts)."""
        if self.segmenter is not None:
            cache_segmaps(self.segmenter, self.dataset, self.seg_dir, num_workers=self.num_workers,
                          device=self.seg_device, progress=self.progress)

