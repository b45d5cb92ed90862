"""The gallery at scale: a build after one more work touches O(1) pages and reads, parses and
hashes only what changed (bench/README.md, "Scale", measures it at 10,000 works)."""

from __future__ import annotations

import functools
import importlib
import json
import os
import re
from pathlib import Path

import pytest
from gallery_fixtures import FORMAT_1_MANIFEST, add_work, format_1_content, make_content, site_config

import pipeline.gallery.images as images
import pipeline.gallery.output as output
import pipeline.gallery.render as render
from pipeline.content import Content
from pipeline.gallery import build_site
from pipeline.gallery.output import MANIFEST, record_entries
from pipeline.gallery.render import list_pages

OWN_FILES = ("images/", "pagefind/", ".aiimg-search.json")  # a work's images, the search index


def files(out: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(out)): (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}


@pytest.mark.parametrize("size", [1, 2, 4])
def test_full_pages_are_numbered_from_the_oldest_and_never_change_when_works_are_added(size):
    before = None
    for total in range(0, 30):
        works = list(range(total - 1, -1, -1))  # newest first
        pages = list_pages(works, size)
        assert [w for _, chunk in pages for w in chunk] == works  # each work once, newest first
        first, rest = pages[0], pages[1:]
        assert first[0] == 0 and len(first[1]) == (total if total < size else len(first[1]))
        assert total < size or size <= len(first[1]) < 2 * size
        assert [n for n, _ in rest] == list(range(len(rest), 0, -1))  # numbered from the oldest
        assert all(len(chunk) == size for _, chunk in rest)
        if before is not None:  # one more work: every full page as it was
            assert all(dict(pages).get(n) == chunk for n, chunk in before[1:])
        before = pages


@pytest.fixture
def site(tmp_path):
    make_content(tmp_path, 10)  # 2 a page: the first page holds 2, then pages 4, 3, 2, 1
    cfg = site_config(tmp_path, page_size=2)
    assert build_site(cfg).problems == []
    return cfg


def test_adding_a_work_leaves_every_full_page_byte_identical(site, tmp_path):
    out = site.output_dir
    before = files(out)
    add_work(tmp_path / "content", 10)  # black, dress; the first page holds 3 now
    report = build_site(site)
    after = files(out)
    lists = [rel for rel in before if "page/" in rel]
    assert len(lists) >= 6  # page/1..4/, tags' pages
    assert all(after[rel] == before[rel] for rel in lists)  # same bytes, same mtime: not even rewritten
    new, older = Content(tmp_path / "content").works()[-1], Content(tmp_path / "content").works()[-2]
    changed = sorted(rel for rel in after if after[rel] != before.get(rel) and not rel.startswith(OWN_FILES))
    assert changed == sorted(
        [
            MANIFEST,
            "feed.xml",
            "index.html",
            "sitemap.xml",
            "tags/black/index.html",
            "tags/dress/index.html",
            "tags/index.html",
            f"works/{new}/index.html",
            f"works/{older}/index.html",  # it gains a "← Previous work" link
        ]
    )
    assert report.images_made == 4 and report.pages_written == len(changed) - 1  # the manifest is not a page
    assert (out / "pagefind").is_dir() and build_site(site).noop  # every folder it wrote to is known as written


def test_the_first_page_splits_when_it_would_hold_twice_page_size(site, tmp_path):
    out = site.output_dir
    add_work(tmp_path / "content", 10)
    build_site(site)
    before = files(out)
    add_work(tmp_path / "content", 11)  # 12 works, 2 a page: the first page's 4 become 2 + page 5
    build_site(site)
    after = files(out)
    assert "page/5/index.html" in after and "page/5/index.html" not in before
    first = (out / "index.html").read_text()
    assert first.count('class="tile"') == 2 and 'rel="next" href="page/5/"' in first
    page5 = (out / "page/5/index.html").read_text()
    assert page5.count('class="tile"') == 2 and 'rel="prev" href="../../"' in page5
    assert 'rel="next" href="../../page/4/"' in page5 and "Page 5" in page5
    # page 4 was the newest of the full pages: its "newer" link now leads to page 5, not the first
    assert after["page/4/index.html"][0] != before["page/4/index.html"][0]
    assert 'rel="prev" href="../../page/5/"' in (out / "page/4/index.html").read_text()
    assert all(after[f"page/{n}/index.html"] == before[f"page/{n}/index.html"] for n in (1, 2, 3))


