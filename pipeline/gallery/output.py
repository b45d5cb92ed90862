"""The output folder and the build manifest that makes builds incremental.

``output/.aiimg-build.json`` (written last; no times: it is deterministic too) is JSON Lines:
the first line is the build's own files, then one line per work, by id, its images::

    {"files": {"404.html": 2298, "index.html": 10512, ...}, "format": 2,
     "pages": {"index.html": "<sha256 of everything the page is rendered from>", ...}}
    ["<id>", [["1", {"key": "<12 hex>", "original_key": "<12 hex>", "meta": {w, h, color, thumb,
              display, thumb_avif, display_avif, original, original_format, bytes}}],
              ["2", {...}], ..., ["draft", {...}]]]
    ...

``files`` is every file the last build made that is not an image, with its bytes (the size
budget); a work's images are the files its line names, all in ``images/<id>/``. A file the
last build made and this one does not is stale (a removed work, an old image key) and is
deleted. Files the build never made (a ``CNAME`` you added) are left alone. A work's line lets
its images be reused (images.py), ``pages`` an unchanged page go unrendered (its inputs, the
templates and the settings are all in its key).

One line a work, so that a build parses only the works it touches: a work whose images did not
change keeps its line as it was read, bytes never parsed nor even decoded (10,000 works are
~20 MB of lines, 40,000 pictures of meta: parsing them all would cost more than the rest of a
one-work rebuild).
A manifest of format 1 (one JSON object) is read too, once. A manifest damaged or of another
shape is as good as none, and so is a picture's entry in a work's line that is not as images.py
writes it (or names a file outside ``images/<id>/``): that picture is made again.

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
import zlib
from pathlib import Path

from pipeline.errors import AiimgError
from pipeline.files import atomic_write_bytes, clean_temp

MANIFEST = ".aiimg-build.json"
FORMAT = 2
DEPTH = 4  # the deepest folder a build writes to: tags/<slug>/page/<n>/ (images/<id>/ is 2)
# what takes the room in output/, in the order the build reports it (the size budget)
SIZE_PARTS = ("originals", "display images", "thumbnails", "pages", "search index")
SEARCH_FILES = ("pagefind/", ".aiimg-search.json")  # the search index (search.py) and its record
IMAGE_PARTS = {"original": "originals", "display": "display images", "thumb": "thumbnails"}  # meta["bytes"]
FILE_LISTS = ("thumb", "display", "thumb_avif", "display_avif")  # a picture's meta: [[file, width, height], ...]


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


# -- a work's line: its images ---------------------------------------------------------------


def record_line(work_id: str, entries: list[tuple[str, dict]]) -> bytes:
    """A work's line: [id, [[stem, {key, original_key, meta}], ...]], stems in the order given
    (variations by number, then the draft), keys sorted: the same images, the same line."""
    return json.dumps([work_id, entries], sort_keys=True, separators=(",", ":")).encode()


def record_entries(line: bytes) -> list[tuple[str, dict]]:
    """[(stem, {key, original_key, meta}), ...] of a work's line ([] for b"" or a bad one; an
    entry that is not as images.py writes it is left out: its picture is made again)."""
    try:
        wid, entries = json.loads(line)
        return [(stem, entry) for stem, entry in entries if _entry_ok(f"images/{wid}/", stem, entry)]
    except (ValueError, TypeError):
        return []


def _entry_ok(folder: str, stem, entry) -> bool:
    """Whether a picture's entry has the shape images.py gives it, every file it names in its
    work's ``folder`` (a manifest damaged or edited by hand must not stop a build)."""
    meta = entry.get("meta") if isinstance(entry, dict) else None
    if not isinstance(stem, str) or not isinstance(meta, dict):
        return False
    try:
        rows = [(f, w, h) for kind in FILE_LISTS for f, w, h in meta.get(kind) or ()]
        counted = list(meta["bytes"].items())
    except (AttributeError, KeyError, TypeError, ValueError):
        return False
    numbers = [meta.get("w"), meta.get("h"), *(n for _, w, h in rows for n in (w, h)), *(n for _, n in counted)]
    return (
        bool(meta.get("thumb") and meta.get("display"))
        and isinstance(meta.get("color"), str)
        and isinstance(meta.get("original_format", ""), str)
        and all(type(n) is int for n in numbers)
        and all(kind in IMAGE_PARTS for kind, _ in counted)
        and all(_in_folder(folder, f) for f in [*(f for f, _, _ in rows), meta.get("original")])
    )


