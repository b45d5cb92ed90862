"""`aiimg serve`: builds, serves on 127.0.0.1 over HTTP, rebuilds when content changes."""

from __future__ import annotations

import importlib
import logging
import re
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from gallery_fixtures import add_work, make_content, site_config

import pipeline.gallery
from pipeline.errors import AiimgError
from pipeline.gallery import BuildReport
from pipeline.gallery.serve import Changes, relevant, serve

serve_mod = importlib.import_module("pipeline.gallery.serve")  # the package's serve() hides the module


def wait_for(check, seconds: float = 15.0):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_serve_previews_and_rebuilds_on_change(tmp_path):
    make_content(tmp_path, 2)
    cfg = site_config(tmp_path, serve_port=0)
    stop = threading.Event()
    thread = threading.Thread(target=serve, args=(cfg,), kwargs={"stop": stop}, daemon=True)
    thread.start()
    try:
        index = tmp_path / "output/index.html"
        base = wait_for(lambda: index.is_file() and re.search(r'rel="canonical" href="([^"]+)"', index.read_text()))
        base = base.group(1)
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", base)  # the preview's own URL, not base_url
        with urllib.request.urlopen(base) as resp:
            assert resp.status == 200 and b'class="tile"' in resp.read()
        new = add_work(tmp_path / "content", 9)
        wait_for(lambda: (tmp_path / f"output/works/{new}/index.html").is_file())
        with urllib.request.urlopen(f"{base}works/{new}/") as resp:
            assert resp.status == 200
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{base}no/such/page/")
        assert missing.value.code == 404 and b"Page not found" in missing.value.read()
        missing.value.close()
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()


class Serving:
    """`aiimg serve` in a thread, every build_site call counted (and, if asked, made to fail)."""

    def __init__(self, tmp_path: Path, monkeypatch, fail_on: set[int] = frozenset()):
        self.builds: list[float] = []
        real = pipeline.gallery.build_site

        def counted(cfg):
            self.builds.append(time.monotonic())
            if len(self.builds) in fail_on:
                raise AiimgError(f"{tmp_path}/output/index.html: cannot write (disk full: free some space)")
            return real(cfg)

        monkeypatch.setattr(pipeline.gallery, "build_site", counted)
        self.cfg = site_config(tmp_path, serve_port=0)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=serve, args=(self.cfg,), kwargs={"stop": self.stop}, daemon=True)

    def __enter__(self):
        self.thread.start()
        wait_for(lambda: (self.cfg.output_dir / "index.html").is_file())
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(10)
        assert not self.thread.is_alive()  # a stop is seen within a tick, not at the next event

    def url(self) -> str:
        html = (self.cfg.output_dir / "index.html").read_text()
        return re.search(r'rel="canonical" href="([^"]+)"', html).group(1)


@pytest.fixture
def records():
    """Records of the aiimg.gallery logger (the CLI's handlers do not propagate to caplog's)."""
    got: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = got.append
    logger = logging.getLogger("aiimg.gallery")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    yield got
    logger.removeHandler(handler)
    logger.setLevel(old)


def test_a_failed_rebuild_is_logged_and_serving_goes_on(tmp_path, monkeypatch, records):
    make_content(tmp_path, 1)
    with Serving(tmp_path, monkeypatch, fail_on={2}) as serving:
        first = add_work(tmp_path / "content", 8)
        wait_for(lambda: any(r.levelno == logging.ERROR for r in records))
        error = next(r.getMessage() for r in records if r.levelno == logging.ERROR)
        assert "rebuild failed" in error and "disk full: free some space" in error
        assert serving.thread.is_alive()
        with urllib.request.urlopen(serving.url()) as resp:
            assert resp.status == 200  # the last build is still served
        second = add_work(tmp_path / "content", 9)  # the next change builds both (the newest page first)
        wait_for(lambda: all((tmp_path / f"output/works/{w}/index.html").is_file() for w in (second, first)))
        assert len(serving.builds) == 3


def test_serve_ignores_its_own_state_folder_and_temp_files(tmp_path, monkeypatch):
    make_content(tmp_path, 1)
    with Serving(tmp_path, monkeypatch) as serving:
        new = add_work(tmp_path / "content", 9)
        wait_for(lambda: (tmp_path / f"output/works/{new}/index.html").is_file())
        time.sleep(1.5)  # the rebuild wrote its caches into content/.aiimg: 3 x QUIET_S
        assert len(serving.builds) == 2
        temp = tmp_path / f"content/works/{new}/.1.png.4242-0badc0de.tmp"
        temp.write_bytes(b"half a png")
        temp.unlink()
        (tmp_path / "content/.aiimg/notes.json").write_text("{}")
        time.sleep(1.5)
        assert len(serving.builds) == 2


def test_only_events_that_can_change_the_site_count(tmp_path):
    state = tmp_path / "content/.aiimg"
    work = tmp_path / "content/works/20261125-150000-0000"
    work.mkdir(parents=True)
    tmp = work / ".1.png.4242-0badc0de.tmp"
    assert relevant([tmp, work / "1.png"], state)  # an atomic write lands
    assert relevant([work / "2.png"], state)  # made, changed or deleted
    assert relevant([tmp_path / "content/works/20261125-150001-0001"], state)  # a work folder deleted
    for paths in (
        [tmp],
        [work],  # "modified" by a temp file made in it (or any file: those have their own events)
        [state / "gallery-stamp.json"],  # the build's own cache
        [state / ".gallery-hashes.json.1-ab.tmp", state / "gallery-hashes.json"],
        [state / "logs/aiimg.log"],  # serve's own log lines
        [state],
    ):
        assert not relevant(paths, state), paths


def test_a_burst_is_over_when_quiet_or_when_it_has_lasted_long_enough():
    changes = Changes()
    assert not changes.settled(100.0, 0.5, 5.0)  # nothing happened
    for t in (0.0, 0.25, 0.5, 0.75):  # a work landing: files 0.25 s apart (times exact in binary)
        changes.signal(t)
        assert not changes.settled(t + 0.25, 0.5, 5.0)
    assert not changes.settled(1.125, 0.5, 5.0)
    assert changes.settled(1.25, 0.5, 5.0)  # 0.5 s without an event
    assert not changes.settled(1.5, 0.5, 5.0)  # that burst is taken: nothing more to do
    for i in range(40):  # a steady stream from t = 10, an event every 0.125 s
        changes.signal(10 + i / 8)
        assert not changes.settled(10 + i / 8, 0.5, 5.0)
    changes.signal(15.0)
    assert changes.settled(15.0, 0.5, 5.0)  # 5 s after the first: rebuild anyway


def test_the_loop_rebuilds_once_after_a_burst_not_during_it(monkeypatch):
    monkeypatch.setattr(serve_mod, "QUIET_S", 1.0)
    changes, stop, builds = Changes(), threading.Event(), []

    def build(cfg):
        builds.append(time.monotonic())
        return BuildReport(Path("output"), noop=True)

    loop = threading.Thread(target=serve_mod._loop, args=(None, changes, stop, build))
    loop.start()
    try:
        end = time.monotonic() + 1.5
        while time.monotonic() < end:  # events 0.1 s apart: the old fixed 0.4 s wait built mid-burst
            changes.signal()
            time.sleep(0.1)
        assert builds == []
        wait_for(lambda: builds, 5.0)
        time.sleep(1.2)
        assert len(builds) == 1 and loop.is_alive()
    finally:
        stop.set()
        loop.join(5)
