"""Template + wildcards -> prompt and the random picks made (dynamicprompts syntax).

A template is fixed text plus random parts: ``{a|b}``, ``{0.5::a|b}``, ``{2$$a|b|c}``,
``__name__`` (a line of ``content/prompts/name.txt``; ``#`` comments; sub-folders as
``__folder/name__``). The same template, wildcard files and prompt seed give the same prompt.

Each top-level random part is sampled on its own, in order, from one ``random.Random(seed)``,
so the recipe can record which choice each part made (``picks``): the gallery's tags and
``aiimg stats`` read them. A wildcard with no file (or an empty one) is an error naming it:
dynamicprompts would leave ``__name__`` in the prompt as literal text.
"""

from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import AiimgError

LEFTOVER = re.compile(r"__([\w./*-]+)__")


@dataclass(frozen=True)
class Prompt:
    text: str
    seed: int
    picks: list = field(default_factory=list)  # [{"token": "{red|blue}", "value": "red"}, ...]


def render(template: str, wildcards_dir: Path, seed: int) -> Prompt:
    """The prompt for ``seed``; AiimgError names a missing wildcard or a template that won't parse."""
    from dynamicprompts.commands import LiteralCommand, SequenceCommand
    from dynamicprompts.parser.parse import parse

    logging.getLogger("dynamicprompts").setLevel(logging.ERROR)
    context = _context(wildcards_dir, seed)
    try:
        command = parse(template) if template else LiteralCommand("")
    except Exception as exc:  # pyparsing raises its own types; the message is what matters
        raise AiimgError(f"[prompt] template = {template!r} does not parse: {exc}") from None
    tokens = command.tokens if isinstance(command, SequenceCommand) else [command]
    parts, picks = [], []
    for token in tokens:
        value = _sample(context, token)
        parts.append(value)
        if not isinstance(token, LiteralCommand):
            picks.append({"token": describe(token), "value": value.strip()})
    text = "".join(parts)
    _check_leftovers(text, wildcards_dir)
    return Prompt(text, seed, picks)


def _context(wildcards_dir: Path, seed: int):
    from dynamicprompts.commands.base import SamplingMethod
    from dynamicprompts.sampling_context import SamplingContext
    from dynamicprompts.wildcards import WildcardManager

    return SamplingContext(
        wildcard_manager=WildcardManager(Path(wildcards_dir)),
        default_sampling_method=SamplingMethod.RANDOM,
        rand=random.Random(seed),
    )


def _sample(context, token) -> str:
    try:
        return str(next(iter(context.generator_from_command(token))))
    except StopIteration:
        return ""


def describe(token) -> str:
    """A readable name for a random part: ``__outfit__`` or ``{red|blue|silver}``."""
    from dynamicprompts.commands import LiteralCommand, SequenceCommand, VariantCommand, WildcardCommand

    if isinstance(token, LiteralCommand):
        return token.literal
    if isinstance(token, WildcardCommand):
        return f"__{token.wildcard}__"
    if isinstance(token, VariantCommand):
        return "{" + "|".join(describe(v.value) for v in token.variants) + "}"
    if isinstance(token, SequenceCommand):
        return "".join(describe(t) for t in token.tokens)
    return type(token).__name__


def _check_leftovers(text: str, wildcards_dir: Path) -> None:
    missing = LEFTOVER.search(text)
    if missing:
        name = missing.group(1)
        raise AiimgError(
            f"wildcard __{name}__ has no values: create {Path(wildcards_dir) / (name + '.txt')} "
            f"with one choice per line, or remove __{name}__ from [prompt] template"
        )


def check(template: str, wildcards_dir: Path) -> None:
    """Fail at start-up, not at the 300th draft: every wildcard the template names exists."""
    for seed in range(8):
        render(template, wildcards_dir, seed)
