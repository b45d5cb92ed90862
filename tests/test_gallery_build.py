"""The gallery build: what it makes, incremental rebuilds, determinism, bad content, paths."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from gallery_fixtures import (
    add_work,
    art,
    cached_hashes,
    draft_recipe,
    make_content,
    recipes_of,
    run_cli,
    site_config,
    write_config,
)
from PIL import Image

from pipeline.content import Content
from pipeline.errors import AiimgError
from pipeline.gallery import build_site
from pipeline.gallery.output import MANIFEST, Output, manifest_files, read_manifest
from pipeline.metadata import png_bytes, read_png_parameters

ROOT = Path(__file__).resolve().parents[1]


def snapshot(out: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(out)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(out.rglob("*")) if p.is_file()
    }


def ids(tmp_path: Path) -> list[str]:
    return Content(tmp_path / "content").works()


@pytest.fixture
def site(tmp_path):
    make_content(tmp_path, 6)
    cfg = site_config(tmp_path)
    return cfg, build_site(cfg)


def test_first_build_makes_every_page_and_image(site, tmp_path):
    cfg, report = site
    out = cfg.output_dir
    assert report.works == 6 and report.problems == []
    assert report.images_made == 6 * 4 and report.images_reused == 0
    for rel in [
        "index.html",
        "tags/index.html",
        "tags/red/index.html",
        "feed.xml",
        "sitemap.xml",
        "robots.txt",
        "404.html",
        "favicon.svg",
        "favicon.ico",
        ".nojekyll",
        MANIFEST,
    ]:
        assert (out / rel).is_file(), rel
    assert not (out / "page").exists()  # 6 works, 4 a page: the first page holds up to 7
    for wid in ids(tmp_path):
        assert (out / "works" / wid / "index.html").is_file()
    summary = report.summary()
    assert "6 works: 6 built, 0 skipped as unchanged" in summary
    assert "images: 24 encoded, 0 skipped as unchanged" in summary
    assert "files: 25 written, 0 unchanged, 0 removed" in summary


def test_index_is_newest_first_with_sized_responsive_images(site, tmp_path):
    cfg, _ = site
    html = (cfg.output_dir / "index.html").read_text()
    linked = re.findall(r'class="tile" href="works/([^/]+)/"', html)
    assert linked == sorted(ids(tmp_path), reverse=True)
    imgs = re.findall(r"<img [^>]*>", html)
    assert len(imgs) == 6
    for img in imgs:
        width = re.search(r'width="(\d+)" height="120"', img)  # sized at the row height: no layout shift
        assert width, img
        one_x = rf"[^\" ]+-{width[1]}\.webp {width[1]}w"
        assert re.search(rf'srcset="{one_x}, [^" ]+\.webp \d+w"', img), img  # 1x and 2x WebP thumbnails


def test_work_page_has_lineage_prompts_parameters_and_links(site, tmp_path):
    cfg, _ = site
    wid = ids(tmp_path)[2]
    html = (cfg.output_dir / "works" / wid / "index.html").read_text()
    recipe = recipes_of(tmp_path / "content", wid)[0]
    assert html.count('class="variation"') == 3
    assert recipe["prompt"] in html and "lowres, bad anatomy" in html
    assert html.count('data-copy="') == 2
    for value in (
        str(recipe["seed"]),
        "tiny-sd",
        "3f0845323f",
        "0.5",
        "25",
        "7.0",
        f"{recipe['width']}×{recipe['height']}",
    ):
        assert value in html
    assert 'class="lineage-draft"' in html and "draft-" in html
    assert 'rel="prev"' in html and 'rel="next"' in html
    pngs = re.findall(r'href="\.\./\.\./(images/[^"]+\.png)" download', html)
    assert len(pngs) == 3
    assert read_png_parameters(cfg.output_dir / pngs[0]).startswith(recipe["prompt"])  # metadata kept by default


def test_absolute_urls_use_the_sub_path_base_url(site, tmp_path):
    cfg, _ = site
    html = (cfg.output_dir / "index.html").read_text()
    assert '<link rel="canonical" href="https://user.github.io/repo/">' in html
    assert re.search(r'<meta property="og:image" content="https://user.github.io/repo/images/[^"]+\.webp">', html)
    assert not re.search(r'(?:href|src)="/(?!/)', html)  # internal links are relative: any sub-path works
    assert 'href="/repo/"' in (cfg.output_dir / "404.html").read_text()  # 404 is served at any depth
    locs = re.findall(r"<loc>([^<]+)</loc>", (cfg.output_dir / "sitemap.xml").read_text())
    assert locs and all(u.startswith("https://user.github.io/repo/") for u in locs)
    assert "https://user.github.io/repo/works/" in "".join(locs)
    assert "Sitemap: https://user.github.io/repo/sitemap.xml" in (cfg.output_dir / "robots.txt").read_text()


def test_noop_rebuild_writes_nothing(site):
    cfg, _ = site
    before = snapshot(cfg.output_dir)
    report = build_site(cfg)
    assert (report.images_made, report.pages_written, report.removed) == (0, 0, [])
    assert report.images_reused == 24
    assert snapshot(cfg.output_dir) == before  # same bytes, same mtimes


def test_changed_source_is_reencoded_alone(site, tmp_path):
    cfg, _ = site
    wid = ids(tmp_path)[1]
    before = snapshot(cfg.output_dir)
    src = tmp_path / "content/works" / wid / "2.png"
    recipe = recipes_of(tmp_path / "content", wid)[1]
    src.write_bytes(png_bytes(art(recipe["width"], recipe["height"], 999), recipe))
    report = build_site(cfg)
    assert report.images_made == 1 and report.images_reused == 23
    gone = [rel for rel in before if rel not in snapshot(cfg.output_dir)]
    assert gone and all(rel.startswith(f"images/{wid}/2-") for rel in gone)
    assert set(report.removed) == set(gone)
    after = snapshot(cfg.output_dir)
    other = [r for r in before if r.startswith("images/") and f"/{wid}/2-" not in r]
    assert all(after[r] == before[r] for r in other)  # untouched: not even rewritten
    page, other_page = f"works/{wid}/index.html", f"works/{ids(tmp_path)[0]}/index.html"
    assert after[page][0] != before[page][0] and after[page][1] != before[page][1]
    assert after[other_page] == before[other_page] and after["index.html"] == before["index.html"]


def test_deleted_work_disappears_everywhere(site, tmp_path):
    cfg, _ = site
    gone = ids(tmp_path)[-1]  # the newest: on page 1, in the feed, in its tags
    shutil.rmtree(tmp_path / "content/works" / gone)
    report = build_site(cfg)
    out = cfg.output_dir
    assert report.works == 5 and report.removed
    assert not (out / "works" / gone).exists() and not (out / "images" / gone).exists()
    for rel in snapshot(out):
        if rel.endswith((".html", ".xml")):
            assert gone not in (out / rel).read_text(), rel
    assert (out / "index.html").read_text().count('class="tile"') == 5
    assert gone not in (out / MANIFEST).read_text()


def test_changed_setting_reencodes_and_cleans_up(site):
    cfg, _ = site
    old_images = {r for r in snapshot(cfg.output_dir) if r.startswith("images/") and r.endswith(".webp")}
    cfg2 = site_config(Path(cfg.root), webp_quality=60)
    report = build_site(cfg2)
    assert report.images_made == 24 and report.images_reused == 0
    new_images = {r for r in snapshot(cfg.output_dir) if r.startswith("images/") and r.endswith(".webp")}
    assert new_images and not (new_images & old_images)
    assert old_images <= set(report.removed)


def test_same_content_gives_byte_identical_output(tmp_path):
    for name in ("a", "b"):
        make_content(tmp_path / name, 3)
        build_site(site_config(tmp_path / name))
    a, b = snapshot(tmp_path / "a/output"), snapshot(tmp_path / "b/output")
    assert len(a) > 20 and a.keys() == b.keys()
    assert all(a[k][0] == b[k][0] for k in a)


def test_empty_content_gives_a_friendly_empty_gallery(tmp_path):
    cfg = site_config(tmp_path)
    report = build_site(cfg)
    html = (cfg.output_dir / "index.html").read_text()
    assert report.works == 0 and report.problems == []
    assert "No works yet." in html
    feed = ET.parse(cfg.output_dir / "feed.xml").getroot()
    assert feed.findall("{http://www.w3.org/2005/Atom}entry") == []
    ET.parse(cfg.output_dir / "sitemap.xml")


def test_lang_ja_translates_the_ui(tmp_path):
    make_content(tmp_path, 2)
    cfg = site_config(tmp_path, lang="ja")
    build_site(cfg)
    wid = ids(tmp_path)[0]
    html = (cfg.output_dir / "works" / wid / "index.html").read_text()
    assert html.startswith('<!doctype html>\n<html lang="ja">')
    assert "プロンプト" in html and "ネガティブプロンプト" in html and "2026年11月25日" in html
    assert 'xml:lang="ja"' in (cfg.output_dir / "feed.xml").read_text()


def test_work_toml_adds_title_and_tags(tmp_path):
    make_content(tmp_path, 2)
    wid = ids(tmp_path)[0]
    (tmp_path / "content/works" / wid / "work.toml").write_text('title = "Silver rain"\ntags = ["night", "夜景"]\n')
    cfg = site_config(tmp_path)
    build_site(cfg)
    html = (cfg.output_dir / "works" / wid / "index.html").read_text()
    assert "<title>Silver rain — Test gallery</title>" in html
    tags = (cfg.output_dir / "tags/index.html").read_text()
    assert 'href="../tags/night/"' in tags
    slug = re.search(r'href="\.\./tags/(t-[0-9a-f]{8})/">夜景', tags).group(1)
    assert wid in (cfg.output_dir / "tags" / slug / "index.html").read_text()


def test_strip_metadata_publishes_pngs_without_parameters(tmp_path):
    make_content(tmp_path, 1)
    cfg = site_config(tmp_path, strip_metadata=True)
    build_site(cfg)
    pngs = sorted(cfg.output_dir.glob("images/*/*.png"))
    assert len(pngs) == 4
    sources = {p.stem: p for p in (tmp_path / "content").rglob("*.png")}  # 1 2 3 draft
    for png in pngs:
        assert read_png_parameters(png) is None
        with Image.open(png) as im, Image.open(sources[png.stem.split("-")[0]]) as src:
            assert im.tobytes() == src.tobytes()  # the same pixels, only the chunk is gone


def test_avif_adds_picture_sources(tmp_path):
    make_content(tmp_path, 1)
    cfg = site_config(tmp_path, avif=True)
    build_site(cfg)
    html = (cfg.output_dir / "index.html").read_text()
    assert '<source type="image/avif" srcset="images/' in html
    avifs = sorted(cfg.output_dir.glob("images/*/*.avif"))
    webps = sorted(cfg.output_dir.glob("images/*/*.webp"))
    # 256x192 variations: 3 sizes each (the 2x thumb and the 2x display are both the full image),
    # the 204x153 draft: 2; every WebP has its AVIF twin
    assert len(avifs) == len(webps) == 3 * 3 + 2
    assert {p.with_suffix("") for p in avifs} == {p.with_suffix("") for p in webps}
    with Image.open(avifs[0]) as im:
        assert im.format == "AVIF"


def test_corrupt_and_missing_images_are_reported_and_skipped(tmp_path):
    make_content(tmp_path, 3)
    a, b, _ = ids(tmp_path)
    (tmp_path / f"content/works/{a}/3.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / f"content/works/{b}/2.png").unlink()
    cfg = site_config(tmp_path)
    report = build_site(cfg)
    joined = "\n".join(report.problems)
    assert f"works/{a}/3.png: cannot read image" in joined
    assert f"works/{b}/2.png: missing" in joined
    assert report.works == 3
    assert (cfg.output_dir / "works" / a / "index.html").read_text().count('class="variation"') == 2


def test_cli_strict_exits_non_zero_only_when_asked(tmp_path):
    make_content(tmp_path, 2)
    wid = ids(tmp_path)[0]
    (tmp_path / f"content/works/{wid}/1.png").write_bytes(b"garbage")
    (tmp_path / "aiimg.toml").write_text(
        '[site]\nbase_url = "https://x.example/g/"\nthumb_height = 100\nimage_width = 200\n'
    )
    aiimg = [sys.executable, "-m", "pipeline.cli", "--config", str(tmp_path / "aiimg.toml")]
    ok = subprocess.run([*aiimg, "build"], cwd=ROOT, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert f"{wid}/1.png: cannot read image" in ok.stdout and "images: 7 encoded" in ok.stdout
    strict = subprocess.run(
        [*aiimg, "build", "--strict", "--output", str(tmp_path / "other")], cwd=ROOT, capture_output=True, text=True
    )
    assert strict.returncode == 1 and "problem(s)" in strict.stderr
    assert (tmp_path / "other/index.html").is_file()  # built anyway


def test_build_never_imports_torch(tmp_path):
    make_content(tmp_path, 1)
    code = (
        "import sys; sys.path.insert(0, 'tests'); from gallery_fixtures import site_config; "
        "from pipeline.gallery import build_site; from pathlib import Path; "
        f"r = build_site(site_config(Path({str(tmp_path)!r}))); assert r.works == 1; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'diffusers', 'transformers')); "
        "print('heavy:', bad); assert not bad"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_no_user_text_becomes_a_path_outside_output(tmp_path):
    make_content(tmp_path, 2)
    wid = ids(tmp_path)[0]
    work_json = tmp_path / f"content/works/{wid}/work.json"
    data = json.loads(work_json.read_text())
    data["variations"][0]["file"] = "../../../../evil.png"
    work_json.write_text(json.dumps(data))
    (tmp_path / "content/works/..evil").mkdir()  # not an id: never listed
    (tmp_path / "content/works/..evil/work.json").write_text(json.dumps(data))
    cfg = site_config(tmp_path)
    report = build_site(cfg)
    assert any("bad variation file name '../../../../evil.png'" in p for p in report.problems)
    assert report.works == 1
    written = {p.resolve() for p in tmp_path.rglob("*") if p.is_file()} - {
        p.resolve() for p in (tmp_path / "content").rglob("*")
    }
    assert written and all(p.is_relative_to(cfg.output_dir.resolve()) for p in written)
    out = Output(cfg.output_dir)
    for bad in ("../x.html", "/etc/passwd", "a/../../x", "a\\..\\x", ""):
        with pytest.raises(AiimgError):
            out.write(bad, "x")


def test_hostile_tag_gets_a_safe_slug(tmp_path):
    add_work(tmp_path / "content", 0, picks=("../../../etc", "<b>x</b>"))
    cfg = site_config(tmp_path)
    build_site(cfg)
    slugs = sorted(p.name for p in (cfg.output_dir / "tags").iterdir() if p.is_dir())
    assert all(re.fullmatch(r"[a-z0-9-]+", s) for s in slugs) and len(slugs) == 2


def test_pages_follow_their_inputs_and_are_remade_when_deleted(site, tmp_path):
    cfg, _ = site
    newest = sorted(ids(tmp_path))[-1]
    (tmp_path / "content/works" / newest / "work.toml").write_text('title = "Renamed"\n')
    (cfg.output_dir / "tags/index.html").unlink()
    report = build_site(cfg)
    assert report.images_made == 0
    assert "<h1>Renamed</h1>" in (cfg.output_dir / "works" / newest / "index.html").read_text()
    assert "Renamed" in (cfg.output_dir / "index.html").read_text()  # the tile's caption
    tag = recipes_of(tmp_path / "content", newest)[0]["picks"][0]["value"]
    assert "Renamed" in (cfg.output_dir / "tags" / tag / "index.html").read_text()
    assert (cfg.output_dir / "tags/index.html").is_file()  # deleted by hand: made again
    # its page, the index (its tile), its two tag pages, the tags page (deleted), the feed
    assert report.pages_written == 6


def test_noop_build_stops_at_the_stamp_without_rendering(site, monkeypatch):
    cfg, first = site
    import pipeline.gallery.render as render

    monkeypatch.setattr(render, "render_site", lambda *a: pytest.fail("a no-op build rendered pages"))
    report = build_site(cfg)
    assert (report.works, report.images_reused, report.images_made, report.pages_written) == (6, 24, 0, 0)
    assert report.pages_unchanged == first.pages_written


def test_changed_draft_or_deleted_output_file_defeats_the_stamp(site, tmp_path):
    cfg, _ = site
    wid = ids(tmp_path)[0]
    draft = Content(tmp_path / "content").draft(wid)
    recipe = draft_recipe(tmp_path / "content", wid)
    draft.image.write_bytes(png_bytes(art(recipe["width"], recipe["height"], 4242), recipe))
    assert build_site(cfg).images_made == 1
    victim = next(cfg.output_dir.glob("images/*/*.webp"))
    victim.unlink()
    assert build_site(cfg).images_made == 1 and victim.is_file()


def test_problems_are_reported_by_every_build_until_fixed(tmp_path):
    make_content(tmp_path, 2)
    wid = ids(tmp_path)[0]
    (tmp_path / f"content/works/{wid}/2.png").write_bytes(b"broken")
    cfg = site_config(tmp_path)
    for _ in range(2):
        assert any(f"{wid}/2.png: cannot read image" in p for p in build_site(cfg).problems)


def test_originals_are_published_as_copies_never_hard_links(site, tmp_path):
    cfg, _ = site
    sources = {p.stat().st_ino for p in (tmp_path / "content").rglob("*.png")}
    published = sorted(cfg.output_dir.glob("images/*/*.png"))
    assert len(published) == 24 and not sources & {p.stat().st_ino for p in published}
    wid = ids(tmp_path)[0]
    src, copy = tmp_path / f"content/works/{wid}/1.png", next(cfg.output_dir.glob(f"images/{wid}/1-*.png"))
    before = src.read_bytes()
    assert copy.read_bytes() == before and src.stat().st_nlink == 1
    with open(copy, "r+b") as fh:  # what a PNG optimiser run over output/ does: rewrite in place
        fh.write(b"\x89PNG optimised")
    assert src.read_bytes() == before  # the creator's art is untouched


def test_clean_remakes_everything_and_trusts_no_cache(site, tmp_path, monkeypatch, capsys):
    cfg, first = site
    out = cfg.output_dir
    (out / "CNAME").write_text("gallery.example\n")  # the creator's own file
    manifest = manifest_files(read_manifest(out))
    good = snapshot(out)
    webp = next(out.glob("images/*/*.webp"))
    webp.write_bytes(b"damaged in place")  # same name: a normal build reuses it
    # the CNAME makes this build look at everything (output/ changed), yet it remakes nothing
    assert build_site(cfg).images_made == 0 and build_site(cfg).noop
    assert webp.read_bytes() == b"damaged in place"
    cache = Content(tmp_path / "content").gallery_cache_path()
    head, *lines = cache.read_text().splitlines()
    for i, line in enumerate(lines):  # every source's digest spoilt
        wid, sources = json.loads(line)
        sources["hashes"] = {k: [*v[:3], "0" * 64] for k, v in sources["hashes"].items()}
        lines[i] = json.dumps([wid, sources])
    cache.write_text("\n".join([head, *lines]) + "\n")
    removed = []
    real_unlink = Path.unlink
    monkeypatch.setattr(Path, "unlink", lambda p, *a, **k: removed.append(p) or real_unlink(p, *a, **k))
    code, said = run_cli(monkeypatch, capsys, "--config", str(write_config(tmp_path)), "build", "--clean")
    assert code == 0, said
    assert f"--clean: removed the {len(manifest)} files of the last build; rebuilt everything" in said
    assert "images: 24 encoded, 0 skipped as unchanged" in said
    assert {out / rel for rel in manifest} <= set(removed)  # removed first, then made again
    assert webp.read_bytes() == good[str(webp.relative_to(out))][0]
    after = snapshot(out)
    assert {k: v[0] for k, v in after.items()} == {k: v[0] for k, v in good.items()}  # the same site again
    assert (out / "CNAME").read_text() == "gallery.example\n"
    hashes = cached_hashes(tmp_path / "content")
    assert len(hashes) == 24 and "0" * 64 not in {v[3] for v in hashes.values()}  # hashed again


def test_the_report_says_what_was_skipped_and_why(site, tmp_path):
    cfg, first = site
    noop = build_site(cfg).summary()
    assert "nothing to do: content, settings and templates are as the last build left them" in noop
    assert "skipped 6 works, 24 images and 25 files as unchanged (aiimg build --clean rebuilds everything)" in noop
    wid = ids(tmp_path)[1]
    recipe = recipes_of(tmp_path / "content", wid)[1]
    (tmp_path / "content/works" / wid / "2.png").write_bytes(
        png_bytes(art(recipe["width"], recipe["height"], 5), recipe)
    )
    summary = build_site(cfg).summary()
    assert "6 works: 1 built, 5 skipped as unchanged" in summary
    assert "images: 1 encoded, 23 skipped as unchanged (same source and settings)" in summary
    assert "files: 1 written, 24 unchanged, 4 removed" in summary  # its page; its old image files


# -- works are self-contained: content/works alone is a whole gallery -------------------------


def test_content_works_alone_is_a_whole_gallery(tmp_path):
    for i in range(3):
        add_work(tmp_path / "content", i, in_work=True, in_drafts=False)
    assert sorted(p.name for p in (tmp_path / "content").iterdir()) == ["works"]
    cfg = site_config(tmp_path)
    report = build_site(cfg)
    assert report.problems == [] and report.works == 3 and report.images_made == 12
    for wid in ids(tmp_path):
        html = (cfg.output_dir / "works" / wid / "index.html").read_text()
        assert 'class="lineage-draft"' in html
        draft = next(cfg.output_dir.glob(f"images/{wid}/draft-*.png"))
        assert draft.read_bytes() == (tmp_path / f"content/works/{wid}/draft.png").read_bytes()
    assert build_site(cfg).noop


def test_an_older_work_reads_its_draft_from_drafts_until_it_holds_a_copy(site, tmp_path):
    cfg, _ = site  # works made before: their drafts are in content/drafts only
    content = Content(tmp_path / "content")
    for wid in content.works():
        content.copy_draft_into_work(wid)  # what the studio does now when a round begins
    report = build_site(cfg)
    assert not report.noop and report.problems == []  # the works changed: looked at again
    assert report.images_made == 0 and report.pages_written == 0  # the same drafts: nothing to remake
    hashed = cached_hashes(content.root)
    assert len(hashed) == 24 and not [p for p in hashed if "/drafts/" in p]  # the cache follows
    shutil.rmtree(content.drafts_dir)  # unseeded drafts are private: a published repository lacks them
    assert build_site(cfg).noop  # nothing the build reads is gone


def test_a_works_own_draft_wins_and_its_changes_count(tmp_path):
    add_work(tmp_path / "content", 0, in_work=True)  # the draft in both places
    cfg = site_config(tmp_path)
    build_site(cfg)
    wid = ids(tmp_path)[0]
    content = Content(tmp_path / "content")
    recipe = draft_recipe(tmp_path / "content", wid)
    content.draft(wid).image.write_bytes(png_bytes(art(recipe["width"], recipe["height"], 77), recipe))
    assert build_site(cfg).noop  # the studio's draft folder is not what the work shows
    own = content.work_draft_image(wid)
    own.write_bytes(png_bytes(art(recipe["width"], recipe["height"], 78), recipe))
    report = build_site(cfg)
    assert report.images_made == 1
    assert next(cfg.output_dir.glob(f"images/{wid}/draft-*.png")).read_bytes() == own.read_bytes()


def test_a_work_whose_draft_is_gone_everywhere_is_shown_without_it(tmp_path):
    add_work(tmp_path / "content", 0, in_work=False, in_drafts=False)
    cfg = site_config(tmp_path)
    report = build_site(cfg)
    wid = ids(tmp_path)[0]
    assert report.works == 1 and any(f"work {wid} shown without its draft" in p for p in report.problems)
    assert 'class="lineage-draft"' not in (cfg.output_dir / "works" / wid / "index.html").read_text()


def test_a_file_removed_right_after_a_build_is_seen_even_by_a_coarse_clock(site):
    """A folder written within stamp.RACY_NS of the stamp is compared by its names too: a file
    system whose mtimes tick in seconds could show no change to it."""
    cfg, _ = site
    victim = next(cfg.output_dir.glob("images/*/*.webp"))
    folder = victim.parent
    st = folder.stat()
    victim.unlink()
    os.utime(folder, ns=(st.st_atime_ns, st.st_mtime_ns))  # the folder's mtime as it was
    report = build_site(cfg)
    assert not report.noop and victim.is_file()


def test_unchanged_works_are_not_read_again(site, tmp_path, monkeypatch):
    cfg, _ = site
    content = Content(tmp_path / "content")
    changed = content.works()[2]
    (tmp_path / "content/works" / changed / "work.toml").write_text('title = "Edited"\n')
    read = []
    real = Content.read_work
    monkeypatch.setattr(Content, "read_work", lambda self, wid: read.append(wid) or real(self, wid))
    report = build_site(cfg)
    # the 5 others come from the cache: their folders list the same files. The changed one is read
    # to list it, then again for its page: recipes are not kept in memory meanwhile
    assert read == [changed, changed]
    assert "<h1>Edited</h1>" in (cfg.output_dir / "works" / changed / "index.html").read_text()
    assert report.pages_written and report.problems == []


def test_the_works_cache_is_not_trusted_for_another_content_folder(site, tmp_path):
    cfg, _ = site
    moved = tmp_path / "moved"
    shutil.copytree(tmp_path / "content", moved / "content")  # its cache names the old paths
    shutil.rmtree(tmp_path / "content")
    cfg2 = site_config(moved)
    report = build_site(cfg2)
    assert report.problems == [] and report.works == 6
    hashed = cached_hashes(moved / "content")
    assert hashed and all(path.startswith(str(moved)) for path in hashed)


def test_a_file_in_a_works_sub_folder_is_part_of_what_the_build_read(site, tmp_path):
    """works/<id>/finished/<n>.png: the finished copy of a variation belongs to its work."""
    cfg, _ = site
    finished = tmp_path / "content/works" / ids(tmp_path)[0] / "finished"
    finished.mkdir()
    (finished / "1.png").write_bytes(b"a finished copy")
    assert not build_site(cfg).noop
    assert build_site(cfg).noop
    (finished / "1.png").write_bytes(b"finished again")
    assert not build_site(cfg).noop
