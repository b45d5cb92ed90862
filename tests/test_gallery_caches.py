"""What a build keeps for the next one is data, never trusted blindly: the works cache
(content/.aiimg/gallery-hashes.json), the manifest (output/.aiimg-build.json), file names in a
work folder. A part that is damaged, edited by hand or of another shape is a miss (the work is
read again, the picture made again): never a crash, a work left out, a file read from elsewhere,
nor code loaded from content/.aiimg. And the site does not depend on where aiimg is installed."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from gallery_fixtures import add_work, art, site_config, work_id
from jinja2 import BytecodeCache, Environment, PackageLoader
from jinja2.bccache import bc_magic

import pipeline.gallery.render as render
import pipeline.gallery.stamp as stamp
from pipeline import metadata
from pipeline.content import Content
from pipeline.gallery import build_site
from pipeline.gallery.output import MANIFEST
from pipeline.gallery.search import RECORD


def add_works(root: Path, ids: range) -> Path:
    """Works of 2 variations, their drafts in content/drafts (works made before works held them)."""
    content = Path(root) / "content"
    for i in ids:
        add_work(content, i, variations=2)
    return content


def tree(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}


def build(root: Path, **kwargs):
    cfg = site_config(root, page_size=4)
    report = build_site(cfg, **kwargs)
    assert report.problems == []
    return cfg, report


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, bytes]:
    """Works 0, 1, 2 built from scratch: what every build of them must leave."""
    root = tmp_path_factory.mktemp("reference")
    add_works(root, range(3))
    cfg, _ = build(root)
    return tree(cfg.output_dir)


def edit_line(content: Path, wid: str, edit) -> None:
    """Give a work's own line in the works cache to ``edit(line) -> line``."""
    path = Content(content).gallery_cache_path()
    lines = path.read_bytes().split(b"\n")
    mine = b'["' + wid.encode() + b'"'
    path.write_bytes(b"\n".join(edit(line) if line.startswith(mine) else line for line in lines))


def reshaped(change):
    """An edit that gives the line's data to ``change(data) -> data``."""

    def edit(line: bytes) -> bytes:
        wid, data = json.loads(line)
        return json.dumps([wid, change(data)]).encode()

    return edit


BAD_LINES = {
    "cut short": lambda line: line[:60],
    "not an object": reshaped(lambda data: []),
    "a picture without its path": reshaped(lambda data: {**data, "pictures": [["1"]]}),
    "a path that is no text": reshaped(lambda data: {**data, "pictures": [["1", 7]]}),
    "a content key that is no text": reshaped(lambda data: {**data, "content": 5}),
    "a hash that is no list": reshaped(lambda data: {**data, "hashes": dict.fromkeys(data["hashes"], 5)}),
    "no picture": reshaped(lambda data: {**data, "pictures": []}),
    "its draft only": reshaped(lambda data: {**data, "pictures": data["pictures"][-1:]}),
    "its pictures out of order": reshaped(lambda data: {**data, "pictures": data["pictures"][::-1]}),
}


@pytest.mark.parametrize("bad", BAD_LINES)
def test_a_works_cache_line_not_as_the_build_writes_it_is_a_miss(tmp_path, reference, bad):
    content = add_works(tmp_path, range(2))
    build(tmp_path)
    edit_line(content, work_id(1), BAD_LINES[bad])
    add_works(tmp_path, range(2, 3))  # the next build runs
    cfg, report = build(tmp_path)
    assert report.works == 3 and tree(cfg.output_dir) == reference  # the work read again, never left out
    assert build(tmp_path)[1].noop


def test_damaged_hashes_in_a_works_cache_of_an_older_aiimg_are_a_miss(tmp_path, reference):
    content = Content(add_works(tmp_path, range(3)))
    hashes = {}
    for i, wid in enumerate(content.works()):
        src = content.variation_path(wid, "1.png")
        st = src.stat()  # the file as it is: only the entry's shape is wrong
        hashes[str(src)] = [st.st_size, st.st_mtime_ns, st.st_ino] if i else 5  # its digest left out; no list
    content.gallery_cache_path().parent.mkdir(parents=True, exist_ok=True)
    content.gallery_cache_path().write_text(json.dumps({"format": 2, "hashes": hashes}))
    cfg, report = build(tmp_path)
    assert report.works == 3 and tree(cfg.output_dir) == reference


