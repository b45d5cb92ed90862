"""Shared fixtures: offline, one torch thread, content trees in tmp_path, the real tiny model."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent

# Small enough to keep the suite in minutes, large enough that latents are H/8 like real SD.
FAST_TOML = """
[prompt]
template = "masterpiece, {red|blue|silver} hair, __outfit__"
negative = "lowres"

[draft]
area = 65536
steps = 2

[variation]
areas = [102400]
steps = 2
strength = 0.5
min_steps = 1

[run]
rescan_seconds = 1.0

[score]
enabled = false
"""


def write_tree(root: Path, toml: str = FAST_TOML) -> Path:
    """A creator's folder: aiimg.toml + content/prompts/outfit.txt. Returns the config path."""
    (root / "content" / "prompts").mkdir(parents=True, exist_ok=True)
    (root / "content" / "prompts" / "outfit.txt").write_text("red dress\nblue coat\n# a comment\nwhite kimono\n")
    path = root / "aiimg.toml"
    path.write_text(textwrap.dedent(toml))
    return path


@pytest.fixture
def tree(tmp_path) -> Path:
    return write_tree(tmp_path)


@pytest.fixture
def cfg(tree):
    from pipeline import config

    return config.load(tree)


@pytest.fixture(scope="session")
def tiny():
    """The real tiny model, loaded once for the in-process tests."""
    import torch

    from pipeline import config, models

    torch.set_num_threads(1)
    return models.load(config.ModelConfig())


def aiimg(config_path: Path, *args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real `aiimg` command in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "--config", str(config_path), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def start(config_path: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "--config", str(config_path), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )


def wait_for(predicate, timeout: float = 120, what: str = "condition", proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited ({proc.returncode}) before {what}:\n{proc.stdout.read()}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def real_drafts(root: Path, tiny, count: int) -> list[str]:
    """``count`` drafts made in this process with the session's tiny model into root/content (an
    aiimg.toml written there): the quick way to have drafts for a test that seeds them."""
    from pipeline import config
    from pipeline.content import Content
    from pipeline.studio import Studio

    cfg = config.load(write_tree(root))
    studio = Studio(cfg, Content(cfg.content_dir).ensure(), model=tiny)
    try:
        studio.start()
        studio.run(max_drafts=count, once=True, only=set())
    finally:
        studio.close()
    return [d.id for d in studio.content.drafts()]


def bare_draft(content, draft_id: str) -> Path:
    """A draft folder with stand-in files: enough for markers and rounds, no model needed."""
    import json

    folder = content.draft_folder(draft_id)
    folder.mkdir(parents=True)
    (folder / "draft.png").write_bytes(b"png")
    (folder / "draft.json").write_text(json.dumps({"id": draft_id}))
    return folder
