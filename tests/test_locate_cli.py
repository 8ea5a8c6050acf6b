"""`geocore locate`, `text`, `embed`, `models`, `weights` as a user runs them (tiny random backbone)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from geocore.cli.main import main
from geocore.geo.distance import haversine_km, nearest_km
from geocore.locate import locate
from geocore.models.registry import create_model


@pytest.fixture(scope="module")
def tiny():
    model = create_model("geoclip-tiny")
    # a small gallery keeps these tests fast; the 100K gallery is exercised by the parity tests
    model.set_gallery(torch.tensor([[48.8566, 2.3522], [40.7128, -74.006], [35.6762, 139.6503],
                                    [-33.8688, 151.2093], [30.0444, 31.2357], [-22.9068, -43.1729]]))
    return model


def _photo(path, seed=0, gps=None):
    arr = (np.random.default_rng(seed).random((120, 160, 3)) * 255).astype("uint8")
    img = Image.fromarray(arr)
    if gps:
        exif = Image.Exif()
        lat, lon = gps
        exif[0x8825] = {1: "N" if lat >= 0 else "S", 2: (abs(lat), 0.0, 0.0),
                        3: "E" if lon >= 0 else "W", 4: (abs(lon), 0.0, 0.0)}
        img.save(path, exif=exif)
    else:
        img.save(path)
    return path


def test_locate_api_tables_exif_and_bad_files(tiny, tmp_path):
    good = _photo(tmp_path / "a.jpg", gps=(48.0, 2.0))
    results = locate(tiny, [("a.jpg", good), ("empty.jpg", b""), ("b.png", _photo(tmp_path / "b.png", 1).read_bytes())],
                     top_k=3, full=True)
    assert [r.ok for r in results] == [True, False, True]
    assert "empty" in results[1].error
    table = results[0].table
    assert list(table["rank"]) == [1, 2, 3] and table["prob"].is_monotonic_decreasing
    assert set(table["country"]) <= {"France", "United States of America", "Japan", "Australia", "Egypt", "Brazil"}
    assert results[0].prediction.probs_full.shape == (1, 6)
    assert results[0].exif_gps == pytest.approx((48.0, 2.0))
    top1 = table[["lat", "lon"]].to_numpy()[0]
    assert results[0].exif_error_km == pytest.approx(float(haversine_km(np.array([48.0, 2.0]), top1)))


def test_refinement_moves_off_the_gallery(tiny, tmp_path):
    res = locate(tiny, [("a", _photo(tmp_path / "a.jpg"))], top_k=3, refine=True)[0]
    gallery = tiny.gallery.double().numpy()
    top = res.table[["lat", "lon"]].to_numpy()
    # refined points come from dense local grids (≤ 32 km from a gallery point), usually not gallery points
    d, _ = nearest_km(top, gallery)
    assert np.all(d <= 32.01)


def test_locate_cli_folder_to_csv_and_geojson(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "photos"
    folder.mkdir()
    _photo(folder / "x.jpg", 2)
    _photo(folder / "y.png", 3)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    gal = tmp_path / "gallery.csv"
    pd.DataFrame({"LAT": [10.0, 20.0, 30.0], "LON": [5.0, 6.0, 7.0]}).to_csv(gal, index=False)
    out = tmp_path / "out.csv"
    assert main(["locate", str(folder), "--model", "geoclip-tiny", "--gallery", str(gal), "--top-k", "2",
                 "--output", str(out)]) == 0
    df = pd.read_csv(out)
    assert len(df) == 4 and set(df["image"].map(lambda p: p.split("/")[-1])) == {"x.jpg", "y.png"}
    assert set(zip(df.lat, df.lon)) <= {(10.0, 5.0), (20.0, 6.0), (30.0, 7.0)}
    err = capsys.readouterr().err
    assert "RANDOM backbone" in err and "broken.jpg" in err and "2 image(s) located, 1 skipped" in err
    gj = tmp_path / "out.geojson"
    assert main(["locate", str(folder / "x.jpg"), "--model", "geoclip-tiny", "--gallery", str(gal),
                 "--output", str(gj), "--top-k", "1"]) == 0
    fc = json.loads(gj.read_text())
    assert fc["type"] == "FeatureCollection" and len(fc["features"]) == 1
    lon, lat = fc["features"][0]["geometry"]["coordinates"]
    assert (lat, lon) in {(10.0, 5.0), (20.0, 6.0), (30.0, 7.0)}


def test_locate_cli_json_bbox_grid(tmp_path, capsys):
    photo = _photo(tmp_path / "p.jpg")
    assert main(["locate", str(photo), "--model", "geoclip-tiny", "--grid-km", "200", "--bbox", "40,-5,50,10",
                 "--json", "--top-k", "4"]) == 0
    [image] = json.loads(capsys.readouterr().out)
    rows = image["topk"]
    assert len(rows) == 4 and image["image"].endswith("p.jpg") and image["regions"] == []
    assert all(40 <= r["lat"] <= 50 and -5 <= r["lon"] <= 10 for r in rows)
    assert main(["locate", str(photo), "--model", "geoclip-tiny", "--bbox", "oops"]) == 2
    assert "SOUTH,WEST,NORTH,EAST" in capsys.readouterr().err


def test_locate_without_weights_is_one_clear_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("GEOCORE_WEIGHTS_DIR", raising=False)
    assert main(["locate", str(_photo(tmp_path / "p.jpg"))]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "geocore weights download clip-vit-l-14" in err


def test_text_cli_requires_weights_and_runs_on_tiny(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert main(["text", "Pyramids of Giza"]) == 3
    assert "geocore weights download" in capsys.readouterr().err


def test_embed_cli_rows_in_input_order(tmp_path, capsys):
    coords = tmp_path / "c.csv"
    pts = [[48.8566, 2.3522], [-33.8688, 151.2093], [90.0, 0.0], [0.0, -180.0]]
    pd.DataFrame(pts, columns=["LAT", "LON"]).to_csv(coords, index=False)
    out = tmp_path / "e.npy"
    assert main(["embed", str(coords), "--output", str(out)]) == 0
    emb = np.load(out)
    assert emb.shape == (4, 512) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    from geoclip import LocationEncoder

    ref = torch.nn.functional.normalize(LocationEncoder()(torch.tensor(pts, dtype=torch.float32)), dim=1)
    np.testing.assert_allclose(emb, ref.detach().numpy(), atol=1e-5)
    bad = tmp_path / "bad.csv"
    bad.write_text("LAT,LON\n1,2\n100,2\n")
    assert main(["embed", str(bad), "--output", str(out)]) == 2
    assert "bad rows: 3" in capsys.readouterr().err


def test_models_and_weights_status(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["geoclip"]["weights_present"] is False
    assert "geocore weights download clip-vit-l-14" in rows["geoclip"]["how_to_get"]
    assert rows["geoclip-tiny"]["weights_present"] is True
    assert main(["weights", "status", "--json"]) == 0
    status = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert status["geoclip-heads"]["present"] and status["geoclip-heads"]["size_mb"] > 10
    assert not status["clip-vit-l-14"]["present"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["weights", "download", "clip-vit-l-14"]) != 0
    assert "HF_HUB_OFFLINE=1 is set" in capsys.readouterr().err


def test_text_hint_combines_photo_and_text_distributions(tiny, tmp_path, capsys):
    photo = _photo(tmp_path / "h.jpg", 5)
    [plain] = locate(tiny, [("h", photo)], top_k=3, full=True)
    [hinted] = locate(tiny, [("h", photo)], top_k=3, hint="coastal city in South America", hint_weight=0.7)
    text = tiny.predict_text(["coastal city in South America"], top_k=1, full=True).probs_full[0]
    want = plain.prediction.probs_full[0] * text ** 0.7
    torch.testing.assert_close(hinted.prediction.probs_full[0], want / want.sum(), rtol=1e-4, atol=1e-6)
    assert hinted.extras["hint"] == {"text": "coastal city in South America", "weight": 0.7}
    [off] = locate(tiny, [("h", photo)], top_k=3, full=True, hint="anything", hint_weight=0.0)
    torch.testing.assert_close(off.prediction.probs_full, plain.prediction.probs_full)
    assert main(["locate", str(photo), "--model", "geoclip-tiny", "--hint", "  ", "--json"]) == 2
    assert "--hint: the text is empty" in capsys.readouterr().err
    assert main(["locate", str(photo), "--model", "geoclip-tiny", "--hint", "desert", "--hint-weight", "-1"]) == 2
    assert "--hint-weight" in capsys.readouterr().err
    assert main(["locate", str(photo), "--model", "geoclip-tiny", "--hint", "desert", "--json"]) == 0
    [rec] = json.loads(capsys.readouterr().out)
    assert rec["hint"] == {"text": "desert", "weight": 0.5}


def test_hints_on_a_cell_model_need_a_text_model(tmp_path):
    from geocore.errors import InputError

    tiny_cells = create_model("geodecoder", num_cells=[2, 3, 4], backbone_kwargs={"embed_dim": 32, "depth": 1,
                              "num_heads": 2, "img_size": 32}, decoder_depth=1, decoder_heads=2, decoder_mlp=32)
    with pytest.raises(InputError, match="text hints need a text model"):
        locate(tiny_cells, [("h", _photo(tmp_path / "c.jpg"))], top_k=2, hint="desert")
