"""GeoDecoder's query decoder (Clark et al., CVPR 2023): one learned query per (scene, hierarchy) pair that
reads the image tokens by cross-attention.

Queries are laid out (S scenes, H hierarchies) and flattened scene-major to L = S·H tokens. Each block:

    q = q + CrossAttn(LN(q), LN(image tokens))       queries read the image
    q = q + SelfAttn(LN(q))                          queries exchange information (masked, see below)
    q = q + MLP(LN(q))                               one MLP for all queries, or one per hierarchy

Self-attention scope: "all" (every query sees every query, the authors' hierarchy-independent layers),
"hierarchy" (only queries of the same hierarchy, across scenes: the paper's hierarchy-dependent layers, which
also use a separate MLP per hierarchy), or "scene" (only the queries of the same scene, which makes the scenes
fully independent of each other).
"""

from __future__ import annotations

import torch
from torch import nn

from geocore.errors import InputError

SCOPES = ("all", "hierarchy", "scene")


def query_attn_mask(scenes: int, hierarchies: int, scope: str) -> torch.Tensor | None:
    """(L, L) boolean mask for `nn.MultiheadAttention` (True = may not attend), or None for "all"."""
    if scope not in SCOPES:
        raise InputError(f"query attention scope: expected one of {', '.join(SCOPES)}, got {scope!r}")
    if scope == "all":
        return None
    idx = torch.arange(scenes * hierarchies)
    key = idx % hierarchies if scope == "hierarchy" else idx // hierarchies  # scene-major layout
    return key[:, None] != key[None, :]


class MLP(nn.Sequential):
    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim),
                         nn.Dropout(dropout))


class QueryDecoderBlock(nn.Module):
    """Cross-attention → self-attention → MLP, pre-norm with residuals, on (B, L, D) queries."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, *, scenes: int, hierarchies: int,
                 scope: str = "all", per_hierarchy_mlp: bool = False, dropout: float = 0.1) -> None:
        super().__init__()
        self.hierarchies = hierarchies
        self.norm_q, self.norm_kv = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.cross = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm_self = nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm_mlp = nn.LayerNorm(dim)
        n_mlp = hierarchies if per_hierarchy_mlp else 1
        self.mlps = nn.ModuleList(MLP(dim, mlp_dim, dropout) for _ in range(n_mlp))
        self.drop = nn.Dropout(dropout)
        mask = query_attn_mask(scenes, hierarchies, scope)
        self.register_buffer("attn_mask", mask if mask is not None else torch.zeros(0, dtype=torch.bool),
                             persistent=False)

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.mlps) == 1:
            return self.mlps[0](x)
        b, n, d = x.shape  # (B, S*H, D), scene-major
        x = x.view(b, n // self.hierarchies, self.hierarchies, d)
        return torch.stack([mlp(x[:, :, h]) for h, mlp in enumerate(self.mlps)], dim=2).view(b, n, d)

    def forward(self, q: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """q (B, L, D) queries, memory (B, N, D) image tokens -> (B, L, D)."""
        kv = self.norm_kv(memory)
        h = self.norm_q(q)
        q = q + self.drop(self.cross(h, kv, kv, need_weights=False)[0])
        h = self.norm_self(q)
        mask = self.attn_mask if self.attn_mask.numel() else None
        q = q + self.drop(self.self_attn(h, h, h, attn_mask=mask, need_weights=False)[0])
        return q + self._mlp(self.norm_mlp(q))


class SceneHierarchyDecoder(nn.Module):
    """Learned (S, H, D) queries decoded against image tokens: `depth` blocks with self-attention scope
    `scope`, then `dependent_depth` hierarchy-dependent blocks, then a final LayerNorm."""

    def __init__(self, dim: int, *, scenes: int = 16, hierarchies: int = 3, depth: int = 6, heads: int = 12,
                 mlp_dim: int = 1024, dependent_depth: int = 0, scope: str = "all", dropout: float = 0.1) -> None:
        super().__init__()
        if dim % heads:
            raise InputError(f"decoder: width {dim} is not divisible by {heads} heads")
        self.scenes, self.hierarchies = scenes, hierarchies
        self.queries = nn.Parameter(torch.randn(scenes, hierarchies, dim) * 0.02)  # (S, H, D)
        common = dict(scenes=scenes, hierarchies=hierarchies, dropout=dropout)
        self.blocks = nn.ModuleList(
            [QueryDecoderBlock(dim, heads, mlp_dim, scope=scope, **common) for _ in range(depth)]
            + [QueryDecoderBlock(dim, heads, mlp_dim, scope="hierarchy", per_hierarchy_mlp=True, **common)
               for _ in range(dependent_depth)])
        self.norm = nn.LayerNorm(dim)

    def forward(self, memory: torch.Tensor) -> torch.Tensor:
        """memory (B, N, D) image tokens -> decoded queries (B, S, H, D)."""
        b = memory.shape[0]
        q = self.queries.reshape(1, -1, self.queries.shape[-1]).expand(b, -1, -1)  # (B, S*H, D)
        for block in self.blocks:
            q = block(q, memory)
        return self.norm(q).view(b, self.scenes, self.hierarchies, -1)
