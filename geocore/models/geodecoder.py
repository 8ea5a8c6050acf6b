"""GeoDecoder (Clark et al., CVPR 2023, "Where We Are and What We're Looking At: Query Based Worldwide Image
Geo-localization Using Hierarchies and Scenes").

A ViT encodes the image into tokens (B, N, C); a query decoder (`SceneHierarchyDecoder`) decodes one learned
query per (scene, hierarchy) pair — 16 scenes × 3 hierarchies = 48 queries — against them. Scene logits are
the mean over hierarchies of channel 0 of each scene's decoded queries (the paper's "highest average
confidence, denoted by the 0th channel"); the queries of the chosen scene feed the coarse / middle / fine
geo-cell classifiers. Prediction multiplies coarse and middle probabilities into the fine ones (the authors'
validation code; the `combine` option).

Defaults follow the authors' public code (AHKerrigan/GeoGuessNet: `networks.py` GeoGuess1, `lit.py`,
`config.py`): 6 decoder layers, 12 heads, MLP width 1024, no dropout in the decoder, linear heads; the loss of
its Lightning path, 0.5·CE_coarse + 0.3·CE_middle + 0.2·CE_fine with label smoothing 0.1 on the three geo-cell
terms, plus the unsmoothed scene cross-entropy (S16 labels) (`level_weights`, `label_smoothing`,
`scene_weight`); ten-crop (`prepare(image, tencrop=True)`): the shorter side to 256, ten 224 crops, logits
averaged, as its validation transform.

Scene routing (`teacher_forcing`): the authors route every image to the queries of its *predicted* scene, in
training as at inference (default here, False: it was the better of the two on geocore's synthetic scene
tasks, bench/faithfulness_compare.py and docs/faithfulness.md); True routes a training image to its *true*
scene's queries (labels from the CSV), so each scene's queries learn only from their own images.

The decoder differs from the authors' code on purpose: in `CustomTransformer1.forward` each layer starts again
from the (layer-normed) learned queries, `q = ln1(q); x = cross_attn(q, k, v) + q; ...`, and its output `x` is
never fed to the next layer, so only the last of the 6 layers reaches the heads (effectively one layer). Here
every layer refines the previous layer's queries (`SceneHierarchyDecoder`), the stack the paper describes.
Other differences: docs/faithfulness.md. No public weights: train with `geocore train geodecoder`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geocore.models.cell_classifier import CellClassifier, Probs, build_cell_model
from geocore.models.layers.decoder import SceneHierarchyDecoder
from geocore.models.layers.hierarchy import LEVELS, weighted_loss
from geocore.models.layers.vit import tokens_to_map
from geocore.models.registry import register_model, train_your_own
from geocore.models.vit_backbone import create_vit, vit_features, vit_grid, vit_preprocess


class GeoDecoder(CellClassifier):
    """ViT encoder + (scene × hierarchy) query decoder geo-cell classifier."""

    DEFAULTS: dict[str, Any] = {
        "num_cells": [3298, 7202, 12893],  # coarse, middle, fine
        "scene_classes": 16,  # Places365 S16; one query set per scene
        "backbone": "vit_base_patch16_224",  # any timm ViT, e.g. "vit_large_patch14_clip_224.openai"
        "backbone_kwargs": {},
        "decoder_dim": None,  # None: the backbone width; else image tokens are projected to it
        "decoder_depth": 6, "decoder_heads": 12, "decoder_mlp": 1024,
        "decoder_dropout": 0.0,  # GeoGuess1: CustomTransformer1(..., dropout=0.0)
        "dependent_depth": 0,  # extra hierarchy-dependent layers (paper's E); the public code has none
        "query_attention": "all",  # self-attention scope of the main layers: "all" | "hierarchy" | "scene"
        "teacher_forcing": False,  # True: in training, the true scene's queries where a label is known
        "combine": "product",
        "level_weights": [0.5, 0.3, 0.2],  # lit.py: opt.hier_hypers
        "label_smoothing": 0.1,  # lit.py: F.cross_entropy(..., label_smoothing=0.1) on the geo-cell terms
        "scene_weight": 1.0,
    }
    # training options of checkpoints saved before these defaults: they train on as they were trained
    LEGACY: dict[str, Any] = {"label_smoothing": 0.0}

    FREE_KEYS = CellClassifier.FREE_KEYS | {"level_weights", "scene_weight", "teacher_forcing", "decoder_dropout",
                                            "label_smoothing"}

    def __init__(self, config: Mapping[str, Any] | None = None, *, imagenet: bool = False) -> None:
        super().__init__(config or {})
        cfg = self.config
        self.backbone = create_vit(cfg["backbone"], cfg["backbone_kwargs"], imagenet=imagenet)
        width = self.backbone.embed_dim
        dim = cfg["decoder_dim"] or width
        self.in_proj = nn.Identity() if dim == width else nn.Linear(width, dim)
        self.decoder = SceneHierarchyDecoder(
            dim, scenes=cfg["scene_classes"], hierarchies=3, depth=cfg["decoder_depth"],
            heads=cfg["decoder_heads"], mlp_dim=cfg["decoder_mlp"], dependent_depth=cfg["dependent_depth"],
            scope=cfg["query_attention"], dropout=cfg["decoder_dropout"])
        self.heads = nn.ModuleList(nn.Linear(dim, n) for n in cfg["num_cells"])  # coarse, middle, fine
        self.image_size = int(self.backbone.patch_embed.img_size[0])  # square network input
        self.preprocess, mean, std = vit_preprocess(self.backbone)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def gradcam_layer(self) -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
        """The encoder's last block (the decoder attends to every token)."""
        grid, prefix = vit_grid(self.backbone)
        return self.backbone.blocks[-1], lambda t: tokens_to_map(t, grid, prefix)

    def fine_logits(self, pixels: torch.Tensor, **_: Any) -> torch.Tensor:
        """(B, n_fine) logits from the predicted scene's queries."""
        return self(pixels)["fine"]

    def forward_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> decoded queries (B, S, 3, D); the encoder at the current precision, the decoder in fp32."""
        tokens = vit_features(self.backbone, pixels)  # (B, N, C) incl. class token
        return self.decoder(self.in_proj(tokens))

    def forward(self, pixels: torch.Tensor, scene: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Logits coarse (B, n_c), middle (B, n_m), fine (B, n_f) from the selected scene's queries; scene
        logits (B, S); `selected` (B,) scene used: the label in `scene` where ≥ 0 (if teacher_forcing), else
        the predicted one; `queries` (B, S, 3, D)."""
        q = self.forward_features(pixels)  # (B, S, 3, D)
        scene_logits = q[..., 0].mean(-1)  # (B, S): channel 0 averaged over the hierarchies
        selected = scene_logits.argmax(-1)  # (B,)
        if scene is not None and self.config["teacher_forcing"]:
            scene = scene.to(selected.device).long()
            selected = torch.where(scene >= 0, scene, selected)
        chosen = q[torch.arange(q.shape[0], device=q.device), selected]  # (B, 3, D)
        out = {level: head(chosen[:, i]) for i, (level, head) in enumerate(zip(LEVELS, self.heads))}
        return {**out, "scene": scene_logits, "selected": selected, "queries": q}

    def loss(self, out: Mapping[str, torch.Tensor], coarse: torch.Tensor, middle: torch.Tensor,
             fine: torch.Tensor, scene: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Σ level_weights·CE over the levels (label smoothing `label_smoothing`) + scene_weight·CE_scene (not
        smoothed); each term and `total`; −1 ignored."""
        weights = dict(zip(LEVELS, map(float, self.config["level_weights"])), scene=float(self.config["scene_weight"]))
        smoothing = dict.fromkeys(LEVELS, float(self.config["label_smoothing"]))
        return weighted_loss(out, {"coarse": coarse, "middle": middle, "fine": fine, "scene": scene}, weights,
                             smoothing)

    def level_probs(self, pixels: torch.Tensor, **_: Any) -> Probs:
        out = self(pixels)
        return tuple(out[k].float().softmax(-1) for k in LEVELS)  # type: ignore[return-value]

    # predict: `CellClassifier.predict` (with ten crops each view selects its own scene; the logits are averaged)


@register_model(
    "geodecoder",
    description="GeoDecoder (CVPR 2023): ViT + scene × hierarchy query decoder, S2 geo-cell classification",
    weights_info=train_your_own("GeoDecoder", "geodecoder"),
)
def geodecoder(pretrained: str | None = None, partitions: Sequence[str | Path] | None = None,
               num_cells: Sequence[int] | None = None, scene_classes: int | None = None,
               backbone: str | None = None, backbone_kwargs: Mapping[str, Any] | None = None,
               combine: str | None = None, **cfg: Any) -> GeoDecoder:
    """pretrained: None (random init), "imagenet" (timm backbone weights from the local HF cache) or a
    checkpoint path. partitions: (coarse, middle, fine) cell CSVs. Unset options come from the checkpoint
    (options it predates: `GeoDecoder.LEGACY`), else `GeoDecoder.DEFAULTS` (combine="product")."""
    given = dict(num_cells=num_cells, scene_classes=scene_classes, backbone=backbone,
                 backbone_kwargs=backbone_kwargs, combine=combine, **cfg)
    return build_cell_model(GeoDecoder, "geodecoder", pretrained=pretrained, partitions=partitions, given=given)
