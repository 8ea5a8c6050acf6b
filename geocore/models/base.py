"""The interface every geo-localization model implements."""

from __future__ import annotations

from collections.abc import Callable

import torch
from PIL import Image
from torch import nn

from geocore.models.prediction import Prediction


class GeoLocator(nn.Module):
    """An image → location model.

    Subclasses set `preprocess` (PIL RGB image → (3, H, W) tensor, matching their pretrained
    backbone exactly) and implement `predict`.
    """

    model_name: str = "geolocator"
    preprocess: Callable[[Image.Image], torch.Tensor]

    def predict(self, pixels: torch.Tensor, top_k: int = 5, *, full: bool = False) -> Prediction:
        """Top-k locations for a (B, 3, H, W) batch; `full` also returns the whole distribution."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    @torch.no_grad()
    def locate(self, images: list[Image.Image], top_k: int = 5, *, full: bool = False) -> Prediction:
        """Preprocess PIL images and predict, in one batch."""
        pixels = torch.stack([self.preprocess(im) for im in images]).to(self.device)
        return self.predict(pixels, top_k, full=full)
