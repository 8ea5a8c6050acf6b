"""TransLocator / GeoDecoder training on CPU in seconds: tiny random models learn four colour-coded regions;
the paper recipe (ViT-MT first, ten-crop training, best checkpoint); one segmentation geometry for training and
inference.

Each synthetic image's colour says which of four far-apart regions (Paris, New York, Tokyo, Sydney) it was
"taken" in (GPS: the region centre ± 1.5°). Cells are built from those GPS with `build_partition` at three
granularities. A short fit must make the training loss fall and validation accuracy within 2500 km beat
chance (1/4); checkpoints must reload and predict the same; the CLI must run end to end.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from PIL import Image
from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

from geocore.cli.main import main
from geocore.data.images import load_image
from geocore.errors import WeightsMissingError
from geocore.models.segmenter import Segmenter
from geocore.geo.cells_build import build_partition, write_partition
from geocore.models.registry import load_model_for_user
from geocore.models.registry import create_model
from geocore.errors import InputError
from geocore.train.cells_data import JointTransform, cache_segmaps, segmap_path
from geocore.train.cells_run import fit_cell_model

REGIONS = [(48.86, 2.35), (40.71, -74.01), (35.68, 139.69), (-33.87, 151.21)]
COLOURS = [(220, 40, 40), (40, 200, 60), (40, 60, 220), (230, 220, 40)]
TINY = {"embed_dim": 32, "depth": 2, "num_heads": 2, "img_size": 32}
TINY_DECODER = {"decoder_depth": 1, "decoder_heads": 2, "decoder_mlp": 64, "decoder_dropout": 0.0}
CHANCE = 0.25
FAST = dict(val_fraction=0.25, accelerator="cpu", num_workers=0, log_every_n_steps=1, progress=False,
            batch_size=16, lr=1e-3)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny models run fastest on one thread (see conftest)."""


