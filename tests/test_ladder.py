"""From seed to work in stages: the [variation] ladder (sizes, strengths, steps, colour correction,
upscaler between stages) and Deep Shrink for drafts, on the real tiny model."""

import math

import numpy as np
import pytest
import torch
from PIL import Image
from test_finishing import picture, tiny_upscaler

from pipeline import conditioning, config, drafts, finishing, metadata, sizes, variations
from pipeline.drafts import step_callback
from pipeline.errors import AiimgError, ConfigError, MarkerError
from pipeline.recipes import DraftRecipe, Round, VariationRecipe

DRAFT = DraftRecipe(id="20261125-153012-7f3a", prompt="a cat", negative_prompt="lowres", width=256, height=192, seed=7)


def settings(root=".", model=None, **variation):
    return config.from_dict({"variation": variation, **({"model": model} if model else {})}, root=str(root))


def plan(cfg, model, overrides=None) -> VariationRecipe:
    return variations.recipe(cfg, DRAFT, Round("m", 1, overrides=overrides or {}), 1, 1, model)


def photo(size=(256, 192)) -> Image.Image:
    """A real photograph (scikit-learn's bundled sample): colours as a creator's draft has them."""
    from sklearn.datasets import load_sample_image

    return Image.fromarray(load_sample_image("china.jpg")).resize(size, Image.LANCZOS)


class Spy:
    """The img2img pipeline, recording each call's init image, strength, steps and UNet calls."""

    def __init__(self, pipe):
        self.pipe, self.calls, self.unet_calls = pipe, [], 0
        self.handle = pipe.unet.register_forward_pre_hook(self._count)

    def _count(self, module, args):
        self.unet_calls += 1

    def __getattr__(self, name):
        return getattr(self.pipe, name)

    def __setattr__(self, name, value):  # the sampler is set on the pipeline, not on the spy
        if name in ("pipe", "calls", "unet_calls", "handle"):
            object.__setattr__(self, name, value)
        else:
            setattr(self.pipe, name, value)

    def __call__(self, **kwargs):
        before = self.unet_calls
        out = self.pipe(**kwargs)
        init = kwargs["image"]
        size = init.size if isinstance(init, Image.Image) else tuple(s * 8 for s in init.shape[-1:-3:-1])
        self.calls.append(
            {"init": size, "strength": kwargs["strength"], "steps": kwargs["num_inference_steps"]}
            | {"unet_calls": self.unet_calls - before, "out": out.images[0].size}
        )
        return out


@pytest.fixture
def spy(tiny, monkeypatch):
    spy = Spy(tiny.img2img)
    monkeypatch.setattr(tiny, "img2img", spy)
    yield spy
    spy.handle.remove()


# -- config and planning -------------------------------------------------------------------------


def test_one_strength_per_stage_or_a_config_error_naming_both_keys(tmp_path):
    path = tmp_path / "aiimg.toml"
    path.write_text("[variation]\nareas = [1000000, 1440000]\nstrengths = [0.5, 0.35, 0.2]\n")
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    message = str(caught.value)
    assert str(path) in message and "[variation] strengths = [0.5, 0.35, 0.2] has 3 entries" in message
    assert "[variation] areas = [1000000, 1440000] has 2 stages" in message
    assert config.Config().variation.strengths == []


def test_each_stage_has_its_area_at_the_drafts_ratio_and_its_strength():
    cfg = settings(areas=[65536, 102400, 147456], strengths=[0.5, 0.35, 0.2], steps=30)
    stages = variations.plan_stages(cfg.variation, 4 / 3, {})
    assert [(s["width"], s["height"]) for s in stages] == [sizes.size_for(a, 4 / 3) for a in cfg.variation.areas]
    assert [s["strength"] for s in stages] == [0.5, 0.35, 0.2]
    assert [s["steps"] for s in stages] == [30, 30, 50]  # 30 x 0.2 would run 6 steps: raised to 50 (10 run)
    assert all(s["upscaler"] == "Lanczos" for s in stages)
    # [] = strength at every stage; a seed's strength and steps apply to every stage
    same = variations.plan_stages(settings(areas=[65536, 102400], strength=0.4).variation, 1.0, {})
    assert [s["strength"] for s in same] == [0.4, 0.4]
    seeded = variations.plan_stages(cfg.variation, 1.0, {"strength": 0.25, "steps": 12})
    assert [(s["strength"], s["steps"]) for s in seeded] == [(0.25, 40)] * 3


