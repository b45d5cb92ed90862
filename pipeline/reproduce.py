"""Read what another image was made with, to make it again or build on it (``aiimg draft --from``).

Sources: a PNG from aiimg, A1111, Forge or Civitai (its ``parameters`` text chunk), a JPEG or
WebP from A1111/Forge (the same text in EXIF UserComment), or an aiimg ``draft.json``. The
result, :class:`Imported`, uses the recipe's field names and meanings (A1111 sampler and
schedule, A1111 clip skip, loras/embeddings as the recipe lists them) so a recipe can be filled
from it directly; :func:`check_available` then says which LoRAs and embeddings this machine
lacks, by name or, for a renamed file, by hash.

Schedules: A1111 1.9+ writes ``Sampler: DPM++ 2M, Schedule type: Karras``; before, one name
(``DPM++ 2M Karras``), and a name without a suffix meant the sampler's plain timesteps even
where 1.9+ would now pick another schedule automatically, so such images read as "Uniform".
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import resources
from pipeline.errors import AiimgError
from pipeline.metadata import parse_hash_list, parse_parameters
from pipeline.resources import EXTRA_NETWORK, EmbeddingFile, LoraFile

log = logging.getLogger("aiimg.resources")

RECIPE_FIELDS = (
    "prompt negative_prompt seed width height steps guidance_scale sampler schedule "
    "clip_skip emphasis template model vae loras embeddings"
).split()
_USER_COMMENT = 0x9286
_EXIF_IFD = 0x8769


@dataclass
class Imported:
    """What an image (or draft.json) was made with, in the recipe's terms."""

    source: Path
    prompt: str  # with its <lora:name:weight> tags, as written
    negative_prompt: str = ""
    seed: int | None = None
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    sampler: str = ""  # A1111 name, e.g. "DPM++ 2M"
    schedule: str = ""  # A1111 schedule type; "" = Automatic
    clip_skip: int = 1
    emphasis: str = "original"
    strength: float | None = None  # img2img's denoising strength
    template: str = ""
    model: dict = field(default_factory=dict)  # {"name", "hash"} (hash: AutoV2)
    vae: dict = field(default_factory=dict)  # {"name", "hash"}
    loras: list = field(default_factory=list)  # [{"name", "te", "unet", "hash" (AutoV3), "autov2"?}]
    embeddings: list = field(default_factory=list)  # [{"name", "hash" (12 hex), "autov2"?}]
    tool: str = ""  # the Version field: "v1.10.1", "f2.0.1v1.10.1-...", "aiimg 0.1.0"
    settings: dict = field(default_factory=dict)  # every setting as read, for what aiimg does not use

    def recipe_fields(self) -> dict:
        """The fields a DraftRecipe takes from this (those that are known)."""
        return {n: getattr(self, n) for n in RECIPE_FIELDS if getattr(self, n) is not None}


@dataclass
class Resolved:
    """The local files for an Imported's resources; ``renamed`` maps the image's names to local
    ones found by hash (the prompts here already use the local names)."""

    loras: dict[str, LoraFile] = field(default_factory=dict)
    embeddings: dict[str, EmbeddingFile] = field(default_factory=dict)
    prompt: str = ""
    negative_prompt: str = ""
    renamed: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # worth telling the creator; not errors


def recipe_from(path: str | Path) -> Imported:
    """What ``path`` (an image or an aiimg draft.json) was made with; AiimgError if it cannot say."""
    path = Path(path)
    if not path.is_file():
        raise AiimgError(f"{path}: no such file")
    if path.suffix.lower() == ".json":
        return _from_recipe_json(path)
    return from_parameters(_image_parameters(path), path)


# -- reading the text -------------------------------------------------------------------------


def _image_parameters(path: Path) -> str:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            text = getattr(img, "text", {}) or {}
            found = text.get("parameters") or img.info.get("parameters") or _user_comment(img)
            keys = sorted(text) or sorted(k for k in img.info if isinstance(img.info[k], str))
    except (OSError, UnidentifiedImageError) as exc:
        raise AiimgError(f"{path}: not an image aiimg can read ({exc})") from None
    if found:
        return found
    hint = " (it holds a ComfyUI workflow, not A1111 parameters)" if {"prompt", "workflow"} & set(keys) else ""
    raise AiimgError(
        f"{path}: no generation parameters in it{hint}: no PNG 'parameters' text and no EXIF UserComment. "
        f"Sites and editors often strip them: use the original file"
    )


