"""LoRAs and embeddings applied to the real tiny pipelines (SD1 and SDXL), switched per image:
pixels with a LoRA differ, weight 0 and "no LoRA" are exactly the plain pixels, and switching
sets between images gives exactly what a fresh load of each set gives."""

from __future__ import annotations

import pytest

from pipeline import models, resources
from pipeline.adapters import Adapters
from pipeline.errors import AiimgError
from tests import lora_fixtures

TINY: dict = {}


@pytest.fixture(scope="module", autouse=True)
def tiny_models():
    """The tiny models from the user's cache (built once), before a test points the cache elsewhere."""
    import torch

    torch.set_num_threads(1)
    models._quiet()
    TINY.update(sd1=models.ensure_tiny(), sdxl=models.ensure_tiny_xl())


@pytest.fixture(autouse=True)
def hash_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AIIMG_CACHE", str(tmp_path / "cache"))
    resources.forget()


def sd1():
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(TINY["sd1"], safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def image(pipe, prompt="red hair, blue coat", **kwargs):
    import torch

    out = pipe(
        prompt,
        num_inference_steps=2,
        width=64,
        height=64,
        generator=torch.Generator().manual_seed(7),
        output_type="np",
        **kwargs,
    )
    return out.images[0]


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory):
    """models/Lora with two LoRAs in a sub-folder, made for the tiny SD1 model."""
    root = tmp_path_factory.mktemp("models") / "Lora"
    pipe = sd1()
    lora_fixtures.make_lora(root / "sub" / "InkStyle.safetensors", pipe, seed=1)
    lora_fixtures.make_lora(root / "sub" / "Blue_Eyes.safetensors", pipe, seed=2, output_name="blueeyes")
    lora_fixtures.make_lora(root / "UnetOnly.safetensors", pipe, seed=3, text=False)
    return root


def use(adapters, root, *wanted):
    adapters.activate([(resources.find_lora(name, [root]), te, unet) for name, te, unet in wanted])


def test_the_fixture_is_a_kohya_lora_diffusers_converts(lora_dir):
    path = resources.find_lora("inkstyle", [lora_dir]).path
    keys = resources.lora_keys(path)
    assert path.parent.name == "sub" and resources.check_lora(path) == "kohya"
    assert any(k.startswith("lora_unet_") and k.endswith(".lora_down.weight") for k in keys)
    assert any(k.startswith("lora_te_") for k in keys) and any(k.endswith(".alpha") for k in keys)


def test_a_lora_changes_the_pixels_and_weight_zero_or_none_gives_the_plain_ones(lora_dir):
    import numpy as np

    pipe = sd1()
    plain = image(pipe)
    adapters = Adapters(pipe)
    use(adapters, lora_dir, ("InkStyle", 1.0, 1.0))
    assert np.abs(image(pipe) - plain).max() > 1e-3
    use(adapters, lora_dir, ("InkStyle", 0.0, 0.0))
    assert np.array_equal(image(pipe), plain)
    use(adapters, lora_dir)
    assert np.array_equal(image(pipe), plain)
    assert adapters.loaded and adapters.active == []


def test_switching_sets_between_images_matches_a_fresh_load_of_each(lora_dir):
    import numpy as np

    sets = [
        [("InkStyle", 1.0, 1.0)],
        [("blueeyes", 0.7, 0.4)],  # by its ss_output_name
        [("InkStyle", 0.5, 0.5), ("Blue_Eyes", 1.0, 0.8), ("UnetOnly", 1.0, 0.6)],
        [],
        [("InkStyle", 0.25, 0.25), ("InkStyle", 0.25, 0.25)],  # twice: the weights add up
    ]
    pipe = sd1()
    adapters = Adapters(pipe)
    switched = []
    for wanted in sets:
        use(adapters, lora_dir, *wanted)
        switched.append(image(pipe))
    for wanted, got in zip(sets, switched):
        fresh = sd1()
        use(Adapters(fresh), lora_dir, *wanted)
        assert np.array_equal(got, image(fresh)), wanted
    merged = sd1()
    use(Adapters(merged), lora_dir, ("InkStyle", 0.5, 0.5))
    assert np.array_equal(switched[-1], image(merged))


