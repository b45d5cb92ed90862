"""aiimg.toml -> frozen dataclasses, from one declaration.

Every key is declared once, as a field of a section dataclass: ``key(default, doc, ...)``
holds its default, its one-line doc, its allowed range or choices and the name a seed.txt may
override it by. The type is the default's type (and the field's annotation; a test checks
they agree). Everything else reads that declaration: the loader and its range checks,
:func:`seed_overrides` (a seed.txt's keys), :func:`documented_toml` (``aiimg config
--defaults`` and the repo's aiimg.toml).

Every problem of one file is reported at once, in one ``ConfigError`` whose every line names
the file, the key, the value and what is allowed. Paths in the file are relative to the
file's folder. CLI options override the file through :func:`override`.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pipeline import sizes
from pipeline.errors import ConfigError

SCORERS = ("default", "aesthetic", "preference")
MAX_AREA = 4096 * 4096
PORT = {"min": 0, "max": 65535}  # 0: the OS picks a free port
DOCUMENTED_HEADER = """\
# aiimg.toml: the one config file of an aiimg project. Every key is optional: a key left out
# takes its default (`aiimg config --defaults` prints them all, in this form). An unknown key
# or a value out of range is an error naming the file, the key, the value and what is allowed.
# Paths are relative to this file. CLI options (--content, --model, --output, --base-url,
# --port) win over it.
#
# [model] id: "tiny" (built-in, for tests and the demo; its images are noise), a diffusers
#   repo id from the local Hugging Face cache ("stable-diffusion-v1-5/stable-diffusion-v1-5"),
#   a local diffusers folder, or a single "model.safetensors" with [model] config = its config folder.
"""


@dataclass(frozen=True)
class Key:
    """One config key: its default (whose type is the key's type), doc and allowed values."""

    default: Any
    doc: str
    min: float | None = None
    max: float | None = None
    choices: tuple = ()
    nonempty: bool = False  # a text or list that must not be empty
    item: Key | None = None  # every element of a list, every value of a table
    names: tuple = ()  # the keys a table may have
    label: str = "key"  # what a table's keys are, in messages ("unknown scorer 'x'")
    check: Callable[[Any], str] | None = None  # what else is wrong with a value ("" = nothing)
    allowed: str = ""  # the allowed values in words, where the rules above cannot say it
    seed: str = ""  # the name a seed.txt overrides this key by ("" = it cannot)
    seed_doc: str = ""  # the doc under that name, when it differs
    one: bool = False  # a list that may be written as its one item (devices = "auto")

    @property
    def kind(self) -> type:
        return type(self.default)

    def allowed_text(self) -> str:
        if self.allowed:
            return self.allowed
        if self.choices:
            return " | ".join(map(str, self.choices))
        if self.kind is bool:
            return "true | false"
        if self.kind is str:
            return "non-empty text" if self.nonempty else "any text"
        if self.kind is dict:
            return f"a table of {' | '.join(self.names)} = {self.item.allowed_text()}"
        if self.kind is list:
            also = ", or one such value alone" if self.one else ""
            return f"a list of {'1 or more ' if self.nonempty else ''}values, each {self.item.allowed_text()}{also}"
        return _bounds(self.min, self.max)


def _bounds(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"{low}..{high}"
    return f">= {low}" if low is not None else f"<= {high}" if high is not None else "any number"


def key(default: Any, doc: str, **rules: Any) -> Any:
    """A dataclass field declaring one config key (see :class:`Key` for the rules)."""
    spec = Key(default, doc, **rules)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"key": spec})
    return field(default=default, metadata={"key": spec})


def _aspect_problem(value: list) -> str:
    try:
        sizes.parse_aspects(value)
    except ValueError as exc:
        return str(exc)
    return ""


def _url_problem(value: str) -> str:
    parts = urlsplit(value)
    return "" if parts.scheme in ("http", "https") and parts.netloc else "not an absolute http(s) URL"


