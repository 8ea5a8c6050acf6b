"""Score a predictions file (`IMG_ID,LAT,LON`) against a benchmark's ground truth, joined on IMG_ID."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from geocore.data.datasets import read_benchmark_csv
from geocore.data.safe_io import read_csv_limited
from geocore.errors import InputError
from geocore.metrics import GeoMetrics, compute_metrics
from geocore.geo.tables import column_list, to_numbers

_HEADER_LINES = 2  # a DataFrame row i is line i + 2 of its CSV (1-based, after the header)


@dataclass
class ScoreResult:
    metrics: GeoMetrics
    skipped: dict[str, int] = field(default_factory=dict)


def _lines(rows) -> str:
    rows = list(rows)
    shown = ", ".join(str(r) for r in rows[:5])
    return shown + (f" and {len(rows) - 5} more" if len(rows) > 5 else "")


def read_predictions_csv(path: str | Path) -> pd.DataFrame:
    """Read `IMG_ID,LAT,LON` (other columns kept, at most `geocore.data.safe_io.MAX_INPUT_BYTES`); LAT/LON coerced
    to numbers, NaN where unreadable."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file (expected a predictions CSV with IMG_ID,LAT,LON)")
    df = read_csv_limited(path, "a predictions CSV with columns IMG_ID,LAT,LON", dtype={"IMG_ID": str})
    missing = [c for c in ("IMG_ID", "LAT", "LON") if c not in df.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}; found {column_list(df.columns)}")
    for col in ("LAT", "LON"):
        df[col] = to_numbers(df[col])  # text, NaN and ±inf all fail the range check later
    df["IMG_ID"] = df["IMG_ID"].fillna("").str.strip()
    df = df.copy()  # one block per dtype again: a file of thousands of columns leaves the frame fragmented
    df["_line"] = np.arange(len(df)) + _HEADER_LINES
    return df


def _problems(pred: pd.DataFrame, truth_ids: set[str]) -> dict[str, pd.Series]:
    lat, lon = pred["LAT"], pred["LON"]
    bad_coord = ~(lat.between(-90, 90) & lon.between(-180, 180))  # NaN fails between()
    return {
        "empty IMG_ID": pred["IMG_ID"] == "",
        "bad coordinates (LAT in [-90, 90], LON in [-180, 180] expected)": bad_coord,
        "duplicate IMG_ID": pred["IMG_ID"].duplicated(keep=False) & (pred["IMG_ID"] != ""),
        "IMG_ID not in the ground truth": ~pred["IMG_ID"].isin(truth_ids),
    }


def score_files(pred_path: str | Path, truth_path: str | Path, *, skip_bad: bool = False) -> ScoreResult:
    """Join predictions with truth on IMG_ID and compute the metrics.

    Bad rows (unreadable or out-of-range coordinates, duplicate IDs, IDs absent from the truth)
    raise an InputError naming their lines, or with `skip_bad` are dropped and counted.
    """
    pred = read_predictions_csv(pred_path)
    truth = read_benchmark_csv(truth_path)
    problems = _problems(pred, set(truth["IMG_ID"]))
    skipped: dict[str, int] = {}
    if not skip_bad:
        msgs = [
            f"{what} at line(s) {_lines(pred.loc[mask, '_line'])}"
            for what, mask in problems.items()
            if mask.any()
        ]
        if msgs:
            raise InputError(f"{pred_path}: " + "; ".join(msgs) + " (use --skip-bad to drop such rows)")
    else:
        drop = pd.Series(False, index=pred.index)
        for what, mask in problems.items():
            new = mask & ~drop
            if new.any():
                skipped[what] = int(new.sum())
            drop |= mask
        pred = pred[~drop]
    if pred.empty:
        raise InputError(f"{pred_path}: no predictions left to score")
    joined = pred.merge(truth[["IMG_ID", "LAT", "LON"]], on="IMG_ID", suffixes=("_pred", "_true"))
    metrics = compute_metrics(
        joined[["LAT_pred", "LON_pred"]].to_numpy(), joined[["LAT_true", "LON_true"]].to_numpy()
    )
    return ScoreResult(metrics=metrics, skipped=skipped)
