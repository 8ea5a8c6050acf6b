"""Nothing lost: `geocore evaluate` killed (SIGKILL) at random moments and resumed ends with exactly the rows of an
uninterrupted run, and a kill in the middle of writing a file never leaves a torn file where a reader looks.

The evaluation runs in a subprocess (a runner script written into tmp_path registers a tiny deterministic model
and calls the `geocore evaluate` command with `--resume`). The suite kills it a handful of times; the 20-kill
run is `GEOCORE_KILL_RESUME=20 pytest -m slow tests/test_kill_resume.py`.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from geocore.data import safe_io
from geocore.eval.results import collect_rows, parts_dir, read_results

RUNNER = r'''
"""Runs `geocore evaluate --resume` with a tiny deterministic model; options: DELAY (s per batch), DIE_AT_WRITE."""
import os
import signal
import sys
import time

import numpy as np
import torch

from geocore.models.base import GeoLocator
from geocore.models.prediction import Prediction

PLACES = torch.tensor([[48.8566, 2.3522], [40.7128, -74.0060], [35.6762, 139.6503], [-33.8688, 151.2093],
                       [-22.9068, -43.1729], [64.1466, -21.9426], [-1.2921, 36.8219], [55.7558, 37.6173]])


class TinyLocator(GeoLocator):
    """Answers PLACES[round(mean red * 7)], with a soft second choice from the mean green: checkable, cheap."""

    delay = 0.0

    def preprocess(self, image):
        return torch.from_numpy(np.asarray(image.resize((8, 8)), dtype=np.float32) / 255).permute(2, 0, 1)

    def candidate_points(self):
        return PLACES

    def predict(self, pixels, top_k=5, *, full=False):
        time.sleep(self.delay)
        red = (pixels[:, 0].mean(dim=(1, 2)) * 7).round().long()
        green = (pixels[:, 1].mean(dim=(1, 2)) * 7).round().long()
        logits = torch.full((len(pixels), len(PLACES)), -5.0)
        logits[torch.arange(len(pixels)), green] = 1.0
        logits[torch.arange(len(pixels)), red] = 4.0
        return Prediction.from_scores(logits, PLACES, min(top_k, len(PLACES)), full=full)


def die_in_the_middle_of_write(n):
    """The n-th table write (a part, or the merged output) writes half its bytes, then the process is killed."""
    import pandas as pd

    calls = {"n": 0}
    real_parquet, real_csv = pd.DataFrame.to_parquet, pd.DataFrame.to_csv

    def half_then_die(real):
        def write(self, path, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] < n:
                return real(self, path, *args, **kwargs)
            import io
            buf = io.BytesIO() if real is real_parquet else io.StringIO()
            real(self, buf, *args, **kwargs)
            data = buf.getvalue()
            data = data if isinstance(data, bytes) else data.encode()
            with open(path, "wb") as fh:
                fh.write(data[: len(data) // 2])
                fh.flush()
            print(f"dying while writing {path}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        return write

    pd.DataFrame.to_parquet = half_then_die(real_parquet)
    pd.DataFrame.to_csv = half_then_die(real_csv)


def serve():
    """Import once, then fork one `geocore evaluate --resume` per command line read from stdin.

    A command is JSON {"args": [...], "env": {...}, "log": path}; the reply is {"pid": ...} at once and
    {"status": ...} (as os.waitpid gives it) when that run has ended. The test kills runs by their pid.
    """
    import json

    import geocore.eval.evaluate  # noqa: F401  (torch and Lightning imported once, before the forks)
    from geocore.cli.main import main
    from geocore.models.registry import register_model

    register_model("test-kill", description="test only", random_ok=True)(lambda pretrained=None: TinyLocator())
    print(json.dumps({"ready": os.getpid()}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        pid = os.fork()
        if pid == 0:  # the run: its own process, killed or not
            code = 1
            try:
                fd = os.open(cmd["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                os.environ.update(cmd["env"])
                TinyLocator.delay = float(os.environ.get("DELAY", "0"))
                if os.environ.get("DIE_AT_WRITE"):
                    die_in_the_middle_of_write(int(os.environ["DIE_AT_WRITE"]))
                torch.set_num_threads(1)
                code = main(cmd["args"])
            finally:
                sys.stdout.flush()
                os._exit(code)
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"status": status}), flush=True)


if __name__ == "__main__":
    serve()
'''

COMPARED = ("LAT", "LON", "PRED_LAT", "PRED_LON", "error_km", "model", "status", "topk_lat", "topk_lon", "topk_prob",
            "truth_mass", "area_curve_km2")


class Runs:
    """The runner script as a fork server: it imports geocore once, then each run is a fresh forked process."""

    def __init__(self, folder: Path) -> None:
        self.script = folder / "runner.py"
        self.script.write_text(RUNNER)
        self.proc = subprocess.Popen([sys.executable, str(self.script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        ready = json.loads(self.proc.stdout.readline() or "{}")
        assert "ready" in ready, "the runner did not start"

    def start(self, csv: Path, images: Path, output: Path, log: Path, batch: int = 3, **env: str) -> int:
        args = ["evaluate", "--model", "test-kill", "--dataset", str(csv), "--images", str(images),
                "--output", str(output), "--resume", "--batch-size", str(batch)]
        self.proc.stdin.write(json.dumps({"args": args, "env": env, "log": str(log)}) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())["pid"]

    def wait(self) -> int:
        """The run's exit code, or minus the signal that ended it."""
        status = json.loads(self.proc.stdout.readline())["status"]
        return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)

    def run(self, csv: Path, images: Path, output: Path, log: Path, batch: int = 3, **env: str) -> int:
        self.start(csv, images, output, log, batch, **env)
        return self.wait()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    server = Runs(tmp_path_factory.mktemp("runner"))
    yield server
    server.close()


