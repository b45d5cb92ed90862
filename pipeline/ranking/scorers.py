"""The scorer protocol and how scores combine.

A scorer has a ``name`` and ``score(items) -> [Result]``: one :class:`Result` per draft, with a
raw score (higher is better; NaN = hard reject), named sub-scores and flags naming defects.
Raw scores of different scorers live on different scales, so :func:`combine` first normalises
each scorer over the batch being compared (median 0, robust spread 1, clipped to +-4) and then
takes the weighted mean with the weights of ``[score] weights``. A NaN from any weighted scorer
rejects the draft (combined NaN, sorted last): a scorer returns NaN only to judge a draft a hard
reject (blank, unreadable). A scorer that has no score for a draft is left out of that draft's
mean: it was added later, or it raised on that draft, which is not a judgement (the ranker
records nothing for it and retries it, see ranker.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass
class Result:
    score: float  # raw, higher is better; NaN = hard reject
    sub: dict = field(default_factory=dict)  # named sub-scores (floats)
    flags: list = field(default_factory=list)  # defect names: blurry, subject_cut, ...
    extra: dict = field(default_factory=dict)  # not recorded in draft.json (e.g. "embedding")

    def to_json(self) -> dict:
        return {
            "score": None if math.isnan(self.score) else round(self.score, 5),
            "sub": self.sub,
            "flags": list(self.flags),
        }


@dataclass
class Item:
    """One draft as scorers see it: its id, image path and prompt; pixels decoded once."""

    id: str
    image: Path
    prompt: str = ""
    results: dict = field(default_factory=dict)  # {scorer name: Result} known so far
    _rgb: object = None
    _read: bool = False

    def pixels(self):
        """RGB uint8 array, or None when the file is missing or not an image."""
        if not self._read:
            self._rgb, self._read = read_rgb(self.image), True
        return self._rgb


class Scorer(Protocol):
    name: str

    def score(self, items: list[Item]) -> list[Result]: ...


def read_rgb(path: Path):
    import cv2
    import numpy as np

    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError:
        return None
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def raw_score(value) -> float:
    """A recorded raw score (a number or null) as a float; null is NaN."""
    return math.nan if value is None else float(value)


def normalise(values: list[float]) -> list[float]:
    """Robust z-scores over the finite values; NaN stays NaN; a constant batch is all 0."""
    finite = sorted(v for v in values if not math.isnan(v))
    if not finite:
        return list(values)
    mid = _median(finite)
    spread = 1.4826 * _median(sorted(abs(v - mid) for v in finite))
    if spread < 1e-9:
        spread = _std(finite, mid)
    if spread < 1e-9:
        return [v if math.isnan(v) else 0.0 for v in values]
    return [v if math.isnan(v) else max(-4.0, min(4.0, (v - mid) / spread)) for v in values]


def combine(raw: list[dict], weights: dict) -> list[float]:
    """Combined score per draft from ``raw`` = [{scorer name: raw score}] (see module doc)."""
    names = [n for n, w in weights.items() if w > 0]
    z = {n: normalise([r.get(n, math.nan) if n in r else math.nan for r in raw]) for n in names}
    out = []
    for i, r in enumerate(raw):
        if any(n in r and math.isnan(r[n]) for n in names):
            out.append(math.nan)
            continue
        have = [n for n in names if n in r]
        total = sum(weights[n] for n in have)
        out.append(sum(weights[n] * z[n][i] for n in have) / total if total else math.nan)
    return out


def _median(sorted_values: list[float]) -> float:
    n = len(sorted_values)
    return (sorted_values[(n - 1) // 2] + sorted_values[n // 2]) / 2


def _std(values: list[float], mean: float) -> float:
    return math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def sort_key(score: float) -> float:
    """Best first, rejects (NaN) last: sort ascending on this."""
    return math.inf if score is None or math.isnan(score) else -score
