"""Training and reference sets from WebDataset shards (`geocore.data.shards`, `geocore.train.shard_data`).

Shards are made here with `webdataset.TarWriter`: small random JPEGs with a `{"latitude", "longitude"}` json (the
OSV-5M layout), `lat`/`lon` json and `.lat`/`.lon` members, uneven shard sizes, one corrupt image and one sample
without a position. Two CPU processes over gloo (Lightning's DDP launcher, as on a GPU node) must see every training
sample exactly once per epoch between them, in the same number of steps."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from geocore.cli.main import main
from geocore.data.shards import expand_shards, load_index, read_samples, scan_shard, shard_index
from geocore.errors import InputError
from geocore.models.registry import create_model
from geocore.train.shard_data import (INDEX_NAME, ShardStream, planned_batches, rank_batches, stream_range,
                                      stream_segments)
from geocore.train.run import fit_geoclip

TRAIN_COUNTS = (7, 3, 11, 1, 7)  # 29 samples: 4 streams (2 ranks × 2 workers) of 7, 7, 7 and 8
VAL_COUNTS = (4, 5)
BAD_IMAGE, NO_POSITION = "t002_04", "t001_01"


def _jpeg(rng: np.random.Generator, size=(40, 48)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _write_shards(folder: Path, prefix: str, counts, rng) -> list[dict]:
    written = []
    for s, n in enumerate(counts):
        import webdataset as wds

        with wds.TarWriter(str(folder / f"{prefix}-{s:03d}.tar")) as sink:
            for i in range(n):
                key = f"{prefix[0]}{s:03d}_{i:02d}"
                lat, lon = float(rng.uniform(-60, 70)), float(rng.uniform(-180, 180))
                sample = {"__key__": key, "jpg": _jpeg(rng)}
                if i % 3 == 0:
                    sample["json"] = json.dumps({"latitude": lat, "longitude": lon, "country": "XX"}).encode()
                elif i % 3 == 1:
                    sample["json"] = json.dumps({"lat": lat, "lon": lon}).encode()
                else:
                    sample["lat"], sample["lon"] = str(lat).encode(), str(lon).encode()
                if key == BAD_IMAGE:
                    sample["jpg"] = b"\xff\xd8 not a jpeg after all"
                if key == NO_POSITION:
                    sample["json"] = json.dumps({"country": "XX"}).encode()
                sink.write(sample)
                written.append({"key": key, "lat": lat, "lon": lon, "jpg": sample["jpg"], "shard": s})
    return written


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> SimpleNamespace:
    folder = tmp_path_factory.mktemp("shards")
    rng = np.random.default_rng(0)
    train = _write_shards(folder, "train", TRAIN_COUNTS, rng)
    val = _write_shards(folder, "val", VAL_COUNTS, rng)
    return SimpleNamespace(folder=folder, train=train, val=val,
                           pattern=str(folder / "train-{000..004}.tar"), val_pattern=str(folder / "val-{000..001}.tar"))


# --- the plan and the stream ------------------------------------------------------------------------------


@pytest.mark.parametrize("counts", [(7, 3, 11, 1, 7), (1,), (0, 5, 0), (2, 2, 2, 2, 2, 2, 2, 2, 2)])
@pytest.mark.parametrize("world,workers", [(1, 0), (2, 2), (3, 1), (8, 4)])
def test_streams_cover_every_sample_once_and_ranks_run_the_same_batches(counts, world, workers):
    total, k = sum(counts), max(1, workers)
    seen = Counter()
    sizes = []
    for g in range(world * k):
        a, b = stream_range(total, g, world * k)
        sizes.append(b - a)
        for shard, first, end in stream_segments(counts, a, b):
            assert 0 <= first < end <= counts[shard]
            seen.update((shard, i) for i in range(first, end))
    assert seen == Counter((s, i) for s, n in enumerate(counts) for i in range(n))  # once each
    assert max(sizes) - min(sizes) <= 1
    for batch in (1, 3, 7):
        plan = planned_batches(total, world, workers, batch)
        assert all(rank_batches(total, world, workers, batch, r) <= plan for r in range(world))
        assert plan >= -(-total // (batch * world))


def _keys(batches) -> list[str]:
    return [k for b in batches for k in (*b["img_id"], *(e[0] for e in b["errors"]))]


def test_two_ranks_with_two_workers_each_read_every_sample_once(shards):
    from torch.utils.data import DataLoader

    urls = expand_shards(shards.pattern)
    index = shard_index(urls)
    assert index.counts.tolist() == list(TRAIN_COUNTS)
    every, lengths = [], []
    for rank in (0, 1):
        stream = ShardStream(urls, index.counts, lambda im: torch.zeros(3, 8, 8), batch_size=7, workers=2, rank=rank,
                             world=2, shuffle=True, seed=3, epoch=1, buffer=4)
        batches = list(DataLoader(stream, batch_size=None, num_workers=2))
        assert len(batches) == len(stream) == 3  # rank 0 reads 2 batches and pads one empty batch
        lengths.append([len(b["img_id"]) + len(b["errors"]) for b in batches])
        every += _keys(batches)
    assert Counter(every) == Counter(s["key"] for s in shards.train)
    assert sorted(lengths[0]) == [0, 7, 7] and sorted(lengths[1]) == [1, 7, 7]


def test_samples_read_in_part_and_positions_from_each_layout(shards):
    urls = expand_shards(shards.pattern)
    got = list(read_samples(urls[2], 3, 6, expected=11))
    want = [s for s in shards.train if s["shard"] == 2][3:6]
    assert [g.key for g in got] == [w["key"] for w in want]
    for g, w in zip(got, want):
        assert g.image == w["jpg"] and (g.lat, g.lon) == pytest.approx((w["lat"], w["lon"]), abs=1e-9)
    scan = scan_shard(urls[1])
    assert scan.reasons[1] is not None and "no position" in scan.reasons[1] and np.isnan(scan.latlon[1]).all()


# --- bad shards: one line naming the shard ------------------------------------------------------------------


def test_missing_and_damaged_shards_are_one_line_errors(shards, tmp_path, capsys):
    whole = (shards.folder / "train-002.tar").read_bytes()
    (tmp_path / "cut-000.tar").write_bytes(whole[: len(whole) // 2])  # a download cut short
    (tmp_path / "junk-000.tar").write_bytes(b"<html>503 Service Unavailable</html>" * 40)
    base = ["train", "geoclip", "--output-dir", str(tmp_path / "o"), "--model", "geoclip-tiny", "--workers", "0"]
    cases = [
        (["--shards", str(shards.folder / "train-{000..006}.tar")], "train-005.tar does not exist (and 1 more"),
        (["--shards", str(tmp_path / "none-*.tar")], "no file matches"),
        (["--shards", str(tmp_path / "cut-000.tar")], "cut-000.tar: cut short in member"),
        (["--shards", f"{shards.pattern}::{tmp_path / 'cut-000.tar'}"], "cut-000.tar: cut short in member"),
        (["--shards", str(tmp_path / "junk-000.tar")], "junk-000.tar: not a tar archive"),
        (["--shards", shards.pattern, "--csv", "x.csv", "--images", "."], "leave out --csv and --images"),
        (["--shards", shards.pattern, "--val-shards", str(shards.folder / "train-000.tar")], "in both --shards and"),
        ([], "or --shards"),
    ]
    for extra, _ in cases:
        assert main([*base, *extra]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == len(cases), lines
    for line, (_, words) in zip(lines, cases):
        assert line.startswith("error: ") and words in line, line
    with pytest.raises(InputError, match="damaged tar archive"):  # a broken header mid-shard, not a silent end
        broken = bytearray(whole)
        import tarfile

        with tarfile.open(shards.folder / "train-002.tar") as tar:
            offset = tar.getmembers()[6].offset
        broken[offset:offset + 512] = b"Z" * 512
        (tmp_path / "mid.tar").write_bytes(bytes(broken))
        scan_shard(str(tmp_path / "mid.tar"))


# --- training ----------------------------------------------------------------------------------------------


def test_one_process_trains_from_shards_skips_the_bad_and_saves(shards, tmp_path, one_thread):
    out = tmp_path / "run"
    result = fit_geoclip(None, None, output_dir=out, shards=shards.pattern, val_shards=shards.val_pattern,
                         model="geoclip-tiny", pretrained=None, from_scratch=True, epochs=1, batch_size=8,
                         queue_size=16, accelerator="cpu", num_workers=0, progress=False)
    assert result.checkpoint.is_file() and (out / "lightning" / "last.ckpt").is_file()
    [epochs] = [c for c in result.trainer.callbacks if type(c).__name__ == "ShardEpochs"]
    assert epochs.skipped == 2  # the corrupt image and the sample without a position, counted
    model = create_model("geoclip-tiny", pretrained=str(result.checkpoint))
    want = np.array([(s["lat"], s["lon"]) for s in shards.train if s["key"] != NO_POSITION])
    gallery = model.gallery.numpy().astype(float)
    assert len(gallery) == len(want) == 28  # the shards' points, the one without a position left out
    assert np.abs(gallery[:, None, :] - want[None]).max(-1).min(0).max() < 1e-4
    urls = [*expand_shards(shards.pattern), *expand_shards(shards.val_pattern)]
    assert load_index(out / INDEX_NAME, urls).counts.tolist() == [*TRAIN_COUNTS, *VAL_COUNTS]  # cached for the next run
    metrics = pd.read_csv(next(out.glob("logs/*/metrics.csv")))
    assert metrics["val_loss"].notna().any()  # validated on the --val-shards


RUNNER = '''
import json
import os
import sys

from geocore.cli.main import main
from geocore.train import geoclip_module

Module = geoclip_module.GeoCLIPModule


def record(kind, step):
    def wrapped(self, batch, batch_idx):
        with open(os.environ["SEEN"], "a") as fh:
            fh.write(json.dumps({"kind": kind, "rank": self.global_rank, "epoch": self.current_epoch,
                                 "keys": list(batch["img_id"]), "errors": [e[0] for e in batch["errors"]]}) + "\\n")
        return step(self, batch, batch_idx)
    return wrapped


Module.training_step = record("train", Module.training_step)
Module.validation_step = record("val", Module.validation_step)
sys.exit(main(sys.argv[1:]))
'''


def test_two_cpu_processes_see_each_sample_once_per_epoch(shards, tmp_path):
    """`geocore train geoclip --shards … --devices 2` on CPU: Lightning starts rank 1 by running the command again."""
    runner, seen = tmp_path / "runner.py", tmp_path / "seen.jsonl"
    runner.write_text(RUNNER)
    launcher_vars = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK")
    env = {k: v for k, v in os.environ.items()
           if k not in launcher_vars and not k.startswith(("SLURM_", "TORCHELASTIC_", "PL_"))}
    env.update(SEEN=str(seen), OMP_NUM_THREADS="1")
    out = tmp_path / "ddp"
    args = ["train", "geoclip", "--shards", shards.pattern, "--val-shards", shards.val_pattern, "--output-dir",
            str(out), "--model", "geoclip-tiny", "--epochs", "2", "--batch-size", "7", "--queue-size", "16",
            "--workers", "2", "--devices", "2"]
    proc = subprocess.run([sys.executable, str(runner), *args], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rows = [json.loads(line) for line in seen.read_text().splitlines()]
    assert {r["rank"] for r in rows} == {0, 1}
    train_keys = Counter(s["key"] for s in shards.train)
    per_rank_sets = {}
    for epoch in (0, 1):
        steps = [r for r in rows if r["kind"] == "train" and r["epoch"] == epoch]
        got = Counter(k for r in steps for k in (*r["keys"], *r["errors"]))
        assert got == train_keys, f"epoch {epoch}: not each sample exactly once"  # across both ranks
        per_rank = Counter(r["rank"] for r in steps)
        assert per_rank[0] == per_rank[1] == 3  # the same steps on each rank: 2 + 1 empty, and 3
        assert any(not r["keys"] and not r["errors"] for r in steps)  # the padding batch
        per_rank_sets[epoch] = {k for r in steps if r["rank"] == 0 for k in (*r["keys"], *r["errors"])}
        assert {BAD_IMAGE, NO_POSITION} <= {k for r in steps for k in r["errors"]}
        val = [r for r in rows if r["kind"] == "val" and r["epoch"] == epoch]
        assert Counter(k for r in val for k in (*r["keys"], *r["errors"])) == Counter(s["key"] for s in shards.val)
    assert per_rank_sets[0] != per_rank_sets[1]  # each epoch its own shard order
    assert (out / "geoclip.safetensors").is_file() and "checkpoint:" in proc.stderr


# --- reference sets from the same shards ----------------------------------------------------------------------


def test_refs_from_shards_equal_refs_from_the_same_photos_in_a_folder(shards, tmp_path):
    from geocore.refs import build_reference_set

    torch.manual_seed(0)
    model = create_model("geoclip-tiny").eval()
    images = tmp_path / "images"
    images.mkdir()
    rows = []
    for s in shards.val:
        (images / f"{s['key']}.jpg").write_bytes(s["jpg"])
        rows.append({"IMG_ID": f"{s['key']}.jpg", "LAT": s["lat"], "LON": s["lon"]})
    pd.DataFrame(rows).to_csv(tmp_path / "photos.csv", index=False)
    common = dict(batch_size=4, progress=False, accelerator="cpu")
    from_folder = build_reference_set(model, tmp_path / "photos.csv", images=images, output=tmp_path / "A", **common)
    from_shards = build_reference_set(model, shards.val_pattern, output=tmp_path / "B", **common)
    assert from_shards.table["IMG_ID"].tolist() == [s["key"] for s in shards.val]  # IDs are the sample keys
    np.testing.assert_allclose(from_shards.table[["LAT", "LON"]].to_numpy(), from_folder.table[["LAT", "LON"]])
    assert from_shards.table["SHA256"].tolist() == from_folder.table["SHA256"].tolist()  # the same bytes
    np.testing.assert_array_equal(from_shards.embeddings, from_folder.embeddings)

    # a shard with unusable samples lists them; a compressed or remote shard cannot be read photo by photo
    bad = build_reference_set(model, str(shards.folder / "train-001.tar"), output=tmp_path / "C", **common)
    assert len(bad) == 2 and bad.skipped["name"].tolist() == [NO_POSITION]
    with pytest.raises(InputError, match="local, uncompressed"):
        build_reference_set(model, "pipe:cat " + str(shards.folder / "val-000.tar"), output=tmp_path / "D", **common)
