"""The ``scores`` object this package adds to each draft.json (every other key is kept)::

    "scores": {
      "version": 1,
      "scored": "2026-11-25T05:12:00Z",       # when the scorers last ran on this draft
      "score": 0.83,                           # combined (see scorers.combine), null = rejected
      "flags": ["blurry", "duplicate"],        # union of the scorers' flags (+ duplicate)
      "phash": "dbe01a1d0c26ad3b",             # perceptual hash (duplicates.py)
      "duplicate_of": "20261125-151200-ab12",  # only when flagged duplicate
      "scorers": {                             # raw result of each scorer that ran
        "default": {"score": 0.91, "sub": {"sharpness": 0.52, ...}, "flags": []},
        "aesthetic": {"score": 5.7, "sub": {}, "flags": []},
        "preference": {"score": 0.12, "sub": {}, "flags": []}
      }
    }

The CLIP image embedding of each draft (when the aesthetic scorer runs) is kept for the
preference model in ``content/.aiimg/embeddings/<draft-id>.npy``: a float32 vector, L2-normalised,
plain .npy (loaded with ``allow_pickle=False``).

``score`` is normalised against the drafts of the folder scored so far when it was written, so
it drifts a little as the folder grows; ``aiimg rank`` refreshes it. The review page and
auto-seeding recombine the raw scores over the batch they compare.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from pipeline.content import (
    Content,
    Draft,
    atomic_write_bytes,
    atomic_write_json,
    check_id,
    find_marker,
    parse_marker,
    read_json,
)
from pipeline.errors import AiimgError
from pipeline.ranking.scorers import raw_score

VERSION = 1
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

    def raw(self) -> dict:
        """{scorer name: raw score} as floats (NaN = rejected)."""
        return {n: raw_score(r.get("score")) for n, r in self.scores.get("scorers", {}).items()}

    @property
    def combined(self) -> float:
        return raw_score(self.scores.get("score"))


def seed_state(content: Content, draft: Draft) -> tuple[bool, bool]:
    """(seeded, by auto-seeding): a marker beside it, or variations already made from it."""
    marker = find_marker(draft.folder)
    if marker is None:
        return content.work_folder(draft.id).exists(), False
    try:
        return True, parse_marker(marker).get("by") == "auto"
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


def embedding_path(content: Content, draft_id: str):
    return content.state_dir / "embeddings" / f"{check_id(draft_id)}.npy"


def save_embedding(content: Content, draft_id: str, vector) -> None:
    import io

    import numpy as np

    path = embedding_path(content, draft_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.save(buf, np.asarray(vector, dtype=np.float32), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def load_embedding(content: Content, draft_id: str):
    """The stored embedding, or None (never scored by the aesthetic scorer, or unreadable)."""
    import numpy as np

    try:
        return np.load(embedding_path(content, draft_id), allow_pickle=False)
    except (OSError, ValueError):
        return None


def json_number(value: float) -> float | None:
    return None if value is None or math.isnan(value) else round(value, 5)
