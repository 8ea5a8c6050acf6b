"""Training of the geo-cell classifiers (TransLocator, GeoDecoder) as one LightningModule.

The loss is the model's own `loss(out, coarse, middle, fine, scene)` (cross-entropies, −1 labels ignored).
Batches without scene labels (no S3/S16/S365 column for the model's scene classes) skip the scene term; its
head then only gets a zero gradient, so every parameter stays in the graph and plain DDP works. Validation
logs the loss and top-1 accuracy within 25/200/750/2500 km of the predicted fine-cell centroid (the level
probabilities combined as the model predicts), plus fine-cell top-1 accuracy.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from geocore.eval.metrics import accuracy_within
from geocore.geo.distance import haversine_km
from geocore.models.cell_classifier import CellClassifier
from geocore.models.layers.hierarchy import LEVELS
from geocore.train.geoclip_module import batch_gps

VAL_THRESHOLDS_KM: tuple[int, ...] = (25, 200, 750, 2500)
SCHEDULES = ("cosine", "step", "none")


def is_translocator(model: Any) -> bool:
    """True for a TransLocator-like model: it takes a segmentation map next to the image."""
    return bool(model.needs_segmentation)


class CellModule(L.LightningModule):
    """Trains every parameter of a `CellClassifier` on `CellDataModule` batches (AdamW)."""

    def __init__(self, model: CellClassifier, *, lr: float = 1e-4, weight_decay: float = 0.05,
                 schedule: str = "cosine", warmup_fraction: float = 0.05, step_gamma: float = 0.5,
                 step_epochs: int = 10) -> None:
        super().__init__()
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
        self.save_hyperparameters(ignore=["model"])
        self.model = model

    # --- pieces ---------------------------------------------------------------------------------

    def forward_batch(self, batch: dict[str, Any], teacher: bool) -> dict[str, torch.Tensor]:
        """The model's outputs for a batch; GeoDecoder gets the true scenes when `teacher` (training)."""
        pixels = batch["image"]
        if is_translocator(self.model):
            return self.model(pixels, self.model.prepare_seg(batch["seg"].long(), pixels.shape[-2:]))
        scene = batch.get("scene") if teacher else None
        return self.model(pixels, scene=scene)

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
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": hp.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=hp.lr)
        if hp.schedule == "none":
            return opt
        if hp.schedule == "step":
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=hp.step_epochs, gamma=hp.step_gamma)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
        steps = max(1, int(self.trainer.estimated_stepping_batches))
        warm = int(hp.warmup_fraction * steps)
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps - warm))
        if warm > 0:
            ramp = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1e-3, total_iters=warm)
            cosine = torch.optim.lr_scheduler.SequentialLR(opt, [ramp, cosine], milestones=[warm])
        return {"optimizer": opt, "lr_scheduler": {"scheduler": cosine, "interval": "step"}}
