"""Ray actors: workers on every GPU of a cluster of machines (``[run] ray_address``, ``aiimg[ray]``).

One actor per GPU (``num_gpus=1``: Ray shows it its GPU alone) loads the model and makes one
image per call; results come back through Ray's object store. The owner (studio.py) stays the
only writer of content/, on the machine it runs on; the other machines need aiimg installed
(the same version), the model and the LoRA and embedding folders at the same paths.

- **Preemption**: ``ray.cancel`` on the call in progress sets a flag that the runner reads
  between the UNet's blocks (``ray.get_runtime_context().is_canceled()``). Actors
  are threaded (two calls at a time) so that a ``prefetch`` call encodes the next variation's
  draft beside the draft being stopped.
- **Failures**: a dead actor fails its call (``ActorDiedError``), at once for a killed process,
  after Ray's health check (~15-55 s) for a machine that went silent; the owner runs the job
  again elsewhere and asks for a new actor, which starts when the cluster has a GPU for it.
  Actors die with the owner (they are not detached).
- **Security**: Ray runs code for anyone who reaches its ports. Across machines, keep the
  cluster on a private network and turn on token authentication on every node and here
  (``RAY_AUTH_MODE=token``, one token from ``ray get-auth-token --generate``); aiimg warns when
  it joins a remote cluster without it.

``ray_address = "local"`` starts Ray on this machine (one actor per GPU here, or
``[run] ray_workers`` CPU actors on a machine without one).
"""

from __future__ import annotations

import logging
import os
import threading

from pipeline.errors import AiimgError
from pipeline.workers import Died, Finished, Ready, Worker
from pipeline.workers.jobs import Job, Result, Runner

log = logging.getLogger("aiimg.workers")


class RayWorker(Worker):
    transport = "ray"

    def __init__(self, cfg, name: str, options: dict):
        super().__init__(name, "gpu" if options.get("num_gpus") else "cpu")
        self.cfg, self.options = cfg, options
        self.actor = None
        self.node = ""  # the Ray node id of the machine it runs on, once ready
        self.events = None
        self.call = None  # the ObjectRef of the job in progress

    def start(self, events) -> None:
        if self.actor is not None:  # the last one could not load its model: alive, it would keep its GPU
            self.close()
        self.events = events  # where the threads that wait on calls post what came of them
        self.actor = _actor_class().options(**self.options).remote(self.cfg)
        ref = self.actor.ready.remote()
        threading.Thread(target=self._await_ready, args=(events, ref), daemon=True).start()

    def _await_ready(self, events, ref) -> None:
        import ray

        try:
            info, where = ray.get(ref)
        except ray.exceptions.RayTaskError as exc:  # the model would not load there
            events.put(Died(self, _cause(exc), at_start=True))
            return
        except ray.exceptions.RayError as exc:
            events.put(Died(self, f"actor lost before it was ready: {_cause(exc)}", at_start=True))
            return
        self.node = where["node"]
        self.name = f"{self.name.split('@')[0]}@{self.node[:8]}"  # ray#2@3fa2c1d0: which machine it is on
        self.device, self.pid = where["device"], where["pid"]
        events.put(Ready(self, info))

    def submit(self, job: Job) -> None:
        self.call = self.actor.run.remote(job)
        threading.Thread(target=self._await_result, args=(self.events, job, self.call), daemon=True).start()

    def _await_result(self, events, job: Job, call) -> None:
        import ray

        try:
            result = ray.get(call)
        except ray.exceptions.TaskCancelledError:
            result = Result(job.id, stopped=True)
        except ray.exceptions.RayTaskError as exc:  # the call raised: the job failed, the actor lives
            result = Result(job.id, error=_cause(exc))
        except ray.exceptions.RayError as exc:  # the actor, its process or its machine is gone
            events.put(Died(self, _cause(exc)))
            return
        events.put(Finished(self, result))

    def stop_job(self) -> None:
        import ray

        if self.call is not None:
            ray.cancel(self.call)

    def prefetch(self, job: Job) -> None:
        if self.actor is not None:
            self.actor.prefetch.remote(job)

    def progress(self) -> float:
        import time

        return time.monotonic() - self.since  # Ray has no shared counter: the longest running is the furthest

    def close(self) -> None:
        import ray

        if self.actor is not None:
            ray.kill(self.actor)
            self.actor = None


def ray_workers(cfg) -> list[Worker]:
    """Connect to (or start) the cluster; one worker per GPU of it, or ``[run] ray_workers``."""
    ray = _ray()
    _connect(ray, cfg.run.ray_address)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    count = cfg.run.ray_workers or gpus
    if count == 0:
        raise AiimgError(
            f"[run] ray_address = {cfg.run.ray_address!r}: the cluster has no GPU; "
            f"set [run] ray_workers to the number of CPU workers wanted"
        )
    options = {"num_gpus": 1, "num_cpus": 0} if gpus else {"num_cpus": 1}
    return [RayWorker(cfg, f"ray#{n}", {**options, "max_concurrency": 2}) for n in range(1, count + 1)]


def _ray():
    try:
        import ray
    except ImportError:
        raise AiimgError("[run] ray_address is set but Ray is not installed: pip install 'aiimg[ray]'") from None
    return ray


def _connect(ray, address: str) -> None:
    if ray.is_initialized():
        return
    if address != "local" and os.environ.get("RAY_AUTH_MODE") != "token":
        log.warning(
            "joining the Ray cluster at %s without token authentication: anyone who reaches its ports can run "
            "code on it. Set RAY_AUTH_MODE=token (and the same token) on every node and here; see docs/workers.md",
            address,
        )
    try:
        ray.init(address=None if address == "local" else address, include_dashboard=False, log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise AiimgError(f"[run] ray_address = {address!r}: cannot join the Ray cluster ({exc})") from None


def _cause(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)
    text = str(cause) if cause is not None else str(exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


_ACTOR = None


def _actor_class():
    """The actor class, made remote on first use (Ray is imported only when a cluster is used)."""
    global _ACTOR
    if _ACTOR is None:
        import ray

        _ACTOR = ray.remote(_Actor)
    return _ACTOR


class _Actor:
    """Runs on a cluster node: the model on its device, one image per call."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.runner: Runner | None = None

    def ready(self):
        import ray

        from pipeline import models

        device = "cuda" if ray.get_gpu_ids() else "cpu"
        model = models.load(self.cfg.model, device)
        self.runner = Runner(self.cfg, model)
        node = ray.get_runtime_context().get_node_id()
        gpu = ",".join(str(g) for g in ray.get_gpu_ids())
        return model.info(), {"node": node, "device": f"cuda:{gpu}" if gpu else "cpu", "pid": os.getpid()}

    def run(self, job: Job) -> Result:
        import ray

        return self.runner.run(job, ray.get_runtime_context().is_canceled)

    def prefetch(self, job: Job) -> None:
        self.runner.prefetch(job)