def _sampler_problem(value: str) -> str:
    return _resource_problem(lambda resources: resources.split_sampler(value)) if value else ""


def _schedule_problem(value: str) -> str:
    return _resource_problem(lambda resources: resources.split_sampler("Euler", value)) if value else ""


def _resource_problem(check: Callable) -> str:
    from pipeline import resources  # no torch: the sampler table is plain data
    from pipeline.errors import AiimgError

    try:
        check(resources)
    except AiimgError as exc:
        return str(exc)
    return ""


def _device_problem(value: str) -> str:
    if value in ("auto", "cpu", "mps", "cuda"):
        return ""
    number = value.removeprefix("cuda:")
    return "" if number != value and number.isdigit() else "not a device"


def _devices_problem(value: list) -> str:
    if "auto" in value and len(value) > 1:
        return "auto stands alone"
    return "mps is one device: list it once" if value.count("mps") > 1 else ""


def _class_name_problem(value: str) -> str:
    return "" if value == "" or value.isidentifier() else "not a class name"


@dataclass(frozen=True)
class ModelConfig:
    id: str = key(
        "tiny", "diffusers repo id (local HF cache) | local folder | file.safetensors/.ckpt | tiny", nonempty=True
    )
    config: str = key(
        "",
        "for a single-file checkpoint: '' (detect SD1/SD2/SDXL; configs ship with aiimg), a kind "
        "(v1, v2, v2_base, xl_base) or a local diffusers config folder",
    )
    device: str = key("auto", "where to run (auto: cuda, then mps, then cpu)", choices=("auto", "cuda", "mps", "cpu"))
    scheduler: str = key(
        "",
        "diffusers scheduler class name, e.g. DPMSolverMultistepScheduler ('' keeps the model's); sampler wins",
        check=_class_name_problem,
        allowed="'' or a class name",
    )
    sampler: str = key(
        "",
        "sampler by its A1111 name, e.g. 'DPM++ 2M', 'Euler a', 'DPM++ 2M Karras' ('' keeps the model's)",
        check=_sampler_problem,
        allowed="'' or an A1111 sampler name",
        seed="sampler",
    )
    schedule: str = key(
        "",
        "A1111 schedule type: '' (the sampler's own), Karras, Exponential, ...",
        check=_schedule_problem,
        allowed="'' or an A1111 schedule type",
        seed="schedule",
    )
    clip_skip: int = key(
        1,
        "A1111's Clip skip: 1 = none, 2 = the penultimate layer (ignored on SDXL, as A1111)",
        min=1,
        max=12,
        seed="clip_skip",
    )
    vae: str = key("", "a VAE instead of the checkpoint's own: a diffusers VAE folder or a .safetensors file")
    lora_dirs: list = key(
        [],
        "folders searched for <lora:name:weight> files, sub-folders too (A1111's models/Lora works as it is)",
        item=Key("", "folder", nonempty=True),
    )
    embedding_dirs: list = key(
        [],
        "folders searched for textual-inversion embeddings, used by file name in a prompt (A1111's embeddings/)",
        item=Key("", "folder", nonempty=True),
    )


@dataclass(frozen=True)
class PromptConfig:
    template: str = key(
        "masterpiece, best quality, {red|blue|silver|black} hair, "
        "{red kimono|silver armor|white summer dress|black leather jacket}, "
        "{neon city at night|cherry blossom garden|snowy mountain pass|sunlit library}",
        "prompt template: fixed text + {a|b} choices + __name__ wildcards (a line of content/prompts/name.txt)",
    )
    negative: str = key(
        "lowres, bad anatomy, bad hands, worst quality",
        "negative prompt for every image",
        seed="negative_prompt",
        seed_doc="negative prompt for the variations instead of the draft's",
    )
    emphasis: str = key(
        "original",
        "how (word:1.2) weights apply, as A1111's setting: original, no-norm (no mean restore), ignore",
        choices=("original", "no-norm", "ignore"),
    )
    steer: bool = key(
        False,
        "steer drafts toward what you seed: each {a|b} choice, __wildcard__ line and aspect bucket is drawn by "
        "Thompson sampling on its seed rate among the drafts you have seen (docs/ranking.md)",
    )
    steer_floor: float = key(
        0.1,
        "with steer: no option's probability falls below this fraction of its share under the template's own "
        "weights (0 = no floor, 1 = no steering)",
        min=0,
        max=1,
    )


