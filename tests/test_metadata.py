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
