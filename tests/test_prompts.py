import pytest

from pipeline import prompts
from pipeline.errors import AiimgError


@pytest.fixture
def wildcards(tmp_path):
    (tmp_path / "outfit.txt").write_text("red dress\nblue coat\n# not a choice\n")
    (tmp_path / "places").mkdir()
    (tmp_path / "places" / "city.txt").write_text("tokyo at night\nparis, rain\n")
    return tmp_path


TEMPLATE = "masterpiece, {red|blue|silver} hair, __outfit__, __places/city__, {2$$a|b|c}"


def test_same_seed_same_prompt_and_picks(wildcards):
    a = prompts.render(TEMPLATE, wildcards, 42)
    b = prompts.render(TEMPLATE, wildcards, 42)
    assert a == b
    assert a.text.startswith("masterpiece, ")


def test_picks_record_each_random_part(wildcards):
    p = prompts.render(TEMPLATE, wildcards, 5)
    tokens = [pick["token"] for pick in p.picks]
    assert tokens[:3] == ["{red|blue|silver}", "__outfit__", "__places/city__"]
    assert p.picks[0]["value"] in ("red", "blue", "silver")
    assert p.picks[1]["value"] in ("red dress", "blue coat")
    for pick in p.picks:
        assert pick["value"] in p.text


def test_seeds_vary_the_prompt(wildcards):
    assert len({prompts.render(TEMPLATE, wildcards, s).text for s in range(30)}) > 5


def test_comment_lines_are_never_chosen(wildcards):
    drawn = {prompts.render("__outfit__", wildcards, s).text for s in range(40)}
    assert drawn == {"red dress", "blue coat"}


def test_missing_wildcard_is_an_error_naming_it_and_the_file_to_create(wildcards):
    with pytest.raises(AiimgError) as err:
        prompts.render("a, __nope__", wildcards, 1)
    assert "__nope__" in str(err.value) and str(wildcards / "nope.txt") in str(err.value)


def test_missing_wildcard_inside_a_wildcard_file_is_caught_too(wildcards):
    (wildcards / "outer.txt").write_text("x __inner__\n")
    with pytest.raises(AiimgError, match="__inner__"):
        prompts.render("__outer__", wildcards, 1)


def test_template_that_does_not_parse_names_the_template(wildcards):
    with pytest.raises(AiimgError, match="does not parse"):
        prompts.render("a {b|c", wildcards, 1)


def test_japanese_text_passes_through(wildcards):
    p = prompts.render("傑作, {赤い|青い}髪", wildcards, 3)
    assert p.text.startswith("傑作, ") and p.picks[0]["value"] in ("赤い", "青い")


def test_hash_percent_dollar_and_slashes_are_text_in_the_template_and_the_picks(wildcards):
    template = "100% detail, #1 artist, $5, a // b /* c */ d, {50%|#2|$3}"
    values = set()
    for seed in range(20):
        p = prompts.render(template, wildcards, seed)
        assert p.text.startswith("100% detail, #1 artist, $5, a // b /* c */ d, ")
        assert p.picks[0]["token"] == "{50%|#2|$3}"
        values.add(p.picks[0]["value"])
        assert p.text.endswith(p.picks[0]["value"])
    assert values == {"50%", "#2", "$3"}


def test_picking_several_with_dollars_still_works(wildcards):
    for seed in range(10):
        two = prompts.render("{2$$a|b|c}", wildcards, seed).text.split(",")
        assert len(two) == 2 and len(set(two)) == 2 and set(two) <= {"a", "b", "c"}
        joined = prompts.render("x {2$$ and $$a|b|c}", wildcards, seed).text
        assert joined.startswith("x ") and len(joined[2:].split(" and ")) == 2


def test_wildcard_lines_keep_their_hash_percent_and_dollar(wildcards):
    (wildcards / "rank.txt").write_text("# a comment\nnumber #1 fan\n\\#2 at the start\n100% cotton, $3\n")
    drawn = {prompts.render("__rank__", wildcards, s).text for s in range(40)}
    assert drawn == {"number #1 fan", "#2 at the start", "100% cotton, $3"}
    p = prompts.render("__rank__", wildcards, 1)
    assert p.picks == [{"token": "__rank__", "value": p.text}]


def test_a1111_syntax_passes_through_exactly(wildcards):
    text = r"masterpiece, (red hair:1.2), [blue:green:0.5], \(artist\), [[x]], BREAK, <lora:name:0.6>, a AND b"
    assert prompts.render(text, wildcards, 1) == prompts.Prompt(text, 1, [])
    chosen = {prompts.render("{(red:1.2)|<lora:a:0.6>|\\[b\\]}", wildcards, s).text for s in range(30)}
    assert chosen == {"(red:1.2)", "<lora:a:0.6>", r"\[b\]"}


def test_backslash_makes_template_syntax_text(wildcards):
    assert prompts.render(r"\{a\|b\} \#1 \% \$", wildcards, 1) == prompts.Prompt("{a|b} #1 % $", 1, [])
    drawn = {prompts.render(r"{\$\$|free}", wildcards, s).text for s in range(20)}
    assert drawn == {"$$", "free"}


def test_a_parse_error_shows_the_escapes(wildcards):
    with pytest.raises(AiimgError) as err:
        prompts.render("50% {off", wildcards, 1)
    assert "'50% {off' does not parse" in str(err.value) and r"write \{ \} \|" in str(err.value)
    (wildcards / "broken.txt").write_text("a {b\n")
    with pytest.raises(AiimgError, match=r"a line drawn for __broken__ does not parse: .*write \\\{"):
        prompts.render("__broken__", wildcards, 1)
