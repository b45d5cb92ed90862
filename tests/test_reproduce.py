"""Reading what an image was made with (aiimg, A1111, Forge, Civitai; PNG, JPEG, WebP, draft.json)
and finding its LoRAs and embeddings here, by name or by hash."""

from __future__ import annotations

import json

import pytest
from PIL import Image, PngImagePlugin

from pipeline import metadata, resources
from pipeline.errors import AiimgError
from pipeline.recipes import DraftRecipe
from pipeline.reproduce import Imported, check_available, from_parameters, prompt_loras, recipe_from
from tests.lora_fixtures import KOHYA_KEYS, write_safetensors
from tests.test_metadata import A1111_16_CIVITAI_EXTENSION, A1111_110, CIVITAI, FORGE, FULL


@pytest.fixture(autouse=True)
def fresh(tmp_path, monkeypatch):
    monkeypatch.setenv("AIIMG_CACHE", str(tmp_path / "cache"))
    resources.forget()


def png_with(path, text: str | None, key: str = "parameters"):
    info = PngImagePlugin.PngInfo()
    if text is not None:
        info.add_text(key, text)
    Image.new("RGB", (8, 8), "red").save(path, pnginfo=info)
    return path


def test_an_a1111_png_gives_every_setting(tmp_path):
    got = recipe_from(png_with(tmp_path / "00001-3050193617.png", A1111_110))
    assert got.prompt.startswith("masterpiece, best quality, 1girl, <lora:add_detail:0.6>")
    assert got.negative_prompt == "EasyNegative, (worst quality:1.4),\nbad-hands-5"
    assert (got.seed, got.width, got.height, got.steps, got.guidance_scale) == (3050193617, 832, 1216, 28, 6.5)
    assert (got.sampler, got.schedule, got.clip_skip, got.emphasis) == ("DPM++ 2M", "Karras", 2, "no-norm")
    assert got.strength == 0.45 and got.tool == "v1.10.1"
    assert got.model == {"name": "anyloraCheckpoint_bakedvaeBlessedFp16", "hash": "7f96a1a9ca"}
    assert got.vae == {"name": "vae-ft-mse-840000-ema-pruned.safetensors", "hash": "235745af8d"}
    assert got.loras == [{"name": "add_detail", "te": 0.6, "unet": 0.6, "hash": "7c6bad76eb54"}]
    assert got.embeddings == [
        {"name": "EasyNegative", "hash": "c74b4e810b03"},
        {"name": "bad-hands-5", "hash": "aa7651be154c"},
    ]
    assert got.settings["Hires upscaler"] == "4x-UltraSharp"


def test_old_combined_sampler_names_and_the_hashes_json(tmp_path):
    got = recipe_from(png_with(tmp_path / "old.png", A1111_16_CIVITAI_EXTENSION))
    assert (got.sampler, got.schedule) == ("DPM++ 2M", "Karras")
    assert got.template == "a {cozy|cold} cabin, __place__"
    assert got.embeddings == [{"name": "EasyNegative", "hash": "", "autov2": "c74b4e810b"}]
    assert got.vae == {}  # a VAE hash in Hashes alone names no VAE


@pytest.mark.parametrize(
    "version, schedule",
    [("v1.6.0", "Uniform"), ("", "Uniform"), ("v1.10.1", ""), ("f0.0.17v1.8.0rc-latest-276-g29be1da7", "Uniform")],
)
def test_a_bare_sampler_name_means_plain_timesteps_before_a1111_19(version, schedule):
    text = "a\nSteps: 2, Sampler: DPM++ 2M, Seed: 1, Size: 8x8" + (f", Version: {version}" if version else "")
    assert from_parameters(text).schedule == schedule
    assert from_parameters("a\nSteps: 2, Sampler: Euler a, Seed: 1, Version: v1.6.0").schedule == ""


def test_forge_and_civitai_texts(tmp_path):
    forge = from_parameters(FORGE, "forge.png")
    assert (forge.sampler, forge.schedule, forge.model["name"]) == ("Euler a", "", "sd_xl_base_1.0")
    civitai = from_parameters(CIVITAI, "civitai.png")
    assert civitai.model == {"name": "DreamShaper", "hash": ""}
    assert civitai.loras == [{"name": "detail_tweaker", "te": 0.5, "unet": 0.5, "hash": ""}]
    assert (civitai.sampler, civitai.schedule, civitai.clip_skip) == ("DPM++ 2M", "Karras", 2)


