"""Text hints: combine a photo's distribution with a text query's, p ∝ p_image · p_text^w.

The analyst's hint ("coastal city in South America") goes through CLIP's text tower and GeoCLIP's MLP, as
`geocore text` does, and is scored against the same candidates as the photo (a GeoCLIP gallery, or a cell
classifier's fine-cell centroids through GeoCLIP's location encoder). The product is a tempered product of
experts: w = 0 ignores the hint, w = 1 treats it as independent evidence as strong as its own softmax says.

Default w = DEFAULT_HINT_WEIGHT = 0.5, measured (`bench/hint_weight.py`, bench/RESULTS.md): on stand-ins built
from the real GeoCLIP heads (held-out gallery points; a photo that looks like its place and 1–4 others; a hint
naming the right region 300–1000 km off, wrong for 20 % of photos in some settings) the mean log-probability of
the true location peaks at w = 0.5 in every setting (−5.17 on average, against −6.22 without the hint and −8.24
at w = 1; top-1 within 200 km 26 % → 51 %). Below 1 also because photo and hint share GeoCLIP's MLP and CLIP
space, so their errors are not independent: counting the hint at full strength double-counts what they share.
"""

from __future__ import annotations

import torch

from geocore.errors import InputError
from geocore.models.base import GalleryModel, GeoLocator
from geocore.models.prediction import Prediction
from geocore.tensors import on_cpu

DEFAULT_HINT_WEIGHT = 0.5
MAX_HINT_WEIGHT = 100.0  # p_text^100 already makes the photo irrelevant; larger weights overflow the logits
MAX_HINT_CHARS = 1000  # CLIP reads 77 tokens (a few hundred characters); the rest would be silently cut


def check_hint(hint: str | None, weight: float | None) -> tuple[str, float]:
    """The hint's text, its runs of white space made one space, and its weight (default DEFAULT_HINT_WEIGHT);
    InputError for an empty hint, one longer than MAX_HINT_CHARS or holding a control, format (bidi override)
    or undecodable character, and for a weight that is not a number in [0, MAX_HINT_WEIGHT]."""
    text = " ".join((hint or "").split())
    if not text:
        raise InputError("--hint: the text is empty; describe the place, e.g. \"coastal city in South America\"")
    if len(text) > MAX_HINT_CHARS:
        raise InputError(f"--hint: {len(text):,} characters; at most {MAX_HINT_CHARS:,} (CLIP reads 77 tokens)")
    if not text.isprintable():  # NUL, ESC, U+202E, bytes that were not UTF-8: nothing CLIP should read
        bad = next(ch for ch in text if not ch.isprintable())
        raise InputError(f"--hint: holds the invisible character U+{ord(bad):04X}; expected plain text")
    w = DEFAULT_HINT_WEIGHT if weight is None else float(weight)
    if not 0.0 <= w <= MAX_HINT_WEIGHT:  # also refuses NaN
        raise InputError(f"--hint-weight: expected a number from 0 to {MAX_HINT_WEIGHT:g}, got {weight}")
    return text, w


def hint_model_for(model: GeoLocator, hint_model: GalleryModel | None) -> GalleryModel:
    """The text model that scores hints: `hint_model` when given, else `model` itself when it takes text."""
    chosen = hint_model if hint_model is not None else model
    if not isinstance(chosen, GalleryModel) or not chosen.supports_text:
        raise InputError(f"text hints need a text model (geoclip); {model.model_name} takes no text: pass "
                         "hint_model=create_model('geoclip', pretrained='openai')")
    return chosen


@torch.no_grad()
def text_log_probs(hint_model: GalleryModel, text: str, candidates: torch.Tensor) -> torch.Tensor:
    """(M,) log-probabilities of the text query over `candidates` (M, 2) (lat, lon)."""
    emb = hint_model.text_embeddings([text])  # (1, D)
    if candidates is hint_model.gallery:
        loc = hint_model.gallery_embeddings()  # cached on disk and in memory
    else:
        loc = hint_model.embed_locations(on_cpu(candidates, torch.float64)).to(emb.device)
    return hint_model.similarity_logits(emb, loc).float().log_softmax(-1)[0].cpu()


def apply_hint(pred: Prediction, text_logp: torch.Tensor, weight: float, top_k: int) -> Prediction:
    """The prediction re-ranked by p ∝ p_image · p_text^weight (needs `pred.probs_full`); keeps full probs."""
    if pred.probs_full is None or pred.candidates is None:
        raise InputError("a text hint needs the full distribution: predict with full=True")
    log_img = pred.probs_full.float().clamp_min(torch.finfo(torch.float32).tiny).log()  # (B, M)
    logits = log_img + weight * text_logp.to(log_img.device)[None]
    return Prediction.from_scores(logits, pred.candidates, top_k, full=True)
