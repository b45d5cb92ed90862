"""Steering drafts by what the creator keeps: impressions, seed rates, Thompson-sampled picks.

**Seen.** A seed says "I want this"; an unseeded draft says nothing unless the creator saw it.
So the negative is *seen and not seeded*, never merely "not seeded". A draft counts as seen when

1. the review page showed it: at least half of its thumbnail in view for at least a second
   (image loaded), or its large preview opened (``review.html``, batched POSTs to
   ``/api/seen``); recorded in ``content/.aiimg/impressions.json`` (:func:`record_impressions`);
2. the creator seeded it (a seed was seen); or
3. it is older than the newest seed the creator made in its day's folder, for a day none of whose
   drafts the review page showed: a creator browsing in a file manager goes through a day's
   folder in name order, which is time order, so the drafts before the one they seeded were
   passed over. (On the review page, sorted by score, seeding one draft says nothing about the
   older ones: there the impressions tell.)

Auto seeds (``by = "auto"``) are not the creator's choice: those drafts count neither as seeds
nor as negatives, and they anchor no rule 3.

**Counts.** For every random part of the template (its ``token``, e.g. ``{red|blue}`` or
``__outfit__``) and every option of it, and for every draft size: drafts, seen, seeds.
An option is what the template offers (a variant, a wildcard line), recorded in each pick as
``option`` when the rendered ``value`` differs from it (nested random parts).

**Probabilities** (``[prompt] steer = true``). For the options of one part, with prior shares
``w_i`` (the template's own weights ``{0.3::a|b}``, a wildcard line's weight, or for sizes the
share of the aspect range that lands in each size bucket; normalised to sum to 1):

    q_i = P(theta_i is the largest), theta_j ~ Beta(seeds_j + 1, seen_j - seeds_j + 1)
    p_i = f * w_i + (1 - f) * w_i q_i / sum_j w_j q_j                  f = [prompt] steer_floor

``q`` is what Thompson sampling draws with (the chance that each option has the best seed rate
given the counts); multiplied by ``w`` it leaves the template's weights untouched while nothing
is known (all ``q`` equal) and moves toward the options that get seeded as evidence comes. The
floor mixes the template's own shares back in: **no option's probability falls below ``f``
times its share under the template** (``f = 0.05``: an option of ``{a|b|c|d}`` keeps at least
1.25% of the drafts, one of 100 wildcard lines 0.05%). ``q`` is computed exactly (numerical
integration on a grid), not by drawing, so the probabilities are a function of the counts alone:
the same state gives the same probabilities in the loop and in `aiimg stats`, and the same prompt
seed with the same state gives the same prompt. Each steered pick records its ``p``; the draft
size's is in the recipe's ``steering`` key.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.content import Content, check_id, read_json, utc_now
from pipeline.errors import AiimgError
from pipeline.files import atomic_write_json

log = logging.getLogger("aiimg.steering")
VERSION = 1
GRID = 2048  # integration cells on [0, 1]: the Beta of an option seen 10,000 times (sd ~0.003) spans a dozen
SIZE_TOKEN = "aspect"  # the name draft sizes go by in counts (never a template token: those are {..} or __..__)


# -- impressions -------------------------------------------------------------------------------

_write_lock = threading.Lock()  # the review server's threads record one batch at a time


def read_impressions(content: Content) -> dict[str, str]:
    """{draft id: when first seen (ISO 8601 UTC)} from the review page; {} when none yet."""
    path = content.impressions_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise AiimgError(f"{path}: unreadable ({exc}); delete it (the drafts you saw are then forgotten)") from None
    seen = data.get("seen") if isinstance(data, dict) else None
    if not isinstance(seen, dict):
        raise AiimgError(f'{path}: not an impressions file (no "seen" object); delete it')
    return {str(k): str(v) for k, v in seen.items()}


def record_impressions(content: Content, ids: list[str], when: str | None = None) -> int:
    """Add drafts to the seen ones (ids must be checked by the caller); returns how many were new.

    The file is re-read and rewritten whole, atomically (files.py), under a lock: only the review
    server writes it, from several threads. An id seen before keeps its first time."""
    when = when or utc_now()
    with _write_lock:
        seen = read_impressions(content)
        new = [check_id(i) for i in dict.fromkeys(ids) if i not in seen]
        if new:
            seen.update(dict.fromkeys(new, when))
            atomic_write_json(content.impressions_path(), {"version": VERSION, "seen": seen})
            _states.pop(_key(content), None)
    return len(new)


# -- what each draft was and what became of it -------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One draft as steering sees it: the options it was made with, and its marks."""

    id: str
    day: str
    options: tuple  # ((token, option), ...) incl. (SIZE_TOKEN, "WxH")
    seeded: bool
    auto: bool


