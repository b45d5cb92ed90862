"""Studio benchmark: three ratios measured side by side in one run, on the tiny model.

1. loop overhead: aiimg's draft loop (what `aiimg draft -n N` and `aiimg run` do per draft)
   against a bare diffusers loop making the same N images (same sizes, steps, seeds, prompts)
   and saving them as PNG; alternated image by image in one process so that machine noise
   falls on both sides alike. Goal: ratio <= 1.10.
2. seed latency: while `aiimg run` drafts, seed.txt is written; the time to the first denoising
   step of the first variation (AIIMG_TRACE) against one draft step. Goal: < one step + 0.5 s.
3. memory: peak RSS with txt2img + img2img (from_pipe) loaded against txt2img alone (and, for
   scale, against a second from_pretrained). Goal: <= 1.05.

Usage: python bench/studio.py [--drafts 20] [--steps 25] [--seeds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TRANSFORMERS_VERBOSITY": "error"}
sys.path.insert(0, str(ROOT))


def tree(folder: Path, steps: int) -> Path:
    (folder / "content" / "prompts").mkdir(parents=True, exist_ok=True)
    (folder / "content" / "prompts" / "outfit.txt").write_text("red dress\nblue coat\nwhite kimono\n")
    (folder / "content" / "prompts" / "background.txt").write_text("city\nforest\nbeach\n")
    path = folder / "aiimg.toml"
    path.write_text(
        f"[draft]\nsteps = {steps}\n[variation]\ncount = 1\n[score]\nenabled = false\n[run]\nrescan_seconds = 2.0\n"
    )
    return path


# -- 1. loop overhead ---------------------------------------------------------------------------

OVERHEAD = r"""
import json, sys, time, torch
from pathlib import Path
torch.set_num_threads(1)
from diffusers import StableDiffusionPipeline
from pipeline import config, models
from pipeline.content import Content
from pipeline.studio import Studio
cfg = config.load(sys.argv[1])
studio = Studio(cfg, Content(cfg.content_dir).ensure())
studio.start()  # one device: the in-process worker
made = []
real = studio._drafted
studio._drafted = lambda recipe, image: (made.append(recipe), real(recipe, image))
bare = StableDiffusionPipeline.from_pretrained(models.ensure_tiny())
bare.set_progress_bar_config(disable=True)
out = Path(sys.argv[2])
ours = theirs = 0.0
for i in range(int(sys.argv[3])):
    # aiimg's loop: scan for seeds, plan, prompt, hand to the worker, preemption checks,
    # background PNG + recipe writes
    t = time.perf_counter()
    studio.run(max_drafts=1, once=True)
    ours += time.perf_counter() - t
    r = made[-1]
    # the bare loop: the same image (size, steps, seed, prompt), saved as PNG on the critical path
    t = time.perf_counter()
    image = bare(r.prompt, negative_prompt=r.negative_prompt, width=r.width, height=r.height,
                 num_inference_steps=r.steps, guidance_scale=r.guidance_scale,
                 generator=torch.Generator("cpu").manual_seed(r.seed)).images[0]
    image.save(out / f"{i}.png")
    theirs += time.perf_counter() - t
t = time.perf_counter()
studio.close()   # the writes still in flight count for aiimg
ours += time.perf_counter() - t
print(json.dumps({"aiimg": ours, "bare": theirs}))
"""


def overhead(work: Path, drafts: int, steps: int) -> dict:
    """Image by image, alternating aiimg and bare diffusers in one process: the machine's
    noise (other jobs on a shared box) falls on both sides alike."""
    config = tree(work / "overhead", steps)
    out = work / "bare"
    out.mkdir(exist_ok=True)
    result = subprocess.run(
        [sys.executable, "-c", OVERHEAD, str(config), str(out), str(drafts)],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=ROOT,
        check=True,
    )
    times = json.loads(result.stdout.strip().splitlines()[-1])
    return {
        "drafts": drafts,
        "aiimg_s": round(times["aiimg"], 2),
        "bare_s": round(times["bare"], 2),
        "ratio": round(times["aiimg"] / times["bare"], 3),
    }


# -- 2. seed latency ----------------------------------------------------------------------------


def latency(work: Path, seeds: int, steps: int) -> dict:
    config = tree(work / "latency", steps)
    trace = work / "trace.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "--config", str(config), "run"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        env={**ENV, "AIIMG_TRACE": str(trace)},
    )
    drafts_dir = work / "latency" / "content" / "drafts"
    samples, marked = [], set()
    try:
        while len(samples) < seeds:
            target = _wait_unmarked_draft(drafts_dir, marked)
            _wait_mid_draft(trace)
            t0 = time.time()
            (target / "seed.txt").write_text("")
            marked.add(target.name)
            samples.append(_first_step_after(trace, t0) - t0)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    step = _draft_step_seconds(drafts_dir)
    worst = max(samples)
    return {
        "samples_s": [round(s, 3) for s in samples],
        "median_s": round(statistics.median(samples), 3),
        "worst_s": round(worst, 3),
        "draft_step_s": round(step, 3),
        "goal_s": round(step + 0.5, 3),
        "worst_over_goal": round(worst / (step + 0.5), 3),
    }


def _wait_unmarked_draft(drafts_dir: Path, marked: set) -> Path:
    while True:
        for recipe in sorted(drafts_dir.glob("*/*/draft.json")):
            if recipe.parent.name not in marked:
                return recipe.parent
        time.sleep(0.05)


def _events(trace: Path) -> list[dict]:
    return [json.loads(line) for line in trace.read_text().splitlines()] if trace.exists() else []


def _wait_mid_draft(trace: Path) -> None:
    """Let the draft after the last saved one get some steps in: the seed lands mid-draft."""
    seen = len([e for e in _events(trace) if e["event"] == "draft_saved"])
    while len([e for e in _events(trace) if e["event"] == "draft_saved"]) <= seen - 1:
        time.sleep(0.05)
    time.sleep(1.5)


def _first_step_after(trace: Path, t0: float) -> float:
    deadline = time.time() + 300
    while time.time() < deadline:
        for e in _events(trace):
            if e["event"] == "variation_first_step" and e["t"] > t0:
                return e["t"]
        time.sleep(0.02)
    raise RuntimeError("no variation started within 300 s")


def _draft_step_seconds(drafts_dir: Path) -> float:
    recipes = [json.loads(p.read_text()) for p in drafts_dir.glob("*/*/draft.json")]
    return statistics.median(r["seconds"] / r["steps"] for r in recipes)


# -- 3. memory ----------------------------------------------------------------------------------

MEMORY = r"""
import resource, sys, torch
from pipeline import config, models
from diffusers import AutoPipelineForImage2Image, AutoPipelineForText2Image
mode = sys.argv[1]
if mode == "both":
    models.load(config.ModelConfig(id=sys.argv[2]))
