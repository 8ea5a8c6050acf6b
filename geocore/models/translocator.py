"""TransLocator (Pramanick et al., ECCV 2022, "Where in the World is this Image? Transformer-based
Geo-localization in the Wild").

Two ViT-B/16 branches, one over the RGB image (R) and one over its colour-coded ADE20K semantic segmentation
map (S). After every transformer layer the two CLS tokens are exchanged (`CLSFusion`); the final CLS tokens
are combined by attentive fusion into a 2C-d feature that feeds four heads: coarse / middle / fine geo-cells
(MP-16 partitions cells_50_{5000,2000,1000}) and scene (S3 indoor/natural/urban by default).

Loss: (1 − α − β)·CE_coarse + α·CE_middle + β·CE_fine + γ·CE_scene, labels −1 ignored. Defaults α = 0.3,
β = 0.2, γ = 1.0, i.e. 0.5 / 0.3 / 0.2 / 1.0: the weights of the authors' public training code
(`experiment_codes/ViT_RGB_train.py` of ShramanPramanick/Transformer_Based_Geo-localization); the paper's own
values could not be read here. No public weights exist: train with `geocore train translocator`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geocore.errors import InputError
from geocore.models.cell_classifier import CellClassifier, Probs, build_cell_model
from geocore.models.layers.fusion import AttentiveFusion, CLSFusion
from geocore.models.layers.hierarchy import weighted_loss
from geocore.models.layers.seg_palette import render_segmentation
from geocore.models.layers.vit import average_crops, ten_crop, tokens_to_map
from geocore.models.prediction import Prediction
from geocore.models.registry import WeightsInfo, register_model
from geocore.models.segmenter import DEFAULT_SEGMENTER, Segmenter, load_segmenter
from geocore.models.vit_backbone import create_vit, vit_grid, vit_preprocess

SegmentFn = Callable[[torch.Tensor], torch.Tensor]  # pixels (B, 3, H, W) -> colour map (B, 3, H, W) or labels


class TransLocator(CellClassifier):
    """Dual-branch (RGB + segmentation) ViT geo-cell classifier with per-layer CLS fusion."""

    DEFAULTS: dict[str, Any] = {
        "num_cells": [3298, 7202, 12893],  # coarse, middle, fine
        "scene_classes": 3,  # S3; 16 or 365 for the other Places365 hierarchies
        "backbone": "vit_base_patch16_224",
        "backbone_kwargs": {},  # e.g. {"embed_dim": 32, "depth": 2, "num_heads": 2, "img_size": 32}
        "fusion": True,  # per-layer CLS exchange (False: two independent branches until attentive fusion)
        "fusion_mode": "replace",
        "attention_hidden": 8,
        "combine": "product",
        "alpha": 0.3, "beta": 0.2, "gamma": 1.0,
    }
    FREE_KEYS = CellClassifier.FREE_KEYS | {"alpha", "beta", "gamma"}
    needs_segmentation = True

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "segmenter":  # a plain reference: never a submodule, never in the state dict
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def __init__(self, config: Mapping[str, Any] | None = None, *, imagenet: bool = False) -> None:
        super().__init__(config or {})
        cfg = self.config
        self.rgb = create_vit(cfg["backbone"], cfg["backbone_kwargs"], imagenet=imagenet)
        self.seg = create_vit(cfg["backbone"], cfg["backbone_kwargs"], imagenet=imagenet)
        dim, depth = self.rgb.embed_dim, len(self.rgb.blocks)
        self.fusion = (nn.ModuleList(CLSFusion(dim, cfg["fusion_mode"]) for _ in range(depth))
                       if cfg["fusion"] else None)
        self.attentive = AttentiveFusion(dim, cfg["attention_hidden"])
        n = cfg["num_cells"]
        self.heads = nn.ModuleDict({
            "coarse": nn.Linear(2 * dim, n[0]), "middle": nn.Linear(2 * dim, n[1]),
            "fine": nn.Linear(2 * dim, n[2]), "scene": nn.Linear(2 * dim, cfg["scene_classes"])})
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
        pixels → map) for the segmentation branch when no map is given; returns the model."""
        if isinstance(segmenter, (str, Path)) or isinstance(segmenter, Segmenter):
            self.segmenter = load_segmenter(segmenter).set_input_stats(self.mean, self.std)
        elif callable(segmenter):
            self.segmenter = segmenter
        else:
            raise InputError(f"segmenter: expected a weights name, a folder or a callable, got {segmenter!r}")
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
        """Both branches with per-layer fusion; final CLS tokens (B, C), fused (B, 2C), weights (B, 2)."""
        r, s = self._embed(self.rgb, rgb), self._embed(self.seg, seg)  # (B, 1+N, C) each
        for i, (block_r, block_s) in enumerate(zip(self.rgb.blocks, self.seg.blocks)):
            r, s = block_r(r), block_s(s)
            if self.fusion is not None:
                cls_r, cls_s = self.fusion[i](r[:, 0], s[:, 0])  # (B, C) each
                r = torch.cat([cls_r[:, None], r[:, 1:]], dim=1)
                s = torch.cat([cls_s[:, None], s[:, 1:]], dim=1)
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
        a, b, g = (float(self.config[k]) for k in ("alpha", "beta", "gamma"))
        weights = {"coarse": 1.0 - a - b, "middle": a, "fine": b, "scene": g}
        return weighted_loss(out, {"coarse": coarse, "middle": middle, "fine": fine, "scene": scene}, weights)

    # ---- inference ----------------------------------------------------------------------------------------

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
            seg = self.segmenter(pixels)
        if seg.shape[0] != pixels.shape[0]:
            raise InputError(f"segmentation batch {seg.shape[0]} != image batch {pixels.shape[0]}")
        return self.prepare_seg(seg, pixels.shape[-2:])

    def level_probs(self, pixels: torch.Tensor, seg: torch.Tensor | None = None, **_: Any) -> Probs:
        """Per-level probabilities; `seg` is the normalised S-branch input (`prepare_seg`), or None to run
        the attached segmenter."""
        out = self(pixels, self._seg_for(pixels, None) if seg is None else seg)
        return tuple(out[k].float().softmax(-1) for k in ("coarse", "middle", "fine"))  # type: ignore[return-value]

    @torch.no_grad()
    def predict(self, pixels: torch.Tensor, top_k: int = 5, *, full: bool = False,
                seg: torch.Tensor | None = None, tencrop: bool = False) -> Prediction:
        """Top-k fine-cell centroids for (B, 3, H, W) normalised pixels and their segmentation map (`seg`, or
        from `self.segmenter`); `tencrop` averages the level probabilities over ten crops of both inputs."""
        seg_in = self._seg_for(pixels, seg)
        if tencrop:
            size = self.rgb.patch_embed.img_size[0]
            probs = average_crops(self.level_probs, [ten_crop(pixels, size), ten_crop(seg_in, size, "nearest")])
        else:
            probs = self.level_probs(pixels, seg_in)
        return self.probs_to_prediction(probs, top_k, full)


def translocator_weights_info() -> WeightsInfo:
    return WeightsInfo(False, "no public TransLocator weights exist; train one with `geocore train translocator`",
                       "geocore train translocator")


@register_model(
    "translocator",
    description="TransLocator (ECCV 2022): RGB + segmentation dual-branch ViT-B/16, S2 geo-cell classification",
    weights_info=translocator_weights_info,
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
    Unset options come from the checkpoint, else `TransLocator.DEFAULTS` (combine="product")."""
    given = dict(num_cells=num_cells, scene_classes=scene_classes, backbone=backbone,
                 backbone_kwargs=backbone_kwargs, combine=combine, **cfg)
    model = build_cell_model(TransLocator, "translocator", pretrained=pretrained, partitions=partitions, given=given)
    return model.attach_segmenter(segmenter) if segmenter is not None else model
