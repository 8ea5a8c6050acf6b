"""`geocore refs build|info` and `geocore locate --refs`, as a user runs them."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest
from PIL import Image

from conftest import registered_tiny  # noqa: E402
from geocore.cli.main import main
from test_refs import _jpeg, _photo  # noqa: E402  (the same generated photos)

MODEL = "refs-cli-tiny"
PLACES = [(48.8584, 2.2945), (40.6892, -74.0445), (-33.8568, 151.2153), (35.6586, 139.7454), (-22.9519, -43.2105),
          (30.0444, 31.2357), (51.5007, -0.1246), (55.7539, 37.6208)]


@pytest.fixture(scope="module", autouse=True)
def tiny_model():
    with registered_tiny(MODEL, seed=0) as model:
        yield model


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("refs_cli")
    images = root / "images"
    images.mkdir()
    rows = []
    for i, (lat, lon) in enumerate(PLACES):
        (images / f"r{i}.jpg").write_bytes(_jpeg(_photo(100 + i)))
        rows.append({"IMG_ID": f"r{i}.jpg", "LAT": lat, "LON": lon, "note": f"site {i}"})
    rows.append({"IMG_ID": "nan.jpg", "LAT": float("nan"), "LON": 0.0, "note": "no GPS"})
    (images / "nan.jpg").write_bytes(_jpeg(_photo(99)))
    csv = root / "refs.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    out = root / "REFS"
    assert main(["refs", "build", str(csv), "--images", str(images), "--output", str(out), "--model", MODEL,
                 "--accelerator", "cpu"]) == 0
    return root, images, out


def test_build_lists_skips_and_info_says_where(built, capsys):
    _, _, out = built
    assert main(["refs", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "8 references" in text and "thumbnails: no" in text
    assert "France" in text and "Japan" in text and "Europe" in text


def test_locate_with_refs_answers_at_the_reference_of_a_copy(built, capsys, tmp_path):
    root, images, out = built
    original = Image.open(images / "r2.jpg").convert("RGB")
    copy = original.resize((int(original.width * 0.9), int(original.height * 0.9)))
    buf = io.BytesIO()
    copy.save(buf, format="JPEG", quality=85)
    query = tmp_path / "copy.jpg"
    query.write_bytes(buf.getvalue())
    capsys.readouterr()
    assert main(["locate", str(query), "--model", MODEL, "--refs", str(out), "--refs-k", "3", "--json"]) == 0
    [rec] = json.loads(capsys.readouterr().out)
    top = rec["topk"][0]
    assert abs(top["lat"] - PLACES[2][0]) < 0.01 and abs(top["lon"] - PLACES[2][1]) < 0.01  # within ~1 km
    assert rec["references"][0]["IMG_ID"] == "r2.jpg" and len(rec["references"]) == 3
    # the very file of a reference never finds itself
    assert main(["locate", str(images / "r2.jpg"), "--model", MODEL, "--refs", str(out), "--json"]) == 0
    [same] = json.loads(capsys.readouterr().out)
    assert "r2.jpg" not in [r["IMG_ID"] for r in same["references"]]
    # the table view names the section
    assert main(["locate", str(query), "--model", MODEL, "--refs", str(out)]) == 0
    assert "similar reference photos" in capsys.readouterr().out


def test_bad_reference_sets_are_one_line(built, capsys, tmp_path):
    root, images, out = built
    assert main(["locate", str(images / "r0.jpg"), "--model", MODEL, "--refs", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert main(["locate", str(images / "r0.jpg"), "--model", "geoclip-tiny", "--refs", str(out)]) == 2
    assert "refs" in capsys.readouterr().err.lower()


def test_evaluate_with_refs_leaves_out_benchmark_photos_and_calibration_records_the_set(built, capsys, tmp_path):
    """evaluate --refs hides references that ARE benchmark photos (by ID and by file) and says how many; a
    calibration fitted on its results is refused without the same reference set."""
    import shutil

    root, images, out = built
    bench_images = tmp_path / "bench"
    bench_images.mkdir()
    shutil.copy(images / "r1.jpg", bench_images / "r1.jpg")  # same ID as a reference
    shutil.copy(images / "r3.jpg", bench_images / "other.jpg")  # same file, another ID
    (bench_images / "new.jpg").write_bytes(_jpeg(_photo(7)))
    rows = [{"IMG_ID": "r1.jpg", "LAT": PLACES[1][0], "LON": PLACES[1][1]},
            {"IMG_ID": "other.jpg", "LAT": PLACES[3][0], "LON": PLACES[3][1]},
            {"IMG_ID": "new.jpg", "LAT": 10.0, "LON": 10.0}]
    csv = tmp_path / "bench.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    results = tmp_path / "r.parquet"
    assert main(["evaluate", "--model", MODEL, "--dataset", str(csv), "--images", str(bench_images), "--output",
                 str(results), "--refs", str(out), "--accelerator", "cpu"]) == 0
    assert "6 used, 2 left out because they are benchmark photos" in " ".join(capsys.readouterr().err.split())
    frame = pd.read_parquet(results)
    from geocore.refs import load_reference_set

    assert (frame["refs"] == load_reference_set(out).set_fingerprint).all()
    # the benchmark's own photos never answer: r1's row is not at r1's GPS (it would be, with its own reference)
    r1 = frame.set_index("IMG_ID").loc["r1.jpg"]
    assert abs(r1["PRED_LAT"] - PLACES[1][0]) > 0.01 or abs(r1["PRED_LON"] - PLACES[1][1]) > 0.01
    cal = tmp_path / "cal.json"
    assert main(["calibrate", "--results", str(results), "--output", str(cal)]) == 0
    assert json.loads(cal.read_text())["refs"]
    capsys.readouterr()
    assert main(["locate", str(bench_images / "new.jpg"), "--model", MODEL, "--calibration", str(cal)]) == 2
    assert "without reference photos" in capsys.readouterr().err
    assert main(["locate", str(bench_images / "new.jpg"), "--model", MODEL, "--calibration", str(cal),
                 "--refs", str(out)]) == 0