@dataclass(frozen=True)
class DraftConfig:
    area: int = key(
        640000, "draft area in pixels (800x800); width and height are multiples of 64", min=4096, max=MAX_AREA
    )
    aspect: list = key(
        ["2:3", "3:2"],
        "aspect ratios (width:height): two = a range to draw from; one or more than two = a list to pick from",
        nonempty=True,
        check=_aspect_problem,
        allowed='1 or more ratios like "2:3" or 1.5, each within 1:10..10:1',
    )
    steps: int = key(25, "denoising steps per draft", min=1, max=1000)
    guidance_scale: float = key(7.0, "classifier-free guidance (CFG scale)", min=0, max=100)
    deep_shrink: bool = key(
        False,
        "Kohya Deep Shrink for drafts above the model's native area (SD 1.x at 800x800): the UNet's features "
        "are halved at its first down block early in the schedule; fewer doubled subjects (docs/finishing.md)",
    )
    deep_shrink_end: float = key(
        0.35,
        "Deep Shrink stops after this fraction of the noise schedule (0.35: timesteps 1000..650, Kohya's default)",
        min=0.01,
        max=1,
    )


@dataclass(frozen=True)
class VariationConfig:
    count: int = key(3, "variations per seed", min=1, max=100, seed="count")
    areas: list = key(
        [1000000],
        "area of each stage in pixels; a longer list is a ladder, each stage img2img of the one before",
        nonempty=True,
        item=Key(0, "area", min=4096, max=MAX_AREA),
    )
    strength: float = key(
        0.5, "img2img denoising strength (0.5 = Fooocus 'Vary (Subtle)')", min=0.01, max=1, seed="strength"
    )
    steps: int = key(30, "denoising steps (img2img runs int(steps * strength) of them)", min=1, max=1000, seed="steps")
    guidance_scale: float = key(7.0, "classifier-free guidance for variations", min=0, max=100, seed="guidance_scale")
    strengths: list = key(
        [],
        "denoising strength of each ladder stage, one per [variation] areas entry ([] = strength at every stage)",
        item=Key(0.0, "strength", min=0.01, max=1),
    )
    min_steps: int = key(
        10,
        "denoising steps every stage runs at least, whatever its strength (steps rise to ceil(min_steps / strength))",
        min=1,
        max=1000,
    )
    colour_correction: str = key(
        "auto",
        "match each stage's colours to the draft (A1111's img2img colour correction: LAB histograms, "
        "luminosity kept); auto = on for a ladder of 2 or more stages",
        choices=("auto", "on", "off"),
    )
    upscaler: str = key(
        "",
        "upscaler model between ladder stages (.pth/.safetensors: ESRGAN, RealESRGAN, SwinIR... read by spandrel, "
        "pip install 'aiimg[finish]'), relative to aiimg.toml; '' = Lanczos",
    )

    def __post_init__(self) -> None:
        # one strength per stage: a list that is off by one would silently shift every stage's strength
        if self.strengths and len(self.strengths) != len(self.areas):
            raise ConfigError(
                f"[variation] strengths = {_toml(self.strengths)} has {len(self.strengths)} entries but "
                f"[variation] areas = {_toml(self.areas)} has {len(self.areas)} stages: give one strength per "
                f"stage, or strengths = [] for strength at every stage"
            )


def _area_problem(value: int) -> str:
    return "" if value == 0 or value >= 4096 else "0 (keep) or at least 4096"


