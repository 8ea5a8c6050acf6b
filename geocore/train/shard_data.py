"""Training from WebDataset shards (`geocore.data.shards`): every sample once per epoch across all ranks, and the
same number of batches on every rank.

webdataset's own `split_by_node` / `split_by_worker` hand out whole shards, so ranks would get different numbers of
samples (none at all with more streams than shards), and DDP needs every rank to take the same number of steps. So
the split here is by sample ranges:

- The epoch's samples are the shards' samples in one sequence; the shard order is shuffled per epoch from the seed
  (every rank computes the same order). With W ranks × K loader workers there are G = W·K streams, and stream
  g = rank·K + worker reads samples [g·N/G, (g+1)·N/G) of the sequence (`stream_range`): consecutive shards, the
  first and last perhaps in part (`stream_segments`), so streams differ by at most one sample and each shard is read
  by at most a few streams. Samples pass a shuffle buffer (raw bytes, `shuffle_buffer` of them per stream) and are
  decoded by the safe loader and augmented in the worker, which yields whole batches.
- Ranks can still differ by a batch or two (a stream's last batch is short). A rank with fewer batches ends with
  empty ones: `GeoCLIPModule` turns an empty batch into a zero loss that still reaches every parameter, so DDP stays
  in step and no sample is repeated or dropped. `len()` of the loader is that common count (`planned_batches`), so
  Lightning's progress bar, log interval and cosine schedule see the epoch's length.
- Lightning adds no sampler to an iterable dataset; `ShardEpochs` (a callback) hands each epoch's number to the
  stream (workers are started afresh each epoch, so they see it) and reports the samples skipped per epoch.

Sample counts and positions come from one pass over the shards' headers and metadata (`shard_index`) before training
(the gallery of GeoCLIP's training points is built from them); it is cached as `OUTPUT_DIR/shards-index.npz`, built
by local rank 0 of each node while the others wait for it. Validation reads `val_shards`, or holds out
round(val_fraction × shards) whole shards (seeded; none when that rounds to 0).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from geocore.data.datasets import collate_skip_errors
from geocore.data.images import load_image
from geocore.data.shards import (ShardIndex, ShardSample, expand_shards, load_index, read_samples, save_index,
                                 shard_index)
from geocore.data.text import readable
from geocore.errors import ImageError, InputError
from geocore.train.data import training_gallery

INDEX_NAME = "shards-index.npz"
INDEX_WAIT_S = 4 * 3600  # how long ranks other than a node's first wait for its index before scanning themselves
SHUFFLE_BUFFER = 1000


# --- the plan: which samples each stream reads, and how many batches each rank runs --------------------------


def stream_range(total: int, stream: int, streams: int) -> tuple[int, int]:
    """[start, stop) of the epoch's sample sequence that stream `stream` of `streams` reads."""
    return stream * total // streams, (stream + 1) * total // streams


def stream_segments(counts: Sequence[int], start: int, stop: int) -> list[tuple[int, int, int]]:
    """(shard position, first, end) pieces of shards, in sequence, holding samples [start, stop) of the sequence
    made of shards of these `counts` in turn."""
    out, begin = [], 0
    for j, n in enumerate(counts):
        end = begin + int(n)
        lo, hi = max(start, begin), min(stop, end)
        if lo < hi:
            out.append((j, lo - begin, hi - begin))
        if end >= stop:
            break
        begin = end
    return out


def rank_batches(total: int, world: int, workers: int, batch_size: int, rank: int) -> int:
    """Batches rank `rank` reads: each of its workers' streams cut into batches, the last one short."""
    k = max(1, workers)
    return sum(math.ceil((b - a) / batch_size)
               for a, b in (stream_range(total, rank * k + w, world * k) for w in range(k)))


def planned_batches(total: int, world: int, workers: int, batch_size: int) -> int:
    """Batches every rank runs per epoch: the most any rank reads (the others end with empty batches)."""
    return max(rank_batches(total, world, workers, batch_size, r) for r in range(world))


def shard_order(n: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """The epoch's shard order, the same on every rank."""
    return np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)


def buffered_shuffle(items: Iterable[Any], size: int, rng: np.random.Generator) -> Iterator[Any]:
    """`items` in a shuffled order, holding at most `size` of them at a time (WebDataset's shuffle buffer)."""
    buf: list[Any] = []
    for item in items:
        if len(buf) < size:
            buf.append(item)
            continue
        j = int(rng.integers(size))
        yield buf[j]
        buf[j] = item
    rng.shuffle(buf)
    yield from buf


def empty_batch() -> dict[str, Any]:
    """A batch without samples (a rank's padding): the keys a `collate_skip_errors` batch has."""
    return {"image": [], "img_id": [], "lat": [], "lon": [], "errors": []}


# --- the stream ---------------------------------------------------------------------------------------------


