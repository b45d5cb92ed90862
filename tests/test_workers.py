"""Workers: the runner beside each model, and two local worker processes on the real tiny model
(one torch thread each): sharing a seed's variations, being killed at random moments, preempting."""

import os
import random
import signal
import threading
import time

import numpy as np
import psutil
import pytest
from PIL import Image

from pipeline import config, variations
from pipeline.content import Content
from pipeline.studio import Studio
from pipeline.workers import Died, Job
from pipeline.workers.jobs import Runner
from tests.conftest import FAST_TOML, aiimg, real_drafts, start, wait_for, write_tree
from tests.test_loop import assert_everything_readable, assert_one_set_each, events, stop

TWO = FAST_TOML.replace("[run]\n", '[run]\ndevices = ["cpu", "cpu"]\n')
# drafts that take a few seconds on one core: a seed dropped meanwhile finds every worker drafting
SLOW = TWO.replace("area = 65536\nsteps = 2", "area = 409600\nsteps = 12")


def pixels(path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def two_workers(tmp_path, toml: str = TWO):
    """A config beside aiimg.toml, same content folder, with two worker processes."""
    write_tree(tmp_path)
    path = tmp_path / "two.toml"
    path.write_text(toml)
    return path


def worker_pids(content: Content, owner: int) -> list[int]:
    """The worker processes of the loop ``owner`` runs, by its status.json (no other process's)."""
    status = content.read_status() or {}
    if status.get("pid") != owner:
        return []
    return [w["pid"] for w in status.get("workers", []) if w["state"] in ("idle", "busy") and w["pid"] != owner]


# -- the runner ---------------------------------------------------------------------------------


def test_prefetched_latents_give_the_same_pixels_as_encoding_in_the_job(tiny, cfg, tmp_path):
    source = Image.fromarray(np.random.default_rng(1).integers(0, 255, (256, 320, 3), dtype=np.uint8))
    draft = variations.DraftRecipe(id="20261204-120000-aaaaa", prompt="a fox", width=320, height=256, seed=7)
    from pipeline.recipes import Round

    recipe = variations.recipe(cfg, draft, Round("m", 2), 1, 1, tiny)
    runner = Runner(cfg, tiny)
    try:
        runner.prefetch(Job(1, recipe, source)).result()  # what a worker does while its draft stops
        ahead = runner.run(Job(1, recipe, source), lambda: False)
        runner.latents = None
        plain = runner.run(Job(2, variations.recipe(cfg, draft, Round("m", 2), 1, 1, tiny), source), lambda: False)
    finally:
        runner.close()
    assert ahead.error == "" and np.array_equal(np.asarray(ahead.image), np.asarray(plain.image))


def test_an_encode_that_failed_is_done_again_for_the_next_variation(tiny, cfg, monkeypatch):
    source = Image.fromarray(np.random.default_rng(2).integers(0, 255, (256, 320, 3), dtype=np.uint8))
    draft = variations.DraftRecipe(id="20261204-120000-bbbbb", prompt="a fox", width=320, height=256, seed=7)
    from pipeline.recipes import Round

    real, calls = variations.encode, []

    def out_of_memory_once(*args):  # e.g. CUDA out of memory while a draft still held the device
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("CUDA out of memory")
        return real(*args)

    monkeypatch.setattr(variations, "encode", out_of_memory_once)
    runner = Runner(cfg, tiny)
    try:
        first = runner.run(Job(1, variations.recipe(cfg, draft, Round("m", 2), 1, 1, tiny), source), lambda: False)
        second = runner.run(Job(2, variations.recipe(cfg, draft, Round("m", 2), 1, 2, tiny), source), lambda: False)
    finally:
        runner.close()
    assert "out of memory" in first.error and first.image is None
    assert second.error == "" and second.image is not None and len(calls) == 2  # encoded again, not the failure


def test_a_draft_asked_to_stop_stops_within_its_step_and_makes_nothing(tiny, cfg):
    from pipeline import drafts

    recipe = drafts.plan(cfg, Content(cfg.content_dir).ensure(), tiny)
    runner = Runner(cfg, tiny)
    try:
        result = runner.run(Job(5, recipe), lambda: True)  # asked as soon as it starts
    finally:
        runner.close()
    assert result.stopped and result.image is None
    assert runner.progress == (0, recipe.steps)  # stopped between two blocks of the first step, not after it


# -- two local workers ------------------------------------------------------------------------


def test_two_workers_share_a_seed_and_make_the_pixels_one_would(tmp_path, tiny):
    (draft_id,) = real_drafts(tmp_path, tiny, 1)
    cfg = config.load(two_workers(tmp_path))
    content = Content(cfg.content_dir)
    (content.draft_folder(draft_id) / "seed.txt").write_text("count = 4")
    studio = Studio(cfg, content)
    try:
        studio.start()
        studio.wait_for_workers()
        assert [w.state for w in studio.workers] == ["idle", "idle"] and len({w.pid for w in studio.workers}) == 2
        studio.run(max_drafts=2, once=True)
    finally:
        studio.close()
    assert all(w.done >= 1 for w in studio.workers), [w.status() for w in studio.workers]
    work = content.read_work(draft_id)
    assert [v.index for v in work.variations] == [1, 2, 3, 4]
    source = Image.open(content.draft(draft_id).image).convert("RGB")
    for v in work.variations:  # whichever process made it: the pixels of the recipe
        again = variations.make(tiny, source, v)
        assert np.array_equal(pixels(content.variation_path(draft_id, v.file)), np.asarray(again))
    assert len(content.drafts()) == 3 and not any(p.is_alive() for w in studio.workers for p in [w.process])


def test_workers_killed_at_random_moments_lose_nothing_and_leave_no_orphan(tmp_path, tiny):
    rng = random.Random(int(os.environ.get("AIIMG_KILL_SEED", "20261204")))
    ids = real_drafts(tmp_path, tiny, 4)
    content = Content(tmp_path / "content")
    counts = {draft_id: rng.choice([1, 2, 3]) for draft_id in ids}
    for draft_id, count in counts.items():
        (content.draft_folder(draft_id) / "seed.txt").write_text(f"count = {count}\n")
    config_path = two_workers(tmp_path)
    proc = start(config_path, "run", "--max-drafts", "6")
    seen, kills = set(), 0
    try:
        while kills < 6:  # while models load, mid-draft, mid-variation, between jobs: wherever it lands
            pids = wait_for(lambda: worker_pids(content, proc.pid), timeout=180, what="a worker", proc=proc)
            seen.update(pids)
            time.sleep(rng.uniform(0.2, 2.0))
            victim = rng.choice(pids)
            if psutil.pid_exists(victim):
                os.kill(victim, signal.SIGKILL)
                kills += 1
            if kills == 1:
                report = aiimg(config_path, "status").stdout
        wait_for(
            lambda: (
                all(content.read_work(d).done(1) for d in ids if content.work_path(d).exists())
                and all(content.work_path(d).exists() for d in ids)
            ),
            timeout=300,
            what="every seed's variations",
            proc=proc,
        )
        seen.update(worker_pids(content, proc.pid))
    finally:
        out = stop(proc)
    assert proc.returncode == 0, out
    assert "died" in out and "starting worker" in out
    # `aiimg status` meanwhile: each worker, its device, what it did
    lines = [line for line in report.splitlines() if line.startswith("  cpu#")]
    assert "workers:        2" in report and len(lines) == 2, report
    assert all(" cpu " in line and "image(s) made" in line for line in lines), report
    assert_one_set_each(content, counts)
    assert_everything_readable(content)
    assert len(seen) >= 3 and not [p for p in seen if psutil.pid_exists(p)]  # no worker outlives its owner


def test_an_owner_killed_with_kill_9_takes_its_workers_with_it_and_a_restart_redoes_the_rest(tmp_path, tiny):
    (draft_id,) = real_drafts(tmp_path, tiny, 1)
    content = Content(tmp_path / "content")
    (content.draft_folder(draft_id) / "seed.txt").write_text("count = 4")
    config_path = two_workers(tmp_path, TWO.replace("areas = [102400]", "areas = [262144]"))
    proc = start(config_path, "run", "--max-drafts", "0")
    try:
        pids = wait_for(lambda: len(worker_pids(content, proc.pid)) == 2 and worker_pids(content, proc.pid), proc=proc)
        wait_for(lambda: content.work_path(draft_id).exists() and content.read_work(draft_id).variations, proc=proc)
    finally:
        proc.kill()  # mid-round: some variations recorded, two in flight
        proc.wait()
    wait_for(lambda: not [p for p in pids if psutil.pid_exists(p)], timeout=15, what="the workers to exit")
    made = len(content.read_work(draft_id).variations)
    assert 1 <= made < 4
    again = aiimg(config_path, "vary")
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"made 0 draft(s), {4 - made} variation(s)" in again.stdout  # only what was not recorded
    assert_one_set_each(content, {draft_id: 4})
    assert_everything_readable(content)


def test_with_every_worker_drafting_a_seed_stops_one_draft_not_both(tmp_path, tiny):
    (draft_id,) = real_drafts(tmp_path, tiny, 1)
    content = Content(tmp_path / "content")
    trace = tmp_path / "trace.jsonl"
    proc = start(two_workers(tmp_path, SLOW), "run", env={"AIIMG_TRACE": str(trace)})
    try:
        busy = lambda: [w for w in (content.read_status() or {}).get("workers", []) if w["job"].startswith("draft")]  # noqa: E731
        wait_for(lambda: len(busy()) == 2, timeout=180, what="both workers drafting", proc=proc)
        time.sleep(1.0)  # some steps in
        (content.draft_folder(draft_id) / "seed.txt").write_text("count = 1")
        wait_for(lambda: content.work_path(draft_id).exists() and content.read_work(draft_id).done(1), timeout=120)
    finally:
        out = stop(proc)
    assert proc.returncode == 0, out
    names = [e["event"] for e in events(trace)]
    marked, first_step = names.index("marker_event"), names.index("variation_first_step")
    if "draft_saved" in names[marked:first_step] and "draft_preempted" not in names:
        return  # a draft happened to end as the seed came: its worker took the variation, none had to stop
    assert names.count("draft_preempted") == 1  # one variation waited: one draft gave way, the other went on
    assert marked < names.index("draft_preempted") < first_step
    assert "1 draft(s) preempted by seeds" in out


def one_draft(tmp_path, tiny):
    """An in-process studio, started, with one draft made (close it)."""
    cfg = config.load(write_tree(tmp_path))
    studio = Studio(cfg, Content(cfg.content_dir).ensure(), model=tiny)
    studio.start()
    studio.run(max_drafts=1, once=True, only=set())
    studio.drain()
    (draft,) = studio.content.drafts()
    return studio, studio.content, draft


def test_a_result_from_a_worker_declared_dead_is_dropped_and_its_job_made_again(tmp_path, tiny):
    studio, content, draft = one_draft(tmp_path, tiny)
    try:
        (draft.folder / "seed.txt").write_text("count = 1")
        worker = studio.workers[0]
        real, declared = variations.make, threading.Event()

        def make(*args, **kwargs):  # the owner gives up on the worker mid-job (a silent machine, say)
            if not declared.is_set():
                declared.set()
                studio.events.put(Died(worker, "no answer"))
                time.sleep(0.5)  # the owner requeues the job before this late result arrives
            return real(*args, **kwargs)

        variations.make = make
        try:
            studio.run(once=True, drafting=False)
        finally:
            variations.make = real
    finally:
        studio.close()
    work = content.read_work(draft.id)
    assert [v.index for v in work.variations] == [1] and studio.made["variations"] == 1
    assert worker.deaths == 1 and worker.state == "idle"  # taken back once it answered again


def test_a_worker_lost_after_its_seed_was_cancelled_has_nothing_made_again(tmp_path, tiny, monkeypatch):
    from pipeline import rounds

    studio, content, draft = one_draft(tmp_path, tiny)
    try:
        marker = draft.folder / "seed.txt"
        marker.write_text("count = 2")
        worker, real, cancels, made = studio.workers[0], variations.make, [], []

        def make(*args, **kwargs):  # seed.txt removed mid-variation, then the worker is lost
            made.append(1)
            marker.unlink()
            studio.on_change([marker])
            wait_for(lambda: [s.ended for s in list(studio.serving.values())] == ["cancelled"], 30)
            studio.events.put(Died(worker, "no answer"))
            time.sleep(0.5)  # the owner handles the death before this late result arrives
            return real(*args, **kwargs)

        real_cancel = rounds.cancel
        monkeypatch.setattr(variations, "make", make)
        monkeypatch.setattr(rounds, "cancel", lambda content, plan: cancels.append(plan) or real_cancel(content, plan))
        studio.run(once=True, drafting=False)
    finally:
        studio.close()
    assert len(made) == 1 and len(cancels) == 1  # cancelled once; the lost variation not made again
    assert studio.serving == {} and not studio.queue and content.read_work(draft.id).variations == []


@pytest.mark.parametrize(
    "devices,gpus,expected",
    [
        (["auto"], 0, [""]),  # no GPU: one worker in this process on [model] device
        (["auto"], 1, [""]),  # one GPU: the same, no subprocess for nothing
        (["auto"], 4, ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]),  # a box of 4: 4 workers, no other change
        (["cuda:1", "cuda:3"], 4, ["cuda:1", "cuda:3"]),
    ],
)
def test_devices_resolve_to_one_worker_each(devices, gpus, expected, monkeypatch, cfg):
    from pipeline import workers

    monkeypatch.setattr(workers, "_cuda_count", lambda: gpus)
    assert workers.resolve_devices(devices) == expected
    made = workers.create(config.override(cfg, run__devices=devices))
    wanted = ["in-process"] if expected == [""] else ["subprocess"] * len(expected)
    assert [w.transport for w in made] == wanted


def test_a_bad_model_fails_at_start_naming_it_from_every_worker(tmp_path):
    config_path = two_workers(tmp_path, TWO.replace("[prompt]", '[model]\nid = "nowhere/such-model"\n[prompt]'))
    result = aiimg(config_path, "run", "--once")
    assert result.returncode == 1 and "nowhere/such-model" in result.stderr and "not in the local" in result.stderr
    assert "no worker could start" not in result.stderr  # one reason, said once, not once per worker