def _in_folder(folder: str, rel) -> bool:
    """Whether ``rel`` names a file right in ``folder`` ("images/<id>/")."""
    name = rel[len(folder) :] if isinstance(rel, str) and rel.startswith(folder) else ""
    return name not in ("", ".", "..") and "/" not in name


def record_files(line: bytes) -> set[str]:
    """Every output file a work's line names."""
    return {rel for _, entry in record_entries(line) for rel in files_of(entry["meta"])}


def stem_order(stem: str) -> tuple[bool, int]:
    """A work's pictures in order: its variations by number, then its draft."""
    return (stem == "draft", int(stem) if stem.isdigit() else 0)


def meta_bytes(metas) -> dict[str, int]:
    """The bytes of these encoded pictures (their metas) by part of the size budget (SIZE_PARTS)."""
    size = dict.fromkeys(IMAGE_PARTS.values(), 0)
    for meta in metas:
        for kind, n in (meta.get("bytes") or {}).items():
            size[IMAGE_PARTS[kind]] += n
    return size


def image_files(meta: dict) -> list[str]:
    """The thumbnails and display images of one encoded picture."""
    groups = [meta.get(k) or [] for k in FILE_LISTS]
    return [f for g in groups for f, _, _ in g]


def original_files(meta: dict) -> list[str]:
    """Its published original, if any (with originals = "none", ``original`` is a display image)."""
    return [meta["original"]] if meta.get("original") and meta.get("original_format") else []


def files_of(meta: dict) -> list[str]:
    """Every output file one encoded picture owns."""
    return image_files(meta) + original_files(meta)


def line_id(line: bytes) -> str:
    """A work line's id, without parsing the line (ids are checked before they become paths)."""
    end = line.find(b'"', 2) if line.startswith(b'["') else -1
    return line[2:end].decode("utf-8", "replace") if end > 0 else ""


# -- the output folder -----------------------------------------------------------------------


