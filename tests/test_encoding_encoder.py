"""Prompt -> embeddings on tiny seeded CLIP text encoders with the real vocabulary, checked by hand."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from pipeline.encoding import clip_tokenizer, encode, encoder_mode  # noqa: E402
from pipeline.encoding.chunks import token_ids  # noqa: E402
from pipeline.errors import AiimgError  # noqa: E402

HIDDEN = 32


def clip_config(layers: int = 3, **extra):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=49408,
        hidden_size=HIDDEN,
        intermediate_size=37,
        num_hidden_layers=layers,
        num_attention_heads=2,
        max_position_embeddings=77,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
        **extra,
    )


def shifted(model):
    """Random LayerNorm gains and biases: freshly built, every normalised token has mean 0 and so
    has the whole output, which would make the mean restore 0/0."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.normal_(1.0, 0.2)
                module.bias.normal_(0.3, 0.2)
    return model.eval()


def sd_text(seed: int = 0, **extra) -> SimpleNamespace:
    """What encode() reads of an SD 1.x (quick_gelu) or 2.x (hidden_act="gelu") pipeline."""
    from transformers import CLIPTextModel

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    return SimpleNamespace(tokenizer=clip_tokenizer(), text_encoder=shifted(CLIPTextModel(clip_config(**extra))))


