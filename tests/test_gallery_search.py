"""Search: the Pagefind index made by `aiimg build` (extra `search`) and the search page that
queries it in a real browser (Debian's chromium through Playwright), served over HTTP under a
sub-path as a static host serves it. Without the extra: no box, no page, no error."""

from __future__ import annotations

import dataclasses
import gzip
import json
import re
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote

import pytest
from gallery_fixtures import CHROMIUM, CHROMIUM_ARGS, add_work, make_content, site_config

from pipeline.files import atomic_write_json
from pipeline.gallery import build_site, render, search
from pipeline.gallery.output import manifest_files, read_manifest
from pipeline.gallery.serve import start_server

HOSTILE_PROMPT = 'masterpiece, <img src=x onerror="window.__pwned=1">, <b>paper</b> & crane'


@pytest.fixture(autouse=True)
def _pagefind_required():
    """Search is tested with the real binary: `make install` installs the `search` extra."""
    search.available.cache_clear()
    assert search.available(), "Pagefind is not installed: pip install -e '.[search]' (make install does)"
    yield
    search.available.cache_clear()


def set_negative(content_dir: Path, wid: str, negative: str) -> None:
    """Give every variation of a work this negative prompt (work.json as it is on disk)."""
    path = content_dir / "works" / wid / "work.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    for recipe in data["variations"]:
        recipe["negative_prompt"] = negative
    atomic_write_json(path, data)


def set_prompt(content_dir: Path, wid: str, prompt: str) -> None:
    path = content_dir / "works" / wid / "work.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    for recipe in data["variations"]:
        recipe["prompt"] = prompt
    atomic_write_json(path, data)


def add_tags(content_dir: Path, wid: str, tags: list[str]) -> None:
    (content_dir / "works" / wid / "work.toml").write_text(f"tags = {json.dumps(tags, ensure_ascii=False)}\n")


def indexed(out: Path) -> dict[str, dict]:
    """What the index holds: {work id: fragment} from Pagefind's gzipped fragment files."""
    found = {}
    for path in (out / "pagefind/fragment").glob("*.pf_fragment"):
        data = json.loads(gzip.decompress(path.read_bytes()).decode("utf-8").removeprefix("pagefind_dcd"))
        found[data["url"].strip("/").split("/")[-1]] = data
    return found


def snapshot(out: Path, under: str) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(out)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted((out / under).rglob("*"))
        if p.is_file()
    }


def count_runs(monkeypatch) -> list[int]:
    runs: list[int] = []
    real = search._run

    def run(*args):
        runs.append(1)
        return real(*args)

    monkeypatch.setattr(search, "_run", run)
    return runs


# -- the build -----------------------------------------------------------------------------


@pytest.fixture
def small(tmp_path):
    content = make_content(tmp_path, 3)
    set_negative(content, "20261125-150001-0001", "lowres, zebra")
    (content / "works/20261125-150001-0001/work.toml").write_text('description = "quiet harbour"\n')
    cfg = site_config(tmp_path)
    report = build_site(cfg)
    assert report.problems == []
    return cfg, report


def test_index_holds_title_tags_and_prompt_never_negative_prompt_or_parameters(small):
    cfg, _ = small
    out = cfg.output_dir
    fragments = indexed(out)
    assert sorted(fragments) == sorted(p.name for p in (out / "works").iterdir())
    one = fragments["20261125-150001-0001"]
    assert one["meta"]["title"] == "blue · armor"
    assert one["meta"]["prompt"] == "masterpiece, blue hair, armor, night city"
    assert "armor" in one["content"] and "night city" in one["content"] and "quiet harbour" in one["content"]
    for absent in ("zebra", "lowres", "Seed", "Steps", "Copy", "Nov 2026", "Denoising", "__outfit__"):
        assert absent not in one["content"], absent
    # the result's thumbnail: the cover's thumbnail, relative to the work page
    thumb = one["meta"]["image"]
    assert re.fullmatch(r"\.\./\.\./images/20261125-150001-0001/1-[0-9a-f]{12}-\d+\.webp", thumb)
    assert (out / "works/20261125-150001-0001" / thumb).resolve().is_file()
    assert one["meta"]["image_srcset"].count("w,") == 1 and one["meta"]["image_height"] == "120"