def test_an_aiimg_png_round_trips_its_recipe(tmp_path):
    path = tmp_path / "draft.png"
    path.write_bytes(metadata.png_bytes(Image.new("RGB", (8, 8)), FULL))
    got = recipe_from(path)
    assert got.prompt == FULL["prompt"] and got.negative_prompt == FULL["negative_prompt"]
    assert (got.sampler, got.schedule, got.clip_skip, got.strength) == ("DPM++ 2M", "Karras", 2, 0.5)
    assert got.loras == [{"name": "Ink_Style", "te": 0.8, "unet": 0.8, "hash": "7c6bad76eb54", "autov2": "ababababab"}]
    assert got.embeddings == [{"name": "EasyNegative", "hash": "c74b4e810b03", "autov2": "c74b4e810b"}]
    assert got.model == FULL["model"] and got.vae == FULL["vae"]


def test_a_draft_json_gives_its_recipe_fields(tmp_path):
    recipe = DraftRecipe(
        id="20261125-153012-7f3a",
        prompt="a <lora:x:0.5>",
        width=640,
        height=960,
        seed=9,
        steps=25,
        guidance_scale=6.0,
        sampler="Euler a",
        clip_skip=2,
        loras=[{"name": "x", "te": 0.5, "unet": 0.5, "hash": "aaaaaaaaaaaa"}],
        aiimg_version="0.1.0",
    )
    path = tmp_path / "draft.json"
    path.write_text(json.dumps(recipe.to_json()))
    got = recipe_from(path)
    assert (got.prompt, got.seed, got.width, got.height, got.sampler, got.clip_skip) == (
        "a <lora:x:0.5>",
        9,
        640,
        960,
        "Euler a",
        2,
    )
    assert got.loras == recipe.loras and got.tool == "aiimg 0.1.0"
    assert DraftRecipe(id="new", **got.recipe_fields()).seed == 9
    path.write_text('{"prompt": "no id"}')
    with pytest.raises(AiimgError, match="draft.json: not a DraftRecipe"):
        recipe_from(path)


def exif_image(path, comment: bytes, fmt: str):
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = comment
    Image.new("RGB", (8, 8)).save(path, format=fmt, exif=exif)
    return path


@pytest.mark.parametrize("fmt, suffix", [("JPEG", ".jpg"), ("WEBP", ".webp")])
def test_jpeg_and_webp_carry_it_in_exif_user_comment(tmp_path, fmt, suffix):
    comment = b"UNICODE\0" + A1111_110.encode("utf-16-be")
    got = recipe_from(exif_image(tmp_path / f"x{suffix}", comment, fmt))
    assert got.seed == 3050193617 and got.negative_prompt.endswith("bad-hands-5")
    for codec in ("utf-16-be", "utf-16-le"):  # a prompt that starts with no ASCII letter, either byte order
        comment = b"UNICODE\0" + "日本語の庭\nSteps: 3, Seed: 4".encode(codec)
        got = recipe_from(exif_image(tmp_path / f"{codec}{suffix}", comment, fmt))
        assert (got.prompt, got.steps) == ("日本語の庭", 3), codec


def test_an_image_without_parameters_is_a_clear_error(tmp_path):
    with pytest.raises(AiimgError, match="plain.png: no generation parameters"):
        recipe_from(png_with(tmp_path / "plain.png", None))
    with pytest.raises(AiimgError, match="ComfyUI workflow"):
        recipe_from(png_with(tmp_path / "comfy.png", "{}", key="workflow"))
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(AiimgError, match="notes.png: not an image"):
        recipe_from(tmp_path / "notes.png")
    with pytest.raises(AiimgError, match="no such file"):
        recipe_from(tmp_path / "gone.png")
    with pytest.raises(AiimgError, match="Seed = 'abc' is not a number"):
        from_parameters("a\nSteps: 2, Seed: abc")


def test_lora_tags_in_a_prompt():
    prompt = "<lora:a:0.5> x <lora:b:0.5:0.2>, <lora:c>, <lora:d:te=0.3:unet=0.7>, <hypernet:h:1>, <lyco:e:0.4>"
    assert prompt_loras(prompt) == [
        ("a", 0.5, 0.5),
        ("b", 0.5, 0.2),
        ("c", 1.0, 1.0),
        ("d", 0.3, 0.7),
        ("e", 0.4, 0.4),
    ]
    with pytest.raises(AiimgError, match="'heavy' in"):
        prompt_loras("<lora:a:heavy>")


# -- what this machine has --------------------------------------------------------------------


