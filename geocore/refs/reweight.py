"""Fold a photo's nearest reference photos into the model's distribution.

For a query with neighbours k = 1..K (similarity s_k, GPS r_k) the references' evidence at x is

    L(x) = 1 + Σ_k a_k · κ(d(x, r_k)),   a_k = exp((t_k − t_0) / τ),   t_k = (s_k − s_c) / (1 − s_c),

and the fused distribution p(x) ∝ p_model(x) · L(x)^W, κ(d) = exp(−d / ℓ) (great-circle d). This is the starting
point p ∝ p_model · (ε + Σ w_k κ)^W with softmax weights w_k = softmax(s_k / τ) and a per-query ε, so that the
weights are measured against chance rather than normalised away: s_c is the set's chance similarity (how similar
the best unrelated look-alike in the set typically is, in its manifest), so t = 0 is "as similar as an unrelated
photo can be by chance" and t = 1 "identical", in any model's embedding space and for any set size; t_0 is how far
above chance a neighbour must be to count. A query whose neighbours are no more similar than chance has L ≈ 1
everywhere: its answer stays the model's.

The references' own positions join the candidates, so an answer can be as fine as the references: the gallery
distribution (`probs_full`, what search regions and calibration use) is re-weighted by L^W, and the top-k is
taken over gallery ∪ references ∪ refined points. A reference's position scores at least the fused mass its
kernel gathers from the gallery around it (log Σ_g p(g) κ(d(g, x))), so a near-duplicate answers at its
reference, not at a gallery point a few km off. A reference or refined point x also starts from its nearest gallery
point n(x) (whose probability carries any text hint); a refined point adds the model's own finer score
logit(x) − logit(n(x)) (GeoCLIP's location encoder). References do not: a reference's position is what the
photos say, and far from every gallery point (an island, open sea) the model's logits compare unlike areas.

Defaults (K, W, t_0, τ, ℓ) were chosen by measurement on stand-ins built from the real GeoCLIP heads
(bench/bench_refs.py, bench/RESULTS.md "Reference photos").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from geocore.errors import InputError
from geocore.geo.distance import EARTH_RADIUS_KM
from geocore.models.prediction import Prediction
from geocore.tensors import on_cpu

PointLogits = Callable[[torch.Tensor], torch.Tensor]  # (B, P, 2) lat/lon → (B, P) the model's logits there
SAME_KM = 0.01  # candidates this close are one answer in the top-k
CHUNK = 1_048_576  # gallery points per distance block


@dataclass(frozen=True)
class FusionParams:
    """K neighbours, weight W, threshold t_0 and temperature τ (on the chance → identical scale t), kernel scale ℓ
    (km). See the module docstring; defaults measured in bench/bench_refs.py."""

    k: int = 5
    weight: float = 2.0
    t0: float = 0.2  # best in the sweep: 0.0, by 0.2 points (noise); 0.2 keeps chance-level neighbours out
    tau: float = 0.05
    scale_km: float = 5.0

    @classmethod
    def from_options(cls, k: int | None = None, weight: float | None = None) -> "FusionParams":
        """The fusion asked for (`--refs-k`, `--refs-weight`; None: the measured defaults), checked."""
        return cls(k=cls.k if k is None else int(k), weight=cls.weight if weight is None else float(weight)).check()

    def check(self) -> "FusionParams":
        if not (isinstance(self.k, int) and 1 <= self.k <= 64):
            raise InputError(f"refs_k: expected a whole number of neighbours in 1..64, got {self.k}")
        for name, v in (("refs_weight", self.weight), ("tau", self.tau), ("scale_km", self.scale_km)):
            if not (math.isfinite(v) and v >= 0) or (name != "refs_weight" and v == 0):
                raise InputError(f"{name}: expected a finite number {'>= 0' if name == 'refs_weight' else '> 0'}, "
                                 f"got {v}")
        return self


def log_evidence(sims: torch.Tensor, chance: float, params: FusionParams) -> torch.Tensor:
    """(B, K) log a_k = (t_k − t_0) / τ, t_k = (s_k − s_c) / (1 − s_c), from similarities and the set's chance
    similarity s_c; −inf where there is no neighbour."""
    t = (sims.double() - chance) / max(1.0 - chance, 1e-3)
    return torch.where(torch.isfinite(sims), (t - params.t0) / params.tau, torch.tensor(-math.inf, dtype=torch.float64))


def _unit(latlon: torch.Tensor) -> torch.Tensor:
    r = torch.deg2rad(latlon.double())
    return torch.stack([r[..., 0].cos() * r[..., 1].cos(), r[..., 0].cos() * r[..., 1].sin(), r[..., 0].sin()], -1)


def _km(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Great-circle km between unit vectors u (B, P, 3) and v (B, Q, 3) or (Q, 3) → (B, P, Q)."""
    dots = u @ (v.transpose(-1, -2) if v.dim() == 3 else v.T)
    return EARTH_RADIUS_KM * torch.arccos(dots.clamp(-1.0, 1.0))


