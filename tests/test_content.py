import errno
import json
import os
import subprocess
import sys
import time

import pytest

from pipeline import content as content_mod
from pipeline.content import Content, atomic_write_bytes, find_marker, parse_marker
from pipeline.errors import AiimgError, MarkerError


def make_draft(c: Content, draft_id: str) -> os.PathLike:
    folder = c.draft_folder(draft_id)
    folder.mkdir(parents=True)
    (folder / "draft.png").write_bytes(b"png")
    (folder / "draft.json").write_text(json.dumps({"id": draft_id}))
    return folder


@pytest.fixture
def c(tmp_path):
    return Content(tmp_path / "content").ensure()


@pytest.mark.parametrize("name", ["seed.txt", "SEED.TXT", "Seed.txt", "seed.txt.txt", "SEED.TXT.TXT"])
def test_marker_names_are_case_insensitive_and_accept_windows_double_extension(c, name):
    folder = make_draft(c, "20261125-120000-aaaa")
    (folder / name).write_text("")
    assert find_marker(folder).name == name


def test_other_names_are_not_markers(c):
    folder = make_draft(c, "20261125-120000-aaaa")
    for name in ("seed.txt.bak", "seeds.txt", "seed.error.txt"):
        (folder / name).write_text("")
    assert find_marker(folder) is None


def test_marker_overrides(tmp_path):
    path = tmp_path / "seed.txt"
    path.write_text('count = 5\nstrength = 0.6\nprompt = "a cat"\nguidance_scale = 6\n')
    assert parse_marker(path) == {"count": 5, "strength": 0.6, "prompt": "a cat", "guidance_scale": 6}
    path.write_bytes(b"")
    assert parse_marker(path) == {}
    path.write_bytes("\ufeffcount = 2\n".encode())  # Notepad's BOM
    assert parse_marker(path) == {"count": 2}


@pytest.mark.parametrize(
    "body,match",
    [
        (b"count = ", "not valid TOML"),
        (b"cnt = 3", "unknown key 'cnt'"),
        (b"count = 0", "out of range"),
        (b"count = true", "should be a int"),
        (b"strength = 2.0", "out of range"),
        (b"strength = 0.001", "out of range"),
        (b"prompt = 3", "should be a str"),
        (b"\xff\xfe\x00bad", "not UTF-8"),
    ],
)
def test_bad_markers_say_what_is_wrong_and_name_the_file(tmp_path, body, match):
    path = tmp_path / "seed.txt"
    path.write_bytes(body)
    with pytest.raises(MarkerError, match=match) as err:
        parse_marker(path)
    assert str(path) in str(err.value)


def test_seeds_are_served_oldest_marker_first(c):
    ids = ["20261125-120000-aaaa", "20261125-120001-bbbb", "20261125-120002-cccc"]
    for i, draft_id in enumerate(ids):
        folder = make_draft(c, draft_id)
        (folder / "seed.txt").write_text("")
        # marked in the order c, a, b
        os.utime(folder / "seed.txt", ns=(0, [2, 3, 1][i] * 10**9))
    waiting, errored = c.seeds()
    assert [s.draft.id for s in waiting] == [ids[2], ids[0], ids[1]] and errored == []


def test_done_round_stops_waiting_and_an_edit_asks_for_another(c):
    folder = make_draft(c, "20261125-120000-aaaa")
    (folder / "seed.txt").write_text("")
    (seed,), _ = c.seeds()
    c.write_work(
        seed.draft.id,
        {
            "draft": seed.draft.id,
            "variations": [],
            "rounds": [{"marker": seed.marker.signature, "count": 1, "files": ["1.png"]}],
        },
    )
    assert c.seeds()[0] == []
    time.sleep(0.01)
    (folder / "seed.txt").write_text("count = 2\n")
    (again,), _ = c.seeds()
    assert again.round == {} and again.marker.signature != seed.marker.signature


def test_unfinished_round_is_resumed_even_if_the_marker_changed(c):
    folder = make_draft(c, "20261125-120000-aaaa")
    (folder / "seed.txt").write_text("")
    rnd = {"marker": "old", "count": 3, "files": ["1.png"], "first_index": 1}
    c.write_work("20261125-120000-aaaa", {"draft": "x", "variations": [], "rounds": [rnd]})
    (seed,), _ = c.seeds()
    assert seed.round == rnd


