"""Scene type of a photo: S3 (indoor / natural / urban) and, given the category list, Places365.

Scenes are recognised zero-shot with the CLIP model GeoCLIP already has loaded (`model.clip`: its image and
text towers, compared by cosine similarity), so no extra weights are downloaded or held in memory. The
alternatives cost more for little gain here: TransLocator's and GeoDecoder's scene heads have no public
weights, and the Places365 CNNs (the usual source of scene labels in this literature) are a separate
download hosted outside the Hugging Face Hub. CLIP ViT-L/14 is a strong zero-shot scene recogniser (scene datasets such as
SUN397 are part of CLIP's zero-shot evaluation), and prompt ensembling — several hand-written prompts per
class, their normalised text embeddings averaged — makes it steadier than one prompt per class.
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from geocore.errors import InputError
from geocore.models.precision import compute_autocast, current_precision, use_precision

S3_NAMES = ("indoor", "natural", "urban")  # TransLocator's S3 labels 0 / 1 / 2
S3_PROMPTS: dict[str, tuple[str, ...]] = {
    "indoor": ("a photo taken indoors.", "a photo of the inside of a room.", "a photo of an indoor scene.",
               "a photo of an interior of a building."),
    "natural": ("a photo of nature.", "a photo of a natural landscape.", "a photo of mountains, forest, a "
                "beach or a field.", "a photo of the outdoors with no buildings."),
    "urban": ("a photo of a city street.", "a photo of an urban scene.", "a photo of buildings and roads.",
              "a photo of a town or village."),
}

_LINE = re.compile(r"^(/[a-z]/\S+)\s+(\d+)$")
_TEXT_CACHE: "weakref.WeakKeyDictionary[Any, dict[tuple[str, ...], torch.Tensor]]" = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class SceneResult:
    """S3 label (0 indoor, 1 natural, 2 urban) and name, S3 probabilities, and the top Places365 scenes."""

    s3_label: int
    s3_name: str
    s3_probs: dict[str, float]
    s365_top: list[tuple[str, float]] = field(default_factory=list)


def _article(word: str) -> str:
    return "an" if word[:1] in "aeio" or (word[:1] == "u" and not word.startswith(("uni", "use", "ut"))) else "a"


def clean_category(raw: str) -> tuple[str, str]:
    """(display name, prompt) of a Places365 category path: "/a/apartment_building/outdoor" →
    ("apartment building (outdoor)", "a photo of an apartment building, outdoor.")."""
    parts = [p.replace("_", " ") for p in raw.strip("/").split("/")[1:]]
    if not parts or not parts[0]:
        raise InputError(f"Places365 category {raw!r}: expected /letter/name[/qualifier]")
    base, qual = parts[0], " ".join(parts[1:])
    name = f"{base} ({qual})" if qual else base
    prompt = f"a photo of {_article(base)} {base}" + (f", {qual}." if qual else ".")
    return name, prompt


def load_places365_categories(path: str | Path) -> list[tuple[str, str]]:
    """(name, prompt) per category of a `categories_places365.txt` file ("/a/abbey 0" lines), by index."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Places365 categories file {path} does not exist")
    rows: dict[int, tuple[str, str]] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        m = _LINE.match(line.strip())
        if m is None:
            raise InputError(f"{path}:{n}: expected '/a/abbey 0' (category path and index), got {line.strip()!r}")
        rows[int(m.group(2))] = clean_category(m.group(1))
    if not rows or sorted(rows) != list(range(len(rows))):
        raise InputError(f"{path}: category indices must run 0..N-1 without gaps")
    return [rows[i] for i in range(len(rows))]


def prompt_embeddings(model: Any, prompts: list[tuple[str, ...]] | list[str]) -> torch.Tensor:
    """(K, D) normalised CLIP text embeddings, one per class: the mean of its prompts' normalised embeddings.

    Cached per model, prompt set and precision (the text tower runs at the current one, `use_precision`), so
    each prompt is encoded once per loaded model and precision."""
    groups = [(p,) if isinstance(p, str) else tuple(p) for p in prompts]
    key = (current_precision(), *(f"{len(g)}\x00" + "\x00".join(g) for g in groups))
    cache = _TEXT_CACHE.setdefault(model, {})
    if key not in cache:
        flat = [p for g in groups for p in g]
        with torch.no_grad():
            tokens = model.tokenizer(flat).to(model.device)
            with compute_autocast(tokens.device):
                feats = model.clip.encode_text(tokens)
            emb = F.normalize(feats.float(), dim=-1)  # (P, D)
        out, i = [], 0
        for g in groups:
            out.append(F.normalize(emb[i:i + len(g)].mean(0), dim=-1))
            i += len(g)
        cache[key] = torch.stack(out)
    return cache[key]


@torch.no_grad()
def classify_scene(model: Any, image: Image.Image, categories: str | Path | list[tuple[str, str]] | None = None,
                   top_k: int = 5, *, precision: str = "fp32") -> SceneResult:
    """S3 scene (and the top-k Places365 scenes when `categories` — a categories file or its parsed rows — is
    given) of a PIL image, zero-shot with the CLIP inside a GeoCLIP `model`; its towers at `precision`
    ("fp32" | "bf16" | "auto", `geocore.models.precision`)."""
    from geocore.models.geoclip import GeoCLIP

    if not isinstance(model, GeoCLIP):
        raise InputError("scene recognition needs a CLIP-based model (geoclip)")
    with use_precision(precision, model.device, model):
        return _classify(model, image, categories, top_k)


def _classify(model: Any, image: Image.Image, categories: str | Path | list[tuple[str, str]] | None,
              top_k: int) -> SceneResult:
    pixels = model.preprocess(image.convert("RGB"))[None].to(model.device)
    img = F.normalize(model.forward_features(pixels), dim=-1)  # (1, D) CLIP image features, float32
    scale = float(model.clip.logit_scale.exp().clamp(max=100.0))

    s3 = (scale * img @ prompt_embeddings(model, [S3_PROMPTS[n] for n in S3_NAMES]).T).softmax(-1)[0]
    label = int(s3.argmax())
    s365: list[tuple[str, float]] = []
    if categories is not None:
        rows = load_places365_categories(categories) if isinstance(categories, (str, Path)) else categories
        probs = (scale * img @ prompt_embeddings(model, [p for _, p in rows]).T).softmax(-1)[0]
        values, idx = probs.topk(min(top_k, len(rows)))
        s365 = [(rows[i][0], float(v)) for v, i in zip(values.tolist(), idx.tolist())]
    return SceneResult(label, S3_NAMES[label], {n: float(p) for n, p in zip(S3_NAMES, s3.tolist())}, s365)
