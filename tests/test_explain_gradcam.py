"""Grad-CAM for GeoCLIP, TransLocator and GeoDecoder: map size and range, targets, hooks removed, frozen state, CLI."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from geocore.cli.main import main
from geocore.errors import InputError
from geocore.explain.gradcam import crop_box, gradcam
from geocore.models.registry import create_model

sys.path.insert(0, str(Path(__file__).parent))
from test_explain_segmentation import _save_snapshot, ade_names, tiny_segmenter  # noqa: E402,F401
from test_geodecoder import TINY_DECODER  # noqa: E402
from test_translocator import tiny_partitions  # noqa: E402

# 64-pixel inputs: a 4x4 patch grid (on 2x2, two targets often light up the same single patch)
TINY_VIT = {"embed_dim": 32, "depth": 2, "num_heads": 2, "img_size": 64}
GALLERY = torch.tensor([[48.86, 2.35], [35.68, 139.69], [-33.87, 151.21], [40.71, -74.0]])


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny models run fastest on one thread (see conftest)."""


@pytest.fixture(scope="module")
def geoclip():
    model = create_model("geoclip-tiny", gallery=GALLERY)
    return model


def tiny_translocator():
    torch.manual_seed(0)
    return create_model("translocator", partitions=tiny_partitions(), backbone_kwargs=TINY_VIT).eval()


def tiny_geodecoder():
    torch.manual_seed(0)
    return create_model("geodecoder", partitions=tiny_partitions(), backbone_kwargs=TINY_VIT, scene_classes=4,
                        **TINY_DECODER).eval()


def photo(w: int = 300, h: int = 200, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 256, (h, w, 3), dtype=np.uint8))


def hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._backward_hooks) for m in model.modules())


def check(result, size=(300, 200)) -> None:
    w, h = size
    assert result.cam.shape == (h, w) and result.cam.dtype == np.float32
    assert float(result.cam.min()) >= 0.0 and float(result.cam.max()) <= 1.0 and float(result.cam.max()) > 0.5
    assert result.overlay.size == (w, h) and result.overlay.mode == "RGB"


def test_crop_box_follows_resize_and_centre_crop(geoclip) -> None:
    left, top, right, bottom = crop_box(geoclip.preprocess, (300, 200))  # shortest side → 224, crop 224
    assert (left, top, right, bottom) == pytest.approx((50.0, 0.0, 250.0, 200.0))


def test_geoclip_maps_targets_and_state(geoclip) -> None:
    img = photo()
    top1 = gradcam(geoclip, img)
    a, b = gradcam(geoclip, img, 1), gradcam(geoclip, img, 2)
    point = gradcam(geoclip, img, (10.0, 20.0))
    for r in (top1, a, b, point):
        check(r)
    assert "gallery point #1 (35.6800, 139.6900)" in a.target_desc and "(10.0000, 20.0000)" in point.target_desc
    assert not np.allclose(a.cam, b.cam)
    assert (top1.cam[:, :45] == 0).all() and (top1.cam[:, 255:] == 0).all()  # cropped away by preprocessing
    assert hooks(geoclip) == 0 and not geoclip.training
    assert not any(p.requires_grad for p in geoclip.clip.parameters())  # backbone still frozen
    with pytest.raises(InputError):
        gradcam(geoclip, img, 99)


def test_translocator_cells_with_fixed_segmentation(ade_names) -> None:
    model = tiny_translocator()
    img = photo()
    labels = np.random.RandomState(1).randint(0, 150, (200, 300))
    a, b = gradcam(model, img, 3, seg=labels), gradcam(model, img, 11, seg=labels)
    check(a), check(b)
    assert "fine cell #3" in a.target_desc and not np.allclose(a.cam, b.cam)
    assert "fine cell #" in gradcam(model, img, seg=labels).target_desc  # default: top-1
    with pytest.raises(InputError, match="segment"):
        gradcam(model, img)
    model.attach_segmenter(tiny_segmenter(ade_names))  # or from the attached segmenter
    flags = [prm.requires_grad for prm in model.parameters()]
    check(gradcam(model, img, 3))
    assert hooks(model) == 0 and [prm.requires_grad for prm in model.parameters()] == flags
    assert all(prm.grad is None for prm in model.parameters())  # no parameter gradients left behind
    with pytest.raises(InputError, match="fine-cell index"):
        gradcam(model, img, 20, seg=labels)


def test_translocator_explains_the_segmentation_it_predicts_with(ade_names) -> None:
    """Grad-CAM holds the map fixed as `predict` builds it: the attached segmenter on the whole photo, cut like
    the photo (`photo_seg`); a whole-photo label map given by the caller is cut the same way."""
    from geocore.explain.gradcam import _seg_input
    from geocore.models.views import crop_like_photo

    model = tiny_translocator().attach_segmenter(tiny_segmenter(ade_names))
    img = photo()
    pixels = model.preprocess(img)[None]
    own = model.photo_seg(img)
    assert own.shape == (64, 64) and own.dtype == torch.uint8
    assert torch.equal(_seg_input(model, None, img, pixels), model.prepare_seg(own[None], (64, 64)))
    labels = np.random.RandomState(1).randint(0, 150, (200, 300))
    cut = crop_like_photo(labels, model.preprocess, img.size, 64)
    assert torch.equal(_seg_input(model, labels, img, pixels), model.prepare_seg(cut[None], (64, 64)))


def test_geodecoder_cells() -> None:
    model = tiny_geodecoder()
    a, b = gradcam(model, photo(), 0), gradcam(model, photo(), 7)
    check(a), check(b)
    assert not np.allclose(a.cam, b.cam) and hooks(model) == 0


def test_cli_explain_geoclip_tiny(tmp_path, capsys) -> None:
    src, out, raw = tmp_path / "p.jpg", tmp_path / "cam.png", tmp_path / "cam.npy"
    photo(90, 60).save(src)
    assert main(["explain", str(src), "--model", "geoclip-tiny", "--target-latlon", "48.8,2.3",
                 "--output", str(out), "--raw-map", str(raw)]) == 0
    text = capsys.readouterr().out
    assert "RANDOM" in text and "(48.8000, 2.3000)" in text
    with Image.open(out) as im:
        assert im.size == (90, 60)
    cam = np.load(raw)
    assert cam.shape == (60, 90) and 0.0 <= cam.min() and cam.max() <= 1.0
    assert main(["explain", str(src), "--model", "geoclip-tiny", "--target", "1", "--target-latlon", "1,2",
                 "--output", str(out)]) == 2
    assert main(["explain", str(src), "--model", "geoclip-tiny", "--target-latlon", "95,2",
                 "--output", str(out)]) == 2


def test_cli_explain_translocator_checkpoint(tmp_path, monkeypatch, ade_names) -> None:
    monkeypatch.setenv("GEOCORE_WEIGHTS_DIR", str(tmp_path / "weights"))
    _save_snapshot(tmp_path / "weights" / "segformer-b0-ade", ade_names)
    ckpt = tiny_translocator().save_checkpoint(tmp_path / "tl.safetensors")
    src, out = tmp_path / "p.png", tmp_path / "cam.png"
    photo(50, 70).save(src)
    assert main(["explain", str(src), "--model", "translocator", "--pretrained", str(ckpt),
                 "--target", "4", "--output", str(out)]) == 0
    with Image.open(out) as im:
        assert im.size == (50, 70)
    assert main(["explain", str(src), "--model", "translocator", "--output", str(out)]) == 3  # no weights
