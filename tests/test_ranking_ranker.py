"""Scoring drafts on disk: the loop's hook, `aiimg rank`, near-duplicates, auto-seeding."""

from __future__ import annotations

import hashlib
import logging
import math
import os
import subprocess
import sys
import time

import pytest
import ranking_fixtures as F

from pipeline import config, markers, rounds
from pipeline.content import Content
from pipeline.errors import AiimgError
from pipeline.files import atomic_write_bytes
from pipeline.ranking import Ranker, rank_command, store
from pipeline.ranking import ranker as ranker_module
from pipeline.ranking.duplicates import distance, phash
from pipeline.ranking.scorers import Result

SMALL = (256, 256)
OLD_STAMP = "2000-01-01T00:00:00Z"


@pytest.fixture
def folder(tmp_path):
    cfg = config.from_dict({}, root=str(tmp_path))
    return cfg, Content(cfg.content_dir).ensure()


def test_new_draft_is_scored_and_recorded_keeping_the_recipe(folder):
    cfg, content = folder
    draft_id = F.make_draft(content, F.clean(1), picks=[{"token": "{red|blue}", "value": "red"}])
    before = F.recipe_of(content, draft_id)
    Ranker(cfg, content).on_new_draft(draft_id)
    after = F.recipe_of(content, draft_id)
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
    order = report.splitlines()
    assert order[-1].split()[0] == "reject"  # the blank one sorts last
    # marks that only a rescore can remove (`scored` alone has 1 s resolution: it may not move)
    stale = {"score": 123.0, "sub": {}, "flags": []}
    F.edit_scores(content, ids[0], scored=OLD_STAMP, scorers={"default": stale})
    assert "skipped 3 already scored" in rank_command(cfg)
    assert F.scores_of(content, ids[0])["scored"] == OLD_STAMP  # skipped: not rewritten
    ids.append(F.make_draft(content, F.clean(10)))
    assert "scored 1 draft(s)" in rank_command(cfg)
    assert "scored 4 draft(s)" in rank_command(cfg, rescore=True)
    rescored = F.scores_of(content, ids[0])
    assert rescored["scored"] != OLD_STAMP and rescored["scorers"]["default"]["score"] < 1.0


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
    assert rounds.waiting(content)[0] == []  # the batch is not complete yet
    ranker.on_new_draft(ids[3])
    waiting = rounds.waiting(content)[0]
    assert [s.draft.id for s in waiting] == [ids[2]]
    assert markers.parse(waiting[0].marker.path) == {"by": "auto"}


def test_auto_seed_is_off_by_default(folder):
    cfg, content = folder
    ranker = Ranker(cfg, content)
    ids = [F.make_draft(content, F.clean(s, size=SMALL)) for s in range(cfg.run.auto_seed_batch)]
    for draft_id in ids:
        ranker.on_new_draft(draft_id)
    assert all(F.scores_of(content, i)["score"] is not None for i in ids)  # a whole batch was ranked...
    assert rounds.waiting(content) == ([], [])  # ...and none seeded


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


def test_cli_rank_and_stats(tmp_path):
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


# -- a scorer that fails is not a judgement ------------------------------------------------------


class Raising:
    """An aesthetic scorer that fails on every draft, as one does whose library is missing."""

    name = "aesthetic"

    def score(self, items):
        raise ImportError("No module named 'torch'")


class Rating:
    """An aesthetic scorer that works: 5.0, 6.0, ... in the order it is given drafts."""

    name = "aesthetic"

    def __init__(self):
        self.seen = []

    def score(self, items):
        self.seen += [it.id for it in items]
        return [Result(5.0 + n) for n, _ in enumerate(items)]


class Rejecting:
    """An aesthetic scorer that judges every draft a hard reject (a NaN on purpose)."""

    name = "aesthetic"

    def score(self, items):
        return [Result(math.nan, {}, ["unreadable"]) for _ in items]


@pytest.fixture
def fresh_process(monkeypatch):
    """As in a new process: no scorer has failed yet (warnings are once per scorer and process)."""
    monkeypatch.setattr(ranker_module, "_first_failure", {})


def ranker_with(cfg, content, scorer) -> Ranker:
    ranker = Ranker(cfg, content)
    ranker.scorers.append(scorer)
    return ranker


def failure_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "failed" in r.getMessage()]