def test_the_text_encoder_weight_reaches_the_text_encoder_only(lora_dir):
    import torch

    pipe = sd1()
    ids = pipe.tokenizer("red hair", padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        plain = pipe.text_encoder(ids)[0]
        adapters = Adapters(pipe)
        use(adapters, lora_dir, ("InkStyle", 0.0, 1.0))
        assert torch.equal(pipe.text_encoder(ids)[0], plain)
        use(adapters, lora_dir, ("InkStyle", 1.0, 0.0))
        assert not torch.equal(pipe.text_encoder(ids)[0], plain)


def test_each_file_loads_once_and_the_least_recent_is_evicted(lora_dir, monkeypatch):
    pipe = sd1()
    loads = []
    real = pipe.load_lora_weights
    monkeypatch.setattr(pipe, "load_lora_weights", lambda sd, **kw: loads.append(kw["adapter_name"]) or real(sd, **kw))
    adapters = Adapters(pipe, max_loaded=2)
    for wanted in (["InkStyle"], ["InkStyle", "Blue_Eyes"], ["InkStyle"], ["UnetOnly"]):
        use(adapters, lora_dir, *[(n, 1.0, 1.0) for n in wanted])
    assert len(loads) == 3  # InkStyle once, though asked for three times
    ink, blue = (resources.find_lora(n, [lora_dir]).hash for n in ("InkStyle", "Blue_Eyes"))
    assert adapters.loaded == [f"lora_{ink}", adapters.active[0]]
    assert f"lora_{blue}" not in pipe.get_list_adapters()["unet"]
    assert adapters.evict() == [f"lora_{ink}"] and adapters.loaded == adapters.active


def test_img2img_built_with_from_pipe_shares_the_adapters(lora_dir):
    import numpy as np
    from diffusers import AutoPipelineForImage2Image

    pipe = sd1()
    adapters = Adapters(pipe)
    i2i = AutoPipelineForImage2Image.from_pipe(pipe)
    start = np.full((64, 64, 3), 0.5, dtype=np.float32)
    plain = image(i2i, image=start, strength=0.6)
    use(adapters, lora_dir, ("InkStyle", 1.0, 1.0))
    assert not np.array_equal(image(i2i, image=start, strength=0.6), plain)


def test_loha_and_dora_files_are_refused_before_touching_the_model(tmp_path):
    pipe = sd1()
    root = tmp_path / "Lora"
    lora_fixtures.make_loha(root / "Hada.safetensors", pipe)
    lora_fixtures.make_dora(root / "Dora.safetensors", pipe)
    adapters = Adapters(pipe)
    for name, fmt in (("hada", "LoHa"), ("dora", "DoRA")):
        lora = resources.find_lora(name, [root])
        with pytest.raises(AiimgError) as err:
            adapters.activate([(lora, 1.0, 1.0)])
        assert str(lora.path) in str(err.value) and fmt in str(err.value)
    assert adapters.loaded == [] and not hasattr(pipe.unet, "peft_config")


def test_a_failed_activation_leaves_no_lora_active(tmp_path, lora_dir):
    import numpy as np

    pipe = sd1()
    plain = image(pipe)
    adapters = Adapters(pipe)
    use(adapters, lora_dir, ("InkStyle", 1.0, 1.0))
    hada = lora_fixtures.make_loha(tmp_path / "Hada.safetensors", pipe)
    with pytest.raises(AiimgError, match="LoHa"):
        adapters.activate(
            [(resources.find_lora("InkStyle", [lora_dir]), 1.0, 1.0), (resources.LoraFile(hada, "Hada"), 1, 1)]
        )
    assert adapters.active == [] and np.array_equal(image(pipe), plain)


# -- embeddings -------------------------------------------------------------------------------


def encode(pipe, prompt):
    import torch

    ids = pipe.tokenizer(prompt, padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        return pipe.text_encoder(ids)[0]


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_an_a1111_embedding_is_found_by_stem_loaded_and_changes_the_encoding(tmp_path, suffix):
    import torch

    pipe = sd1()
    width = pipe.text_encoder.get_input_embeddings().weight.shape[1]
    root = tmp_path / "embeddings"
    lora_fixtures.make_embedding(root / f"EasyNegative{suffix}", width=width, vectors=3)
    prompt = "lowres, (easynegative:1.2), bad hands"
    before = encode(pipe, Adapters(pipe).expand_embeddings(prompt))
    found = resources.embeddings_in(prompt, [root])
    assert [e.name for e in found] == ["EasyNegative"]

    adapters = Adapters(pipe)
    tokens = adapters.ensure_embeddings(found)
    token = f"<emb-{found[0].hash}>"  # a placeholder no prompt contains, so the name fires only as a word
    assert tokens == {"easynegative": [token, f"{token}_1", f"{token}_2"]}
    expanded = adapters.expand_embeddings(prompt)
    assert expanded == f"lowres, ({token} {token}_1 {token}_2:1.2), bad hands"
    ids = pipe.tokenizer.convert_tokens_to_ids(tokens["easynegative"])
    vectors = resources.load_embedding(found[0])[""]
    assert torch.equal(pipe.text_encoder.get_input_embeddings().weight[ids], vectors)
    assert all(i in pipe.tokenizer(expanded).input_ids for i in ids)
    assert not torch.equal(encode(pipe, expanded), before)
    assert adapters.ensure_embeddings(found) == tokens  # a second call loads nothing (it would raise)


def test_an_embedding_of_another_width_is_refused_clearly(tmp_path):
    pipe = sd1()
    emb = resources.EmbeddingFile(lora_fixtures.make_embedding(tmp_path / "wide.safetensors", width=768), "wide")
    with pytest.raises(AiimgError, match="768 wide.*takes 32"):
        Adapters(pipe).ensure_embeddings([emb])


# -- SDXL -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sdxl_lora(tmp_path_factory):
    root = tmp_path_factory.mktemp("xl") / "Lora"
    return lora_fixtures.make_lora(root / "XLStyle.safetensors", lora_fixtures.tiny_sdxl(), seed=4)


def test_sdxl_lora_uses_both_text_encoders_and_weight_zero_is_exact(sdxl_lora):
    import numpy as np

    keys = resources.lora_keys(sdxl_lora)
    assert any(k.startswith("lora_te1_") for k in keys) and any(k.startswith("lora_te2_") for k in keys)
    pipe = lora_fixtures.tiny_sdxl()
    plain = image(pipe)
    adapters = Adapters(pipe)
    lora = resources.find_lora("xlstyle", [sdxl_lora.parent])
    adapters.activate([(lora, 1.0, 1.0)])
    assert set(pipe.get_list_adapters()) == {"unet", "text_encoder", "text_encoder_2"}
    assert np.abs(image(pipe) - plain).max() > 1e-3
    adapters.activate([(lora, 0.0, 0.0)])
    assert np.array_equal(image(pipe), plain)


def test_an_sd1_lora_on_sdxl_is_a_clear_error(lora_dir):
    pipe = lora_fixtures.tiny_sdxl()
    lora = resources.find_lora("InkStyle", [lora_dir])
    with pytest.raises(AiimgError, match="InkStyle.safetensors: .*another base model"):
        Adapters(pipe).activate([(lora, 1.0, 1.0)])


def test_sdxl_embedding_loads_clip_l_and_clip_g_into_their_encoders(tmp_path):
    import torch

    pipe = lora_fixtures.tiny_sdxl()
    widths = (pipe.text_encoder.config.hidden_size, pipe.text_encoder_2.config.hidden_size)
    path = lora_fixtures.make_embedding(tmp_path / "XLNeg.safetensors", vectors=2, sdxl_widths=widths)
    emb = resources.find_embedding("xlneg", [tmp_path])
    tokens = Adapters(pipe).ensure_embeddings([emb])["xlneg"]
    vectors = resources.load_embedding(emb)
    for encoder, tokenizer, key in (
        (pipe.text_encoder, pipe.tokenizer, "clip_l"),
        (pipe.text_encoder_2, pipe.tokenizer_2, "clip_g"),
    ):
        ids = tokenizer.convert_tokens_to_ids(tokens)
        assert torch.equal(encoder.get_input_embeddings().weight[ids], vectors[key]), key
    sd1_file = lora_fixtures.make_embedding(tmp_path / "Old.safetensors", width=widths[0])
    with pytest.raises(AiimgError, match="SD1/SD2 embedding.*SDXL"):
        Adapters(pipe).ensure_embeddings([resources.EmbeddingFile(sd1_file, "Old")])
    assert path.is_file()
