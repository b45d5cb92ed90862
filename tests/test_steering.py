"""Steering: impressions, what counts as seen, seed rates, Thompson-sampled picks and sizes."""

from __future__ import annotations

import datetime as dt
import http.client
import io
import json
import random
import threading
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import ranking_fixtures as F

from pipeline import config, drafts, prompts, sizes, steering
from pipeline.content import Content
from pipeline.errors import AiimgError
from pipeline.ranking import stats_report
from pipeline.ranking.review import make_server
from pipeline.ranking.stats import next_probabilities

GOLDEN = json.loads(Path(__file__).with_name("steering_golden.json").read_text(encoding="utf-8"))
MODEL = SimpleNamespace(name="tiny", hash="0000000000", scheduler="PNDMScheduler")
DAY = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def no_model(monkeypatch):
    """plan() without a model: the sampler/LoRA part of the recipe is not what steering changes."""
    monkeypatch.setattr(drafts.conditioning, "describe", lambda recipe, cfg, model, overrides=None: None)


def project(tmp_path, **prompt):
    cfg = config.from_dict(
        {"prompt": {"template": GOLDEN["template"], **prompt}, "draft": {"aspect": ["2:3", "3:2"]}}, root=str(tmp_path)
    )
    content = Content(cfg.content_dir).ensure()
    (content.prompts_dir / "outfit.txt").write_text(GOLDEN["outfit"], encoding="utf-8")
    return cfg, content


def save(content: Content, recipe) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    content.write_draft(recipe, buf.getvalue())
    return recipe.id


def pick(recipe, token: str) -> dict:
    return next(p for p in recipe.picks if p["token"] == token)


# -- steer off: today's drafts, exactly ---------------------------------------------------------


def test_steer_off_plans_exactly_the_drafts_made_before_steering_existed(tmp_path):
    """GOLDEN was captured from plan()'s draws before steering.py existed; seeds and impressions
    in the folder must change nothing while [prompt] steer is off."""
    cfg, content = project(tmp_path)
    old = save(content, drafts.plan(cfg, content, MODEL, random.Random(99)))
    content.write_marker(old, "")
    steering.record_impressions(content, [old])
    for want in GOLDEN["drafts"]:
        cfg_aspect = config.override(cfg, draft__aspect=want["aspect"])
        recipe = drafts.plan(cfg_aspect, content, MODEL, random.Random(want["seed"]))
        got = {"size": [recipe.width, recipe.height], "prompt": recipe.prompt, "picks": recipe.picks}
        assert got == {k: want[k] for k in got}, want["seed"]
        assert (recipe.prompt_seed, recipe.seed) == (want["prompt_seed"], want["image_seed"])
        assert "steering" not in recipe.to_json()


# -- the probabilities --------------------------------------------------------------------------


def test_best_chances_are_what_thompson_draws_pick():
    rng = random.Random(5)
    for params in ([(3, 10), (1, 1), (5, 30), (2, 2)], [(40, 160), (12, 40), (1, 1)], [(1, 1)] * 3 + [(9, 3)]):
        wins = Counter()
        for _ in range(40000):
            draws = [rng.betavariate(a, b) for a, b in params]
            wins[draws.index(max(draws))] += 1
        exact = steering.best_chances(params)
        assert sum(exact) == pytest.approx(1.0)
        for i, q in enumerate(exact):
            assert q == pytest.approx(wins[i] / 40000, abs=0.01), (params, i)


def test_probabilities_move_toward_the_higher_seed_rate():
    floor, others = 0.1, [(4, 40)] * 3
    first = [steering.probabilities([(s, 40), *others], [1] * 4, floor)[0] for s in range(0, 21)]
    assert all(b >= a - 1e-12 for a, b in zip(first, first[1:]))  # more seeds of it, never less chance
    assert first[0] < 0.25 < first[-1] and first[-1] > 0.85  # below its uniform share at 0/40, dominant at 20/40
    # the same rate on more evidence is more certain: a loser's share shrinks toward its floor
    few = steering.probabilities([(1, 10), (3, 10)], [1, 1], floor)
    many = steering.probabilities([(10, 100), (30, 100)], [1, 1], floor)
    assert floor * 0.5 <= many[0] < few[0] < 0.5


