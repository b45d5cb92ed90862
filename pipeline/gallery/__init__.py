"""The gallery: ``content/works`` -> ``output/``, a static site for any static host. No torch.

:func:`build_site` is the whole build, read top to bottom; each step lives in its own module
(stamp, collect, images, render, output). :func:`serve` previews the site and rebuilds on
change.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.content import Content, atomic_write_json
from pipeline.errors import AiimgError
from pipeline.gallery import stamp
from pipeline.gallery.collect import collect
from pipeline.gallery.output import Output, read_manifest, write_manifest

__all__ = ["build_site", "serve", "BuildReport"]


@dataclass
class BuildReport:
    output: Path
    works: int = 0
    images_made: int = 0
    images_reused: int = 0
    pages_written: int = 0
    pages_unchanged: int = 0
    removed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        made = self.images_made + self.pages_written
        reused = self.images_reused + self.pages_unchanged
        lines = [f"problem: {p}" for p in self.problems]
        lines += [
            f"removed {rel[: -len('index.html')]}"
            for rel in self.removed
            if rel.startswith("works/") and rel.endswith("/index.html")
        ]
        lines.append(
            f"{self.works} works: made {made}, reused {reused}, removed {len(self.removed)} "
            f"({self.images_made} images encoded, {self.images_reused} reused; "
            f"{self.pages_written} files written, {self.pages_unchanged} unchanged)"
        )
        lines.append(f"open {self.output / 'index.html'} (or preview it: aiimg serve)")
        return "\n".join(lines)


def build_site(cfg) -> BuildReport:
    """Build (or bring up to date) the site in cfg.output_dir; never raises for bad content."""
    previous = read_manifest(cfg.output_dir)
    out, content = Output(cfg.output_dir, previous["pages"]), Content(cfg.content_dir)
    report = BuildReport(out.root)
    # 0. nothing the last build read has changed and its output is all there: stop here
    works_rows = stamp.works_snapshot(content)
    last = stamp.unchanged(cfg, content, works_rows, previous)
    if last:
        return _nothing_to_do(report, last)
    from pipeline.gallery.images import encode_all  # Pillow and Jinja: only when building
    from pipeline.gallery.render import render_site

    # 1. read the works (and their drafts) from content/
    works = collect(content, report.problems)
    drafts = [str(w.draft.picture.src.parent.relative_to(content.root)) for w in works if w.draft]
    # 2. encode the images whose source or settings changed, in parallel; reuse the rest
    pictures = [v.picture for w in works for v in (*w.variations, *([w.draft] if w.draft else []))]
    hashes = read_hashes(content)
    images = encode_all(pictures, cfg.site, out, previous["sources"], hashes, report.problems)
    write_hashes(content, hashes, pictures)
    # 3. drop what could not be read: a work needs at least one readable variation
    works = _readable(works)
    # 4. render every page; only pages whose bytes changed are written
    render_site(works, cfg.site, out)
    # 5. delete what the last build made and this one did not, then record this build
    report.removed = out.remove_stale(previous["files"])
    write_manifest(out, images["sources"])
    report.works, report.images_made, report.images_reused = len(works), images["made"], images["reused"]
    report.pages_written, report.pages_unchanged = len(out.written), len(out.unchanged)
    # 6. remember what this build read, so that the next one can stop at step 0
    if report.problems:
        stamp.forget(content)  # the next build must report them again
    else:
        stamp.save(
            cfg,
            content,
            works_rows,
            drafts,
            {"works": report.works, "images": len(images["sources"]), "pages": len(out.written) + len(out.unchanged)},
        )
    return report


def _nothing_to_do(report: BuildReport, last: dict) -> BuildReport:
    report.works, report.images_reused = last.get("works", 0), last.get("images", 0)
    report.pages_unchanged = last.get("pages", 0)
    return report


def read_hashes(content: Content) -> dict:
    try:
        data = json.loads(content.gallery_cache_path().read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def write_hashes(content: Content, hashes: dict, pictures: list) -> None:
    """Keep the entries of today's sources only; a read-only content/ just means no cache."""
    keep = {str(p.src): hashes[str(p.src)] for p in pictures if str(p.src) in hashes}
    if keep == hashes and content.gallery_cache_path().is_file():
        return
    with contextlib.suppress(AiimgError, OSError):
        content.state_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(content.gallery_cache_path(), keep)


def _readable(works: list) -> list:
    kept = []
    for work in works:
        work.variations = [v for v in work.variations if v.picture.ok]
        if work.draft and not work.draft.picture.ok:
            work.draft = None
        if work.variations:
            kept.append(work)
    return kept


def serve(cfg) -> None:
    from pipeline.gallery.serve import serve as _serve

    _serve(cfg)
