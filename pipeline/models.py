"""Load diffusers pipelines: hub repo id (local cache only), local diffusers folder, single
checkpoint file, ``tiny`` or ``tiny-xl``.

A single ``.safetensors``/``.ckpt`` (SD 1.5, SD 2.x, SDXL in the original A1111/LDM layout) loads
with nothing else and no network: pipeline/checkpoints.py detects its kind and supplies the
config folder; ``[model] config`` overrides it (a diffusers config folder or a kind name).

``tiny`` (SD 1.x) and ``tiny-xl`` (SDXL) are randomly initialised models built with diffusers' own
test recipes (see FIELD_NOTES) and the real CLIP vocabulary, on this machine with no download on
first use, cached outside the repo in ``$AIIMG_CACHE`` (default ``~/.cache/aiimg``); seeded, so
every machine builds the same weights. Their images are noise; the code path is the real one.

torch and diffusers are imported inside functions only: importing diffusers costs seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import ModelError

TINY = "tiny"
TINY_VERSION = "tiny-v2"  # v2: the real 49408-entry CLIP vocabulary
TINY_XL = "tiny-xl"
TINY_XL_VERSION = "tiny-xl-v1"


@dataclass
class Loaded:
    """Both pipelines sharing one set of weights, plus what a recipe records of the model."""

    txt2img: object
    img2img: object
    name: str
    hash: str
    device: str
    kind: str = "sd1"  # "sd1" | "sd2" | "sdxl": how the prompt encoder must talk to it
    vae: dict = field(default_factory=dict)  # {"name", "hash"} of a [model] vae replacing the checkpoint's
    # what conditioning.py keeps between images: LoRA adapters, the scheduler as loaded, the sampler set
    adapters: object = None
    base_scheduler: object = None
    sampler_key: tuple = ()

    @property
    def scheduler(self) -> str:
        return type(self.txt2img.scheduler).__name__

    @property
    def text_layers(self) -> int:
        return self.txt2img.text_encoder.config.num_hidden_layers

    def info(self) -> ModelInfo:
        """What planning a recipe needs of this model, without its weights (it travels to the owner)."""
        vae, layers = dict(self.vae), self.text_layers
        return ModelInfo(self.name, self.hash, self.device, self.kind, vae, self.base_scheduler, layers)


@dataclass
class ModelInfo:
    """The model as a recipe is planned against it: name and hash, family, VAE, the scheduler it
    was loaded with (samplers are built on its config) and its text encoder's depth (clip skip).

    A worker that loaded the model sends this to the owner of content/ (workers/), which plans
    every recipe and holds no weights itself; :class:`Loaded` answers the same questions."""

    name: str
    hash: str
    device: str
    kind: str
    vae: dict
    base_scheduler: object
    text_layers: int

    @property
    def scheduler(self) -> str:
        return type(self.base_scheduler).__name__


def cache_dir() -> Path:
    return Path(os.environ.get("AIIMG_CACHE", Path.home() / ".cache" / "aiimg"))


def load(model_cfg, device: str = "") -> Loaded:
    """The txt2img pipeline and an img2img built from it with ``from_pipe`` (no second copy);
    ``device`` (a worker's: "cuda:1", "cpu") overrides ``[model] device``."""
    _quiet()
    import torch
    from diffusers import AutoPipelineForImage2Image

    device = pick_device(device or model_cfg.device)
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    t2i, name, digest, kind = _load_txt2img(model_cfg, dtype)
    _set_scheduler(t2i, model_cfg.scheduler)
    vae = _replace_vae(t2i, model_cfg.vae, dtype) if model_cfg.vae else {}
    t2i.to(device)
    t2i.set_progress_bar_config(disable=True)
    i2i = AutoPipelineForImage2Image.from_pipe(t2i)
    i2i.set_progress_bar_config(disable=True)
    # the scheduler as loaded, kept before any sampler replaces it: every sampler is built on its config
    return Loaded(t2i, i2i, name, digest, device, kind, vae, base_scheduler=t2i.scheduler)


def _replace_vae(pipe, spec: str, dtype) -> dict:
    """``[model] vae``: a diffusers VAE folder, or a single file read with the model's own VAE config."""
    from diffusers import AutoencoderKL

    from pipeline import resources

    found = resources.vae_file(spec)
    try:
        if found.is_folder:
            vae = AutoencoderKL.from_pretrained(found.path, dtype=dtype)
        else:
            config = str(_vae_config(pipe.vae))
            vae = AutoencoderKL.from_single_file(str(found.path), config=config, dtype=dtype, local_files_only=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelError(
            f"[model] vae = {spec!r}: cannot load ({_first_line(exc)}); is it a VAE for this model?"
        ) from None
    pipe.vae = vae
    return {"name": found.name, "hash": found.hash}


def pick_device(wanted: str) -> str:
    import torch

    if wanted != "auto":
        if wanted.startswith("cuda") and not torch.cuda.is_available():
            raise ModelError(f'device "{wanted}": torch sees no CUDA GPU; use "auto" or "cpu"')
        return wanted
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def _load_txt2img(model_cfg, dtype):
    """(pipeline, name, hash, kind) for whatever ``[model] id`` names."""
    ident = model_cfg.id
    if ident in _TINY_BUILDS:
        folder = _TINY_BUILDS[ident]()
        pipe = _from_folder(folder, dtype)
        return pipe, ident, folder_hash(folder), family(pipe)
    path = Path(ident).expanduser()
    if path.suffix in (".safetensors", ".ckpt"):
        from pipeline import checkpoints

        pipe, kind = checkpoints.load(path, model_cfg.config, dtype)
        return pipe, path.stem, file_hash(path), kind
    if path.is_dir():
        pipe = _from_folder(path, dtype)
        return pipe, path.name, folder_hash(path), family(pipe)
    if path.exists() or ident.startswith((".", "/", "~")):
        raise ModelError(
            f"[model] id = {ident!r}: not a diffusers folder (with model_index.json), "
            f'a .safetensors/.ckpt file, a hub repo id, "tiny" or "tiny-xl"'
        )
    pipe, name, digest = _from_hub(ident, dtype)
    return pipe, name, digest, family(pipe)


def family(pipe) -> str:
    """The family: two text encoders make "sdxl", OpenCLIP ViT-H's 1024-wide one "sd2", else "sd1"."""
    if getattr(pipe, "text_encoder_2", None) is not None:
        return "sdxl"
    return "sd2" if pipe.text_encoder.config.hidden_size == 1024 else "sd1"


def _from_folder(folder: Path, dtype):
    from diffusers import AutoPipelineForText2Image

    if not (folder / "model_index.json").is_file():
        raise ModelError(
            f"{folder}: no model_index.json; a diffusers folder is made by "
            f"`pipe.save_pretrained(folder)` or `huggingface-cli download REPO --local-dir {folder}`"
        )
    return AutoPipelineForText2Image.from_pretrained(folder, dtype=dtype, **_no_safety(folder))


def _from_hub(repo: str, dtype):
    from diffusers import AutoPipelineForText2Image

    try:
        pipe = AutoPipelineForText2Image.from_pretrained(repo, dtype=dtype, local_files_only=True, safety_checker=None)
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"[model] id = {repo!r} is not in the local Hugging Face cache ({_first_line(exc)}). "
            f"On a machine with internet run `huggingface-cli download {repo}` (or copy its cache "
            f"into $HF_HOME), or set [model] id to a local folder or .safetensors file"
        ) from None
    from huggingface_hub import snapshot_download

    folder = Path(snapshot_download(repo, local_files_only=True))
    return pipe, repo.split("/")[-1], folder_hash(folder)


def _no_safety(folder: Path) -> dict:
    # A1111 and the tools artists use run without it; loading it costs ~1 GB and blacks out art.
    index = json.loads((folder / "model_index.json").read_text())
    return {"safety_checker": None} if "safety_checker" in index else {}


def _set_scheduler(pipe, name: str) -> None:
    if not name:
        return
    import diffusers

    cls = getattr(diffusers, name, None)
    if cls is None or not name.endswith("Scheduler"):
        raise ModelError(
            f"[model] scheduler = {name!r} is not a diffusers scheduler "
            f"(e.g. DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler)"
        )
    pipe.scheduler = cls.from_config(pipe.scheduler.config)


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


# -- hashes (A1111: first 10 hex of the file's sha256) ----------------------------------------


def _vae_config(vae) -> Path:
    """A folder holding the model's own VAE config: what a single VAE file is read with offline."""
    text = json.dumps(dict(vae.config), sort_keys=True, default=str)
    folder = cache_dir() / "vae-configs" / hashlib.sha256(text.encode()).hexdigest()[:12]
    return build_once(folder, vae.save_config, done="config.json")


def file_hash(path: Path) -> str:
    """A1111's model hash (AutoV2: sha256[:10]), cached per file: a 2 GB checkpoint hashes once."""
    from pipeline.resources import model_hash

    return model_hash(path)


def folder_hash(folder: Path) -> str:
    """The UNet weights identify a diffusers folder (what A1111 would hash in a checkpoint)."""
    weights = sorted((Path(folder) / "unet").glob("*.safetensors")) or sorted((Path(folder) / "unet").glob("*.bin"))
    return file_hash(weights[0].resolve()) if weights else "unknown"


# -- the tiny models --------------------------------------------------------------------------


def build_once(folder: Path, fill, done: str = "model_index.json") -> Path:
    """``fill(tmp)`` a temporary sibling, then rename it to ``folder``: a killed build leaves nothing
    half-made, and a concurrent builder that wins leaves the same content. ``done``: the file whose
    presence says the folder is whole."""
    if (folder / done).is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        fill(tmp)
        if folder.exists() and not (folder / done).is_file():
            shutil.rmtree(folder, ignore_errors=True)  # debris of an older, unfinished scheme
        with contextlib.suppress(OSError):
            os.replace(tmp, folder)  # fails only when a concurrent builder won: same content
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not (folder / done).is_file():
        raise ModelError(f"{folder}: could not be built (no {done}); delete it and try again")
    return folder


def ensure_tiny() -> Path:
    return build_once(cache_dir() / TINY_VERSION, lambda tmp: build_tiny().save_pretrained(tmp))


def ensure_tiny_xl() -> Path:
    return build_once(cache_dir() / TINY_XL_VERSION, lambda tmp: build_tiny_xl().save_pretrained(tmp))


_TINY_BUILDS = {TINY: ensure_tiny, TINY_XL: ensure_tiny_xl}


def build_tiny():
    """diffusers' get_dummy_components recipe, with a 4-block VAE so latents are H/8 like SD."""
    _quiet()
    import torch
    from diffusers import PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    from pipeline.encoding.vocab import clip_tokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=2,
        attention_head_dim=2,
    )
    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return StableDiffusionPipeline(
        unet=unet,
        vae=_tiny_vae(0.18215),
        text_encoder=CLIPTextModel(_tiny_clip_config(32, "quick_gelu")),
        tokenizer=clip_tokenizer(),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_tiny_xl():
    """diffusers' SDXL get_dummy_components recipe: a text_time UNet fed by CLIP-L and OpenCLIP-like
    encoders (the second wider, as bigG is: diffusers' single-file loader tells them apart by width)."""
    _quiet()
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from pipeline.encoding.vocab import OPENCLIP_PAD, clip_tokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * 8 + 32,  # six size/crop numbers + the pooled projection
        cross_attention_dim=32 + 64,  # both encoders' hidden states side by side
        norm_num_groups=2,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="leading"
    )
    return StableDiffusionXLPipeline(
        unet=unet,
        vae=_tiny_vae(0.13025),
        text_encoder=CLIPTextModel(_tiny_clip_config(32, "quick_gelu")),
        text_encoder_2=CLIPTextModelWithProjection(_tiny_clip_config(64, "gelu", projection_dim=32)),
        tokenizer=clip_tokenizer(),
        tokenizer_2=clip_tokenizer(pad_token=OPENCLIP_PAD),
        scheduler=scheduler,
    )


def _tiny_vae(scaling_factor: float):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(4, 4, 8, 8),
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        norm_num_groups=2,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        scaling_factor=scaling_factor,
    )


def _tiny_clip_config(hidden: int, act: str, projection_dim: int = 32):
    from transformers import CLIPTextConfig

    from pipeline.encoding.vocab import MAX_LENGTH, VOCAB_SIZE

    return CLIPTextConfig(
        hidden_size=hidden,
        intermediate_size=37,
        num_attention_heads=2,
        num_hidden_layers=2,
        hidden_act=act,
        projection_dim=projection_dim,
        layer_norm_eps=1e-05,
        vocab_size=VOCAB_SIZE,
        max_position_embeddings=MAX_LENGTH,
        bos_token_id=VOCAB_SIZE - 2,
        eos_token_id=VOCAB_SIZE - 1,
        pad_token_id=VOCAB_SIZE - 1,
    )


def _quiet() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with contextlib.suppress(Exception):
        import diffusers.utils.logging as dlog

        dlog.set_verbosity_error()
        dlog.disable_progress_bar()
    with contextlib.suppress(Exception):
        import transformers.utils.logging as tlog

        tlog.set_verbosity_error()
        tlog.disable_progress_bar()
