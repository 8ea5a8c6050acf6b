"""GeoDecoder: shapes, scene-specific query selection, loss, a tiny training run, checkpoints, weights."""

from __future__ import annotations

import io
import socket

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from geocore.errors import InputError, WeightsMissingError
from geocore.models.geodecoder import GeoDecoder
from geocore.models.layers.decoder import query_attn_mask
from geocore.models.registry import create_model, list_models, model_entry
from test_translocator import tiny_partitions  # noqa: E402  (shared tiny S2 partitions)

TINY = {"embed_dim": 32, "depth": 2, "num_heads": 2, "img_size": 32}
TINY_DECODER = {"decoder_depth": 2, "decoder_heads": 2, "decoder_mlp": 64, "decoder_dropout": 0.0}


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny models run fastest on one thread (see conftest)."""


def tiny_model(**cfg) -> GeoDecoder:
    torch.manual_seed(0)
    cfg = {**TINY_DECODER, "scene_classes": 4, **cfg}
    return create_model("geodecoder", partitions=tiny_partitions(), backbone_kwargs=TINY, **cfg).eval()


def pixels(b: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_forward_shapes() -> None:
    m = tiny_model(dependent_depth=1, decoder_dim=48, scene_classes=16)
    out = m(pixels())
    shapes = {k: tuple(v.shape) for k, v in out.items()}
    assert shapes == {"coarse": (4, 5), "middle": (4, 10), "fine": (4, 20), "scene": (4, 16), "selected": (4,),
                      "queries": (4, 16, 3, 48)}
    assert m.decoder.queries.shape == (16, 3, 48) and m.combine == "product"
    assert torch.equal(out["selected"], out["scene"].argmax(-1))
    layer, reshape = m.gradcam_layer()
    assert reshape(torch.randn(4, 5, 32)).shape == (4, 32, 2, 2) and layer is m.backbone.blocks[-1]


def test_outputs_come_from_the_selected_scene_queries() -> None:
    """By default (the authors' routing) the predicted scene is selected even when labels are given; with
    teacher forcing, the labelled scene."""
    forced = torch.tensor([0, 3, -1, 2])  # -1: no label, the predicted scene is used
    authors = tiny_model()
    out = authors(pixels(), scene=forced)
    assert not authors.config["teacher_forcing"] and torch.equal(out["selected"], out["scene"].argmax(-1))
    m = tiny_model(teacher_forcing=True)
    out = m(pixels(), scene=forced)
    predicted = out["scene"].argmax(-1)
    assert torch.equal(out["selected"], torch.where(forced >= 0, forced, predicted))
    chosen = out["queries"][torch.arange(4), out["selected"]]  # (4, 3, D)
    for i, level in enumerate(("coarse", "middle", "fine")):
        assert torch.allclose(out[level], m.heads[i](chosen[:, i]))


def test_scene_queries_matter_only_when_selected() -> None:
    """With scene-local self-attention, editing scene k's queries changes the geo outputs of exactly the
    images whose selected scene is k."""
    m = tiny_model(query_attention="scene", teacher_forcing=True)
    x, scene = pixels(), torch.tensor([1, 2, 1, 0])
    before = m(x, scene=scene)
    with torch.no_grad():
        m.decoder.queries[1] += torch.randn_like(m.decoder.queries[1])
    after = m(x, scene=scene)
    hit = scene == 1
    for level in ("coarse", "middle", "fine"):
        diff = (after[level] - before[level]).abs().amax(-1)  # (B,)
        assert bool((diff[hit] > 1e-4).all()) and torch.equal(after[level][~hit], before[level][~hit])


def test_query_attention_masks() -> None:
    assert query_attn_mask(4, 3, "all") is None
    scene, hier = query_attn_mask(4, 3, "scene"), query_attn_mask(4, 3, "hierarchy")
    assert scene.shape == hier.shape == (12, 12)
    assert not scene[0, 2] and scene[0, 3]  # (scene 0, h 0) sees (scene 0, h 2), not (scene 1, h 0)
    assert hier[0, 2] and not hier[0, 3]
    with pytest.raises(InputError):
        query_attn_mask(4, 3, "nearby")


def test_loss_defaults_are_the_authors() -> None:
    """0.5 / 0.3 / 0.2 over the levels with label smoothing 0.1, plus the unsmoothed scene term (lit.py)."""
    m = tiny_model()
    g = torch.Generator().manual_seed(2)
    out = {k: torch.randn(4, n, generator=g) for k, n in (("coarse", 5), ("middle", 10), ("fine", 20), ("scene", 4))}
    c, mid, f, s = torch.tensor([0, 1, 2, 4]), torch.tensor([1, 2, 3, 9]), torch.tensor([5, 5, 1, 7]), \
        torch.tensor([0, 1, 3, 2])
    ce = lambda k, y, ls=0.1: F.cross_entropy(out[k], y, label_smoothing=ls)  # noqa: E731
    expected = 0.5 * ce("coarse", c) + 0.3 * ce("middle", mid) + 0.2 * ce("fine", f) + ce("scene", s, 0.0)
    assert torch.allclose(m.loss(out, c, mid, f, s)["total"], expected)


def test_loss_weights_and_ignore() -> None:
    m = tiny_model(level_weights=[0.5, 0.3, 0.2], scene_weight=2.0, label_smoothing=0.0)
    g = torch.Generator().manual_seed(1)
    out = {k: torch.randn(4, n, generator=g) for k, n in (("coarse", 5), ("middle", 10), ("fine", 20), ("scene", 4))}
    c, mid, f, s = torch.tensor([0, -1, 2, 4]), torch.tensor([1, 2, 3, 9]), torch.tensor([5, 5, -1, 7]), \
        torch.tensor([0, 1, 3, -1])
    ce = lambda k, y: F.cross_entropy(out[k][y >= 0], y[y >= 0])  # noqa: E731
    expected = 0.5 * ce("coarse", c) + 0.3 * ce("middle", mid) + 0.2 * ce("fine", f) + 2.0 * ce("scene", s)
    assert torch.allclose(m.loss(out, c, mid, f, s)["total"], expected)
    assert "scene" not in m.loss(out, c, mid, f)


def test_training_loop_learns_colour_to_cell() -> None:
    """60 steps where the colour gives the cell and the scene: the loss falls and accuracy beats chance."""
    m = tiny_model().train()
    parents = m.parents  # (20, 2): middle, coarse
    g0 = torch.Generator().manual_seed(0)
    base = torch.rand(5, 3, generator=g0) * 2 - 1
    palette = base[parents[:, 1]] + 0.3 * (torch.rand(20, 3, generator=g0) * 2 - 1)  # (20, 3)

    def data(n: int, seed: int) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(seed)
        fine = torch.randint(20, (n,), generator=g)
        rgb = palette[fine][:, :, None, None] + 0.2 * torch.randn(n, 3, 32, 32, generator=g)
        return rgb, parents[fine, 1], parents[fine, 0], fine, fine % 4

    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    losses = []
    for step in range(60):
        rgb, *labels = data(32, step)
        loss = m.loss(m(rgb, scene=labels[-1]), *labels)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    rgb, coarse, middle, fine, scene = data(400, 999)
    m.eval()
    with torch.no_grad():
        out = m(rgb)  # scenes predicted
    acc = {k: (out[k].argmax(-1) == y).float().mean().item()
           for k, y in (("coarse", coarse), ("middle", middle), ("fine", fine), ("scene", scene))}
    for mode in ("fine", "product"):
        m.combine = mode
        acc[f"predict_{mode}"] = (m.predict(rgb, 1).indices[:, 0] == fine).float().mean().item()
    print(f"geodecoder: loss {np.mean(losses[:5]):.3f} -> {np.mean(losses[-5:]):.3f}; accuracy "
          f"{ {k: round(v, 3) for k, v in acc.items()} } (chance 0.2 / 0.1 / 0.05, scene 0.25)")
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    assert acc["coarse"] > 0.4 and acc["predict_product"] > 0.15


def test_checkpoint_roundtrip(tmp_path) -> None:
    m = tiny_model(dependent_depth=1)
    with torch.no_grad():
        m.heads[2].bias.normal_()
    path = m.save_checkpoint(tmp_path / "gd.safetensors")
    x = pixels()
    loaded = create_model("geodecoder", pretrained=str(path)).eval()
    a, b = m.predict(x, 3, full=True), loaded.predict(x, 3, full=True)
    assert torch.equal(a.indices, b.indices) and torch.equal(a.probs, b.probs) and torch.equal(a.coords, b.coords)
    assert loaded.config == m.config
    assert create_model("geodecoder", pretrained=str(path), combine="fine").combine == "fine"  # inference option
    with pytest.raises(InputError, match="trained with"):
        create_model("geodecoder", pretrained=str(path), decoder_depth=3)


def test_tencrop_views_of_the_photo() -> None:
    """`prepare(photo, tencrop=True)`: ten crops after the shorter side goes to 256 · size / 224 (the authors'
    Resize(256) + TenCrop(224)); `predict` averages their logits."""
    from PIL import Image

    m = tiny_model()
    photo = Image.fromarray(np.random.RandomState(0).randint(0, 256, (40, 60, 3), dtype=np.uint8))
    single, ten = m.prepare(photo), m.prepare(photo, tencrop=True)
    assert single["pixels"].shape == (3, 32, 32) and ten["pixels"].shape == (10, 3, 32, 32)
    b = m.predict(ten["pixels"][None], 4, full=True)
    with torch.no_grad():
        logits = m(ten["pixels"])
    expected = [logits[k].mean(0, keepdim=True).softmax(-1) for k in ("coarse", "middle", "fine")]
    from geocore.models.layers.hierarchy import combine_probs

    assert torch.allclose(b.probs_full, combine_probs(*expected, m.parents, "product"), atol=1e-5)
    from geocore.locate import locate

    buf = io.BytesIO()
    photo.save(buf, format="PNG")
    results = locate(m, [("a.png", buf.getvalue()), ("b.png", buf.getvalue())], top_k=2, tencrop=True)
    assert [r.prediction.coords.shape for r in results] == [(1, 2, 2)] * 2


def test_checkpoint_from_before_label_smoothing_trains_on_as_before(tmp_path) -> None:
    from geocore.weights.checkpoint import save_checkpoint

    m = tiny_model()
    config = {k: v for k, v in m.config.items() if k != "label_smoothing"}
    path = save_checkpoint(tmp_path / "old.safetensors", "geodecoder", m.state_dict(), config)
    assert create_model("geodecoder", pretrained=str(path)).config["label_smoothing"] == 0.0


def test_predict_without_cells_is_an_input_error() -> None:
    m = create_model("geodecoder", backbone_kwargs=TINY, num_cells=[5, 10, 20], scene_classes=4, **TINY_DECODER)
    with pytest.raises(InputError, match="centroids"):
        m.predict(pixels(1), 1)
    with pytest.raises(InputError, match="unknown option"):
        create_model("geodecoder", backbone_kwargs=TINY, num_cells=[5, 10, 20], decoder_layers=2)


def test_imagenet_without_cache_raises_without_network(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf"))

    def no_network(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(WeightsMissingError, match="hf download"):
        create_model("geodecoder", pretrained="imagenet", backbone_kwargs=TINY, num_cells=[5, 10, 20])


def test_registry() -> None:
    assert "geodecoder" in list_models()
    info = model_entry("geodecoder").weights_info()
    assert not info.present and "no public GeoDecoder weights" in info.detail
    assert info.how_to_get == "geocore train geodecoder"
