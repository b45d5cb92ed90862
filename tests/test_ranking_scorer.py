"""The default scorer on images with known defects, and how scores combine."""

from __future__ import annotations

import math

import pytest
import ranking_fixtures as F

from pipeline.ranking.scorers import combine, normalise, sort_key
from pipeline.ranking.technical import DefaultScorer, judge, measure

SEEDS = range(8)


def score(img):
    return judge(measure(img))


@pytest.fixture(scope="module")
def cleans():
    return [F.clean(s) for s in SEEDS] + F.photos()


DEFECTS = {
    "blurry": (F.blurred, {"blurry"}),
    "noisy": (F.noisy, {"noisy"}),
    "burnt": (F.burnt, {"overexposed", "oversaturated"}),
}


@pytest.mark.parametrize("defect", DEFECTS)
def test_each_defect_is_flagged_and_ranks_below_the_clean_image(cleans, defect):
    make, expected = DEFECTS[defect]
    pairs = [(score(img), score(make(img))) for img in cleans]
    assert all(expected & set(bad.flags) for _, bad in pairs), [bad.flags for _, bad in pairs]
    wins = sum(good.score > bad.score for good, bad in pairs)
    assert wins >= 0.9 * len(pairs)


def test_clean_synthetic_images_have_no_flags():
    for s in SEEDS:
        assert score(F.clean(s)).flags == []


def test_blank_image_is_a_hard_reject():
    for s in SEEDS:
        r = score(F.blank(s))
        assert math.isnan(r.score) and r.flags == ["blank"]


def test_subject_cut_by_the_frame_is_flagged_and_ranks_below():
    results = [(score(F.clean(s)), score(F.clean(s, "cut"))) for s in SEEDS]
    assert all("subject_cut" in cut.flags for _, cut in results)
    assert sum(good.score > cut.score for good, cut in results) >= 0.9 * len(results)


def test_subject_on_a_thirds_point_beats_a_centred_one():
    results = [(score(F.clean(s)), score(F.clean(s, "centre"))) for s in SEEDS]
    assert all(t.sub["placement"] > c.sub["placement"] for t, c in results)
    assert sum(t.score > c.score for t, c in results) >= 0.9 * len(results)
    assert all("subject_cut" not in c.flags for _, c in results)  # centred is fine, not a defect


def test_unreadable_image_is_rejected_not_raised(tmp_path):
    from pipeline.ranking.scorers import Item

    (tmp_path / "bad.png").write_bytes(b"not a png")
    results = DefaultScorer().score([Item("a", tmp_path / "bad.png"), Item("b", tmp_path / "none.png")])
    assert [r.flags for r in results] == [["unreadable"], ["unreadable"]]
    assert all(math.isnan(r.score) for r in results)


def test_normalise_is_robust_and_keeps_rejects():
    z = normalise([1.0, 2.0, 3.0, math.nan, 100.0, 2.0])
    assert z[1] == 0.0 and z[0] < 0 < z[2]
    assert math.isnan(z[3]) and z[4] == 4.0  # an outlier is clipped, not dominating
    assert normalise([5.0, 5.0]) == [0.0, 0.0]


def test_combine_weights_scorers_on_their_normalised_scales():
    raw = [{"default": 0.9, "aesthetic": 4.0}, {"default": 0.5, "aesthetic": 7.0}, {"default": 0.7, "aesthetic": 5.5}]
    default_only = combine(raw, {"default": 1.0})
    assert default_only[0] > default_only[2] > default_only[1]
    aesthetic_heavy = combine(raw, {"default": 1.0, "aesthetic": 3.0})
    assert aesthetic_heavy[1] > aesthetic_heavy[0]  # the scale of 1..10 ratings does not matter, weights do
    assert combine(raw, {"default": 1.0, "aesthetic": 0.0}) == default_only


def test_a_nan_from_a_weighted_scorer_rejects_and_a_missing_one_is_skipped():
    raw = [
        {"default": 0.9},
        {"default": math.nan},
        {"default": 0.1, "aesthetic": 9.0},
        {"default": 0.5, "aesthetic": 1.0},
    ]
    out = combine(raw, {"default": 1.0, "aesthetic": 1.0})
    assert math.isnan(out[1]) and not math.isnan(out[0])
    assert sorted(range(4), key=lambda i: sort_key(out[i]))[-1] == 1  # rejects sort last
