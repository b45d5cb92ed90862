import dataclasses
import re

import pytest

from pipeline import config
from pipeline.errors import ConfigError
from tests.conftest import ROOT, aiimg


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


def test_unknown_key_names_file_section_and_key(tmp_path):
    path = tmp_path / "aiimg.toml"
    path.write_text("[draft]\nstepz = 3\n")
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert str(path) in str(err.value) and "[draft]" in str(err.value) and "'stepz'" in str(err.value)


def test_unknown_section_is_an_error(tmp_path):
    (tmp_path / "a.toml").write_text("[drafts]\nsteps = 3\n")
    with pytest.raises(ConfigError, match="'drafts'"):
        config.load(tmp_path / "a.toml")


@pytest.mark.parametrize(
    "body,match",
    [
        ('[draft]\nsteps = "ten"\n', "steps = 'ten' should be a int"),
        ("[variation]\nstrength = 1.5\n", r"strength = 1.5 is out of range"),
        ('[draft]\naspect = ["2:x"]\n', "aspect"),
        ('[site]\nlang = "fr"\n', "lang"),
        ("[run]\nauto_seed = 1\n", "auto_seed = 1 should be a bool"),
        ("draft = 3\n", r"\[draft\] must be a table"),
    ],
)
def test_bad_values_name_key_and_value(tmp_path, body, match):
    (tmp_path / "a.toml").write_text(body)
    with pytest.raises(ConfigError, match=match):
        config.load(tmp_path / "a.toml")


def test_unreadable_toml_names_the_file(tmp_path):
    (tmp_path / "a.toml").write_text("[draft\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(tmp_path / "a.toml")


def test_missing_file_given_explicitly_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        config.load(tmp_path / "nope.toml")


def test_ints_are_accepted_for_floats_and_configs_are_frozen(tmp_path):
    (tmp_path / "a.toml").write_text("[draft]\nguidance_scale = 7\n")
    cfg = config.load(tmp_path / "a.toml")
    assert cfg.draft.guidance_scale == 7.0 and isinstance(cfg.draft.guidance_scale, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.draft.steps = 1


def test_cli_overrides_win():
    cfg = config.override(config.Config(), model__id="some/model", content="/x")
    assert cfg.model.id == "some/model" and cfg.content == "/x"


def test_root_aiimg_toml_documents_every_key_with_its_default():
    text = (ROOT / "aiimg.toml").read_text()
    shipped = config.load(ROOT / "aiimg.toml")
    assert dataclasses.replace(shipped, root=".") == config.Config()
    for name, cls in config.SECTIONS.items():
        assert f"[{name}]" in text
        for f in dataclasses.fields(cls):
            assert re.search(rf"^{f.name} = .+# \S", text, re.M), f"[{name}] {f.name} undocumented in aiimg.toml"


def test_cli_reports_config_errors_with_exit_1(tmp_path):
    (tmp_path / "a.toml").write_text("[model]\nidd = 1\n")
    result = aiimg(tmp_path / "a.toml", "status")
    assert result.returncode == 1
    assert "aiimg: error:" in result.stderr and "'idd'" in result.stderr and "Traceback" not in result.stderr
