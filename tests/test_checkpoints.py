"""Single-file checkpoints offline: detection, vendored configs, the same pixels as diffusers format."""

from __future__ import annotations

import json
import shutil
import socket

import numpy as np
import pytest

from pipeline import checkpoints, config, models
from pipeline.errors import ModelError
from tests import checkpoint_fixtures as fx

# parameters of the published models (SD 1.5 UNet 859.52M, SDXL UNet 2.567B, the VAE 83.65M, CLIP-L
# text 123.06M, OpenCLIP-H text less its last layer 340.39M, OpenCLIP-bigG text with projection 694.66M)
FULL_SIZE = {
    "v1": {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480},
    "v2": {"unet": 865_910_724, "vae": 83_653_863, "text_encoder": 340_387_840},
    "v2_base": {"unet": 865_910_724, "vae": 83_653_863, "text_encoder": 340_387_840},
    "xl_base": {"unet": 2_567_463_684, "vae": 83_653_863, "text_encoder": 123_060_480, "text_encoder_2": 694_659_840},
}


@pytest.fixture(scope="module")
def tiny_xl():
    import torch

    torch.set_num_threads(1)
    return models.load(config.ModelConfig(id=models.TINY_XL))


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny, tiny_xl):
    """Each tiny model as one A1111-layout .safetensors, and its configs without the weights."""
    root = tmp_path_factory.mktemp("checkpoints")
    out = {}
    for name, loaded, folder in (("sd1", tiny, models.ensure_tiny()), ("sdxl", tiny_xl, models.ensure_tiny_xl())):
        configs = root / f"{name}-config"
        shutil.copytree(folder, configs, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
        out[name] = (fx.write_checkpoint(loaded.txt2img, root / f"{name}.safetensors"), configs)
    return out


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def _image(loaded, seed: int = 3):
    import torch

    generator = torch.Generator().manual_seed(seed)
    image = loaded.txt2img("red hair", num_inference_steps=2, height=64, width=64, generator=generator).images[0]
    return np.array(image)


# -- the same pixels ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sd1", "sdxl"])
def test_a_checkpoint_gives_exactly_the_pixels_of_its_diffusers_folder(name, files, tiny, tiny_xl, no_network):
    path, configs = files[name]
    loaded = models.load(config.ModelConfig(id=str(path), config=str(configs)))
    original = tiny if name == "sd1" else tiny_xl
    assert (loaded.name, loaded.kind, loaded.hash) == (path.stem, name, models.file_hash(path))
    assert np.array_equal(_image(loaded), _image(original))
    assert type(loaded.img2img).__name__ == type(original.img2img).__name__


def test_a_ckpt_with_its_state_dict_wrapper_loads_the_same(files, tiny, tmp_path):
    import torch
    from safetensors.torch import load_file

    path, configs = files["sd1"]
    ckpt = tmp_path / "old-style.ckpt"
    torch.save({"global_step": 470000, "state_dict": load_file(path)}, ckpt)
    assert checkpoints.detect(*checkpoints.read_shapes(ckpt)) == "v1"
    loaded = models.load(config.ModelConfig(id=str(ckpt), config=str(configs)))
    assert np.array_equal(_image(loaded), _image(tiny))


# -- detection ----------------------------------------------------------------------------------


def test_detection_names_the_tiny_checkpoints_by_kind(files):
    assert checkpoints.detect(*checkpoints.read_shapes(files["sd1"][0])) == "v1"
    assert checkpoints.detect(*checkpoints.read_shapes(files["sdxl"][0])) == "xl_base"


def _unet(in_channels: int = 4) -> dict:
    return {fx.UNET + "input_blocks.0.0.weight": (320, in_channels, 3, 3), fx.UNET + "out.2.bias": (4,)}


def test_sd2_is_768_v_unless_a_ckpt_step_says_512_base():
    shapes = _unet() | {fx.SD2_TEXT + "positional_embedding": (77, 1024)}
    assert checkpoints.detect(shapes) == "v2"
    assert checkpoints.detect(shapes, step=875000) == "v2_base"
    assert checkpoints.KINDS["v2"].family == checkpoints.KINDS["v2_base"].family == "sd2"


@pytest.mark.parametrize(
    ("shapes", "message"),
    [
        (_unet(9) | {fx.SD1_TEXT + "x": (1,)}, "an inpainting model"),
        (_unet(8) | {fx.SD1_TEXT + "x": (1,)}, "instruct-pix2pix"),
        (_unet() | {"conditioner.embedders.0.model.text_projection": (1280, 1280)}, "an SDXL refiner"),
        (_unet(), "no text encoder"),
        ({fx.UNET + "double_blocks.0.img_attn.norm.key_norm.scale": (128,)}, "SD3 or Flux"),
    ],
)
def test_checkpoints_that_cannot_draw_from_a_prompt_are_refused_by_name(shapes, message):
    with pytest.raises(ModelError, match=message):
        checkpoints.detect(shapes, path="x.safetensors")


@pytest.mark.parametrize(
    ("keys", "looks_like"),
    [
        (["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight", "lora_te_text_model.alpha"], "a LoRA"),
        (["unet.down_blocks.0.attentions.0.to_q.lora_A.weight"], "a LoRA"),
        (["emb_params"], "textual-inversion embedding"),
        (["clip_l", "clip_g"], "textual-inversion embedding"),
        (["encoder.conv_in.weight", "decoder.conv_out.weight", "quant_conv.weight"], "a VAE"),
        (["control_model.time_embed.0.weight"], "a ControlNet"),
        (["conv_in.weight", "down_blocks.0.resnets.0.conv1.weight"], "diffusers-format UNet"),
        (["something.else"], "holds 1 tensors: something.else"),
    ],
)
def test_a_file_that_is_not_a_checkpoint_says_what_it_looks_like(keys, looks_like, tmp_path):
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "dropped-in.safetensors"
    save_file({key: torch.zeros(1) for key in keys}, str(path))
    with pytest.raises(ModelError, match="is not a Stable Diffusion checkpoint") as err:
        models.load(config.ModelConfig(id=str(path)))
    assert looks_like in str(err.value) and "dropped-in.safetensors" in str(err.value)


def test_unreadable_files_say_so(tmp_path):
    broken = tmp_path / "half-downloaded.safetensors"
    broken.write_bytes(b"\xff" * 64)
    with pytest.raises(ModelError, match="not a readable .safetensors file.*download it again"):
        models.load(config.ModelConfig(id=str(broken)))
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a pickle")
    with pytest.raises(ModelError, match="not a readable PyTorch checkpoint"):
        models.load(config.ModelConfig(id=str(garbage)))
    with pytest.raises(ModelError, match="file not found"):
        models.load(config.ModelConfig(id=str(tmp_path / "missing.safetensors")))


class NotATensor:
    """Anything a pickle would have to construct by running code from the file."""


def test_a_ckpt_pickle_that_needs_code_is_refused_before_anything_runs(tmp_path):
    import torch

    path = tmp_path / "unsafe.ckpt"
    torch.save({"state_dict": {fx.UNET + "out.2.bias": torch.zeros(4)}, "callback": NotATensor()}, path)
    with pytest.raises(ModelError, match="needs more than tensors to unpickle.*safetensors"):
        models.load(config.ModelConfig(id=str(path)))


# -- incomplete files and config overrides ------------------------------------------------------


def test_a_checkpoint_missing_some_weights_says_so(files, tmp_path):
    from safetensors.torch import load_file, save_file

    path, configs = files["sd1"]
    state = load_file(path)
    del state[fx.UNET + "out.2.weight"]
    save_file(state, str(tmp_path / "partial.safetensors"))
    with pytest.raises(ModelError, match="partial.safetensors: .*the file lacks some of the weights"):
        models.load(config.ModelConfig(id=str(tmp_path / "partial.safetensors"), config=str(configs)))


def test_a_checkpoint_without_a_vae_is_a_clear_error(files, tmp_path):
    from safetensors.torch import load_file, save_file

    path, configs = files["sd1"]
    state = {k: v for k, v in load_file(path).items() if not k.startswith(fx.VAE)}
    save_file(state, str(tmp_path / "no-vae.safetensors"))
    with pytest.raises(ModelError, match="no-vae.safetensors: cannot load it with the config folder"):
        models.load(config.ModelConfig(id=str(tmp_path / "no-vae.safetensors"), config=str(configs)))


def test_config_pointing_at_a_folder_without_model_index_says_what_to_set(files, tmp_path):
    with pytest.raises(ModelError, match=r"\[model\] config = .*no model_index.json.*v1, v2, v2_base, xl_base"):
        models.load(config.ModelConfig(id=str(files["sd1"][0]), config=str(tmp_path)))


@pytest.mark.parametrize("kind", list(checkpoints.KINDS))
def test_full_size_configs_load_offline_up_to_the_weights(kind, files, no_network, tmp_path, monkeypatch):
    """The tiny file against each full-size config: a shape error at the first weight, never the hub."""
    monkeypatch.setenv("AIIMG_CACHE", str(tmp_path))
    with pytest.raises(ModelError, match=f"configs/{kind}-.*(expected shape|valid CLIP model)") as err:
        models.load(config.ModelConfig(id=str(files["sd1"][0]), config=kind))
    assert "huggingface.co" not in str(err.value) and "low_cpu_mem_usage" not in str(err.value)


def test_a_config_folder_must_name_a_pipeline_that_loads_single_files(files, tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "NotAPipeline"}))
    with pytest.raises(ModelError, match="_class_name 'NotAPipeline' is not a diffusers pipeline"):
        models.load(config.ModelConfig(id=str(files["sd1"][0]), config=str(tmp_path)))


