"""Backbone feature caching: run the frozen CLIP tower once, then train GeoCLIP's heads on the cache.

A cache file (torch.save, read back with `weights_only=True` and memory-mapped) holds
`features` (N, V, D) float16 — view 0 is the model's `preprocess`, views 1..K are GeoCLIP training
augmentations — with `latlon` (N, 2) float32, `img_ids` (N strings) and `meta` (what it was computed
from: a stale cache is recomputed, never reused). Training samples one view per image per epoch.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from geocore.data.datasets import BenchmarkDataset, collate_skip_errors
from geocore.data.safe_io import atomic_path
from geocore.errors import InputError
from geocore.models.geoclip import GeoCLIP
from geocore.train.data import open_training_csv, split_ids, train_transform_for, training_gallery
from geocore.tensors import as_numpy

FEATURES_VERSION = 1


def backbone_fingerprint(model: GeoCLIP) -> str:
    """sha256 of the backbone's config and a few of its weights (cheap; tells backbones apart)."""
    h = hashlib.sha256(json.dumps(model.config, sort_keys=True, default=str).encode())
    visual = model.clip.visual
    for t in (getattr(visual, "proj", None), getattr(getattr(visual, "conv1", None), "weight", None)):
        if isinstance(t, torch.Tensor):
            h.update(as_numpy(t, np.float32).tobytes())
    return h.hexdigest()


def cache_meta(model: GeoCLIP, dataset: BenchmarkDataset, views: int) -> dict[str, Any]:
    """What a cache depends on: the CSV (path, size, mtime), the image folder, the backbone and the views."""
    st = dataset.csv_path.stat()
    return {"version": FEATURES_VERSION, "csv": str(dataset.csv_path.resolve()), "csv_size": st.st_size,
            "csv_mtime_ns": st.st_mtime_ns, "images": str(dataset.image_dir.resolve()), "views": int(views),
            "backbone": backbone_fingerprint(model)}


class _Views:
    """PIL image → (1 + K, 3, H, W): the eval view, then K augmented views."""

    def __init__(self, preprocess: Callable[..., Any], augment: Callable[..., Any], views: int) -> None:
        self.preprocess, self.augment, self.views = preprocess, augment, views

    def __call__(self, image: Any) -> torch.Tensor:
        return torch.stack([self.preprocess(image)] + [self.augment(image) for _ in range(self.views)])