else:
    t2i = AutoPipelineForText2Image.from_pretrained(sys.argv[2])
    if mode == "twice":
        i2i = AutoPipelineForImage2Image.from_pretrained(sys.argv[2])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def memory(model: str) -> dict:
    rss = {}
    for mode in ("alone", "both", "twice"):
        result = subprocess.run(
            [sys.executable, "-c", MEMORY, mode, model], capture_output=True, text=True, env=ENV, cwd=ROOT, check=True
        )
        rss[mode] = int(result.stdout.strip().splitlines()[-1]) / 1024
    return {
        "txt2img_mb": round(rss["alone"], 1),
        "both_from_pipe_mb": round(rss["both"], 1),
        "both_from_pretrained_twice_mb": round(rss["twice"], 1),
        "ratio": round(rss["both"] / rss["alone"], 3),
        "ratio_naive": round(rss["twice"] / rss["alone"], 3),
    }


SD15 = r"""
import gc, torch
from diffusers import (AutoPipelineForImage2Image, AutoencoderKL, PNDMScheduler, StableDiffusionPipeline,
                       UNet2DConditionModel)
from transformers import CLIPTextConfig, CLIPTextModel
from pipeline.encoding import clip_tokenizer

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

# SD 1.5's shapes (860M-parameter UNet, 84M VAE, 123M text encoder), random weights: no download
unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768)
vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                    up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4)
text = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                                    num_hidden_layers=12, vocab_size=49408))
t2i = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text, tokenizer=clip_tokenizer(),
                              scheduler=PNDMScheduler(), safety_checker=None, feature_extractor=None,
                              requires_safety_checker=False)
gc.collect()
alone = rss_mb()
i2i = AutoPipelineForImage2Image.from_pipe(t2i)
gc.collect()
print(alone, rss_mb())
"""


def memory_sd15() -> dict:
    result = subprocess.run([sys.executable, "-c", SD15], capture_output=True, text=True, env=ENV, cwd=ROOT, check=True)
    alone, both = map(float, result.stdout.split())
    return {"txt2img_mb": round(alone), "both_from_pipe_mb": round(both), "ratio": round(both / alone, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--drafts", type=int, default=20)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--model", default="", help="model folder for the memory ratio (default: tiny)")
    args = parser.parse_args()
    from pipeline.models import ensure_tiny

    model = args.model or str(ensure_tiny())
    with tempfile.TemporaryDirectory(prefix="aiimg-bench-") as tmp:
        work = Path(tmp)
        results = {
            "overhead": overhead(work, args.drafts, args.steps),
            "seed_latency": latency(work, args.seeds, args.steps),
            "memory": memory(model),
            "memory_sd15_sized": memory_sd15(),
        }
    o, s, m = results["overhead"], results["seed_latency"], results["memory"]
    m15 = results["memory_sd15_sized"]
    print(json.dumps(results, indent=2))
    print(
        f"\n1. loop overhead   aiimg/bare = {o['ratio']:.3f}  (goal <= 1.10; {o['drafts']} drafts, "
        f"{o['aiimg_s']} s vs {o['bare_s']} s)"
    )
    print(
        f"2. seed latency    worst {s['worst_s']} s, median {s['median_s']} s vs one draft step "
        f"{s['draft_step_s']} s + 0.5 s = {s['goal_s']} s  -> worst/goal = {s['worst_over_goal']:.3f} (goal < 1)"
    )
    print(
        f"3. memory          (txt2img+img2img)/txt2img = {m['ratio']:.3f}  (goal <= 1.05; "
        f"a second from_pretrained: {m['ratio_naive']:.3f})"
    )
    print(
        f"   SD 1.5-sized    (txt2img+img2img)/txt2img = {m15['ratio']:.3f}  "
        f"({m15['txt2img_mb']} MB -> {m15['both_from_pipe_mb']} MB resident)"
    )


if __name__ == "__main__":
    main()
