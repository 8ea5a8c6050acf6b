"""Part files: each finished batch of a run written atomically beside its output
(`<output>.parts/<kind>-rank<R>-NNNNNN.parquet`), so a killed run keeps every finished batch."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from geocore.data.safe_io import atomic_path


def parts_dir(output: Path) -> Path:
    """The folder of `output`'s part files."""
    return output.with_name(output.name + ".parts")


def part_name(index: int, rank: int | None, kind: str = "part") -> str:
    return f"{kind}-{index:06d}.parquet" if rank is None else f"{kind}-rank{rank}-{index:06d}.parquet"


def write_part(df: pd.DataFrame, output: Path, index: int, rank: int | None = None, kind: str = "part") -> None:
    """Write one batch of rows atomically beside `output` (`part-rank<rank>-<index>`, or `part-<index>`;
    another `kind` than "part" is a file the results' `collect_rows` does not read)."""
    folder = parts_dir(output)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / part_name(index, rank, kind)) as tmp:
        df.to_parquet(tmp, index=False)


def next_part_index(output: Path, rank: int | None = None) -> int:
    """The index after the highest part `rank` has on disk (not a count: a merge killed mid-cleanup can leave
    gaps, and a new part must never land on an existing one)."""
    prefix = "part-" if rank is None else f"part-rank{rank}-"
    pattern = re.compile(re.escape(prefix) + r"(\d{6,})\.parquet$")
    found = (pattern.match(p.name) for p in parts_dir(output).glob("part-*.parquet"))
    return 1 + max((int(m.group(1)) for m in found if m), default=-1)