def sdxl_text(seed: int = 0) -> SimpleNamespace:
    """SDXL's two: CLIP-L (pads with EOS) and CLIP-G with projection (OpenCLIP: pads with "!")."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    return SimpleNamespace(
        tokenizer=clip_tokenizer(),
        text_encoder=shifted(CLIPTextModel(clip_config())),
        tokenizer_2=clip_tokenizer("!"),
        text_encoder_2=shifted(CLIPTextModelWithProjection(clip_config(projection_dim=16, hidden_act="gelu"))),
    )


@pytest.fixture(scope="module")
def sd():
    return sd_text()


@pytest.fixture(scope="module")
def xl():
    return sdxl_text()


def ids_of(tokenizer, text: str):
    """One chunk the way the tokenizer itself pads it: BOS, tokens, EOS, pad..."""
    return torch.tensor([tokenizer(text, padding="max_length", max_length=77).input_ids])


def raw(model, tokenizer, text: str):
    with torch.no_grad():
        return model(ids_of(tokenizer, text), output_hidden_states=True)


def weighted(z, w: list[float], restore: bool = True):
    weights = torch.tensor(w + [1.0] * (77 - len(w))).view(1, 77, 1)
    out = z * weights
    return out * (z.mean() / out.mean()) if restore else out


def embeds(pipe, prompt: str, negative: str = "", **kw):
    kw.setdefault("steps", 1)
    return encode(pipe, prompt, negative, **kw).kwargs()


def words(word: str, n: int) -> str:
    return " ".join([word] * n)


# -- weights -----------------------------------------------------------------------------------


def test_weights_multiply_tokens_then_restore_the_mean(sd):
    z = raw(sd.text_encoder, sd.tokenizer, "a cat dog").last_hidden_state
    expected = weighted(z, [1.0, 1.0, 1.5, 1 / 1.1])  # BOS a (cat:1.5) [dog]
    got = embeds(sd, "a (cat:1.5) [dog]")["prompt_embeds"]
    assert got.shape == (1, 77, HIDDEN)
    assert torch.allclose(got, expected, atol=1e-6)
    assert not torch.allclose(got, z, atol=1e-3)


def test_all_zero_states_stay_zero_instead_of_nan():
    from pipeline.encoding.chunks import Chunk
    from pipeline.encoding.encoder import _weighted

    chunk = Chunk(ids=(0,) * 77, weights=(1.0, 2.0) + (1.0,) * 75, length=1)
    assert torch.equal(_weighted(torch.zeros(1, 77, 4), [chunk], "original"), torch.zeros(1, 77, 4))


def test_no_norm_skips_the_mean_restore_and_ignore_skips_the_weights(sd):
    z = raw(sd.text_encoder, sd.tokenizer, "a cat dog").last_hidden_state
    no_norm = embeds(sd, "a (cat:1.5) [dog]", emphasis="no-norm")["prompt_embeds"]
    assert torch.allclose(no_norm, weighted(z, [1.0, 1.0, 1.5, 1 / 1.1], restore=False), atol=1e-6)
    assert torch.allclose(embeds(sd, "a (cat:1.5) [dog]", emphasis="ignore")["prompt_embeds"], z, atol=1e-6)


def test_weight_one_is_no_weight(sd):
    assert torch.equal(embeds(sd, "a (cat:1.0) dog")["prompt_embeds"], embeds(sd, "a cat dog")["prompt_embeds"])


def test_emphasis_mode_is_checked_and_recorded():
    assert encoder_mode() == "aiimg-a1111/1 emphasis=original"
    assert encoder_mode("no-norm") == "aiimg-a1111/1 emphasis=no-norm"
    with pytest.raises(AiimgError, match="'Original'"):
        encode(None, "a", "", steps=1, emphasis="Original")


# -- clip skip -----------------------------------------------------------------------------------


def test_clip_skip_is_a_hidden_layer_then_the_final_layer_norm(sd):
    out = raw(sd.text_encoder, sd.tokenizer, "a cat")
    norm = sd.text_encoder.final_layer_norm
    assert torch.allclose(embeds(sd, "a cat")["prompt_embeds"], out.last_hidden_state, atol=1e-6)
    for skip in (2, 3):
        expected = norm(out.hidden_states[-skip])
        assert torch.allclose(embeds(sd, "a cat", clip_skip=skip)["prompt_embeds"], expected, atol=1e-6)


@pytest.mark.parametrize("skip", [0, 4, "2", True])
def test_clip_skip_out_of_range_is_an_error(sd, skip):
    with pytest.raises(AiimgError, match="clip skip"):
        encode(sd, "a cat", "", steps=1, clip_skip=skip)


def test_clip_skip_is_ignored_on_openclip_sd2_as_a1111_does():
    sd2 = sd_text(hidden_act="gelu")
    out = raw(sd2.text_encoder, sd2.tokenizer, "a cat")
    assert torch.allclose(embeds(sd2, "a cat", clip_skip=2)["prompt_embeds"], out.last_hidden_state, atol=1e-6)


# -- chunks ------------------------------------------------------------------------------------


def test_a_long_prompt_keeps_every_token_in_chunks_encoded_separately(sd):
    long = embeds(sd, words("a", 75) + " cat")["prompt_embeds"]
    assert long.shape == (1, 154, HIDDEN)
    assert torch.allclose(long[:, :77], embeds(sd, words("a", 75))["prompt_embeds"], atol=1e-6)
    assert torch.allclose(long[:, 77:], embeds(sd, "cat")["prompt_embeds"], atol=1e-6)


def test_a_word_past_token_77_changes_only_its_own_chunk(sd):
    cat = embeds(sd, words("a", 78) + " cat")["prompt_embeds"]
    dog = embeds(sd, words("a", 78) + " dog")["prompt_embeds"]
    assert torch.equal(cat[:, :77], dog[:, :77])
    assert not torch.allclose(cat[:, 77:], dog[:, 77:], atol=1e-4)


def test_the_shorter_of_prompt_and_negative_is_padded_with_empty_chunks(sd):
    empty = embeds(sd, "")["prompt_embeds"]
    out = embeds(sd, words("a", 80), "lowres")
    assert out["prompt_embeds"].shape == out["negative_prompt_embeds"].shape == (1, 154, HIDDEN)
    assert torch.allclose(out["negative_prompt_embeds"][:, :77], embeds(sd, "lowres")["prompt_embeds"], atol=1e-6)
    assert torch.allclose(out["negative_prompt_embeds"][:, 77:], empty, atol=1e-6)
    flipped = embeds(sd, "a cat", words("a", 160))
    assert flipped["prompt_embeds"].shape == (1, 231, HIDDEN)
    assert torch.allclose(flipped["prompt_embeds"][:, 77:154], empty, atol=1e-6)
    assert torch.allclose(flipped["prompt_embeds"][:, 154:], empty, atol=1e-6)


def test_an_empty_sd1_negative_is_the_encoding_of_an_empty_prompt(sd):
    out = embeds(sd, "a cat", "")
    assert torch.allclose(out["negative_prompt_embeds"], raw(sd.text_encoder, sd.tokenizer, "").last_hidden_state)


# -- networks and AND ------------------------------------------------------------------------


def test_network_tags_leave_the_prompt_and_come_back_as_data(sd):
    cond = encode(sd, "a cat <lora:style:0.7>", "", steps=1)
    assert [(n.name, n.te) for n in cond.networks] == [("style", 0.7)]
    assert torch.equal(cond.kwargs()["prompt_embeds"], embeds(sd, "a cat ")["prompt_embeds"])


def test_the_negative_prompt_is_text_as_a1111_reads_it(sd):
    tagged = embeds(sd, "a", "<lora:x:1> AND ugly")["negative_prompt_embeds"]
    z = raw(sd.text_encoder, sd.tokenizer, "<lora:x:1> AND ugly").last_hidden_state
    assert torch.allclose(tagged, z, atol=1e-6)


def test_and_in_the_prompt_is_refused(sd):
    with pytest.raises(AiimgError, match="composable diffusion"):
        encode(sd, "a cat AND a dog", "", steps=1)


# -- scheduled prompts -----------------------------------------------------------------------------


def test_prompt_editing_gives_one_stretch_per_text(sd):
    cond = encode(sd, "a [cat:dog:2]", "lowres", steps=4)
    assert [(s.until_step, s.prompt, s.negative) for s in cond.stretches] == [
        (2, "a cat", "lowres"),
        (4, "a dog", "lowres"),
    ]
    assert cond.scheduled and cond.tensor_inputs == ["prompt_embeds"]
    assert [cond.stretch_at(i).prompt for i in range(4)] == ["a cat", "a cat", "a cat", "a dog"]
    assert torch.equal(cond.kwargs()["prompt_embeds"], embeds(sd, "a cat")["prompt_embeds"])
    assert torch.equal(cond.stretches[1].prompt_embeds, embeds(sd, "a dog")["prompt_embeds"])


def test_on_step_installs_the_next_steps_embeddings_as_negative_then_positive(sd):
    cond = encode(sd, "a [cat:dog:2]", "lowres", steps=4)
    first, second = cond.stretches
    batch = torch.cat([first.negative_prompt_embeds, first.prompt_embeds])
    for step in (0, 1, 3):  # step 2 is the last with "cat": the callback after it switches
        assert cond.on_step(step, {"prompt_embeds": batch})["prompt_embeds"] is batch
    swapped = cond.on_step(2, {"prompt_embeds": batch})["prompt_embeds"]
    assert torch.equal(swapped, torch.cat([second.negative_prompt_embeds, second.prompt_embeds]))
    two_images = torch.cat([first.negative_prompt_embeds] * 2 + [first.prompt_embeds] * 2)
    swapped = cond.on_step(2, {"prompt_embeds": two_images})["prompt_embeds"]
    assert torch.equal(swapped, torch.cat([second.negative_prompt_embeds] * 2 + [second.prompt_embeds] * 2))
    no_cfg = cond.callback(
        SimpleNamespace(do_classifier_free_guidance=False), 2, 0, {"prompt_embeds": first.prompt_embeds}
    )
    assert torch.equal(no_cfg["prompt_embeds"], second.prompt_embeds)


def test_on_step_needs_the_tensors_it_replaces(sd):
    cond = encode(sd, "a [cat|dog]", "", steps=4)
    with pytest.raises(AiimgError, match="callback_on_step_end_tensor_inputs"):
        cond.on_step(0, {"latents": None})
    plain = encode(sd, "a cat", "", steps=4)
    assert not plain.scheduled and plain.on_step(0, {"latents": 1}) == {"latents": 1}


def test_each_distinct_text_is_encoded_once(sd):
    calls = []
    hook = sd.text_encoder.register_forward_hook(lambda *args: calls.append(1))
    try:
        cond = encode(sd, "a [cat|dog]", "lowres", steps=10)
    finally:
        hook.remove()
    assert len(cond.stretches) == 10 and len(calls) == 3  # "a cat", "a dog", "lowres"


def test_chunk_counts_may_change_between_stretches(sd):
    cond = encode(sd, "[a:" + words("b", 80) + ":1]", "", steps=4)
    assert [s.prompt_embeds.shape[1] for s in cond.stretches] == [77, 154]
    assert [s.negative_prompt_embeds.shape[1] for s in cond.stretches] == [77, 154]
    assert cond.chunks == 2


# -- SDXL --------------------------------------------------------------------------------------


def test_sdxl_concatenates_both_penultimate_layers_without_the_final_norm(xl):
    one = raw(xl.text_encoder, xl.tokenizer, "a cat").hidden_states[-2]
    two = raw(xl.text_encoder_2, xl.tokenizer_2, "a cat").hidden_states[-2]
    got = embeds(xl, "a cat")
    assert got["prompt_embeds"].shape == (1, 77, 2 * HIDDEN)
    assert torch.allclose(got["prompt_embeds"], torch.cat([one, two], dim=-1), atol=1e-6)


def test_sdxl_weights_restore_each_encoders_mean_separately(xl):
    one = raw(xl.text_encoder, xl.tokenizer, "a cat").hidden_states[-2]
    two = raw(xl.text_encoder_2, xl.tokenizer_2, "a cat").hidden_states[-2]
    w = [1.0, 1.0, 1.5]
    expected = torch.cat([weighted(one, w), weighted(two, w)], dim=-1)
    assert torch.allclose(embeds(xl, "a (cat:1.5)")["prompt_embeds"], expected, atol=1e-5)


def test_sdxl_pooled_is_clip_g_of_the_first_chunk_unweighted(xl):
    first = raw(xl.text_encoder_2, xl.tokenizer_2, words("a", 75)).text_embeds
    long = embeds(xl, words("a", 75) + " cat")
    assert long["prompt_embeds"].shape == (1, 154, 2 * HIDDEN)
    assert torch.allclose(long["pooled_prompt_embeds"], first, atol=1e-6)
    plain, loud = embeds(xl, "a cat"), embeds(xl, "a (cat:1.5)")
    assert torch.allclose(plain["pooled_prompt_embeds"], loud["pooled_prompt_embeds"])
    assert not torch.allclose(plain["prompt_embeds"], loud["prompt_embeds"], atol=1e-4)


def test_sdxl_empty_negative_is_all_zeros_at_the_prompts_length(xl):
    out = embeds(xl, words("a", 80), "")
    assert out["negative_prompt_embeds"].shape == (1, 154, 2 * HIDDEN)
    assert not out["negative_prompt_embeds"].any() and not out["negative_pooled_prompt_embeds"].any()
    assert out["negative_pooled_prompt_embeds"].shape == out["pooled_prompt_embeds"].shape == (1, 16)
    written = embeds(xl, "a", "lowres")
    assert written["negative_prompt_embeds"].any() and written["negative_pooled_prompt_embeds"].any()


def test_sdxl_ignores_clip_skip_as_a1111_does(xl):
    assert torch.equal(embeds(xl, "a cat", clip_skip=2)["prompt_embeds"], embeds(xl, "a cat")["prompt_embeds"])


def test_sdxl_scheduled_prompts_swap_the_pooled_vector_too(xl):
    cond = encode(xl, "[cat:dog:1]", "", steps=3)
    first, second = cond.stretches
    assert cond.tensor_inputs == ["prompt_embeds", "add_text_embeds"]
    state = {
        "prompt_embeds": torch.cat([first.negative_prompt_embeds, first.prompt_embeds]),
        "add_text_embeds": torch.cat([first.negative_pooled, first.pooled]),
    }
    out = cond.on_step(1, state)
    assert torch.equal(out["add_text_embeds"], torch.cat([second.negative_pooled, second.pooled]))
    assert not out["add_text_embeds"][0].any()
    assert torch.allclose(second.pooled, embeds(xl, "dog")["pooled_prompt_embeds"])


def test_sdxl_an_embedding_in_only_one_tokenizer_is_an_error():
    xl = sdxl_text()
    xl.tokenizer_2.add_tokens(["zqemb"] + [f"zqemb_{i}" for i in range(1, 8)])  # 8 vectors there
    pieces = len(token_ids(xl.tokenizer, "zqemb"))  # plain BPE pieces in the other
    assert pieces < 8
    with pytest.raises(AiimgError, match="load it into both"):
        encode(xl, words("a", 75 - pieces) + " zqemb", "", steps=1)  # fits one chunk there, not here


def test_a_pipeline_without_a_first_text_encoder_is_refused():
    with pytest.raises(AiimgError, match="refiner"):
        encode(SimpleNamespace(tokenizer=None, text_encoder=None), "a", "", steps=1)


def test_half_precision_encoders_give_half_embeddings_close_to_full(sd):
    import copy

    half = copy.deepcopy(sd)
    half.text_encoder = half.text_encoder.half()
    prompt = "a (cat:1.3), " + words("b", 80)
    full, low = embeds(sd, prompt, "lowres"), embeds(half, prompt, "lowres")
    assert low["prompt_embeds"].dtype == torch.float16
    assert torch.allclose(low["prompt_embeds"].float(), full["prompt_embeds"], atol=0.05)
