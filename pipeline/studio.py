"""The owner of content/: the loop (`aiimg run`) and the one-off commands draft, vary and status.

One process owns the content folder (``Content.lock``): it alone scans it, plans every recipe
and writes every file. Its workers (workers/: one per device, in this process, in subprocesses
or on a Ray cluster) only turn recipes into pixels, one image per job. Each turn of the loop:

1. what happened: a worker is ready; a result came (a draft is written by a background thread,
   a variation here, recorded in work.json once its PNG is whole); a worker died (its variation
   waits again, first in line; its draft is dropped; the worker is started again after a pause);
   a result from a job since given to another worker is dropped.
2. on a marker event, after a result, and every ``run.rescan_seconds``: the disk is read again
   (the watcher only signals). Each seed that waits gets its round planned and begun, one job per
   variation, oldest marker first; a round whose seed.txt went is cancelled (its jobs not yet
   handed out are dropped; a variation in progress is kept).
3. a free worker takes the oldest waiting variation, else a new draft.
4. while variations wait and no worker is free, the least advanced draft is stopped within its
   current denoising step (at the UNet's next block) and its worker takes the variation (nothing
   of the draft was written). Variations are never stopped but by Ctrl-C, which stops every job
   after its step: what was not recorded is made again by the next run, to the same pixels.

``AIIMG_TRACE=FILE`` appends one JSON line per event (logs.trace): what bench/ measures with.
"""

from __future__ import annotations

import itertools
import logging
import queue
import random
import signal
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from pipeline import conditioning, drafts, finishing, logs, markers, prompts, rounds, variations, watcher, workers
from pipeline.content import Content, utc_now
from pipeline.errors import AiimgError, MarkerError
from pipeline.logs import trace
from pipeline.recipes import DraftRecipe
from pipeline.rounds import Seed
from pipeline.workers import Died, Finished, Job, Ready, Worker

log = logging.getLogger("aiimg.studio")

RESTART_AFTER_S = (2, 60)  # a dead worker starts again after 2 s, doubling with each death, at most 60 s


@dataclass
class Serving:
    """A round in progress: its seed, its plan (work.json), the draft's pixels, its jobs."""

    seed: Seed
    plan: rounds.Plan
    source: Image.Image
    begun: bool = False  # recorded in work.json (with its first job handed out)
    ended: str = ""  # "" | "cancelled" (seed.txt removed) | "answered" (seed.error.txt written)


@dataclass
class Ticket:
    """The owner's record of a job: the worker running it, and its round for a variation."""

    job: Job
    serving: Serving | None = None
    worker: Worker | None = None


@dataclass
class Changed:
    """The watcher's signal: something under drafts/ changed (a marker, or anything)."""

    marker: bool


@dataclass
class Stop:
    pass


@dataclass
class Goal:
    """What this command asks of the loop."""

    max_drafts: int | None = None  # None: no limit
    once: bool = False  # return once nothing is left to do, instead of waiting for seeds
    drafting: bool = True
    only: set[str] | None = None  # serve only the seeds of these drafts (`aiimg vary ID...`)