@dataclass(frozen=True)
class FinishConfig:
    enabled: bool = key(
        False,
        "finish every new variation into a copy, works/<id>/finished/<n>.png (the raw variation is kept; "
        "the gallery publishes the copy)",
    )
    upscaler: str = key(
        "",
        "upscaler model (.pth/.safetensors read by spandrel, pip install 'aiimg[finish]'), relative to "
        "aiimg.toml; '' = none",
    )
    area: int = key(
        0,
        "resize the finished copy to this area in pixels, ratio kept (0 = keep its size)",
        min=0,
        max=MAX_AREA,
        check=_area_problem,
        allowed="0 or 4096..16777216",
    )
    width: int = key(
        0, "resize the finished copy to this width in pixels instead of an area (0 = unset)", min=0, max=16384
    )
    sharpen: int = key(
        50,
        "unsharp mask in percent (Pillow UnsharpMask, radius 2, threshold 3), last, at the final size; 0 = none",
        min=0,
        max=80,
    )

    def __post_init__(self) -> None:
        if self.area and self.width:
            raise ConfigError(
                f"[finish] area = {self.area} and [finish] width = {self.width}: set one of them (the other 0)"
            )


@dataclass(frozen=True)
class RunConfig:
    devices: list = key(
        ["auto"],
        "the devices that generate, one worker each: auto (every CUDA GPU when there are 2 or more, "
        "else [model] device, in this process), or a list such as ['cuda:0', 'cuda:1']",
        nonempty=True,
        item=Key("", "device", check=_device_problem, allowed="auto | cpu | mps | cuda | cuda:N"),
        check=_devices_problem,
        one=True,
    )
    ray_address: str = key(
        "",
        "Ray cluster for workers on several machines (extra aiimg[ray]): '' (none), 'local' (start one "
        "here), or the cluster's address, e.g. 'auto' or '10.0.0.5:6379'; [run] devices is then unused",
    )
    ray_workers: int = key(
        0, "with ray_address: how many workers (0: one per GPU of the cluster; N: N, one GPU or CPU each)", min=0
    )
    max_unseeded_drafts: int = key(500, "drafting pauses while this many drafts wait without a seed.txt", min=0)
    min_free_gb: float = key(2.0, "drafting pauses while the content disk has less free space (GB) than this", min=0)
    rescan_seconds: float = key(5.0, "periodic rescan of content/ in case a file event was missed", min=0.1, max=3600)
    auto_seed: bool = key(False, 'mark the top-scored drafts of each batch with seed.txt (by = "auto")')
    auto_seed_batch: int = key(20, "drafts per auto-seed batch", min=1, max=100000)
    auto_seed_top: int = key(1, "drafts auto-seeded per batch", min=1, max=100000)


@dataclass(frozen=True)
class ScoreConfig:
    enabled: bool = key(True, "score every new draft right after it is saved")
    weights: dict = key(
        dict.fromkeys(SCORERS, 1.0),
        "weight of each scorer in the combined score; a scorer left out or at 0 is off",
        names=SCORERS,
        item=Key(0.0, "weight", min=0),
        label="scorer",
    )
    clip_model: str = key("", "local folder of CLIP ViT-L/14 (openai/clip-vit-large-patch14) for the aesthetic scorer")
    aesthetic_head: str = key("", "local path of the LAION aesthetic MLP head (sac+logos+ava1-l14-linearMSE.pth)")
    learn_min_seeds: int = key(20, "marked seeds needed before `aiimg rank --learn` fits a preference model", min=1)
    learn_min_unmarked: int = key(100, "drafts seen and not seeded needed before --learn", min=1)
    review_port: int = key(8766, "port of `aiimg review` on 127.0.0.1 (0: any free port)", **PORT)
    duplicate_distance: int = key(
        8, "drafts whose 64-bit perceptual hashes differ in at most this many bits are near-duplicates", min=0, max=64
    )


