"""Classifier heads of the geo-cell models.

TransLocator's supplement (Table 0.A.2, "#dim for classification FC") gives the heads as layer widths:
coarse [768, 3298], middle [768, 3000, 7202], fine [768, 6000, 12893], scene [768, 3/16/365], i.e. a linear
coarse head and one hidden layer of 3000 / 6000 units for the middle / fine heads; §4.4: "The weights of the
classifier heads are randomly initialized with a zero-mean Gaussian distribution with a standard deviation of
0.02". The activation between the two layers is not given: GELU here, as in the ViT's own MLPs.
"""

from __future__ import annotations

from torch import nn

HEAD_INIT_STD = 0.02


def classifier_head(in_dim: int, out_dim: int, hidden: int = 0, std: float = HEAD_INIT_STD) -> nn.Module:
    """Linear (hidden 0), or Linear → GELU → Linear; weights N(0, std²), biases 0.

    A linear head is a bare `nn.Linear` (state-dict keys `weight`, `bias`), so checkpoints with linear heads
    load into it unchanged."""
    head: nn.Module = (nn.Linear(in_dim, out_dim) if hidden <= 0
                       else nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim)))
    for m in head.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=std)
            nn.init.zeros_(m.bias)
    return head