def make_bench(folder: Path, n: int = 60, ids: list[str] | None = None) -> tuple[Path, Path]:
    """`n` small images (one of them unreadable) and their benchmark CSV, which also lists a missing image."""
    images = folder / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    ids = ids or [f"img{i:03d}.{'jpg' if i % 3 else 'png'}" for i in range(n)]
    rows = []
    for i, img_id in enumerate(ids):
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        Image.new("RGB", (16, 12), colour).save(images / img_id, format="PNG" if img_id.endswith("png") else "JPEG",
                                                 quality=95)
        rows.append({"IMG_ID": img_id, "LAT": float(rng.uniform(-60, 70)), "LON": float(rng.uniform(-180, 180))})
    (images / ids[5]).write_bytes(b"not an image at all")  # an error row, in every run alike
    rows.append({"IMG_ID": "missing.jpg", "LAT": 1.0, "LON": 2.0})
    csv = folder / "bench.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv, images


DELAY = "0.02"  # seconds per batch: kills land inside batches and part writes, not only between runs


def reference(runs: Runs, csv: Path, images: Path, folder: Path) -> pd.DataFrame:
    """The uninterrupted run."""
    out = folder / "reference.parquet"
    assert runs.run(csv, images, out, folder / "reference.log") == 0, (folder / "reference.log").read_text()
    return read_results(out)


def no_torn_files(output: Path) -> pd.DataFrame:
    """Every file a reader would look at reads whole; returns what a resume would start from."""
    if output.exists():
        read_results(output)
    if parts_dir(output).is_dir():
        for part in sorted(parts_dir(output).glob("part-*.parquet")):
            read_results(part)
    done = collect_rows(output)
    assert done["IMG_ID"].is_unique
    return done


