"""Ray actors as workers, on a local Ray cluster with two CPU actors (ray.init(num_cpus=2)) and the
real tiny model: the same pixels as one process, actors killed at random moments, preemption."""

import random
import threading
import time

import numpy as np
import psutil
import pytest
from PIL import Image

from pipeline import config, variations
from pipeline.content import Content
from pipeline.studio import Studio
from tests.conftest import FAST_TOML, real_drafts, wait_for
from tests.test_loop import assert_one_set_each, events

RAY = FAST_TOML.replace("[run]\n", '[run]\nray_address = "local"\nray_workers = 2\n')
SLOW = RAY.replace("area = 65536\nsteps = 2", "area = 409600\nsteps = 10")


@pytest.fixture(scope="module")
def cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def seeded(tmp_path, tiny, counts: list[int], toml: str = RAY):
    """Drafts made in-process (quick), marked with these counts; the Ray config beside them."""
    ids = real_drafts(tmp_path, tiny, len(counts))
    content = Content(tmp_path / "content")
    for draft_id, count in zip(ids, counts):
        (content.draft_folder(draft_id) / "seed.txt").write_text(f"count = {count}")
        time.sleep(0.01)  # markers in order
    path = tmp_path / "ray.toml"
    path.write_text(toml)
    return config.load(path), content, dict(zip(ids, counts))


def started(cfg, content) -> Studio:
    studio = Studio(cfg, content)
    studio.start()
    studio.wait_for_workers()
    assert [w.state for w in studio.workers] == ["idle", "idle"], [w.status() for w in studio.workers]
    return studio


def test_two_actors_make_a_seed_and_drafts_with_the_pixels_of_one_process(cluster, tmp_path, tiny):
    cfg, content, counts = seeded(tmp_path, tiny, [3])
    studio = started(cfg, content)
    try:
        studio.run(max_drafts=1, once=True)
    finally:
        studio.close()
    assert all(w.done >= 1 for w in studio.workers) and len({w.pid for w in studio.workers}) == 2
    ((draft_id, count),) = counts.items()
    work = content.read_work(draft_id)
    assert [v.index for v in work.variations] == [1, 2, 3] and len(content.drafts()) == 2
    source = Image.open(content.draft(draft_id).image).convert("RGB")
    for v in work.variations:
        with Image.open(content.variation_path(draft_id, v.file)) as img:
            assert np.array_equal(np.asarray(img.convert("RGB")), np.asarray(variations.make(tiny, source, v)))


def test_actors_killed_at_random_moments_have_their_variations_made_again(cluster, tmp_path, tiny):
    rng = random.Random(20261204)
    bigger = RAY.replace("areas = [102400]", "areas = [409600]")  # variations long enough to be killed in
    cfg, content, counts = seeded(tmp_path, tiny, [3, 2, 3, 3], bigger)
    studio = started(cfg, content)
    loop = threading.Thread(target=studio.run, kwargs={"max_drafts": 0, "once": True})
    loop.start()
    kills, seen = 0, {w.pid for w in studio.workers}
    try:
        while kills < 3 and loop.is_alive():
            time.sleep(rng.uniform(0.05, 0.6))
            seen.update(w.pid for w in studio.workers if w.pid)
            busy = [w for w in studio.workers if w.job is not None and w.actor is not None]
            if busy:
                cluster.kill(rng.choice(busy).actor)  # what a crashed process or a lost machine does to a call
                kills += 1
        loop.join(timeout=600)
    finally:
        studio.stopping = True
        loop.join(timeout=60)
        studio.close()
    assert kills == 3 and sum(w.deaths for w in studio.workers) == 3
    assert_one_set_each(content, counts)
    # no actor outlives the loop: the killed ones, and the ones closed
    wait_for(lambda: not [p for p in seen if psutil.pid_exists(p)], timeout=30, what="the actors to exit")


def test_a_seed_cancels_a_draft_in_progress_on_an_actor(cluster, tmp_path, monkeypatch, tiny):
    trace = tmp_path / "trace.jsonl"
    monkeypatch.setenv("AIIMG_TRACE", str(trace))  # the owner's events: marker seen, draft stopped, draft saved
    cfg, content, counts = seeded(tmp_path, tiny, [1], SLOW)
    (draft_id,) = counts
    marker = content.draft_folder(draft_id) / "seed.txt"
    marker.rename(marker.with_name("later.txt"))  # marked once both actors are drafting
    studio = started(cfg, content)
    loop = threading.Thread(target=studio.run, kwargs={"max_drafts": 2, "once": True})
    loop.start()
    try:
        deadline = time.monotonic() + 120
        while not all(w.job is not None and w.job.kind == "draft" for w in studio.workers):
            assert time.monotonic() < deadline and loop.is_alive()
            time.sleep(0.05)
        time.sleep(1.0)
        marker.with_name("later.txt").rename(marker)
        studio.on_change([marker])  # what the watcher says
        loop.join(timeout=600)
    finally:
        studio.stopping = True
        loop.join(timeout=60)
        studio.close()
    assert [v.index for v in content.read_work(draft_id).variations] == [1] and studio.made["drafts"] == 2
    names = [e["event"] for e in events(trace)]
    # one variation waited: one draft gave way (none, if a draft happened to end just as the seed came)
    assert studio.made["preempted"] == names.count("preempt") <= 1
    if studio.made["preempted"]:
        assert names.index("marker_event") < names.index("preempt") < names.index("draft_preempted")


def test_an_actor_that_could_not_load_its_model_is_let_go_before_its_next_try(cluster, tmp_path):
    import queue

    from pipeline.workers import Died
    from pipeline.workers.cluster import RayWorker

    path = tmp_path / "bad.toml"
    path.write_text(RAY.replace("[prompt]", '[model]\nid = "nowhere/such-model"\n[prompt]'))
    cfg = config.load(path)
    worker, events = RayWorker(cfg, "ray#1", {"num_cpus": 1, "max_concurrency": 2}), queue.Queue()
    try:
        worker.start(events)
        died = events.get(timeout=120)
        assert isinstance(died, Died) and died.at_start and "nowhere/such-model" in died.why
        first = worker.actor
        assert not gone(cluster, first)  # alive, holding its CPU (or GPU)
        worker.start(events)  # the owner's next try
        wait_for(lambda: gone(cluster, first), 60, "the first actor killed, not left holding its device")
        assert isinstance(events.get(timeout=120), Died)
    finally:
        worker.close()


def gone(ray, actor) -> bool:
    """Whether the actor is dead (a kill takes effect a moment after ray.kill returns)."""
    try:
        ray.get(actor.__ray_ready__.remote(), timeout=30)
    except ray.exceptions.RayActorError:
        return True
    return False