class Output:
    """What this build makes in output/: ``sizes`` (every file but the images, with its bytes),
    ``pages`` (their keys), ``records`` (each work's line: its images)."""

    def __init__(self, root: Path, previous: dict | None = None):
        self.root = Path(root)
        self.previous = previous or empty_manifest()
        self.pages: dict[str, str] = {}
        self.sizes: dict[str, int] = {}  # bytes of the files written or kept here that are not images
        self.records: dict[str, bytes] = {}
        self.written: list[str] = []
        self.unchanged: list[str] = []
        self.touched: set[str] = set()  # every folder a file was written to or removed from, and those above
        self.removed: set[str] = set()  # the stale files removed (remove_stale)
        self._listings: dict[str, set[str]] = {}
        self._trusted: set[str] = set()

    def path(self, rel: str) -> Path:
        """The absolute path of ``rel``, refusing anything that could leave output/. A pure
        check (no resolve): it runs for every file on every build, and ids, file names and
        slugs are validated before they get here; this is the last line of defence."""
        return self.root / check_rel(rel, self.root)

    def trusted(self, folder: str) -> bool:
        return folder in self._trusted

    def trust(self, folders: set[str]) -> None:
        """``folders`` are as the last build left them (stamp.output_changes), so the files of
        its manifest in them are there: no listing needed to say so."""
        self._trusted = folders

    def exists(self, rel: str, made_last: bool = False) -> bool:
        """Whether the file is there: a file the last build made (``made_last``: named by its
        manifest) in a folder as it left it, or from one listing per folder (strings, not Paths)."""
        folder, _, name = check_rel(rel, self.root).rpartition("/")
        if folder in self._trusted and (made_last or rel in self.previous["files"]):
            return True
        if folder not in self._listings:
            try:
                self._listings[folder] = {e.name for e in os.scandir(os.path.join(self.root, folder)) if e.is_file()}
            except OSError:
                self._listings[folder] = set()
        return name in self._listings[folder]

    def keep(self, rel: str, size: int) -> None:
        """A file that is not an image, of ``size`` bytes, is part of this build."""
        self.sizes[check_rel(rel, self.root)] = size

    def reuse_page(self, rel: str, key: str) -> bool:
        """True (and the page kept as it is) when it was made last time from the same inputs."""
        if self.previous["pages"].get(rel) != key or not self.exists(rel, made_last=True):
            return False
        self.keep(rel, self.previous["files"].get(rel, 0))
        self.pages[rel] = key
        self.unchanged.append(rel)
        return True

    def keep_previous(self, rel: str) -> None:
        """Keep a page the last build made, under its old key (a page that could not be made
        now: the next build makes it)."""
        if rel in self.previous["pages"] and self.exists(rel, made_last=True):
            self.keep(rel, self.previous["files"].get(rel, 0))
            self.pages[rel] = self.previous["pages"][rel]
            self.unchanged.append(rel)

    def write_page(self, rel: str, key: str, html: str) -> None:
        self.pages[rel] = key
        self.write(rel, html)

    def write(self, rel: str, data: bytes | str, counted: bool = True) -> bool:
        """Write only when the bytes differ: unchanged pages keep their mtime (and CDN caches).
        True when written. ``counted``: in the build's written/unchanged files (search's files
        are not: the counts are the same with or without the extra, and search has its own line)."""
        data = data.encode("utf-8") if isinstance(data, str) else data
        full = self.path(rel)
        self.keep(rel, len(data))  # the site's size budget counts every file
        try:
            same = full.read_bytes() == data
        except OSError:
            same = False
        if not same:
            atomic_write_bytes(full, data, durable=False)
            self.touch(rel)
        if counted:
            (self.unchanged if same else self.written).append(rel)
        return not same

    def touch(self, rel: str) -> None:
        """A file was written or removed here: its folder and those above it changed (a new
        folder changes its parent)."""
        folder = rel.rpartition("/")[0]
        while folder not in self.touched:
            self.touched.add(folder)
            if not folder:
                break
            folder = folder.rpartition("/")[0]

    def folders(self) -> list[str]:
        """Every folder that holds a file of this build, and every folder above it ("" is output/)."""
        found = {""}
        for folder in [rel.rpartition("/")[0] for rel in self.sizes] + [f"images/{wid}" for wid in self.records]:
            while folder not in found:
                found.add(folder)
                folder = folder.rpartition("/")[0]
        return sorted(found)

    def stale(self) -> list[str]:
        """What the last build made and this one did not: its other files, and the images of
        each work whose line changed or is gone (a work whose line is the same has the same files)."""
        gone = set(self.previous["files"]) - self.sizes.keys()
        for wid, line in self.previous["records"].items():
            now = self.records.get(wid)
            if now != line:
                gone |= record_files(line) - (record_files(now) if now else set())
        return sorted(gone)

    def remove_stale(self, but: tuple[str, ...] = ()) -> list[str]:
        """Delete what the last build made and this one did not, but the files under ``but``
        (prefixes: a later call removes them); prune emptied folders. Returns what it removed."""
        stale = [rel for rel in self.stale() if rel not in self.removed and not rel.startswith(but)]
        removed = remove(self.root, stale)
        for rel in removed:
            self.touch(rel)
        self.removed.update(removed)
        return removed


def remove(root: Path, files: list[str]) -> list[str]:
    """Delete ``files`` (paths under output/), pruning emptied folders; returns those removed."""
    removed = []
    for rel in files:
        try:
            path = Path(root) / check_rel(rel, root)
            path.unlink()
            removed.append(rel)
        except (OSError, AiimgError):
            continue
        _prune(Path(root), path.parent)
    return removed


def _prune(root: Path, folder: Path) -> None:
    top = root.resolve()
    while folder.resolve() != top and folder.is_dir() and not any(folder.iterdir()):
        with contextlib.suppress(OSError):  # an empty folder left behind is harmless
            folder.rmdir()
        folder = folder.parent


def check_rel(rel: str, root: Path | str = "output/") -> str:
    """``rel`` itself when it is a path inside output/ (see :meth:`Output.path`), else AiimgError."""
    if not rel or rel[0] == "/" or "\\" in rel or "\0" in rel or ".." in rel.split("/"):
        raise AiimgError(f"{rel!r}: refusing to write outside {root}")
    return rel


