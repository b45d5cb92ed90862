"""Skip a build that would change nothing: a stamp of everything a build reads.

``content/.aiimg/gallery-stamp.json`` (written after a build without problems; safe to delete)::

    {"stamp": "<sha256>", "drafts": ["<draft id>", ...],
     "works": 300, "images": 1200, "pages": 355}     (counts for the report)

The stamp hashes aiimg's and Pillow's versions, the [site] settings, the output folder, the
templates and static files, and the name, size, mtime and inode of every file in every
``works/<id>/`` folder and in the draft folder of every work the last build published. A build
whose stamp matches, with every file of the last manifest still in output/, would make the
same bytes: it stops there. It lives in content/ (like the hash cache), not in output/, whose
bytes must not depend on mtimes.

The works snapshot is taken *before* the build reads anything, so an edit made while a build
runs never hides behind the stamp: it differs from the snapshot and the next build runs.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import os
from importlib import resources
from pathlib import Path

import PIL

from pipeline import __version__
from pipeline.content import Content
from pipeline.errors import AiimgError
from pipeline.files import atomic_write_json
from pipeline.gallery.output import Output

log = logging.getLogger("aiimg.gallery")


def works_snapshot(content: Content) -> list:
    """(folder, name, size, mtime_ns, inode) of every file under works/<id>/."""
    return [row for folder in _dirs(content.works_dir) for row in _listing(folder, content.root)]


def stamp(cfg, content: Content, works_rows: list, drafts: list[str]) -> str:
    """``drafts``: the ids of the drafts the build published (an AiimgError for a bad id)."""
    h = hashlib.sha256(
        json.dumps(
            [__version__, PIL.__version__, dataclasses.asdict(cfg.site), str(cfg.output_dir), works_rows]
        ).encode()
    )
    for draft_id in drafts:
        h.update(json.dumps(_listing(content.draft_folder(draft_id), content.root)).encode())
    for path in template_files():
        h.update(str(path).encode() + path.read_bytes())
    return h.hexdigest()


def unchanged(cfg, content: Content, works_rows: list, manifest: dict) -> dict | None:
    """The last build's record when nothing it read changed and its files are all there."""
    record = read(content)
    try:
        if not record or record.get("stamp") != stamp(cfg, content, works_rows, record.get("drafts", [])):
            return None
    except (AiimgError, TypeError):  # a stamp of an older aiimg, or edited by hand: just build
        return None
    out = Output(cfg.output_dir)
    if not manifest["files"] or not all(out.exists(rel) for rel in manifest["files"]):
        return None
    return record


def save(cfg, content: Content, works_rows: list, drafts: list[str], counts: dict) -> None:
    record = {"stamp": stamp(cfg, content, works_rows, drafts), "drafts": drafts, **counts}
    write_cache(content.gallery_stamp_path(), record)


def write_cache(path: Path, data: dict) -> None:
    """A cache in content/.aiimg: without it the next build is slower, never wrong, so a
    failure to write it is said (quietly for a read-only content/, a choice) and the build goes on."""
    try:
        atomic_write_json(path, data, durable=False)
    except AiimgError as exc:
        cause = exc.__cause__
        chosen = isinstance(cause, OSError) and cause.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
        log.log(logging.DEBUG if chosen else logging.WARNING, "%s (a cache only: the next build will be slower)", exc)


def forget(content: Content) -> None:
    """After a build with problems: the next one must run (and report them) again."""
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


def _dirs(folder: Path) -> list[Path]:
    try:
        return sorted(Path(e.path) for e in os.scandir(folder) if e.is_dir())
    except OSError:
        return []


def _listing(folder: Path, root: Path) -> list:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return [[str(folder.relative_to(root)), None]]
    rel = str(folder.relative_to(root))
    return [[rel, e.name, st.st_size, st.st_mtime_ns, st.st_ino] for e in entries if e.is_file() for st in [e.stat()]]


def template_files(folder=None) -> list:
    """Every file of pipeline/site_templates (templates and static assets), sorted."""
    folder = folder or resources.files("pipeline").joinpath("site_templates")
    found = []
    for entry in folder.iterdir():
        found += template_files(entry) if entry.is_dir() else [entry]
    return sorted(found, key=str)
