"""`geocore locate` for cases: --same-place (a joint answer beside the per-photo ones), video clips, --claim."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import registered_tiny  # noqa: E402
from geocore.cli.main import main
from geocore.data.video import encode_frames

MODEL = "cases-tiny"


@pytest.fixture(scope="module", autouse=True)
def tiny_model():
    with registered_tiny(MODEL, grid_km=500.0) as model:
        yield model


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("case")
    rng = np.random.default_rng(0)
    out = {}
    for i in range(3):
        out[f"p{i}"] = folder / f"p{i}.jpg"
        Image.fromarray((rng.random((48, 64, 3)) * 255).astype("uint8")).save(out[f"p{i}"])
    noise = (rng.random((64, 64, 3)) * 255).astype("uint8")
    red = np.zeros((64, 64, 3), np.uint8) + np.array([200, 30, 30], np.uint8)
    out["clip"] = encode_frames([noise] * 20 + [red] * 20, folder / "clip.mp4", fps=10)  # two scenes, 4 s
    out["bad"] = folder / "bad.mkv"
    out["bad"].write_bytes(b"\x1aE\xdf\xa3 truncated")
    return out


def _json(capsys, args) -> dict:
    assert main([str(a) for a in args]) == 0
    return json.loads(capsys.readouterr().out)


def test_same_place_json_has_the_joint_beside_the_photos(case, capsys):
    rec = _json(capsys, ["locate", case["p0"], case["p1"], case["p2"], "--model", MODEL, "--same-place", "--json"])
    assert [p["image"] for p in rec["photos"]] == [str(case[f"p{i}"]) for i in range(3)]
    joint = rec["joint"]
    assert joint["n_photos"] == 3 and len(joint["photos"]) == 3 and len(joint["regions"]) == 2
    assert sum(r["prob"] for r in joint["topk"]) <= 1.0 + 1e-6
    # the joint 90 % region is no larger than any single photo's (the photos agree here: one tiny model)
    single = [next(f for f in p["regions"] if f["properties"]["level"] == 0.9)["properties"]["area_km2"]
              for p in rec["photos"]]
    joint90 = next(f for f in joint["regions"] if f["properties"]["level"] == 0.9)["properties"]["area_km2"]
    assert joint90 <= min(single)


def test_claims_by_name_and_by_coordinates(case, capsys):
    assert main(["locate", str(case["p0"]), "--model", MODEL, "--claim", "Kharkiv, Ukraine"]) == 0
    out = capsys.readouterr().out
    assert "claim vs" in out and "Kharkiv" in out and "km from the top answer" in out
    rec = _json(capsys, ["locate", case["p0"], "--model", MODEL, "--claim", "49.99,36.23", "--json"])
    (check,) = rec["claims"].values()
    assert check["lat"] == pytest.approx(49.99) and check["lon"] == pytest.approx(36.23)
    assert isinstance(check["in_90"], bool) and "verdict" in check
    assert main(["locate", str(case["p0"]), "--model", MODEL, "--claim", "Paris"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ambiguous" in err and "France" in err
    assert main(["locate", str(case["p0"]), "--model", MODEL, "--claim", "95,10"]) == 2
    assert "latitude" in capsys.readouterr().err


def test_a_video_just_works_and_a_bad_one_is_one_line(case, capsys):
    rec = _json(capsys, ["locate", case["clip"], "--model", MODEL, "--json", "--every-s", "0.5"])
    (video,) = rec["videos"]
    assert video["info"]["width"] == 64 and len(video["segments"]) == 2  # the cut to red starts a new segment
    assert len(video["frames"]) >= 2 and video["clip"]["n_photos"] == 2
    assert main(["locate", str(case["bad"]), "--model", MODEL]) == 2
    err = capsys.readouterr().err
    assert "bad.mkv" in err and "Traceback" not in err
