"""Workers benchmark: several devices on one content folder, measured side by side in one run.

1. throughput: drafts per minute with 2 local worker processes against 1 worker (the in-process
   one, and a single local process), tiny model, one torch thread each. Goal (2 cores): >= 1.8x.
2. dispatch overhead per image: the same drafts on one local worker process, and on one Ray actor
   (a local Ray cluster), against the in-process worker. Goals: <= 1.03 and <= 1.05.
   For 1 and 2 every configuration is a Studio in this process, started once (start-up is
   measured apart, in 4), and they take turns: round after round of N drafts each, so that the
   machine's noise falls on all of them alike. Same draft size (aspect 1:1) and steps for all.
3. seed latency with every worker drafting: `aiimg run` with 2 workers (local processes; Ray
   actors); once both are mid-draft, seed.txt is written; the time from then to the first
   denoising step of the variation (AIIMG_TRACE), against one draft step. Goals: local < 1 step
   + 0.5 s, Ray < 1 step + 1.0 s.
4. start-up and memory: from `aiimg run` to every worker ready, and the resident memory (RSS and
   PSS) of the owner, of each worker process and, with Ray, of Ray's own services.

Usage: python bench/workers.py [--rounds 4] [--drafts 6] [--steps 10] [--seeds 5] [--no-ray] [--turns-only]
Results: bench/results/workers.json; bench/README.md keeps the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench/results/workers.json"
os.environ.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TRANSFORMERS_VERBOSITY="error", RAY_DEDUP_LOGS="0")
sys.path.insert(0, str(ROOT))

CONFIGS = {  # name -> [run] lines
    "in-process": "",
    "local x1": 'devices = ["cpu"]\n',  # one entry: in-process too; made a subprocess below
    "local x2": 'devices = ["cpu", "cpu"]\n',
    "ray x1": 'ray_address = "local"\nray_workers = 1\n',
    "ray x2": 'ray_address = "local"\nray_workers = 2\n',
}


def tree(folder: Path, run: str, steps: int, aspect: str = '["1:1"]', count: int = 1) -> Path:
    (folder / "content" / "prompts").mkdir(parents=True, exist_ok=True)
    path = folder / "aiimg.toml"
    path.write_text(
        f'[prompt]\ntemplate = "masterpiece, {{red|blue|silver}} hair, night city"\n'
        f"[draft]\nsteps = {steps}\naspect = {aspect}\n[variation]\ncount = {count}\n"
        f"[score]\nenabled = false\n[run]\nrescan_seconds = 2.0\n{run}"
    )
    return path


# -- 1 and 2: throughput and dispatch overhead, in turns ------------------------------------------


def studio_for(work: Path, name: str, steps: int):
    from pipeline import config
    from pipeline.content import Content
    from pipeline.studio import Studio
    from pipeline.workers.local import LocalWorker

    cfg = config.load(tree(work / name.replace(" ", "-"), CONFIGS[name], steps))
    # one device is in-process by design: "local x1" is the subprocess path alone, chosen here
    given = [LocalWorker(cfg, "cpu")] if name == "local x1" else None
    studio = Studio(cfg, Content(cfg.content_dir).ensure(), given=given)
    studio.start()
    studio.wait_for_workers()
    return studio


def turns(work: Path, names: list[str], rounds: int, drafts: int, steps: int) -> dict:
    import torch

    torch.set_num_threads(1)
    studios = {name: studio_for(work, name, steps) for name in names}
    seconds = {name: [] for name in names}
    try:
        for r in range(rounds):
            for name, studio in studios.items():
                started = time.perf_counter()
                studio.run(max_drafts=drafts, once=True, only=set())
                studio.drain()  # the writes count
                seconds[name].append(time.perf_counter() - started)
                print(f"  round {r + 1}: {name:<10} {drafts} drafts in {seconds[name][-1]:6.2f} s", flush=True)
    finally:
        for studio in studios.values():
            studio.close()
    per_image = {name: sum(s) / (rounds * drafts) for name, s in seconds.items()}
    return {"rounds": rounds, "drafts_per_round": drafts, "steps": steps, "seconds": seconds, "per_image_s": per_image}


# -- 3 and 4: seed latency, start-up and memory of a real `aiimg run` -----------------------------


def latency(work: Path, name: str, seeds: int, steps: int, count: int = 1) -> dict:
    """``count``: variations a seed asks for: with 1, one draft stops and the others draft on
    beside its first variation; with 3 (the default of [variation] count), all of them stop."""
    import psutil

    from pipeline.content import Content

    folder = work / f"latency-{name.replace(' ', '-')}-{count}"
    config = tree(folder, CONFIGS[name], steps, aspect='["2:3", "3:2"]', count=count)
    trace = folder / "trace.jsonl"
    content = Content(folder / "content")
    began = time.perf_counter()
    proc = psutil.Popen(
        [sys.executable, "-m", "pipeline.cli", "--config", str(config), "run"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        env={**os.environ, "AIIMG_TRACE": str(trace)},
    )
    try:
        workers = _wait(lambda: _ready_workers(content), 600)
        startup = time.perf_counter() - began
        memory = _memory(proc, workers)
        samples = [_one_seed(content, trace, len(workers)) for _ in range(seeds)]
    finally:
        proc.terminate()
        proc.wait(timeout=120)
    recipes = [json.loads(p.read_text()) for p in content.drafts_dir.glob("*/*/draft.json")]
    step = statistics.median(r["seconds"] / r["steps"] for r in recipes)
    return {
        "workers": len(workers),
        "startup_s": round(startup, 2),
        "memory_mb": memory,
        "samples_s": [round(s, 3) for s in samples],
        "median_s": round(statistics.median(samples), 3),
        "worst_s": round(max(samples), 3),
        "draft_step_s": round(step, 3),
    }


def _ready_workers(content) -> list[dict]:
    status = content.read_status() or {}
    found = status.get("workers") or []
    return found if found and all(w["state"] in ("idle", "busy") for w in found) else []


def _one_seed(content, trace: Path, workers: int) -> float:
    """Wait until every worker is mid-draft, write seed.txt beside a finished draft, return the
    seconds to the first denoising step of its variation."""
    target = _wait(lambda: _unmarked(content), 600)
    _wait(lambda: _all_drafting(content, workers), 600)
    time.sleep(1.0)  # some steps into the drafts
    t0 = time.time()
    (target / "seed.txt").write_text("")
    return _wait(lambda: _first_step_after(trace, t0), 300) - t0


def _unmarked(content) -> Path | None:
    for recipe in sorted(content.drafts_dir.glob("*/*/draft.json")):
        if not any(recipe.parent.glob("seed*")):
            return recipe.parent
    return None


def _all_drafting(content, workers: int) -> bool:
    found = (content.read_status() or {}).get("workers") or []
    return sum(w["job"].startswith("draft") for w in found) == workers


def _first_step_after(trace: Path, t0: float) -> float | None:
    for line in trace.read_text().splitlines():
        e = json.loads(line)
        if e["event"] == "variation_first_step" and e["t"] > t0:
            return e["t"]
    return None


def _memory(proc, workers: list[dict]) -> dict:
    """MB resident: the owner, each worker process, and every other process under the owner
    (Ray's services); PSS beside RSS, as shared pages (torch's code) are counted once in PSS."""
    import psutil

    worker_pids = {w["pid"] for w in workers} - {proc.pid}
    out = {"owner": _mb(proc), "workers": [_mb(psutil.Process(p)) for p in sorted(worker_pids)]}
    others = [p for p in proc.children(recursive=True) if p.pid not in worker_pids]
    if others:
        out["other_processes"] = {"count": len(others), **_sum([_mb(p) for p in others])}
    return out


def _mb(p) -> dict:
    info = p.memory_full_info()
    return {"rss": round(info.rss / 1e6), "pss": round(info.pss / 1e6)}


def _sum(rows: list[dict]) -> dict:
    return {"rss": sum(r["rss"] for r in rows), "pss": sum(r["pss"] for r in rows)}


def _wait(probe, timeout: float):
    from tests.conftest import wait_for  # the tests' poll: a probe, a deadline

    return wait_for(probe, timeout)


# -- report ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--drafts", type=int, default=6, help="drafts per configuration per round")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--turns-only", action="store_true", help="1-2 alone (throughput and overhead)")
    args = parser.parse_args()
    ray = not args.no_ray
    names = ["in-process", "local x1", "local x2", *(["ray x1"] if ray else [])]
    with tempfile.TemporaryDirectory(prefix="aiimg-bench-") as tmp:
        work = Path(tmp)
        print("1-2. throughput and dispatch overhead, configurations in turns", flush=True)
        results = {"cores": os.cpu_count(), "turns": turns(work, names, args.rounds, args.drafts, args.steps)}
        if ray:
            import ray as _ray

            _ray.shutdown()  # the `aiimg run` below starts its own
        latencies = [("in-process", 1), ("local x2", 1), ("local x2", 3), *([("ray x2", 1)] if ray else [])]
        for name, count in [] if args.turns_only else latencies:
            print(f"3-4. seed latency, start-up and memory: {name}, seeds of {count}", flush=True)
            key = f"latency {name}" + (f" count {count}" if count != 1 else "")
            results[key] = latency(work, name, args.seeds, 25, count)
            print(f"  {json.dumps(results[key])}", flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    path = RESULTS.with_name("workers-turns.json") if args.turns_only else RESULTS
    path.write_text(json.dumps(results, indent=2) + "\n")
    report(results)


def report(results: dict) -> None:
    per = results["turns"]["per_image_s"]
    print(f"\n1. throughput   2 local / in-process = {per['in-process'] / per['local x2']:.3f}  (goal >= 1.8)")
    print(f"                2 local / 1 local    = {per['local x1'] / per['local x2']:.3f}")
    print(f"2. overhead     1 local / in-process = {per['local x1'] / per['in-process']:.3f}  (goal <= 1.03)")
    if "ray x1" in per:
        print(f"                1 Ray / in-process   = {per['ray x1'] / per['in-process']:.3f}  (goal <= 1.05)")
    seconds = results["turns"]["seconds"]
    for name in ("local x2", "local x1", "ray x1"):
        if name in seconds:  # a round's configurations ran minutes apart at most: the fairest pairs
            ratios = [b / a for a, b in zip(seconds["in-process"], seconds[name])]
            print(f"   {name} / in-process, round by round: {' '.join(f'{r:.3f}' for r in ratios)}")
    for name, slack in (("in-process", 0.5), ("local x2", 0.5), ("local x2 count 3", 0.5), ("ray x2", 1.0)):
        r = results.get(f"latency {name}")
        if r:
            goal = r["draft_step_s"] + slack
            print(
                f"3. latency {name:<10} worst {r['worst_s']} s, median {r['median_s']} s; "
                f"one step {r['draft_step_s']} s + {slack} s = {goal:.3f} s "
                f"-> worst/goal {r['worst_s'] / goal:.3f} (goal < 1)"
            )
            print(f"4. start-up {name:<9} {r['startup_s']} s; memory MB {json.dumps(r['memory_mb'])}")


if __name__ == "__main__":
    main()
