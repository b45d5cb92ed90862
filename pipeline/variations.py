"""img2img: the variations of one seed, written to ``works/<draft-id>/``.

Variation ``i`` of a draft has image seed ``sha256("<draft-id>:<i>")[:8]``: a round resumed
after a kill regenerates exactly the images it would have made, and a file written but not yet
recorded (the kill came between the two) is simply made again under the same name.
A variation is made in stages, the ladder of ``[variation] areas``: the first stage is the draft
resized (Lanczos) to the draft's ratio at the first area; each later one is the previous stage's
image resized to the next area (Lanczos, or ``[variation] upscaler``'s model then Lanczos to the
exact size); every stage is img2img at its own strength (``[variation] strengths``), with at
least ``[variation] min_steps`` denoising steps run whatever the strength. With colour
correction on (by default for ladders of 2+ stages) every stage's colours are matched to the
draft's (finishing.py). The recipe records each stage (size, strength, steps, upscaler), so
:func:`make` remakes the same pixels from it alone. Rounds (which variations to make) are
rounds.py's; this module makes pixels.
"""

from __future__ import annotations

import hashlib
import math
import time

from PIL import Image, UnidentifiedImageError

from pipeline import __version__, conditioning, finishing, sizes
from pipeline.content import Content, Draft, utc_now
from pipeline.drafts import step_callback
from pipeline.errors import AiimgError, MarkerError
from pipeline.metadata import png_bytes
from pipeline.recipes import DraftRecipe, Round, VariationRecipe


def load_draft(content: Content, draft: Draft) -> tuple[DraftRecipe, Image.Image]:
    """The draft's recipe and pixels; MarkerError names the file when either is unusable."""
    try:
        recipe = content.read_draft(draft.id)
    except AiimgError as exc:
        raise MarkerError(str(exc)) from None
    try:
        with Image.open(draft.image) as img:
            return recipe, img.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise MarkerError(
            f"{draft.image}: missing or corrupt image ({exc}); restore it, or delete this draft folder"
        ) from None


def recipe(cfg, draft: DraftRecipe, rnd: Round, round_no: int, index: int, model) -> VariationRecipe:
    """Variation ``index`` of ``draft`` in round ``round_no``, the seed's overrides applied."""
    o = rnd.overrides
    try:  # a bad upscaler file (ladder or finishing) is answered beside the marker, before any pixel
        upscaler = ladder_upscaler(cfg)
        finishing.finishing_upscaler(cfg)
    except AiimgError as exc:
        raise MarkerError(str(exc)) from None
    stages = plan_stages(cfg.variation, draft.width / draft.height, o, upscaler)
    recipe = VariationRecipe(
        id=f"{draft.id}-{index}",
        created=utc_now(),
        parent=draft.id,
        index=index,
        file=f"{index}.png",
        round=round_no,
        model={"name": model.name, "hash": model.hash},
        scheduler=model.scheduler,
        template=draft.template,
        picks=draft.picks,
        prompt=o.get("prompt", draft.prompt),
        negative_prompt=o.get("negative_prompt", draft.negative_prompt),
        prompt_seed=draft.prompt_seed,
        seed=variation_seed(draft.id, index),
        width=stages[-1]["width"],
        height=stages[-1]["height"],
        stage_areas=list(cfg.variation.areas),
        steps=stages[0]["steps"],  # what the first stage asks for, as A1111's img2img writes its slider
        strength=stages[0]["strength"],
        stages=stages,
        colour_correction=colour_correction(cfg.variation.colour_correction, len(stages)),
        guidance_scale=o.get("guidance_scale", cfg.variation.guidance_scale),
        aiimg_version=__version__,
    )
    try:
        conditioning.describe(recipe, cfg, model, o)
    except AiimgError as exc:  # a LoRA or sampler this seed (or its draft) names: answered beside the marker
        raise MarkerError(str(exc)) from None
    return recipe


def plan_stages(settings, ratio: float, overrides: dict, upscaler=None) -> list[dict]:
    """Every stage of the ladder (``settings``: ``[variation]``) at the draft's ``ratio``.

    Strengths: a seed's ``strength`` for every stage, else ``strengths``, else ``strength`` for
    every stage. Steps: the seed's or ``steps``, raised so that ``min_steps`` denoising steps run
    (img2img runs ``int(steps * strength)`` of them: 30 steps at 0.3 would be 9)."""
    n = len(settings.areas)
    if "strength" in overrides:
        strengths = [overrides["strength"]] * n
    else:
        strengths = list(settings.strengths) or [settings.strength] * n
    base = overrides.get("steps", settings.steps)
    stages = []
    for number, (area, strength) in enumerate(zip(settings.areas, strengths)):
        width, height = sizes.size_for(area, ratio)
        steps = stage_steps(base, strength, settings.min_steps)
        stage = {
            "width": width,
            "height": height,
            "strength": strength,
            "steps": steps,
            "denoise_steps": int(steps * strength),
            "upscaler": "Lanczos",
        }
        if number > 0 and upscaler is not None:  # the first stage starts from the draft: Lanczos, prefetched
            stage |= {"upscaler": upscaler.name, "upscaler_hash": upscaler.hash}
        stages.append(stage)
    return stages


