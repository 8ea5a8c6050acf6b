"""Mondrian calibration (coverage within bins of localizability), its small-bin rule and the fit check."""

from __future__ import annotations

import numpy as np
import pytest

from geocore.errors import InputError
from geocore.uncertainty.conditional import (Bins, conformal_masses, fit_bins, min_bin_count, outside_range,
                                             score_quantiles, shift_test)

LEVELS = (0.5, 0.8, 0.9, 0.95)


def _two_groups(n: int, rng):
    """Easy photos (score 0) whose truth needs mass U(0, 0.5), hard ones (score 1) needing U(0, 1): the
    coverage of a mass q is min(1, 2q) on the easy ones and q on the hard ones, exactly."""
    hard = rng.random(n) < 0.5
    mass = np.where(hard, rng.random(n), 0.5 * rng.random(n))
    return mass, hard.astype(float)


def test_mondrian_holds_each_group_where_marginal_cannot():
    rng = np.random.default_rng(0)
    mass, score = _two_groups(40_000, rng)
    marginal = conformal_masses(mass, LEVELS)
    bins = fit_bins(mass, score, LEVELS, score_name="entropy", n_bins=2)
    assert bins.counts[0] + bins.counts[1] == mass.size and len(bins.counts) == 2
    q = np.asarray(bins.masses)
    for j, p in enumerate(LEVELS):
        # exact coverage of the masses found, per group: easy min(1, 2q), hard q
        assert min(1.0, 2 * q[0, j]) == pytest.approx(p, abs=0.01)
        assert q[1, j] == pytest.approx(p, abs=0.01)
        # the marginal mass over-covers the easy group and under-covers the hard one at every level
        assert min(1.0, 2 * marginal[j]) > p + 0.04 and marginal[j] < p - 0.04
    # fresh photos land in the right bin and get their bin's masses
    assert bins.bin_of([0.0, 1.0, np.nan]).tolist() == [0, 1, 1]


def test_finite_sample_coverage_is_at_least_the_level_in_each_bin():
    rng = np.random.default_rng(1)
    hits = np.zeros((2, len(LEVELS)))
    trials = 300
    for _ in range(trials):  # split conformal: E[coverage] = ⌈(n+1)p⌉ / (n+1) ≥ p, per bin
        mass, score = _two_groups(120, rng)
        bins = fit_bins(mass, score, LEVELS, score_name="entropy", n_bins=2, min_count=10)
        new_mass, new_score = _two_groups(200, rng)
        covered = new_mass[:, None] <= np.asarray(bins.masses)[bins.bin_of(new_score)]
        for b in (0, 1):
            hits[b] += covered[new_score == b].mean(0)
    assert (hits / trials >= np.asarray(LEVELS) - 0.01).all()


def test_small_bins_are_merged_and_counted():
    rng = np.random.default_rng(2)
    mass, score = rng.random(100), rng.random(100)
    bins = fit_bins(mass, score, LEVELS, n_bins=10, min_count=30)  # 10 photos a bin < 30
    assert min(bins.counts) >= 30
    assert sum(bins.counts) == 100 and bins.merged == 10 - len(bins.counts) and 2 <= len(bins.counts) <= 3
    assert min_bin_count(LEVELS) == 50 and fit_bins(mass, score, LEVELS).counts == (50, 50)
    assert len(bins.edges) == len(bins.counts) - 1
    one = fit_bins(mass[:15], score[:15], LEVELS, n_bins=3)  # too few for any split: one bin, mass 1.0 at 95 %
    assert one.counts == (15,) and one.edges == () and one.masses[0][-1] == 1.0
    assert min_bin_count((0.5, 0.995)) == 199


def test_a_bin_whose_truths_are_tied_in_the_densest_candidate_joins_its_neighbour():
    """Easy photos (low score) whose truth lies in their answer's densest candidate 70 % of the time (truth mass 0,
    tied): on their own, the 50 % mass is 0 and their regions cover 70 % whatever the mass. The rule merges them with
    the next bin, whose mass is then above 0, and the merged photos are covered at the level again."""
    rng = np.random.default_rng(5)
    n = 4000
    score = rng.random(n)
    easy = score < 0.5
    mass = np.where(easy & (rng.random(n) < 0.7), 0.0, rng.random(n))
    bins = fit_bins(mass, score, LEVELS, n_bins=2)
    assert bins.counts == (n,) and bins.merged == 1 and bins.masses[0][0] > 0.0  # alone, the easy bin's mass was 0
    alone = conformal_masses(mass[easy], LEVELS)
    assert alone[0] == 0.0 and np.mean(mass[easy] <= alone[0]) > 0.65  # what it would have covered at 50 %
    test_score = rng.random(n)
    test_mass = np.where((test_score < 0.5) & (rng.random(n) < 0.7), 0.0, rng.random(n))
    m = np.asarray(bins.masses)[bins.bin_of(test_score)]
    assert abs(np.mean(test_mass <= m[:, 0]) - 0.5) < 0.03  # 50 % regions hold 50 % of the truths again
    untied = fit_bins(rng.random(n), score, LEVELS, n_bins=2)  # no ties: the two bins stay
    assert untied.counts != (n,) and untied.merged == 0


