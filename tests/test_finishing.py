"""Finishing a work (a copy: upscaler, resize, unsharp) and the upscaler models it and the ladder use."""

import importlib.util
import json
import sys
import types

import numpy as np
import pytest
from PIL import Image, ImageFilter

from pipeline import config, finishing, metadata, resources
from pipeline.content import Content
from pipeline.errors import AiimgError, ConfigError
from pipeline.recipes import VariationRecipe

DRAFT_ID = "20261125-153012-7f3a"


# -- a tiny upscaler model file ------------------------------------------------------------------


def _torchvision_stand_in() -> dict:
    """What spandrel's LaMa and RestoreFormer modules take from torchvision when they are imported.

    spandrel imports every architecture it knows on ``import spandrel``, and two of them name
    torchvision functions at import time. This machine's torch is the CPU build from the
    PyTorch index, whose matching torchvision is not on PyPI (PyPI's is built against CUDA
    torch and does not load here). ESRGAN, the architecture these tests use, never calls
    torchvision; a stand-in that raises if anything did lets the real spandrel load here."""

    def unavailable(*args, **kwargs):
        raise RuntimeError("torchvision stand-in of the tests: not available")

    root, transforms, functional = (types.ModuleType(n) for n in ("torchvision", "transforms", "functional"))
    functional.InterpolationMode = types.SimpleNamespace(NEAREST="nearest", BILINEAR="bilinear", BICUBIC="bicubic")
    functional.rotate = functional.normalize = unavailable
    root.transforms, transforms.functional = transforms, functional
    return {"torchvision": root, "torchvision.transforms": transforms, "torchvision.transforms.functional": functional}


def import_spandrel():
    """The real spandrel (skipped where it is not installed: pip install 'aiimg[finish]')."""
    if importlib.util.find_spec("spandrel") is None:
        pytest.skip("spandrel is not installed (pip install 'aiimg[finish]')")
    try:
        import spandrel
    except (ImportError, RuntimeError):  # no torchvision, or one built for another torch
        for name in [n for n in sys.modules if n.split(".")[0] in ("spandrel", "torchvision")]:
            del sys.modules[name]
        stand_in = _torchvision_stand_in()
        sys.modules.update(stand_in)
        try:
            import spandrel
        finally:  # only spandrel's two modules keep a reference; nothing else sees a torchvision
            for name in stand_in:
                sys.modules.pop(name, None)
    return spandrel


def tiny_upscaler(path, scale: int = 2, seed: int = 0):
    """A randomly initialised ESRGAN (spandrel's own class, RealESRGAN's architecture at toy width)
    saved as a state dict: .pth (torch.save) or .safetensors."""
    import torch

    import_spandrel()
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(seed)
    state = ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=scale).state_dict()
    if str(path).endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


