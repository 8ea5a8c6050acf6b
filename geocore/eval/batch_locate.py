"""`geocore locate DIR --output FILE.csv|.parquet`: many photos located on the predict loop
(`geocore.runtime.predict_loop`) into one table."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from torch.utils.data import Dataset

from geocore.data import safe_io
from geocore.data.text import readable
from geocore.errors import InputError
from geocore.eval.results import located_table, locate_columns
from geocore.models.base import GeoLocator
from geocore.request import BoundRequest, LocateRequest
from geocore.runtime.parts import parts_dir
from geocore.runtime.predict_loop import BatchPredictor, LoopOptions, loader_for, predict_to_parts

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
                    request: LocateRequest | BoundRequest | None = None, **options: Any) -> LocatedTable | None:
    """Locate many photos on the predict loop and write one table to `output` (.csv or .parquet): the rows
    `geocore.locate.locate` + `located_table` give for the same photos, in the same order.

    `request` (or `LocateRequest.build`'s options) is checked before the loop starts and bound once per process
    (the hint scored once, not per batch). Returns the table and the skipped photos' messages on rank 0, None on
    the others."""
    from geocore.locate import locate

    output = Path(output)
    if output.suffix.lower() not in TABLE_SUFFIXES:
        raise InputError(f"--output {output}: expected a .csv or .parquet table")
    request = request if request is not None else LocateRequest.build(**options)
    bound: list[BoundRequest] = [request if isinstance(request, BoundRequest) else request.bind(model)]
    request = bound[0].request  # checked and bound once, before any process starts

    def rows(net: GeoLocator, batch: list[tuple[int, str, Path]]) -> dict[str, pd.DataFrame]:
        if bound[0].model is not net:  # a copy of the model in this process
            bound[0] = request.bind(net)
        results = locate(net, [(name, path) for _, name, path in batch], _rebatched(bound[0], len(batch)))
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


def _rebatched(bound: BoundRequest, batch_size: int) -> BoundRequest:
    """The same bound request (hint scores, cells) for batches of another size: one batch, one forward pass."""
    from dataclasses import replace

    return replace(bound, request=bound.request.with_(batch_size=max(1, batch_size)))
