"""Recipes (draft.json, work.json entries), the A1111 ``parameters`` text, PNG text chunks.

A recipe is a flat JSON object (``pipeline.recipes``), enough to regenerate the same pixels on the
same model and hardware. Every PNG carries it as the A1111 ``parameters`` chunk (what Civitai,
sd-parsers and sd-prompt-reader read), in A1111's order, each field only when set::

    <prompt, <lora:name:0.8> kept>
    Negative prompt: <negative>
    Steps: 25, Sampler: DPM++ 2M, Schedule type: Uniform, CFG scale: 7.0, Seed: 123, Size: 832x768,
    Model hash: 3f0845323f, Model: name, VAE hash: ..., VAE: ..., Denoising strength: 0.5,
    Clip skip: 2, Emphasis: No norm, Template: "...", Lora hashes: "name: <AutoV3>",
    TI hashes: "name: <12 hex>", Hashes: {"model": ..., "embed:name": ...}, Version: aiimg 0.1.0

(one line in the file). Values holding ``,`` ``:`` ``"`` or a newline are JSON-quoted as A1111
quotes them; ``Hashes`` is raw JSON as the Civitai extension writes it. Schedule type is written
only when not "Automatic", Clip skip only above 1, Emphasis only when not "Original". aiimg's own
stages (finishing.py) follow Denoising strength, each only when used: ``Ladder`` (2+ stages),
``Colour correction``, ``Deep Shrink`` (drafts), ``Finishing`` (a finished copy's steps).
"""

from __future__ import annotations

import io
import json
import re

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
# the recipe's emphasis mode -> the name A1111 writes as "Emphasis: ..."
EMPHASIS_NAMES = {"original": "Original", "no-norm": "No norm", "ignore": "Ignore"}
_JSON = json.JSONDecoder()


def a1111_parameters(recipe: dict) -> str:
    """The A1111 ``parameters`` text for a recipe (``Recipe.to_json()``)."""
    lines = [recipe.get("prompt", "")]
    if recipe.get("negative_prompt"):
        lines.append(f"Negative prompt: {recipe['negative_prompt']}")
    fields = [(k, _quote(v)) for k, v in _fields(recipe) if v not in (None, "")]
    hashes = _civitai_hashes(recipe)
    if hashes:
        fields.append(("Hashes", json.dumps(hashes, ensure_ascii=False)))  # raw JSON, as the Civitai extension
    fields.append(("Version", _quote(f"aiimg {recipe.get('aiimg_version') or __version__}")))
    lines.append(", ".join(f"{k}: {v}" for k, v in fields))
    return "\n".join(lines)


def _fields(recipe: dict) -> list[tuple[str, object]]:
    model, vae = recipe.get("model") or {}, recipe.get("vae") or {}
    schedule = recipe.get("schedule") or ""
    clip_skip = recipe.get("clip_skip") or 1
    emphasis = str(recipe.get("emphasis") or "original")
    return [
        ("Steps", recipe.get("steps")),
        ("Sampler", recipe.get("sampler") or SAMPLER_NAMES.get(recipe.get("scheduler", ""), recipe.get("scheduler"))),
        ("Schedule type", "" if schedule == "Automatic" else schedule),
        ("CFG scale", recipe.get("guidance_scale")),
        ("Seed", recipe.get("seed")),
        ("Size", f"{recipe.get('width')}x{recipe.get('height')}"),
        ("Model hash", model.get("hash")),
        ("Model", model.get("name")),
        ("VAE hash", vae.get("hash")),
        ("VAE", vae.get("name")),
        ("Denoising strength", recipe.get("strength")),
        ("Ladder", _ladder(recipe.get("stages"))),
        ("Colour correction", "LAB to draft" if recipe.get("colour_correction") else None),
        ("Deep Shrink", _deep_shrink(recipe.get("deep_shrink"))),
        ("Finishing", _finishing(recipe.get("finished"))),
        ("Clip skip", clip_skip if clip_skip > 1 else None),
        ("Emphasis", None if emphasis.lower() == "original" else EMPHASIS_NAMES.get(emphasis, emphasis)),
        ("Template", recipe.get("template")),
        ("Lora hashes", _hash_list(recipe.get("loras"), "hash")),
        ("TI hashes", _hash_list(recipe.get("embeddings"), "hash")),
    ]


def _ladder(stages) -> str:
    """Every stage of a ladder of 2+ (one stage says nothing the Size and Denoising strength do not)."""
    if not stages or len(stages) < 2:
        return ""
    return "; ".join(
        f"{s['width']}x{s['height']} strength {s['strength']} steps {s['steps']} via {s.get('upscaler') or 'Lanczos'}"
        for s in stages
    )


def _deep_shrink(shrink) -> str:
    if not shrink:
        return ""
    return f"down block {shrink['block']} 1/{shrink['factor']} until timestep {shrink['until_timestep']:g}"


