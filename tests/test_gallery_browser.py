"""The built site in a real browser (Debian's chromium through Playwright), served over HTTP
under a sub-path, as a GitHub Pages project site is: http://127.0.0.1:<port>/repo/."""

from __future__ import annotations

import dataclasses
import html.parser
import json
import urllib.error
import urllib.request
from urllib.parse import urldefrag, urljoin, urlsplit

import pytest
from gallery_fixtures import CHROMIUM, CHROMIUM_ARGS, make_content, recipes_of, site_config

from pipeline.gallery import build_site
from pipeline.gallery.render import TAG_LIST_SIZE, TOP_TAGS
from pipeline.gallery.serve import start_server
from pipeline.metadata import a1111_parameters, read_png_parameters

pytestmark = pytest.mark.browser


def serve_site(root, **site):
    """Build root/content into root/www/repo/ and serve www/ (its 404 page for any missing
    path, as Pages does); returns (server, base URL)."""
    (root / "www").mkdir()
    server = start_server(root / "www", 0, not_found=root / "www/repo/404.html")
    base = f"http://127.0.0.1:{server.server_address[1]}/repo/"
    cfg = dataclasses.replace(site_config(root, base_url=base, **site), output="www/repo")
    assert build_site(cfg).problems == []
    return server, base


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    make_content(root, 6)
    server, base = serve_site(root, page_size=3)  # the first page: the 3 newest; page/1/: the 3 oldest
    yield base, root
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def site_url(site):
    return site[0]


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
    # an image the viewer moved past before it loaded is aborted by the browser: not an error
    pg.on("requestfailed", lambda r: "ERR_ABORTED" not in (r.failure or "") and pg.errors.append(f"failed {r.url}"))
    yield pg
    context.close()


def load_all_images(pg) -> list[dict]:
    """Scroll to the end (lazy images load), wait for every image; returns their sizes."""
    pg.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    shown = "Array.from(document.images).filter(i => !i.closest('.viewer'))"  # the viewer's is empty until opened
    pg.wait_for_function(f"{shown}.every(i => i.complete)", timeout=10_000)
    return pg.evaluate(f"{shown}.map(i => ({{src: i.currentSrc, w: i.naturalWidth}}))")


def test_index_loads_every_image_without_console_errors(site_url, page):
    page.goto(site_url)
    images = load_all_images(page)
    assert len(images) == 3
    assert all(i["w"] > 0 and i["src"].startswith(site_url + "images/") for i in images), images
    assert page.evaluate("document.documentElement.lang") == "en"
    assert page.errors == []


def test_viewer_opens_moves_with_arrows_and_closes(site_url, page):
    page.goto(site_url)
    viewer = page.locator(".viewer")
    assert viewer.is_hidden()
    page.locator(".tile").nth(1).click()
    assert viewer.is_visible() and viewer.get_attribute("data-index") == "1"
    first = page.locator(".viewer-stage img").get_attribute("src")
    page.keyboard.press("ArrowRight")
    assert viewer.get_attribute("data-index") == "2"
    assert page.locator(".viewer-stage img").get_attribute("src") != first
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    assert viewer.get_attribute("data-index") == "0"
    page.wait_for_function("document.querySelector('.viewer-stage img').naturalWidth > 0")
    page.keyboard.press("Escape")
    assert viewer.is_hidden()
    assert page.errors == []


def test_viewer_links_to_the_work_page(site_url, page):
    page.goto(site_url)
    href = page.locator(".tile").first.get_attribute("href")
    page.locator(".tile").first.click()
    page.locator(".viewer-caption a").click()
    page.wait_for_url(urljoin(site_url, href))
    assert page.locator("h1").inner_text() and page.locator(".variation").count() == 3
    page.locator(".variation a").first.click()  # on the work page the viewer shows the variations
    assert page.locator(".viewer").is_visible()
    page.keyboard.press("ArrowRight")
    assert page.locator(".viewer").get_attribute("data-index") == "1"
    assert page.errors == []


def test_without_javascript_a_click_opens_the_work_page(site_url, browser):
    context = browser.new_context(java_script_enabled=False)
    pg = context.new_page()
    pg.goto(site_url)
    href = pg.locator(".tile").first.get_attribute("href")
    pg.locator(".tile").first.click()
    pg.wait_for_url(urljoin(site_url, href))
    assert pg.locator(".viewer").is_hidden() and pg.locator(".copy").first.is_hidden()
    context.close()


def test_copy_button_copies_the_prompt(site_url, browser):
    context = browser.new_context(permissions=["clipboard-read", "clipboard-write"])
    pg = context.new_page()
    pg.goto(site_url + "works/20261125-150003-0003/")
    pg.locator(".copy").first.click()
    pg.wait_for_function("document.querySelector('.copy').textContent === 'Copied'")
    assert pg.evaluate("navigator.clipboard.readText()") == pg.locator("#prompt-1").inner_text()
    context.close()


WORK = "20261125-150003-0003"


