"""Golden pages: the fixture content must render to exactly the pages in tests/golden/.

After a deliberate change to the templates, refresh them on purpose and review the diff:
``make golden`` (AIIMG_UPDATE_GOLDEN=1 pytest tests/test_gallery_golden.py).

Image file names carry a key that includes the Pillow version (a new encoder may give new
bytes), so the 12-hex image keys are replaced by KEY before comparing; so are the hashes in the
names of Pagefind's index files (they hash what they hold: those image names, Pagefind's format).

The golden site has search (the ``search`` extra, which `make install` installs): every page
shows the box and FILES.txt lists the search page and the index.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from gallery_fixtures import make_content, site_config

from pipeline.gallery import build_site, search

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("AIIMG_UPDATE_GOLDEN") == "1"
FIRST = "20261125-150000-0000"
PAGES = [
    "index.html",
    "page/1/index.html",
    "page/2/index.html",
    f"works/{FIRST}/index.html",
    "tags/index.html",
    "tags/kimono/index.html",
    "feed.xml",
    "sitemap.xml",
    "robots.txt",
    "404.html",
    "search/index.html",
]


def normalise(text: str) -> str:
    text = re.sub(r"(images/[^\"' ]+?-)[0-9a-f]{12}([-.])", r"\1KEY\2", text)
    return re.sub(r"(pagefind/(?:fragment/|index/|pagefind\.)[a-z-]+_)[0-9a-f]+(\.pf_)", r"\1HASH\2", text)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    assert search.available(), "Pagefind is not installed: pip install -e '.[search]' (make install does)"
    root = tmp_path_factory.mktemp("golden")
    make_content(root, 6)
    cfg = site_config(root, page_size=2)  # the first page, then pages 2 and 1 (the oldest works)
    assert build_site(cfg).problems == []
    return cfg.output_dir


@pytest.mark.parametrize("page", PAGES)
def test_page_matches_golden(built, page):
    actual = normalise((built / page).read_text(encoding="utf-8"))
    golden = GOLDEN / (page.replace("/", "__"))
    if UPDATE:
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(actual, encoding="utf-8")
    assert golden.is_file(), f"{golden} missing: run `make golden`"
    assert actual == golden.read_text(encoding="utf-8"), f"{page} differs from {golden}; `make golden` if intended"


def test_file_list_matches_golden(built):
    names = sorted(normalise(str(p.relative_to(built))) for p in built.rglob("*") if p.is_file())
    actual = "\n".join(names) + "\n"
    golden = GOLDEN / "FILES.txt"
    if UPDATE:
        golden.write_text(actual, encoding="utf-8")
    assert actual == golden.read_text(encoding="utf-8")
