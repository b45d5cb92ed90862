"""Resources by name as A1111 finds them, LoRA formats from the header, hashes as Civitai
computes them (cached, rehashed when a file changes). Files here are hand-made safetensors:
no torch needed to find or check them."""

from __future__ import annotations

import hashlib
import json
import os
import struct

import pytest

from pipeline import resources
from pipeline.errors import AiimgError
from tests.lora_fixtures import KOHYA_KEYS as KOHYA
from tests.lora_fixtures import write_safetensors


@pytest.fixture(autouse=True)
def fresh(tmp_path, monkeypatch):
    monkeypatch.setenv("AIIMG_CACHE", str(tmp_path / "cache"))
    resources.forget()
    yield
    resources.forget()


def lora_tree(tmp_path):
    root = tmp_path / "models" / "Lora"
    write_safetensors(root / "characters" / "MyChar_v2.safetensors", KOHYA, {"ss_output_name": "mychar"})
    write_safetensors(root / "Style-Ink.safetensors", KOHYA)
    write_safetensors(root / ".hidden" / "secret.safetensors", KOHYA)
    (root / "notes.txt").write_text("not a LoRA")
    return root


# -- finding LoRAs ----------------------------------------------------------------------------


def test_lora_found_by_stem_in_a_sub_folder_case_insensitively(tmp_path):
    root = lora_tree(tmp_path)
    found = resources.find_lora("mychar_V2", [root])
    assert found.path == root / "characters" / "MyChar_v2.safetensors"
    assert found.name == "MyChar_v2" and found.alias == "mychar"


def test_lora_found_by_its_ss_output_name(tmp_path):
    root = lora_tree(tmp_path)
    assert resources.find_lora("MYCHAR", [root]).name == "MyChar_v2"


def test_a_stem_wins_over_another_files_output_name(tmp_path):
    root = lora_tree(tmp_path)
    write_safetensors(root / "other.safetensors", KOHYA, {"ss_output_name": "Style-Ink"})
    assert resources.find_lora("style-ink", [root]).path == root / "Style-Ink.safetensors"


def test_unknown_lora_names_the_folders_and_the_closest_names(tmp_path):
    root = lora_tree(tmp_path)
    with pytest.raises(AiimgError) as err:
        resources.find_lora("MyChar_v3", [root, tmp_path / "more"])
    message = str(err.value)
    assert "'MyChar_v3'" in message and str(root) in message and str(tmp_path / "more") in message
    assert "MyChar_v2" in message
    with pytest.raises(AiimgError, match="secret"):  # hidden folders are skipped
        resources.find_lora("secret", [root])


def test_a_lora_added_while_running_is_found_by_the_refresh(tmp_path):
    root = lora_tree(tmp_path)
    resources.find_lora("Style-Ink", [root])  # indexed now
    write_safetensors(root / "new" / "Fresh.safetensors", KOHYA)
    assert resources.find_lora("fresh", [root]).path == root / "new" / "Fresh.safetensors"


def test_the_index_is_built_once_per_process(tmp_path, monkeypatch):
    root = lora_tree(tmp_path)
    walks = []
    real = resources._walk
    monkeypatch.setattr(resources, "_walk", lambda *a: walks.append(a) or real(*a))
    for _ in range(3):
        resources.find_lora("Style-Ink", [root])
    assert len(walks) == 1
    with pytest.raises(AiimgError):
        resources.find_lora("absent", [tmp_path / "empty"])  # a first index is fresh: not walked twice
    assert len(walks) == 2


def test_no_lora_folders_says_so(tmp_path):
    with pytest.raises(AiimgError, match="no LoRA folders are configured"):
        resources.find_lora("x", [])


# -- LoRA formats -----------------------------------------------------------------------------


def test_kohya_and_diffusers_keys_are_accepted(tmp_path):
    assert resources.check_lora(write_path(tmp_path / "k.safetensors", KOHYA)) == "kohya"
    sdxl = [
        "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight",
        "lora_te2_x.lora_up.weight",
        "lora_te2_x.alpha",
    ]
    assert resources.check_lora(write_path(tmp_path / "x.safetensors", sdxl)) == "kohya"
    peft = ["unet.down_blocks.1.attentions.0.proj_in.lora_A.weight", "text_encoder.a.q_proj.lora_B.weight"]
    assert resources.check_lora(write_path(tmp_path / "d.safetensors", peft)) == "diffusers"