def test_copy_generation_data_copies_the_whole_a1111_infotext(site, browser):
    base, root = site
    recipe = recipes_of(root / "content", WORK)[1]  # variation 2
    expected = a1111_parameters(recipe)
    assert expected == read_png_parameters(root / "content/works" / WORK / "2.png")  # what A1111 reads from the PNG
    assert "\nNegative prompt: " in expected and "\nSteps: " in expected
    context = browser.new_context(permissions=["clipboard-read", "clipboard-write"])
    pg = context.new_page()
    pg.goto(base + f"works/{WORK}/")
    buttons = pg.locator("[data-infotext]")
    assert buttons.count() == 3 and buttons.nth(1).is_visible()
    assert pg.locator("details.gen-data pre").nth(1).is_hidden()  # closed until asked: the page stays calm
    buttons.nth(1).click()
    pg.wait_for_function("document.querySelectorAll('[data-infotext]')[1].textContent.startsWith('Copied')")
    assert pg.evaluate("navigator.clipboard.readText()") == expected
    pg.wait_for_function("document.querySelectorAll('[data-infotext]')[1].textContent.startsWith('Copy generation')")
    # the label comes back, with its part for screen readers (which variation)
    assert pg.evaluate("document.querySelectorAll('[data-infotext]')[1].textContent") == (
        "Copy generation data · Variation 2"
    )
    context.close()


def test_generation_data_without_javascript_is_a_details_block(site, browser):
    base, root = site
    context = browser.new_context(java_script_enabled=False)
    pg = context.new_page()
    pg.goto(base + f"works/{WORK}/")
    assert pg.locator("[data-infotext]").first.is_hidden()  # a button that cannot work is not shown
    summary = pg.locator("details.gen-data summary").nth(2)
    assert summary.is_visible() and summary.inner_text().startswith("Variation 3")
    summary.click()
    text = pg.locator("details.gen-data pre").nth(2)
    assert text.is_visible()
    assert pg.evaluate("document.querySelectorAll('details.gen-data pre')[2].textContent") == a1111_parameters(
        recipes_of(root / "content", WORK)[2]
    )
    context.close()


@pytest.fixture(scope="module")
def wide_site(tmp_path_factory):
    """20 works, 7 a page, all tagged "series": a first page of 13 (more than a row), then page
    1 (the 7 oldest); the tag's pages alike."""
    root = tmp_path_factory.mktemp("wide")
    content = make_content(root, 20)
    for folder in (content / "works").iterdir():
        (folder / "work.toml").write_text('tags = ["series"]\n')
    server, base = serve_site(root, page_size=7)
    yield base
    server.shutdown()
    server.server_close()


def tiles(pg) -> list[dict]:
    return pg.eval_on_selector_all(
        ".grid .tile img",
        """imgs => imgs.map(i => ({top: Math.round(i.closest('.tile').getBoundingClientRect().top),
                                   lazy: i.getAttribute('loading'), priority: i.getAttribute('fetchpriority')}))""",
    )


@pytest.mark.parametrize("path", ["", "tags/series/"])
def test_the_first_row_loads_first_and_the_rest_lazily(wide_site, browser, path):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = context.new_page()
    pg.goto(wide_site + path)
    shown = tiles(pg)
    assert len(shown) == 13
    first_row = [t for t in shown if t["top"] == shown[0]["top"]]
    assert 1 < len(first_row) < 13
    assert all(t["priority"] == "high" and t["lazy"] is None for t in first_row), shown
    eager = [t for t in shown if t["priority"] == "high"]
    assert shown[: len(eager)] == eager  # a prefix: the first row at the widest window
    assert all(t["lazy"] == "lazy" and t["priority"] is None for t in shown[len(eager) :])
    assert len(eager) < 13  # the rest stay lazy
    pg.set_viewport_size({"width": 1920, "height": 1000})  # the widest grid: its first row is exactly those
    assert {t["top"] for t in tiles(pg)[: len(eager)]} == {tiles(pg)[0]["top"]}
    assert tiles(pg)[len(eager)]["top"] > tiles(pg)[0]["top"]
    context.close()


def test_a_work_page_loads_its_main_variation_first(wide_site, page):
    page.goto(wide_site + "works/20261125-150013-000d/")
    main = page.eval_on_selector_all(
        ".variation img", "imgs => imgs.map(i => [i.getAttribute('loading'), i.getAttribute('fetchpriority')])"
    )
    assert main == [[None, "high"], ["lazy", None], ["lazy", None]]
    others = page.eval_on_selector_all(".lineage img", "imgs => imgs.map(i => i.getAttribute('loading'))")
    assert others == ["lazy"] * 4
    assert page.errors == []


def test_tag_pages_paginate_like_the_index(wide_site, page):
    page.goto(wide_site + "tags/series/")
    assert page.locator(".tile").count() == 13 and "20 works" in page.locator("h1").inner_text()
    assert page.locator(".pager").inner_text().replace("\n", " ").count("Newest works") == 1
    page.locator('.pager a[rel="next"]').click()
    page.wait_for_url(wide_site + "tags/series/page/1/")  # numbered from the oldest: it never changes
    assert page.locator(".tile").count() == 7 and "Page 1" in page.title()
    assert "works" not in page.locator("h1").inner_text()  # the count: on the first page only
    assert all(t["lazy"] == "lazy" for t in tiles(page))  # like the index's later pages
    assert all(s["w"] > 0 for s in load_all_images(page))
    page.locator('.pager a[rel="prev"]').click()
    page.wait_for_url(wide_site + "tags/series/")
    assert page.errors == []


