"""The preference model: "would the creator seed this draft?", learned from their own marks.

Labels: a draft the creator seeded (seed.txt not written by auto-seeding, or variations made)
is 1; a draft the creator has *seen* and not seeded is 0 (steering.py: shown on the review page,
or older than a seed of its day's folder); drafts not seen yet say nothing and are left out, and
so are auto-seeded ones. (Version 1 took every unmarked draft older than a day as a 0: a draft
nobody looked at is no judgement, and it taught the model that unseen drafts are bad ones.)
Features: the default scorer's sub-scores (``FEATURES``) and, when recorded, the aesthetic score;
when every labelled draft has a CLIP embedding (a local CLIP is configured), one more feature:
the embedding's projection on the direction from the negatives' mean embedding to the seeds'
(``prototype``), learned on the training marks only. One direction, not 768 weights: a few dozen
seeds cannot fit 768 weights. The model is an L2-regularised, class-balanced logistic regression
fitted by Newton's method on standardised features.

It is stored as plain JSON (no pickle) in ``content/.aiimg/preference.json``::

    {"version": 1, "trained": "2026-11-25T05:30:00Z", "features": ["sharpness", ...],
     "mean": [...], "std": [...], "weights": [...], "bias": -1.2,
     "prototype": [768 floats] | null,           # features then end with "clip_prototype"
     "seeds": 24, "unmarked": 180, "evaluation": {...} | null}   # unmarked: the negatives

As a scorer (name ``preference``) its raw score is the log-odds of a seed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from pipeline import steering
from pipeline.content import Content, utc_now
from pipeline.errors import AiimgError
from pipeline.files import atomic_write_json
from pipeline.ranking import store
from pipeline.ranking.scorers import Item, Result

VERSION = 1
FEATURES = [
    "sharpness",
    "noise",
    "clipped_high",
    "clipped_low",
    "oversaturated",
    "contrast",
    "area",
    "frame_cut",
    "placement",
    "subject_size",
    "technical",
    "composition",
]
L2 = 1.0  # ridge penalty on standardised weights: few seeds must not overfit
CLIP = "clip_prototype"


# -- features and labels -----------------------------------------------------------------------


def feature_names(entries: list) -> list[str]:
    """FEATURES, plus ``aesthetic`` when every labelled draft has that score."""
    has_aesthetic = entries and all("aesthetic" in e.results for e in entries)
    return FEATURES + (["aesthetic"] if has_aesthetic else [])


def features(results: dict, names: list[str]) -> list[float] | None:
    """The feature vector from scorer results ({name: {"score", "sub"}}); None if incomplete."""
    sub = (results.get("default") or {}).get("sub", {})
    out = []
    for name in names:
        value = (results.get("aesthetic") or {}).get("score") if name == "aesthetic" else sub.get(name)
        if value is None or not math.isfinite(value):
            return None
        out.append(float(value))
    return out


def label(entry, seen) -> int | None:
    """1 seeded by the creator, 0 seen and not seeded, None no judgement (``seen``: ids)."""
    if entry.seeded:
        return None if entry.auto else 1
    return 0 if entry.draft.id in seen else None


def seen_of(entries: list, content: Content | None) -> dict:
    """The drafts the creator has seen (steering.seen_ids), with the review page's impressions."""
    return steering.seen_ids(entries, steering.read_impressions(content) if content is not None else None)


def dataset(entries: list, content: Content | None = None, seen=None):
    """(X, y, names, ids) of the labelled, scored drafts; X ends with the CLIP embedding columns
    (beyond ``len(names)``) when ``content`` holds one for every labelled draft. ``seen``: the
    ids seen (default: :func:`seen_of`)."""
    import numpy as np

    seen = seen_of(entries, content) if seen is None else seen
    labelled = [(e, label(e, seen)) for e in entries if e.scores]
    labelled = [(e, y) for e, y in labelled if y is not None]
    names = feature_names([e for e, _ in labelled])
    rows = [(features(e.results, names), y, e.draft.id) for e, y in labelled]
    rows = [r for r in rows if r[0] is not None]
    X = np.array([r[0] for r in rows], dtype=float).reshape(len(rows), len(names))
    ids = [r[2] for r in rows]
    embeddings = [store.load_embedding(content, i) for i in ids] if content is not None and ids else [None]
    if all(e is not None for e in embeddings) and len({e.shape for e in embeddings}) == 1:
        X = np.hstack([X, np.array(embeddings, dtype=float)])
    return X, np.array([r[1] for r in rows], dtype=float), names, ids


# -- the model ---------------------------------------------------------------------------------


