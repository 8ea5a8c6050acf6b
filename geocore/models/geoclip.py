"""GeoCLIP (Vivanco Cepeda, Nayak & Shah, NeurIPS 2023) as the `geoclip` package implements it.

Image → frozen open_clip CLIP image tower (768-d) → MLP 768→768→512; GPS → location encoder (512-d);
prediction = softmax(logit_scale · ⟨img, gps⟩) over a GPS gallery (normalised embeddings), top-k.
The MLP, location encoder, logit scale and the 100K MP-16 gallery come from the `geoclip` wheel.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from geocore.errors import InputError
from geocore.geo.coords import validate_latlon
from geocore.geo.gallery import default_gallery
from geocore.models.base import GeoLocator
from geocore.models.clip_backbone import build_clip, clip_image_transform, clip_tokenizer, load_state_dict_file
from geocore.models.gallery_cache import GalleryEmbeddingCache
from geocore.models.location_encoder import LocationEncoder
from geocore.models.prediction import Prediction
from geocore.models.retrieval import cosine_scores
from geocore.models.registry import WeightsInfo, register_model
from geocore.weights.paths import geoclip_package_dir
from geocore.weights.resolve import resolve_clip_checkpoint
from geocore.weights.sources import SOURCES
from geocore.weights.status import source_status

GEOCLIP_CONFIG: dict[str, Any] = {"clip_model": "ViT-L-14", "embed_dim_in": 768, "heads": "wheel"}
# A tiny random open_clip (2-layer ViT-B/32-shaped towers, projection 768 so the wheel MLP fits).
TINY_CLIP_CFG: dict[str, Any] = {
    "embed_dim": 768,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 224, "patch_size": 32, "width": 64, "layers": 2, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


class GeoCLIP(GeoLocator):
    """GeoCLIP over a GPS gallery. `random_backbone` is True when the CLIP weights are random (tests)."""

    def __init__(self, clip: nn.Module, *, preprocess, tokenizer, embed_dim_in: int = 768,
                 gallery: torch.Tensor | None = None, random_backbone: bool = False,
                 config: dict[str, Any] | None = None) -> None:
        super().__init__()
        out_dim = clip.visual.output_dim
        if out_dim != embed_dim_in:
            raise InputError(f"CLIP backbone projects to {out_dim} dims but embed_dim_in={embed_dim_in}")
        self.clip = clip.requires_grad_(False).eval()  # frozen backbone
        self.mlp = nn.Sequential(nn.Linear(embed_dim_in, 768), nn.ReLU(), nn.Linear(768, 512))
        self.location_encoder = LocationEncoder()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.random_backbone = random_backbone
        self.config = dict(config or {})
        self.gallery_cache = GalleryEmbeddingCache("geoclip")
        gallery = default_gallery() if gallery is None else torch.as_tensor(gallery, dtype=torch.float32)
        self.register_buffer("gallery", gallery, persistent=False)  # (M, 2) (lat, lon)

    def train(self, mode: bool = True) -> "GeoCLIP":
        super().train(mode)
        self.clip.eval()  # the backbone stays in eval mode
        return self

    def load_wheel_heads(self) -> None:
        """MLP, location encoder and logit scale from the installed `geoclip` wheel."""
        folder = geoclip_package_dir() / "model" / "weights"

        def load(name: str):
            return torch.load(folder / name, map_location="cpu", weights_only=True)

        self.mlp.load_state_dict(load("image_encoder_mlp_weights.pth"))
        self.location_encoder.load_state_dict(
            LocationEncoder.convert_geoclip_state_dict(load("location_encoder_weights.pth")))
        with torch.no_grad():
            self.logit_scale.copy_(load("logit_scale_weights.pth").reshape(()))

    # --- embeddings -----------------------------------------------------------------------------

    def forward_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) → (B, 768) projected CLIP image features, before the MLP (hook point for Grad-CAM)."""
        return self.clip.encode_image(pixels)

    def image_embeddings(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) → (B, 512) L2-normalised image embeddings."""
        return F.normalize(self.mlp(self.forward_features(pixels)), dim=-1)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        if isinstance(texts, str) or not texts:
            raise InputError("texts must be a non-empty list of strings")
        return self.tokenizer(list(texts)).to(self.device)  # (B, context_length)

    def text_embeddings(self, texts: list[str]) -> torch.Tensor:
        """(B,) strings → (B, 512) L2-normalised embeddings (CLIP text features through the image MLP)."""
        return F.normalize(self.mlp(self.clip.encode_text(self.tokenize(texts))), dim=-1)

    @torch.no_grad()
    def embed_locations(self, latlon: torch.Tensor, chunk_size: int = 65536) -> torch.Tensor:
        """(N, 2) (lat, lon) degrees → (N, 512) L2-normalised GPS embeddings."""
        latlon = torch.as_tensor(validate_latlon(torch.as_tensor(latlon).detach().cpu().double().numpy(),
                                                 source="embed_locations"), dtype=torch.float32)
        return self.location_encoder.embed(latlon, chunk_size=chunk_size)

    # --- gallery --------------------------------------------------------------------------------

    def set_gallery(self, coords: torch.Tensor) -> None:
        """Score against these (M, 2) (lat, lon) points from now on."""
        arr = validate_latlon(torch.as_tensor(coords).detach().cpu().double().numpy(), source="gallery")
        if arr.shape[0] == 0:
            raise InputError("gallery: needs at least one point")
        self.gallery = torch.as_tensor(arr, dtype=torch.float32, device=self.device)
        self.gallery_cache.clear()

    def with_gallery(self, coords: torch.Tensor) -> "GeoCLIP":
        """A view of this model that scores `coords`: it shares every weight (no copy) but owns its
        gallery and embedding cache, so concurrent users of the original (e.g. app sessions) are unaffected."""
        view = copy.copy(self)
        view._buffers = dict(self._buffers)  # shallow copy shares the buffer dict: give the view its own
        view.gallery_cache = GalleryEmbeddingCache(self.gallery_cache.name)
        view.set_gallery(coords)
        return view

    def gallery_embeddings(self) -> torch.Tensor:
        """(M, 512) normalised embeddings of the gallery: cached in memory and on disk."""
        return self.gallery_cache.get(self.location_encoder, self.gallery,
                                      lambda g: self.location_encoder.embed(g))

    # --- scoring --------------------------------------------------------------------------------

    def forward(self, pixels: torch.Tensor, locations: torch.Tensor | None = None) -> torch.Tensor:
        """(B, M) logits of images against `locations` (M, 2) (trainable path), or the cached gallery."""
        img = self.image_embeddings(pixels)  # (B, 512)
        loc = (self.gallery_embeddings() if locations is None
               else F.normalize(self.location_encoder(locations), dim=-1))  # (M, 512)
        return self.logit_scale.exp() * img @ loc.T

    def predict_embeddings(self, emb: torch.Tensor, top_k: int = 5, full: bool = False) -> Prediction:
        """Top-k gallery points for (B, 512) normalised embeddings (image or text)."""
        logits = self.logit_scale.exp() * cosine_scores(emb, self.gallery_embeddings())  # (B, M)
        return Prediction.from_scores(logits, self.gallery, top_k, full=full)

    @torch.no_grad()
    def predict(self, pixels: torch.Tensor, top_k: int = 5, *, full: bool = False) -> Prediction:
        """Top-k gallery points for a (B, 3, H, W) batch of preprocessed images."""
        return self.predict_embeddings(self.image_embeddings(pixels.to(self.device)), top_k, full)

    @torch.no_grad()
    def predict_text(self, texts: list[str], top_k: int = 5, *, full: bool = False) -> Prediction:
        """Top-k gallery points for text queries ("a photo taken in Kyoto")."""
        return self.predict_embeddings(self.text_embeddings(texts), top_k, full)

    # --- checkpoints ----------------------------------------------------------------------------

    def save_checkpoint(self, path: str | Path) -> Path:
        """Save the full model state (.safetensors, or torch .pt) for `create_model(..., pretrained=path)`."""
        path = Path(path)
        sd = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        meta = {"geocore_model": "geoclip", "config": json.dumps(self.config)}
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(sd, str(path), metadata=meta)
        else:
            torch.save({"state_dict": sd, **meta}, path)
        return path


def _looks_like_path(pretrained: str | Path) -> bool:
    p = str(pretrained)
    return isinstance(pretrained, Path) or "/" in p or "\\" in p or Path(p).suffix in {".pt", ".pth", ".safetensors"}


def _init_heads(model: GeoCLIP, heads: str | None) -> None:
    if heads == "wheel":
        if model.mlp[0].in_features != 768:
            raise InputError(f"the geoclip wheel heads take 768-d CLIP features, not {model.mlp[0].in_features}")
        model.load_wheel_heads()
    elif heads is None:  # random heads, reproducibly (the caller seeds the RNG)
        model.mlp.apply(lambda m: m.reset_parameters() if isinstance(m, nn.Linear) else None)
        model.location_encoder = LocationEncoder()
    else:
        raise InputError(f"heads must be 'wheel' or None, got {heads!r}")


def geoclip_from_clip(clip: nn.Module, *, clip_model: str | None = None, tag: str | None = None,
                      embed_dim_in: int = 768, heads: str | None = "wheel", gallery: torch.Tensor | None = None,
                      random_backbone: bool = False, config: dict[str, Any] | None = None,
                      seed: int = 0) -> GeoCLIP:
    """GeoCLIP around an existing open_clip `clip` (`clip_model`/`tag` pick the preprocessing and tokenizer)."""
    with torch.random.fork_rng(devices=[]):  # seeded, and leaves the caller's global RNG untouched
        torch.manual_seed(seed)
        model = GeoCLIP(clip, preprocess=clip_image_transform(clip, clip_model, tag),
                        tokenizer=clip_tokenizer(clip, clip_model), embed_dim_in=embed_dim_in, gallery=gallery,
                        random_backbone=random_backbone, config=config)
        _init_heads(model, heads)
    return model.eval()


def _build(pretrained: str | None, *, clip_model: str | None = "ViT-L-14", clip_cfg: dict | None = None,
           embed_dim_in: int = 768, heads: str | None = "wheel", clip_weights: str | None = None,
           gallery: torch.Tensor | None = None, seed: int = 0) -> GeoCLIP:
    clip_cfg = copy.deepcopy(clip_cfg)  # never share the registry's dict
    config = {"clip_model": clip_model, "clip_cfg": clip_cfg, "embed_dim_in": embed_dim_in, "heads": heads}
    arch = None if clip_cfg is not None else clip_model  # architecture: a built-in name or the custom dict
    common = dict(clip_model=arch, embed_dim_in=embed_dim_in, gallery=gallery, config=config, seed=seed)
    if pretrained is None:
        clip = build_clip(arch, clip_cfg, seed=seed)
        return geoclip_from_clip(clip, heads=heads, random_backbone=True, **common)
    if not _looks_like_path(pretrained):  # an open_clip tag, e.g. "openai": local weights or WeightsMissingError
        path = resolve_clip_checkpoint(clip_model or "ViT-L-14", pretrained, clip_weights)
        clip = build_clip(arch, clip_cfg, state_dict=load_state_dict_file(path))
        return geoclip_from_clip(clip, tag=pretrained, heads=heads, **common)
    # a geocore checkpoint of the whole model
    if not Path(pretrained).is_file():
        raise InputError(f"pretrained checkpoint {pretrained} does not exist")
    full_sd = load_state_dict_file(pretrained)
    clip_sd = {k[5:]: v for k, v in full_sd.items() if k.startswith("clip.")}
    if not clip_sd:
        raise InputError(f"{pretrained}: not a geocore GeoCLIP checkpoint (no 'clip.' tensors)")
    model = geoclip_from_clip(build_clip(arch, clip_cfg, state_dict=clip_sd), heads=None, **common)
    heads_sd = {k: v for k, v in full_sd.items() if not k.startswith("clip.")}
    missing, unexpected = model.load_state_dict(heads_sd, strict=False)
    missing = [k for k in missing if not k.startswith("clip.")]
    if missing or unexpected:
        raise InputError(f"{pretrained}: checkpoint does not match GeoCLIP (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")
    return model


def geoclip_weights_info() -> WeightsInfo:
    """Backbone presence (the heads ship in the geoclip wheel)."""
    clip, heads = source_status(SOURCES["clip-vit-l-14"]), source_status(SOURCES["geoclip-heads"])
    c = f"CLIP ViT-L/14 backbone found at {clip.where}" if clip.present else f"CLIP ViT-L/14 backbone {clip.where}"
    h = "GeoCLIP heads ship in the geoclip wheel" if heads.present else f"GeoCLIP heads missing ({heads.where})"
    return WeightsInfo(clip.present and heads.present, f"{c}; {h}", clip.how_to_get or heads.how_to_get)


def geoclip_tiny_weights_info() -> WeightsInfo:
    heads = source_status(SOURCES["geoclip-heads"])
    return WeightsInfo(heads.present, "random tiny CLIP backbone (no download) + GeoCLIP heads from the geoclip wheel",
                       heads.how_to_get)


@register_model(
    "geoclip",
    description="GeoCLIP (NeurIPS 2023): frozen CLIP ViT-L/14 + GPS location encoder, retrieval over 100K MP-16 points",
    config=GEOCLIP_CONFIG,
    weights_info=geoclip_weights_info,
    default_pretrained="openai",
)
def geoclip(pretrained: str | None = None, **kwargs: Any) -> GeoCLIP:
    """pretrained: "openai" (local CLIP ViT-L/14 weights), None (random backbone, tests), or a geocore checkpoint path."""
    return _build(pretrained, **kwargs)


@register_model(
    "geoclip-tiny",
    description="GeoCLIP with a RANDOM tiny CLIP backbone (real GeoCLIP heads) — for tests and demos, not real predictions",
    config={"clip_model": None, "clip_cfg": TINY_CLIP_CFG, "embed_dim_in": 768, "heads": "wheel"},
    weights_info=geoclip_tiny_weights_info,
    random_ok=True,
)
def geoclip_tiny(pretrained: str | None = None, **kwargs: Any) -> GeoCLIP:
    """pretrained: None (random tiny backbone) or a geocore checkpoint path of this architecture."""
    if pretrained is not None and not _looks_like_path(pretrained):
        raise InputError(f"geoclip-tiny has a random backbone; pretrained must be None or a checkpoint path, "
                         f"got {pretrained!r}")
    return _build(pretrained, **kwargs)