# -- the vendored configs -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(checkpoints.KINDS))
def test_materialised_config_folders_are_complete(kind, tmp_path, monkeypatch):
    from transformers import CLIPTokenizer

    monkeypatch.setenv("AIIMG_CACHE", str(tmp_path))
    folder = checkpoints.materialise(kind)
    assert folder.parent == tmp_path / "configs" and folder.name.startswith(kind + "-")
    assert checkpoints.materialise(kind) == folder and [p.name for p in folder.parent.iterdir()] == [folder.name]
    index = json.loads((folder / "model_index.json").read_text())
    parts = {name for name, value in index.items() if isinstance(value, list) and value[0] is not None}
    for name in parts:
        assert {p.name for p in (folder / name).iterdir()} & {"config.json", "scheduler_config.json", "vocab.json"}
    pads = dict(checkpoints.KINDS[kind].pads)
    assert {name for name in parts if name.startswith("tokenizer")} == set(pads)
    for name, pad in pads.items():
        tokenizer = CLIPTokenizer.from_pretrained(folder / name)
        assert (len(tokenizer), tokenizer.pad_token, tokenizer.model_max_length) == (49408, pad, 77)
    scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["prediction_type"] == ("v_prediction" if kind == "v2" else "epsilon")


def _skeletons(folder):
    """Each component of a full-size model, built from the config folder on the meta device."""
    import transformers
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel

    index = json.loads((folder / "model_index.json").read_text())
    out = {}
    with init_empty_weights():
        out["unet"] = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
        out["vae"] = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
        for name in ("text_encoder", "text_encoder_2"):
            if name in index:
                cls = getattr(transformers, index[name][1])
                out[name] = cls(cls.config_class.from_pretrained(folder / name))
    return out


