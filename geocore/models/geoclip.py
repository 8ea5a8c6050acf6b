"""GeoCLIP (Vivanco Cepeda, Nayak & Shah, NeurIPS 2023) as the `geoclip` package implements it.

Image → frozen open_clip CLIP image tower (768-d) → MLP 768→768→512; GPS → location encoder (512-d);
prediction = softmax(logit_scale · ⟨img, gps⟩) over a GPS gallery (normalised embeddings), top-k.
The MLP, location encoder, logit scale and the 100K MP-16 gallery come from the `geoclip` wheel.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from geocore.errors import InputError
from geocore.geo.coords import validate_latlon
from geocore.geo.gallery import default_gallery
from geocore.models.ann_index import (RETRIEVE, AnnIndex, background_sample, check_mode, index_path,
                                      indexed_prediction, load_or_build, nlist_for, retrieve, use_index)
from geocore.models.base import GalleryModel, GradCamSpec
from geocore.models.clip_backbone import (autocast_friendly_attention, build_clip, clip_image_transform,
                                          clip_tokenizer, load_state_dict_file)
from geocore.models.gallery_cache import GalleryEmbeddingCache
from geocore.models.layers.vit import tokens_to_map
from geocore.models.location_encoder import LocationEncoder
from geocore.models.precision import compute_autocast
from geocore.models.prediction import Prediction
from geocore.models.registry import WeightsInfo, register_model
from geocore.models.retrieval import cosine_scores, use_half
from geocore.weights.checkpoint import load_checkpoint, save_checkpoint
from geocore.weights.paths import geoclip_package_dir
from geocore.weights.resolve import parse_pretrained, resolve_clip_checkpoint
from geocore.weights.sources import SOURCES
from geocore.weights.status import source_status
from geocore.tensors import as_numpy

if TYPE_CHECKING:
    from geocore.geo.candidates import CandidateCells

GEOCLIP_CONFIG: dict[str, Any] = {"clip_model": "ViT-L-14", "embed_dim_in": 768, "heads": "wheel"}
# A tiny random open_clip (2-layer ViT-B/32-shaped towers, projection 768 so the wheel MLP fits).
TINY_CLIP_CFG: dict[str, Any] = {
    "embed_dim": 768,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 224, "patch_size": 32, "width": 64, "layers": 2, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


class GeoCLIP(GalleryModel):
    """GeoCLIP over a GPS gallery. `random_backbone` is True when the CLIP weights are random (tests)."""

    supports_text = True
    index_mode: str = "auto"  # gallery search: "auto" | "exact" | "ivf" (`geocore.models.ann_index`)
    _ann: tuple | None = None  # (embedding cache key, AnnIndex, background sample, its embeddings) of the gallery

    def __init__(self, clip: nn.Module, *, preprocess, tokenizer, embed_dim_in: int = 768,
                 gallery: torch.Tensor | None = None, random_backbone: bool = False,
                 config: dict[str, Any] | None = None) -> None:
        super().__init__()
        out_dim = clip.visual.output_dim
        if out_dim != embed_dim_in:
            raise InputError(f"CLIP backbone projects to {out_dim} dims but embed_dim_in={embed_dim_in}")
        # frozen backbone; its attention made fast under bf16 autocast (`AutocastSelfAttention`)
        self.clip = autocast_friendly_attention(clip).requires_grad_(False).eval()
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
        """(B, 3, H, W) → (B, 768) projected CLIP image features, before the MLP (hook point for Grad-CAM).

        The tower runs at the current precision (`geocore.models.precision`: bf16 autocast inside
        `use_precision("bf16")`); the features come back as float32."""
        with compute_autocast(pixels.device):
            feats = self.clip.encode_image(pixels)
        return feats.float()

    def image_embeddings(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) → (B, 512) L2-normalised image embeddings."""
        return F.normalize(self.mlp(self.forward_features(pixels)), dim=-1)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        if isinstance(texts, str) or not texts:
            raise InputError("texts must be a non-empty list of strings")
        return self.tokenizer(list(texts)).to(self.device)  # (B, context_length)

    def text_embeddings(self, texts: list[str]) -> torch.Tensor:
        """(B,) strings → (B, 512) L2-normalised embeddings (CLIP text features through the image MLP); the text
        tower runs at the current precision, the MLP in float32."""
        tokens = self.tokenize(texts)
        with compute_autocast(tokens.device):
            feats = self.clip.encode_text(tokens)
        return F.normalize(self.mlp(feats.float()), dim=-1)

    @torch.no_grad()
    def embed_locations(self, latlon: torch.Tensor, chunk_size: int = 65536) -> torch.Tensor:
        """(N, 2) (lat, lon) degrees → (N, 512) L2-normalised GPS embeddings."""
        latlon = torch.as_tensor(validate_latlon(as_numpy(latlon), source="embed_locations"), dtype=torch.float32)
        return self.location_encoder.embed(latlon, chunk_size=chunk_size)

    # --- gallery --------------------------------------------------------------------------------

    def set_gallery(self, coords: torch.Tensor, *, index: str | None = None) -> None:
        """Score against these (M, 2) (lat, lon) points from now on; `index` ("auto", "exact", "ivf"; None keeps
        the current mode) picks the exact scan or the approximate index (`geocore.models.ann_index`)."""
        arr = validate_latlon(as_numpy(coords), source="gallery")
        if arr.shape[0] == 0:
            raise InputError("gallery: needs at least one point")
        if index is not None:
            self.index_mode = check_mode(index)
        self.gallery = torch.as_tensor(arr, dtype=torch.float32, device=self.device)
        self.gallery_cache.clear()
        self._ann = None

    def with_gallery(self, coords: torch.Tensor, *, index: str | None = None) -> "GeoCLIP":
        """A view of this model that scores `coords`: it shares every weight (no copy) but owns its
        gallery, embedding cache and index, so concurrent users of the original (e.g. app sessions) are unaffected."""
        view = copy.copy(self)
        view._buffers = dict(self._buffers)  # shallow copy shares the buffer dict: give the view its own
        view.gallery_cache = GalleryEmbeddingCache(self.gallery_cache.name)
        view.set_gallery(coords, index=index)
        return view

    def uses_index(self) -> bool:
        """True when the current gallery is searched through the approximate index."""
        return use_index(self.index_mode, self.num_candidates())

    def gallery_index(self, *, progress: bool = True) -> AnnIndex:
        """The approximate index of the current gallery: from memory, from its file beside the embedding cache,
        or built (with a progress bar) and saved there."""
        emb = self._scan_matrix()
        key = self.gallery_cache.last_key
        if self._ann is None or self._ann[0] != key:
            path = self.gallery_cache.last_path
            built = load_or_build(emb, None if path is None or not self.gallery_cache.disk
                                  else index_path(path, nlist_for(emb.shape[0])), progress=progress)
            bg = background_sample(emb.shape[0])
            self._ann = (key, built, bg, emb[bg].float().cpu())
        return self._ann[1]

    def gallery_embeddings(self) -> torch.Tensor:
        """(M, 512) normalised embeddings of the gallery: cached in memory and on disk; float32, or float16
        (memory-mapped) for galleries above `retrieval.HALF_PRECISION_ABOVE` points."""
        return self.gallery_cache.get(self.location_encoder, self.gallery,
                                      lambda g: self.location_encoder.embed(g))

    def _scan_matrix(self) -> torch.Tensor:
        """The gallery embeddings as scanned: float32, or the cache's float16 copy for large galleries."""
        if use_half(self.num_candidates()):
            return self.gallery_cache.half(self.location_encoder, self.gallery,
                                           lambda g: self.location_encoder.embed(g))
        return self.gallery_embeddings()

    # --- scoring --------------------------------------------------------------------------------

    def forward(self, pixels: torch.Tensor, locations: torch.Tensor | None = None) -> torch.Tensor:
        """(B, M) logits of images against `locations` (M, 2) (trainable path), or the cached gallery."""
        img = self.image_embeddings(pixels)  # (B, 512)
        loc = (self.gallery_embeddings().float() if locations is None
               else F.normalize(self.location_encoder(locations), dim=-1))  # (M, 512)
        return self.logit_scale.exp() * img @ loc.T

    def similarity_logits(self, queries: torch.Tensor, locations: torch.Tensor) -> torch.Tensor:
        """(B, 512) normalised queries × (M, 512) normalised location embeddings → (B, M) logits."""
        return self.logit_scale.exp() * cosine_scores(queries, locations)

    def predict_embeddings(self, emb: torch.Tensor, top_k: int = 5, full: bool = False) -> Prediction:
        """Top-k gallery points for (B, 512) normalised embeddings (image or text)."""
        if self.uses_index():
            index = self.gallery_index()
            ret = retrieve(index, emb, self._scan_matrix(), self.logit_scale.detach().exp(), self._ann[2],
                           max(RETRIEVE, top_k), bg_emb=self._ann[3])
            return indexed_prediction(ret, self.gallery, top_k, full=full)
        logits = self.similarity_logits(emb, self._scan_matrix())  # (B, M)
        return Prediction.from_scores(logits, self.gallery, top_k, full=full)

    def candidate_cells(self) -> CandidateCells:
        """Voronoi cells of the gallery (`GeoLocator.candidate_cells`); for an indexed gallery (millions of
        points, no Voronoi diagram) the S2 cells holding its points (`geocore.geo.candidates.GalleryS2Cells`)."""
        if self.uses_index():
            from geocore.geo.candidates import gallery_s2_cells

            return gallery_s2_cells(self.gallery)
        return super().candidate_cells()

    @torch.no_grad()
    def predict(self, pixels: torch.Tensor, top_k: int = 5, *, full: bool = False) -> Prediction:
        """Top-k gallery points for a (B, 3, H, W) batch of preprocessed images."""
        return self.predict_embeddings(self.image_embeddings(pixels.to(self.device)), top_k, full)

    @torch.no_grad()
    def predict_text(self, texts: list[str], top_k: int = 5, *, full: bool = False) -> Prediction:
        """Top-k gallery points for text queries ("a photo taken in Kyoto")."""
        return self.predict_embeddings(self.text_embeddings(texts), top_k, full)

    # --- Grad-CAM -------------------------------------------------------------------------------

    def gradcam_spec(self, pixels: torch.Tensor, target: int | tuple[float, float] | None = None,
                     **_: Any) -> GradCamSpec:
        """Explain the image's similarity to a gallery point (index; default the top-1) or to any (lat, lon),
        at the input of the last CLIP block (the embedding reads the class token only, so the last block's own
        patch outputs get no gradient)."""
        if isinstance(target, (tuple, list)):  # any (lat, lon)
            lat, lon = (float(v) for v in target)
            emb = self.embed_locations(torch.tensor([[lat, lon]])).to(self.device)
            desc = f"similarity to ({lat:.4f}, {lon:.4f})"
        else:  # a gallery index
            if target is None:
                with torch.no_grad():
                    target = int(self.predict(pixels, top_k=1).indices[0, 0])
            n = self.num_candidates()
            if not 0 <= int(target) < n:
                raise InputError(f"target gallery point {target} out of range 0..{n - 1}")
            lat, lon = (float(v) for v in self.gallery[int(target)].tolist())
            emb = self.gallery_embeddings()[int(target)][None].float()  # float16 for large galleries
            desc = f"similarity to gallery point #{int(target)} ({lat:.4f}, {lon:.4f})"
        visual = self.clip.visual
        grid = tuple(visual.grid_size)
        return GradCamSpec(visual.transformer.resblocks[-1].ln_1, lambda t: tokens_to_map(t, grid, 1),
                           lambda x: self.image_embeddings(x) @ emb.T, 0, desc)

    # --- checkpoints ----------------------------------------------------------------------------

    def save_checkpoint(self, path: str | Path, *, gallery: torch.Tensor | None = None) -> Path:
        """Save what training changes (MLP, location encoder, logit scale) and the backbone's name — not a
        copy of CLIP — plus `gallery` (M, 2) when given (a training run's own points; `locate` uses them)."""
        sd = {k: v for k, v in self.state_dict().items() if not k.startswith("clip.")}
        if gallery is not None:
            sd["gallery"] = torch.as_tensor(gallery, dtype=torch.float32)
        return save_checkpoint(path, self.model_name, sd, self.config)


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