class ShardStream(IterableDataset):
    """One rank's batches of one epoch (see the module): `collate_skip_errors` dicts with `image` (transformed),
    `img_id` (the sample key), `lat`, `lon` and `errors` ((key, reason) of each sample skipped)."""

    def __init__(self, urls: Sequence[str], counts: Sequence[int], transform: Any, *, batch_size: int,
                 workers: int = 0, rank: int = 0, world: int = 1, shuffle: bool = False, seed: int = 0,
                 epoch: int = 0, buffer: int = SHUFFLE_BUFFER) -> None:
        super().__init__()
        if batch_size < 1:
            raise InputError(f"batch size {batch_size}: expected a whole number >= 1")
        self.urls, self.counts = list(urls), [int(c) for c in counts]
        self.transform, self.batch_size, self.workers = transform, batch_size, workers
        self.rank, self.world, self.shuffle, self.seed, self.epoch, self.buffer = rank, world, shuffle, seed, epoch, buffer

    @property
    def total(self) -> int:
        return sum(self.counts)

    def __len__(self) -> int:
        return planned_batches(self.total, self.world, self.workers, self.batch_size)

    def stream_samples(self, worker: int, workers: int) -> Iterator[ShardSample]:
        """The raw samples one worker's stream reads this epoch, in the shards' order (no shuffle buffer)."""
        order = shard_order(len(self.urls), self.seed, self.epoch, self.shuffle)
        start, stop = stream_range(self.total, self.rank * workers + worker, self.world * workers)
        counts = [self.counts[i] for i in order]
        for j, first, end in stream_segments(counts, start, stop):
            i = int(order[j])
            yield from read_samples(self.urls[i], first, end, expected=self.counts[i])

    def _item(self, sample: ShardSample) -> dict[str, Any]:
        item: dict[str, Any] = {"image": None, "img_id": sample.key, "lat": sample.lat, "lon": sample.lon,
                                "error": sample.error}
        if sample.error is None and sample.image is not None:
            try:
                item["image"] = self.transform(load_image(sample.image, name=sample.name))
            except ImageError as err:
                item["error"] = str(err)
        return item

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, k = (info.id, info.num_workers) if info is not None else (0, 1)
        if k != max(1, self.workers):
            raise RuntimeError(f"ShardStream planned for {self.workers} workers runs in {k}")
        samples: Iterable[ShardSample] = self.stream_samples(worker, k)
        if self.shuffle and self.buffer > 1:
            rng = np.random.default_rng([self.seed, self.epoch, self.rank * k + worker, 1])
            samples = buffered_shuffle(samples, self.buffer, rng)
        batch: list[dict[str, Any]] = []
        for sample in samples:
            batch.append(self._item(sample))
            if len(batch) == self.batch_size:
                yield collate_skip_errors(batch)
                batch = []
        if batch:
            yield collate_skip_errors(batch)
        if worker == k - 1:  # the rank's padding: up to the batches every rank runs
            mine = rank_batches(self.total, self.world, self.workers, self.batch_size, self.rank)
            for _ in range(len(self) - mine):
                yield empty_batch()


# --- the index and the split ------------------------------------------------------------------------------


def _local_rank() -> int:
    for var in ("LOCAL_RANK", "SLURM_LOCALID"):
        value = os.environ.get(var, "")
        if value.isdigit():
            return int(value)
    return 0


def indexed_shards(urls: Sequence[str], cache: Path, *, progress: bool = True,
                   wait_s: float = INDEX_WAIT_S) -> ShardIndex:
    """The index of `urls` from `cache` when it is current; else built (by a node's local rank 0; the others wait
    for it up to `wait_s`, then build their own) and written there."""
    index = load_index(cache, urls)
    if index is not None:
        return index
    if _local_rank() != 0:
        deadline = time.monotonic() + wait_s
        while index is None and time.monotonic() < deadline:
            time.sleep(1.0)
            index = load_index(cache, urls)
        if index is not None:
            return index
    index = shard_index(urls, progress=progress and _local_rank() == 0)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        save_index(index, cache)
    except OSError as err:  # a read-only output folder: the run goes on, the next one scans again
        rank_zero_warn(f"could not cache the shard index at {cache}: {err}")
    return index


