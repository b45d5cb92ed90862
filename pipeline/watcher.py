"""File-system events, for the loop (`aiimg run`) and the preview (`aiimg serve`): watchers only signal.

A watchdog observer calls ``on_change(paths)`` for every event that changes something (our own
reads of seed.txt open and close it: "opened" and "closed_no_write" are not changes). The
callback only sets flags; whoever waits re-reads the disk to decide what to do, since events
can be lost or coalesced (network drives, editors that save through a temp file).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

CHANGES = ("created", "modified", "moved", "deleted", "closed")


def watch(folder: Path, on_change: Callable[[list[Path]], None]):
    """Start a daemon observer on ``folder`` (recursive); returns it (call ``.stop()``)."""
    from watchdog.events import FileSystemEventHandler
    from watchdog.observers import Observer

    class Signal(FileSystemEventHandler):
        def on_any_event(self, event):
            if event.event_type in CHANGES:
                paths = [event.src_path, getattr(event, "dest_path", "") or ""]
                on_change([Path(p) for p in paths if p])

    Path(folder).mkdir(parents=True, exist_ok=True)
    observer = Observer()
    observer.schedule(Signal(), str(folder), recursive=True)
    observer.daemon = True
    observer.start()
    return observer