def test_bins_round_trip_and_refuse_bad_fields():
    rng = np.random.default_rng(3)
    bins = fit_bins(rng.random(300), rng.random(300), LEVELS)
    assert Bins.from_dict(bins.to_dict(), "c.json", len(LEVELS)) == bins
    bad = bins.to_dict() | {"edges": bins.edges[::-1]}
    with pytest.raises(InputError, match=r"c.json: field 'bins'.edges: expected finite, increasing"):
        Bins.from_dict(bad, "c.json", len(LEVELS))
    with pytest.raises(InputError, match="6 counts and 6 × 4 masses"):
        Bins.from_dict(bins.to_dict() | {"masses": [[0.1]]}, "c.json", len(LEVELS))
    with pytest.raises(InputError, match="score: expected one of"):
        Bins.from_dict(bins.to_dict() | {"score": "x"}, "c.json", len(LEVELS))


def _four_groups(n: int, rng):
    """Two scores, each halving the photos: a truth needs mass U(0, w) with w = 0.25, 0.5, 0.75 or 1 by
    (first score, second score) — so each group's coverage of a mass q is min(1, q / w), exactly."""
    a, b = rng.random(n) < 0.5, rng.random(n) < 0.5
    width = 0.25 + 0.5 * a + 0.25 * b
    return rng.random(n) * width, np.stack([a, b], axis=1).astype(float), width


def test_nested_bins_hold_every_group_of_both_scores():
    rng = np.random.default_rng(7)
    mass, scores, width = _four_groups(40_000, rng)
    flat = fit_bins(mass, scores[:, 0], LEVELS, n_bins=2)
    nested = fit_bins(mass, scores, LEVELS, n_bins=2, inner_score="log_area90", n_inner=2)
    assert nested.scores == ("entropy", "log_area90") and len(nested.counts) == 4 and sum(nested.counts) == mass.size
    for bins, n_scores in ((flat, 1), (nested, 2)):
        q = np.asarray(bins.masses)[bins.bin_of(scores[:, :n_scores])]  # (N, L): each photo's masses
        for w in (0.25, 0.5, 0.75, 1.0):
            group = np.isclose(width, w)
            covered = np.minimum(1.0, q[group] / w).mean(axis=0)  # exact coverage of the group's masses
            if bins is nested:
                assert covered == pytest.approx(LEVELS, abs=0.012)
            elif w == 0.25:  # one mass for both halves of the second score: the narrow half over-covered …
                assert (covered[:2] > np.asarray(LEVELS[:2]) + 0.05).all()
            elif w == 0.5:  # … and the wide half under-covered
                assert (covered[:2] < np.asarray(LEVELS[:2]) - 0.05).all()
    assert nested.bin_of([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [np.nan, np.nan]]).tolist() == [0, 1, 2, 3, 3]
    assert "2 of entropy, each cut in up to 2 by log_area90" in nested.describe()
    assert len(nested.labels()) == 4 and nested.labels()[1].startswith("entropy < 0.5; log_area90 ≥")


def test_nested_bins_round_trip_cut_short_groups_and_refuse_bad_fields():
    rng = np.random.default_rng(8)
    mass, scores, _ = _four_groups(600, rng)
    scores[:, 0] = np.where(np.arange(600) < 120, 0.0, 1.0)  # the first bin holds 120 photos: room for 2 cuts of 60
    scores[:, 1] = rng.random(600)
    bins = fit_bins(mass, scores, LEVELS, n_bins=2, inner_score="log_area90", n_inner=5)
    assert [len(e) + 1 for e in bins.inner_edges] == [2, 5] and min(bins.counts) >= min_bin_count(LEVELS)
    assert bins.merged == 3  # the first bin's 5 inner cuts reduced to 2
    assert Bins.from_dict(bins.to_dict(), "c.json", len(LEVELS)) == bins
    with pytest.raises(InputError, match="inner_edges: expected one list of edges per bin of entropy"):
        Bins.from_dict(bins.to_dict() | {"inner_edges": bins.to_dict()["inner_edges"][:1]}, "c.json", len(LEVELS))
    with pytest.raises(InputError, match="expected 7 counts"):
        Bins.from_dict(bins.to_dict() | {"counts": [100] * 6}, "c.json", len(LEVELS))
    with pytest.raises(InputError, match="score: expected one of"):
        Bins.from_dict(bins.to_dict() | {"inner_score": "x"}, "c.json", len(LEVELS))