def same_rows(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert got["IMG_ID"].is_unique, got["IMG_ID"][got["IMG_ID"].duplicated()].tolist()
    assert sorted(got["IMG_ID"]) == sorted(want["IMG_ID"])
    a, b = got.set_index("IMG_ID").sort_index(), want.set_index("IMG_ID").sort_index()
    for col in COMPARED:
        for img_id, x, y in zip(a.index, a[col], b[col]):
            if isinstance(y, (list, np.ndarray)):
                assert np.allclose(np.asarray(x, float), np.asarray(y, float), equal_nan=True), (img_id, col, x, y)
            elif isinstance(y, float):
                assert (np.isnan(x) and np.isnan(y)) or x == pytest.approx(y, rel=1e-9, abs=1e-9), (img_id, col, x, y)
            else:
                assert x == y, (img_id, col, x, y)


def _parts(output: Path) -> int:
    return len(list(parts_dir(output).glob("part-*.parquet")))


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def kill_and_resume(runs: Runs, csv: Path, images: Path, output: Path, kills: int, seed: int, batch: int) -> dict:
    """Kill a run `kills` times (checking the files after each kill), then let one finish.

    A quarter of the kills come at a random moment of the start-up (reading what earlier runs left); the
    others at a random moment within the batch after the run has written one or two more parts, so that
    kills land inside batches, part writes and the final merge rather than after the work is done.
    """
    rng = random.Random(seed)
    log = output.with_name(output.name + ".log")
    stats: dict = {"killed": 0, "finished_before_the_kill": 0, "rows_after_each_kill": []}
    for _ in range(kills):
        before = _parts(output)
        pid = runs.start(csv, images, output, log, batch, DELAY=DELAY)
        if rng.random() < 0.25:
            time.sleep(rng.uniform(0.0, 0.4))
        else:
            wanted, deadline = before + rng.randint(1, 2), time.monotonic() + 30
            while _parts(output) < wanted and _running(pid) and time.monotonic() < deadline:
                time.sleep(0.002)
            time.sleep(rng.uniform(0.0, 2 * float(DELAY)))
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:  # pragma: no cover - it finished first
            pass
        code = runs.wait()
        stats["killed" if code == -signal.SIGKILL else "finished_before_the_kill"] += 1
        stats["rows_after_each_kill"].append(len(no_torn_files(output)))
    assert runs.run(csv, images, output, log, batch) == 0, log.read_text()
    return stats


def test_killed_and_resumed_evaluate_loses_nothing(runs, tmp_path):
    csv, images = make_bench(tmp_path)
    want = reference(runs, csv, images, tmp_path)
    assert len(want) == 60 and (want["status"] != "ok").sum() == 1
    output = tmp_path / "results.parquet"
    stats = kill_and_resume(runs, csv, images, output, kills=6, seed=1, batch=3)
    assert stats["killed"] >= 5 and stats["rows_after_each_kill"][-1] < 60, stats
    same_rows(read_results(output), want)
    assert not parts_dir(output).exists() and not list(tmp_path.glob(".*.tmp"))


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("GEOCORE_KILL_RESUME"), reason="set GEOCORE_KILL_RESUME=20 for the long run")
def test_many_kills(runs, tmp_path):
    csv, images = make_bench(tmp_path, n=120)
    want = reference(runs, csv, images, tmp_path)
    kills = int(os.environ["GEOCORE_KILL_RESUME"])
    for suffix in (".parquet", ".csv"):
        output = tmp_path / f"results{suffix}"
        stats = kill_and_resume(runs, csv, images, output, kills=kills, seed=kills, batch=2)
        print(f"{suffix}: {stats}")
        assert stats["killed"] >= kills * 3 // 4, stats
        same_rows(read_results(output), want)


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_kill_in_the_middle_of_a_write_leaves_no_torn_file(runs, tmp_path, suffix):
    """Killed while writing a part (write 3), then, resumed, while writing the merged output (write 19 of the
    resumed run: 54 images left make 18 parts): each time the finished files read whole and nothing is lost."""
    csv, images = make_bench(tmp_path)
    want = reference(runs, csv, images, tmp_path)
    output, log = tmp_path / f"results{suffix}", tmp_path / "run.log"
    seen: set[Path] = set()
    for die_at, rows_kept in ((3, 6), (19, 60)):
        assert runs.run(csv, images, output, log, DIE_AT_WRITE=str(die_at)) == -signal.SIGKILL, log.read_text()
        assert "dying while writing" in log.read_text()
        torn = set(tmp_path.rglob("*.tmp")) - seen
        assert len(torn) == 1 and next(iter(torn)).name.startswith("."), torn  # the half-written file is hidden
        seen |= torn
        assert not output.exists()  # never replaced by a torn file
        assert len(no_torn_files(output)) == rows_kept  # every finished batch is there, whole
        log.unlink()
    assert runs.run(csv, images, output, log) == 0, log.read_text()
    same_rows(read_results(output), want)
    assert not list(tmp_path.rglob("*.tmp"))  # the parts folder went, and the merge removed its dead writer's file


