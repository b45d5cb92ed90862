"""``aiimg serve``: build, serve output/ on 127.0.0.1, rebuild when content/ changes.

The preview builds with base_url = http://127.0.0.1:<port>/ so that absolute URLs (404 page,
feed, Open Graph) point at the preview; run ``aiimg build`` before deploying. The watchdog
observer only *signals*; each rebuild re-reads the disk (events may be lost or coalesced).
"""

from __future__ import annotations

import dataclasses
import functools
import http.server
import threading
from pathlib import Path

import click

DEBOUNCE_S = 0.4  # a work lands as several files: wait for the burst to end
RESCAN_S = 30.0  # rebuild now and then anyway, in case an event was lost


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
    click.echo(build_site(cfg).summary())
    changed, stop = threading.Event(), stop or threading.Event()
    observer = _watch(cfg.content_dir, changed)
    click.echo(f"serving {cfg.output_dir} on http://127.0.0.1:{server.server_address[1]}/ (Ctrl-C stops)")
    try:
        _loop(cfg, changed, stop, build_site)
    except KeyboardInterrupt:
        pass
    finally:
        observer.stop()
        server.shutdown()
        server.server_close()


def _loop(cfg, changed: threading.Event, stop: threading.Event, build_site) -> None:
    while not stop.is_set():
        if not changed.wait(RESCAN_S) and stop.is_set():
            break
        if stop.wait(DEBOUNCE_S):
            break
        changed.clear()
        report = build_site(cfg)
        if report.images_made or report.pages_written or report.removed or report.problems:
            click.echo(report.summary())


def _watch(folder: Path, changed: threading.Event):
    from watchdog.events import FileSystemEventHandler
    from watchdog.observers import Observer

    class Signal(FileSystemEventHandler):
        def on_any_event(self, event):
            if not str(event.src_path).endswith(".tmp"):
                changed.set()

    Path(folder).mkdir(parents=True, exist_ok=True)
    observer = Observer()
    observer.schedule(Signal(), str(folder), recursive=True)
    observer.start()
    return observer
