import json

import numpy as np
import pandas as pd
import pytest

from geocore.cli.main import main
from geocore.geo.coords import destination_point


def _truth(reference_dir):
    return pd.read_csv(reference_dir / "im2gps3k_places365.csv", dtype={"IMG_ID": str})


def _write_pred(tmp_path, truth, distances_km, name="pred.csv"):
    pts = destination_point(truth[["LAT", "LON"]].to_numpy(), 45.0, distances_km)
    pred = pd.DataFrame({"IMG_ID": truth["IMG_ID"], "LAT": pts[:, 0], "LON": pts[:, 1]})
    path = tmp_path / name
    pred.to_csv(path, index=False)
    return path


def test_score_json_on_im2gps3k(tmp_path, reference_dir, capsys):
    truth = _truth(reference_dir)
    dist = np.tile([0.5, 10.0, 100.0, 500.0, 1000.0, 5000.0], len(truth) // 6 + 1)[: len(truth)]
    pred = _write_pred(tmp_path, truth, dist)
    assert main(["score", "--pred", str(pred), "--truth", str(reference_dir / "im2gps3k_places365.csv"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"n", "acc_1km", "acc_25km", "acc_200km", "acc_750km", "acc_2500km",
                        "median_km", "mean_km", "geoscore", "country_acc"}
    assert out["n"] == 2997
    assert out["acc_1km"] == pytest.approx((dist <= 1).mean())
    assert out["acc_750km"] == pytest.approx((dist <= 750).mean())
    assert out["median_km"] == pytest.approx(np.median(dist), rel=1e-6)
    assert 0 < out["country_acc"] < 1


def test_score_table(tmp_path, reference_dir, capsys):
    truth = _truth(reference_dir).head(50)
    pred = _write_pred(tmp_path, truth, np.full(50, 30.0))
    assert main(["score", "--pred", str(pred), "--truth", str(reference_dir / "im2gps3k_places365.csv")]) == 0
    out = capsys.readouterr().out
    assert "Street" in out and "Continent" in out and "2500 km" in out
    assert "100.0" in out and "0.0" in out  # 30 km: all within 200 km, none within 25 km


def test_score_names_bad_rows_and_skip_bad(tmp_path, reference_dir, capsys):
    truth = _truth(reference_dir).head(10)
    path = _write_pred(tmp_path, truth, np.full(10, 5.0))
    df = pd.read_csv(path, dtype={"IMG_ID": str})
    df.loc[2, "LAT"] = 123.0
    df.loc[4, "IMG_ID"] = "not_in_truth.jpg"
    df = pd.concat([df, df.iloc[[7]]])
    df.to_csv(path, index=False)
    truth_csv = str(reference_dir / "im2gps3k_places365.csv")
    assert main(["score", "--pred", str(path), "--truth", truth_csv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert "bad coordinates" in err and "line(s) 4" in err
    assert "not in the ground truth at line(s) 6" in err and "duplicate IMG_ID at line(s) 9, 12" in err
    assert main(["score", "--pred", str(path), "--truth", truth_csv, "--json", "--skip-bad"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["n"] == 7
    assert json.loads(captured.err.split("skipped: ")[1]) == {
        "bad coordinates (LAT in [-90, 90], LON in [-180, 180] expected)": 1,
        "duplicate IMG_ID": 2,
        "IMG_ID not in the ground truth": 1,
    }


def test_score_missing_file_and_columns(tmp_path, reference_dir, capsys):
    truth_csv = str(reference_dir / "im2gps3k_places365.csv")
    assert main(["score", "--pred", str(tmp_path / "nope.csv"), "--truth", truth_csv]) == 2
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("ID,LAT\nx,1\n")
    assert main(["score", "--pred", str(bad), "--truth", truth_csv]) == 2
    assert "missing column(s) IMG_ID, LON" in capsys.readouterr().err