def test_a_scorer_that_raises_is_left_out_warned_once_and_retried(folder, caplog, fresh_process):
    cfg, content = folder
    ids = [F.make_draft(content, F.clean(s, size=SMALL)) for s in (40, 41, 42)]
    ranker = ranker_with(cfg, content, Raising())
    with caplog.at_level(logging.DEBUG, logger="aiimg.ranking"):
        assert ranker.score_entries(store.entries(content)) == 3
        assert ranker_with(cfg, content, Raising()).score_entries(store.entries(content)) == 3
    warned = failure_warnings(caplog)
    assert len(warned) == 1 and "scorer aesthetic failed" in warned[0] and "No module named 'torch'" in warned[0]
    assert ranker.failed == {"aesthetic": 3}
    for draft_id in ids:
        scores = F.scores_of(content, draft_id)
        assert set(scores["scorers"]) == {"default"} and scores["flags"] == []
        assert scores["score"] is not None  # ranked by the default scorer, not rejected
    later = ranker_with(cfg, content, Rating())
    assert later.score_entries(store.entries(content)) == 3  # the next rank retries it
    assert sorted(later.scorers[-1].seen) == sorted(ids)
    assert all(F.scores_of(content, i)["scorers"]["aesthetic"]["score"] >= 5.0 for i in ids)
    assert later.score_entries(store.entries(content)) == 0  # nothing left to retry


def test_a_scorer_that_judges_a_reject_still_rejects(folder, fresh_process):
    cfg, content = folder
    draft_id = F.make_draft(content, F.clean(43, size=SMALL))
    ranker = ranker_with(cfg, content, Rejecting())
    assert ranker.score_entries(store.entries(content)) == 1 and not ranker.failed
    scores = F.scores_of(content, draft_id)
    assert scores["score"] is None and scores["flags"] == ["unreadable"]
    assert scores["scorers"]["aesthetic"]["score"] is None
    assert ranker_with(cfg, content, Rating()).score_entries(store.entries(content)) == 0  # a judgement stands


def test_failures_recorded_by_older_versions_count_as_not_scored(folder, fresh_process):
    cfg, content = folder
    draft_id = F.make_draft(content, F.clean(44, size=SMALL))
    rank_command(cfg)
    scorers = F.scores_of(content, draft_id)["scorers"]
    scorers["aesthetic"] = {"score": None, "sub": {"error": "No module named 'torch'"}, "flags": ["unscorable"]}
    F.edit_scores(content, draft_id, scorers=scorers, score=None, flags=["unscorable"])
    entry = store.entry(content, content.draft(draft_id))
    assert set(entry.raw()) == {"default"}  # left out of the combination: not a reject
    rating = Rating()
    assert ranker_with(cfg, content, rating).score_entries([entry]) == 1 and rating.seen == [draft_id]
    scores = F.scores_of(content, draft_id)
    assert scores["scorers"]["aesthetic"]["score"] == 5.0 and scores["flags"] == [] and scores["score"] is not None


def fake_clip_files(root):
    """The files [score] clip_model and aesthetic_head name; never loaded by these tests."""
    (root / "clip").mkdir()
    (root / "clip" / "config.json").write_text("{}")
    (root / "clip" / "model.safetensors").write_bytes(b"")
    (root / "head.pth").write_bytes(b"")
    return config.from_dict({"score": {"clip_model": "clip", "aesthetic_head": "head.pth"}}, root=str(root))


