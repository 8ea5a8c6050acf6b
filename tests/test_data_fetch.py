"""`geocore data fetch|list` against fixture archives served from 127.0.0.1 (or a local folder), then
`evaluate --dataset NAME` on what was fetched. No other network is touched."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import shutil
import socket
import tarfile
import threading
import urllib.parse
import zipfile
from collections import namedtuple
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from geocore.cli.main import main
from geocore.data.catalog import CATALOG
from geocore.data.datasets import BenchmarkDataset, read_benchmark_csv
from geocore.data.fetched import DatasetDir, resolve_benchmark
from geocore.errors import InputError

ROWS = [("1000269685_e60e9cdfb4.jpg", 48.8566, 2.3522), ("2000304467_1a75a200b1.jpg", 40.7128, -74.0060),
        ("3000_x@N00.jpg", 35.6762, 139.6503), ("4000_y.jpg", -33.8688, 151.2093)]


def _jpeg(red: int = 120) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), (red, 40, 90)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _tar_gz(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> None:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tf.addfile(info)


def _zip(path: Path, members: dict[str, bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def _im2gps3k_mirror(root: Path, rows=ROWS) -> Path:
    """The two im2gps3k files as the source names them: the GeoEstimation table, the TransLocator image tar."""
    root.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame([{"IMG_ID": i, "AUTHOR": "a@N00", "LAT": la, "LON": lo, "S3_Label": k % 3, "S16_Label": 1,
                           "S365_Label": 7, "Prob_indoor": 0.1} for k, (i, la, lo) in enumerate(rows)])
    table.to_csv(root / "im2gps3k_places365.csv", index=False)
    _tar_gz(root / "im2gps3k_rgb_images.tar.gz",
            {f"im2gps3k/{i}": _jpeg(40 + 60 * k) for k, (i, _, _) in enumerate(rows)})
    return root


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves the mirror folder with HEAD and byte ranges; logs every request; cuts the first full GET of a
    file listed in `server.cut` half-way (an interrupted download)."""

    def do_HEAD(self):
        self._serve(head=True)

    def do_GET(self):
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        name = urllib.parse.unquote(self.path.lstrip("/"))
        rng = self.headers.get("Range")
        self.server.log.append((self.command, name, rng))
        path = self.server.root / name
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = int(rng[6:].split("-")[0]) if rng and rng.startswith("bytes=") else 0
        body = data[start:]
        if start:
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if head:
            return
        if name in self.server.cut and not start:
            self.server.cut.discard(name)
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):  # quiet
        pass


Served = namedtuple("Served", "url root log cut")


@pytest.fixture
def served(tmp_path):
    root = tmp_path / "mirror"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.root, server.log, server.cut = root, [], set()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Served(f"http://127.0.0.1:{server.server_address[1]}/", root, server.log, server.cut)
    server.shutdown()
    server.server_close()


def _fetch(name: str, data: Path, mirror: str | Path, *extra: str) -> int:
    return main(["data", "fetch", name, "--to", str(data), "--from", str(mirror), "--quiet", *extra])


