"""`geocore evaluate` end to end with a trivial model registered inside the test."""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from geocore.cli.main import main
from geocore.eval.evaluate import evaluate
from geocore.eval.results import parts_dir, read_results
from geocore.models.base import GeoLocator
from geocore.models.prediction import Prediction
from geocore.models.registry import create_model, register_model, unregister_model

# Four candidate places; the "model" reads the image's mean red level to pick one.
PLACES = torch.tensor([[48.8566, 2.3522], [40.7128, -74.0060], [35.6762, 139.6503], [-33.8688, 151.2093]])


class RedLevelLocator(GeoLocator):
    """Predicts PLACES[round(mean red · 3)]: a deterministic, checkable stand-in for a network."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def preprocess(self, image):
        return torch.from_numpy(np.asarray(image.resize((8, 8)), dtype=np.float32) / 255).permute(2, 0, 1)

    def candidate_points(self):
        return PLACES

    def predict(self, pixels, top_k=5, *, full=False):
        self.calls += 1
        idx = (pixels[:, 0].mean(dim=(1, 2)) * 3).round().long()
        logits = torch.full((len(pixels), len(PLACES)), -10.0)
        logits[torch.arange(len(pixels)), idx] = 10.0
        return Prediction.from_scores(logits, PLACES, min(top_k, len(PLACES)), full=full)


@pytest.fixture
def red_model():
    register_model("test-red", description="test only", random_ok=True)(lambda pretrained=None: RedLevelLocator())
    yield
    unregister_model("test-red")


@pytest.fixture
def bench(tmp_path):
    """12 images: image i is coloured so the model answers PLACES[i % 4]; truth is PLACES[(i // 4) % 4]."""
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    rows = []
    for i in range(12):
        red = round((i % 4) / 3 * 255)
        Image.new("RGB", (32, 24), (red, 40, 90)).save(img_dir / f"img{i:02d}.jpg", quality=95)
        lat, lon = PLACES[(i // 4) % 4].tolist()
        rows.append({"IMG_ID": f"img{i:02d}.jpg", "LAT": lat, "LON": lon, "S3_Label": i % 3})
    rows.append({"IMG_ID": "missing.jpg", "LAT": 0.0, "LON": 0.0, "S3_Label": 0})
    (img_dir / "img11.jpg").write_bytes(b"not a jpeg at all")  # unreadable: an error row, not a crash
    csv = tmp_path / "bench.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv, img_dir


def test_evaluate_writes_rows_and_metrics(red_model, bench, tmp_path):
    csv, img_dir = bench
    out = tmp_path / "results.parquet"
    report = evaluate(create_model("test-red"), csv, img_dir, out, batch_size=5, progress=False)
    assert report.n_missing == 1 and report.n_failed == 1
    df = read_results(out)
    assert len(df) == 12 and not parts_dir(out).exists()
    ok = df[df.status == "ok"].set_index("IMG_ID")
    # image i predicts PLACES[i % 4]: right exactly when i % 4 == (i // 4) % 4 → images 0, 5 and 10
    assert sorted(ok.index[ok.error_km < 1e-3]) == ["img00.jpg", "img05.jpg", "img10.jpg"]
    assert report.metrics.n == 11
    assert report.metrics.acc_1km == pytest.approx(3 / 11)
    row = ok.loc["img01.jpg"]
    assert (row.PRED_LAT, row.PRED_LON) == pytest.approx(tuple(PLACES[1].tolist()))
    assert len(row.topk_lat) == 4 and row.topk_prob[0] > 0.99
    assert row.S3_Label == 1 and row.model == "test-red"
    bad = df.set_index("IMG_ID").loc["img11.jpg"]
    assert bad.status.startswith("error: ") and np.isnan(bad.error_km)


def test_interrupted_run_keeps_finished_rows_and_resumes(red_model, bench, tmp_path):
    csv, img_dir = bench
    out = tmp_path / "results.parquet"
    model = create_model("test-red")

    def stop_after_two(step):
        if step == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate(model, csv, img_dir, out, batch_size=3, progress=False, on_batch=stop_after_two)
    assert len(read_results(out)) == 6  # two batches of three were finished and kept
    with pytest.raises(Exception, match="already exists; pass --resume"):
        evaluate(model, csv, img_dir, out, progress=False)
    model.calls = 0
    report = evaluate(model, csv, img_dir, out, batch_size=3, resume=True, progress=False)
    assert report.n_resumed == 6
    assert model.calls == 2  # only the six remaining images (one unreadable) were run
    df = read_results(out)
    assert len(df) == 12 and df.IMG_ID.is_unique


def test_resume_picks_up_parts_left_by_a_killed_run(red_model, bench, tmp_path):
    csv, img_dir = bench
    out = tmp_path / "results.parquet"
    evaluate(create_model("test-red"), csv, img_dir, out, batch_size=4, progress=False)
    full = read_results(out)
    # Simulate a hard kill: only part files on disk, no merged output.
    parts_dir(out).mkdir()
    full.iloc[:4].to_parquet(parts_dir(out) / "part-000000.parquet")
    out.unlink()
    report = evaluate(create_model("test-red"), csv, img_dir, out, batch_size=4, resume=True, progress=False)
    assert report.n_resumed == 4 and len(report.results) == 12


def test_evaluate_cli(red_model, bench, tmp_path, capsys):
    csv, img_dir = bench
    out = tmp_path / "r.csv"
    args = ["evaluate", "--model", "test-red", "--dataset", str(csv), "--images", str(img_dir), "--output", str(out)]
    assert main(args + ["--batch-size", "4"]) == 0
    captured = capsys.readouterr()
    assert "Street" in captured.out and "(n = 11)" in captured.out
    assert "1 image file(s)" in captured.err and "could not be read" in captured.err
    df = read_results(out)
    assert df.loc[df.IMG_ID == "img02.jpg", "topk_lat"].iloc[0][0] == pytest.approx(35.6762)
    assert main(args) == 2  # exists, no --resume
    assert "already exists" in capsys.readouterr().err
    assert main(args[:2] + ["nope"] + args[3:]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(args + ["--overwrite", "--device", "cuda:0"]) == 2
        assert "CUDA is not available" in capsys.readouterr().err
        assert len(read_results(out)) == 12  # a refused run never deletes finished work