def test_a_one_work_build_reads_hashes_and_parses_only_what_it_shows(tmp_path, monkeypatch):
    make_content(tmp_path, 12)
    cfg = site_config(tmp_path, page_size=2)
    monkeypatch.setattr(render, "FEED_SIZE", 3)
    build_site(cfg)
    oldest = Content(tmp_path / "content").works()[:6]  # on full pages only, in no feed entry
    add_work(tmp_path / "content", 12)  # red, kimono
    read, parsed, hashed = [], [], []
    real_read, real_parse, real_hash = Content.read_work, output.record_entries, images.hash_files
    monkeypatch.setattr(Content, "read_work", lambda self, wid: read.append(wid) or real_read(self, wid))
    counted = lambda line: parsed.append(output.line_id(line)) or real_parse(line)  # noqa: E731
    for module in (output, images, importlib.import_module("pipeline.gallery.collect")):  # each has its name
        monkeypatch.setattr(module, "record_entries", counted)
    monkeypatch.setattr(images, "hash_files", lambda paths, *a: hashed.extend(paths) or real_hash(paths, *a))
    report = build_site(cfg)
    *_, older, new = Content(tmp_path / "content").works()
    assert set(read) == {new, older}  # listed (the new one), and for their pages
    assert len(hashed) == 4 and all(f"/{new}/" in p for p in hashed)
    assert parsed and not set(parsed) & set(oldest)  # their lines are carried over unparsed
    assert report.images_made == 4 and report.images_reused == 48 and report.problems == []
    assert report.pages_written == 8  # the first page, two tags' first pages, tags/, 2 works, feed, sitemap


def test_the_manifest_keeps_unchanged_lines_as_they_were(site, tmp_path):
    manifest = site.output_dir / MANIFEST
    lines = manifest.read_text().splitlines()
    assert json.loads(lines[0])["format"] == 2 and len(lines) == 1 + 10
    add_work(tmp_path / "content", 10)
    build_site(site)
    after = manifest.read_text().splitlines()
    assert set(lines[1:]) < set(after[1:]) and len(after) == 1 + 11
    new = Content(tmp_path / "content").works()[-1]
    assert [stem for stem, _ in record_entries(after[-1].encode())] == ["1", "2", "3", "draft"] and new in after[-1]


def test_a_manifest_not_as_the_last_build_left_it_is_checked_work_by_work(site, tmp_path):
    """output/ restored from elsewhere (a CI cache) while content/.aiimg is current: the works
    cache must not vouch for the manifest's lines."""
    out = site.output_dir
    old = (out / MANIFEST).read_bytes()
    wid = Content(tmp_path / "content").works()[3]
    src = tmp_path / "content/works" / wid / "1.png"
    src.write_bytes((tmp_path / "content/works" / wid / "2.png").read_bytes())  # another picture
    assert build_site(site).images_made == 1
    (out / MANIFEST).unlink()  # replaced, as a restore does: its line names files removed since
    (out / MANIFEST).write_bytes(old)
    report = build_site(site)
    assert report.problems == [] and report.images_made == 1  # made again: not trusted blindly
    page = (out / "works" / wid / "index.html").read_text()
    shown = set(re.findall(rf"\.\./\.\./(images/{wid}/[^\" ,]+)", page))
    assert len(shown) > 8 and all((out / rel).is_file() for rel in shown)


def test_a_manifest_of_an_older_aiimg_is_read_and_nothing_is_encoded_again(tmp_path):
    """The manifest an older aiimg wrote (format 1: gallery_fixtures.FORMAT_1_MANIFEST) over the
    images it made, which are the ones this aiimg makes: same names, same bytes."""
    content = format_1_content(tmp_path)
    cfg = site_config(tmp_path, page_size=2)
    assert build_site(cfg).problems == []
    out = cfg.output_dir
    old = FORMAT_1_MANIFEST
    for slot, entry in json.loads(FORMAT_1_MANIFEST)["sources"].items():  # the keys of this Pillow
        _, wid, stem = slot.split("/")
        names = " ".join(p.name for p in (out / "images" / wid).iterdir())
        key = re.search(rf"\b{stem}-([0-9a-f]{{12}})-\d+\.webp", names).group(1)
        okey = re.search(rf"\b{stem}-([0-9a-f]{{12}})\.png", names).group(1)
        old = old.replace(entry["key"], key).replace(entry["original_key"], okey)
    (out / MANIFEST).unlink()
    (out / MANIFEST).write_text(old + "\n")
    Content(content).gallery_cache_path().unlink()
    images = {rel: data for rel, data in files(out).items() if rel.startswith("images/")}
    report = build_site(cfg)
    assert report.problems == [] and report.images_made == 0 and report.images_reused == 5 and report.removed == []
    assert {rel: data for rel, data in files(out).items() if rel.startswith("images/")} == images
    manifest = output.read_manifest(out)
    assert manifest["format"] == 2
    sources = {f"images/{wid}/{stem}": entry for wid, line in manifest["records"].items()
               for stem, entry in record_entries(line)}  # fmt: skip
    assert sources == json.loads(old)["sources"]  # every picture's entry carried over as it was
    assert build_site(cfg).noop