@torch.no_grad()
def extract_features(model: GeoCLIP, dataset: BenchmarkDataset, path: str | Path, *, views: int = 0,
                     batch_size: int = 64, num_workers: int = 0, device: str | torch.device | None = None,
                     bf16: bool = False, progress: bool = True) -> Path:
    """Run the frozen backbone over `dataset` and write the cache to `path` (atomically); returns `path`."""
    path = Path(path)
    device = torch.device(device) if device is not None else model.device
    ds = copy.copy(dataset)
    ds.transform = _Views(model.preprocess, train_transform_for(model.preprocess), views)
    loader = DataLoader(ds, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_skip_errors)
    clip = model.clip
    before = next(clip.parameters()).device
    clip.to(device)
    feats, lat, lon, ids, n_failed = [], [], [], [], 0
    amp = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    try:
        for batch in tqdm(loader, desc=f"features {path.name}", disable=not progress):
            n_failed += len(batch["errors"])
            if not batch["img_id"]:
                continue
            x = batch["image"].to(device)  # (B, V, 3, H, W)
            with amp:
                f = model.forward_features(x.flatten(0, 1))  # (B·V, D)
            feats.append(f.float().view(x.shape[0], x.shape[1], -1).to(torch.float16).cpu())
            lat.append(batch["lat"]), lon.append(batch["lon"]), ids.extend(batch["img_id"])
    finally:
        clip.to(before)
    if not ids:
        raise InputError(f"no readable image among the {len(dataset)} listed in {dataset.csv_path}")
    payload = {"features": torch.cat(feats), "latlon": torch.stack([torch.cat(lat), torch.cat(lon)], 1).float(),
               "img_ids": ids, "n_failed": n_failed, "meta": cache_meta(model, dataset, views)}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_features(path: str | Path) -> dict[str, Any]:
    """A cache written by `extract_features` (safe load, memory-mapped); InputError if it is not one."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # missing, truncated, not a torch file
        raise InputError(f"{path}: not a readable feature cache ({type(err).__name__})") from None
    if not isinstance(data, dict) or not {"features", "latlon", "img_ids", "meta"} <= set(data):
        raise InputError(f"{path}: not a geocore feature cache")
    return data


class FeatureDataset(Dataset):
    """Items `{"features": (D,), "lat", "lon"}` for rows `rows` of a cache; `random_view` picks a view per item."""

    def __init__(self, features: torch.Tensor, latlon: torch.Tensor, rows: list[int], random_view: bool) -> None:
        self.features, self.latlon, self.rows, self.random_view = features, latlon, rows, random_view

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        row = self.rows[idx]
        view = int(torch.randint(self.features.shape[1], ())) if self.random_view else 0
        return {"features": self.features[row, view].float(), "lat": self.latlon[row, 0], "lon": self.latlon[row, 1]}


class FeatureDataModule(L.LightningDataModule):
    """Like `GeoImageDataModule`, but trains on a feature cache it builds (once) in `prepare_data`."""

    def __init__(self, model: GeoCLIP, csv: str | Path, images: str | Path, cache_path: str | Path, *,
                 views: int = 0, batch_size: int = 512, val_fraction: float = 0.05, seed: int = 0,
                 num_workers: int = 4, extract_batch_size: int = 64, bf16: bool = False, progress: bool = True,
                 dataset: BenchmarkDataset | None = None) -> None:
        super().__init__()
        self.model, self.cache_path, self.views = model, Path(cache_path), views
        self.dataset = dataset if dataset is not None else open_training_csv(csv, images)
        self.batch_size, self.num_workers, self.extract_batch_size = batch_size, num_workers, extract_batch_size
        self.bf16, self.progress = bf16, progress
        self.train_ids, self.val_ids = split_ids(self.dataset.img_ids, val_fraction, seed)
        train_rows = self.dataset.frame["IMG_ID"].isin(set(self.train_ids))
        self.gallery = training_gallery(self.dataset.frame.loc[train_rows, ["LAT", "LON"]].to_numpy(), seed=seed)
        self.train_set: FeatureDataset | None = None
        self.val_set: FeatureDataset | None = None

    @property
    def n_missing(self) -> int:
        return self.dataset.n_missing

    def cache_is_current(self) -> bool:
        if not self.cache_path.is_file():
            return False
        try:
            return load_features(self.cache_path)["meta"] == cache_meta(self.model, self.dataset, self.views)
        except InputError:
            return False

    def prepare_data(self) -> None:
        """Extract features unless a current cache exists (Lightning calls this on one process per node)."""
        if self.cache_is_current():
            return
        device = self.trainer.strategy.root_device if self.trainer is not None else self.model.device
        extract_features(self.model, self.dataset, self.cache_path, views=self.views, device=device,
                         batch_size=self.extract_batch_size, num_workers=self.num_workers, bf16=self.bf16,
                         progress=self.progress)

    def setup(self, stage: str | None = None) -> None:
        data = load_features(self.cache_path)
        if data["meta"] != cache_meta(self.model, self.dataset, self.views):
            raise InputError(f"{self.cache_path} was computed from other data or another backbone; delete it")
        row_of = {img_id: r for r, img_id in enumerate(data["img_ids"])}
        train = [row_of[i] for i in self.train_ids if i in row_of]
        val = [row_of[i] for i in self.val_ids if i in row_of]
        self.train_set = FeatureDataset(data["features"], data["latlon"], train, random_view=self.views > 0)
        self.val_set = FeatureDataset(data["features"], data["latlon"], val, random_view=False) if val else None

    def _loader(self, dataset: FeatureDataset, shuffle: bool) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self.val_set, shuffle=False) if self.val_set is not None else []
