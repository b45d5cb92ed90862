"""Prompts and LoRAs benchmark (issue 8): what A1111-style prompts and LoRAs cost per image.

Each ratio is measured side by side in one process, repetitions interleaved, median reported:

1. prompt encoding: ``conditioning.prepare`` (activate the adapters, ensure the embeddings,
   ``pipeline.encoding.encode``) of a 3-chunk A1111 prompt (weights, BREAK, an embedding) with
   2 LoRAs active, against one draft (0.64 MP: 832x768, 25 steps). Goal <= 2%.
2. switching LoRA sets between images: ``Adapters.activate`` from set A (2 LoRAs) to set B
   (2 others) to none and back to A, all resident, each switch timed, against one draft.
   Goal <= 5%. The first load of each LoRA file is reported too (no goal).
3. memory: peak RSS (``ru_maxrss``) of a process that loads the model and makes one image,
   against one that also loads and activates 5 LoRAs first. Goal: with - without <=
   0.05 * without + the 5 files' bytes. On the tiny model, the lowest peak of 3 processes a side:
   its image's peak jumps by ~40 MB from run to run either way (the allocator), more than the
   allowance; the resident size before the image is reported too.

On the tiny model, and on an SD 1.5-sized pipeline with random weights built in memory from the
vendored config (pipeline/data/configs/v1/: CLIP-L 123M text encoder, 860M UNet, 84M VAE). A
25-step draft of that size takes ~25 min on one CPU thread, so its draft time is
25 x one denoising step (the pipeline run for 1 step at 832x768, CFG batch 2, latents out)
+ one VAE decode, each measured in the same process. On the tiny model the draft is timed whole.
The "one image" of the memory measure is the draft (``drafts.make``) with 1 step, on both
models: a step's peak does not grow with the step count, and the decode is the peak.

LoRAs: rank 8 on every attention projection of the UNet (to_q/k/v/out) and text encoder
(q/k/v/out_proj), random weights injected with peft, saved in the Kohya layout with diffusers'
``convert_state_dict_to_kohya``, as tests/lora_fixtures.py makes them; kept in
bench/.cache/prompts/ (git-ignored). Writes bench/results/prompts.json.

Processes: the SD 1.5-sized one without LoRAs measures memory only, so it runs beside the tiny
model's (whose ratios are interleaved); the SD 1.5-sized one with LoRAs, which holds its timings,
runs alone, last. ~8 min on a quiet 2-core machine; --quick: ~1 min, the tiny model only.

Usage: python bench/prompts.py [--quick] [--tiny-only] [--reps 4] [--sd15-reps 2] [--memory-runs 3]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CACHE = ROOT / "bench" / ".cache" / "prompts"
RESULTS = ROOT / "bench" / "results" / "prompts.json"
V1 = ROOT / "pipeline" / "data" / "configs" / "v1"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TRANSFORMERS_VERBOSITY": "error"}

WIDTH, HEIGHT = 832, 768  # a 0.64 MP draft bucket (latents 104x96)
DRAFT_STEPS = 25  # [draft] steps' default
IMAGE_STEPS = 1  # the memory measure's image
RANK = 8
SET_A = ("Detailer", "Lighting")
SET_B = ("Ink", "Film")
NAMES = (*SET_A, *SET_B, "Grain")  # the fifth is only for the memory measure
EMBEDDING = "Starry"
UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]

LONG = ", ".join(f"{w} detail" for w in "red green blue gold silver amber ivory coral teal plum".split() * 4)
NEGATIVE = "lowres, (bad hands:1.2), worst quality"


def prompt_with(loras) -> str:
    """3 chunks: weights, an embedding, ~110 tokens, BREAK, a last chunk; a <lora:...> tag per LoRA."""
    tags = "".join(f"<lora:{name}:0.8>, " for name in loras)
    return f"(masterpiece:1.2), best quality, {tags}(red hair:1.3), {EMBEDDING}, {LONG} BREAK night city, (neon:0.9)"


def quiet() -> None:
    import torch

    from pipeline import models

    torch.set_num_threads(1)
    models._quiet()


# -- the resources: 5 LoRAs and an embedding per model --------------------------------------------


def make(kind: str) -> dict:
    """The LoRA files and the embedding for ``kind``, made from its configs (the modules are
    allocated but never filled: peft only needs their shapes)."""
    import torch
    from diffusers import UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_kohya
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    from pipeline import models, resources

    quiet()
    source = models.ensure_tiny() if kind == "tiny" else V1
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(source / "unet")))
        text = CLIPTextModel(CLIPTextConfig.from_pretrained(str(source / "text_encoder")))
    unet.to_empty(device="cpu")
    text.to_empty(device="cpu")
    folder = CACHE / kind
    sizes = {}
    for seed, name in enumerate(NAMES):
        torch.manual_seed(seed)
        state = {
            **peft_state(unet, UNET_TARGETS, "unet", f"b{seed}"),
            **peft_state(text, TEXT_TARGETS, "text_encoder", f"b{seed}"),
        }
        state = {
            k.replace("lora_te1_", "lora_te_", 1): v.contiguous() for k, v in convert_state_dict_to_kohya(state).items()
        }
        path = folder / "models" / "Lora" / f"{name}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(state, str(path), metadata={"ss_output_name": name})
        resources.lora_hash(path)  # what planning a recipe does: the first load below is the load alone
        sizes[name] = path.stat().st_size
    width = text.config.hidden_size
    emb = folder / "embeddings" / f"{EMBEDDING}.safetensors"
    emb.parent.mkdir(parents=True, exist_ok=True)
    save_file({"emb_params": torch.randn(3, width, generator=torch.Generator().manual_seed(9))}, str(emb))
    (folder / "aiimg.toml").write_text(
        '[model]\nlora_dirs = ["models/Lora"]\nembedding_dirs = ["embeddings"]\n'
        f"[prompt]\nnegative = {json.dumps(NEGATIVE)}\n"
    )
    return {"lora_bytes": sizes}


def peft_state(module, targets: list[str], prefix: str, adapter: str) -> dict:
    """A peft LoRA (random A and B, as lora_fixtures makes them) added to ``module``, its state dict."""
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model

    config = LoraConfig(r=RANK, lora_alpha=RANK, target_modules=targets, init_lora_weights=False)
    with warnings.catch_warnings():  # one module carries the 5 adapters, one after the other
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        inject_adapter_in_model(config, module, adapter_name=adapter)
    state = get_peft_model_state_dict(module, adapter_name=adapter)
    return {f"{prefix}.{k}": v.detach().clone() for k, v in state.items()}


# -- one measuring process --------------------------------------------------------------------------


def load(kind: str):
    from pipeline import config, models

    quiet()
    if kind == "tiny":
        return models.load(config.ModelConfig(id="tiny", device="cpu"))
    import torch
    from diffusers import (
        AutoencoderKL,
        AutoPipelineForImage2Image,
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    from pipeline.encoding import clip_tokenizer

    torch.manual_seed(0)  # SD 1.5's shapes, random weights: no download
    pipe = StableDiffusionPipeline(
        unet=UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(V1 / "unet"))).eval(),
        vae=AutoencoderKL.from_config(AutoencoderKL.load_config(str(V1 / "vae"))).eval(),
        text_encoder=CLIPTextModel(CLIPTextConfig.from_pretrained(str(V1 / "text_encoder"))).eval(),
        tokenizer=clip_tokenizer(),
        scheduler=PNDMScheduler.from_config(PNDMScheduler.load_config(str(V1 / "scheduler"))),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    img2img = AutoPipelineForImage2Image.from_pipe(pipe)
    img2img.set_progress_bar_config(disable=True)
    return models.Loaded(pipe, img2img, "sd15-sized", "random", "cpu", "sd1")


def plan(cfg, model, loras, steps: int):
    """A draft recipe as drafts.plan makes it (describe: LoRAs found, sampler and encoder named)."""
    from pipeline import conditioning
    from pipeline.recipes import DraftRecipe

    recipe = DraftRecipe(
        id="bench",
        prompt=prompt_with(loras),
        negative_prompt=NEGATIVE,
        width=WIDTH,
        height=HEIGHT,
        seed=1234,
        steps=steps,
        guidance_scale=7.0,
    )
    conditioning.describe(recipe, cfg, model)
    return recipe


def resident_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def timed(fn, *args, **kwargs) -> float:
    started = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - started


def measure(kind: str, loras: int, image_steps: int, reps: int, rep_steps: int) -> dict:
    """Load, (load and activate ``loras`` LoRAs,) make one image, read the peak RSS; then, with
    ``reps``, the interleaved timings (after the RSS is read: they cannot raise it)."""
    import resource

    from pipeline import conditioning, config, drafts, resources

    model = load(kind)
    cfg = config.load(CACHE / kind / "aiimg.toml")
    dirs = conditioning.Dirs.of(cfg)
    out: dict = {"kind": kind, "loras": loras}
    if loras:
        adapters = conditioning._adapters(model)
        files = [resources.find_lora(name, dirs.loras) for name in NAMES[:loras]]
        out["first_load_s"] = [round(timed(adapters.activate, [(f, 1.0, 1.0)]), 4) for f in files]
    recipe = plan(cfg, model, NAMES[:loras], image_steps)
    gc.collect()
    out["resident_mb"] = resident_mb()  # the model (and the LoRAs) loaded, before the image
    vae, decoded = model.txt2img.vae, []

    def decode(*args, **kwargs):
        started = time.perf_counter()
        result = type(vae).decode(vae, *args, **kwargs)
        decoded.append(time.perf_counter() - started)
        return result

    vae.decode = decode
    out["image_s"] = round(timed(drafts.make, model, recipe, dirs=dirs), 3)
    del vae.decode
    out["decode_s"] = round(decoded[0], 3)
    out["active"] = len(model.adapters.active) if model.adapters else 0
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if reps:
        out.update(interleaved(model, cfg, dirs, reps, rep_steps))
    return out


def interleaved(model, cfg, dirs, reps: int, rep_steps: int) -> dict:
    """Per repetition: the three switches, prepare, encode alone, then the draft (``rep_steps``
    steps; below DRAFT_STEPS, latents out and no decode: the caller scales it)."""
    import torch

    from pipeline import conditioning, resources
    from pipeline.encoding import encode, parse_networks

    pipe, adapters = model.txt2img, model.adapters
    sets = {name: [(resources.find_lora(n, dirs.loras), 0.8, 0.8) for n in names] for name, names in _SETS.items()}
    recipe = plan(cfg, model, SET_A, DRAFT_STEPS)
    text, _ = parse_networks(recipe.prompt)
    adapters.activate(sets["A"])
    switches: dict[str, list[float]] = {label: [] for label, _ in _CYCLE}
    prepare_s, encode_s, draft_s = [], [], []
    full = rep_steps == DRAFT_STEPS
    for _ in range(reps):
        for label, target in _CYCLE:
            switches[label].append(timed(adapters.activate, sets[target]))
        started = time.perf_counter()
        prepared = conditioning.prepare(model, pipe, recipe, dirs, recipe.steps)
        prepare_s.append(time.perf_counter() - started)
        encode_s.append(
            timed(
                encode,
                pipe,
                adapters.expand_embeddings(text),
                adapters.expand_embeddings(recipe.negative_prompt),
                clip_skip=recipe.clip_skip,
                emphasis=recipe.emphasis,
                steps=recipe.steps,
            )
        )
        assert adapters.active and len(adapters.active) == 2 and prepared.chunks == 3, (
            adapters.active,
            prepared.chunks,
        )
        draft_s.append(
            timed(
                pipe,
                **prepared.kwargs,
                width=WIDTH,
                height=HEIGHT,
                num_inference_steps=rep_steps,
                guidance_scale=recipe.guidance_scale,
                generator=torch.Generator("cpu").manual_seed(recipe.seed),
                output_type="pil" if full else "latent",
            )
        )
    return {
        "rep_steps": rep_steps,
        "draft_s": [round(s, 4) for s in draft_s],
        "prepare_s": [round(s, 5) for s in prepare_s],
        "encode_s": [round(s, 5) for s in encode_s],
        "switch_s": {label: [round(s, 5) for s in times] for label, times in switches.items()},
    }


_SETS = {"A": SET_A, "B": SET_B, "none": ()}
_CYCLE = (("A->B", "B"), ("B->none", "none"), ("none->A", "A"))


# -- the parent: runs the processes, makes the ratios -------------------------------------------------


def child(*args: str) -> dict:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, env=ENV, cwd=ROOT
    )
    if done.returncode:
        sys.exit(f"bench/prompts.py --child {' '.join(args)} failed:\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"  [{' '.join(args)}: {time.perf_counter() - started:.0f} s]", flush=True)
    return result


def without_loras(kind: str, runs: int) -> tuple[dict, list[dict]]:
    """The files, then ``runs`` processes without LoRAs (memory only: nothing timed there)."""
    made = child("make", kind)
    return made, [child("measure", kind, "0", str(IMAGE_STEPS), "0", "0") for _ in range(runs)]


def with_loras(kind: str, runs: int, reps: int, rep_steps: int) -> list[dict]:
    """The process with 5 LoRAs (memory, then the interleaved timings), and ``runs - 1`` more
    for memory alone."""
    loaded = str(len(NAMES))
    first = child("measure", kind, loaded, str(IMAGE_STEPS), str(reps), str(rep_steps))
    return [first] + [child("measure", kind, loaded, str(IMAGE_STEPS), "0", "0") for _ in range(runs - 1)]


def ratios(made: dict, withouts: list[dict], withs: list[dict]) -> dict:
    # peak RSS noise only adds (the allocator keeps or returns freed blocks at random): the lowest of the runs
    without = min(withouts, key=lambda r: r["peak_rss_mb"])
    with_ = withs[0]
    with_peak = min(r["peak_rss_mb"] for r in withs)
    rep_steps = with_["rep_steps"]
    if rep_steps == DRAFT_STEPS:
        drafts = with_["draft_s"]
        how = f"measured: the pipeline call, {DRAFT_STEPS} steps at {WIDTH}x{HEIGHT} with the decode"
    else:  # 25 x one measured step + the decode measured in the same process (its memory image)
        drafts = [DRAFT_STEPS * s / rep_steps + with_["decode_s"] for s in with_["draft_s"]]
        how = (
            f"{DRAFT_STEPS} x one measured step ({rep_steps}-step pipeline call at {WIDTH}x{HEIGHT}, CFG batch 2, "
            f"latents out) + one VAE decode ({with_['decode_s']} s)"
        )
    prepare = [p / d for p, d in zip(with_["prepare_s"], drafts)]
    encode = [e / d for e, d in zip(with_["encode_s"], drafts)]
    switch = {label: [s / d for s, d in zip(times, drafts)] for label, times in with_["switch_s"].items()}
    worst_switch = max(statistics.median(r) for r in switch.values())
    lora_bytes = sum(made["lora_bytes"].values())
    grew = with_peak - without["peak_rss_mb"]
    allowed = 0.05 * without["peak_rss_mb"] + lora_bytes / 2**20
    return {
        "draft_s": [round(d, 3) for d in drafts],
        "draft_s_median": round(statistics.median(drafts), 3),
        "draft_how": how,
        "prepare_s_median": round(statistics.median(with_["prepare_s"]), 4),
        "encode_s_median": round(statistics.median(with_["encode_s"]), 4),
        "prepare_over_draft": [round(r, 6) for r in prepare],
        "prepare_over_draft_median": round(statistics.median(prepare), 6),
        "encode_over_draft_median": round(statistics.median(encode), 6),
        "switch_s_median": {label: round(statistics.median(t), 4) for label, t in with_["switch_s"].items()},
        "switch_s_max": round(max(max(t) for t in with_["switch_s"].values()), 4),
        "switch_over_draft_median": {label: round(statistics.median(r), 6) for label, r in switch.items()},
        "switch_over_draft_worst_median": round(worst_switch, 6),
        "first_load_s": with_["first_load_s"],
        "memory": {
            "image_steps": IMAGE_STEPS,
            "without_mb": without["peak_rss_mb"],
            "with_5_loras_mb": with_peak,
            "without_runs_mb": [r["peak_rss_mb"] for r in withouts],
            "with_5_loras_runs_mb": [r["peak_rss_mb"] for r in withs],
            "resident_before_image_mb": {
                "without": statistics.median(r["resident_mb"] for r in withouts),
                "with_5_loras": statistics.median(r["resident_mb"] for r in withs),
            },
            "ratio": round(with_peak / without["peak_rss_mb"], 4),
            "grew_mb": round(grew, 1),
            "lora_files_mb": round(lora_bytes / 2**20, 2),
            "allowed_mb": round(allowed, 1),
            "met": grew <= allowed,
        },
        "processes": {"without": withouts, "with": withs},
        "lora_bytes": made["lora_bytes"],
    }


def report(kind: str, r: dict) -> None:
    m = r["memory"]
    s = r["switch_over_draft_median"]
    print(f"\n{kind}: one draft = {r['draft_s_median']} s ({r['draft_how']})")
    print(
        f"1. prompt encoding   prepare/draft = {100 * r['prepare_over_draft_median']:.3f}% "
        f"({1000 * r['prepare_s_median']:.1f} ms; encode alone {1000 * r['encode_s_median']:.1f} ms)  (goal <= 2%)"
    )
    print(
        "2. LoRA switch       "
        + ", ".join(f"{label} {100 * v:.3f}% ({1000 * r['switch_s_median'][label]:.1f} ms)" for label, v in s.items())
        + f"  worst single {1000 * r['switch_s_max']:.1f} ms  (goal <= 5%)"
    )
    print(f"   first load of a LoRA file: {', '.join(f'{1000 * t:.0f} ms' for t in r['first_load_s'])}")
    print(
        f"3. memory            {m['without_mb']:.0f} MB -> {m['with_5_loras_mb']:.0f} MB with 5 LoRAs "
        f"(ratio {m['ratio']:.3f}; grew {m['grew_mb']:.0f} MB, allowed 5% + {m['lora_files_mb']:.1f} MB of files "
        f"= {m['allowed_mb']:.0f} MB: {'met' if m['met'] else 'MISSED'})"
    )
    resident = m["resident_before_image_mb"]
    print(
        f"   lowest peak of {len(m['without_runs_mb'])} processes each (all: {m['without_runs_mb']} vs "
        f"{m['with_5_loras_runs_mb']}); resident before the image: {resident['without']:.0f} MB -> "
        f"{resident['with_5_loras']:.0f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run (~1 min): tiny model, 2 repetitions")
    parser.add_argument("--tiny-only", action="store_true", help="skip the SD 1.5-sized pipeline")
    parser.add_argument("--reps", type=int, default=4, help="interleaved repetitions on the tiny model")
    parser.add_argument("--sd15-reps", type=int, default=2, help="interleaved repetitions, SD 1.5-sized")
    parser.add_argument("--memory-runs", type=int, default=3, help="processes per side, tiny model's memory measure")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        what, kind, *rest = args.child
        result = make(kind) if what == "make" else measure(kind, *map(int, rest))
        print(json.dumps(result))
        return
    kinds = ["tiny"] if args.quick or args.tiny_only else ["tiny", "sd15"]
    reps = 2 if args.quick else args.reps
    runs = 1 if args.quick else args.memory_runs
    started = time.perf_counter()
    results: dict = {"date": time.strftime("%Y-%m-%d"), "size": [WIDTH, HEIGHT], "draft_steps": DRAFT_STEPS}
    with ThreadPoolExecutor(max_workers=1) as pool:
        # the SD 1.5-sized process without LoRAs measures memory only: beside the tiny model's
        beside = pool.submit(without_loras, "sd15", 1) if "sd15" in kinds else None
        made, withouts = without_loras("tiny", runs)
        results["tiny"] = ratios(made, withouts, with_loras("tiny", runs, reps, DRAFT_STEPS))
        if beside:
            results["sd15"] = ratios(*beside.result(), with_loras("sd15", 1, args.sd15_reps, 1))
    results["seconds"] = round(time.perf_counter() - started, 1)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    for kind in kinds:
        report({"tiny": "tiny model", "sd15": "SD 1.5-sized (random weights)"}[kind], results[kind])
    print(f"\n{results['seconds']:.0f} s in all; written to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