@pytest.mark.parametrize(
    "suffix, fmt",
    [
        (".hada_w1_a", "LoHa"),
        (".lokr_w1", "LoKr"),
        (".lora_mid.weight", "lora_mid"),
        (".dora_scale", "DoRA"),
        (".oft_blocks", "OFT"),
    ],
)
def test_formats_diffusers_cannot_apply_are_refused_naming_file_and_format(tmp_path, suffix, fmt):
    keys = [*KOHYA, f"lora_unet_down_blocks_0_attentions_0_proj_in{suffix}"]
    path = write_path(tmp_path / "Models" / "odd.safetensors", keys)
    with pytest.raises(AiimgError) as err:
        resources.check_lora(path)
    assert str(path) in str(err.value) and fmt in str(err.value)


def test_a_checkpoint_in_the_lora_folder_is_refused(tmp_path):
    path = write_path(tmp_path / "model.safetensors", ["model.diffusion_model.input_blocks.0.0.weight"])
    with pytest.raises(AiimgError, match="not an SD1/SDXL LoRA"):
        resources.check_lora(path)


def test_a_file_that_is_not_safetensors_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"\xff" * 64)
    with pytest.raises(AiimgError, match="not a readable .safetensors"):
        resources.check_lora(path)


def write_path(path, keys, metadata=None):
    write_safetensors(path, keys, metadata)
    return path


# -- embeddings -------------------------------------------------------------------------------


def embedding_tree(tmp_path):
    root = tmp_path / "embeddings"
    write_safetensors(root / "EasyNegative.safetensors", ["emb_params"])
    write_safetensors(root / "neg" / "bad-hands-5.safetensors", ["emb_params"])
    write_safetensors(root / "bad.safetensors", ["emb_params"])
    (root / "old.pt").write_bytes(b"x")
    (root / "readme.md").write_text("x")
    return root


def test_embeddings_in_a_prompt_are_whole_words_by_stem_in_any_case(tmp_path):
    root = embedding_tree(tmp_path)
    text = "(easynegative:1.2), Bad-Hands-5, badly drawn, EasyNegativeV2, <lora:bad:0.5>, OLD"
    assert [e.name for e in resources.embeddings_in(text, [root])] == ["EasyNegative", "bad-hands-5", "old"]
    assert resources.embeddings_in("a bad day", [root])[0].name == "bad"
    assert resources.embeddings_in("nothing here", [root]) == []


def test_find_embedding_by_stem_and_unknown_names(tmp_path):
    root = embedding_tree(tmp_path)
    assert resources.find_embedding("easynegative", [root]).path == root / "EasyNegative.safetensors"
    with pytest.raises(AiimgError, match="EasyNegative"):
        resources.find_embedding("EasyNegativ", [root])


def test_a_new_embedding_is_seen_once_the_index_expires(tmp_path, monkeypatch):
    root = embedding_tree(tmp_path)
    assert resources.embeddings_in("fresh", [root]) == []
    write_safetensors(root / "fresh.safetensors", ["emb_params"])
    monkeypatch.setattr(resources, "EMBEDDING_RESCAN_S", 0.0)
    assert [e.name for e in resources.embeddings_in("fresh", [root])] == ["fresh"]


# -- VAE --------------------------------------------------------------------------------------


def test_vae_as_a_file_or_a_diffusers_folder(tmp_path):
    data = write_safetensors(tmp_path / "vae-ft-mse.safetensors", ["decoder.conv_in.weight"])
    vae = resources.vae_file(tmp_path / "vae-ft-mse.safetensors")
    assert not vae.is_folder and vae.hash == hashlib.sha256(data).hexdigest()[:10]
    folder = tmp_path / "sdxl-vae"
    write_safetensors(folder / "diffusion_pytorch_model.safetensors", ["x"])
    with pytest.raises(AiimgError, match="config.json"):
        resources.vae_file(folder)
    (folder / "config.json").write_text("{}")
    assert resources.vae_file(folder).weights == folder / "diffusion_pytorch_model.safetensors"
    with pytest.raises(AiimgError, match="not found"):
        resources.vae_file(tmp_path / "nope.safetensors")


# -- hashes -----------------------------------------------------------------------------------


def test_hashes_are_what_a1111_and_civitai_compute(tmp_path):
    path = tmp_path / "Lora.safetensors"
    data = write_safetensors(path, KOHYA, {"ss_output_name": "x"}, payload=b"weights" * 100)
    body = data[8 + struct.unpack("<Q", data[:8])[0] :]
    assert resources.sha256(path) == hashlib.sha256(data).hexdigest()
    assert resources.model_hash(path) == hashlib.sha256(data).hexdigest()[:10]  # AutoV2
    assert resources.ti_hash(path) == hashlib.sha256(data).hexdigest()[:12]
    assert resources.lora_hash(path) == hashlib.sha256(body).hexdigest()[:12]  # AutoV3


