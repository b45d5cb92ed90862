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
    assert all("#" not in prompts.render("__outfit__", wildcards, s).text for s in range(40))


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