@dataclass(frozen=True)
class SiteConfig:
    title: str = key("My AI gallery", "site title", nonempty=True)
    description: str = key("AI art made with Stable Diffusion", "site description (feed, Open Graph)")
    author: str = key("", "author name (feed, meta tags)")
    base_url: str = key(
        "https://example.github.io/gallery/",
        "absolute URL the site is served from; a sub-path works",
        check=_url_problem,
        allowed="an http:// or https:// URL",
    )
    lang: str = key("en", "UI language", choices=("en", "ja"))
    page_size: int = key(24, "works per index page", min=1, max=1000)
    thumb_height: int = key(
        280, "display height of a grid row in CSS pixels (thumbnails at 1x and 2x)", min=16, max=2048
    )
    image_width: int = key(1280, "display width of a variation on a work page (WebP at 1x and 2x)", min=16, max=8192)
    webp_quality: int = key(80, "WebP quality", min=1, max=100)
    avif: bool = key(False, "also encode AVIF (smaller, ~1 s per megapixel to encode)")
    strip_metadata: bool = key(False, "publish the original PNGs without the A1111 parameters chunk")
    originals: str = key(
        "png",
        "full-size originals published beside the WebP display images: png (the source as it is), "
        "webp (lossless, ~40% smaller, A1111 parameters kept in EXIF as A1111 writes them), none",
        choices=("png", "webp", "none"),
    )
    max_size_mb: int = key(
        1000,
        "size budget of output/ in MB (GitHub Pages publishes at most 1 GB): a build warns from 90% of it, "
        "--strict fails over it; 0 = no limit",
        min=0,
    )
    serve_port: int = key(8000, "port of `aiimg serve` on 127.0.0.1 (0: any free port)", **PORT)


@dataclass(frozen=True)
class SeedOnlyKeys:
    """Keys a seed.txt may hold that no aiimg.toml section has."""

    prompt: str = key("", "prompt for the variations instead of the draft's", seed="prompt")
    by: str = key("", 'who marked it: "auto" when aiimg\'s auto-seeding did', seed="by")


