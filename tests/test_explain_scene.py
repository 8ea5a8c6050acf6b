"""Scene type, zero-shot with GeoCLIP's CLIP (random tiny: shapes, probabilities, parsing, caching only)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from geocore.errors import InputError
from geocore.explain.scene import (S3_NAMES, S3_PROMPTS, SceneResult, classify_scene, clean_category,
                                   load_places365_categories, prompt_embeddings)
from geocore.models.registry import create_model


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny models run fastest on one thread (see conftest)."""


@pytest.fixture(scope="module")
def model():
    return create_model("geoclip-tiny", gallery=torch.tensor([[0.0, 0.0], [10.0, 10.0]]))


def photo(seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 256, (120, 160, 3), dtype=np.uint8))


def test_places365_categories_parse(reference_dir, tmp_path) -> None:
    rows = load_places365_categories(reference_dir / "categories_places365.txt")
    assert len(rows) == 365
    assert rows[0] == ("airfield", "a photo of an airfield.")
    names = dict(rows)
    assert clean_category("/a/abbey") == ("abbey", "a photo of an abbey.")
    assert names["utility room"] == "a photo of a utility room."
    assert "apartment building (outdoor)" in names
    assert names["apartment building (outdoor)"] == "a photo of an apartment building, outdoor."
    assert clean_category("/b/bakery/shop") == ("bakery (shop)", "a photo of a bakery, shop.")
    assert clean_category("/u/underwater/ocean_deep")[0] == "underwater (ocean deep)"
    bad = tmp_path / "bad.txt"
    bad.write_text("/a/abbey 0\nnot a category\n")
    with pytest.raises(InputError, match="bad.txt:2"):
        load_places365_categories(bad)
    bad.write_text("/a/abbey 0\n/b/barn 2\n")
    with pytest.raises(InputError, match="without gaps"):
        load_places365_categories(bad)


def test_s3_result_shapes_and_probabilities(model) -> None:
    res = classify_scene(model, photo())
    assert isinstance(res, SceneResult) and res.s365_top == []
    assert list(res.s3_probs) == list(S3_NAMES) and sum(res.s3_probs.values()) == pytest.approx(1.0, abs=1e-5)
    assert res.s3_name == S3_NAMES[res.s3_label] == max(res.s3_probs, key=res.s3_probs.get)
    assert all(len(p) >= 3 for p in S3_PROMPTS.values())  # prompt ensembles


def test_s365_top_k(model, reference_dir) -> None:
    rows = load_places365_categories(reference_dir / "categories_places365.txt")[:40]  # a subset keeps it fast
    res = classify_scene(model, photo(), rows, top_k=5)
    assert len(res.s365_top) == 5 and all(name in dict(rows) for name, _ in res.s365_top)
    probs = [p for _, p in res.s365_top]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0 + 1e-6


def test_prompt_embeddings_are_cached_once(monkeypatch) -> None:
    model = create_model("geoclip-tiny", gallery=torch.tensor([[0.0, 0.0]]))
    calls = []
    encode = model.clip.encode_text
    monkeypatch.setattr(model.clip, "encode_text", lambda tokens: calls.append(len(tokens)) or encode(tokens))
    emb = prompt_embeddings(model, [S3_PROMPTS[n] for n in S3_NAMES])
    assert emb.shape == (3, model.clip.text_projection.shape[1])
    assert torch.allclose(emb.norm(dim=-1), torch.ones(3))
    classify_scene(model, photo(0))
    classify_scene(model, photo(1))
    assert calls == [sum(len(p) for p in S3_PROMPTS.values())]  # all prompts encoded once, in one batch
    with pytest.raises(InputError):
        classify_scene(create_model("geodecoder", num_cells=[2, 3, 4], backbone_kwargs={
            "embed_dim": 32, "depth": 1, "num_heads": 2, "img_size": 32}, decoder_depth=1, decoder_heads=2,
            decoder_mlp=32), photo())
