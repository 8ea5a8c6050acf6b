"""TransLocator: shapes, fusion (Eq. 4), heads (Table 0.A.2), loss, a tiny training run, hierarchy combination,
views (ten-crop), checkpoints (old ones load as they were built), weights."""

from __future__ import annotations

import socket

import numpy as np
import pandas as pd
import pytest
import s2geometry as s2
import timm
import torch
import torch.nn.functional as F

from geocore.errors import InputError, WeightsMissingError
from geocore.geo.cells import CellPartition, partition_from_frame
from geocore.models.layers.hierarchy import combine_probs
from geocore.models.layers.seg_palette import ade20k_palette, render_segmentation
from geocore.models.registry import create_model, list_models, model_entry
from geocore.models.translocator import TransLocator

TINY = {"embed_dim": 32, "depth": 2, "num_heads": 2, "img_size": 32}


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny models run fastest on one thread (see conftest)."""


def tiny_partitions() -> tuple[CellPartition, CellPartition, CellPartition]:
    """Nested S2 partitions: 5 faces (coarse) → 10 level-1 cells (middle) → 20 level-2 cells (fine)."""
    coarse = [s2.S2CellId.FromFacePosLevel(f, 0, 0) for f in range(5)]
    middle = [c.child(i) for c in coarse for i in range(2)]
    fine = [c.child(i) for c in middle for i in range(2)]

    def part(cells: list) -> CellPartition:
        ll = [c.ToLatLng() for c in cells]
        frame = pd.DataFrame({"class_label": range(len(cells)), "hex_id": [c.ToToken() for c in cells],
                              "imgs_per_cell": 100, "latitude_mean": [p.lat().degrees() for p in ll],
                              "longitude_mean": [p.lng().degrees() for p in ll]}).astype(str)
        return partition_from_frame(frame, "tiny")

    return part(coarse), part(middle), part(fine)


def tiny_model(**cfg) -> TransLocator:
    torch.manual_seed(0)
    return create_model("translocator", partitions=tiny_partitions(), backbone_kwargs=TINY, **cfg).eval()


def batch(b: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, 32, 32, generator=g), torch.randint(0, 150, (b, 32, 32), generator=g)


def test_forward_shapes() -> None:
    m = tiny_model()
    rgb, labels = batch()
    out = m(rgb, m.prepare_seg(labels, (32, 32)))
    shapes = {k: tuple(v.shape) for k, v in out.items()}
    assert shapes == {"coarse": (4, 5), "middle": (4, 10), "fine": (4, 20), "scene": (4, 3), "fused": (4, 64),
                      "weights": (4, 2)}
    assert m.config["num_cells"] == [5, 10, 20] and m.combine == "fine"  # the paper predicts from fine cells
    seen = []
    layer, reshape = m.gradcam_layer()
    hook = layer.register_forward_hook(lambda mod, inp, out: seen.append(out))  # Grad-CAM target
    m(rgb, m.prepare_seg(labels, (32, 32)))
    hook.remove()
    assert reshape(seen[0]).shape == (4, 32, 2, 2)  # (B, C, h, w)


@pytest.mark.parametrize("fusion", [True, False])
def test_fusion_mixes_branches(fusion: bool) -> None:
    m = tiny_model(fusion=fusion)
    rgb, labels = batch()
    seg_a = m.prepare_seg(labels, (32, 32))
    seg_b = m.prepare_seg(torch.roll(labels, 1, dims=0), (32, 32))
    with torch.no_grad():
        a, b = m.forward_features(rgb, seg_a)["rgb_cls"], m.forward_features(rgb, seg_b)["rgb_cls"]
    assert (not torch.allclose(a, b)) if fusion else torch.equal(a, b)


def test_fusion_follows_eq4_between_layers() -> None:
    """One f and one g shared by both branches (both continue from the same fused token), fusion between
    layers only: the final CLS tokens stay branch-specific, so attentive fusion has two things to weigh."""
    m = tiny_model()
    assert len(m.fusion) == len(m.rgb.blocks) - 1 and {n for n, _ in m.fusion[0].named_children()} == {"proj", "back"}
    rgb, labels = batch()
    cls_r, cls_s = torch.randn(4, 32), torch.randn(4, 32)
    new_r, new_s = m.fusion[0](cls_r, cls_s)
    assert torch.equal(new_r, new_s) and torch.allclose(new_r, (cls_r + cls_s) / 2, atol=1e-6)  # init: the mean
    with torch.no_grad():
        feats = m.forward_features(rgb, m.prepare_seg(labels, (32, 32)))
    assert not torch.allclose(feats["rgb_cls"], feats["seg_cls"])
    legacy = tiny_model(fusion_layers="all", fusion_projections="per_branch")
    assert len(legacy.fusion) == len(legacy.rgb.blocks) and hasattr(legacy.fusion[0], "proj_r")
    with pytest.raises(InputError, match="fusion_layers"):
        tiny_model(fusion_layers="last")


def test_heads_follow_table_0A2() -> None:
    m = tiny_model()
    assert isinstance(m.heads["coarse"], torch.nn.Linear) and isinstance(m.heads["scene"], torch.nn.Linear)
    middle, fine = m.heads["middle"], m.heads["fine"]
    assert [middle[0].out_features, middle[2].out_features] == [3000, 10]
    assert [fine[0].in_features, fine[0].out_features, fine[2].out_features] == [64, 6000, 20]
    w = fine[0].weight
    assert abs(float(w.std()) - 0.02) < 0.002 and abs(float(w.mean())) < 0.002 and not fine[0].bias.any()
    linear = tiny_model(head_hidden=[0, 0, 0])
    assert all(isinstance(h, torch.nn.Linear) for h in linear.heads.values())


def test_both_branches_start_from_vit_mt() -> None:
    from geocore.models.translocator import ViTMT

    single = ViTMT({"num_cells": [5, 10, 20], "backbone_kwargs": TINY, "head_hidden": [0, 8, 16]})
    m = tiny_model().init_branches(single)
    for branch in (m.rgb, m.seg):
        pairs = zip(branch.state_dict().values(), single.backbone.state_dict().values())
        assert all(torch.equal(a, b) for a, b in pairs)
    assert single(torch.randn(2, 3, 32, 32))["fine"].shape == (2, 20)


def test_attentive_weights_sum_to_one() -> None:
    m = tiny_model()
    rgb, labels = batch()
    w = m(rgb, m.prepare_seg(labels, (32, 32)))["weights"]
    assert torch.allclose(w.sum(-1), torch.ones(4)) and bool(((w > 0) & (w < 1)).all())


def test_loss_formula_and_ignore() -> None:
    m = tiny_model(alpha=0.1, beta=0.3, gamma=0.5)
    g = torch.Generator().manual_seed(1)
    out = {k: torch.randn(4, n, generator=g) for k, n in (("coarse", 5), ("middle", 10), ("fine", 20), ("scene", 3))}
    c, mid, f, s = torch.tensor([0, 1, -1, 4]), torch.tensor([1, 2, 3, 9]), torch.tensor([-1, 5, 6, 7]), \
        torch.tensor([0, 1, 2, -1])
    loss = m.loss(out, c, mid, f, s)
    ce = lambda k, y: F.cross_entropy(out[k][y >= 0], y[y >= 0])  # noqa: E731
    expected = 0.6 * ce("coarse", c) + 0.1 * ce("middle", mid) + 0.3 * ce("fine", f) + 0.5 * ce("scene", s)
    assert torch.allclose(loss["total"], expected)
    out["coarse"][2] += 100.0  # row 2 has coarse label -1: ignored
    assert torch.allclose(m.loss(out, c, mid, f, s)["coarse"], loss["coarse"])
    none = m.loss(out, torch.full((4,), -1), mid, f)
    assert none["coarse"].item() == 0.0 and torch.isfinite(none["total"])


def test_training_loop_learns_colour_to_cell() -> None:
    """60 steps on images whose colour gives the cell (cells of one coarse cell look alike): the loss
    falls and accuracy beats chance (hidden head layers narrower than Table 0.A.2's, to stay fast)."""
    m = tiny_model(head_hidden=[0, 64, 128]).train()
    parents = m.parents  # (20, 2): middle, coarse of each fine cell
    g0 = torch.Generator().manual_seed(0)
    base = torch.rand(5, 3, generator=g0) * 2 - 1  # one hue per coarse cell
    palette = base[parents[:, 1]] + 0.3 * (torch.rand(20, 3, generator=g0) * 2 - 1)  # (20, 3)

    def data(n: int, seed: int) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(seed)
        fine = torch.randint(20, (n,), generator=g)
        rgb = palette[fine][:, :, None, None] + 0.2 * torch.randn(n, 3, 32, 32, generator=g)
        seg = torch.randint(150, (n, 32, 32), generator=g)  # uninformative label maps
        return rgb, seg, parents[fine, 1], parents[fine, 0], fine, fine % 3

    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    losses = []
    for step in range(60):
        rgb, seg, *labels = data(32, step)
        loss = m.loss(m(rgb, m.prepare_seg(seg, (32, 32))), *labels)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    rgb, seg, coarse, middle, fine, _ = data(400, 999)
    m.eval()
    with torch.no_grad():
        out = m(rgb, m.prepare_seg(seg, (32, 32)))
    acc = {k: (out[k].argmax(-1) == y).float().mean().item()
           for k, y in (("coarse", coarse), ("middle", middle), ("fine", fine))}
    for mode in ("fine", "product"):
        m.combine = mode
        acc[f"predict_{mode}"] = (m.predict(rgb, 1, seg=seg).indices[:, 0] == fine).float().mean().item()
    print(f"translocator: loss {np.mean(losses[:5]):.3f} -> {np.mean(losses[-5:]):.3f}; accuracy "
          f"{ {k: round(v, 3) for k, v in acc.items()} } (chance 0.2 / 0.1 / 0.05)")
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    assert acc["coarse"] > 0.4 and acc["fine"] > 0.15 and acc["predict_product"] > 0.15


def test_hierarchy_product_beats_fine_on_synthetic_logits() -> None:
    from bench.hierarchy_compare import compare_hierarchy

    result = compare_hierarchy(signal=(3.0, 2.0, 1.0))  # coarse more reliable than fine
    print("hierarchy comparison (top-1 fine accuracy):", result)
    assert result["product"] > result["fine"] + 0.2


def test_combine_probs_product_and_orphans() -> None:
    coarse, middle = torch.tensor([[0.8, 0.2]]), torch.tensor([[0.5, 0.3, 0.2]])
    fine = torch.tensor([[0.25, 0.25, 0.25, 0.25]])
    parents = torch.tensor([[0, 0], [1, 0], [2, 1], [-1, -1]])  # last fine cell lies in no coarser cell
    p = combine_probs(coarse, middle, fine, parents, "product")
    raw = torch.tensor([0.25 * 0.5 * 0.8, 0.25 * 0.3 * 0.8, 0.25 * 0.2 * 0.2, 0.25 * (1 / 3) * (1 / 2)])
    assert torch.allclose(p[0], raw / raw.sum())
    assert torch.allclose(combine_probs(coarse, middle, fine, parents, "fine"), fine)
    with pytest.raises(InputError):
        combine_probs(coarse, middle, fine, parents, "mean")


def test_checkpoint_roundtrip(tmp_path) -> None:
    m = tiny_model(combine="product")
    with torch.no_grad():
        m.heads["fine"][-1].bias.normal_()  # differ from a fresh init
    path = m.save_checkpoint(tmp_path / "tl.safetensors")
    rgb, labels = batch()
    loaded = create_model("translocator", pretrained=str(path)).eval()  # no partitions: centroids from the file
    a, b = m.predict(rgb, 3, seg=labels, full=True), loaded.predict(rgb, 3, seg=labels, full=True)
    assert torch.equal(a.indices, b.indices) and torch.equal(a.probs, b.probs) and torch.equal(a.coords, b.coords)
    assert loaded.combine == "product" and torch.equal(loaded.centroids, m.centroids)
    assert create_model("translocator", pretrained=str(path), alpha=0.25).config["alpha"] == 0.25  # fine-tuning
    with pytest.raises(InputError, match="trained with"):
        create_model("translocator", pretrained=str(path), scene_classes=16)


def test_checkpoint_from_before_the_paper_options_loads_as_built(tmp_path) -> None:
    """A checkpoint saved before fusion_layers / fusion_projections / head_hidden existed (and with
    combine="product", the former default, in its config) rebuilds its own architecture and predicts as it
    did; naming a different architecture for it is an error."""
    from geocore.weights.checkpoint import save_checkpoint

    old = tiny_model(fusion_layers="all", fusion_projections="per_branch", head_hidden=[0, 0, 0], combine="product")
    config = {k: v for k, v in old.config.items() if k not in ("fusion_layers", "fusion_projections", "head_hidden")}
    path = save_checkpoint(tmp_path / "old.safetensors", "translocator", old.state_dict(), config)
    loaded = create_model("translocator", pretrained=str(path)).eval()
    assert loaded.config["head_hidden"] == [0, 0, 0] and loaded.config["fusion_layers"] == "all"
    assert loaded.combine == "product"
    rgb, labels = batch()
    a, b = old.predict(rgb, 3, seg=labels), loaded.predict(rgb, 3, seg=labels)
    assert torch.equal(a.indices, b.indices) and torch.equal(a.probs, b.probs)
    with pytest.raises(InputError, match="trained with head_hidden"):
        create_model("translocator", pretrained=str(path), head_hidden=[0, 3000, 6000])


def test_imagenet_without_cache_raises_without_network(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf"))

    def no_network(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(WeightsMissingError) as err:
        create_model("translocator", pretrained="imagenet", backbone_kwargs=TINY, num_cells=[5, 10, 20])
    assert "\n" not in str(err.value) and "hf download" in str(err.value)


def test_imagenet_from_local_hf_cache(tmp_path, monkeypatch) -> None:
    """timm's own loading from a file in the HF cache layout, for both branches, with no network."""
    from safetensors.torch import save_file

    repo = tmp_path / "hf" / "models--timm--vit_base_patch16_224.augreg2_in21k_ft_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    src = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=1000, **TINY)
    save_file({k: v.contiguous() for k, v in src.state_dict().items()},
              str(repo / "snapshots" / "abc123" / "model.safetensors"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(socket.socket, "connect", lambda *a, **k: pytest.fail("network access attempted"))
    m = create_model("translocator", pretrained="imagenet", backbone_kwargs=TINY, num_cells=[5, 10, 20])
    assert torch.equal(m.rgb.patch_embed.proj.weight, src.patch_embed.proj.weight)
    assert torch.equal(m.seg.blocks[1].mlp.fc1.weight, src.blocks[1].mlp.fc1.weight)


def test_views_average_logits_and_tencrop_takes_the_papers_crops() -> None:
    """`predict` on (B, V, ...) views averages the views' logits; `prepare(photo, tencrop=True)` cuts ten crops
    of the photo resized to (r, r) (supplement §0.A.2, r = 256 · size / 224)."""
    from PIL import Image

    m = tiny_model()
    rgb, labels = batch(2)
    views, seg = torch.stack([rgb, rgb.flip(-1)], 1), torch.stack([labels, labels.flip(-1)], 1)  # (2, 2, ...)
    pred = m.predict(views, 20, seg=seg, full=True)
    with torch.no_grad():
        logits = [m(v, m.prepare_seg(s, (32, 32)))["fine"] for v, s in ((rgb, labels), (rgb.flip(-1), labels.flip(-1)))]
    assert torch.allclose(pred.probs_full, ((logits[0] + logits[1]) / 2).softmax(-1), atol=1e-5)
    photo = Image.fromarray(np.random.RandomState(0).randint(0, 256, (50, 80, 3), dtype=np.uint8))
    inp = m.prepare(photo, tencrop=True)
    assert set(inp) == {"pixels"} and inp["pixels"].shape == (10, 3, 32, 32)
    assert m.predict(inp["pixels"][None], 4, seg=torch.randint(150, (1, 10, 32, 32))).coords.shape == (1, 4, 2)


def test_ten_crop_views_are_torchvisions_ten_crop() -> None:
    """The views cut exactly what Resize((256, 256)) + TenCrop(224) cuts (TransLocator), and the shorter side to
    256 for GeoDecoder (its authors' Resize(256))."""
    from PIL import Image
    from torchvision.transforms import functional as TF

    from geocore.models.views import CellInputs, ten_crop_views

    photo = Image.fromarray(np.random.RandomState(0).randint(0, 256, (256, 256, 3), dtype=np.uint8))
    ours = CellInputs(None, 224, [0.0] * 3, [1.0] * 3, tencrop=True, squash=True)(photo)["pixels"]
    theirs = torch.stack([TF.to_tensor(c) for c in TF.ten_crop(photo, 224)])
    assert ours.shape == (10, 3, 224, 224) and torch.allclose(ours, theirs, atol=1e-6)
    squashed = ten_crop_views(300, 200, 224, squash=True)
    assert squashed[4] == ((16 / 256, 16 / 256, 240 / 256, 240 / 256), False)  # the centre of the 256x256 photo
    short = ten_crop_views(300, 200, 224, squash=False)  # 300x200 → 384x256
    assert short[1][0] == pytest.approx((160 / 384, 0.0, 1.0, 224 / 256))
    assert short[6][1] and short[6][0] == pytest.approx(short[0][0])  # the mirrored photo's top-right: our top-left
    assert ten_crop_views(50, 80, 32, squash=True)[3][0] == pytest.approx((5 / 37, 5 / 37, 1.0, 1.0))


def test_predict_needs_segmentation_or_segmenter() -> None:
    m = tiny_model()
    rgb, labels = batch(2)
    with pytest.raises(InputError, match="segment"):
        m.predict(rgb, 1)
    m.attach_segmenter(torch.nn.Conv2d(3, 3, 1))  # any callable pixels -> (B, 3, H, W); not a submodule
    assert m.predict(rgb, 2).coords.shape == (2, 2, 2)
    assert not any(k.startswith("segmenter") for k in m.state_dict())


def test_seg_palette() -> None:
    pal = ade20k_palette()
    assert pal.shape == (150, 3) and len({tuple(c) for c in pal}) == 150 and pal.any(axis=1).all()
    img = render_segmentation(torch.tensor([[[0, 149], [-1, 255]]]))
    assert img.shape == (1, 3, 2, 2) and float(img.max()) <= 1.0
    assert torch.equal(img[0, :, 1, 0], torch.zeros(3)) and torch.equal(img[0, :, 1, 1], torch.zeros(3))
    assert torch.allclose(img[0, :, 0, 0], torch.tensor(pal[0] / 255.0, dtype=torch.float32))


def test_real_partitions_and_registry(reference_dir) -> None:
    paths = [str(reference_dir / f"cells_50_{n}.csv") for n in (5000, 2000, 1000)]
    m = create_model("translocator", partitions=paths, backbone_kwargs=TINY, head_hidden=[0, 0, 0])  # fast
    assert m.config["num_cells"] == [3298, 7202, 12893] and bool((m.parents >= 0).all())
    assert m.centroids.shape == (12893, 2)
    assert "translocator" in list_models()
    info = model_entry("translocator").weights_info()
    assert not info.present and "no public TransLocator weights" in info.detail
    with pytest.raises(InputError):
        create_model("translocator", partitions=paths, num_cells=[1, 2, 3], backbone_kwargs=TINY)