@dataclass(frozen=True)
class Config:
    content: str = key("content", "content folder (drafts, works, prompts), relative to aiimg.toml", nonempty=True)
    output: str = key("output", "rendered site folder, relative to aiimg.toml", nonempty=True)
    model: ModelConfig = field(default_factory=ModelConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    draft: DraftConfig = field(default_factory=DraftConfig)
    variation: VariationConfig = field(default_factory=VariationConfig)
    finish: FinishConfig = field(default_factory=FinishConfig)
    run: RunConfig = field(default_factory=RunConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    site: SiteConfig = field(default_factory=SiteConfig)
    root: str = field(default=".", metadata={"doc": "(set by the loader) folder of aiimg.toml"})

    @property
    def content_dir(self) -> Path:
        return Path(self.root) / self.content

    @property
    def output_dir(self) -> Path:
        return Path(self.root) / self.output


SECTIONS = {
    "model": ModelConfig,
    "prompt": PromptConfig,
    "draft": DraftConfig,
    "variation": VariationConfig,
    "finish": FinishConfig,
    "run": RunConfig,
    "score": ScoreConfig,
    "site": SiteConfig,
}


def keys(cls: type) -> dict[str, Key]:
    """The declared keys of a section (or the top-level keys of Config), by name."""
    return {f.name: f.metadata["key"] for f in dataclasses.fields(cls) if "key" in f.metadata}


def _seed_keys() -> tuple[dict[str, Key], dict[str, str]]:
    """(the Key of every name a seed.txt may hold, by that name; its doc for messages and docs)."""
    found, docs = {}, {}
    for section, cls in [*SECTIONS.items(), ("", SeedOnlyKeys)]:
        for name, spec in keys(cls).items():
            if spec.seed:
                found[spec.seed] = dataclasses.replace(spec, doc=spec.seed_doc or spec.doc)
                default = f"; default: [{section}] {name}" if section else ""
                docs[spec.seed] = f"{found[spec.seed].doc} (allowed: {spec.allowed_text()}{default})"
    return found, docs


_SEED, SEED_KEYS = _seed_keys()


# -- reading and checking ----------------------------------------------------------------------


def load(path: str | Path | None = None) -> Config:
    """Read aiimg.toml (defaults only when ``path`` is None or the default file is absent)."""
    if path is None:
        path = Path("aiimg.toml")
        if not path.exists():
            return Config(root=str(Path.cwd()))
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found (pass --config PATH or create aiimg.toml)") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return from_dict(data, source=str(path), root=str(path.resolve().parent))


def from_dict(data: dict, source: str = "aiimg.toml", root: str = ".") -> Config:
    """A Config from parsed TOML; one ConfigError listing every problem when there are any."""
    top_keys = keys(Config)
    plain = {k: v for k, v in data.items() if k not in SECTIONS}
    top, problems = _read(top_keys, plain, f"{source}: ", also=[f"[{s}]" for s in SECTIONS])
    for name, cls in SECTIONS.items():
        if name not in data:
            continue
        if not isinstance(data[name], dict):
            problems.append(f"{source}: [{name}] must be a table, got {_toml(data[name])}")
            continue
        values, wrong = _read(keys(cls), data[name], f"{source}: [{name}] ")
        problems += wrong
        try:
            top[name] = cls(**values)
        except ConfigError as exc:  # a rule between two keys of the section (its __post_init__)
            problems.append(f"{source}: {exc}")
    _raise(source, problems)
    return _local_paths(Config(root=root, **top))


def _local_paths(cfg: Config) -> Config:
    """[model] id, config and vae name files relative to aiimg.toml, as every path in it does; a
    value that is no file there stays as written (a hub repo id, a kind, an absolute path)."""
    changes = {}
    for name in ("id", "config", "vae"):
        value = getattr(cfg.model, name)
        local = Path(cfg.root) / Path(value).expanduser()
        if value and not Path(value).expanduser().is_absolute() and local.exists():
            changes[name] = str(local)
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **changes)) if changes else cfg


def seed_overrides(data: dict, source: str) -> dict:
    """A seed.txt's parsed TOML, checked against the keys a seed may override (``SEED_KEYS``).

    Returns ``data`` unchanged; a ConfigError lists every problem, each naming ``source``, the
    key, the value and what is allowed."""
    values, problems = _read(_SEED, data, f"{source}: ")
    _raise(source, problems)
    return data


def _read(declared: dict[str, Key], values: dict, where: str, also: list | None = None) -> tuple[dict, list[str]]:
    """(the values that are fine, coerced; a line per problem). ``also``: other names to suggest."""
    out, problems = {}, []
    for name, value in values.items():
        if name not in declared:
            problems.append(_unknown(name, [*declared, *(also or [])], where))
            continue
        spec = declared[name]
        if spec.one and spec.kind is list and _is(spec.item.kind, value):
            value = [value]
        wrong = _problems(declared[name], name, value, where)
        problems += wrong
        if not wrong:
            out[name] = _coerce(declared[name], value)
    return out, problems


def _unknown(name: str, known: list[str], where: str) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{where}unknown key {name!r}{hint} (known keys: {', '.join(known)})"


def _problems(spec: Key, name: str, value: Any, where: str) -> list[str]:
    said = f"{where}{name} = {_toml(value)}"
    if not _is(spec.kind, value):
        return [f"{said} should be a {spec.kind.__name__} ({spec.allowed_text()}; {spec.doc})"]
    if spec.kind is dict:
        return _table_problems(spec, name, value, where)
    fault = _fault(spec, value)
    if fault is None:
        return []
    wrong = f"is not allowed ({fault})" if fault else "is out of range"
    return [f"{said} {wrong}: expected {spec.allowed_text()} ({spec.doc})"]


