"""``aiimg serve``: build, serve output/ on 127.0.0.1, rebuild when content/ changes.

The preview builds with base_url = http://127.0.0.1:<port>/ so that absolute URLs (404 page,
feed, Open Graph) point at the preview; run ``aiimg build`` before deploying. The watcher
(:mod:`pipeline.watcher`, which already leaves out the build's own reads) only *signals*; each
rebuild re-reads the disk (events may be lost or coalesced).

What counts: changes under content/ except its state folder (``content/.aiimg``: the build's
own caches and the logs would rebuild forever) and temp files (an atomic write counts once,
when its rename lands). A rebuild waits until the burst of events is over (nothing new for
QUIET_S: a new work lands as several files), but never longer than LONGEST_S after the first
event, so a steady stream (a long copy) still shows up. A rebuild that fails (a full disk) is
logged and the preview goes on: the next change, or the rescan, tries again.
"""

from __future__ import annotations

import dataclasses
import functools
import http.server
import logging
import threading
import time
from pathlib import Path

from pipeline import watcher
from pipeline.content import Content
from pipeline.errors import AiimgError
from pipeline.files import TEMP

log = logging.getLogger("aiimg.gallery")
QUIET_S = 0.5  # a burst has ended when nothing happened for this long
LONGEST_S = 5.0  # ... or when it has lasted this long
RESCAN_S = 30.0  # rebuild now and then anyway, in case an event was lost
TICK_S = 0.1  # how often the loop looks at the clock, the events and the stop flag


class _Handler(http.server.SimpleHTTPRequestHandler):
    not_found: Path | None = None

    def log_message(self, *args) -> None:  # quiet: the build summary is what matters here
        pass

    def send_error(self, code, message=None, explain=None):
        page = self.not_found or Path(self.directory) / "404.html"
        if code != 404 or not page.is_file():
            return super().send_error(code, message, explain)
        body = page.read_bytes()
        self.send_response(404)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def preview_config(cfg, port: int):
    site = dataclasses.replace(cfg.site, base_url=f"http://127.0.0.1:{port}/")
    return dataclasses.replace(cfg, site=site)


def start_server(directory: Path, port: int, not_found: Path | None = None) -> http.server.ThreadingHTTPServer:
    """Serve ``directory`` on 127.0.0.1:port (0: any free port) in a daemon thread; missing
    paths get ``not_found`` (default: the directory's 404.html) with status 404."""
    handler = type("Handler", (_Handler,), {"not_found": not_found})
    handler = functools.partial(handler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def serve(cfg, stop: threading.Event | None = None) -> None:
    """Blocks until Ctrl-C (or ``stop`` is set, for tests)."""
    from pipeline.gallery import build_site

    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    server = start_server(cfg.output_dir, cfg.site.serve_port)  # port 0: the OS picks one
    cfg = preview_config(cfg, server.server_address[1])
    changes = Changes()
    observer = _watch(cfg.content_dir, Content(cfg.content_dir).state_dir, changes)  # before: no change is missed
    try:
        _rebuild(cfg, build_site, always=True)
        log.info("serving %s on http://127.0.0.1:%d/ (Ctrl-C stops)", cfg.output_dir, server.server_address[1])
        _loop(cfg, changes, stop or threading.Event(), build_site)
    except KeyboardInterrupt:
        pass
    finally:
        observer.stop()
        server.shutdown()
        server.server_close()


class Changes:
    """Relevant events, signalled from the watcher's thread; says when a burst is over."""

    def __init__(self):
        self._lock = threading.Lock()
        self.first: float | None = None
        self.last: float | None = None

    def signal(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self.first = now if self.first is None else self.first
            self.last = now

    def settled(self, now: float, quiet: float, longest: float) -> bool:
        """True once (and forgets the burst) when it is over or has lasted ``longest``."""
        with self._lock:
            if self.last is None or (now - self.last < quiet and now - self.first < longest):
                return False
            self.first = self.last = None
            return True


def _loop(cfg, changes: Changes, stop: threading.Event, build_site) -> None:
    rescan = time.monotonic() + RESCAN_S
    while not stop.wait(TICK_S):
        now = time.monotonic()
        if changes.settled(now, QUIET_S, LONGEST_S) or now >= rescan:
            rescan = now + RESCAN_S
            _rebuild(cfg, build_site)


def _rebuild(cfg, build_site, always: bool = False) -> None:
    """One build; its failure is logged, not raised: the preview must outlive a full disk."""
    try:
        report = build_site(cfg)
    except AiimgError as exc:
        log.error("rebuild failed: %s; still serving the last build, trying again on the next change", exc)
        return
    except Exception as exc:  # a bug: its traceback goes to the log file; the preview goes on
        log.error("rebuild failed: internal error: %s: %s", type(exc).__name__, exc, exc_info=True)
        return
    if always or not report.noop:
        log.info("%s", report.summary())


def relevant(paths: list[Path], state_dir: Path) -> bool:
    """Whether an event on ``paths`` (a move has two) may change the site: not our state, not a
    temp file (an atomic write counts once, by where it lands). Nor a folder that is there: it
    is "modified" by every file made or removed in it, which has its own event, and a temp file
    must not count through its folder (a folder deleted or moved away is not there: it counts)."""
    return any(_counts(Path(p), state_dir) for p in paths)


def _counts(path: Path, state_dir: Path) -> bool:
    return not TEMP.match(path.name) and not path.is_relative_to(state_dir) and not path.is_dir()


def _watch(folder: Path, state_dir: Path, changes: Changes):
    def on_change(paths: list[Path]) -> None:
        if relevant(paths, state_dir):
            changes.signal()

    return watcher.watch(folder, on_change)
