import dataclasses
import re
import subprocess
import sys
import tomllib

import pytest

from pipeline import config, prompts
from pipeline.errors import ConfigError
from tests.conftest import ROOT, aiimg


def load_text(tmp_path, text):
    path = tmp_path / "a.toml"
    path.write_text(text)
    return config.load(path)


def problem(tmp_path, text) -> str:
    with pytest.raises(ConfigError) as err:
        load_text(tmp_path, text)
    return str(err.value)


def declared():
    """(section, name, Key) of every aiimg.toml key; section "" is the top level."""
    tables = {"": config.Config, **config.SECTIONS}
    return [(section, name, spec) for section, cls in tables.items() for name, spec in config.keys(cls).items()]


def test_defaults_without_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = config.load(None)
    assert cfg.draft.area == 640000 and cfg.variation.count == 3 and cfg.variation.areas == [1000000]
    assert cfg.content_dir == tmp_path / "content"


def test_paths_are_relative_to_the_file(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "aiimg.toml").write_text('content = "c"\n[draft]\nsteps = 3\n')
    cfg = config.load(tmp_path / "sub" / "aiimg.toml")
    assert cfg.content_dir == tmp_path / "sub" / "c" and cfg.draft.steps == 3


def test_unknown_key_names_file_section_and_key_and_suggests_the_closest(tmp_path):
    message = problem(tmp_path, "[draft]\nstepz = 3\n")
    assert message.startswith(f"{tmp_path / 'a.toml'}: [draft] unknown key 'stepz'")
    assert "did you mean 'steps'?" in message and "known keys: area, aspect, steps, guidance_scale" in message


def test_unknown_section_is_an_error_suggesting_the_section(tmp_path):
    assert "unknown key 'drafts'; did you mean '[draft]'?" in problem(tmp_path, "[drafts]\nsteps = 3\n")


def test_unknown_key_far_from_any_suggests_nothing(tmp_path):
    message = problem(tmp_path, "[site]\nzzzzzz = 1\n")
    assert "unknown key 'zzzzzz'" in message and "did you mean" not in message


@pytest.mark.parametrize(
    "body,match",
    [
        ('[draft]\nsteps = "ten"\n', r'\[draft\] steps = "ten" should be a int \(1\.\.1000;'),
        ("[variation]\nstrength = 1.5\n", r"\[variation\] strength = 1\.5 is out of range: expected 0\.01\.\.1 "),
        ('[draft]\naspect = ["2:x"]\n', r"""aspect = \["2:x"\] is not allowed \('2:x' is not a ratio"""),
        ("[draft]\naspect = []\n", r"aspect = \[\] is not allowed \(empty\)"),
        ('[site]\nlang = "fr"\n', r'\[site\] lang = "fr" is out of range: expected en \| ja'),
        (
            '[site]\nbase_url = "example.com/g/"\n',
            r'base_url = "example.com/g/" is not allowed \(not an absolute http',
        ),
        ('[model]\ndevice = "gpu"\n', r"device = \"gpu\" is out of range: expected auto \| cuda \| mps \| cpu"),
        ('[model]\nscheduler = "DPM++ 2M"\n', "not a class name"),
        ("[run]\nauto_seed = 1\n", r"auto_seed = 1 should be a bool \(true \| false;"),
        ("[draft]\nsteps = true\n", "steps = true should be a int"),
        ("draft = 3\n", r"\[draft\] must be a table, got 3"),
        ('content = ""\n', r'content = "" is not allowed \(empty\)'),
        ("[variation]\nareas = [1000000, 100]\n", r"areas = \[1000000, 100\] is out of range: .*each 4096\.\.16777216"),
        ("[variation]\nareas = [1000000.0]\n", r"areas = \[1000000\.0\] is out of range"),
    ],
)
def test_bad_values_name_file_key_value_and_the_allowed_range(tmp_path, body, match):
    message = problem(tmp_path, body)
    assert message.startswith(str(tmp_path / "a.toml") + ": ")
    assert len(message.splitlines()) == 1
    assert re.search(match, message), message


def test_rescan_seconds_zero_is_refused_because_the_loop_would_spin(tmp_path):
    message = problem(tmp_path, "[run]\nrescan_seconds = 0\n")
    assert "[run] rescan_seconds = 0 is out of range: expected 0.1..3600" in message


def test_thumb_height_zero_is_refused_before_the_build_divides_by_it(tmp_path):
    message = problem(tmp_path, "[site]\nthumb_height = 0\n")
    assert "[site] thumb_height = 0 is out of range: expected 16..2048" in message


@pytest.mark.parametrize("port", [-1, 65536])
def test_ports_must_be_ports(tmp_path, port):
    assert "serve_port" in problem(tmp_path, f"[site]\nserve_port = {port}\n")
    assert "review_port" in problem(tmp_path, f"[score]\nreview_port = {port}\n")


def test_port_zero_means_any_free_port_and_is_allowed(tmp_path):
    assert load_text(tmp_path, "[site]\nserve_port = 0\n").site.serve_port == 0


