"""The per-image results file that `geocore evaluate` writes and the app's Failures page reads.

Schema (one row per image; Parquet, or CSV when the path ends in .csv):

| column | type | meaning |
|---|---|---|
| IMG_ID | str | the benchmark's image id (file name) |
| LAT, LON | float | ground truth, degrees |
| PRED_LAT, PRED_LON | float | top-1 prediction (NaN when the image failed) |
| error_km | float | great-circle error of the top-1 (NaN when failed) |
| topk_lat, topk_lon, topk_prob | list[float] | the top-k, best first (JSON strings in CSV) |
| model | str | registry name of the model |
| S3_Label, S16_Label, S365_Label | int | scene labels, when the benchmark has them |
| status | str | "ok", or "error: <why the image could not be used>" |
| truth_mass, truth_area_km2 | float | mass and area of the smallest search region holding the truth |
| area_50_km2 … area_95_km2, area_curve_km2 | float, list[float] | search-region areas (`geocore.eval.uncertainty`) |
| localizability, entropy | float | log10 km² of the 90 % region (lower = more localizable); entropy in nats |
| candidates | str | fingerprint of the gallery / cells the model scored |

Rows are written in parts as batches finish (`<output>.parts/part-NNNNNN.parquet`, each
written atomically) and merged into `<output>` at the end or on interruption, so a killed run
loses no finished batch and `--resume` carries on from parts and output alike.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import pandas as pd

from geocore.errors import InputError

LIST_COLUMNS = ("topk_lat", "topk_lon", "topk_prob", "area_curve_km2")
REQUIRED_COLUMNS = ("IMG_ID", "LAT", "LON", "PRED_LAT", "PRED_LON", "error_km", "model", "status")


def parts_dir(output: Path) -> Path:
    return output.with_name(output.name + ".parts")


def _write_table(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix.lower() == ".csv":
        out = df.copy()
        for col in LIST_COLUMNS:
            if col in out:
                out[col] = out[col].map(lambda v: json.dumps([float(x) for x in v]) if _is_list(v) else "[]")
        out.to_csv(tmp, index=False)
    else:
        df.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def _is_list(value: object) -> bool:
    return isinstance(value, (list, tuple)) or hasattr(value, "__array__")


def write_part(df: pd.DataFrame, output: Path, index: int) -> None:
    """Write one batch of rows atomically beside `output`."""
    folder = parts_dir(output)
    folder.mkdir(parents=True, exist_ok=True)
    _write_table(df, folder / f"part-{index:06d}.parquet")


def read_results(path: str | Path, data: bytes | None = None) -> pd.DataFrame:
    """Read a results file (Parquet, or CSV by its name) and check its schema.

    With `data`, the file's bytes are read from memory (an upload) and `path` only names it.
    """
    path = Path(path)
    if data is None and not path.is_file():
        raise InputError(f"{path}: no such results file")
    source = path if data is None else io.BytesIO(data)
    try:
        if path.suffix.lower() == ".csv":
            df = pd.read_csv(source, dtype={"IMG_ID": str})
            for col in LIST_COLUMNS:
                if col in df:
                    df[col] = df[col].map(lambda s: json.loads(s) if isinstance(s, str) else [])
        else:
            df = pd.read_parquet(source)
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: not a readable results file ({' '.join(str(err).split())[:160]})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"{path}: not a geocore results file; missing column(s) {', '.join(missing)}")
    return df


def collect_rows(output: Path) -> pd.DataFrame:
    """Everything finished so far: the merged output plus any parts, last write of an IMG_ID winning."""
    frames = []
    if output.is_file():
        frames.append(read_results(output))
    folder = parts_dir(output)
    if folder.is_dir():
        frames += [pd.read_parquet(p) for p in sorted(folder.glob("part-*.parquet"))]
    if not frames:
        return pd.DataFrame(columns=list(REQUIRED_COLUMNS))
    df = pd.concat(frames, ignore_index=True)
    return df.drop_duplicates("IMG_ID", keep="last").reset_index(drop=True)


def merge_parts(output: Path) -> pd.DataFrame:
    """Fold parts into `output` (atomically), then remove them."""
    df = collect_rows(output)
    _write_table(df, output)
    shutil.rmtree(parts_dir(output), ignore_errors=True)
    return df