def _backbone(config: dict[str, Any], clip_weights: str | None) -> tuple[nn.Module, bool]:
    """(CLIP, random?) as `config` names it: open_clip architecture or custom dict, weights tag or random."""
    arch = None if config["clip_cfg"] is not None else config["clip_model"]
    tag = config.get("clip_pretrained")
    if tag is None:
        return build_clip(arch, config["clip_cfg"], seed=config.get("seed", 0)), True
    path = resolve_clip_checkpoint(config["clip_model"] or "ViT-L-14", tag, clip_weights)
    return build_clip(arch, config["clip_cfg"], state_dict=load_state_dict_file(path)), False


def _build(pretrained: str | None, *, clip_model: str | None = "ViT-L-14", clip_cfg: dict | None = None,
           embed_dim_in: int = 768, heads: str | None = "wheel", clip_weights: str | None = None,
           gallery: torch.Tensor | None = None, seed: int = 0) -> GeoCLIP:
    """pretrained: None (random backbone), an open_clip tag ("openai", local weights only) or a checkpoint file
    (heads + backbone name; its backbone weights are resolved like a tag)."""
    ref = parse_pretrained(pretrained)
    if ref.kind == "folder":
        raise InputError(f"{pretrained}: a folder; pass the checkpoint file, or clip_weights=FOLDER for the backbone")
    if ref.kind == "file":
        return _from_checkpoint(ref.path, clip_weights, gallery)
    config = {"clip_model": clip_model, "clip_cfg": copy.deepcopy(clip_cfg), "embed_dim_in": embed_dim_in,
              "heads": heads, "clip_pretrained": ref.value, "seed": seed}
    clip, random_backbone = _backbone(config, clip_weights)
    arch = None if clip_cfg is not None else clip_model
    return geoclip_from_clip(clip, clip_model=arch, tag=ref.value, embed_dim_in=embed_dim_in, heads=heads,
                             gallery=gallery, random_backbone=random_backbone, config=config, seed=seed)


