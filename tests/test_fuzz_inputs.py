"""Hostile files, seeded: every reader returns what it reads or raises the project's one-line error, nothing else.

Images: a few hundred mutations of valid JPEG, PNG, WebP, HEIC, TIFF and GIF files (the engine and the 5,000-case
run are `bench/bench_fuzz.py`), crafted headers past every limit, bogus and deep EXIF, decompression bombs at a
small limit: `load_image`, `read_exif_gps`, `read_exif_info` give an image (None, a dict) or `ImageError`, within
2 s and a bounded peak of memory per file. Tables: every CSV and JSON reader against a table of hostile inputs
(bad UTF-8, binary, missing and extra columns and fields, huge fields, NaN and infinite coordinates, empty files)
and a seeded mutation loop: an `InputError` of one line naming the file (and the line, where there is one).
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import random
import re
import struct
import sys
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from geocore.cli.main import main
from geocore.data.images import load_image, read_exif_gps, read_exif_info
from geocore.errors import ImageError, InputError


def _load_bench():
    path = Path(__file__).resolve().parents[1] / "bench" / "bench_fuzz.py"
    spec = importlib.util.spec_from_file_location("bench_fuzz", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


fuzz = _load_bench()


# ---- images -------------------------------------------------------------------------------------------------


def _no_bugs(outcomes) -> None:
    bad = [f"{o.fmt} {o.kind}: {'; '.join(fuzz.bugs(o))}" for o in outcomes if fuzz.bugs(o)]
    assert not bad, "\n".join(bad)


def test_mutated_images_give_an_image_or_an_image_error():
    cases = list(fuzz.cases(360, seed=20240601, crafted=False, bombs=False))
    outcomes = [fuzz.run_case(*case) for case in cases]
    _no_bugs(outcomes)  # no other exception, <= 2 s, <= 768 MB peak per file
    seen = Counter((o.fmt, o.result) for o in outcomes)
    for fmt in {o.fmt for o in outcomes}:  # the mutations reach both outcomes in every format
        assert seen[(fmt, "image")] > 5 and seen[(fmt, "ImageError")] > 5, seen
    assert {o.fmt for o in outcomes} >= {"JPEG", "PNG", "WEBP", "TIFF", "GIF"}
    assert max(o.seconds for o in outcomes) < fuzz.MAX_SECONDS


def test_heic_can_be_fuzzed_here():
    """pillow_heif encodes HEIC in this environment, so HEIC seeds are real (the fuzz would skip them otherwise)."""
    pytest.importorskip("pillow_heif")
    assert len(fuzz.seed_files().get("HEIC", [])) == 2


def test_crafted_hostile_files():
    cases = fuzz.crafted_cases()
    outcomes = {(o.fmt, o.kind): o for o in (fuzz.run_case(*case) for case in cases)}
    _no_bugs(outcomes.values())
    for key in [("PNG", "bomb-400MP-header"), ("PNG", "bomb-95MP-header"), ("PNG", "header-2^31"), ("GIF", "header-65535x65535"),
                ("TIFF", "header-4G-pixels"), ("TIFF", "bomb-88MP-rgb-one-strip"), ("JPEG", "sof-65535x65535"),
                ("WEBP", "bomb-16383x5000")]:
        assert outcomes[key].result == "ImageError" and outcomes[key].rss_mb < 64, key  # refused before decoding
    for (fmt, kind), o in outcomes.items():
        if kind.startswith("exif-"):  # bad EXIF never rejects pixels that decode
            assert o.result == "image" and o.exif == "ok", (fmt, kind, o)


@pytest.mark.parametrize("kind", fuzz.EXIF_KINDS)
def test_exif_readers_shrug_off_bad_exif(kind):
    blob = fuzz.bogus_exif(kind, random.Random(kind))
    for data in (fuzz.jpeg_insert_app1(fuzz._save(Image.new("RGB", (8, 8)), "JPEG"), blob),
                 fuzz.tiff_with_exif(blob)):
        assert read_exif_gps(data, name="x") is None
        info = read_exif_info(data, name="x")
        assert set(info) == {"datetime_original", "offset_time_original", "datetime", "make", "model"}
        assert all(v is None or (isinstance(v, str) and len(v) <= 200) for v in info.values())
        assert load_image(data).mode == "RGB"


def _peak_mb(fn):
    if not fuzz._reset_peak():
        return fn(), None
    base = fuzz._status_kb("VmRSS")
    out = fn()
    return out, (fuzz._status_kb("VmHWM") - base) / 1024


@pytest.mark.parametrize("color_type", [0, 2, 3, 6])
def test_png_bombs_are_decoded_within_the_budget(color_type):
    """A 9 MP bomb of a few KB under a 10 MP limit: decoded, in < 2 s, in no more than 8 bytes a pixel (the
    budget the loader keeps to: max_pixels x 8 bytes) plus the 2048-px result, its resampling buffer and the
    interpreter's churn (64 MB)."""
    w = h = 3000
    data = fuzz.png_bomb(w, h, color_type)
    assert len(data) < 100_000
    import time

    t0 = time.process_time()  # CPU time: the shared test machine's wall clock also counts waiting for a CPU
    img, peak = _peak_mb(lambda: load_image(data, name="bomb.png", max_pixels=10_000_000))
    assert time.process_time() - t0 < 2.0
    assert img.size == (2048, 2048) and img.mode == "RGB"
    if peak is not None:
        assert peak < w * h * 8 / 2**20 + 64, peak
    with pytest.raises(ImageError, match=r"bomb\.png is too large: 3000x3000 = 9,000,000 pixels"):
        load_image(data, name="bomb.png", max_pixels=8_000_000)


