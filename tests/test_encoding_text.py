"""A1111 prompt text: the vendored CLIP vocabulary, the syntax, and the 75-token chunks (no torch)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pipeline.encoding import (
    Fragment,
    Network,
    chunk_fragments,
    clip_tokenizer,
    parse_emphasis,
    parse_networks,
    prompts_for_steps,
    refuse_and,
    token_count,
    write_tokenizer_files,
)
from pipeline.encoding.chunks import token_ids
from pipeline.encoding.vocab import BPE_FILE, vocab_and_merges
from pipeline.errors import AiimgError

BOS, EOS = 49406, 49407


@pytest.fixture(scope="module")
def tok():
    return clip_tokenizer()


# -- the vendored vocabulary -------------------------------------------------------------------


def test_vocab_is_clip_order_bytes_then_word_ends_then_merges_then_specials():
    vocab, merges = vocab_and_merges()
    assert len(vocab) == 49408 and len(merges) == 49408 - 512 - 2
    assert vocab["!"] == 0  # the first printable byte; OpenCLIP pads with it
    assert vocab["a"] == ord("a") - ord("!")  # printable ASCII bytes come first, in order
    assert vocab["a</w>"] == 256 + ord("a") - ord("!")
    first = "".join(merges[0])
    assert vocab[first] == 512  # merge i is entry 512 + i
    assert (vocab["<|startoftext|>"], vocab["<|endoftext|>"]) == (BOS, EOS)


def test_tokenizes_like_openai_clip(tok):
    # the ids openai/clip-vit-large-patch14 gives
    assert tok("a photo of a cat").input_ids == [BOS, 320, 1125, 539, 320, 2368, EOS]
    assert len(tok) == 49408 and tok.model_max_length == 77


def test_pad_token_is_eos_for_openai_clip_and_bang_for_openclip():
    assert clip_tokenizer().pad_token_id == EOS
    assert clip_tokenizer("!").pad_token_id == 0
    with pytest.raises(AiimgError, match="'<pad>'"):
        clip_tokenizer("<pad>")


def test_each_call_gives_a_fresh_tokenizer_because_embeddings_add_tokens():
    one, two = clip_tokenizer(), clip_tokenizer()
    one.add_tokens(["zqxembed"])
    assert len(one) == 49409 and len(two) == 49408


@pytest.mark.parametrize("pad", ["<|endoftext|>", "!"])
def test_written_files_load_back_as_the_same_tokenizer(tmp_path, pad):
    from transformers import CLIPTokenizer

    write_tokenizer_files(tmp_path, pad)
    loaded, built = CLIPTokenizer.from_pretrained(tmp_path), clip_tokenizer(pad)
    text = "Masterpiece, (best quality:1.2), a cat's whiskers; 12 ünïcode 猫 <lora:x:1>"
    assert len(loaded) == len(built) == 49408
    assert loaded(text).input_ids == built(text).input_ids
    padded = loaded("a cat", padding="max_length", max_length=77).input_ids
    assert padded == built("a cat", padding="max_length", max_length=77).input_ids
    assert padded[4] == loaded.pad_token_id == built.pad_token_id
    assert loaded.model_max_length == 77
    assert json.loads((tmp_path / "vocab.json").read_text(encoding="utf-8"))["cat</w>"] == 2368


def test_the_vendored_file_carries_its_license():
    folder = BPE_FILE.parent
    assert "Permission is hereby granted" in (folder / "LICENSE").read_text()
    assert "open_clip" in (folder / "README.md").read_text()


def test_the_text_parts_import_and_run_without_torch():
    code = (
        "import sys\n"
        "from pipeline.encoding import parse_networks, parse_emphasis, prompts_for_steps, encode\n"
        "prompts_for_steps(parse_networks('a [b:c:2] <lora:x:1>')[0], 4); parse_emphasis('(a:1.2)')\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


# -- extra networks ----------------------------------------------------------------------------


def test_networks_are_cut_out_of_the_text_and_returned_in_order():
    text, nets = parse_networks("a cat <lora:one:0.6>, <lora:two:0.6:0.2> dog<hypernet:three>")
    assert text == "a cat ,  dog"  # only the tags go; the spaces around them stay
    assert nets == [Network("lora", "one", 0.6, 0.6), Network("lora", "two", 0.6, 0.2), Network("hypernet", "three")]


def test_network_named_arguments_and_defaults():
    assert parse_networks("<lora:x:te=0.5>")[1] == [Network("lora", "x", 0.5, 0.5)]
    assert parse_networks("<lora:x:unet=0.3>")[1] == [Network("lora", "x", 1.0, 0.3)]
    assert parse_networks("<lora:x:unet=0.3:te=0.7>")[1] == [Network("lora", "x", 0.7, 0.3)]
    assert parse_networks("<lora:my lora v2>")[1] == [Network("lora", "my lora v2", 1.0, 1.0)]


@pytest.mark.parametrize(
    "tag, named", [("<lora:x:strong>", "'strong'"), ("<lora:x:0.5:nan>", "'nan'"), ("<lora:x:foo=1>", "'foo'")]
)
def test_a_bad_network_argument_is_named(tag, named):
    with pytest.raises(AiimgError, match=named) as err:
        parse_networks(f"a cat {tag}")
    assert tag in str(err.value)


def test_text_without_networks_is_unchanged():
    assert parse_networks("a <b> c: d") == ("a <b> c: d", [])


# -- AND -----------------------------------------------------------------------------------------


def test_and_is_refused_saying_what_to_do():
    with pytest.raises(AiimgError, match="composable diffusion") as err:
        refuse_and("a cat AND a dog")
    assert 'write "and"' in str(err.value)


@pytest.mark.parametrize("text", ["a cat and a dog", "ANDROID", "BRAND new", "a_AND_b"])
def test_and_only_as_an_uppercase_whole_word(text):
    refuse_and(text)


# -- emphasis ------------------------------------------------------------------------------------


def weights(text: str, mode: str = "original") -> list[tuple[str, float]]:
    return [(f.text, pytest.approx(f.weight)) for f in parse_emphasis(text, mode) if not f.is_break]


def test_a1111_worked_example():
    # the third "(" before house is never closed: it applies x1.1 from there to the end
    got = weights("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).")
    assert got == [
        ("a ", 1.0),
        ("house", 1.3 * 1.1 * 1.1),
        (" ", 1.1),
        ("on", 1 / 1.1 * 1.1),
        (" a ", 1.1),
        ("hill", 0.5 * 1.1),
        (", sun, ", 1.1),
        ("sky", 1.1**4),
        (".", 1.1),
    ]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("(x)", [("x", 1.1)]),
        ("((x))", [("x", 1.1 * 1.1)]),
        ("[x]", [("x", 1 / 1.1)]),
        ("[[x]]", [("x", 1 / 1.1 / 1.1)]),
        ("(x:1.3)", [("x", 1.3)]),
        ("((x:1.1))", [("x", 1.1 * 1.1)]),
        ("(x: 0.5 )", [("x", 0.5)]),
        ("(x:-1)", [("x", -1.0)]),
        ("(a:b:1.2)", [("a:b", 1.2)]),
        ("a (x", [("a ", 1.0), ("x", 1.1)]),
        ("a [x", [("a ", 1.0), ("x", 1 / 1.1)]),
        ("a) b]", [("a) b]", 1.0)]),
        ("(x:1.0) y", [("x y", 1.0)]),
        ("(b)(c)", [("bc", 1.1)]),
        ("(b) (c)", [("b", 1.1), (" ", 1.0), ("c", 1.1)]),
        ("time: 12:30", [("time: 12:30", 1.0)]),
    ],
)
def test_emphasis(text, expected):
    assert weights(text) == expected


def test_escaped_brackets_and_backslashes_are_text():
    assert weights(r"\(a\) \[b\] c\\d") == [(r"(a) [b] c\d", 1.0)]
    assert weights(r"(\(a\))") == [("(a)", 1.1)]
    assert weights("a\\b") == [("a\\b", 1.0)]


def test_ignore_mode_parses_but_weighs_nothing():
    assert weights("a (b:1.5) [c]", "ignore") == [("a b c", 1.0)]
    with pytest.raises(AiimgError, match="'loud'"):
        parse_emphasis("a", "loud")


def test_empty_text_is_one_empty_fragment():
    assert parse_emphasis("") == [Fragment("", 1.0)]


def test_break_is_an_uppercase_whole_word_and_eats_its_spaces():
    frags = parse_emphasis("a cat  BREAK  (a dog) break BREAKFAST")
    assert [(f.text, f.is_break) for f in frags] == [("a cat", False), ("", True), ("a dog", False),
                                                     (" break BREAKFAST", False)]  # fmt: skip


# -- scheduling ------------------------------------------------------------------------------


def test_nothing_scheduled_is_one_entry_with_the_text_as_is():
    assert prompts_for_steps("a (cat:1.2), [dog]", 20) == [(20, "a (cat:1.2), [dog]")]


@pytest.mark.parametrize(
    "text, steps, expected",
    [
        ("a [cat:dog:0.5]", 10, [(5, "a cat"), (10, "a dog")]),
        ("a [cat:dog:3]", 10, [(3, "a cat"), (10, "a dog")]),
        ("a [cat:dog: 3 ]", 10, [(3, "a cat"), (10, "a dog")]),
        ("a [dog:3]", 10, [(3, "a "), (10, "a dog")]),
        ("a [cat::3]", 10, [(3, "a cat"), (10, "a ")]),
        ("a [cat:dog:0.25]", 10, [(2, "a cat"), (10, "a dog")]),  # int(2.5)
        ("a [cat:dog:0]", 10, [(10, "a dog")]),
        ("a [cat:dog:50]", 10, [(10, "a cat")]),
        ("a [cat:dog:1]", 10, [(1, "a cat"), (10, "a dog")]),
        ("a [cat:dog:1.0]", 10, [(10, "a cat")]),  # a decimal point: a fraction of the steps
        ("a [cat|dog]", 4, [(1, "a cat"), (2, "a dog"), (3, "a cat"), (4, "a dog")]),
        ("[a|b|c]", 4, [(1, "a"), (2, "b"), (3, "c"), (4, "a")]),
        ("[a|]", 3, [(1, "a"), (2, ""), (3, "a")]),
        ("([cat:dog:2]:1.2)", 4, [(2, "(cat:1.2)"), (4, "(dog:1.2)")]),
        ("[[cat|dog]:bird:2]", 4, [(1, "cat"), (2, "dog"), (4, "bird")]),
    ],
)
def test_prompt_editing_and_alternation(text, steps, expected):
    assert prompts_for_steps(text, steps) == expected


@pytest.mark.parametrize("text", ["[a:b]", "[a:b:c]", "[a:b:1:2]", "[a|b:1]", "[a:b:1", "(a:b:1)", r"\[a:b:1\]"])
def test_brackets_that_are_not_a_schedule_stay_text(text):
    assert prompts_for_steps(text, 10) == [(10, text)]


def test_steps_must_be_a_positive_whole_number():
    for steps in (0, 2.5, True):
        with pytest.raises(AiimgError, match="steps"):
            prompts_for_steps("a", steps)


# -- chunks ---------------------------------------------------------------------------------------


def chunk(text: str, tokenizer) -> list:
    return chunk_fragments(parse_emphasis(text), tokenizer)


def words(word: str, n: int) -> str:
    return " ".join([word] * n)


def test_words_used_here_are_one_token_each(tok):
    for word in ("a", "b", ",", "cat"):
        assert len(token_ids(tok, word)) == 1
    assert len(token_ids(tok, words("a", 80))) == 80


def test_a_tokenizer_last_called_with_padding_does_not_pad_chunks():
    tok = clip_tokenizer()
    tok("a", padding="max_length", max_length=77)  # what diffusers and the tests do
    assert token_ids(tok, "a cat") == [320, 2368]
    assert token_ids(tok, words("a", 80)) == [320] * 80


def test_an_empty_prompt_is_one_chunk_of_padding(tok):
    (only,) = chunk("", tok)
    assert only.ids == (BOS, *[EOS] * 76) and only.length == 0 and only.weights == (1.0,) * 77
    (only,) = chunk("", clip_tokenizer("!"))
    assert only.ids == (BOS, EOS, *[0] * 75)


def test_a_chunk_is_bos_tokens_eos_then_padding(tok):
    (only,) = chunk("a photo of a cat", tok)
    assert only.ids == (BOS, 320, 1125, 539, 320, 2368, EOS, *[EOS] * 70) and only.eos_index == 6
    (bang,) = chunk("a photo of a cat", clip_tokenizer("!"))
    assert bang.ids == (BOS, 320, 1125, 539, 320, 2368, EOS, *[0] * 70)


@pytest.mark.parametrize("n, lengths", [(75, [75]), (76, [75, 1]), (150, [75, 75]), (151, [75, 75, 1])])
def test_75_tokens_a_chunk_and_none_dropped(tok, n, lengths):
    chunks = chunk(words("a", n), tok)
    assert [c.length for c in chunks] == lengths
    assert all(len(c.ids) == 77 and c.ids[0] == BOS for c in chunks)
    assert sum(c.ids[1 : 1 + c.length].count(320) for c in chunks) == n


@pytest.mark.parametrize(
    "before, after, lengths",
    [
        (60, 20, [61, 20]),  # comma 15 tokens from the end: the 15 after it move on
        (55, 25, [56, 25]),  # comma at position 55 of 0..74: the 20th from the end, still moves
        (54, 26, [75, 6]),  # the 21st from the end: too far back, the chunk is cut at 75
        (74, 6, [75, 6]),  # comma is the chunk's last token: nothing to move
    ],
)
def test_a_full_chunk_ends_after_a_comma_among_its_last_20_tokens(tok, before, after, lengths):
    chunks = chunk(words("a", before) + " , " + words("b", after), tok)
    assert [c.length for c in chunks] == lengths
    assert chunks[0].ids[1 + before] == 267  # the comma stays in the first chunk


def test_a_comma_that_arrives_at_a_full_chunk_starts_the_next(tok):
    chunks = chunk(words("a", 75) + " , b", tok)
    assert [c.length for c in chunks] == [75, 2] and chunks[1].ids[1] == 267


def test_no_backtrack_unless_the_chunk_overflows(tok):
    assert [c.length for c in chunk(words("a", 70) + " , " + words("b", 4), tok)] == [75]


@pytest.mark.parametrize(
    "text, lengths",
    [
        ("a BREAK b", [1, 1]),
        ("BREAK a", [0, 1]),
        ("a BREAK", [1]),
        ("a BREAK BREAK b", [1, 0, 1]),
        (words("a", 75) + " BREAK b", [75, 1]),
        ("a break b", [3]),
    ],
)
def test_break_pads_the_chunk(tok, text, lengths):
    assert [c.length for c in chunk(text, tok)] == lengths


def test_weights_follow_their_tokens_and_padding_weighs_one(tok):
    (only,) = chunk("(a:1.5) [b] cat", tok)
    assert only.weights[:5] == (1.0, 1.5, pytest.approx(1 / 1.1), 1.0, 1.0)
    assert set(only.weights[4:]) == {1.0}
    second = chunk(words("a", 75) + " (cat:0.5)", tok)[1]
    assert second.ids[1] == 2368 and second.weights[1] == 0.5


def test_an_embeddings_vectors_stay_in_one_chunk(tok):
    tok = clip_tokenizer()
    tok.add_tokens(["zqemb", "zqemb_1", "zqemb_2"])  # what load_textual_inversion registers
    ids = [tok.convert_tokens_to_ids(t) for t in ("zqemb", "zqemb_1", "zqemb_2")]
    chunks = chunk(words("a", 73) + " zqemb b", tok)  # 73 + 3 > 75
    assert [c.length for c in chunks] == [73, 4]
    assert list(chunks[1].ids[1:5]) == [*ids, 320 + 1]  # "b</w>" follows "a</w>"
    fits = chunk(words("a", 72) + " zqemb b", tok)
    assert [c.length for c in fits] == [75, 1] and list(fits[0].ids[73:76]) == ids


def test_a_spelled_out_embedding_is_not_expanded_twice(tok):
    tok = clip_tokenizer()
    tok.add_tokens(["zqemb", "zqemb_1"])
    (short,) = chunk("zqemb", tok)
    (spelled,) = chunk("zqemb zqemb_1", tok)
    assert short.ids == spelled.ids and short.length == 2


def test_an_embedding_longer_than_a_chunk_is_an_error():
    tok = clip_tokenizer()
    tok.add_tokens(["zqbig"] + [f"zqbig_{i}" for i in range(1, 80)])
    with pytest.raises(AiimgError, match="80 vectors"):
        chunk("zqbig", tok)


def test_token_count_reports_tokens_and_chunks(tok):
    count = token_count("a photo of a cat <lora:x:1>")
    assert (count.tokens, count.chunks, count.limit) == (5, 1, 75)
    long = token_count(words("a", 80))
    assert (long.tokens, long.chunks, long.limit) == (80, 2, 150)
    # the longest text of a schedule counts
    assert token_count("[a:" + words("b", 80) + ":2]", steps=4).chunks == 2
    assert token_count("a AND b", negative=True).tokens == 3
    with pytest.raises(AiimgError, match="AND"):
        token_count("a AND b")