def test_no_option_ever_falls_below_its_floor_and_no_evidence_keeps_the_template_weights():
    rng = random.Random(11)
    for _ in range(300):
        n = rng.randint(1, 8)
        weights = [rng.choice([1.0, 0.3, 2.5, rng.random()]) for _ in range(n)]
        counts = []
        for _ in range(n):
            seen = rng.choice([0, 1, 5, 50, 2000])
            counts.append((rng.randint(0, seen), seen))
        floor = rng.choice([0.0, 0.05, 0.1, 0.5, 1.0])
        probs = steering.probabilities(counts, weights, floor)
        prior = [w / sum(weights) for w in weights]
        assert sum(probs) == pytest.approx(1.0)
        assert all(p >= floor * w - 1e-12 for p, w in zip(probs, prior)), (counts, weights, floor)
        if floor == 1.0:
            assert probs == pytest.approx(prior)
        same = steering.probabilities([counts[0]] * n, weights, floor)  # equal evidence: nothing to prefer
        assert same == pytest.approx(prior, abs=1e-9)


def test_draw_follows_the_cumulative_probabilities():
    probs = [0.2, 0.0, 0.5, 0.3]
    assert [steering.draw(probs, u) for u in (0.0, 0.19, 0.2, 0.69, 0.7, 0.999999, 1.0)] == [0, 0, 2, 2, 3, 3, 3]


# -- steered prompts ----------------------------------------------------------------------------


def made_up_state(likes: dict[str, dict[str, tuple[int, int]]]) -> steering.State:
    st = steering.State()
    for token, options in likes.items():
        for option, (seeds, seen) in options.items():
            st.counts[token][option] = steering.Tally(seen, seen, seeds)
    return st


def test_steered_render_records_p_and_option_and_is_reproducible(tmp_path):
    cfg, content = project(tmp_path)
    st = made_up_state(
        {"{red|blue|silver}": {"red": (12, 40), "blue": (2, 40)}, "__outfit__": {"silver armor": (9, 20)}}
    )
    steer = steering.Steering(st, 0.1)
    choices = {c.token: c for c in prompts.choices(GOLDEN["template"], content.prompts_dir)}
    assert set(choices) == {"{red|blue|silver}", "{smiling|frowning}", "__outfit__", "{city|{misty|sunny} forest}"}
    assert choices["{smiling|frowning}"].weights == [0.3, 1.0]  # {0.3::smiling|frowning}: the prior
    texts = {}
    for seed in range(60):
        p = prompts.render(GOLDEN["template"], content.prompts_dir, seed, steer)
        assert p == prompts.render(GOLDEN["template"], content.prompts_dir, seed, steer)  # same seed, same state
        texts[seed] = p.text
        for got in p.picks:
            choice = choices.get(got["token"])
            if choice is None:  # {2$$a|b|c} picks two: left to dynamicprompts, no p
                assert set(got) == {"token", "value"}
                continue
            option = got.get("option", got["value"])
            assert option in choice.options and ("option" in got) == (option != got["value"])
            probs = steer.probabilities(choice.token, choice.options, choice.weights)
            assert got["p"] == round(probs[choice.options.index(option)], 4)
            assert got["value"] in p.text
    nested = [p for s in range(60) for p in prompts.render(GOLDEN["template"], content.prompts_dir, s, steer).picks]
    assert {"option": "{misty|sunny} forest", "value": "misty forest"}.items() <= next(
        p for p in nested if p["value"] == "misty forest"
    ).items()
    other = steering.Steering(made_up_state({"{red|blue|silver}": {"blue": (30, 40)}}), 0.1)
    assert any(prompts.render(GOLDEN["template"], content.prompts_dir, s, other).text != texts[s] for s in texts)


def test_steered_draws_follow_their_recorded_probabilities(tmp_path):
    cfg, content = project(tmp_path)
    steer = steering.Steering(
        made_up_state({"{red|blue|silver}": {"red": (10, 30), "blue": (1, 30), "silver": (3, 30)}}), 0.1
    )
    drawn = Counter()
    recorded = {}
    for seed in range(3000):
        hair = prompts.render("{red|blue|silver} hair", content.prompts_dir, seed, steer).picks[0]
        drawn[hair["value"]] += 1
        recorded[hair["value"]] = hair["p"]
    for colour, p in recorded.items():
        assert drawn[colour] / 3000 == pytest.approx(p, abs=0.03), colour
    assert recorded["red"] > 1 / 3 > recorded["silver"] > recorded["blue"] >= 0.1 / 3