def picture(width=96, height=64, seed=0) -> Image.Image:
    """Smooth colour fields with edges: what sharpening and resizing visibly act on."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x / width * 255, y / height * 255, (x + y) % 37 / 37 * 255], axis=-1)
    base[(x // 16 + y // 16) % 2 == 0] *= 0.5
    return Image.fromarray(np.clip(base + rng.normal(0, 2, base.shape), 0, 255).astype(np.uint8))


# -- upscaler models ---------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_an_upscaler_file_loads_and_upscales_by_its_scale(tmp_path, suffix):
    path = tiny_upscaler(tmp_path / f"2x-tiny{suffix}")
    model = finishing.upscaler(path, "[finish] upscaler")
    assert (model.scale, model.architecture, model.name) == (2, "ESRGAN", path.name)
    assert model.hash == resources.model_hash(path)
    out = model.upscale(picture(40, 30), "cpu")
    assert out.size == (80, 60) and out.mode == "RGB"
    assert finishing.upscaler(path, "[finish] upscaler") is model  # loaded once per file version


def test_tiles_give_the_pixels_of_one_whole_call(tmp_path, monkeypatch):
    import torch

    model = finishing.upscaler(tiny_upscaler(tmp_path / "2x.pth"), "k")
    pixels = torch.from_numpy(np.array(picture(70, 50))).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        whole = model.model(pixels)
        # a margin wider than the toy network's receptive field (about 20 pixels): no seam at all
        monkeypatch.setattr(finishing, "TILE", 24)
        monkeypatch.setattr(finishing, "TILE_MARGIN", 32)
        tiled = finishing._tiled(model.model, pixels, model.scale)
    assert tiled.shape == whole.shape
    assert torch.allclose(tiled, whole, atol=1e-5)


def test_a_missing_upscaler_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(AiimgError, match=r"\[variation\] upscaler = '.*nowhere\.pth': no such file"):
        finishing.upscaler(tmp_path / "nowhere.pth", "[variation] upscaler")


def test_a_file_that_is_no_upscaler_is_an_error_naming_it(tmp_path):
    import torch

    import_spandrel()
    path = tmp_path / "not-a-model.pth"
    torch.save({"layer.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(AiimgError, match=r"\[finish\] upscaler = '.*not-a-model\.pth': not a model architecture"):
        finishing.upscaler(path, "[finish] upscaler")
    garbage = tmp_path / "truncated.safetensors"
    garbage.write_bytes(b"\x00\x01 not a safetensors file")
    with pytest.raises(AiimgError, match=r"truncated\.safetensors': cannot read it as a model"):
        finishing.upscaler(garbage, "[finish] upscaler")


# -- finishing steps -----------------------------------------------------------------------------


def settings(**values):
    return config.from_dict({"finish": {"enabled": True, **values}}).finish


def test_finishing_sharpens_last_with_pillows_restrained_unsharp_mask():
    image = picture()
    out, steps = finishing.finish_image(image, settings(sharpen=60))
    assert steps == [{"step": "unsharp", "radius": 2, "percent": 60, "threshold": 3}]
    expected = image.filter(ImageFilter.UnsharpMask(radius=2, percent=60, threshold=3))
    assert np.array_equal(np.asarray(out), np.asarray(expected)) and not np.array_equal(np.asarray(out), image)


@pytest.mark.parametrize(("values", "size"), [({"area": 24576}, (192, 128)), ({"width": 48}, (48, 32)), ({}, (96, 64))])
def test_finishing_resizes_to_a_target_area_or_width_keeping_the_ratio(values, size):
    out, steps = finishing.finish_image(picture(96, 64), settings(sharpen=0, **values))
    assert out.size == size
    assert [s["step"] for s in steps] == (["resize"] if values else [])
    if values:
        assert steps[0] == {"step": "resize", "filter": "Lanczos", "width": size[0], "height": size[1]}


def test_finishing_upscales_then_resizes_then_sharpens(tmp_path):
    model = finishing.upscaler(tiny_upscaler(tmp_path / "2x.pth"), "[finish] upscaler")
    out, steps = finishing.finish_image(picture(48, 32), settings(area=96 * 64 * 2, sharpen=40), model, "cpu")
    assert [s["step"] for s in steps] == ["upscale", "resize", "unsharp"]
    assert steps[0] | {} == {**model.entry(), "step": "upscale", "width": 96, "height": 64}
    assert out.size == (steps[1]["width"], steps[1]["height"]) and abs(out.width * out.height - 96 * 64 * 2) < 200


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"area": 640000, "width": 1024}, r"\[finish\] area = 640000 and \[finish\] width = 1024: set one of them"),
        ({"sharpen": 81}, r"sharpen = 81 is out of range: expected 0\.\.80"),
        ({"area": 100}, r"area = 100 is not allowed"),
    ],
)
def test_finish_config_errors_name_the_file_and_keys(tmp_path, section, message):
    path = tmp_path / "aiimg.toml"
    path.write_text("[finish]\n" + "".join(f"{k} = {v}\n" for k, v in section.items()))
    with pytest.raises(ConfigError, match=rf"{path}: .*{message}"):
        config.load(path)


# -- finishing a work: a copy, the raw kept, every step recorded -----------------------------------


def variation(content: Content, image: Image.Image) -> VariationRecipe:
    recipe = VariationRecipe(
        id=f"{DRAFT_ID}-1", prompt="a cat", width=image.width, height=image.height, seed=1, parent=DRAFT_ID,
        index=1, file="1.png", steps=30, strength=0.5,
    )  # fmt: skip
    content.write_variation(DRAFT_ID, recipe.file, metadata.png_bytes(image, recipe.to_json()))
    return recipe


def test_finishing_writes_a_copy_keeps_the_raw_and_records_every_step(tmp_path):
    content = Content(tmp_path / "content").ensure()
    model_path = tiny_upscaler(tmp_path / "2x.pth")
    cfg = config.from_dict(
        {"finish": {"enabled": True, "upscaler": "2x.pth", "width": 150, "sharpen": 50}}, root=str(tmp_path)
    )
    image = picture(96, 64)
    recipe = variation(content, image)
    raw = content.variation_path(DRAFT_ID, "1.png").read_bytes()

    finished = finishing.finish(cfg, content, image, recipe, "cpu")

    assert content.variation_path(DRAFT_ID, "1.png").read_bytes() == raw  # the raw variation is kept as made
    path = content.finished_path(DRAFT_ID, "1.png")
    assert path == content.work_folder(DRAFT_ID) / "finished" / "1.png"
    assert recipe.finished["file"] == "finished/1.png"
    assert [s["step"] for s in recipe.finished["steps"]] == ["upscale", "resize", "unsharp"]
    assert recipe.finished["steps"][0]["hash"] == resources.model_hash(model_path)
    with Image.open(path) as img:
        assert img.size == finished.size == (150, 100) == (recipe.finished["width"], recipe.finished["height"])
        params = metadata.parse_parameters(img.text["parameters"])
    assert params["Finishing"] == (
        "upscale 2x.pth x2 to 192x128; resize Lanczos to 150x100; unsharp radius 2 percent 50 threshold 3"
    )
    assert params["Seed"] == "1" and params["Size"] == "96x64"  # what made the pixels, as generated
    with Image.open(content.variation_path(DRAFT_ID, "1.png")) as img:
        assert "Finishing" not in metadata.parse_parameters(img.text["parameters"])
    assert json.loads(json.dumps(recipe.to_json()))["finished"] == recipe.finished


def test_finishing_off_writes_nothing_and_records_nothing(tmp_path):
    content = Content(tmp_path / "content").ensure()
    image = picture()
    recipe = variation(content, image)
    assert finishing.finish(config.Config(), content, image, recipe) is None
    assert not (content.work_folder(DRAFT_ID) / "finished").exists()
    assert "finished" not in recipe.to_json()  # work.json as before finishing existed


def test_a_bad_finishing_upscaler_is_refused_before_any_pixel(tmp_path):
    cfg = config.from_dict({"finish": {"enabled": True, "upscaler": "missing.pth"}}, root=str(tmp_path))
    with pytest.raises(AiimgError, match=r"\[finish\] upscaler = '.*missing\.pth': no such file"):
        finishing.finishing_upscaler(cfg)
    off = config.from_dict({"finish": {"enabled": False, "upscaler": "missing.pth"}}, root=str(tmp_path))
    assert finishing.finishing_upscaler(off) is None


def test_the_studio_finishes_each_variation_of_a_seed_into_a_copy(tmp_path, tiny):
    from conftest import FAST_TOML, write_tree

    from pipeline.studio import Studio

    cfg = config.load(write_tree(tmp_path, FAST_TOML + "\n[finish]\nenabled = true\nsharpen = 80\n"))
    studio = Studio(cfg, Content(cfg.content_dir).ensure(), model=tiny)
    try:
        studio.start()
        studio.run(max_drafts=1, once=True, only=set())
        studio.drain()
        (draft,) = studio.content.drafts()
        (draft.folder / "seed.txt").write_text("count = 1")
        studio.run(once=True, drafting=False)
        assert studio.made["variations"] == 1
    finally:
        studio.close()
    (v,) = studio.content.read_work(draft.id).variations
    assert v.finished["steps"] == [{"step": "unsharp", "radius": 2, "percent": 80, "threshold": 3}]
    with Image.open(studio.content.variation_path(draft.id, v.file)) as raw:
        raw_pixels = np.asarray(raw.convert("RGB"))
        assert "Finishing" not in metadata.parse_parameters(raw.text["parameters"])  # the raw, as made
    with Image.open(studio.content.finished_path(draft.id, v.file)) as done:
        expected = Image.fromarray(raw_pixels).filter(ImageFilter.UnsharpMask(radius=2, percent=80, threshold=3))
        assert np.array_equal(np.asarray(done.convert("RGB")), np.asarray(expected))
