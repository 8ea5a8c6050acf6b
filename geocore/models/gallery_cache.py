"""Gallery embeddings, computed once: in memory, and on disk as .npy under `cache_dir()`.

Galleries scanned in float32 (up to `retrieval.HALF_PRECISION_ABOVE` points) are stored as float32 and loaded
into memory. Larger ones are stored as float16 — what they are scanned in, half the disk (10.2 GB for 10M
points instead of 20.5 GB) — computed chunk by chunk straight into the file and memory-mapped when loaded
(`np.load(mmap_mode="c")`), so they are never held twice and pages are shared between processes.

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
from geocore.models.retrieval import use_half
from geocore.weights.paths import cache_dir
from geocore.tensors import as_numpy

CACHE_VERSION = b"geocore-gallery-embeddings-v1"
CHUNK = 262_144  # rows embedded, written or checked at a time


def _tensor_bytes(t: torch.Tensor) -> bytes:
    return as_numpy(t).tobytes()  # C order, whatever the tensor's strides


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
        """(M, D) float16 embeddings (large galleries are scanned in float16): the stored matrix itself for
        galleries cached in float16, else a float16 copy made once per gallery."""
        emb = self.get(encoder, gallery, compute)
        if emb.dtype == torch.float16:
            return emb
        if self._half is None:
            self._half = emb.half()
        return self._half

    def path_for(self, key: str) -> Path:
        return cache_dir() / "gallery_embeddings" / f"{self.name}-{key[:40]}.npy"

    @property
    def last_path(self) -> Path | None:
        """The .npy file of the embeddings last returned (None before the first `get`)."""
        return None if self.last_key is None else self.path_for(self.last_key)

    def get(
        self, encoder: nn.Module, gallery: torch.Tensor, compute: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """(M, D) embeddings of `gallery`: float32 on the encoder's device, or, above `HALF_PRECISION_ABOVE`
        points, float16 (memory-mapped from the disk cache on the CPU)."""
        fp = _fingerprint(encoder, gallery)
        if self._emb is not None and fp == self._fp:
            self.last_source = "memory"
            return self._emb
        key = cache_key(encoder, gallery, self.name)
        half = use_half(gallery.shape[0])
        dtype = np.float16 if half else np.float32
        emb = self._load(key, gallery.shape[0], dtype) if self.disk else None
        if emb is not None:
            self.last_source = "disk"
            emb = emb if half and gallery.device.type == "cpu" else emb.to(gallery.device)
        elif half and self.disk and self._save_chunked(key, gallery, compute):
            self.last_source = "computed"
            emb = self._load(key, gallery.shape[0], dtype)
        if emb is None:
            emb = compute(gallery)  # (M, D)
            emb = emb.half() if half else emb.float()
            self.last_source = "computed"
            if self.disk and not half:
                self._save(key, emb)
        self._fp, self._emb, self._half, self.last_key = fp, emb, None, key
        return emb

    def _load(self, key: str, m: int, dtype: type = np.float32) -> torch.Tensor | None:
        path = self.path_for(key)
        if not path.is_file():
            return None
        try:
            arr = np.load(path, mmap_mode="c", allow_pickle=False)  # (M, D), copy-on-write: never writes the file
            if arr.dtype != dtype or arr.ndim != 2 or arr.shape[0] != m:
                raise ValueError(f"unexpected shape {arr.shape} or dtype {arr.dtype}, "
                                 f"expected ({m}, D) {dtype.__name__}")
            if dtype == np.float32:
                arr = np.array(arr)  # into memory
            # rows are unit vectors: catches zeroed or garbled data that still parses (chunked: mmap-friendly)
            for start in range(0, m, CHUNK):
                block = arr[start : start + CHUNK].astype(np.float32)
                if not np.isfinite(block).all() or np.abs(np.linalg.norm(block, axis=1) - 1).max() > 2e-3:
                    raise ValueError(f"rows {start}..{start + block.shape[0] - 1}: not finite unit vectors")
        except (OSError, ValueError, EOFError, SyntaxError, tokenize.TokenError) as err:  # a garbled .npy header
            warnings.warn(f"gallery embedding cache {path} is unreadable ({err}); recomputing", stacklevel=3)
            return None
        return torch.from_numpy(arr)

    def _save(self, key: str, emb: torch.Tensor) -> None:
        path = self.path_for(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.save(f, as_numpy(emb))
        except OSError as err:
            warnings.warn(f"could not write gallery embedding cache {path} ({err}); keeping it in memory only",
                          stacklevel=3)

    def _save_chunked(self, key: str, gallery: torch.Tensor,
                      compute: Callable[[torch.Tensor], torch.Tensor]) -> bool:
        """Embed a large gallery chunk by chunk straight into a float16 .npy (never the whole float32 matrix in
        memory); False when the file cannot be written."""
        from tqdm import tqdm

        path = self.path_for(key)
        m = gallery.shape[0]
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                out = None
                for start in tqdm(range(0, m, CHUNK), desc=f"embedding {m:,} gallery points", unit="chunk",
                                  disable=m <= 4 * CHUNK):
                    block = as_numpy(compute(gallery[start : start + CHUNK]).half())  # float16 before it leaves
                    if out is None:
                        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(m, block.shape[1]))
                    out[start : start + block.shape[0]] = block
                out.flush()
                del out
        except OSError as err:
            warnings.warn(f"could not write gallery embedding cache {path} ({err}); keeping it in memory only",
                          stacklevel=3)
            return False
        return True