def test_every_page_has_the_box_and_the_index_is_in_the_manifest(small):
    cfg, _ = small
    out = cfg.output_dir
    pages = sorted(out.rglob("*.html"))
    assert len(pages) > 10
    for page in pages:
        html = page.read_text(encoding="utf-8")
        if page.parent.name == "search":  # the search page has its own, larger box
            assert 'id="search-q"' in html and 'id="site-search"' not in html
            assert '<meta name="robots" content="noindex">' in html
        else:
            assert html.count('role="search"') == 1 and 'action="' in html, page
    manifest = set(manifest_files(read_manifest(out)))
    bundle = {str(p.relative_to(out)) for p in (out / "pagefind").rglob("*") if p.is_file()}
    assert "pagefind/pagefind.js" in bundle and "pagefind/pagefind-entry.json" in bundle
    assert not any("pagefind-ui" in f or "playground" in f for f in bundle)  # Pagefind's own UI: not used
    assert bundle | {search.RECORD, "search/index.html"} <= manifest
    assert any(f.startswith("assets/search-") for f in manifest)
    assert "search/" not in (out / "sitemap.xml").read_text()


def test_a_noop_build_does_not_touch_the_index(small, monkeypatch):
    cfg, _ = small
    before = snapshot(cfg.output_dir, "pagefind")
    runs = count_runs(monkeypatch)
    assert build_site(cfg).noop
    (cfg.output_dir / "index.html").unlink()  # the build runs again, the work pages do not change
    report = build_site(cfg)
    assert not report.noop and report.pages_written == 1
    assert runs == [] and snapshot(cfg.output_dir, "pagefind") == before


def test_a_changed_prompt_remakes_the_index_and_drops_the_old_files(small, monkeypatch):
    cfg, _ = small
    out = cfg.output_dir
    wid = "20261125-150002-0002"
    old = {str(p.relative_to(out)) for p in (out / "pagefind").rglob("*") if p.is_file()}
    runs = count_runs(monkeypatch)
    set_prompt(out.parent / "content", wid, "masterpiece, origami crane, kimono")
    report = build_site(cfg)
    assert runs == [1] and report.problems == []
    assert "origami" in indexed(out)[wid]["content"]
    assert "silver hair" not in json.dumps(indexed(out), ensure_ascii=False)
    new = {str(p.relative_to(out)) for p in (out / "pagefind").rglob("*") if p.is_file()}
    stale = old - new
    assert stale and set(report.removed) >= stale  # the old fragment and index files are gone
    manifest = manifest_files(read_manifest(out))
    assert sorted(f for f in manifest if f.startswith("pagefind/")) == sorted(new)


def test_a_removed_work_leaves_the_index_at_the_same_build(small):
    """Pagefind reads the work pages on disk: the stale ones are removed before it runs."""
    cfg, _ = small
    out = cfg.output_dir
    gone = "20261125-150001-0001"
    shutil.rmtree(out.parent / "content/works" / gone)
    report = build_site(cfg)
    assert report.problems == [] and f"works/{gone}/index.html" in report.removed
    assert (
        sorted(indexed(out))
        == sorted(p.name for p in (out / "works").iterdir())
        == ["20261125-150000-0000", "20261125-150002-0002"]
    )
    entry = json.loads((out / "pagefind/pagefind-entry.json").read_text(encoding="utf-8"))
    assert entry["languages"]["en"]["page_count"] == 2
    assert build_site(cfg).noop


def test_an_index_file_deleted_by_hand_is_made_again(small, monkeypatch):
    cfg, _ = small
    victim = next((cfg.output_dir / "pagefind/fragment").iterdir())
    victim.unlink()
    runs = count_runs(monkeypatch)
    assert build_site(cfg).problems == []
    assert runs == [1] and victim.is_file()


