"""The worker in the owner's own process: one device, no copy of any image, no pipe.

The model is loaded on a thread of this process and jobs run on that thread, so the owner's
thread stays free to watch the disk and write what was made while the next image is drawn.
A job is stopped through a flag the step callback reads; the next variation's draft is encoded
on the runner's second thread while a preempted draft finishes its step.
"""

from __future__ import annotations

import os
import queue
import threading

from pipeline.workers import Died, Finished, Ready, Worker, explain
from pipeline.workers.jobs import Job, Runner

_QUIT = None


class InProcessWorker(Worker):
    transport = "in-process"

    def __init__(self, cfg, device: str = "", model=None):
        super().__init__(device or cfg.model.device, device or cfg.model.device)
        self.cfg, self.model = cfg, model
        self.pid = os.getpid()
        self.inbox: queue.Queue = queue.Queue()
        self.cancel = 0  # the id of the job to stop (0: none); read after every step
        self.runner: Runner | None = None
        self.thread: threading.Thread | None = None

    def start(self, events) -> None:
        if self.thread is not None and self.thread.is_alive():  # declared dead, yet here: it carries on
            events.put(Ready(self, self.runner.model.info()))
            return
        self.thread = threading.Thread(target=self._loop, args=(events,), name=f"aiimg-worker-{self.name}", daemon=True)
        self.thread.start()

    def _loop(self, events) -> None:
        if not self._load(events):
            return
        why = ""
        try:
            while (job := self.inbox.get()) is not _QUIT:
                events.put(Finished(self, self.runner.run(job, lambda job=job: self.cancel == job.id)))
        except BaseException as exc:  # out of memory mid-job...: the owner runs the job again, later
            why = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self.runner.close()
            if why:  # said once the model is let go, so that a restart starts a thread of its own
                self.thread = None
                events.put(Died(self, why))

    def _load(self, events) -> bool:
        from pipeline import models

        try:
            model = self.model or models.load(self.cfg.model, self.device if self.device != "auto" else "")
        except Exception as exc:  # a bad model file, a broken install, no memory...: said, not raised
            events.put(Died(self, explain(exc), at_start=True))
            return False
        self.device = model.device
        if self.name == "auto":
            self.name = model.device
        self.runner = Runner(self.cfg, model)
        events.put(Ready(self, model.info()))
        return True

    def submit(self, job: Job) -> None:
        self.inbox.put(job)

    def stop_job(self) -> None:
        if self.job is not None:
            self.cancel = self.job.id

    def prefetch(self, job: Job) -> None:
        if self.runner is not None:
            self.runner.prefetch(job)

    def progress(self) -> float:
        done, steps = self.runner.progress if self.runner else (0, 0)
        return done / steps if steps else 0.0

    def close(self) -> None:
        self.stop_job()
        self.inbox.put(_QUIT)
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout=60)