def test_wildcard_lines_and_variants_are_the_options_with_the_templates_weights(tmp_path):
    (tmp_path / "colour.txt").write_text("red\nblue\nred\n# a comment\n")  # dynamicprompts keeps a line once
    colour, hair = prompts.choices("__colour__, {2$$a|b|c}, {@x|y}, {!x|y}, {0.5::a|a|b} hair", tmp_path)
    assert colour.token == "__colour__" and dict(zip(colour.options, colour.weights)) == {"red": 1.0, "blue": 1.0}
    assert hair.token == "{a|a|b}" and dict(zip(hair.options, hair.weights)) == {"a": 1.5, "b": 1.0}
    drawn = Counter(prompts.render("{0.5::a|a|b}", tmp_path, s).text for s in range(3000))  # unsteered: the same
    assert drawn["a"] / 3000 == pytest.approx(1.5 / 2.5, abs=0.03)


# -- steered drafts -----------------------------------------------------------------------------


def test_steered_plan_records_what_it_drew_with_and_leans_to_what_gets_seeded(tmp_path):
    cfg, content = project(tmp_path, steer=True, steer_floor=0.1)
    rng = random.Random(3)
    portrait = {"704x896", "768x832"}
    for _ in range(60):  # a creator who saw every draft and seeded the portrait ones
        recipe = drafts.plan(cfg, content, MODEL, rng)
        save(content, recipe)
        if f"{recipe.width}x{recipe.height}" in portrait:
            content.write_marker(recipe.id, "")
    steering.record_impressions(content, [d.id for d in content.drafts()])
    st = steering.state(content)
    expected, _ = next_probabilities(cfg, content, st)
    later = [drafts.plan(cfg, content, MODEL, random.Random(seed)) for seed in range(400)]
    for recipe in later[:20]:
        rec = recipe.to_json()["steering"]
        size = f"{recipe.width}x{recipe.height}"
        assert rec["aspect"] == {"value": size, "p": round(expected["aspect"][size], 4)}
        assert (rec["seen"], rec["seeds"], rec["floor"]) == (60, st.seeds, 0.1)
        hair = pick(recipe, "{red|blue|silver}")
        assert hair["p"] == round(expected["{red|blue|silver}"][hair["value"]], 4)
    share = sum(f"{r.width}x{r.height}" in portrait for r in later) / len(later)
    unsteered = sum(p for (w, h), p in sizes.bucket_shares(cfg.draft.area, cfg.draft.aspect) if f"{w}x{h}" in portrait)
    assert share > unsteered + 0.25
    assert share == pytest.approx(sum(expected["aspect"][s] for s in portrait), abs=0.06)
    landscape = min(expected["aspect"][s] for s in ("832x768", "896x704"))
    assert landscape >= 0.1 * min(p for _, p in sizes.bucket_shares(cfg.draft.area, cfg.draft.aspect)) - 1e-9


# -- seen, and the counts -----------------------------------------------------------------------


def folder(tmp_path, steer=False):
    cfg = config.from_dict({"prompt": {"template": "a {red|blue}, __outfit__", "steer": steer}}, root=str(tmp_path))
    content = Content(cfg.content_dir).ensure()
    (content.prompts_dir / "outfit.txt").write_text("coat\ndress\n")
    return cfg, content


# (day offset, colour, outfit, size, how the creator met it): shown = review page, seed, auto, "" = nothing
SCENARIO = [
    (0, "red", "coat", (64, 96), ""),  # day 0, browsed in a file manager: before the day's seed, passed over
    (0, "blue", "coat", (96, 64), ""),  # the same
    (0, "red", "dress", (64, 96), "seed"),
    (0, "blue", "dress", (96, 64), ""),  # after the day's last seed: not seen
    (1, "blue", "coat", (96, 64), "shown"),  # day 1, browsed on the review page
    (1, "red", "coat", (64, 96), "auto"),  # an auto seed: left out
    (1, "red", "dress", (64, 96), "shown"),
    (1, "blue", "dress", (96, 64), ""),  # older than a seed, but the page never showed it: not seen
    (1, "blue", "dress", (96, 64), "seed"),
    (1, "blue", "coat", (96, 64), "seed"),
    (2, "red", "coat", (64, 96), "shown"),
    (2, "red", "coat", (64, 96), ""),  # no seed that day, never shown
    (3, "blue", "coat", (96, 64), ""),  # day 3, file manager: older only than an auto seed, not seen
    (3, "red", "dress", (64, 96), "auto"),
]