def options_of(recipe: dict) -> tuple:
    """((token, option), ...) of a recipe: its picks (``option``, else ``value``) and its size."""
    out = []
    for pick in recipe.get("picks") or []:
        if isinstance(pick, dict) and "token" in pick:
            out.append((str(pick["token"]), str(pick.get("option", pick.get("value", "")))))
    out.append((SIZE_TOKEN, f"{recipe.get('width')}x{recipe.get('height')}"))
    return tuple(out)


class _Cache:
    """What is known of each draft, so a plan does not reread every draft.json and marker.

    A recipe's picks and size never change once written: read once per process. The marks
    (seeded, auto) are kept with the draft folder's mtime, which a marker written, renamed or
    removed changes; they are trusted only when that mtime was already ``RACY_NS`` old when they
    were read, since a change within the file system's clock step (2 s on FAT) could keep it."""

    def __init__(self):
        self.options: dict[str, tuple] = {}
        self.marks: dict[str, tuple[int, bool, bool]] = {}  # id -> (folder mtime_ns, seeded, auto)
        self.lock = threading.Lock()


RACY_NS = 3_000_000_000
_caches: dict[str, _Cache] = {}
_caches_lock = threading.Lock()


def rows(content: Content) -> list[Row]:
    """Every readable draft, oldest first, with its options and marks as they are now."""
    from pipeline.ranking.store import seed_state

    with _caches_lock:
        cache = _caches.setdefault(_key(content), _Cache())
    out = []
    with cache.lock:
        now = time.time_ns()
        for draft in content.drafts():
            opts = cache.options.get(draft.id)
            if opts is None:
                try:
                    opts = cache.options[draft.id] = options_of(read_json(draft.recipe_path))
                except AiimgError as exc:
                    log.warning("%s", exc)
                    continue
            try:
                mtime = draft.folder.stat().st_mtime_ns
            except OSError:
                continue  # removed meanwhile
            known = cache.marks.get(draft.id)
            if known and known[0] == mtime:
                seeded, auto = known[1:]
            else:
                seeded, auto = seed_state(content, draft)
                if now - mtime > RACY_NS:
                    cache.marks[draft.id] = (mtime, seeded, auto)
            out.append(Row(draft.id, draft.folder.parent.name, opts, seeded, auto))
    return out


def seen_ids(rows_or_entries: list, impressions: dict | set | None = None) -> dict[str, str]:
    """{draft id: why it counts as seen} ("review", "seeded" or "day") over ``rows_or_entries``
    (steering rows or ranking entries: ``id``/``draft.id``, ``seeded``, ``auto``; auto-seeded
    drafts are never in it). See the module doc for the three rules."""
    items = [(_id(r), _day(r), r.seeded, r.auto) for r in rows_or_entries]
    reviewed = {day for draft_id, day, _, _ in items if impressions and draft_id in impressions}
    newest_seed: dict[str, str] = {}
    for draft_id, day, seeded, auto in items:
        if seeded and not auto and day not in reviewed and draft_id > newest_seed.get(day, ""):
            newest_seed[day] = draft_id
    out = {}
    for draft_id, day, seeded, auto in items:
        if auto:
            continue
        if seeded:
            out[draft_id] = "seeded"
        elif impressions and draft_id in impressions:
            out[draft_id] = "review"
        elif draft_id < newest_seed.get(day, ""):
            out[draft_id] = "day"
    return out


