"""The only module that knows the layout of ``content/``. The disk is the database.

::

    content/
      prompts/<name>.txt                 wildcard files: __name__ in a template, one choice a line
      drafts/YYYY-MM-DD/<draft-id>/
          draft.png                      txt2img image, A1111 "parameters" chunk inside
          draft.json                     its recipe; written last: a draft exists once it does
          seed.txt                       the creator's marker (any case; seed.txt.txt too):
                                         empty, or TOML overrides (see MARKER_KEYS)
          seed.error.txt                 why the marker could not be honoured; its last line
                                         names the marker version it answers
      works/<draft-id>/
          1.png 2.png ...                variations, numbered across rounds, never overwritten
          work.json                      {"draft": id, "rounds": [...], "variations": [...]}
      .aiimg/lock                        held (flock) by the process that generates
      .aiimg/status.json                 what that process is doing, for `aiimg status`
      .aiimg/gallery-hashes.json         the gallery's cache of source hashes  } caches, all safe
      .aiimg/gallery-stamp.json          the gallery's no-op shortcut          } to delete; their
      .aiimg/preference.json             the learned preference model          } formats are in
      .aiimg/embeddings/<draft-id>.npy   CLIP embeddings for that model        } gallery/, ranking/

A draft id (``20261125-153012-7f3a9``) sorts by time and is unique without coordination; ids
are validated before they become paths. Every write is atomic: a temp file ``.<name>.<pid>-<token>.tmp``
in the same folder, fsync, ``os.replace``. A temp file whose process is gone is debris from a
kill and is removed by :meth:`Content.clean_temp`.

A *round* is one set of variations asked for by one version of a marker. A marker version is
its ``signature`` (mtime + sha256 of its bytes): editing seed.txt after a round is done makes
a new signature, hence a new round with new numbers. ``work.json`` records each round's
signature, how many variations it asked for and which files it made; it is rewritten after
every variation, so a killed round resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from pipeline.errors import AiimgError, MarkerError

DRAFT_ID = re.compile(r"^(\d{8})-(\d{6})-([0-9a-f]{4,16})$")
MARKER_NAMES = ("seed.txt", "seed.txt.txt")
DRAFT_KEYS = ("id", "prompt", "width", "height", "seed")
ERROR_NAME = "seed.error.txt"
MARKER_KEYS = {
    "count": (int, "how many variations (1..100)"),
    "strength": (float, "img2img denoising strength, 0.01..1"),
    "steps": (int, "denoising steps"),
    "guidance_scale": (float, "CFG scale"),
    "prompt": (str, "prompt for the variations instead of the draft's"),
    "negative_prompt": (str, "negative prompt instead of the draft's"),
    "by": (str, "who marked it: \"auto\" when aiimg's auto-seeding did"),
}


# -- atomic writes ---------------------------------------------------------------------------

_TOKEN = secrets.token_hex(4)   # this process's temp files, even if a dead one had our pid


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` so that ``path`` is either absent, the old bytes or all the new bytes."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{_TOKEN}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise AiimgError(f"{path}: cannot write ({_why(exc)}); nothing was changed") from exc
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True) + "\n")


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _why(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "disk full: free some space"
    return exc.strerror or str(exc)


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
    now = now or dt.datetime.now(dt.timezone.utc)
    fraction = now.microsecond * 4096 // 1_000_000
    return f"{now:%Y%m%d-%H%M%S}-{fraction:03x}{secrets.token_hex(1)}"


def check_id(draft_id: str) -> str:
    if not isinstance(draft_id, str) or not DRAFT_ID.match(draft_id):
        raise AiimgError(f"{draft_id!r} is not a draft id (like 20261125-153012-7f3a)")
    return draft_id


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


# -- markers ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Marker:
    path: Path            # the seed.txt (whatever its case)
    folder: Path          # the folder it was dropped in
    mtime_ns: int
    signature: str        # "<mtime_ns>-<sha256[:16]>": one version of the marker
    data: bytes | None = None   # the bytes the signature was made of (None: unreadable)

    @property
    def draft_id(self) -> str | None:
        return self.folder.name if DRAFT_ID.match(self.folder.name) else None


def find_marker(folder: Path) -> Path | None:
    """seed.txt in any case, or Windows' seed.txt.txt; the first by name when several."""
    try:
        names = sorted(e.name for e in os.scandir(folder) if e.is_file())
    except OSError:
        return None
    for name in names:
        if name.lower() in MARKER_NAMES:
            return Path(folder) / name
    return None


def read_marker(path: Path) -> Marker | None:
    """The marker's current version (one open: its bytes and mtime agree), or None if gone."""
    try:
        with open(path, "rb") as fh:
            mtime = os.fstat(fh.fileno()).st_mtime_ns
            data = fh.read()
    except FileNotFoundError:
        return None
    except OSError:   # there but unreadable: a marker all the same, whose parse says why
        try:
            mtime = os.stat(path).st_mtime_ns
        except OSError:
            return None
        return Marker(Path(path), Path(path).parent, mtime, f"{mtime}-unreadable", None)
    digest = hashlib.sha256(data).hexdigest()[:16]
    return Marker(Path(path), Path(path).parent, mtime, f"{mtime}-{digest}", data)


