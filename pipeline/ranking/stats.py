"""`aiimg stats`: which random picks of the prompt template, and which aspect ratios, lead to keepers.

Reads the recipes only (``picks`` and width/height of each draft.json) and whether each draft
is seeded. Seeds made by auto-seeding are not the creator's choice: they are counted apart and
not as keepers. Rates come with their counts, so a 100% of 1 draft is seen for what it is.
"""

from __future__ import annotations

from collections import defaultdict

from pipeline.content import Content
from pipeline.ranking import store


def tally(entries: list) -> tuple[dict, dict]:
    """({token: {value: [drafts, seeds]}}, {"WxH": [drafts, seeds]}) over non-auto-seeded drafts."""
    picks: dict = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    sizes: dict = defaultdict(lambda: [0, 0])
    for e in entries:
        if e.auto:
            continue
        for pick in e.recipe.get("picks") or []:
            _count(picks[str(pick.get("token", "?"))][str(pick.get("value", ""))], e.seeded)
        _count(sizes[f"{e.recipe.get('width')}x{e.recipe.get('height')}"], e.seeded)
    return picks, sizes


def _count(cell: list, seeded: bool) -> None:
    cell[0] += 1
    cell[1] += int(seeded)


def _row(label: str, drafts: int, seeds: int) -> str:
    return f"    {label[:48]:<48} {drafts:>6} drafts {seeds:>5} seeds {100 * seeds / drafts:>5.1f}%"


def _ratio(size: str) -> str:
    try:
        w, h = (int(x) for x in size.split("x"))
        return f"{size} ({w / h:.2f}:1)"
    except ValueError:
        return size


def _rows(cells: dict, label=str) -> list[str]:
    ranked = sorted(cells.items(), key=lambda kv: (-kv[1][1] / kv[1][0], -kv[1][0], kv[0]))
    return [_row(label(k), d, s) for k, (d, s) in ranked]


def stats_report(cfg) -> str:
    entries = store.entries(Content(cfg.content_dir))
    if not entries:
        return f"{Content(cfg.content_dir).drafts_dir}: no drafts yet"
    picks, sizes = tally(entries)
    mine = [e for e in entries if not e.auto]
    seeds = sum(e.seeded for e in mine)
    lines = [
        f"{len(mine)} drafts, {seeds} seeded by you ({100 * seeds / max(len(mine), 1):.1f}%); "
        f"{len(entries) - len(mine)} auto-seeded drafts left out"
    ]
    for token in sorted(picks):
        lines += [f"  pick {token}"] + _rows(picks[token])
    if not picks:
        lines.append("  (no random picks recorded: the template has no {a|b} choices or __wildcards__)")
    lines += ["  aspect ratio (size)"] + _rows(sizes, _ratio)
    return "\n".join(lines)
