"""Step 1 of the build: read ``content/works`` (and the drafts they came from) into plain objects.

A work is self-contained: ``works/<id>/draft.png`` and ``draft.json`` are its copy of the draft
it came from, so ``content/works`` alone is a whole gallery (unseeded drafts stay private).
A work made before that has no copy: its draft is read from ``content/drafts`` instead.

A build keeps of each work only what the list pages show (:class:`Work`: title, dates, tags,
the cover's prompt) and a key of the rest; the recipes are read again for the work's own page
when it is rendered (:func:`load`), and dropped after it: 10,000 works of recipes never sit in
memory. A work whose folder lists the same files as at the last build is not read at all: the
works cache (cache.py) gives it whole.

Nothing here writes. Every path comes from :class:`pipeline.content.Content`: ids are checked
by ``check_id`` and variation file names by ``Content.variation_path`` before they touch the
disk, so no user text becomes a path. Problems (a bad work.json, a bad file name, a missing
draft) are collected as strings that name the path; the work is skipped or shown without the
missing part, and the build goes on.

The creator's optional ``works/<id>/work.toml``::

    title = "Silver rain"              # page title (default: the random picks, then the id)
    tags = ["portrait", "night"]       # added to the picks' values
    description = "..."                # shown under the title, used for Open Graph
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.content import DRAFT_ID, Content, check_id, read_json
from pipeline.errors import AiimgError
from pipeline.gallery.output import record_entries
from pipeline.recipes import DraftRecipe

META_KEYS = {"title": str, "tags": list, "description": str}


@dataclass
class Picture:
    """One source image and where its encoded forms go (``out_dir`` under output/)."""

    src: str  # the source file (a str, not a Path: 40,000 of them at 10,000 works)
    out_dir: str  # "images/<id>"
    stem: str  # "1", "2", ... or "draft"
    meta: dict = field(default_factory=dict)  # filled by images.py: sizes, colour, files

    @property
    def ok(self) -> bool:
        return bool(self.meta)


@dataclass
class Variation:
    recipe: dict
    picture: Picture


@dataclass(eq=False)
class Work:
    """A work as the list pages show it, and what the build knows of its images.

    ``pictures`` are its sources (variations by number, then the draft), None for a work the
    build takes whole from the last one (its images unchanged: ``record`` is all it needs).
    ``record`` is its line in the manifest (images.py), ``digest`` the key of everything its
    pages show (``content``: what it was read from; and its record). ``variations`` and
    ``draft`` hold recipes only while its own page is rendered (:func:`load`)."""

    id: str
    title: str
    description: str
    created: str  # first publication: the oldest variation's `created`
    updated: str  # the newest variation's `created`
    tags: list[str]
    prompt: str  # the cover's prompt (the feed; a page's description)
    draft_id: str  # its draft's id (work.json's "draft"), even when the draft is gone
    old_draft: bool = False  # its draft was read from content/drafts (a work made before copies)
    content: str = ""  # sha256 of what it was read as: its summary, recipes and pictures
    listing: str = ""  # what it was read from (its folder's listing: collect's cache key)
    cacheable: bool = True  # read without a problem (one with a problem is read, and reports it, again)
    pictures: list[Picture] | None = None
    record: bytes = b""
    digest: str = ""
    variations: list[Variation] | None = None
    draft: Variation | None = None
    parsed: dict | None = None  # {stem: meta} of its record, once known (images.py, or :attr:`metas`)

    @property
    def metas(self) -> dict[str, dict]:
        """Its encoded pictures' meta by stem, from its record (parsed when a page needs it)."""
        if self.parsed is None:
            self.parsed = {stem: entry["meta"] for stem, entry in record_entries(self.record)}
        return self.parsed

    @property
    def cover_meta(self) -> dict:
        """The first variation's meta: its tile, its Open Graph image."""
        return next(meta for stem, meta in self.metas.items() if stem != "draft")

    @property
    def cover(self) -> Variation:
        """The first variation, recipe included (only while loaded: :func:`load`)."""
        return self.variations[0]

    def summary(self) -> list:
        """What the works cache keeps of it (see :func:`from_summary`)."""
        return [
            self.title,
            self.description,
            self.created,
            self.updated,
            self.tags,
            self.prompt,
            self.draft_id,
            self.old_draft,
        ]


