"""`CellClassifier`: the kind of model that classifies photos into S2 geo-cells (TransLocator, GeoDecoder).

It owns what does not depend on the network: the fine cells' S2 ids and centroids and the fine → (middle,
coarse) parent table as buffers (so a trained checkpoint predicts, and draws its cells, with no partition CSV
at hand), the combination of the three levels into one distribution over fine cells, the Grad-CAM target,
checkpoints, the `create_model` builder logic, and the photo → inputs step (`prepare`: the centre view, or
the papers' ten crops with `tencrop=True`; `predict` averages the views' logits).

Checkpoints and changed defaults: a checkpoint stores its whole config, so a default changed later never
changes how it predicts; an architecture option added later is absent from older checkpoints, and `LEGACY`
holds the value that rebuilds them as they were saved.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
from torch import nn

from geocore.errors import InputError
from geocore.geo.cells import CellPartition, cell_hierarchy, load_partitions
from geocore.models.base import GeoLocator, GradCamSpec
from geocore.models.layers.hierarchy import COMBINE_MODES, LEVELS, combine_probs
from geocore.models.layers.vit import average_views, flatten_views
from geocore.models.prediction import Prediction
from geocore.models.views import CellInputs
from geocore.tensors import as_numpy
from geocore.weights.checkpoint import load_checkpoint, save_checkpoint
from geocore.weights.resolve import parse_pretrained

if TYPE_CHECKING:
    from geocore.geo.candidates import CandidateCells

Probs = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (B, n_coarse), (B, n_middle), (B, n_fine)


class CellClassifier(GeoLocator):
    """A model scoring (coarse, middle, fine) geo-cells; predicts fine-cell centroids.

    Subclasses set `DEFAULTS`, build their network in `__init__` after calling this one, and implement
    `level_probs(pixels, **kw) -> Probs` for a batch of (B, 3, H, W) network inputs, `fine_logits(pixels,
    **inputs)` (the Grad-CAM score) and `gradcam_layer()` (the target layer and its reshape).
    """

    DEFAULTS: dict[str, Any] = {}
    LEGACY: dict[str, Any] = {}  # options added later: their value for checkpoints saved before them
    image_size: int  # side of the square network input
    FREE_KEYS: frozenset[str] = frozenset({"combine"})  # may override a checkpoint (not architecture)
    TENCROP_SQUASH: bool = False  # ten-crop geometry: Resize((r, r)) (True) or the shorter side to r

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
        self.register_buffer("cell_ids", torch.zeros(n[2], dtype=torch.int64))  # (n_fine,) S2 ids (uint64 bits)
        self.register_buffer("cells_known", torch.tensor(False))
        self._cells_cache: tuple[tuple[int, int], CandidateCells] | None = None  # S2 cells, built on first use

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
        self.parents.copy_(torch.as_tensor(cell_hierarchy(parts[2], parts[1], parts[0])))
        self.cell_ids.copy_(torch.from_numpy(parts[2].cell_ids.astype(np.uint64).view(np.int64)))
        self.cells_known.fill_(True)

    def level_probs(self, pixels: torch.Tensor, **kwargs: Any) -> Probs:
        raise NotImplementedError

    # ---- photos → inputs ----------------------------------------------------------------------------------

    def input_transform(self, tencrop: bool = False) -> CellInputs:
        """PIL photo → the inputs `predict` takes (a picklable callable, for DataLoader workers): "pixels"
        (3, H, W), the model's `preprocess`; with `tencrop`, (10, 3, H, W), the papers' ten crops."""
        return CellInputs(self.preprocess, self.image_size, self.mean.flatten().tolist(),
                          self.std.flatten().tolist(), tencrop=tencrop, squash=self.TENCROP_SQUASH)

    def prepare(self, image: Any, tencrop: bool = False) -> dict[str, torch.Tensor]:
        """The inputs of `predict` for one PIL photo (see `input_transform`)."""
        return self.input_transform(tencrop)(image)

    def photo_seg(self, image: Any) -> torch.Tensor | None:
        """`needs_segmentation` models: (H, W) labels of a PIL photo's centre view, segmented whole as
        `predict` segments it; None when the model cannot segment photos itself."""
        return None

    @torch.no_grad()
    def predict(self, pixels: torch.Tensor, top_k: int = 5, *, full: bool = False) -> Prediction:
        """Top-k fine-cell centroids for (B, 3, H, W) normalised pixels, or (B, V, 3, H, W) views of each photo
        (ten-crop, `prepare(image, tencrop=True)`): `forward` gives the level logits of each view, averaged."""
        x, views = flatten_views(pixels)
        return self.views_prediction(self(x), views, top_k, full)

    def views_prediction(self, out: Mapping[str, torch.Tensor], views: int, top_k: int, full: bool) -> Prediction:
        """`probs_to_prediction` of per-view level logits `out` (B·V rows, `flatten_views`), the views' logits
        averaged first, as both papers' authors do."""
        probs = tuple(average_views(out[k].float(), views).softmax(-1) for k in LEVELS)
        return self.probs_to_prediction(probs, top_k, full)  # type: ignore[arg-type]

    def probs_to_prediction(self, probs: Probs, top_k: int, full: bool) -> Prediction:
        """Combine level probabilities per `self.combine` and rank the fine-cell centroids."""
        self._require_cells()
        p = combine_probs(*(x.float() for x in probs), self.parents, self.combine)  # (B, n_fine)
        return Prediction.from_scores(p.clamp_min(torch.finfo(p.dtype).tiny).log(), self.centroids, top_k,
                                      full=full)

    def candidate_points(self) -> torch.Tensor:
        return self.centroids

    def candidate_cells(self) -> CandidateCells:
        """The fine cells as real S2 cell polygons."""
        from geocore.geo.candidates import S2Cells

        self._require_cells()
        key = (self.cell_ids.data_ptr(), self.cell_ids._version)  # rebuilt only when the cells change
        if self._cells_cache is None or self._cells_cache[0] != key:
            self._cells_cache = (key, S2Cells(as_numpy(self.cell_ids).view(np.uint64)))
        return self._cells_cache[1]

    def _require_cells(self) -> None:
        if not bool(self.cells_known):
            raise InputError(f"{type(self).__name__} has no cells (centroids, S2 ids): build it with partitions=(coarse, middle, "
                             "fine) CSV paths, or load a trained checkpoint (it carries them)")

    # ---- Grad-CAM -----------------------------------------------------------------------------------------

    def fine_logits(self, pixels: torch.Tensor, **inputs: Any) -> torch.Tensor:
        """(B, 3, H, W) → (B, n_fine) fine-cell logits, differentiable w.r.t. the pixels."""
        raise NotImplementedError

    def gradcam_layer(self) -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
        """(target layer, reshape transform) for Grad-CAM."""
        raise NotImplementedError

    def gradcam_spec(self, pixels: torch.Tensor, target: Any = None, **inputs: Any) -> GradCamSpec:
        """Explain the logit of fine cell `target` (default: the top-1, levels combined as the model predicts)."""
        n = int(self.config["num_cells"][2])
        known = bool(self.cells_known)
        if target is None:
            with torch.no_grad():
                probs = self.level_probs(pixels, **inputs)
                target = int(self.probs_to_prediction(probs, 1, False).indices[0, 0] if known
                             else probs[2][0].argmax())
        if isinstance(target, (tuple, list)) or not 0 <= int(target) < n:
            raise InputError(f"target: expected a fine-cell index 0..{n - 1}, got {target!r}")
        where = "centroid {:.4f}, {:.4f}".format(*self.centroids[int(target)].tolist()) if known else "no centroids"
        layer, reshape = self.gradcam_layer()
        return GradCamSpec(layer, reshape, lambda x: self.fine_logits(x, **inputs), int(target),
                           f"logit of fine cell #{int(target)} ({where})")

    # ---- checkpoints --------------------------------------------------------------------------------------

    def save_checkpoint(self, path: str | Path) -> Path:
        """Write this model (weights, cells, config) for `create_model(name, pretrained=path)`."""
        return save_checkpoint(path, self.model_name, self.state_dict(), self.config)