@pytest.mark.parametrize("where", ["../private/secret.png", "drafts/2026-11-25/20261125-170000-0fff/draft.png", "own"])
def test_a_works_cache_line_never_makes_the_build_read_another_file(tmp_path, reference, where):
    """Only the paths Content gives a work's pictures are read: not a file outside content/, not
    an unseeded (private) draft, not another work's variation."""
    content = add_works(tmp_path, range(2))
    build(tmp_path)
    rel = f"works/{work_id(0)}/1.png" if where == "own" else where  # "own": work 0's variation
    secret = content / rel
    secret.parent.mkdir(parents=True, exist_ok=True)
    if where != "own":
        art(64, 64, 99).save(secret)

    def point_at_secret(data):
        data["pictures"][0][1] = rel
        return data

    edit_line(content, work_id(1), reshaped(point_at_secret))
    add_works(tmp_path, range(2, 3))
    cfg, _ = build(tmp_path)
    assert tree(cfg.output_dir) == reference
    assert secret.read_bytes() not in tree(cfg.output_dir / "images" / work_id(1)).values()


def test_file_names_with_a_tab_a_line_break_or_not_utf8_in_a_work_folder_are_no_trouble(tmp_path, reference):
    content = add_works(tmp_path, range(2))
    build(tmp_path)
    folder = content / "works" / work_id(1)
    (folder / "notes\tdraft.txt").write_text("my notes")
    (folder / "two\nlines.txt").write_text("my notes")
    (folder / "sub\tfolder").mkdir()
    (folder / "sub\tfolder" / "a.txt").write_text("my notes")
    (folder / "finished").mkdir()
    (folder / "finished" / "a\tb.png").write_text("not a picture")
    try:
        Path(os.fsdecode(os.fsencode(folder) + b"/notes-\xff.txt")).write_text("my notes")  # not UTF-8
    except (OSError, UnicodeError):  # a file system that takes UTF-8 names only
        pass
    add_works(tmp_path, range(2, 3))
    cfg, _ = build(tmp_path)
    assert tree(cfg.output_dir) == reference
    assert build(tmp_path)[1].noop
    build(tmp_path, clean=True)  # every work read, listed and hashed again
    assert tree(cfg.output_dir) == reference


def work_line(change):
    """An edit of the manifest: work 1's entries given to ``change(entries) -> entries``."""

    def edit(raw: bytes) -> bytes:
        lines = raw.split(b"\n")
        for i, line in enumerate(lines):
            if line.startswith(b'["' + work_id(1).encode()):
                wid, entries = json.loads(line)
                lines[i] = json.dumps([wid, change(entries)]).encode()
        return b"\n".join(lines)

    return edit


def meta(change):
    """An edit of the meta of work 1's first variation in the manifest (its keys as they were)."""
    return work_line(lambda entries: [[s, {**e, "meta": change(e["meta"])} if s == "1" else e] for s, e in entries])


def first_line(change):
    def edit(raw: bytes) -> bytes:
        head, _, rest = raw.partition(b"\n")
        return json.dumps(change(json.loads(head))).encode() + b"\n" + rest

    return edit


BAD_MANIFESTS = {
    "a line that is no list of pictures": work_line(lambda entries: 5),
    "thumbnails that are no list": meta(lambda m: {**m, "thumb": 5}),
    "a thumbnail without its size": meta(lambda m: {**m, "thumb": [["a", "b"]]}),
    "a width that is no number": meta(lambda m: {**m, "thumb": [[f, str(w), h] for f, w, h in m["thumb"]]}),
    "bytes of no part": meta(lambda m: {**m, "bytes": {"x": 1}}),
    "an original outside its folder": meta(lambda m: {**m, "original": "images/../../secret.png"}),
    "sizes that are no numbers": first_line(lambda head: {**head, "files": dict.fromkeys(head["files"], "x")}),
    "pages that are no object": first_line(lambda head: {**head, "pages": []}),
    "format 1 of another shape": lambda raw: b'{"format": 1, "sources": {"x": {}}, "files": [5]}',
}