def from_summary(work_id: str, summary: list) -> Work:
    title, description, created, updated, tags, prompt, draft_id, old_draft = summary
    return Work(work_id, title, description, created, updated, tags, prompt, draft_id, old_draft)


def collect(content: Content, problems: list[str], snapshot: dict, cache: dict | None = None) -> list[Work]:
    """Every publishable work, newest first (by first publication, then id).

    ``snapshot``: the files of each work folder as the build's stamp listed them
    (stamp.works_snapshot): which works there are, and which files, without a stat each.
    ``cache``: {id: (listing_key, summary)} of the works cache (cache.py); a work whose folder (and,
    for an older work, whose draft folder) lists the same files, sizes, mtimes and inodes is
    taken from it (``pictures`` None, for images.py to settle) instead of read again. Every work
    gets ``listing``: what it was read from, for the cache."""
    works, cache = [], cache or {}
    for work_id, listed in snapshot.items():
        if listed is None and DRAFT_ID.match(work_id):
            problems.append(f"{content.work_folder(work_id)}: cannot be read; work skipped")
        if not (DRAFT_ID.match(work_id) and listed and has_file(listed, "work.json")):
            continue
        hit = cache.get(work_id)
        work = _cached(content, work_id, listed, hit) if hit else None
        if work is None:
            before, files = len(problems), _Files(listed)
            work = _read_work(content, work_id, problems, files)
            if work:
                work.listing = source_listing(listed, files.draft if work.old_draft else None)
                work.cacheable = len(problems) == before
        if work:
            works.append(work)
    return sorted(works, key=lambda w: (w.created, w.id), reverse=True)


def _cached(content: Content, work_id: str, listed: str, hit: tuple) -> Work | None:
    key, summary = hit
    try:
        work = from_summary(work_id, summary)
        if not _summary_ok(work):
            return None
        work.listing = source_listing(listed, draft_listing(content, work.draft_id) if work.old_draft else None)
    except (AiimgError, TypeError, ValueError):  # a cache of another aiimg, or edited by hand: read the work
        return None
    return work if listing_key(work.listing) == key else None


def _summary_ok(work: Work) -> bool:
    """Whether a summary from the works cache has the types :meth:`Work.summary` gives them."""
    texts = [work.title, work.description, work.created, work.updated, work.prompt, work.draft_id]
    return (
        all(isinstance(t, str) for t in texts)
        and isinstance(work.tags, list)
        and all(isinstance(t, str) for t in work.tags)
        and isinstance(work.old_draft, bool)
    )


def read_again(content: Content, work: Work, problems: list[str]) -> None:
    """A work taken from the works cache whose own line there cannot be used (unreadable, or not
    as :mod:`pipeline.gallery.cache` writes it): its pictures and content key read from its
    folder, as if it were not in the cache (none when it cannot be read now)."""
    before = len(problems)
    fresh = _read_work(content, work.id, problems, _Files(work.listing.partition("\n\n")[0]))
    work.cacheable = fresh is not None and len(problems) == before
    work.content, work.pictures = (fresh.content, fresh.pictures) if fresh else ("", [])


def listing_key(listed: str) -> str:
    """What the works cache keeps of a listing (10,000 of them on every build). A name that is
    not UTF-8 is listed as os.scandir gives it (surrogate escapes): hashed as its bytes."""
    return hashlib.sha1(listed.encode("utf-8", "surrogateescape")).hexdigest()


def source_listing(listed: str, draft_listed: str | None) -> str:
    """What a work is read from: its folder's listing and, for an older work, its draft
    folder's (a listing holds no empty line)."""
    return listed if draft_listed is None else f"{listed}\n\n{draft_listed}"


def draft_listing(content: Content, draft_id: str) -> str:
    """The :func:`listing` of a draft's folder in content/drafts ("" when unreadable)."""
    return listing(str(content.draft_folder(check_id(draft_id)))) or ""


