"""GeoCLIP training on CPU in seconds: a tiny random backbone learns four colour-coded regions.

Each synthetic image's colour says which of four far-apart regions (Paris, New York, Tokyo, Sydney)
it was "taken" in; its GPS is the region centre plus up to ±1.5° of jitter. Training must make the
held-out contrastive loss fall and top-1 accuracy within 750 km beat chance (1/4).
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from geocore.cli.main import main
from geocore.data.images import load_image
from geocore.geo.distance import haversine_km
from geocore.geo.gallery import gallery_from_csv
from geocore.models.registry import create_model
from geocore.train.data import split_ids
from geocore.train.features import FeatureDataModule, load_features
from geocore.train.geoclip_module import GeoCLIPModule, GPSQueue, add_gps_noise
from geocore.train.fit import default_precision
from geocore.train.run import fit_geoclip

REGIONS = [(48.86, 2.35), (40.71, -74.01), (35.68, 139.69), (-33.87, 151.21)]
COLOURS = [(220, 40, 40), (40, 200, 60), (40, 60, 220), (230, 220, 40)]


def _write_split(folder: Path, name: str, per_region: int, rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    for r, ((lat, lon), colour) in enumerate(zip(REGIONS, COLOURS)):
        for i in range(per_region):
            pixels = np.clip(np.array(colour) + rng.normal(0, 25, (32, 32, 3)), 0, 255).astype(np.uint8)
            file = f"{name}_{r}_{i}.png"
            Image.fromarray(pixels).save(folder / file)
            rows.append({"IMG_FILE": file, "LAT": lat + rng.uniform(-1.5, 1.5), "LON": lon + rng.uniform(-1.5, 1.5)})
    frame = pd.DataFrame(rows)
    frame.to_csv(folder / f"{name}.csv", index=False)
    return frame


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> SimpleNamespace:
    folder = tmp_path_factory.mktemp("synth")
    rng = np.random.default_rng(0)
    train = _write_split(folder, "train", 30, rng)
    heldout = _write_split(folder, "heldout", 8, rng)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")  # unreadable: dropped from its batch
    extra = pd.DataFrame({"IMG_FILE": ["broken.png", "gone.png"], "LAT": [1.0, 2.0], "LON": [3.0, 4.0]})
    pd.concat([train.iloc[::3], extra]).to_csv(folder / "dirty.csv", index=False)  # 40 + 2; a missing file: skipped
    return SimpleNamespace(images=folder, csv=folder / "train.csv", dirty=folder / "dirty.csv", heldout=heldout)


def _pixels(model, synth) -> torch.Tensor:
    return torch.stack([model.preprocess(load_image(synth.images / f)) for f in synth.heldout["IMG_FILE"]])


# --- units ------------------------------------------------------------------------------------


def test_gps_queue_fills_and_wraps():
    q = GPSQueue(5)
    assert q.negatives().shape == (0, 2)  # nothing made-up before the first batch
    a = torch.arange(6, dtype=torch.float32).view(3, 2)
    q.enqueue(a)
    assert (int(q.ptr), int(q.count)) == (3, 3) and torch.equal(q.negatives(), a)
    b = 10 + torch.arange(8, dtype=torch.float32).view(4, 2)
    q.enqueue(b)  # 2 slots left: b[0:2] at 3..4, b[2:4] wrap to 0..1
    assert (int(q.ptr), int(q.count)) == (2, 5)
    assert torch.equal(q.coords, torch.cat([b[2:4], a[2:3], b[0:2]]))
    q.enqueue(torch.zeros(0, 2))
    assert (int(q.ptr), int(q.count)) == (2, 5)
    c = 100 + torch.arange(14, dtype=torch.float32).view(7, 2)
    q.enqueue(c)  # longer than the queue: its last 5 rows
    assert (int(q.ptr), int(q.count)) == (0, 5) and torch.equal(q.coords, c[-5:])
    q.enqueue(a[:1])
    assert int(q.ptr) == 1 and torch.equal(q.coords[0], a[0])
    empty = GPSQueue(0)
    empty.enqueue(a)
    assert empty.negatives().shape == (0, 2)
    assert set(dict(q.named_buffers())) == {"coords", "ptr", "count"}  # saved in Lightning checkpoints


def test_gps_noise_is_in_metres_and_stays_on_the_globe():
    pts = torch.tensor([[0.0, 179.9999], [60.0, 10.0]]).repeat(2000, 1)
    noisy = add_gps_noise(pts, 1000.0, torch.Generator().manual_seed(0))
    km = haversine_km(noisy, pts)
    assert 0.9 < float(km.pow(2).mean().div(2).sqrt()) < 1.1  # 1 km per axis
    assert noisy[:, 1].abs().max() <= 180 and torch.equal(add_gps_noise(pts, 0.0), pts)


def test_split_is_seeded_disjoint_and_complete():
    ids = [f"img{i}" for i in range(100)]
    train, val = split_ids(ids, 0.2, seed=3)
    assert len(val) == 20 and not set(train) & set(val) and sorted(train + val) == sorted(ids)
    assert (train, val) == split_ids(ids, 0.2, seed=3) and val != split_ids(ids, 0.2, seed=4)[1]
    assert split_ids(ids, 0.0) == (ids, [])
    assert default_precision("cpu") == "32-true"


# --- training ---------------------------------------------------------------------------------


def _heldout_loss(model, pixels: torch.Tensor, gps: torch.Tensor) -> float:
    module = GeoCLIPModule(model.eval())
    with torch.no_grad():
        logits = module.logits(model.forward_features(pixels), gps)
    return float(F.cross_entropy(logits, torch.arange(len(gps))))


def test_training_learns_regions_and_checkpoint_reloads(synth, tmp_path):
    out = tmp_path / "run"
    result = fit_geoclip(
        synth.csv, synth.images, output_dir=out, model="geoclip-tiny", pretrained=None, from_scratch=True,
        cache_features=True, epochs=5, batch_size=16, lr=1e-3, queue_size=64, val_fraction=0.2,
        accelerator="cpu", num_workers=0, log_every_n_steps=1, progress=False,
    )
    assert result.checkpoint == out / "geoclip.safetensors" and result.checkpoint.is_file()
    assert (out / "lightning" / "last.ckpt").is_file() and (out / "features.pt").is_file()
    assert int(result.module.queue.count) == 64  # filled (and wrapped: 96 training GPS per epoch)

    # the feature cache: (N, views, 768) float16 of the eval view, reused only while current
    cache = load_features(out / "features.pt")
    assert cache["features"].shape == (120, 1, 768) and cache["features"].dtype == torch.float16
    first = synth.images / cache["img_ids"][0]
    net = result.module.model.eval()
    with torch.no_grad():
        direct = net.forward_features(net.preprocess(load_image(first))[None])[0]
    torch.testing.assert_close(cache["features"][0, 0].float(), direct, rtol=2e-3, atol=2e-3)
    same = dict(val_fraction=0.2, num_workers=0)
    assert FeatureDataModule(net, synth.csv, synth.images, out / "features.pt", **same).cache_is_current()
    assert not FeatureDataModule(net, synth.csv, synth.images, out / "features.pt", views=2, **same).cache_is_current()

    # the training loss falls
    metrics = pd.read_csv(next(out.glob("logs/*/metrics.csv")))
    per_epoch = metrics.dropna(subset=["train_loss_epoch"])["train_loss_epoch"].to_numpy()
    print(f"train loss by epoch: {np.round(per_epoch, 3)}")
    assert per_epoch[-1] < per_epoch[0] - 0.5

    # held-out images: contrastive loss against their own 32 GPS falls; the reloaded model is the trained one
    gps = torch.tensor(synth.heldout[["LAT", "LON"]].to_numpy(), dtype=torch.float32)
    initial = create_model("geoclip-tiny", pretrained=None, heads=None)  # the same seeded start
    loaded = create_model("geoclip-tiny", pretrained=str(result.checkpoint))
    pixels = _pixels(loaded, synth)
    before, after = _heldout_loss(initial, pixels, gps), _heldout_loss(loaded, pixels, gps)
    print(f"held-out loss {before:.3f} -> {after:.3f} (chance {math.log(len(gps)):.3f})")
    assert after < before - 1.0  # the floor is log(8) = 2.08: same-region GPS are indistinguishable

    gallery = gallery_from_csv(out / "gallery.csv")  # the training points, 1/4 per region
    assert len(gallery) == 96
    assert torch.equal(loaded.gallery, gallery)  # the checkpoint carries the run's gallery: no --gallery needed
    trained = result.module.model.eval()
    for m in (trained, initial):
        m.set_gallery(gallery)
    p_trained, p_loaded = trained.predict(pixels, top_k=3), loaded.predict(pixels, top_k=3)
    assert torch.equal(p_trained.indices, p_loaded.indices)
    torch.testing.assert_close(p_trained.probs, p_loaded.probs, rtol=1e-5, atol=1e-6)

    def acc_750(model) -> float:
        return float((haversine_km(model.predict(pixels, top_k=1).top1, gps) <= 750).float().mean())

    acc_before, acc_after = acc_750(initial), acc_750(loaded)
    val_acc = metrics.dropna(subset=["val_acc_750km"])["val_acc_750km"].to_numpy()
    print(f"held-out top-1 accuracy within 750 km: {acc_before:.2f} -> {acc_after:.2f} (chance 0.25); "
          f"validation by epoch {np.round(val_acc, 2)}")
    assert acc_after >= 0.75 and acc_after > acc_before and val_acc[-1] >= 0.75


def test_cli_trains_end_to_end_on_images(synth, tmp_path, caplog):
    out = tmp_path / "cli"
    argv = ["train", "geoclip", "--csv", str(synth.dirty), "--images", str(synth.images), "--output-dir", str(out),
            "--epochs", "1", "--batch-size", "32", "--queue-size", "32", "--workers", "0", "--model", "geoclip-tiny"]
    assert main(argv) == 0  # through GeoCLIP's augmentations, with an unreadable and a missing image
    assert "1 image(s) listed in" in caplog.text and "dirty.csv are missing" in caplog.text
    ckpt = out / "geoclip.safetensors"
    assert ckpt.is_file() and (out / "lightning" / "last.ckpt").is_file() and (out / "gallery.csv").is_file()
    model = create_model("geoclip-tiny", pretrained=str(ckpt))
    assert model.predict(_pixels(model, synth)[:2], top_k=1).coords.shape == (2, 1, 2)


def test_cli_missing_inputs_are_one_line_errors(synth, tmp_path, capsys, monkeypatch):
    base = ["train", "geoclip", "--output-dir", str(tmp_path / "o"), "--model", "geoclip-tiny"]
    assert main([*base, "--csv", str(tmp_path / "nope.csv"), "--images", str(synth.images)]) == 2
    assert main([*base, "--csv", str(synth.csv), "--images", str(tmp_path / "no_dir")]) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([*base, "--csv", str(synth.csv), "--images", str(empty)]) == 2
    monkeypatch.delenv("GEOCORE_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(empty))  # no CLIP ViT-L/14 weights anywhere
    assert main(["train", "geoclip", "--output-dir", str(tmp_path / "o"), "--csv", str(synth.csv),
                 "--images", str(synth.images)]) == 3
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("error: ") for line in lines), lines
    assert "nope.csv" in lines[0] and "no_dir" in lines[1] and "none of the 120" in lines[2]
    assert "not found" in lines[3] and "geocore weights download" in lines[3]
