"""The gallery: ``content/works`` -> ``output/``, a static site for any static host. No torch.

:func:`build_site` is the whole build, read top to bottom; each step lives in its own module
(stamp, collect, cache, images, render, search, output). :func:`serve` previews the site and
rebuilds on change.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.content import Content
from pipeline.files import clean_temp
from pipeline.gallery import cache, search, stamp
from pipeline.gallery.collect import collect, load
from pipeline.gallery.output import (
    SEARCH_FILES,
    SIZE_PARTS,
    Output,
    clean_debris,
    forget_manifest,
    manifest_files,
    read_manifest,
    remove,
    site_size,
    write_manifest,
)

__all__ = ["build_site", "serve", "BuildReport"]

log = logging.getLogger("aiimg.gallery")

NOOP_WHY = "content, settings and templates are as the last build left them, and its files are all there"
WARN_AT = 0.9  # of [site] max_size_mb: warn while there is still room to act
MB = 1_000_000  # GitHub Pages' "1 GB" is counted in decimal units: MB here are too


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
    size: dict[str, int] = field(default_factory=dict)  # bytes of output/ by part (SIZE_PARTS)
    max_size_mb: int = 0  # [site] max_size_mb; 0 = no limit

    @property
    def total_bytes(self) -> int:
        return sum(self.size.values())

    @property
    def over_budget(self) -> bool:
        return bool(self.max_size_mb) and self.total_bytes > self.max_size_mb * MB

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
        if self.size:
            lines.append(self.size_line())
        lines.append(f"open {self.output / 'index.html'} (or preview it: aiimg serve)")
        return "\n".join(lines)

    def size_line(self) -> str:
        """``site: 812.3 MB (81% of max_size_mb = 1000): originals 700.1 MB, ...``"""
        limit = self.max_size_mb * MB
        budget = f" ({self.total_bytes / limit:.0%} of max_size_mb = {self.max_size_mb})" if limit else ""
        return f"site: {_mb(self.total_bytes)}{budget}: {_parts(self.size)}"

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
    content = Content(cfg.content_dir)
    report = BuildReport(Path(cfg.output_dir), max_size_mb=cfg.site.max_size_mb)
    clean_temp(content.state_dir, depth=0)  # a killed build's temp files are not left beside the caches
    if clean:
        report.cleaned = _start_afresh(cfg.output_dir, content)
    # 0. nothing the last build read has changed and output/ is as it left it: stop here
    snapshot = stamp.works_snapshot(content)
    last = stamp.read(content)
    changes, seen = stamp.output_changes(cfg.output_dir, last)
    if stamp.unchanged(cfg, content, snapshot, last, changes):
        _nothing_to_do(report, last)
    else:
        stamp.forget(content)  # a build that stops half-way must not leave the last one's stamp
        # a killed build's temp files are removed before anything is published: a new file
        # changes its folder's mtime, so only the changed folders are looked into (all of
        # output/ when the last build left no record: killed, or with problems)
        known = set(last["folders"]) if changes is not None else set()
        clean_debris(cfg.output_dir, changes, known)
        # the folders as the last build left them hold all the files its manifest names there
        _build(cfg, content, snapshot, report, last, {"trusted": known - set(changes or ()), "seen": seen})
    _check_budget(cfg.site, report)
    return report


def _build(cfg, content: Content, snapshot: dict, report: BuildReport, last: dict | None, found: dict) -> None:
    """``found``: the folders of output/ as the build found them (stamp.output_changes): "seen",
    their states; "trusted", those as the last build left them."""
    from pipeline.gallery.images import encode_all, settings_text, workers  # Pillow and Jinja: only when building
    from pipeline.gallery.render import render_site

    out = Output(cfg.output_dir, read_manifest(cfg.output_dir))
    works_cache = cache.read(content)
    # the manifest and the works cache as the last build left them describe each other's works
    verified = stamp.left_as_is(last, {"manifest": out.previous["crc"], "cache": works_cache.crc})
    out.trust(found["trusted"] if verified else set())
    with workers() as pool:  # forked before the works are read: they do not keep a copy of them
        # 1. read the works (and their drafts) from content/, those that changed since the last build
        works = collect(content, report.problems, snapshot, works_cache.summaries())
        # 2. settle each work's images: taken whole, reused, or encoded in parallel
        images = encode_all(works, cfg.site, out, works_cache, report.problems, pool, verified)
    works_cache.save(settings_text(cfg.site))
    works = [w for w in works if w.record]  # a work needs at least one readable variation
    # 3. render every page whose inputs changed; only pages whose bytes changed are written
    render_site(works, cfg.site, out, functools.partial(load, content), report.problems)
    # 4. delete what the last build made and this one did not: first all but the search index
    # (a removed work's page must not be indexed), then the index's own stale files once it is
    # up to date; then record this build
    report.removed = out.remove_stale(but=SEARCH_FILES)
    report.problems += search.update_index(out)
    report.removed += out.remove_stale()
    manifest_bytes, manifest_crc = write_manifest(out)
    report.size = site_size(out, images["bytes"], manifest_bytes)
    written = set(out.written)
    updated = [w for w in works if f"works/{w.id}/index.html" in written or w.id in images["encoded"]]
    report.works, report.works_unchanged = len(works), len(works) - len(updated)
    report.images_made, report.images_reused = images["made"], images["reused"]
    report.pages_written, report.pages_unchanged = len(out.written), len(out.unchanged)
    # 5. remember what this build read and left, so that the next one can stop at step 0
    if not report.problems:  # one with problems leaves no stamp: the next build reports them again
        # the drafts/ folders read (works made before works held their draft), as they were
        # listed before their drafts were read; a work's own copy is in the works snapshot already
        drafts = {w.draft_id: w.listing.partition("\n\n")[2] for w in works if w.old_draft}
        counts = {
            "works": report.works,
            "images": images["made"] + images["reused"],
            "pages": len(written) + len(out.unchanged),
            "size": report.size,
        }
        left = {"manifest": manifest_crc, "cache": works_cache.crc}
        # a folder written to, or cleaned of a killed build's temp files, has a new state
        touched = out.touched | (set(found["seen"]) - found["trusted"])
        folders = {"folders": out.folders(), "seen": found["seen"], "touched": touched}
        stamp.save(cfg, content, snapshot, drafts, folders, left, counts)


def _start_afresh(root: Path, content: Content) -> int:
    """--clean: delete every file the last build made, its manifest and the gallery's caches."""
    removed = remove(root, manifest_files(read_manifest(root)))
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
    report.size = last.get("size") or {}
    return report