def listing(folder: str) -> str | None:
    """``name<TAB>size<TAB>mtime_ns<TAB>inode`` of each file in ``folder`` and in its sub-folders
    (``finished/1.png``: a finished copy is part of its work), a line each, by name; None when
    unreadable. A string, not rows: 10,000 works are 50,000 files, compared and hashed on every
    build. A name with a tab or a line break is left out (the build reads no such file): the
    rows are parsed back (:func:`listed_files`)."""
    rows = []
    try:
        with os.scandir(folder) as found:
            for e in found:
                if "\t" in e.name or "\n" in e.name:
                    continue
                if e.is_file():
                    st = e.stat()
                    rows.append(f"{e.name}\t{st.st_size}\t{st.st_mtime_ns}\t{st.st_ino}")
                elif e.is_dir() and e.name[0] != ".":
                    rows += [f"{e.name}/{row}" for row in _rows(listing(e.path)) if "/" not in row.split("\t", 1)[0]]
    except OSError:
        return None
    rows.sort()  # by name: names are unique and hold no tab, so the sort never looks further
    return "\n".join(rows)


def _rows(listed: str | None) -> list[str]:
    return listed.split("\n") if listed else []


def listed_files(listed: str | None) -> dict[str, list[int]]:
    """{file name: [size, mtime_ns, inode]} of a :func:`listing`."""
    files = {}
    for row in _rows(listed):
        name, *stat = row.split("\t")
        files[name] = [int(n) for n in stat]
    return files


def has_file(listed: str, name: str) -> bool:
    return listed.startswith(name + "\t") or f"\n{name}\t" in listed


class _Files:
    """Whether a file of one work folder exists: from the snapshot's listing."""

    def __init__(self, listed: str):
        self.listed = listed
        self.draft: str | None = None  # an older work's draft folder, listed before its draft is read

    def there(self, path: Path) -> bool:
        return has_file(self.listed, path.name)


def load(content: Content, work: Work) -> bool:
    """Read the work's recipes again for its own page: ``variations`` and ``draft``, with the
    metas of its record. False when it cannot be read now (changed since it was listed: the next
    build reads it again)."""
    problems: list[str] = []
    fresh = _read_work(content, work.id, problems, None, keep=True)
    if fresh is None or work_digest(fresh.content, work.record) != work.digest:  # its page as listed, or none
        return False
    metas = work.metas
    work.variations = [
        Variation(v.recipe, Picture("", v.picture.out_dir, v.picture.stem, metas[v.picture.stem]))
        for v in fresh.variations
        if v.picture.stem in metas
    ]
    draft = fresh.draft if fresh.draft and "draft" in metas else None
    work.draft = Variation(draft.recipe, Picture("", draft.picture.out_dir, "draft", metas["draft"])) if draft else None
    return bool(work.variations)


def work_digest(content: str, record: bytes) -> str:
    """A work's digest (its pages' key): what it shows from content/ and its images (its record)."""
    return hashlib.sha256(content.encode() + b"\n" + record).hexdigest()


def unload(work: Work) -> None:
    """Drop its recipes once its page is made."""
    work.variations, work.draft = None, None


def _read_work(content: Content, work_id: str, problems: list[str], files: _Files | None, keep=False) -> Work | None:
    """The work as it is on disk now, with its pictures; its recipes only when ``keep``."""
    files = files or _Files(listing(str(content.work_folder(work_id))) or "")
    try:
        record = content.read_work(check_id(work_id))
        variations = _variations(content, work_id, record.variations, problems, files)
    except AiimgError as exc:
        problems.append(f"{exc}; work skipped")
        return None
    if not variations:
        return None  # no variation yet: nothing to publish
    meta = _read_meta(content, work_id, problems, files)
    draft_id = record.draft or work_id
    draft = _draft(content, work_id, draft_id, problems, files)
    work = _work(work_id, variations, draft, meta)
    work.draft_id = draft_id
    work.old_draft = bool(draft) and draft.picture.src != str(content.work_draft_image(work_id))
    work.pictures = [v.picture for v in (*variations, *([draft] if draft else []))]
    work.content = _content_key(work, variations, draft)
    if keep:
        work.variations, work.draft = variations, draft
    return work