@pytest.mark.parametrize("base", [1, 2, 30, 200])
def test_at_least_min_steps_run_at_any_strength_and_no_more_steps_than_needed(base):
    for strength in np.round(np.arange(0.01, 1.001, 0.01), 2):
        steps = variations.stage_steps(base, float(strength), 10)
        assert int(steps * strength) >= 10, (base, strength, steps)  # what diffusers' img2img runs
        assert steps == base or int((steps - 1) * strength) < 10, (base, strength, steps)
    assert variations.stage_steps(2, 0.5, 1) == 2  # min_steps = 1: the old floor (one step)


def test_a_ladder_runs_every_stage_from_the_previous_at_its_size_strength_and_steps(tiny, spy):
    cfg = settings(model={"sampler": "Euler"}, areas=[49152, 76800], strengths=[0.5, 0.3], steps=2)
    recipe = plan(cfg, tiny)
    image = variations.make(tiny, photo(), recipe)
    sizes_ = [(s["width"], s["height"]) for s in recipe.stages]
    assert sizes_ == [(256, 192), (320, 240)] and image.size == (recipe.width, recipe.height) == (320, 240)
    first, second = spy.calls
    assert first["init"] == (256, 192) and second["init"] == (320, 240)  # stage 2 starts from stage 1's image
    assert first["out"] == (256, 192)
    for call, stage in zip(spy.calls, recipe.stages):
        assert (call["strength"], call["steps"]) == (stage["strength"], stage["steps"])
        # one UNet call per step with Euler: what really ran, at least [variation] min_steps
        assert call["unet_calls"] == stage["denoise_steps"] == int(stage["steps"] * stage["strength"]) >= 10
    params = metadata.parse_parameters(metadata.a1111_parameters(recipe.to_json()))
    assert (
        params["Ladder"] == ("256x192 strength 0.5 steps 20 via Lanczos; 320x240 strength 0.3 steps 34 via Lanczos")
        and params["Steps"] == "20"
    )


# -- off by default: today's pixels ----------------------------------------------------------------


def before_ladders(model, source, recipe):
    """How a variation was made before this change: one prepare, every stage at the recipe's
    strength and steps, Lanczos, no colour correction."""
    steps = max(recipe.steps, math.ceil(1 / recipe.strength))
    prepared = conditioning.prepare(model, model.img2img, recipe, conditioning.Dirs(), steps)
    image = source
    for stage, area in enumerate(recipe.stage_areas):
        size = sizes.size_for(area, source.width / source.height)
        init = variations.encode(model, source, size) if stage == 0 else image.resize(size, Image.LANCZOS)
        image = model.img2img(
            **prepared.kwargs,
            image=init,
            strength=recipe.strength,
            num_inference_steps=steps,
            guidance_scale=recipe.guidance_scale,
            generator=torch.Generator("cpu").manual_seed(recipe.seed),
            callback_on_step_end=step_callback(None, None, switch=prepared.callback),
            callback_on_step_end_tensor_inputs=["latents", *prepared.tensor_inputs],
        ).images[0]
    return np.asarray(image)


def test_a_single_stage_at_the_defaults_gives_todays_pixels(tiny):
    recipe = plan(settings(areas=[49152]), tiny)  # steps 30, strength 0.5: 15 run, above the floor
    assert recipe.colour_correction is False and recipe.stages[0]["steps"] == 30
    made = np.asarray(variations.make(tiny, photo(), recipe))
    assert np.array_equal(made, before_ladders(tiny, photo(), recipe))
    params = metadata.parse_parameters(metadata.a1111_parameters(recipe.to_json()))
    assert not {"Ladder", "Colour correction", "Finishing"} & set(params)


