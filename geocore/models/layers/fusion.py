"""TransLocator's two fusion layers (Pramanick et al., ECCV 2022): per-layer CLS-token exchange between the
RGB (R) and segmentation (S) branches, and attentive fusion of the two final CLS tokens."""

from __future__ import annotations

import torch
from torch import nn

from geocore.errors import InputError


class CLSFusion(nn.Module):
    """Multimodal feature fusion after one transformer layer l (one instance per layer).

    With c_R, c_S the (B, C) CLS tokens of the two branches after layer l:

        u   = P_R · c_R + P_S · c_S          (project each into a shared space and sum)
        c_R ← Q_R · u,    c_S ← Q_S · u      (project back into each branch; mode "replace")

    P_*, Q_* are linear layers with biases, separate per branch and per layer. Mode "add" instead adds the
    back-projection to the branch's own token (c_R ← c_R + Q_R · u), a residual variant. The patch tokens are
    untouched; the next layer's self-attention spreads the exchanged information to them. Initialisation:
    P_R = P_S = I/2, Q_* = I (zero biases) in "replace" mode, so an ImageNet backbone starts from the mean of the
    two CLS tokens rather than from a random rotation of them; Q_* = 0 in "add" mode (starts as no exchange).
    """

    def __init__(self, dim: int, mode: str = "replace") -> None:
        super().__init__()
        if mode not in ("replace", "add"):
            raise InputError(f"fusion mode: expected 'replace' or 'add', got {mode!r}")
        self.mode = mode
        self.proj_r, self.proj_s = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.back_r, self.back_s = nn.Linear(dim, dim), nn.Linear(dim, dim)
        with torch.no_grad():
            eye = torch.eye(dim)
            back = eye if mode == "replace" else torch.zeros(dim, dim)
            for lin, weight in ((self.proj_r, eye / 2), (self.proj_s, eye / 2), (self.back_r, back),
                                (self.back_s, back)):
                lin.weight.copy_(weight)
                lin.bias.zero_()

    def forward(self, cls_r: torch.Tensor, cls_s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C), (B, C) -> the new (B, C) CLS tokens of the R and S branches."""
        u = self.proj_r(cls_r) + self.proj_s(cls_s)  # (B, C) shared
        if self.mode == "add":
            return cls_r + self.back_r(u), cls_s + self.back_s(u)
        return self.back_r(u), self.back_s(u)


class AttentiveFusion(nn.Module):
    """Attentive fusion of the final CLS tokens into one (B, 2C) feature.

        a_b = W2_b · tanh(W1_b · c_b)        per branch b ∈ {R, S}; W1_b: C → hidden (8), W2_b: hidden → 1
        w   = softmax([a_R, a_S])            over the two branches, so w_R + w_S = 1
        f   = [(1 + w_R) · c_R ; (1 + w_S) · c_S]
    """

    def __init__(self, dim: int, hidden: int = 8) -> None:
        super().__init__()
        self.score_r = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        self.score_s = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, cls_r: torch.Tensor, cls_s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C), (B, C) -> fused (B, 2C), branch weights (B, 2) summing to 1."""
        w = torch.cat([self.score_r(cls_r), self.score_s(cls_s)], dim=-1).softmax(-1)  # (B, 2)
        fused = torch.cat([(1 + w[:, :1]) * cls_r, (1 + w[:, 1:]) * cls_s], dim=-1)  # (B, 2C)
        return fused, w
