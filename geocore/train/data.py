"""Training data: a user's `IMG_FILE,LAT,LON` CSV and image folder as a LightningDataModule.

Rows whose image file is missing are skipped (and counted); unreadable images are dropped from their
batch by `collate_skip_errors`. Training images get GeoCLIP's augmentations (as the `geoclip`
package's `img_train_transform`, but with the backbone's own CLIP normalisation instead of ImageNet's);
validation images get the model's `preprocess`. The split is by IMG_ID, fixed by a seed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from torch.utils.data import DataLoader
from torchvision import transforms as T

from geocore.data.datasets import BenchmarkDataset, collate_skip_errors, image_ids_subset
from geocore.errors import InputError

MAX_GALLERY_POINTS = 100_000


def clip_normalization(preprocess: Callable[..., Any]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of the `Normalize` step in a model's preprocess; OpenAI CLIP's if there is none."""
    for step in getattr(preprocess, "transforms", []):
        if isinstance(step, T.Normalize):
            return tuple(step.mean), tuple(step.std)
    return OPENAI_DATASET_MEAN, OPENAI_DATASET_STD


def geoclip_train_transform(image_size: int = 224, mean: tuple[float, ...] = OPENAI_DATASET_MEAN,
                            std: tuple[float, ...] = OPENAI_DATASET_STD) -> T.Compose:
    """GeoCLIP's training augmentations: random resized crop, flip, colour jitter, grayscale, normalise."""
    return T.Compose([
        T.RandomResizedCrop(image_size),
        T.RandomHorizontalFlip(),
        T.RandomApply([T.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)], p=0.8),
        T.RandomGrayscale(p=0.2),
        T.ToTensor(),
        T.Normalize(mean, std),
    ])


def train_transform_for(preprocess: Callable[..., Any]) -> T.Compose:
    """GeoCLIP's training augmentations at the crop size and normalisation of a model's `preprocess`."""
    size = 224
    for step in getattr(preprocess, "transforms", []):
        if isinstance(step, T.CenterCrop):
            size = int(step.size[0])
    return geoclip_train_transform(size, *clip_normalization(preprocess))


def split_ids(ids: list[str], val_fraction: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """(train, val) IDs: a seeded random `val_fraction` of `ids` for validation (at least 1 when > 0)."""
    if not 0.0 <= val_fraction < 1.0:
        raise InputError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n = len(ids)
    n_val = 0 if val_fraction == 0 or n < 2 else min(n - 1, max(1, round(val_fraction * n)))
    order = np.random.default_rng(seed).permutation(n)
    val = set(order[:n_val].tolist())
    return [i for k, i in enumerate(ids) if k not in val], [i for k, i in enumerate(ids) if k in val]


def training_gallery(latlon: np.ndarray, max_points: int = MAX_GALLERY_POINTS, seed: int = 0) -> torch.Tensor:
    """(M, 2) float32 candidates from training coordinates: unique points, at most `max_points` (seeded sample)."""
    pts = np.unique(np.asarray(latlon, dtype=np.float32).reshape(-1, 2), axis=0)
    if len(pts) > max_points:
        pts = pts[np.sort(np.random.default_rng(seed).choice(len(pts), max_points, replace=False))]
    return torch.from_numpy(np.ascontiguousarray(pts))


def open_training_csv(csv: str | Path, images: str | Path) -> BenchmarkDataset:
    """The CSV's rows whose image exists; InputError when the CSV, the folder or every image is missing."""
    dataset = BenchmarkDataset(csv, images)
    if len(dataset) == 0:
        raise InputError(f"none of the {dataset.n_missing} image(s) listed in {csv} is in {images} "
                         "(IMG_FILE must be a path relative to the image folder)")
    return dataset


class SplitDataModule(L.LightningDataModule):
    """Loaders over `train_set` / `val_set` (None: no validation) that skip unreadable images."""

    batch_size: int
    num_workers: int
    train_set: Any
    val_set: Any

    def _loader(self, dataset: Any, shuffle: bool) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          collate_fn=collate_skip_errors, pin_memory=torch.cuda.is_available(),
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self.val_set, shuffle=False) if self.val_set is not None else []


class GeoImageDataModule(SplitDataModule):
    """Images + GPS from a CSV for `GeoCLIPModule`: batches are `collate_skip_errors` dicts."""

    def __init__(self, csv: str | Path, images: str | Path, *, val_transform: Callable[..., Any],
                 train_transform: Callable[..., Any] | None = None, batch_size: int = 512,
                 val_fraction: float = 0.05, seed: int = 0, num_workers: int = 4,
                 dataset: BenchmarkDataset | None = None) -> None:
        super().__init__()
        self.dataset = dataset if dataset is not None else open_training_csv(csv, images)
        self.batch_size, self.num_workers = batch_size, num_workers
        train_ids, val_ids = split_ids(self.dataset.img_ids, val_fraction, seed)
        self.train_set = image_ids_subset(self.dataset, train_ids)
        self.train_set.transform = train_transform or train_transform_for(val_transform)
        self.val_set = image_ids_subset(self.dataset, val_ids) if val_ids else None
        if self.val_set is not None:
            self.val_set.transform = val_transform
        self.gallery = training_gallery(self.train_set.frame[["LAT", "LON"]].to_numpy(), seed=seed)

    @property
    def n_missing(self) -> int:
        return self.dataset.n_missing