def _user_comment(img) -> str:
    """A1111/Forge's text in a JPEG or WebP: EXIF UserComment, an 8-byte charset then the text."""
    raw = img.getexif().get_ifd(_EXIF_IFD).get(_USER_COMMENT)
    if isinstance(raw, str):
        return raw
    if not isinstance(raw, bytes) or len(raw) <= 8:
        return ""
    head, body = raw[:8], raw[8:]
    if head.startswith(b"UNICODE"):
        # piexif (what A1111 uses) writes UTF-16 big-endian, some tools little-endian: the ASCII
        # settings line puts its zero bytes first in each pair in big-endian
        big = body[:2] == b"\xfe\xff" or (body[:2] != b"\xff\xfe" and body[0::2].count(0) >= body[1::2].count(0))
        return body.decode("utf-16-be" if big else "utf-16-le", errors="replace").lstrip("\ufeff").rstrip("\0")
    return body.decode("utf-8", errors="replace").rstrip("\0")


def from_parameters(text: str, source: Path | str = "") -> Imported:
    """An Imported from an A1111 ``parameters`` text."""
    p = parse_parameters(text)
    if "Steps" not in p:
        raise AiimgError(f"{source}: its parameters have no 'Steps:' line, so no settings to reproduce")
    hashes = p.get("Hashes") if isinstance(p.get("Hashes"), dict) else {}
    sampler, schedule = _sampler(p)
    width, height = _size(p.get("Size", ""), source)
    return Imported(
        source=Path(source),
        prompt=p["prompt"],
        negative_prompt=p["negative_prompt"],
        seed=_number(p, "Seed", int, source),
        width=width,
        height=height,
        steps=_number(p, "Steps", int, source),
        guidance_scale=_number(p, "CFG scale", float, source),
        sampler=sampler,
        schedule=schedule,
        clip_skip=_number(p, "Clip skip", int, source) or 1,
        emphasis=_emphasis(p, source),
        strength=_number(p, "Denoising strength", float, source),
        template=str(p.get("Template", "")),
        model={"name": _model_name(p), "hash": p.get("Model hash") or hashes.get("model", "")},
        vae={"name": p.get("VAE", ""), "hash": p.get("VAE hash") or hashes.get("vae", "")} if _has_vae(p) else {},
        loras=_loras(p, hashes, source),
        embeddings=_embeddings(p, hashes),
        tool=str(p.get("Version", "")),
        settings={k: v for k, v in p.items() if k not in ("prompt", "negative_prompt")},
    )


def _from_recipe_json(path: Path) -> Imported:
    from pipeline.recipes import DraftRecipe

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AiimgError(f"{path}: not readable JSON ({exc})") from None
    recipe = DraftRecipe.from_json(data, path)
    sampler = recipe.sampler
    if not sampler and recipe.scheduler:
        from pipeline.metadata import SAMPLER_NAMES

        sampler = SAMPLER_NAMES.get(recipe.scheduler, recipe.scheduler)
    fields = {k: getattr(recipe, k) for k in RECIPE_FIELDS}
    return Imported(source=path, **{**fields, "sampler": sampler}, tool=f"aiimg {recipe.aiimg_version}")


# -- the settings, one by one -----------------------------------------------------------------


def _emphasis(p: dict, source) -> str:
    """A1111's "Emphasis: No norm" as the recipe's "no-norm"; its "None" (brackets as literal
    text) has no equivalent here."""
    from pipeline.metadata import EMPHASIS_NAMES

    written = str(p.get("Emphasis", "Original")).strip()
    modes = {name.lower(): mode for mode, name in EMPHASIS_NAMES.items()}
    if written.lower() not in modes:
        raise AiimgError(
            f"{source}: Emphasis: {written} is not supported here (known: {', '.join(EMPHASIS_NAMES.values())})"
        )
    return modes[written.lower()]


def _number(p: dict, key: str, kind, source):
    value = p.get(key)
    if value in (None, ""):
        return None
    try:
        return kind(float(value)) if kind is int else kind(value)
    except (TypeError, ValueError):
        raise AiimgError(f"{source}: {key} = {value!r} is not a number") from None


