"""Scoring drafts and recording the scores: the loop's hook (:class:`Ranker`) and `aiimg rank`.

The loop builds one ``Ranker(cfg, content)`` and calls ``on_new_draft(id)`` from one background
worker thread after each draft is saved. A scorer that cannot start (a learned-scorer file
missing) is reported once, in ``ranker.problems`` and the log, and ranking goes on with the
others. A single bad image is recorded as rejected (flag ``unreadable``) and never raises.
"""

from __future__ import annotations

import logging
import math
import threading

from pipeline.content import Content
from pipeline.errors import AiimgError
from pipeline.ranking import store
from pipeline.ranking.duplicates import HashIndex, phash
from pipeline.ranking.scorers import Item, Result, combine

log = logging.getLogger("aiimg.ranking")
CHUNK = 16  # drafts decoded at once: bounds memory, lets learned scorers batch
AUTO_MARKER = 'by = "auto"\n'


SCORERS = ("default", "aesthetic", "preference")


def check_weights(weights: dict) -> None:
    for name, weight in weights.items():
        if name not in SCORERS:
            raise AiimgError(f"[score] weights: unknown scorer {name!r} (known: {', '.join(SCORERS)})")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
            raise AiimgError(f"[score] weights: {name} = {weight!r} should be a number >= 0")


def build_scorers(cfg, content: Content) -> tuple[list, list[str]]:
    """(scorers in the order they run, problems that switched a scorer off)."""
    from pipeline.ranking.technical import DefaultScorer

    check_weights(cfg.score.weights)
    scorers, problems = [DefaultScorer()], []
    if cfg.score.clip_model or cfg.score.aesthetic_head:
        try:
            from pipeline.ranking.aesthetic import AestheticScorer

            scorers.append(AestheticScorer(cfg.score.clip_model, cfg.score.aesthetic_head, cfg.root))
        except AiimgError as exc:
            problems.append(f"aesthetic scorer off: {exc}")
    try:
        from pipeline.ranking.preference import PreferenceScorer

        pref = PreferenceScorer.from_content(content)
        scorers += [pref] if pref else []
    except AiimgError as exc:
        problems.append(f"preference scorer off: {exc}")
    return scorers, problems


class Ranker:
    """Scores drafts and records them in draft.json; cheap to build (weights load on first use).

    Raises AiimgError only for a config error ([score] weights); a scorer whose files are
    missing is left out and named in ``problems``.
    """

    def __init__(self, cfg, content: Content | None = None):
        self.cfg = cfg
        self.content = content or Content(cfg.content_dir)
        self.scorers, self.problems = build_scorers(cfg, self.content)
        for problem in self.problems:
            log.error("%s; ranking goes on with the other scorers", problem)
        self._raw: dict[str, dict] | None = None  # the folder's recorded raw scores
        self._hashes = HashIndex(cfg.score.duplicate_distance)
        self._batch: list[str] = []
        self._lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.scorers]

    # -- the loop's hook ------------------------------------------------------------------------

    def on_new_draft(self, draft_id: str) -> None:
        """Score one new draft, record it, auto-seed when a batch is complete. Never raises."""
        try:
            with self._lock:
                self.score_entries([store.entry(self.content, self.content.draft(draft_id))])
                self._after_new(draft_id)
        except Exception:  # a ranking failure must never stop the loop that makes drafts
            log.exception("ranking draft %s failed; the draft is kept unscored", draft_id)

    def _after_new(self, draft_id: str) -> None:
        if not self.cfg.run.auto_seed:
            return
        self._batch.append(draft_id)
        if len(self._batch) >= self.cfg.run.auto_seed_batch:
            batch, self._batch = self._batch, []
            auto_seed(self.content, batch, self.cfg)

    # -- scoring --------------------------------------------------------------------------------

    def population(self) -> dict[str, dict]:
        """Raw scores of every scored draft (loaded once), the reference for normalising."""
        if self._raw is None:
            self._raw = {}
            for e in store.entries(self.content):
                self._remember(e.draft.id, e.raw(), e.scores.get("phash"))
        return self._raw

    def _remember(self, draft_id: str, raw: dict, hash_: str | None) -> None:
        if raw:
            self._raw[draft_id] = raw
        self._hashes.add(draft_id, hash_)

    def score_entries(self, entries: list, force: frozenset = frozenset()) -> int:
        """Run the scorers each entry lacks (and those in ``force``); record; how many changed."""
        self.population()
        todo = [(e, self._needed(e, force)) for e in entries if e is not None]
        todo = [(e, names) for e, names in todo if names]
        for start in range(0, len(todo), CHUNK):
            self._score_chunk(todo[start : start + CHUNK])
        return len(todo)

    def _needed(self, e: store.Entry, force: frozenset) -> list[str]:
        have = e.scores.get("scorers", {})
        return [n for n in self.names if n in force or n not in have]

    def _score_chunk(self, chunk: list) -> None:
        items = [self._item(e) for e, _ in chunk]
        for scorer in self.scorers:
            wanted = [it for it, (_, names) in zip(items, chunk) if scorer.name in names]
            for it, result in zip(wanted, run_scorer(scorer, wanted)):
                it.results[scorer.name] = result
        for it, (e, _) in zip(items, chunk):
            self._record(e, it)

    def _item(self, e: store.Entry) -> Item:
        recorded = {
            n: Result(store.raw_score(r.get("score")), r.get("sub", {}), r.get("flags", []))
            for n, r in e.scores.get("scorers", {}).items()
            if n in self.names
        }
        return Item(e.draft.id, e.draft.image, e.recipe.get("prompt", ""), results=recorded)

    def _record(self, e: store.Entry, it: Item) -> None:
        scores = dict(
            e.scores, version=store.VERSION, scored=_now(), scorers={n: r.to_json() for n, r in it.results.items()}
        )
        scores["phash"] = scores.get("phash") or _hash(it)
        self._mark_duplicate(e.draft.id, scores)
        scores["flags"] = flags_of(scores)
        for result in it.results.values():
            if "embedding" in result.extra:
                store.save_embedding(self.content, e.draft.id, result.extra["embedding"])
        self._remember(e.draft.id, {n: r.score for n, r in it.results.items()}, scores.get("phash"))
        scores["score"] = store.json_number(self.combined(e.draft.id))
        store.record(e.draft, scores)
        e.recipe["scores"] = scores

    def _mark_duplicate(self, draft_id: str, scores: dict) -> None:
        original = self._hashes.original_of(draft_id, scores["phash"]) if scores["phash"] else None
        scores.pop("duplicate_of", None)
        if original:
            scores["duplicate_of"] = original

    def combined(self, draft_id: str) -> float:
        """This draft's combined score against the folder's scored drafts."""
        ids = list(self._raw)
        scores = combine([self._raw[i] for i in ids], self.cfg.score.weights)
        return scores[ids.index(draft_id)] if draft_id in self._raw else math.nan

    def refresh_combined(self, entries: list, tolerance: float = 0.05) -> int:
        """Rewrite ``score`` where the folder's growth moved it by more than ``tolerance``."""
        ids = [e.draft.id for e in entries if e.draft.id in self._raw]
        fresh = dict(zip(ids, combine([self._raw[i] for i in ids], self.cfg.score.weights)))
        changed = 0
        for e in entries:
            new = fresh.get(e.draft.id, math.nan)
            if e.scores and _moved(e.combined, new, tolerance):
                store.record(e.draft, dict(e.scores, score=store.json_number(new)))
                e.recipe["scores"]["score"] = store.json_number(new)
                changed += 1
        return changed