class Studio:
    def __init__(self, cfg, content: Content, model=None, given: list[Worker] | None = None):
        self.cfg, self.content = cfg, content
        self.model = model  # an already loaded model for a single in-process worker (tests)
        self.workers: list[Worker] = given or []  # else made from the config at start()
        self.events: queue.Queue = queue.Queue()
        self.info = None  # models.ModelInfo: what recipes are planned against
        self.queue: deque[Ticket] = deque()  # variations waiting for a worker, oldest seed first
        self.running: dict[int, Ticket] = {}
        self.serving: dict[Path, Serving] = {}  # by marker folder
        self.ids = itertools.count(1)
        self.goal = Goal()
        self.stopping = False
        self.scan_due = True
        self.last_scan = 0.0
        self.backoff_until = 0.0  # after an error that is not a seed's (a full disk): drafts and rounds pause
        self.drafts_begun = 0  # made or in progress (for --max-drafts)
        self.writer = ThreadPoolExecutor(1, thread_name_prefix="aiimg-writer")
        self.scorer = ThreadPoolExecutor(1, thread_name_prefix="aiimg-scorer")
        self.pending: list[Future] = []
        self.ranker = None
        self.made = {"drafts": 0, "variations": 0, "preempted": 0, "errors": 0}

    # -- set-up and tear-down -----------------------------------------------------------------

    def start(self, drafting: bool = True) -> None:
        """Start the workers and wait for the first model; ``drafting``: this command makes drafts
        from the template, so what it names (wildcards, LoRAs, embeddings, sampler) is checked now."""
        self.content.ensure()
        removed = self.content.clean_temp()
        if removed:
            log.info("removed %d temp file(s) left by a killed process", removed)
        if drafting:
            prompts.check(self.cfg.prompt.template, self.content.prompts_dir)
        self._status("loading model")
        started = time.perf_counter()
        self.workers = self.workers or workers.create(self.cfg, self.model)
        for worker in self.workers:
            worker.start(self.events)
        ready, seen = workers.first_ready(self.events, self.workers)
        self._handle(ready)
        for event in seen:
            self._handle(event)
        log.info(
            "model %s [%s] on %s loaded in %.1f s",
            self.info.name,
            self.info.hash,
            ready.worker.device,
            time.perf_counter() - started,
        )
        if drafting:
            self.check_drafts()
        self.ranker = self._make_ranker()

    def wait_for_workers(self, timeout: float = 600) -> None:
        """Until every worker has its model loaded (or has failed to): bench/ and tests start
        with all of them at work; the loop itself starts as soon as one is ready."""
        deadline = time.monotonic() + timeout
        while any(w.state == "starting" for w in self.workers):
            self._handle(self.events.get(timeout=max(0.0, deadline - time.monotonic())))

    def check_drafts(self) -> None:
        """Fail at start-up, not at the 300th draft: the LoRAs, embeddings and sampler that the
        template's prompts name are found (the prompts of a few prompt seeds, like prompts.check)."""
        for seed in range(8):
            drafts.plan(self.cfg, self.content, self.info, random.Random(seed))

    def _make_ranker(self):
        if not self.cfg.score.enabled:
            return None
        try:
            from pipeline import ranking

            return ranking.Ranker(self.cfg, self.content)
        except ImportError as exc:  # installed without the `rank` extra: generate anyway
            log.warning("scoring off: %s is not installed (pip install 'aiimg[rank]')", exc.name or exc)
        except AiimgError as exc:
            log.warning("scoring off: %s", exc)
        return None

    def close(self) -> None:
        """Stop every job after its step (what finishes meanwhile is still written), let go of the
        devices, wait for the background writes."""
        self.stopping = True
        for worker in self.workers:
            if worker.job is not None:
                worker.stop_job()
        deadline = time.monotonic() + 60
        while self.running and time.monotonic() < deadline:
            try:
                self._handle(self.events.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        for worker in self.workers:
            worker.close()
        self.drain()
        self.scorer.shutdown(wait=True)
        self.writer.shutdown(wait=True)

    def drain(self) -> None:
        """Wait for the background writes; report (not raise) the ones that failed."""
        for future in self.pending:
            exc = future.exception()
            if exc:
                self.made["errors"] += 1
                log.error("%s", exc, exc_info=not isinstance(exc, AiimgError))
        self.pending.clear()

    # -- the loop -----------------------------------------------------------------------------

    def run(self, max_drafts: int | None = None, once: bool = False, drafting: bool = True, only=None) -> None:
        self.goal = Goal(max_drafts, once, drafting, set(only) if only is not None else None)
        self.drafts_begun = 0
        self.scan_due = True
        while not self.stopping:
            # 1. the disk as it is now: new rounds, cancelled ones (not while backing off from an error)
            now = time.monotonic()
            if self.backoff_until <= now and (self.scan_due or now - self.last_scan >= self.cfg.run.rescan_seconds):
                self._scan()
            self._restart_dead()
            # 2. free workers: the oldest waiting variation, else a new draft
            self._dispatch()
            # 3. variations wait and no worker is free: stop the least advanced drafts
            self._preempt()
            if once and self._finished():
                break
            # 4. wait for something to happen: a result, a worker, a file, the rescan timer
            self._wait()

    def _finished(self) -> bool:
        if self.queue or self.running or self.serving or self.scan_due:
            return False
        if self.backoff_until > time.monotonic():  # something failed and will be tried again
            return False
        return not self._drafting_now()

    def _wait(self) -> None:
        now = time.monotonic()
        # no scan while backing off: the next is due when the pause ends, not before
        scan_at = max(self.last_scan + self.cfg.run.rescan_seconds, self.backoff_until)
        until = [scan_at, *(w.restart_at for w in self.workers if w.state == "dead")]
        if not self.running:
            self._status(f"idle: {self._idle_reason()}")
            self.drain()
        try:
            event = self.events.get(timeout=max(0.0, min(until) - now))
        except queue.Empty:
            return
        self._handle(event)
        while True:  # everything else that came meanwhile, before deciding anything
            try:
                self._handle(self.events.get_nowait())
            except queue.Empty:
                return

    def _handle(self, event) -> None:
        if isinstance(event, Finished):
            self._on_result(event.worker, event.result)
        elif isinstance(event, Changed):
            self.scan_due = self.scan_due or event.marker
        elif isinstance(event, Ready):
            self._on_ready(event)
        elif isinstance(event, Died):
            self._on_death(event.worker, event.why, event.at_start)

    # -- 1. seeds -----------------------------------------------------------------------------

    def _scan(self) -> None:
        self.scan_due = False
        self.last_scan = time.monotonic()
        waiting, _ = rounds.waiting(self.content)
        for seed in waiting:
            if seed.marker.folder not in self.serving and self._wanted(seed):
                self._begin(seed)
        for serving in list(self.serving.values()):
            if not serving.ended and not rounds.still_marked(serving.seed.marker.folder):
                self._cancel(serving)

    def _wanted(self, seed: Seed) -> bool:
        return self.goal.only is None or seed.draft.id in self.goal.only

    def _begin(self, seed: Seed) -> None:
        """Plan and begin the round this seed asks for; its variations join the queue."""
        trace("serve", marker=str(seed.marker.path))
        try:
            # 1. the round: resumed as recorded, or planned from seed.txt (MarkerError if bad)
            plan = rounds.plan(self.cfg, self.content, seed)
            draft, source = variations.load_draft(self.content, seed.draft)
            # 2. every variation's recipe, before any pixel: a LoRA or sampler that cannot run is said now
            recipes = [variations.recipe(self.cfg, draft, plan.round, plan.number, i, self.info) for i in plan.todo()]
        except MarkerError as exc:
            self._answer(seed, str(exc))
            return
        except AiimgError as exc:  # e.g. disk full: not the marker's fault; try again later
            self._back_off(str(exc))
            return
        except Exception as exc:  # a daemon keeps going: the traceback to the log, the gist beside the marker
            logs.traceback_to_file(f"serving {seed.marker.path} failed")
            self._answer(seed, f"{type(exc).__name__}: {exc}")
            return
        serving = Serving(seed, plan, source)
        self.serving[seed.marker.folder] = serving
        for recipe in recipes:
            self._enqueue(Ticket(Job(next(self.ids), recipe, source), serving))
        if not recipes:  # a resumed round whose last variation was written, not recorded... nothing left
            self._end_if_idle(serving)

    def _enqueue(self, ticket: Ticket, first: bool = False) -> None:
        (self.queue.appendleft if first else self.queue.append)(ticket)

    def _requeue(self, ticket: Ticket) -> None:
        """A variation that was not written waits again, first in line; not for a round that ended."""
        if not ticket.serving.ended:
            self._enqueue(Ticket(Job(next(self.ids), ticket.job.recipe, ticket.job.source), ticket.serving), True)

    def _cancel(self, serving: Serving) -> None:
        serving.ended = "cancelled"
        self._drop_queued(serving)
        if not serving.begun:  # removed before its round started: nothing was written, nothing is
            log.info("seed   %s  cancelled (seed.txt removed)", serving.seed.draft.id)
        else:
            try:
                rounds.cancel(self.content, serving.plan)
            except AiimgError as exc:
                log.error("%s", exc)
            log.info("seed   %s  cancelled after %d (seed.txt removed)", serving.seed.draft.id, serving.plan.made())
        self._end_if_idle(serving)

    def _drop_queued(self, serving: Serving) -> None:
        self.queue = deque(t for t in self.queue if t.serving is not serving)

    def _answer(self, seed: Seed, message: str) -> None:
        """The seed cannot be served: say why beside its marker (the loop goes on with other work)."""
        self.made["errors"] += 1
        log.warning("seed error: %s", message)
        serving = self.serving.get(seed.marker.folder)
        if serving is not None:
            serving.ended = "answered"
            self._drop_queued(serving)
            self._end_if_idle(serving)
        try:
            markers.write_error(seed.marker, message)
        except Exception as exc:
            log.error("cannot write %s: %s", markers.error_path(seed.marker.folder), exc)
            self._back_off("the error file could not be written")

    def _end_if_idle(self, serving: Serving) -> None:
        """A round with nothing queued or running is over: done, cancelled, or answered."""
        if any(t.serving is serving for t in (*self.queue, *self.running.values())):
            return
        self.serving.pop(serving.seed.marker.folder, None)
        if serving.ended != "answered":
            markers.clear_error(serving.seed.marker.folder)  # the creator fixed what the last error said
        self.scan_due = True

    def _back_off(self, why: str) -> None:
        self.made["errors"] += 1
        log.error("%s", why)
        self.backoff_until = time.monotonic() + self.cfg.run.rescan_seconds
        self.scan_due = True  # once the pause is over, what failed is tried again

    # -- 2. handing out work ------------------------------------------------------------------

    def _dispatch(self) -> None:
        if self.backoff_until > time.monotonic():  # something failed (a full disk): everything pauses
            return
        for worker in self.workers:
            if worker.state != "idle":
                continue
            ticket = self._next_variation() or self._new_draft()
            if ticket is None:
                return
            ticket.worker = worker
            self.running[ticket.job.id] = ticket
            trace("handed", job=ticket.job.describe(), worker=worker.name)
            worker.take(ticket.job)
            self._status(ticket.job.describe())

    def _next_variation(self) -> Ticket | None:
        while self.queue:
            ticket = self.queue.popleft()
            serving = ticket.serving
            if not rounds.still_marked(serving.seed.marker.folder):  # removed meanwhile: the rest is cancelled
                self.queue.appendleft(ticket)
                self._cancel(serving)
                continue
            if not self._begun(serving):
                self.queue.appendleft(ticket)
                return None
            ticket.job.recipe.created = utc_now()
            return ticket
        return None

    def _begun(self, serving: Serving) -> bool:
        """The round recorded before its first pixel (a kill from here on resumes it), with a copy of
        its draft in works/<id>/. False (and the loop backs off) when that cannot be written."""
        if not serving.begun:
            try:
                rounds.begin(self.content, serving.plan)
            except AiimgError as exc:
                self._back_off(str(exc))
                return False
            serving.begun = True
        return True

    def _new_draft(self) -> Ticket | None:
        if self._draft_blocker() is not None:
            return None
        try:
            recipe = drafts.plan(self.cfg, self.content, self.info)
        except AiimgError as exc:  # e.g. a LoRA file removed while the loop runs
            self._back_off(f"draft not made: {exc}")
            return None
        self.drafts_begun += 1
        return Ticket(Job(next(self.ids), recipe))

    def _drafting_now(self) -> bool:
        return self._draft_blocker() is None

    def _draft_blocker(self) -> str | None:
        """Why no draft should be started now, or None."""
        goal = self.goal
        if not goal.drafting:
            return "not making drafts"
        if goal.max_drafts is not None and self.drafts_begun >= goal.max_drafts:
            return f"made the {goal.max_drafts} draft(s) asked for; waiting for seeds"
        if self.backoff_until > time.monotonic():
            return "error (retrying)"
        # in flight first: a write that lands in between is counted twice (safe), never missed
        in_flight = sum(not f.done() for f in self.pending) + sum(t.job.kind == "draft" for t in self.running.values())
        unseeded = in_flight + self.content.unseeded_count()
        if unseeded >= self.cfg.run.max_unseeded_drafts:
            return f"{unseeded} drafts wait for a seed ([run] max_unseeded_drafts); mark some or raise it"
        free = self.content.free_gb()
        if free < self.cfg.run.min_free_gb:
            return f"only {free:.1f} GB free on the content disk ([run] min_free_gb = {self.cfg.run.min_free_gb})"
        return None

    def _idle_reason(self) -> str:
        if not any(w.state in ("idle", "busy") for w in self.workers):
            return "no worker is running (see aiimg status)"
        return self._draft_blocker() or "waiting"

    # -- 3. preemption ------------------------------------------------------------------------

    def _preempt(self) -> None:
        """One draft stopped per variation that waits beyond the workers already freeing up."""
        freeing = sum(w.stopping for w in self.workers if w.job is not None)
        wanted = len(self.queue) - freeing
        if wanted <= 0:
            return
        drafting = [w for w in self.workers if w.job is not None and w.job.kind == "draft" and not w.stopping]
        drafting.sort(key=lambda w: w.progress())
        for worker, ticket in zip(drafting[:wanted], list(self.queue)[freeing:]):
            worker.stopping = True
            worker.stop_job()
            worker.prefetch(ticket.job)  # its draft is encoded while the stopped draft finishes its step
            trace("preempt", worker=worker.name)

    # -- 4. what workers hand back ------------------------------------------------------------

    def _on_ready(self, event: Ready) -> None:
        event.worker.state = "idle"
        if self.info is not None:  # not the first: the loop is running, tell `aiimg status`
            self._status(f"worker {event.worker.name} ready")
        if self.info is None:
            self.info = event.info
        elif event.info.hash != self.info.hash:
            log.warning(
                "worker %s loaded model %s [%s], not [%s] as the others: its images may differ",
                event.worker.name,
                event.info.name,
                event.info.hash,
                self.info.hash,
            )

    def _on_result(self, worker: Worker, result) -> None:
        ticket = self.running.get(result.job_id)
        if ticket is None or ticket.worker is not worker:
            log.info("a late result from worker %s dropped: its job was given to another worker", worker.name)
            return
        del self.running[result.job_id]
        worker.release()
        self.scan_due = True
        if result.stopped:
            self._on_stopped(ticket)
        elif result.error:
            self._on_failure(worker, ticket, result)
        elif ticket.serving is None:
            worker.done += 1
            self._drafted(result.recipe, result.image)
        else:
            worker.done += 1
            self._varied(ticket, result)
        if ticket.serving is not None:
            self._end_if_idle(ticket.serving)

    def _on_stopped(self, ticket: Ticket) -> None:
        if ticket.serving is None:
            self.drafts_begun -= 1
            if not self.stopping:  # stopped for a seed, not by Ctrl-C
                self.made["preempted"] += 1
                trace("draft_preempted", id=ticket.job.recipe.id)
        elif not self.stopping:  # a variation stops only at shutdown; otherwise it waits again
            self._requeue(ticket)

    def _on_failure(self, worker: Worker, ticket: Ticket, result) -> None:
        worker.last_error = result.error
        if result.details:
            logs.traceback_to_file(f"{ticket.job.describe()} failed on worker {worker.name}", result.details)
        if ticket.serving is None:
            self.drafts_begun -= 1
            self._back_off(f"draft not made: {result.error}")
        elif not ticket.serving.ended:
            self._answer(ticket.serving.seed, result.error)

    def _on_death(self, worker: Worker, why: str, at_start: bool) -> None:
        job = worker.release()
        worker.state, worker.last_error = "dead", why.strip().splitlines()[0] if why.strip() else why
        worker.deaths += 1
        log.error("worker %s %s: %s", worker.name, "could not start" if at_start else "died", worker.last_error)
        ticket = self.running.pop(job.id, None) if job else None
        if ticket is not None and ticket.serving is not None:  # its variation waits again, first in line
            self._requeue(ticket)
            self._end_if_idle(ticket.serving)
        elif ticket is not None:
            self.drafts_begun -= 1  # a draft is dropped: the next one is planned afresh
        first, cap = RESTART_AFTER_S
        worker.restart_at = time.monotonic() + min(cap, first * 2 ** (worker.deaths - 1))
        self._status(f"worker {worker.name} died; starting it again")

    def _restart_dead(self) -> None:
        now = time.monotonic()
        for worker in self.workers:
            if worker.state == "dead" and worker.restart_at <= now:
                worker.state = "starting"
                log.info("starting worker %s again", worker.name)
                worker.start(self.events)

    def _drafted(self, recipe: DraftRecipe, image) -> None:
        self.made["drafts"] += 1
        self.pending.append(self.writer.submit(self._save_draft, recipe, image))
        log.info(
            "draft  %s  %dx%d  %d steps  %.1f s", recipe.id, recipe.width, recipe.height, recipe.steps, recipe.seconds
        )

    def _save_draft(self, recipe: DraftRecipe, image) -> None:
        drafts.save(self.content, recipe, image)
        trace("draft_saved", id=recipe.id)
        if self.ranker:
            self.scorer.submit(self._score, recipe.id)

    def _score(self, draft_id: str) -> None:
        try:
            self.ranker.on_new_draft(draft_id)
        except Exception:  # scoring is a nicety: it must never stop the studio
            log.exception("scoring %s failed; the draft is kept unscored", draft_id)

    def _varied(self, ticket: Ticket, result) -> None:
        """Write a variation, then record it: work.json never names a file that is not whole."""
        serving, recipe = ticket.serving, result.recipe
        try:
            variations.save(self.content, result.image, recipe)
            if result.finished is not None:  # [finish]: the copy beside the raw
                finishing.save_finished(self.content, recipe, result.finished)
            rounds.record(self.content, serving.plan, recipe)
        except AiimgError as exc:  # e.g. disk full: nothing recorded; the variation waits again
            self._requeue(ticket)
            self._back_off(str(exc))
            return
        self.made["variations"] += 1
        log.info(
            "vary   %s  #%d  %dx%d  %.1f s  [%d/%d]",
            serving.seed.draft.id,
            recipe.index,
            recipe.width,
            recipe.height,
            recipe.seconds,
            serving.plan.made(),
            serving.plan.round.count,
        )

    def _status(self, doing: str) -> None:
        status = {"doing": doing, **self.made, "workers": [w.status() for w in self.workers]}
        try:
            self.content.write_status(status)
        except AiimgError:
            pass  # status is informational; a full disk is reported where it matters

    # -- signals and the watcher --------------------------------------------------------------

    def request_stop(self, *_) -> None:
        if self.stopping:  # a second Ctrl-C: leave now
            raise KeyboardInterrupt
        self.stopping = True
        self.events.put(Stop())
        log.info("stopping after the current step (Ctrl-C again to force)")

    def on_change(self, paths: list) -> None:
        """The watcher's signal (it does no work): a marker changed, or anything did."""
        marker = any(markers.is_marker_name(p.name) for p in paths)
        if marker:
            trace("marker_event", path=str(paths[0]))
        self.events.put(Changed(marker))


# -- commands (cli.py calls these) ------------------------------------------------------------


def run_command(cfg, max_drafts: int | None = None, once: bool = False) -> None:
    content = Content(cfg.content_dir)
    content.ensure()
    with content.lock("run"):
        studio = Studio(cfg, content)
        old = {s: signal.signal(s, studio.request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        observer = None
        try:
            studio.start()
            observer = watcher.watch(content.drafts_dir, studio.on_change)
            log.info("watching %s (drop seed.txt beside a draft to make variations)", content.drafts_dir)
            studio.run(max_drafts=max_drafts, once=once)
        except KeyboardInterrupt:
            pass
        finally:
            if observer:
                observer.stop()
            studio.close()
            studio._status("stopped")
            for s, handler in old.items():
                signal.signal(s, handler)
        log.info("%s", _totals(studio.made))


def draft_command(cfg, count: int) -> None:
    content = Content(cfg.content_dir)
    content.ensure()
    with content.lock("draft"):
        studio = Studio(cfg, content)
        studio.start()
        started = time.perf_counter()
        try:
            studio.run(max_drafts=count, once=True, only=set())  # drafts only: no seed is served
        finally:
            studio.close()
        seconds = time.perf_counter() - started
        log.info("%s in %.1f s (%.2f s per draft)", _totals(studio.made), seconds, seconds / max(count, 1))
        if studio.made["errors"]:
            raise AiimgError(f"{studio.made['errors']} draft(s) could not be made or saved (see above)")


def draft_from_command(cfg, source, seed: int | None = None, prompt: str = "", negative: str = "") -> str:
    """`aiimg draft --from FILE`: remake an image from what it says it was made with; the new draft's folder."""
    from pipeline import models, reproduce

    # 1. what the image was made with, and this machine's files for it (an error names what lacks)
    imported = reproduce.recipe_from(source)
    dirs = conditioning.Dirs.of(cfg)
    resolved = reproduce.check_available(imported, dirs.loras, dirs.embeddings)
    for note in resolved.notes:
        log.warning("%s", note)
    content = Content(cfg.content_dir)
    content.ensure()
    with content.lock("draft --from"):
        model = models.load(cfg.model)
        # 2. the recipe (its LoRAs, sampler... found before a pixel is made), 3. the draft
        recipe = drafts.plan_from(cfg, model, imported, resolved, seed, prompt, negative)
        image = drafts.make(model, recipe, None, dirs)
        drafts.save(content, recipe, image)
    folder = content.draft(recipe.id).folder
    log.info(
        "draft  %s  %dx%d  seed %d  from %s  ->  %s",
        recipe.id,
        recipe.width,
        recipe.height,
        recipe.seed,
        source,
        folder,
    )
    return str(folder)


def vary_command(cfg, draft_ids: list[str]) -> None:
    content = Content(cfg.content_dir)
    content.ensure()
    with content.lock("vary"):
        waiting, errored = rounds.waiting(content)
        chosen, problems = _choose(content, waiting, draft_ids)
        skipped = len(content.markers()) - len(waiting) - len(errored)
        if not chosen:
            log.info("no seed waits (%d done already, %d with seed.error.txt)", skipped, len(errored))
        else:
            studio = Studio(cfg, content)
            studio.start(drafting=False)
            try:
                studio.run(once=True, drafting=False, only={s.draft.id for s in chosen})
            finally:
                studio.close()
            log.info("%s; skipped %d seed(s) done already", _totals(studio.made), skipped)
        if problems:
            raise AiimgError("; ".join(problems))


def _choose(content: Content, waiting: list[Seed], draft_ids: list[str]) -> tuple[list[Seed], list[str]]:
    if not draft_ids:
        return waiting, []
    by_id = {s.draft.id: s for s in waiting}
    chosen, problems = [], []
    for draft_id in dict.fromkeys(draft_ids):  # each once, in the order given
        draft = content.draft(draft_id)
        if draft_id in by_id:
            chosen.append(by_id[draft_id])
        elif not draft.recipe_path.is_file():
            problems.append(f"{draft_id}: no such draft in {content.drafts_dir}")
        elif markers.find(draft.folder) is None:
            problems.append(f"{draft_id}: not a seed: create {markers.path_for(draft.folder)} first")
    return chosen, problems


def _totals(made: dict) -> str:
    parts = [f"{made['drafts']} draft(s)", f"{made['variations']} variation(s)"]
    if made["preempted"]:
        parts.append(f"{made['preempted']} draft(s) preempted by seeds")
    if made["errors"]:
        parts.append(f"{made['errors']} error(s)")
    return "made " + ", ".join(parts)


def status_report(cfg) -> str:
    content = Content(cfg.content_dir)
    all_drafts = content.drafts()
    waiting, errored = rounds.waiting(content)
    works = content.works()
    variations_count = sum(len(content.read_work(w).variations) for w in works)
    state = content.read_status()
    lines = [
        f"content:        {content.root}",
        f"drafts:         {len(all_drafts)} ({content.unseeded_count()} without a seed)",
        f"seeds waiting:  {len(waiting)}",
        f"seed errors:    {len(errored)}" + "".join(f"\n  {markers.error_path(m.folder)}" for m in errored),
        f"works:          {len(works)} ({variations_count} variations)",
        f"loop:           {_loop_line(state)}",
    ]
    return "\n".join(lines + _worker_lines(state))


def _loop_line(state: dict | None) -> str:
    if not state:
        return "not running"
    return f"pid {state['pid']}: {state.get('doing', '?')} (since {state.get('updated', '?')})"


def _worker_lines(state: dict | None) -> list[str]:
    """One line per worker of the running loop: device, what it does, images made, last error."""
    found = (state or {}).get("workers") or []
    lines = [f"workers:        {len(found)}"] if found else []
    for w in found:
        doing = w["job"] or w["state"]
        error = f"; last error: {w['last_error']}" if w.get("last_error") else ""
        lines.append(f"  {w['name']:<14} {w['device']:<8} {doing}; {w['done']} image(s) made{error}")
    return lines
