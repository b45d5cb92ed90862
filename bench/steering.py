"""Steering benchmark (issue 11): does steering raise the seed yield of a creator whose taste is a rule?

No pixels, and no person: a simulated creator judges each draft by its *recipe*, by a rule the
code under test never sees, so the images would change nothing. The bench drives the real
``drafts.plan`` (with a model stand-in that has no weights: a real diffusers scheduler for the
recipe's sampler fields) on a real content folder per arm: draft.json and an 8x8 draft.png are
written as the loop writes them, seeds are seed.txt files (``Content.write_marker``), and what the
creator saw goes through ``steering.record_impressions``, the call the review page's POSTs make.

The creator (``Creator``): likes "silver armor" (one outfit of four) in portrait sizes (704x896
and 768x832, two of the four buckets of 2:3..3:2): seeds such a draft with probability 0.5, and
any other draft with probability 0.1 (1 in 10, at random). Every ``BATCH`` drafts they open the
review page and see each new draft with probability 0.8 (an impression), seeding only among those.
The template is aiimg's default: 4 hair colours x 4 outfits x 4 places, aspect 2:3..3:2.

Two arms, each with its own content folder: ``[prompt] steer = true`` (floor ``--floor``) and
steer off. They are interleaved draft by draft (one steered, one not, ...), each arm with its own
random streams, and repeated ``--runs`` times with other seeds. Reported:

- seed yield per arm: seeds per 100 drafts seen, pooled over the runs, with a 95% Wilson interval;
  the ratio steered/unsteered with a 95% interval (Katz, log risk ratio); per run; and over the
  second half of each run (after the first learning);
- the diversity guard: (a) before every steered draft, every option's probability (each random
  part and the size) divided by its floor (floor x its share under the template): the minimum
  must be >= 1; (b) each option's share of the steered drafts against its floor;
- the steered arm's final probabilities of the outfits and sizes.

Usage: python bench/steering.py [--drafts N] [--runs R] [--floor F] [--quick] [--out FILE]
Writes bench/results/steering.json.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "steering.json"

BATCH = 20  # drafts between two visits of the review page
SEE = 0.8  # chance that a visit shows a given new draft
LIKED_OUTFIT = "silver armor"
PORTRAIT = {"704x896", "768x832"}
P_LIKED, P_OTHER = 0.5, 0.1
OUTFIT = "{red kimono|silver armor|white summer dress|black leather jacket}"


class Creator:
    """Judges recipes by the hidden rule; sees and seeds in batches, as on the review page."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)

    def likes(self, recipe) -> bool:
        outfit = next(p["value"] for p in recipe.picks if p["token"] == OUTFIT)
        return outfit == LIKED_OUTFIT and f"{recipe.width}x{recipe.height}" in PORTRAIT

    def visit(self, content, recipes: list) -> tuple[int, int]:
        """See some of ``recipes``, seed by the rule; returns (seen, seeded)."""
        from pipeline import steering

        seen = [r for r in recipes if self.rng.random() < SEE]
        seeded = [r for r in seen if self.rng.random() < (P_LIKED if self.likes(r) else P_OTHER)]
        for r in seeded:
            content.write_marker(r.id, "")
        steering.record_impressions(content, [r.id for r in seen])
        return len(seen), len(seeded)


def stand_in_model():
    """What plan() reads of a model, without weights: names and a real scheduler."""
    from diffusers import PNDMScheduler

    config = SimpleNamespace(num_hidden_layers=12)
    pipe = SimpleNamespace(scheduler=PNDMScheduler(), text_encoder=SimpleNamespace(config=config))
    return SimpleNamespace(
        name="stand-in", hash="0000000000", scheduler="PNDMScheduler", base_scheduler=None, vae={}, txt2img=pipe
    )


def tiny_png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    return buf.getvalue()


