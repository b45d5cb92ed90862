"""Encoded prompts driving real diffusers pipelines: the project's tiny SD model and a tiny SDXL.

Written against whatever tokenizer the pipeline has: token counts come from it, never assumed.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pipeline.encoding import chunk_fragments, clip_tokenizer, encode, parse_emphasis  # noqa: E402
from pipeline.encoding.chunks import token_ids  # noqa: E402
from tests.test_encoding_encoder import clip_config, shifted  # noqa: E402

SIZE = 64


def with_euler(pipe, cls=None):
    """The same modules with a one-UNet-call-per-step scheduler (PNDM adds a warm-up call)."""
    from diffusers import EulerDiscreteScheduler

    components = {**pipe.components, "scheduler": EulerDiscreteScheduler.from_config(pipe.scheduler.config)}
    out = (cls or type(pipe))(**components)
    out.set_progress_bar_config(disable=True)
    return out


@pytest.fixture(scope="module")
def sd(tiny):
    return with_euler(tiny.txt2img)


@pytest.fixture(scope="module")
def sd_img2img(sd):
    from diffusers import StableDiffusionImg2ImgPipeline

    return with_euler(sd, StableDiffusionImg2ImgPipeline)


@pytest.fixture(scope="module")
def xl():
    """A tiny SDXL (diffusers' test recipe, smaller) with the real vocabulary in both tokenizers."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.set_num_threads(1)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=2,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 16,
        cross_attention_dim=64,
        norm_num_groups=2,
    )
    vae = AutoencoderKL(
        block_out_channels=(4, 8),
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        norm_num_groups=2,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="leading"
    )
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=shifted(CLIPTextModel(clip_config())),
        text_encoder_2=shifted(CLIPTextModelWithProjection(clip_config(projection_dim=16, hidden_act="gelu"))),
        tokenizer=clip_tokenizer(),
        tokenizer_2=clip_tokenizer("!"),
        unet=unet,
        scheduler=scheduler,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def xl_img2img(xl):
    from diffusers import StableDiffusionXLImg2ImgPipeline

    pipe = StableDiffusionXLImg2ImgPipeline(**xl.components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(pipe, cond, steps: int, **extra) -> np.ndarray:
    return pipe(
        **cond.kwargs(),
        num_inference_steps=steps,
        guidance_scale=7.0,
        generator=torch.Generator("cpu").manual_seed(1),
        callback_on_step_end=cond.callback,
        callback_on_step_end_tensor_inputs=cond.tensor_inputs,
        output_type="np",
        **extra,
    ).images[0]


def txt2img(pipe, prompt: str, negative: str = "lowres", steps: int = 3) -> np.ndarray:
    return run(pipe, encode(pipe, prompt, negative, steps=steps), steps, width=SIZE, height=SIZE)


@contextmanager
def unet_inputs(pipe):
    """What the UNet is given at each call: cross-attention states, and SDXL's pooled text_embeds."""
    seen = []

    def record(module, args, kwargs):
        added = kwargs.get("added_cond_kwargs") or {}
        seen.append((kwargs["encoder_hidden_states"].clone(), added.get("text_embeds")))

    hook = pipe.unet.register_forward_pre_hook(record, with_kwargs=True)
    try:
        yield seen
    finally:
        hook.remove()


def init_image():
    from PIL import Image

    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8))


# -- pixels --------------------------------------------------------------------------------------


def test_weight_one_gives_the_same_pixels_as_no_weight(sd):
    assert np.array_equal(txt2img(sd, "red (hair:1.0), blue coat"), txt2img(sd, "red hair, blue coat"))
    assert not np.array_equal(txt2img(sd, "red (hair:1.6), blue coat"), txt2img(sd, "red hair, blue coat"))