@dataclass
class Model:
    names: list
    mean: list
    std: list
    weights: list
    bias: float
    prototype: list | None = None

    def logit(self, X):
        import numpy as np

        X = project(np.asarray(X, dtype=float), self.prototype)
        Z = (X - np.array(self.mean)) / np.array(self.std)
        return Z @ np.array(self.weights) + self.bias

    def to_json(self) -> dict:
        return {
            "features": self.names,
            "mean": self.mean,
            "std": self.std,
            "weights": self.weights,
            "bias": self.bias,
            "prototype": self.prototype,
        }


def project(X, prototype):
    """Scalar features + embedding columns -> scalar features + the embedding on the prototype."""
    import numpy as np

    if prototype is None:
        return X
    n = X.shape[1] - len(prototype)
    return np.hstack([X[:, :n], X[:, n:] @ np.array(prototype)[:, None]])


def prototype_of(X, y, n: int) -> list | None:
    """Unit direction from the mean embedding of the seen-not-seeded drafts to the seeds' (columns n:)."""
    import numpy as np

    if X.shape[1] <= n:
        return None
    E = X[:, n:]
    direction = E[y > 0].mean(axis=0) - E[y <= 0].mean(axis=0)
    norm = float(np.linalg.norm(direction))
    return (direction / norm if norm > 1e-12 else direction).tolist()


def fit(X, y, names: list[str], l2: float = L2, iterations: int = 50) -> Model:
    """Class-balanced ridge logistic regression by Newton's method (exact, tiny dimensions)."""
    import numpy as np

    proto = prototype_of(X, y, len(names))
    X, names = project(X, proto), list(names) + ([CLIP] if proto is not None else [])
    mean, std = X.mean(axis=0), X.std(axis=0)
    std = np.where(std > 1e-9, std, 1.0)
    Z = np.hstack([(X - mean) / std, np.ones((len(X), 1))])
    pos = max(y.sum(), 1.0)
    sample_w = np.where(y > 0, len(y) / (2 * pos), len(y) / (2 * max(len(y) - pos, 1.0)))
    w = np.zeros(Z.shape[1])
    ridge = np.full(Z.shape[1], l2)
    ridge[-1] = 0.0  # the bias is not shrunk
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-np.clip(Z @ w, -30, 30)))
        grad = Z.T @ (sample_w * (p - y)) + ridge * w
        hess = (Z * (sample_w * p * (1 - p))[:, None]).T @ Z + np.diag(ridge + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return Model(names, mean.tolist(), std.tolist(), w[:-1].tolist(), float(w[-1]), proto)


def save(content: Content, model: Model, seeds: int, unmarked: int, evaluation: dict | None) -> Path:
    data = {
        "version": VERSION,
        "trained": utc_now(),
        **model.to_json(),
        "seeds": seeds,
        "unmarked": unmarked,
        "evaluation": evaluation,
    }
    atomic_write_json(content.preference_path(), data)
    return content.preference_path()


def load(path: Path) -> Model:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        model = Model(
            data["features"], data["mean"], data["std"], data["weights"], float(data["bias"]), data.get("prototype")
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AiimgError(f"{path}: unreadable preference model ({exc}); run `aiimg rank --learn` again") from None
    if not (len(model.names) == len(model.mean) == len(model.std) == len(model.weights)):
        raise AiimgError(f"{path}: inconsistent preference model; run `aiimg rank --learn` again")
    return model


class PreferenceScorer:
    """The learned model as one more scorer; needs the default scorer's sub-scores first."""

    name = "preference"

    def __init__(self, model: Model, content: Content | None = None):
        self.model, self.content = model, content
        self.scalars = [n for n in model.names if n != CLIP]

    @classmethod
    def from_content(cls, content: Content) -> PreferenceScorer | None:
        path = content.preference_path()
        return cls(load(path), content) if path.exists() else None

    def score(self, items: list[Item]) -> list[Result]:
        return [self._one(it) for it in items]

    def _one(self, it: Item) -> Result:
        results = {n: {"score": r.score, "sub": r.sub} for n, r in it.results.items()}
        x = features(results, self.scalars)
        if x is not None and self.model.prototype is not None:
            x = self._with_embedding(x, it)
        if x is None:
            # a feature is missing (e.g. no aesthetic score for this draft): no opinion, the
            # average draft's log-odds, so it neither rejects nor lifts the draft
            return Result(self.model.bias, {"incomplete": 1.0}, [])
        return Result(float(self.model.logit([x])[0]), {}, [])

    def _with_embedding(self, x: list, it: Item) -> list | None:
        aesthetic = it.results.get("aesthetic")
        emb = aesthetic.extra.get("embedding") if aesthetic is not None else None
        if emb is None and self.content is not None:
            emb = store.load_embedding(self.content, it.id)
        if emb is None or len(emb) != len(self.model.prototype):
            return None
        return x + [float(v) for v in emb]
