"""`aiimg run` as a real subprocess on a tmp_path content folder: the loop, signals, locking, kill -9."""

import json
import os
import random
import signal
import time

from PIL import Image

from pipeline import metadata
from pipeline.content import Content
from tests.conftest import FAST_TOML, aiimg, start, wait_for, write_tree

# Drafts big enough that one takes a few seconds: a seed dropped meanwhile must preempt it.
SLOW_DRAFTS = FAST_TOML.replace("area = 65536\nsteps = 2", "area = 640000\nsteps = 12")


def loop_ready(content: Content, proc) -> bool:
    status = content.read_status()
    return bool(status and status["pid"] == proc.pid and status["doing"] != "loading model")


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def events(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def stop(proc, sig=signal.SIGTERM, timeout=60) -> str:
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=timeout)
    return out


def test_seed_dropped_while_drafting_preempts_the_draft_and_gets_three_variations(tmp_path):
    config = write_tree(tmp_path, SLOW_DRAFTS)
    content = Content(tmp_path / "content")
    trace = tmp_path / "trace.jsonl"
    proc = start(config, "run", env={"AIIMG_TRACE": str(trace)})
    try:
        first = wait_for(lambda: content.drafts(), timeout=180, what="the first draft", proc=proc)[0]
        # the next draft is now in progress; the creator marks the first one
        (first.folder / "Seed.txt").write_text("")
        wait_for(
            lambda: len(content.read_work(first.id).variations) == 3 and content.read_work(first.id).done(1),
            timeout=180,
            what="3 variations",
            proc=proc,
        )
    finally:
        out = stop(proc)
    assert proc.returncode == 0, out
    assert "made" in out and "preempted by seeds" in out
    names = [e["event"] for e in events(trace)]
    assert names.index("marker_event") < names.index("draft_preempted") < names.index("variation_first_step")
    draft = content.read_draft(first.id)
    for v in content.read_work(first.id).variations:
        with Image.open(content.work_folder(first.id) / v.file) as img:
            assert img.size == (v.width, v.height)
            assert metadata.parse_parameters(img.text["parameters"])["Seed"] == str(v.seed)
        assert abs(v.width / v.height / (draft.width / draft.height) - 1) <= 0.03
    # every draft that exists is whole: the preempted one left nothing behind
    for d in content.drafts():
        assert json.loads(d.recipe_path.read_text())["id"] == d.id and d.image.is_file()


def test_once_makes_the_drafts_asked_for_serves_seeds_and_exits(tmp_path):
    config = write_tree(tmp_path)
    result = aiimg(config, "draft", "-n", "1")
    assert result.returncode == 0, result.stderr
    content = Content(tmp_path / "content")
    (d,) = content.drafts()
    (d.folder / "seed.txt.txt").write_text("count = 2\n")
    result = aiimg(config, "run", "--max-drafts", "2", "--once")
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(content.drafts()) == 3 and len(content.read_work(d.id).variations) == 2
    assert "made 2 draft(s), 2 variation(s)" in result.stdout
    # a rerun finds nothing to do, and says so
    again = aiimg(config, "vary")
    assert again.returncode == 0 and "no seed waits (1 done already" in again.stdout


def test_drafting_pauses_at_the_cap_of_unseeded_drafts(tmp_path):
    config = write_tree(
        tmp_path, FAST_TOML.replace("rescan_seconds = 1.0", "rescan_seconds = 1.0\nmax_unseeded_drafts = 2")
    )
    result = aiimg(config, "run", "--once")
    assert result.returncode == 0, result.stderr
    assert len(Content(tmp_path / "content").drafts()) == 2
    status = aiimg(config, "status").stdout
    assert "drafts:         2 (2 without a seed)" in status and "loop:           not running" in status


def test_a_second_run_on_the_same_content_refuses_clearly(tmp_path):
    config = write_tree(tmp_path)
    content = Content(tmp_path / "content")
    proc = start(config, "run", "--max-drafts", "0")
    try:
        wait_for(lambda proc=proc: loop_ready(content, proc), timeout=120, what="the loop", proc=proc)
        wait_for(lambda: "idle" in content.read_status()["doing"], timeout=60, what="idle", proc=proc)
        spent = cpu_seconds(proc.pid)
        time.sleep(3)
        idle_cpu = cpu_seconds(proc.pid) - spent
        second = aiimg(config, "run", "--once")
        status = aiimg(config, "status").stdout
    finally:
        out = stop(proc, signal.SIGINT)
    assert second.returncode == 1
    assert f"busy: pid {proc.pid} (`aiimg run`) is generating here" in second.stderr
    assert f"pid {proc.pid}: idle" in status
    assert idle_cpu < 0.3, f"an idle loop spent {idle_cpu:.2f} s of CPU in 3 s"
    assert proc.returncode == 0 and "stopping" in out


def test_kill_9_at_random_moments_loses_nothing_and_every_seed_gets_one_set(tmp_path):
    config = write_tree(tmp_path)
    content = Content(tmp_path / "content")
    rng = random.Random(int(os.environ.get("AIIMG_KILL_SEED", "20261125")))
    marked: dict[str, int] = {}
    for _ in range(6):
        proc = start(config, "run", "--max-drafts", "4")
        wait_for(lambda proc=proc: loop_ready(content, proc), timeout=120, what="the loop", proc=proc)
        for d in content.drafts():  # the creator marks some drafts while the loop runs
            if d.id not in marked and rng.random() < 0.5:
                marked[d.id] = rng.choice([1, 2, 3])
                (d.folder / "seed.txt").write_text(f"count = {marked[d.id]}\n")
        time.sleep(rng.uniform(0.05, 2.5))
        proc.kill()  # SIGKILL: no clean-up of any kind
        proc.wait()
    assert marked, "the test marked no seed; change AIIMG_KILL_SEED"
    final = aiimg(config, "vary")
    assert final.returncode == 0, final.stdout + final.stderr
    assert_one_set_each(content, marked)
    assert_everything_readable(content)


def assert_one_set_each(content: Content, counts: dict[str, int]) -> None:
    """Every seed got one round of exactly ``counts[draft id]`` variations: none missing, none twice."""
    for draft_id, count in counts.items():
        work = content.read_work(draft_id)
        assert len(work.rounds) == 1 and [v.index for v in work.variations] == list(range(1, count + 1))
        made = sorted(p.name for p in content.work_folder(draft_id).glob("*.png"))
        assert made == sorted([*(f"{i}.png" for i in range(1, count + 1)), "draft.png"])


def assert_everything_readable(content: Content) -> None:
    for path in content.root.rglob("*"):
        if path.is_file() and path.name.endswith(".tmp"):
            raise AssertionError(f"temp file left behind: {path}")
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".png":
            with Image.open(path) as img:
                img.load()
