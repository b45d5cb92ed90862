"""Area/aspect arithmetic: width and height for a target area at an aspect ratio.

``w = sqrt(A*r)``, ``h = w/r``, each snapped to a multiple of 64 (the snap that keeps the area
closest to A), as InvokeAI and Fooocus size at constant area.
"""

from __future__ import annotations

import math
import random
from fractions import Fraction

from pipeline.errors import AiimgError

SNAP = 64


def parse_ratio(text: str) -> float:
    """ "2:3" -> 0.666..; also accepts "1.5". Raises ValueError naming the text."""
    try:
        if ":" in str(text):
            a, b = str(text).split(":", 1)
            value = float(a) / float(b)
        else:
            value = float(text)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f'{text!r} is not a ratio like "2:3" or 1.5') from None
    if not 0.1 <= value <= 10:
        raise ValueError(f"{text!r} is outside 1:10 .. 10:1")
    return value


def parse_aspects(aspects: list) -> list[float]:
    return [parse_ratio(a) for a in aspects]


def draw_aspect(aspects: list, rng: random.Random) -> float:
    """Two ratios are a range (drawn log-uniformly, so 2:3 and 3:2 are equally likely);
    one or more than two are a list to pick from."""
    ratios = parse_aspects(aspects)
    if len(ratios) == 2:
        lo, hi = sorted(math.log(r) for r in ratios)
        return math.exp(rng.uniform(lo, hi))
    return rng.choice(ratios)


TOLERANCE = 0.03


def size_for(area: int, ratio: float, tol: float = TOLERANCE) -> tuple[int, int]:
    """(width, height) with area within ``tol`` of ``area`` and the ratio closest to ``ratio``.

    Multiples of 64 when that keeps the ratio within ``tol``; otherwise 32, 16, then 8 (the
    VAE's factor, the least diffusers accepts): a 1 MP variation of a 704x896 draft needs it.
    """
    for snap in (64, 32, 16, 8):
        best = _closest(candidates(area, snap, tol), ratio)
        if best and _ratio_error(best, ratio) <= tol:
            return best
    return _closest(candidates(area, 8, 1.0), ratio)


def draft_size(area: int, aspects: list, rng: random.Random) -> tuple[int, int]:
    """A random draft size: multiples of 64 within ``TOLERANCE`` of ``area``, aspect in range.

    At 0.64 MP only a few such sizes exist (704x896, 768x832, 832x768, 896x704 for 2:3..3:2):
    they are buckets, as SDXL's; the drawn ratio picks the closest bucket.
    """
    ratio = draw_aspect(aspects, rng)
    return _closest(buckets(area, aspects), ratio) or size_for(area, ratio)


def buckets(area: int, aspects: list) -> list[tuple[int, int]]:
    """The draft sizes :func:`draft_size` chooses among (none when no 64-multiple fits the range)."""
    ratios = parse_aspects(aspects)
    lo, hi = min(ratios), max(ratios)
    return [wh for wh in candidates(area, 64, TOLERANCE) if lo - 1e-9 <= wh[0] / wh[1] <= hi + 1e-9]


def bucket_shares(area: int, aspects: list) -> list[tuple[tuple[int, int], float]]:
    """Each bucket with the probability that :func:`draft_size` returns it: for a range, the share
    of the log-ratio range closest to it; for a list, the share of the listed ratios closest to it.
    Buckets with no share are left out; [] when there are no buckets (sizes are then not buckets)."""
    ratios = parse_aspects(aspects)
    found = buckets(area, aspects)
    if not found:
        return []
    share: dict[tuple[int, int], float] = dict.fromkeys(found, 0.0)
    if len(ratios) == 2 and ratios[0] != ratios[1]:
        lo, hi = sorted(math.log(r) for r in ratios)
        ordered = sorted(found, key=lambda wh: math.log(wh[0] / wh[1]))
        logs = [math.log(w / h) for w, h in ordered]
        edges = [lo] + [(a + b) / 2 for a, b in zip(logs, logs[1:])] + [hi]  # closest in log ratio
        for wh, start, end in zip(ordered, edges, edges[1:]):
            share[wh] = max(0.0, min(end, hi) - max(start, lo)) / (hi - lo)
    else:
        for r in ratios:
            share[_closest(found, r)] += 1 / len(ratios)
    return [(wh, s) for wh, s in sorted(share.items(), key=lambda kv: kv[0][0] / kv[0][1]) if s > 0]


def candidates(area: int, snap: int, tol: float) -> list[tuple[int, int]]:
    out = []
    for w in range(snap, int(math.sqrt(area * 20)) + snap, snap):
        h_lo = max(snap, math.ceil(area * (1 - tol) / w / snap) * snap)
        for h in range(h_lo, int(area * (1 + tol) / w) + 1, snap):
            out.append((w, h))
    return out


def _ratio_error(wh: tuple[int, int], ratio: float) -> float:
    return abs(wh[0] / wh[1] / ratio - 1)


def _closest(sizes: list[tuple[int, int]], ratio: float) -> tuple[int, int] | None:
    return min(sizes, key=lambda wh: (abs(math.log(wh[0] / wh[1] / ratio)), wh), default=None)


def ratio_text(width: int, height: int) -> str:
    """ "832x1216" -> "13:19" (for stats and display)."""
    f = Fraction(width, height)
    return f"{f.numerator}:{f.denominator}"


def check_size(width: int, height: int, source) -> None:
    """A size read from elsewhere (an image's infotext): diffusers needs multiples of 8."""
    if width % 8 or height % 8 or not (64 <= width <= 8192 and 64 <= height <= 8192):
        raise AiimgError(
            f"{source}: Size {width}x{height} cannot be made: width and height must be multiples of 8, 64..8192"
        )