class Arm:
    def __init__(self, name: str, root: Path, steer: bool, floor: float, seed: int):
        from pipeline import config
        from pipeline.content import Content

        self.name, self.steer = name, steer
        self.cfg = config.from_dict({"prompt": {"steer": steer, "steer_floor": floor}}, root=str(root))
        self.content = Content(self.cfg.content_dir).ensure()
        self.rng = random.Random(seed)
        self.creator = Creator(seed + 1)
        self.waiting: list = []
        self.seen = self.seeds = 0
        self.halves = [[0, 0], [0, 0]]  # [seen, seeds] in the first and second half of the run
        self.options: dict = {}  # token -> {option: drafts}
        self.min_floor_ratio = math.inf

    def draft(self, model, png: bytes, half: int) -> None:
        from pipeline import drafts, steering

        if self.steer:
            self._check_floor(steering.for_drafts(self.cfg, self.content))
        recipe = drafts.plan(self.cfg, self.content, model, self.rng)
        self.content.write_draft(recipe, png)
        for token, option in steering.options_of(recipe.to_json()):
            counts = self.options.setdefault(token, {})
            counts[option] = counts.get(option, 0) + 1
        self.waiting.append(recipe)
        if len(self.waiting) == BATCH:
            seen, seeds = self.creator.visit(self.content, self.waiting)
            self.waiting = []
            self.seen += seen
            self.seeds += seeds
            self.halves[half][0] += seen
            self.halves[half][1] += seeds

    def _check_floor(self, steer) -> None:
        """Every option's probability over its floor, for the draft about to be planned."""
        from pipeline.ranking.stats import next_probabilities

        probs, _ = next_probabilities(self.cfg, self.content, steer.state)
        for token, shares in self.priors().items():
            for option, share in shares.items():
                self.min_floor_ratio = min(
                    self.min_floor_ratio, probs[token][option] / (self.cfg.prompt.steer_floor * share)
                )

    def priors(self) -> dict:
        """{token: {option: share under the template's own weights}}: what the floor is a fraction of."""
        from pipeline import prompts, sizes, steering

        out = {}
        for c in prompts.choices(self.cfg.prompt.template, self.content.prompts_dir):
            total = sum(c.weights)
            out[c.token] = {o: w / total for o, w in zip(c.options, c.weights)}
        shares = sizes.bucket_shares(self.cfg.draft.area, self.cfg.draft.aspect)
        out[steering.SIZE_TOKEN] = {f"{w}x{h}": s for (w, h), s in shares}
        return out


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return math.nan, math.nan
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def ratio_ci(a: int, n1: int, b: int, n2: int, z: float = 1.96) -> tuple[float, float, float]:
    """Risk ratio (a/n1)/(b/n2) with its 95% interval on the log scale (Katz)."""
    rr = (a / n1) / (b / n2)
    se = math.sqrt(1 / a - 1 / n1 + 1 / b - 1 / n2)
    return rr, rr * math.exp(-z * se), rr * math.exp(z * se)


