"""img2img: the variations of one seed, written to ``works/<draft-id>/``.

Variation ``i`` of a draft has image seed ``sha256("<draft-id>:<i>")[:8]``: a round resumed
after a kill regenerates exactly the images it would have made, and a file written but not yet
recorded (the kill came between the two) is simply made again under the same name.
Each stage of the area ladder resizes the previous image (Lanczos) to the draft's aspect at
that area and runs img2img on it at ``strength``. Rounds (which variations to make) are
rounds.py's; this module makes pixels.
"""

from __future__ import annotations

import hashlib
import math
import time

from PIL import Image, UnidentifiedImageError

from pipeline import __version__, conditioning, sizes
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
    width, height = sizes.size_for(cfg.variation.areas[-1], draft.width / draft.height)
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
        width=width,
        height=height,
        stage_areas=list(cfg.variation.areas),
        steps=o.get("steps", cfg.variation.steps),
        strength=o.get("strength", cfg.variation.strength),
        guidance_scale=o.get("guidance_scale", cfg.variation.guidance_scale),
        aiimg_version=__version__,
    )
    try:
        conditioning.describe(recipe, cfg, model, o)
    except AiimgError as exc:  # a LoRA or sampler this seed (or its draft) names: answered beside the marker
        raise MarkerError(str(exc)) from None
    return recipe


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
) -> Image.Image:
    """Run every stage of the ladder; returns the final image and records seconds taken.

    ``latents``: the first stage's :func:`encode` of ``source``, when the caller has it.
    """
    import torch

    started = time.perf_counter()
    ratio = source.width / source.height
    image = source
    # prompt editing counts in the slider's steps from the first step run, as A1111's img2img does
    try:
        prepared = conditioning.prepare(model, model.img2img, recipe, dirs, _steps(recipe))
    except AiimgError as exc:  # a LoRA for another base model, an embedding that will not fit...
        raise MarkerError(str(exc)) from None
    for stage, area in enumerate(recipe.stage_areas):
        size = sizes.size_for(area, ratio)
        init = None
        if stage == 0:
            init = latents if latents is not None else encode(model, source, size)
        if init is None:
            init = image.resize(size, Image.LANCZOS)
        image = model.img2img(
            **prepared.kwargs,
            image=init,
            strength=recipe.strength,
            num_inference_steps=_steps(recipe),
            guidance_scale=recipe.guidance_scale,
            generator=torch.Generator("cpu").manual_seed(recipe.seed),
            callback_on_step_end=step_callback(None, on_step, switch=prepared.callback),
            callback_on_step_end_tensor_inputs=["latents", *prepared.tensor_inputs],
        ).images[0]
    recipe.seconds = round(time.perf_counter() - started, 3)
    return image


def _steps(recipe: VariationRecipe) -> int:
    # img2img runs int(steps * strength) steps; diffusers fails when that is 0
    return max(recipe.steps, math.ceil(1 / recipe.strength))


def save(content: Content, image: Image.Image, recipe: VariationRecipe) -> None:
    content.write_variation(recipe.parent, recipe.file, png_bytes(image, recipe.to_json()))
