"""Prompts, tags and titles are user text: they appear as text on every page, feed and meta tag."""

from __future__ import annotations

import html.parser
import xml.etree.ElementTree as ET

import pytest
from gallery_fixtures import HOSTILE, add_work, make_content, site_config

from pipeline.gallery import build_site

ATOM = "{http://www.w3.org/2005/Atom}"


class Page(html.parser.HTMLParser):
    """Every tag with its attributes, and the text, as a browser's parser would see them."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def attr_values(self) -> list[str]:
        return [v or "" for _, attrs in self.tags for v in attrs.values()]


@pytest.fixture(scope="module")
def hostile_site(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    make_content(root, 2)
    wid = add_work(root / "content", 7, prompt=f"masterpiece, {HOSTILE}", picks=(HOSTILE, "kimono"))
    (root / "content/works" / wid / "work.toml").write_text(
        f"description = '{HOSTILE}'\ntags = ['{HOSTILE} & more']\n", encoding="utf-8"
    )
    cfg = site_config(root)
    report = build_site(cfg)
    assert report.problems == [] and report.works == 3
    return cfg, wid


def test_no_page_contains_the_raw_markup(hostile_site):
    cfg, _ = hostile_site
    files = [p for p in cfg.output_dir.rglob("*") if p.suffix in (".html", ".xml", ".txt", ".json")]
    assert len(files) > 10
    for path in files:
        assert "<script>alert(1)" not in path.read_text(encoding="utf-8"), path


def test_every_html_page_shows_the_prompt_as_text_and_runs_only_our_script(hostile_site):
    cfg, wid = hostile_site
    seen_as_text = set()
    for path in sorted(cfg.output_dir.rglob("*.html")):
        page = Page(path.read_text(encoding="utf-8"))
        scripts = [attrs for tag, attrs in page.tags if tag == "script"]
        assert len(scripts) == 1 and scripts[0]["src"].endswith(".js"), path
        assert not any(k.startswith("on") for _, attrs in page.tags for k in attrs), path
        if any(HOSTILE in t for t in page.text):
            seen_as_text.add(path.relative_to(cfg.output_dir).parent.as_posix())
    slug = "script-alert-1-script-onload-x"
    # every page that shows the work's title or tags: the index and kimono tiles, its page, the tags
    expected = {".", "tags", "tags/kimono", f"tags/{slug}", f"tags/{slug}-more", f"works/{wid}"}
    assert seen_as_text == expected


def test_work_page_meta_tags_carry_the_text_escaped(hostile_site):
    cfg, wid = hostile_site
    page = Page((cfg.output_dir / "works" / wid / "index.html").read_text(encoding="utf-8"))
    metas = {a.get("property") or a.get("name"): a.get("content") for t, a in page.tags if t == "meta"}
    assert metas["og:description"] == HOSTILE  # the work.toml description, round-tripped exactly
    assert metas["description"] == HOSTILE
    assert metas["og:title"].startswith(HOSTILE)  # title = the picks, the first is hostile
    prompt = next(t for t in page.text if "masterpiece, <script>" in t)
    assert prompt == f"masterpiece, {HOSTILE}"
    copy_targets = [a["data-copy"] for t, a in page.tags if "data-copy" in a]
    assert copy_targets == ["prompt-1", "negative-1"]
    captions = [a["data-caption"] for t, a in page.tags if "data-caption" in a]
    assert captions and all(c.startswith(HOSTILE) for c in captions)


def test_feed_is_well_formed_and_holds_the_text(hostile_site):
    cfg, wid = hostile_site
    feed = ET.parse(cfg.output_dir / "feed.xml").getroot()
    entry = next(e for e in feed.findall(f"{ATOM}entry") if wid in e.find(f"{ATOM}id").text)
    assert entry.find(f"{ATOM}summary").text == HOSTILE
    assert entry.find(f"{ATOM}title").text.startswith(HOSTILE)
    terms = [c.get("term") for c in entry.findall(f"{ATOM}category")]
    assert HOSTILE in terms and f"{HOSTILE} & more" in terms
    content = Page(entry.find(f"{ATOM}content").text)  # the HTML a feed reader renders
    assert not [t for t, _ in content.tags if t == "script"]
    assert f"masterpiece, {HOSTILE}" in "".join(content.text)
    ET.parse(cfg.output_dir / "sitemap.xml")


def test_tag_pages_of_hostile_tags_exist_with_safe_names(hostile_site):
    cfg, _ = hostile_site
    tags_page = Page((cfg.output_dir / "tags/index.html").read_text(encoding="utf-8"))
    hrefs = [a["href"] for t, a in tags_page.tags if t == "a" and a.get("href", "").startswith("../tags/")]
    assert len(hrefs) == 1 + 6  # the tags page itself, then every tag (two of them hostile)
    for href in hrefs:
        assert (cfg.output_dir / "tags" / href[len("../tags/") :] / "index.html").is_file()
    assert any(HOSTILE in t for t in tags_page.text)
