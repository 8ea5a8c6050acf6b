"""S2 geo-cell partitions: loading, assignment, hierarchy and building, checked on the published MP-16 files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import s2geometry as s2
import typer
from typer.testing import CliRunner

from geocore.cli import cells as cells_cli
from geocore.errors import InputError
from geocore.geo.cells import (
    assign_cells,
    cell_hierarchy,
    cell_levels,
    cell_ranges,
    leaf_cell_ids,
    load_partition,
    parent_ids,
    partition_from_frame,
)
from geocore.geo.cells_build import build_partition, write_partition

REF = Path(__file__).resolve().parents[2] / "shared/reference"
SIZES = {"coarse": ("cells_50_5000.csv", 3298), "middle": ("cells_50_2000.csv", 7202),
         "fine": ("cells_50_1000.csv", 12893)}
EIFFEL = (48.8584, 2.2945)


def _km(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.radians(a), np.radians(b)
    h = np.sin((b[..., 0] - a[..., 0]) / 2) ** 2 + np.cos(a[..., 0]) * np.cos(b[..., 0]) * np.sin(
        (b[..., 1] - a[..., 1]) / 2) ** 2
    return 2 * 6371.0088 * np.arcsin(np.sqrt(h))


def _sphere(n: int, seed: int) -> np.ndarray:
    """n points uniform on the sphere, (lat, lon)."""
    rng = np.random.default_rng(seed)
    return np.c_[np.degrees(np.arcsin(rng.uniform(-1, 1, n))), rng.uniform(-180, 180, n)]


@pytest.fixture(scope="module")
def parts():
    return {key: load_partition(REF / fname) for key, (fname, _) in SIZES.items()}


# ---- the published partitions -------------------------------------------------------------------------------


@pytest.mark.parametrize("key", list(SIZES))
def test_load_published(parts, key):
    fname, n = SIZES[key]
    p = parts[key]
    raw = pd.read_csv(REF / fname, dtype=str)
    assert len(p) == n and p.name == fname[:-4]
    assert np.array_equal(p.class_label, np.arange(n))
    assert p.tokens.dtype.kind == "U" and np.array_equal(p.tokens, raw["hex_id"].to_numpy(dtype=str))
    assert p.cell_ids.dtype == np.uint64 and p.centroids.shape == (n, 2)
    assert np.array_equal(p.imgs_per_cell, raw["imgs_per_cell"].astype(int))
    # ranges and levels agree with the S2 library
    for i in range(0, n, 97):
        cell = s2.S2CellId.FromToken(p.tokens[i])
        assert (p.cell_ids[i], p.range_min[i], p.range_max[i]) == (cell.id(), cell.range_min().id(),
                                                                   cell.range_max().id())
        assert cell_levels(p.cell_ids[i:i + 1])[0] == cell.level()
    # the published rule the builder follows: kept cells hold > 50 images; only level-30 cells exceed the max
    max_images = int(fname.split("_")[2][:-4])
    assert p.imgs_per_cell.min() == 51
    over = p.imgs_per_cell > max_images
    assert np.all(cell_levels(p.cell_ids[over]) == 30)


def test_numeric_looking_tokens_stay_strings(parts):
    fine, coarse = parts["fine"], parts["coarse"]
    assert fine.tokens[1] == "365" and fine.tokens[8] == "0fd"  # int-like and leading zero
    assert fine.tokens[40] == "47e63" and coarse.tokens[40] == "47e63"  # reads as a float 4.7e64
    assert fine.cell_ids[8] == s2.S2CellId.FromToken("0fd").id()


@pytest.mark.parametrize("key", list(SIZES))
def test_centroids_assign_to_their_own_cell(parts, key):
    p = parts[key]
    labels = assign_cells(p, p.centroids)
    # measured: every published centroid lies inside its own cell (rate 1.0 for all three files)
    assert np.array_equal(labels, p.class_label)


def test_known_places(parts):
    tokens = {k: p.tokens[assign_cells(p, [EIFFEL])[0]] for k, p in parts.items()}
    assert tokens == {"coarse": "47e66fe4", "middle": "47e66fe1f", "fine": "47e66fe1f3"}
    fine = parts["fine"]
    label = assign_cells(fine, [EIFFEL])[0]
    assert _km(np.array(EIFFEL), fine.centroids[label]) < 0.1  # measured 0.012 km, 707 images
    # mid-Pacific: the coarse and middle partitions have a huge level-2 cell '77' (mean in French Polynesia)
    pacific = np.array([[0.0, -150.0]])
    assert parts["coarse"].tokens[assign_cells(parts["coarse"], pacific)[0]] == "77"
    assert parts["middle"].tokens[assign_cells(parts["middle"], pacific)[0]] == "77"
    assert assign_cells(fine, pacific)[0] == -1
    # South Pacific, Indian Ocean, McMurdo, South Pole: in no cell of any partition
    nowhere = np.array([[-45.0, -120.0], [-30.0, 80.0], [-77.85, 166.67], [-90.0, 0.0]])
    for p in parts.values():
        assert np.all(assign_cells(p, nowhere) == -1)


def test_hierarchy_contains(parts):
    fine, middle, coarse = parts["fine"], parts["middle"], parts["coarse"]
    h = cell_hierarchy(fine, middle, coarse)
    assert h.shape == (len(fine), 2)
    assert np.all(h >= 0)  # measured: every fine cell has a middle and a coarse parent
    for j, parent in enumerate((middle, coarse)):
        for i in range(len(fine)):
            assert s2.S2CellId.FromToken(parent.tokens[h[i, j]]).contains(s2.S2CellId.FromToken(fine.tokens[i]))
    assert np.all(cell_hierarchy(middle, coarse)[:, 0] >= 0)
    assert np.array_equal(cell_hierarchy(coarse, coarse)[:, 0], coarse.class_label)


def test_hierarchy_matches_direct_assignment(parts):
    fine, middle, coarse = parts["fine"], parts["middle"], parts["coarse"]
    pts = _sphere(20000, seed=1)
    labels = assign_cells(fine, pts)
    pts, labels = pts[labels >= 0][:5000], labels[labels >= 0][:5000]
    assert len(pts) == 5000
    h = cell_hierarchy(fine, middle, coarse)
    assert np.array_equal(h[labels, 0], assign_cells(middle, pts))
    assert np.array_equal(h[labels, 1], assign_cells(coarse, pts))


def test_assign_100k_points(parts):
    labels = assign_cells(parts["fine"], _sphere(100_000, seed=0))
    assert labels.shape == (100_000,) and labels.dtype == np.int64
    assert labels.min() == -1 and labels.max() < len(parts["fine"])
    assert 0.45 < np.mean(labels >= 0) < 0.55  # measured 0.494: the fine cells cover half the sphere


# ---- S2 id arithmetic -----------------------------------------------------------------------------------------


def test_ids_match_s2_library():
    pts = _sphere(500, seed=2)
    leaf = leaf_cell_ids(pts)
    for (lat, lon), lid in zip(pts, leaf):
        assert lid == s2.S2CellId(s2.S2LatLng.FromDegrees(lat, lon)).id()
    for level in (0, 2, 7, 19, 30):
        parents = parent_ids(leaf, level)
        lo, hi = cell_ranges(parents)
        for lid, pid, a, b in zip(leaf[:50], parents[:50], lo[:50], hi[:50]):
            cell = s2.S2CellId(int(lid)).parent(level)
            assert (pid, a, b) == (cell.id(), cell.range_min().id(), cell.range_max().id())
        assert np.all(cell_levels(parents) == level)


# ---- building -------------------------------------------------------------------------------------------------


def _clustered(seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = [(48.85, 2.35, 0.05, 3000), (40.7, -74.0, 0.3, 1500), (-33.9, 151.2, 2.0, 800),
               (35.0, 139.0, 5.0, 600), (0.0, 20.0, 20.0, 300), (64.0, -20.0, 1.0, 40)]
    blobs = [np.c_[rng.normal(lat, s, n), rng.normal(lon, s, n)] for lat, lon, s, n in centres]
    same_spot = np.tile([[51.5007, -0.1246]], (700, 1))  # 700 photos at one GPS position
    pts = np.vstack([*blobs, same_spot, _sphere(200, seed)])
    pts[:, 0] = np.clip(pts[:, 0], -90, 90)
    pts[:, 1] = (pts[:, 1] + 180) % 360 - 180
    return pts


def _naive_build(pts: np.ndarray, min_images: int, max_images: int, max_level: int) -> dict[str, int]:
    """Straightforward recursive subdivision with S2 objects: token -> count."""
    leaves = [s2.S2CellId(s2.S2LatLng.FromDegrees(a, b)) for a, b in pts.tolist()]
    out: dict[str, int] = {}

    def split(members: list, level: int) -> None:
        groups: dict[int, list] = {}
        for c in members:
            groups.setdefault(c.parent(level).id(), []).append(c)
        for cid, group in groups.items():
            if len(group) > max_images and level < max_level:
                split(group, level + 1)
            elif len(group) > min_images:
                out[s2.S2CellId(cid).ToToken()] = len(group)

    split(leaves, 2)
    return out


@pytest.mark.parametrize("max_level", [30, 9])
def test_build_respects_sizes_and_assigns_members(tmp_path, max_level):
    pts = _clustered()
    min_images, max_images = 20, 400
    table = build_partition(pts, min_images=min_images, max_images=max_images, max_level=max_level)
    assert list(table.columns) == ["class_label", "hex_id", "imgs_per_cell", "latitude_mean", "longitude_mean"]
    assert dict(zip(table.hex_id, table.imgs_per_cell)) == _naive_build(pts, min_images, max_images, max_level)
    part = load_partition(write_partition(table, tmp_path / "built.csv"))
    assert len(part) == len(table) > 10
    assert np.array_equal(part.tokens, table.hex_id.to_numpy(dtype=str))
    assert np.all(np.diff(part.cell_ids.astype(np.float64)) > 0)  # labels in cell-id order
    levels = cell_levels(part.cell_ids)
    assert np.all(part.imgs_per_cell > min_images)
    assert np.all((part.imgs_per_cell <= max_images) | (levels == max_level))
    assert np.any(part.imgs_per_cell > max_images)  # the single-position cluster cannot be split
    # every kept point lies in exactly the cell that counted it; centroids are member means
    labels = assign_cells(part, pts)
    kept = labels >= 0
    assert np.array_equal(np.bincount(labels[kept], minlength=len(part)), part.imgs_per_cell)
    assert kept.sum() == part.imgs_per_cell.sum() < len(pts)
    for k in range(len(part)):
        assert np.allclose(pts[labels == k].mean(axis=0), part.centroids[k], atol=1e-9)
    leaf = leaf_cell_ids(pts[kept][:300])
    for lid, lab in zip(leaf, labels[kept][:300]):
        assert s2.S2CellId.FromToken(part.tokens[lab]).contains(s2.S2CellId(int(lid)))
    # a cell below the initial level exists only because its parent held too many images
    all_leaf = leaf_cell_ids(pts)
    for cid, level in zip(part.cell_ids, levels):
        if level > 2:
            parent = parent_ids(np.array([cid]), level - 1)[0]
            assert np.sum(parent_ids(all_leaf, level - 1) == parent) > max_images


def test_build_is_deterministic_and_order_free():
    pts = _clustered(seed=3)
    a = build_partition(pts, min_images=20, max_images=400)
    b = build_partition(pts[np.random.default_rng(0).permutation(len(pts))], min_images=20, max_images=400)
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-12)


def test_build_rejects_bad_parameters():
    with pytest.raises(InputError, match="min_images"):
        build_partition(_sphere(10, 0), min_images=50, max_images=50)
    with pytest.raises(InputError, match="max_level"):
        build_partition(_sphere(10, 0), max_level=31)


# ---- bad input ------------------------------------------------------------------------------------------------


def _partition_csv(tmp_path: Path, edit) -> Path:
    frame = edit(pd.read_csv(REF / "cells_50_1000.csv", dtype=str, nrows=20))
    path = tmp_path / "cells.csv"
    frame.to_csv(path, index=False)
    return path


def _set(column: str, row: int, value: str):
    """An edit that puts `value` into `column` of 0-based data row `row` (file line row + 2)."""
    def edit(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[row, column] = value
        return frame
    return edit


@pytest.mark.parametrize("edit, pattern", [
    (_set("hex_id", 4, "zz9"), r"cells\.csv: line 6 field 'hex_id': expected a valid S2 cell token.*'zz9'"),
    (_set("hex_id", 4, ""), r"line 6 field 'hex_id': expected a valid S2 cell token"),
    (lambda f: f.drop(columns="imgs_per_cell"), r"cells\.csv: missing column\(s\) imgs_per_cell"),
    (_set("class_label", 7, "2"), r"line 9 field 'class_label': expected unique labels; 2 already on line 4"),
    (_set("class_label", 3, "x"), r"line 5 field 'class_label': expected an integer, got 'x'"),
    (_set("class_label", 3, "25"), r"line 5 field 'class_label': expected a label in 0..19"),
    (_set("imgs_per_cell", 6, "1.5"), r"line 8 field 'imgs_per_cell': expected an integer, got '1.5'"),
    (_set("latitude_mean", 2, "95"), r"line 4 field 'latitude_mean': expected a latitude in \[-90, 90\]"),
    (_set("longitude_mean", 2, "nan"), r"line 4 field 'longitude_mean': expected a finite number"),
    (_set("hex_id", 10, "8747"),
     r"line 12 field 'hex_id': expected cells that do not overlap; '8747' overlaps '8747c' on line 2"),
    (_set("hex_id", 10, "8747c"), r"line 12 field 'hex_id': .*'8747c' repeats '8747c' on line 2"),
])
def test_bad_partition_files(tmp_path, edit, pattern):
    with pytest.raises(InputError, match=pattern):
        load_partition(_partition_csv(tmp_path, edit))


def test_missing_partition_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_partition(tmp_path / "nope.csv")


def test_bad_coordinates(parts):
    pts = _sphere(10, 0)
    pts[3, 0], pts[7, 1] = np.nan, 200.0
    with pytest.raises(InputError, match=r"2 invalid coordinates.*row 3 \(lat=nan.*row 7 \(lat=.*lon=200"):
        assign_cells(parts["coarse"], pts)
    with pytest.raises(InputError, match=r"row 0 \(lat=95"):
        leaf_cell_ids([[95.0, 0.0]])
    with pytest.raises(InputError, match=r"shape"):
        assign_cells(parts["coarse"], np.zeros((4, 3)))


def test_partition_from_frame_accepts_built_table():
    table = build_partition(_clustered(), min_images=20, max_images=400)
    part = partition_from_frame(table, "built")
    assert np.allclose(part.centroids, table[["latitude_mean", "longitude_mean"]].to_numpy())


# ---- CLI ------------------------------------------------------------------------------------------------------


def _cli() -> typer.Typer:
    app = typer.Typer()
    cells_cli.register(app)

    @app.command("noop")  # keep `cells` a sub-command group, as under the main app
    def _noop() -> None: ...

    return app


def test_cli_assign_keeps_columns(tmp_path):
    truth = pd.read_csv(REF / "im2gps3k_places365.csv", dtype=str, nrows=200)
    truth.loc[0, "IMG_ID"] = "00042.jpg"
    src, out = tmp_path / "in.csv", tmp_path / "out.csv"
    truth.to_csv(src, index=False)
    result = CliRunner().invoke(_cli(), ["cells", "assign", "--partition", str(REF / "cells_50_2000.csv"),
                                         "--input", str(src), "--output", str(out)])
    assert result.exit_code == 0, result.output
    got = pd.read_csv(out, dtype={"IMG_ID": str})
    assert list(got.columns) == [*truth.columns, "class_label", "cell_lat", "cell_lon"]
    assert got.IMG_ID.tolist() == truth.IMG_ID.tolist()
    part = load_partition(REF / "cells_50_2000.csv")
    expected = assign_cells(part, truth[["LAT", "LON"]].astype(float).to_numpy())
    assert np.array_equal(got.class_label, expected)
    assert np.array_equal(got.cell_lat.isna(), expected < 0)
    assert np.allclose(got.cell_lat[expected >= 0], part.centroids[expected[expected >= 0], 0])
    assert f"200 points, {int((expected < 0).sum())} unassigned" in result.output


def test_cli_build_writes_loadable_file(tmp_path):
    pts = _clustered()
    src, out = tmp_path / "train.csv", tmp_path / "sub" / "cells.csv"
    pd.DataFrame({"IMG_ID": range(len(pts)), "LAT": pts[:, 0], "LON": pts[:, 1]}).to_csv(src, index=False)
    result = CliRunner().invoke(_cli(), ["cells", "build", "--input", str(src), "--min-images", "20",
                                         "--max-images", "400", "--output", str(out)])
    assert result.exit_code == 0, result.output
    part = load_partition(out)
    kept = int(part.imgs_per_cell.sum())
    assert f"{len(part)} cells; {kept} images kept, {len(pts) - kept} dropped" in result.output


def test_cli_bad_coordinates_name_the_line(tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("IMG_ID,LAT,LON\na,10,10\nb,11,11\nc,95,11\nd,north,3\n")
    args = ["cells", "assign", "--partition", str(REF / "cells_50_5000.csv"), "--input", str(src),
            "--output", str(tmp_path / "o.csv")]
    result = CliRunner().invoke(_cli(), args)
    assert isinstance(result.exception, InputError)
    assert "line 4 (lat=95.0" in str(result.exception) and "line 5 (lat=nan" in str(result.exception)
    src.write_text("IMG_ID,LATITUDE,LON\na,10,10\n")
    result = CliRunner().invoke(_cli(), args)
    assert isinstance(result.exception, InputError) and "missing column(s) LAT" in str(result.exception)


def test_main_cli_reports_input_error(tmp_path, capsys):
    from geocore.cli.main import SUBCOMMAND_MODULES, main

    assert "geocore.cli.cells" in SUBCOMMAND_MODULES
    code = main(["cells", "assign", "--partition", str(tmp_path / "missing.csv"), "--input", "x.csv",
                 "--output", str(tmp_path / "o.csv")])
    assert code == 2
    assert "missing.csv: partition file not found" in capsys.readouterr().err