def test_a_recipe_made_before_ladders_is_remade_as_it_was(tiny):
    recipe = plan(settings(areas=[49152, 76800], steps=2), tiny)
    recipe.stages = recipe.colour_correction = None  # as read from a work.json written before this change
    recipe.steps, recipe.strength = 2, 0.5
    assert np.array_equal(np.asarray(variations.make(tiny, photo(), recipe)), before_ladders(tiny, photo(), recipe))


# -- colour correction ---------------------------------------------------------------------------


def test_colour_correction_brings_a_drifted_image_back_to_the_drafts_colours():
    source = photo()
    pixels = np.asarray(source, dtype=np.float64)
    drifted = Image.fromarray(np.clip(pixels * [1.15, 0.95, 0.8] + [12, 0, -6], 0, 255).astype(np.uint8))
    corrected = finishing.colour_correct(drifted, finishing.colour_target(source))
    before, after = finishing.delta_e(source, drifted), finishing.delta_e(source, corrected)
    assert after < before / 2, (before, after)
    # luminosity is the image's own: the correction moves colour, not light
    assert np.abs(finishing._lum(np.asarray(corrected) / 255) - finishing._lum(np.asarray(drifted) / 255)).mean() < 0.01


def test_the_lab_conversion_round_trips():
    pixels = np.asarray(picture(64, 48), dtype=np.uint8)
    back = finishing.from_lab(finishing.to_lab(pixels)) * 255
    assert np.abs(back - pixels).max() < 0.6
    white, black = finishing.to_lab(np.array([[[255, 255, 255], [0, 0, 0]]], dtype=np.uint8))[0]
    assert np.allclose(white, [100, 0, 0], atol=0.05) and np.allclose(black, [0, 0, 0], atol=0.05)


@pytest.mark.parametrize(
    ("setting", "areas", "on"),
    [("auto", [49152], False), ("auto", [49152, 76800], True), ("on", [49152], True), ("off", [49152, 76800], False)],
)
def test_colour_correction_is_on_for_ladders_unless_forced(tiny, setting, areas, on):
    recipe = plan(settings(areas=areas, colour_correction=setting, steps=2), tiny)
    assert recipe.colour_correction is on
    params = metadata.parse_parameters(metadata.a1111_parameters(recipe.to_json()))
    assert params.get("Colour correction") == ("LAB to draft" if on else None)


def test_a_corrected_ladder_stays_closer_to_the_drafts_colours(tiny):
    draft = photo()
    errors = {}
    for setting in ("off", "on"):
        recipe = plan(settings(areas=[49152, 76800], strengths=[0.5, 0.3], steps=2, colour_correction=setting), tiny)
        image = variations.make(tiny, draft, recipe)
        errors[setting] = finishing.delta_e(draft.resize(image.size, Image.LANCZOS), image)
    assert errors["on"] < errors["off"], errors


# -- an upscaler model between stages ------------------------------------------------------------


def test_later_stages_are_resized_through_the_upscaler_model(tmp_path, tiny, spy, monkeypatch):
    tiny_upscaler(tmp_path / "2x.pth")
    cfg = settings(tmp_path, areas=[49152, 76800], strengths=[0.5, 0.3], steps=2, upscaler="2x.pth")
    recipe = plan(cfg, tiny)
    model = variations.ladder_upscaler(cfg)
    assert recipe.stages[0]["upscaler"] == "Lanczos"  # the first stage starts from the draft
    assert (recipe.stages[1]["upscaler"], recipe.stages[1]["upscaler_hash"]) == ("2x.pth", model.hash)
    seen = []
    real = type(model).upscale

    def upscale(self, image, device="cpu"):
        seen.append(image.size)
        return real(self, image, device)

    monkeypatch.setattr(type(model), "upscale", upscale)
    image = variations.make(tiny, photo(), recipe, upscaler=model)
    assert seen == [(256, 192)] and image.size == (320, 240)
    assert spy.calls[1]["init"] == (320, 240)  # 2x to 512x384, then Lanczos to the stage's size
    with pytest.raises(AiimgError, match=r"made with upscaler 2x\.pth .*set \[variation\] upscaler"):
        variations.make(tiny, photo(), recipe)
    params = metadata.parse_parameters(metadata.a1111_parameters(recipe.to_json()))
    assert params["Ladder"].endswith("via 2x.pth")