def local(tmp_path):
    """models/Lora and embeddings folders, with hashes to put into an imported image."""
    loras, embeddings = tmp_path / "Lora", tmp_path / "embeddings"
    write_safetensors(loras / "style" / "InkStyle.safetensors", KOHYA_KEYS, payload=b"ink")
    write_safetensors(loras / "renamed_by_me.safetensors", KOHYA_KEYS, payload=b"eyes")
    write_safetensors(embeddings / "EasyNegative.safetensors", ["emb_params"], payload=b"neg")
    write_safetensors(embeddings / "handfix.safetensors", ["emb_params"], payload=b"hands")
    return loras, embeddings


def imported(tmp_path, **changes) -> Imported:
    loras, embeddings = tmp_path / "Lora", tmp_path / "embeddings"
    base = Imported(
        source=tmp_path / "x.png",
        prompt="a girl, <lora:inkstyle:0.8>, <lora:BlueEyes:0.5>, handfixer",
        negative_prompt="EasyNegative, badhands",
        sampler="DPM++ 2M",
        loras=[
            {
                "name": "inkstyle",
                "te": 0.8,
                "unet": 0.8,
                "hash": resources.lora_hash(loras / "style/InkStyle.safetensors"),
            },
            {
                "name": "BlueEyes",
                "te": 0.5,
                "unet": 0.5,
                "hash": resources.lora_hash(loras / "renamed_by_me.safetensors"),
            },
        ],
        embeddings=[
            {"name": "EasyNegative", "hash": resources.ti_hash(embeddings / "EasyNegative.safetensors")},
            {"name": "badhands", "hash": "", "autov2": resources.model_hash(embeddings / "handfix.safetensors")},
        ],
    )
    for key, value in changes.items():
        setattr(base, key, value)
    return base


def test_resources_are_found_by_name_or_by_hash_when_renamed(tmp_path):
    loras, embeddings = local(tmp_path)
    got = check_available(imported(tmp_path), [loras], [embeddings])
    assert got.loras["inkstyle"].name == "InkStyle" and got.loras["BlueEyes"].name == "renamed_by_me"
    assert got.embeddings["EasyNegative"].name == "EasyNegative" and got.embeddings["badhands"].name == "handfix"
    assert got.renamed == {"BlueEyes": "renamed_by_me", "badhands": "handfix"}
    assert got.prompt == "a girl, <lora:inkstyle:0.8>, <lora:renamed_by_me:0.5>, handfixer"
    assert got.negative_prompt == "EasyNegative, handfix"
    assert len(got.notes) == 2 and all("another name" in n for n in got.notes)


def test_a_local_file_with_another_hash_is_used_with_a_note(tmp_path):
    loras, embeddings = local(tmp_path)
    wanted = imported(tmp_path, loras=[{"name": "InkStyle", "te": 1.0, "unet": 1.0, "hash": "0123456789ab"}])
    got = check_available(wanted, [loras], [embeddings])
    assert got.loras["InkStyle"].name == "InkStyle" and "0123456789ab" in got.notes[0]


def test_missing_resources_are_named_with_their_hashes(tmp_path):
    loras, embeddings = local(tmp_path)
    wanted = imported(
        tmp_path,
        sampler="Restart",
        loras=[{"name": "add_detail", "te": 1.0, "unet": 1.0, "hash": "7c6bad76eb54"}],
        embeddings=[{"name": "bad-hands-5", "hash": "aa7651be154c"}],
    )
    with pytest.raises(AiimgError) as err:
        check_available(wanted, [loras], [embeddings])
    message = str(err.value)
    assert "LoRA 'add_detail' (AutoV3 7c6bad76eb54)" in message
    assert "embedding 'bad-hands-5' (hash aa7651be154c)" in message
    assert "'Restart' has no diffusers equivalent" in message
    assert str(loras) in message and str(embeddings) in message and "x.png" in message


def test_an_image_without_resources_needs_nothing(tmp_path):
    got = check_available(from_parameters(FORGE, "forge.png"), [], [])
    assert got.loras == {} and got.embeddings == {} and got.prompt == "a cat on a sofa"


def test_emphasis_round_trips_by_a1111_names_and_none_is_refused():
    from pipeline.metadata import EMPHASIS_NAMES, a1111_parameters

    for mode, name in EMPHASIS_NAMES.items():
        text = a1111_parameters({"prompt": "a", "steps": 2, "seed": 1, "width": 64, "height": 64, "emphasis": mode})
        assert ("Emphasis: " + name in text) == (mode != "original")
        assert from_parameters(text).emphasis == mode
    literal = "a (b)\nSteps: 2, Seed: 1, Size: 64x64, Emphasis: None"
    with pytest.raises(AiimgError, match="Emphasis: None is not supported"):
        from_parameters(literal, "x.png")
