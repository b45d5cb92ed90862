"""The creator's whole A1111 setup through the real CLI: a single-file checkpoint in the Civitai
layout, a LoRA and an embedding found by name, a 150-token prompt with weights and BREAK, the
infotext Civitai links by, and `aiimg draft --from` remaking the image pixel for pixel."""

import json
import textwrap

import checkpoint_fixtures
import lora_fixtures
import numpy as np
import pytest
import torch
from conftest import aiimg
from PIL import Image, PngImagePlugin

from pipeline import metadata, models
from pipeline.content import Content
from pipeline.encoding import clip_tokenizer, token_count
from pipeline.recipes import DraftRecipe

LONG = ", ".join(f"{w} detail" for w in "red green blue gold silver amber ivory coral teal plum".split() * 5)
PROMPT = f"(masterpiece:1.2), best quality, <lora:Detailer:0.8>, (red hair:1.3), Starry, {LONG} BREAK night city"


@pytest.fixture(scope="module")
def studio_tree(tmp_path_factory):
    """A folder as a creator has it: the checkpoint, models/Lora/, embeddings/, aiimg.toml."""
    root = tmp_path_factory.mktemp("creator")
    pipe = models._from_folder(models.ensure_tiny(), dtype=None)
    checkpoint_fixtures.write_checkpoint(pipe, root / "tinyCivitai_v1.safetensors")
    lora_fixtures.make_lora(root / "models" / "Lora" / "style" / "Detailer.safetensors", pipe, seed=3)
    lora_fixtures.make_embedding(root / "embeddings" / "Starry.safetensors", width=32, vectors=3, seed=4)
    (root / "aiimg.toml").write_text(
        textwrap.dedent(
            f"""
            [model]
            id = "tinyCivitai_v1.safetensors"
            config = "{models.ensure_tiny().as_posix()}"
            lora_dirs = ["models/Lora"]
            embedding_dirs = ["embeddings"]
            sampler = "Euler a"
            [prompt]
            template = {json.dumps(PROMPT)}
            negative = "lowres, (bad hands:1.2)"
            [draft]
            area = 65536
            steps = 3
            [score]
            enabled = false
            """
        )
    )
    return root


@pytest.fixture(scope="module")
def first(studio_tree):
    """The first draft of the folder, made by `aiimg draft` (every test may start from it)."""
    made = aiimg(studio_tree / "aiimg.toml", "draft")
    assert made.returncode == 0, made.stderr
    return min(Content(studio_tree / "content").drafts(), key=lambda d: d.id)


def only_draft(root, exclude=()):
    drafts = [d for d in Content(root / "content").drafts() if d.id not in exclude]
    assert len(drafts) == 1
    return drafts[0]


def pixels(path):
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def test_a_civitai_setup_makes_a_draft_whose_every_token_counted(first):
    draft = first
    recipe = json.loads(draft.recipe_path.read_text())
    count = token_count(PROMPT, clip_tokenizer())
    assert count.tokens > 150 and count.chunks == 4  # 3 chunks of text, then BREAK's own: nothing was cut
    assert recipe["prompt"] == PROMPT and recipe["sampler"] == "Euler a"
    assert [lora["name"] for lora in recipe["loras"]] == ["Detailer"] and recipe["loras"][0]["te"] == 0.8
    assert [e["name"] for e in recipe["embeddings"]] == ["Starry"]
    assert recipe["encoder"].startswith("aiimg-a1111/") and "diffusers" in recipe["versions"]
    with Image.open(draft.image) as img:
        text = img.text["parameters"]
    params = metadata.parse_parameters(text)
    assert "<lora:Detailer:0.8>" in params["prompt"]  # Civitai reads the tag in the prompt
    assert params["Sampler"] == "Euler a" and params["Model"] == "tinyCivitai_v1"
    assert params["Lora hashes"] == f"Detailer: {recipe['loras'][0]['hash']}"
    assert params["TI hashes"] == f"Starry: {recipe['embeddings'][0]['hash']}"
    assert set(params["Hashes"]) >= {"model", "lora:Detailer", "embed:Starry"}


def test_draft_from_its_png_remakes_it_pixel_for_pixel(studio_tree, first):
    before = {d.id for d in Content(studio_tree / "content").drafts()}
    again = aiimg(studio_tree / "aiimg.toml", "draft", "--from", str(first.image))
    assert again.returncode == 0, again.stderr
    second = only_draft(studio_tree, exclude=before)
    assert np.array_equal(pixels(first.image), pixels(second.image))
    other = aiimg(studio_tree / "aiimg.toml", "draft", "--from", str(first.image), "--seed", "7")
    assert other.returncode == 0, other.stderr
    third = only_draft(studio_tree, exclude=before | {second.id})
    assert json.loads(third.recipe_path.read_text())["seed"] == 7
    assert not np.array_equal(pixels(first.image), pixels(third.image))


