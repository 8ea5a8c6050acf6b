"""What a reference photo is stored as: the model's own image embedding, and the fingerprint of the weights
that made it (a set is only ever searched with embeddings from the same weights).

- GeoCLIP (`GalleryModel`): `image_embeddings`, GeoCLIP's MLP output, the space it compares with locations
  (the choice against the CLIP feature before the MLP is measured in bench/bench_refs.py, "Which embedding").
- Cell models (`CellClassifier`) that take the photo alone: the pooled `forward_features`: the class token of a
  (B, N, C) token map, GeoDecoder's decoded queries averaged. TransLocator (it needs segmentation maps) is refused.
Every embedding is L2-normalised, so similarity is a dot product.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
import torch.nn.functional as F

from geocore.errors import InputError
from geocore.models.base import GalleryModel, GeoLocator
from geocore.tensors import as_numpy

SAMPLE = 4096  # values of each weight tensor hashed (strided): cheap, and any fine-tuning step changes them


def embedding_kind(model: GeoLocator) -> str:
    """The name of the embedding `reference_embeddings` makes for this model (stored in the manifest)."""
    return "image_embeddings" if isinstance(model, GalleryModel) else "pooled_forward_features"


def _pool(features: object) -> torch.Tensor:
    if not isinstance(features, torch.Tensor) or features.dim() < 2:
        raise InputError(f"reference photos: cannot pool forward_features of type {type(features).__name__}")
    if features.dim() == 2:
        return features
    if features.dim() == 3:  # (B, N, C) tokens: the class token
        return features[:, 0]
    return features.flatten(1, -2).mean(1)  # (B, …, C): queries or maps averaged


@torch.no_grad()
def reference_embeddings(model: GeoLocator, pixels: torch.Tensor) -> torch.Tensor:
    """(B, D) float32 L2-normalised embeddings of a batch of prepared photos (see the module docstring)."""
    pixels = pixels.to(model.device)
    if isinstance(model, GalleryModel):
        emb = model.image_embeddings(pixels)
    elif model.needs_segmentation:
        raise InputError(f"reference photos: {model.model_name} needs segmentation maps; reference sets support "
                         "geoclip and cell models that take the photo alone (geodecoder)")
    else:
        emb = _pool(model.forward_features(pixels))
    return F.normalize(emb.float(), dim=-1)


def model_fingerprint(model: GeoLocator) -> str:
    """16 hex digits of sha256 over the model name and every parameter's name, shape, dtype and a strided sample
    of its values (as a calibration's candidate fingerprint: 16 hex digits of sha256)."""
    h = hashlib.sha256(model.model_name.encode())
    for name, p in sorted(model.named_parameters()):
        flat = p.detach().reshape(-1)
        step = max(1, flat.numel() // SAMPLE)
        h.update(f"{name}|{tuple(p.shape)}|{p.dtype}".encode())
        h.update(as_numpy(flat[::step][:SAMPLE], np.float32).tobytes())
    return h.hexdigest()[:16]
