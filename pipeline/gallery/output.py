"""The output folder and the build manifest that makes builds incremental.

``output/.aiimg-build.json`` (written last, sorted keys, no times: it is deterministic too)::

    {
      "format": 1,
      "files":   ["404.html", "assets/site-<hash>.css", "images/<id>/1-<key>-420.webp", ...],
      "sources": {"images/<id>/1": {"key": "<12 hex>", "meta": {w, h, color, thumb, display,
                  thumb_avif, display_avif, original}}, ...},
      "pages":   {"works/<id>/index.html": "<sha256 of everything the page is rendered from>", ...},
      "sizes":   {"index.html": 10512, ...}     bytes of every file that is not an image (images
                                                 carry theirs in their meta): the size budget
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
# what takes the room in output/, in the order the build reports it (the size budget)
SIZE_PARTS = ("originals", "display images", "thumbnails", "pages", "search index")
SEARCH_FILES = ("pagefind/", ".aiimg-search.json")  # the search index (search.py) and its record


def clean_debris(root: Path, changed: list[str] | None = None, known: set[str] = frozenset()) -> int:
    """Remove the temp files of killed builds from output/ (and its folders); returns how many.
    ``changed``: the only folders a temp file can be in (see stamp.output_changes); a folder
    under them that is not ``known`` (the last build's) is looked into whole. None: all of
    output/. One scandir per folder and a name test per file, strings only (10,000 works are
    20,000 folders); a temp name's process is then checked by :func:`pipeline.files.clean_temp`."""
    base = str(root)
    todo = [("", DEPTH)] if changed is None else [(rel, DEPTH - _level(rel)) for rel in changed]
    suspects, seen = set(), set()
    while todo:
        rel, depth = todo.pop()
        if rel in seen:
            continue
        seen.add(rel)
        folder = os.path.join(base, rel) if rel else base
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for e in entries:
            if e.name[0] == "." and e.name.endswith(".tmp") and e.is_file(follow_symlinks=False):
                suspects.add(folder)
            elif depth > 0 and e.name[0] != "." and e.is_dir(follow_symlinks=False):
                sub = f"{rel}/{e.name}" if rel else e.name
                if changed is None or sub not in known:
                    todo.append((sub, depth - 1))
    return sum(clean_temp(Path(folder), 0) for folder in sorted(suspects))


def _level(rel: str) -> int:
    return rel.count("/") + 1 if rel else 0


class Output:
    def __init__(self, root: Path, previous_pages: dict[str, str] | None = None, previous_sizes: dict | None = None):
        self.root = Path(root)
        self.previous_pages = previous_pages or {}
        self.previous_sizes = previous_sizes or {}
        self.pages: dict[str, str] = {}
        self.files: set[str] = set()
        self.sizes: dict[str, int] = {}  # bytes of the files written or kept here that are not images
        self.written: list[str] = []
        self._listings: dict[str, set[str]] = {}
        self._trusted: set[str] = set()
        self._known: set[str] = set()
        self.unchanged: list[str] = []

    def path(self, rel: str) -> Path:
        """The absolute path of ``rel``, refusing anything that could leave output/. A pure
        check (no resolve): it runs for every file on every build, and ids, file names and
        slugs are validated before they get here; this is the last line of defence."""
        return self.root / check_rel(rel, self.root)

    def trust(self, folders: set[str], files: list[str]) -> None:
        """``folders`` are as the last build left them (stamp.output_changes), so the files of
        its manifest (``files``) in them are there: no listing needed to say so."""
        self._trusted, self._known = folders, set(files) if folders else set()

    def exists(self, rel: str) -> bool:
        """Whether the file is there: a file of the last build in a folder as it left it, or
        from one listing per folder (a build asks for 100,000 files at 10,000 works: one scandir
        per folder, not a stat per file; strings, not Paths)."""
        folder, _, name = check_rel(rel, self.root).rpartition("/")
        if folder in self._trusted and rel in self._known:
            return True
        if folder not in self._listings:
            try:
                self._listings[folder] = {e.name for e in os.scandir(os.path.join(self.root, folder)) if e.is_file()}
            except OSError:
                self._listings[folder] = set()
        return name in self._listings[folder]

    def keep(self, rel: str) -> None:
        check_rel(rel, self.root)
        self.files.add(rel)

    def reuse_page(self, rel: str, key: str) -> bool:
        """True (and the page kept as it is) when it was made last time from the same inputs."""
        if self.previous_pages.get(rel) != key or not self.exists(rel):
            return False
        self.files.add(rel)
        self.pages[rel] = key
        self.unchanged.append(rel)
        if rel in self.previous_sizes:
            self.sizes[rel] = self.previous_sizes[rel]
        return True

    def write_page(self, rel: str, key: str, html: str) -> None:
        self.pages[rel] = key
        self.write(rel, html)

    def write(self, rel: str, data: bytes | str) -> None:
        """Write only when the bytes differ: unchanged pages keep their mtime (and CDN caches)."""
        data = data.encode("utf-8") if isinstance(data, str) else data
        full = self.path(rel)
        self.files.add(rel)
        self.sizes[rel] = len(data)
        try:
            if full.read_bytes() == data:
                self.unchanged.append(rel)
                return
        except OSError:
            pass
        atomic_write_bytes(full, data, durable=False)
        self.written.append(rel)

    def folders(self) -> list[str]:
        """Every folder that holds a file of this build, and every folder above it ("" is output/)."""
        found = {""}
        for rel in self.files:
            folder = rel.rpartition("/")[0]
            while folder not in found:
                found.add(folder)
                folder = folder.rpartition("/")[0]
        return sorted(found)

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


def check_rel(rel: str, root: Path | str = "output/") -> str:
    """``rel`` itself when it is a path inside output/ (see :meth:`Output.path`), else AiimgError."""
    if not rel or rel[0] == "/" or "\\" in rel or "\0" in rel or ".." in rel.split("/"):
        raise AiimgError(f"{rel!r}: refusing to write outside {root}")
    return rel


def read_manifest(root: Path) -> dict:
    """The last build's manifest, or an empty one (first build, or an unreadable file)."""
    try:
        data = json.loads((Path(root) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        data = {}
    return {k: data.get(k) or ([] if k == "files" else {}) for k in ("files", "sources", "pages", "sizes")}


def write_manifest(out: Output, sources: dict, previous: dict | None = None) -> int:
    """Write the manifest unless it would say what ``previous`` (the last one, as read) says: a
    build that changed nothing touches nothing. Returns its size in bytes."""
    data = {"files": sorted(out.files), "sources": sources, "pages": out.pages, "sizes": out.sizes}
    path = out.root / MANIFEST
    if previous is not None and all(previous.get(k) == v for k, v in data.items()):
        try:
            return path.stat().st_size
        except OSError:
            pass
    # the C encoder (fast); one copy of its ~30 MB (10,000 works) at a time
    text = json.dumps({"format": FORMAT, **data}, sort_keys=True, separators=(",", ":"))
    payload = text.encode()
    del text
    atomic_write_bytes(path, payload + b"\n", durable=False)
    return len(payload) + 1


def site_size(out: Output, sources: dict, manifest_bytes: int) -> dict[str, int]:
    """Bytes of every file this build owns, by part (SIZE_PARTS). Images carry theirs in their
    meta and pages were counted as they were written (or by the last build): no stat per file,
    except for files another step kept without saying their size (the search index)."""
    size = dict.fromkeys(SIZE_PARTS, 0)
    for source in sources.values():
        counted = source["meta"].get("bytes") or {}
        size["originals"] += counted.get("original", 0)
        size["display images"] += counted.get("display", 0)
        size["thumbnails"] += counted.get("thumb", 0)
    size["pages"] += manifest_bytes
    for rel in out.files:
        if rel.startswith("images/"):  # counted above, by their source
            continue
        n = out.sizes.get(rel)
        if n is None:
            try:
                n = out.sizes[rel] = os.stat(out.path(rel)).st_size
            except OSError:
                continue
        size["search index" if rel.startswith(SEARCH_FILES) else "pages"] += n
    return size


def forget_manifest(root: Path) -> None:
    """--clean: the next build trusts nothing the last one made."""
    with contextlib.suppress(FileNotFoundError):
        (Path(root) / MANIFEST).unlink()