def _plain(value: Any) -> Any:
    """Tuples → lists, recursively: the form a config takes after a checkpoint round trip."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


M = TypeVar("M", bound=CellClassifier)


def build_cell_model(cls: type[M], name: str, *, pretrained: str | Path | None, partitions: Sequence[Any] | None,
                     given: Mapping[str, Any]) -> M:
    """The `create_model` builder shared by the cell classifiers.

    pretrained: None (random init, no network), "imagenet" (timm ImageNet backbone weights from the local HF
    cache, else WeightsMissingError) or a checkpoint file (`save_checkpoint`), whose config fixes the
    architecture: a `given` architecture option that contradicts it is an InputError. `given` values of None
    mean "not given". `partitions` (coarse, middle, fine CSV paths or CellPartitions) set the centroids and
    the cell counts. Options in `cls.FREE_KEYS` (combine, loss weights) may override a checkpoint's; options
    a checkpoint predates take their `cls.LEGACY` value (how it was built), not today's default.
    """
    given = _plain({k: v for k, v in given.items() if v is not None})
    parts = load_partitions(partitions) if partitions is not None else None
    if parts is not None:
        sizes = [len(p) for p in parts]
        if given.setdefault("num_cells", sizes) != sizes:
            raise InputError(f"num_cells {given['num_cells']} contradicts the partitions' sizes {sizes}")
    state = None
    ref = parse_pretrained(pretrained)
    if ref.kind == "tag" and ref.value != "imagenet" or ref.kind == "folder":
        raise InputError(f"{cls.__name__}: pretrained must be None, 'imagenet' or a checkpoint file, got {pretrained!r}")
    imagenet = ref.kind == "tag"
    if ref.kind == "file":
        ckpt = load_checkpoint(ref.path, expect_model=name)
        state, saved = ckpt.tensors, ckpt.config
        saved = {**{k: v for k, v in _plain(cls.LEGACY).items() if k not in saved}, **saved}
        clash = {k: v for k, v in given.items() if k not in cls.FREE_KEYS and k in saved and saved[k] != v}
        if clash:
            k = next(iter(clash))
            raise InputError(f"{pretrained}: checkpoint was trained with {k}={saved[k]!r}, got {k}={clash[k]!r}")
        given = {**saved, **given}
    model = cls(given, imagenet=imagenet)
    model.model_name = name
    model.random_backbone = ref.kind != "file"  # not trained here: its cell predictions mean nothing
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
