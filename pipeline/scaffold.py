"""`aiimg init [DIR]`: a project folder that runs as it is, as `mkdocs new` or `sigal init` make.

Writes, and never overwrites a file that is there (it is kept, and the report says so):

    aiimg.toml                  every key with its doc and allowed values (config.documented_toml),
                                the defaults but for a starter template using the wildcards below
    <content>/prompts/*.txt     starter wildcard files: __outfit__, __background__
    .gitignore                  the rendered site and the private parts of content/: unseeded
                                drafts and aiimg's own state; works are what a repository publishes
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import config
from pipeline.content import Content
from pipeline.files import atomic_write_text

log = logging.getLogger("aiimg.scaffold")

STARTERS = {
    "outfit": "# one choice per line; __outfit__ in the template picks one\n"
    "red kimono\nsilver armor\nwhite summer dress\nblack leather jacket\nblue school uniform\n",
    "background": "# __background__\nneon city at night\ncherry blossom garden\nsnowy mountain pass\n"
    "sunlit library\nstormy sea cliff\n",
}
TEMPLATE = "masterpiece, best quality, {red|blue|silver|black} hair, __outfit__, __background__"


@dataclass
class InitReport:
    root: Path
    written: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)

    def files(self) -> list[str]:
        """A line per file: written, or kept because it was there."""
        lines = [f"wrote {self._show(p)}" for p in self.written]
        return lines + [f"kept {self._show(p)} (already there; not overwritten)" for p in self.kept]

    def summary(self) -> str:
        """The files, then what to do next."""
        go = [] if self.root.resolve() == Path.cwd().resolve() else [f"  cd {self.root}"]
        return "\n".join(
            [*self.files(), "", "Next steps:", *go]
            + [
                "  aiimg run      make drafts (built-in tiny model; set [model] id in aiimg.toml for yours)",
                "                 drop a seed.txt beside a good draft: its variations come next",
                "  aiimg build    render the works into a static site",
                "  aiimg --help   every command",
            ]
        )

    def _show(self, path: Path) -> str:
        try:
            return str(path.resolve().relative_to(self.root.resolve()))
        except ValueError:
            return str(path)


def init(root: str | Path = ".") -> InitReport:
    """Scaffold a project in ``root`` (created if missing); files already there are kept."""
    report = InitReport(Path(root))
    report.root.mkdir(parents=True, exist_ok=True)
    toml = report.root / "aiimg.toml"
    _write_new(toml, config.documented_toml({"prompt": {"template": TEMPLATE}}), report)
    # A kept aiimg.toml may put content/ elsewhere: the starters go where it says.
    cfg = config.load(toml)
    content = Content(cfg.content_dir)
    for name, text in STARTERS.items():
        _write_new(content.wildcard_path(name), text, report)
    _write_new(report.root / ".gitignore", gitignore(cfg, content), report)
    return report


IGNORED = (
    ("the rendered site (rebuilt from content/ at will)", lambda cfg, content: cfg.output_dir),
    ("unseeded drafts stay private; the works are what you publish", lambda cfg, content: content.drafts_dir),
    ("aiimg's lock, status, caches and logs", lambda cfg, content: content.state_dir),
)


def gitignore(cfg: config.Config, content: Content) -> str:
    """Ignore lines for what a repository of this project must not publish."""
    lines = ["# aiimg"]
    for why, folder in IGNORED:
        anchored = _anchored(cfg, folder(cfg, content))
        lines += [f"# {why}", anchored] if anchored else []
    return "\n".join(lines) + "\n"


def _anchored(cfg: config.Config, folder: Path) -> str:
    """``/rel/path/`` under the project root; "" for a folder outside it (git cannot ignore that)."""
    rel = Path(os.path.relpath(Path(folder).resolve(), Path(cfg.root).resolve()))
    return "" if rel.parts[:1] == ("..",) else f"/{rel.as_posix()}/"


def _write_new(path: Path, text: str, report: InitReport) -> None:
    # exists-then-write races only with someone creating the same file during `aiimg init`
    if os.path.lexists(path):
        report.kept.append(path)
        return
    atomic_write_text(path, text)
    report.written.append(path)
    log.debug("wrote %s", path)
