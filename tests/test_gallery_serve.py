"""`aiimg serve`: builds, serves on 127.0.0.1 over HTTP, rebuilds when content changes."""

from __future__ import annotations

import re
import threading
import time
import urllib.error
import urllib.request

import pytest
from gallery_fixtures import add_work, make_content, site_config

from pipeline.gallery.serve import serve


def wait_for(check, seconds: float = 15.0):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_serve_previews_and_rebuilds_on_change(tmp_path):
    make_content(tmp_path, 2)
    cfg = site_config(tmp_path, serve_port=0)
    stop = threading.Event()
    thread = threading.Thread(target=serve, args=(cfg,), kwargs={"stop": stop}, daemon=True)
    thread.start()
    try:
        index = tmp_path / "output/index.html"
        base = wait_for(lambda: index.is_file() and re.search(r'rel="canonical" href="([^"]+)"', index.read_text()))
        base = base.group(1)
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", base)  # the preview's own URL, not base_url
        with urllib.request.urlopen(base) as resp:
            assert resp.status == 200 and b'class="tile"' in resp.read()
        new = add_work(tmp_path / "content", 9)
        page = wait_for(lambda: (tmp_path / f"output/works/{new}/index.html").is_file())
        assert page
        with urllib.request.urlopen(f"{base}works/{new}/") as resp:
            assert resp.status == 200
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{base}no/such/page/")
        assert missing.value.code == 404 and b"Page not found" in missing.value.read()
        missing.value.close()
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
