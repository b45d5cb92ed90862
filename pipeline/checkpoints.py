"""Single-file checkpoints (A1111/Civitai ``.safetensors`` or ``.ckpt``, original LDM key layout),
loaded offline with nothing but the file.

``from_single_file`` needs a diffusers config folder (model_index.json, each component's config,
the tokenizers); without one it asks the hub. The configs of each kind ship in
``pipeline/data/configs/<kind>/`` (see its README); the tokenizers are written from the vendored
CLIP vocabulary. Both are materialised once into ``<aiimg cache>/configs/<kind>-<version>``.

Which kind a file is comes from its key names and tensor shapes, read without loading a tensor:

- ``model.diffusion_model.*`` (the UNet) must be there, else the file is not a checkpoint and the
  error says what it looks like (a LoRA, a VAE, an embedding, a ControlNet, a diffusers UNet);
- ``conditioner.embedders.1.model.*`` (OpenCLIP bigG next to CLIP-L): ``xl_base``;
- ``cond_stage_model.model.*`` (OpenCLIP ViT-H): SD 2.x. The 768 v-prediction and the 512 epsilon
  models have the same tensors; only a ``.ckpt``'s ``global_step`` (875000: 2.0-base) tells them
  apart, so a ``.safetensors`` is taken as ``v2`` (768-v: SD 2.1 and most fine-tunes). For a
  512-base model set ``[model] config = "v2_base"``;
- ``cond_stage_model.transformer.*`` (OpenAI CLIP-L): ``v1``.

Inpainting (9 input channels), instruct-pix2pix (8) and the SDXL refiner (OpenCLIP alone) are
refused with a message: they cannot make a txt2img image. diffusers' own
``infer_diffusers_model_type`` is not used: it keys on layers only full-size models have
(OpenCLIP layer 9, input block 2), so it cannot classify the tiny test models, and it answers
"v1" for any file it does not know, a LoRA included.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from pipeline.encoding.vocab import EOS, OPENCLIP_PAD, write_tokenizer_files
from pipeline.errors import ModelError

CONFIGS = Path(__file__).resolve().parent / "data" / "configs"
UNET = "model.diffusion_model."
_SD2_BASE_STEP = 875000  # the global_step stabilityai's 512-base .ckpt files were saved at


@dataclass(frozen=True)
class Kind:
    family: str  # what the prompt encoder needs: "sd1" | "sd2" | "sdxl"
    pads: tuple[tuple[str, str], ...]  # (tokenizer folder, its pad token)


KINDS = {
    "v1": Kind("sd1", (("tokenizer", EOS),)),
    "v2": Kind("sd2", (("tokenizer", OPENCLIP_PAD),)),
    "v2_base": Kind("sd2", (("tokenizer", OPENCLIP_PAD),)),
    "xl_base": Kind("sdxl", (("tokenizer", EOS), ("tokenizer_2", OPENCLIP_PAD))),
}


def load(path: Path, config: str, dtype):
    """The txt2img pipeline of a checkpoint file and its family ("sd1" | "sd2" | "sdxl")."""
    if not path.is_file():
        raise ModelError(f"[model] id = {str(path)!r}: file not found")
    shapes, step = read_shapes(path)
    detected = detect(shapes, step, path)
    kind = config if config in KINDS else detected
    folder = config_folder(config, kind)
    return _from_single_file(path, folder, dtype), KINDS[kind].family


# -- reading keys and shapes -------------------------------------------------------------------


def read_shapes(path: Path) -> tuple[dict[str, tuple[int, ...]], int | None]:
    """Every tensor's name and shape, and a .ckpt's global_step, without reading the weights."""
    if path.suffix == ".safetensors":
        return _safetensors_shapes(path), None
    return _ckpt_shapes(path)


def _safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            return {key: tuple(fh.get_slice(key).get_shape()) for key in fh.keys()}
    except (OSError, SafetensorError) as exc:
        raise ModelError(
            f"{path}: not a readable .safetensors file ({_first_line(exc)}); "
            f"the download may be incomplete: download it again"
        ) from None


def _ckpt_shapes(path: Path) -> tuple[dict[str, tuple[int, ...]], int | None]:
    import torch

    obj = _torch_load(path)
    if not isinstance(obj, dict):
        raise ModelError(f"{path}: holds a {type(obj).__name__}, not a checkpoint's dict of tensors")
    step = obj.get("global_step")
    while isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    shapes = {key: tuple(value.shape) for key, value in obj.items() if isinstance(value, torch.Tensor)}
    return shapes, step if isinstance(step, int) else None


def _torch_load(path: Path):
    import pickle

    import torch

    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            # files saved before torch's zip format cannot be memory-mapped
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        needed = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if needed:
            raise ModelError(
                f"{path}: this .ckpt needs more than tensors to unpickle (it names {needed[1]}); loading it would "
                f"run code from the file. Use the .safetensors version of the model, or convert this one on a "
                f"machine you trust"
            ) from None
        raise ModelError(f"{path}: not a readable PyTorch checkpoint (a damaged or foreign pickle)") from None
    except (OSError, RuntimeError, EOFError) as exc:
        raise ModelError(f"{path}: not a readable PyTorch checkpoint ({_first_line(exc)}); download it again") from None


# -- detection ---------------------------------------------------------------------------------


def detect(shapes: dict[str, tuple[int, ...]], step: int | None = None, path: Path | str = "checkpoint") -> str:
    """The kind (a folder of pipeline/data/configs) of a checkpoint, from its keys and shapes."""
    if not any(key.startswith(UNET) for key in shapes):
        raise ModelError(
            f"[model] id = {str(path)!r} is not a Stable Diffusion checkpoint: {looks_like(shapes)}. "
            f"[model] id needs a full SD 1.5, SD 2.x or SDXL checkpoint (.safetensors/.ckpt)"
        )
    if not _has(shapes, UNET + "input_blocks."):
        raise ModelError(
            f"{path}: its model.diffusion_model.* is not an SD 1.x/2.x/XL UNet (no input_blocks; a transformer "
            f"model such as SD3 or Flux?); aiimg loads SD 1.5, SD 2.x and SDXL checkpoints"
        )
    _refuse_other_unets(shapes, path)
    if _has(shapes, "conditioner.embedders.1.model."):
        return "xl_base"
    if _has(shapes, "conditioner.embedders.0.model."):
        raise ModelError(
            f"{path}: an SDXL refiner (OpenCLIP bigG alone), which only refines another model's images; "
            f"set [model] id to an SDXL base checkpoint"
        )
    if _has(shapes, "cond_stage_model.model."):
        return "v2_base" if step == _SD2_BASE_STEP else "v2"
    if _has(shapes, "cond_stage_model.transformer."):
        return "v1"
    raise ModelError(
        f"{path}: has a UNet but no text encoder (no cond_stage_model.* or conditioner.embedders.* keys), "
        f"so its kind is unknown and it cannot read a prompt; use a full checkpoint"
    )


def _refuse_other_unets(shapes: dict, path) -> None:
    shape = shapes.get(UNET + "input_blocks.0.0.weight", ())
    channels = shape[1] if len(shape) == 4 else 4
    uses = {9: "an inpainting model (9 input channels)", 8: "an instruct-pix2pix model (8 input channels)"}
    if channels != 4:
        what = uses.get(channels, f"a UNet with {channels} input channels, not 4")
        raise ModelError(f"{path}: {what}; it cannot make txt2img drafts: use a standard checkpoint")


def looks_like(shapes: dict) -> str:
    """What a file that is not a checkpoint seems to be, for the error message."""
    keys = list(shapes)
    sample = ", ".join(keys[:3]) or "no tensors at all"
    if any(k.startswith(("lora_", "lycoris_")) or ".lora_" in k or ".hada_" in k or ".lokr_" in k for k in keys):
        return "it looks like a LoRA (lora_* keys): use it in a prompt as <lora:NAME:1>"
    if keys and set(keys) <= {"emb_params", "clip_l", "clip_g"}:
        return "it looks like a textual-inversion embedding: use its name in a prompt"
    if any(k.startswith(("control_model.", "input_hint_block.", "controlnet_")) for k in keys):
        return "it looks like a ControlNet"
    if any(k.startswith(("encoder.", "decoder.", "first_stage_model.", "quant_conv")) for k in keys):
        return "it looks like a VAE (encoder/decoder keys only)"
    if any(k.startswith(("down_blocks.", "conv_in.")) for k in keys):
        return "it looks like a diffusers-format UNet alone: point [model] id at the whole diffusers folder"
    return f"no model.diffusion_model.* keys (it holds {len(keys)} tensors: {sample})"


def _has(shapes: dict, prefix: str) -> bool:
    return any(key.startswith(prefix) for key in shapes)


# -- config folders ----------------------------------------------------------------------------


def config_folder(config: str, kind: str) -> Path:
    """``[model] config``: a diffusers config folder, a kind name, or empty (the detected kind)."""
    if not config or config in KINDS:
        return materialise(kind)
    folder = Path(config).expanduser()
    if not (folder / "model_index.json").is_file():
        raise ModelError(
            f"[model] config = {config!r}: no model_index.json in that folder. Leave it empty to detect the "
            f"checkpoint's kind, name one of {', '.join(KINDS)}, or point it at a diffusers config folder"
        )
    return folder


def materialise(kind: str) -> Path:
    """A complete config folder for ``kind`` (configs + tokenizers) in the cache, built once."""
    from pipeline.models import build_once, cache_dir

    folder = cache_dir() / "configs" / f"{kind}-{configs_version(kind)}"
    return build_once(folder, lambda tmp: _fill_config_folder(tmp, kind))


def configs_version(kind: str) -> str:
    """A digest of the vendored files: a changed config gets a fresh folder, never a stale one."""
    digest = hashlib.sha256()
    for path in sorted((CONFIGS / kind).rglob("*.json")):
        digest.update(path.relative_to(CONFIGS).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:10]


def _fill_config_folder(tmp: Path, kind: str) -> None:
    shutil.copytree(CONFIGS / kind, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.md"))
    for name, pad in KINDS[kind].pads:
        write_tokenizer_files(tmp / name, pad)


# -- loading -----------------------------------------------------------------------------------


def _from_single_file(path: Path, folder: Path, dtype):
    cls = _pipeline_class(folder)
    from diffusers.loaders.single_file_utils import SingleFileComponentError

    try:
        return cls.from_single_file(str(path), config=str(folder), dtype=dtype, local_files_only=True)
    except (OSError, ValueError, RuntimeError, KeyError, SingleFileComponentError) as exc:
        raise ModelError(
            f"{path}: cannot load it with the config folder {folder} ({_reason(exc)}). If the file is not "
            f"a {cls.__name__} checkpoint, set [model] config to the kind it is ({', '.join(KINDS)}) or to a "
            f"diffusers config folder that matches it"
        ) from None


def _pipeline_class(folder: Path):
    import diffusers

    name = json.loads((folder / "model_index.json").read_text()).get("_class_name", "")
    cls = getattr(diffusers, name, None)
    if cls is None or not hasattr(cls, "from_single_file"):
        raise ModelError(
            f"{folder}/model_index.json: _class_name {name!r} is not a diffusers pipeline that loads single files"
        )
    return cls


def _reason(exc: Exception) -> str:
    """diffusers' reason, without its advice to pass loader flags (a creator cannot)."""
    text = _first_line(exc)
    if "meta tensor" in text:
        # diffusers leaves a tensor the file lacks on the meta device, then fails to move it
        return "the file lacks some of the weights this config needs: it is incomplete or another kind"
    return text.split(". ")[0].rstrip(".")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
