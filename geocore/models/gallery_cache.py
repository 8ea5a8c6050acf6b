"""Gallery embeddings, computed once: in memory, and on disk as float32 .npy under `cache_dir()`.

The disk key hashes the location-encoder weights AND the gallery coordinates, so a changed gallery or
fine-tuned weights never reuse stale embeddings. Files are written atomically (tmp + os.replace); a
corrupt or mismatched file is recomputed and overwritten, never a crash.
"""

from __future__ import annotations

import hashlib
import tokenize
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from geocore.data.safe_io import atomic_path
from geocore.geo.projection import equal_earth
from geocore.weights.paths import cache_dir

CACHE_VERSION = b"geocore-gallery-embeddings-v1"


def _tensor_bytes(t: torch.Tensor) -> bytes:
    return t.detach().to("cpu").contiguous().numpy().tobytes()


def cache_key(encoder: nn.Module, gallery: torch.Tensor, tag: str = "") -> str:
    """sha256 over the encoder's state dict (names, shapes, dtypes, values) and the gallery values."""
    h = hashlib.sha256(CACHE_VERSION + tag.encode())
    # the projection's exact float32 output on fixed probe points (CPU): a change in its code changes the key
    probe = torch.linspace(-90, 90, 37).repeat_interleave(2).reshape(-1, 2) * torch.tensor([1.0, 2.0])
    h.update(_tensor_bytes(equal_earth(probe)))
    for name, t in sorted(encoder.state_dict().items()):
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
        h.update(_tensor_bytes(t))
    g = gallery.detach().to("cpu", torch.float32).contiguous()
    h.update(f"gallery|{tuple(g.shape)}".encode())
    h.update(_tensor_bytes(g))
    return h.hexdigest()


def _fingerprint(encoder: nn.Module, gallery: torch.Tensor) -> tuple:
    """Cheap in-memory identity: tensors' storage and in-place version counters (bumped by copy_/optimizer steps)."""
    ts = [*encoder.state_dict().values(), gallery]
    return tuple((t.data_ptr(), t._version, t.device.type) for t in ts) + (id(gallery),)


class GalleryEmbeddingCache:
    """Memoises `compute(gallery) -> (M, D)` for one (encoder, gallery) pair, backed by a .npy file."""

    def __init__(self, name: str = "geoclip", disk: bool = True) -> None:
        self.name = name
        self.disk = disk
        self._fp: tuple | None = None
        self._emb: torch.Tensor | None = None
        self._half: torch.Tensor | None = None
        self.last_key: str | None = None
        self.last_source: str = ""  # "memory" | "disk" | "computed" (for tests and UIs)

    def clear(self) -> None:
        self._fp, self._emb, self._half = None, None, None

    def half(self, encoder: nn.Module, gallery: torch.Tensor,
             compute: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """(M, D) float16 copy of the embeddings (large galleries are scanned in float16), made once per gallery."""
        emb = self.get(encoder, gallery, compute)
        if self._half is None:
            self._half = emb.half()
        return self._half

    def path_for(self, key: str) -> Path:
        return cache_dir() / "gallery_embeddings" / f"{self.name}-{key[:40]}.npy"

    def get(
        self, encoder: nn.Module, gallery: torch.Tensor, compute: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """(M, D) float32 embeddings of `gallery` on the encoder's device."""
        fp = _fingerprint(encoder, gallery)
        if self._emb is not None and fp == self._fp:
            self.last_source = "memory"
            return self._emb
        key = cache_key(encoder, gallery, self.name)
        emb = self._load(key, gallery.shape[0]) if self.disk else None
        if emb is None:
            emb = compute(gallery).float()  # (M, D)
            self.last_source = "computed"
            if self.disk:
                self._save(key, emb)
        else:
            self.last_source = "disk"
            emb = emb.to(gallery.device)
        self._fp, self._emb, self._half, self.last_key = fp, emb, None, key
        return emb

    def _load(self, key: str, m: int) -> torch.Tensor | None:
        path = self.path_for(key)
        if not path.is_file():
            return None
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)  # (M, D)
            ok = arr.dtype == np.float32 and arr.ndim == 2 and arr.shape[0] == m
            arr = np.array(arr) if ok else None  # into memory
            # rows are unit vectors: catches zeroed or garbled data that still parses
            if arr is None or not np.isfinite(arr).all() or np.abs(np.linalg.norm(arr, axis=1) - 1).max() > 1e-3:
                raise ValueError("unexpected shape, dtype or values")
        except (OSError, ValueError, EOFError, SyntaxError, tokenize.TokenError) as err:  # a garbled .npy header
            warnings.warn(f"gallery embedding cache {path} is unreadable ({err}); recomputing", stacklevel=3)
            return None
        return torch.from_numpy(arr)

    def _save(self, key: str, emb: torch.Tensor) -> None:
        path = self.path_for(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.save(f, emb.detach().to("cpu").numpy())
        except OSError as err:
            warnings.warn(f"could not write gallery embedding cache {path} ({err}); keeping it in memory only",
                          stacklevel=3)