def _check_budget(site, report: BuildReport) -> None:
    """Warn (on every build, no-op ones too) from WARN_AT of [site] max_size_mb on, saying what
    takes the room and what to do; ``aiimg build --strict`` fails over the limit."""
    limit = site.max_size_mb * MB
    if not limit or report.total_bytes < WARN_AT * limit:
        return
    total, size = report.total_bytes, report.size
    where = (
        f"over [site] max_size_mb = {site.max_size_mb}"
        if report.over_budget
        else f"{total / limit:.0%} of [site] max_size_mb = {site.max_size_mb}"
    )
    log.warning(
        "%s is %s, %s (GitHub Pages publishes a site of at most 1 GB): %s. To make room: %s",
        report.output,
        _mb(total),
        where,
        _parts(size),
        _advice(site, size),
    )


def _advice(site, size: dict) -> str:
    originals = size.get("originals", 0)
    steps = {
        "png": [
            f'[site] originals = "webp" (lossless, about 40% smaller: ~{_mb(originals * 0.4)} less; the A1111 '
            f'parameters are kept) or "none" (no full-size files: {_mb(originals)} less)'
        ],
        "webp": [f'[site] originals = "none" (no full-size files: {_mb(originals)} less)'],
        "none": [],
    }[site.originals]
    if site.avif:
        steps.append("[site] avif = false")
    steps += ["publish fewer works (move some out of content/works)", "or raise max_size_mb if your host allows more"]
    return "; ".join(steps)


def _parts(size: dict) -> str:
    """``originals 700.1 MB, display images 60.2 MB, ...``: what takes the room (none that is empty)."""
    return ", ".join(f"{name} {_mb(size[name])}" for name in SIZE_PARTS if size.get(name))


def _mb(n: float) -> str:
    return f"{n / MB:,.1f} MB"


def serve(cfg) -> None:
    from pipeline.gallery.serve import serve as _serve

    _serve(cfg)