def _id(r) -> str:
    return r.id if isinstance(r, Row) else r.draft.id


def _day(r) -> str:
    return r.day if isinstance(r, Row) else r.draft.folder.parent.name


# -- counts ------------------------------------------------------------------------------------


@dataclass
class Tally:
    drafts: int = 0
    seen: int = 0
    seeds: int = 0

    @property
    def rate(self) -> float:
        return self.seeds / self.seen if self.seen else math.nan


@dataclass
class State:
    """Drafts, seen and seeds per (token, option); totals; how many were seen by which rule."""

    counts: dict = field(default_factory=lambda: defaultdict(lambda: defaultdict(Tally)))
    drafts: int = 0
    seen: int = 0
    seeds: int = 0
    auto: int = 0
    why: dict = field(default_factory=lambda: defaultdict(int))

    def tally(self, token: str, option: str) -> Tally:
        found = self.counts.get(token, {}).get(option)
        return found if found is not None else Tally()


def state(content: Content) -> State:
    """The counts steering and `aiimg stats` use, read from content/ now."""
    return state_of(rows(content), read_impressions(content))


REUSE = 20  # a state is reused for 20x the time it took to read: steering costs the loop <= ~5%
_states: dict[str, tuple[float, State]] = {}  # content root -> (reuse until, monotonic; state)


def current_state(content: Content) -> State:
    """:func:`state`, reused while young: at 10,000 drafts reading it takes ~0.5 s (a stat per
    draft folder), so the loop rereads it about every 10 s; seeds arrive at the creator's pace.
    Recording impressions in this process drops it at once."""
    key = _key(content)
    hit = _states.get(key)
    if hit and time.monotonic() < hit[0]:
        return hit[1]
    started = time.monotonic()
    st = state(content)
    _states[key] = (time.monotonic() + REUSE * (time.monotonic() - started), st)
    return st


def _key(content: Content) -> str:
    return str(Path(content.root).resolve())


def state_of(rows_: list[Row], impressions: dict | set) -> State:
    seen = seen_ids(rows_, impressions)
    st = State()
    for row in rows_:
        if row.auto:
            st.auto += 1
            continue
        why = seen.get(row.id)
        st.drafts += 1
        st.seen += why is not None
        st.seeds += row.seeded
        if why:
            st.why[why] += 1
        for token, option in row.options:
            cell = st.counts[token][option]
            cell.drafts += 1
            cell.seen += why is not None
            cell.seeds += row.seeded
    return st


# -- probabilities -----------------------------------------------------------------------------

_q_cache: dict[tuple, list[float]] = {}


def best_chances(params: list[tuple[float, float]]) -> list[float]:
    """P(theta_i is the largest) for independent theta_i ~ Beta(a_i, b_i): Thompson sampling's
    choice probabilities, by integration on ``GRID`` cells (options with equal parameters share
    the work: 100 unexplored wildcard lines cost one Beta, not 100)."""
    key = tuple(params)
    if key in _q_cache:
        return _q_cache[key]
    groups: dict[tuple[float, float], int] = defaultdict(int)
    for ab in params:
        groups[ab] += 1
    pmf = {ab: _beta_cells(*ab) for ab in groups}
    mid = {ab: _mid_cdf(cells) for ab, cells in pmf.items()}
    # all[k]: P(every option's theta is below cell k), a tie within a cell counted half
    everyone = [1.0] * GRID
    for ab, n in groups.items():
        c = mid[ab]
        for k in range(GRID):
            everyone[k] *= c[k] ** n
    chance = {}
    for ab in groups:
        f, c = pmf[ab], mid[ab]
        chance[ab] = sum(f[k] * everyone[k] / c[k] for k in range(GRID) if f[k] > 0 and c[k] > 0)
    raw = [chance[ab] for ab in params]
    total = sum(raw)
    out = [x / total for x in raw] if total > 0 else [1 / len(params)] * len(params)
    if len(_q_cache) > 4096:
        _q_cache.clear()
    _q_cache[key] = out
    return out