def test_decoders_that_need_more_memory_get_fewer_pixels():
    """WebP decodes through three full-size RGBA buffers and libtiff reads whole strips: their pixel limit is the
    memory budget (max_pixels x 8 bytes) over what a pixel costs them."""
    webp = fuzz.webp_canvas(3000, 2000)  # 6 MP x 18 bytes = 108 MB
    with pytest.raises(ImageError, match=r"w\.webp is too large: decoding a 3000x2000 WEBP takes about 108 MB"):
        load_image(webp, name="w.webp", max_pixels=13_000_000)  # budget 104 MB
    img, peak = _peak_mb(lambda: load_image(webp, name="w.webp", max_pixels=13_500_000))  # budget 108 MB
    assert img.size == (2048, 1365) and img.getpixel((5, 5)) == (200, 30, 30)
    assert peak is None or peak < 108 + 64, peak
    tiff = fuzz.tiff_bomb(3000, 2000, data=False)  # 6 MP x 16 bytes = 96 MB
    with pytest.raises(ImageError, match=r"t\.tif is too large: decoding a 3000x2000 TIFF"):
        load_image(tiff, name="t.tif", max_pixels=11_000_000)  # budget 88 MB
    png = fuzz.png_bomb(3000, 2000, 6)[:200]  # PNG: the pixel limit alone
    with pytest.raises(ImageError, match="truncated or corrupt"):
        load_image(png, name="p.png", max_pixels=6_000_000)



@pytest.mark.parametrize("exc", [OSError("x"), SyntaxError("x"), ValueError("x"), EOFError("x"), IndexError("x"),
                                 TypeError("x"), KeyError("x"), struct.error("x"), zlib.error("x"),
                                 RuntimeError("Failed to decode image"), RecursionError("deep"),
                                 NotImplementedError("x"), MemoryError(), OverflowError("x"), ZeroDivisionError()])
@pytest.mark.parametrize("where", ["open", "load"])
def test_every_decoder_exception_becomes_an_image_error(monkeypatch, exc, where):
    data = fuzz._save(Image.new("RGB", (4, 4)), "PNG")
    if where == "open":
        monkeypatch.setattr(Image, "open", lambda *a, **k: (_ for _ in ()).throw(exc))
    else:
        from PIL import ImageFile

        monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: (_ for _ in ()).throw(exc))
    with pytest.raises(ImageError, match=r"^photo\.png is (truncated or corrupt|too large)") as err:
        load_image(data, name="photo.png")
    assert "\n" not in str(err.value)


