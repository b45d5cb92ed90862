"""Skip a build that would change nothing: a stamp of everything a build reads and leaves.

``content/.aiimg/gallery-stamp.json`` (written after a build without problems; safe to delete)::

    {"stamp": "<sha256>", "drafts": ["<draft id>", ...],
     "folders": {"": [mtime_ns, inode], "images/<id>": [...], ...},
     "racy": {"": ["404.html", ...], ...},
     "works": 300, "images": 1200, "pages": 355, "size": {...}}   (for the report)

The stamp hashes aiimg's, Pillow's and Pagefind's versions (search on or off), the [site]
settings, the output folder, the templates and static files, and the name, size, mtime and
inode of every file in every ``works/<id>/`` folder (a work holds its draft: works are
self-contained) and in the draft folder of every older work whose draft the last build read
from ``content/drafts``.

``folders`` is the mtime and inode of every folder of output/ the build left files in, taken
after its last write. A file removed from output/ (or added: a killed build's temp file, a
CNAME) changes its folder's mtime, so one stat per folder, not per file, tells whether output/
is as the build left it; the folders that changed are the only ones a later build looks into
for temp files. A folder whose mtime was within :data:`RACY_NS` of the stamp is also compared
by its names (``racy``): on a file system whose clock ticks coarsely, a change right after the
build could leave the same mtime.

Same stamp and no folder changed: the build would make the same bytes, so it stops there,
without reading the manifest, a recipe or an image. The stamp lives in content/ (like the hash
cache), not in output/, whose bytes must not depend on mtimes. The works snapshot is taken
*before* the build reads anything, so an edit made while a build runs never hides behind the
stamp: it differs from the snapshot and the next build runs.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import os
import time
from importlib import resources
from pathlib import Path

import PIL

from pipeline import __version__
from pipeline.content import Content
from pipeline.errors import AiimgError
from pipeline.files import atomic_write_bytes, atomic_write_json
from pipeline.gallery import search
from pipeline.gallery.collect import listing

log = logging.getLogger("aiimg.gallery")

# FAT's mtimes tick every 2 s, ext4's every jiffy: a folder changed within this of the stamp
# could change again with no new mtime, so its names are part of the stamp too
RACY_NS = 3_000_000_000


def works_snapshot(content: Content) -> dict[str, list | None]:
    """{folder name: [[file name, size, mtime_ns, inode], ...]} of every folder under works/.
    Strings, not Paths: 10,000 works are 50,000 files to stat on every build."""
    try:
        folders = sorted(e.name for e in os.scandir(content.works_dir) if e.is_dir())
    except OSError:
        return {}
    root = str(content.works_dir)
    return {name: listing(os.path.join(root, name)) for name in folders}


def source_stats(content: Content, snapshot: dict) -> dict[str, list[int]]:
    """{path: [size, mtime_ns, inode]} of every file in the snapshot, keyed as the sources'
    paths are written (``str(works_dir / id / name)``): their hashes need no second stat."""
    root = str(content.works_dir)
    return {os.path.join(root, folder, row[0]): row[1:] for folder, rows in snapshot.items() for row in rows or []}


def stamp(cfg, content: Content, snapshot: dict, drafts: list[str]) -> str:
    """Of everything the build reads. ``drafts``: the ids of the drafts read from content/drafts
    (an AiimgError for a bad id)."""
    versions = [__version__, PIL.__version__, search.fingerprint()]  # search on or off changes every page
    h = hashlib.sha256(json.dumps([versions, dataclasses.asdict(cfg.site), str(cfg.output_dir), snapshot]).encode())
    for draft_id in drafts:
        h.update(json.dumps(listing(str(content.draft_folder(draft_id)))).encode())
    for path in template_files():
        h.update(str(path).encode() + path.read_bytes())
    return h.hexdigest()


def output_changes(root: Path, record: dict | None) -> list[str] | None:
    """The folders of output/ that are not as the last build left them (another mtime or inode,
    or, for a racy one, other names); None when there is no record to compare with."""
    folders, racy = (record or {}).get("folders"), (record or {}).get("racy")
    if not isinstance(folders, dict) or not isinstance(racy, dict):
        return None
    now = folder_states(root, list(folders))
    changed = [rel for rel, state in now.items() if state != folders[rel]]
    changed += [
        rel for rel, names in racy.items() if rel not in now or now[rel] == folders[rel] and _names(root, rel) != names
    ]
    return changed


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


def _names(root: Path, rel: str) -> list[str] | None:
    try:
        return sorted(e.name for e in os.scandir(os.path.join(root, rel)))
    except OSError:
        return None


def unchanged(cfg, content: Content, snapshot: dict, record: dict | None, changes: list[str] | None) -> bool:
    """Whether nothing the last build read changed and output/ is as it left it (``changes``:
    :func:`output_changes`)."""
    if not record or changes != [] or not record.get("folders"):
        return False
    try:
        return stamp(cfg, content, snapshot, record["drafts"]) == record.get("stamp")
    except (AiimgError, TypeError, KeyError):  # a stamp of an older aiimg, or edited by hand: just build
        return False


def save(cfg, content: Content, snapshot: dict, drafts: list[str], folders: list[str], counts: dict) -> None:
    """After the build's last write to output/: ``folders``, those it left files in."""
    states = folder_states(cfg.output_dir, folders)
    since = time.time_ns() - RACY_NS
    racy = {rel: _names(cfg.output_dir, rel) for rel, state in states.items() if state and state[0] >= since}
    record = {
        "stamp": stamp(cfg, content, snapshot, drafts),
        "drafts": drafts,
        "folders": states,
        "racy": racy,
        **counts,
    }
    write_cache(content.gallery_stamp_path(), record, compact=True)  # 20,000 folders at 10,000 works


def write_cache(path: Path, data: dict, compact: bool = False) -> None:
    """A cache in content/.aiimg: without it the next build is slower, never wrong, so a
    failure to write it is said (quietly for a read-only content/, a choice) and the build goes on.
    ``compact``: one line, no indent: json's C encoder (with an indent, json encodes in Python:
    several times slower on the MBs of 10,000 works)."""
    try:
        if compact:
            atomic_write_bytes(path, json.dumps(data, separators=(",", ":")).encode(), durable=False)
        else:
            atomic_write_json(path, data, durable=False)
    except AiimgError as exc:
        cause = exc.__cause__
        chosen = isinstance(cause, OSError) and cause.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
        log.log(logging.DEBUG if chosen else logging.WARNING, "%s (a cache only: the next build will be slower)", exc)


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


def template_files(folder=None) -> list:
    """Every file of pipeline/site_templates (templates and static assets), sorted."""
    folder = folder or resources.files("pipeline").joinpath("site_templates")
    found = []
    for entry in folder.iterdir():
        found += template_files(entry) if entry.is_dir() else [entry]
    return sorted(found, key=str)