def test_overrides_come_from_the_bytes_the_signature_was_made_of(c, tmp_path):
    path = tmp_path / "seed.txt"
    path.write_text("count = 1\n")
    marker = content_mod.read_marker(path)
    path.write_text("count = 2\n")  # saved again after the loop read it
    assert parse_marker(path, marker.data) == {"count": 1}


def test_a_copy_of_a_draft_folder_elsewhere_is_not_served_as_that_draft(c):
    folder = make_draft(c, "20261125-120000-aaaa")
    copy = c.drafts_dir / "favourites" / folder.name
    copy.mkdir(parents=True)
    (copy / "draft.json").write_text((folder / "draft.json").read_text())
    (copy / "seed.txt").write_text("")
    (seed,), _ = c.seeds()
    assert seed.draft.id == "" and seed.marker.folder == copy


def test_error_file_parks_the_marker_until_it_is_edited(c):
    folder = make_draft(c, "20261125-120000-aaaa")
    (folder / "seed.txt").write_text("bad = 1")
    (seed,), _ = c.seeds()
    c.write_error(seed.marker, "unknown key 'bad'")
    assert c.seeds() == ([], [seed.marker])
    assert "unknown key 'bad'" in (folder / "seed.error.txt").read_text()
    (folder / "seed.txt").write_text("count = 1")
    # a coarse clock (FAT, network drives) may give the edit the same mtime: the bytes changed
    os.utime(folder / "seed.txt", ns=(seed.marker.mtime_ns, seed.marker.mtime_ns))
    assert len(c.seeds()[0]) == 1


def test_marker_outside_a_draft_is_still_reported(c):
    (c.drafts_dir / "2026-11-25" / "random-folder").mkdir(parents=True)
    (c.drafts_dir / "2026-11-25" / "random-folder" / "seed.txt").write_text("")
    (seed,), _ = c.seeds()
    assert seed.draft.id == "" and seed.marker.folder.name == "random-folder"


def test_ids_are_validated_before_they_become_paths(c):
    for bad in ("../../etc", "20261125-120000-zzzz", "x/../y", ""):
        with pytest.raises(AiimgError):
            c.draft_folder(bad)
    assert content_mod.check_id(content_mod.new_draft_id())


def test_failed_atomic_write_leaves_old_bytes_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "x.json"
    path.write_bytes(b"old")

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(content_mod.os, "replace", full)
    with pytest.raises(AiimgError, match="disk full") as err:
        atomic_write_bytes(path, b"new")
    assert str(path) in str(err.value)
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


def test_clean_temp_removes_only_debris_of_dead_processes(c):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    folder = make_draft(c, "20261125-120000-aaaa")
    mine = f".draft.json.{os.getpid()}-{content_mod._TOKEN}.tmp"
    (folder / f".draft.png.{dead.stdout.strip()}-0badc0de.tmp").write_bytes(b"half")
    (folder / f".work.json.{os.getpid()}-0badc0de.tmp").write_bytes(b"a dead process that had our pid")
    (folder / mine).write_bytes(b"mine, in flight")
    assert c.clean_temp() == 2
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == [mine]


def test_a_second_lock_is_refused_with_the_holder_named(c):
    code = (
        "import sys; from pipeline.content import Content; c = Content(sys.argv[1]);\n"
        "try:\n  c.lock('run').__enter__()\nexcept Exception as e: print(e)"
    )
    with c.lock("run"):
        out = subprocess.run([sys.executable, "-c", code, str(c.root)], capture_output=True, text=True).stdout
    assert f"pid {os.getpid()} (`aiimg run`)" in out and "busy" in out
    with c.lock("run"):  # released: can be taken again
        pass


def test_draft_ids_sort_by_time_within_a_second():
    import datetime as dt

    base = dt.datetime(2026, 11, 25, 15, 30, 12, tzinfo=dt.UTC)
    ids = [content_mod.new_draft_id(base.replace(microsecond=us)) for us in (0, 1000, 250000, 999000)]
    assert ids == sorted(ids) and all(content_mod.check_id(i) for i in ids)
    assert ids[0].startswith("20261125-153012-000")
