"""Recipes (draft.json, work.json entries), the A1111 ``parameters`` text, PNG text chunks.

A recipe is a flat JSON object, enough to regenerate the same pixels on the same model and
hardware::

    id, created (ISO 8601 UTC), model {"name", "hash"}, scheduler, template, prompt,
    negative_prompt, picks [{"token", "value"}...], prompt_seed, seed, width, height, steps,
    guidance_scale, seconds, aiimg_version
    + for variations: strength, parent (draft id), index, file, round, stage_areas
    + for drafts once scored: scores {"score", "scorers": {name: {...}}, "flags": [...]}

Every PNG carries the same recipe as the A1111 ``parameters`` chunk (what Civitai reads)::

    <prompt>
    Negative prompt: <negative>
    Steps: 25, Sampler: Euler, CFG scale: 7.0, Seed: 123, Size: 832x768, Model hash: 3f08453, ...
"""

from __future__ import annotations

import io
import json

from PIL import Image, PngImagePlugin

from pipeline import __version__

SAMPLER_NAMES = {
    # diffusers scheduler class -> the A1111 sampler name Civitai shows
    "EulerDiscreteScheduler": "Euler",
    "EulerAncestralDiscreteScheduler": "Euler a",
    "DPMSolverMultistepScheduler": "DPM++ 2M",
    "DPMSolverSinglestepScheduler": "DPM++ SDE",
    "DDIMScheduler": "DDIM",
    "PNDMScheduler": "PLMS",
    "LMSDiscreteScheduler": "LMS",
    "HeunDiscreteScheduler": "Heun",
    "KDPM2DiscreteScheduler": "DPM2",
    "UniPCMultistepScheduler": "UniPC",
}


def a1111_parameters(recipe: dict) -> str:
    """The A1111 ``parameters`` text for a recipe."""
    lines = [recipe.get("prompt", "")]
    if recipe.get("negative_prompt"):
        lines.append(f"Negative prompt: {recipe['negative_prompt']}")
    model = recipe.get("model") or {}
    fields = [
        ("Steps", recipe.get("steps")),
        ("Sampler", SAMPLER_NAMES.get(recipe.get("scheduler", ""), recipe.get("scheduler"))),
        ("CFG scale", recipe.get("guidance_scale")),
        ("Seed", recipe.get("seed")),
        ("Size", f"{recipe.get('width')}x{recipe.get('height')}"),
        ("Model hash", model.get("hash")),
        ("Model", model.get("name")),
        ("Denoising strength", recipe.get("strength")),
        ("Template", recipe.get("template")),
        ("Version", f"aiimg {recipe.get('aiimg_version', __version__)}"),
    ]
    lines.append(", ".join(f"{k}: {_quote(v)}" for k, v in fields if v not in (None, "")))
    return "\n".join(lines)


def _quote(value) -> str:
    text = str(value)
    # A1111 JSON-quotes values that would break its "k: v, k: v" parser
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ',:"\n') else text


def parse_parameters(text: str) -> dict:
    """The inverse of :func:`a1111_parameters`, enough for tests and imports."""
    lines = text.split("\n")
    settings = lines.pop() if lines and lines[-1].startswith("Steps: ") else ""
    negative = ""
    if lines and lines[-1].startswith("Negative prompt: "):
        negative = lines.pop()[len("Negative prompt: ") :]
    out = {"prompt": "\n".join(lines), "negative_prompt": negative}
    decoder = json.JSONDecoder()
    rest = settings
    while rest:
        key, _, rest = rest.partition(": ")
        if rest.startswith('"'):
            value, end = decoder.raw_decode(rest)
            rest = rest[end:]
        else:
            value, _, rest = rest.partition(", ")
            rest = ", " + rest if rest else ""
        out[key] = value
        rest = rest[2:] if rest.startswith(", ") else rest
    return out


def png_bytes(image: Image.Image, recipe: dict | None, compress_level: int = 4) -> bytes:
    """PNG with the recipe as A1111 ``parameters`` (iTXt when not Latin-1: Japanese survives)."""
    info = PngImagePlugin.PngInfo()
    if recipe is not None:
        info.add_text("parameters", a1111_parameters(recipe))
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info, compress_level=compress_level)
    return buf.getvalue()


def read_png_parameters(path) -> str | None:
    with Image.open(path) as img:
        return img.text.get("parameters") if hasattr(img, "text") else img.info.get("parameters")