@pytest.mark.parametrize("kind", list(checkpoints.KINDS))
def test_vendored_configs_build_the_published_architectures(kind):
    from diffusers.loaders.single_file_utils import (
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        infer_diffusers_model_type,
    )

    parts = _skeletons(checkpoints.materialise(kind))
    assert {name: sum(p.numel() for p in m.parameters()) for name, m in parts.items()} == FULL_SIZE[kind]
    unet, vae = parts["unet"], parts["vae"]
    ldm = fx._prefixed(fx.UNET, fx.unet_to_ldm(unet.state_dict(), unet.config))
    ldm |= fx._prefixed(fx.VAE, fx.vae_to_ldm(vae.state_dict(), vae.config))
    ldm |= _text_to_ldm(kind, parts)
    # the layout is the real one: diffusers' own detector and converters agree with it
    assert infer_diffusers_model_type(ldm) == ("v2" if kind == "v2_base" else kind)
    assert checkpoints.detect({k: tuple(v.shape) for k, v in ldm.items()}) == ("v2" if kind == "v2_base" else kind)
    for model, convert in ((unet, convert_ldm_unet_checkpoint), (vae, convert_ldm_vae_checkpoint)):
        back = convert(ldm, model.config)
        assert {k: v.shape for k, v in back.items()} == {k: v.shape for k, v in model.state_dict().items()}


def _text_to_ldm(kind: str, parts: dict) -> dict:
    if kind == "xl_base":
        ldm = fx._prefixed(fx.XL_TEXT, fx.clip_to_ldm(parts["text_encoder"].state_dict()))
        return ldm | fx._prefixed(fx.XL_TEXT_2, fx.openclip_to_ldm(parts["text_encoder_2"].state_dict()))
    if kind.startswith("v2"):
        return fx._prefixed(fx.SD2_TEXT, fx.openclip_to_ldm(parts["text_encoder"].state_dict()))
    return fx._prefixed(fx.SD1_TEXT, fx.clip_to_ldm(parts["text_encoder"].state_dict()))


def test_text_encoders_round_trip_through_diffusers_converters():
    from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint, convert_open_clip_checkpoint

    for kind in ("v2", "xl_base"):
        parts = _skeletons(checkpoints.materialise(kind))
        ldm = _text_to_ldm(kind, parts)
        clip_name, prefix = ("text_encoder_2", fx.XL_TEXT_2) if kind == "xl_base" else ("text_encoder", fx.SD2_TEXT)
        model = parts[clip_name]
        back = convert_open_clip_checkpoint(model, ldm, prefix=prefix)
        if not hasattr(model, "text_model"):
            back = {k.removeprefix("text_model."): v for k, v in back.items()}
        assert {k: v.shape for k, v in back.items()} == {k: v.shape for k, v in model.state_dict().items()}
    back = {k.removeprefix("text_model."): v for k, v in convert_ldm_clip_checkpoint(ldm).items()}
    assert {k: v.shape for k, v in back.items()} == {k: v.shape for k, v in parts["text_encoder"].state_dict().items()}
