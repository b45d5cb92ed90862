"""The build under trouble: killed half-way, a full disk, a terminal or not."""

from __future__ import annotations

import errno
import multiprocessing
import os
import pty
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gallery_fixtures import art, make_content, recipes_of, run_cli, site_config, write_config

from pipeline.content import Content
from pipeline.files import alive
from pipeline.gallery import build_site
from pipeline.gallery.output import MANIFEST, manifest_files, read_manifest
from pipeline.metadata import png_bytes

ROOT = Path(__file__).resolve().parents[1]
AIIMG = [sys.executable, "-m", "pipeline.cli"]
# `aiimg build` on a disk so slow that every write to output/ is caught with its temp file
# there: the kill below always lands half-way through a write, never between two
SLOW_DISK = """
import os, sys, time
real = os.replace
def slow(src, dst, *args, **kwargs):
    if "/output/" in str(dst):
        time.sleep(120)
    return real(src, dst, *args, **kwargs)
os.replace = slow
sys.argv = ["aiimg", *sys.argv[1:]]
from pipeline.cli import main
main()
"""


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*.tmp") if p.is_file()]  # any aiimg's temp names, old ones too


def wait_for(check, seconds: float, what: str):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_killed_build_leaves_nothing_the_next_build_publishes(tmp_path):
    make_content(tmp_path, 2)  # 8 images: encoded by a pool of processes
    config = write_config(tmp_path)
    out = tmp_path / "output"
    # its own session: the kill takes the encoding processes with it, as closing a terminal does
    build = subprocess.Popen(
        [*AIIMG[:1], "-c", SLOW_DISK, "--config", str(config), "build"],
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        debris = wait_for(lambda: temp_files(out), 120, "a temp file in output/")
    finally:
        os.killpg(build.pid, signal.SIGKILL)
        build.wait()
    assert build.returncode == -signal.SIGKILL, build.stderr.read()
    assert debris and all(p.is_file() for p in debris)  # what a kill leaves behind
    pids = {int(re.search(r"\.(\d+)(-[0-9a-f]+)?\.tmp$", p.name).group(1)) for p in debris}  # any aiimg's names
    wait_for(lambda: not any(alive(pid) for pid in pids), 30, "the killed processes to be reaped")
    again = subprocess.run([*AIIMG, "--config", str(config), "build"], cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert again.stderr == ""  # no progress bar either: stderr is not a terminal
    assert temp_files(out) == []
    manifest = manifest_files(read_manifest(out))
    assert len(manifest) > 30 and not [f for f in manifest if ".tmp" in f]
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == sorted([*manifest, MANIFEST])


def test_debris_is_removed_down_to_the_deepest_folder_a_build_writes(tmp_path):
    make_content(tmp_path, 3)
    cfg = site_config(tmp_path, page_size=1)  # kimono's tag page has a page 1
    build_site(cfg)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(gone.stdout)
    folders = ["", "images/20261125-150000-0000", "tags/kimono/page/1"]
    debris = [cfg.output_dir / folder / f".index.html.{dead}-0badc0de.tmp" for folder in folders]
    for path in debris:
        path.write_bytes(b"half a page")
    build_site(cfg)
    assert [p for p in debris if p.exists()] == []


@pytest.fixture
def built(tmp_path):
    make_content(tmp_path, 1)
    build_site(site_config(tmp_path))
    return tmp_path


def disk_full_under(monkeypatch, folder: Path) -> None:
    """Every rename into ``folder`` fails as on a full disk."""
    real = os.replace

    def replace(src, dst, *args, **kwargs):
        if Path(dst).is_relative_to(folder):
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


def assert_stopped_on_a_full_disk(code: int, said: str, out: Path) -> None:
    assert code == 1, said
    assert "aiimg: error: " in said and "disk full: free some space and run it again" in said
    assert "Traceback" not in said and "internal error" not in said
    assert "cannot read image" not in said  # the source is fine: the disk is not
    assert temp_files(out) == []


def test_a_full_disk_while_encoding_an_image_stops_the_build_clearly(built, monkeypatch, capsys):
    wid = Content(built / "content").works()[0]
    recipe = recipes_of(built / "content", wid)[0]  # one changed image: encoded in this process
    (built / f"content/works/{wid}/1.png").write_bytes(png_bytes(art(recipe["width"], recipe["height"], 7), recipe))
    config = write_config(built)
    disk_full_under(monkeypatch, built / "output")
    code, said = run_cli(monkeypatch, capsys, "--config", str(config), "build")
    assert_stopped_on_a_full_disk(code, said, built / "output")


@pytest.mark.skipif(
    multiprocessing.get_context().get_start_method() != "fork",
    reason="the monkeypatch reaches the encoding processes only when they are forked",
)
def test_a_full_disk_in_an_encoding_process_stops_the_build_clearly(tmp_path, monkeypatch, capsys):
    make_content(tmp_path, 1)  # 4 images: a pool of processes
    config = write_config(tmp_path)
    disk_full_under(monkeypatch, tmp_path / "output/images")
    code, said = run_cli(monkeypatch, capsys, "--config", str(config), "build")
    assert_stopped_on_a_full_disk(code, said, tmp_path / "output")


def test_a_full_disk_while_writing_a_page_stops_the_build_clearly(built, monkeypatch, capsys):
    wid = Content(built / "content").works()[0]
    (built / f"content/works/{wid}/work.toml").write_text('title = "Renamed"\n')  # pages change, images do not
    config = write_config(built)
    disk_full_under(monkeypatch, built / "output")
    code, said = run_cli(monkeypatch, capsys, "--config", str(config), "build")
    assert_stopped_on_a_full_disk(code, said, built / "output")


def test_the_progress_bar_shows_on_a_terminal_only(tmp_path):
    make_content(tmp_path, 1)
    config = write_config(tmp_path)
    main, terminal = pty.openpty()
    run = subprocess.run(
        [*AIIMG, "--config", str(config), "build"], cwd=ROOT, stdout=subprocess.PIPE, stderr=terminal, text=True
    )
    os.close(terminal)
    shown = os.read(main, 65536).decode()
    os.close(main)
    assert run.returncode == 0
    assert "images" in shown and "100%" in shown and "100%" not in run.stdout
    again = subprocess.run(
        [*AIIMG, "--config", str(config), "build", "--clean"], cwd=ROOT, capture_output=True, text=True
    )
    assert again.returncode == 0 and again.stderr == ""