def test_heif_security_limit_reads_as_too_large(monkeypatch):
    from PIL import ImageFile

    data = fuzz._save(Image.new("RGB", (4, 4)), "PNG")
    boom = RuntimeError("Memory allocation error: Security limit exceeded: Image size 65536x65536 exceeds the maximum")
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: (_ for _ in ()).throw(boom))
    with pytest.raises(ImageError, match=r"^p\.heic is too large to decode safely"):
        load_image(data, name="p.heic")


def test_mutated_files_on_disk_are_named_by_their_path(tmp_path):
    for i, (fmt, kind, data) in enumerate(fuzz.cases(60, seed=7, crafted=False, bombs=False)):
        path = tmp_path / f"case{i}.{fmt.lower()}"
        path.write_bytes(data)
        try:
            assert load_image(path).mode == "RGB"
        except ImageError as err:
            assert str(path) in str(err) and "\n" not in str(err), (kind, err)


# ---- tables -------------------------------------------------------------------------------------------------

SEEDS = fuzz.table_seeds()
COORD = {"benchmark": "LAT", "predictions": "LAT", "partition": "latitude_mean", "points": "LAT", "gallery": "LAT",
         "results-csv": "LAT"}
TEXT = {"benchmark": "IMG_ID", "predictions": "IMG_ID", "partition": "hex_id", "points": "name",
        "results-csv": "IMG_ID"}
LINE3 = r"(line|rows?)\D{0,12}\b3\b"  # "line 3", "line(s) 3", "bad rows: 3", "row 3"
OK, ANY = "ok", "any"


@pytest.fixture(scope="module")
def readers(tmp_path_factory):
    truth = tmp_path_factory.mktemp("truth") / "truth.csv"
    truth.write_bytes(SEEDS["benchmark"][1])
    return fuzz.table_readers(truth)


def _rows(reader: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(SEEDS[reader][1].decode())))


