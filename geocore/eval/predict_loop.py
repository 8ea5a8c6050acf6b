"""Batch inference on PyTorch Lightning's predict loop: one CPU, one GPU, many GPUs and many nodes are one call.

`evaluate` and `geocore locate DIR --output FILE.csv|.parquet` run here. Every process (rank) predicts its share of
the inputs (Lightning's `DistributedSampler` for prediction, which neither repeats nor drops an input) and writes
each finished batch as its own part file, atomically (`<output>.parts/part-rank<R>-NNNNNN.parquet`); after a
barrier, rank 0 merges the parts into one result in the input order. A killed run keeps every finished part, so a
resumed run of any number of ranks skips what any rank wrote.

More than one device or node runs DDP the way `geocore train` does (`geocore.train.fit`): Lightning starts the
other local processes itself by running the same command again, and SLURM (`srun`) or `torchrun` start them on
each node. The output must sit on a file system every rank sees. Precision is geocore's own context
(`geocore.models.precision.use_precision`) inside `predict_step`, not Lightning's precision plugin, so the parts
that must stay float32 (GeoCLIP's location encoder, the gallery scan) do.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
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

from geocore.data import safe_io
from geocore.data.text import readable
from geocore.errors import InputError
from geocore.eval.results import located_table, locate_columns, next_part_index, parts_dir, write_part
from geocore.models.base import GeoLocator
from geocore.models.precision import resolve_precision, use_precision

ACCELERATORS = ("auto", "cpu", "gpu", "cuda")
STRATEGIES = ("auto", "ddp")  # ddp: one process per device, started by Lightning, torchrun or SLURM
T = TypeVar("T")
Rows = pd.DataFrame | dict[str, pd.DataFrame] | None  # one batch's rows, or rows of several kinds (one file each)


@dataclass(frozen=True)
class LoopOptions:
    """Where and how a prediction loop runs, as Lightning's Trainer takes it (`devices` per node)."""

    accelerator: str = "auto"
    devices: int | list[int] = 1
    num_nodes: int = 1
    strategy: str | None = None  # None: ddp when more than one device or node, else Lightning's auto
    precision: str = "fp32"  # geocore's: auto | fp32 | bf16
    batch_size: int = 32  # per device
    num_workers: int = 0
    progress: bool = True

    @property
    def distributed(self) -> bool:
        return self.num_nodes > 1 or (isinstance(self.devices, int) and self.devices > 1)

    @property
    def trainer_strategy(self) -> str:
        """The strategy rule of `geocore.train.fit`: ddp when more than one device or node, else auto."""
        return self.strategy or ("ddp" if self.distributed else "auto")


def loop_options(*, device: str | None = None, accelerator: str | None = None, devices: int | None = None,
                 num_nodes: int | None = None, strategy: str | None = None, precision: str = "fp32",
                 batch_size: int = 32, num_workers: int = 0, progress: bool = True) -> LoopOptions:
    """Check the command's options (naming the bad one) and turn them into `LoopOptions`.

    `device` is the older `--device cpu|cuda|cuda:N` (one device); it cannot be combined with `--accelerator` or
    `--devices`. Checked before any file is touched or any process started."""
    resolve_precision(precision)  # an unknown name is an InputError naming --precision
    if device is not None:
        if accelerator is not None or devices is not None:
            raise InputError(f"--device {device}: pass either --device or --accelerator/--devices, not both")
        accelerator, devices = _from_device(device)
    accelerator = (accelerator or "auto").lower()
    if accelerator not in ACCELERATORS:
        raise InputError(f"--accelerator {accelerator}: expected one of {', '.join(ACCELERATORS)}")
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise InputError(f"--accelerator {accelerator}: CUDA is not available on this machine (use --accelerator cpu)")
    if strategy is not None and strategy.lower() not in STRATEGIES:
        raise InputError(f"--strategy {strategy}: expected one of {', '.join(STRATEGIES)} (ddp runs one process per "
                         "device, started by Lightning, torchrun or SLURM)")
    for name, value in (("--devices", devices), ("--num-nodes", num_nodes), ("--batch-size", batch_size)):
        if isinstance(value, int) and value < 1:
            raise InputError(f"{name} {value}: expected a whole number >= 1")
    if num_workers < 0:
        raise InputError(f"--workers {num_workers}: expected a whole number >= 0")
    return LoopOptions(accelerator=accelerator, devices=devices if devices is not None else 1,
                       num_nodes=num_nodes or 1, strategy=strategy.lower() if strategy else None,
                       precision=precision, batch_size=batch_size, num_workers=num_workers, progress=progress)