def test_thousands_of_tags_make_a_small_tags_page_and_an_a_z_list(tmp_path, page):
    content = make_content(tmp_path, 2)
    works = sorted((content / "works").iterdir())
    names = [f"tag {i:04d}" for i in range(1500)]
    (works[0] / "work.toml").write_text(f"tags = {json.dumps(names)}\n")
    (works[1] / "work.toml").write_text(f"tags = {json.dumps(names[1000:])}\n")  # used twice
    server, base = serve_site(tmp_path)
    try:
        page.goto(base + "tags/")
        links = page.eval_on_selector_all(
            ".tag-cloud a", "as => as.map(a => [a.firstChild.textContent, +a.lastChild.textContent])"
        )
        assert len(links) == TOP_TAGS
        assert [n for _, n in links] == sorted((n for _, n in links), reverse=True)  # most used first
        assert {n for _, n in links} == {2} and links[0][0].strip() == "tag 1000"
        assert page.locator("main img").count() == 0
        assert len(page.content()) < 40_000  # a page of links, whatever the number of tags
        page.locator(".more a").click()
        page.wait_for_url(base + "tags/by-name/")
        seen = []
        while True:
            rows = page.eval_on_selector_all(".tag-list li", "lis => lis.map(li => li.textContent)")
            assert 0 < len(rows) <= TAG_LIST_SIZE and page.locator("main img").count() == 0
            assert len(page.content()) < 60_000
            seen += rows
            older = page.locator('.pager a[rel="next"]')
            if not older.count():
                break
            older.click()
            page.wait_for_load_state()
        all_tags = sorted({*names, "red", "kimono", "blue", "armor"}, key=str.casefold)
        assert [r.rsplit(" ", 1)[0] for r in seen] == all_tags  # every tag, A-Z, with its count
        assert seen[all_tags.index("tag 0999")].endswith(" 1") and seen[all_tags.index("tag 1000")].endswith(" 2")
        assert page.url == base + f"tags/by-name/page/{-(-len(all_tags) // TAG_LIST_SIZE)}/"
        page.locator(".tag-list a").first.click()  # a tag's own page is one click away
        assert page.locator(".tile").count() >= 1
        assert page.errors == []
    finally:
        server.shutdown()
        server.server_close()


class Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.urls += [a[key] for key in ("href", "src") if a.get(key)]
        for key in ("srcset", "data-srcset"):
            self.urls += [part.split()[0] for part in (a.get(key) or "").split(",") if part.strip()]
        if a.get("data-full"):
            self.urls.append(a["data-full"])


def crawl(start: str) -> tuple[set[str], list[str]]:
    """Every same-origin URL reachable from ``start``; returns (pages, broken)."""
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(start))
    todo, seen, pages, broken = [start], {start}, set(), []
    while todo:
        url = todo.pop()
        try:
            with urllib.request.urlopen(url) as resp:
                body, kind = resp.read(), resp.headers.get_content_type()
        except urllib.error.HTTPError as exc:
            broken.append(f"{exc.code} {url}")
            continue
        if kind != "text/html":
            continue
        pages.add(url)
        parser = Links()
        parser.feed(body.decode("utf-8"))
        for link in parser.urls:
            target = urldefrag(urljoin(url, link)).url
            if target.startswith(origin) and target not in seen:
                seen.add(target)
                todo.append(target)
    return pages, broken


def test_crawl_finds_no_broken_link_and_nothing_outside_the_sub_path(site_url, browser):
    pages, broken = crawl(site_url)
    assert broken == []
    assert len(pages) == 6 + 2 + 1 + 8  # works, index pages, tags page, tag pages
    assert all(p.startswith(site_url) for p in pages)
    context = browser.new_context()
    for url in sorted(pages):  # and each page in the browser: images load, no errors
        pg = context.new_page()
        errors = []
        pg.on("console", lambda m, errors=errors: m.type == "error" and errors.append(m.text))
        pg.on("response", lambda r, errors=errors: r.status >= 400 and errors.append(f"{r.status} {r.url}"))
        pg.goto(url)
        sizes = load_all_images(pg)
        assert all(s["w"] > 0 for s in sizes), (url, sizes)
        assert errors == [], (url, errors)
        pg.close()
    context.close()


def test_missing_page_gets_the_404_page_with_working_links(site_url, page):
    response = page.goto(site_url + "works/nope/deeper/")
    assert response.status == 404
    page.errors.clear()  # the 404 itself is expected
    page.wait_for_load_state("networkidle")
    assert page.evaluate("document.styleSheets.length") == 1 and page.errors == []
    page.locator("main a").first.click()
    page.wait_for_url(site_url)