def test_draft_from_an_a1111_png_uses_its_settings_and_names_what_is_missing(studio_tree, first, tmp_path):
    lora_hash = json.loads(first.recipe_path.read_text())["loras"][0]["hash"]
    a1111 = (
        "(masterpiece:1.2), <lora:Detailer:0.5>, a lighthouse\n"
        "Negative prompt: lowres\n"
        "Steps: 2, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 1234, Size: 256x192, "
        f'Model hash: 0123456789, Model: tinyCivitai_v1, Clip skip: 2, Lora hashes: "Detailer: {lora_hash}", '
        "Version: v1.10.1"
    )
    png = write_png(tmp_path / "00001-1234.png", a1111)
    done = aiimg(studio_tree / "aiimg.toml", "draft", "--from", str(png))
    assert done.returncode == 0, done.stderr
    assert "made with model tinyCivitai_v1 [0123456789]" in done.stderr  # warned: other pixels
    recipe = json.loads(max(Content(studio_tree / "content").drafts(), key=lambda d: d.id).recipe_path.read_text())
    assert (recipe["width"], recipe["height"], recipe["seed"], recipe["steps"]) == (256, 192, 1234, 2)
    made_with = (recipe["sampler"], recipe["schedule"], recipe["clip_skip"], recipe["guidance_scale"])
    assert made_with == ("DPM++ 2M", "Karras", 2, 6.5) and recipe["loras"][0]["te"] == 0.5
    # the creator renamed the file: found by its hash, and the prompt says the local name
    renamed = write_png(tmp_path / "renamed.png", a1111.replace("Detailer", "OldName"))
    done = aiimg(studio_tree / "aiimg.toml", "draft", "--from", str(renamed))
    assert done.returncode == 0, done.stderr
    recipe = json.loads(max(Content(studio_tree / "content").drafts(), key=lambda d: d.id).recipe_path.read_text())
    assert "<lora:Detailer:0.5>" in recipe["prompt"]
    # neither the name nor the hash is here: the error names both, to search Civitai by
    gone = write_png(tmp_path / "gone.png", a1111.replace("Detailer", "Missing").replace(lora_hash, "0badc0ffee00"))
    missing = aiimg(studio_tree / "aiimg.toml", "draft", "--from", str(gone))
    assert missing.returncode == 1 and "LoRA 'Missing'" in missing.stderr and "0badc0ffee00" in missing.stderr


def write_png(path, parameters: str):
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", parameters)
    Image.new("RGB", (256, 192)).save(path, pnginfo=info)
    return path


def test_a_lora_the_template_names_but_the_folders_lack_fails_at_start(studio_tree, tmp_path):
    toml = (studio_tree / "aiimg.toml").read_text().replace("<lora:Detailer:0.8>", "<lora:detaler:0.8>")
    (tmp_path / "aiimg.toml").write_text(toml.replace('"models/Lora"', f'"{(studio_tree / "models/Lora").as_posix()}"'))
    (tmp_path / "tinyCivitai_v1.safetensors").symlink_to(studio_tree / "tinyCivitai_v1.safetensors")
    done = aiimg(tmp_path / "aiimg.toml", "run", "--once", "--max-drafts", "1")
    assert done.returncode == 1
    assert "'detaler'" in done.stderr and "Detailer" in done.stderr  # the closest name is offered
    assert not (tmp_path / "content" / "drafts").exists() or not any((tmp_path / "content" / "drafts").iterdir())


def test_a_seed_prompt_with_a_lora_makes_variations_with_it(studio_tree, first):
    (first.folder / "seed.txt").write_text('count = 1\nprompt = "a lighthouse, <lora:detailer:1.1>, starry"\n')
    done = aiimg(studio_tree / "aiimg.toml", "vary", first.id)
    assert done.returncode == 0, done.stderr
    (variation,) = Content(studio_tree / "content").read_work(first.id).variations
    assert [(lora["name"], lora["te"]) for lora in variation.loras] == [("detailer", 1.1)]  # found in any case
    assert [e["name"] for e in variation.embeddings] == ["Starry"]
    with Image.open(Content(studio_tree / "content").variation_path(first.id, variation.file)) as img:
        assert "Lora hashes" in img.text["parameters"] and "<lora:detailer:1.1>" in img.text["parameters"]


def test_an_embedding_fires_on_its_word_only_not_inside_other_words(studio_tree):
    from pipeline import conditioning, config
    from pipeline.encoding import encode

    cfg = config.load(studio_tree / "aiimg.toml")
    loaded = models.load(cfg.model)
    pipe = loaded.txt2img

    def embeds(text):
        return encode(pipe, text, "", steps=2).kwargs()["prompt_embeds"]

    plain_word, plain_inside = embeds("Starry sky"), embeds("Starrynight sky")  # before any embedding loads
    recipe = DraftRecipe("x", "Starry sky", 64, 64, 1, negative_prompt="")
    conditioning.describe(recipe, cfg, loaded)
    with_word = conditioning.prepare(loaded, pipe, recipe, conditioning.Dirs.of(cfg), 2).kwargs["prompt_embeds"]
    assert not torch.equal(with_word, plain_word)  # the word became the embedding's vectors
    inside = DraftRecipe("y", "Starrynight sky", 64, 64, 1, negative_prompt="")
    conditioning.describe(inside, cfg, loaded)
    assert inside.embeddings == []
    got = conditioning.prepare(loaded, pipe, inside, conditioning.Dirs.of(cfg), 2).kwargs["prompt_embeds"]
    assert torch.equal(got, plain_inside)  # inside a word it is text, as in A1111
    assert torch.equal(embeds("Starrynight sky"), plain_inside)  # the tokenizer does not split it out either