def held_out_shards(urls: Sequence[str], fraction: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """(train, val): round(fraction × shards) whole shards, chosen with the seed, held out for validation."""
    if not 0.0 <= fraction < 1.0:
        raise InputError(f"val_fraction must be in [0, 1), got {fraction}")
    n_val = min(len(urls) - 1, round(fraction * len(urls))) if len(urls) > 1 else 0
    val = set(np.random.default_rng(seed).permutation(len(urls))[:n_val].tolist())
    return [u for i, u in enumerate(urls) if i not in val], [u for i, u in enumerate(urls) if i in val]


@dataclass
class ShardSplit:
    """The indexed training shards and validation shards (None: no validation)."""

    train: ShardIndex
    val: ShardIndex | None


def index_training_shards(shards: str, val_shards: str | None = None, *, val_fraction: float = 0.05, seed: int = 0,
                          cache_dir: Path, progress: bool = True) -> ShardSplit:
    """Expand the patterns, split off validation (`val_shards`, else held-out whole shards) and index every shard;
    InputError for a missing or damaged shard, a shard in both sets, or no training sample."""
    urls = expand_shards(shards)
    if val_shards:
        val_urls = expand_shards(val_shards)
        both = sorted(set(urls) & set(val_urls))
        if both:
            raise InputError(f"shard {readable(both[0])} is in both --shards and --val-shards; "
                             "validation must read other shards")
        train_urls = urls
    else:
        train_urls, val_urls = held_out_shards(urls, val_fraction, seed)
    index = indexed_shards([*train_urls, *val_urls], Path(cache_dir) / INDEX_NAME, progress=progress)
    train = index.subset(train_urls)
    if train.total == 0:
        raise InputError(f"shards {readable(shards)}: the training shards hold no sample")
    val = index.subset(val_urls) if val_urls else None
    return ShardSplit(train, val if val is not None and val.total else None)


# --- the data module ---------------------------------------------------------------------------------------


class ShardDataModule(L.LightningDataModule):
    """Batches of shard samples for `GeoCLIPModule` (the same batches `GeoImageDataModule` makes from a CSV)."""

    def __init__(self, split: ShardSplit, *, train_transform: Any, val_transform: Any, batch_size: int = 512,
                 num_workers: int = 4, seed: int = 0, shuffle_buffer: int = SHUFFLE_BUFFER) -> None:
        super().__init__()
        self.split = split
        self.train_transform, self.val_transform = train_transform, val_transform
        self.batch_size, self.num_workers, self.seed, self.shuffle_buffer = batch_size, num_workers, seed, shuffle_buffer
        latlon = split.train.latlon
        known = latlon[np.isfinite(latlon).all(axis=1)]
        if not len(known):
            raise InputError(f"none of the {split.train.total} training samples in the shards has a position "
                             "(expected a .json with latitude/longitude or lat/lon)")
        self.gallery = training_gallery(known, seed=seed)
        self.n_train = split.train.total
        self.n_missing = 0  # the CSV module's count of missing files: shards have none
        self.train_stream: ShardStream | None = None

    @property
    def has_val(self) -> bool:
        return self.split.val is not None

    def _where(self) -> tuple[int, int, int]:
        trainer = self.trainer
        if trainer is None:
            return 0, 1, 0
        return int(trainer.global_rank), int(trainer.world_size), int(trainer.current_epoch)

    def _loader(self, stream: ShardStream) -> DataLoader:
        # batch_size=None: the stream batches; workers start afresh each epoch, so they see its number
        return DataLoader(stream, batch_size=None, num_workers=self.num_workers, pin_memory=torch.cuda.is_available(),
                          persistent_workers=False)

    def train_dataloader(self) -> DataLoader:
        rank, world, epoch = self._where()
        self.train_stream = ShardStream(self.split.train.urls, self.split.train.counts, self.train_transform,
                                        batch_size=self.batch_size, workers=self.num_workers, rank=rank, world=world,
                                        shuffle=True, seed=self.seed, epoch=epoch, buffer=self.shuffle_buffer)
        return self._loader(self.train_stream)

    def val_dataloader(self) -> DataLoader | list:
        val = self.split.val
        rank, world, _ = self._where()
        if val is None:
            return []
        if val.total < world:  # a rank without a sample would log no metric and stall the others
            rank_zero_warn(f"{val.total} validation sample(s) for {world} ranks: validation left out")
            return []
        return self._loader(ShardStream(val.urls, val.counts, self.val_transform, batch_size=self.batch_size,
                                        workers=self.num_workers, rank=rank, world=world))

    def set_epoch(self, epoch: int) -> None:
        if self.train_stream is not None:
            self.train_stream.epoch = epoch

    def callbacks(self) -> list[Callback]:
        return [ShardEpochs(self)]


class ShardEpochs(Callback):
    """Hands each epoch's number to the training stream (its shard order) and reports, per epoch, the samples
    skipped on every rank (unreadable images, samples without a position; `skipped` keeps the run's total)."""

    def __init__(self, datamodule: ShardDataModule) -> None:
        self.datamodule = datamodule
        self.skipped = 0  # this rank, the whole run
        self._epoch_skipped = 0
        self._first: tuple[str, str] | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.datamodule.set_epoch(int(trainer.current_epoch))
        self._epoch_skipped, self._first = 0, None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        errors = batch.get("errors", []) if isinstance(batch, dict) else []
        self._epoch_skipped += len(errors)
        self.skipped += len(errors)
        if errors and self._first is None:
            self._first = errors[0]

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        count = torch.tensor(float(self._epoch_skipped), device=pl_module.device)
        total = int(trainer.strategy.reduce(count, reduce_op="sum"))
        if total:
            first = f" (e.g. {readable(self._first[0])}: {readable(self._first[1])})" if self._first else ""
            rank_zero_info(f"epoch {trainer.current_epoch}: {total} shard sample(s) skipped as unusable{first}")