def test_without_the_extra_no_box_no_page_no_error_and_the_old_index_goes(small, monkeypatch):
    cfg, _ = small
    out = cfg.output_dir
    for name in ("pagefind", "pagefind.service"):  # what `import pagefind` meets when it is not installed
        monkeypatch.setitem(sys.modules, name, None)
    search.available.cache_clear()
    assert search.available() is None and search.fingerprint() == ""
    report = build_site(cfg)  # installing or removing the extra is not a no-op build
    assert not report.noop and report.problems == []
    assert not (out / "pagefind").exists() and not (out / "search").exists() and not (out / search.RECORD).exists()
    assert not list(out.glob("assets/search-*"))
    for page in out.rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        assert 'role="search"' not in html and "pagefind" not in html, page
    assert "files: " in report.summary() and "removed" in report.summary()


def test_a_binary_that_does_not_run_counts_as_not_installed(monkeypatch):
    monkeypatch.setenv("PAGEFIND_BINARY_PATH", "/nonexistent/pagefind")
    search.available.cache_clear()
    assert search.available() is None


def test_pagefind_failing_is_a_problem_and_the_next_build_tries_again(tmp_path, monkeypatch):
    make_content(tmp_path, 2)
    cfg = site_config(tmp_path)
    broken = search.Pagefind(Path("/bin/false"), "pagefind 0.0.0")
    monkeypatch.setattr(search, "available", lambda: broken)
    report = build_site(cfg)
    assert len(report.problems) == 1 and "search index not made" in report.problems[0]
    assert report.works == 2 and (cfg.output_dir / "index.html").is_file()  # the site is built all the same
    monkeypatch.undo()
    search.available.cache_clear()
    report = build_site(cfg)
    assert report.problems == [] and indexed(cfg.output_dir)


