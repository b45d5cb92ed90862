"""content.py: the paths under content/, ids, and the lock of the generating process."""

import json
import os
import signal
import subprocess
import sys

import pytest
from conftest import bare_draft

from pipeline import content as content_mod
from pipeline.content import Content
from pipeline.errors import AiimgError

make_draft = bare_draft


@pytest.fixture
def c(tmp_path):
    return Content(tmp_path / "content").ensure()


def test_ids_are_validated_before_they_become_paths(c):
    for bad in ("../../etc", "20261125-120000-zzzz", "x/../y", ""):
        with pytest.raises(AiimgError):
            c.draft_folder(bad)
    assert content_mod.check_id(content_mod.new_draft_id())


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


def test_a_killed_holder_frees_the_lock(c):
    code = (
        "import sys, time; from pipeline.content import Content\n"
        "with Content(sys.argv[1]).lock('run'):\n    print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(c.root)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(AiimgError, match=f"pid {holder.pid} .*is generating here"):
            with c.lock("run"):
                pass
    finally:
        holder.send_signal(signal.SIGKILL if hasattr(signal, "SIGKILL") else signal.SIGTERM)
        holder.wait()
    with c.lock("run"):  # the OS dropped the dead holder's lock
        assert "pid" in (c.state_dir / "lock.owner").read_text()


HIDE_FCNTL = """
import builtins, sys
real = builtins.__import__
def no_posix(name, *a, **k):
    if name in ("fcntl", "termios", "pwd", "grp", "resource"):
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    return real(name, *a, **k)
builtins.__import__ = no_posix
sys.modules.pop("fcntl", None)
import pipeline.cli, pipeline.content, pipeline.markers, pipeline.rounds, pipeline.gallery, pipeline.files
import pipeline.studio, pipeline.config, pipeline.logs
from pipeline.content import Content
c = Content(sys.argv[1]).ensure()
with c.lock("run"):
    print("ok")
"""


def test_the_package_imports_and_locks_without_fcntl(tmp_path):
    """Windows has no fcntl: even `aiimg build` could not start while content.py imported it."""
    done = subprocess.run([sys.executable, "-c", HIDE_FCNTL, str(tmp_path / "c")], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_status_names_only_a_live_process(c):
    c.write_status({"doing": "idle"})
    assert c.read_status()["pid"] == os.getpid()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    data = json.loads((c.state_dir / "status.json").read_text())
    (c.state_dir / "status.json").write_text(json.dumps({**data, "pid": int(dead.stdout)}))
    assert c.read_status() is None


def test_wildcard_names_never_leave_the_prompts_folder(c):
    assert c.wildcard_path("outfit") == c.prompts_dir / "outfit.txt"
    assert c.wildcard_path("people/hair") == c.prompts_dir / "people" / "hair.txt"
    for bad in ("../x", "a/../../b", "/etc/passwd", "", "a//b"):
        with pytest.raises(AiimgError, match="not a wildcard name"):
            c.wildcard_path(bad)