def parse_marker(path: Path, data: bytes | None = None) -> dict:
    """The overrides in a seed.txt (empty file: none). MarkerError says what is wrong.

    ``data``: the bytes a Marker was read with, so that a round's overrides and its signature
    come from the same version of the file even when the creator saves it twice quickly."""
    try:
        text = (Path(path).read_bytes() if data is None else data).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise MarkerError(f"{path}: not UTF-8 text; save it as UTF-8 (or empty it)") from None
    except OSError as exc:
        raise MarkerError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MarkerError(f"{path}: not valid TOML ({exc}); write lines like: count = 5") from None
    for key, value in data.items():
        _check_marker_value(path, key, value)
    return data


def _check_marker_value(path: Path, key: str, value) -> None:
    if key not in MARKER_KEYS:
        raise MarkerError(f"{path}: unknown key {key!r}; known keys: {', '.join(MARKER_KEYS)}")
    kind, doc = MARKER_KEYS[key]
    ok = isinstance(value, kind) or (kind is float and isinstance(value, int))
    if isinstance(value, bool) or not ok:
        raise MarkerError(f"{path}: {key} = {value!r} should be a {kind.__name__} ({doc})")
    limits = {"count": (1, 100), "strength": (0.01, 1.0), "steps": (1, 1000), "guidance_scale": (0.0, 100.0)}
    if key in limits and not limits[key][0] <= value <= limits[key][1]:
        raise MarkerError(f"{path}: {key} = {value!r} is out of range ({doc})")


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


@dataclass
class Seed:
    """A marker that asks for work: a new round, or the rest of an unfinished one."""
    marker: Marker
    draft: Draft
    round: dict = field(default_factory=dict)   # the unfinished round in work.json, if any


