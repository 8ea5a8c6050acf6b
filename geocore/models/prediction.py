"""`Prediction`: what every model returns and what the app, CLI, notebooks and evaluation consume."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Prediction:
    """Top-k locations for a batch of B images, and optionally the full distribution.

    coords:     (B, k, 2) top-k (lat, lon) degrees, best first
    probs:      (B, k) their probabilities
    candidates: (M, 2) the points the model scores (GPS gallery or geo-cell centroids), if known
    probs_full: (B, M) probability of every candidate, when asked for (heatmaps)
    indices:    (B, k) top-k positions in `candidates`
    outside_mass:  (B,) galleries searched through the approximate index (`geocore.models.ann_index`): the
                   estimated probability outside the retrieved points (`probs` then sum to at most 1 − it)
    outside_bound: (B,) the most that mass can be (every point outside scores at most the last retrieved one)
    """

    coords: torch.Tensor
    probs: torch.Tensor
    candidates: torch.Tensor | None = None
    probs_full: torch.Tensor | None = None
    indices: torch.Tensor | None = None
    outside_mass: torch.Tensor | None = None
    outside_bound: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.coords.shape[0]

    @property
    def top1(self) -> torch.Tensor:
        """(B, 2) best guess per image."""
        return self.coords[:, 0]

    def __getitem__(self, i: int | slice) -> "Prediction":
        """The prediction of image(s) `i`, keeping the batch dimension."""
        sl = slice(i, i + 1) if isinstance(i, int) else i
        return Prediction(
            coords=self.coords[sl],
            probs=self.probs[sl],
            candidates=self.candidates,
            probs_full=None if self.probs_full is None else self.probs_full[sl],
            indices=None if self.indices is None else self.indices[sl],
            outside_mass=None if self.outside_mass is None else self.outside_mass[sl],
            outside_bound=None if self.outside_bound is None else self.outside_bound[sl],
        )

    @classmethod
    def from_scores(
        cls, logits: torch.Tensor, candidates: torch.Tensor, top_k: int, *, full: bool = False
    ) -> "Prediction":
        """Softmax over (B, M) logits against (M, 2) candidates, then top-k."""
        if not 1 <= top_k <= candidates.shape[0]:
            raise ValueError(f"top_k must be between 1 and {candidates.shape[0]}, got {top_k}")
        probs = logits.float().softmax(dim=-1)
        top = probs.topk(top_k, dim=-1)
        return cls(
            coords=candidates[top.indices],
            probs=top.values,
            candidates=candidates,
            probs_full=probs if full else None,
            indices=top.indices,
        )
