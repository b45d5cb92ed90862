"""One subprocess per device (``[run] devices = ["cuda:0", "cuda:1"]``), standard library only.

Each worker is a ``multiprocessing`` process started with *spawn* (the same on Linux, macOS and
Windows; CUDA cannot be forked) that sees only its own GPU (``CUDA_VISIBLE_DEVICES``) and loads
its own copy of the model. Owner and worker talk over one pipe::

    owner -> worker   ("job", Job)        make this image (the worker is idle)
                      ("prefetch", Job)   this variation comes next: encode its draft now
                      ("quit", None)      finish and exit
    worker -> owner   ("ready", ModelInfo) | ("failed", why)   once, after loading the model
                      ("result", Result)   for every job

and share two numbers: the id of the job the owner wants stopped (the step callback reads it
after every denoising step) and the steps done of the job in progress (which draft is the least
advanced). The worker exits as soon as its pipe to the owner breaks, so an owner killed with
``kill -9`` leaves no process holding a GPU; the owner sees a worker's death as the end of the
pipe, and runs its job again elsewhere.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import signal
import threading

from pipeline.workers import Died, Finished, Ready, Worker, explain
from pipeline.workers.jobs import Job, Runner

PARENT_CHECK_S = 2.0  # how often a worker looks for its owner when the pipe is quiet


class LocalWorker(Worker):
    transport = "subprocess"

    def __init__(self, cfg, device: str, name: str = ""):
        super().__init__(name or device, device)
        self.cfg = cfg
        self.process = None
        self.conn = None
        self.lock = threading.Lock()  # one message at a time on the pipe

    def start(self, events) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, theirs = ctx.Pipe()
        self.cancel = ctx.Value("q", 0, lock=False)
        self.steps = ctx.Array("i", 2, lock=False)  # (steps done, steps) of the job in progress
        args = (theirs, self.device, self.cfg, self.cancel, self.steps, os.getpid())
        self.process = ctx.Process(target=main, args=args, name=f"aiimg-worker-{self.name}", daemon=True)
        self.process.start()
        self.pid = self.process.pid
        theirs.close()  # the pipe ends when the worker does: its death is an end of file here
        threading.Thread(target=self._read, args=(events,), name=f"aiimg-reader-{self.name}", daemon=True).start()

    def _read(self, events) -> None:
        why, ready = "", False
        while True:
            try:
                kind, payload = self.conn.recv()
            except (EOFError, OSError):
                break
            if kind == "ready":
                ready = True
                events.put(Ready(self, payload))
            elif kind == "result":
                events.put(Finished(self, payload))
            elif kind == "failed":
                why = payload
        self.process.join(timeout=10)
        code = self.process.exitcode
        events.put(Died(self, why or f"worker process {self.process.pid} ended (exit code {code})", not ready))

    def _send(self, message: tuple) -> None:
        try:
            with self.lock:
                self.conn.send(message)
        except (OSError, ValueError):
            pass  # the worker is gone: its death reaches the owner from the reader

    def submit(self, job: Job) -> None:
        self._send(("job", job))

    def prefetch(self, job: Job) -> None:
        self._send(("prefetch", job))

    def stop_job(self) -> None:
        if self.job is not None:
            self.cancel.value = self.job.id

    def progress(self) -> float:
        done, steps = self.steps[0], self.steps[1]
        return done / steps if steps else 0.0

    def close(self) -> None:
        if self.process is None:
            return
        self.stop_job()
        self._send(("quit", None))
        self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=10)
        with contextlib.suppress(OSError):
            self.conn.close()


# -- the worker process ------------------------------------------------------------------------


def main(conn, device: str, cfg, cancel, steps, owner: int) -> None:
    """The worker process: load the model, then make each job's image until told to quit."""
    _own_device(device)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the owner decides
    inbox: queue.Queue = queue.Queue()
    runner: list[Runner] = []  # filled once the model is loaded (the listener prefetches with it)
    send = _sender(conn)
    threading.Thread(target=_listen, args=(conn, inbox, runner, owner), daemon=True).start()
    try:
        runner.append(_runner(cfg, device))
    except Exception as exc:
        send(("failed", explain(exc)))
        return
    send(("ready", runner[0].model.info()))
    while (job := inbox.get()) is not None:
        steps[0], steps[1] = 0, job.recipe.steps
        result = runner[0].run(job, lambda job=job: _stop_asked(cancel, steps, runner[0], job))
        send(("result", result))
    runner[0].close()


def _own_device(device: str) -> None:
    """Show this process its GPU alone, before torch is imported: it is then "cuda" to the model."""
    if device.startswith("cuda:"):
        os.environ["CUDA_VISIBLE_DEVICES"] = device.removeprefix("cuda:")


def _runner(cfg, device: str) -> Runner:
    from pipeline import models

    return Runner(cfg, models.load(cfg.model, "cuda" if device.startswith("cuda") else device))


def _stop_asked(cancel, steps, runner: Runner, job: Job) -> bool:
    steps[0], steps[1] = runner.progress  # read by the owner: which draft is the least advanced
    return cancel.value == job.id


def _sender(conn):
    lock = threading.Lock()

    def send(message: tuple) -> None:
        with lock:
            conn.send(message)

    return send


def _listen(conn, inbox: queue.Queue, runner: list, owner: int) -> None:
    """Jobs into the inbox, prefetches to the runner; the owner gone (the pipe broke, or its pid
    is no more), the process exits at once, mid-step if need be: no orphan holds a device."""
    import psutil

    while True:
        try:
            if not conn.poll(PARENT_CHECK_S):
                if not psutil.pid_exists(owner):
                    os._exit(0)
                continue
            kind, payload = conn.recv()
        except (EOFError, OSError):
            os._exit(0)
        if kind == "job":
            inbox.put(payload)
        elif kind == "prefetch" and runner:
            runner[0].prefetch(payload)
        elif kind == "quit":
            inbox.put(None)