def log_support(points: torch.Tensor, refs_latlon: torch.Tensor, log_a: torch.Tensor,
                scale_km: float) -> torch.Tensor:
    """log L at each point: points (B, P, 2) or (P, 2) shared, refs (B, K, 2), log_a (B, K) → (B, P)."""
    shared = points.dim() == 2
    u_ref = _unit(refs_latlon)  # (B, K, 3)
    out = []
    for start in range(0, points.shape[-2], CHUNK):
        u = _unit(points[..., start:start + CHUNK, :])
        d = _km(u_ref, u) if shared else _km(u_ref, u).reshape(u_ref.shape[0], u_ref.shape[1], -1)  # (B, K, P)
        terms = log_a[..., None] - d / scale_km  # (B, K, P)
        zero = torch.zeros_like(terms[:, :1])
        out.append(torch.logsumexp(torch.cat([zero, terms], 1), 1))  # log(1 + Σ_k a_k κ)
    return torch.cat(out, 1)


def _nearest(points: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """(B, P) index of the nearest candidate to each point (chunks of candidates)."""
    u = _unit(points)
    best_d = torch.full(points.shape[:2], math.inf, dtype=torch.float64)
    best_i = torch.zeros(points.shape[:2], dtype=torch.long)
    for start in range(0, candidates.shape[0], CHUNK):
        d = _km(u, _unit(candidates[start:start + CHUNK].cpu()))
        m, i = d.min(-1)
        better = m < best_d
        best_d, best_i = torch.where(better, m, best_d), torch.where(better, i + start, best_i)
    return best_i


def reweight(coarse: Prediction, refs_latlon: torch.Tensor, log_a: torch.Tensor, params: FusionParams,
             top_k: int) -> Prediction:
    """The coarse prediction re-weighted by L^W: same candidates, a full distribution (search regions and
    calibration use it), its top-k. coarse needs `probs_full` (B, M) (a text hint already applied); refs_latlon
    (B, K, 2) and log_a (B, K) are each query's neighbours and their log evidence (`log_evidence`)."""
    if coarse.probs_full is None or coarse.candidates is None:
        raise InputError("reference photos need the full distribution: predict with full=True")
    cand, log_p = _cpu_log_probs(coarse)  # (M, 2), (B, M)
    scores = log_p + params.weight * log_support(cand, _placed(refs_latlon, log_a), log_a.double(), params.scale_km)
    probs_full = scores.softmax(-1).float()
    top = probs_full.topk(top_k, dim=-1)
    return Prediction(coords=coarse.candidates[top.indices.to(coarse.candidates.device)], probs=top.values,
                      candidates=coarse.candidates, probs_full=probs_full.to(coarse.probs_full.device),
                      indices=top.indices)


def _cpu_log_probs(pred: Prediction) -> tuple[torch.Tensor, torch.Tensor]:
    """(candidates (M, 2), log probs_full (B, M)), float64 on the CPU."""
    log_p = on_cpu(pred.probs_full, torch.float64).clamp_min(torch.finfo(torch.float64).tiny).log()
    return on_cpu(pred.candidates, torch.float64), log_p


def _placed(refs_latlon: torch.Tensor, log_a: torch.Tensor) -> torch.Tensor:
    """Missing neighbours (log_a = −inf, any position) moved to (0, 0): their term is zero anyway."""
    refs_latlon = refs_latlon.double().cpu()
    return torch.where(torch.isfinite(log_a.cpu())[..., None], refs_latlon, torch.zeros_like(refs_latlon))


def _kernel_mass(points: torch.Tensor, cand: torch.Tensor, log_p: torch.Tensor, scale_km: float) -> torch.Tensor:
    """(B, P) log Σ_g p(g) κ(d(g, x)): the fused mass a reference's position gathers from the gallery points
    around it. A near-duplicate pulls the mass into a few km around its reference; without this the reference
    would compete with each of those gallery points one by one and could lose to one a few km off."""
    u = _unit(points)
    out = torch.full(points.shape[:2], -math.inf, dtype=torch.float64)
    for start in range(0, cand.shape[0], CHUNK):
        d = _km(u, _unit(cand[start:start + CHUNK]))  # (B, P, m)
        block = torch.logsumexp(log_p[:, None, start:start + CHUNK] - d / scale_km, -1)
        out = torch.logaddexp(out, block)
    return out


def fine_top_k(fused: Prediction, refs_latlon: torch.Tensor, log_a: torch.Tensor, params: FusionParams,
               top_k: int, *, extra_points: torch.Tensor | None = None,
               point_logits: PointLogits | None = None) -> Prediction:
    """The top-k over gallery ∪ references ∪ `extra_points` (B, P, 2) (e.g. refined points), one answer per
    place, from the re-weighted prediction `fused` (`reweight`). A reference x scores
    log p_fused(n(x)) + W · (log L(x) − log L(n(x))), n(x) its nearest gallery point: it refines the model's
    belief in n(x)'s area by the references alone; an extra point also gets logit(x) − logit(n(x)), the model's
    own finer score, when `point_logits` is given (GeoCLIP's location encoder). Probabilities are over that union."""
    log_a = log_a.double().cpu()
    refs_ll = _placed(refs_latlon, log_a)
    cand, log_p = _cpu_log_probs(fused)
    b = log_a.shape[0]
    pts = refs_ll if extra_points is None else torch.cat([refs_ll, extra_points.double().cpu()], 1)  # (B, P, 2)
    valid = torch.cat([torch.isfinite(log_a), torch.ones(b, pts.shape[1] - log_a.shape[1], dtype=torch.bool)], 1)
    anchor = _nearest(pts, cand)  # (B, P)
    both = torch.cat([pts, cand[anchor]], 1)  # (B, 2P, 2): the points, then their anchors
    support = log_support(both, refs_ll, log_a, params.scale_km)
    n = pts.shape[1]
    score = log_p.gather(1, anchor) + params.weight * (support[:, :n] - support[:, n:])
    k_refs = refs_ll.shape[1]
    score[:, :k_refs] = torch.maximum(score[:, :k_refs], _kernel_mass(refs_ll, cand, log_p, params.scale_km))
    if point_logits is not None and extra_points is not None:  # refined points: the model's own finer score
        k = refs_ll.shape[1]
        logits = point_logits(torch.cat([pts[:, k:], cand[anchor[:, k:]]], 1).float()).double().cpu()
        score[:, k:] += logits[:, : n - k] - logits[:, n - k:]
    score = score.masked_fill(~valid, -math.inf)
    g_scores, g_idx = log_p.topk(min(cand.shape[0], top_k + n), -1)  # enough gallery points to fill the top-k
    union_pts, union_scores = torch.cat([cand[g_idx], pts], 1), torch.cat([g_scores, score], 1)  # (B, U, ·)
    lse = torch.logsumexp(torch.cat([log_p, score], 1), 1)
    order = union_scores.argsort(1, descending=True)
    union_pts, union_scores = union_pts.gather(1, order[..., None].expand(-1, -1, 2)), union_scores.gather(1, order)
    u = _unit(union_pts)
    earlier = torch.ones(u.shape[1], u.shape[1], dtype=torch.bool).tril(-1)
    dup = ((_km(u, u) < SAME_KM) & earlier).any(-1)  # the same place as a better-ranked candidate
    best = union_scores.masked_fill(dup, -math.inf).topk(top_k, dim=1)
    coords = union_pts.gather(1, best.indices[..., None].expand(-1, -1, 2))
    return Prediction(coords=coords.to(fused.coords.dtype).to(fused.coords.device),
                      probs=(best.values - lse[:, None]).exp().float().to(fused.probs.device))
