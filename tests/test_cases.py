"""Cases: joint answers for several photos, claimed locations, video clips (geocore.cases, geocore.data.video)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geocore.cases.claims import check_claim, conformal_p_value, p_value_bounds, resolve_claim
from geocore.cases.joint import joint_from_log_probs, joint_locate, temperature
from geocore.data.video import VideoFrames, encode_frames
from geocore.errors import ImageError, InputError
from geocore.uncertainty import fit_calibration, gallery_cells

RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def grid():
    """A 1° grid over Europe as candidates, with their cells."""
    lat, lon = np.meshgrid(np.arange(35.0, 60.0), np.arange(-10.0, 30.0), indexing="ij")
    pts = torch.tensor(np.stack([lat.ravel(), lon.ravel()], 1), dtype=torch.float32)
    return pts, gallery_cells(pts)


@pytest.fixture(scope="module")
def tiny():
    """geoclip-tiny (random backbone, real heads) over a 5° world grid: fast."""
    from geocore.models.registry import create_model

    lat, lon = np.meshgrid(np.arange(-60.0, 71.0, 5.0), np.arange(-180.0, 180.0, 5.0), indexing="ij")
    return create_model("geoclip-tiny").with_gallery(torch.tensor(np.stack([lat.ravel(), lon.ravel()], 1),
                                                                  dtype=torch.float32))


def _peaked(pts: torch.Tensor, at, width_deg: float) -> torch.Tensor:
    """log of a peak at `at` mixed with a floor over every candidate (softmax scores have heavy tails)."""
    d2 = ((pts - torch.tensor(at, dtype=torch.float32)) ** 2).sum(1)
    return (0.95 * (-d2 / (2 * width_deg**2)).softmax(-1) + 0.05 / len(pts)).log()


def test_joint_peaks_where_the_photos_agree_and_is_narrower(grid):
    pts, cells = grid
    at = (48.0, 11.0)
    logp = torch.stack([_peaked(pts, at, 3.0), _peaked(pts, (49.0, 12.0), 3.0)])
    out = joint_from_log_probs(logp, ["a", "b"], pts, cells, levels=(0.5, 0.9))
    top = out.table.iloc[0]
    assert abs(top["lat"] - 48.5) <= 1 and abs(top["lon"] - 11.5) <= 1
    assert out.temperature == pytest.approx(temperature(2)) and 0.5 < out.temperature < 1
    assert out.region(0.9).area_km2 < out.photos["area90_km2"].min()  # narrower than either photo alone
    assert (out.photos["narrowing"] > 1).all() and not out.photos["conflict"].any()
    assert out.to_json()["n_photos"] == 2 and len(out.to_json()["regions"]) == 2


def test_a_photo_from_elsewhere_is_flagged(grid):
    pts, cells = grid
    logp = torch.stack([_peaked(pts, (48.0, 11.0), 1.0), _peaked(pts, (48.5, 11.5), 1.0),
                        _peaked(pts, (48.0, 11.5), 1.0), _peaked(pts, (38.0, 25.0), 1.0)])
    out = joint_from_log_probs(logp, ["a", "b", "c", "far"], pts, cells)
    assert out.conflicts == ["far"]
    assert out.photos.set_index("name").loc["far", "km_from_joint"] > 1000


def test_joint_locate_on_real_results(tmp_path, tiny, one_thread):
    from PIL import Image

    from geocore.locate import locate

    model = tiny
    for i in range(2):
        Image.fromarray(RNG.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    res = locate(model, [(p.name, p) for p in sorted(tmp_path.iterdir())], full=True, hint="harbour")
    out = joint_locate(res, model, levels=(0.9,))
    assert out.n == 2 and [n for n, _ in out.skipped] == ["bad.png"] and out.hint["text"] == "harbour"
    assert out.prediction.probs_full.sum().item() == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(InputError, match="full=True"):
        joint_locate(locate(model, [("0.png", tmp_path / "0.png")]), model)


@pytest.mark.parametrize("text, expected", [
    ("Kharkiv, Ukraine", (49.98, 36.25)), ("KHARKÍV", (49.98, 36.25)), ("Paris, France", (48.85, 2.35)),
    ("Springfield, Illinois, USA", (39.80, -89.64)), ("London, England", (51.51, -0.13)),
    ("49.99, 36.23", (49.99, 36.23)), ("-33.9 151.2", (-33.9, 151.2)),
])
def test_claims_resolve(text, expected):
    lat, lon, label = resolve_claim(text)
    assert (lat, lon) == pytest.approx(expected, abs=0.01) and label


def test_ambiguous_claims_list_candidates_largest_first():
    with pytest.raises(InputError) as err:
        resolve_claim("Paris")
    msg = str(err.value)
    assert "\n" not in msg and "add a country" in msg
    assert msg.index("Paris, Ile-de-France, France") < msg.index("Texas")
    with pytest.raises(InputError, match="add a region"):
        resolve_claim("Springfield, USA")


@pytest.mark.parametrize("text", ["91, 10", "nan, 3", "10, 200", "Nowhereville, France", "a, b, c, d", ""])
def test_bad_claims_are_one_line(text):
    with pytest.raises(InputError) as err:
        resolve_claim(text)
    assert "\n" not in str(err.value)


def test_conformal_p_value_and_its_bounds_from_a_calibration_file(grid):
    pts, cells = grid
    scores = np.linspace(0.0, 1.0, 99, endpoint=False)  # n = 99
    assert conformal_p_value([0.0, 0.5, 0.995], scores) == pytest.approx([1.0, 50 / 100, 1 / 100])
    cal = fit_calibration(scores, (0.5, 0.9, 0.95), model="m", fingerprint=cells)
    for s in (0.3, 0.5, 0.89, 0.91, 0.97):
        lo, hi = p_value_bounds(s, cal)
        assert lo <= conformal_p_value(s, scores)[0] <= hi
    assert p_value_bounds(0.97, cal)[1] <= 0.05  # beyond the 95 % mass: the file alone proves p ≤ 0.05


def test_check_claim_against_a_distribution(grid):
    pts, cells = grid
    from geocore.models.prediction import Prediction

    pred = Prediction.from_scores(_peaked(pts, (48.0, 11.0), 2.0)[None], pts, 5, full=True)
    cal = fit_calibration(np.linspace(0, 0.9, 99), (0.5, 0.9, 0.95), model="m", fingerprint=cells)
    near, far = (check_claim(pred, c, cells, cal, model="m") for c in ((48.2, 11.1), "Lisbon, Portugal"))
    assert near.in_90 and near.rejected(0.1) is False and "consistent" in near.verdict
    assert not far.in_90 and far.rejected(0.05) and "argues against" in far.verdict and far.km_from_top1 > 1500
    raw = check_claim(pred, (48.2, 11.1), cells)
    assert raw.in_50 and raw.p_value is None and "not calibrated" in raw.verdict
    exact = check_claim(pred, "Lisbon, Portugal", cells, cal, model="m", calibration_scores=np.linspace(0, 0.9, 99))
    assert exact.p_value == pytest.approx(0.01)


def _scenes(n_per: int = 15, size=(96, 128)) -> list[np.ndarray]:
    red = [np.full((*size, 3), (200, 30, 30), np.uint8)] * n_per
    return red + [RNG.integers(0, 255, (*size, 3), dtype=np.uint8) for _ in range(n_per)]


@pytest.mark.parametrize("container, codec", [("mp4", "libx264"), ("webm", "libvpx-vp9"), ("matroska", "libx264")])
def test_video_sampling_finds_the_cut_and_drops_repeats(container, codec):
    data = encode_frames(_scenes(), fps=10, codec=codec, container=container)
    frames = VideoFrames(data, name=f"clip.{container}", every_s=0.5)
    got = list(frames)
    assert frames.info.duration_s == pytest.approx(3.0, abs=0.15)
    cuts = [f.time_s for f in got if f.scene_cut]
    assert cuts[0] == 0.0 and len(cuts) == 2 and 1.4 <= cuts[1] <= 1.6
    assert frames.stats["duplicates"] >= 2  # the still red scene is not sent to the model again
    assert all(max(f.image.size) <= 448 for f in got)


def test_locate_video_segments(tmp_path, tiny, one_thread):
    from geocore.cases.clip import locate_video

    path = encode_frames(_scenes(), tmp_path / "clip.mp4", fps=10)
    res = locate_video(tiny, path, every_s=0.5, levels=(0.9,))
    assert len(res.segments) == 2 and res.clip.n == 2
    assert list(res.frames["segment"]) == sorted(res.frames["segment"])
    assert res.frames["localizability"].notna().all() and len(res.track) == len(res.frames)
    assert res.to_json()["clip"]["n_photos"] == 2


def test_bad_videos_are_one_line_errors(tmp_path):
    good = encode_frames(_scenes(5), fps=10, container="webm", codec="libvpx-vp9")
    cases = {
        "corrupt.mp4": RNG.integers(0, 255, 5000, dtype=np.uint8).tobytes(),
        "truncated.mp4": encode_frames(_scenes(5), fps=10)[:3000],
        "truncated.webm": good[: len(good) // 2],
        "empty.mp4": b"",
        "audio.m4a": encode_frames([], container="mp4"),
    }
    for name, data in cases.items():
        with pytest.raises((InputError, ImageError)) as err:
            list(VideoFrames(data, name=name))
        assert name in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(InputError, match="no video stream"):
        VideoFrames(cases["audio.m4a"], name="audio.m4a")
    with pytest.raises(InputError, match="no such"):
        VideoFrames(tmp_path / "missing.mp4")


def test_claim_p_value_is_exact_from_the_scores_a_calibration_keeps():
    """A calibration file keeps each photo's score: the claim's p-value is (1 + #{s_i ≥ s}) / (n + 1), exactly."""
    import torch

    from geocore.cases.claims import check_claim
    from geocore.models.prediction import Prediction
    from geocore.uncertainty import fit_calibration, gallery_cells

    pts = torch.tensor([[lat, lon] for lat in range(-60, 61, 30) for lon in range(-150, 151, 60)], dtype=torch.float64)
    cells = gallery_cells(pts)
    logits = -torch.arange(len(pts), dtype=torch.float64)[None] * 0.5  # densest first: candidate 0, 1, 2, …
    pred = Prediction.from_scores(logits, pts.float(), 3, full=True)
    scores = np.linspace(0.0, 1.0, 99)
    cal = fit_calibration(scores, (0.5, 0.9), model="m", fingerprint=cells)
    assert len(cal.truth_masses) == 99
    check = check_claim(pred, tuple(pts[2].tolist()), cells, cal, model="m")  # the third densest candidate
    expected = (1 + np.sum(np.round(scores, 6) >= check.mass)) / 100
    assert check.p_value == pytest.approx(expected) and check.p_low is None
