"""The predict loop (`geocore.runtime.predict_loop`): two CPU processes (DDP over gloo, started by Lightning as on a GPU
node) give the rows of a one-process run, row for row; a resumed run of two ranks skips what any rank wrote and
redoes a torn part; `locate DIR --output TABLE` gives the per-photo path's rows; precision reaches the model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from geocore.errors import InputError
from geocore.eval.evaluate import evaluate
from geocore.eval.batch_locate import locate_to_table
from geocore.runtime.predict_loop import loop_options
from geocore.eval.results import read_results
from geocore.runtime.parts import parts_dir, write_part
from geocore.models.precision import current_precision

TESTS = Path(__file__).resolve().parent

# Registers the tiny model of test_evaluate, counting what each process predicts, then runs the CLI. Lightning starts
# rank 1 by running this same command line again (its DDP launcher), as it would `geocore evaluate` on a GPU node.
RUNNER = f'''
import os
import sys

sys.path.insert(0, {str(TESTS)!r})
from test_evaluate import RedLevelLocator

from geocore.cli.main import main
from geocore.models.registry import register_model


class Counted(RedLevelLocator):
    def predict(self, pixels, top_k=5, *, full=False):
        with open(os.environ["CALLS"], "a") as fh:
            fh.write(f"{{os.getpid()}} {{len(pixels)}}\\n")
        return super().predict(pixels, top_k, full=full)


register_model("test-red", description="test only", random_ok=True)(lambda pretrained=None: Counted())
sys.exit(main(sys.argv[1:]))
'''


@pytest.fixture(scope="module")
def odd_bench(tmp_path_factory):
    """11 images (img07 unreadable) and a missing one: 11 inputs, 6 and 5 per rank, batches of 2 end short."""
    folder = tmp_path_factory.mktemp("odd")
    images = folder / "images"
    images.mkdir()
    rows = []
    for i in range(11):
        Image.new("RGB", (32, 24), (round((i % 4) / 3 * 255), 40, 90)).save(images / f"img{i:02d}.jpg", quality=95)
        lat, lon = [(48.86, 2.35), (40.71, -74.0), (-33.87, 151.2)][i % 3]
        rows.append({"IMG_ID": f"img{i:02d}.jpg", "LAT": lat, "LON": lon, "S3_Label": i % 3})
    rows.insert(4, {"IMG_ID": "missing.jpg", "LAT": 0.0, "LON": 0.0, "S3_Label": 0})
    (images / "img07.jpg").write_bytes(b"not a jpeg at all")
    csv = folder / "bench.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv, images


@pytest.fixture(scope="module")
def one_process(odd_bench, tmp_path_factory):
    """The reference: the same model in this process, one device."""
    from test_evaluate import RedLevelLocator

    csv, images = odd_bench
    out = tmp_path_factory.mktemp("ref") / "ref.parquet"
    model = RedLevelLocator()
    model.model_name = "test-red"  # as the registry names it in the runner
    report = evaluate(model, csv, images, out, batch_size=2, accelerator="cpu", progress=False)
    assert report.n_unfinished == 0
    return read_results(out)


def two_processes(folder: Path, csv: Path, images: Path, output: Path, *extra: str) -> list[tuple[int, int]]:
    """`geocore evaluate --accelerator cpu --devices 2 --strategy ddp`; returns (pid, batch size) of each predict."""
    runner, calls = folder / "runner.py", folder / f"calls-{output.stem}.txt"
    runner.write_text(RUNNER)
    launcher_vars = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK")
    env = {k: v for k, v in os.environ.items()
           if k not in launcher_vars and not k.startswith(("SLURM_", "TORCHELASTIC_", "PL_"))}
    env.update(CALLS=str(calls), OMP_NUM_THREADS="1")
    args = ["evaluate", "--model", "test-red", "--dataset", str(csv), "--images", str(images), "--output", str(output),
            "--batch-size", "2", "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", *extra]
    proc = subprocess.run([sys.executable, str(runner), *args], env=env, cwd=folder, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Starting with 2 processes" in proc.stderr + proc.stdout
    return [(int(a), int(b)) for a, b in (line.split() for line in calls.read_text().splitlines())]


def test_two_cpu_processes_give_the_rows_of_one(odd_bench, one_process, tmp_path):
    csv, images = odd_bench
    out = tmp_path / "ddp.parquet"
    calls = two_processes(tmp_path, csv, images, out)
    assert len({pid for pid, _ in calls}) == 2  # both ranks predicted ...
    assert sum(n for _, n in calls) == 10  # ... the 10 readable images, none twice, none dropped
    got = read_results(out)
    assert not parts_dir(out).exists()
    want_order = [f"img{i:02d}.jpg" for i in range(11)]  # the CSV's order (the missing image has no row)
    assert got["IMG_ID"].tolist() == want_order == one_process["IMG_ID"].tolist()
    pd.testing.assert_frame_equal(got, one_process, check_exact=False, rtol=1e-9)
    assert got.set_index("IMG_ID").loc["img07.jpg", "status"].startswith("error: ")


def test_two_ranks_resume_what_any_rank_wrote_and_redo_a_torn_part(odd_bench, one_process, tmp_path):
    """A killed 2-rank run as it leaves its files: rank 0's first part whole, rank 1's first part torn (killed while
    writing it, had the write not been atomic), rank 1's second part lost; no merged output."""
    csv, images = odd_bench
    out = tmp_path / "resumed.parquet"
    kept = one_process.iloc[[0, 2]]  # img00, img02: what rank 0's first batch of two held
    write_part(kept, out, 0, rank=0)
    write_part(one_process.iloc[[1, 3]], out, 0, rank=1)
    torn = parts_dir(out) / "part-rank1-000000.parquet"
    torn.write_bytes(torn.read_bytes()[:100])
    calls = two_processes(tmp_path, csv, images, out, "--resume")
    assert sum(n for _, n in calls) == 8  # everything but the two rows rank 0 kept; the torn part's images again
    got = read_results(out)
    pd.testing.assert_frame_equal(got, one_process, check_exact=False, rtol=1e-9)
    assert not parts_dir(out).exists()


