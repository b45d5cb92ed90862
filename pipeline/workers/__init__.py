"""Workers: a model on one device each, driven by the one owner of content/ (studio.py).

One interface, three transports, chosen by the config (:func:`create`):

1. :class:`~pipeline.workers.inprocess.InProcessWorker`: a thread of the owner's process, the
   path of one device (``[run] devices = "auto"`` on a machine with one GPU or none);
2. :class:`~pipeline.workers.local.LocalWorker`: one subprocess per device
   (``[run] devices = ["cuda:0", "cuda:1"]``, or ``"auto"`` with 2+ GPUs), standard library only;
3. :class:`~pipeline.workers.cluster.RayWorker`: one Ray actor per GPU of a cluster
   (``[run] ray_address``, extra ``aiimg[ray]``).

A worker takes one job at a time (jobs.py: one image, its recipe planned by the owner) and
posts what happens to the owner's event queue: :class:`Ready` once its model is loaded (with
the :class:`~pipeline.models.ModelInfo` the owner plans recipes with), :class:`Finished` with each
job's result, :class:`Died` when its process, actor or machine is gone (its job is the owner's to
run again). Workers never touch content/. ``stop_job`` asks the job in progress to stop: a draft
at the UNet's next block, a variation after its step (the owner preempts drafts only, and stops
variations only at shutdown); ``prefetch`` hints at the variation it will get next, so its draft
is encoded while the draft in progress winds down.
"""

from __future__ import annotations

import time
import traceback
from abc import ABC, abstractmethod
from dataclasses import dataclass

from pipeline.errors import AiimgError
from pipeline.workers.jobs import Job, Result

__all__ = ["Worker", "Ready", "Finished", "Died", "Job", "Result", "create", "resolve_devices"]


@dataclass
class Ready:
    worker: Worker
    info: object  # models.ModelInfo


@dataclass
class Finished:
    worker: Worker
    result: Result


@dataclass
class Died:
    worker: Worker
    why: str
    at_start: bool = False  # it never got its model loaded (a bad model, no such GPU...)


class Worker(ABC):
    """The owner's handle on one worker: what it is doing, for the scheduler and `aiimg status`."""

    transport = "?"

    def __init__(self, name: str, device: str):
        self.name, self.device = name, device
        self.state = "starting"  # starting | idle | busy | dead
        self.job: Job | None = None
        self.since = 0.0  # when the job in progress was handed over
        self.stopping = False  # asked to stop its job (a draft preempted)
        self.done = 0  # images made
        self.deaths = 0
        self.restart_at = 0.0  # dead: when the owner starts it again
        self.last_error = ""
        self.pid: int | None = None  # the process that holds the device, where it is known

    # -- the transport's part -------------------------------------------------------------------

    @abstractmethod
    def start(self, events) -> None:
        """Begin loading the model; post Ready or Died to ``events`` (a queue.Queue)."""

    @abstractmethod
    def submit(self, job: Job) -> None:
        """Hand over a job (the worker is idle); its result comes as Finished."""

    @abstractmethod
    def stop_job(self) -> None:
        """Ask the job in progress to stop (a draft within its step, a variation after it)."""

    @abstractmethod
    def prefetch(self, job: Job) -> None:
        """A hint: this variation comes next; encode its draft while the job in progress stops."""

    @abstractmethod
    def progress(self) -> float:
        """How far the job in progress is (steps done / steps); comparable between workers of one transport."""

    @abstractmethod
    def close(self) -> None:
        """Let go of the device: the worker's thread, process or actor ends."""

    # -- the owner's bookkeeping ----------------------------------------------------------------

    def take(self, job: Job) -> None:
        self.job, self.since, self.stopping, self.state = job, time.monotonic(), False, "busy"
        self.submit(job)

    def release(self) -> Job | None:
        job, self.job, self.stopping = self.job, None, False
        if self.state == "busy":
            self.state = "idle"
        return job

    def status(self) -> dict:
        return {
            "name": self.name,
            "device": self.device,
            "transport": self.transport,
            "state": self.state,
            "job": self.job.describe() if self.job else "",
            "done": self.done,
            "last_error": self.last_error,
            "pid": self.pid,
        }


def create(cfg, model=None) -> list[Worker]:
    """The workers the config asks for. ``model``: an already loaded models.Loaded for a single
    in-process worker (tests load the tiny model once)."""
    if cfg.run.ray_address:
        from pipeline.workers.cluster import ray_workers

        return ray_workers(cfg)
    devices = resolve_devices(cfg.run.devices)
    if len(devices) == 1:
        from pipeline.workers.inprocess import InProcessWorker

        return [InProcessWorker(cfg, devices[0], model)]
    from pipeline.workers.local import LocalWorker

    return [
        LocalWorker(cfg, device, f"{device}#{n}" if devices.count(device) > 1 else device)
        for n, device in enumerate(devices, 1)
    ]


def resolve_devices(devices: list[str]) -> list[str]:
    """``[run] devices`` as one device per worker; "" is ``[model] device`` (one worker, in this process)."""
    if devices != ["auto"]:
        return list(devices)
    count = _cuda_count()
    return [f"cuda:{i}" for i in range(count)] if count > 1 else [""]


def _cuda_count() -> int:
    import torch  # the studio has it; the gallery never gets here

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def first_ready(events, workers: list[Worker]):
    """Wait for the first worker to load its model; returns its Ready event. The events seen on the
    way are returned too, for the owner to handle. An AiimgError when every worker failed to start."""
    seen, failed = [], {}
    while True:
        event = events.get()
        if isinstance(event, Ready):
            return event, seen
        seen.append(event)
        if isinstance(event, Died):
            failed[event.worker.name] = event.why
            if len(failed) == len(workers):
                raise AiimgError(_start_failure(failed))


def explain(exc: BaseException) -> str:
    """Why a worker could not go on, for the owner's log: an AiimgError says it all; anything
    else comes with its traceback (call it in the ``except`` block)."""
    if isinstance(exc, AiimgError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"


def _start_failure(failed: dict[str, str]) -> str:
    reasons = set(failed.values())
    if len(reasons) == 1:
        return reasons.pop()
    return "no worker could start: " + "; ".join(f"{name}: {why}" for name, why in failed.items())
