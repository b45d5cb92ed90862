"""Draft evaluation: scorers, near-duplicates, the preference model, `aiimg rank/review/stats`.

Importing this package is cheap: numpy and OpenCV load when a draft is first scored, torch only
inside the aesthetic scorer when ``[score] clip_model`` is configured. See docs/ranking.md.
Modules: scorers (protocol, combine), technical (default scorer), aesthetic (LAION),
duplicates, store (the ``scores`` object in draft.json), ranker (the loop's hook),
preference + evaluation (learn/evaluate), commands (`aiimg rank`), review, stats.
"""

from __future__ import annotations

import importlib

# lazy: `aiimg --help` and the gallery must not pay for numpy/cv2 through this package
_EXPORTS = {"Ranker": "ranker", "rank_command": "commands", "review_command": "review", "stats_report": "stats"}


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(name)
    return getattr(importlib.import_module(f"pipeline.ranking.{_EXPORTS[name]}"), name)


__all__ = list(_EXPORTS)