def test_a_missing_ladder_upscaler_is_answered_beside_the_marker(tmp_path, tiny):
    cfg = settings(tmp_path, areas=[49152, 76800], upscaler="models/4x.pth")
    with pytest.raises(MarkerError, match=r"\[variation\] upscaler = '.*models/4x\.pth': no such file"):
        plan(cfg, tiny)
    assert variations.ladder_upscaler(settings(tmp_path, areas=[49152], upscaler="models/4x.pth")) is None


# -- Deep Shrink (drafts) ------------------------------------------------------------------------


def draft_recipe(tiny, width, height, steps=8) -> DraftRecipe:
    recipe = DraftRecipe(id="20261125-153012-7f3b", prompt="a cat", width=width, height=height, seed=3, steps=steps)
    recipe.guidance_scale = 7.0
    conditioning.describe(recipe, config.Config(), tiny)
    return recipe


def test_deep_shrink_halves_the_features_only_inside_its_window(tiny):
    pipe = tiny.txt2img
    seen = []  # the spatial size the second down block is given, per UNet call
    handle = pipe.unet.down_blocks[1].register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(tuple(kwargs["hidden_states"].shape[-2:])), with_kwargs=True
    )
    try:
        assert finishing.native_area(pipe) == 256 * 256 and finishing.deep_shrink_applies(pipe, 320, 320)
        with finishing.deep_shrink(pipe, 320, 320, 0.35) as shrink:
            pipe("a cat", width=320, height=320, num_inference_steps=8, generator=torch.Generator().manual_seed(1))
    finally:
        handle.remove()
    assert shrink.threshold == 650
    full = (20, 20)  # 320 / 8 latents, halved by the first down block
    inside = [t for t, shrunk in shrink.calls if shrunk]
    assert inside and len(inside) < len(shrink.calls)  # the early part only, then full size
    for (t, shrunk), size in zip(shrink.calls, seen, strict=True):
        assert shrunk == (t >= 650) and size == ((10, 10) if shrunk else full)
    hooks = [pipe.unet._forward_pre_hooks, pipe.unet.down_blocks[0]._forward_hooks]
    assert not any(hooks) and not any(b._forward_pre_hooks for b in pipe.unet.up_blocks)


def test_deep_shrink_off_or_at_the_native_area_gives_todays_pixels_and_on_above_it_changes_them(tiny):
    def pixels(width, height, shrink):
        recipe = draft_recipe(tiny, width, height)
        return np.asarray(drafts.make(tiny, recipe, deep_shrink=shrink)), recipe

    today, recipe = pixels(256, 256, None)
    native, native_recipe = pixels(256, 256, 0.35)  # 256x256 is the tiny model's native area: no hook
    assert np.array_equal(today, native) and "deep_shrink" not in native_recipe.to_json()
    big_off, off_recipe = pixels(320, 320, None)
    big_on, on_recipe = pixels(320, 320, 0.35)
    assert "deep_shrink" not in off_recipe.to_json() and not np.array_equal(big_off, big_on)
    assert on_recipe.to_json()["deep_shrink"] == {"block": 0, "factor": 2, "end": 0.35, "until_timestep": 650.0}
    params = metadata.parse_parameters(metadata.a1111_parameters(on_recipe.to_json()))
    assert params["Deep Shrink"] == "down block 0 1/2 until timestep 650"


def test_deep_shrink_hooks_are_removed_when_a_draft_is_preempted(tiny):
    recipe = draft_recipe(tiny, 320, 320)
    with pytest.raises(drafts.Preempted):
        drafts.make(tiny, recipe, should_stop=lambda: True, deep_shrink=0.35)
    unet = tiny.txt2img.unet
    assert not unet._forward_pre_hooks and not unet.down_blocks[0]._forward_hooks


def test_deep_shrink_is_read_from_the_draft_section():
    assert finishing.deep_shrink_end(config.Config()) is None
    on = config.from_dict({"draft": {"deep_shrink": True, "deep_shrink_end": 0.5}})
    assert finishing.deep_shrink_end(on) == 0.5