class Content:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.prompts_dir = self.root / "prompts"
        self.drafts_dir = self.root / "drafts"
        self.works_dir = self.root / "works"
        self.state_dir = self.root / ".aiimg"

    def ensure(self) -> "Content":
        for d in (self.prompts_dir, self.drafts_dir, self.works_dir, self.state_dir):
            d.mkdir(parents=True, exist_ok=True)
        return self

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
        for day in _subdirs(self.drafts_dir):
            for folder in _subdirs(day):
                if DRAFT_ID.match(folder.name) and (folder / "draft.json").is_file():
                    out.append(Draft(folder.name, folder))
        return sorted(out, key=lambda d: d.id)

    def read_draft(self, draft_id: str) -> dict:
        path = self.draft(draft_id).recipe_path
        recipe = read_json(path)
        missing = [k for k in DRAFT_KEYS if not isinstance(recipe, dict) or k not in recipe]
        if missing:
            raise AiimgError(f"{path}: not a draft recipe (missing {', '.join(missing)}); restore it "
                             f"or delete the draft folder")
        return recipe

    # works
    def work_folder(self, draft_id: str) -> Path:
        return self.works_dir / check_id(draft_id)

    def read_work(self, draft_id: str) -> dict:
        path = self.work_folder(draft_id) / "work.json"
        if not path.exists():
            return {"draft": draft_id, "rounds": [], "variations": []}
        work = read_json(path)
        if not (isinstance(work, dict) and isinstance(work.get("rounds"), list)
                and isinstance(work.get("variations"), list)):
            raise AiimgError(f"{path}: not a work record (needs \"rounds\" and \"variations\" lists); "
                             f"restore it, or move it away to start this work afresh")
        return work

    def write_work(self, draft_id: str, work: dict) -> None:
        folder = self.work_folder(draft_id)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(folder / "work.json", work)

    def works(self) -> list[str]:
        """Ids of works with at least one variation, oldest first."""
        return sorted(d.name for d in _subdirs(self.works_dir)
                      if DRAFT_ID.match(d.name) and (d / "work.json").is_file())

    # markers
    def markers(self) -> list[Marker]:
        """Every marker under drafts/ (also in folders that are not drafts), oldest first."""
        found = []
        for folder in _walk(self.drafts_dir, depth=3):
            path = find_marker(folder)
            marker = path and read_marker(path)
            if marker:
                found.append(marker)
        return sorted(found, key=lambda m: (m.mtime_ns, str(m.path)))

    def seeds(self) -> tuple[list[Seed], list[Marker]]:
        """(seeds that wait, oldest marker first; markers in error that wait for an edit)."""
        waiting, errored = [], []
        for marker in self.markers():
            if self._errored(marker):
                errored.append(marker)
                continue
            seed = self.seed_for(marker)
            if seed:
                waiting.append(seed)
        return waiting, errored

    def seed_for(self, marker: Marker) -> Seed | None:
        """What this marker version asks for now, or None when its round is done."""
        draft = Draft(marker.draft_id, marker.folder) if marker.draft_id else Draft("", marker.folder)
        if draft.id and Path(marker.folder) != self.draft_folder(draft.id):
            draft = Draft("", marker.folder)   # a copy of a draft folder elsewhere: never served
        if not draft.id or not draft.recipe_path.is_file():
            return Seed(marker, draft)   # not a draft: the loop reports it beside the marker
        try:
            work = self.read_work(draft.id)
        except AiimgError:
            return Seed(marker, draft)   # unreadable work.json: the loop reports it
        rounds = work.get("rounds", [])
        last = rounds[-1] if rounds else None
        if last and last.get("marker") == marker.signature:
            return None if _round_done(last) else Seed(marker, draft, last)
        if last and not _round_done(last) and last.get("files"):
            return Seed(marker, draft, last)   # finish what was started, whatever the marker says now
        return Seed(marker, draft)

    def _errored(self, marker: Marker) -> bool:
        """An error file answers this very version of the marker (its last line names it)."""
        try:
            text = (marker.folder / ERROR_NAME).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False
        return text.rstrip().endswith(f"marker: {marker.signature}")

    def write_error(self, marker: Marker, message: str) -> None:
        """seed.error.txt beside the marker; editing the marker (a new signature) retries it.

        The signature is recorded in the file rather than compared by mtime, which coarse
        file systems (FAT, network drives) round to seconds."""
        text = (f"aiimg could not make variations from {marker.path.name}:\n\n{message}\n\n"
                f"Edit or re-save {marker.path.name} to try again; delete it to give up.\n\n"
                f"marker: {marker.signature}\n")
        atomic_write_bytes(marker.folder / ERROR_NAME, text.encode("utf-8", errors="replace"))

    def clear_error(self, folder: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            (folder / ERROR_NAME).unlink()

    def unseeded_count(self) -> int:
        return sum(1 for d in self.drafts() if not find_marker(d.folder) and not self.work_folder(d.id).exists())

    def write_marker(self, draft_id: str, text: str = "") -> Path:
        """Mark a draft as a seed, as a file manager would (review page, auto-seeding)."""
        path = self.draft_folder(draft_id) / "seed.txt"
        atomic_write_text(path, text)
        return path

    # housekeeping
    def clean_temp(self) -> int:
        """Remove temp files left by killed processes; returns how many."""
        removed = 0
        for folder in _walk(self.root, depth=4):
            for entry in _files(folder):
                m = re.match(r"^\..+\.(\d+)-([0-9a-f]+)\.tmp$", entry.name)
                if m and _debris(int(m.group(1)), m.group(2)):
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
                        removed += 1
        return removed

    def free_gb(self) -> float:
        return shutil.disk_usage(self.root).free / 1e9

    @contextlib.contextmanager
    def lock(self, what: str) -> Iterator[None]:
        """Exclusive right to generate into this content folder; a second process is refused."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fh = open(self.state_dir / "lock", "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise AiimgError(f"{self.root}: busy: {holder} is generating here; "
                             f"stop it first (two processes would do the same work twice)") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} (`aiimg {what}`)")
        fh.flush()
        try:
            yield
        finally:
            fh.close()

    def write_status(self, status: dict) -> None:
        atomic_write_json(self.state_dir / "status.json", {"pid": os.getpid(), "updated": utc_now(), **status})

    def read_status(self) -> dict | None:
        path = self.state_dir / "status.json"
        try:
            status = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return status if _alive(int(status.get("pid", 0))) else None

    # read-only helpers for the gallery
    def work_meta_path(self, draft_id: str) -> Path:
        """The creator's optional ``works/<id>/work.toml`` (title, tags, description)."""
        return self.work_folder(draft_id) / "work.toml"

    def variation_path(self, draft_id: str, file_name: str) -> Path:
        """A variation named in work.json; the name must be ``<n>.png`` (never a path)."""
        if not isinstance(file_name, str) or not re.fullmatch(r"[1-9]\d{0,5}\.png", file_name):
            raise AiimgError(f"{self.work_folder(draft_id) / 'work.json'}: bad variation file name "
                             f"{file_name!r}; expected like 1.png")
        return self.work_folder(draft_id) / file_name

    def gallery_cache_path(self) -> Path:
        """The gallery build's cache of source hashes (by size, mtime, inode); safe to delete."""
        return self.state_dir / "gallery-hashes.json"

    def gallery_stamp_path(self) -> Path:
        """The gallery build's stamp of what the last build read (lets a no-op build stop)."""
        return self.state_dir / "gallery-stamp.json"


def _debris(pid: int, token: str) -> bool:
    return not _alive(pid) or (pid == os.getpid() and token != _TOKEN)


def _round_done(rnd: dict) -> bool:
    return len(rnd.get("files", [])) >= rnd.get("count", 0) or rnd.get("cancelled", False)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _subdirs(folder: Path) -> list[Path]:
    try:
        return sorted(Path(e.path) for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
    except OSError:
        return []


def _files(folder: Path) -> list[os.DirEntry]:
    try:
        return [e for e in os.scandir(folder) if e.is_file()]
    except OSError:
        return []


def _walk(folder: Path, depth: int) -> Iterator[Path]:
    yield Path(folder)
    if depth > 0:
        for sub in _subdirs(folder):
            yield from _walk(sub, depth - 1)