def test_fit_check_warns_outside_the_calibration_and_on_a_shifted_set():
    rng = np.random.default_rng(4)
    cal = rng.normal(0, 1, 5000)
    q = score_quantiles(cal)
    assert len(q) == 101 and q[0] == cal.min() and q[-1] == cal.max()
    warned = outside_range(np.array([q[1] - 0.01, 0.0, q[-2] + 0.01, np.nan]), q)
    assert warned.tolist() == [True, False, True, True]
    matched = shift_test(rng.normal(0, 1, 500), q, cal.size)
    shifted = shift_test(rng.normal(0.5, 1, 500), q, cal.size)
    assert not matched.shifted and matched.p_value > 0.05
    assert shifted.shifted and shifted.statistic > 0.15
    assert shift_test([], q, cal.size) is None


def test_calibration_file_carries_the_bins_and_old_files_stay_marginal():
    import json

    from geocore.uncertainty.calibration import Calibration, fit_calibration

    rng = np.random.default_rng(5)
    mass, score = _two_groups(2000, rng)
    cal = fit_calibration(mass, LEVELS, model="m", fingerprint="f", bin_score=score, localizability=score * 3 + 1,
                          n_bins=2)
    assert cal.method == "mondrian" and len(cal.bins.counts) == 2 and len(cal.localizability) == 101
    per_photo = cal.masses_for((0.5, 0.9), [0.0, 1.0])  # (2, 2): the easy photo needs about half the hard one's
    assert per_photo.shape == (2, 2) and per_photo[0, 0] == pytest.approx(0.25, abs=0.04)
    assert per_photo[1, 0] == pytest.approx(0.5, abs=0.04) and per_photo[1, 1] == pytest.approx(0.9, abs=0.03)
    again = Calibration.from_bytes(json.dumps(cal.to_dict()).encode(), "c.json")
    assert again == cal
    assert cal.outside([2.5, 0.5, 10.0]).tolist() == [False, True, True]  # saw 1 and 4 only
    old = {k: v for k, v in cal.to_dict().items()
           if k not in ("bins", "localizability", "method", "truth_masses", "photo_bins")}
    legacy = Calibration.from_bytes(json.dumps(old).encode(), "old.json")
    assert legacy.method == "marginal" and legacy.masses_for(LEVELS).shape == (4,)
    assert not legacy.outside([100.0]).any()  # no quantiles recorded: nothing to warn about


def test_search_regions_use_each_photos_bin():
    from geocore.geo.candidates import CandidateCells  # noqa: F401  (the cells type the regions take)
    from geocore.uncertainty import gallery_cells
    from geocore.uncertainty.calibration import fit_calibration
    from geocore.uncertainty.regions import bin_scores, search_regions
    import torch

    pts = torch.tensor([[lat, lon] for lat in range(-40, 41, 20) for lon in range(-160, 161, 40)], dtype=torch.float64)
    cells = gallery_cells(pts)
    sharp = np.full(len(pts), 1e-4)
    sharp[0] = 1 - 1e-4 * (len(pts) - 1)
    flat = np.full(len(pts), 1 / len(pts))
    probs = np.stack([sharp, flat])
    ent = bin_scores(probs.astype(np.float32), cells, "entropy")
    rng = np.random.default_rng(6)
    # calibration: low-entropy photos need little mass, high-entropy ones a lot
    mass = np.r_[0.05 * rng.random(200), 0.5 + 0.5 * rng.random(200)]
    score = np.r_[np.full(200, ent[0]), np.full(200, ent[1])]
    cal = fit_calibration(mass, (0.5, 0.9), model="m", fingerprint=cells, bin_score=score, n_bins=2)
    regs = search_regions(probs, cells, (0.5, 0.9), calibration=cal, model="m")
    assert regs[0][0].mass < 0.05 < 0.5 < regs[1][0].mass  # each photo got its own bin's mass
    assert all(r.calibrated for row in regs for r in row)