def run_once(run: int, n: int, floor: float, model, png: bytes) -> dict:
    with tempfile.TemporaryDirectory(prefix="aiimg-steer-") as tmp:
        arms = [
            Arm("steered", Path(tmp) / "on", True, floor, 1000 * run + 1),
            Arm("unsteered", Path(tmp) / "off", False, floor, 1000 * run + 2),
        ]
        started = time.perf_counter()
        for i in range(n):
            for arm in arms:  # interleaved: one steered draft, one unsteered, ...
                arm.draft(model, png, half=int(i >= n // 2))
        seconds = time.perf_counter() - started
        on, off = arms
        return {
            "run": run,
            "seconds": round(seconds, 1),
            "arms": {
                a.name: {"seen": a.seen, "seeds": a.seeds, "halves": a.halves, "options": a.options} for a in arms
            },
            "min_floor_ratio": on.min_floor_ratio,
            "priors": on.priors(),
            "final": _final(on),
        }


def _final(arm: Arm) -> dict:
    from pipeline import steering
    from pipeline.ranking.stats import next_probabilities

    probs, _ = next_probabilities(arm.cfg, arm.content, steering.state(arm.content))
    return {t: {o: round(p, 4) for o, p in probs[t].items()} for t in (OUTFIT, steering.SIZE_TOKEN)}


def summarise(runs: list[dict], floor: float) -> dict:
    pooled = {}
    for name in ("steered", "unsteered"):
        seen = sum(r["arms"][name]["seen"] for r in runs)
        seeds = sum(r["arms"][name]["seeds"] for r in runs)
        late_seen = sum(r["arms"][name]["halves"][1][0] for r in runs)
        late_seeds = sum(r["arms"][name]["halves"][1][1] for r in runs)
        pooled[name] = {
            "seen": seen,
            "seeds": seeds,
            "yield": 100 * seeds / seen,
            "ci95": [100 * x for x in wilson(seeds, seen)],
            "second_half_yield": 100 * late_seeds / late_seen,
        }
    on, off = pooled["steered"], pooled["unsteered"]
    rr = ratio_ci(on["seeds"], on["seen"], off["seeds"], off["seen"])
    late = ratio_ci(
        sum(r["arms"]["steered"]["halves"][1][1] for r in runs),
        sum(r["arms"]["steered"]["halves"][1][0] for r in runs),
        sum(r["arms"]["unsteered"]["halves"][1][1] for r in runs),
        sum(r["arms"]["unsteered"]["halves"][1][0] for r in runs),
    )
    # (b) each option's share of all steered drafts against its floor share; the floor bounds the
    # probability, so a share may sit a little under it by chance: "held" unless significantly
    # under (one-sided 5%, Bonferroni over the options)
    guard = []
    priors = runs[0]["priors"]
    options = sum(len(v) for v in priors.values())
    for token, shares in priors.items():
        for option, prior in shares.items():
            drafts = sum(sum(r["arms"]["steered"]["options"][token].values()) for r in runs)
            count = sum(r["arms"]["steered"]["options"][token].get(option, 0) for r in runs)
            least = floor * prior
            z = (count / drafts - least) / math.sqrt(least * (1 - least) / drafts)
            guard.append({"token": token, "option": option, "share_over_floor": count / drafts / least, "z": z})
    worst = min(guard, key=lambda g: g["share_over_floor"])
    held = min(r["min_floor_ratio"] for r in runs) >= 1 - 1e-9 and min(g["z"] for g in guard) > -z_one_sided(
        0.05 / options
    )
    return {
        "pooled": pooled,
        "ratio": rr,
        "ratio_second_half": late,
        "per_run_ratio": [
            (r["arms"]["steered"]["seeds"] / r["arms"]["steered"]["seen"])
            / (r["arms"]["unsteered"]["seeds"] / r["arms"]["unsteered"]["seen"])
            for r in runs
        ],
        "min_probability_over_floor": min(r["min_floor_ratio"] for r in runs),
        "min_share_over_floor": worst,
        "floor_held": held,
        "goal_met": rr[0] >= 1.5 and held,
    }


def z_one_sided(alpha: float) -> float:
    """The standard normal quantile 1 - alpha (bisection on erfc: no scipy here)."""
    lo, hi = 0.0, 10.0
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if 0.5 * math.erfc(mid / math.sqrt(2)) > alpha else (lo, mid)
    return (lo + hi) / 2


def steering_size() -> str:
    from pipeline import steering

    return steering.SIZE_TOKEN


def report(summary: dict, runs: list[dict], args) -> str:
    p = summary["pooled"]
    lines = [
        f"steering bench: {args.runs} runs x {args.drafts} drafts per arm, floor {args.floor}, "
        f"batches of {BATCH}, {int(SEE * 100)}% of drafts seen",
    ]
    for name in ("steered", "unsteered"):
        a = p[name]
        lines.append(
            f"  {name:<10} {a['seeds']:>5} seeds / {a['seen']:>5} seen = {a['yield']:5.1f} per 100 "
            f"(95% {a['ci95'][0]:.1f}..{a['ci95'][1]:.1f}); second half {a['second_half_yield']:.1f}"
        )
    rr, late = summary["ratio"], summary["ratio_second_half"]
    lines.append(f"  ratio      {rr[0]:.2f} (95% {rr[1]:.2f}..{rr[2]:.2f}); second half {late[0]:.2f}")
    lines.append("  per run    " + ", ".join(f"{x:.2f}" for x in summary["per_run_ratio"]))
    worst = summary["min_share_over_floor"]
    lines.append(
        f"  floor      min probability / floor over every steered draft {summary['min_probability_over_floor']:.3f}; "
        f"lowest share of the steered drafts / floor {worst['share_over_floor']:.2f} "
        f"({worst['token']}: {worst['option']}, z {worst['z']:+.1f}): {'held' if summary['floor_held'] else 'BROKEN'}"
    )
    final = runs[-1]["final"]
    lines.append("  last run's final p: " + ", ".join(f"{o} {v:.3f}" for o, v in final[OUTFIT].items()))
    lines.append("                      " + ", ".join(f"{o} {v:.3f}" for o, v in final[steering_size()].items()))
    lines.append(f"  goal (ratio >= 1.5, floor held): {'met' if summary['goal_met'] else 'NOT met'}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--drafts", type=int, default=1000, help="drafts per arm per run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--floor", type=float, default=None, help="[prompt] steer_floor (default: the config's)")
    parser.add_argument("--quick", action="store_true", help="1 run of 300 drafts per arm")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results file (default {RESULTS.relative_to(ROOT)})")
    args = parser.parse_args()
    from pipeline.config import PromptConfig

    if args.quick:
        args.runs, args.drafts = 1, 300
    if args.floor is None:
        args.floor = PromptConfig().steer_floor
    model, png = stand_in_model(), tiny_png()
    runs = []
    for run in range(args.runs):
        runs.append(run_once(run, args.drafts, args.floor, model, png))
        on, off = runs[-1]["arms"]["steered"], runs[-1]["arms"]["unsteered"]
        print(
            f"run {run}: steered {on['seeds']}/{on['seen']}, unsteered {off['seeds']}/{off['seen']} "
            f"({runs[-1]['seconds']} s)",
            flush=True,
        )
    summary = summarise(runs, args.floor)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"args": vars(args), "summary": summary, "runs": runs}, indent=1, default=str) + "\n"
    )
    print(report(summary, runs, args))


if __name__ == "__main__":
    main()
