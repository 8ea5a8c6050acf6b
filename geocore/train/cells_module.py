"""Training of the geo-cell classifiers (TransLocator, GeoDecoder) as one LightningModule.

The loss is the model's own `loss(out, coarse, middle, fine, scene)` (cross-entropies, −1 labels ignored).
A batch of views per image (pixels (B, V, 3, H, W): the paper recipe's ten crops) runs as B·V images and
the views' logits are averaged before the loss, as TransLocator's authors train.
Batches without scene labels (no S3/S16/S365 column for the model's scene classes) skip the scene term; its
head then only gets a zero gradient, so every parameter stays in the graph and plain DDP works. Validation
logs the loss and top-1 accuracy within 25/200/750/2500 km of the predicted fine-cell centroid (the level
probabilities combined as the model predicts), plus fine-cell top-1 accuracy.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch

from geocore.metrics import accuracy_within
from geocore.geo.distance import haversine_km
from geocore.models.cell_classifier import CellClassifier
from geocore.models.layers.hierarchy import LEVELS
from geocore.models.layers.vit import average_views
from geocore.train.geoclip_module import batch_gps

VAL_THRESHOLDS_KM: tuple[int, ...] = (25, 200, 750, 2500)
SCHEDULES = ("cosine", "step", "none")
OPTIMIZERS = ("adamw", "sgd")


def is_translocator(model: Any) -> bool:
    """True for a TransLocator-like model: it takes a segmentation map next to the image."""
    return bool(model.needs_segmentation)


class CellModule(L.LightningModule):
    """Trains every parameter of a `CellClassifier` on `CellDataModule` batches.

    optimizer "adamw" (default) or "sgd" (with `momentum`); parameters with ≥ 2 dimensions get `weight_decay`
    and lr × lr_factors[0], biases and norms no decay and lr × lr_factors[1]. schedule "cosine": per step,
    linear warm-up over `warmup_epochs` (else `warmup_fraction` of the steps), then cosine down to
    lr × `min_lr_factor`; "step": × step_gamma every step_epochs; "none"."""

    def __init__(self, model: CellClassifier, *, lr: float = 1e-4, weight_decay: float = 0.05,
                 schedule: str = "cosine", warmup_fraction: float = 0.05, step_gamma: float = 0.5,
                 step_epochs: int = 10, optimizer: str = "adamw", momentum: float = 0.9,
                 lr_factors: tuple[float, float] = (1.0, 1.0), warmup_epochs: float | None = None,
                 min_lr_factor: float = 0.0) -> None:
        super().__init__()
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
        self.save_hyperparameters(ignore=["model"])
        self.model = model

    # --- pieces ---------------------------------------------------------------------------------

    def forward_batch(self, batch: dict[str, Any], teacher: bool) -> dict[str, torch.Tensor]:
        """The model's outputs for a batch (views' logits averaged); GeoDecoder gets the true scenes when
        `teacher` (training; used if its `teacher_forcing` is on)."""
        pixels = batch["image"]
        views = int(pixels.shape[1]) if pixels.dim() == 5 else 1
        if views > 1:
            pixels = pixels.flatten(0, 1)
        if is_translocator(self.model):
            seg = batch["seg"].long()
            out = self.model(pixels, self.model.prepare_seg(seg.flatten(0, 1) if views > 1 else seg,
                                                            pixels.shape[-2:]))
        else:
            scene = batch.get("scene") if teacher else None
            if scene is not None and views > 1:
                scene = torch.as_tensor(scene).repeat_interleave(views)
            out = self.model(pixels, scene=scene)
        if views > 1:
            out = {k: average_views(out[k], views) for k in (*LEVELS, "scene")}
        return out

    def batch_loss(self, out: dict[str, torch.Tensor], batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The model's loss; a head without labels (scene) joins with weight 0, for DDP."""
        labels = [batch[level].to(self.device).long() for level in LEVELS]
        scene = batch.get("scene")
        terms = self.model.loss(out, *labels, scene=None if scene is None else scene.to(self.device).long())
        if scene is None:
            terms["total"] = terms["total"] + out["scene"].float().sum() * 0.0
        return terms

    # --- Lightning hooks ------------------------------------------------------------------------

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        n = len(batch["img_id"])
        if n == 0:  # every image of the batch was unreadable: a zero loss reaching every parameter (DDP)
            loss = sum(p.sum() for p in self.model.parameters()) * 0.0
            terms = {"total": loss}
        else:
            terms = self.batch_loss(self.forward_batch(batch, teacher=True), batch)
            loss = terms["total"]
        size = max(1, n)
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=size, sync_dist=True)
        self.log_dict({f"train_{k}": v for k, v in terms.items() if k != "total"}, on_step=False, on_epoch=True,
                      batch_size=size, sync_dist=True)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        n = len(batch["img_id"])
        if n == 0:
            return
        out = self.forward_batch(batch, teacher=False)  # as at prediction time: the model picks the scene
        loss = self.batch_loss(out, batch)["total"]
        probs = tuple(out[level].float().softmax(-1) for level in LEVELS)
        top1 = self.model.probs_to_prediction(probs, top_k=1, full=False).top1  # (B, 2) fine-cell centroid
        err_km = haversine_km(top1.float(), batch_gps(batch, self.device))
        fine = batch["fine"].to(self.device)
        metrics: dict[str, Any] = {"val_loss": loss, "val_mean_km": err_km.mean()}
        metrics |= {f"val_acc_{r}km": v for r, v in accuracy_within(err_km, VAL_THRESHOLDS_KM).items()}
        labelled = fine >= 0
        if bool(labelled.any()):
            hit = (out["fine"].argmax(-1) == fine)[labelled].float().mean()
            self.log("val_fine_top1", hit, on_epoch=True, batch_size=int(labelled.sum()), sync_dist=True)
        self.log_dict(metrics, on_epoch=True, batch_size=n, sync_dist=True)

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        decay = [p for p in self.model.parameters() if p.requires_grad and p.dim() >= 2]
        no_decay = [p for p in self.model.parameters() if p.requires_grad and p.dim() < 2]  # biases, norms
        f_w, f_b = (float(f) for f in hp.lr_factors)
        groups = [{"params": decay, "weight_decay": hp.weight_decay, "lr": hp.lr * f_w},
                  {"params": no_decay, "weight_decay": 0.0, "lr": hp.lr * f_b}]
        if hp.optimizer == "sgd":
            opt: torch.optim.Optimizer = torch.optim.SGD(groups, lr=hp.lr, momentum=hp.momentum)
        else:
            opt = torch.optim.AdamW(groups, lr=hp.lr)
        if hp.schedule == "none":
            return opt
        if hp.schedule == "step":
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=hp.step_epochs, gamma=hp.step_gamma)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
        steps = max(1, int(self.trainer.estimated_stepping_batches))
        if hp.warmup_epochs is not None:
            warm = int(hp.warmup_epochs * steps / max(1, self.trainer.max_epochs or 1))
        else:
            warm = int(hp.warmup_fraction * steps)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(warm, steps, hp.min_lr_factor))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def warmup_cosine(warm: int, steps: int, floor: float = 0.0, start: float = 1e-3) -> Any:
    """Learning-rate factor per step: linear from `start` to 1 over `warm` steps, then a cosine from 1 down to
    `floor` at step `steps` (TransLocator's authors: 2 warm-up epochs, cosine to 0.001 of the base rate)."""

    def factor(step: int) -> float:
        if step < warm:
            return start + (1.0 - start) * step / warm
        t = min(1.0, (step - warm) / max(1, steps - warm))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))

    return factor
