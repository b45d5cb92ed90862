r"""Template + wildcards -> prompt and the random picks made (dynamicprompts syntax).

A template is fixed text plus random parts: ``{a|b}``, ``{0.5::a|b}``, ``{2$$a|b|c}``,
``__name__`` (a line of ``content/prompts/name.txt``; sub-folders as ``__folder/name__``). The
same template, wildcard files and prompt seed give the same prompt.

Plain text stays plain. dynamicprompts reserves characters creators type in prompts: ``#``,
``//`` and ``/*`` start comments (the rest of the text silently vanished) and a lone ``$`` or
``%`` did not parse. Here ``#``, ``$``, ``%`` and ``/`` are always text, in the template and in
wildcard lines alike (``100% detail, #1 artist, $5, a // b`` comes out as written), with one
exception: ``$$`` inside ``{...}`` sets how many to pick (``{2$$a|b|c}``, ``{2$$ and $$a|b}``).
So dynamicprompts' wrap (``%{...}``) and variables (``${name=...}``) are not available (the
variables never worked here: each random part is sampled on its own, below). ``{``, ``}`` and
``|`` remain syntax. A backslash makes any of ``{ } | $ # %`` text wherever it stands: ``\{``,
``\}``, ``\|``, ``{\$\$|free}``; in aiimg.toml that is ``"\\{"`` in a "..." string or ``'\{'``
in a '...' string. A template that does not parse is an error showing these escapes. In a
wildcard file a line starting with ``#`` is a comment (by design); ``\#`` starts a line with
the character. A1111's syntax is not the template's and passes through untouched: ``(a:1.2)
[a:b:0.5] \( \) BREAK <lora:name:0.6>``. How: before dynamicprompts parses a template or a
wildcard line, every character meant as text becomes a private-use character it has no rule
for, and becomes itself again in the prompt and the picks.

Each top-level random part is sampled on its own, in order, from one ``random.Random(seed)``,
so the recipe can record which choice each part made (``picks``): the gallery's tags and
``aiimg stats`` read them. A wildcard with no file (or an empty one) is an error naming it:
dynamicprompts would leave ``__name__`` in the prompt as literal text.

Steering (``[prompt] steer``, steering.py) replaces one draw only: which option a top-level part
takes. Each ``{a|b|c}`` that picks one (not ``{2$$...}``, not a ``@``/``!`` sampler) and each
``__name__`` (a plain name: no glob, no variables) is a :class:`Choice` of distinct options (a
variant as written, a wildcard line) with the template's weights; ``steer.choose`` draws one with
the same ``random.Random`` and returns its probability, recorded as the pick's ``p`` (and
``option`` when nested random parts make the value differ from it). What the chosen option holds
is then sampled as dynamicprompts would. Without ``steer`` nothing changes: the same seed gives
the same prompt as before steering existed.
"""

from __future__ import annotations

import functools
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pipeline.errors import AiimgError

# a character meant as text travels through dynamicprompts as one of these (Supplementary
# Private Use Area-B: no font, keyboard or prompt has them)
PLAIN = {ch: chr(0x10FFF0 + i) for i, ch in enumerate("#$%/{}|")}
RESTORE = str.maketrans({v: k for k, v in PLAIN.items()})
ESCAPABLE = "#$%{}|"
ESCAPES = (
    r"write \{ \} \| for those characters as text, and \$\$ for a $$ inside {...} "
    r"""(in aiimg.toml: "\\{" in a "..." string, or '\{' in a '...' string)"""
)


@dataclass(frozen=True)
class Prompt:
    text: str
    seed: int
    picks: list = field(default_factory=list)  # [{"token": "{red|blue}", "value": "red"}, ...]


@dataclass(frozen=True)
class Choice:
    """One random part that steering may draw: distinct options and their template weights."""

    token: str  # describe(): "{red|blue}", "__outfit__"
    options: list  # each option as written (a variant, a wildcard line), stripped
    weights: list  # the template's weight of each ({0.3::a|b}; a repeated option sums)
    sources: list  # what each option samples: a dynamicprompts command, or a (protected) wildcard line


