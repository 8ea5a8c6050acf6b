"""CSV formula injection: cells from user-supplied names and IDs never reach a spreadsheet as formulas, numbers
stay numbers, and our own results CSVs read back exactly (geocore.data.safe_io)."""

from __future__ import annotations

import csv
import random
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from geocore.cli.main import main
from geocore.data.safe_io import FORMULA_STARTS, neutralise_cell, neutralise_frame, restore_cell, restore_frame
from geocore.eval.evaluate import evaluate
from geocore.eval.results import read_results
from geocore.models.base import GeoLocator
from geocore.models.prediction import Prediction

HOSTILE = ["=1+1", "=HYPERLINK(\"http://x\",\"y\")", "+SUM(A1:A9)", "-2+3", "@cmd", "\t=tab", "\rcr", "-", "+",
           "'=quoted", "'", "''", "=cmd|' /C calc'!A0", "-1e5x", "@", "==", "+-"]
NUMBERS = ["-33.8688", "+2", "-0", "1e-5", "-1.5E+07", ".5", "-.5", "151.2093", "7."]
PLAIN = ["a.jpg", "Zürich", "", " =space first", "x=1", "img-1.jpg", "[1, 2]"]


def _safe(cell: str) -> bool:
    """What a spreadsheet will not run: no formula start, or a plain number."""
    number = re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", cell)
    return not cell.startswith(FORMULA_STARTS) or number is not None


@pytest.mark.parametrize("value", HOSTILE)
def test_formula_cells_get_a_quote_and_come_back(value):
    out = neutralise_cell(value)
    assert out == "'" + value and restore_cell(out) == value


@pytest.mark.parametrize("value", NUMBERS + PLAIN)
def test_numbers_and_plain_text_stay_as_they_are(value):
    assert neutralise_cell(value) == value and restore_cell(value) == value


@pytest.mark.parametrize("value", [-33.8688, 0, 7, None, float("nan"), [1, 2]])
def test_non_text_is_never_touched(value):
    assert neutralise_cell(value) is value


def test_round_trip_of_random_strings():
    rng = random.Random(0)
    alphabet = "=+-@\t\r'\"a1.,eE ;|!(:)"
    for _ in range(5000):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6)))
        out = neutralise_cell(s)
        assert restore_cell(out) == s
        assert _safe(out) or out.startswith("'")


def test_frames_keep_numeric_columns_numbers(tmp_path):
    df = pd.DataFrame({"name": ["=1+1", "-2", "a"], "lon": [-151.2, -0.5, 3.0], "n": [-1, 2, 3],
                       "=col": ["x", "y", "z"]})
    out = neutralise_frame(df)
    assert out["name"].tolist() == ["'=1+1", "-2", "a"] and "'=col" in out.columns
    assert out["lon"].tolist() == [-151.2, -0.5, 3.0] and out["n"].dtype == df["n"].dtype
    path = tmp_path / "x.csv"
    out.to_csv(path, index=False)
    back = restore_frame(pd.read_csv(path, dtype={"name": str}))
    pd.testing.assert_frame_equal(back, df)


# ---- `geocore evaluate` to a .csv: IMG_IDs a spreadsheet would run ------------------------------------------


class Locator(GeoLocator):
    """PLACES[round(mean red * 3)]; the places have negative longitudes."""

    PLACES = torch.tensor([[-33.8688, -151.2093], [40.7128, -74.0060], [-22.9068, -43.1729], [64.1466, -21.9426]])

    def preprocess(self, image):
        return torch.from_numpy(np.asarray(image.resize((4, 4)), dtype=np.float32) / 255).permute(2, 0, 1)

    def candidate_points(self):
        return self.PLACES

    def predict(self, pixels, top_k=5, *, full=False):
        idx = (pixels[:, 0].mean(dim=(1, 2)) * 3).round().long()
        logits = torch.full((len(pixels), 4), -10.0)
        logits[torch.arange(len(pixels)), idx] = 10.0
        return Prediction.from_scores(logits, self.PLACES, min(top_k, 4), full=full)


IDS = ["=SUM(1+1).jpg", "-2.jpg", "+3.jpg", "@cmd.jpg", "'quoted.jpg", "-12.5", "plain.jpg", "=HYPERLINK(x).png"]


