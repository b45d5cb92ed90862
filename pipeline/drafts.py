"""txt2img: plan a draft (its recipe), make its image, save it (draft.png, then draft.json).

The recipe is decided before any pixel is made: random size, prompt seed and image seed are
data, so a draft can be regenerated from its draft.json alone. A draft is saved PNG first and
recipe last: a draft exists once draft.json does (see content.py).
"""

from __future__ import annotations

import random
import secrets
import time

from pipeline import __version__, conditioning, prompts, sizes
from pipeline.content import Content, new_draft_id, utc_now
from pipeline.metadata import png_bytes
from pipeline.recipes import DraftRecipe


class Preempted(Exception):
    """Raised from a denoising-step callback: something more urgent waits; discard this image."""


def plan(cfg, content: Content, model, rng: random.Random | None = None) -> DraftRecipe:
    """The full recipe of the next draft (everything but its pixels and timing)."""
    rng = rng or random.Random(secrets.randbits(64))
    width, height = sizes.draft_size(cfg.draft.area, cfg.draft.aspect, rng)
    prompt = prompts.render(cfg.prompt.template, content.prompts_dir, rng.randrange(2**32))
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
    conditioning.describe(recipe, cfg, model)
    return recipe


def make(model, recipe: DraftRecipe, should_stop=None, dirs: conditioning.Dirs = conditioning.Dirs()):
    """The draft image; raises Preempted within one denoising step once ``should_stop()``."""
    import torch

    started = time.perf_counter()
    prepared = conditioning.prepare(model, model.txt2img, recipe, dirs, recipe.steps)
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
