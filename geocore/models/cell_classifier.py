"""`CellClassifier`: shared base of the geo-cell classifiers (TransLocator, GeoDecoder).

It owns what does not depend on the network: the fine cells' centroids and the fine → (middle, coarse)
parent table as buffers (so a trained checkpoint predicts with no partition CSV at hand), the combination of
the three levels into one distribution over fine cells, ten-crop averaging, checkpoint files, building timm
ViT backbones without network access, and the `create_model` builder logic.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import timm
import torch
import torch.nn.functional as F
from timm.data import create_transform, resolve_data_config
from timm.models.vision_transformer import VisionTransformer
from torchvision.transforms import TenCrop

from geocore.errors import InputError, WeightsMissingError
from geocore.geo.cells import CellPartition
from geocore.models.base import GeoLocator
from geocore.models.layers.hierarchy import (COMBINE_MODES, combine_probs, load_checkpoint, load_partitions,
                                             parent_table, save_checkpoint)
from geocore.models.prediction import Prediction

Probs = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (B, n_coarse), (B, n_middle), (B, n_fine)


class CellClassifier(GeoLocator):
    """A model scoring (coarse, middle, fine) geo-cells; predicts fine-cell centroids.

    Subclasses set `DEFAULTS`, build their network in `__init__` after calling this one, and implement
    `level_probs(pixels, **kw) -> Probs` for a batch of (B, 3, H, W) network inputs.
    """

    DEFAULTS: dict[str, Any] = {}
    FREE_KEYS: frozenset[str] = frozenset({"combine"})  # may override a checkpoint (not architecture)

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        unknown = sorted(set(config) - set(self.DEFAULTS))
        if unknown:
            raise InputError(f"{type(self).__name__}: unknown option(s) {', '.join(unknown)}; "
                             f"expected some of {', '.join(self.DEFAULTS)}")
        self.config: dict[str, Any] = _plain({**self.DEFAULTS, **config})
        n = self.config["num_cells"]
        if len(n) != 3 or min(n) < 1:
            raise InputError(f"num_cells: expected 3 positive sizes (coarse, middle, fine), got {n}")
        self.combine = self.config["combine"]  # validates
        self.register_buffer("centroids", torch.zeros(n[2], 2, dtype=torch.float64))  # (n_fine, 2) lat, lon
        self.register_buffer("parents", torch.full((n[2], 2), -1, dtype=torch.long))  # (n_fine, 2) middle, coarse
        self.register_buffer("cells_known", torch.tensor(False))

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "segmenter":  # a plain reference: never a submodule, never in the state dict
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    @property
    def combine(self) -> str:
        """How level probabilities become fine-cell probabilities: "product" or "fine"."""
        return self.config["combine"]

    @combine.setter
    def combine(self, mode: str) -> None:
        if mode not in COMBINE_MODES:
            raise InputError(f"combine: expected one of {', '.join(COMBINE_MODES)}, got {mode!r}")
        self.config["combine"] = mode

    def set_cells(self, partitions: Sequence[str | Path | CellPartition]) -> None:
        """Take centroids and the parent table from (coarse, middle, fine) partitions (paths or objects)."""
        parts = load_partitions(partitions)
        sizes = [len(p) for p in parts]
        if sizes != list(self.config["num_cells"]):
            raise InputError(f"partitions have {sizes} cells but the model classifies {self.config['num_cells']}")
        self.centroids.copy_(torch.as_tensor(parts[2].centroids, dtype=torch.float64))
        self.parents.copy_(torch.as_tensor(parent_table(*parts)))
        self.cells_known.fill_(True)

    def level_probs(self, pixels: torch.Tensor, **kwargs: Any) -> Probs:
        raise NotImplementedError

    def probs_to_prediction(self, probs: Probs, top_k: int, full: bool) -> Prediction:
        """Combine level probabilities per `self.combine` and rank the fine-cell centroids."""
        if not bool(self.cells_known):
            raise InputError(f"{type(self).__name__} has no cell centroids: build it with partitions=(coarse, "
                             "middle, fine) CSV paths, or load a trained checkpoint (it carries them)")
        p = combine_probs(*(x.float() for x in probs), self.parents, self.combine)  # (B, n_fine)
        return Prediction.from_scores(p.clamp_min(torch.finfo(p.dtype).tiny).log(), self.centroids, top_k,
                                      full=full)

    def save_checkpoint(self, path: str | Path) -> Path:
        """Write this model (weights, centroids, parent table, config) for `create_model(name, pretrained=path)`."""
        return save_checkpoint(path, self.state_dict(), self.config)


# ---- helpers ------------------------------------------------------------------------------------------------

def _plain(value: Any) -> Any:
    """Tuples → lists, recursively: the form a config takes after a checkpoint round trip."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def average_crops(fn: Callable[..., Probs], crops: Sequence[torch.Tensor], n: int = 10) -> Probs:
    """Run `fn` on crop-major batches (n·B, ...) and average each level's probabilities over the n crops."""
    out = fn(*crops)
    return tuple(p.view(n, -1, p.shape[-1]).mean(0) for p in out)  # type: ignore[return-value]


def ten_crop(x: torch.Tensor, size: int, mode: str = "bilinear") -> torch.Tensor:
    """(B, C, H, W) -> (10·B, C, size, size): 4 corners + centre and their mirror images, crop-major.

    Crops are `size` when the image is at least size / 0.875 (the usual 256 → 224); otherwise 0.875 of the
    shorter side, resized to `size` (`mode` "nearest" for colour-coded label maps).
    """
    short = min(x.shape[-2:])
    crop = size if short * 0.875 >= size else max(1, round(0.875 * short))
    crops = torch.stack(TenCrop(crop)(x)).flatten(0, 1)  # (10·B, C, crop, crop)
    if crop != size:
        crops = F.interpolate(crops, size=(size, size), mode=mode,
                              **({} if mode == "nearest" else {"align_corners": False}))
    return crops