def test_part_numbers_continue_per_rank(tmp_path):
    from geocore.runtime.parts import next_part_index

    out = tmp_path / "r.parquet"
    frame = pd.DataFrame({"IMG_ID": ["a"]})
    assert next_part_index(out, 0) == 0
    for index, rank in ((0, 0), (3, 0), (7, 1), (2, None)):
        write_part(frame, out, index, rank=rank)
    write_part(frame, out, 9, rank=0, kind="failed")  # another kind of file: not a part
    assert [next_part_index(out, rank) for rank in (0, 1, 2, None)] == [4, 8, 0, 3]


def test_precision_reaches_predict(odd_bench, tmp_path):
    from test_evaluate import RedLevelLocator

    seen: list[str] = []

    class Spy(RedLevelLocator):
        def predict(self, pixels, top_k=5, *, full=False):
            seen.append(current_precision())
            return super().predict(pixels, top_k, full=full)

    csv, images = odd_bench
    for precision in ("bf16", "fp32"):
        seen.clear()
        report = evaluate(Spy(), csv, images, tmp_path / f"{precision}.parquet", batch_size=6, precision=precision,
                          progress=False)
        assert seen == [precision, precision] and report.precision == precision
    assert current_precision() == "fp32"  # the context ends with the loop


@pytest.mark.parametrize("options, message", [
    (dict(strategy="fsdp"), "--strategy fsdp: expected one of auto, ddp"),
    (dict(device="cpu", devices=2), "pass either --device or --accelerator/--devices"),
    (dict(device="tpu"), "--device tpu: expected cpu, cuda or cuda:N"),
    (dict(accelerator="quantum"), "--accelerator quantum: expected one of"),
    (dict(precision="fp16"), "--precision"),
    (dict(devices=0), "--devices 0: expected a whole number >= 1"),
])
def test_bad_loop_options_are_one_clear_error(options, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        loop_options(**options)
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available"):
            loop_options(accelerator="gpu")


def _photo(path: Path, seed: int, gps: tuple[float, float] | None = None) -> None:
    from test_locate_cli import _photo as make

    make(path, seed, gps)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_locate_folder_to_a_table_equals_the_per_photo_path(tmp_path, suffix):
    """The table the loop writes (regions, EXIF on some photos, a broken file) is what `locate` + `located_table`
    give for the same photos and batches, in the same order."""
    from geocore.data import safe_io
    from geocore.eval.results import located_table
    from geocore.locate import expand_paths, locate
    from geocore.models.registry import create_model

    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(5):
        _photo(folder / f"p{i}.jpg", i, gps=(40.0 + i, 2.0) if i in (2, 3) else None)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    model = create_model("geoclip-tiny")
    model.set_gallery(torch.tensor([[48.8566, 2.3522], [40.7128, -74.006], [35.6762, 139.6503],
                                    [-33.8688, 151.2093], [30.0444, 31.2357], [-22.9068, -43.1729]]))
    paths = expand_paths([folder])
    options = dict(top_k=3, regions=(0.5, 0.9), precision="fp32")
    per_photo = locate(model, [(str(p), p) for p in paths], batch_size=3, **options)
    want = located_table([r for r in per_photo if r.ok])
    out = tmp_path / f"table{suffix}"
    done = locate_to_table(model, paths, out, loop_options(batch_size=3, progress=False), **options)
    assert done.errors == [r.error for r in per_photo if not r.ok] and "broken.jpg" in done.errors[0]
    assert not parts_dir(out).exists()
    if suffix == ".csv":
        assert out.read_text() == safe_io.to_csv_text(want)  # byte for byte
    else:
        pd.testing.assert_frame_equal(pd.read_parquet(out), want)
    assert want["exif_lat"].notna().sum() == 6  # two photos with EXIF GPS, three answers each
    assert list(want["image"].unique()) == [str(p) for p in paths if p.name != "broken.jpg"]


def test_locate_cli_table_and_messages(tmp_path, capsys):
    from geocore.cli.main import main

    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        _photo(folder / f"p{i}.jpg", i)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    gallery = tmp_path / "gallery.csv"  # a small gallery keeps it fast
    pd.DataFrame({"LAT": [10.0, 20.0, 30.0], "LON": [5.0, 6.0, 7.0]}).to_csv(gallery, index=False)
    out = tmp_path / "located.parquet"
    assert main(["locate", str(folder), "--model", "geoclip-tiny", "--gallery", str(gallery), "--top-k", "2",
                 "--output", str(out), "--accelerator", "cpu", "--precision", "fp32"]) == 0
    df = pd.read_parquet(out)
    assert len(df) == 6 and df["rank"].tolist() == [1, 2] * 3 and df["rank"].dtype == np.int64
    err = capsys.readouterr().err
    assert "skipped" in err and "broken.jpg" in err and "3 image(s) located, 1 skipped" in err
    assert main(["locate", str(folder), "--model", "geoclip-tiny", "--gallery", str(gallery), "--output", str(out),
                 "--strategy", "fsdp"]) == 2
    assert "--strategy fsdp" in capsys.readouterr().err
