"""The CLI's contract: -v / -q, one log file per content folder, a bug named with where its traceback is."""

import os
import subprocess
import sys

from conftest import ROOT

BUG = """
import sys
from pipeline import cli, gallery
def broken(cfg, clean=False):
    raise KeyError("something nobody foresaw")
gallery.build_site = broken
sys.argv = ["aiimg", *sys.argv[1:]]
cli.main()
"""


def run(tmp_path, *args, code=None):
    cmd = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "pipeline.cli", *args]
    return subprocess.run(
        cmd, cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )


def test_an_unexpected_error_names_the_log_that_holds_its_traceback(tmp_path):
    done = run(tmp_path, "--content", str(tmp_path / "content"), "build", code=BUG)
    log = tmp_path / "content" / ".aiimg" / "logs" / "aiimg.log"
    assert done.returncode == 2
    assert "internal error: KeyError: 'something nobody foresaw'" in done.stderr and str(log) in done.stderr
    assert "Traceback" not in done.stderr  # the terminal gets one line; -v shows the rest
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "in broken" in text


def test_verbose_shows_the_traceback_on_the_terminal(tmp_path):
    done = run(tmp_path, "-v", "--content", str(tmp_path / "content"), "build", code=BUG)
    assert done.returncode == 2 and "Traceback (most recent call last)" in done.stderr


def test_quiet_keeps_only_warnings_and_errors_and_the_log_keeps_everything(tmp_path):
    loud = run(tmp_path, "--content", str(tmp_path / "content"), "build")
    quiet = run(tmp_path, "-q", "--content", str(tmp_path / "content"), "build", "--output", str(tmp_path / "o2"))
    assert loud.returncode == 0 and "0 works" in loud.stdout
    assert quiet.returncode == 0 and quiet.stdout == ""
    log = (tmp_path / "content" / ".aiimg" / "logs" / "aiimg.log").read_text()
    assert log.count("0 works") == 2  # the quiet build still told the log what it did


def test_a_user_error_is_one_line_exit_1_and_names_the_key(tmp_path):
    (tmp_path / "aiimg.toml").write_text("[run]\nrescan_seconds = 0\n")
    done = run(tmp_path, "status")
    assert done.returncode == 1
    assert done.stderr.startswith("aiimg: error: ") and "rescan_seconds" in done.stderr
    assert "Traceback" not in done.stderr


def test_help_lists_every_command():
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "--help"], capture_output=True, text=True, cwd=ROOT)
    for command in ("init", "run", "draft", "vary", "status", "build", "serve", "rank", "review", "stats", "config"):
        assert f"\n  {command} " in done.stdout, command
    assert "-v, --verbose" in done.stdout and "-q, --quiet" in done.stdout