def _finishing(finished) -> str:
    """The finished copy's steps, in order, e.g. ``upscale 4x.pth x4 to 4096x4096; unsharp 2/50/3``.
    Read from work.json, which a person may have edited: a step missing a value is said without it."""
    if not isinstance(finished, dict):
        return ""
    said = []
    for step in finished.get("steps") or ():
        if isinstance(step, dict):
            said.append(_FINISH_STEP.get(step.get("step"), "{step}").format_map(_Blank(step)).strip())
    return "; ".join(s for s in said if s) or "copy"


_FINISH_STEP = {
    "upscale": "upscale {name} x{scale} to {width}x{height}",
    "resize": "resize {filter} to {width}x{height}",
    "unsharp": "unsharp radius {radius} percent {percent} threshold {threshold}",
}


class _Blank(dict):
    def __missing__(self, key: str) -> str:
        return "?"


def _hash_list(entries, key: str) -> str:
    """``"name: hash, name2: hash2"``; A1111 strips ``:`` and ``,`` from names so the list parses."""
    pairs = {_plain_name(e.get("name", "")): e.get(key) for e in entries or () if e.get(key)}
    return ", ".join(f"{name}: {value}" for name, value in pairs.items() if name)


def _plain_name(name: str) -> str:
    return str(name).replace(":", "").replace(",", "")


def _civitai_hashes(recipe: dict) -> dict:
    """The Civitai extension's ``Hashes`` object: AutoV2 (10 hex of the whole file's sha256) of
    every resource, which is how Civitai links embeddings (and LoRAs when the recipe has their sha256)."""
    out = {}
    if (recipe.get("model") or {}).get("hash"):
        out["model"] = recipe["model"]["hash"]
    if (recipe.get("vae") or {}).get("hash"):
        out["vae"] = recipe["vae"]["hash"]
    for lora in recipe.get("loras") or ():
        if lora.get("sha256"):
            out[f"lora:{_plain_name(lora.get('name', ''))}"] = lora["sha256"][:10]
    for emb in recipe.get("embeddings") or ():
        digest = emb.get("sha256") or emb.get("hash") or ""
        if digest:
            out[f"embed:{_plain_name(emb.get('name', ''))}"] = digest[:10]
    return out


def _quote(value) -> str:
    text = str(value)
    # A1111 JSON-quotes values that would break its "k: v, k: v" parser
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ',:"\n') else text


def parse_parameters(text: str) -> dict:
    """The fields of an A1111 ``parameters`` text as A1111, Forge, Civitai and aiimg write it:
    ``prompt`` and ``negative_prompt`` (each possibly multi-line), then every setting of the
    ``Steps:`` line by its key. Values are strings, JSON-quoted ones unquoted; JSON objects and
    arrays (``Hashes: {...}``, ``Civitai resources: [...]``) are decoded."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").rstrip("\n").split("\n")
    steps = [i for i, line in enumerate(lines) if line.startswith("Steps: ")]
    body, settings = (lines[: steps[-1]], lines[steps[-1] :]) if steps else (lines, [])
    negative_at = next((i for i, line in enumerate(body) if line.startswith("Negative prompt:")), len(body))
    negative = "\n".join(body[negative_at:])[len("Negative prompt:") :]
    out = {
        "prompt": "\n".join(body[:negative_at]),
        "negative_prompt": negative[1:] if negative[:1] == " " else negative,
    }
    for line in settings:
        out.update(parse_settings(line))
    return out


_KEY = re.compile(r"\s*([^\s:,][^:,]*?):\s*")


def parse_settings(line: str) -> dict:
    """``"Steps: 20, Sampler: Euler a, Template: \"a, b\", Hashes: {...}"`` -> a dict."""
    out: dict = {}
    pos = 0
    while pos < len(line):
        key = _KEY.match(line, pos)
        if not key:
            break  # trailing text that is no setting: keep what was read
        value, pos = _value(line, key.end())
        out[key.group(1).strip()] = value
        pos = _after_comma(line, pos)
    return out


def _value(line: str, pos: int) -> tuple[object, int]:
    if line[pos : pos + 1] in ('"', "{", "["):
        try:
            value, end = _JSON.raw_decode(line, pos)
        except ValueError:
            pass
        else:
            if _after_comma(line, end) != end or end == len(line) or line[end:].strip() == "":
                return value, end
    end = line.find(",", pos)
    end = len(line) if end < 0 else end
    return line[pos:end].strip(), end


def _after_comma(line: str, pos: int) -> int:
    rest = len(line) - len(line[pos:].lstrip())
    return rest + 1 if line[rest : rest + 1] == "," else pos


def parse_hash_list(value) -> dict:
    """``"name: hash, name2: hash2"`` (``Lora hashes``, ``TI hashes``) -> ``{name: hash}``."""
    out = {}
    for item in str(value or "").split(","):
        name, sep, digest = item.rpartition(":")
        if sep and name.strip() and digest.strip():
            out[name.strip()] = digest.strip()
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
