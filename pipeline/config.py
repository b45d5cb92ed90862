"""aiimg.toml -> frozen dataclasses.

Every key is optional and has a default and a one-line doc (the ``doc`` metadata of its
field; ``aiimg config`` prints them). An unknown key, or a value of the wrong type, is a
``ConfigError`` naming the file, the key and the value. Paths in the file are relative to the
file's folder. CLI options override the file through :func:`override`.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError


def _key(default: Any, doc: str) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"doc": doc})
    return field(default=default, metadata={"doc": doc})


@dataclass(frozen=True)
class ModelConfig:
    id: str = _key("tiny", "diffusers repo id (local HF cache) | local folder | file.safetensors/.ckpt | tiny")
    config: str = _key("", "local diffusers config folder for a single-file checkpoint (needed offline)")
    device: str = _key("auto", "auto | cuda | mps | cpu (auto: cuda, then mps, then cpu)")
    scheduler: str = _key("", "diffusers scheduler class name, e.g. DPMSolverMultistepScheduler ('' keeps the model's)")


@dataclass(frozen=True)
class PromptConfig:
    template: str = _key(
        "masterpiece, best quality, {red|blue|silver|black} hair, __outfit__, __background__",
        "prompt template: fixed text + {a|b} choices + __wildcard__ files from content/prompts/",
    )
    negative: str = _key("lowres, bad anatomy, bad hands, worst quality", "negative prompt for every image")


@dataclass(frozen=True)
class DraftConfig:
    area: int = _key(640000, "draft area in pixels (800x800); width and height are multiples of 64")
    aspect: list = _key(["2:3", "3:2"], "two ratios = a range to draw from; more = a list to pick from")
    steps: int = _key(25, "denoising steps per draft")
    guidance_scale: float = _key(7.0, "classifier-free guidance (CFG scale)")


@dataclass(frozen=True)
class VariationConfig:
    count: int = _key(3, "variations per seed (a seed.txt may say count = N)")
    areas: list = _key([1000000], "area of each stage; a longer list is a ladder, each stage img2img of the one before")
    strength: float = _key(0.5, "img2img denoising strength, 0..1 (0.5 = Fooocus 'Vary (Subtle)')")
    steps: int = _key(30, "denoising steps (img2img runs int(steps * strength) of them)")
    guidance_scale: float = _key(7.0, "classifier-free guidance for variations")


@dataclass(frozen=True)
class RunConfig:
    max_unseeded_drafts: int = _key(500, "drafting pauses while this many drafts wait without a seed.txt")
    min_free_gb: float = _key(2.0, "drafting pauses while the content disk has less free space than this")
    rescan_seconds: float = _key(5.0, "periodic rescan of content/ in case a file event was missed")
    auto_seed: bool = _key(False, 'mark the top-scored drafts of each batch with seed.txt (by = "auto")')
    auto_seed_batch: int = _key(20, "drafts per auto-seed batch")
    auto_seed_top: int = _key(1, "drafts auto-seeded per batch")


@dataclass(frozen=True)
class ScoreConfig:
    enabled: bool = _key(True, "score every new draft right after it is saved")
    weights: dict = _key(
        {"default": 1.0, "aesthetic": 1.0, "preference": 1.0},
        "weight of each scorer in the combined score (default, aesthetic, preference; 0 = off)",
    )
    clip_model: str = _key("", "local folder of CLIP ViT-L/14 (openai/clip-vit-large-patch14) for the aesthetic scorer")
    aesthetic_head: str = _key("", "local path of the LAION aesthetic MLP head (sac+logos+ava1-l14-linearMSE.pth)")
    learn_min_seeds: int = _key(20, "marked seeds needed before `aiimg rank --learn` fits a preference model")
    learn_min_unmarked: int = _key(100, "unmarked drafts older than a day needed before --learn")
    review_port: int = _key(8766, "port of `aiimg review` on 127.0.0.1")
    duplicate_distance: int = _key(
        8, "drafts whose 64-bit perceptual hashes differ in at most this many bits are near-duplicates"
    )


@dataclass(frozen=True)
class SiteConfig:
    title: str = _key("My AI gallery", "site title")
    description: str = _key("AI art made with Stable Diffusion", "site description (feed, Open Graph)")
    author: str = _key("", "author name (feed, meta tags)")
    base_url: str = _key("https://example.github.io/gallery/", "absolute URL the site is served from; a sub-path works")
    lang: str = _key("en", "UI language: en | ja")
    page_size: int = _key(24, "works per index page")
    thumb_height: int = _key(280, "display height of a grid row in CSS pixels (thumbnails at 1x and 2x)")
    image_width: int = _key(1280, "display width of a variation on a work page (WebP at 1x and 2x)")
    webp_quality: int = _key(80, "WebP quality 1..100")
    avif: bool = _key(False, "also encode AVIF (smaller, ~1 s per megapixel to encode)")
    strip_metadata: bool = _key(False, "publish the original PNGs without the A1111 parameters chunk")
    serve_port: int = _key(8000, "port of `aiimg serve` on 127.0.0.1")


@dataclass(frozen=True)
class Config:
    content: str = _key("content", "content folder (drafts, works, prompts), relative to aiimg.toml")
    output: str = _key("output", "rendered site folder, relative to aiimg.toml")
    model: ModelConfig = field(default_factory=ModelConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    draft: DraftConfig = field(default_factory=DraftConfig)
    variation: VariationConfig = field(default_factory=VariationConfig)
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
    "run": RunConfig,
    "score": ScoreConfig,
    "site": SiteConfig,
}


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
    top = {}
    for key, value in data.items():
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: [{key}] must be a table, got {value!r}")
            top[key] = _section(SECTIONS[key], value, f"{source}: [{key}]")
        else:
            top.update(_values(Config, {key: value}, source, skip=set(SECTIONS) | {"root"}))
    return validate(Config(root=root, **top), source)


def _section(cls: type, values: dict, where: str):
    return cls(**_values(cls, values, where))


def _values(cls: type, values: dict, where: str, skip: set = frozenset()) -> dict:
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
    out = {}
    for key, value in values.items():
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{where}: unknown key {key!r} (known keys: {known})")
        out[key] = _typed(fields[key], value, where)
    return out


def _typed(f: dataclasses.Field, value: Any, where: str) -> Any:
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    kind = type(default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{where}: {f.name} = {value!r} should be a {kind.__name__} ({f.metadata['doc']})")


def validate(cfg: Config, source: str = "aiimg.toml") -> Config:
    """Range checks that types alone cannot express."""
    checks = [
        (cfg.draft.area >= 64 * 64, "[draft] area", cfg.draft.area, "at least 4096"),
        (len(cfg.draft.aspect) >= 1, "[draft] aspect", cfg.draft.aspect, 'one or more ratios like "2:3"'),
        (cfg.draft.steps >= 1, "[draft] steps", cfg.draft.steps, ">= 1"),
        (cfg.variation.count >= 1, "[variation] count", cfg.variation.count, ">= 1"),
        (
            len(cfg.variation.areas) >= 1 and all(isinstance(a, int) and a >= 4096 for a in cfg.variation.areas),
            "[variation] areas",
            cfg.variation.areas,
            "a list of whole pixel areas >= 4096",
        ),
        (0.01 <= cfg.variation.strength <= 1.0, "[variation] strength", cfg.variation.strength, "0.01..1"),
        (cfg.variation.steps >= 1, "[variation] steps", cfg.variation.steps, ">= 1"),
        (
            cfg.model.device in ("auto", "cuda", "mps", "cpu"),
            "[model] device",
            cfg.model.device,
            "auto | cuda | mps | cpu",
        ),
        (cfg.site.lang in ("en", "ja"), "[site] lang", cfg.site.lang, "en | ja"),
        (cfg.site.page_size >= 1, "[site] page_size", cfg.site.page_size, ">= 1"),
        (cfg.run.max_unseeded_drafts >= 0, "[run] max_unseeded_drafts", cfg.run.max_unseeded_drafts, ">= 0"),
    ]
    for ok, key, value, want in checks:
        if not ok:
            raise ConfigError(f"{source}: {key} = {value!r} is out of range: expected {want}")
    from pipeline.sizes import parse_aspects

    try:
        parse_aspects(cfg.draft.aspect)
    except ValueError as exc:
        raise ConfigError(f"{source}: [draft] aspect = {cfg.draft.aspect!r}: {exc}") from None
    return cfg


def override(cfg: Config, **changes: Any) -> Config:
    """Apply CLI overrides: top-level keys by name, section keys as ``section__key``."""
    top, sections = {}, {}
    for name, value in changes.items():
        if value is None:
            continue
        if "__" in name:
            section, key = name.split("__", 1)
            sections.setdefault(section, {})[key] = value
        else:
            top[name] = value
    for section, values in sections.items():
        top[section] = dataclasses.replace(getattr(cfg, section), **values)
    return validate(dataclasses.replace(cfg, **top), "command line")


def describe() -> str:
    """Every key with its default and doc, as TOML: `aiimg config --defaults`."""
    lines = []
    for f in dataclasses.fields(Config):
        if f.name not in SECTIONS and f.name != "root":
            lines.append(f"{f.name} = {_toml(f.default)}  # {f.metadata['doc']}")
    for name, cls in SECTIONS.items():
        lines.append(f"\n[{name}]")
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            lines.append(f"{f.name} = {_toml(default)}  # {f.metadata['doc']}")
    return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return json.dumps(value, ensure_ascii=False)
