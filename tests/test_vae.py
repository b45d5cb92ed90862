"""[model] vae: a VAE of the creator's, as a diffusers folder or a single file, replaces the model's."""

import checkpoint_fixtures
import numpy as np
import torch
from safetensors.torch import save_file

from pipeline import config, metadata, models, resources


def draw(loaded) -> np.ndarray:
    generator = torch.Generator().manual_seed(3)
    return np.asarray(
        loaded.txt2img("red hair", num_inference_steps=2, height=64, width=64, generator=generator).images[0]
    )


def other_vae(tmp_path):
    """The tiny model's VAE with other weights: same shapes, other pixels."""
    vae = models._from_folder(models.ensure_tiny(), dtype=None).vae
    torch.manual_seed(11)
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return vae


def test_a_vae_folder_or_single_file_replaces_the_models_and_is_recorded(tmp_path):
    torch.set_num_threads(1)
    vae = other_vae(tmp_path)
    vae.save_pretrained(tmp_path / "my-vae")
    single = tmp_path / "my-vae.safetensors"
    ldm = checkpoint_fixtures.vae_to_ldm(vae.state_dict(), vae.config)
    save_file({k: v.contiguous() for k, v in ldm.items()}, single)
    plain = draw(models.load(config.ModelConfig()))
    from_folder = models.load(config.ModelConfig(vae=str(tmp_path / "my-vae")))
    from_file = models.load(config.ModelConfig(vae=str(single)))
    assert from_folder.vae == {
        "name": "my-vae",
        "hash": resources.model_hash(tmp_path / "my-vae" / "diffusion_pytorch_model.safetensors"),
    }
    assert from_file.vae == {"name": "my-vae.safetensors", "hash": resources.model_hash(single)}
    assert not np.array_equal(draw(from_folder), plain)  # the VAE decodes: other weights, other pixels
    assert np.array_equal(draw(from_folder), draw(from_file))  # one VAE, two layouts, the same pixels
    text = metadata.a1111_parameters(
        {"prompt": "p", "steps": 2, "seed": 1, "width": 64, "height": 64, "vae": from_file.vae}
    )
    assert f"VAE hash: {from_file.vae['hash']}" in text and "VAE: my-vae.safetensors" in text
