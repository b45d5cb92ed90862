"""txt2img: plan a draft (its recipe), make its image, save it (draft.png, then draft.json).

The recipe is decided before any pixel is made: random size, prompt seed and image seed are
data, so a draft can be regenerated from its draft.json alone. A draft is saved PNG first and
recipe last: a draft exists once draft.json does (see content.py).
"""

from __future__ import annotations

import logging
import random
import secrets
import time

from pipeline import __version__, conditioning, prompts, sizes, steering
from pipeline.content import Content, new_draft_id, utc_now
from pipeline.metadata import png_bytes
from pipeline.recipes import DraftRecipe

log = logging.getLogger("aiimg.drafts")


class Preempted(Exception):
    """Raised from a denoising-step callback: something more urgent waits; discard this image."""


def plan(cfg, content: Content, model, rng: random.Random | None = None) -> DraftRecipe:
    """The full recipe of the next draft (everything but its pixels and timing)."""
    rng = rng or random.Random(secrets.randbits(64))
    steer = steering.for_drafts(cfg, content)  # None when [prompt] steer is off: the draws of before, unchanged
    if steer:
        width, height, aspect = steer.size(cfg.draft.area, cfg.draft.aspect, rng)
    else:
        width, height = sizes.draft_size(cfg.draft.area, cfg.draft.aspect, rng)
    prompt = prompts.render(cfg.prompt.template, content.prompts_dir, rng.randrange(2**32), steer)
    recipe = DraftRecipe(
        id=new_draft_id(),
        created=utc_now(),
        model={"name": model.name, "hash": model.hash},
        scheduler=model.scheduler,
        template=cfg.prompt.template,
        prompt=prompt.text,
        negative_prompt=cfg.prompt.negative,
        picks=prompt.picks,
        prompt_seed=prompt.seed,
        seed=rng.randrange(2**32),
        width=width,
        height=height,
        steps=cfg.draft.steps,
        guidance_scale=cfg.draft.guidance_scale,
        aiimg_version=__version__,
    )
    if steer:  # the evidence and the size's probability, beside each pick's own "p"
        recipe.extra["steering"] = {**steer.summary(), "aspect": aspect}
    conditioning.describe(recipe, cfg, model)
    return recipe


def plan_from(cfg, model, imported, resolved, seed: int | None = None, prompt: str = "", negative: str = ""):
    """The recipe that remakes an image (reproduce.py read it): its prompt, negative, seed, size,
    steps, CFG, sampler, clip skip, emphasis and LoRAs; ``seed``/``prompt``/``negative`` override."""
    from pipeline import config

    _warn_about(imported, model)
    width, height = imported.width, imported.height
    if not (width and height):
        width, height = sizes.draft_size(cfg.draft.area, cfg.draft.aspect, random.Random(secrets.randbits(64)))
    recipe = DraftRecipe(
        id=new_draft_id(),
        created=utc_now(),
        model={"name": model.name, "hash": model.hash},
        template=imported.template,
        prompt=prompt or resolved.prompt or imported.prompt,
        negative_prompt=negative or resolved.negative_prompt or imported.negative_prompt,
        seed=_seed(seed, imported.seed),
        width=width,
        height=height,
        steps=imported.steps or cfg.draft.steps,
        guidance_scale=imported.guidance_scale if imported.guidance_scale is not None else cfg.draft.guidance_scale,
        aiimg_version=__version__,
    )
    sizes.check_size(recipe.width, recipe.height, imported.source)
    cfg = config.override(cfg, prompt__emphasis=imported.emphasis or "original")
    wanted = {"clip_skip": imported.clip_skip or 1}
    if imported.sampler:  # with its own schedule: "" is Automatic, never the project's [model] schedule
        wanted |= {"sampler": imported.sampler, "schedule": imported.schedule or "Automatic"}
    conditioning.describe(recipe, cfg, model, wanted)
    return recipe


def _seed(given: int | None, recorded: int | None) -> int:
    if given is not None:
        return given
    return recorded if recorded is not None and recorded >= 0 else secrets.randbits(32)  # A1111's -1: random


def _warn_about(imported, model) -> None:
    """What will keep the pixels from matching, said before the work, not left to be found."""
    made_with = imported.model.get("hash", "")
    if made_with and model.hash and not model.hash.startswith(made_with[:10]) and not made_with.startswith(model.hash):
        log.warning(
            "%s was made with model %s [%s]; this is %s [%s]: same settings, other pixels",
            imported.source,
            imported.model.get("name") or "?",
            made_with,
            model.name,
            model.hash,
        )
    if imported.strength is not None or "Hires upscale" in imported.settings:
        log.warning("%s is an img2img or hires-fix image: only its txt2img first pass is remade", imported.source)


def make(
    model,
    recipe: DraftRecipe,
    should_stop=None,
    dirs: conditioning.Dirs = conditioning.Dirs(),
    deep_shrink: float | None = None,
):
    """The draft image; raises Preempted within one denoising step once ``should_stop()``.

    ``deep_shrink``: ``[draft] deep_shrink_end`` when Deep Shrink is on (finishing.deep_shrink_end);
    it acts only above the model's native area and is then recorded in the recipe."""
    import torch

    from pipeline import finishing

    started = time.perf_counter()
    prepared = conditioning.prepare(model, model.txt2img, recipe, dirs, recipe.steps)
    with finishing.deep_shrink(model.txt2img, recipe.width, recipe.height, deep_shrink) as shrink:
        image = model.txt2img(
            **prepared.kwargs,
            width=recipe.width,
            height=recipe.height,
            num_inference_steps=recipe.steps,
            guidance_scale=recipe.guidance_scale,
            generator=torch.Generator("cpu").manual_seed(recipe.seed),
            callback_on_step_end=step_callback(should_stop, switch=prepared.callback),
            callback_on_step_end_tensor_inputs=["latents", *prepared.tensor_inputs],
        ).images[0]
    if shrink:
        recipe.extra["deep_shrink"] = shrink.entry()  # DraftRecipe has no field of its own for it (yet)
    recipe.seconds = round(time.perf_counter() - started, 3)
    return image


def step_callback(should_stop, on_step=None, switch=None):
    """diffusers calls this after every denoising step: the hook for preemption, and for
    ``switch``, the prompt's own schedule (prompt editing, alternation: conditioning.py)."""

    def callback(pipe, step, timestep, kwargs):
        if on_step:
            on_step(step)
        if should_stop and should_stop():
            raise Preempted()
        return switch(pipe, step, timestep, kwargs) if switch else kwargs

    return callback


def save(content: Content, recipe: DraftRecipe, image) -> None:
    """draft.png then draft.json: a draft exists once its recipe does."""
    content.write_draft(recipe, png_bytes(image, recipe.to_json()))
