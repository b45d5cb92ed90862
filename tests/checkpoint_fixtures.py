"""diffusers -> original A1111/LDM key layout, to write single-file checkpoints for the tests.

diffusers ships only the other direction (loaders/single_file_utils.py: convert_ldm_unet_checkpoint,
convert_ldm_vae_checkpoint, convert_ldm_clip_checkpoint, convert_open_clip_checkpoint); each
function here inverts one of those, for any block count, layers per block and depth, so the same
code maps the tiny models' weights and the full-size skeletons' (meta) shapes.
"""

from __future__ import annotations

from pathlib import Path

UNET = "model.diffusion_model."
VAE = "first_stage_model."
SD1_TEXT = "cond_stage_model.transformer."
SD2_TEXT = "cond_stage_model.model."
XL_TEXT = "conditioner.embedders.0.transformer."
XL_TEXT_2 = "conditioner.embedders.1.model."

_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
_OPENCLIP = {
    "embeddings.token_embedding.weight": "token_embedding.weight",
    "embeddings.position_embedding.weight": "positional_embedding",
    "final_layer_norm.weight": "ln_final.weight",
    "final_layer_norm.bias": "ln_final.bias",
}
_OPENCLIP_LAYER = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}


def ldm_state_dict(pipe) -> dict:
    """The whole pipeline as one original-layout state dict (SD 1.x, SD 2.x or SDXL)."""
    state = _prefixed(UNET, unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config))
    state |= _prefixed(VAE, vae_to_ldm(pipe.vae.state_dict(), pipe.vae.config))
    if getattr(pipe, "text_encoder_2", None) is not None:
        state |= _prefixed(XL_TEXT, clip_to_ldm(pipe.text_encoder.state_dict()))
        return state | _prefixed(XL_TEXT_2, openclip_to_ldm(pipe.text_encoder_2.state_dict()))
    if pipe.tokenizer.pad_token == "!":
        return state | _prefixed(SD2_TEXT, openclip_to_ldm(pipe.text_encoder.state_dict()))
    return state | _prefixed(SD1_TEXT, clip_to_ldm(pipe.text_encoder.state_dict()))


def write_checkpoint(pipe, path: Path) -> Path:
    """``pipe``'s weights as one .safetensors in the A1111/Civitai layout."""
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous() for k, v in ldm_state_dict(pipe).items()}, str(path))
    return path


def _prefixed(prefix: str, state: dict) -> dict:
    return {prefix + key: value for key, value in state.items()}


def _rename(key: str, prefixes: dict[str, str], tails: dict[str, str] | None = None) -> str:
    """The longest matching prefix swapped; within it, the first component of the rest renamed."""
    for old in sorted(prefixes, key=len, reverse=True):
        if key.startswith(old):
            rest = key[len(old) :]
            for tail_old, tail_new in (tails or {}).items():
                if rest.startswith(tail_old + "."):
                    rest = tail_new + rest[len(tail_old) :]
                    break
            return prefixes[old] + rest
    return key


# -- UNet ---------------------------------------------------------------------------------------


def unet_prefixes(config) -> tuple[dict[str, str], dict[str, str]]:
    """(resnet prefixes, other prefixes): diffusers module -> LDM module, as convert_ldm_unet_checkpoint
    numbers them (input block i: layer (i-1) % (layers+1) of down block (i-1) // (layers+1))."""
    layers, blocks = config["layers_per_block"], len(config["block_out_channels"])
    resnets, others = {"mid_block.resnets.0.": "middle_block.0.", "mid_block.resnets.1.": "middle_block.2."}, {}
    others |= {"mid_block.attentions.0.": "middle_block.1.", **_UNET_TOP}
    index = 1
    for block in range(blocks):
        for layer in range(layers):
            resnets[f"down_blocks.{block}.resnets.{layer}."] = f"input_blocks.{index}.0."
            others[f"down_blocks.{block}.attentions.{layer}."] = f"input_blocks.{index}.1."
            index += 1
        if block < blocks - 1:
            others[f"down_blocks.{block}.downsamplers.0.conv."] = f"input_blocks.{index}.0.op."
            index += 1
    for block in range(blocks):
        first = block * (layers + 1)
        for layer in range(layers + 1):
            resnets[f"up_blocks.{block}.resnets.{layer}."] = f"output_blocks.{first + layer}.0."
            others[f"up_blocks.{block}.attentions.{layer}."] = f"output_blocks.{first + layer}.1."
        # the upsampler follows the last layer's attention when the block has one
        slot = 2 if config["up_block_types"][block].startswith("CrossAttn") else 1
        others[f"up_blocks.{block}.upsamplers.0.conv."] = f"output_blocks.{first + layers}.{slot}.conv."
    return resnets, others


