"""GeoCLIP training (NeurIPS 2023, §3) as a LightningModule.

The CLIP image tower stays frozen (eval mode, no gradients); the image MLP, the location encoder and
`logit_scale` train. Loss: cross-entropy of image→GPS logits over the batch's GPS plus a queue of GPS
from past batches as extra negatives, as the `geoclip` package's `train()` does. The heads always run
in float32 (autocast off): random Fourier features at σ = 2^8 have phases in the thousands of radians,
which bf16 would turn into noise; only the frozen backbone uses bf16 under `bf16-mixed`.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from geocore.geo.distance import haversine_km
from geocore.models.geoclip import GeoCLIP

VAL_THRESHOLDS_KM: tuple[int, ...] = (25, 200, 750, 2500)
METRES_PER_DEGREE = 111_132.954  # of latitude


class GPSQueue(nn.Module):
    """A ring buffer of past (lat, lon) GPS, used as extra negatives.

    `negatives()` returns only filled slots: unlike the reference, which starts from random points
    near (0°, 0°), no made-up location is ever a negative. The buffers are saved in Lightning
    checkpoints, so a resumed run continues with its queue.
    """

    def __init__(self, size: int) -> None:
        super().__init__()
        if size < 0:
            raise ValueError(f"queue size must be >= 0, got {size}")
        self.size = size
        self.register_buffer("coords", torch.zeros(size, 2))  # (Q, 2) lat, lon
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))  # next slot to write
        self.register_buffer("count", torch.zeros((), dtype=torch.long))  # filled slots, <= Q

    def negatives(self) -> torch.Tensor:
        """(n, 2) the queued GPS; slots [0, count) are the filled ones (the ring fills from 0)."""
        return self.coords[: int(self.count)]

    @torch.no_grad()
    def enqueue(self, gps: torch.Tensor) -> None:
        """Write (B, 2) GPS at the pointer, wrapping around; a batch longer than the queue keeps its last Q."""
        n, size = gps.shape[0], self.size
        if n == 0 or size == 0:
            return
        gps = gps.to(self.coords)
        if n >= size:
            self.coords.copy_(gps[-size:])
            self.ptr.zero_()
            self.count.fill_(size)
            return
        start, end = int(self.ptr), int(self.ptr) + n
        if end <= size:
            self.coords[start:end] = gps
        else:
            first = size - start
            self.coords[start:] = gps[:first]
            self.coords[: end - size] = gps[first:]
        self.ptr.fill_(end % size)
        self.count.fill_(min(int(self.count) + n, size))


def add_gps_noise(latlon: torch.Tensor, std_m: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """(N, 2) GPS jittered by Gaussian noise of `std_m` metres (east/north), latitude clamped, longitude wrapped."""
    if std_m <= 0 or latlon.shape[0] == 0:
        return latlon
    noise = torch.randn(latlon.shape, generator=generator, device=latlon.device) * std_m
    lat = (latlon[:, 0] + noise[:, 0] / METRES_PER_DEGREE).clamp(-90.0, 90.0)
    cos_lat = torch.cos(torch.deg2rad(latlon[:, 0])).clamp_min(1e-3)
    lon = torch.remainder(latlon[:, 1] + noise[:, 1] / (METRES_PER_DEGREE * cos_lat) + 180.0, 360.0) - 180.0
    return torch.stack([lat, lon], dim=1)


def batch_gps(batch: dict[str, Any], device: torch.device) -> torch.Tensor:
    """(B, 2) float32 (lat, lon) of a batch; (0, 2) when every item of the batch failed to load."""
    if len(batch["lat"]) == 0:
        return torch.zeros(0, 2, device=device)
    return torch.stack([torch.as_tensor(batch["lat"]), torch.as_tensor(batch["lon"])], dim=1).float().to(device)


class GeoCLIPModule(L.LightningModule):
    """Trains a `GeoCLIP` model's heads on batches of images (`"image"`) or cached backbone features (`"features"`)."""

    def __init__(self, model: GeoCLIP, *, lr: float = 3e-5, weight_decay: float = 1e-6, queue_size: int = 4096,
                 queue_noise_m: float = 0.0, schedule: str = "step", step_gamma: float = 0.87,
                 max_logit_scale: float = math.log(100.0), gallery: torch.Tensor | None = None) -> None:
        super().__init__()
        if schedule not in ("step", "cosine", "none"):
            raise ValueError(f"schedule must be 'step', 'cosine' or 'none', got {schedule!r}")
        self.save_hyperparameters(ignore=["model", "gallery"])
        self.model = model
        self.queue = GPSQueue(queue_size)
        self.val_gallery = gallery  # (M, 2) candidates for validation accuracy; None: the model's gallery
        self.strict_loading = False  # Lightning checkpoints leave out the frozen backbone (see on_save_checkpoint)
        self._gallery_emb: torch.Tensor | None = None
        self._gallery_pts: torch.Tensor | None = None

    # --- pieces ---------------------------------------------------------------------------------

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [*self.model.mlp.parameters(), *self.model.location_encoder.parameters(), self.model.logit_scale]

    def image_features(self, batch: dict[str, Any]) -> torch.Tensor:
        """(B, 768) backbone features: cached ones, or the frozen backbone run without gradients."""
        if "features" in batch:
            return batch["features"].float()
        with torch.no_grad():
            return self.model.forward_features(batch["image"]).float()

    def logits(self, features: torch.Tensor, locations: torch.Tensor) -> torch.Tensor:
        """(B, M) logit_scale · cos(image, GPS) for backbone features against (M, 2) locations, in float32."""
        with torch.autocast(self.device.type, enabled=False):
            img = F.normalize(self.model.mlp(features.float()), dim=-1)  # (B, 512)
            loc = F.normalize(self.model.location_encoder(locations.float()), dim=-1)  # (M, 512)
            return self.model.logit_scale.exp() * img @ loc.T

    def contrastive_loss(self, features: torch.Tensor, gps: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of each image against the batch's GPS plus the queued ones (its own GPS is the target)."""
        candidates = torch.cat([gps, self.queue.negatives().to(gps)])  # (B + n, 2)
        targets = torch.arange(gps.shape[0], device=gps.device)
        return F.cross_entropy(self.logits(features, candidates), targets)

    def _gather_gps(self, gps: torch.Tensor) -> torch.Tensor:
        """Every rank's batch GPS (ranks may hold different counts), so all ranks keep the same queue."""
        if self._trainer is None or self.trainer.world_size == 1:
            return gps
        counts = self.all_gather(torch.tensor([gps.shape[0]], device=self.device)).flatten()
        padded = gps.new_zeros(int(counts.max()), 2)
        padded[: gps.shape[0]] = gps
        every = self.all_gather(padded)  # (W, max, 2)
        return torch.cat([every[r, : int(c)] for r, c in enumerate(counts)])

    # --- Lightning hooks ------------------------------------------------------------------------

    def on_train_epoch_start(self) -> None:
        self.model.clip.eval()  # frozen: no dropout, no batch-stat updates

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        gps = batch_gps(batch, self.device)
        if gps.shape[0] == 0:  # a batch of unreadable images: a zero loss that still reaches every parameter (DDP)
            loss = sum(p.sum() for p in self.trainable_parameters()) * 0.0
        else:
            loss = self.contrastive_loss(self.image_features(batch), gps)
        self.queue.enqueue(add_gps_noise(self._gather_gps(gps), self.hparams.queue_noise_m))
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=max(1, gps.shape[0]),
                 sync_dist=True)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        with torch.no_grad():  # as CLIP: the temperature may not drop below 1/100
            self.model.logit_scale.clamp_(0.0, self.hparams.max_logit_scale)

    def on_validation_epoch_start(self) -> None:
        pts = self.val_gallery if self.val_gallery is not None else self.model.gallery
        self._gallery_pts = pts.to(self.device, torch.float32)
        with torch.autocast(self.device.type, enabled=False):
            self._gallery_emb = self.model.location_encoder.embed(self._gallery_pts)  # (M, 512)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        gps = batch_gps(batch, self.device)
        n = gps.shape[0]
        if n == 0:
            return
        feats = self.image_features(batch)
        loss = F.cross_entropy(self.logits(feats, gps), torch.arange(n, device=self.device))  # batch-only negatives
        with torch.autocast(self.device.type, enabled=False):
            img = F.normalize(self.model.mlp(feats.float()), dim=-1)
            top1 = (img @ self._gallery_emb.T).argmax(dim=-1)  # (B,)
        err_km = haversine_km(self._gallery_pts[top1], gps)  # (B,)
        metrics = {"val_loss": loss, "val_mean_km": err_km.mean()}
        metrics |= {f"val_acc_{r}km": (err_km <= r).float().mean() for r in VAL_THRESHOLDS_KM}
        self.log_dict(metrics, on_epoch=True, prog_bar=False, batch_size=n, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        self._gallery_emb = self._gallery_pts = None

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        opt = torch.optim.AdamW(self.trainable_parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.schedule == "none":
            return opt
        if hp.schedule == "step":  # the reference steps its scheduler once per epoch
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=hp.step_gamma)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
        steps = max(1, int(self.trainer.estimated_stepping_batches))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # the frozen backbone never changes: rebuilt from `pretrained` on resume, not stored 20 times
        sd = checkpoint["state_dict"]
        for key in [k for k in sd if k.startswith("model.clip.")]:
            del sd[key]
