"""The life of a round (rounds.py): which markers wait, resume, new rounds, old work.json files."""

import json
import os
import time

import pytest
from conftest import bare_draft

from pipeline import rounds
from pipeline.content import Content
from pipeline.recipes import Round, VariationRecipe, Work

make_draft = bare_draft


def variation(draft_id: str, index: int, round_no: int) -> VariationRecipe:
    return VariationRecipe(
        f"{draft_id}-{index}", "p", 64, 64, 1, parent=draft_id, index=index, file=f"{index}.png", round=round_no
    )


@pytest.fixture
def c(tmp_path):
    return Content(tmp_path / "content").ensure()


def test_seeds_are_served_oldest_marker_first(c):
    ids = ["20261125-120000-aaaa", "20261125-120001-bbbb", "20261125-120002-cccc"]
    for i, draft_id in enumerate(ids):
        folder = make_draft(c, draft_id)
        (folder / "seed.txt").write_text("")
        # marked in the order c, a, b
        os.utime(folder / "seed.txt", ns=(0, [2, 3, 1][i] * 10**9))
    waiting, errored = rounds.waiting(c)
    assert [s.draft.id for s in waiting] == [ids[2], ids[0], ids[1]] and errored == []


def test_done_round_stops_waiting_and_an_edit_asks_for_another(c):
    folder = make_draft(c, "20261125-120000-aaaa")
    (folder / "seed.txt").write_text("")
    (seed,), _ = rounds.waiting(c)
    work = Work(seed.draft.id, [Round(seed.marker.signature, 1)], [variation(seed.draft.id, 1, 1)])
    c.write_work(seed.draft.id, work)
    assert rounds.waiting(c)[0] == []
    time.sleep(0.01)
    (folder / "seed.txt").write_text("count = 2\n")
    (again,), _ = rounds.waiting(c)
    assert not again.resume and again.marker.signature != seed.marker.signature


def test_unfinished_round_is_resumed_even_if_the_marker_changed(c):
    folder = make_draft(c, "20261125-120000-aaaa")
    (folder / "seed.txt").write_text("")
    draft_id = "20261125-120000-aaaa"
    c.write_work(draft_id, Work(draft_id, [Round("old", 3)], [variation(draft_id, 1, 1)]))
    (seed,), _ = rounds.waiting(c)
    assert seed.resume
    plan = rounds.plan(None, c, seed)
    assert plan.number == 1 and plan.todo() == [2, 3]


def test_a_copy_of_a_draft_folder_elsewhere_is_not_served_as_that_draft(c):
    folder = make_draft(c, "20261125-120000-aaaa")
    copy = c.drafts_dir / "favourites" / folder.name
    copy.mkdir(parents=True)
    (copy / "draft.json").write_text((folder / "draft.json").read_text())
    (copy / "seed.txt").write_text("")
    (seed,), _ = rounds.waiting(c)
    assert seed.draft.id == "" and seed.marker.folder == copy


def test_marker_outside_a_draft_is_still_reported(c):
    (c.drafts_dir / "2026-11-25" / "random-folder").mkdir(parents=True)
    (c.drafts_dir / "2026-11-25" / "random-folder" / "seed.txt").write_text("")
    (seed,), _ = rounds.waiting(c)
    assert seed.draft.id == "" and seed.marker.folder.name == "random-folder"


def test_work_json_records_each_file_once_and_old_files_still_read(c):
    draft_id = "20261125-120000-aaaa"
    make_draft(c, draft_id)
    old = {  # the format before rounds stopped listing their files
        "draft": draft_id,
        "rounds": [
            {"marker": "m1", "count": 2, "first_index": 1, "files": ["1.png", "2.png"]},
            {"marker": "m2", "count": 2, "first_index": 3, "files": ["3.png"]},
        ],
        "variations": [
            json.loads(json.dumps(variation(draft_id, i, r).to_json())) for i, r in ((1, 1), (2, 1), (3, 2))
        ],
    }
    c.work_path(draft_id).parent.mkdir(parents=True)
    c.work_path(draft_id).write_text(json.dumps(old))
    work = c.read_work(draft_id)
    assert work.files(1) == ["1.png", "2.png"] and work.files(2) == ["3.png"]
    assert work.done(1) and not work.done(2) and work.next_index() == 4
    c.write_work(draft_id, work)
    text = c.work_path(draft_id).read_text()
    assert text.count('"3.png"') == 1 and '"files"' not in text


def test_a_new_round_numbers_on_and_a_round_planned_but_never_started_is_replaced(c, cfg):
    draft_id = "20261125-120000-aaaa"
    folder = make_draft(c, draft_id)
    c.write_work(draft_id, Work(draft_id, [Round("m1", 1)], [variation(draft_id, 1, 1)]))
    (folder / "seed.txt").write_text("count = 2\n")
    (seed,), _ = rounds.waiting(c)
    plan = rounds.plan(cfg, c, seed)
    assert plan.number == 2 and plan.todo() == [2, 3] and plan.round.overrides == {"count": 2}
    rounds.begin(c, plan)
    time.sleep(0.01)
    (folder / "seed.txt").write_text("count = 1\n")  # changed again before anything was made
    (seed,), _ = rounds.waiting(c)
    plan = rounds.plan(cfg, c, seed)
    assert len(plan.work.rounds) == 2 and plan.todo() == [2]