def _size(text: str, source) -> tuple[int | None, int | None]:
    if not text:
        return None, None
    m = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", str(text))
    if not m:
        raise AiimgError(f"{source}: Size = {text!r} is not WIDTHxHEIGHT")
    return int(m.group(1)), int(m.group(2))


def _sampler(p: dict) -> tuple[str, str]:
    raw, schedule = str(p.get("Sampler", "")), str(p.get("Schedule type", ""))
    if not raw:
        return "", ""
    try:
        name, sched = resources.split_sampler(raw, schedule)
    except AiimgError:
        return raw, schedule  # kept as written: check_available says it has no equivalent here
    if not sched and "Schedule type" not in p and _before_schedule_types(p):
        sched = "" if resources.SAMPLERS[name].schedule == "Uniform" else "Uniform"
    return name, sched


def _before_schedule_types(p: dict) -> bool:
    """Made by A1111/Forge before 1.9 (no separate schedule types): no Version, or v1.x < 1.9.
    aiimg writes Schedule type itself, and sampler names with the 1.9 meaning."""
    version = str(p.get("Version", ""))
    if version.startswith("aiimg"):
        return False
    found = re.findall(r"v(\d+)\.(\d+)", version)
    return not found or tuple(map(int, found[-1])) < (1, 9)


def _model_name(p: dict) -> str:
    if p.get("Model"):
        return str(p["Model"])
    resources_list = p.get("Civitai resources")
    for item in resources_list if isinstance(resources_list, list) else ():
        if isinstance(item, dict) and item.get("type") == "checkpoint":
            return str(item.get("modelName", ""))
    return ""


def _has_vae(p: dict) -> bool:
    return bool(p.get("VAE") or p.get("VAE hash"))


def prompt_loras(prompt: str) -> list[tuple[str, float, float]]:
    """``(name, te, unet)`` of every ``<lora:name:te:unet>`` (and ``<lyco:...>``) in a prompt:
    unet defaults to te, te to 1.0; ``te=``/``unet=`` may be named."""
    found = []
    for kind, args in EXTRA_NETWORK.findall(prompt):
        if kind.lower() not in ("lora", "lyco"):
            continue
        parts = args.split(":")
        named = {k.strip().lower(): v for k, _, v in (a.partition("=") for a in parts[1:] if "=" in a)}
        plain = [a for a in parts[1:] if "=" not in a]
        te = _weight(named.get("te", plain[0] if plain else "1"), prompt)
        unet = _weight(named.get("unet", plain[1] if len(plain) > 1 else str(te)), prompt)
        found.append((parts[0].strip(), te, unet))
    return found