def build(content: Content) -> list[str]:
    ids = []
    for n, (day, colour, outfit, size, how) in enumerate(SCENARIO):
        picks = [{"token": "{red|blue}", "value": colour}, {"token": "__outfit__", "value": outfit}]
        when = DAY + dt.timedelta(days=day, minutes=n)
        ids.append(F.make_draft(content, F.clean(n, size=size), when=when, picks=picks))
        if how in ("seed", "auto"):
            content.write_marker(ids[-1], 'by = "auto"\n' if how == "auto" else "")
    steering.record_impressions(content, [i for i, row in zip(ids, SCENARIO) if row[4] == "shown"])
    return ids


def test_seen_is_the_review_page_the_seeds_and_what_lies_before_a_seed_of_a_file_manager_day(tmp_path):
    _, content = folder(tmp_path)
    ids = build(content)
    seen = steering.seen_ids(steering.rows(content), steering.read_impressions(content))
    assert [seen.get(i, "") for i in ids] == [
        "day", "day", "seeded", "", "review", "", "review", "", "seeded", "seeded", "review", "", "", ""
    ]  # fmt: skip


def test_stats_agree_with_a_hand_count(tmp_path):
    cfg, content = folder(tmp_path, steer=True)
    build(content)
    report = stats_report(cfg)
    lines = report.splitlines()
    seen_rows = [0, 1, 2, 4, 6, 8, 9, 10]  # by hand, from SCENARIO's comments
    mine = [(n, row) for n, row in enumerate(SCENARIO) if row[4] != "auto"]
    seeds = sum(row[4] == "seed" for _, row in mine)
    assert (
        lines[0] == f"{len(mine)} drafts, {seeds} seeded by you ({100 * seeds / len(mine):.1f}%); "
        f"{len(SCENARIO) - len(mine)} auto-seeded drafts left out"
    )
    assert (
        f"seen: {len(seen_rows)} drafts (3 on the review page, 3 seeded, 2 older than a seed of their day)" in lines[1]
    )
    probs, _ = next_probabilities(cfg, content, steering.state(content))
    for token, option_of in (
        ("{red|blue}", lambda row: row[1]),
        ("__outfit__", lambda row: row[2]),
        ("aspect", lambda row: f"{row[3][0]}x{row[3][1]}"),
    ):
        heading = "  aspect ratio (size)" if token == "aspect" else f"  pick {token}"
        for option in {option_of(row) for _, row in mine}:
            rows = [(n, row) for n, row in mine if option_of(row) == option]
            seen = sum(n in seen_rows for n, _ in rows)
            seeded = sum(row[4] == "seed" for _, row in rows)
            line = next(ln for ln in lines[lines.index(heading) + 1 :] if ln.startswith(f"    {option} "))
            words = line.split()  # ... 4 drafts 3 seen 1 seeds 33.3% of seen p next 0.410
            assert words[-12:-5:2] == [str(len(rows)), str(seen), str(seeded), f"{100 * seeded / seen:.1f}%"], line
            want = probs.get(token, {}).get(option)
            assert words[-1] == ("-" if want is None else f"{want:.3f}"), line
    # steering draws with exactly what stats shows: the rates favour blue and dress
    assert probs["{red|blue}"]["blue"] > 0.5 and probs["__outfit__"]["dress"] > 0.5


def test_impressions_keep_the_first_time_and_refuse_what_is_not_a_draft_id(tmp_path):
    content = Content(tmp_path / "content").ensure()
    a, b = "20261120-090000-abc12", "20261120-090001-abc13"
    assert steering.record_impressions(content, [a, a], when="2026-11-20T09:00:00Z") == 1
    assert steering.record_impressions(content, [a, b], when="2026-11-21T09:00:00Z") == 1
    assert steering.read_impressions(content) == {a: "2026-11-20T09:00:00Z", b: "2026-11-21T09:00:00Z"}
    assert [p.name for p in content.impressions_path().parent.iterdir()] == ["impressions.json"]  # no temp left
    with pytest.raises(AiimgError, match="is not a draft id"):
        steering.record_impressions(content, ["../../etc"])
    content.impressions_path().write_text("{not json")
    with pytest.raises(AiimgError, match=f"{content.impressions_path()}: unreadable"):
        steering.read_impressions(content)


# -- the review page ----------------------------------------------------------------------------