def _from_device(device: str) -> tuple[str, int | list[int]]:
    """`cpu`, `cuda` or `cuda:N` → (accelerator, devices); a clear error when CUDA is asked for and absent."""
    if device == "cpu":
        return "cpu", 1
    if device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        if not torch.cuda.is_available():
            raise InputError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
        return "gpu", [int(device[5:])] if ":" in device else 1
    raise InputError(f"--device {device}: expected cpu, cuda or cuda:N")


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
            accelerator=opts.accelerator, devices=opts.devices, num_nodes=opts.num_nodes,
            strategy=opts.trainer_strategy, precision="32-true", logger=False, enable_checkpointing=False,
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


# ---- `geocore locate DIR --output FILE.csv|.parquet` --------------------------------------------------------------

TABLE_SUFFIXES = (".csv", ".parquet")


class _Photos(Dataset):
    """(position, name, path) of each photo; the model's loader reads it inside `predict_step`."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.items = [(i, str(p), p) for i, p in enumerate(paths)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[int, str, Path]:
        return self.items[i]


@dataclass
class LocatedTable:
    """What `locate_to_table` wrote (rank 0): the table, and a message for each photo that could not be read."""

    table: pd.DataFrame
    errors: list[str]


def locate_to_table(model: GeoLocator, paths: Sequence[Path], output: Path, opts: LoopOptions,
                    **locate_kwargs: Any) -> LocatedTable | None:
    """Locate many photos on the predict loop and write one table to `output` (.csv or .parquet): the rows
    `geocore.locate.locate` + `located_table` give for the same photos, in the same order.

    `locate_kwargs` are `geocore.locate.locate`'s (top_k, refine, regions, calibration, hint, hint_weight,
    tencrop); they are checked before the loop starts. Returns the table and the skipped photos' messages on
    rank 0, None on the others."""
    from geocore.locate import locate

    output = Path(output)
    if output.suffix.lower() not in TABLE_SUFFIXES:
        raise InputError(f"--output {output}: expected a .csv or .parquet table")
    locate(model, [], **locate_kwargs)  # every option checked once, before any process starts

    def rows(net: GeoLocator, batch: list[tuple[int, str, Path]]) -> dict[str, pd.DataFrame]:
        results = locate(net, [(name, path) for _, name, path in batch], batch_size=len(batch), **locate_kwargs)
        ok = [(pos, res) for (pos, _, _), res in zip(batch, results) if res.ok]
        table = located_table([res for _, res in ok])
        table.insert(0, "_pos", [pos for pos, res in ok for _ in range(len(res.table))])
        failed = pd.DataFrame({"_pos": [pos for (pos, _, _), res in zip(batch, results) if not res.ok],
                               "error": [readable(res.error) for res in results if not res.ok]})
        return {"part": table, "failed": failed}  # two files: a table of answers keeps its column types

    def merge() -> LocatedTable:
        def read(kind: str, key: list[str]) -> pd.DataFrame:
            frames = [pd.read_parquet(p) for p in sorted(parts_dir(output).glob(f"{kind}-*.parquet"))]
            df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({k: [] for k in key})
            df = df.drop_duplicates(key)  # safety: no photo twice
            return df.iloc[df["_pos"].argsort(kind="stable")].drop(columns="_pos").reset_index(drop=True)

        table = locate_columns(read("part", ["_pos", "rank"]))
        errors = read("failed", ["_pos", "error"])["error"].tolist()
        if output.suffix.lower() == ".csv":  # names, places: no spreadsheet formulas
            safe_io.write_text_atomic(output, safe_io.to_csv_text(table))
        else:
            with safe_io.atomic_path(output) as tmp:
                table.to_parquet(tmp, index=False)
        shutil.rmtree(parts_dir(output), ignore_errors=True)
        return LocatedTable(table, errors)

    shutil.rmtree(parts_dir(output), ignore_errors=True)  # a table is made whole each time (before any rank writes)
    output.parent.mkdir(parents=True, exist_ok=True)
    module = BatchPredictor(model, rows, opts.precision)
    return predict_to_parts(module, loader_for(_Photos(paths), opts, list), output, opts, merge)