def _from_checkpoint(path: Path, clip_weights: str | None, gallery: torch.Tensor | None) -> GeoCLIP:
    ckpt = load_checkpoint(path)
    config = ckpt.config
    if ckpt.model not in GALLERY_MODELS or "clip_cfg" not in config:
        raise InputError(f"{path}: a {ckpt.model} checkpoint, not a GeoCLIP one")
    clip, random_backbone = _backbone(config, clip_weights)
    arch = None if config["clip_cfg"] is not None else config["clip_model"]
    tensors = dict(ckpt.tensors)
    saved_gallery = tensors.pop("gallery", None)
    model = geoclip_from_clip(clip, clip_model=arch, tag=config.get("clip_pretrained"),
                              embed_dim_in=config["embed_dim_in"], heads=None,
                              gallery=gallery if gallery is not None else saved_gallery,
                              random_backbone=random_backbone, config=config, seed=config.get("seed", 0))
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [k for k in missing if not k.startswith("clip.")]
    if missing or unexpected:
        raise InputError(f"{path}: checkpoint does not match GeoCLIP (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")
    return model


GALLERY_MODELS = ("geoclip", "geoclip-tiny")


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
    if parse_pretrained(pretrained).kind == "tag":
        raise InputError(f"geoclip-tiny has a random backbone; pretrained must be None or a checkpoint path, "
                         f"got {pretrained!r}")
    return _build(pretrained, **kwargs)