def test_first_row_counts_the_tiles_of_the_widest_first_row():
    from pipeline.gallery.render import GAP_PX, ROW_PX, WIDEST_ROW_PX, first_row

    def works(*ratios):
        return [SimpleNamespace(cover_meta={"thumb": [["x", r * 100, 100]]}) for r in ratios]

    per_row = int((WIDEST_ROW_PX + GAP_PX) // (ROW_PX + GAP_PX))  # square tiles
    assert first_row(works(*[1.0] * 20)) == per_row == 5
    assert first_row(works(4.0, 4.0, 1.0)) == 1  # a panorama fills it
    assert first_row(works(9.0)) == 1  # at least one, however wide
    assert first_row(works(0.5, 0.5, 0.5)) == 3 and first_row([]) == 0


# -- the browser ---------------------------------------------------------------------------

EN = {  # id -> (prompt, picks, extra tags, negative prompt)
    0: ("masterpiece, paper lantern, night city", ("red", "kimono"), [], ""),
    1: ("masterpiece, 桜, river", ("blue", "armor"), [], ""),
    2: ("masterpiece, blue hair, armor", ("blue", "armor"), ["lantern festival", "桜"], ""),
    3: ("masterpiece, silver hair", ("silver", "kimono"), [], "lantern, 桜, lowres"),
    4: ("masterpiece, lanterns at dusk", ("black", "dress"), [], ""),
    5: (HOSTILE_PROMPT, ("red", "hoodie"), [], ""),
    6: ("桜の木の下で, kimono", ("blue", "kimono"), [], ""),
    7: ("masterpiece, sakura, spring", ("red", "dress"), [], ""),
}
JA = {  # lang = "ja": Japanese text is cut into words (pagefind[extended])
    0: ("満開の桜, kimono", ("red", "kimono"), [], ""),
    1: ("夜景, paper lantern", ("blue", "armor"), [], ""),
    2: ("masterpiece, river", ("silver", "kimono"), ["桜"], ""),
    3: ("masterpiece, 夜景", ("black", "dress"), [], "桜, lowres"),
}


def make_site(root: Path, works: dict, **site) -> tuple:
    content = root / "content"
    ids = {}
    for i, (prompt, picks, tags, negative) in works.items():
        ids[i] = add_work(content, i, prompt=prompt, picks=picks)
        if tags:
            add_tags(content, ids[i], tags)
        if negative:
            set_negative(content, ids[i], negative)
    (root / "www").mkdir()
    server = start_server(root / "www", 0, not_found=root / "www/repo/404.html")
    base = f"http://127.0.0.1:{server.server_address[1]}/repo/"
    cfg = dataclasses.replace(site_config(root, base_url=base, **site), output="www/repo")
    report = build_site(cfg)
    assert report.problems == [], report.problems
    return server, base, ids


@pytest.fixture(scope="module")
def en_site(tmp_path_factory):
    search.available.cache_clear()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(render, "SEARCH_BATCH", 2)  # "Show more" with a few works
        server, base, ids = make_site(tmp_path_factory.mktemp("search-en"), EN, page_size=6)
    yield base, ids
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def ja_site(tmp_path_factory):
    search.available.cache_clear()
    server, base, ids = make_site(tmp_path_factory.mktemp("search-ja"), JA, lang="ja")
    yield base, ids
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = context.new_page()
    pg.errors = []
    pg.on("console", lambda m: m.type == "error" and pg.errors.append(m.text))
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.on("response", lambda r: r.status >= 400 and pg.errors.append(f"{r.status} {r.url}"))
    yield pg
    context.close()


def results(pg, base: str) -> list[str]:
    """The work ids the search page lists once it has answered (all of them: "Show more" too)."""
    pg.wait_for_function("document.querySelector('.search-status').textContent !== ''", timeout=10_000)
    while pg.locator(".more-results").count():
        shown = pg.locator("#search-results li").count()
        pg.locator(".more-results").click()
        pg.wait_for_function(f"document.querySelectorAll('#search-results li').length > {shown}")
    hrefs = pg.eval_on_selector_all("#search-results a", "links => links.map(a => a.href)")
    assert all(h.startswith(base + "works/") for h in hrefs), hrefs
    return sorted(h[len(base + "works/") :].strip("/") for h in hrefs)


def expected(site: dict, ids: dict, word: str) -> list[str]:
    """The works whose prompt or tags contain the word (picks are tags too)."""
    return sorted(ids[i] for i, (prompt, picks, tags, _) in site.items() if word in " ".join([prompt, *picks, *tags]))


def test_an_english_word_from_the_box_on_the_index_finds_exactly_its_works(en_site, page):
    base, ids = en_site
    page.goto(base)
    page.fill("#site-search", "lantern")
    page.keyboard.press("Enter")
    page.wait_for_url(base + "search/?q=lantern")
    found = results(page, base)
    assert found == expected(EN, ids, "lantern") == sorted([ids[0], ids[2], ids[4]])  # not 3: a negative prompt
    assert page.locator(".search-status").inner_text() == "3 works match “lantern”."
    # each result shows its work's thumbnail, loaded from the site
    page.wait_for_function(
        "Array.from(document.querySelectorAll('#search-results img')).every(i => i.complete && i.naturalWidth > 0)"
    )
    assert page.locator("#search-results img").count() == 3
    assert page.errors == []


def test_results_come_a_batch_at_a_time(en_site, page):
    base, _ = en_site
    page.goto(base + "search/?q=lantern")
    page.wait_for_function("document.querySelector('.search-status').textContent !== ''")
    assert page.locator("#search-results li").count() == 2  # SEARCH_BATCH of the 3
    page.locator(".more-results").focus()
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelectorAll('#search-results li').length === 3")
    assert page.locator(".more-results").count() == 0
    assert page.evaluate("document.activeElement === document.querySelectorAll('#search-results a')[2]")
    assert page.errors == []


def test_a_japanese_word_finds_exactly_its_works(en_site, page):
    base, ids = en_site
    page.goto(base + "search/?q=" + quote("桜"))
    assert results(page, base) == expected(EN, ids, "桜") == sorted([ids[1], ids[2], ids[6]])
    assert page.errors == []


def test_japanese_text_is_cut_into_words_on_a_japanese_site(ja_site, page):
    base, ids = ja_site
    page.goto(base + "search/?q=" + quote("桜"))
    assert results(page, base) == expected(JA, ids, "桜") == sorted([ids[0], ids[2]])  # 満開の桜: mid-text
    assert page.locator(".search-status").inner_text() == "「桜」に一致する作品：2 件"
    page.fill("#search-q", "lantern")  # as you type
    page.wait_for_function("document.querySelector('.search-status').textContent.includes('lantern')")
    assert results(page, base) == [ids[1]]
    assert page.errors == []


def test_no_match_and_words_only_in_the_hidden_parts_find_nothing(en_site, page):
    base, _ = en_site
    for word in ("lowres", "outfit", "zebra"):  # negative prompt, template (generation data only), nothing
        page.goto(base + "search/?q=" + word)
        assert results(page, base) == [], word
        assert page.locator(".search-status").inner_text() == f"No work matches “{word}”."
    assert page.errors == []


def test_results_are_text_never_markup(en_site, page):
    base, ids = en_site
    page.goto(base + "search/?q=crane")
    assert results(page, base) == [ids[5]]
    prompt = page.locator("#search-results .result-prompt").inner_text()
    assert prompt == HOSTILE_PROMPT
    assert page.locator("#search-results b, #search-results script").count() == 0
    assert page.locator("#search-results img").count() == 1  # the thumbnail, not the prompt's <img>
    page.fill("#search-q", '<img src=x onerror="window.__pwned=1">')
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelector('.search-status').textContent.includes('onerror')")
    assert page.evaluate("window.__pwned") is None
    assert page.errors == []


def test_search_works_with_the_keyboard_alone(en_site, page):
    base, ids = en_site
    page.goto(base)
    for _ in range(10):  # the skip link, the brand, the menu, then the box
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "site-search":
            break
    assert page.evaluate("document.activeElement.id") == "site-search"
    page.keyboard.type("armor")
    page.keyboard.press("Enter")
    assert results(page, base) == expected(EN, ids, "armor") and len(expected(EN, ids, "armor")) == 2
    page.keyboard.press("ArrowDown")
    assert page.evaluate("document.activeElement.closest('#search-results li') !== null")
    first = page.evaluate("document.activeElement.href")
    page.keyboard.press("ArrowDown")
    second = page.evaluate("document.activeElement.href")
    assert second != first
    page.keyboard.press("ArrowUp")
    assert page.evaluate("document.activeElement.href") == first
    page.keyboard.press("Escape")
    assert page.evaluate("document.activeElement.id") == "search-q"
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    page.wait_for_url(first)
    assert page.errors == []


def test_without_javascript_the_search_page_says_it_needs_it(en_site, browser):
    base, _ = en_site
    context = browser.new_context(java_script_enabled=False)
    pg = context.new_page()
    pg.goto(base)
    pg.fill("#site-search", "lantern")
    pg.keyboard.press("Enter")
    pg.wait_for_url(base + "search/?q=lantern")
    assert "needs JavaScript" in pg.locator("main").inner_text()
    context.close()


def test_a_missing_index_is_said_not_thrown(en_site, browser, tmp_path):
    """The page opened where the index cannot load (here: a copy of the site without it)."""
    base, _ = en_site
    context = browser.new_context()
    pg = context.new_page()
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.route("**/pagefind/**", lambda route: route.abort())
    pg.goto(base + "search/?q=lantern")
    pg.wait_for_function("document.querySelector('.search-status').textContent !== ''")
    assert "not available" in pg.locator(".search-status").inner_text()
    assert errors == []
    context.close()
