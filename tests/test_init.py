"""`aiimg init`: a fresh folder that runs as it is, and never a user's file overwritten."""

import dataclasses
import json
import os
import subprocess
import sys

from pipeline import config, scaffold
from pipeline.content import Content

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TRANSFORMERS_VERBOSITY": "error"}


def aiimg_here(folder, *args, timeout=600) -> subprocess.CompletedProcess:
    """The real command with no --config: what a creator types in that folder."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        cwd=folder,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_init_then_run_works_in_an_empty_folder_with_no_other_step(tmp_path):
    init = aiimg_here(tmp_path, "init")
    assert init.returncode == 0, init.stderr
    assert "Next steps:" in init.stdout and "aiimg run" in init.stdout
    run = aiimg_here(tmp_path, "run", "--once", "--max-drafts", "2")
    assert run.returncode == 0, run.stdout + run.stderr
    drafts = Content(tmp_path / "content").drafts()
    assert len(drafts) == 2 and all(d.image.is_file() for d in drafts)
    recipe = json.loads(drafts[0].recipe_path.read_text())
    assert recipe["template"] == scaffold.TEMPLATE and "__" not in recipe["prompt"]


def test_init_twice_keeps_every_file_and_says_so(tmp_path):
    assert aiimg_here(tmp_path, "init").returncode == 0
    outfit = tmp_path / "content" / "prompts" / "outfit.txt"
    outfit.write_text("my own outfit\n")
    (tmp_path / ".gitignore").write_text("mine\n")
    again = aiimg_here(tmp_path, "init")
    assert again.returncode == 0, again.stderr
    assert "wrote" not in again.stdout
    for name in ("aiimg.toml", "content/prompts/outfit.txt", "content/prompts/background.txt", ".gitignore"):
        assert f"kept {name} (already there; not overwritten)" in again.stdout
    assert outfit.read_text() == "my own outfit\n" and (tmp_path / ".gitignore").read_text() == "mine\n"


def test_init_writes_a_documented_config_with_the_starter_template(tmp_path):
    report = scaffold.init(tmp_path / "new")
    root = tmp_path / "new"
    assert sorted(p.relative_to(root).as_posix() for p in report.written) == [
        ".gitignore",
        "aiimg.toml",
        "content/prompts/background.txt",
        "content/prompts/outfit.txt",
    ]
    text = (root / "aiimg.toml").read_text()
    assert text == config.documented_toml({"prompt": {"template": scaffold.TEMPLATE}})
    cfg = config.load(root / "aiimg.toml")
    assert cfg.prompt.template == scaffold.TEMPLATE
    as_default = config.override(cfg, prompt__template=config.Config().prompt.template)
    assert dataclasses.replace(as_default, root=".") == config.Config()
    for name, body in scaffold.STARTERS.items():
        assert f"__{name}__" in scaffold.TEMPLATE
        assert (root / "content" / "prompts" / f"{name}.txt").read_text() == body


def test_gitignore_keeps_drafts_state_and_site_private_but_not_works(tmp_path):
    scaffold.init(tmp_path)
    lines = (tmp_path / ".gitignore").read_text().splitlines()
    assert {"/output/", "/content/drafts/", "/content/.aiimg/"} <= set(lines)
    assert not any("works" in line for line in lines if not line.startswith("#"))


def test_init_follows_a_kept_config_that_moves_content(tmp_path):
    (tmp_path / "aiimg.toml").write_text('content = "art"\noutput = "/elsewhere/site"\n')
    report = scaffold.init(tmp_path)
    assert report.kept == [tmp_path / "aiimg.toml"]
    assert (tmp_path / "art" / "prompts" / "outfit.txt").is_file()
    assert not (tmp_path / "content").exists()
    lines = (tmp_path / ".gitignore").read_text().splitlines()
    assert "/art/drafts/" in lines and "/art/.aiimg/" in lines
    assert not any("elsewhere" in line for line in lines)  # outside the project: git cannot ignore it


def test_summary_says_where_to_cd_when_the_project_is_elsewhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "  cd sub" in scaffold.init("sub").summary()
    assert "  cd " not in scaffold.init(".").summary()