@pytest.mark.parametrize("section,name,spec", [d for d in declared() if d[2].min is not None or d[2].max is not None])
def test_every_bound_is_enforced_and_the_bound_itself_allowed(tmp_path, section, name, spec):
    table = f"[{section}]\n" if section else ""
    step = 1 if spec.kind is int else 0.001
    for bound, outside in ((spec.min, -step), (spec.max, step)):
        if bound is None:
            continue
        edge = spec.kind(bound)
        cfg = load_text(tmp_path, f"{table}{name} = {config._toml(edge)}\n")
        assert getattr(getattr(cfg, section) if section else cfg, name) == edge
        assert "out of range" in problem(tmp_path, f"{table}{name} = {config._toml(spec.kind(bound + outside))}\n")


def test_every_key_is_declared_with_a_type_doc_and_allowed_values():
    for section, name, spec in declared():
        cls = config.SECTIONS.get(section, config.Config)
        annotation = next(f.type for f in dataclasses.fields(cls) if f.name == name)
        assert annotation == spec.kind.__name__, f"[{section}] {name}: annotation {annotation} != default's type"
        assert spec.doc and spec.allowed_text(), f"[{section}] {name} undocumented"
        if spec.kind in (int, float):
            assert spec.min is not None, f"[{section}] {name}: a number without a lower bound"


def test_weights_typo_is_refused_at_load_naming_the_scorer_and_the_known_ones(tmp_path):
    message = problem(tmp_path, "[score]\nweights = { default = 1.0, aesthtic = 2.0 }\n")
    assert "[score] weights: unknown scorer 'aesthtic'; did you mean 'aesthetic'?" in message
    assert "known: default, aesthetic, preference" in message


def test_negative_weight_is_refused_and_good_weights_become_floats(tmp_path):
    assert "weights: preference = -1 is out of range: expected >= 0" in problem(
        tmp_path, "[score]\nweights = { preference = -1 }\n"
    )
    cfg = load_text(tmp_path, "[score]\nweights = { default = 2, aesthetic = 0 }\n")
    assert cfg.score.weights == {"default": 2.0, "aesthetic": 0.0}
    assert all(isinstance(w, float) for w in cfg.score.weights.values())


def test_all_problems_of_a_file_are_reported_together(tmp_path):
    body = '[run]\nrescan_seconds = 0\n[site]\nthumb_height = 0\nlang = "fr"\n[draft]\nstepz = 3\n'
    lines = problem(tmp_path, body).splitlines()
    source = str(tmp_path / "a.toml")
    assert lines[0] == f"{source}: 4 problems:"
    assert len(lines) == 5 and all(line.startswith(f"  {source}: ") for line in lines[1:])
    for needle in ("rescan_seconds = 0", "thumb_height = 0", 'lang = "fr"', "'stepz'"):
        assert sum(needle in line for line in lines[1:]) == 1, needle


def test_unreadable_toml_names_the_file(tmp_path):
    (tmp_path / "a.toml").write_text("[draft\n")
    with pytest.raises(ConfigError, match="a.toml: not valid TOML"):
        config.load(tmp_path / "a.toml")


def test_missing_file_given_explicitly_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="nope.toml: config file not found"):
        config.load(tmp_path / "nope.toml")