@pytest.fixture
def hostile_bench(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rows = []
    for i, img_id in enumerate(IDS):
        Image.new("RGB", (8, 8), (i * 30, 10, 10)).save(images / img_id, format="PNG")
        rows.append({"IMG_ID": img_id, "LAT": -10.0 - i, "LON": -100.5 + i})
    (images / IDS[3]).write_bytes(b"broken")  # an error row: its status text is written too
    bench = tmp_path / "bench.csv"
    pd.DataFrame(rows).to_csv(bench, index=False)
    return bench, images


def _cells(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="", encoding="utf-8") as fh:
        header, *rows = list(csv.reader(fh))
    return header, rows


def test_results_csv_is_safe_and_reads_back_exactly(hostile_bench, tmp_path, one_thread):
    bench, images = hostile_bench
    model = Locator()
    model.model_name = "test-csv"
    out = tmp_path / "results.csv"
    report = evaluate(model, bench, images, out, batch_size=3, progress=False)
    header, rows = _cells(out)
    assert all(_safe(cell) for row in rows for cell in row)
    ids = [row[header.index("IMG_ID")] for row in rows]
    assert "'=SUM(1+1).jpg" in ids and "'-2.jpg" in ids and "''quoted.jpg" in ids and "-12.5" in ids
    for col in ("LAT", "LON", "PRED_LAT", "PRED_LON", "error_km"):  # numbers, negative ones included, unquoted
        values = [row[header.index(col)] for row in rows]
        assert all(v == "" or float(v) == float(v) for v in values)
        if col in ("LAT", "LON", "PRED_LON"):  # all negative here (PRED_LON empty for the broken image)
            assert sum(v.startswith("-") for v in values) >= len(IDS) - 1
    df = read_results(out)
    assert sorted(df["IMG_ID"]) == sorted(IDS)
    pd.testing.assert_frame_equal(df.sort_values("IMG_ID").reset_index(drop=True),
                                  report.results.sort_values("IMG_ID").reset_index(drop=True), check_dtype=False)
    # resuming from the CSV matches the IDs as written: nothing is evaluated twice
    again = evaluate(model, bench, images, out, resume=True, batch_size=3, progress=False)
    assert again.n_resumed == len(IDS) and read_results(out)["IMG_ID"].is_unique


def test_a_spreadsheet_edited_results_csv_still_reads(tmp_path):
    """A quote we did not write (a user typed '=x in a spreadsheet) is still dropped: the rule is one leading '."""
    path = tmp_path / "r.csv"
    path.write_text("IMG_ID,LAT,LON,PRED_LAT,PRED_LON,error_km,model,status\n"
                    "'=x.jpg,1,2,1,2,0,m,ok\n'plain.jpg,-1,-2,-1,-2,0,m,ok\n")
    assert read_results(path)["IMG_ID"].tolist() == ["=x.jpg", "plain.jpg"]


# ---- `geocore locate --output x.csv` and `geocore cells assign` ---------------------------------------------


def test_locate_csv_neutralises_image_names(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    names = ["=cmd.jpg", "-1.jpg", "@x.png"]
    for i, name in enumerate(names):
        Image.fromarray((np.random.default_rng(i).random((40, 50, 3)) * 255).astype("uint8")).save(tmp_path / name)
    gallery = tmp_path / "g.csv"
    pd.DataFrame({"LAT": [-33.875, 40.75], "LON": [-151.25, -74.0]}).to_csv(gallery, index=False)  # exact in float32
    assert main(["locate", "--model", "geoclip-tiny", "--gallery", str(gallery), "--top-k", "2",
                 "--output", "out.csv", "--", *names]) == 0
    header, rows = _cells(tmp_path / "out.csv")
    assert all(_safe(cell) for row in rows for cell in row)
    assert {row[header.index("image")] for row in rows} == {"'=cmd.jpg", "'-1.jpg", "'@x.png"}
    assert {row[header.index("lon")] for row in rows} <= {"-151.25", "-74.0"}  # numbers stay numbers
    df = pd.read_csv(tmp_path / "out.csv")
    assert df["lon"].dtype == float and (df["lon"] < 0).all()


def test_cells_assign_keeps_input_fields_safe_and_numbers_numeric(tmp_path, capsys):
    points = tmp_path / "points.csv"
    rng = np.random.default_rng(0)
    n = 200
    names = [["=HYPERLINK(\"http://evil\")", "-1+2", "@SUM(1)", "+x", "plain"][i % 5] for i in range(n)]
    pd.DataFrame({"name": names, "LAT": (-33.8 + rng.uniform(-1, 1, n)).round(4),
                  "LON": (-70.6 + rng.uniform(-1, 1, n)).round(4)}).to_csv(points, index=False)
    part, out = tmp_path / "cells.csv", tmp_path / "assigned.csv"
    assert main(["cells", "build", "--input", str(points), "--output", str(part), "--min-images", "5",
                 "--max-images", "50"]) == 0
    assert main(["cells", "assign", "--partition", str(part), "--input", str(points), "--output", str(out)]) == 0
    header, rows = _cells(out)
    assert all(_safe(cell) for row in rows for cell in row)
    assert {row[0] for row in rows} == {"'=HYPERLINK(\"http://evil\")", "'-1+2", "'@SUM(1)", "'+x", "plain"}
    df = pd.read_csv(out)
    assert df["LAT"].dtype == float and (df["LAT"] < 0).all() and df["cell_lon"].dtype == float
    assert all(_safe(cell) for row in _cells(part)[1] for cell in row)
