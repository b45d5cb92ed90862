"""`aiimg stats`: which random picks of the prompt template, and which draft sizes, lead to keepers.

For each random part of the template (``{a|b}``, ``__outfit__``) and each option of it, and for
each draft size: how many drafts had it, how many of those you have seen, how many you seeded,
the seed rate among the seen ones (steering.py says what counts as seen), and ``p next``: the
probability the next draft draws it with (steered when ``[prompt] steer`` is on, else the
template's own share). Options of the current template that no draft has yet are listed with
zeros; options no longer in the template show ``p -``. Auto seeds are not the creator's choice:
those drafts are counted apart and left out of every row. Rates come with their counts, so a
100% of 1 draft is seen for what it is.
"""

from __future__ import annotations

from pipeline import sizes, steering
from pipeline.content import Content
from pipeline.errors import AiimgError


def next_probabilities(cfg, content: Content, st: steering.State) -> tuple[dict, str]:
    """({token: {option: p}} the next draft draws with, a note when some cannot be known)."""
    steer = steering.Steering(st, cfg.prompt.steer_floor if cfg.prompt.steer else 1.0)  # floor 1: the template's
    out, note = {}, ""
    try:
        from pipeline import prompts

        for choice in prompts.choices(cfg.prompt.template, content.prompts_dir):
            probs = steer.probabilities(choice.token, choice.options, choice.weights)
            out[choice.token] = dict(zip(choice.options, probs))
    except ImportError as exc:
        note = f"  (p next of the picks needs {exc.name or exc}: install the studio extra)"
    except AiimgError as exc:
        note = f"  (p next of the picks unknown: {exc})"
    shares = sizes.bucket_shares(cfg.draft.area, cfg.draft.aspect)
    if shares:
        labels = [f"{w}x{h}" for (w, h), _ in shares]
        probs = steer.probabilities(steering.SIZE_TOKEN, labels, [s for _, s in shares])
        out[steering.SIZE_TOKEN] = dict(zip(labels, probs))
    return out, note


def _row(label: str, t: steering.Tally, p: float | None) -> str:
    rate = "-" if t.seen == 0 else f"{100 * t.rate:.1f}%"
    chance = "-" if p is None else f"{p:.3f}"
    counts = f"{t.drafts:>6} drafts {t.seen:>6} seen {t.seeds:>5} seeds {rate:>6} of seen"
    return f"    {label[:44]:<44} {counts}  p next {chance}"


def _ratio(size: str) -> str:
    try:
        w, h = (int(x) for x in size.split("x"))
        return f"{size} ({w / h:.2f}:1)"
    except ValueError:
        return size


def _rows(cells: dict, probs: dict, label=str) -> list[str]:
    options = {**dict.fromkeys(probs), **dict.fromkeys(cells)}
    tallies = {o: cells.get(o) or steering.Tally() for o in options}

    def order(o):
        t = tallies[o]
        return (-(t.rate if t.seen else -1.0), -t.seen, -t.drafts, o)

    return [_row(label(o), tallies[o], probs.get(o)) for o in sorted(options, key=order)]


def stats_report(cfg) -> str:
    content = Content(cfg.content_dir)
    st = steering.state(content)
    if st.drafts + st.auto == 0:
        return f"{content.drafts_dir}: no drafts yet"
    probs, note = next_probabilities(cfg, content, st)
    rate = f"{100 * st.seeds / st.seen:.1f}%" if st.seen else "-"
    lines = [
        f"{st.drafts} drafts, {st.seeds} seeded by you ({100 * st.seeds / max(st.drafts, 1):.1f}%); "
        f"{st.auto} auto-seeded drafts left out",
        f"seen: {st.seen} drafts ({st.why['review']} on the review page, {st.why['seeded']} seeded, "
        f"{st.why['day']} older than a seed of their day); seed rate among them {rate}",
        _steering_line(cfg),
    ]
    tokens = [t for t in {**dict.fromkeys(probs), **dict.fromkeys(st.counts)} if t != steering.SIZE_TOKEN]
    for token in sorted(tokens):
        lines += [f"  pick {token}"] + _rows(st.counts.get(token, {}), probs.get(token, {}))
    if not tokens:
        lines.append("  (no random picks recorded: the template has no {a|b} choices or __wildcards__)")
    if note:
        lines.append(note)
    sizes_ = st.counts.get(steering.SIZE_TOKEN, {})
    lines += ["  aspect ratio (size)"] + _rows(sizes_, probs.get(steering.SIZE_TOKEN, {}), _ratio)
    return "\n".join(lines)


def _steering_line(cfg) -> str:
    if not cfg.prompt.steer:
        return "steering: off (p next = the template's own shares; [prompt] steer = true steers by these rates)"
    floor = cfg.prompt.steer_floor
    return (
        f"steering: on (Thompson sampling on the seed rates; [prompt] steer_floor = {floor:g}: "
        f"no option below {100 * floor:g}% of its template share)"
    )