def test_a_file_removed_while_a_build_runs_is_made_again_by_the_next(site, tmp_path, monkeypatch):
    """A folder the build did not write to is recorded as the build found it, so a change made
    to it meanwhile is seen by the next build (not taken for the build's own)."""
    out = site.output_dir
    victim = next(out.glob("images/*/1-*.webp"))  # of a work this build takes whole
    add_work(tmp_path / "content", 10)
    real = render.render_site
    monkeypatch.setattr(render, "render_site", lambda *a: (victim.unlink(), real(*a)))
    assert build_site(site).problems == [] and not victim.exists()
    monkeypatch.setattr(render, "render_site", real)
    report = build_site(site)
    assert not report.noop and report.images_made == 1 and victim.is_file()
    assert build_site(site).noop


def test_a_work_edited_between_reading_and_rendering_its_page_waits_for_the_next_build(site, tmp_path, monkeypatch):
    """Its page is made of what the build read, or not at all: never a mix of old and new."""
    content = Content(tmp_path / "content")
    add_work(tmp_path / "content", 10)
    wid = content.works()[-1]
    retitle = functools.partial(content.work_meta_path(wid).write_text, 'title = "Renamed"\n', encoding="utf-8")
    real = render.render_site
    monkeypatch.setattr(render, "render_site", lambda *a: (retitle(), real(*a)))
    report = build_site(site)
    assert [p for p in report.problems if wid in p and "changed while the site was built" in p]
    assert not (site.output_dir / "works" / wid / "index.html").exists()
    monkeypatch.setattr(render, "render_site", real)
    assert build_site(site).problems == []
    assert "Renamed" in (site.output_dir / "works" / wid / "index.html").read_text(encoding="utf-8")
    assert build_site(site).noop


def set_seed(recipe: Path, seed: int) -> None:
    data = json.loads(recipe.read_text(encoding="utf-8"))
    recipe.write_text(json.dumps({**data, "seed": seed}), encoding="utf-8")


def test_an_older_work_s_draft_edited_while_a_build_runs_is_shown_by_the_next(tmp_path, monkeypatch):
    """The stamp holds the draft folders as the build listed them when it read the works, not as
    they are when it ends."""
    content = make_content(tmp_path, 2)  # works made before works held their draft: in content/drafts only
    cfg = site_config(tmp_path, page_size=4)
    build_site(cfg)
    wid = Content(content).works()[0]
    add_work(content, 2)  # the build runs; the older work's page is not made again
    real = render.render_site
    edit = functools.partial(set_seed, Content(content).draft(wid).recipe_path, 424242)
    monkeypatch.setattr(render, "render_site", lambda *a: (edit(), real(*a)))
    assert build_site(cfg).problems == []
    monkeypatch.setattr(render, "render_site", real)
    page = cfg.output_dir / "works" / wid / "index.html"
    assert "424242" not in page.read_text()
    report = build_site(cfg)
    assert not report.noop and "424242" in page.read_text()
    assert build_site(cfg).noop


def test_an_older_work_s_draft_edited_just_after_the_build_read_it_is_shown_by_the_next(tmp_path, monkeypatch):
    """A draft folder is listed before its draft is read: an edit made after shows in the listing."""
    content = make_content(tmp_path, 2)
    cfg = site_config(tmp_path, page_size=4)
    build_site(cfg)
    wid = Content(content).works()[0]
    draft = Content(content).draft(wid)
    os.utime(draft.image, ns=(1, 1))  # the work is read again; what its page shows is as it was
    real, edited = Content.read_draft, []

    def read_then_edit(self, draft_id):
        recipe = real(self, draft_id)
        if draft_id == wid and not edited:
            edited.append(set_seed(draft.recipe_path, 424242))
        return recipe

    monkeypatch.setattr(Content, "read_draft", read_then_edit)
    report = build_site(cfg)
    assert edited and report.problems == [] and report.pages_written == 0
    report = build_site(cfg)
    assert not report.noop and "424242" in (cfg.output_dir / "works" / wid / "index.html").read_text()
    assert build_site(cfg).noop
