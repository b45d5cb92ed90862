"""Benchmark of draft evaluation (run by `make bench`; see bench/README.md).

1. Scoring cost per 800x800 draft (goal <= 50 ms for the default scorer): PNG decode, the
   default scorer, the perceptual hash, and the whole hook the loop calls (``on_new_draft``:
   read, score, hash, rewrite draft.json), on synthetic drafts with and without defects and on
   real photos, all resized to 800x800.
2. Loop throughput with scoring on against off (goal >= 0.97): `aiimg draft -n N` on the tiny
   model at 800x800 (one aspect ratio: random sizes would swamp the difference),
   `[score] enabled = true/false`, runs interleaved on/off so drift of the machine hits both
   alike; the drafts' own "s per draft" line is compared.

Writes bench/results/ranking.json and prints a summary. Options: --drafts N --pairs P --quick.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

TOML = """
[prompt]
template = "masterpiece, {{red|blue|silver}} hair, __outfit__"
negative = "lowres"

[draft]
area = 640000
aspect = ["1:1"]
steps = {steps}

[score]
enabled = {enabled}
"""


def images(n: int):
    import cv2
    import ranking_fixtures as F

    makers = [
        lambda s: F.clean(s),
        lambda s: F.blurred(F.clean(s)),
        lambda s: F.noisy(F.clean(s)),
        lambda s: F.burnt(F.clean(s)),
        lambda s: F.clean(s, "cut"),
        lambda s: F.clean(s, "centre"),
    ]
    out = [makers[i % len(makers)](i) for i in range(n - 2)] + F.photos()
    return [cv2.resize(img, (800, 800), interpolation=cv2.INTER_AREA) for img in out]


def timed(fn, *args) -> float:
    started = time.perf_counter()
    fn(*args)
    return (time.perf_counter() - started) * 1000


def summary(ms: list[float]) -> dict:
    ms = sorted(ms)
    return {
        "median_ms": round(statistics.median(ms), 2),
        "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 2),
        "max_ms": round(ms[-1], 2),
        "n": len(ms),
    }


def scoring_cost(n: int) -> dict:
    import ranking_fixtures as F

    from pipeline import config
    from pipeline.content import Content
    from pipeline.ranking.duplicates import phash
    from pipeline.ranking.ranker import Ranker
    from pipeline.ranking.scorers import read_rgb
    from pipeline.ranking.technical import judge, measure

    with tempfile.TemporaryDirectory() as tmp:
        cfg = config.from_dict({}, root=tmp)
        content = Content(cfg.content_dir).ensure()
        ids = [F.make_draft(content, img) for img in images(n)]
        paths = [content.draft(i).image for i in ids]
        judge(measure(read_rgb(paths[0])))  # warm-up: imports, first calls
        pixels = [read_rgb(p) for p in paths]
        ranker = Ranker(cfg, content)
        result = {
            "decode_png": summary([timed(read_rgb, p) for p in paths]),
            "default_scorer": summary([timed(lambda px: judge(measure(px)), px) for px in pixels]),
            "phash": summary([timed(phash, px) for px in pixels]),
            "on_new_draft": summary([timed(ranker.on_new_draft, i) for i in ids]),
        }
    return result


def draft_rate(enabled: bool, drafts: int, steps: int, root: Path) -> float:
    """Seconds per draft reported by `aiimg draft -n N` (model load excluded, scoring drained)."""
    folder = root / ("on" if enabled else "off")
    (folder / "content" / "prompts").mkdir(parents=True, exist_ok=True)
    (folder / "content" / "prompts" / "outfit.txt").write_text("red dress\nblue coat\nwhite kimono\n")
    (folder / "aiimg.toml").write_text(TOML.format(steps=steps, enabled="true" if enabled else "false"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "--config",
            str(folder / "aiimg.toml"),
            "--model",
            "tiny",
            "draft",
            "-n",
            str(drafts),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=1800,
    )
    match = re.search(r"\(([\d.]+) s per draft\)", out.stdout)
    if out.returncode or not match:
        raise SystemExit(f"aiimg draft failed:\n{out.stdout}\n{out.stderr}")
    return float(match.group(1))


def throughput(drafts: int, pairs: int, steps: int) -> dict:
    on, off = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for p in range(pairs):
            order = (True, False) if p % 2 == 0 else (False, True)  # alternate who goes first
            for enabled in order:
                (on if enabled else off).append(draft_rate(enabled, drafts, steps, Path(tmp)))
                print(
                    f"  pair {p + 1}: scoring {'on ' if enabled else 'off'} "
                    f"{(on if enabled else off)[-1]:.3f} s per draft",
                    flush=True,
                )
    ratio = statistics.median(off) / statistics.median(on)
    return {
        "drafts_per_run": drafts,
        "pairs": pairs,
        "steps": steps,
        "s_per_draft_on": on,
        "s_per_draft_off": off,
        "throughput_on_over_off": round(ratio, 4),
        "goal": 0.97,
        "met": ratio >= 0.97,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--drafts", type=int, default=6)
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--quick", action="store_true", help="fewer images and one pair (a smoke run)")
    args = ap.parse_args()
    if args.quick:
        args.images, args.drafts, args.pairs = 12, 2, 1
    print(f"scoring cost per 800x800 draft ({args.images} drafts):", flush=True)
    cost = scoring_cost(args.images)
    for name, s in cost.items():
        print(f"  {name:<15} median {s['median_ms']:7.2f} ms   p95 {s['p95_ms']:7.2f} ms   max {s['max_ms']:7.2f} ms")
    cost["goal_default_scorer_ms"] = 50
    cost["met"] = cost["default_scorer"]["median_ms"] + cost["decode_png"]["median_ms"] <= 50
    print(f"loop throughput, scoring on vs off ({args.pairs} interleaved pairs of {args.drafts} drafts, tiny model):")
    tp = throughput(args.drafts, args.pairs, args.steps)
    print(
        f"  throughput on/off = {tp['throughput_on_over_off']:.3f} (goal >= 0.97: {'met' if tp['met'] else 'MISSED'})"
    )
    results = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}, "scoring": cost, "throughput": tp}
    out = ROOT / "bench" / "results" / "ranking.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
