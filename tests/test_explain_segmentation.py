"""Segmenter (SegFormer, ADE20K): label maps, legend, colours, local weights without network, TransLocator hook, CLI."""

from __future__ import annotations

import io
import socket
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from transformers import SegformerConfig

from geocore.cli.main import main
from geocore.errors import GeocoreError, WeightsMissingError
from geocore.explain.segmentation import colorize, overlay, side_by_side
from geocore.models.segmenter import Segmenter
from geocore.weights.download import download_weights
from geocore.weights.resolve import resolve_snapshot
from geocore.weights.status import weights_status

sys.path.insert(0, str(Path(__file__).parent))
from test_translocator import tiny_model as tiny_translocator  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny models run fastest on one thread (see conftest)."""


@pytest.fixture
def ade_names(reference_dir) -> list[str]:
    frame = pd.read_csv(reference_dir / "object150_info.csv")
    return frame.sort_values("Idx")["Name"].tolist()  # Idx 1..150 → class ids 0..149


def tiny_config(names: list[str]) -> SegformerConfig:
    return SegformerConfig(num_labels=150, hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1],
                           decoder_hidden_size=16, num_attention_heads=[1, 1, 1, 1], mlp_ratios=[2, 2, 2, 2],
                           id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})


def tiny_segmenter(names: list[str]) -> Segmenter:
    return Segmenter.from_config(tiny_config(names), image_size=64)


def photo(w: int = 300, h: int = 200, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture
def empty_env(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("GEOCORE_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    return tmp_path


def test_segment_labels_legend_and_names(ade_names) -> None:
    seg = tiny_segmenter(ade_names)
    assert seg.class_names == ade_names and seg.class_names[2] == "sky"
    labels = seg.segment(photo())
    assert labels.shape == (200, 300) and labels.dtype == np.int64
    assert labels.min() >= 0 and labels.max() <= 149
    pixels = seg.processor(images=photo(), return_tensors="pt")["pixel_values"]
    with torch.no_grad():  # chunked running argmax == argmax of the full upsampled logits
        full = torch.nn.functional.interpolate(seg.model(pixel_values=pixels).logits, size=(200, 300),
                                               mode="bilinear", align_corners=False).argmax(1)[0]
    np.testing.assert_array_equal(labels, full.numpy())
    legend = seg.legend(labels)
    assert list(legend.columns) == ["class_id", "name", "colour", "share"]
    assert legend["share"].sum() == pytest.approx(1.0) and legend["share"].is_monotonic_decreasing
    assert set(legend["class_id"]) == set(np.unique(labels))
    assert all(ade_names[i] == n for i, n in zip(legend["class_id"], legend["name"]))
    assert legend["colour"].str.fullmatch(r"#[0-9a-f]{6}").all()
    top = legend.iloc[0]
    assert top["share"] == pytest.approx((labels == top["class_id"]).mean())


def test_colour_map_overlay_and_side_by_side(ade_names) -> None:
    img = photo(40, 30)
    labels = np.zeros((30, 40), dtype=np.int64)
    labels[:, 20:] = 2
    colours = colorize(labels)
    assert colours.size == (40, 30)
    legend = tiny_segmenter(ade_names).legend(labels)
    assert np.asarray(colours)[0, 25].tolist() == [int(legend.set_index("class_id").loc[2, "colour"][i:i + 2], 16)
                                                  for i in (1, 3, 5)]
    assert overlay(img, labels).size == (40, 30) and side_by_side(img, labels).size == (80, 30)


def test_missing_weights_name_the_download_command(empty_env, no_network) -> None:
    with pytest.raises(WeightsMissingError) as err:
        Segmenter.from_pretrained("segformer-b0-ade")
    msg = str(err.value)
    assert "geocore weights download segformer-b0-ade" in msg and "\n" not in msg
    with pytest.raises(WeightsMissingError, match="segformer-b2-ade"):
        Segmenter.from_pretrained("segformer-b2-ade")
    rows = {r.name: r for r in weights_status()}
    assert not rows["segformer-b0-ade"].present
    assert rows["segformer-b0-ade"].how_to_get == "geocore weights download segformer-b0-ade"


def _save_snapshot(folder: Path, names: list[str]) -> Segmenter:
    seg = tiny_segmenter(names)
    seg.model.save_pretrained(folder)
    seg.processor.save_pretrained(folder)
    return seg


def test_snapshot_in_weights_dir_loads(empty_env, no_network, ade_names) -> None:
    folder = empty_env / "weights" / "segformer-b0-ade"
    saved = _save_snapshot(folder, ade_names)
    assert resolve_snapshot("segformer-b0-ade") == folder
    loaded = Segmenter.from_pretrained("segformer-b0-ade")
    assert loaded.class_names == ade_names and loaded.processor.size["height"] == 64
    img = photo(50, 40)
    np.testing.assert_array_equal(loaded.segment(img), saved.segment(img))
    row = {r.name: r for r in weights_status()}["segformer-b0-ade"]
    assert row.present and row.where == str(folder) and row.size_mb > 0
    assert download_weights("segformer-b0-ade", echo=lambda s: None) == folder  # present: nothing to fetch


def test_snapshot_in_hf_cache_loads(empty_env, no_network, ade_names) -> None:
    repo = empty_env / "hf" / "models--nvidia--segformer-b2-finetuned-ade-512-512"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    _save_snapshot(repo / "snapshots" / "abc123", ade_names)
    assert resolve_snapshot("segformer-b2-ade") == repo / "snapshots" / "abc123"
    assert Segmenter.from_pretrained("segformer-b2-ade").num_classes == 150


def test_download_refuses_offline(empty_env, no_network, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(GeocoreError, match="HF_HUB_OFFLINE=1 is set"):
        download_weights("segformer-b0-ade")


def test_translocator_predicts_with_attached_segmenter(ade_names) -> None:
    seg = tiny_segmenter(ade_names)
    model = tiny_translocator().attach_segmenter(seg)
    assert model.segmenter is seg and not any(k.startswith("segmenter") for k in model.state_dict())
    maps = seg(torch.randn(2, 3, 32, 32))
    assert maps.shape == (2, 3, 32, 32) and float(maps.min()) >= 0.0 and float(maps.max()) <= 1.0
    from geocore.locate import locate

    photos = []
    for seed in (0, 1):
        buf = io.BytesIO()
        photo(seed=seed).save(buf, format="PNG")
        photos.append((f"p{seed}.png", buf.getvalue()))
    results = locate(model, photos, top_k=3)  # the photos prepared and segmented as every caller's are
    assert [r.prediction.coords.shape for r in results] == [(1, 3, 2)] * 2
    labels = torch.as_tensor(seg.segment(photo(32, 32)))[None]  # a given map is used as is
    assert model.predict(model.preprocess(photo(32, 32))[None], 1, seg=labels).coords.shape == (1, 1, 2)


def test_cli_segment_writes_png_and_legend(empty_env, no_network, ade_names, capsys) -> None:
    _save_snapshot(empty_env / "weights" / "segformer-b0-ade", ade_names)
    src, out, legend = empty_env / "photo.jpg", empty_env / "seg.png", empty_env / "legend.csv"
    photo(60, 40).save(src)
    assert main(["segment", str(src), "--output", str(out), "--legend", str(legend)]) == 0
    with Image.open(out) as im:
        assert im.size == (120, 40)  # photo | colour map
    table = pd.read_csv(legend)
    assert table["share"].sum() == pytest.approx(1.0) and table["name"].isin(ade_names).all()
    assert table["name"].iloc[0] in capsys.readouterr().out
    assert main(["segment", str(src), "--output", str(out), "--overlay"]) == 0
    with Image.open(out) as im:
        assert im.size == (60, 40)
    assert main(["segment", str(src), "--output", str(out), "--model", "segformer-b2-ade"]) == 3
    assert "geocore weights download segformer-b2-ade" in capsys.readouterr().err