def _content_key(work: Work, variations: list[Variation], draft: Variation | None) -> str:
    """Of everything the work's pages show from content/ (the images apart: their keys are in
    its record). Where the sources lie does not show."""
    shown = [work.summary(), [[v.recipe, v.picture.stem] for v in variations], draft.recipe if draft else None]
    return hashlib.sha256(json.dumps(shown, sort_keys=True).encode()).hexdigest()


def _variations(content: Content, work_id: str, recipes: list, problems: list[str], files: _Files) -> list[Variation]:
    out = []
    for recipe in recipes:
        src = content.variation_path(work_id, recipe.file)
        if not files.there(src):
            problems.append(f"{src}: missing; variation skipped")
            continue
        # [finish] made a copy of this variation (finishing.py): the copy is what is published
        finished = content.finished_path(work_id, recipe.file)
        copy = finished.relative_to(content.work_folder(work_id)).as_posix()  # finished/<n>.png: listed too
        shown = finished if recipe.finished and has_file(files.listed, copy) else src
        # the pages show the recipe as it is on disk, keys of other stages included
        out.append(Variation(recipe.to_json(), Picture(str(shown), f"images/{work_id}", src.stem)))
    return sorted(out, key=lambda v: int(v.picture.stem))


def _draft(content: Content, work_id: str, draft_id: str, problems: list[str], files: _Files) -> Variation | None:
    """The work's own copy of its draft (works are self-contained: content/works alone is a
    whole gallery; draft.json is copied last), else, for a work made before, the draft in
    content/drafts."""
    image, recipe_path = content.work_draft_image(work_id), content.work_draft_recipe(work_id)
    own = files.there(recipe_path)
    try:
        if own:
            recipe = DraftRecipe.from_json(read_json(recipe_path), recipe_path)
        else:
            # listed first: an edit made once it is read shows in the listing the next build compares
            files.draft = draft_listing(content, draft_id)
            image = content.draft(draft_id).image
            recipe = content.read_draft(draft_id)
    except AiimgError as exc:
        problems.append(f"{exc}; work {work_id} shown without its draft")
        return None
    if not (files.there(image) if own else image.is_file()):
        problems.append(f"{image}: missing; work {work_id} shown without its draft")
        return None
    return Variation(recipe.to_json(), Picture(str(image), f"images/{work_id}", "draft"))


def _read_meta(content: Content, work_id: str, problems: list[str], files: _Files) -> dict:
    path = content.work_meta_path(work_id)
    if not files.there(path):
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        problems.append(f"{path}: unreadable TOML ({exc}); ignored")
        return {}
    return {k: v for k, v in data.items() if _meta_ok(path, k, v, problems)}


def _meta_ok(path: Path, key: str, value, problems: list[str]) -> bool:
    kind = META_KEYS.get(key)
    if kind is None or not isinstance(value, kind) or (kind is list and not all(isinstance(t, str) for t in value)):
        problems.append(f"{path}: {key} = {value!r} ignored (known keys: title, description: text; tags: list of text)")
        return False
    return True


def _work(work_id: str, variations: list[Variation], draft: Variation | None, meta: dict) -> Work:
    created = sorted(str(v.recipe.get("created", "")) for v in variations)
    tags = tags_of([v.recipe for v in variations], meta.get("tags", []))
    picks = tags_of([variations[0].recipe], [])
    title = _clean(meta.get("title", "")) or " · ".join(picks) or work_id
    prompt = str(variations[0].recipe.get("prompt", ""))
    description = _clean(meta.get("description", ""))
    return Work(work_id, title, description, created[0], created[-1], tags, prompt, "")


def tags_of(recipes: list[dict], extra: list[str]) -> list[str]:
    """The random picks' values (trimmed) and the creator's tags, first seen first, no repeats."""
    values = [p.get("value", "") for r in recipes for p in r.get("picks") or [] if isinstance(p, dict)]
    seen: dict[str, None] = {}
    for value in [*values, *extra]:
        tag = _clean(str(value))[:80]
        if tag:
            seen.setdefault(tag, None)
    return list(seen)


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", str(text)).strip()
