"""`aiimg rank`: (re)score drafts incrementally, learn the creator's preference, evaluate it."""

from __future__ import annotations

import math
import time
from collections import Counter

from pipeline.content import Content
from pipeline.errors import AiimgError
from pipeline.ranking import evaluation, preference, store
from pipeline.ranking.ranker import Ranker, first_failure
from pipeline.ranking.scorers import sort_key


def rank_command(cfg, learn: bool = False, evaluate: bool = False, rescore: bool = False) -> str:
    content = Content(cfg.content_dir)
    if not content.drafts_dir.is_dir():
        raise AiimgError(f"{content.drafts_dir}: no drafts folder; make drafts first (aiimg run / aiimg draft)")
    ranker = Ranker(cfg, content)
    lines = [f"warning: {p}; ranking goes on with the other scorers" for p in ranker.problems]
    entries = store.entries(content)
    started = time.perf_counter()
    done = ranker.score_entries(entries, frozenset(ranker.names) if rescore else frozenset())
    lines.append(
        f"scored {done} draft(s) in {time.perf_counter() - started:.1f} s, skipped "
        f"{len(entries) - done} already scored (scorers: {', '.join(ranker.names)}; --all rescores)"
    )
    lines += failure_lines(ranker)
    if learn:
        lines.append(learn_preference(cfg, content, ranker, entries))
    if evaluate:
        lines.append(evaluate_preference(entries, content))
    ranker.refresh_combined(entries)
    lines.append(summary(entries))
    return "\n".join(lines)


def failure_lines(ranker: Ranker) -> list[str]:
    return [
        f"warning: scorer {name} failed on {count} draft(s) ({first_failure(name)}); they are ranked by the "
        f"other scorers, and the next `aiimg rank` tries {name} again"
        for name, count in sorted(ranker.failed.items())
    ]


def learn_preference(cfg, content: Content, ranker: Ranker, entries: list) -> str:
    """Fit on every labelled draft, store the model, rescore the folder with it."""
    X, y, names, ids = preference.dataset(entries, content)
    seeds, unmarked = int((y > 0).sum()), int((y <= 0).sum())
    if seeds < cfg.score.learn_min_seeds or unmarked < cfg.score.learn_min_unmarked:
        raise AiimgError(
            f"{content.drafts_dir}: {seeds} seeds and {unmarked} drafts seen and not seeded; --learn needs "
            f"{cfg.score.learn_min_seeds} and {cfg.score.learn_min_unmarked} ([score] learn_min_seeds, "
            f"learn_min_unmarked): browse and mark more drafts (`aiimg review`), or lower those keys"
        )
    ev = evaluation.evaluate(X, y, names, default_scores(entries, ids))
    path = preference.save(content, preference.fit(X, y, names), seeds, unmarked, ev)
    ranker.scorers = [s for s in ranker.scorers if s.name != "preference"]
    ranker.scorers.append(preference.PreferenceScorer.from_content(content))
    ranker.score_entries(entries, frozenset({"preference"}))
    learned = f"learned from {seeds} seeds and {unmarked} drafts seen and not seeded -> {path}"
    return f"{learned}\n{evaluation.format_report(ev)}"


def evaluate_preference(entries: list, content: Content) -> str:
    X, y, names, ids = preference.dataset(entries, content)
    seeds, unmarked = int((y > 0).sum()), int((y <= 0).sum())
    if seeds < 2 or unmarked < 2:
        return (
            f"evaluation: {seeds} seeds and {unmarked} drafts seen and not seeded are too few "
            f"to measure anything; browse and mark more drafts"
        )
    return evaluation.format_report(evaluation.evaluate(X, y, names, default_scores(entries, ids)))


def default_scores(entries: list, ids: list[str]) -> list[float]:
    """The default scorer's raw score for the drafts ``ids`` (dataset order)."""
    by_id = {e.draft.id: e.raw().get("default", math.nan) for e in entries}
    return [by_id[i] for i in ids]


def summary(entries: list, top: int = 5) -> str:
    scored = [e for e in entries if e.scores]
    flags = Counter(f for e in scored for f in e.scores.get("flags", []))
    best = sorted(scored, key=lambda e: sort_key(e.combined))[:top]
    lines = [
        f"{len(scored)} scored drafts; flags: " + (", ".join(f"{f} {n}" for f, n in flags.most_common()) or "none")
    ]
    lines += [
        f"  {_fmt(e.combined)}  {e.draft.id}  {'seeded ' if e.seeded else ''}{' '.join(e.scores.get('flags', []))}"
        for e in best
    ]
    return "\n".join(lines)


def _fmt(score: float) -> str:
    return "reject" if math.isnan(score) else f"{score:+.2f}"