def tiny_segformer_config() -> SegformerConfig:
    return SegformerConfig(num_labels=150, hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1],
                           decoder_hidden_size=16, num_attention_heads=[1, 1, 1, 1], mlp_ratios=[2, 2, 2, 2])


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> SimpleNamespace:
    folder = tmp_path_factory.mktemp("cells")
    rng = np.random.default_rng(0)
    rows = []
    for r, ((lat, lon), colour) in enumerate(zip(REGIONS, COLOURS)):
        for i in range(30):
            pixels = np.clip(np.array(colour) + rng.normal(0, 25, (40, 48, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"img_{r}_{i}.png")
            rows.append({"IMG_FILE": f"img_{r}_{i}.png", "LAT": lat + rng.uniform(-1.5, 1.5),
                         "LON": lon + rng.uniform(-1.5, 1.5), "S3_Label": r % 3})
    frame = pd.DataFrame(rows)
    frame.to_csv(folder / "train.csv", index=False)
    latlon = frame[["LAT", "LON"]].to_numpy()
    parts = tuple(str(write_partition(build_partition(latlon, min_images=1, max_images=m), folder / f"cells_{m}.csv"))
                  for m in (40, 16, 8))  # coarse, middle, fine
    weights = folder / "weights" / "segformer-b0-ade"  # a tiny random stand-in, found like the real weights
    torch.manual_seed(0)
    SegformerForSemanticSegmentation(tiny_segformer_config()).save_pretrained(weights)
    SegformerImageProcessor(size={"height": 64, "width": 64}).save_pretrained(weights)
    return SimpleNamespace(images=folder, csv=folder / "train.csv", parts=parts, frame=frame,
                           weights_dir=folder / "weights")


def _epoch_losses(out: Path) -> np.ndarray:
    metrics = pd.read_csv(next(out.glob("logs/*/metrics.csv")))
    return metrics.dropna(subset=["train_loss_epoch"])["train_loss_epoch"].to_numpy()


def _val_acc(out: Path) -> np.ndarray:
    metrics = pd.read_csv(next(out.glob("logs/*/metrics.csv")))
    return metrics.dropna(subset=["val_acc_2500km"])["val_acc_2500km"].to_numpy()


def _pixels(model, synth, n: int = 8) -> torch.Tensor:
    files = synth.frame["IMG_FILE"].iloc[::len(synth.frame) // n][:n]
    return torch.stack([model.preprocess(load_image(synth.images / f)) for f in files])


class _CacheCheck(Callback):
    """After the first epoch: every training image has its cached segmentation map."""

    def __init__(self, folder: Path, ids: list[str]) -> None:
        self.folder, self.ids, self.checked = folder, ids, False

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not self.checked:
            assert all(segmap_path(self.folder, i).is_file() for i in self.ids)
            self.checked = True


def test_joint_transform_crops_and_flips_image_and_map_together() -> None:
    rgb = np.zeros((60, 80, 3), np.uint8)
    rgb[:, :40] = (255, 0, 0)  # left half red, right half blue
    rgb[:, 40:, 2] = 255
    seg = np.ones((30, 40), np.uint8)  # the map at half resolution: 1 left, 2 right
    seg[:, 20:] = 2
    t = JointTransform(lambda im: None, 16, [0, 0, 0], [1, 1, 1], train=True, scale=(0.3, 1.0))
    torch.manual_seed(0)
    for _ in range(20):
        pixels, labels = t(Image.fromarray(rgb), Image.fromarray(seg))
        red = pixels[0] > pixels[2]  # (16, 16)
        assert labels.shape == (16, 16) and labels.dtype == torch.uint8
        agree = (red == (labels == 1)).float().mean()
        assert agree >= 0.85, agree  # only the boundary column may differ (bicubic vs nearest)
    model = create_model("translocator", num_cells=[2, 3, 4], backbone_kwargs=TINY)
    pixels, labels = JointTransform(model.preprocess, 32, [0.5] * 3, [0.5] * 3, train=False)(
        Image.fromarray(rgb), Image.fromarray(seg))  # the model's own resize + centre crop, same box for the map
    assert labels.shape == (32, 32) and ((pixels[0] > pixels[2]) == (labels == 1)).float().mean() >= 0.9


def test_paper_augmentation_cuts_ten_aligned_views() -> None:
    """RandomAffine / flip act on the photo and its map alike (ColorJitter on the photo only); ten views of
    Resize((r, r)) come out for both."""
    rgb = np.zeros((60, 80, 3), np.uint8)
    rgb[:, :40] = (255, 0, 0)
    rgb[:, 40:, 2] = 255
    seg = np.ones((30, 40), np.uint8)
    seg[:, 20:] = 2
    t = JointTransform(lambda im: None, 16, [0, 0, 0], [1, 1, 1], train=True, augment="paper")
    torch.manual_seed(0)
    for _ in range(5):
        pixels, labels = t(Image.fromarray(rgb), Image.fromarray(seg))
        assert pixels.shape == (10, 3, 16, 16) and labels.shape == (10, 16, 16)
        inside = labels != 255  # not the rotation's empty corners
        red = pixels[:, 0] > pixels[:, 2]
        assert ((red == (labels == 1)) | ~inside).float().mean() >= 0.85
    with pytest.raises(InputError, match="augment"):
        JointTransform(lambda im: None, 16, [0] * 3, [1] * 3, train=True, augment="strong")


def test_inference_segments_the_whole_photo_like_training(synth, tmp_path) -> None:
    """Item 1 of the faithfulness issue: the segmentation input `predict` builds from a photo is exactly the one
    training cuts from the cached whole-photo map (centre view and ten-crop alike)."""
    from geocore.data.datasets import BenchmarkDataset, image_ids_subset

    seg = Segmenter.from_config(tiny_segformer_config(), image_size=64)
    model = create_model("translocator", partitions=synth.parts, backbone_kwargs=TINY, segmenter=seg).eval()
    files = synth.frame["IMG_FILE"].tolist()[::17]
    data = image_ids_subset(BenchmarkDataset(synth.csv, synth.images), files)
    cache_segmaps(seg, data, tmp_path / "maps", batch_size=1)
    mean, std = model.mean.flatten().tolist(), model.std.flatten().tolist()
    for tencrop in (False, True):
        train_view = JointTransform(model.preprocess, 32, mean, std, train=False, tencrop=tencrop)
        for name in files:
            image = load_image(synth.images / name)
            pixels, labels = train_view(image, Image.open(segmap_path(tmp_path / "maps", name)))
            inp = model.prepare(image, tencrop)
            ours = model.segment_views(inp["seg_photo"][None], inp["seg_views"][None], inp["seg_size"][None])[0]
            assert torch.equal(ours if tencrop else ours[0], labels) and torch.equal(inp["pixels"], pixels)


def test_paper_recipe_trains_vit_mt_first_and_keeps_the_best(synth, tmp_path) -> None:
    seg = Segmenter.from_config(tiny_segformer_config(), image_size=64)
    out = tmp_path / "paper"
    opts = {k: v for k, v in FAST.items() if k != "lr"}  # the recipe's rates
    result = fit_cell_model("translocator", synth.csv, synth.images, partitions=synth.parts, output_dir=out,
                            segmenter=seg, pretrained=None, model_kwargs={"backbone_kwargs": TINY}, recipe="paper",
                            epochs=2, init_epochs=1, **opts)
    vit = out / "vit-mt" / "vit-mt.safetensors"
    assert vit.is_file() and result.best == out / "translocator-best.safetensors" and result.best.is_file()
    from geocore.weights.checkpoint import load_checkpoint

    first = load_checkpoint(vit).tensors
    cfg = result.module.hparams
    assert cfg.optimizer == "sgd" and tuple(cfg.lr_factors) == (0.2, 0.0048) and cfg.warmup_epochs == 2.0
    assert result.datamodule.train_set.transform.augment == "paper" and result.datamodule.val_set.transform.tencrop
    assert "backbone.blocks.0.attn.qkv.weight" in first and "heads.fine.0.weight" in first  # ViT-MT: Table 0.A.2 heads
    best = create_model("translocator", pretrained=str(result.best), segmenter=seg).eval()
    pixels, extra = _inputs(best, synth, tencrop=True)
    assert pixels.shape == (8, 10, 3, 32, 32) and best.predict(pixels, 1, **extra).coords.shape == (8, 1, 2)
    with pytest.raises(InputError, match="recipe paper"):
        fit_cell_model("geodecoder", synth.csv, synth.images, partitions=synth.parts, output_dir=tmp_path / "gd",
                       pretrained=None, recipe="paper", **FAST)


def _inputs(model, synth, n: int = 8, tencrop: bool = False):
    from geocore.models.views import batch_inputs

    files = synth.frame["IMG_FILE"].iloc[::len(synth.frame) // n][:n]
    return batch_inputs([model.prepare(load_image(synth.images / f), tencrop) for f in files])


def test_translocator_trains_caches_segmaps_and_reloads(synth, tmp_path) -> None:
    seg = Segmenter.from_config(tiny_segformer_config(), image_size=64)
    calls = []
    seg.model.register_forward_hook(lambda *a: calls.append(1))
    out = tmp_path / "tl"
    ids = synth.frame["IMG_FILE"].tolist()
    cache = out / "segmaps" / "segformer-random"
    check = _CacheCheck(cache, ids)
    result = fit_cell_model("translocator", synth.csv, synth.images, partitions=synth.parts, output_dir=out,
                            segmenter=seg, pretrained=None, model_kwargs={"backbone_kwargs": TINY}, epochs=6,
                            callbacks=[check], **FAST)
    assert check.checked and calls and len(list(cache.glob("*.png"))) == 120
    assert result.checkpoint == out / "translocator.safetensors" and (out / "lightning" / "last.ckpt").is_file()
    assert result.best == out / "translocator-best.safetensors" and result.best.is_file()
    losses, acc = _epoch_losses(out), _val_acc(out)
    print(f"translocator train loss by epoch {np.round(losses, 3)}; val acc@2500km {np.round(acc, 2)}")
    assert losses[-1] < losses[0] - 0.3 and acc[-1] > CHANCE + 0.25
    assert result.datamodule.scene_column == "S3_Label"

    trained = result.module.model  # segmenter attached
    loaded = create_model("translocator", pretrained=str(result.checkpoint), segmenter=seg).eval()
    assert loaded.config["num_cells"] == trained.config["num_cells"] and bool(loaded.cells_known)
    pixels = _pixels(loaded, synth)
    a, b = trained.predict(pixels, top_k=3), loaded.predict(pixels, top_k=3)
    assert torch.equal(a.indices, b.indices)
    torch.testing.assert_close(a.probs, b.probs)

    calls.clear()  # a second run on the same output folder reuses every cached map
    fit_cell_model("translocator", synth.csv, synth.images, partitions=synth.parts, output_dir=out, segmenter=seg,
                   pretrained=str(result.checkpoint), epochs=1, **FAST)
    assert not calls


def test_geodecoder_trains_with_scene_labels_and_reloads(synth, tmp_path) -> None:
    out = tmp_path / "gd"
    cfg = {"backbone_kwargs": TINY, "scene_classes": 3, **TINY_DECODER}
    result = fit_cell_model("geodecoder", synth.csv, synth.images, partitions=synth.parts, output_dir=out,
                            pretrained=None, model_kwargs=cfg, epochs=6, **FAST)
    assert not (out / "segmaps").exists()
    metrics = pd.read_csv(next(out.glob("logs/*/metrics.csv")))
    assert metrics["train_scene"].notna().any()  # S3 labels reached the scene loss
    losses, acc = _epoch_losses(out), _val_acc(out)
    print(f"geodecoder train loss by epoch {np.round(losses, 3)}; val acc@2500km {np.round(acc, 2)}")
    assert losses[-1] < losses[0] - 0.3 and acc[-1] > CHANCE + 0.25
    loaded = create_model("geodecoder", pretrained=str(result.checkpoint)).eval()
    pixels = _pixels(loaded, synth)
    a, b = result.module.model.predict(pixels, top_k=3), loaded.predict(pixels, top_k=3)
    assert torch.equal(a.indices, b.indices)
    torch.testing.assert_close(a.probs, b.probs)


def _cli(name: str, synth, out: Path, *extra: str) -> list[str]:
    return ["train", name, "--csv", str(synth.csv), "--images", str(synth.images), "--partitions", *synth.parts,
            "--output-dir", str(out), "--epochs", "1", "--batch-size", "32", "--workers", "0", *extra]


def test_cli_trains_both_end_to_end_and_translocator_locates(synth, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GEOCORE_WEIGHTS_DIR", str(synth.weights_dir))
    tiny = ["--from-scratch", "--model-config", json.dumps({"backbone_kwargs": TINY})]
    assert main(_cli("translocator", synth, tmp_path / "tl", *tiny)) == 0
    ckpt = tmp_path / "tl" / "translocator.safetensors"
    assert ckpt.is_file() and len(list((tmp_path / "tl" / "segmaps" / "segformer-b0-ade").glob("*.png"))) == 120
    decoder = json.dumps({"backbone_kwargs": TINY, **TINY_DECODER})
    assert main(_cli("geodecoder", synth, tmp_path / "gd", "--from-scratch", "--model-config", decoder)) == 0
    assert create_model("geodecoder", pretrained=str(tmp_path / "gd" / "geodecoder.safetensors")).config["decoder_depth"] == 1

    from geocore.locate import locate  # what `geocore locate --model translocator --pretrained CKPT` runs

    model = load_model_for_user("translocator", pretrained=str(ckpt)).eval()  # the default segmenter attached
    assert model.segmenter is not None
    (res,) = locate(model, [("a", synth.images / "img_0_0.png")], top_k=2)
    assert res.ok and len(res.table) == 2
    (ten,) = locate(model, [("a", synth.images / "img_0_0.png")], top_k=2, tencrop=True)
    assert ten.ok and not np.allclose(ten.table["prob"], res.table["prob"])
    assert main(["locate", str(synth.images / "img_1_0.png"), "--model", "translocator", "--pretrained", str(ckpt),
                 "--tencrop", "--json"]) == 0
    few = tmp_path / "few.csv"
    synth.frame.iloc[::30].to_csv(few, index=False)
    assert main(["evaluate", "--model", "translocator", "--pretrained", str(ckpt), "--dataset", str(few), "--images",
                 str(synth.images), "--output", str(tmp_path / "ev.csv"), "--tencrop"]) == 0
    assert len(pd.read_csv(tmp_path / "ev.csv")) == 4
    assert main(["locate", str(synth.images / "img_1_0.png"), "--model", "geoclip-tiny", "--tencrop"]) == 2


def test_missing_weights_exit_3_with_the_way_to_get_them(synth, tmp_path, monkeypatch, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("GEOCORE_WEIGHTS_DIR", str(empty))
    monkeypatch.setenv("HF_HUB_CACHE", str(empty))
    tiny = ["--model-config", json.dumps({"backbone_kwargs": TINY})]
    assert main(_cli("translocator", synth, tmp_path / "o", "--from-scratch", *tiny)) == 3
    assert "geocore weights download segformer-b0-ade" in capsys.readouterr().err
    assert main(_cli("geodecoder", synth, tmp_path / "o", *tiny)) == 3  # no silent random weights: ImageNet missing
    assert "ImageNet weights" in capsys.readouterr().err
    bad = _cli("geodecoder", synth, tmp_path / "o", "--from-scratch", *tiny)
    bad[bad.index("--partitions") + 1] = str(tmp_path / "nope.csv")
    assert main(bad) == 2 and "nope.csv: partition file not found" in capsys.readouterr().err
    with pytest.raises(WeightsMissingError, match="geocore weights download segformer-b0-ade"):
        load_model_for_user("translocator", pretrained=str(ckpt_tiny(synth, tmp_path)))
    decoder = create_model("geodecoder", partitions=synth.parts, backbone_kwargs=TINY, **TINY_DECODER)
    path = decoder.save_checkpoint(tmp_path / "gd.safetensors")
    assert load_model_for_user("geodecoder", pretrained=str(path)).needs_segmentation is False


def ckpt_tiny(synth, tmp_path):
    """A checkpoint of a tiny random TransLocator over the synthetic partitions."""
    model = create_model("translocator", partitions=synth.parts, backbone_kwargs=TINY)
    return model.save_checkpoint(tmp_path / "tl_tiny.safetensors")
