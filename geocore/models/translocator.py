"""TransLocator (Pramanick et al., ECCV 2022, "Where in the World is this Image? Transformer-based
Geo-localization in the Wild").

Two ViT-B/16 branches, one over the RGB image (R) and one over its colour-coded ADE20K semantic segmentation
map (S). Between transformer layers the two CLS tokens are fused (`CLSFusion`, Eq. 4: one projection f and
one back-projection g shared by the branches); the last layer's CLS tokens stay branch-specific and are
combined by attentive fusion (Eqs. 5–7) into a 2C-d feature that feeds four heads (Table 0.A.2: coarse
linear, middle and fine with a hidden layer of 3000 / 6000 units, scene linear; weights N(0, 0.02²)):
coarse / middle / fine geo-cells (MP-16 partitions cells_50_{5000,2000,1000}) and scene (S3 by default).
Prediction uses the fine cells alone (`combine="fine"`; supplement §0.A.1: the hierarchical ensemble "does
not achieve a consistent improvement"; "product" is an option).

The segmentation map is computed once per photo from the whole photo (as the paper precomputes its maps) and
cut exactly like the photo for each view (`geocore.models.views`), in training and at inference; ten-crop
(`prepare(image, tencrop=True)`) follows the supplement: resize to (256, 256), ten 224 crops of the photo and
of its map, logits averaged. The segmenter is SegFormer, not the paper's HRNet (`geocore.models.segmenter`).

Loss (Eq. 8): (1 − α − β)·CE_coarse + α·CE_middle + β·CE_fine + γ·CE_scene, labels −1 ignored.
Defaults α = 0.3, β = 0.2, γ = 1.0, i.e. 0.5 / 0.3 / 0.2 / 1.0: the weights of the authors' public training code
(`experiment_codes/ViT_RGB_train.py` of ShramanPramanick/Transformer_Based_Geo-localization); the paper gives
no values. `ViTMT` is the paper's single-branch multi-task model whose backbone initialises both branches
(`geocore train translocator --recipe paper`). Where this differs from the paper: docs/faithfulness.md.
No public weights exist: train with `geocore train translocator`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from geocore.errors import InputError
from geocore.models.cell_classifier import CellClassifier, Probs, build_cell_model
from geocore.models.layers.fusion import AttentiveFusion, CLSFusion
from geocore.models.layers.heads import classifier_head
from geocore.models.layers.hierarchy import LEVELS, weighted_loss
from geocore.models.layers.seg_palette import render_segmentation
from geocore.models.layers.vit import flatten_views, tokens_to_map
from geocore.models.prediction import Prediction
from geocore.models.registry import register_model, train_your_own
from geocore.models.segmenter import DEFAULT_SEGMENTER, SEG_SHORT_SIDE, Segmenter, load_segmenter
from geocore.models.views import CellInputs, SegmentInputs, crop_map, views_from_tensor
from geocore.models.precision import compute_autocast
from geocore.models.vit_backbone import create_vit, vit_features, vit_grid, vit_preprocess

SegmentFn = Callable[[torch.Tensor], torch.Tensor]  # pixels (B, 3, H, W) -> colour map (B, 3, H, W) or labels
FUSION_LAYERS = ("between", "all")


def _heads(dim: int, cfg: Mapping[str, Any]) -> nn.ModuleDict:
    """coarse / middle / fine / scene heads on a `dim`-d feature (Table 0.A.2 hidden widths `head_hidden`)."""
    hidden = [int(h) for h in cfg["head_hidden"]]
    if len(hidden) != 3 or min(hidden) < 0:
        raise InputError(f"head_hidden: expected 3 widths >= 0 (coarse, middle, fine; 0 = linear), got {hidden}")
    n = cfg["num_cells"]
    return nn.ModuleDict({**{level: classifier_head(dim, n[i], hidden[i]) for i, level in enumerate(LEVELS)},
                          "scene": classifier_head(dim, int(cfg["scene_classes"]))})


def _loss(cfg: Mapping[str, Any], out: Mapping[str, torch.Tensor], coarse: torch.Tensor, middle: torch.Tensor,
          fine: torch.Tensor, scene: torch.Tensor | None) -> dict[str, torch.Tensor]:
    a, b, g = (float(cfg[k]) for k in ("alpha", "beta", "gamma"))
    weights = {"coarse": 1.0 - a - b, "middle": a, "fine": b, "scene": g}
    return weighted_loss(out, {"coarse": coarse, "middle": middle, "fine": fine, "scene": scene}, weights)


class TransLocator(CellClassifier):
    """Dual-branch (RGB + segmentation) ViT geo-cell classifier with CLS-token fusion between layers."""

    DEFAULTS: dict[str, Any] = {
        "num_cells": [3298, 7202, 12893],  # coarse, middle, fine
        "scene_classes": 3,  # S3; 16 or 365 for the other Places365 hierarchies
        "backbone": "vit_base_patch16_224",
        "backbone_kwargs": {},  # e.g. {"embed_dim": 32, "depth": 2, "num_heads": 2, "img_size": 32}
        "fusion": True,  # CLS fusion between layers (False: two independent branches until attentive fusion)
        "fusion_mode": "replace",  # the fused token replaces each branch's ("add": added to it)
        "fusion_layers": "between",  # after layers 1..L-1 ("all": also after the last, geocore's former layout)
        "fusion_projections": "shared",  # one f, one g (Eq. 4); "per_branch": f_R, f_S, g_R, g_S
        "attention_hidden": 8,  # Table 0.A.2 "[768, 8, 1]"
        "head_hidden": [0, 3000, 6000],  # Table 0.A.2; [0, 0, 0]: linear heads
        "combine": "fine",  # supplement §0.A.1: predict from the fine cells ("product": hierarchical)
        "alpha": 0.3, "beta": 0.2, "gamma": 1.0,
    }
    # how checkpoints saved before these options were built (their saved config wins over DEFAULTS)
    LEGACY: dict[str, Any] = {"fusion_layers": "all", "fusion_projections": "per_branch", "head_hidden": [0, 0, 0]}
    FREE_KEYS = CellClassifier.FREE_KEYS | {"alpha", "beta", "gamma"}
    TENCROP_SQUASH = True  # supplement §0.A.2: "Resize in (256, 256), Tencrop with size (224, 224)"
    needs_segmentation = True

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "segmenter":  # a plain reference: never a submodule, never in the state dict
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def __init__(self, config: Mapping[str, Any] | None = None, *, imagenet: bool = False) -> None:
        super().__init__(config or {})
        cfg = self.config
        if cfg["fusion_layers"] not in FUSION_LAYERS:
            raise InputError(f"fusion_layers: expected one of {', '.join(FUSION_LAYERS)}, got {cfg['fusion_layers']!r}")
        self.rgb = create_vit(cfg["backbone"], cfg["backbone_kwargs"], imagenet=imagenet)
        self.seg = create_vit(cfg["backbone"], cfg["backbone_kwargs"], imagenet=imagenet)
        dim, depth = self.rgb.embed_dim, len(self.rgb.blocks)
        n_fusion = depth if cfg["fusion_layers"] == "all" else depth - 1
        self.fusion = (nn.ModuleList(CLSFusion(dim, cfg["fusion_mode"], cfg["fusion_projections"])
                                     for _ in range(n_fusion)) if cfg["fusion"] else None)
        self.attentive = AttentiveFusion(dim, cfg["attention_hidden"])
        self.heads = _heads(2 * dim, cfg)  # on f_mm = [f_rgb || f_seg] (Eq. 7)
        self.image_size = int(self.rgb.patch_embed.img_size[0])  # square network input
        self.preprocess, mean, std = vit_preprocess(self.rgb)
        self.register_buffer("mean", mean, persistent=False)  # (1, 3, 1, 1)
        self.register_buffer("std", std, persistent=False)
        self.segmenter: SegmentFn | None = None  # attach_segmenter() one to predict from RGB alone

    def _apply(self, fn: Callable, recurse: bool = True) -> "TransLocator":
        """`.to(device)` and friends move an attached `Segmenter` along with the model."""
        super()._apply(fn, recurse)
        if isinstance(self.segmenter, Segmenter):
            self.segmenter.model._apply(fn, recurse)
        return self

    def attach_segmenter(self, segmenter: Any) -> "TransLocator":
        """Use `segmenter` (a weights name, a transformers folder, a `Segmenter`, or any callable
        pixels → map) for the segmentation branch when no map is given; returns the model.

        A `Segmenter` segments each whole photo (`prepare` / `predict`), as training does; a plain callable
        can only segment the network input it is given (its own geometry)."""
        if isinstance(segmenter, (str, Path)) or isinstance(segmenter, Segmenter):
            self.segmenter = load_segmenter(segmenter).set_input_stats(self.mean, self.std)
        elif callable(segmenter):
            self.segmenter = segmenter
        else:
            raise InputError(f"segmenter: expected a weights name, a folder or a callable, got {segmenter!r}")
        return self

    def init_branches(self, single: "ViTMT") -> "TransLocator":
        """Both branches from a trained single-branch model's backbone (§4.4: "Both channels of the dual-branch
        TransLocator system are initialized with the weights of the ViT-MT backbone"); returns the model."""
        state = single.backbone.state_dict()
        self.rgb.load_state_dict(state)
        self.seg.load_state_dict(state)
        return self

    # ---- network ------------------------------------------------------------------------------------------

    def gradcam_layer(self) -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
        """The input of the RGB branch's last block (its output reaches the heads only through the class token,
        so the last block's own patch outputs get no gradient)."""
        grid, prefix = vit_grid(self.rgb)
        return self.rgb.blocks[-1].norm1, lambda t: tokens_to_map(t, grid, prefix)

    def fine_logits(self, pixels: torch.Tensor, seg: torch.Tensor | None = None, **_: Any) -> torch.Tensor:
        """(B, n_fine) logits; `seg` is the normalised S-branch input for one image (held fixed), or None to
        segment `pixels` with the attached segmenter."""
        seg_in = self._seg_for(pixels.detach(), None) if seg is None else seg
        return self(pixels, seg_in.expand(pixels.shape[0], -1, -1, -1))["fine"]

    @staticmethod
    def _embed(vit: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 1 + N, C) tokens entering the first block."""
        return vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(x))))

    def forward_features(self, rgb: torch.Tensor, seg: torch.Tensor) -> dict[str, torch.Tensor]:
        """Both branches with CLS fusion; final CLS tokens (B, C), fused (B, 2C), weights (B, 2). The branches run
        at the current precision (`geocore.models.precision`), the final norms and attentive fusion in float32."""
        with compute_autocast(rgb.device):
            r, s = self._embed(self.rgb, rgb), self._embed(self.seg, seg)  # (B, 1+N, C) each
            for i, (block_r, block_s) in enumerate(zip(self.rgb.blocks, self.seg.blocks)):
                r, s = block_r(r), block_s(s)
                if self.fusion is not None and i < len(self.fusion):  # "between": not after the last layer
                    cls_r, cls_s = self.fusion[i](r[:, 0], s[:, 0])  # (B, C) each
                    r = torch.cat([cls_r[:, None], r[:, 1:]], dim=1)
                    s = torch.cat([cls_s[:, None], s[:, 1:]], dim=1)
        r, s = r.float(), s.float()
        cls_r, cls_s = self.rgb.norm(r)[:, 0], self.seg.norm(s)[:, 0]  # (B, C)
        fused, weights = self.attentive(cls_r, cls_s)  # (B, 2C), (B, 2)
        return {"rgb_cls": cls_r, "seg_cls": cls_s, "fused": fused, "weights": weights}

    def forward(self, rgb: torch.Tensor, seg: torch.Tensor) -> dict[str, torch.Tensor]:
        """rgb, seg: normalised (B, 3, H, W) -> logits coarse (B, n_c), middle (B, n_m), fine (B, n_f),
        scene (B, n_scene); fused (B, 2C) and attentive weights (B, 2)."""
        feats = self.forward_features(rgb, seg)
        out = {k: head(feats["fused"]) for k, head in self.heads.items()}
        return {**out, "fused": feats["fused"], "weights": feats["weights"]}

    def loss(self, out: Mapping[str, torch.Tensor], coarse: torch.Tensor, middle: torch.Tensor,
             fine: torch.Tensor, scene: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """(1−α−β)·CE_coarse + α·CE_middle + β·CE_fine + γ·CE_scene; each term and `total`; −1 labels ignored."""
        return _loss(self.config, out, coarse, middle, fine, scene)

    # ---- inference ----------------------------------------------------------------------------------------

    def input_transform(self, tencrop: bool = False) -> CellInputs:
        """As `CellClassifier.input_transform`; with a `Segmenter` attached, also the segmenter's input of the
        whole photo and the views, so `predict` segments the whole photo and cuts its map like each view."""
        transform = super().input_transform(tencrop)
        if isinstance(self.segmenter, Segmenter):
            transform.segment = SegmentInputs(self.segmenter.processor, SEG_SHORT_SIDE)
        return transform

    def segment_views(self, seg_photo: torch.Tensor, seg_views: torch.Tensor, seg_size: torch.Tensor,
                      size: int | None = None) -> torch.Tensor:
        """(B, V, size, size) uint8 labels: each whole photo segmented once (`Segmenter.label_maps`, the maps
        training caches) and cut like each of its views (`crop_map`, as training cuts them).

        seg_photo (B, 3, h, w) the segmenter's input of each photo; seg_views (B, V, 5) the views; seg_size
        (B, 2) each map's (h, w)."""
        if not isinstance(self.segmenter, Segmenter):
            raise InputError("segmenting whole photos needs a Segmenter: attach_segmenter('segformer-b0-ade')")
        size = int(size or self.image_size)
        maps = self.segmenter.label_maps(seg_photo, [tuple(v) for v in seg_size.tolist()])
        cut = [[np.asarray(crop_map(Image.fromarray(m, mode="L"), view, size)) for view in views_from_tensor(rows)]
               for m, rows in zip(maps, seg_views)]
        return torch.from_numpy(np.stack([np.stack(v) for v in cut]))

    def photo_seg(self, image: Image.Image) -> torch.Tensor | None:
        """(H, W) uint8 labels of a PIL photo's centre view, segmented whole as `predict` does; None when no
        `Segmenter` is attached (Grad-CAM)."""
        if not isinstance(self.segmenter, Segmenter):
            return None
        inp = self.prepare(image)
        return self.segment_views(inp["seg_photo"][None], inp["seg_views"][None], inp["seg_size"][None])[0, 0]

    def prepare_seg(self, seg: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """Network input (B, 3, *size) from an integer label map (B, H, W) / (B, 1, H, W) or a colour map
        (B, 3, H, W) with values in [0, 1] (uint8: 0..255), as `render_segmentation` makes."""
        if seg.dim() == 3 or (seg.dim() == 4 and seg.shape[1] == 1 and not seg.is_floating_point()):
            seg = render_segmentation(seg)
        elif seg.dim() == 4 and seg.shape[1] == 3:
            seg = seg.float() / 255.0 if seg.dtype == torch.uint8 else seg.float()
        else:
            raise InputError(f"segmentation map: expected (B, H, W) labels or a (B, 3, H, W) colour map, got "
                             f"{tuple(seg.shape)}")
        if tuple(seg.shape[-2:]) != tuple(size):
            seg = nn.functional.interpolate(seg, size=tuple(size), mode="nearest")
        return (seg.to(self.mean.device) - self.mean) / self.std

    def _seg_for(self, pixels: torch.Tensor, seg: torch.Tensor | None) -> torch.Tensor:
        if seg is None:
            if self.segmenter is None:
                raise InputError("TransLocator needs a semantic segmentation map: pass seg= (labels or colour "
                                 "map) or build it with create_model('translocator', ..., segmenter=NAME)")
            seg = self.segmenter(pixels)  # the legacy hook: segments the network input itself
        if seg.shape[0] != pixels.shape[0]:
            raise InputError(f"segmentation batch {seg.shape[0]} != image batch {pixels.shape[0]}")
        return self.prepare_seg(seg, pixels.shape[-2:])

    def level_probs(self, pixels: torch.Tensor, seg: torch.Tensor | None = None, **_: Any) -> Probs:
        """Per-level probabilities; `seg` is the normalised S-branch input (`prepare_seg`), or None to run
        the attached segmenter on `pixels`."""
        out = self(pixels, self._seg_for(pixels, None) if seg is None else seg)
        return tuple(out[k].float().softmax(-1) for k in LEVELS)  # type: ignore[return-value]

    @torch.no_grad()
    def predict(self, pixels: torch.Tensor, top_k: int = 5, *, full: bool = False, seg: torch.Tensor | None = None,
                seg_photo: torch.Tensor | None = None, seg_views: torch.Tensor | None = None,
                seg_size: torch.Tensor | None = None) -> Prediction:
        """Top-k fine-cell centroids for normalised pixels (B, 3, H, W), or (B, V, 3, H, W) views of each photo
        (ten-crop: the views' logits are averaged, as the authors' code does).

        The segmentation input, in order: `seg` (labels (B, H, W) / colour (B, 3, H, W), with views (B, V, H, W)
        / (B, V, 3, H, W)), already cut like the pixels; else the whole photos (`seg_photo`, `seg_views`,
        `seg_size`, from `prepare`) segmented by the attached `Segmenter` and cut like each view; else the
        attached segmenter run on `pixels` themselves."""
        x, views = flatten_views(pixels)
        if seg is None and seg_photo is not None:
            seg = self.segment_views(seg_photo, seg_views, seg_size, x.shape[-1])  # (B, V, n, n)
            if pixels.dim() == 4:
                seg = seg[:, 0]
        if seg is not None and pixels.dim() == 5:
            seg = seg.flatten(0, 1)
        return self.views_prediction(self(x, self._seg_for(x, seg)), views, top_k, full)


class ViTMT(CellClassifier):
    """The paper's single-branch multi-task ViT ("ViT-MT", §4.4): TransLocator's RGB branch with its own heads
    (on the C-d CLS token). Trained first by `--recipe paper`, its backbone initialises both TransLocator
    branches (`TransLocator.init_branches`); not a registered model."""

    DEFAULTS: dict[str, Any] = {k: TransLocator.DEFAULTS[k] for k in (
        "num_cells", "scene_classes", "backbone", "backbone_kwargs", "head_hidden", "combine", "alpha", "beta",
        "gamma")}
    FREE_KEYS = TransLocator.FREE_KEYS
    TENCROP_SQUASH = True

    def __init__(self, config: Mapping[str, Any] | None = None, *, imagenet: bool = False) -> None:
        super().__init__(config or {})
        self.model_name = "vit-mt"
        self.backbone = create_vit(self.config["backbone"], self.config["backbone_kwargs"], imagenet=imagenet)
        self.heads = _heads(self.backbone.embed_dim, self.config)
        self.image_size = int(self.backbone.patch_embed.img_size[0])
        self.preprocess, mean, std = vit_preprocess(self.backbone)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def forward_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return vit_features(self.backbone, pixels)  # (B, N, C), at the current precision, as float32

    def forward(self, pixels: torch.Tensor, scene: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        cls = self.backbone.forward_head(self.forward_features(pixels), pre_logits=True)  # (B, C) class token
        return {k: head(cls) for k, head in self.heads.items()}

    def loss(self, out: Mapping[str, torch.Tensor], coarse: torch.Tensor, middle: torch.Tensor,
             fine: torch.Tensor, scene: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return _loss(self.config, out, coarse, middle, fine, scene)

    def level_probs(self, pixels: torch.Tensor, **_: Any) -> Probs:
        out = self(pixels)
        return tuple(out[k].float().softmax(-1) for k in LEVELS)  # type: ignore[return-value]

    def fine_logits(self, pixels: torch.Tensor, **_: Any) -> torch.Tensor:
        return self(pixels)["fine"]

    def gradcam_layer(self) -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
        grid, prefix = vit_grid(self.backbone)
        return self.backbone.blocks[-1].norm1, lambda t: tokens_to_map(t, grid, prefix)


@register_model(
    "translocator",
    description="TransLocator (ECCV 2022): RGB + segmentation dual-branch ViT-B/16, S2 geo-cell classification",
    weights_info=train_your_own("TransLocator", "translocator"),
    user_defaults={"segmenter": DEFAULT_SEGMENTER},
)
def translocator(pretrained: str | None = None, partitions: Sequence[str | Path] | None = None,
                 num_cells: Sequence[int] | None = None, scene_classes: int | None = None,
                 backbone: str | None = None, backbone_kwargs: Mapping[str, Any] | None = None,
                 combine: str | None = None, segmenter: Any = None, **cfg: Any) -> TransLocator:
    """pretrained: None (random init), "imagenet" (timm backbone weights from the local HF cache) or a
    checkpoint file. partitions: (coarse, middle, fine) cell CSVs, e.g. cells_50_{5000,2000,1000}.csv.
    segmenter: the segmentation model that feeds the second branch (a weights name such as
    "segformer-b0-ade", a transformers folder or a `Segmenter`); None attaches none (maps passed as `seg=`).
    Unset options come from the checkpoint (options it predates: `TransLocator.LEGACY`), else
    `TransLocator.DEFAULTS` (combine="fine", the paper's Table 0.A.2 heads, fusion between layers)."""
    given = dict(num_cells=num_cells, scene_classes=scene_classes, backbone=backbone,
                 backbone_kwargs=backbone_kwargs, combine=combine, **cfg)
    model = build_cell_model(TransLocator, "translocator", pretrained=pretrained, partitions=partitions, given=given)
    return model.attach_segmenter(segmenter) if segmenter is not None else model