class Steer(Protocol):
    def choose(self, token: str, options: list, weights: list, rng: random.Random) -> tuple[int, float]: ...


def render(template: str, wildcards_dir: Path, seed: int, steer: Steer | None = None) -> Prompt:
    """The prompt for ``seed``; AiimgError names a missing wildcard or a template that won't parse.
    ``steer`` draws the option of each :class:`Choice` (module doc); None: dynamicprompts does."""
    from dynamicprompts.commands import LiteralCommand

    manager, context = _setup(wildcards_dir, seed)
    parts, picks = [], []
    for token in _tokens(template):
        choice = _choice(manager, token) if steer is not None else None
        if choice is None:
            value = _sample(context, token)
        else:
            i, p = steer.choose(choice.token, choice.options, choice.weights, context.rand)
            value = _sample(context, choice.sources[i], choice.token)
        parts.append(value)
        if not isinstance(token, LiteralCommand):
            picks.append({"token": describe(token), "value": value.strip()})
            if choice is not None:
                picks[-1]["p"] = round(p, 4)
                if choice.options[i] != picks[-1]["value"]:
                    picks[-1]["option"] = choice.options[i]
    _check_missing(manager.missing, wildcards_dir)
    return Prompt("".join(parts), seed, picks)


def choices(template: str, wildcards_dir: Path) -> list[Choice]:
    """The random parts of ``template`` that steering draws (for `aiimg stats`); a wildcard with
    no file is left out (rendering names it)."""
    manager, _ = _setup(wildcards_dir, 0)
    return [c for c in (_choice(manager, t) for t in _tokens(template)) if c is not None]


def _setup(wildcards_dir: Path, seed: int):
    logging.getLogger("dynamicprompts").setLevel(logging.ERROR)
    manager = _manager_class()(Path(wildcards_dir))
    return manager, _context(manager, seed)


def _tokens(template: str) -> list:
    from dynamicprompts.commands import SequenceCommand

    command = _parse(template)
    return command.tokens if isinstance(command, SequenceCommand) else [command]


def _choice(manager, token) -> Choice | None:
    """The token as a :class:`Choice`, or None when steering leaves it to dynamicprompts."""
    from dynamicprompts.commands import VariantCommand, WildcardCommand
    from dynamicprompts.enums import SamplingMethod

    if getattr(token, "sampling_method", None) not in (None, SamplingMethod.RANDOM):
        return None  # {@a|b} cycles and {!a|b} combines: not a random draw to steer
    if isinstance(token, VariantCommand):
        if token.min_bound != 1 or token.max_bound != 1 or len(token.variants) < 2:
            return None
        items = [(describe(v.value).strip(), v.weight, v.value) for v in token.variants]
    elif isinstance(token, WildcardCommand):
        name = token.wildcard
        if not isinstance(name, str) or token.variables or any(ch in restore(name) for ch in "*?["):
            return None
        values = manager.get_values(name)
        if not values:
            return None  # rendering reports the missing file
        items = [(restore(str(v)).strip(), float(getattr(v, "weight", 1.0)), str(v)) for v in values]
    else:
        return None
    options: dict[str, list] = {}
    for label, weight, source in items:
        options.setdefault(label, [0.0, source])[0] += weight
    return Choice(describe(token), list(options), [w for w, _ in options.values()], [s for _, s in options.values()])


def protect(text: str, where: str) -> str:
    """``text`` with every character meant as text (see the module doc) hidden from the parser."""
    if any(ch in text for ch in PLAIN.values()):
        raise AiimgError(f"{where}: holds a character of U+10FFF0..U+10FFF6, which aiimg reserves; remove it")
    out, depth, i = [], 0, 0
    while i < len(text):
        ch, nxt = text[i], text[i + 1 : i + 2]
        if ch == "\\" and nxt and nxt in ESCAPABLE:
            out.append(PLAIN[nxt])
            i += 2
            continue
        if ch == "$" and nxt == "$" and depth:
            out.append("$$")
            i += 2
            continue
        depth = max(0, depth + (ch == "{") - (ch == "}"))
        out.append(ch if _is_syntax(ch, nxt) else PLAIN[ch])
        i += 1
    return "".join(out)


