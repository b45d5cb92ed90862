"""Benchmark of the ladder and of finishing (run by `make bench`; see bench/README.md).

Side by side in one process, on the tiny model, works alternated so that the machine's noise
falls on every arm alike:

1. seconds per work of a two-stage ladder against one stage at the same final area: the same
   draft, the same variation count, what the studio runs per variation (plan the recipe, make
   the pixels, write the PNG). The ladder's colour correction is on (its default).
2. seconds per work of finishing those variations into copies: the default ``[finish]``
   (unsharp mask only), and a tiny randomly initialised 2x ESRGAN through spandrel, then resized
   back to the variation's area and sharpened (what an upscaler step costs beyond the model
   itself: the tiny model is no stand-in for a real 4x model's compute).

Writes bench/results/finishing.json and prints a summary. Options: --works N --count C --area A
--mid A --steps S.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def draft_image(width: int, height: int, seed: int):
    """A photograph as a draft (scikit-learn's bundled samples): colours a creator's draft has."""
    from PIL import Image
    from sklearn.datasets import load_sample_image

    name = ("china.jpg", "flower.jpg")[seed % 2]
    return Image.fromarray(load_sample_image(name)).resize((width, height), Image.LANCZOS)


def make_drafts(content, model, n: int, area: int) -> list:
    from pipeline import drafts, sizes
    from pipeline.content import new_draft_id
    from pipeline.recipes import DraftRecipe

    out = []
    for i in range(n):
        width, height = sizes.size_for(area, (4 / 3, 3 / 4, 1.0)[i % 3])
        recipe = DraftRecipe(id=new_draft_id(), prompt="a cat in a garden", width=width, height=height, seed=i)
        recipe.negative_prompt, recipe.steps, recipe.guidance_scale = "lowres", 25, 7.0
        drafts.save(content, recipe, draft_image(width, height, i))
        out.append(content.draft(recipe.id))
        time.sleep(0.002)  # distinct ids
    return out


def run_work(cfg, content, model, draft, count: int, index0: int) -> tuple[float, list]:
    """Seconds to make ``count`` variations of ``draft`` as the studio does; the variations."""
    from pipeline import variations
    from pipeline.recipes import Round

    started = time.perf_counter()
    recipe, source = variations.load_draft(content, draft)
    made = []
    for index in range(index0, index0 + count):
        v = variations.recipe(cfg, recipe, Round("bench", count), 1, index, model)
        image = variations.make(model, source, v, upscaler=variations.ladder_upscaler(cfg))
        variations.save(content, image, v)
        made.append((image, v))
    return time.perf_counter() - started, made


def finish_work(cfg, content, made, device: str) -> float:
    from pipeline import finishing

    started = time.perf_counter()
    for image, v in made:
        finishing.finish(cfg, content, image, v, device)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--works", type=int, default=4)
    parser.add_argument("--count", type=int, default=2, help="variations per work")
    parser.add_argument("--area", type=int, default=1_000_000, help="final area of both arms")
    parser.add_argument("--mid", type=int, default=640_000, help="the ladder's first stage")
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from test_finishing import tiny_upscaler

    from pipeline import config, models
    from pipeline.content import Content

    model = models.load(config.ModelConfig())
    with tempfile.TemporaryDirectory(prefix="aiimg-bench-finishing-") as tmp:
        root = Path(tmp)
        tiny_upscaler(root / "2x-tiny.pth")
        base = {"steps": args.steps, "strength": 0.5}
        arms = {
            "one_stage": {"variation": {**base, "areas": [args.area]}},
            "ladder": {"variation": {**base, "areas": [args.mid, args.area], "strengths": [0.5, 0.35]}},
        }
        finish_arms = {
            "unsharp": {"finish": {"enabled": True}},
            "esrgan_2x": {"finish": {"enabled": True, "upscaler": "2x-tiny.pth", "area": args.area}},
        }
        cfgs = {name: config.from_dict(data, root=tmp) for name, data in {**arms, **finish_arms}.items()}
        content = Content(root / "content").ensure()
        drafts = make_drafts(content, model, args.works, 640_000)
        # one untimed work first: lazy imports, allocator warm-up, the upscaler's first load
        warm = run_work(cfgs["ladder"], content, model, drafts[0], 1, 90)[1]
        for name in finish_arms:
            finish_work(cfgs[name], content, warm, model.device)
        seconds = {name: [] for name in [*arms, *finish_arms]}
        for n, draft in enumerate(drafts):
            order = list(arms) if n % 2 == 0 else list(reversed(arms))  # neither arm always goes first
            for name in order:
                took, made = run_work(cfgs[name], content, model, draft, args.count, 1 + 10 * list(arms).index(name))
                seconds[name].append(took)
                if name == "one_stage":  # finishing is timed on the one-stage variations (same final area)
                    for finish in finish_arms if n % 2 == 0 else reversed(finish_arms):
                        seconds[finish].append(finish_work(cfgs[finish], content, made, model.device))
            print(f"work {n + 1}/{len(drafts)}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in seconds.items()))
    medians = {k: statistics.median(v) for k, v in seconds.items()}
    # ratios within each work (same draft, made back to back), then their median: the machine's
    # drift between works cancels, which a ratio of two medians does not
    paired = {k: [a / b for a, b in zip(seconds[k], seconds["one_stage"])] for k in ["ladder", *finish_arms]}
    results = {
        "works": args.works,
        "variations_per_work": args.count,
        "final_area": args.area,
        "ladder_areas": [args.mid, args.area],
        "steps": args.steps,
        "seconds_per_work": {k: [round(s, 3) for s in v] for k, v in seconds.items()},
        "median_seconds_per_work": {k: round(v, 3) for k, v in medians.items()},
        "per_work_over_one_stage": {k: [round(r, 3) for r in v] for k, v in paired.items()},
        "ladder_over_one_stage": round(statistics.median(paired["ladder"]), 3),
        "finishing_over_one_stage": {k: round(statistics.median(paired[k]), 3) for k in finish_arms},
        "torch_threads": torch.get_num_threads(),
    }
    out = ROOT / "bench" / "results" / "finishing.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    print(
        f"\nladder / one stage = {results['ladder_over_one_stage']:.3f} (median of per-work ratios "
        f"{', '.join(f'{r:.2f}' for r in paired['ladder'])}; medians {medians['ladder']:.2f} s vs "
        f"{medians['one_stage']:.2f} s per work of {args.count})"
    )
    for k in finish_arms:
        print(
            f"finishing ({k}) = {medians[k]:.2f} s per work ({results['finishing_over_one_stage'][k]:.3f} of making it)"
        )


if __name__ == "__main__":
    main()
