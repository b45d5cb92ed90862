"""Tiny LoRAs, embeddings and an SDXL pipeline for tests and benchmarks, made on this machine.

The LoRAs are trained-looking, not trained: peft adds rank-4 adapters with random weights to a
copy of the pipeline's UNet and text encoder(s), and diffusers' ``convert_state_dict_to_kohya``
writes them in the layout A1111 users download (``lora_unet_*``, ``lora_te_*`` for SD1,
``lora_te1_*``/``lora_te2_*`` for SDXL, ``.lora_down``/``.lora_up``/``.alpha``), so loading them
goes through diffusers' real Kohya conversion. Module names come from the pipeline given, so the
files fit whatever the tiny model becomes.
"""

from __future__ import annotations

import copy
import json
import struct
from pathlib import Path

UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


# the keys of a small SD1 Kohya LoRA, for files whose header is all a test reads
KOHYA_KEYS = [
    "lora_unet_down_blocks_0_attentions_0_proj_in.alpha",
    "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight",
    "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight",
    "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight",
    "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight",
]


def write_safetensors(path: Path, keys: list[str], metadata: dict | None = None, payload: bytes = b"") -> bytes:
    """A valid safetensors file of one float per key, written without torch; returns its bytes.
    ``payload`` after the tensors changes the file's hashes without changing its header."""
    header = {k: {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]} for i, k in enumerate(keys)}
    if metadata:
        header["__metadata__"] = metadata
    head = json.dumps(header).encode()
    data = struct.pack("<Q", len(head)) + head + b"\0\0\x80\x3f" * len(keys) + payload
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def kohya_lora(pipe, seed: int = 0, rank: int = 4, unet: bool = True, text: bool = True) -> dict:
    """A Kohya-layout LoRA state dict for ``pipe``'s UNet and text encoder(s)."""
    import torch
    from diffusers.utils import convert_state_dict_to_kohya

    torch.manual_seed(seed)
    peft_state = {}
    if unet:
        peft_state.update(_peft_state(pipe.unet, UNET_TARGETS, "unet", rank))
    if text:
        peft_state.update(_peft_state(pipe.text_encoder, TEXT_TARGETS, "text_encoder", rank))
        if getattr(pipe, "text_encoder_2", None) is not None:
            peft_state.update(_peft_state(pipe.text_encoder_2, TEXT_TARGETS, "text_encoder_2", rank))
    state = convert_state_dict_to_kohya(peft_state)
    if getattr(pipe, "text_encoder_2", None) is None:  # SD1 files name their one text encoder lora_te_
        state = {k.replace("lora_te1_", "lora_te_", 1): v for k, v in state.items()}
    return {k: v.contiguous() for k, v in state.items()}


def _peft_state(module, targets: list[str], prefix: str, rank: int) -> dict:
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model

    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=targets, init_lora_weights=False)
    model = inject_adapter_in_model(config, copy.deepcopy(module))
    return {f"{prefix}.{k}": v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}


def save(path: Path, state: dict, output_name: str = "") -> Path:
    """Write a state dict as .safetensors, with Kohya's ``ss_output_name`` when given."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={"ss_output_name": output_name} if output_name else None)
    return path


def make_lora(path: Path, pipe, seed: int = 0, output_name: str = "", **kwargs) -> Path:
    """A tiny Kohya LoRA for ``pipe`` at ``path`` (e.g. ``models/Lora/sub/Name.safetensors``)."""
    return save(path, kohya_lora(pipe, seed=seed, **kwargs), output_name)


def make_loha(path: Path, pipe) -> Path:
    """A LyCORIS LoHa file (``hada_*`` keys), which diffusers cannot load."""
    import torch

    state = {}
    for key in list(kohya_lora(pipe, unet=True, text=False))[:4]:
        module = key.split(".")[0]
        for part in ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"):
            state[f"{module}.{part}"] = torch.randn(4, 4)
        state[f"{module}.alpha"] = torch.tensor(4.0)
    return save(path, state)


def make_dora(path: Path, pipe) -> Path:
    """A Kohya DoRA file: a LoRA plus ``dora_scale`` per module, which diffusers would drop."""
    import torch

    state = kohya_lora(pipe, text=False)
    for key in [k for k in state if k.endswith(".lora_up.weight")]:
        state[key.replace(".lora_up.weight", ".dora_scale")] = torch.ones(1, state[key].shape[0])
    return save(path, state)


def make_embedding(path: Path, width: int = 32, vectors: int = 2, seed: int = 0, sdxl_widths=None) -> Path:
    """A textual inversion as A1111 saves it: ``.safetensors`` with ``emb_params``, ``.pt`` with
    ``string_to_param["*"]`` and a ``name``; ``sdxl_widths=(l, g)`` makes an SDXL file with
    ``clip_l`` and ``clip_g``."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    if sdxl_widths:
        l_width, g_width = sdxl_widths
        state = {
            "clip_l": torch.randn(vectors, l_width, generator=generator),
            "clip_g": torch.randn(vectors, g_width, generator=generator),
        }
        return save(path, state)
    emb = torch.randn(vectors, width, generator=generator)
    if path.suffix == ".pt":
        torch.save({"string_to_param": {"*": emb}, "name": path.stem, "step": 100}, path)
        return path
    return save(path, {"emb_params": emb})


def tiny_sdxl():
    """The tiny SDXL pipeline (pipeline.models' ``tiny-xl``), a fresh copy of its weights."""
    from diffusers import StableDiffusionXLPipeline

    from pipeline.models import ensure_tiny_xl

    pipe = StableDiffusionXLPipeline.from_pretrained(ensure_tiny_xl())
    pipe.set_progress_bar_config(disable=True)
    return pipe