def _weight(text: str, prompt: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise AiimgError(f"LoRA weight {text!r} in {prompt!r} is not a number") from None


def _loras(p: dict, hashes: dict, source) -> list[dict]:
    v3 = parse_hash_list(p.get("Lora hashes", ""))
    v3_lower = {k.lower(): v for k, v in v3.items()}
    out = []
    for name, te, unet in prompt_loras(p["prompt"]):
        plain = name.replace(":", "").replace(",", "")
        entry = {"name": name, "te": te, "unet": unet, "hash": v3.get(plain) or v3_lower.get(plain.lower(), "")}
        if hashes.get(f"lora:{plain}"):
            entry["autov2"] = hashes[f"lora:{plain}"]
        out.append(entry)
    return out


def _embeddings(p: dict, hashes: dict) -> list[dict]:
    out = {name: {"name": name, "hash": digest} for name, digest in parse_hash_list(p.get("TI hashes", "")).items()}
    for key, digest in hashes.items():
        if key.startswith("embed:"):
            name = key[len("embed:") :]
            out.setdefault(name, {"name": name, "hash": ""})["autov2"] = digest
    return list(out.values())


# -- what this machine has --------------------------------------------------------------------


def check_available(imported: Imported, lora_dirs, embedding_dirs) -> Resolved:
    """The local files for every LoRA and embedding the image used, matched by name, else by hash
    (a renamed file); AiimgError naming each one missing (with its hash, to search Civitai by),
    and a sampler that has no diffusers equivalent here."""
    resolved = Resolved(prompt=imported.prompt, negative_prompt=imported.negative_prompt)
    missing = _sampler_problem(imported)
    for lora in imported.loras:
        found = _local_lora(lora, lora_dirs, resolved)
        if found is None:
            missing.append(f"LoRA {lora['name']!r} ({_hash_words(lora, 'AutoV3')})")
    for emb in imported.embeddings:
        found = _local_embedding(emb, embedding_dirs, resolved)
        if found is None:
            missing.append(f"embedding {emb['name']!r} ({_hash_words(emb, 'hash')})")
    if missing:
        folders = f"LoRA folders {_dir_list(lora_dirs)}; embedding folders {_dir_list(embedding_dirs)}"
        raise AiimgError(
            f"{imported.source}: made with what this machine lacks:\n  - "
            + "\n  - ".join(missing)
            + f"\nLooked in {folders}. Download them (search the hash on Civitai) into one of those folders."
        )
    _rename(resolved)
    return resolved


def _sampler_problem(imported: Imported) -> list[str]:
    if not imported.sampler:
        return []
    try:
        resources.split_sampler(imported.sampler, imported.schedule)
    except AiimgError as exc:
        return [str(exc)]
    return []


def _local_lora(lora: dict, dirs, resolved: Resolved) -> LoraFile | None:
    name = lora["name"]
    try:
        found = resources.find_lora(name, dirs)
    except AiimgError:
        found = _lora_by_hash(lora, dirs)
        if found is None:
            return None
        resolved.renamed[name] = found.name
        resolved.notes.append(f"LoRA {name!r} is {found.path} here (same hash, another name)")
    else:
        if not _same(found, lora):
            resolved.notes.append(
                f"LoRA {name!r}: {found.path} has hash {found.hash}, the image used {lora.get('hash')} "
                f"(another version? the pixels will differ)"
            )
    resolved.loras[name] = found
    return found


def _same(found: LoraFile | EmbeddingFile, wanted: dict) -> bool:
    if wanted.get("hash"):
        return found.hash.lower().startswith(wanted["hash"].lower()[:12])
    if wanted.get("autov2"):
        return found.sha256.lower().startswith(wanted["autov2"].lower()[:10])
    return True  # nothing to compare with: the name is all the image says


def _lora_by_hash(lora: dict, dirs) -> LoraFile | None:
    if not (lora.get("hash") or lora.get("autov2")):
        return None
    for candidate in resources.lora_files(dirs):
        if _same(candidate, lora):
            return candidate
    return None


def _local_embedding(emb: dict, dirs, resolved: Resolved) -> EmbeddingFile | None:
    name = emb["name"]
    try:
        found = resources.find_embedding(name, dirs)
    except AiimgError:
        found = None
        if emb.get("hash") or emb.get("autov2"):
            found = next((e for e in resources.embedding_files(dirs) if _same(e, emb)), None)
        if found is None:
            return None
        resolved.renamed[name] = found.name
        resolved.notes.append(f"embedding {name!r} is {found.path} here (same hash, another name)")
    else:
        if not _same(found, emb):
            resolved.notes.append(
                f"embedding {name!r}: {found.path} has hash {found.hash}, the image used {emb['hash']}"
            )
    resolved.embeddings[name] = found
    return found


def _rename(resolved: Resolved) -> None:
    for old, new in resolved.renamed.items():
        lora = re.compile(r"(<(?:lora|lyco):)" + re.escape(old) + r"(?=[:>])", re.IGNORECASE)
        word = re.compile(r"(?<!\w)" + re.escape(old) + r"(?!\w)", re.IGNORECASE)
        for attr in ("prompt", "negative_prompt"):
            text = lora.sub(lambda m, new=new: m.group(1) + new, getattr(resolved, attr))
            if old in resolved.embeddings:
                text = word.sub(new, text)
            setattr(resolved, attr, text)


def _hash_words(entry: dict, label: str) -> str:
    parts = [f"{label} {entry['hash']}"] if entry.get("hash") else []
    parts += [f"AutoV2 {entry['autov2']}"] if entry.get("autov2") else []
    return ", ".join(parts) or "no hash recorded"


def _dir_list(dirs) -> str:
    folders = [str(d) for d in ([dirs] if isinstance(dirs, str | Path) else dirs)]
    return ", ".join(folders) or "(none configured)"