def vit_reshape_transform(tokens: torch.Tensor, grid: tuple[int, int] | None = None,
                          num_prefix_tokens: int = 1) -> torch.Tensor:
    """ViT tokens (B, prefix + h·w, C) -> (B, C, h, w) activation maps for Grad-CAM (prefix tokens dropped)."""
    x = tokens[:, num_prefix_tokens:]  # (B, h*w, C)
    if grid is None:
        side = math.isqrt(x.shape[1])
        grid = (side, side)
    if grid[0] * grid[1] != x.shape[1]:
        raise InputError(f"reshape_transform: {x.shape[1]} patch tokens do not form a {grid[0]}x{grid[1]} grid")
    return x.reshape(x.shape[0], grid[0], grid[1], x.shape[2]).permute(0, 3, 1, 2)


def _cached_timm_weights(name: str) -> Path:
    """Local file of timm's pretrained weights for `name`, from the HF cache only; WeightsMissingError if absent."""
    from huggingface_hub import try_to_load_from_cache  # reads the cache folder only

    from geocore.weights.paths import hf_hub_cache

    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except RuntimeError as err:
        raise InputError(f"backbone {name!r}: {err}") from None
    repo = getattr(cfg, "hf_hub_id", None)
    if not repo:
        raise WeightsMissingError(f"timm has no Hugging Face weights for backbone {name!r}; use pretrained=None")
    cache = hf_hub_cache()
    names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
    for fn in names if cache.is_dir() else []:
        hit = try_to_load_from_cache(repo, fn, cache_dir=cache)
        if isinstance(hit, str) and Path(hit).is_file():
            return Path(hit)
    raise WeightsMissingError(f"ImageNet weights for backbone {name} are not in the Hugging Face cache {cache}; "
                              f"get them with `hf download {repo}`, or use pretrained=None")


def create_vit(name: str, kwargs: Mapping[str, Any] | None = None, *, imagenet: bool = False) -> VisionTransformer:
    """A timm ViT with no classifier: random init, or timm's pretrained weights from the local HF cache only."""
    kw = {"num_classes": 0, **(kwargs or {})}
    try:
        if imagenet:
            file = _cached_timm_weights(name)
            model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(file)}, **kw)
        else:
            model = timm.create_model(name, pretrained=False, **kw)
    except RuntimeError as err:  # unknown model name
        raise InputError(f"backbone {name!r}: {err}") from None
    if not isinstance(model, VisionTransformer) or model.cls_token is None:
        raise InputError(f"backbone {name!r}: expected a timm VisionTransformer with a class token")
    return model


def vit_preprocess(vit: VisionTransformer) -> tuple[Callable, torch.Tensor, torch.Tensor]:
    """timm's eval transform for `vit` at its input size (PIL → (3, H, W)), and its mean and std (1, 3, 1, 1)."""
    size = vit.patch_embed.img_size
    cfg = resolve_data_config({"input_size": (3, *size)}, model=vit)
    stats = [torch.tensor(cfg[k], dtype=torch.float32).view(1, 3, 1, 1) for k in ("mean", "std")]
    return create_transform(**cfg), stats[0], stats[1]


M = TypeVar("M", bound=CellClassifier)


def build_cell_model(cls: type[M], *, pretrained: str | Path | None, partitions: Sequence[Any] | None,
                     given: Mapping[str, Any]) -> M:
    """The `create_model` builder shared by the cell classifiers.

    pretrained: None (random init, no network), "imagenet" (timm ImageNet backbone weights from the local HF
    cache, else WeightsMissingError) or a checkpoint path (`save_checkpoint`), whose config fixes the
    architecture: a `given` architecture option that contradicts it is an InputError. `given` values of None
    mean "not given". `partitions` (coarse, middle, fine CSV paths or CellPartitions) set the centroids and
    the cell counts. Options in `cls.FREE_KEYS` (combine, loss weights) may override a checkpoint's.
    """
    given = _plain({k: v for k, v in given.items() if v is not None})
    parts = load_partitions(partitions) if partitions is not None else None
    if parts is not None:
        sizes = [len(p) for p in parts]
        if given.setdefault("num_cells", sizes) != sizes:
            raise InputError(f"num_cells {given['num_cells']} contradicts the partitions' sizes {sizes}")
    state = None
    imagenet = str(pretrained) == "imagenet"
    if pretrained is not None and not imagenet:
        state, saved = load_checkpoint(pretrained)
        clash = {k: v for k, v in given.items() if k not in cls.FREE_KEYS and k in saved and saved[k] != v}
        if clash:
            k = next(iter(clash))
            raise InputError(f"{pretrained}: checkpoint was trained with {k}={saved[k]!r}, got {k}={clash[k]!r}")
        given = {**saved, **given}
    model = cls(given, imagenet=imagenet)
    if state is not None:
        try:
            result = model.load_state_dict(state, strict=False)
        except RuntimeError as err:  # shape mismatches
            raise InputError(f"{pretrained}: checkpoint does not match {cls.__name__} "
                             f"({str(err).splitlines()[-1].strip()})") from None
        if result.missing_keys or result.unexpected_keys:
            raise InputError(f"{pretrained}: checkpoint does not match {cls.__name__} (missing "
                             f"{result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]})")
    if parts is not None:
        model.set_cells(parts)
    return model
