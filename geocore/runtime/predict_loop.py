"""Batch inference on PyTorch Lightning's predict loop: one CPU, one GPU, many GPUs and many nodes are one call.

`evaluate`, `geocore locate DIR --output FILE.csv|.parquet` (`geocore.eval.batch_locate`) and building a reference
set (`geocore.refs.build`) run here. Every process (rank) predicts its share of
the inputs (Lightning's `DistributedSampler` for prediction, which neither repeats nor drops an input) and writes
each finished batch as its own part file, atomically (`<output>.parts/part-rank<R>-NNNNNN.parquet`); after a
barrier, rank 0 merges the parts into one result in the input order. A killed run keeps every finished part, so a
resumed run of any number of ranks skips what any rank wrote.

More than one device or node runs DDP by the rule `geocore train` shares (`geocore.runtime.devices`): Lightning starts the
other local processes itself by running the same command again, and SLURM (`srun`) or `torchrun` start them on
each node. The output must sit on a file system every rank sees. Precision is geocore's own context
(`geocore.models.precision.use_precision`) inside `predict_step`, not Lightning's precision plugin, so the parts
that must stay float32 (GeoCLIP's location encoder, the gallery scan) do.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import lightning as L
import pandas as pd
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader, Dataset

from geocore.errors import InputError
from geocore.models.base import GeoLocator
from geocore.models.precision import resolve_precision, use_precision
from geocore.runtime.devices import DeviceOptions, device_options
from geocore.runtime.parts import next_part_index, write_part

T = TypeVar("T")
Rows = pd.DataFrame | dict[str, pd.DataFrame] | None  # one batch's rows, or rows of several kinds (one file each)


@dataclass(frozen=True)
class LoopOptions:
    """Where and how a prediction loop runs: its `DeviceOptions` and geocore's inference settings."""

    where: DeviceOptions = DeviceOptions()
    precision: str = "fp32"  # geocore's: auto | fp32 | bf16
    batch_size: int = 32  # per device
    num_workers: int = 0
    progress: bool = True


def loop_options(*, device: str | None = None, accelerator: str | None = None, devices: int | None = None,
                 num_nodes: int | None = None, strategy: str | None = None, precision: str = "fp32",
                 batch_size: int = 32, num_workers: int = 0, progress: bool = True) -> LoopOptions:
    """Check the command's options (naming the bad one) and turn them into `LoopOptions`; device options as
    `geocore.runtime.devices.device_options` takes them. Checked before any file is touched or any process starts."""
    resolve_precision(precision)  # an unknown name is an InputError naming --precision
    where = device_options(device=device, accelerator=accelerator, devices=devices, num_nodes=num_nodes,
                           strategy=strategy)
    if batch_size < 1:
        raise InputError(f"--batch-size {batch_size}: expected a whole number >= 1")
    if num_workers < 0:
        raise InputError(f"--workers {num_workers}: expected a whole number >= 0")
    return LoopOptions(where=where, precision=precision, batch_size=batch_size, num_workers=num_workers,
                       progress=progress)


class BatchPredictor(L.LightningModule):
    """Wraps any `GeoLocator` for Lightning's predict loop: `predict_step` turns a batch into a table of rows by
    `rows(model, batch)`, under geocore's precision context and without gradients. Batches reach `rows` as the
    DataLoader made them (no device transfer here: `geocore.models.views.batch_inputs` moves what the model
    takes, as everywhere else)."""

    def __init__(self, model: GeoLocator, rows: Callable[[GeoLocator, Any], Rows],
                 precision: str = "fp32") -> None:
        super().__init__()
        self.model, self.rows, self.inference_precision = model, rows, precision

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        return batch

    def predict_step(self, batch: Any, batch_idx: int) -> Rows:
        with torch.no_grad(), use_precision(self.inference_precision, self.device, self.model):
            return self.rows(self.model, batch)