def test_a_word_past_token_77_changes_the_pixels(sd):
    base = "red hair, blue coat, "
    filler = base * (80 // max(1, len(token_ids(sd.tokenizer, base))) + 1)
    assert len(token_ids(sd.tokenizer, filler)) > 77
    a, b = filler + "cat", filler + "dog"
    assert len(chunk_fragments(parse_emphasis(a), sd.tokenizer)) >= 2
    assert not np.array_equal(txt2img(sd, a), txt2img(sd, b))

    def diffusers_alone(prompt):  # what aiimg did before: the text is cut at 77 tokens
        return sd(prompt, negative_prompt="lowres", num_inference_steps=3, width=SIZE, height=SIZE,
                  generator=torch.Generator("cpu").manual_seed(1), output_type="np").images[0]  # fmt: skip

    assert np.array_equal(diffusers_alone(a), diffusers_alone(b))


def test_prompt_editing_changes_the_pixels(sd):
    edited = txt2img(sd, "a [red hair:blue coat:1] girl")
    assert not np.array_equal(edited, txt2img(sd, "a red hair girl"))
    assert not np.array_equal(edited, txt2img(sd, "a blue coat girl"))


# -- what the UNet sees at each step ---------------------------------------------------------------


def expected_states(cond, calls: int, sdxl: bool = False):
    for step in range(calls):
        s = cond.stretch_at(step)
        pooled = torch.cat([s.negative_pooled, s.pooled]) if sdxl else None
        yield torch.cat([s.negative_prompt_embeds, s.prompt_embeds]), pooled


def assert_unet_saw(seen, cond, calls: int, sdxl: bool = False):
    assert len(seen) == calls
    for step, ((states, pooled), (want, want_pooled)) in enumerate(zip(seen, expected_states(cond, calls, sdxl))):
        assert torch.equal(states, want.to(states.dtype)), f"step {step}"
        if sdxl:
            assert torch.equal(pooled, want_pooled.to(pooled.dtype)), f"step {step}"


def test_sd_txt2img_switches_the_conditioning_mid_run(sd):
    cond = encode(sd, "a [red hair:blue coat:1] girl", "lowres", steps=4)
    assert [s.until_step for s in cond.stretches] == [1, 4]
    with unet_inputs(sd) as seen:
        run(sd, cond, 4, width=SIZE, height=SIZE)
    assert_unet_saw(seen, cond, 4)
    assert not torch.equal(seen[1][0], seen[2][0])  # steps 0 and 1 "red hair", then "blue coat"


def test_sd_img2img_switches_counting_from_its_first_step(sd_img2img):
    cond = encode(sd_img2img, "[red|blue] hair", "lowres", steps=8)
    with unet_inputs(sd_img2img) as seen:
        run(sd_img2img, cond, 8, image=init_image(), strength=0.5)  # runs the last 4 of 8 steps
    assert_unet_saw(seen, cond, 4)
    assert [cond.stretch_at(i).prompt for i in range(4)] == ["red hair", "red hair", "blue hair", "red hair"]


def test_sdxl_txt2img_switches_embeddings_and_pooled_mid_run(xl):
    cond = encode(xl, "a [cat:dog:0.5] (in a hat:1.2)", "", steps=4)
    with unet_inputs(xl) as seen:
        run(xl, cond, 4, width=SIZE, height=SIZE)
    assert_unet_saw(seen, cond, 4, sdxl=True)
    assert not torch.equal(seen[2][1], seen[3][1])
    assert not seen[0][0][0].any() and not seen[0][1][0].any()  # the empty negative is zeros


def test_sdxl_img2img_switches_mid_run(xl_img2img):
    cond = encode(xl_img2img, "a [cat:dog:1]", "lowres", steps=6)
    with unet_inputs(xl_img2img) as seen:
        run(xl_img2img, cond, 6, image=init_image(), strength=0.5)
    assert_unet_saw(seen, cond, 3, sdxl=True)
    assert not torch.equal(seen[1][0], seen[2][0])


def test_a_long_sdxl_prompt_reaches_the_unet_whole(xl):
    cond = encode(xl, " ".join(["cat"] * 100), "", steps=2)
    with unet_inputs(xl) as seen:
        run(xl, cond, 2, width=SIZE, height=SIZE)
    assert seen[0][0].shape == (2, 154, 64)


# -- textual inversion as diffusers loads it -----------------------------------------------------


def test_an_embedding_loaded_by_diffusers_is_kept_whole(tiny):
    from diffusers import StableDiffusionPipeline

    parts = {**tiny.txt2img.components}
    parts["tokenizer"] = copy.deepcopy(parts["tokenizer"])
    parts["text_encoder"] = copy.deepcopy(parts["text_encoder"])
    pipe = StableDiffusionPipeline(**parts)
    width = pipe.text_encoder.get_input_embeddings().weight.shape[1]
    pipe.load_textual_inversion({"emb_params": torch.randn(3, width)}, token="zqemb")
    ids = [pipe.tokenizer.convert_tokens_to_ids(t) for t in ("zqemb", "zqemb_1", "zqemb_2")]
    unit = len(token_ids(pipe.tokenizer, "a"))
    filler = " ".join(["a"] * (74 // unit))  # 72..74 tokens: the 3 vectors cannot fit after it
    assert 72 <= len(token_ids(pipe.tokenizer, filler)) <= 74
    chunks = chunk_fragments(parse_emphasis(filler + " zqemb"), pipe.tokenizer)
    assert len(chunks) == 2 and list(chunks[1].ids[1:4]) == ids
    second = encode(pipe, filler + " zqemb", "", steps=1).kwargs()["prompt_embeds"][:, 77:]
    alone = encode(pipe, "zqemb", "", steps=1).kwargs()["prompt_embeds"]
    assert second.shape[1] == 77 and torch.allclose(second, alone, atol=1e-6)
    assert not torch.allclose(alone, encode(pipe, "", "", steps=1).kwargs()["prompt_embeds"], atol=1e-4)
