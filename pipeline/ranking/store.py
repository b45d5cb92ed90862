"""The ``scores`` object this package adds to each draft.json (every other key is kept)::

    "scores": {
      "version": 1,
      "scored": "2026-11-25T05:12:00Z",       # when the scorers last ran on this draft
      "score": 0.83,                           # combined (see scorers.combine), null = rejected
      "flags": ["blurry", "duplicate"],        # union of the scorers' flags (+ duplicate)
      "phash": "dbe01a1d0c26ad3b",             # perceptual hash (duplicates.py)
      "image": {"size": 812345, "mtime_ns": ..., "ctime_ns": ..., "ino": ..., "sha256": "..."},
      "duplicate_of": "20261125-151200-ab12",  # only when flagged duplicate
      "scorers": {                             # raw result of each scorer that ran
        "default": {"score": 0.91, "sub": {"sharpness": 0.52, ...}, "flags": []},
        "aesthetic": {"score": 5.7, "sub": {}, "flags": []},
        "preference": {"score": 0.12, "sub": {}, "flags": []}
      }
    }

``image`` is the draft.png these scores belong to. `aiimg rank` skips a draft only while its
image is unchanged: the file is stat'ed first and hashed only when size, mtime, ctime or inode
differ (ctime and inode cannot be set back, so bytes rewritten with the old mtime restored are
still hashed); an image whose sha256 differs is rescored by every scorer from scratch, one
whose bytes are the same only has its stat numbers brought up to date. Scores written before
this key existed: the image counts as changed when its mtime is later than ``scored`` (plus
``MTIME_SLACK_NS`` for coarse file-system clocks), since then it was written after scoring;
otherwise nothing tells, so the scores are trusted and the current image's fingerprint is
recorded beside them (once), which makes every later change detectable.

A scorer that *failed* on a draft (raised) is not recorded, so the next `aiimg rank` runs it
again. Older versions recorded such a failure as a null score flagged ``unscorable``; those
records are read as "not scored" (left out of the combined score and retried).

The CLIP image embedding of each draft (when the aesthetic scorer runs) is kept for the
preference model in ``content/.aiimg/embeddings/<draft-id>.npy``: a float32 vector, L2-normalised,
plain .npy (loaded with ``allow_pickle=False``).

``score`` is normalised against the drafts of the folder scored so far when it was written, so
it drifts a little as the folder grows; ``aiimg rank`` refreshes it. The review page and
auto-seeding recombine the raw scores over the batch they compare.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

from pipeline import markers
from pipeline.content import Content, Draft, read_json
from pipeline.errors import AiimgError
from pipeline.files import atomic_write_bytes, atomic_write_json
from pipeline.ranking.scorers import raw_score

VERSION = 1
LEGACY_FAILURE = "unscorable"  # the flag older versions recorded for a scorer that raised
MTIME_SLACK_NS = 2_000_000_000  # `scored` is cut to the second; FAT keeps mtimes to 2 s
log = logging.getLogger("aiimg.ranking")


@dataclass
class Entry:
    """One draft with its recipe and whether the creator (or aiimg) marked it."""

    draft: Draft
    recipe: dict
    seeded: bool = False
    auto: bool = False  # seeded by auto-seeding: not the creator's choice

    @property
    def scores(self) -> dict:
        return self.recipe.get("scores") or {}

    @property
    def results(self) -> dict:
        """{scorer name: recorded result} of the scorers that judged this draft (not failures)."""
        recorded = self.scores.get("scorers", {})
        return {n: r for n, r in recorded.items() if LEGACY_FAILURE not in r.get("flags", [])}

    def raw(self) -> dict:
        """{scorer name: raw score} as floats (NaN = rejected)."""
        return {n: raw_score(r.get("score")) for n, r in self.results.items()}

    @property
    def combined(self) -> float:
        return raw_score(self.scores.get("score"))


def seed_state(content: Content, draft: Draft) -> tuple[bool, bool]:
    """(seeded, by auto-seeding): a marker beside it, or variations already made from it."""
    marker = markers.find(draft.folder)
    if marker is None:
        return content.work_folder(draft.id).exists(), False
    try:
        return True, markers.parse(marker).get("by") == "auto"
    except AiimgError:
        return True, False


def entry(content: Content, draft: Draft) -> Entry | None:
    try:
        recipe = read_json(draft.recipe_path)
    except AiimgError as exc:
        log.warning("%s", exc)
        return None
    seeded, auto = seed_state(content, draft)
    return Entry(draft, recipe, seeded, auto)


def entries(content: Content) -> list[Entry]:
    """Every readable draft, oldest first."""
    return [e for e in (entry(content, d) for d in content.drafts()) if e is not None]


def record(draft: Draft, scores: dict) -> None:
    """Rewrite draft.json with ``scores`` (re-read first: keep every key written meanwhile)."""
    recipe = read_json(draft.recipe_path)
    recipe["scores"] = scores
    atomic_write_json(draft.recipe_path, recipe)


# -- the image the scores belong to ------------------------------------------------------------


def fingerprint(path: Path, known: dict | None = None) -> dict | None:
    """Size, mtime, ctime, inode and sha256 of ``path``; ``known`` (an earlier fingerprint) is
    returned as it is when the stat numbers all match, sparing the hash. None: missing/unreadable."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if known and known.get("sha256") and known == {**_stat_numbers(st), "sha256": known["sha256"]}:
        return known
    try:
        with open(path, "rb") as fh:
            numbers = _stat_numbers(os.fstat(fh.fileno()))  # of the very file hashed
            return {**numbers, "sha256": hashlib.file_digest(fh, "sha256").hexdigest()}
    except OSError:
        return None


def _stat_numbers(st: os.stat_result) -> dict:
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "ino": st.st_ino}


def image_state(e: Entry) -> tuple[dict | None, bool]:
    """(the draft image's fingerprint now, whether it differs from the image its scores belong to)."""
    recorded = e.scores.get("image") if isinstance(e.scores.get("image"), dict) else None  # hand-edited: changed
    now = fingerprint(e.draft.image, recorded)
    if not e.scores:
        return now, False
    if "image" in e.scores:
        return now, (now or {}).get("sha256") != (recorded or {}).get("sha256")
    return now, now is None or _written_after(now, e.scores.get("scored"))


def _written_after(image: dict, scored) -> bool:
    """Scores from before fingerprints: the image was written after them, judging by the clocks."""
    try:
        when = dt.datetime.fromisoformat(str(scored).replace("Z", "+00:00"))
    except ValueError:
        return False
    if when.tzinfo is None:
        return False
    return image["mtime_ns"] > int(when.timestamp()) * 1_000_000_000 + MTIME_SLACK_NS


def note_image(e: Entry, image: dict | None) -> None:
    """Record the fingerprint of an image whose scores stay valid (same bytes, or legacy scores)."""
    if "image" in e.scores and e.scores["image"] == image:
        return
    scores = dict(e.scores, image=image)
    record(e.draft, scores)
    e.recipe["scores"] = scores


# -- embeddings --------------------------------------------------------------------------------


def save_embedding(content: Content, draft_id: str, vector) -> None:
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.asarray(vector, dtype=np.float32), allow_pickle=False)
    atomic_write_bytes(content.embedding_path(draft_id), buf.getvalue())


def load_embedding(content: Content, draft_id: str):
    """The stored embedding, or None (never scored by the aesthetic scorer, or unreadable)."""
    import numpy as np

    try:
        return np.load(content.embedding_path(draft_id), allow_pickle=False)
    except (OSError, ValueError):
        return None


def json_number(value: float) -> float | None:
    return None if value is None or math.isnan(value) else round(value, 5)
