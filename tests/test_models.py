"""Model loading: tiny (built offline, deterministic), folders, checkpoints, hub ids, errors."""

import shutil
import time

import pytest

from pipeline import config, models
from pipeline.errors import ModelError
from tests.conftest import aiimg, write_tree


def test_tiny_is_deterministic_across_builds(tmp_path, monkeypatch, tiny):
    monkeypatch.setenv("AIIMG_CACHE", str(tmp_path))
    folder = models.ensure_tiny()
    assert folder == tmp_path / models.TINY_VERSION and (folder / "model_index.json").is_file()
    assert models.folder_hash(folder) == tiny.hash
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tiny-")]  # no debris


def test_tiny_uses_the_real_clip_vocabulary(tiny):
    tokenizer = tiny.txt2img.tokenizer
    assert len(tokenizer) == tiny.txt2img.text_encoder.config.vocab_size == 49408
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tiny.kind == "sd1"


def test_tiny_xl_is_an_sdxl_pipeline_that_draws(tmp_path, monkeypatch):
    import numpy as np
    import torch

    monkeypatch.setenv("AIIMG_CACHE", str(tmp_path))
    loaded = models.load(config.ModelConfig(id="tiny-xl"))
    assert (loaded.kind, loaded.name) == ("sdxl", "tiny-xl")
    assert type(loaded.txt2img).__name__ == "StableDiffusionXLPipeline"
    assert (loaded.txt2img.tokenizer.pad_token, loaded.txt2img.tokenizer_2.pad_token) == ("<|endoftext|>", "!")
    assert loaded.txt2img.vae_scale_factor == 8
    generator = torch.Generator().manual_seed(0)
    image = loaded.txt2img("red hair", height=64, width=64, num_inference_steps=2, generator=generator).images[0]
    assert image.size == (64, 64) and np.array(image).std() > 0
    again = loaded.img2img("red hair", image=image, strength=0.5, num_inference_steps=2).images[0]
    assert again.size == (64, 64)


def test_img2img_shares_every_weight_with_txt2img(tiny):
    for name in ("unet", "vae", "text_encoder"):
        a, b = getattr(tiny.txt2img, name), getattr(tiny.img2img, name)
        assert all(x.data_ptr() == y.data_ptr() for x, y in zip(a.parameters(), b.parameters()))


def test_a_local_diffusers_folder_loads_under_its_own_name(tmp_path, tiny):
    folder = tmp_path / "my-model"
    shutil.copytree(models.ensure_tiny(), folder)
    loaded = models.load(config.ModelConfig(id=str(folder)))
    assert loaded.name == "my-model" and loaded.hash == tiny.hash


def test_folder_without_model_index_says_how_to_make_one(tmp_path):
    (tmp_path / "weights").mkdir()
    with pytest.raises(ModelError, match="no model_index.json"):
        models.load(config.ModelConfig(id=str(tmp_path / "weights")))


def test_single_file_needs_no_config_and_reports_a_missing_file(tmp_path):
    with pytest.raises(ModelError, match="file not found"):
        models.load(config.ModelConfig(id=str(tmp_path / "missing.safetensors")))


def test_family_reads_the_text_encoders(tiny):
    class Encoder:
        def __init__(self, width):
            self.config = type("Config", (), {"hidden_size": width})()

    class Pipe:
        def __init__(self, width, second=None):
            self.text_encoder, self.text_encoder_2 = Encoder(width), second

    assert [models.family(p) for p in (Pipe(768), Pipe(1024), Pipe(768, Encoder(1280)))] == ["sd1", "sd2", "sdxl"]
    assert models.family(tiny.txt2img) == "sd1"


def test_hub_id_not_in_the_cache_fails_fast_saying_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    started = time.monotonic()
    with pytest.raises(ModelError) as err:
        models.load(config.ModelConfig(id="someone/not-a-cached-model"))
    assert time.monotonic() - started < 60
    assert "huggingface-cli download someone/not-a-cached-model" in str(err.value)


def test_scheduler_by_name_and_a_bad_one(tiny):
    with pytest.raises(ModelError, match="'Nope' is not a diffusers scheduler"):
        models._set_scheduler(tiny.txt2img, "Nope")


def test_file_hash_is_a1111_style_and_cached(tmp_path, monkeypatch):
    import hashlib

    monkeypatch.setenv("AIIMG_CACHE", str(tmp_path / "cache"))
    f = tmp_path / "w.bin"
    f.write_bytes(b"weights")
    assert models.file_hash(f) == hashlib.sha256(b"weights").hexdigest()[:10]
    assert (tmp_path / "cache" / "hashes.json").is_file()


def test_cli_reports_a_missing_model_without_a_traceback(tmp_path):
    config_path = write_tree(tmp_path)
    result = aiimg(
        config_path, "--model", "someone/not-cached", "draft", "-n", "1", env={"HF_HOME": str(tmp_path / "hf")}
    )
    assert result.returncode == 1
    assert "aiimg: error: [model] id = 'someone/not-cached'" in result.stderr and "Traceback" not in result.stderr
