"""TransLocator's two fusion layers (Pramanick et al., ECCV 2022, §3.2): multimodal feature fusion (MFF, Eq. 4),
a CLS-token exchange between the RGB (R) and segmentation (S) branches between transformer layers, and
attentive fusion of the two final CLS tokens (Eqs. 5–7)."""

from __future__ import annotations

import torch
from torch import nn

from geocore.errors import InputError

FUSION_MODES = ("replace", "add")
FUSION_PROJECTIONS = ("shared", "per_branch")


class CLSFusion(nn.Module):
    """Multimodal feature fusion after one transformer layer k (one instance per layer).

    Eq. 4 of the paper, with c_R, c_S the (B, C) CLS tokens of the two branches after layer k:

        u = f(c_R) + f(c_S),      c_R ← g(u),   c_S ← g(u)          (projections "shared", mode "replace")

    one projection f and one back-projection g (linear, with biases), shared by the branches as Eq. 4 writes
    them; both branches continue from the same fused CLS token, which the next layer's self-attention passes
    back to each branch's own patch tokens. Eq. 4 has no layer index on f, g; each layer has its own here.

    Options: projections "per_branch" (geocore before the paper was followed: u = P_R c_R + P_S c_S,
    c_R ← Q_R u, c_S ← Q_S u); mode "add", a residual variant (c_b ← c_b + g(u)). Initialisation (the paper
    gives none): f = I/2, g = I, zero biases, so an ImageNet backbone starts from the mean of the two CLS
    tokens ("we sum the CLS tokens", rescaled so the token's scale does not double at every layer); g = 0 in
    mode "add" (starts as no exchange).
    """

    def __init__(self, dim: int, mode: str = "replace", projections: str = "shared") -> None:
        super().__init__()
        if mode not in FUSION_MODES:
            raise InputError(f"fusion mode: expected one of {', '.join(FUSION_MODES)}, got {mode!r}")
        if projections not in FUSION_PROJECTIONS:
            raise InputError(f"fusion projections: expected one of {', '.join(FUSION_PROJECTIONS)}, "
                             f"got {projections!r}")
        self.mode, self.projections = mode, projections
        eye = torch.eye(dim)
        back = eye if mode == "replace" else torch.zeros(dim, dim)
        if projections == "shared":
            self.proj, self.back = nn.Linear(dim, dim), nn.Linear(dim, dim)  # f, g
            init = ((self.proj, eye / 2), (self.back, back))
        else:
            self.proj_r, self.proj_s = nn.Linear(dim, dim), nn.Linear(dim, dim)
            self.back_r, self.back_s = nn.Linear(dim, dim), nn.Linear(dim, dim)
            init = ((self.proj_r, eye / 2), (self.proj_s, eye / 2), (self.back_r, back), (self.back_s, back))
        with torch.no_grad():
            for lin, weight in init:
                lin.weight.copy_(weight)
                lin.bias.zero_()

    def forward(self, cls_r: torch.Tensor, cls_s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C), (B, C) -> the new (B, C) CLS tokens of the R and S branches."""
        if self.projections == "shared":
            fused = self.back(self.proj(cls_r) + self.proj(cls_s))  # g(f(c_R) + f(c_S)), (B, C)
            new_r, new_s = fused, fused
        else:
            u = self.proj_r(cls_r) + self.proj_s(cls_s)  # (B, C)
            new_r, new_s = self.back_r(u), self.back_s(u)
        if self.mode == "add":
            return cls_r + new_r, cls_s + new_s
        return new_r, new_s


class AttentiveFusion(nn.Module):
    """Attentive fusion of the final CLS tokens into one (B, 2C) feature (Eqs. 5–7).

        a_b = W2_b · tanh(W1_b · c_b)        per branch b ∈ {R, S}; W1_b: C → hidden (8), W2_b: hidden → 1
        w   = softmax([a_R, a_S])            over the two branches, so w_R + w_S = 1
        f   = [(1 + w_R) · c_R ; (1 + w_S) · c_S]

    The dense layers are Table 0.A.2's "[768, 8, 1]"; the paper names no activation (tanh here) and does not
    say whether the two branches share them (they do not here).
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
