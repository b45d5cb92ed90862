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

from pipeline.content import Content
from pipeline.files import clean_temp
from pipeline.gallery import stamp
from pipeline.gallery.collect import collect
from pipeline.gallery.output import Output, clean_debris, forget_manifest, read_manifest, write_manifest

__all__ = ["build_site", "serve", "BuildReport"]

NOOP_WHY = "content, settings and templates are as the last build left them, and its files are all there"


@dataclass
class BuildReport:
    output: Path
    works: int = 0
    works_unchanged: int = 0
    images_made: int = 0
    images_reused: int = 0
    pages_written: int = 0
    pages_unchanged: int = 0
    removed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    noop: bool = False  # stopped at the stamp: nothing read has changed
    cleaned: int | None = None  # --clean: how many files of the last build were removed first

    def summary(self) -> str:
        lines = [f"problem: {p}" for p in self.problems]
        if self.cleaned is not None:
            lines.append(f"--clean: removed the {self.cleaned} files of the last build; rebuilt everything")
        lines += [
            f"removed {rel[: -len('index.html')]}"
            for rel in self.removed
            if rel.startswith("works/") and rel.endswith("/index.html")
        ]
        lines += self._noop_lines() if self.noop else self._count_lines()
        lines.append(f"open {self.output / 'index.html'} (or preview it: aiimg serve)")
        return "\n".join(lines)

    def _noop_lines(self) -> list[str]:
        return [
            f"nothing to do: {NOOP_WHY}",
            f"skipped {self.works} works, {self.images_reused} images and {self.pages_unchanged} files as unchanged "
            f"(aiimg build --clean rebuilds everything)",
        ]

    def _count_lines(self) -> list[str]:
        return [
            f"{self.works} works: {self.works - self.works_unchanged} built, "
            f"{self.works_unchanged} skipped as unchanged",
            f"images: {self.images_made} encoded, {self.images_reused} skipped as unchanged (same source and settings)",
            f"files: {self.pages_written} written, {self.pages_unchanged} unchanged, {len(self.removed)} removed",
        ]


def build_site(cfg, clean: bool = False) -> BuildReport:
    """Build (or bring up to date) the site in cfg.output_dir; never raises for bad content
    (only AiimgError for what stops any build: a full disk, a folder it cannot write).
    ``clean``: remove what the last build made and rebuild everything, trusting no cache."""
    content, report = Content(cfg.content_dir), BuildReport(Path(cfg.output_dir))
    clean_debris(cfg.output_dir)  # a killed build's temp files are never published
    clean_temp(content.state_dir, depth=0)  # nor left beside the caches
    previous = read_manifest(cfg.output_dir)
    if clean:
        report.cleaned = _start_afresh(cfg.output_dir, previous["files"], content)
        previous = read_manifest(cfg.output_dir)
    # 0. nothing the last build read has changed and its output is all there: stop here
    works_rows = stamp.works_snapshot(content)
    last = stamp.unchanged(cfg, content, works_rows, previous)
    if last:
        return _nothing_to_do(report, last)
    stamp.forget(content)  # a build that stops half-way must not leave the last one's stamp
    _build(cfg, content, previous, works_rows, report, {} if clean else read_hashes(content))
    return report


def _build(cfg, content: Content, previous: dict, works_rows: list, report: BuildReport, hashes: dict) -> None:
    from pipeline.gallery.images import encode_all  # Pillow and Jinja: only when building
    from pipeline.gallery.render import render_site

    out = Output(cfg.output_dir, previous["pages"])
    # 1. read the works (and their drafts) from content/
    works = collect(content, report.problems)
    # 2. encode the images whose source or settings changed, in parallel; reuse the rest
    pictures = [p for w in works for p in w.pictures]
    images = encode_all(pictures, cfg.site, out, previous["sources"], hashes, report.problems)
    write_hashes(content, hashes, pictures)
    # 3. drop what could not be read: a work needs at least one readable variation
    works = _readable(works)
    # 4. render every page; only pages whose bytes changed are written
    render_site(works, cfg.site, out)
    # 5. delete what the last build made and this one did not, then record this build
    report.removed = out.remove_stale(previous["files"])
    write_manifest(out, images["sources"])
    written = set(out.written)
    encoded = images["encoded"]
    updated = [w for w in works if f"works/{w.id}/index.html" in written or any(p.slot in encoded for p in w.pictures)]
    report.works, report.works_unchanged = len(works), len(works) - len(updated)
    report.images_made, report.images_reused = images["made"], images["reused"]
    report.pages_written, report.pages_unchanged = len(out.written), len(out.unchanged)
    # 6. remember what this build read, so that the next one can stop at step 0
    if not report.problems:  # one with problems leaves no stamp: the next build reports them again
        drafts = [w.draft_id for w in works if w.draft]
        counts = {"works": report.works, "images": len(images["sources"]), "pages": len(written) + len(out.unchanged)}
        stamp.save(cfg, content, works_rows, drafts, counts)


def _start_afresh(root: Path, previous_files: list[str], content: Content) -> int:
    """--clean: delete every file the last build made, its manifest and the gallery's caches."""
    removed = Output(root).remove_stale(previous_files)
    forget_manifest(root)
    stamp.forget(content)
    with contextlib.suppress(FileNotFoundError):
        content.gallery_cache_path().unlink()
    return len(removed)


def _nothing_to_do(report: BuildReport, last: dict) -> BuildReport:
    report.noop = True
    report.works = report.works_unchanged = last.get("works", 0)
    report.images_reused = last.get("images", 0)
    report.pages_unchanged = last.get("pages", 0)
    return report


def read_hashes(content: Content) -> dict:
    try:
        data = json.loads(content.gallery_cache_path().read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def write_hashes(content: Content, hashes: dict, pictures: list) -> None:
    """Keep the entries of today's sources only."""
    keep = {str(p.src): hashes[str(p.src)] for p in pictures if str(p.src) in hashes}
    if keep == hashes and content.gallery_cache_path().is_file():
        return
    stamp.write_cache(content.gallery_cache_path(), keep)


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