def _csv(rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue().encode()


def _set(reader: str, column: str | None, value: str, line: int = 3) -> bytes | None:
    """The valid file with `column` on CSV line `line` set to `value` (None when the reader has no such column)."""
    if column is None:
        return None
    rows = _rows(reader)
    rows[line - 1][rows[0].index(column)] = value
    return _csv(rows)


def _lines(reader: str, edit) -> bytes:
    lines = SEEDS[reader][1].split(b"\n")
    edit(lines)
    return b"\n".join(lines)


def _drop(reader: str, column: str) -> bytes:
    rows = _rows(reader)
    i = rows[0].index(column)
    return _csv([r[:i] + r[i + 1:] for r in rows])


def _add_column(reader: str, name: str, value: str = "x") -> bytes:
    rows = _rows(reader)
    return _csv([rows[0] + [name]] + [r + [value] for r in rows[1:] if r])


def _extra_field(reader: str, line: int) -> bytes:
    return _lines(reader, lambda ls: ls.__setitem__(line - 1, ls[line - 1] + b",surplus"))


_RNG = random.Random(99)
GARBAGE = bytes(_RNG.randrange(256) for _ in range(4096))
PNG = fuzz._save(Image.new("RGB", (16, 16), (200, 0, 0)), "PNG")

# case → (make the file's bytes from the reader's name (None: not applicable), what must happen)
CASES = {
    "empty": (lambda r: b"", r"is empty"),
    "blank lines": (lambda r: b"\n  \n\r\n", r"is empty"),
    "only a BOM": (lambda r: b"\xef\xbb\xbf", r"is empty"),
    "header only": (lambda r: SEEDS[r][1].split(b"\n")[0] + b"\n", ANY),
    "BOM and CRLF": (lambda r: b"\xef\xbb\xbf" + SEEDS[r][1].replace(b"\n", b"\r\n"), OK),
    "bad UTF-8 on line 3": (lambda r: _lines(r, lambda ls: ls.__setitem__(2, ls[2] + b"\xff\xfe")),
                            r"line 3: not UTF-8"),
    "UTF-16": (lambda r: SEEDS[r][1].decode().encode("utf-16"), r"line 1: not UTF-8"),
    "NUL on line 2": (lambda r: _lines(r, lambda ls: ls.__setitem__(1, b"\0" + ls[1])), r"line 2: a NUL byte"),
    "binary garbage": (lambda r: GARBAGE, r"not UTF-8|NUL byte"),
    "a PNG": (lambda r: PNG, r"line 1: not UTF-8"),
    "coordinate column missing": (lambda r: _drop(r, COORD[r]), r"(missing|lacks|needs).*LAT|latitude_mean"),
    "extra column": (lambda r: _add_column(r, "extra"), OK),
    "extra field on line 3": (lambda r: _extra_field(r, 3), r"line 3"),
    "extra field on line 2": (lambda r: _extra_field(r, 2), r"line 2 has more fields than the header"),
    "unterminated quote": (lambda r: _lines(r, lambda ls: ls.__setitem__(2, b'"' + ls[2])),
                           r"EOF inside string|line 3"),  # (results CSVs have quotes of their own to pair with)
    "NaN coordinate": (lambda r: _set(r, COORD[r], "nan"), LINE3),
    "NaN coordinate (empty)": (lambda r: _set(r, COORD[r], ""), LINE3),
    "infinite coordinate": (lambda r: _set(r, COORD[r], "inf"), LINE3),
    "-infinite coordinate": (lambda r: _set(r, COORD[r], "-Infinity"), LINE3),
    "1e400 coordinate": (lambda r: _set(r, COORD[r], "1e400"), LINE3),
    "400-digit coordinate": (lambda r: _set(r, COORD[r], "9" * 400), LINE3),
    "text coordinate": (lambda r: _set(r, COORD[r], "north"), LINE3),
    "huge coordinate field": (lambda r: _set(r, COORD[r], "1" + "0" * 3_000_000), LINE3),
    "huge text field": (lambda r: _set(r, TEXT.get(r), "x" * 3_000_000), ANY),
    "same column twice, other case": (lambda r: _add_column(r, COORD[r].lower().swapcase(), "1"), ANY),
    "3,000 columns": (lambda r: _csv([_rows(r)[0] + [f"c{i}" for i in range(3_000)]] + _rows(r)[1:]), ANY),
    "a folder": (None, r"not a regular file|no such file"),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("reader", list(COORD))
def test_hostile_tables(readers, tmp_path, reader, case):
    make, expect = CASES[case]
    path = tmp_path / f"hostile-{reader}{SEEDS[reader][0]}"
    if make is None:
        path.mkdir()
    else:
        data = make(reader)
        if data is None:
            pytest.skip(f"{reader} has no such column")
        path.write_bytes(data)
    try:
        readers[reader](path)
    except InputError as err:
        msg = str(err)
        assert "\n" not in msg and str(path) in msg and len(msg) < 1500, msg
        assert expect != OK, f"{reader} refused a valid file: {msg}"
        if expect != ANY:
            assert re.search(expect, msg), msg
        return
    assert expect in (OK, ANY), f"{reader} accepted {case}"


def test_huge_text_fields_are_refused_where_they_cannot_be_names(readers, tmp_path):
    path = tmp_path / "bench.csv"
    path.write_bytes(_set("benchmark", "IMG_ID", "x" * 3_000_000))
    with pytest.raises(InputError, match=r"line\(s\) 3: field IMG_ID is longer than 1024 characters"):
        readers["benchmark"](path)
    path.write_bytes(_set("partition", "hex_id", "8" * 3_000_000))
    with pytest.raises(InputError, match=r"line 3 field 'hex_id': expected a valid S2 cell token.*characters\)") as e:
        readers["partition"](path)
    assert len(str(e.value)) < 400


def _results_frame() -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(SEEDS["results-parquet"][1]))


def _edit(fn):
    def make():
        df = _results_frame()
        fn(df)
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        return buf.getvalue()
    return make


def _flip(seed: int):
    def make():
        rng = random.Random(seed)
        data = bytearray(SEEDS["results-parquet"][1])
        for _ in range(8):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        return bytes(data)
    return make


PARQUET_CASES = {
    "empty": (lambda: b"", r"is empty"),
    "truncated": (lambda: SEEDS["results-parquet"][1][:700], r"not a readable results file"),
    "garbage": (lambda: GARBAGE, r"not a readable results file"),
    "a CSV": (lambda: SEEDS["results-csv"][1], r"not a readable results file"),
    **{f"bit flips {i}": (_flip(i), ANY) for i in range(6)},
    "missing LAT": (_edit(lambda df: df.pop("LAT")), r"missing column\(s\) LAT"),
    "text LAT": (_edit(lambda df: df.__setitem__("LAT", ["x", "1", "2"])), r"row 1: field 'LAT'"),
    "NaN LAT": (_edit(lambda df: df.__setitem__("LAT", [1.0, np.nan, 2.0])), r"row 2: field 'LAT'"),
    "infinite PRED_LON": (_edit(lambda df: df.__setitem__("PRED_LON", [np.inf, 1.0, np.nan])), r"row 1: field 'PRED_LON'"),
    "LON out of range": (_edit(lambda df: df.__setitem__("LON", [1.0, 200.0, 2.0])), r"row 2: field 'LON'"),
    "negative error_km": (_edit(lambda df: df.__setitem__("error_km", [-1.0, 1.0, np.nan])), r"row 1: field 'error_km'"),
    "integer IMG_IDs": (_edit(lambda df: df.__setitem__("IMG_ID", [1, 2, 3])), r"row 1: field 'IMG_ID'"),
    "bytes IMG_IDs": (_edit(lambda df: df.__setitem__("IMG_ID", [b"a\xff", b"b", b"c"])), r"field 'IMG_ID'"),
    "duplicate IMG_ID": (_edit(lambda df: df.__setitem__("IMG_ID", ["a", "b", "a"])), r"row 3: field 'IMG_ID'.*unique"),
    "empty IMG_ID": (_edit(lambda df: df.__setitem__("IMG_ID", ["a", "", "c"])), r"row 2: field 'IMG_ID'"),
    "text top-k": (_edit(lambda df: df.__setitem__("topk_lat", [["a"], ["b"], []])), r"row 1: field 'topk_lat'"),
    "top-k as a string": (_edit(lambda df: df.__setitem__("topk_lat", ["[1]", "[2]", "[]"])), r"field 'topk_lat'"),
    "top-k lengths differ": (_edit(lambda df: df.__setitem__("topk_prob", [[1.0], [0.9, 0.1], []])),
                             r"row 1: field 'topk_prob': expected as many values as topk_lat"),
    "NaN in top-k": (_edit(lambda df: df.__setitem__("topk_lon", [[np.nan, 1.0], [1.0, 2.0], []])), r"topk_lon"),
    "text truth_mass": (_edit(lambda df: df.__setitem__("truth_mass", ["lots", None, None])), r"field 'truth_mass'"),
    "empty status": (_edit(lambda df: df.__setitem__("status", ["ok", None, "ok"])), r"row 2: field 'status'"),
    "huge status": (_edit(lambda df: df.__setitem__("status", ["ok", "x" * 3_000_000, "ok"])), OK),
    "extra column": (_edit(lambda df: df.__setitem__("note", ["a", "b", "c"])), OK),
    "valid": (lambda: SEEDS["results-parquet"][1], OK),
}


@pytest.mark.parametrize("case", list(PARQUET_CASES))
def test_hostile_results_parquet(tmp_path, case):
    from geocore.eval.results import read_results

    make, expect = PARQUET_CASES[case]
    path = tmp_path / "hostile.parquet"
    path.write_bytes(make())
    try:
        df = read_results(path)
    except InputError as err:
        msg = str(err)
        assert "\n" not in msg and str(path) in msg and len(msg) < 1500, msg
        assert expect != OK, msg
        if expect != ANY:
            assert re.search(expect, msg), msg
        return
    assert expect in (OK, ANY), f"accepted {case}"
    assert df["IMG_ID"].map(lambda v: isinstance(v, str)).all()
    assert all(isinstance(v, list) for v in df["topk_lat"])
    # the same bytes, uploaded: read from memory, named by the upload's name
    assert len(read_results("upload.parquet", path.read_bytes())) == len(df)


@pytest.mark.parametrize(("cell", "expect"), [
    ('"[1.0, oops]"', r"line 2: field 'topk_lat': expected a JSON list of numbers"),
    ('"' + "[" * 100_000 + "]" * 100_000 + '"', r"line 2: field 'topk_lat'"),  # RecursionError inside json
    ('"[' + "9" * 400 + ']"', r"line 2: field 'topk_lat'"),
    ('"{}"', r"line 2: field 'topk_lat'"),
    ('"[true]"', r"line 2: field 'topk_lat'"),
    ("NaN", OK),  # an empty cell reads as an empty list
])
def test_results_csv_list_cells(tmp_path, cell, expect):
    from geocore.eval.results import read_results

    lines = SEEDS["results-csv"][1].decode().split("\n")
    lists = ['"[11.0, 12.0]"', '"[-21.0, 22.0]"', '"[0.6, 0.4]"'] if expect == OK else ['"[11.0, 12.0]"']
    for old in lists:
        lines[1] = lines[1].replace(old, cell, 1)
    path = tmp_path / "r.csv"
    path.write_text("\n".join(lines))
    if expect == OK:
        assert read_results(path)["topk_lat"].iloc[0] == []
        return
    with pytest.raises(InputError, match=expect) as err:
        read_results(path)
    assert len(str(err.value)) < 600


def test_results_parquet_decompression_bomb_is_refused(tmp_path, monkeypatch):
    from geocore.eval import results

    path = tmp_path / "big.parquet"
    pd.DataFrame({"IMG_ID": [f"{i}" for i in range(20_000)], "LAT": 0.0, "LON": 0.0, "PRED_LAT": 0.0,
                  "PRED_LON": 0.0, "error_km": 0.0, "model": "m", "status": "ok"}).to_parquet(path)
    assert len(results.read_results(path)) == 20_000
    monkeypatch.setattr(results, "MAX_PARQUET_BYTES", 10_000)
    with pytest.raises(InputError, match=r"once decompressed, over the 10,000 allowed"):
        results.read_results(path)


def test_mutated_tables_end_in_the_table_or_an_input_error(readers, tmp_path):
    outcomes = [fuzz.run_table_case(reader, readers[reader], path, kind)
                for reader, path, kind in fuzz.table_cases(tmp_path, per_reader=60, seed=11)]
    bad = [f"{o.reader} {o.kind}: {o.result}" for o in outcomes if o.result.startswith("BUG")]
    assert not bad, "\n".join(bad)
    seen = Counter((o.reader, o.result) for o in outcomes)
    for reader in SEEDS:
        assert seen[(reader, "InputError")] > 10, seen


# ---- the calibration file and the gallery-embedding cache: owned elsewhere, held to the same rule --------------

def _calibration() -> dict:
    return json.loads(SEEDS["calibration"][1])


CALIBRATION_CASES = {
    "empty": (b"", r"not a calibration file"),
    "binary": (GARBAGE, r"not a calibration file"),
    "bad UTF-8": (b'{"model": "\xff"}', r"not UTF-8"),
    "a list": (b"[1, 2]", r"expected a JSON object"),
    "NaN masses": (json.dumps({**_calibration(), "masses": [float("nan")] * 4}).encode(), r"field 'masses'"),
    "infinite levels": (json.dumps({**_calibration(), "levels": [float("inf")] * 4}).encode(), r"field 'levels'"),
    "text n": (json.dumps({**_calibration(), "n": "5"}).encode(), r"field 'n'"),
    "missing masses": (json.dumps({k: v for k, v in _calibration().items() if k != "masses"}).encode(),
                       r"field 'masses' is missing"),
    "extra field": (json.dumps({**_calibration(), "zzz": 1}).encode(), OK),
    "deeply nested": (b"[" * 100_000 + b"]" * 100_000, r"not a calibration file"),
    "400-digit masses": (json.dumps({**_calibration(), "masses": [10**400] * 4}).encode(), r"field 'masses'"),
    "huge nested list in a message": (json.dumps({**_calibration(), "masses": [[0.5]] * 100_000}).encode(),
                                      r"field 'masses'"),  # 700 KB: under the size limit, so the field is judged
    "5,000-digit integer": (json.dumps({**_calibration(), "n": "N"}).replace('"N"', "9" * 5000).encode(),
                            r"field 'n'.*5,000 digits"),
    "over the size limit": (json.dumps({**_calibration(), "pad": " " * 1_100_000}).encode(),
                            r"over the 1,048,576 allowed"),
}
KNOWN: dict[str, str] = {}  # problems reported to the owner of a reader; drop a line once it is fixed


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.xfail(reason=KNOWN[c], strict=True))
                                  if c in KNOWN else c for c in CALIBRATION_CASES])