def test_clip_model_set_without_torch_is_a_start_up_problem_not_a_reject(tmp_path, monkeypatch):
    cfg = fake_clip_files(tmp_path)
    content = Content(cfg.content_dir).ensure()
    ids = [F.make_draft(content, F.clean(s, size=SMALL)) for s in (45, 46)]
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` fails, as where it is not installed
    report = rank_command(cfg)
    assert "aesthetic scorer off: [score] clip_model: the aesthetic scorer needs torch" in report
    for draft_id in ids:
        scores = F.scores_of(content, draft_id)
        assert set(scores["scorers"]) == {"default"} and scores["score"] is not None and scores["flags"] == []


def test_an_aesthetic_model_that_fails_to_load_is_left_out_and_retried(tmp_path, monkeypatch, caplog, fresh_process):
    from pipeline.ranking import aesthetic

    cfg = fake_clip_files(tmp_path)
    content = Content(cfg.content_dir).ensure()
    ids = [F.make_draft(content, F.clean(s, size=SMALL)) for s in (47, 48, 49)]

    def cannot_load(folder, head):
        raise AiimgError(f"{folder}: not a loadable CLIP model (simulated)")

    monkeypatch.setattr(aesthetic, "load", cannot_load)
    with caplog.at_level(logging.WARNING, logger="aiimg.ranking"):
        report = rank_command(cfg)
    assert "warning: scorer aesthetic failed on 3 draft(s)" in report and "not a loadable CLIP model" in report
    assert len(failure_warnings(caplog)) == 1
    assert all(F.scores_of(content, i)["score"] is not None for i in ids)
    assert all(set(F.scores_of(content, i)["scorers"]) == {"default"} for i in ids)
    monkeypatch.setattr(aesthetic.AestheticScorer, "score", lambda self, items: [Result(5.0) for _ in items])
    report = rank_command(cfg)
    assert "scored 3 draft(s)" in report and "failed" not in report
    assert all(set(F.scores_of(content, i)["scorers"]) == {"default", "aesthetic"} for i in ids)


# -- incremental means "skip unchanged images" ---------------------------------------------------


def test_a_replaced_image_is_rescored_from_scratch(folder):
    cfg, content = folder
    ids = [F.make_draft(content, F.clean(s, size=SMALL)) for s in (50, 51)]
    rank_command(cfg)
    before = F.scores_of(content, ids[0])
    atomic_write_bytes(content.draft(ids[0]).image, F.png(F.blank(5, size=SMALL)))  # replaced by another file
    report = rank_command(cfg)
    assert "scored 1 draft(s)" in report and "skipped 1 already scored" in report
    after = F.scores_of(content, ids[0])
    assert after["score"] is None and after["flags"] == ["blank"]
    assert after["image"]["sha256"] != before["image"]["sha256"] and after["phash"] != before["phash"]


def test_new_bytes_of_the_same_size_under_the_old_mtime_are_found_by_the_hash(folder):
    cfg, content = folder
    draft_id = F.make_draft(content, F.clean(52, size=SMALL))
    image = content.draft(draft_id).image
    image.write_bytes(F.png(F.clean(52, size=SMALL)))
    rank_command(cfg)
    old = image.stat()
    image.write_bytes(F.png(F.blank(6, size=SMALL)))  # edited in place...
    os.utime(image, ns=(old.st_atime_ns, old.st_mtime_ns))  # ...and its mtime set back
    assert (image.stat().st_size, image.stat().st_mtime_ns) == (old.st_size, old.st_mtime_ns)
    assert "scored 1 draft(s)" in rank_command(cfg)
    assert F.scores_of(content, draft_id)["flags"] == ["blank"]


def test_an_unchanged_image_is_skipped_without_hashing_and_a_touched_one_too(folder, monkeypatch):
    cfg, content = folder
    ids = [F.make_draft(content, F.clean(s, size=SMALL)) for s in (53, 54)]
    rank_command(cfg)
    hashed = []
    real = hashlib.file_digest
    monkeypatch.setattr(hashlib, "file_digest", lambda fh, name: hashed.append(fh.name) or real(fh, name))
    assert "skipped 2 already scored" in rank_command(cfg) and hashed == []
    image = content.draft(ids[0]).image
    touched = image.stat().st_mtime_ns + 5_000_000_000
    os.utime(image, ns=(touched, touched))  # same bytes, new mtime (a copy, a sync tool)
    assert "skipped 2 already scored" in rank_command(cfg) and len(hashed) == 1
    assert F.scores_of(content, ids[0])["image"]["mtime_ns"] == touched
    assert "skipped 2 already scored" in rank_command(cfg) and len(hashed) == 1  # stat numbers recorded


def test_scores_from_before_fingerprints_are_trusted_unless_the_image_is_newer(folder):
    cfg, content = folder
    kept, changed = (F.make_draft(content, F.clean(s, size=SMALL)) for s in (55, 56))
    rank_command(cfg)
    stale = {"score": 123.0, "sub": {}, "flags": []}
    for draft_id in (kept, changed):
        F.edit_scores(content, draft_id, image=F.DROP, scorers={"default": stale})
    hour_ago = time.time_ns() - 3600 * 10**9
    os.utime(content.draft(kept).image, ns=(hour_ago, hour_ago))  # older than its scores: nothing tells
    F.edit_scores(content, changed, scored=OLD_STAMP)  # its image was written after these scores
    report = rank_command(cfg)
    assert "scored 1 draft(s)" in report and "skipped 1 already scored" in report
    assert F.scores_of(content, changed)["scorers"]["default"]["score"] < 1.0
    trusted = F.scores_of(content, kept)
    assert trusted["scorers"]["default"]["score"] == 123.0
    digest = hashlib.sha256(content.draft(kept).image.read_bytes()).hexdigest()
    assert trusted["image"]["sha256"] == digest  # recorded once: from now on a change is seen
