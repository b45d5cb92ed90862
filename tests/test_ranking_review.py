"""The review page: HTTP rules, and in the real browser sorting, filters, seed/unseed, live updates."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import threading

import pytest
import ranking_fixtures as F

from pipeline import config, markers, rounds
from pipeline.content import Content
from pipeline.ranking import rank_command
from pipeline.ranking.review import make_server
from pipeline.recipes import Round, VariationRecipe, Work

YESTERDAY = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=1)
SMALL = (256, 256)
XSS = 'a girl, <img src=x onerror="window.pwned=1"> <script>window.pwned=1</script> & more'


def populate(content: Content) -> dict:
    """Named drafts with known defects; two days; one already seeded by the creator."""
    ids = {
        "best": F.make_draft(content, F.clean(1, size=SMALL), prompt=XSS),
        "blurry": F.make_draft(content, F.blurred(F.clean(2, size=SMALL), 2.0)),
        "blank": F.make_draft(content, F.blank(3, size=SMALL)),
        "old": F.make_draft(content, F.clean(4, size=SMALL), when=YESTERDAY),
        "noisy": F.make_draft(content, F.noisy(F.clean(5, size=SMALL)), when=YESTERDAY + dt.timedelta(seconds=1)),
    }
    content.write_marker(ids["old"], "")
    return ids


@pytest.fixture
def served(tmp_path):
    cfg = config.from_dict({}, root=str(tmp_path))
    content = Content(cfg.content_dir).ensure()
    ids = populate(content)
    rank_command(cfg)
    server = make_server(cfg, port=0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield cfg, content, ids, server.server_address[1]
    server.shutdown()
    server.server_close()


def request(port, method, path, headers=None, host="127.0.0.1"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(method, path, headers={"Host": f"{host}:{port}", **(headers or {})})
    resp = conn.getresponse()
    return resp.status, resp.read()


def test_server_listens_on_loopback_only(served):
    cfg, content, ids, port = served
    status, body = request(port, "GET", "/api/drafts")
    assert status == 200 and len(json.loads(body)["drafts"]) == 5
    assert request(port, "GET", "/api/drafts", host="evil.example")[0] == 403  # DNS rebinding


def test_ids_from_http_are_validated_and_only_known_drafts_served(served):
    cfg, content, ids, port = served
    for bad in ("..%2F..%2Faiimg.toml", "../../etc/passwd", "20261125-000000-beef", "x"):
        assert request(port, "GET", f"/image/{bad}")[0] == 404
        assert request(port, "POST", f"/api/seed/{bad}", {"X-Aiimg-Review": "1"})[0] == 404
    status, body = request(port, "GET", f"/thumb/{ids['best']}")
    assert status == 200 and body[:2] == b"\xff\xd8"
    assert request(port, "GET", f"/image/{ids['best']}")[1][:4] == b"\x89PNG"


def test_post_needs_the_page_header(served):
    cfg, content, ids, port = served
    assert request(port, "POST", f"/api/seed/{ids['best']}")[0] == 403
    assert markers.find(content.draft(ids["best"]).folder) is None


def test_unseed_refuses_once_variations_started(served):
    cfg, content, ids, port = served
    first = VariationRecipe(id=ids["old"], prompt="p", width=64, height=64, seed=1, file="1.png", index=1, round=1)
    content.write_work(ids["old"], Work(ids["old"], [Round("x", 3)], [first]))  # 1 of 3 made
    status, body = request(port, "POST", f"/api/unseed/{ids['old']}", {"X-Aiimg-Review": "1"})
    assert status == 409 and b"started" in body
    assert markers.find(content.draft(ids["old"]).folder) is not None


# -- in the real browser -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--headless", "--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def open_page(browser, port):
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: errors.append("dialog: " + d.message))
    page.goto(f"http://127.0.0.1:{port}/")
    page.wait_for_selector("body[data-ready='1']")
    return page, errors


def wait_until(predicate, timeout: float = 10.0):
    """Poll from Python: the page's CSP forbids eval, so Playwright's wait_for_function cannot run."""
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def card_ids(page) -> list[str]:
    return page.eval_on_selector_all(".card", "cs => cs.map(c => c.dataset.id)")


@pytest.mark.browser
def test_page_sorts_by_score_and_shows_flags_and_text_safely(served, browser):
    cfg, content, ids, port = served
    page, errors = open_page(browser, port)
    order = card_ids(page)
    assert order[0] == ids["best"] and order[-1] == ids["blank"]
    assert order.index(ids["best"]) < order.index(ids["blurry"])
    first = page.locator(".card").first
    assert "<script>window.pwned=1</script>" in first.locator(".prompt").inner_text()
    assert page.evaluate("window.pwned") is None and errors == []
    assert page.locator(f".card[data-id='{ids['blank']}'] .score").inner_text() == "reject"
    assert "blurry" in page.locator(f".card[data-id='{ids['blurry']}'] .flag").all_inner_texts()
    page.select_option("#sort", "newest")
    assert card_ids(page)[0] == ids["blank"]
    page.close()


@pytest.mark.browser
def test_filters_unseeded_date_and_flag(served, browser):
    cfg, content, ids, port = served
    page, _ = open_page(browser, port)
    page.check("#unseeded")
    assert ids["old"] not in card_ids(page) and len(card_ids(page)) == 4
    page.uncheck("#unseeded")
    page.select_option("#day", YESTERDAY.strftime("%Y-%m-%d"))
    assert sorted(card_ids(page)) == sorted([ids["old"], ids["noisy"]])
    page.select_option("#day", "")
    page.select_option("#flag", "blurry")
    assert card_ids(page) == [ids["blurry"]]
    page.select_option("#flag", "-none")
    assert ids["best"] in card_ids(page) and ids["blurry"] not in card_ids(page)
    page.close()


@pytest.mark.browser
def test_preview_and_seed_button_write_the_marker_the_loop_reads(served, browser):
    cfg, content, ids, port = served
    page, _ = open_page(browser, port)
    page.click(f".card[data-id='{ids['best']}'] .thumb")
    page.wait_for_selector("#overlay.open")
    assert page.get_attribute("#big", "src") == f"/image/{ids['best']}"
    wait_until(lambda: page.eval_on_selector("#big", "img => img.naturalWidth") == 256)
    page.click("#o-seed")
    page.wait_for_selector(f".card[data-id='{ids['best']}'].seeded")
    marker = markers.find(content.draft(ids["best"]).folder)
    assert marker.name == "seed.txt" and marker.read_text() == ""
    assert ids["best"] in [s.draft.id for s in rounds.waiting(content)[0]]  # what the loop serves next
    page.keyboard.press("Escape")
    page.click(f".card[data-id='{ids['best']}'] .seed-btn")  # unseed
    page.wait_for_selector(f".card[data-id='{ids['best']}']:not(.seeded)")
    assert markers.find(content.draft(ids["best"]).folder) is None
    assert ids["best"] not in [s.draft.id for s in rounds.waiting(content)[0]]
    page.close()


@pytest.mark.browser
def test_page_updates_when_new_drafts_arrive(served, browser):
    cfg, content, ids, port = served
    page, _ = open_page(browser, port)
    new = F.make_draft(content, F.clean(9, size=SMALL))
    page.wait_for_selector(f".card[data-id='{new}']", timeout=10000)
    assert "unscored" in page.locator(f".card[data-id='{new}'] .score").inner_text()
    rank_command(cfg)
    score = page.locator(f".card[data-id='{new}'] .score")
    wait_until(lambda: score.inner_text() not in ("unscored", ""))
    assert score.inner_text()[0] in "+-"
    page.close()


@pytest.mark.browser
def test_seed_button_feeds_the_real_loop(tmp_path, browser):
    """Tiny model end to end: drafts scored as they are saved, seeded in the page, served by `aiimg run`."""
    from tests.conftest import FAST_TOML, aiimg, write_tree

    path = write_tree(tmp_path, FAST_TOML.replace("[score]\nenabled = false", "[score]\nenabled = true"))
    made = aiimg(path, "draft", "-n", "2")
    assert made.returncode == 0, made.stdout + made.stderr
    cfg = config.load(path)
    content = Content(cfg.content_dir)
    drafts = content.drafts()
    assert len(drafts) == 2 and all("scores" in F.recipe_of(content, d.id) for d in drafts)  # scored when saved
    server = make_server(cfg, port=0)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    try:
        page, _ = open_page(browser, server.server_address[1])
        top = card_ids(page)[0]
        page.click(f".card[data-id='{top}'] .seed-btn")
        page.wait_for_selector(f".card[data-id='{top}'].seeded")
        page.close()
    finally:
        server.shutdown()
        server.server_close()
    served = aiimg(path, "run", "--max-drafts", "0", "--once")
    assert served.returncode == 0, served.stdout + served.stderr
    work = content.read_work(top)
    assert len(work.variations) == cfg.variation.count
    assert [d.id for d in content.drafts()] == [d.id for d in drafts]  # no draft made, the seed served


def test_review_scores_drafts_no_loop_scored(tmp_path, monkeypatch):
    from pipeline.ranking import review

    cfg = config.from_dict({}, root=str(tmp_path))
    content = Content(cfg.content_dir).ensure()
    draft_id = F.make_draft(content, F.clean(30, size=SMALL))
    page = review.Review(cfg, content)
    assert page.score_missing() == 0  # too new: the loop's ranker goes first
    monkeypatch.setattr(review, "SCORE_AFTER", -1.0)
    assert page.score_missing() == 1 and "scores" in F.recipe_of(content, draft_id)
    assert page.score_missing() == 0