class PartWriter(BasePredictionWriter):
    """Writes each finished batch's rows as this rank's next part file beside `output` (atomically); a batch's
    prediction may also be {kind: rows}, each kind its own file (`<kind>-rank<R>-NNNNNN.parquet`)."""

    def __init__(self, output: Path, on_batch: Callable[[int], None] | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output, self.on_batch = output, on_batch
        self.rank, self.first = 0, 0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.rank = trainer.global_rank
        self.first = next_part_index(self.output, self.rank)  # after this rank's parts from earlier runs

    def write_on_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, prediction: Any,
                           batch_indices: Sequence[int] | None, batch: Any, batch_idx: int,
                           dataloader_idx: int = 0) -> None:
        tables = prediction if isinstance(prediction, dict) else {"part": prediction}
        for kind, table in tables.items():
            if table is not None and len(table):
                write_part(table, self.output, self.first + batch_idx, rank=self.rank, kind=kind)
        if self.on_batch is not None:
            self.on_batch(batch_idx)


def predict_to_parts(module: BatchPredictor, loader: DataLoader, output: Path, opts: LoopOptions,
                     merge: Callable[[], T], *, on_batch: Callable[[int], None] | None = None,
                     merge_on_failure: bool = False) -> T | None:
    """Run `module` over `loader` on every rank, each writing its parts beside `output`; then, after a barrier,
    `merge()` on rank 0, whose result is returned there (None on the other ranks).

    Ctrl-C stays a KeyboardInterrupt. With `merge_on_failure`, a one-process run that fails or is interrupted
    merges what it finished; a failed run of many ranks leaves its parts (for `--resume`): another rank may
    still be writing."""
    chatter = logging.getLogger("lightning.pytorch.utilities.rank_zero")  # "GPU available: …", tips
    level = chatter.level
    chatter.setLevel(logging.WARNING)
    try:
        trainer = L.Trainer(
            accelerator=opts.where.accelerator, devices=opts.where.devices, num_nodes=opts.where.num_nodes,
            strategy=opts.where.trainer_strategy, precision="32-true", logger=False, enable_checkpointing=False,
            enable_model_summary=False, enable_progress_bar=opts.progress, inference_mode=False,
            callbacks=[PartWriter(output, on_batch)],
        )
    finally:
        chatter.setLevel(level)
    finished = False
    try:
        with _keyboard_interrupt_stays(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated.*")  # Lightning's, torch 2.14
            warnings.filterwarnings("ignore", message=r".*across ranks is zero.*")  # a resumed run with nothing left
            trainer.predict(module, dataloaders=loader, return_predictions=False)
        trainer.strategy.barrier()  # every rank's parts are on disk
        finished = True
    finally:
        if not finished and merge_on_failure and trainer.world_size == 1:
            merge()  # the finished batches folded into the output, as a one-process run always did
    return merge() if trainer.is_global_zero else None


@contextlib.contextmanager
def _keyboard_interrupt_stays() -> Iterator[None]:
    """Lightning turns Ctrl-C into `sys.exit(1)` and ignores SIGINT from then on; a library call raises
    KeyboardInterrupt as before and leaves the SIGINT handler as it found it."""
    handler = signal.getsignal(signal.SIGINT) if threading.current_thread() is threading.main_thread() else None
    try:
        yield
    except SystemExit as err:
        if isinstance(err.__context__, KeyboardInterrupt):
            raise KeyboardInterrupt from None
        raise
    finally:
        if handler is not None:
            signal.signal(signal.SIGINT, handler)


def loader_for(dataset: Dataset, opts: LoopOptions, collate_fn: Callable[[list], Any]) -> DataLoader:
    """The DataLoader of a prediction loop, in input order (Lightning adds the distributed sampler)."""
    return DataLoader(dataset, batch_size=opts.batch_size, num_workers=opts.num_workers, collate_fn=collate_fn,
                      shuffle=False)