def _table_problems(spec: Key, name: str, table: dict, where: str) -> list[str]:
    problems = []
    for entry, value in table.items():
        if entry not in spec.names:
            close = difflib.get_close_matches(entry, spec.names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(
                f"{where}{name}: unknown {spec.label} {entry!r}{hint} (known: {', '.join(spec.names)}; {spec.doc})"
            )
        elif not _ok(spec.item, value):
            problems.append(
                f"{where}{name}: {entry} = {_toml(value)} is out of range: "
                f"expected {spec.item.allowed_text()} ({spec.doc})"
            )
    return problems


def _fault(spec: Key, value: Any) -> str | None:
    """None when ``value`` (of the key's type) is allowed, else what is wrong ("": out of range)."""
    if spec.choices and value not in spec.choices:
        return ""
    if spec.nonempty and len(value) == 0:
        return "empty"
    if (spec.min is not None and value < spec.min) or (spec.max is not None and value > spec.max):
        return ""
    if spec.kind is list and spec.item and not all(_ok(spec.item, v) for v in value):
        return ""
    return (spec.check(value) or None) if spec.check else None


def _ok(spec: Key, value: Any) -> bool:
    return _is(spec.kind, value) and _fault(spec, value) is None


def _is(kind: type, value: Any) -> bool:
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


def _coerce(spec: Key, value: Any) -> Any:
    if spec.kind is float:
        return float(value)
    if spec.kind is dict and spec.item.kind is float:
        return {k: float(v) for k, v in value.items()}
    return value


def _raise(source: str, problems: list[str]) -> None:
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        raise ConfigError(f"{source}: {len(problems)} problems:\n" + "\n".join(f"  {p}" for p in problems))


def override(cfg: Config, **changes: Any) -> Config:
    """Apply CLI overrides: top-level keys by name, section keys as ``section__key``; None = unset.

    Checked like the file is; a problem is a ConfigError from "command line"."""
    data = {name: getattr(cfg, name) for name in keys(Config)}
    data.update({name: dataclasses.asdict(getattr(cfg, name)) for name in SECTIONS})
    for name, value in changes.items():
        if value is None:
            continue
        section, _, sub = name.rpartition("__")
        if section:
            data.setdefault(section, {})[sub] = value
        else:
            data[name] = value
    return from_dict(data, "command line", cfg.root)


# -- documentation -----------------------------------------------------------------------------


def documented_toml(values: dict | None = None) -> str:
    """Every section and key with its doc and allowed values as comments, values = the defaults.

    ``values`` ({section: {key: value}}, "" for the top level) replaces some defaults (the
    comment then names the default): `aiimg init` writes a starter template this way."""
    values = values or {}
    lines = [DOCUMENTED_HEADER.rstrip("\n"), *_seed_doc(), ""]
    lines += _section_doc(Config, values.get("", {}))
    for name, cls in SECTIONS.items():
        lines += [f"[{name}]", ""] + _section_doc(cls, values.get(name, {}))
    return "\n".join(lines).rstrip("\n") + "\n"


def _seed_doc() -> list[str]:
    width = max(map(len, SEED_KEYS))
    lines = ["#", "# seed.txt beside a draft may be empty, or hold these keys for that seed only:"]
    return lines + [f"#   {name:<{width}}  {doc}" for name, doc in SEED_KEYS.items()]


def _section_doc(cls: type, values: dict) -> list[str]:
    lines = []
    for name, spec in keys(cls).items():
        seed = f"; a seed.txt may set {spec.seed}" if spec.seed else ""
        lines += [f"# {spec.doc}", f"# allowed: {spec.allowed_text()}{seed}"]
        if name in values:
            lines.append(f"# default: {_toml(spec.default)}")
        lines += [f"{name} = {_toml(values.get(name, spec.default))}", ""]
    return lines


def describe() -> str:
    """`aiimg config --defaults`: the documented aiimg.toml."""
    return documented_toml()


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)