# -- the manifest ----------------------------------------------------------------------------


def empty_manifest(crc: int | None = None) -> dict:
    return {"files": {}, "pages": {}, "records": {}, "format": None, "crc": crc}


def read_manifest(root: Path) -> dict:
    """The last build's manifest: {"files": {rel: bytes}, "pages": {rel: key}, "records": {id:
    line}, "format", "crc": a CRC-32 of its bytes (None when there is none)}; empty for a first
    build or an unreadable or damaged file."""
    try:
        raw = (Path(root) / MANIFEST).read_bytes()
    except OSError:
        return empty_manifest()
    crc = zlib.crc32(raw)
    head, _, rest = raw.partition(b"\n")
    try:
        data = json.loads(head)
    except ValueError:
        return empty_manifest(crc)
    try:
        if isinstance(data, dict) and data.get("format") == 1:
            manifest = {**_from_format_1(data), "format": 1}
        elif isinstance(data, dict) and data.get("format") == FORMAT:
            records = {line_id(line): line for line in rest.split(b"\n") if line}
            records.pop("", None)
            manifest = {"files": data["files"], "pages": data["pages"], "records": records, "format": FORMAT}
        else:
            return empty_manifest(crc)
        sizes_ok = all(type(n) is int for n in manifest["files"].values())
    except (AttributeError, KeyError, TypeError, ValueError):  # damaged or edited: as if there were none
        return empty_manifest(crc)
    return {**manifest, "crc": crc} if sizes_ok and isinstance(manifest["pages"], dict) else empty_manifest(crc)


def _from_format_1(data: dict) -> dict:
    """An older aiimg's manifest (one object: files, sources by picture, pages, sizes): its
    images are reused all the same."""
    sizes, by_work = data.get("sizes") or {}, {}
    for slot, entry in sorted((data.get("sources") or {}).items()):
        _, wid, stem = slot.split("/", 2)
        by_work.setdefault(wid, []).append((stem, entry))
    return {
        "files": {rel: sizes.get(rel, 0) for rel in data.get("files") or [] if not rel.startswith("images/")},
        "pages": data.get("pages") or {},
        "records": {
            wid: record_line(wid, sorted(entries, key=lambda e: stem_order(e[0]))) for wid, entries in by_work.items()
        },
    }


def manifest_files(manifest: dict) -> list[str]:
    """Every file a manifest names (--clean removes them all)."""
    files = set(manifest["files"])
    for line in manifest["records"].values():
        files |= record_files(line)
    return sorted(files)


def write_manifest(out: Output) -> tuple[int, int | None]:
    """Write the manifest unless it would say what the last one (as read) says: a build that
    changed nothing touches nothing. Returns its size in bytes and its CRC-32."""
    path = out.root / MANIFEST
    previous = out.previous
    same = out.sizes == previous["files"] and out.pages == previous["pages"] and out.records == previous["records"]
    if same and previous["format"] == FORMAT:
        try:
            return path.stat().st_size, previous["crc"]
        except OSError:
            pass
    head = json.dumps({"files": out.sizes, "format": FORMAT, "pages": out.pages}, sort_keys=True, separators=(",", ":"))
    payload = b"\n".join([head.encode(), *(out.records[wid] for wid in sorted(out.records)), b""])
    atomic_write_bytes(path, payload, durable=False)
    out.touch(MANIFEST)
    return len(payload), zlib.crc32(payload)


def site_size(out: Output, image_bytes: dict[str, int], manifest_bytes: int) -> dict[str, int]:
    """Bytes of every file this build owns, by part (SIZE_PARTS): the images' as their works
    counted them (images.py), the other files' as they were written (or by the last build):
    no stat per file."""
    size = dict.fromkeys(SIZE_PARTS, 0)
    size.update(image_bytes)
    size["pages"] += manifest_bytes
    for rel, n in out.sizes.items():
        size["search index" if rel.startswith(SEARCH_FILES) else "pages"] += n
    return size


def forget_manifest(root: Path) -> None:
    """--clean: the next build trusts nothing the last one made."""
    with contextlib.suppress(FileNotFoundError):
        (Path(root) / MANIFEST).unlink()
