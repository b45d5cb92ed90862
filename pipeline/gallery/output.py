"""The output folder and the build manifest that makes builds incremental.

``output/.aiimg-build.json`` (written last, sorted keys, no times: it is deterministic too)::

    {
      "format": 1,
      "files":   ["404.html", "assets/site-<hash>.css", "images/<id>/1-<key>-420.webp", ...],
      "sources": {"images/<id>/1": {"key": "<12 hex>", "meta": {w, h, color, thumb, display,
                  thumb_avif, display_avif, original}}, ...},
      "pages":   {"works/<id>/index.html": "<sha256 of everything the page is rendered from>", ...}
    }

``files`` is every file the last build owned: a file listed there and not made again is
stale (a removed work, an old image key) and is deleted. Files the build never made (a
``CNAME`` you added) are left alone. ``sources`` lets an unchanged image be reused, ``pages`` an unchanged page
go unrendered (its inputs, the templates and the settings are all in its key).

Every path is relative to output/ and checked by :meth:`Output.path` before use: no ``..``,
no absolute path, nothing that resolves outside output/.

Every write goes through :mod:`pipeline.files` (temp file + rename, not fsynced: output/ is
rebuilt from content/ at will). A killed build leaves only temp files (``.<name>.<pid>-<token>.tmp``);
:func:`clean_debris` removes them before the next build, so they are never published.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from pipeline.errors import AiimgError
from pipeline.files import atomic_write_bytes, clean_temp

MANIFEST = ".aiimg-build.json"
FORMAT = 1
DEPTH = 4  # the deepest folder a build writes to: tags/<slug>/page/<n>/ (images/<id>/ is 2)


def clean_debris(root: Path) -> int:
    """Remove the temp files of killed builds from output/ (and its folders); returns how many."""
    return clean_temp(Path(root), DEPTH)


class Output:
    def __init__(self, root: Path, previous_pages: dict[str, str] | None = None):
        self.root = Path(root)
        self.previous_pages = previous_pages or {}
        self.pages: dict[str, str] = {}
        self.files: set[str] = set()
        self.written: list[str] = []
        self._listings: dict[str, set[str]] = {}
        self.unchanged: list[str] = []

    def path(self, rel: str) -> Path:
        """The absolute path of ``rel``, refusing anything that could leave output/. A pure
        check (no resolve): it runs for every file on every build, and ids, file names and
        slugs are validated before they get here; this is the last line of defence."""
        parts = rel.split("/")
        if not rel or rel.startswith("/") or ".." in parts or "\\" in rel or "\0" in rel:
            raise AiimgError(f"{rel!r}: refusing to write outside {self.root}")
        return self.root / rel

    def exists(self, rel: str) -> bool:
        """Whether the file is there, from one listing per folder (a no-op build asks for
        thousands of images: 300 scandirs instead of 5000 stats)."""
        self.path(rel)
        folder, _, name = rel.rpartition("/")
        if folder not in self._listings:
            try:
                self._listings[folder] = {e.name for e in os.scandir(self.root / folder) if e.is_file()}
            except OSError:
                self._listings[folder] = set()
        return name in self._listings[folder]

    def keep(self, rel: str) -> None:
        self.path(rel)
        self.files.add(rel)

    def reuse_page(self, rel: str, key: str) -> bool:
        """True (and the page kept as it is) when it was made last time from the same inputs."""
        if self.previous_pages.get(rel) != key or not self.exists(rel):
            return False
        self.files.add(rel)
        self.pages[rel] = key
        self.unchanged.append(rel)
        return True

    def write_page(self, rel: str, key: str, html: str) -> None:
        self.pages[rel] = key
        self.write(rel, html)

    def write(self, rel: str, data: bytes | str) -> None:
        """Write only when the bytes differ: unchanged pages keep their mtime (and CDN caches)."""
        data = data.encode("utf-8") if isinstance(data, str) else data
        full = self.path(rel)
        self.files.add(rel)
        try:
            if full.read_bytes() == data:
                self.unchanged.append(rel)
                return
        except OSError:
            pass
        atomic_write_bytes(full, data, durable=False)
        self.written.append(rel)

    def remove_stale(self, previous_files: list[str]) -> list[str]:
        """Delete what the last build made and this one did not; prune emptied folders."""
        removed = []
        for rel in sorted(set(previous_files) - self.files):
            try:
                self.path(rel).unlink()
                removed.append(rel)
            except (OSError, AiimgError):
                continue
            self._prune(self.path(rel).parent)
        return removed

    def _prune(self, folder: Path) -> None:
        root = self.root.resolve()
        while folder.resolve() != root and folder.is_dir() and not any(folder.iterdir()):
            with contextlib.suppress(OSError):  # an empty folder left behind is harmless
                folder.rmdir()
            folder = folder.parent


def read_manifest(root: Path) -> dict:
    """The last build's manifest, or an empty one (first build, or an unreadable file)."""
    try:
        data = json.loads((Path(root) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        data = {}
    return {k: data.get(k) or ([] if k == "files" else {}) for k in ("files", "sources", "pages")}


def write_manifest(out: Output, sources: dict) -> None:
    data = {"format": FORMAT, "files": sorted(out.files), "sources": sources, "pages": out.pages}
    text = (json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n").encode()  # C encoder: fast
    path = out.root / MANIFEST
    if not path.is_file() or path.read_bytes() != text:  # a no-op build touches nothing
        atomic_write_bytes(path, text, durable=False)


def forget_manifest(root: Path) -> None:
    """--clean: the next build trusts nothing the last one made."""
    with contextlib.suppress(FileNotFoundError):
        (Path(root) / MANIFEST).unlink()