def test_ints_are_accepted_for_floats_and_configs_are_frozen(tmp_path):
    cfg = load_text(tmp_path, "[draft]\nguidance_scale = 7\n")
    assert cfg.draft.guidance_scale == 7.0 and isinstance(cfg.draft.guidance_scale, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.draft.steps = 1


def test_cli_overrides_win_and_none_leaves_the_value():
    cfg = config.override(config.Config(), model__id="some/model", content="/x", site__serve_port=None)
    assert (cfg.model.id, cfg.content, cfg.site.serve_port) == ("some/model", "/x", 8000)


def test_cli_overrides_are_checked_like_the_file():
    with pytest.raises(ConfigError, match=r"^command line: \[site\] serve_port = 70000 is out of range"):
        config.override(config.Config(), site__serve_port=70000)


# -- seed.txt --------------------------------------------------------------------------------


def test_seed_keys_come_from_the_declaration():
    assert set(config.SEED_KEYS) == {
        "count",
        "strength",
        "steps",
        "guidance_scale",
        "prompt",
        "negative_prompt",
        "by",
        "sampler",
        "schedule",
        "clip_skip",
    }
    assert "default: [variation] count" in config.SEED_KEYS["count"] and "1..100" in config.SEED_KEYS["count"]
    assert "default: [prompt] negative" in config.SEED_KEYS["negative_prompt"]


def test_seed_overrides_return_the_data_unchanged_when_fine():
    data = {"count": 5, "strength": 1, "steps": 40, "guidance_scale": 6.5, "prompt": "dusk", "by": "auto"}
    assert config.seed_overrides(data, "d/seed.txt") is data
    assert data["strength"] == 1 and isinstance(data["strength"], int)
    assert config.seed_overrides({}, "d/seed.txt") == {}


@pytest.mark.parametrize(
    "data,match",
    [
        ({"cnt": 3}, "d/seed.txt: unknown key 'cnt'; did you mean 'count'?"),
        ({"count": 0}, "d/seed.txt: count = 0 is out of range: expected 1..100"),
        ({"count": 101}, "count = 101 is out of range"),
        ({"count": True}, "count = true should be a int"),
        ({"strength": 2.0}, "strength = 2.0 is out of range: expected 0.01..1"),
        ({"strength": 0.001}, "strength = 0.001 is out of range"),
        ({"steps": 1001}, "steps = 1001 is out of range: expected 1..1000"),
        ({"guidance_scale": -1}, "guidance_scale = -1 is out of range: expected 0..100"),
        ({"prompt": 3}, "prompt = 3 should be a str"),
        ({"negative_prompt": ["a"]}, 'negative_prompt = ["a"] should be a str'),
    ],
)
def test_seed_overrides_name_file_key_value_and_range(data, match):
    with pytest.raises(ConfigError) as err:
        config.seed_overrides(data, "d/seed.txt")
    assert match in str(err.value)


def test_seed_overrides_report_every_problem_at_once():
    with pytest.raises(ConfigError) as err:
        config.seed_overrides({"cnt": 3, "strength": 2.0, "prompt": 3}, "d/seed.txt")
    lines = str(err.value).splitlines()
    assert lines[0] == "d/seed.txt: 3 problems:" and len(lines) == 4
    assert all(line.startswith("  d/seed.txt: ") for line in lines[1:])


# -- the documented aiimg.toml ---------------------------------------------------------------


def test_repo_aiimg_toml_is_the_documented_defaults():
    shipped = (ROOT / "aiimg.toml").read_text(encoding="utf-8")
    assert shipped == config.documented_toml(), (
        "aiimg.toml differs from what the declarations in pipeline/config.py render; regenerate it with "
        "`.venv/bin/aiimg config --defaults > aiimg.toml` and review the diff"
    )


def test_documented_toml_sets_every_key_to_its_default_and_documents_it():
    text = config.documented_toml()
    assert config.from_dict(tomllib.loads(text)) == config.Config()
    lines = text.splitlines()
    for section, name, spec in declared():
        i = lines.index(f"{name} = {config._toml(spec.default)}", lines.index(f"[{section}]") if section else 0)
        assert lines[i - 2] == f"# {spec.doc}" and lines[i - 1].startswith(f"# allowed: {spec.allowed_text()}")
    for name in config.SEED_KEYS:
        assert any(line.startswith(f"#   {name} ") for line in lines), f"seed key {name} undocumented"


def test_documented_toml_with_values_names_the_default():
    text = config.documented_toml({"draft": {"steps": 12}})
    assert tomllib.loads(text)["draft"]["steps"] == 12
    assert "# default: 25\nsteps = 12\n" in text


def test_config_defaults_command_prints_the_documented_toml(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "config", "--defaults"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0 and result.stdout == config.documented_toml()


def test_default_template_needs_no_wildcard_file(tmp_path):
    template = config.Config().prompt.template
    prompts.check(template, tmp_path / "prompts")
    assert "__" not in template


def test_cli_reports_config_errors_with_exit_1(tmp_path):
    (tmp_path / "a.toml").write_text("[model]\nidd = 1\n")
    result = aiimg(tmp_path / "a.toml", "status")
    assert result.returncode == 1
    assert "aiimg: error:" in result.stderr and "'idd'" in result.stderr and "Traceback" not in result.stderr


def test_samplers_and_schedules_are_checked_by_their_a1111_names():
    cfg = config.from_dict({"model": {"sampler": "DPM++ 2M Karras", "clip_skip": 2}})
    assert cfg.model.sampler == "DPM++ 2M Karras" and cfg.model.clip_skip == 2
    with pytest.raises(ConfigError) as err:
        config.from_dict({"model": {"sampler": "DPM++ 9M", "schedule": "Karrass", "clip_skip": 0}})
    text = str(err.value)
    assert "3 problems" in text and "'DPM++ 9M'" in text and "'Karrass'" in text and "clip_skip = 0" in text
    assert config.seed_overrides({"sampler": "Euler a", "clip_skip": 2}, "seed.txt") == {
        "sampler": "Euler a",
        "clip_skip": 2,
    }
    with pytest.raises(ConfigError, match="Eular"):
        config.seed_overrides({"sampler": "Eular a"}, "seed.txt")


def test_model_files_are_relative_to_the_config_file(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "art.safetensors").write_bytes(b"x")
    cfg = config.from_dict(
        {"model": {"id": "models/art.safetensors", "vae": "missing.safetensors"}}, root=str(tmp_path)
    )
    assert cfg.model.id == str(tmp_path / "models" / "art.safetensors")
    assert cfg.model.vae == "missing.safetensors"  # no such file there: left for the loader to report
    assert config.from_dict({"model": {"id": "org/some-repo"}}, root=str(tmp_path)).model.id == "org/some-repo"
