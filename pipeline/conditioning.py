"""What a recipe asks of the model before its first step, for drafts and variations alike.

Two moments, so that a bad name fails before any pixel is made:

1. :func:`describe`, when a recipe is planned: the prompt's ``<lora:name:te:unet>`` tags and the
   embeddings it names are found on disk (``[model] lora_dirs`` / ``embedding_dirs``) and
   recorded with the hashes A1111 and Civitai use; the sampler, schedule type, clip skip and
   emphasis are recorded by their A1111 names; and the library versions and encoder mode that
   will make the pixels. A missing file is an AiimgError naming it, the folders searched and the
   closest names.
2. :func:`prepare`, just before the pipeline runs: the sampler is set, the recipe's LoRAs are
   made the active adapters (each file loaded once, switched per image), its embeddings are
   loaded, and the prompt is encoded as A1111 reads it (pipeline/encoding/): weights, BREAK,
   every token past 77, prompt editing switched per step by the step callback.

The ``<lora:...>`` tags stay in the recipe's prompt text, where A1111 and Civitai read them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import resources
from pipeline.errors import AiimgError


@dataclass(frozen=True)
class Dirs:
    """Where the creator's resources are, resolved against aiimg.toml's folder."""

    loras: tuple[Path, ...] = ()
    embeddings: tuple[Path, ...] = ()

    @classmethod
    def of(cls, cfg) -> Dirs:
        root = Path(cfg.root)
        return cls(
            tuple(root / Path(d).expanduser() for d in cfg.model.lora_dirs),
            tuple(root / Path(d).expanduser() for d in cfg.model.embedding_dirs),
        )


@dataclass
class Prepared:
    """Keyword arguments for the pipeline call and the step callback that switches prompts."""

    kwargs: dict
    callback: object = None
    tensor_inputs: list = field(default_factory=list)
    chunks: int = 1


# -- 1. planning ------------------------------------------------------------------------------


def describe(recipe, cfg, model, overrides: dict | None = None) -> None:
    """Fill the recipe's A1111 fields from the config (and a seed's overrides) and its prompt."""
    from pipeline.encoding import encoder_mode, parse_networks, refuse_and

    o, dirs = overrides or {}, Dirs.of(cfg)
    text, networks = parse_networks(recipe.prompt)
    refuse_and(text)
    recipe.loras = [_lora_entry(n, dirs) for n in networks]
    found = resources.embeddings_in(f"{text}\n{recipe.negative_prompt}", dirs.embeddings)
    recipe.embeddings = [resources.embedding_entry(e) for e in found]
    recipe.sampler, recipe.schedule = _sampler(
        o.get("sampler", cfg.model.sampler), o.get("schedule", cfg.model.schedule), model
    )
    recipe.scheduler = _scheduler_class(recipe, model)
    recipe.clip_skip = _clip_skip(o.get("clip_skip", cfg.model.clip_skip), model)
    recipe.emphasis = cfg.prompt.emphasis
    recipe.vae = dict(model.vae)
    recipe.versions = versions()
    recipe.encoder = encoder_mode(recipe.emphasis)


def _lora_entry(network, dirs: Dirs) -> dict:
    if network.kind.lower() not in ("lora", "lyco"):
        raise AiimgError(
            f"<{network.kind}:{network.name}:...> in the prompt: only <lora:...> extra networks are supported "
            f"(hypernetworks are not); remove it"
        )
    lora = resources.find_lora(network.name, dirs.loras)
    resources.check_lora(lora.path)
    return resources.lora_entry(lora, network.te, network.unet, name=network.name)


def _sampler(sampler: str, schedule: str, model) -> tuple[str, str]:
    """(A1111 sampler, schedule type), checked by building it: a sampler that cannot run here
    (a schedule diffusers lacks for it, a missing package) fails now, not at every image."""
    base = _base_scheduler(model)
    own, own_schedule = resources.sampler_names(base)
    if not sampler and not schedule:
        return own, own_schedule
    if not sampler and own not in resources.SAMPLERS:
        raise AiimgError(f"schedule type {schedule!r} needs a sampler: set [model] sampler (the model's is {own!r})")
    name, schedule = resources.split_sampler(sampler or own, schedule)
    resources.scheduler_for(name, schedule, base.config)
    return name, schedule


def _clip_skip(skip: int, model) -> int:
    layers = model.text_layers
    if skip > layers:
        raise AiimgError(f"clip_skip = {skip}: this model's text encoder has {layers} layers; use 1..{layers}")
    return skip


def _scheduler_class(recipe, model) -> str:
    if recipe.sampler not in resources.SAMPLERS:
        return type(_base_scheduler(model)).__name__
    return resources.SAMPLERS[recipe.sampler].scheduler


def _base_scheduler(model):
    """The scheduler the model was loaded with (the config's choice), kept before any sampler change.
    ``model``: a models.Loaded, or the models.ModelInfo a worker sent (the owner plans with it)."""
    if model.base_scheduler is None:
        model.base_scheduler = model.txt2img.scheduler
    return model.base_scheduler


@functools.lru_cache(maxsize=1)
def _versions() -> tuple:
    from importlib.metadata import PackageNotFoundError, version

    from pipeline import __version__

    found = {"aiimg": __version__}
    for name in ("torch", "diffusers", "transformers", "peft", "safetensors"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return tuple(found.items())


def versions() -> dict:
    """The libraries that made the pixels (what a bit-exact rerun needs besides the hardware)."""
    return dict(_versions())


# -- 2. before the run ------------------------------------------------------------------------


def prepare(model, pipe, recipe, dirs: Dirs, steps: int) -> Prepared:
    """Set the sampler, activate the LoRAs and embeddings, encode the prompt for ``steps`` steps."""
    from pipeline.encoding import encode, parse_networks

    _set_sampler(model, recipe)
    adapters = _adapters(model)
    adapters.activate([(resources.find_lora(e["name"], dirs.loras), e["te"], e["unet"]) for e in recipe.loras])
    adapters.ensure_embeddings([resources.find_embedding(e["name"], dirs.embeddings) for e in recipe.embeddings])
    text, _ = parse_networks(recipe.prompt)
    cond = encode(
        pipe,
        adapters.expand_embeddings(text, [e["name"] for e in recipe.embeddings]),
        adapters.expand_embeddings(recipe.negative_prompt, [e["name"] for e in recipe.embeddings]),
        clip_skip=recipe.clip_skip,
        emphasis=recipe.emphasis,
        steps=steps,
    )
    callback = cond.callback if cond.scheduled else None
    return Prepared(cond.kwargs(), callback, cond.tensor_inputs if cond.scheduled else [], cond.chunks)


def _adapters(model):
    from pipeline.adapters import Adapters

    if model.adapters is None:
        model.adapters = Adapters(model.txt2img)
    return model.adapters


def _set_sampler(model, recipe) -> None:
    """Both pipelines get the recipe's sampler, built on the model's own scheduler config."""
    key = (recipe.sampler, recipe.schedule)
    if model.sampler_key == key:
        return
    base = _base_scheduler(model)
    known = recipe.sampler in resources.SAMPLERS
    scheduler = resources.scheduler_for(recipe.sampler, recipe.schedule, base.config) if known else base
    model.txt2img.scheduler = scheduler
    model.img2img.scheduler = scheduler
    model.sampler_key = key
