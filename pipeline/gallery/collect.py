"""Step 1 of the build: read ``content/works`` (and the drafts they came from) into plain objects.

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

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.content import Content, check_id
from pipeline.errors import AiimgError

META_KEYS = {"title": str, "tags": list, "description": str}


@dataclass
class Picture:
    """One source image and where its encoded forms go (``out_dir`` under output/)."""

    src: Path
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


def collect(content: Content, problems: list[str]) -> list[Work]:
    """Every publishable work, newest first (by first publication, then id)."""
    works = []
    for work_id in content.works():
        work = _read_work(content, work_id, problems)
        if work:
            works.append(work)
    return sorted(works, key=lambda w: (w.created, w.id), reverse=True)


def _read_work(content: Content, work_id: str, problems: list[str]) -> Work | None:
    try:
        record = content.read_work(check_id(work_id))
        variations = _variations(content, work_id, record.variations, problems)
    except AiimgError as exc:
        problems.append(f"{exc}; work skipped")
        return None
    if not variations:
        return None  # no variation yet: nothing to publish
    meta = _read_meta(content, work_id, problems)
    draft_id = record.draft or work_id
    work = _work(work_id, variations, _draft(content, work_id, draft_id, problems), meta)
    work.draft_id = draft_id
    return work


def _variations(content: Content, work_id: str, recipes: list, problems: list[str]) -> list[Variation]:
    out = []
    for recipe in recipes:
        src = content.variation_path(work_id, recipe.file)
        if not src.is_file():
            problems.append(f"{src}: missing; variation skipped")
            continue
        # the pages show the recipe as it is on disk, keys of other stages included
        out.append(Variation(recipe.to_json(), Picture(src, f"images/{work_id}", src.stem)))
    return sorted(out, key=lambda v: int(v.picture.stem))


def _draft(content: Content, work_id: str, draft_id: str, problems: list[str]) -> Variation | None:
    try:
        draft = content.draft(check_id(draft_id))
        recipe = content.read_draft(draft_id)
    except AiimgError as exc:
        problems.append(f"{exc}; work {work_id} shown without its draft")
        return None
    if not draft.image.is_file():
        problems.append(f"{draft.image}: missing; work {work_id} shown without its draft")
        return None
    return Variation(recipe.to_json(), Picture(draft.image, f"images/{work_id}", "draft"))


def _read_meta(content: Content, work_id: str, problems: list[str]) -> dict:
    path = content.work_meta_path(work_id)
    if not path.is_file():
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
