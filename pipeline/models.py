"""Load diffusers pipelines: hub repo id (local cache only), local folder, single checkpoint
file, or ``tiny``.

``tiny`` is a randomly initialised Stable Diffusion with diffusers' own test recipe (see
FIELD_NOTES), built on this machine with no download on first use and cached outside the repo
in ``$AIIMG_CACHE`` (default ``~/.cache/aiimg``)/``tiny-v1``; seeded, so every machine builds
the same weights. Its images are noise; the code path is the real one.

torch and diffusers are imported inside functions only: importing diffusers costs seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import ModelError

TINY = "tiny"
TINY_VERSION = "tiny-v1"


@dataclass
class Loaded:
    """Both pipelines sharing one set of weights, plus what a recipe records of the model."""

    txt2img: object
    img2img: object
    name: str
    hash: str
    device: str

    @property
    def scheduler(self) -> str:
        return type(self.txt2img.scheduler).__name__


def cache_dir() -> Path:
    return Path(os.environ.get("AIIMG_CACHE", Path.home() / ".cache" / "aiimg"))


def load(model_cfg) -> Loaded:
    """The txt2img pipeline and an img2img built from it with ``from_pipe`` (no second copy)."""
    _quiet()
    import torch
    from diffusers import AutoPipelineForImage2Image

    device = pick_device(model_cfg.device)
    dtype = torch.float16 if device == "cuda" else torch.float32
    t2i, name, digest = _load_txt2img(model_cfg, dtype)
    _set_scheduler(t2i, model_cfg.scheduler)
    t2i.to(device)
    t2i.set_progress_bar_config(disable=True)
    i2i = AutoPipelineForImage2Image.from_pipe(t2i)
    i2i.set_progress_bar_config(disable=True)
    return Loaded(t2i, i2i, name, digest, device)


def pick_device(wanted: str) -> str:
    import torch

    if wanted != "auto":
        if wanted == "cuda" and not torch.cuda.is_available():
            raise ModelError('[model] device = "cuda" but torch sees no CUDA GPU; use "auto" or "cpu"')
        return wanted
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def _load_txt2img(model_cfg, dtype):
    ident = model_cfg.id
    if ident == TINY:
        folder = ensure_tiny()
        return _from_folder(folder, dtype), TINY, folder_hash(folder)
    path = Path(ident).expanduser()
    if path.suffix in (".safetensors", ".ckpt"):
        return _from_single_file(path, model_cfg.config, dtype), path.stem, file_hash(path)
    if path.is_dir():
        return _from_folder(path, dtype), path.name, folder_hash(path)
    if path.exists() or ident.startswith((".", "/", "~")):
        raise ModelError(
            f"[model] id = {ident!r}: not a diffusers folder (with model_index.json), "
            f'a .safetensors/.ckpt file, a hub repo id or "tiny"'
        )
    return _from_hub(ident, dtype)


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


def _from_single_file(path: Path, config: str, dtype):
    if not path.is_file():
        raise ModelError(f"[model] id = {str(path)!r}: file not found")
    if not config:
        raise ModelError(
            f"{path}: a single-file checkpoint needs [model] config = a local diffusers "
            f"config folder (e.g. a download of stable-diffusion-v1-5 without weights): "
            f"offline, diffusers cannot fetch it"
        )
    cls = _single_file_class(path)
    try:
        return cls.from_single_file(str(path), config=config, dtype=dtype, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: cannot load with config {config!r}: {_first_line(exc)}") from None


def _single_file_class(path: Path):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    keys: set = set()
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            keys = set(fh.keys())
    sdxl = any(k.startswith("conditioner.embedders.1") for k in keys)
    return StableDiffusionXLPipeline if sdxl else StableDiffusionPipeline


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


def file_hash(path: Path) -> str:
    """sha256[:10] of a file, cached by (path, size, mtime): a 2 GB checkpoint hashes once."""
    stat = path.stat()
    key = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    index_path = cache_dir() / "hashes.json"
    index = _read_index(index_path)
    if key not in index:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                digest.update(block)
        index[key] = digest.hexdigest()[:10]
        with contextlib.suppress(OSError):
            from pipeline.content import atomic_write_json

            index_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(index_path, index)
    return index[key]


def folder_hash(folder: Path) -> str:
    """The UNet weights identify a diffusers folder (what A1111 would hash in a checkpoint)."""
    weights = sorted((Path(folder) / "unet").glob("*.safetensors")) or sorted((Path(folder) / "unet").glob("*.bin"))
    return file_hash(weights[0].resolve()) if weights else "unknown"


def _read_index(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


# -- the tiny model ---------------------------------------------------------------------------


def ensure_tiny() -> Path:
    """Build the tiny model once (atomically: a killed build leaves nothing half-made)."""
    folder = cache_dir() / TINY_VERSION
    if (folder / "model_index.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-", dir=folder.parent))
    try:
        build_tiny().save_pretrained(tmp, safe_serialization=True)
        with contextlib.suppress(OSError):
            os.replace(tmp, folder)  # a concurrent builder may have won: same weights
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def build_tiny():
    """diffusers' get_dummy_components recipe, with a 4-block VAE so latents are H/8 like SD."""
    _quiet()
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

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
    vae = AutoencoderKL(
        block_out_channels=(4, 4, 8, 8),
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        norm_num_groups=2,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
    )
    text = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=2,
            hidden_size=32,
            intermediate_size=37,
            layer_norm_eps=1e-05,
            num_attention_heads=2,
            num_hidden_layers=2,
            pad_token_id=1,
            vocab_size=_VOCAB_SIZE,
            max_position_embeddings=77,
        )
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
        vae=vae,
        text_encoder=text,
        tokenizer=tiny_tokenizer(),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def tiny_tokenizer():
    """A byte-level CLIP tokenizer from in-memory vocab (transformers 5 ignores vocab_file=)."""
    from transformers import CLIPTokenizer

    chars = [chr(c) for c in range(33, 127)] + [chr(c) for c in range(161, 256)]
    chars = chars + [chr(c) for c in range(256, 256 + 256 - len(chars))]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 2, "!": 1}
    for token in chars + [c + "</w>" for c in chars]:
        vocab.setdefault(token, len(vocab))
    tok = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    assert len(tok) > 2, "tiny tokenizer came out empty: transformers changed its constructor"
    return tok


_VOCAB_SIZE = 1024


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