@pytest.fixture
def served(tmp_path):
    cfg, content = folder(tmp_path)
    ids = [F.make_draft(content, F.clean(n, size=(64, 64))) for n in range(24)]
    server = make_server(cfg, port=0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield cfg, content, ids, server.server_address[1]
    server.shutdown()
    server.server_close()


def post(port, path, body: bytes, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", path, body=body, headers={"Host": f"127.0.0.1:{port}", **(headers or {})})
    resp = conn.getresponse()
    return resp.status, json.loads(resp.read() or b"{}")


def test_seen_api_records_known_drafts_only(served):
    cfg, content, ids, port = served
    ok = {"X-Aiimg-Review": "1"}
    body = json.dumps({"ids": [ids[0], ids[1], ids[0], "20261125-000000-beef", "../x"]}).encode()
    assert post(port, "/api/seen", body)[0] == 403  # another site's page cannot send the header
    assert post(port, "/api/seen", b"[1, 2]", ok)[0] == 400
    assert post(port, "/api/seen", b"x" * (300 * 1024), ok)[0] == 413
    assert steering.read_impressions(content) == {}
    assert post(port, "/api/seen", body, ok) == (200, {"recorded": 2, "known": 2, "unknown": 2})
    assert set(steering.read_impressions(content)) == {ids[0], ids[1]}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/api/drafts", headers={"Host": f"127.0.0.1:{port}"})
    listed = {d["id"]: d["seen"] for d in json.loads(conn.getresponse().read())["drafts"]}
    assert {i for i, s in listed.items() if s} == {ids[0], ids[1]}


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--headless", "--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


VISIBLE = """() => {
  const top = document.querySelector("header").getBoundingClientRect().bottom, bottom = window.innerHeight;
  return [...document.querySelectorAll(".card")].map((c) => {
    const r = c.querySelector(".thumb").getBoundingClientRect();
    const shown = Math.max(0, Math.min(r.bottom, bottom) - Math.max(r.top, top)) / r.height;
    return [c.dataset.id, shown];
  });
}"""


PASS_BY = (
    """async () => {
  window.scrollTo(0, document.body.scrollHeight / 2);
  await new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)));
  const shares = ("""
    + VISIBLE
    + """)();
  window.scrollTo(0, document.body.scrollHeight);
  return shares;
}"""
)


def wait_until(predicate, timeout: float = 15.0):
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.mark.browser
def test_scrolling_the_review_page_records_what_was_in_view(served, browser):
    import time

    cfg, content, ids, port = served
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.goto(f"http://127.0.0.1:{port}/")
    page.wait_for_selector("body[data-ready='1']")
    at_top = dict(page.evaluate(VISIBLE))
    in_view = {i for i, share in at_top.items() if share >= 0.6}
    out_of_view = {i for i, share in at_top.items() if share <= 0.4}
    assert 4 <= len(in_view) < len(ids) and out_of_view
    wait_until(lambda: set(steering.read_impressions(content)) >= in_view)
    time.sleep(2.5)  # a further flush: nothing out of view comes with it
    assert set(steering.read_impressions(content)) == in_view

    # scrolled past within a moment: not seen; where the creator stops: seen
    middle = page.evaluate(PASS_BY)  # in view for two frames, not a second
    middle = {i for i, share in middle if share >= 0.5} - in_view
    at_bottom = dict(page.evaluate(VISIBLE))
    bottom = {i for i, share in at_bottom.items() if share >= 0.6}
    passed = middle - {i for i, share in at_bottom.items() if share > 0.4}
    assert bottom and passed
    wait_until(lambda: set(steering.read_impressions(content)) >= in_view | bottom)
    time.sleep(2.5)
    assert not set(steering.read_impressions(content)) & passed

    # opening a draft's preview counts it at once
    page.evaluate("() => window.scrollTo(0, 0)")
    target = next(i for i in ids if i in passed)
    page.evaluate(f"() => document.querySelector('.card[data-id=\"{target}\"] .thumb').click()")
    wait_until(lambda: target in steering.read_impressions(content))
    page.close()


def test_a_size_with_no_bucket_is_drawn_as_before(tmp_path):
    steer = steering.Steering(steering.State(), 0.1)
    assert steer.size(640000, ["16:9"], random.Random(2)) == (
        *sizes.draft_size(640000, ["16:9"], random.Random(2)),
        None,
    )
    w, h, aspect = steer.size(640000, ["2:3", "3:2"], random.Random(2))
    shares = dict(sizes.bucket_shares(640000, ["2:3", "3:2"]))
    assert aspect == {"value": f"{w}x{h}", "p": round(shares[(w, h)], 4)}  # no marks: the template's share