@pytest.mark.parametrize("bad", BAD_MANIFESTS)
def test_a_damaged_manifest_is_as_good_as_none(tmp_path, reference, bad):
    add_works(tmp_path, range(2))
    cfg, _ = build(tmp_path)
    manifest = cfg.output_dir / MANIFEST
    manifest.write_bytes(BAD_MANIFESTS[bad](manifest.read_bytes()))
    before = tree(cfg.output_dir)
    add_works(tmp_path, range(2, 3))
    build(tmp_path)
    after = tree(cfg.output_dir)
    assert {rel: after.get(rel) for rel in reference} == reference
    assert set(after) - set(reference) <= set(before)  # files it no longer knows the last build made: left be
    assert build(tmp_path)[1].noop


def old_compiled_templates(content: Path, payload: bytes) -> Path:
    """content/.aiimg/gallery-templates/ as an older aiimg left it (Jinja's file names: a hash of
    each template's name and path), every file holding ``payload``."""
    folder = Content(content).state_dir / "gallery-templates"
    folder.mkdir(parents=True, exist_ok=True)
    env = Environment(loader=PackageLoader("pipeline", "site_templates"))
    for name in env.list_templates():
        _, filename, _ = env.loader.get_source(env, name)
        (folder / f"{BytecodeCache().get_cache_key(name, filename)}.bin").write_bytes(payload)
    return folder


class RunsCode:
    """A pickle that, loaded, makes a folder."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return os.mkdir, (str(self.path),)


@pytest.mark.parametrize("clean", [False, True])
@pytest.mark.parametrize("kind", ["damaged", "crafted"])
def test_compiled_templates_an_older_aiimg_kept_are_never_loaded(tmp_path, kind, clean):
    """Nothing in content/.aiimg is code: the templates are compiled by every build (docs/gallery.md:
    the folder an older aiimg kept them in is for the creator to delete)."""
    content = add_works(tmp_path, range(1))
    build(tmp_path)
    ran = tmp_path / "ran"
    payload = bc_magic + (b"\x00garbage" if kind == "damaged" else pickle.dumps(RunsCode(ran)))
    folder = old_compiled_templates(content, payload)
    left = tree(folder)
    state = Content(content).state_dir
    (state / ".gallery-stamp.json.999999-deadbeef.tmp").write_bytes(b"half")  # a killed build's
    add_works(tmp_path, range(1, 2))  # the next build runs
    build(tmp_path, clean=clean)
    assert not ran.exists() and tree(folder) == left  # neither loaded nor written
    # the gallery keeps files beside each other, no folder: a killed build's temp files are all found
    assert sorted(p.name for p in state.iterdir()) == ["gallery-hashes.json", "gallery-stamp.json", folder.name]


def test_the_templates_are_compiled_by_this_build_s_environment(tmp_path, monkeypatch):
    """An aiimg that sets Jinja up otherwise (an upgrade) renders with its own set-up, --clean or not."""
    for root in (tmp_path / "a", tmp_path / "b"):
        add_works(root, range(1))
    build(tmp_path / "a")
    real = render._environment

    def upgraded(site):
        env = real(site)
        env.lstrip_blocks = False  # before any template is loaded
        return env

    monkeypatch.setattr(render, "_environment", upgraded)
    a, _ = build(tmp_path / "a", clean=True)
    b, _ = build(tmp_path / "b")
    assert tree(a.output_dir) == tree(b.output_dir) != {}


def test_the_manifest_and_the_search_record_do_not_depend_on_where_aiimg_is_installed(tmp_path, monkeypatch):
    for root in (tmp_path / "a", tmp_path / "b"):
        add_works(root, range(2))
    a, _ = build(tmp_path / "a")
    elsewhere = tmp_path / "elsewhere"  # the same files, at another path
    shutil.copytree(Path(render.__file__).parents[1] / "site_templates", elsewhere / "site_templates")
    shutil.copy(metadata.__file__, elsewhere / "metadata.py")
    monkeypatch.setattr(stamp, "resources", SimpleNamespace(files=lambda package: elsewhere))
    monkeypatch.setattr(metadata, "__file__", str(elsewhere / "metadata.py"))
    b, _ = build(tmp_path / "b")
    for name in (MANIFEST, RECORD):
        assert (a.output_dir / name).read_bytes() == (b.output_dir / name).read_bytes(), name
