"""The life of a round, in one place: which markers ask for work, plan, resume, record, cancel.

A *round* is one set of variations asked for by one version of a marker (markers.py). It is
planned before any pixel is made and recorded in work.json (recipes.py: :class:`Round`); each
variation is recorded once its PNG is whole, so a killed round resumes where it stopped. A
marker edited after its round is done asks for a new round with new numbers (4.png, 5.png...);
one removed before its round starts cancels it; one removed mid-round cancels the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline import markers
from pipeline.content import Content, Draft, utc_now
from pipeline.errors import AiimgError, MarkerError
from pipeline.markers import Marker
from pipeline.recipes import Round, VariationRecipe, Work


@dataclass
class Seed:
    """A marker that asks for work: a new round, or the rest of an unfinished one."""

    marker: Marker
    draft: Draft  # Draft("", folder) when the marker is not beside a draft of this studio
    resume: bool = False  # the last round in work.json is unfinished and is what this seed runs


@dataclass
class Plan:
    """A round ready to run: the work it belongs to and its number in work.rounds (1-based)."""

    work: Work
    number: int

    @property
    def round(self) -> Round:
        return self.work.rounds[self.number - 1]

    def made(self) -> int:
        return len(self.work.files(self.number))

    def todo(self) -> list[int]:
        """The variation numbers still to make: with several workers a round's variations are
        recorded in the order they finish, so a killed round can have gaps (1 and 3 made, not 2)."""
        first = self.round.first_index
        made = {v.index for v in self.work.variations if v.round == self.number}
        return [i for i in range(first, first + self.round.count) if i not in made]


def waiting(content: Content) -> tuple[list[Seed], list[Marker]]:
    """(seeds that wait, oldest marker first; markers in error that wait for an edit)."""
    seeds, errored = [], []
    for marker in content.markers():
        if markers.answered(marker):
            errored.append(marker)
        elif seed := seed_for(content, marker):
            seeds.append(seed)
    return seeds, errored


def seed_for(content: Content, marker: Marker) -> Seed | None:
    """What this marker version asks for now, or None when its round is done."""
    draft = content.draft_at(marker.folder)
    if not draft.id or not draft.recipe_path.is_file():
        return Seed(marker, draft)  # not a draft: serving it reports that beside the marker
    try:
        work = content.read_work(draft.id)
    except AiimgError:
        return Seed(marker, draft)  # unreadable work.json: serving it reports that
    if not work.rounds:
        return Seed(marker, draft)
    last = len(work.rounds)
    if work.rounds[-1].marker == marker.signature:
        return None if work.done(last) else Seed(marker, draft, resume=True)
    if not work.done(last) and work.files(last):
        return Seed(marker, draft, resume=True)  # finish what was started, whatever the marker says now
    return Seed(marker, draft)


def plan(cfg, content: Content, seed: Seed) -> Plan:
    """The round to run for ``seed``, new or resumed (not yet recorded: :func:`begin`); raises MarkerError."""
    if not seed.draft.id or not seed.draft.recipe_path.is_file():
        raise MarkerError(
            f"{seed.marker.folder}: not a draft folder of this studio (drafts live in "
            f"drafts/YYYY-MM-DD/<draft-id>/ with their draft.json; copies elsewhere are "
            f"not served); put {seed.marker.path.name} beside the original draft.png"
        )
    try:
        work = content.read_work(seed.draft.id)
    except AiimgError as exc:
        raise MarkerError(str(exc)) from None
    if not seed.resume:
        _new_round(cfg, work, seed.marker)
    return Plan(work, len(work.rounds))


def begin(content: Content, plan: Plan) -> None:
    """Record the round before its first pixel: a kill from here on resumes it. The work gets a
    copy of its draft, so that content/works alone is what the gallery publishes from."""
    content.write_work(plan.work.draft, plan.work)
    content.copy_draft_into_work(plan.work.draft)


def _new_round(cfg, work: Work, marker: Marker) -> None:
    overrides = markers.parse(marker.path, marker.data)
    if work.rounds and not work.files(len(work.rounds)):
        work.rounds.pop()  # planned but never started: the marker changed before it began
    count = overrides.get("count", cfg.variation.count)
    work.rounds.append(Round(marker.signature, count, work.next_index(), utc_now(), overrides))


def record(content: Content, plan: Plan, recipe: VariationRecipe) -> None:
    """A variation whose PNG is whole joins its round (work.json lists them by number, whichever
    worker finished first)."""
    plan.work.variations.append(recipe)
    plan.work.variations.sort(key=lambda v: v.index)
    content.write_work(plan.work.draft, plan.work)


def cancel(content: Content, plan: Plan) -> None:
    plan.round.cancelled = True
    content.write_work(plan.work.draft, plan.work)


def still_marked(folder: Path) -> bool:
    return markers.find(folder) is not None
