"""A1111 prompt syntax as text: extra networks, scheduling (editing, alternation), emphasis, BREAK.

No torch and no tokenizer here: each step turns text into data that the next one reads.
``parse_networks`` -> ``prompts_for_steps`` -> ``parse_emphasis`` -> chunks.py -> encoder.py.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field

from pipeline.errors import AiimgError

log = logging.getLogger("aiimg.encoding")

EMPHASIS_MODES = ("original", "no-norm", "ignore")
UP = 1.1
DOWN = 1 / 1.1

_NETWORK = re.compile(r"<(\w+):([^>]+)>")
_AND = re.compile(r"\bAND\b")
_BREAK = re.compile(r"\s*\bBREAK\b\s*")
# a bare number, as the "when" of [from:to:when]
_WHEN = re.compile(r"\s*(\d+\.?\d*|\.\d+)\s*")
_EMPHASIS_TOKEN = re.compile(
    r"""
    (?P<escaped>\\[()\[\]\\])
    | (?P<weight>:\s*(?P<number>[+-]?(?:\d+\.?\d*|\.\d+))\s*\))
    | (?P<open>[(\[])
    | (?P<close>[)\]])
    | (?P<plain>[^\\()\[\]:]+)
    | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)


# -- extra networks ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Network:
    """``<kind:name:te:unet>``: a LoRA (or other extra network) and its two multipliers."""

    kind: str
    name: str
    te: float = 1.0
    unet: float = 1.0


def parse_networks(text: str) -> tuple[str, list[Network]]:
    """The text with every ``<kind:name:args>`` removed, and those tags as data, in order."""
    networks = [_network(m.group(0), m.group(1), m.group(2)) for m in _NETWORK.finditer(text)]
    return _NETWORK.sub("", text), networks


def _network(tag: str, kind: str, body: str) -> Network:
    name, *args = (part.strip() for part in body.split(":"))
    positional = [a for a in args if "=" not in a]
    named = dict(_named_arg(tag, a) for a in args if "=" in a)
    unknown = set(named) - {"te", "unet"}
    if unknown or len(positional) > 2:
        bad = ", ".join(sorted(unknown)) or ":".join(positional[2:])
        raise AiimgError(f"{tag}: unsupported argument {bad!r}; write <{kind}:{name}:TE> or <{kind}:{name}:TE:UNET>")
    if not name:
        raise AiimgError(f"{tag}: no name; write e.g. <{kind}:my_lora:0.8>")
    te = _number(tag, named.get("te", positional[0] if positional else "1"))
    unet = _number(tag, named.get("unet", positional[1] if len(positional) > 1 else None), default=te)
    return Network(kind=kind, name=name, te=te, unet=unet)


def _named_arg(tag: str, arg: str) -> tuple[str, str]:
    key, _, value = arg.partition("=")
    return key.strip(), value.strip()


def _number(tag: str, value: str | None, default: float = 1.0) -> float:
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise AiimgError(f"{tag}: {value!r} is not a number; write a multiplier such as 0.8")
    return number


# -- composable diffusion ----------------------------------------------------------------------


def refuse_and(text: str) -> None:
    """A1111 splits a prompt at ``AND`` into sub-prompts, each its own UNet pass: not done here."""
    if _AND.search(text):
        raise AiimgError(
            f"prompt {_shorten(text)!r} uses AND (composable diffusion), which aiimg does not support; "
            f'remove AND, or write "and" in lowercase if you meant the word'
        )


def _shorten(text: str, width: int = 80) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


# -- scheduling: [from:to:when] and [a|b] -------------------------------------------------------


@dataclass(frozen=True)
class _Group:
    """Brackets kept as text (emphasis); ``body`` may hold schedules."""

    open: str
    body: list
    close: str


@dataclass(frozen=True)
class _Edit:
    before: list
    after: list
    when: str  # as written: a decimal point makes it a fraction of the steps


@dataclass(frozen=True)
class _Alternate:
    options: list[list]


@dataclass
class _Scan:
    text: str
    pos: int = 0
    edits: list[str] = field(default_factory=list)
    alternates: int = 0


