"""Step 4b of the build: the search index, made by Pagefind from the work pages (extra ``search``).

Pagefind (PyPI ``pagefind``; ``pagefind[extended]`` also cuts Japanese and Chinese text into
words) reads the rendered work pages, only what they mark with ``data-pagefind-body`` (title,
tags, prompts; never the negative prompt or the parameters), and writes a static index that the
search page (``search/``) queries in the browser: no server, any static host. When it is not
installed (or its binary does not run), :func:`available` is None: no page shows a search box,
there is no search page, and nothing here runs.

Incremental: ``output/.aiimg-search.json`` records a key made of every work page's render key
(which covers everything the page shows) and Pagefind's version, and the files of the index.
Same key and the files all there: the index is kept as it is, Pagefind does not run. Otherwise
Pagefind writes a fresh index into a temporary folder outside output/, and its files are copied
into ``output/pagefind/`` only where their bytes differ (unchanged files keep their mtime),
content-addressed files first and the entry file last, so a visitor mid-build never loads an
entry that names a file not there yet. Every file is listed in the build manifest like the
pages, so the build's stale-file pass removes old fragments, and removes the whole index once
Pagefind is uninstalled.

The search step's files (the index, the search page, its module) are written by
``Output.write(..., counted=False)``: they are in the manifest and the size budget, while the
build's report counts the same pages with or without the extra; the index says what it did in
its own log line.

The build calls :func:`update_index` once the pages are rendered and the stale ones removed
(the index's own stale files are removed after it), and the build's stamp includes
:func:`fingerprint`, so that installing or removing the extra is not a no-op build.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pipeline.gallery.output import Output

log = logging.getLogger("aiimg.gallery")

BUNDLE = "pagefind"  # output/pagefind/: what the search page loads
RECORD = ".aiimg-search.json"  # beside the build manifest; in it too
FORMAT = 1
GLOB = "works/*/index.html"  # only work pages are results; the index and tag pages are lists of them
# Pagefind's own ready-made interfaces: the search page has its own (thumbnails, escaping, keys)
UNUSED = ("pagefind-ui.", "pagefind-modular-ui.", "pagefind-component-ui.", "pagefind-highlight.", "playground/")
LAST = ("pagefind.js", "pagefind-worker.js", "pagefind-entry.json")  # name the others: written after them
RUN_TIMEOUT_S = 900  # a hang must not hold a build (or CI) forever; 10,000 pages take seconds


@dataclass(frozen=True)
class Pagefind:
    binary: Path
    version: str  # "pagefind 1.5.2"


class SearchError(Exception):
    pass


@functools.cache
def available() -> Pagefind | None:
    """The Pagefind binary when the ``search`` extra is installed and it runs here, else None.
    Once a process: ``aiimg serve`` rebuilds many times."""
    try:
        from pagefind.service import get_executable
    except ImportError:
        return None
    try:
        binary = get_executable()
    except Exception as exc:  # pagefind_bin* raise FileNotFoundError; a future one may raise another
        log.debug("pagefind installed, but no binary: %s", exc)
        return None
    if binary is None:
        return None
    try:
        done = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30, env=_env())
    except (OSError, subprocess.SubprocessError) as exc:  # a wrong architecture, a missing file
        log.debug("pagefind binary %s does not run: %s", binary, exc)
        return None
    if done.returncode != 0 or not done.stdout.strip():
        log.debug("pagefind binary %s: exit %s %s", binary, done.returncode, done.stderr.strip())
        return None
    return Pagefind(Path(binary), done.stdout.strip())


def fingerprint() -> str:
    """What the pages depend on here: search on (with which Pagefind) or off. For the build's
    stamp, so that installing or removing the extra is not mistaken for a no-op build."""
    tool = available()
    return tool.version if tool else ""


def update_index(out: Output) -> list[str]:
    """Bring ``output/pagefind/`` up to date with the work pages just rendered into ``out``.
    Call it once every page is rendered and the stale pages are removed (Pagefind reads the
    work pages on disk: a removed work's must be gone), before the index's own stale files are
    (``out.remove_stale``: it keeps the files named here). Returns the problems
    (Pagefind failed: the pages have a search box but no index until a build succeeds)."""
    tool = available()
    if tool is None:
        return []
    pages = sorted((rel, key) for rel, key in out.pages.items() if rel.startswith("works/"))
    if not pages:  # no work, no search box (render.py): nothing to index, and Pagefind would fail
        return []
    key = hashlib.sha256(json.dumps([FORMAT, tool.version, GLOB, pages]).encode()).hexdigest()
    record, record_size = _read_record(out.root)
    if record.get("key") == key and all(out.exists(rel) for rel in record["files"]):
        for rel, size in [*record["files"].items(), (RECORD, record_size)]:
            out.keep(rel, size)  # the site's size budget counts the index too
        log.info("search: index unchanged (%d works)", len(pages))
        return []
    try:
        files = _run(tool, out.root)
    except SearchError as exc:
        return [f"{out.root / BUNDLE}: search index not made ({exc}); the search page finds nothing until it is"]
    written = sum(out.write(rel, data, counted=False) for rel, data in files)
    record = {"files": {rel: len(data) for rel, data in files}, "format": FORMAT, "key": key, "pagefind": tool.version}
    out.write(RECORD, (json.dumps(record, indent=1, sort_keys=True) + "\n").encode(), counted=False)
    log.info("search: indexed %d works with %s (%d index files written, %d unchanged)",
             len(pages), tool.version, written, len(files) - written)  # fmt: skip
    return []


def _run(tool: Pagefind, site: Path) -> list[tuple[str, bytes]]:
    """Pagefind over the work pages into a temporary folder; returns [(rel, bytes)] in the
    order they must be published."""
    with tempfile.TemporaryDirectory(prefix="aiimg-pagefind-") as tmp:
        bundle = Path(tmp) / BUNDLE
        cmd = [str(tool.binary), "--site", str(Path(site).resolve()), "--glob", GLOB]
        cmd += ["--output-path", str(bundle), "--silent"]
        try:
            # cwd: a pagefind.yml/.toml/.json where aiimg was started must not change the index
            done = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=_env())
        except (OSError, subprocess.SubprocessError) as exc:
            raise SearchError(f"{tool.binary}: {exc}") from exc
        if done.returncode != 0:
            said = (done.stderr or done.stdout).strip().splitlines()
            raise SearchError(f"{tool.version} exited {done.returncode}: {said[-1] if said else 'no message'}")
        found = sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file())
        if "pagefind-entry.json" not in found:
            raise SearchError(f"{tool.version} wrote no pagefind-entry.json")
        wanted = [rel for rel in found if not rel.startswith(UNUSED)]
        wanted.sort(key=lambda rel: (rel in LAST, LAST.index(rel) if rel in LAST else 0, rel))
        return [(f"{BUNDLE}/{rel}", (bundle / rel).read_bytes()) for rel in wanted]


def _env() -> dict[str, str]:
    """Pagefind reads PAGEFIND_* variables as options: only ours count."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PAGEFIND_")}


def _read_record(root: Path) -> tuple[dict, int]:
    """The last index's record and its size in bytes, or ({}, 0)."""
    try:
        text = (Path(root) / RECORD).read_bytes()
        data = json.loads(text)
    except (OSError, ValueError):
        return {}, 0
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("files"), dict):
        return {}, 0
    # an edited record must not make the build touch anything outside output/pagefind/
    for rel, size in data["files"].items():
        if not (rel.startswith(f"{BUNDLE}/") and ".." not in rel.split("/") and isinstance(size, int)):
            return {}, 0
    return data, len(text)
