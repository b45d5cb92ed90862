"""The only module that knows the layout of ``content/``. The disk is the database.

::

    content/
      prompts/<name>.txt                 wildcard files: __name__ in a template, one choice a line
      drafts/YYYY-MM-DD/<draft-id>/
          draft.png                      txt2img image, A1111 "parameters" chunk inside
          draft.json                     its recipe; written last: a draft exists once it does
          seed.txt                       the creator's marker (markers.py)
          seed.error.txt                 aiimg's answer when it cannot be honoured
      works/<draft-id>/
          1.png 2.png ...                variations, numbered across rounds, never overwritten
          work.json                      its rounds and variations (recipes.py)
      .aiimg/status.json                 what that process is doing, for `aiimg status`
      .aiimg/gallery-hashes.json         the gallery's works cache (gallery/cache.py) } caches, all safe
      .aiimg/gallery-stamp.json          the gallery's no-op shortcut          } to delete; their
      .aiimg/preference.json             the learned preference model          } formats are in
      .aiimg/embeddings/<draft-id>.npy   CLIP embeddings for that model        } gallery/, ranking/

Markers (seed.txt, seed.error.txt) are read and written by markers.py, rounds by rounds.py,
recipes (draft.json, work.json) are typed by recipes.py; this module gives them their paths.
      .aiimg/lock, lock.owner            held by the process that generates, and who that is
      .aiimg/logs/aiimg.log              rotating log with tracebacks (logs.py)

A draft id (``20261125-153012-7f3a9``) sorts by time and is unique without coordination; ids
are validated before they become paths. Every write is atomic (files.py): a temp file
``.<name>.<pid>-<token>.tmp`` in the same folder, fsync, ``os.replace``; a temp file whose
process is gone is debris from a kill and is removed by :meth:`Content.clean_temp`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline import markers
from pipeline.errors import AiimgError
from pipeline.files import (
    alive,
    atomic_copy,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    clean_temp,
    subdirs,
    walk,
)
from pipeline.markers import Marker
from pipeline.recipes import DraftRecipe, Work

DRAFT_ID = re.compile(r"^(\d{8})-(\d{6})-([0-9a-f]{4,16})$")


# -- reading ---------------------------------------------------------------------------------


def read_json(path: Path) -> dict:
    """A recipe or work file; a clear error naming the file when it is unreadable."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AiimgError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AiimgError(f"{path}: unreadable JSON ({exc}); restore or delete it") from None


# -- ids -------------------------------------------------------------------------------------


def new_draft_id(now: dt.datetime | None = None) -> str:
    """``20261125-153012-7f3a9``: UTC second, then 3 hex digits of the fraction of the second
    (so ids made within one second still sort by time) and 2 random ones (so two machines
    sharing a folder do not collide)."""
    now = now or dt.datetime.now(dt.UTC)
    fraction = now.microsecond * 4096 // 1_000_000
    return f"{now:%Y%m%d-%H%M%S}-{fraction:03x}{secrets.token_hex(1)}"


def check_id(draft_id: str) -> str:
    if not isinstance(draft_id, str) or not DRAFT_ID.match(draft_id):
        raise AiimgError(f"{draft_id!r} is not a draft id (like 20261125-153012-7f3a)")
    return draft_id


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# -- the content folder ----------------------------------------------------------------------


@dataclass(frozen=True)
class Draft:
    id: str
    folder: Path

    @property
    def image(self) -> Path:
        return self.folder / "draft.png"

    @property
    def recipe_path(self) -> Path:
        return self.folder / "draft.json"