def test_atomic_path_keeps_the_old_file_when_a_write_dies(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old\n")
    with pytest.raises(KeyboardInterrupt):
        with safe_io.atomic_path(target) as tmp:
            tmp.write_text("new, half writ")
            raise KeyboardInterrupt
    assert target.read_text() == "old\n" and list(tmp_path.iterdir()) == [target]
    # a hard kill (no cleanup at all) in a child process: the old file stays, the temporary is hidden
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        with safe_io.atomic_path(target) as tmp:
            tmp.write_text("torn")
            os.kill(os.getpid(), signal.SIGKILL)
    os.waitpid(pid, 0)
    assert target.read_text() == "old\n"
    left = [p for p in tmp_path.iterdir() if p != target]
    assert len(left) == 1 and left[0].name.startswith(".out.csv.") and left[0].name.endswith(".tmp")
    assert safe_io.remove_stale_temps(target) == 1 and list(tmp_path.iterdir()) == [target]


def test_temporary_names_never_collide(tmp_path):
    names = {safe_io.temp_path(tmp_path / "results.parquet").name for _ in range(1000)}
    assert len(names) == 1000 and all(n.startswith(f".results.parquet.{os.getpid()}.") for n in names)


def _die_half_way(monkeypatch) -> None:
    """Path.write_bytes writes half its data, then raises: a write killed half way, as far as the file goes."""
    real = Path.write_bytes

    def half(self, data):
        real(self, data[: len(data) // 2])
        raise KeyboardInterrupt("killed half way")

    monkeypatch.setattr(Path, "write_bytes", half)


def test_cli_outputs_are_atomic(monkeypatch, tmp_path):
    """`locate --output`, `cells assign/build --output`, `embed --output`: a write that dies keeps the old file."""
    from geocore.cli import locate as locate_cli
    from geocore.locate import LocateResult

    table = pd.DataFrame({"rank": [1], "lat": [-33.9], "lon": [151.2], "prob": [0.9], "place": ["=Sydney"],
                          "admin1": [""], "country": ["AUS"]})
    result = LocateResult(name="a.jpg", table=table)
    for name in ("out.csv", "out.geojson"):
        target = tmp_path / name
        locate_cli._write([result], target)
        old = target.read_bytes()
        with monkeypatch.context() as m:
            _die_half_way(m)
            with pytest.raises(KeyboardInterrupt):
                locate_cli._write([result, result], target)
        assert target.read_bytes() == old
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(f".{name}")) == []

    # embed: np.save into the temporary file dies half way
    import geocore.cli.locate as cli

    coords = tmp_path / "coords.csv"
    coords.write_text("LAT,LON\n1,2\n-3,-4\n")
    emb_out = tmp_path / "emb.npy"
    np.save(emb_out, np.zeros((1, 1), np.float32))

    class FakeEncoder:
        def embed(self, points):
            import torch

            return torch.ones(len(points), 4)

    monkeypatch.setattr("geocore.models.location_encoder.load_location_encoder", lambda: FakeEncoder())
    real_save = np.save

    def save_half(fh, arr, *a, **k):
        real_save(fh, arr)
        fh.truncate(fh.tell() // 2)
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(np, "save", save_half)
        with pytest.raises(KeyboardInterrupt):
            cli.embed(coords, emb_out, model="geoclip", pretrained=None)
    assert np.load(emb_out).shape == (1, 1)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    cli.embed(coords, emb_out, model="geoclip", pretrained=None)
    assert np.load(emb_out).shape == (2, 4)


def test_cells_outputs_are_atomic(monkeypatch, tmp_path):
    from geocore.cli.cells import assign, build

    points = tmp_path / "points.csv"
    rng = np.random.default_rng(0)
    pd.DataFrame({"name": [f"p{i}" for i in range(300)], "LAT": rng.uniform(40, 50, 300).round(4),
                  "LON": rng.uniform(-5, 5, 300).round(4)}).to_csv(points, index=False)
    part = tmp_path / "cells.csv"
    build(points, part, min_images=5, max_images=60, max_level=30, lat_col="LAT", lon_col="LON")
    out = tmp_path / "assigned.csv"
    assign(part, points, out, lat_col="LAT", lon_col="LON")
    old_part, old_out = part.read_bytes(), out.read_bytes()
    real_to_csv = pd.DataFrame.to_csv

    def to_csv_half(self, path=None, *args, **kwargs):
        text = real_to_csv(self, None, *args, **kwargs)
        Path(path).write_text(text[: len(text) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(pd.DataFrame, "to_csv", to_csv_half)
    with pytest.raises(KeyboardInterrupt):
        assign(part, points, out, lat_col="LAT", lon_col="LON")
    with pytest.raises(KeyboardInterrupt):
        build(points, part, min_images=3, max_images=30, max_level=30, lat_col="LAT", lon_col="LON")
    assert out.read_bytes() == old_out and part.read_bytes() == old_part
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_gallery_cache_and_calibration_writes_are_atomic(monkeypatch, tmp_path):
    """Verified here, owned elsewhere: the gallery-embedding cache and Calibration.save write tmp + rename."""
    import torch

    from geocore.models.gallery_cache import GalleryEmbeddingCache
    from geocore.uncertainty.calibration import Calibration, fit_calibration

    cache = GalleryEmbeddingCache("atomic-test")
    encoder = torch.nn.Linear(2, 4)
    gallery = torch.tensor([[1.0, 2.0], [3.0, 4.0]])

    def compute(g):
        return torch.nn.functional.normalize(encoder(g), dim=1)

    emb = cache.get(encoder, gallery, compute)
    path = cache.path_for(cache.last_key)
    assert path.is_file()
    old = path.read_bytes()
    real_save = np.save

    def save_half(fh, arr, *a, **k):
        real_save(fh, arr)
        fh.truncate(fh.tell() // 2)
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "save", save_half)
    with pytest.raises(KeyboardInterrupt):
        cache._save(cache.last_key, emb * 1)
    assert path.read_bytes() == old
    monkeypatch.undo()
    cal = fit_calibration(np.linspace(0.05, 0.95, 30), model="m", fingerprint="fp")
    target = cal.save(tmp_path / "cal.json")
    old = target.read_bytes()
    _die_half_way(monkeypatch)  # Calibration.save writes through geocore.data.safe_io
    with pytest.raises(KeyboardInterrupt):
        cal.save(target)
    assert target.read_bytes() == old and Calibration.load(target) == cal
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
