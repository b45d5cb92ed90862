"""files.py: atomic writes, copies that are not links, debris of killed processes."""

import errno
import os
import subprocess
import sys
import time

import pytest

from pipeline import files
from pipeline.content import Content
from pipeline.errors import AiimgError
from pipeline.files import atomic_write_bytes


@pytest.fixture
def c(tmp_path):
    return Content(tmp_path / "content").ensure()


def make_draft(c: Content, draft_id: str) -> os.PathLike:
    folder = c.draft_folder(draft_id)
    folder.mkdir(parents=True)
    return folder


def test_failed_atomic_write_leaves_old_bytes_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "x.json"
    path.write_bytes(b"old")

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "replace", full)
    with pytest.raises(AiimgError, match="disk full") as err:
        atomic_write_bytes(path, b"new")
    assert str(path) in str(err.value)
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


def test_clean_temp_removes_only_debris_of_dead_processes(c):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    folder = make_draft(c, "20261125-120000-aaaa")
    mine = f".draft.json.{os.getpid()}-{files._TOKEN}.tmp"
    (folder / f".draft.png.{dead.stdout.strip()}-0badc0de.tmp").write_bytes(b"half")
    (folder / f".work.json.{os.getpid()}-0badc0de.tmp").write_bytes(b"a dead process that had our pid")
    (folder / mine).write_bytes(b"mine, in flight")
    assert c.clean_temp() == 2
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == [mine]


def test_temp_debris_in_the_state_folder_is_cleaned_too(c):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    debris = c.state_dir / f".status.json.{dead.stdout.strip()}-0badc0de.tmp"
    debris.write_bytes(b"half")
    assert c.clean_temp() == 1 and not debris.exists()


def test_a_copy_is_a_copy_not_a_link(tmp_path):
    src = tmp_path / "a.png"
    src.write_bytes(b"original art")
    dest = tmp_path / "out" / "a.png"
    files.atomic_copy(src, dest)
    assert dest.read_bytes() == b"original art" and os.stat(src).st_ino != os.stat(dest).st_ino
    with open(dest, "r+b") as fh:  # an optimiser rewriting the published file in place
        fh.write(b"OPTIMISED")
    assert src.read_bytes() == b"original art"
    assert [p.name for p in dest.parent.iterdir()] == ["a.png"]


def test_a_read_only_folder_is_a_clear_error(tmp_path, monkeypatch):
    def denied(*a, **k):
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(files.os, "replace", denied)
    with pytest.raises(AiimgError, match="check the folder's permissions"):
        atomic_write_bytes(tmp_path / "x", b"1")


def test_a_killed_process_not_yet_reaped_counts_as_dead(tmp_path):
    """A zombie keeps its pid until its parent reaps it: its temp files are debris all the same."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert files.alive(child.pid)
        child.kill()
        deadline = time.monotonic() + 10
        while files.alive(child.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not files.alive(child.pid)  # before wait(): still a zombie on POSIX
        (tmp_path / f".x.png.{child.pid}-0badc0de.tmp").write_bytes(b"half")
        assert files.clean_temp(tmp_path, depth=0) == 1
    finally:
        child.wait()