def _beta_cells(a: float, b: float) -> list[float]:
    """The Beta(a, b) mass of each grid cell (density at its midpoint, normalised)."""
    logs = [(a - 1) * math.log((k + 0.5) / GRID) + (b - 1) * math.log(1 - (k + 0.5) / GRID) for k in range(GRID)]
    top = max(logs)
    dens = [math.exp(v - top) for v in logs]
    total = sum(dens)
    return [d / total for d in dens]


def _mid_cdf(cells: list[float]) -> list[float]:
    out, below = [], 0.0
    for f in cells:
        out.append(below + 0.5 * f)
        below += f
    return out


def probabilities(counts: list[tuple[int, int]], weights: list[float], floor: float) -> list[float]:
    """Each option's probability from its (seeds, seen) and template weight (module doc)."""
    total = sum(max(w, 0.0) for w in weights)
    prior = [max(w, 0.0) / total for w in weights] if total > 0 else [1 / len(weights)] * len(weights)
    q = best_chances([(s + 1.0, n - s + 1.0) for s, n in counts])
    lifted = [w * x for w, x in zip(prior, q)]
    norm = sum(lifted)
    steered = [x / norm for x in lifted] if norm > 0 else prior
    return [floor * w + (1 - floor) * s for w, s in zip(prior, steered)]


def draw(probs: list[float], u: float) -> int:
    """The index that ``u`` in [0, 1) falls on in the cumulative ``probs``."""
    acc = 0.0
    for i, p in enumerate(probs):
        acc += p
        if u < acc:
            return i
    return max(i for i, p in enumerate(probs) if p > 0)  # rounding left u above the sum


class Steering:
    """What `drafts.plan` asks for each random part and the size: an option, and its probability."""

    def __init__(self, st: State, floor: float):
        self.state, self.floor = st, floor

    def probabilities(self, token: str, options: list[str], weights: list[float]) -> list[float]:
        counts = [(t.seeds, t.seen) for t in (self.state.tally(token, o) for o in options)]
        return probabilities(counts, weights, self.floor)

    def choose(self, token: str, options: list[str], weights: list[float], rng) -> tuple[int, float]:
        """(index of the option drawn, its probability): one ``rng.random()`` per call."""
        probs = self.probabilities(token, options, weights)
        i = draw(probs, rng.random())
        return i, probs[i]

    def size(self, area: int, aspects: list, rng) -> tuple[int, int, dict | None]:
        """(width, height, {"value": "WxH", "p": p}) drawn among the size buckets; with no bucket
        in range (an area too small for one) the unsteered size, and None."""
        from pipeline import sizes

        shares = sizes.bucket_shares(area, aspects)
        if not shares:
            w, h = sizes.draft_size(area, aspects, rng)
            return w, h, None
        labels = [f"{w}x{h}" for (w, h), _ in shares]
        i, p = self.choose(SIZE_TOKEN, labels, [s for _, s in shares], rng)
        (w, h), _ = shares[i]
        return w, h, {"value": labels[i], "p": round(p, 4)}

    def summary(self) -> dict:
        """What the recipe records beside the picks' own ``p``: the evidence it drew with."""
        return {"floor": self.floor, "seen": self.state.seen, "seeds": self.state.seeds}


def for_drafts(cfg, content: Content) -> Steering | None:
    """The steering for the next draft, or None when ``[prompt] steer`` is off."""
    if not cfg.prompt.steer:
        return None
    return Steering(current_state(content), cfg.prompt.steer_floor)
