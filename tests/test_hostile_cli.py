"""Hostile strings through every CLI sink: file names, model names, hints, numbers and sizes.

Each command either completes or fails with one line and a non-zero exit, never a traceback; the good photo
beside a bad one still gets its answer; files written are valid UTF-8 and the names in them round-trip; no raw
ESC, no U+202E and no undecodable byte reaches the terminal or the report (they are shown as escapes).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import registered_tiny  # noqa: E402
from geocore.cli.main import main
from geocore.data import safe_io
from geocore.data.text import from_utf8_safe
from geocore.errors import InputError
from geocore.eval import results as results_mod
from geocore.eval.results import read_results
from geocore.uncertainty import calibration as calibration_mod
from geocore.uncertainty.calibration import Calibration, fit_calibration

pytestmark = pytest.mark.usefixtures("one_thread")

MODEL = "hostile-tiny"
# name → what the terminal must show instead (the raw name must never be printed)
GOOD_NAMES = {
    "![a](https:attacker.example).jpg": "![a](https:attacker.example).jpg",
    "[red]x[/red].jpg": "[red]x[/red].jpg",  # a folder "[red]x[" holding "red].jpg": markup shown as itself
    "t\x1b]0;pwned\x07.jpg": "t\\x1b]0;pwned\\x07.jpg",
    "c\x1b[2J.jpg": "c\\x1b[2J.jpg",
    "rtl\u202egpj.exe.jpg": "rtl\\u202egpj.exe.jpg",
    os.fsdecode(b"caf\xff.jpg"): "caf\\xff.jpg",
    "=cmd|' /C calc'!A0.jpg": "=cmd|' /C calc'!A0.jpg",
    "L" * 200 + ".jpg": "L" * 200 + ".jpg",
}
BAD_NAME = "m[/]bad.jpg"  # a folder "m[" holding "]bad.jpg", not an image


@pytest.fixture(scope="module", autouse=True)
def tiny_model():
    with registered_tiny(MODEL, grid_km=1000.0) as model:
        yield model


def _photo(path: Path, seed: int) -> None:
    arr = (np.random.default_rng(seed).random((48, 64, 3)) * 255).astype("uint8")
    with open(path, "wb") as fh:
        Image.fromarray(arr).save(fh, format="JPEG")


def _place(folder: Path, name: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> tuple[Path, list[Path]]:
    """A folder of good photos with hostile names, and one unreadable file, `m[/]bad.jpg`."""
    folder = tmp_path_factory.mktemp("hostile") / "photos"
    good = []
    for i, name in enumerate(GOOD_NAMES):
        path = _place(folder, name)
        _photo(path, i)
        good.append(path)
    _place(folder, BAD_NAME).write_bytes(b"not an image at all")
    return folder, good


def _clean(text: str) -> None:
    """Nothing that a terminal (or a browser) would run or reverse, and no traceback."""
    assert "\x1b" not in text and "\u202e" not in text and "\x07" not in text, ascii(text[:300])
    assert not any("\ud800" <= ch <= "\udfff" for ch in text), "a lone surrogate reached the output"
    assert "Traceback" not in text


def _run(capsys, args: list[str]) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    _clean(out)
    _clean(err)
    return rc, out, err


def _one_line_error(rc: int, err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert rc == 2 and lines and lines[-1].startswith("error: "), err
    assert sum(line.startswith("error") for line in lines) == 1
    for needle in needles:
        assert needle in lines[-1], lines[-1]


# ---- locate: table, --json, CSV, GeoJSON --------------------------------------------------------------------


def test_locate_table_shows_every_name_as_text(photos, capsys):
    folder, good = photos
    rc, out, err = _run(capsys, ["locate", folder, "--model", MODEL, "--top-k", "1"])
    assert rc == 0, err
    for shown in GOOD_NAMES.values():
        assert shown[:40] in out, shown  # each title, escaped
    assert "skipped" in err and "m[/]bad.jpg" in err  # the markup-looking path printed as itself


def test_locate_json_keeps_the_good_photos_beside_a_bad_one(photos, capsys):
    folder, good = photos
    rc, out, err = _run(capsys, ["locate", folder / BAD_NAME, good[0], good[5], "--model", MODEL, "--json"])
    assert rc == 0, err
    records = json.loads(out)
    assert [from_utf8_safe(r["image"]) for r in records] == [str(good[0]), str(good[5])]
    assert out.isascii() and "m[/]bad.jpg" in err


def test_locate_csv_and_geojson_are_utf8_and_names_round_trip(photos, tmp_path, capsys):
    folder, good = photos
    expected = {str(p) for p in good}
    for name in ("o.csv", "o.geojson"):
        out = tmp_path / name
        rc, _, err = _run(capsys, ["locate", folder, "--model", MODEL, "--top-k", "1", "--output", out])
        assert rc == 0, err
        text = out.read_bytes().decode("utf-8")  # valid UTF-8
        if name.endswith(".csv"):
            names = map(from_utf8_safe, safe_io.restore_frame(pd.read_csv(out, dtype=str))["image"])
        else:
            names = (from_utf8_safe(f["properties"]["image"]) for f in json.loads(text)["features"])
        assert set(names) == expected
        assert "8 image(s) located, 1 skipped" in err


def test_locate_csv_with_an_unreadable_non_utf8_name(photos, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(photos[1][0], folder / "good.jpg")
    Path(os.fsdecode(os.fsencode(folder) + b"/bad\xfe.jpg")).write_bytes(b"garbage")
    rc, _, err = _run(capsys, ["locate", folder, "--model", MODEL, "--top-k", "1", "--output", tmp_path / "o.csv"])
    assert rc == 0 and "bad\\xfe.jpg" in err


# ---- report -------------------------------------------------------------------------------------------------


def test_report_shows_names_and_writes_where_asked(photos, tmp_path, capsys):
    _, good = photos
    (tmp_path / "m[").mkdir()
    out = tmp_path / "m[/]case.html"
    chosen = [good[2], good[4], good[5], photos[0] / BAD_NAME]
    rc, _, err = _run(capsys, ["report", *chosen, "--model", MODEL, "--top-k", "1", "--no-gradcam",
                               "--hint", "a beach", "--output", out])
    assert rc == 0, err
    html = out.read_bytes().decode("utf-8")
    _clean(html)
    for i in (2, 4, 5):
        assert list(GOOD_NAMES.values())[i] in html
    assert "1 could not be read" in err


# ---- calibrate, score, evaluate -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def evaluated(photos, tmp_path_factory) -> tuple[Path, Path, list[str]]:
    """`geocore evaluate` on a benchmark whose IMG_IDs are hostile, one of them `../outside.jpg`."""
    root = tmp_path_factory.mktemp("bench")
    images = root / "images"
    images.mkdir()
    _photo(root / "outside.jpg", 99)
    ids = [n for n in GOOD_NAMES if "/" not in n and "\udcff" not in n]  # a benchmark CSV holds UTF-8 only
    for i, name in enumerate(ids):
        _photo(images / name, i)
    rows = [{"IMG_ID": n, "LAT": 10.0 * i, "LON": 5.0 * i} for i, n in enumerate(ids)]
    rows.append({"IMG_ID": "../outside.jpg", "LAT": 0.0, "LON": 0.0})
    dataset = root / "bench.csv"
    pd.DataFrame(rows).to_csv(dataset, index=False)
    out = root / "results.csv"
    rc = main(["evaluate", "--model", MODEL, "--dataset", str(dataset), "--images", str(images),
               "--output", str(out), "--batch-size", "8"])
    assert rc == 0
    return dataset, out, ids


def test_evaluate_keeps_ids_and_never_leaves_the_images_folder(evaluated, capsys):
    _, out, ids = evaluated
    capsys.readouterr()
    frame = read_results(out)
    assert list(frame["IMG_ID"]) == ids + ["../outside.jpg"]  # the IDs read back exactly
    outside = frame[frame["IMG_ID"] == "../outside.jpg"].iloc[0]
    assert outside["status"].startswith("error: refused") and "steps out" in outside["status"]
    assert np.isnan(outside["PRED_LAT"]) and (frame["status"] == "ok").sum() == len(ids)


def test_calibrate_and_score_show_a_hostile_model_name(evaluated, tmp_path, capsys):
    _, out, _ = evaluated
    frame = read_results(out)
    frame["model"] = "geoclip-tiny[/]\x1b[2J"
    hostile = tmp_path / "hostile.parquet"
    frame.to_parquet(hostile, index=False)
    cal = tmp_path / "cal.json"
    rc, out_text, err = _run(capsys, ["calibrate", "--results", hostile, "--output", cal])
    assert rc == 0, err
    assert "geoclip-tiny[/]\\x1b[2J" in out_text and Calibration.load(cal).model == "geoclip-tiny[/]\x1b[2J"
    rc, out_text, err = _run(capsys, ["score", "--results", hostile, "--calibration", cal])
    assert rc == 0, err
    rc, _, err = _run(capsys, ["locate", out.parent / "images" / "c\x1b[2J.jpg", "--model", MODEL,
                               "--calibration", cal])
    _one_line_error(rc, err, "fitted for model 'geoclip-tiny[/]\\x1b[2J'")


def test_score_prints_hostile_file_names(evaluated, tmp_path, capsys):
    dataset, _, ids = evaluated
    pred = tmp_path / "p[bold]\x1b[2J\u202e.csv"
    pd.DataFrame({"IMG_ID": ids, "LAT": 1.0, "LON": 2.0}).to_csv(pred, index=False)
    rc, out, err = _run(capsys, ["score", "--pred", pred, "--truth", dataset])
    assert rc == 0, err
    assert "p[bold]\\x1b[2J\\u202e.csv vs bench.csv" in out


# ---- options: levels, hints, outputs ------------------------------------------------------------------------


@pytest.mark.parametrize("args, needle", [
    (["--regions", "0.5,,0.9"], "--regions"),
    (["--regions", ",".join(f"0.{i}" for i in range(1, 10)) + ",0.05,0.15"], "at most 10"),
    (["--hint", "a\x00b"], "--hint"),
    (["--hint", "x" * 100_000], "at most 1,000"),
    (["--hint", "a\u202eb\x1b[2J"], "--hint"),
    (["--hint", "a", "--hint-weight", "1e38"], "--hint-weight: expected a number from 0 to 100"),
    (["--hint", "a", "--hint-weight", "nan"], "--hint-weight"),
    (["--hint-weight", "0.5"], "without --hint"),
])
@pytest.mark.parametrize("command", ["locate", "report"])
def test_bad_options_are_one_line_before_any_work(photos, tmp_path, capsys, command, args, needle):
    out = tmp_path / "case.html"
    extra = ["--output", out] if command == "report" else []
    rc, _, err = _run(capsys, [command, photos[1][0], "--model", MODEL, *extra, *args])
    _one_line_error(rc, err, needle)
    assert "RANDOM" not in err and not out.exists()  # refused before the model was loaded


def test_calibrate_levels_error_names_levels(evaluated, tmp_path, capsys):
    rc, _, err = _run(capsys, ["calibrate", "--results", evaluated[1], "--output", tmp_path / "c.json",
                               "--levels", "0.5,nan"])
    _one_line_error(rc, err, "--levels")
    assert "--regions" not in err


@pytest.mark.parametrize("argv", [
    ["locate", "{photo}", "--model", MODEL, "--output", "{tmp}/missing/o.geojson"],
    ["locate", "{photo}", "--model", MODEL, "--output", "{tmp}/o.txt"],
    ["locate", "{photo}", "--model", MODEL, "--output", "{tmp}"],
    ["report", "{photo}", "--model", MODEL, "--output", "{tmp}/afile/missing/c.html"],
    ["calibrate", "--results", "{tmp}/r.csv", "--output", "{tmp}/afile/missing/c.json"],
    ["evaluate", "--model", MODEL, "--dataset", "{tmp}/b.csv", "--images", "{tmp}", "--output", "{tmp}/afile/r.csv"],
    ["embed", "{tmp}/coords.csv", "--output", "{tmp}/missing/e.npy"],
    ["explain", "{photo}", "--model", MODEL, "--output", "{tmp}/missing/x.png"],
    ["explain", "{photo}", "--model", MODEL, "--output", "{tmp}/x.png", "--raw-map", "{tmp}/missing/x.npy"],
    ["cells", "build", "--input", "{tmp}/coords.csv", "--output", "{tmp}/afile/p.csv"],
])
def test_outputs_are_checked_before_the_analysis(photos, tmp_path, capsys, argv):
    pd.DataFrame({"LAT": [1.0], "LON": [2.0]}).to_csv(tmp_path / "coords.csv", index=False)
    (tmp_path / "afile").write_text("a file where report, calibrate, evaluate and cells would make the folder")
    args = [a.format(photo=photos[1][0], tmp=tmp_path) for a in argv]
    rc, _, err = _run(capsys, args)
    _one_line_error(rc, err, "--")
    assert "RANDOM" not in err  # nothing was loaded
    assert not (tmp_path / "missing").exists() and not (tmp_path / "o.txt").exists()


# ---- oversized numbers and files ----------------------------------------------------------------------------

HUGE = "9" * 5000  # past Python's 4,300-digit limit for int("…")


def _calibration_dict() -> dict:
    return fit_calibration(np.linspace(0.1, 0.9, 20), levels=(0.5, 0.9), model="m", fingerprint="f").to_dict()


@pytest.mark.parametrize("field", ["n", "levels", "masses", "model", "fingerprint", "version", "extra"])
def test_calibration_with_a_huge_integer_is_one_line(tmp_path, field):
    data = _calibration_dict()
    data[field] = ["HUGE"] if field in ("levels", "masses") else "HUGE"
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(data).replace('"HUGE"', HUGE))
    if field == "extra":  # an unknown field is ignored, however long its number
        assert Calibration.load(path).n == 20
        return
    with pytest.raises(InputError) as err:
        Calibration.load(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and f"'{field}'" in msg and "5,000 digits" in msg, msg


def test_huge_integers_through_locate_and_score(evaluated, tmp_path, capsys):
    cal = tmp_path / "cal.json"
    cal.write_text(json.dumps(_calibration_dict()).replace('"n": 20', f'"n": {HUGE}'))
    rc, _, err = _run(capsys, ["locate", evaluated[1].parent / "images" / "c\x1b[2J.jpg", "--model", MODEL,
                               "--calibration", cal])
    _one_line_error(rc, err, "field 'n'", str(cal))
    rc, _, err = _run(capsys, ["score", "--results", evaluated[1], "--calibration", cal])
    _one_line_error(rc, err, "field 'n'")


@pytest.mark.parametrize("column, value", [
    ("LAT", HUGE), ("error_km", HUGE), ("truth_mass", HUGE), ("topk_lat", f"[{HUGE}]"),
    ("topk_prob", f"[1.0, {HUGE}]"), ("S3_Label", HUGE), ("area_curve_km2", f"[{HUGE}]"),
])
def test_results_with_huge_numbers_are_one_line(evaluated, tmp_path, column, value):
    frame = pd.read_csv(evaluated[1], dtype=str, keep_default_na=False)
    frame[column] = frame[column] if column in frame else ""
    frame.loc[0, column] = value
    path = tmp_path / "results.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(InputError) as err:
        read_results(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and column in msg and len(msg) < 1500, msg


def test_oversized_and_endless_inputs_are_refused(evaluated, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(safe_io, "MAX_INPUT_BYTES", 1000)
    monkeypatch.setattr(calibration_mod, "MAX_CALIBRATION_BYTES", 500)
    monkeypatch.setattr(results_mod, "MAX_RESULTS_BYTES", 1000)
    big = tmp_path / "big.csv"
    big.write_text("LAT,LON\n" + "1.0,2.0\n" * 300)
    cal = tmp_path / "cal.json"
    cal.write_text(json.dumps(_calibration_dict()) + " " * 600)
    photo = str(evaluated[1].parent / "images" / "c\x1b[2J.jpg")
    cases = [
        (["locate", photo, "--model", MODEL, "--calibration", cal], "over the 500 allowed"),
        (["locate", photo, "--model", MODEL, "--calibration", "/dev/zero"], "/dev/zero: not a regular file"),
        (["locate", photo, "--model", MODEL, "--gallery", big], "over the 1,000 allowed"),
        (["score", "--results", evaluated[1]], "over the 1,000 allowed"),
        (["score", "--pred", big, "--truth", evaluated[0]], "over the 1,000 allowed"),
        (["evaluate", "--model", MODEL, "--dataset", big, "--images", tmp_path, "--output", tmp_path / "r.csv"],
         "over the 1,000 allowed"),
        (["cells", "build", "--input", big, "--output", tmp_path / "p.csv"], "over the 1,000 allowed"),
        (["embed", big, "--output", tmp_path / "e.npy"], "over the 1,000 allowed"),
    ]
    for args, needle in cases:
        rc, _, err = _run(capsys, args)
        _one_line_error(rc, err, needle)
        assert "RANDOM" not in err


def test_a_pipe_is_read_to_the_limit_and_no_further():
    read, write = os.pipe()
    writer = threading.Thread(target=lambda: (os.write(write, b"x" * 5000), os.close(write)))
    writer.start()
    with pytest.raises(InputError, match=r"more than the 1,000 bytes allowed for a thing"):
        safe_io.read_limited(f"/dev/fd/{read}", "a thing", 1000)
    writer.join()
    os.close(read)
