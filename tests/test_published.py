"""`geocore score --papers`: the papers' published figures beside a run, per threshold, with the difference."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from geocore.cli.main import main
from geocore.eval.published import PUBLISHED, THRESHOLDS_KM, dataset_from_name, published_for
from geocore.geo.coords import destination_point
from geocore.geo.distance import haversine_km

PAPERS = Path(__file__).resolve().parents[2] / "shared" / "papers"

# 20 photos, truths spread over the globe; the prediction for photo i is DISTANCES[i] km away from its truth.
DISTANCES = np.array([0.5, 0.5, 0.5, 10, 10, 10, 10, 100, 100, 100, 500, 500, 500, 500, 1000, 1000, 2000, 2000,
                      5000, 9000], dtype=float)
RUN = {r: 100.0 * float((DISTANCES <= r).mean()) for r in THRESHOLDS_KM}  # 15, 35, 50, 70, 90 %


def _truth_and_pred():
    rng = np.random.default_rng(3)
    truth = np.column_stack([rng.uniform(-60, 70, 20), rng.uniform(-179, 179, 20)])
    pred = destination_point(truth, rng.uniform(0, 360, 20), DISTANCES)
    return truth, pred


def _results_file(path: Path) -> Path:
    truth, pred = _truth_and_pred()
    pd.DataFrame({"IMG_ID": [f"p{i}.jpg" for i in range(20)], "LAT": truth[:, 0], "LON": truth[:, 1],
                  "PRED_LAT": pred[:, 0], "PRED_LON": pred[:, 1], "error_km": haversine_km(pred, truth),
                  "model": "geoclip", "status": "ok"}).to_csv(path, index=False)
    return path


def _row(out: str, label: str) -> list[str]:
    line = next(line for line in out.splitlines() if line.strip().startswith(label))
    return line.split()


def test_score_papers_prints_each_system_and_the_difference(tmp_path, capsys):
    results = _results_file(tmp_path / "geoclip_im2gps3k.csv")
    assert main(["score", "--results", str(results), "--papers"]) == 0
    out = capsys.readouterr().out
    assert "published figures on im2gps3k" in out and "file name geoclip_im2gps3k.csv" in out  # says what it picked
    mine = _row(out, "this run")
    assert [float(v) for v in mine[-5:]] == pytest.approx([RUN[r] for r in THRESHOLDS_KM])
    lines = out.splitlines()
    for k, p in enumerate(published_for("im2gps3k"), 1):
        at = next(i for i, line in enumerate(lines) if line.strip().startswith(f"{p.system} [{k}]"))
        paper = lines[at].split(f"[{k}]", 1)[1].split()
        delta = lines[at + 1].split()
        assert [float(v) for v in paper] == pytest.approx(list(p.acc))  # the paper's figures
        assert delta[0] == "Δ" and [float(v) for v in delta[1:]] == pytest.approx(  # run − paper, in points
            [RUN[r] - a for r, a in zip(THRESHOLDS_KM, p.acc)], abs=0.051)
    for system in ("GeoCLIP", "TransLocator", "GeoDecoder", "ISNs", "CPlaNet", "PlaNet"):
        assert system in out
    assert "TransLocator (Pramanick et al., ECCV 2022), Table 1" in out  # each row's source


def test_score_papers_json_and_explicit_dataset(tmp_path, capsys):
    truth, pred = _truth_and_pred()
    truth_csv, pred_csv = tmp_path / "truth.csv", tmp_path / "pred.csv"
    pd.DataFrame({"IMG_ID": [f"p{i}" for i in range(20)], "LAT": truth[:, 0], "LON": truth[:, 1]}).to_csv(truth_csv,
                                                                                                      index=False)
    pd.DataFrame({"IMG_ID": [f"p{i}" for i in range(20)], "LAT": pred[:, 0], "LON": pred[:, 1]}).to_csv(pred_csv,
                                                                                                     index=False)
    args = ["score", "--pred", str(pred_csv), "--truth", str(truth_csv), "--papers"]
    assert main(args) == 2  # neither file name says which benchmark
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--papers-dataset" in err and "yfcc26k" in err
    assert main(args + ["--papers-dataset", "YFCC25600", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    papers = out["papers"]
    assert papers["dataset"] == "yfcc26k" and papers["picked_from"] == "--papers-dataset"
    tl = next(r for r in papers["rows"] if r["system"] == "TransLocator")
    assert tl["acc_1km"] == 7.2 and tl["diff_1km"] == pytest.approx(RUN[1] - 7.2)
    assert tl["diff_2500km"] == pytest.approx(RUN[2500] - 60.6)
    assert main(args + ["--papers-dataset", "osv5m"]) == 2
    assert "no published figures" in capsys.readouterr().err


def test_figures_match_the_paper_texts():
    """Every row marked checked appears, figure for figure, in the paper text it names."""
    translocator = (PAPERS / "translocator_eccv2022.txt").read_text(encoding="utf-8")
    poster = (PAPERS / "geoclip_neurips2023_poster.txt").read_text(encoding="utf-8")
    table1 = translocator[translocator.index("Table 1: Geolocational accuracy"):translocator.index("5 Results,")]
    sections = dict(zip(("im2gps", "im2gps3k", "yfcc4k", "yfcc26k"),
                        re.split(r"Im222GPS 333k|YFCC 4k|YFCC 262626k", table1)))
    for p in PUBLISHED:
        if not p.checked:
            continue
        figures = " ".join(f"{a:g}" if "TransLocator" in p.source else f"{a}" for a in p.acc)
        if "poster" in p.source:
            assert p.dataset == "im2gps3k"
            assert "\t".join(f"{a}" for a in p.acc) in poster or "\t".join(f"{a:.1f}" for a in p.acc) in poster, p
        else:
            text = " ".join(f"{a:.1f}" for a in p.acc)
            assert text in sections[p.dataset], (p.system, p.dataset, figures)
    # The three systems each have their headline benchmark.
    assert {p.system for p in published_for("im2gps3k")} >= {"GeoCLIP", "TransLocator", "GeoDecoder"}


def test_dataset_from_file_names():
    assert dataset_from_name("runs/geoclip_IM2GPS3K.parquet") == "im2gps3k"
    assert dataset_from_name("tl_im2gps.parquet") == "im2gps"
    assert dataset_from_name("yfcc25600_results.csv") == "yfcc26k"
    assert dataset_from_name("results.parquet") is None
