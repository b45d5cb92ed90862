from PIL import Image

from pipeline import metadata

RECIPE = {
    "prompt": 'girl, "smile": 1.2, 日本語',
    "negative_prompt": "lowres",
    "steps": 25,
    "scheduler": "DPMSolverMultistepScheduler",
    "guidance_scale": 7.0,
    "seed": 123,
    "width": 832,
    "height": 768,
    "model": {"name": "tiny", "hash": "3f0845323f"},
    "strength": 0.5,
    "template": "a, {b|c}",
}


def test_a1111_text_has_prompt_negative_and_a_steps_line():
    text = metadata.a1111_parameters(RECIPE)
    lines = text.split("\n")
    assert lines[0] == RECIPE["prompt"]
    assert lines[1] == "Negative prompt: lowres"
    assert lines[2].startswith(
        "Steps: 25, Sampler: DPM++ 2M, CFG scale: 7.0, Seed: 123, Size: 832x768, "
        "Model hash: 3f0845323f, Model: tiny, Denoising strength: 0.5"
    )
    # values with , : or " are JSON-quoted, as A1111 does
    assert 'Template: "a, {b|c}"' in lines[2]


def test_negative_line_is_omitted_when_empty():
    text = metadata.a1111_parameters({**RECIPE, "negative_prompt": ""})
    assert "Negative prompt" not in text


def test_parse_inverts_format():
    parsed = metadata.parse_parameters(metadata.a1111_parameters(RECIPE))
    assert parsed["prompt"] == RECIPE["prompt"]
    assert parsed["negative_prompt"] == "lowres"
    assert parsed["Seed"] == "123" and parsed["Template"] == "a, {b|c}" and parsed["Size"] == "832x768"