def test_autov3_ignores_the_metadata(tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    write_safetensors(a, KOHYA, {"ss_output_name": "one"})
    write_safetensors(b, KOHYA, {"ss_output_name": "another name"})
    assert resources.lora_hash(a) == resources.lora_hash(b)
    assert resources.model_hash(a) != resources.model_hash(b)


def test_hashes_are_cached_on_disk_and_a_changed_file_is_rehashed(tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"one")
    first = resources.model_hash(path)
    cache = json.loads((tmp_path / "cache" / "hashes.json").read_text())
    assert cache["files"][str(path.resolve())]["sha256"].startswith(first)

    resources.forget()  # a new process: reads the cache instead of the file
    monkeypatch.setattr(resources, "_digest", lambda *a: pytest.fail("hashed again"))
    assert resources.model_hash(path) == first
    monkeypatch.undo()
    monkeypatch.setenv("AIIMG_CACHE", str(tmp_path / "cache"))

    stat = path.stat()
    path.write_bytes(b"two")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert resources.model_hash(path) == hashlib.sha256(b"two").hexdigest()[:10]
    assert len(json.loads((tmp_path / "cache" / "hashes.json").read_text())["files"]) == 1


def test_the_cache_is_shared_with_models_file_hash(tmp_path):
    from pipeline import models

    path = tmp_path / "ckpt.safetensors"
    data = write_safetensors(path, KOHYA)
    assert models.file_hash(path) == resources.model_hash(path) == hashlib.sha256(data).hexdigest()[:10]
    resources.lora_hash(path)
    assert models.file_hash(path) == resources.model_hash(path)  # each still reads its own entries


def test_hashing_a_missing_or_broken_file_is_a_clear_error(tmp_path):
    with pytest.raises(AiimgError, match="cannot hash"):
        resources.model_hash(tmp_path / "gone.safetensors")
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file at all")
    with pytest.raises(AiimgError, match="broken.safetensors: not a readable .safetensors"):
        resources.lora_hash(broken)


# -- samplers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given, expected",
    [
        (("DPM++ 2M", "Karras"), ("DPM++ 2M", "Karras")),
        (("DPM++ 2M Karras", ""), ("DPM++ 2M", "Karras")),
        (("DPM++ 2M SDE Exponential", ""), ("DPM++ 2M SDE", "Exponential")),
        (("euler a", "Automatic"), ("Euler a", "")),
        (("k_dpmpp_2m", ""), ("DPM++ 2M", "")),
        (("DPM++ 2M Karras", "Exponential"), ("DPM++ 2M", "Exponential")),
    ],
)
def test_sampler_names_new_and_old(given, expected):
    assert resources.split_sampler(*given) == expected


def test_unknown_sampler_and_schedule_list_the_known_ones():
    with pytest.raises(AiimgError, match="DPM adaptive.*known: Euler a, Euler"):
        resources.split_sampler("DPM adaptive")
    with pytest.raises(AiimgError, match="Polyexponential.*known: Automatic, Uniform, Karras"):
        resources.split_sampler("Euler", "Polyexponential")


# -- what a recipe records ---------------------------------------------------------------------


def test_recipe_entries_carry_the_hashes_the_infotext_needs(tmp_path):
    from pipeline import metadata

    lora_path = tmp_path / "Lora" / "Ink.safetensors"
    write_safetensors(lora_path, KOHYA, payload=b"ink")
    emb_path = tmp_path / "emb" / "EasyNegative.safetensors"
    write_safetensors(emb_path, ["emb_params"])
    lora = resources.find_lora("ink", [tmp_path / "Lora"])
    entry = resources.lora_entry(lora, 0.8, 0.6, name="ink")
    assert entry == {"name": "ink", "te": 0.8, "unet": 0.6, "hash": lora.hash, "sha256": resources.sha256(lora_path)}
    emb = resources.embedding_entry(resources.find_embedding("easynegative", [tmp_path / "emb"]))
    parsed = metadata.parse_parameters(
        metadata.a1111_parameters({"prompt": "x", "steps": 2, "loras": [entry], "embeddings": [emb]})
    )
    assert metadata.parse_hash_list(parsed["Lora hashes"]) == {"ink": resources.lora_hash(lora_path)}
    assert parsed["Hashes"] == {
        "lora:ink": resources.model_hash(lora_path),
        "embed:EasyNegative": resources.model_hash(emb_path),
    }


def test_two_files_with_one_name_pick_the_first_and_warn_once(tmp_path, caplog):
    root = tmp_path / "Lora"
    write_safetensors(root / "a" / "Same.safetensors", KOHYA)
    write_safetensors(root / "b" / "same.safetensors", KOHYA)
    for _ in range(3):
        assert resources.find_lora("SAME", [root]).path == root / "a" / "Same.safetensors"
    assert len([r for r in caplog.records if "2 files answer to the name" in r.getMessage()]) == 1
