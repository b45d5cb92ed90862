"""Typed recipes and works, and their one mapping to and from JSON.

``draft.json`` is one :class:`DraftRecipe`; ``works/<id>/work.json`` is one :class:`Work`::

    {"draft": "<draft-id>",
     "rounds": [{"marker": "<signature>", "count": 3, "first_index": 1, "started": ISO,
                 "overrides": {...seed.txt...}, "cancelled": false}, ...],
     "variations": [<VariationRecipe>, ...]}

A recipe holds enough to regenerate the same pixels on the same model and hardware::

    id, created (ISO 8601 UTC), kind, model {"name", "hash"}, scheduler, template, prompt,
    negative_prompt, picks [{"token", "value"}...], prompt_seed, seed, width, height, steps,
    guidance_scale, seconds, aiimg_version
    + what A1111 would need to make the same image: sampler and schedule (A1111 names), clip_skip
      (A1111 numbering, 1 = none), emphasis, loras [{"name", "te", "unet", "hash"}], embeddings
      [{"name", "hash"}], vae {"name", "hash"}; and versions {library: version}, encoder (the
      prompt encoder's mode), so the pixels can be traced to the code that made them
    + variations: parent (draft id), index, file, round (1-based), stage_areas, strength, stages
      [{width, height, strength, steps, denoise_steps, upscaler}], colour_correction, finished
      {file, width, height, steps, seconds} (finishing.py)

A variation belongs to the round its ``round`` names; a round's files are the variations that
name it, so each file is recorded once. (Files written before this format also listed each
round's ``files``: that list is read, then dropped, since the variations say the same.)
Keys this module does not know (``scores``, added by ranking/store.py) are kept as they are.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import AiimgError


@dataclass
class Recipe:
    id: str
    prompt: str
    width: int
    height: int
    seed: int
    created: str = ""
    kind: str = "draft"
    model: dict = field(default_factory=dict)
    scheduler: str = ""
    template: str = ""
    negative_prompt: str = ""
    picks: list = field(default_factory=list)
    prompt_seed: int | None = None
    steps: int = 0
    guidance_scale: float = 0.0
    seconds: float | None = None
    aiimg_version: str = ""
    sampler: str = ""  # A1111 name, e.g. "DPM++ 2M" ("" in recipes made before samplers had names)
    schedule: str = ""  # A1111 "Schedule type", e.g. "Karras"; "" = the sampler's own
    clip_skip: int = 1
    emphasis: str = "original"
    loras: list = field(default_factory=list)
    embeddings: list = field(default_factory=list)
    vae: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    encoder: str = ""
    extra: dict = field(default_factory=dict)  # keys of other owners (ranking's "scores"), kept as is

    def to_json(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**self.extra, **{k: v for k, v in data.items() if v is not None}}

    @classmethod
    def from_json(cls, data: Any, where: Path | str) -> Recipe:
        """The recipe in ``data``; AiimgError names ``where`` and the missing keys."""
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        required = [f.name for f in dataclasses.fields(cls) if _required(f)]
        missing = [k for k in required if not isinstance(data, dict) or k not in data]
        if missing:
            raise AiimgError(f"{where}: not a {cls.__name__} (missing {', '.join(missing)}); restore it or delete it")
        known = {k: v for k, v in data.items() if k in names}
        return cls(**known, extra={k: v for k, v in data.items() if k not in names})


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


@dataclass
class DraftRecipe(Recipe):
    """draft.json: a txt2img draft."""


@dataclass
class VariationRecipe(Recipe):
    """One entry of work.json's ``variations``: an img2img variation of a draft."""

    kind: str = "variation"
    parent: str = ""
    index: int = 0
    file: str = ""
    round: int = 0
    stage_areas: list = field(default_factory=list)
    strength: float = 0.0  # the first stage's (the variation proper); every stage's is in ``stages``
    # per ladder stage: width, height, strength, steps, denoise_steps (what runs: int(steps * strength)),
    # upscaler ("Lanczos" or the model's file name) and upscaler_hash; None in records made before ladders
    stages: list | None = None
    colour_correction: bool | None = None  # each stage's colours matched to the draft (finishing.py)
    # [finish]: {"file": "finished/<n>.png", "width", "height", "steps": [{"step": ...}, ...], "seconds"}
    finished: dict | None = None


@dataclass
class Round:
    """One set of variations asked for by one version of a marker (see markers.py)."""

    marker: str
    count: int
    first_index: int = 1
    started: str = ""
    overrides: dict = field(default_factory=dict)
    cancelled: bool = False

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Any, where: Path | str) -> Round:
        if not isinstance(data, dict) or not isinstance(data.get("count"), int):
            raise AiimgError(f"{where}: a round is not an object with a count; restore the file or move it away")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{"marker": "", **{k: v for k, v in data.items() if k in names}})


@dataclass
class Work:
    """work.json: every round asked for on one draft and every variation made."""

    draft: str
    rounds: list[Round] = field(default_factory=list)
    variations: list[VariationRecipe] = field(default_factory=list)

    def files(self, round_no: int) -> list[str]:
        """The files made for round ``round_no`` (1-based), in order."""
        return [v.file for v in self.variations if v.round == round_no]

    def done(self, round_no: int) -> bool:
        rnd = self.rounds[round_no - 1]
        return rnd.cancelled or len(self.files(round_no)) >= rnd.count

    def next_index(self) -> int:
        return max((v.index for v in self.variations), default=0) + 1

    def to_json(self) -> dict:
        return {
            "draft": self.draft,
            "rounds": [r.to_json() for r in self.rounds],
            "variations": [v.to_json() for v in self.variations],
        }

    @classmethod
    def from_json(cls, data: Any, where: Path | str) -> Work:
        if not (
            isinstance(data, dict) and isinstance(data.get("rounds"), list) and isinstance(data.get("variations"), list)
        ):
            raise AiimgError(
                f'{where}: not a work record (needs "rounds" and "variations" lists); '
                f"restore it, or move it away to start this work afresh"
            )
        rounds = [Round.from_json(r, where) for r in data["rounds"]]
        variations = [VariationRecipe.from_json(v, where) for v in data["variations"]]
        return cls(str(data.get("draft", "")), rounds, variations)