def test_hostile_calibration_files(tmp_path, case):
    from geocore.uncertainty.calibration import Calibration

    data, expect = CALIBRATION_CASES[case]
    path = tmp_path / "cal.json"
    path.write_bytes(data)
    if expect == OK:
        Calibration.load(path)
        return
    with pytest.raises(InputError, match=expect) as err:
        Calibration.load(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value) and len(str(err.value)) < 1500


def _npy(header: str, body: bytes = b"\0" * 64) -> bytes:
    h = header.encode()
    h += b" " * ((-len(h) - 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(h).to_bytes(2, "little") + h + body


CACHE_CASES = {
    "empty": b"",
    "garbage": GARBAGE,
    "truncated": None,  # made from a valid file below
    "huge shape": _npy("{'descr': '<f4', 'fortran_order': False, 'shape': (10000000000, 8), }"),
    "objects": _npy("{'descr': '|O', 'fortran_order': False, 'shape': (2, 8), }"),
    "wrong dtype": _npy("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 4), }"),
    "unbalanced header": _npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 8), "),
}


@pytest.mark.parametrize("case", list(CACHE_CASES))
def test_hostile_gallery_embedding_cache_is_recomputed(case):
    import warnings

    from geocore.models.gallery_cache import GalleryEmbeddingCache

    cache = GalleryEmbeddingCache("hostile-test")
    key = "0" * 64
    path = cache.path_for(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = CACHE_CASES[case]
    if data is None:
        buf = io.BytesIO()
        np.save(buf, np.eye(2, 8, dtype=np.float32))
        data = buf.getvalue()[:100]
    path.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cache._load(key, 2) is None  # unreadable: recomputed, never loaded, never a crash


# ---- the command line: one line on stderr, exit 2 -------------------------------------------------------------


def test_cli_reports_hostile_inputs_in_one_line(tmp_path, capsys):
    truth = tmp_path / "truth.csv"
    truth.write_bytes(SEEDS["benchmark"][1])
    garbage = tmp_path / "garbage.csv"
    garbage.write_bytes(GARBAGE)
    nan = tmp_path / "nan.csv"
    nan.write_bytes(_set("points", "LAT", "nan"))
    runs = [["score", "--pred", str(garbage), "--truth", str(truth)],
            ["score", "--pred", str(truth), "--truth", str(garbage)],
            ["score", "--results", str(garbage)],
            ["cells", "assign", "--partition", str(garbage), "--input", str(nan), "--output", str(tmp_path / "o.csv")],
            ["cells", "build", "--input", str(nan), "--output", str(tmp_path / "o.csv")],
            ["embed", str(garbage), "--output", str(tmp_path / "e.npy")]]
    for args in runs:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert not (tmp_path / "o.csv").exists() and not (tmp_path / "e.npy").exists()
