"""The two kinds of geo-localization model and the contract they share.

Every model is a `GeoLocator`. Callers never probe attribute names: they check the kind
(`isinstance(model, GalleryModel)` / `isinstance(model, CellClassifier)`) or a declared capability
(`model.supports_text`, `model.needs_segmentation`).

The shared forward contract (as timm fixes `forward_features`):
- `preprocess(PIL image) -> (3, H, W)` tensor, matching the pretrained backbone exactly;
- `forward_features(pixels, **inputs)` returns the backbone's output for a (B, 3, H, W) batch — the hook
  point for embeddings and Grad-CAM — and `forward(...)` the model's raw scores from it;
- `predict(pixels, top_k, full=...) -> Prediction`, probabilities over the model's candidates;
- `gradcam_spec(pixels, target, **inputs) -> GradCamSpec`: what pytorch-grad-cam needs from the caller;
- `candidate_cells()`: the area on Earth each candidate stands for (search regions, calibration).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image
from torch import nn

from geocore.errors import InputError
from geocore.models.prediction import Prediction

if TYPE_CHECKING:
    from geocore.geo.candidates import CandidateCells


@dataclass(frozen=True)
class GradCamSpec:
    """What Grad-CAM needs from a model, as pytorch-grad-cam takes it from its caller.

    target_layer:      the module whose activations and gradients make the map
    reshape_transform: its output → (B, C, h, w) activation maps (`geocore.models.layers.vit.tokens_to_map`)
    score:             pixels (B, 3, H, W) → (B, K) scores, differentiable w.r.t. the pixels
    index:             which of the K scores is explained
    description:       the explained target in words ("similarity to gallery point #12 (48.85, 2.35)")
    """

    target_layer: nn.Module
    reshape_transform: Callable[[torch.Tensor], torch.Tensor]
    score: Callable[[torch.Tensor], torch.Tensor]
    index: int
    description: str


class GeoLocator(nn.Module):
    """An image → location model (see the module docstring for the contract)."""

    model_name: str = "geolocator"
    preprocess: Callable[[Image.Image], torch.Tensor]
    supports_text: bool = False  # text queries (`predict_text`)
    needs_segmentation: bool = False  # takes `seg=` (the photo's segmentation map) and has `prepare_seg`
    random_backbone: bool = False  # True when the backbone's weights are random (tests, demos)

    def predict(self, pixels: torch.Tensor, top_k: int = 5, *, full: bool = False) -> Prediction:
        """Top-k locations for a (B, 3, H, W) batch; `full` also returns the whole distribution."""
        raise NotImplementedError

    def gradcam_spec(self, pixels: torch.Tensor, target: Any = None, **inputs: Any) -> GradCamSpec:
        """The Grad-CAM spec explaining `target` (default: the top-1) for a (1, 3, H, W) input."""
        raise NotImplementedError

    def input_transform(self, tencrop: bool = False) -> Callable[[Image.Image], Any]:
        """PIL photo → what `predict` takes: the model's `preprocess` (cell models: their inputs, ten crops with
        `tencrop`)."""
        if tencrop:
            raise InputError(f"--tencrop: ten-crop averaging is defined for the cell models (translocator, "
                             f"geodecoder), not {self.model_name}")
        return self.preprocess

    def candidate_cells(self) -> CandidateCells:
        """The area each candidate of `predict` stands for (search regions, calibration): by default the
        candidates' spherical Voronoi cells (`geocore.geo.candidates.GalleryCells`)."""
        from geocore.geo.candidates import gallery_cells

        return gallery_cells(self.candidate_points())

    def prepare_seg(self, seg: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """`needs_segmentation` models: a label or colour map → the normalised segmentation input at `size`."""
        raise NotImplementedError(f"{type(self).__name__} takes no segmentation map")

    def num_candidates(self) -> int:
        """How many candidates `predict` ranks (top-k can be at most this)."""
        return int(self.candidate_points().shape[0])

    def candidate_points(self) -> torch.Tensor:
        """(M, 2) (lat, lon) of the candidates `predict` ranks: a gallery, or the fine cells' centroids."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")


class GalleryModel(GeoLocator):
    """A model that scores a gallery of GPS points by embedding similarity (GeoCLIP).

    Subclasses provide `image_embeddings`, `embed_locations`, `gallery_embeddings`, `predict_embeddings`,
    `set_gallery` and `with_gallery`; `gallery` is the (M, 2) (lat, lon) buffer being scored.
    """

    gallery: torch.Tensor

    def candidate_points(self) -> torch.Tensor:
        return self.gallery

    def image_embeddings(self, pixels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def embed_locations(self, latlon: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def predict_embeddings(self, emb: torch.Tensor, top_k: int = 5, full: bool = False) -> Prediction:
        raise NotImplementedError

    def set_gallery(self, coords: torch.Tensor) -> None:
        raise NotImplementedError

    def with_gallery(self, coords: torch.Tensor) -> GalleryModel:
        raise NotImplementedError

    def gallery_embeddings(self) -> torch.Tensor:
        raise NotImplementedError

    def similarity_logits(self, queries: torch.Tensor, locations: torch.Tensor) -> torch.Tensor:
        """(B, D) query embeddings × (M, D) location embeddings → (B, M) logits."""
        raise NotImplementedError

    def text_embeddings(self, texts: list[str]) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} takes no text queries")

    def predict_text(self, texts: list[str], top_k: int = 5, *, full: bool = False) -> Prediction:
        raise NotImplementedError(f"{type(self).__name__} takes no text queries")