def _is_syntax(ch: str, nxt: str) -> bool:
    if ch == "/":
        return nxt not in ("/", "*")  # "//" and "/*" would start comments
    return ch not in "#$%"


def restore(text: str) -> str:
    return text.translate(RESTORE)


@functools.lru_cache(maxsize=32)
def _parse(template: str):
    """The parsed template (cached: parsing costs ~10 ms, drawing from it ~0.5 ms; commands are
    immutable, each render samples them with its own context)."""
    from dynamicprompts.commands import LiteralCommand
    from dynamicprompts.parser.parse import parse
    from pyparsing import ParseBaseException

    try:
        return parse(protect(template, "[prompt] template")) if template else LiteralCommand("")
    except (ParseBaseException, ValueError) as exc:
        raise AiimgError(f"[prompt] template = {template!r} does not parse: {restore(str(exc))}; {ESCAPES}") from None


@functools.cache
def _manager_class():
    """dynamicprompts' WildcardManager, protecting wildcard lines and noting names with no values."""
    from dynamicprompts.wildcards import WildcardManager
    from dynamicprompts.wildcards.item import WildcardItem
    from dynamicprompts.wildcards.values import WildcardValues

    class Manager(WildcardManager):
        def __init__(self, path: Path):
            super().__init__(path)
            self.missing: list[str] = []

        def get_values(self, wildcard: str):
            name = restore(wildcard)
            values = super().get_values(name)
            if not values:
                self.missing.append(name)
            where = f"wildcard __{name}__"
            return WildcardValues.from_items(
                WildcardItem(protect(v.content, where), v.weight) if isinstance(v, WildcardItem) else protect(v, where)
                for v in values
            )

    return Manager


def _context(manager, seed: int):
    from dynamicprompts.commands.base import SamplingMethod
    from dynamicprompts.sampling_context import SamplingContext

    return SamplingContext(
        wildcard_manager=manager,
        default_sampling_method=SamplingMethod.RANDOM,
        rand=random.Random(seed),
    )


def _sample(context, token, part: str = "") -> str:
    """What ``token`` (a command, or a protected wildcard line drawn for ``part``) renders to."""
    from pyparsing import ParseBaseException

    try:
        if isinstance(token, str):
            return restore(str(next(iter(context.sample_prompts(token, 1)))))
        return restore(str(next(iter(context.generator_from_command(token)))))
    except StopIteration:
        return ""
    except (ParseBaseException, ValueError) as exc:  # a wildcard line is parsed when it is drawn
        raise AiimgError(
            f"[prompt] template: a line drawn for {part or describe(token)} does not parse: "
            f"{restore(str(exc))}; {ESCAPES}"
        ) from None


def describe(token) -> str:
    """A readable name for a random part: ``__outfit__`` or ``{red|blue|silver}``."""
    return restore(_describe(token))


def _describe(token) -> str:
    from dynamicprompts.commands import LiteralCommand, SequenceCommand, VariantCommand, WildcardCommand

    if isinstance(token, LiteralCommand):
        return token.literal
    if isinstance(token, WildcardCommand):
        return f"__{token.wildcard}__"
    if isinstance(token, VariantCommand):
        return "{" + "|".join(_describe(v.value) for v in token.variants) + "}"
    if isinstance(token, SequenceCommand):
        return "".join(_describe(t) for t in token.tokens)
    return type(token).__name__


def _check_missing(missing: list[str], wildcards_dir: Path) -> None:
    if missing:
        name = missing[0]
        raise AiimgError(
            f"wildcard __{name}__ has no values: create {Path(wildcards_dir) / (name + '.txt')} "
            f"with one choice per line, or remove __{name}__ from [prompt] template"
        )


def check(template: str, wildcards_dir: Path) -> None:
    """Fail at start-up, not at the 300th draft: every wildcard the template names exists."""
    for seed in range(8):
        render(template, wildcards_dir, seed)