def run_scorer(scorer, items: list[Item]) -> list[Result]:
    """The scorer on a chunk; if the chunk fails, one by one, so one bad image costs one score."""
    if not items:
        return []
    try:
        return scorer.score(items)
    except Exception:
        log.warning("scorer %s failed on a batch; retrying one draft at a time", scorer.name, exc_info=True)
    return [_one(scorer, it) for it in items]


def _one(scorer, it: Item) -> Result:
    try:
        return scorer.score([it])[0]
    except Exception as exc:
        log.warning("scorer %s failed on %s: %s", scorer.name, it.id, exc)
        return Result(math.nan, {"error": str(exc)[:200]}, ["unscorable"])


def flags_of(scores: dict) -> list[str]:
    flags = {f for r in scores.get("scorers", {}).values() for f in r.get("flags", [])}
    if scores.get("duplicate_of"):
        flags.add("duplicate")
    return sorted(flags)


def _hash(it: Item) -> str | None:
    rgb = it.pixels()
    return None if rgb is None else phash(rgb)


def _moved(old: float, new: float, tolerance: float) -> bool:
    if math.isnan(old) or math.isnan(new):
        return math.isnan(old) != math.isnan(new)
    return abs(old - new) > tolerance


def _now() -> str:
    from pipeline.content import utc_now

    return utc_now()


# -- auto-seeding ------------------------------------------------------------------------------


def auto_seed(content: Content, batch: list[str], cfg) -> list[str]:
    """Mark the top ``auto_seed_top`` unseeded, unrejected, non-duplicate drafts of ``batch``."""
    entries = [e for e in (store.entry(content, content.draft(i)) for i in batch) if e and e.scores]
    scores = combine([e.raw() for e in entries], cfg.score.weights)
    ranked = sorted(zip(scores, [e.draft.id for e in entries], entries), key=lambda t: -t[0])
    chosen = [
        i for s, i, e in ranked if not math.isnan(s) and not e.seeded and "duplicate" not in e.scores.get("flags", [])
    ][: cfg.run.auto_seed_top]
    for draft_id in chosen:
        content.write_marker(draft_id, AUTO_MARKER)
        log.info("auto-seeded %s (top of its batch of %d)", draft_id, len(batch))
    return chosen
