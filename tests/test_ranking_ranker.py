"""Scoring drafts on disk: the loop's hook, `aiimg rank`, near-duplicates, auto-seeding."""

from __future__ import annotations

import subprocess
import sys

import pytest
import ranking_fixtures as F

from pipeline import config
from pipeline.content import Content, parse_marker
from pipeline.ranking import Ranker, rank_command
from pipeline.ranking.duplicates import distance, phash


@pytest.fixture
def folder(tmp_path):
    cfg = config.from_dict({}, root=str(tmp_path))
    return cfg, Content(cfg.content_dir).ensure()


def test_new_draft_is_scored_and_recorded_keeping_the_recipe(folder):
    cfg, content = folder
    draft_id = F.make_draft(content, F.clean(1), picks=[{"token": "{red|blue}", "value": "red"}])
    before = content.read_draft(draft_id)
    Ranker(cfg, content).on_new_draft(draft_id)
    after = content.read_draft(draft_id)
    scores = after.pop("scores")
    assert after == before  # every recipe key kept as it was
    assert scores["version"] == 1 and scores["flags"] == [] and len(scores["phash"]) == 16
    assert 0.8 < scores["scorers"]["default"]["score"] <= 1.0
    assert {"sharpness", "noise", "placement", "frame_cut"} <= set(scores["scorers"]["default"]["sub"])


def test_a_bad_image_is_recorded_as_rejected_and_never_raises(folder):
    cfg, content = folder
    bad = F.make_draft(content, F.clean(2))
    content.draft(bad).image.write_bytes(b"\x89PNG truncated")
    good = F.make_draft(content, F.clean(3))
    ranker = Ranker(cfg, content)
    ranker.on_new_draft(bad)
    ranker.on_new_draft("20261125-000000-dead")  # vanished draft: logged, no raise
    ranker.on_new_draft(good)
    assert F.scores_of(content, bad)["score"] is None
    assert F.scores_of(content, bad)["flags"] == ["unreadable"]
    assert F.scores_of(content, good)["score"] is not None


def test_near_duplicates_are_flagged_against_the_older_draft(folder):
    cfg, content = folder
    first = F.make_draft(content, F.clean(4))
    other = F.make_draft(content, F.clean(5))
    copy = F.make_draft(content, F.noisy(F.clean(4), sigma=3))
    ranker = Ranker(cfg, content)
    for draft_id in (first, other, copy):
        ranker.on_new_draft(draft_id)
    assert F.scores_of(content, copy)["duplicate_of"] == first
    assert "duplicate" in F.scores_of(content, copy)["flags"]
    assert "duplicate_of" not in F.scores_of(content, other)
    assert "duplicate" not in F.scores_of(content, first)["flags"]


def test_phash_distance_separates_copies_from_different_images():
    a, b = F.clean(6), F.clean(7)
    assert distance(phash(a), phash(F.blurred(a, 1.0))) <= 8
    assert distance(phash(a), phash(b)) > 8


def test_rank_is_incremental_and_all_rescores(folder):
    cfg, content = folder
    ids = [F.make_draft(content, img) for img in (F.clean(8), F.blurred(F.clean(9)), F.blank(1))]
    report = rank_command(cfg)
    assert "scored 3 draft(s)" in report and "blank 1" in report and "blurry 1" in report
    stamp = F.scores_of(content, ids[0])["scored"]
    assert "skipped 3 already scored" in rank_command(cfg)
    ids.append(F.make_draft(content, F.clean(10)))
    assert "scored 1 draft(s)" in rank_command(cfg)
    assert "scored 4 draft(s)" in rank_command(cfg, rescore=True)
    order = report.splitlines()
    assert order[-1].split()[0] == "reject"  # the blank one sorts last
    assert F.scores_of(content, ids[0])["scored"] >= stamp


def test_rank_orders_clean_before_defective(folder):
    cfg, content = folder
    clean = [F.make_draft(content, F.clean(s)) for s in (11, 12)]
    bad = [F.make_draft(content, f(F.clean(s))) for s, f in ((13, F.blurred), (14, F.noisy), (15, F.burnt))]
    lines = rank_command(cfg).splitlines()
    top = [line.split()[1] for line in lines[-5:]]
    assert set(top[:2]) == set(clean) and set(top[2:]) == set(bad)
    assert all(F.scores_of(content, i)["score"] > F.scores_of(content, j)["score"] for i in clean for j in bad)


def test_auto_seed_marks_the_top_of_each_batch(tmp_path):
    cfg = config.from_dict({"run": {"auto_seed": True, "auto_seed_batch": 4, "auto_seed_top": 1}}, root=str(tmp_path))
    content = Content(cfg.content_dir).ensure()
    ranker = Ranker(cfg, content)
    images = [F.blurred(F.clean(16)), F.noisy(F.clean(17)), F.clean(18), F.blank(2)]
    ids = [F.make_draft(content, img) for img in images]
    for draft_id in ids[:3]:
        ranker.on_new_draft(draft_id)
    assert content.seeds()[0] == []  # the batch is not complete yet
    ranker.on_new_draft(ids[3])
    waiting = content.seeds()[0]
    assert [s.draft.id for s in waiting] == [ids[2]]
    assert parse_marker(waiting[0].marker.path) == {"by": "auto"}


def test_auto_seed_is_off_by_default(folder):
    cfg, content = folder
    ranker = Ranker(cfg, content)
    for s in range(cfg.run.auto_seed_batch):
        ranker.on_new_draft(F.make_draft(content, F.clean(s)))
    assert content.seeds() == ([], [])


def test_importing_the_package_and_cli_loads_no_numpy_cv2_or_torch():
    code = (
        "import sys, pipeline.cli, pipeline.ranking; from pipeline.ranking import Ranker;"
        "print(sorted(m for m in ('numpy', 'cv2', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_constructing_a_ranker_is_cheap_and_torch_free(tmp_path):
    code = (
        "import sys; from pipeline import config; from pipeline.ranking import Ranker;"
        f"Ranker(config.from_dict({{}}, root={str(tmp_path)!r})); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_cli_rank_and_stats_and_a_bad_weight(tmp_path):
    content = Content(tmp_path / "content").ensure()
    F.make_draft(content, F.clean(20, size=(256, 256)), picks=[{"token": "{red|blue}", "value": "blue"}])
    toml = tmp_path / "aiimg.toml"
    toml.write_text("[score]\nweights = { default = 1.0 }\n")

    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "--config", str(toml), *args],
            capture_output=True,
            text=True,
            timeout=120,
        )

    ranked = run("rank")
    assert ranked.returncode == 0 and "scored 1 draft(s)" in ranked.stdout
    stats = run("stats")
    assert stats.returncode == 0 and "blue" in stats.stdout and "1 drafts, 0 seeded by you" in stats.stdout
    toml.write_text("[score]\nweights = { default = 1.0, sharpness = 2.0 }\n")
    bad = run("rank")
    assert bad.returncode == 1 and "[score] weights: unknown scorer 'sharpness'" in bad.stderr
