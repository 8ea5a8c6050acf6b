"""The GeoCLIP model API, on `geoclip-tiny` (random tiny backbone + the real wheel heads; no downloads)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from geocore.errors import InputError
from geocore.geo.gallery import grid_gallery
from geocore.models.geoclip import GeoCLIP
from geocore.models.registry import create_model, list_models, model_entry


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GEOCORE_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def gallery() -> torch.Tensor:
    return grid_gallery(1500.0)  # ~230 points, fast to embed


@pytest.fixture
def model(gallery) -> GeoCLIP:
    return create_model("geoclip-tiny", gallery=gallery)


def _image(seed: int = 0, size=(320, 240)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _predict(model, images: list[Image.Image], top_k: int, **kw):
    """`model.predict` on PIL photos, preprocessed as the model expects, in one batch."""
    return model.predict(torch.stack([model.preprocess(im) for im in images]), top_k, **kw)


def test_registered_and_labelled():
    assert {"geoclip", "geoclip-tiny"} <= set(list_models())
    assert "RANDOM" in model_entry("geoclip-tiny").description
    assert model_entry("geoclip-tiny").weights_info().present
    assert model_entry("geoclip").config["clip_model"] == "ViT-L-14"


def test_backbone_frozen_and_eval(model):
    assert model.random_backbone is True and model.model_name == "geoclip-tiny"
    assert not any(p.requires_grad for p in model.clip.parameters())
    assert all(p.requires_grad for p in model.mlp.parameters())
    model.train()
    assert model.mlp.training and not model.clip.training and not model.clip.visual.training


def test_locate_and_full_distribution(model, gallery):
    pred = _predict(model, [_image(0), _image(1, (200, 400))], 4, full=True)
    assert pred.coords.shape == (2, 4, 2) and pred.probs.shape == (2, 4)
    assert pred.probs_full.shape == (2, len(gallery))
    assert torch.allclose(pred.probs_full.sum(-1), torch.ones(2), atol=1e-5)
    assert torch.equal(pred.coords, gallery[pred.indices])
    assert (pred.probs[:, :-1] >= pred.probs[:, 1:]).all()


def test_embeddings(model):
    pixels = torch.stack([model.preprocess(_image(2))])
    assert model.preprocess(_image(3)).shape == (3, 224, 224)
    assert model.forward_features(pixels).shape == (1, 768)
    emb = model.image_embeddings(pixels)
    assert emb.shape == (1, 512) and torch.allclose(emb.norm(dim=-1), torch.ones(1))
    loc = model.embed_locations(torch.tensor([[48.85, 2.35], [90.0, 180.0], [-90.0, -180.0]]))
    assert loc.shape == (3, 512) and torch.allclose(loc.norm(dim=-1), torch.ones(3), atol=1e-5)
    with pytest.raises(InputError, match="LAT must be"):
        model.embed_locations(torch.tensor([[91.0, 0.0]]))


def test_predict_text(model):
    pred = model.predict_text(["a street in Tokyo", "a beach in Rio"], top_k=3)
    assert pred.coords.shape == (2, 3, 2)
    for bad in ([], "just a string"):
        with pytest.raises(InputError, match="non-empty list"):
            model.predict_text(bad)


def test_set_gallery(model):
    new = torch.tensor([[48.85, 2.35], [35.68, 139.69], [-22.9, -43.2]])
    model.set_gallery(new)
    pred = _predict(model, [_image(4)], 3)
    assert sorted(map(tuple, pred.coords[0].tolist())) == sorted(map(tuple, new.tolist()))
    with pytest.raises(InputError, match="gallery: LON must be"):
        model.set_gallery(torch.tensor([[0.0, 181.0]]))
    with pytest.raises(InputError, match="at least one point"):
        model.set_gallery(torch.zeros(0, 2))
    with pytest.raises(ValueError, match="top_k"):
        _predict(model, [_image(4)], 4)


def test_training_path_and_gradients(model):
    pixels = torch.stack([model.preprocess(_image(5)), model.preprocess(_image(6))])
    gps = torch.tensor([[10.0, 20.0], [-30.0, 40.0]])
    model.train()
    logits = model(pixels, gps)  # (B, B) against a batch of locations
    assert logits.shape == (2, 2)
    torch.nn.functional.cross_entropy(logits, torch.arange(2)).backward()
    assert model.mlp[0].weight.grad is not None and model.location_encoder.capsules[0].head.weight.grad is not None
    assert all(p.grad is None for p in model.clip.parameters())
    # Grad-CAM style: gradients reach the input through the frozen backbone
    px = pixels[:1].clone().requires_grad_(True)
    model.image_embeddings(px)[0, 0].backward()
    assert px.grad is not None and px.grad.abs().sum() > 0


def test_checkpoint_round_trip(model, gallery, tmp_path):
    with torch.no_grad():
        model.mlp[2].bias.add_(0.5)  # "fine-tuned"
    path = model.save_checkpoint(tmp_path / "ft.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:  # heads only: the backbone is named, not copied
        assert not any(k.startswith("clip.") for k in f.keys()) and "mlp.2.bias" in f.keys()
    loaded = create_model("geoclip-tiny", pretrained=str(path), gallery=gallery)
    assert loaded.random_backbone is True  # the tiny backbone is random, rebuilt from its seed
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    pixels = torch.stack([model.preprocess(_image(7))])
    assert torch.equal(model.predict(pixels, 5).indices, loaded.predict(pixels, 5).indices)


def test_bad_pretrained_values(tmp_path):
    with pytest.raises(InputError, match="random backbone"):
        create_model("geoclip-tiny", pretrained="openai")
    with pytest.raises(InputError, match="does not exist"):
        create_model("geoclip-tiny", pretrained=str(tmp_path / "missing.pt"))
    from safetensors.torch import save_file

    bad = tmp_path / "bad.safetensors"
    save_file({"foo": torch.zeros(2)}, str(bad))
    with pytest.raises(InputError, match="not a geocore checkpoint"):
        create_model("geoclip-tiny", pretrained=str(bad))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"junk")
    with pytest.raises(InputError, match="not a geocore checkpoint"):
        create_model("geoclip-tiny", pretrained=str(junk))
    cells = create_model("geodecoder", num_cells=[2, 3, 4], backbone_kwargs={"embed_dim": 32, "depth": 1,
                         "num_heads": 2, "img_size": 32}, decoder_depth=1, decoder_heads=2, decoder_mlp=32)
    other = cells.save_checkpoint(tmp_path / "gd.safetensors")
    with pytest.raises(InputError, match="not a GeoCLIP one"):
        create_model("geoclip-tiny", pretrained=str(other))


def test_with_gallery_view_shares_weights_not_gallery():
    import torch

    from geocore.models.registry import create_model

    model = create_model("geoclip-tiny")
    model.set_gallery(torch.tensor([[48.85, 2.35], [40.71, -74.0], [35.68, 139.65]]))
    view = model.with_gallery(torch.tensor([[51.5, -0.12], [52.52, 13.4]]))
    assert view.mlp is model.mlp and view.location_encoder is model.location_encoder
    assert model.gallery.shape == (3, 2) and view.gallery.shape == (2, 2)
    pixels = torch.zeros(1, 3, 224, 224)
    got = view.predict(pixels, 2).coords[0]
    assert torch.allclose(got.sort(dim=0).values, torch.tensor([[51.5, -0.12], [52.52, 13.4]]).sort(dim=0).values)
    assert model.predict(pixels, 3).coords.shape == (1, 3, 2)  # the original still scores its own three