def test_png_chunk_survives_with_japanese(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(metadata.png_bytes(Image.new("RGB", (16, 8), "red"), RECIPE))
    assert metadata.read_png_parameters(path) == metadata.a1111_parameters(RECIPE)
    with Image.open(path) as img:
        assert img.size == (16, 8)


# -- what A1111 writes for the creator's resources --------------------------------------------

FULL = {
    **RECIPE,
    "prompt": "masterpiece, <lora:Ink_Style:0.8>, (red hair:1.2)\nBREAK sunset",
    "negative_prompt": "EasyNegative, lowres",
    "scheduler": "DPMSolverMultistepScheduler",
    "sampler": "DPM++ 2M",
    "schedule": "Karras",
    "clip_skip": 2,
    "emphasis": "no-norm",
    "vae": {"name": "vae-ft-mse.safetensors", "hash": "c6a580b13a"},
    "loras": [{"name": "Ink_Style", "te": 0.8, "unet": 0.8, "hash": "7c6bad76eb54", "sha256": "ab" * 32}],
    "embeddings": [{"name": "EasyNegative", "hash": "c74b4e810b03"}],
    "model": {"name": "anything, v5", "hash": "3f0845323f"},
}


def settings_line(recipe):
    return metadata.a1111_parameters(recipe).split("\n")[-1]


def test_the_settings_line_has_a1111s_fields_in_a1111s_order():
    line = settings_line(FULL)
    assert line.startswith(
        "Steps: 25, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.0, Seed: 123, Size: 832x768, "
        'Model hash: 3f0845323f, Model: "anything, v5", VAE hash: c6a580b13a, VAE: vae-ft-mse.safetensors, '
        "Denoising strength: 0.5, Clip skip: 2, Emphasis: No norm, "
    )
    assert 'Lora hashes: "Ink_Style: 7c6bad76eb54", TI hashes: "EasyNegative: c74b4e810b03", ' in line
    assert line.endswith(", Version: aiimg " + metadata.__version__)


def test_hashes_is_raw_json_with_autov2_of_every_resource():
    hashes = metadata.parse_parameters(metadata.a1111_parameters(FULL))["Hashes"]
    assert hashes == {
        "model": "3f0845323f",
        "vae": "c6a580b13a",
        "lora:Ink_Style": "ababababab",  # AutoV2: the file's sha256, not the AutoV3
        "embed:EasyNegative": "c74b4e810b",  # the TI hash is the file's sha256 too
    }
    assert 'Hashes: {"model": "3f0845323f", ' in settings_line(FULL)


def test_the_lora_tag_stays_in_the_prompt():
    assert metadata.a1111_parameters(FULL).startswith("masterpiece, <lora:Ink_Style:0.8>, (red hair:1.2)\nBREAK")


def test_defaults_are_left_out_as_a1111_leaves_them_out():
    line = settings_line({**FULL, "schedule": "Automatic", "clip_skip": 1, "emphasis": "Original", "vae": {}})
    for absent in ("Schedule type", "Clip skip", "Emphasis", "VAE"):
        assert absent not in line
    bare = settings_line({**FULL, "loras": [], "embeddings": [], "model": {}, "vae": {}})
    assert "hashes" not in bare.lower()


def test_names_lose_the_characters_that_break_the_hash_lists():
    recipe = {**FULL, "loras": [{"name": "a:b,c", "hash": "111111111111"}], "embeddings": []}
    parsed = metadata.parse_parameters(metadata.a1111_parameters(recipe))
    assert metadata.parse_hash_list(parsed["Lora hashes"]) == {"abc": "111111111111"}


def test_a_recipe_without_a1111_sampler_names_its_scheduler_class():
    assert "Sampler: Euler a," in settings_line({**RECIPE, "scheduler": "EulerAncestralDiscreteScheduler"})


def test_aiimg_text_round_trips_every_field():
    parsed = metadata.parse_parameters(metadata.a1111_parameters(FULL))
    assert parsed["prompt"] == FULL["prompt"] and parsed["negative_prompt"] == FULL["negative_prompt"]
    assert parsed["Model"] == "anything, v5" and parsed["Schedule type"] == "Karras" and parsed["Clip skip"] == "2"
    assert metadata.parse_hash_list(parsed["TI hashes"]) == {"EasyNegative": "c74b4e810b03"}


# -- reading what other tools write (samples in A1111's documented layout) --------------------

A1111_110 = (
    "masterpiece, best quality, 1girl, <lora:add_detail:0.6>, (red hair:1.2),\n"
    "looking at viewer\n"
    "BREAK sunset\n"
    "Negative prompt: EasyNegative, (worst quality:1.4),\n"
    "bad-hands-5\n"
    "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 3050193617, Size: 832x1216, "
    "Model hash: 7f96a1a9ca, Model: anyloraCheckpoint_bakedvaeBlessedFp16, VAE hash: 235745af8d, "
    "VAE: vae-ft-mse-840000-ema-pruned.safetensors, Denoising strength: 0.45, Clip skip: 2, Hires upscale: 1.5, "
    'Hires steps: 15, Hires upscaler: 4x-UltraSharp, Lora hashes: "add_detail: 7c6bad76eb54", '
    'TI hashes: "EasyNegative: c74b4e810b03, bad-hands-5: aa7651be154c", Emphasis: No norm, Version: v1.10.1'
)

A1111_16_CIVITAI_EXTENSION = (
    "a cozy cabin in the woods\n"
    "Negative prompt: lowres\n"
    "Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1, Size: 512x768, Model hash: 6ce0161689, "
    'Model: v1-5-pruned-emaonly, Template: "a {cozy|cold} cabin, __place__", Negative Template: lowres, '
    'Lora hashes: "add_detail: 7c6bad76eb54", Version: v1.6.0, '
    'Hashes: {"vae": "c6a580b13a", "embed:EasyNegative": "c74b4e810b", "model": "6ce0161689"}'
)

FORGE = (
    "a cat on a sofa\n"
    "Steps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 5, Size: 1024x1024, "
    "Model hash: 31e35c80fc, Model: sd_xl_base_1.0, Module 1: sdxl_vae, "
    "Version: f2.0.1v1.10.1-previous-313-g8a042934, Diffusion in Low Bits: Automatic (fp16 LoRA)"
)

CIVITAI = (
    "portrait of a knight, <lora:detail_tweaker:0.5>\r\n"
    "Negative prompt: blurry\r\n"
    "Steps: 25, CFG scale: 7, Sampler: DPM++ 2M Karras, Seed: 42, Size: 832x1216, Clip skip: 2, "
    "Created Date: 2024-05-01T10:11:12.1234567Z, Civitai resources: "
    '[{"type":"checkpoint","modelVersionId":128713,"modelName":"DreamShaper","modelVersionName":"8"},'
    '{"type":"lora","weight":0.5,"modelVersionId":62833,"modelName":"Detail Tweaker, LoRA"}], Civitai metadata: {}'
)


def test_reads_a1111_110_with_multi_line_prompt_and_negative():
    p = metadata.parse_parameters(A1111_110)
    assert p["prompt"] == (
        "masterpiece, best quality, 1girl, <lora:add_detail:0.6>, (red hair:1.2),\nlooking at viewer\nBREAK sunset"
    )
    assert p["negative_prompt"] == "EasyNegative, (worst quality:1.4),\nbad-hands-5"
    assert (p["Steps"], p["Sampler"], p["Schedule type"], p["Seed"]) == ("28", "DPM++ 2M", "Karras", "3050193617")
    assert p["Hires upscaler"] == "4x-UltraSharp" and p["Emphasis"] == "No norm" and p["Version"] == "v1.10.1"
    assert metadata.parse_hash_list(p["TI hashes"]) == {"EasyNegative": "c74b4e810b03", "bad-hands-5": "aa7651be154c"}


def test_reads_quoted_values_with_commas_and_the_hashes_json():
    p = metadata.parse_parameters(A1111_16_CIVITAI_EXTENSION)
    assert p["Template"] == "a {cozy|cold} cabin, __place__" and p["Negative Template"] == "lowres"
    assert p["Hashes"]["embed:EasyNegative"] == "c74b4e810b" and p["Version"] == "v1.6.0"
    assert p["negative_prompt"] == "lowres"


def test_reads_forge():
    p = metadata.parse_parameters(FORGE)
    assert p["prompt"] == "a cat on a sofa" and p["negative_prompt"] == ""
    assert p["Module 1"] == "sdxl_vae" and p["Diffusion in Low Bits"] == "Automatic (fp16 LoRA)"


def test_reads_civitai_with_json_arrays_and_windows_line_ends():
    p = metadata.parse_parameters(CIVITAI)
    assert p["prompt"] == "portrait of a knight, <lora:detail_tweaker:0.5>" and p["negative_prompt"] == "blurry"
    assert p["Civitai resources"][1]["modelName"] == "Detail Tweaker, LoRA" and p["Civitai metadata"] == {}
    assert p["Created Date"] == "2024-05-01T10:11:12.1234567Z" and p["Clip skip"] == "2"


def test_a_prompt_line_that_looks_like_settings_is_kept_in_the_prompt():
    p = metadata.parse_parameters("Steps: a poem\nSteps: 2, Seed: 1, Size: 8x8")
    assert p["prompt"] == "Steps: a poem" and p["Seed"] == "1"
    assert metadata.parse_parameters("just a prompt") == {"prompt": "just a prompt", "negative_prompt": ""}
