"""img2img: the variations of one seed, written to ``works/<draft-id>/``.

A round (see content.py) is planned before any pixel is made and recorded in work.json::

    {"marker": "<signature>", "count": 3, "first_index": 1, "files": [], "started": ISO,
     "overrides": {...seed.txt...}}

Variation ``i`` of a draft has image seed ``sha256("<draft-id>:<i>")[:8]``: a round resumed
after a kill regenerates exactly the images it would have made, and a file written but not yet
recorded (the kill came between the two) is simply made again under the same name.
Each stage of the area ladder resizes the previous image (Lanczos) to the draft's aspect at
that area and runs img2img on it at ``strength``.
"""

from __future__ import annotations

import hashlib
import math
import time

from PIL import Image, UnidentifiedImageError

from pipeline import __version__, sizes
from pipeline.content import Content, Seed, atomic_write_bytes, parse_marker, utc_now
from pipeline.drafts import step_callback
from pipeline.errors import AiimgError, MarkerError
from pipeline.metadata import png_bytes


def plan_round(cfg, content: Content, seed: Seed) -> tuple[dict, dict]:
    """(work, round): the round to run for ``seed``, new or resumed; raises MarkerError."""
    if not seed.draft.id or not seed.draft.recipe_path.is_file():
        raise MarkerError(
            f"{seed.marker.folder}: not a draft folder of this studio (drafts live in "
            f"drafts/YYYY-MM-DD/<draft-id>/ with their draft.json; copies elsewhere are "
            f"not served); put {seed.marker.path.name} beside the original draft.png"
        )
    try:
        work = content.read_work(seed.draft.id)
    except AiimgError as exc:
        raise MarkerError(str(exc)) from None
    if seed.round:
        return work, work["rounds"][-1]
    overrides = parse_marker(seed.marker.path, seed.marker.data)
    if work["rounds"] and not work["rounds"][-1].get("files"):
        work["rounds"].pop()  # planned but never started: the marker changed before it began
    first = max((v["index"] for v in work["variations"]), default=0) + 1
    rnd = {
        "marker": seed.marker.signature,
        "count": overrides.get("count", cfg.variation.count),
        "first_index": first,
        "files": [],
        "started": utc_now(),
        "overrides": overrides,
    }
    work["rounds"].append(rnd)
    return work, rnd


def load_draft(content: Content, seed: Seed) -> tuple[dict, Image.Image]:
    """The draft's recipe and pixels; MarkerError names the file when either is unusable."""
    try:
        recipe = content.read_draft(seed.draft.id)
    except AiimgError as exc:
        raise MarkerError(str(exc)) from None
    try:
        with Image.open(seed.draft.image) as img:
            return recipe, img.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise MarkerError(
            f"{seed.draft.image}: missing or corrupt image ({exc}); restore it, or delete this draft folder"
        ) from None


def variation_recipe(cfg, draft: dict, rnd: dict, round_no: int, index: int, model) -> dict:
    o = rnd["overrides"]
    ratio = draft["width"] / draft["height"]
    width, height = sizes.size_for(cfg.variation.areas[-1], ratio)
    return {
        "id": f"{draft['id']}-{index}",
        "created": utc_now(),
        "kind": "variation",
        "parent": draft["id"],
        "index": index,
        "file": f"{index}.png",
        "round": round_no,
        "model": {"name": model.name, "hash": model.hash},
        "scheduler": model.scheduler,
        "template": draft.get("template", ""),
        "picks": draft.get("picks", []),
        "prompt": o.get("prompt", draft["prompt"]),
        "negative_prompt": o.get("negative_prompt", draft.get("negative_prompt", "")),
        "prompt_seed": draft.get("prompt_seed"),
        "seed": variation_seed(draft["id"], index),
        "width": width,
        "height": height,
        "stage_areas": list(cfg.variation.areas),
        "steps": o.get("steps", cfg.variation.steps),
        "strength": o.get("strength", cfg.variation.strength),
        "guidance_scale": o.get("guidance_scale", cfg.variation.guidance_scale),
        "aiimg_version": __version__,
    }


def variation_seed(draft_id: str, index: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{draft_id}:{index}".encode()).digest()[:4], "big")


def first_stage_size(source: Image.Image, areas: list) -> tuple[int, int]:
    """The size the draft is encoded at: the first area of the ladder, the draft's ratio."""
    return sizes.size_for(areas[0], source.width / source.height)


def encode(model, source: Image.Image, size: tuple[int, int]):
    """The first stage's init latents: the draft resized to ``size``, VAE-encoded.

    Done once per round (every variation of a seed starts from the same latents) and, in the
    loop, ahead of time by the prefetch worker. The posterior's mode, not a sample, so the
    latents do not depend on which variation asks. None where diffusers must upcast an fp16
    VAE itself (SDXL with the original VAE): that pipeline then encodes the image as usual.
    """
    import torch

    pipe = model.img2img
    vae = pipe.vae
    # only the SDXL pipelines upcast an fp16 VAE to encode (SD 1.x/2.x encode in fp16 as is)
    if vae.dtype == torch.float16 and vae.config.force_upcast and hasattr(pipe, "upcast_vae"):
        return None
    pixels = pipe.image_processor.preprocess(source.resize(size, Image.LANCZOS))
    with torch.no_grad():
        latents = vae.encode(pixels.to(device=vae.device, dtype=vae.dtype)).latent_dist.mode()
    mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
    if mean is not None and std is not None:
        mean = torch.tensor(mean).view(1, -1, 1, 1).to(latents)
        std = torch.tensor(std).view(1, -1, 1, 1).to(latents)
        return (latents - mean) * vae.config.scaling_factor / std
    return latents * vae.config.scaling_factor


def make(model, source: Image.Image, recipe: dict, on_step=None, latents=None) -> Image.Image:
    """Run every stage of the ladder; returns the final image and records seconds taken.

    ``latents``: the first stage's :func:`encode` of ``source``, when the caller has it.
    """
    import torch

    started = time.perf_counter()
    ratio = source.width / source.height
    image = source
    for stage, area in enumerate(recipe["stage_areas"]):
        size = sizes.size_for(area, ratio)
        init = None
        if stage == 0:
            init = latents if latents is not None else encode(model, source, size)
        if init is None:
            init = image.resize(size, Image.LANCZOS)
        image = model.img2img(
            recipe["prompt"],
            negative_prompt=recipe["negative_prompt"] or None,
            image=init,
            strength=recipe["strength"],
            num_inference_steps=_steps(recipe),
            guidance_scale=recipe["guidance_scale"],
            generator=torch.Generator("cpu").manual_seed(recipe["seed"]),
            callback_on_step_end=step_callback(None, on_step),
        ).images[0]
    recipe["seconds"] = round(time.perf_counter() - started, 3)
    return image


def _steps(recipe: dict) -> int:
    # img2img runs int(steps * strength) steps; diffusers fails when that is 0
    return max(recipe["steps"], math.ceil(1 / recipe["strength"]))


def save(content: Content, draft_id: str, image: Image.Image, recipe: dict) -> None:
    folder = content.work_folder(draft_id)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / recipe["file"], png_bytes(image, recipe))
