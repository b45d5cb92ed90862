"""Scoring drafts and recording the scores: the loop's hook (:class:`Ranker`) and `aiimg rank`.

The loop builds one ``Ranker(cfg, content)`` and calls ``on_new_draft(id)`` from one background
worker thread after each draft is saved. A scorer that cannot start (a learned-scorer file
missing) is reported once, in ``ranker.problems`` and the log, and ranking goes on with the
others. A single bad image is recorded as rejected (flag ``unreadable``) and never raises.

A scorer that *raises* has not judged the draft: nothing is recorded for it, so the draft is
combined from the other scorers and the next `aiimg rank` (which runs the scorers a draft
lacks) tries it again. Its first failure is logged as a warning, once per scorer and process
(later ones at debug level: one broken scorer must not flood the log with a line per draft);
``ranker.failed`` counts them for the `aiimg rank` report. A scorer that *returns* NaN has
judged the draft a hard reject (e.g. ``unreadable``): that is recorded and rejects it.

A draft is scored again from scratch when its draft.png is no longer the image its scores
belong to (see store.py); otherwise only the scorers it lacks run.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import Counter
from dataclasses import dataclass

from pipeline.content import Content
from pipeline.errors import AiimgError
from pipeline.ranking import store
from pipeline.ranking.duplicates import HashIndex, phash
from pipeline.ranking.scorers import Item, Result, combine

log = logging.getLogger("aiimg.ranking")
CHUNK = 16  # drafts decoded at once: bounds memory, lets learned scorers batch
AUTO_MARKER = 'by = "auto"\n'
_first_failure: dict[str, str] = {}  # scorer name -> its first failure in this process
_failure_lock = threading.Lock()


@dataclass
class Job:
    """One draft to score: the scorers to run, its image now, and whether to start afresh."""

    entry: store.Entry
    names: list
    image: dict | None
    fresh: bool  # the image changed: no recorded result of it counts any more


def build_scorers(cfg, content: Content) -> tuple[list, list[str]]:
    """(scorers in the order they run, problems that switched a scorer off)."""
    from pipeline.ranking.technical import DefaultScorer

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

    A scorer whose files are missing is left out and named in ``problems``; one that fails on
    drafts is counted in ``failed`` ({scorer name: drafts}) and retried by the next ranker.
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
        self.failed: Counter = Counter()

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
        else:
            self._raw.pop(draft_id, None)
        self._hashes.add(draft_id, hash_)

    def score_entries(self, entries: list, force: frozenset = frozenset()) -> int:
        """Run the scorers each entry lacks (all of them where its image changed, and those in
        ``force``); record; how many drafts the scorers ran on."""
        self.population()
        jobs = [job for job in (self._job(e, force) for e in entries if e is not None) if job]
        for start in range(0, len(jobs), CHUNK):
            self._score_chunk(jobs[start : start + CHUNK])
        return len(jobs)

    def _job(self, e: store.Entry, force: frozenset) -> Job | None:
        image, changed = store.image_state(e)
        if changed:
            log.info("draft %s: draft.png changed since it was scored; scoring it afresh", e.draft.id)
            return Job(e, list(self.names), image, True)
        names = [n for n in self.names if n in force or n not in e.results]
        if names:
            return Job(e, names, image, False)
        if e.scores:
            store.note_image(e, image)
        return None

    def _score_chunk(self, jobs: list[Job]) -> None:
        items = [self._item(job) for job in jobs]
        ran: list[set] = [set() for _ in jobs]
        for scorer in self.scorers:
            wanted = [i for i, job in enumerate(jobs) if scorer.name in job.names]
            for i, result in zip(wanted, run_scorer(scorer, [items[i] for i in wanted])):
                if result is None:
                    self.failed[scorer.name] += 1
                    continue
                items[i].results[scorer.name] = result
                ran[i].add(scorer.name)
        for job, it, done in zip(jobs, items, ran):
            if done:
                self._record(job, it)
            elif not job.fresh and job.entry.scores:
                store.note_image(job.entry, job.image)

    def _item(self, job: Job) -> Item:
        e = job.entry
        recorded = {
            n: Result(store.raw_score(r.get("score")), r.get("sub", {}), r.get("flags", []))
            for n, r in ({} if job.fresh else e.results).items()
            if n in self.names
        }
        return Item(e.draft.id, e.draft.image, e.recipe.get("prompt", ""), results=recorded)

    def _record(self, job: Job, it: Item) -> None:
        e = job.entry
        base = {} if job.fresh else e.scores
        scorers = {n: r.to_json() for n, r in it.results.items()}
        scores = dict(base, version=store.VERSION, scored=_now(), image=job.image, scorers=scorers)
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


def run_scorer(scorer, items: list[Item]) -> list[Result | None]:
    """The scorer on a chunk; if the chunk fails, one by one, so one bad image costs one score.
    None where the scorer failed on that draft (it judged nothing: record nothing)."""
    if not items:
        return []
    try:
        return scorer.score(items)
    except Exception as exc:
        log.debug("scorer %s failed on a batch of %d (%s); one draft at a time", scorer.name, len(items), exc)
    return [_one(scorer, it) for it in items]


def _one(scorer, it: Item) -> Result | None:
    try:
        return scorer.score([it])[0]
    except Exception as exc:
        report_failure(scorer.name, it.id, exc)
        return None


def report_failure(name: str, draft_id: str, exc: Exception) -> None:
    """A warning the first time scorer ``name`` fails in this process, debug lines after."""
    with _failure_lock:
        first = name not in _first_failure
        _first_failure.setdefault(name, f"{type(exc).__name__}: {exc}"[:300])
    if first:
        log.warning(
            "scorer %s failed on draft %s (%s); drafts it fails on are ranked by the other scorers and it is "
            "retried by the next `aiimg rank` (further failures of it are logged at debug level)",
            name,
            draft_id,
            exc,
            exc_info=exc,
        )
    else:
        log.debug("scorer %s failed on draft %s: %s", name, draft_id, exc)


def first_failure(name: str) -> str:
    """The first failure of scorer ``name`` in this process ("" if none)."""
    return _first_failure.get(name, "")


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
