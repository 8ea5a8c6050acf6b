"""Benchmark CSV reading and the image-folder dataset, on real reference CSVs and built-on-the-fly folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from geocore.data.datasets import BenchmarkDataset, collate_skip_errors, image_ids_subset, read_benchmark_csv
from geocore.errors import InputError

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
IM2GPS3K = REFERENCE / "im2gps3k_places365.csv"
IM2GPS = REFERENCE / "im2gps_places365.csv"
needs_reference = pytest.mark.skipif(not IM2GPS3K.is_file(), reason=f"reference data not at {REFERENCE}")

HEADER = "IMG_ID,AUTHOR,LAT,LON,S3_Label,S16_Label,S365_Label,Prob_indoor,Prob_natural,Prob_urban\n"


def _csv(tmp_path: Path, text: str, name: str = "bench.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _to_tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img.resize((8, 8)), dtype=np.uint8).copy()).permute(2, 0, 1)


def _five_rows(tmp_path: Path, present: int = 3) -> tuple[Path, Path]:
    rows = [f"img_{i}.jpg,auth,{10 + i}.5,{-20 - i}.25,{i % 3},{i},{100 + i},0.1,0.2,0.7\n" for i in range(5)]
    csv_path = _csv(tmp_path, HEADER + "".join(rows))
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    for i in range(present):
        Image.new("RGB", (20, 10), (40 * i, 0, 0)).save(image_dir / f"img_{i}.jpg")
    return csv_path, image_dir


# --- read_benchmark_csv ------------------------------------------------------------------------


@needs_reference
@pytest.mark.parametrize(("path", "rows"), [(IM2GPS3K, 2997), (IM2GPS, 237)])
def test_reference_csvs_load(path: Path, rows: int) -> None:
    frame = read_benchmark_csv(path)
    assert len(frame) == rows
    assert frame["IMG_ID"].is_unique and frame["IMG_ID"].str.endswith(".jpg").all()
    assert frame["LAT"].dtype == np.float64 and frame["LAT"].between(-90, 90).all()
    assert frame["LON"].between(-180, 180).all()
    assert {"AUTHOR", "S3_Label", "S16_Label", "S365_Label", "Prob_urban"} <= set(frame.columns)
    assert set(frame["S3_Label"].unique()) <= {0, 1, 2}


def test_geoclip_img_file_format_keeps_ids_as_strings(tmp_path: Path) -> None:
    path = _csv(tmp_path, "IMG_FILE,LAT,LON,extra\n0001.jpg,1.5,2.5,x\n1e5,-3,4,y\n00042,0,0,z\n")
    frame = read_benchmark_csv(path)
    assert frame["IMG_ID"].tolist() == ["0001.jpg", "1e5", "00042"]
    assert frame["IMG_FILE"].tolist() == ["0001.jpg", "1e5", "00042"]
    assert frame["extra"].tolist() == ["x", "y", "z"]
    assert frame["LAT"].tolist() == [1.5, -3.0, 0.0]


def test_header_case_and_bom_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffimg_id, lat ,Lon\na.jpg,1,2\n".encode())
    frame = read_benchmark_csv(path)
    assert list(frame.columns[:3]) == ["IMG_ID", "LAT", "LON"] and frame["LON"].iloc[0] == 2.0


def test_bad_coordinates_named_with_lines_and_field(tmp_path: Path) -> None:
    path = _csv(tmp_path, "IMG_ID,LAT,LON\na.jpg,1,2\nb.jpg,abc,2\nc.jpg,3,4\nd.jpg,5,200\ne.jpg,,6\nf.jpg,-91,0\n")
    with pytest.raises(InputError) as err:
        read_benchmark_csv(path)
    msg = str(err.value)
    assert str(path) in msg
    assert "line(s) 3, 6, 7: field LAT must be a number in [-90, 90]" in msg
    assert "'abc'" in msg
    assert "line(s) 5: field LON must be a number in [-180, 180]" in msg


def test_many_bad_rows_summarised(tmp_path: Path) -> None:
    path = _csv(tmp_path, "IMG_ID,LAT,LON\n" + "".join(f"{i}.jpg,nan,0\n" for i in range(12)))
    with pytest.raises(InputError, match=r"line\(s\) 2, 3, 4, 5, 6 \(and 7 more\): field LAT"):
        read_benchmark_csv(path)


def test_duplicates_named(tmp_path: Path) -> None:
    path = _csv(tmp_path, "IMG_ID,LAT,LON\na.jpg,1,2\nb.jpg,1,2\na.jpg,3,4\nb.jpg,0,0\nc.jpg,0,0\n")
    with pytest.raises(InputError, match=r"duplicate IMG_ID values: a\.jpg \(lines 2, 4\); b\.jpg \(lines 3, 5\)"):
        read_benchmark_csv(path)


def test_empty_id_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"line\(s\) 3: field IMG_ID is empty"):
        read_benchmark_csv(_csv(tmp_path, "IMG_ID,LAT,LON\na.jpg,1,2\n,1,2\n"))


def test_missing_columns_listed(tmp_path: Path) -> None:
    path = _csv(tmp_path, "photo,latitude,LON\na.jpg,1,2\n")
    with pytest.raises(InputError) as err:
        read_benchmark_csv(path)
    msg = str(err.value)
    assert "lacks column(s) LAT, IMG_ID or IMG_FILE" in msg
    assert "found photo, latitude, LON" in msg and "expected IMG_ID (or IMG_FILE), LAT, LON" in msg


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope\.csv does not exist"):
        read_benchmark_csv(tmp_path / "nope.csv")
    with pytest.raises(InputError, match=r"empty\.csv is empty"):
        read_benchmark_csv(_csv(tmp_path, "", "empty.csv"))


# --- BenchmarkDataset ----------------------------------------------------------------------------


def test_missing_images_counted_not_crashing(tmp_path: Path) -> None:
    csv_path, image_dir = _five_rows(tmp_path, present=3)
    ds = BenchmarkDataset(csv_path, image_dir)
    assert len(ds) == 3 and ds.n_missing == 2
    assert ds.missing == ["img_3.jpg", "img_4.jpg"]
    item = ds[1]
    assert isinstance(item["image"], Image.Image) and item["image"].size == (20, 10)
    assert item["img_id"] == "img_1.jpg" and item["lat"] == 11.5 and item["lon"] == -21.25
    assert item["index"] == 1 and item["error"] is None
    assert (item["S3_Label"], item["S16_Label"], item["S365_Label"]) == (1, 1, 101)


def test_missing_images_kept_as_errors_when_not_skipped(tmp_path: Path) -> None:
    csv_path, image_dir = _five_rows(tmp_path, present=3)
    ds = BenchmarkDataset(csv_path, image_dir, skip_missing=False)
    assert len(ds) == 5 and ds.n_missing == 2
    item = ds[4]
    assert item["image"] is None and "img_4.jpg does not exist" in item["error"]


def test_corrupt_image_is_an_error_item_and_batches_continue(tmp_path: Path) -> None:
    csv_path, image_dir = _five_rows(tmp_path, present=5)
    (image_dir / "img_2.jpg").write_bytes(b"this is not a jpeg")
    good = (image_dir / "img_4.jpg").read_bytes()
    (image_dir / "img_4.jpg").write_bytes(good[: len(good) // 2])
    ds = BenchmarkDataset(csv_path, image_dir, transform=_to_tensor)
    item = ds[2]
    assert item["image"] is None and "img_2.jpg is not an image PIL can read" in item["error"]

    batches = list(DataLoader(ds, batch_size=4, collate_fn=collate_skip_errors))
    first, second = batches
    assert first["image"].shape == (3, 3, 8, 8) and first["image"].dtype == torch.uint8
    assert first["img_id"] == ["img_0.jpg", "img_1.jpg", "img_3.jpg"]
    assert first["index"].tolist() == [0, 1, 3]
    assert first["lat"].tolist() == [10.5, 11.5, 13.5]
    assert first["S365_Label"].tolist() == [100, 101, 103]
    assert [e[0] for e in first["errors"]] == ["img_2.jpg"]
    assert second["img_id"] == [] and second["image"] == []
    assert second["errors"][0][0] == "img_4.jpg" and "truncated or corrupt" in second["errors"][0][1]
    assert "error" not in first


def test_collate_keeps_pil_images_as_list(tmp_path: Path) -> None:
    csv_path, image_dir = _five_rows(tmp_path, present=2)
    batch = collate_skip_errors([BenchmarkDataset(csv_path, image_dir)[i] for i in range(2)])
    assert isinstance(batch["image"], list) and all(isinstance(i, Image.Image) for i in batch["image"])
    assert batch["errors"] == []


def test_subsets_for_resuming(tmp_path: Path) -> None:
    csv_path, image_dir = _five_rows(tmp_path, present=5)
    ds = BenchmarkDataset(csv_path, image_dir)
    rest = ds.subset(["img_0.jpg", "img_3.jpg", "not_there.jpg"])
    assert rest.img_ids == ["img_1.jpg", "img_2.jpg", "img_4.jpg"]
    assert rest[2]["index"] == 4  # CSV row index survives subsetting
    assert len(ds) == 5  # the original is untouched
    only = image_ids_subset(ds, {"img_4.jpg", "img_1.jpg"})
    assert only.img_ids == ["img_1.jpg", "img_4.jpg"] and only[0]["img_id"] == "img_1.jpg"


def test_img_file_column_resolves_paths_in_subfolders(tmp_path: Path) -> None:
    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    Image.new("RGB", (4, 4), (0, 9, 0)).save(tmp_path / "imgs" / "sub" / "x.png")
    csv_path = _csv(tmp_path, "IMG_FILE,LAT,LON\nsub/x.png,1,2\nsub/y.png,3,4\n")
    ds = BenchmarkDataset(csv_path, tmp_path / "imgs")
    assert len(ds) == 1 and ds.missing == ["sub/y.png"]
    item = ds[0]
    assert item["img_id"] == "sub/x.png" and item["image"].getpixel((0, 0)) == (0, 9, 0)
    assert "S3_Label" not in item


def test_image_dir_must_exist(tmp_path: Path) -> None:
    csv_path, _ = _five_rows(tmp_path, present=0)
    with pytest.raises(InputError, match="is not a directory"):
        BenchmarkDataset(csv_path, tmp_path / "absent")


@needs_reference
def test_reference_dataset_without_images_reports_all_missing(tmp_path: Path) -> None:
    ds = BenchmarkDataset(IM2GPS3K, tmp_path)
    assert len(ds) == 0 and ds.n_missing == 2997
    Image.new("RGB", (6, 6)).save(tmp_path / ds.missing[10])
    assert len(BenchmarkDataset(IM2GPS3K, tmp_path)) == 1
    assert all(type(i) is str for i in ds.missing)