class Content:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.prompts_dir = self.root / "prompts"
        self.drafts_dir = self.root / "drafts"
        self.works_dir = self.root / "works"
        self.state_dir = self.root / ".aiimg"

    def ensure(self) -> Content:
        for d in (self.prompts_dir, self.drafts_dir, self.works_dir, self.state_dir):
            d.mkdir(parents=True, exist_ok=True)
        return self

    # prompts
    def wildcard_path(self, name: str) -> Path:
        """``prompts/<name>.txt``, the file ``__name__`` draws from (sub-folders as ``a/b``)."""
        parts = name.split("/")
        if not all(re.fullmatch(r"[\w][\w .-]*", p) and ".." not in p for p in parts):
            raise AiimgError(f"{name!r} is not a wildcard name (letters, digits, _ . - and / between folders)")
        return self.prompts_dir.joinpath(*parts[:-1], parts[-1] + ".txt")

    # drafts
    def draft_folder(self, draft_id: str) -> Path:
        m = DRAFT_ID.match(check_id(draft_id))
        day = f"{m.group(1)[:4]}-{m.group(1)[4:6]}-{m.group(1)[6:]}"
        return self.drafts_dir / day / draft_id

    def draft(self, draft_id: str) -> Draft:
        return Draft(draft_id, self.draft_folder(draft_id))

    def drafts(self) -> list[Draft]:
        """Every finished draft (draft.json present), oldest first."""
        out = []
        for day in subdirs(self.drafts_dir):
            for folder in subdirs(day):
                if DRAFT_ID.match(folder.name) and (folder / "draft.json").is_file():
                    out.append(Draft(folder.name, folder))
        return sorted(out, key=lambda d: d.id)

    def draft_at(self, folder: Path) -> Draft:
        """The draft whose folder this is, or ``Draft("", folder)`` for any other folder (a copy
        of a draft folder elsewhere is not that draft: serving it would make variations forever)."""
        name = Path(folder).name
        if DRAFT_ID.match(name) and Path(folder) == self.draft_folder(name):
            return Draft(name, Path(folder))
        return Draft("", Path(folder))

    def read_draft(self, draft_id: str) -> DraftRecipe:
        path = self.draft(draft_id).recipe_path
        return DraftRecipe.from_json(read_json(path), path)

    def write_draft(self, recipe: DraftRecipe, png: bytes) -> None:
        """draft.png then draft.json, each atomically: a kill leaves no draft or a whole one."""
        draft = self.draft(recipe.id)
        atomic_write_bytes(draft.image, png)
        atomic_write_json(draft.recipe_path, recipe.to_json())

    # works
    def work_folder(self, draft_id: str) -> Path:
        return self.works_dir / check_id(draft_id)

    def work_path(self, draft_id: str) -> Path:
        return self.work_folder(draft_id) / "work.json"

    def read_work(self, draft_id: str) -> Work:
        path = self.work_path(draft_id)
        if not path.exists():
            return Work(draft_id)
        return Work.from_json(read_json(path), path)

    def write_work(self, draft_id: str, work: Work) -> None:
        atomic_write_json(self.work_path(draft_id), work.to_json())

    # -- works are self-contained: a work folder holds a copy of its draft, so that
    #    content/works alone is what the gallery (and a repository that publishes) needs
    def work_draft_image(self, draft_id: str) -> Path:
        return self.work_folder(draft_id) / "draft.png"

    def work_draft_recipe(self, draft_id: str) -> Path:
        return self.work_folder(draft_id) / "draft.json"

    def copy_draft_into_work(self, draft_id: str) -> None:
        """The draft's image and recipe beside its variations (skipped when already there)."""
        draft = self.draft(draft_id)
        if not self.work_draft_image(draft_id).is_file():
            atomic_copy(draft.image, self.work_draft_image(draft_id), durable=True)
        if not self.work_draft_recipe(draft_id).is_file():
            atomic_copy(draft.recipe_path, self.work_draft_recipe(draft_id), durable=True)

    def write_variation(self, draft_id: str, file_name: str, png: bytes) -> None:
        atomic_write_bytes(self.variation_path(draft_id, file_name), png)

    def works(self) -> list[str]:
        """Ids of works with at least one variation, oldest first."""
        found = (d.name for d in subdirs(self.works_dir) if DRAFT_ID.match(d.name))
        return sorted(i for i in found if self.work_path(i).is_file())

    # markers
    def markers(self) -> list[Marker]:
        """Every marker under drafts/ (also in folders that are not drafts), oldest first."""
        found = [markers.current(folder) for folder in walk(self.drafts_dir, depth=3)]
        return sorted((m for m in found if m), key=lambda m: (m.mtime_ns, str(m.path)))

    def unseeded_count(self) -> int:
        return sum(1 for d in self.drafts() if not markers.find(d.folder) and not self.work_folder(d.id).exists())

    def write_marker(self, draft_id: str, text: str = "") -> Path:
        """Mark a draft as a seed, as a file manager would (review page, auto-seeding)."""
        path = markers.path_for(self.draft_folder(draft_id))
        atomic_write_text(path, text)
        return path

    # housekeeping
    def clean_temp(self) -> int:
        """Remove temp files left by killed processes (content/ and its state); returns how many."""
        return clean_temp(self.root, depth=4) + clean_temp(self.state_dir, depth=2)

    def free_gb(self) -> float:
        return shutil.disk_usage(self.root).free / 1e9

    @contextlib.contextmanager
    def lock(self, what: str) -> Iterator[None]:
        """Exclusive right to generate into this content folder; a second process is refused
        and told who holds it. The OS drops the lock with its holder, so a killed process frees it.
        The holder is named in a file beside the lock: Windows forbids reading a locked file."""
        from filelock import FileLock, Timeout

        self.state_dir.mkdir(parents=True, exist_ok=True)
        owner = self.state_dir / "lock.owner"
        lock = FileLock(self.state_dir / "lock", timeout=0)
        try:
            lock.acquire()
        except Timeout:
            holder = _read_text(owner) or "another process"
            raise AiimgError(
                f"{self.root}: busy: {holder} is generating here; "
                f"stop it first (two processes would do the same work twice)"
            ) from None
        try:
            atomic_write_text(owner, f"pid {os.getpid()} (`aiimg {what}`)", durable=False)
            yield
        finally:
            lock.release()

    def write_status(self, status: dict) -> None:
        # informational and rewritten at every job: whole (atomic), but not worth an fsync each time
        data = {"pid": os.getpid(), "updated": utc_now(), **status}
        atomic_write_json(self.state_dir / "status.json", data, durable=False)

    def read_status(self) -> dict | None:
        path = self.state_dir / "status.json"
        try:
            status = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return status if alive(int(status.get("pid", 0))) else None

    # read-only helpers for the gallery
    def work_meta_path(self, draft_id: str) -> Path:
        """The creator's optional ``works/<id>/work.toml`` (title, tags, description)."""
        return self.work_folder(draft_id) / "work.toml"

    def variation_path(self, draft_id: str, file_name: str) -> Path:
        """A variation named in work.json; the name must be ``<n>.png`` (never a path)."""
        if not isinstance(file_name, str) or not re.fullmatch(r"[1-9]\d{0,5}\.png", file_name):
            raise AiimgError(
                f"{self.work_folder(draft_id) / 'work.json'}: bad variation file name "
                f"{file_name!r}; expected like 1.png"
            )
        return self.work_folder(draft_id) / file_name

    def gallery_cache_path(self) -> Path:
        """The gallery build's works cache (gallery/cache.py: what each work was read from, its
        sources' hashes by size, mtime and inode); safe to delete."""
        return self.state_dir / "gallery-hashes.json"

    def gallery_stamp_path(self) -> Path:
        """The gallery build's stamp of what the last build read (lets a no-op build stop)."""
        return self.state_dir / "gallery-stamp.json"

    # state files of other stages (their formats are documented by their owners)
    @property
    def logs_dir(self) -> Path:
        """Rotating logs (logs.py): every unexpected error with its traceback."""
        return self.state_dir / "logs"

    def preference_path(self) -> Path:
        """The learned preference model (ranking/preference.py)."""
        return self.state_dir / "preference.json"

    def embedding_path(self, draft_id: str) -> Path:
        """A draft's CLIP image embedding (ranking/store.py)."""
        return self.state_dir / "embeddings" / f"{check_id(draft_id)}.npy"

    # -- steering
    def impressions_path(self) -> Path:
        """The drafts the creator has seen on the review page (steering.py); deleting it forgets them."""
        return self.state_dir / "impressions.json"

    # -- finishing
    def finished_path(self, draft_id: str, file_name: str) -> Path:
        """``works/<id>/finished/<n>.png``: the finished copy of variation ``<n>.png`` ([finish],
        finishing.py), same name in a sub-folder so the raw variation beside it is kept as made."""
        return self.work_folder(draft_id) / "finished" / self.variation_path(draft_id, file_name).name

    def write_finished(self, draft_id: str, file_name: str, png: bytes) -> None:
        atomic_write_bytes(self.finished_path(draft_id, file_name), png)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return ""
