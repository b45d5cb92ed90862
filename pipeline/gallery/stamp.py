"""Skip a build that would change nothing: a stamp of everything a build reads and leaves.

``content/.aiimg/gallery-stamp.json`` (written after a build without problems; safe to delete)::

    {"stamp": "<sha256>", "drafts": ["<draft id>", ...],
     "folders": {"": [mtime_ns, inode], "images/<id>": [...], ...},
     "racy": {"": "<sha1 of its names>", ...},
     "left": {"manifest": <CRC-32>, "cache": <CRC-32>},
     "works": 300, "images": 1200, "pages": 355, "size": {...}}   (for the report)

The stamp hashes aiimg's, Pillow's and Pagefind's versions (search on or off), the [site]
settings, the output folder, the templates and static files, and the name, size, mtime and
inode of every file in every ``works/<id>/`` folder (a work holds its draft: works are
self-contained) and in the draft folder of every older work whose draft the last build read
from ``content/drafts``, as listed before the build read them (an edit made while a build runs
is seen by the next one).

``folders`` is the mtime and inode of every folder of output/ the build left files in, taken
after its last write. A file removed from output/ (or added: a killed build's temp file, a
CNAME) changes its folder's mtime, so one stat per folder, not per file, tells whether output/
is as the build left it; the folders that changed are the only ones a later build looks into
for temp files. A folder whose mtime was within :data:`RACY_NS` of the stamp is also compared
by its names (``racy``: a hash of them): on a file system whose clock ticks coarsely, a change
right after the build could leave the same mtime. A folder the build did not write to keeps the
state it was found in (one stat per folder at the start of a build, not two).

``left`` is the manifest (output/.aiimg-build.json) and the works cache (cache.py) as the build
left them (a CRC-32 of each): a later build that reads them so trusts the one to describe the
other (:func:`left_as_is`), and takes unchanged works whole (images.encode_all).

Same stamp and no folder changed: the build would make the same bytes, so it stops there,
without reading the manifest, a recipe or an image. The stamp lives in content/ (like the works
cache), not in output/, whose bytes must not depend on mtimes. The works snapshot is taken
*before* the build reads anything, so an edit made while a build runs never hides behind the
stamp: it differs from the snapshot and the next build runs.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import time
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import PIL

from pipeline import __version__
from pipeline.content import Content
from pipeline.errors import AiimgError
from pipeline.files import atomic_write_bytes, read_only
from pipeline.gallery import search
from pipeline.gallery.collect import draft_listing, listing

log = logging.getLogger("aiimg.gallery")

# FAT's mtimes tick every 2 s, ext4's every jiffy: a folder changed within this of the stamp
# could change again with no new mtime, so its names are part of the stamp too
RACY_NS = 3_000_000_000


class Snapshot(dict):
    """{folder name: its listing (collect.listing: a line per file, name, size, mtime_ns and
    inode)} of every folder under works/, and a hash of it, made once (2.5 MB at 10,000 works)."""

    @functools.cached_property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self).encode()).hexdigest()


def works_snapshot(content: Content) -> Snapshot:
    """The :class:`Snapshot` of works/. Strings, not Paths: 10,000 works are 50,000 files to
    stat on every build."""
    try:
        folders = sorted(e.name for e in os.scandir(content.works_dir) if e.is_dir())
    except OSError:
        return Snapshot()
    root = str(content.works_dir)
    return Snapshot({name: listing(os.path.join(root, name)) for name in folders})


def stamp(cfg, snapshot: Snapshot, drafts: dict[str, str]) -> str:
    """Of everything the build reads. ``drafts``: {id: its folder's listing} of the drafts read
    from content/drafts, as the build listed them before reading them (collect.draft_listing)."""
    versions = [__version__, PIL.__version__, search.fingerprint()]  # search on or off changes every page
    seen = [versions, dataclasses.asdict(cfg.site), str(cfg.output_dir), snapshot.digest, drafts]
    h = hashlib.sha256(json.dumps(seen).encode())
    digest_files(h, template_files())
    return h.hexdigest()


def output_changes(root: Path, record: dict | None) -> tuple[list[str] | None, dict]:
    """The folders of output/ that are not as the last build left them (another mtime or inode,
    or, for a racy one, other names; None when there is no record to compare with), and the
    state of every folder of the record as found now (for :func:`save`)."""
    folders, racy = (record or {}).get("folders"), (record or {}).get("racy")
    if not isinstance(folders, dict) or not isinstance(racy, dict):
        return None, {}
    now = folder_states(root, list(folders))
    changed = [rel for rel, state in now.items() if state != folders[rel]]
    changed += [
        rel for rel, names in racy.items() if rel not in now or now[rel] == folders[rel] and _names(root, rel) != names
    ]
    return changed, now


def folder_states(root: Path, folders: list[str]) -> dict[str, list[int] | None]:
    """{folder: [mtime_ns, inode]} (None when gone): one stat per folder."""
    base, states = str(root), {}
    for rel in folders:
        try:
            st = os.stat(os.path.join(base, rel))
            states[rel] = [st.st_mtime_ns, st.st_ino]
        except OSError:
            states[rel] = None
    return states


def _names(root: Path, rel: str) -> str | None:
    """A hash of a folder's names (images/ holds 10,000 of them)."""
    try:
        names = sorted(e.name for e in os.scandir(os.path.join(root, rel)))
    except OSError:
        return None
    return hashlib.sha1("\n".join(names).encode()).hexdigest()


def unchanged(cfg, content: Content, snapshot: dict, record: dict | None, changes: list[str] | None) -> bool:
    """Whether nothing the last build read changed and output/ is as it left it (``changes``:
    :func:`output_changes`)."""
    if not record or changes != [] or not record.get("folders"):
        return False
    try:
        drafts = {draft_id: draft_listing(content, draft_id) for draft_id in record["drafts"]}
        return stamp(cfg, snapshot, drafts) == record.get("stamp")
    except (AiimgError, TypeError, KeyError):  # a stamp of an older aiimg, or edited by hand: just build
        return False


def save(cfg, content: Content, snapshot: dict, drafts: dict[str, str], output: dict, left: dict, counts: dict) -> None:
    """After the build's last write to output/. ``drafts``: see :func:`stamp`. ``output``:
    "folders", those it left files in; "seen", their states as :func:`output_changes` found
    them; "touched", those it wrote to (or cleaned): stated again. ``left``: the CRC-32s of the
    manifest and the works cache it left (:func:`left_as_is`)."""
    seen, touched = output["seen"], output["touched"]
    again = {rel for rel in output["folders"] if rel in touched or seen.get(rel) is None}
    states = {rel: seen[rel] for rel in output["folders"] if rel not in again}
    states |= folder_states(cfg.output_dir, sorted(again))
    since = time.time_ns() - RACY_NS
    racy = {rel: _names(cfg.output_dir, rel) for rel, state in states.items() if state and state[0] >= since}
    record = {
        "stamp": stamp(cfg, snapshot, drafts),
        "drafts": list(drafts),
        "folders": states,
        "racy": racy,
        "left": left,
        **counts,
    }
    write_cache(content.gallery_stamp_path(), record)  # 20,000 folders at 10,000 works


def left_as_is(record: dict | None, left: dict[str, int | None]) -> bool:
    """Whether the manifest and the works cache, as this build read them (``left``: their
    CRC-32s), are as the last build (one without problems) left them: then each describes the
    other's works. Their bytes, not their mtimes: a file rewritten in place within a clock
    tick of the build would keep its mtime."""
    return None not in left.values() and (record or {}).get("left") == left


def write_cache(path: Path, data: dict) -> bool:
    """A cache in content/.aiimg, compactly: one line, no indent (json's C encoder; with an
    indent json encodes in Python, several times slower on the MBs of 10,000 works)."""
    return write_bytes(path, json.dumps(data, separators=(",", ":")).encode())


def write_bytes(path: Path, payload: bytes) -> bool:
    """Write a cache in content/.aiimg: without it the next build is slower, never wrong, so a
    failure to write it is said (quietly for a read-only content/, a choice) and the build goes
    on. True when written."""
    try:
        atomic_write_bytes(path, payload, durable=False)
        return True
    except AiimgError as exc:
        chosen = read_only(exc.__cause__)
        log.log(logging.DEBUG if chosen else logging.WARNING, "%s (a cache only: the next build will be slower)", exc)
        return False


def forget(content: Content) -> None:
    """A build that may write starts (one that stops half-way must not leave the last stamp),
    or one with problems ends (the next one must run, and report them, again)."""
    try:
        content.gallery_stamp_path().unlink()
    except OSError:
        pass


def read(content: Content) -> dict | None:
    try:
        data = json.loads(content.gallery_stamp_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def template_files(folder=None, under: str = "") -> list[tuple[str, Traversable]]:
    """Every file of pipeline/site_templates (templates and static assets), by its path there
    ("static/site.css"), sorted."""
    folder = folder or resources.files("pipeline").joinpath("site_templates")
    found = []
    for entry in folder.iterdir():
        name = f"{under}{entry.name}"
        found += template_files(entry, f"{name}/") if entry.is_dir() else [(name, entry)]
    return sorted(found, key=lambda named: named[0])


def digest_files(h, files: list[tuple[str, Traversable]]) -> None:
    """Each (name, file) into the hash ``h``: its name (never where aiimg is installed: the
    same site, the same stamp and page keys, wherever aiimg is) and its bytes."""
    for name, path in files:
        data = path.read_bytes()
        h.update(f"{name}\0{len(data)}\0".encode() + data)
