"""Step 1 of the build: read ``content/works`` (and the drafts they came from) into plain objects.

A work is self-contained: ``works/<id>/draft.png`` and ``draft.json`` are its copy of the draft
it came from, so ``content/works`` alone is a whole gallery (unseeded drafts stay private).
A work made before that has no copy: its draft is read from ``content/drafts`` instead.

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

from pipeline.content import Content, check_id, read_json
from pipeline.errors import AiimgError
from pipeline.recipes import DraftRecipe

META_KEYS = {"title": str, "tags": list, "description": str}


@dataclass
class Picture:
    """One source image and where its encoded forms go (``out_dir`` under output/)."""

    src: str  # the source file (a str, not a Path: 40,000 of them at 10,000 works, made on every build)
    out_dir: str  # "images/<id>"
    stem: str  # "1", "2", ... or "draft"
    meta: dict = field(default_factory=dict)  # filled by images.py: sizes, colour, files

    @property
    def ok(self) -> bool:
        return bool(self.meta)

    @property
    def slot(self) -> str:
        """Its key in the manifest's sources: ``images/<id>/<stem>``."""
        return f"{self.out_dir}/{self.stem}"


@dataclass
class Variation:
    recipe: dict
    picture: Picture


@dataclass
class Work:
    id: str
    title: str
    description: str
    created: str  # first publication: the oldest variation's `created`
    updated: str  # the newest variation's `created`
    tags: list[str]
    variations: list[Variation]
    draft: Variation | None  # the txt2img image it came from (None when gone)
    draft_id: str = ""  # that draft's id (work.json's "draft"), even when it is gone

    @property
    def cover(self) -> Variation:
        return self.variations[0]

    @property
    def pictures(self) -> list[Picture]:
        """Every image the work shows: its variations, then its draft."""
        return [v.picture for v in (*self.variations, *([self.draft] if self.draft else []))]


def collect(
    content: Content, problems: list[str], snapshot: dict | None = None, cache: dict | None = None
) -> list[Work]:
    """Every publishable work, newest first (by first publication, then id).

    ``snapshot``: the files of each work folder as the build's stamp listed them
    (stamp.works_snapshot), so that which files exist is known without a stat each (10,000
    works are 50,000 files). ``cache``: the works as the last build read them, {id: {"key",
    "work"}}; a work whose folder (and, for an older work, whose draft folder) lists the same
    files, sizes, mtimes and inodes is taken from it instead of read again (10,000 works are
    20,000 JSON files to read and type); updated in place to today's works. A work read with a
    problem is not cached: the next build reads it, and reports the problem, again."""
    works, fresh = [], {}
    for work_id in content.works():
        listed = snapshot.get(work_id) if snapshot is not None else None
        names = {row[0] for row in listed} if listed is not None else None
        hit = cache.get(work_id) if cache is not None and listed is not None else None
        work = _cached(content, work_id, hit, listed, names)
        if work:
            fresh[work_id] = hit
        else:
            before = len(problems)
            work = _read_work(content, work_id, problems, _Files(names))
            key = _cache_key(content, work_id, listed, names, work.draft_id) if work and listed is not None else None
            if key and len(problems) == before:
                fresh[work_id] = {"key": key, "work": _to_cache(work)}
        if work:
            works.append(work)
    if cache is not None:
        cache.clear()
        cache.update(fresh)
    return sorted(works, key=lambda w: (w.created, w.id), reverse=True)


def _cached(content: Content, work_id: str, hit, listed, names) -> Work | None:
    if not isinstance(hit, dict) or not isinstance(hit.get("work"), dict):
        return None
    try:
        if hit.get("key") != _cache_key(content, work_id, listed, names, hit["work"].get("draft_id")):
            return None
        return _from_cache(work_id, hit["work"])
    except (KeyError, TypeError, ValueError):  # a cache of another aiimg, or edited by hand: read the work
        return None


def _cache_key(content: Content, work_id: str, listed: list, names: set[str], draft_id) -> str | None:
    """Of what the work was read from: its folder's listing, and an older work's draft folder."""
    parts = [listed]
    if "draft.json" not in names and draft_id:  # no copy of its draft: read from content/drafts
        try:
            parts.append(listing(str(content.draft_folder(check_id(draft_id)))))
        except AiimgError:
            return None
    return hashlib.sha1(json.dumps(parts).encode()).hexdigest()


def _to_cache(work: Work) -> dict:
    return {
        "title": work.title,
        "description": work.description,
        "created": work.created,
        "updated": work.updated,
        "tags": work.tags,
        "draft_id": work.draft_id,
        "variations": [[v.recipe, v.picture.src, v.picture.stem] for v in work.variations],
        "draft": [work.draft.recipe, work.draft.picture.src] if work.draft else None,
    }


def _from_cache(work_id: str, data: dict) -> Work:
    out_dir = f"images/{work_id}"
    variations = [Variation(recipe, Picture(src, out_dir, stem)) for recipe, src, stem in data["variations"]]
    draft = data["draft"]
    draft = Variation(draft[0], Picture(draft[1], out_dir, "draft")) if draft else None
    work = Work(
        work_id, data["title"], data["description"], data["created"], data["updated"], data["tags"], variations, draft
    )
    work.draft_id = data["draft_id"]
    return work


def listing(folder: str) -> list | None:
    """[[name, size, mtime_ns, inode], ...] of the files in ``folder`` and in its sub-folders
    (``finished/1.png``: a finished copy is part of its work), by name; None when unreadable."""
    rows = []
    try:
        with os.scandir(folder) as found:
            for e in found:
                if e.is_file():
                    st = e.stat()
                    rows.append([e.name, st.st_size, st.st_mtime_ns, st.st_ino])
                elif e.is_dir() and e.name[0] != ".":
                    rows += [[f"{e.name}/{row[0]}", *row[1:]] for row in listing(e.path) or [] if "/" not in row[0]]
    except OSError:
        return None
    rows.sort()  # by name: names are unique, so the sort never looks further
    return rows


class _Files:
    """Whether a file of one work folder exists: from the snapshot's names when there is one."""

    def __init__(self, names: set[str] | None):
        self.names = names

    def there(self, path: Path) -> bool:
        return path.name in self.names if self.names is not None else path.is_file()


def _read_work(content: Content, work_id: str, problems: list[str], files: _Files) -> Work | None:
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
    work = _work(work_id, variations, _draft(content, work_id, draft_id, problems, files), meta)
    work.draft_id = draft_id
    return work


def _variations(content: Content, work_id: str, recipes: list, problems: list[str], files: _Files) -> list[Variation]:
    out = []
    for recipe in recipes:
        src = content.variation_path(work_id, recipe.file)
        if not files.there(src):
            problems.append(f"{src}: missing; variation skipped")
            continue
        # [finish] made a copy of this variation (finishing.py): the copy is what is published
        finished = content.finished_path(work_id, recipe.file)
        shown = finished if recipe.finished and finished.is_file() else src
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
            image = content.draft(check_id(draft_id)).image
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
    return Work(work_id, title, _clean(meta.get("description", "")), created[0], created[-1], tags, variations, draft)


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