def stage_steps(steps: int, strength: float, minimum: int) -> int:
    """The steps to ask for so that at least ``minimum`` run at ``strength``: max(steps, ceil(minimum / strength))."""
    steps = max(steps, math.ceil(minimum / strength))
    while int(steps * strength) < minimum:  # 10 / 0.7 * 0.7 may land a hair under 10 in floating point
        steps += 1
    return steps


def colour_correction(setting: str, stages: int) -> bool:
    """``[variation] colour_correction``: auto is on for a ladder, where the drift of each stage adds up."""
    return setting == "on" or (setting == "auto" and stages > 1)


def ladder_upscaler(cfg):
    """``[variation] upscaler`` loaded (once per file), or None for Lanczos; only a ladder uses it."""
    if not cfg.variation.upscaler or len(cfg.variation.areas) < 2:
        return None
    return finishing.upscaler(finishing.local_file(cfg, cfg.variation.upscaler), "[variation] upscaler")


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


def make(
    model,
    source: Image.Image,
    recipe: VariationRecipe,
    on_step=None,
    latents=None,
    dirs: conditioning.Dirs = conditioning.Dirs(),
    upscaler=None,
) -> Image.Image:
    """Run every stage of the ladder; returns the final image and records seconds taken.

    ``latents``: the first stage's :func:`encode` of ``source``, when the caller has it.
    ``upscaler``: the model the recipe's later stages name (:func:`ladder_upscaler`), if any.
    """
    import torch

    started = time.perf_counter()
    stages = recipe.stages or _stages_before_ladders(recipe, source)
    target = finishing.colour_target(source) if recipe.colour_correction else None
    image = source
    prepared = {}
    for number, stage in enumerate(stages):
        size = (stage["width"], stage["height"])
        steps = stage["steps"]
        if steps not in prepared:
            # prompt editing counts in the slider's steps from the first step run, as A1111's img2img does
            try:
                prepared[steps] = conditioning.prepare(model, model.img2img, recipe, dirs, steps)
            except AiimgError as exc:  # a LoRA for another base model, an embedding that will not fit...
                raise MarkerError(str(exc)) from None
        init = None
        if number == 0:
            init = latents if latents is not None else encode(model, source, size)
        if init is None:
            init = _resized(image, size, stage, upscaler, model.device)
        image = model.img2img(
            **prepared[steps].kwargs,
            image=init,
            strength=stage["strength"],
            num_inference_steps=steps,
            guidance_scale=recipe.guidance_scale,
            generator=torch.Generator("cpu").manual_seed(recipe.seed),
            callback_on_step_end=step_callback(None, on_step, switch=prepared[steps].callback),
            callback_on_step_end_tensor_inputs=["latents", *prepared[steps].tensor_inputs],
        ).images[0]
        if target is not None:
            image = finishing.colour_correct(image, target)
    recipe.seconds = round(time.perf_counter() - started, 3)
    return image


def _resized(image: Image.Image, size: tuple[int, int], stage: dict, upscaler, device: str) -> Image.Image:
    """The previous stage's image at this stage's size: through the upscaler model the stage names, then Lanczos."""
    if stage.get("upscaler", "Lanczos") != "Lanczos":
        if upscaler is None or upscaler.hash != stage.get("upscaler_hash"):
            raise AiimgError(
                f"this variation's ladder was made with upscaler {stage['upscaler']} [{stage.get('upscaler_hash')}]; "
                f"set [variation] upscaler to that file to remake it"
            )
        image = upscaler.upscale(image, device)
    return image if image.size == size else image.resize(size, Image.LANCZOS)


def _stages_before_ladders(recipe: VariationRecipe, source: Image.Image) -> list[dict]:
    """The stages of a recipe made before they were recorded: every stage at the recipe's
    strength, Lanczos, steps raised only so that img2img runs one (what made its pixels)."""
    steps = max(recipe.steps, math.ceil(1 / recipe.strength))
    ratio = source.width / source.height
    return [
        {"width": w, "height": h, "strength": recipe.strength, "steps": steps, "upscaler": "Lanczos"}
        for w, h in (sizes.size_for(area, ratio) for area in recipe.stage_areas)
    ]


def save(content: Content, image: Image.Image, recipe: VariationRecipe) -> None:
    # The raw is as made: a [finish] copy's steps belong in the copy (and work.json), whatever
    # order a worker and the owner fill them in.
    parameters = recipe.to_json()
    parameters.pop("finished", None)
    content.write_variation(recipe.parent, recipe.file, png_bytes(image, parameters))
