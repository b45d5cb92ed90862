import math
import random

import pytest

from pipeline import sizes


def test_drafts_are_multiples_of_64_within_3_percent_of_the_area_and_in_the_aspect_range():
    rng = random.Random(7)
    seen = set()
    for _ in range(2000):
        w, h = sizes.draft_size(640000, ["2:3", "3:2"], rng)
        assert w % 64 == 0 and h % 64 == 0
        assert abs(w * h - 640000) / 640000 <= 0.03
        assert 2 / 3 <= w / h <= 3 / 2
        seen.add((w, h))
    # both orientations come up: the aspect really is random
    assert any(w > h for w, h in seen) and any(w < h for w, h in seen)


@pytest.mark.parametrize("area", [1000000, 1400000, 640000])
def test_variations_keep_the_draft_aspect_within_3_percent_at_their_area(area):
    for w, h in sizes.candidates(640000, 64, 0.03):
        if not 2 / 3 <= w / h <= 3 / 2:
            continue
        vw, vh = sizes.size_for(area, w / h)
        assert vw % 8 == 0 and vh % 8 == 0
        assert abs(vw * vh - area) / area <= 0.03
        assert abs((vw / vh) / (w / h) - 1) <= 0.03


def test_size_prefers_multiples_of_64_when_they_fit():
    assert sizes.size_for(1000000, 832 / 768) == (1024, 960)


def test_a_list_of_ratios_is_picked_from_not_ranged():
    rng = random.Random(1)
    ratios = {round(sizes.draw_aspect(["1:1", "16:9", "9:16"], rng), 4) for _ in range(200)}
    assert ratios == {1.0, round(16 / 9, 4), round(9 / 16, 4)}


def test_range_is_log_uniform_so_portrait_and_landscape_are_equally_likely():
    rng = random.Random(3)
    draws = [sizes.draw_aspect(["1:2", "2:1"], rng) for _ in range(4000)]
    assert 0.45 < sum(d > 1 for d in draws) / len(draws) < 0.55
    assert all(0.5 <= d <= 2.0 for d in draws)


@pytest.mark.parametrize("bad", ["x", "3:0", "1:100", ""])
def test_bad_ratio_names_the_value(bad):
    with pytest.raises(ValueError, match=repr(bad).replace("'", ".")):
        sizes.parse_ratio(bad)


def test_ratio_text():
    assert sizes.ratio_text(832, 1216) == "13:19"
    assert math.isclose(sizes.parse_ratio("1.5"), 1.5)


@pytest.mark.parametrize(
    "area, aspects",
    [(640000, ["2:3", "3:2"]), (640000, ["1:2", "2:1"]), (1000000, ["9:16", "16:9"]), (640000, ["1:1", "2:3", "3:2"])],
)
def test_bucket_shares_are_the_chances_draft_size_draws_each_bucket_with(area, aspects):
    """What steering uses as each size's prior must be what the unsteered draw does."""
    shares = dict(sizes.bucket_shares(area, aspects))
    assert sum(shares.values()) == pytest.approx(1.0) and len(shares) >= 2
    rng = random.Random(4)
    n = 20000
    drawn = [sizes.draft_size(area, aspects, rng) for _ in range(n)]
    assert set(drawn) <= set(shares)
    for wh, share in shares.items():
        assert drawn.count(wh) / n == pytest.approx(share, abs=0.012), wh


def test_no_bucket_means_no_shares():
    # 16:9 alone at this area has no 64-multiple size within 3%: draft_size snaps to 8s instead
    assert sizes.buckets(640000, ["16:9"]) == [] and sizes.bucket_shares(640000, ["16:9"]) == []
    w, h = sizes.draft_size(640000, ["16:9"], random.Random(1))
    assert w % 8 == 0 and h % 8 == 0 and (w % 64 or h % 64)