_UNET_TOP = {
    "time_embedding.linear_1.": "time_embed.0.",
    "time_embedding.linear_2.": "time_embed.2.",
    "add_embedding.linear_1.": "label_emb.0.0.",
    "add_embedding.linear_2.": "label_emb.0.2.",
    "conv_in.": "input_blocks.0.0.",
    "conv_norm_out.": "out.0.",
    "conv_out.": "out.2.",
}


def unet_to_ldm(state: dict, config) -> dict:
    resnets, others = unet_prefixes(config)
    out = {}
    for key, value in state.items():
        resnet = next((p for p in resnets if key.startswith(p)), None)
        new = _rename(key, {resnet: resnets[resnet]}, _RESNET) if resnet else _rename(key, others)
        if new == key:
            raise KeyError(f"no LDM name for UNet key {key}")
        out[new] = value
    return out


# -- VAE ----------------------------------------------------------------------------------------


def vae_to_ldm(state: dict, config) -> dict:
    blocks = len(config["block_out_channels"])
    prefixes = {
        "encoder.conv_norm_out.": "encoder.norm_out.",
        "decoder.conv_norm_out.": "decoder.norm_out.",
    }
    for part in ("encoder", "decoder"):
        prefixes[f"{part}.mid_block.resnets.0."] = f"{part}.mid.block_1."
        prefixes[f"{part}.mid_block.resnets.1."] = f"{part}.mid.block_2."
    for block in range(blocks):
        # the LDM decoder numbers its up blocks from the bottom
        up = blocks - 1 - block
        prefixes[f"encoder.down_blocks.{block}.downsamplers.0.conv."] = f"encoder.down.{block}.downsample.conv."
        prefixes[f"decoder.up_blocks.{block}.upsamplers.0.conv."] = f"decoder.up.{up}.upsample.conv."
        for layer in range(config["layers_per_block"] + 1):
            prefixes[f"encoder.down_blocks.{block}.resnets.{layer}."] = f"encoder.down.{block}.block.{layer}."
            prefixes[f"decoder.up_blocks.{block}.resnets.{layer}."] = f"decoder.up.{up}.block.{layer}."
    return dict(_vae_item(key, value, prefixes) for key, value in state.items())


def _vae_item(key: str, value, prefixes: dict):
    for part in ("encoder", "decoder"):
        attention = f"{part}.mid_block.attentions.0."
        if key.startswith(attention):
            # LDM's VAE attention is 1x1 convolutions where diffusers has linear layers
            new = _rename(key, {attention: f"{part}.mid.attn_1."}, _VAE_ATTENTION)
            return new, value[:, :, None, None] if value.ndim == 2 else value
    return _rename(key, prefixes, {"conv_shortcut": "nin_shortcut"}), value


# -- text encoders ------------------------------------------------------------------------------


def clip_to_ldm(state: dict) -> dict:
    """OpenAI CLIP keeps transformers' names under ``text_model.`` (which transformers 5 flattened)."""
    return {(key if key.startswith("text_model.") else "text_model." + key): value for key, value in state.items()}


def openclip_to_ldm(state: dict) -> dict:
    """OpenCLIP's names; q, k and v stacked into one in_proj; the projection transposed."""
    import torch

    state = {key.removeprefix("text_model."): value for key, value in state.items()}
    out = {}
    for key, value in state.items():
        if key == "text_projection.weight":
            out["text_projection"] = value.T
        elif key.startswith("encoder.layers.") and ".self_attn." in key and "_proj." in key and "out_proj" not in key:
            if ".q_proj." in key:
                parts = [state[key.replace(".q_proj.", f".{x}_proj.")] for x in "qkv"]
                layer, kind = key.split(".")[2], key.rsplit(".", 1)[1]
                out[f"transformer.resblocks.{layer}.attn.in_proj_{kind}"] = torch.cat(parts)
        elif key.startswith("encoder.layers."):
            layer, rest = key.split(".", 3)[2:]
            out[f"transformer.resblocks.{layer}." + _rename(rest, {"": ""}, _OPENCLIP_LAYER)] = value
        else:
            out[_OPENCLIP[key]] = value
    return out