def prompts_for_steps(text: str, steps: int) -> list[tuple[int, str]]:
    """``[(until_step, text)]``: the emphasis-syntax text in force for each stretch of steps.

    A1111's numbering: sampling step ``i`` (counted from 0, as diffusers' callback counts) uses
    the first entry with ``i <= until_step``; the last entry's ``until_step`` is ``steps``.
    ``[from:to:when]`` switches after step ``when``: written with a decimal point it is a fraction
    of the steps (``int(when * steps)``, A1111's default since 1.6; ``0.5`` and ``10`` read the same
    under its older rule, ``1.0`` does not), otherwise a step number. ``[a|b]`` takes option
    ``(s - 1) % n`` at step ``s``. Remove extra-network tags first (parse_networks).
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise AiimgError(f"steps = {steps!r}: prompt scheduling needs a whole number of steps, at least 1")
    scan = _Scan(text)
    nodes = _sequence(scan, closer=None)[0][0]
    if not scan.edits and not scan.alternates:
        return [(steps, text)]
    boundaries = {steps} | {s for s in (_edit_step(w, steps) for w in scan.edits) if 1 <= s}
    if scan.alternates:
        boundaries |= set(range(1, steps + 1))
    schedule: list[tuple[int, str]] = []
    for step in sorted(boundaries):
        rendered = _render(nodes, step, steps)
        if schedule and schedule[-1][1] == rendered:
            schedule[-1] = (step, rendered)
        else:
            schedule.append((step, rendered))
    return schedule


def _edit_step(when: str, steps: int) -> int:
    value = float(when)
    return min(steps, int(value * steps if "." in when else value))


def _sequence(scan: _Scan, closer: str | None) -> tuple[list[list], list[str], bool]:
    """Nodes up to ``closer``, split at top-level ``:``/``|`` when inside square brackets."""
    parts: list[list] = [[]]
    seps: list[str] = []
    text = scan.text
    while scan.pos < len(text):
        char = text[scan.pos]
        if char == "\\" and scan.pos + 1 < len(text):
            parts[-1].append(text[scan.pos : scan.pos + 2])
            scan.pos += 2
        elif char == closer:
            scan.pos += 1
            return parts, seps, True
        elif closer == "]" and char in ":|":
            seps.append(char)
            parts.append([])
            scan.pos += 1
        elif char in "([":
            scan.pos += 1
            parts[-1].append(_bracket(scan, char))
        else:
            parts[-1].append(char)
            scan.pos += 1
    return parts, seps, False


def _bracket(scan: _Scan, opener: str):
    closer = ")" if opener == "(" else "]"
    parts, seps, closed = _sequence(scan, closer)
    if closed and opener == "[":
        node = _schedule(scan, parts, seps)
        if node is not None:
            return node
    body = list(parts[0])
    for sep, part in zip(seps, parts[1:]):
        body += [sep, *part]
    return _Group(opener, body, closer if closed else "")


def _schedule(scan: _Scan, parts: list[list], seps: list[str]):
    if seps and set(seps) == {"|"}:
        scan.alternates += 1
        return _Alternate(parts)
    if seps not in ([":"], [":", ":"]):
        return None
    last = parts[-1]
    when = _WHEN.fullmatch("".join(last)) if all(isinstance(n, str) for n in last) else None
    if when is None:
        return None
    scan.edits.append(when.group(1))
    before = parts[0] if len(parts) == 3 else []
    return _Edit(before, parts[-2], when.group(1))


def _render(nodes: list, step: int, steps: int) -> str:
    out = []
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, _Group):
            out.append(node.open + _render(node.body, step, steps) + node.close)
        elif isinstance(node, _Edit):
            out.append(_render(node.before if step <= _edit_step(node.when, steps) else node.after, step, steps))
        else:
            out.append(_render(node.options[(step - 1) % len(node.options)], step, steps))
    return "".join(out)


# -- emphasis and BREAK --------------------------------------------------------------------------


@dataclass(frozen=True)
class Fragment:
    """A run of text with one weight; ``is_break`` marks a BREAK (its text is empty)."""

    text: str
    weight: float = 1.0
    is_break: bool = False


def check_emphasis(mode: str) -> str:
    if mode not in EMPHASIS_MODES:
        raise AiimgError(f"emphasis = {mode!r}: use one of {', '.join(EMPHASIS_MODES)}")
    return mode


def parse_emphasis(text: str, mode: str = "original") -> list[Fragment]:
    """``(x)`` x1.1, ``[x]`` x1/1.1, ``(x:w)`` xw, nested multiplied, escapes literal, BREAK marked.

    Brackets left open apply their factor up to the end; closers with no opener are text. Adjacent
    runs of equal weight merge. ``mode="ignore"`` parses the same and sets every weight to 1.0.
    """
    check_emphasis(mode)
    runs: list[list] = []  # [text, weight, is_break]
    opens: dict[str, list[int]] = {"(": [], "[": []}
    for m in _EMPHASIS_TOKEN.finditer(text):
        kind, value = m.lastgroup, m.group(0)
        if kind == "escaped":
            runs.append([value[1], 1.0, False])
        elif kind == "open":
            opens[value].append(len(runs))
        elif kind == "weight" and opens["("]:
            _scale(runs, opens["("].pop(), float(m.group("number")))
        elif kind == "close" and opens["(" if value == ")" else "["]:
            opener = "(" if value == ")" else "["
            _scale(runs, opens[opener].pop(), UP if value == ")" else DOWN)
        elif kind == "plain":
            runs += _with_breaks(value)
        else:
            runs.append([value, 1.0, False])
    for opener, factor in (("(", UP), ("[", DOWN)):
        for start in opens[opener]:
            _scale(runs, start, factor)
    return _merged(runs, mode)


def _with_breaks(text: str) -> list[list]:
    pieces = _BREAK.split(text)
    runs: list[list] = [[pieces[0], 1.0, False]]
    for piece in pieces[1:]:
        runs += [["", 1.0, True], [piece, 1.0, False]]
    return runs


def _scale(runs: list[list], start: int, factor: float) -> None:
    for run in runs[start:]:
        run[1] *= factor


def _merged(runs: list[list], mode: str) -> list[Fragment]:
    out: list[Fragment] = []
    for text, weight, is_break in runs:
        weight = 1.0 if mode == "ignore" or is_break else weight
        if is_break:
            out.append(Fragment("", 1.0, True))
        elif not text:
            continue
        elif out and not out[-1].is_break and out[-1].weight == weight:
            out[-1] = Fragment(out[-1].text + text, weight)
        else:
            out.append(Fragment(text, weight))
    return out or [Fragment("", 1.0)]