def _one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fetch_over_http_gives_the_layout_evaluate_reads(served, tmp_path, capsys):
    _im2gps3k_mirror(served.root)
    data = tmp_path / "data"
    assert _fetch("im2gps3k", data, served.url) == 0
    err = capsys.readouterr().err
    assert "licence:" in err and "Revisiting IM2GPS" in err  # licence and citation printed
    where = DatasetDir(data, "im2gps3k")
    assert set(where.complete_parts()) == {"metadata", "images"}
    frame = read_benchmark_csv(where.csv)  # the reader of evaluate and train
    assert frame["IMG_ID"].tolist() == [r[0] for r in ROWS]
    assert frame["LAT"].tolist() == pytest.approx([r[1] for r in ROWS])
    assert {"S3_Label", "AUTHOR"} <= set(frame.columns) and "Prob_indoor" not in frame.columns
    bench = BenchmarkDataset(where.csv, where.images)
    assert bench.missing == [] and len(bench) == 4 and bench[2]["error"] is None  # every image found and readable
    assert resolve_benchmark("im2gps3k", None, data) == (where.csv, where.images)
    sums = json.loads(where.checksums.read_text())
    assert sums == {n: _sha(served.root / n) for n in ("im2gps3k_places365.csv", "im2gps3k_rgb_images.tar.gz")}
    assert not where.downloads.exists()  # finished downloads removed
    assert main(["data", "list", "--data-dir", str(data), "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["datasets"]}
    assert rows["im2gps3k"]["here"] == ["images", "metadata"] and rows["yfcc4k"]["here"] == []


def test_evaluate_dataset_name_runs_on_fetched_data(served, tmp_path, capsys):
    from geocore.eval.results import read_results
    from geocore.models.base import GeoLocator
    from geocore.models.prediction import Prediction
    from geocore.models.registry import register_model, unregister_model

    places = torch.tensor([[r[1], r[2]] for r in ROWS])

    class RedLevel(GeoLocator):  # predicts ROWS[k] for the k-th fixture photo (its red level)
        def preprocess(self, image):
            return torch.from_numpy(np.asarray(image.resize((4, 4)), dtype=np.float32)).permute(2, 0, 1)

        def candidate_points(self):
            return places

        def predict(self, pixels, top_k=5, *, full=False):
            idx = ((pixels[:, 0].mean(dim=(1, 2)) - 40) / 60).round().long().clamp(0, 3)
            logits = torch.full((len(pixels), 4), -10.0)
            logits[torch.arange(len(pixels)), idx] = 10.0
            return Prediction.from_scores(logits, places, min(top_k, 4), full=full)

    _im2gps3k_mirror(served.root)
    data = tmp_path / "data"
    assert _fetch("im2gps3k", data, served.url) == 0
    register_model("test-fetched", description="test only", random_ok=True)(lambda pretrained=None: RedLevel())
    try:
        out = tmp_path / "geoclip_im2gps3k.csv"
        assert main(["evaluate", "--model", "test-fetched", "--dataset", "im2gps3k", "--data-dir", str(data),
                     "--output", str(out), "--batch-size", "4"]) == 0
    finally:
        unregister_model("test-fetched")
    assert "(n = 4)" in capsys.readouterr().out
    results = read_results(out)
    assert (results["status"] == "ok").all() and results["error_km"].max() < 1.0  # each photo at its own place


def test_interrupted_download_resumes_with_a_range_request(served, tmp_path, capsys):
    _im2gps3k_mirror(served.root)
    data, tar = tmp_path / "data", "im2gps3k_rgb_images.tar.gz"
    served.cut.add(tar)
    assert _fetch("im2gps3k", data, served.url) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert "cut short" in line and "resume" in line
    where = DatasetDir(data, "im2gps3k")
    assert "images" not in where.complete_parts() and not where.images.exists()  # nothing looks complete
    part = where.downloads / (tar + ".part")
    half = (served.root / tar).stat().st_size // 2
    assert part.stat().st_size == half
    served.log.clear()
    assert _fetch("im2gps3k", data, served.url) == 0
    assert ("GET", tar, f"bytes={half}-") in served.log  # continued, not started again
    assert set(where.complete_parts()) == {"metadata", "images"}
    assert json.loads(where.checksums.read_text())[tar] == _sha(served.root / tar)
    assert len(list(where.images.iterdir())) == 4


def test_checksum_mismatch_is_refused(served, tmp_path, capsys, monkeypatch):
    _im2gps3k_mirror(served.root)
    data = tmp_path / "data"
    assert _fetch("im2gps3k", data, served.url) == 0
    where = DatasetDir(data, "im2gps3k")
    recorded = json.loads(where.checksums.read_text())
    # The mirror now serves another archive under the same name: refused against the recorded SHA-256.
    _tar_gz(served.root / "im2gps3k_rgb_images.tar.gz", {f"x/{r[0]}": _jpeg(200) for r in ROWS})
    capsys.readouterr()
    assert _fetch("im2gps3k", data, served.url) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert "im2gps3k_rgb_images.tar.gz" in line and "differs" in line and "recorded" in line
    assert "images" not in where.complete_parts()  # the part being replaced no longer looks complete
    assert not (where.downloads / "im2gps3k_rgb_images.tar.gz").exists()  # the bad download is gone
    assert json.loads(where.checksums.read_text()) == recorded  # the record is not overwritten
    # A checksum the source publishes is checked on the first download.
    entry = CATALOG["im2gps3k"]
    bad = replace(entry, files=(replace(entry.files[0], sha256="0" * 64), *entry.files[1:]))
    monkeypatch.setitem(CATALOG, "im2gps3k", bad)
    assert _fetch("im2gps3k", tmp_path / "fresh", served.url, "--part", "metadata") == 2
    line = _one_line_error(capsys.readouterr().err)
    assert "im2gps3k_places365.csv" in line and "published by the source" in line
    assert not DatasetDir(tmp_path / "fresh", "im2gps3k").marker.exists()


def test_file_missing_from_the_mirror_is_one_line_and_nothing_complete(served, tmp_path, capsys):
    _im2gps3k_mirror(served.root)
    (served.root / "im2gps3k_rgb_images.tar.gz").unlink()
    data = tmp_path / "data"
    assert _fetch("im2gps3k", data, served.url) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert "im2gps3k_rgb_images.tar.gz is missing" in line and "404" in line
    assert not DatasetDir(data, "im2gps3k").marker.exists()
    assert [m for m, *_ in served.log if m == "GET"] == []  # found missing before any download
    assert main(["evaluate", "--dataset", "im2gps3k", "--data-dir", str(data), "--output",
                 str(tmp_path / "r.parquet")]) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert "not fetched, or not completely" in line and "geocore data fetch im2gps3k" in line


def test_connection_refused_and_unknown_names_are_one_line(tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    assert _fetch("im2gps3k", tmp_path / "data", f"http://127.0.0.1:{port}/") == 2
    line = _one_line_error(capsys.readouterr().err)
    assert f"cannot reach 127.0.0.1:{port}" in line and "--from" in line
    assert main(["data", "fetch", "im2gps9k", "--to", str(tmp_path)]) == 2
    assert "unknown dataset 'im2gps9k'" in _one_line_error(capsys.readouterr().err)
    assert main(["data", "fetch", "yfcc26k", "--to", str(tmp_path), "--part", "images"]) == 2
    assert "no images part" in _one_line_error(capsys.readouterr().err)


def _osv_test_mirror(root: Path, bad_member: str | None = None, extra: dict[str, bytes] | None = None) -> None:
    ids = [101, 102, 103, 104, 105, 106]
    pd.DataFrame({"id": ids, "latitude": [10.0 + i for i in range(6)], "longitude": [20.0] * 6,
                  "country": ["FR"] * 6}).to_csv(root / "test.csv", index=False)
    for z in range(5):  # the five test zips, the first holding two photos
        members = {f"test/{i}.jpg": _jpeg() for i in (ids[:2] if z == 0 else [ids[z + 1]])}
        if z == 4 and extra:
            members.update(extra)
        _zip(root / "images" / "test" / f"{z:02d}.zip", members)
    if bad_member:  # flip a byte inside that member's stored data: its CRC no longer matches
        path = root / "images" / "test" / "00.zip"
        raw = bytearray(path.read_bytes())
        with zipfile.ZipFile(path) as zf:
            info = zf.getinfo(bad_member)
        offset = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + 10
        raw[offset] ^= 0xFF
        path.write_bytes(bytes(raw))


def test_corrupt_zip_member_named_then_refused_or_skipped(served, tmp_path, capsys):
    _osv_test_mirror(served.root, bad_member="test/102.jpg")
    data = tmp_path / "data"
    assert _fetch("osv5m-test", data, served.url) == 2  # refuse is the default
    line = _one_line_error(capsys.readouterr().err)
    assert "test/102.jpg" in line and "corrupt" in line and "--on-corrupt skip" in line
    where = DatasetDir(data, "osv5m-test")
    assert "images" not in where.complete_parts() and not where.images.exists()
    assert [p.name for p in where.folder.iterdir() if p.name.startswith(".images")] == []  # temp folder removed
    assert _fetch("osv5m-test", data, served.url, "--on-corrupt", "skip") == 0
    err = capsys.readouterr().err
    assert "skipped" in err and "test/102.jpg" in err
    assert sorted(p.name for p in where.images.iterdir()) == ["101.jpg", "103.jpg", "104.jpg", "105.jpg", "106.jpg"]
    images = where.complete_parts()["images"]
    assert images["present"] == 5 and images["listed"] == 6 and len(images["skipped"]) == 1
    assert read_benchmark_csv(where.csv)["IMG_ID"].tolist()[:2] == ["101.jpg", "102.jpg"]  # id → id.jpg


def test_archive_members_leaving_the_folder_are_refused(served, tmp_path, capsys):
    _osv_test_mirror(served.root, extra={"../evil.jpg": b"x"})
    data = tmp_path / "data"
    assert _fetch("osv5m-test", data, served.url, "--on-corrupt", "skip") == 2  # refused whatever --on-corrupt
    line = _one_line_error(capsys.readouterr().err)
    assert "'../evil.jpg'" in line and "refused" in line
    assert not list(tmp_path.rglob("evil.jpg"))
    assert "images" not in DatasetDir(data, "osv5m-test").complete_parts()
    # A tar holding a link is refused too.
    _im2gps3k_mirror(served.root)
    _tar_gz(served.root / "im2gps3k_rgb_images.tar.gz", {f"a/{r[0]}": _jpeg() for r in ROWS},
            links={"a/passwd.jpg": "/etc/passwd"})
    assert _fetch("im2gps3k", data, served.url) == 2
    assert "link" in _one_line_error(capsys.readouterr().err)
    assert not (DatasetDir(data, "im2gps3k").images / "passwd.jpg").exists()


def test_not_enough_disk_is_refused_before_downloading(served, tmp_path, capsys, monkeypatch):
    _im2gps3k_mirror(served.root)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    data = tmp_path / "data"
    assert _fetch("im2gps3k", data, served.url) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert "needs about" in line and "free" in line
    assert [m for m, *_ in served.log if m == "GET"] == []
    assert not DatasetDir(data, "im2gps3k").folder.exists()


def test_local_folder_mirror(tmp_path, capsys):
    mirror = _im2gps3k_mirror(tmp_path / "copy of the sources")
    data = tmp_path / "data"
    assert _fetch("im2gps3k", data, mirror, "--part", "metadata") == 0
    where = DatasetDir(data, "im2gps3k")
    assert set(where.complete_parts()) == {"metadata"}
    with pytest.raises(InputError, match="images are not fetched, or not completely"):
        resolve_benchmark("im2gps3k", None, data)
    assert _fetch("im2gps3k", data, mirror, "--part", "images") == 0
    assert set(where.complete_parts()) == {"metadata", "images"}
    assert BenchmarkDataset(where.csv, where.images).missing == []
    assert (mirror / "im2gps3k_rgb_images.tar.gz").is_file()  # a local mirror's files are read in place
    capsys.readouterr()
    assert _fetch("im2gps3k", data, tmp_path / "nowhere") == 2
    assert "is missing from" in _one_line_error(capsys.readouterr().err)


def _synthetic_source(entry, root: Path) -> list[str]:
    """Files named as `entry` names them upstream, holding 3 photos, in the source's own conventions (OSV-5M: a
    numeric `id` column, `<split>/<id>.jpg` members; MP16-Pro: `/` in IMG_ID, `_` in member names); returns the
    IMG_IDs the benchmark table should hold."""
    fmt = entry.table
    raw_ids = (["11", "12", "13"] if fmt.id_template != "{}" else ["a1/b2/11.jpg", "a1/b2/12.jpg", "c3/13.jpg"]
               if fmt.id_replace else ["11.jpg", "12.jpg", "13.jpg"])
    final = []
    for raw in raw_ids:
        for old, new in fmt.id_replace:
            raw = raw.replace(old, new)
        final.append(fmt.id_template.format(raw))
    for f in entry.files:
        path = root / (f.name.format(0) if f.role == "split" else f.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        if f.role == "table":
            cols = ("id", "latitude", "longitude") if fmt.id_template != "{}" else ("IMG_ID", "LAT", "LON")
            pd.DataFrame({cols[0]: raw_ids, cols[1]: [1.0, 2.0, 3.0], cols[2]: [4.0, 5.0, 6.0]}).to_csv(path, index=False)
        elif f.role == "side":
            path.write_text("IMG_ID,url\n")
    members = {f"inner/{name}": _jpeg() for name in final}
    archives = [f for f in entry.files if f.role == "archive"]
    for k, f in enumerate(archives):  # the photos spread over the archives; the rest hold none of them
        part = dict(list(members.items())[k::len(archives)]) or {"inner/readme.txt": b"-"}
        if f.name.endswith(".zip"):
            _zip(root / f.name, part)
        else:
            _tar_gz(root / f.name, part)
    for f in (f for f in entry.files if f.role == "split"):  # one tar cut into two pieces
        whole = io.BytesIO()
        with tarfile.open(fileobj=whole, mode="w") as tf:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
        blob = whole.getvalue()
        (root / f.name.format(0)).write_bytes(blob[: len(blob) // 2])
        (root / f.name.format(1)).write_bytes(blob[len(blob) // 2:])
    return final


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_every_catalog_entry_produces_what_evaluate_reads(name, tmp_path, capsys):
    entry = CATALOG[name]
    assert entry.licence and entry.citation and entry.files and entry.parts[0] == "metadata"
    assert all(f.url.startswith(("https://", "http://")) for f in entry.files)
    ids = _synthetic_source(entry, tmp_path / "src")
    data = tmp_path / "data"
    assert _fetch(name, data, tmp_path / "src") == 0, capsys.readouterr().err
    where = DatasetDir(data, name)
    assert read_benchmark_csv(where.csv)["IMG_ID"].tolist() == ids
    if "images" in entry.parts:
        assert BenchmarkDataset(where.csv, where.images).missing == []
        assert resolve_benchmark(name, None, data) == (where.csv, where.images)
    else:
        with pytest.raises(InputError, match="give --images"):
            resolve_benchmark(name, None, data)
        assert resolve_benchmark(name, tmp_path, data) == (where.csv, tmp_path)


def test_data_list_prints_each_licence_and_citation(tmp_path, capsys):
    assert main(["data", "list", "--data-dir", str(tmp_path)]) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    for entry in CATALOG.values():
        assert " ".join(entry.licence.split())[:60] in out and " ".join(entry.citation.split())[:60] in out


def test_data_list_json_names_every_file_a_mirror_needs(tmp_path, capsys):
    assert main(["data", "list", "--data-dir", str(tmp_path), "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["datasets"]}
    assert [f["name"] for f in rows["im2gps3k"]["files"]] == ["im2gps3k_places365.csv", "im2gps3k_rgb_images.tar.gz"]
    assert rows["yfcc26k"]["parts"] == ["metadata"] and rows["osv5m-test"]["images"] == 210_122


def test_dataset_option_names_a_csv_or_a_catalog_dataset(tmp_path):
    csv = tmp_path / "bench.csv"
    csv.write_text("IMG_ID,LAT,LON\na.jpg,1,2\n")
    assert resolve_benchmark(csv, tmp_path) == (csv, tmp_path)  # a CSV path works as before
    with pytest.raises(InputError, match="give --images FOLDER"):
        resolve_benchmark(csv, None)
    with pytest.raises(InputError, match="no dataset of that name .*im2gps3k"):
        resolve_benchmark("im2gps3", None, tmp_path)  # a typo of a dataset name
