"""The built site in a real browser (Debian's chromium through Playwright), served over HTTP
under a sub-path, as a GitHub Pages project site is: http://127.0.0.1:<port>/repo/."""

from __future__ import annotations

import dataclasses
import html.parser
import urllib.error
import urllib.request
from urllib.parse import urldefrag, urljoin, urlsplit

import pytest
from gallery_fixtures import CHROMIUM, CHROMIUM_ARGS, make_content, site_config

from pipeline.gallery import build_site
from pipeline.gallery.serve import start_server

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def site_url(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    make_content(root, 6)
    (root / "www").mkdir()
    # serves www/ with the site in www/repo/, and its 404 page for any missing path, as Pages does
    server = start_server(root / "www", 0, not_found=root / "www/repo/404.html")
    base = f"http://127.0.0.1:{server.server_address[1]}/repo/"
    cfg = dataclasses.replace(site_config(root, base_url=base), output="www/repo")
    assert build_site(cfg).problems == []
    yield base
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
    assert len(images) == 4
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
