"""The loop (`aiimg run`) and the one-off commands `draft`, `vary` and `status`.

One process owns the device and the content folder (``Content.lock``). Priority: while any
seed waits, make variations (oldest marker first); only when none waits, make a draft. A
watchdog observer (watcher.py) only *signals* (a marker file changed, something changed); the loop
re-reads the disk to decide, and rescans every ``run.rescan_seconds`` in case an event was
lost. A draft in progress checks after every denoising step whether a seed now waits and is
discarded if so (``Preempted``): nothing of it was written. Draft images and recipes are
encoded and written by a background thread, off the critical path; variations are written
before their round is recorded, so work.json never names a file that is not whole.

``AIIMG_TRACE=FILE`` appends one JSON line per event (marker seen, first denoising step of a
variation, draft done, ...) with a wall-clock time: what bench/ measures latency with.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from pipeline import conditioning, drafts, finishing, markers, models, prompts, rounds, variations, watcher
from pipeline.content import Content
from pipeline.errors import AiimgError, MarkerError
from pipeline.recipes import DraftRecipe
from pipeline.rounds import Seed

log = logging.getLogger("aiimg.studio")


@dataclass(frozen=True)
class Served:
    """What serving one seed came to: ``made`` variations; ``retry`` when it failed for a reason
    that is not the marker's (disk full...): the seed still waits and the loop backs off."""

    made: int = 0
    retry: bool = False


class Prefetch:
    """Encodes the oldest waiting seed's source ahead of time, on the second core.

    A marker event only queues a job here (the watcher signals; it does no work); the job
    re-reads the disk like the loop does. While it VAE-encodes the draft (variations.encode),
    the draft in progress finishes its current denoising step, so the first variation's first
    step starts sooner: seed latency is max(rest of the step, encode) instead of their sum.
    """

    def __init__(self, studio: Studio):
        self.studio = studio
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="aiimg-prefetch")
        self.ready: dict[tuple, object] = {}
        self.queued = threading.Event()

    def signal(self) -> None:
        if not self.queued.is_set():  # events come in bursts (created, modified, closed...)
            self.queued.set()
            self.pool.submit(self._encode_next)

    def _encode_next(self) -> None:
        self.queued.clear()
        studio = self.studio
        waiting, _ = rounds.waiting(studio.content)
        if not waiting:
            return
        try:
            _, source = variations.load_draft(studio.content, waiting[0].draft)
        except AiimgError:
            return  # the loop reports it beside the marker
        size = variations.first_stage_size(source, studio.cfg.variation.areas)
        key = (waiting[0].draft.id, size)
        if key not in self.ready:
            self.ready[key] = variations.encode(studio.model, source, size)
            trace("prefetched", id=waiting[0].draft.id)

    def take(self, draft_id: str, size: tuple):
        """The latents for this draft at this size if prefetched (waiting for a job in flight)."""
        self.pool.submit(lambda: None).result()
        latents = self.ready.pop((draft_id, size), None)
        self.ready.clear()  # anything else is stale: its seed may be gone or already served
        return latents

    def close(self) -> None:
        self.pool.shutdown(wait=True)


class Studio:
    def __init__(self, cfg, content: Content):
        self.cfg, self.content = cfg, content
        self.dirs = conditioning.Dirs.of(cfg)
        self.model = None
        self.stopping = False
        self.wake = threading.Event()  # anything changed under drafts/
        self.marker_event = threading.Event()  # a seed.txt appeared, changed or went
        self.writer = ThreadPoolExecutor(1, thread_name_prefix="aiimg-writer")
        self.scorer = ThreadPoolExecutor(1, thread_name_prefix="aiimg-scorer")
        self.pending: list[Future] = []
        self.ranker = None
        self.prefetch = Prefetch(self)
        self.last_scan = time.monotonic()
        self.first_step_due = False
        self.made = {"drafts": 0, "variations": 0, "preempted": 0, "errors": 0}

    # -- set-up and tear-down -----------------------------------------------------------------

    def start(self, drafting: bool = True) -> None:
        """Load the model; ``drafting``: this command makes drafts from the template, so what the
        template names (wildcards, LoRAs, embeddings, sampler) is checked now, not at the 300th."""
        self.content.ensure()
        removed = self.content.clean_temp()
        if removed:
            log.info("removed %d temp file(s) left by a killed process", removed)
        if drafting:
            prompts.check(self.cfg.prompt.template, self.content.prompts_dir)
        self._status("loading model")
        started = time.perf_counter()
        self.model = models.load(self.cfg.model)
        log.info(
            "model %s [%s] on %s loaded in %.1f s",
            self.model.name,
            self.model.hash,
            self.model.device,
            time.perf_counter() - started,
        )
        if drafting:
            self.check_drafts()
        self.ranker = self._make_ranker()
        if os.environ.get("AIIMG_TRACE"):
            self.model.txt2img.unet.register_forward_pre_hook(self._trace_first_step)

    def check_drafts(self) -> None:
        """Fail at start-up, not at the 300th draft: the LoRAs, embeddings and sampler that the
        template's prompts name are found (the prompts of a few prompt seeds, like prompts.check)."""
        for seed in range(8):
            drafts.plan(self.cfg, self.content, self.model, random.Random(seed))

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
        self.drain()
        self.prefetch.close()
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

    # -- drafts -------------------------------------------------------------------------------

    def make_draft(self, preemptible: bool) -> DraftRecipe | None:
        """One draft (its recipe; written in the background), or None when preempted."""
        recipe = drafts.plan(self.cfg, self.content, self.model)
        self._status(f"draft {recipe.id} {recipe.width}x{recipe.height}")
        try:
            stop = self._should_preempt if preemptible else self._stop_now
            image = drafts.make(self.model, recipe, stop, self.dirs, finishing.deep_shrink_end(self.cfg))
        except drafts.Preempted:
            self.made["preempted"] += 1
            trace("draft_preempted", id=recipe.id)
            return None
        self.pending.append(self.writer.submit(self._save_draft, recipe, image))
        self.made["drafts"] += 1
        log.info(
            "draft  %s  %dx%d  %d steps  %.1f s", recipe.id, recipe.width, recipe.height, recipe.steps, recipe.seconds
        )
        return recipe

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

    def _stop_now(self) -> bool:
        if self.stopping:
            raise KeyboardInterrupt
        return False

    def _should_preempt(self) -> bool:
        """After each denoising step: stop for Ctrl-C, or for a seed that now waits."""
        self._stop_now()
        due = time.monotonic() - self.last_scan > self.cfg.run.rescan_seconds
        if not (self.marker_event.is_set() or due):
            return False
        self.marker_event.clear()
        self.last_scan = time.monotonic()
        waiting = bool(rounds.waiting(self.content)[0])
        if waiting:
            trace("preempt")
        return waiting

    # -- seeds --------------------------------------------------------------------------------

    def serve(self, seed: Seed) -> Served:
        """Make the variations one seed asks for; errors go beside its marker."""
        trace("serve", marker=str(seed.marker.path))
        try:
            return Served(self._serve(seed))
        except MarkerError as exc:
            return self._marker_error(seed, str(exc))
        except AiimgError as exc:  # e.g. disk full: not the marker's fault; try again later
            self.made["errors"] += 1
            log.error("%s", exc)
            return Served(retry=True)
        except (KeyboardInterrupt, MemoryError):
            raise
        except Exception as exc:  # a daemon keeps going: the traceback to the log, the gist beside the marker
            log.exception("serving %s failed", seed.marker.path)
            return self._marker_error(seed, f"{type(exc).__name__}: {exc}")

    def _marker_error(self, seed: Seed, message: str) -> Served:
        """Done once the error is beside the marker; retry (back off) when even that cannot be written."""
        self.made["errors"] += 1
        log.warning("seed error: %s", message)
        try:
            markers.write_error(seed.marker, message)
        except Exception as exc:
            log.error("cannot write %s: %s", markers.error_path(seed.marker.folder), exc)
            return Served(retry=True)
        return Served()

    def _serve(self, seed: Seed) -> int:
        # 1. the marker as it is now (the seed list may be stale); removing it before the round
        #    starts cancels the round, and a round done meanwhile is not done twice
        marker = markers.current(seed.marker.folder)
        if not seed.resume and not marker:
            log.info("seed   %s  cancelled (seed.txt removed)", seed.draft.id)
            return 0
        seed = rounds.seed_for(self.content, marker) if marker else seed
        if seed is None:
            return 0
        # 2. the round: resumed as recorded, or planned from seed.txt (MarkerError if bad)
        plan = rounds.plan(self.cfg, self.content, seed)
        draft, source = variations.load_draft(self.content, seed.draft)
        rounds.begin(self.content, plan)
        # 3. the draft's latents, once for the whole round (prefetched when the loop saw the marker)
        size = variations.first_stage_size(source, self.cfg.variation.areas)
        latents = self.prefetch.take(seed.draft.id, size)
        if latents is None:
            latents = variations.encode(self.model, source, size)
        # 4. one variation at a time, each recorded once its PNG is whole
        made = 0
        for index in plan.todo():
            if not rounds.still_marked(seed.marker.folder):
                rounds.cancel(self.content, plan)
                log.info("seed   %s  cancelled after %d (seed.txt removed)", seed.draft.id, plan.made())
                break
            recipe = variations.recipe(self.cfg, draft, plan.round, plan.number, index, self.model)
            self._status(f"variation {seed.draft.id} #{index}")
            self.first_step_due = made == 0
            image = variations.make(
                self.model,
                source,
                recipe,
                on_step=self._on_variation_step,
                latents=latents,
                dirs=self.dirs,
                upscaler=variations.ladder_upscaler(self.cfg),  # loaded by variations.recipe: cached
            )
            variations.save(self.content, image, recipe)
            finishing.finish(self.cfg, self.content, image, recipe, self.model.device)  # [finish]: a copy
            rounds.record(self.content, plan, recipe)
            made += 1
            self.made["variations"] += 1
            log.info(
                "vary   %s  #%d  %dx%d  %.1f s  [%d/%d]",
                seed.draft.id,
                index,
                recipe.width,
                recipe.height,
                recipe.seconds,
                plan.made(),
                plan.round.count,
            )
        # 5. done (or cancelled, recorded above): clear an error the creator has fixed
        markers.clear_error(seed.marker.folder)
        return made

    def _on_variation_step(self, step: int) -> None:
        self._stop_now()

    def _trace_first_step(self, module, args) -> None:
        # a forward pre-hook on the UNet: fires as a denoising step *starts*
        if self.first_step_due:
            self.first_step_due = False
            trace("variation_first_step")

    # -- the loop -----------------------------------------------------------------------------

    def run(self, max_drafts: int | None = None, once: bool = False) -> None:
        made = 0
        while not self.stopping:
            waiting, _ = rounds.waiting(self.content)
            self.last_scan = time.monotonic()
            self.marker_event.clear()
            if waiting:
                self.drain()  # a seed's draft.json may still be in the writer's queue
                if self.serve(waiting[0]).retry:
                    self._idle("error (retrying)", self.cfg.run.rescan_seconds)
                continue
            blocked = self._draft_blocker(made, max_drafts)
            if blocked is None:
                try:
                    made += self.make_draft(preemptible=True) is not None
                except AiimgError as exc:  # e.g. a LoRA file removed while the loop runs
                    self.made["errors"] += 1
                    log.error("draft not made: %s", exc)
                    self._idle("error (retrying)", self.cfg.run.rescan_seconds)
                continue
            if once:
                break
            self._idle(blocked, self.cfg.run.rescan_seconds)

    def _draft_blocker(self, made: int, max_drafts: int | None) -> str | None:
        """Why no draft should be made now, or None."""
        if max_drafts is not None and made >= max_drafts:
            return f"made the {max_drafts} draft(s) asked for; waiting for seeds"
        # pending first: a write that lands in between is counted twice (safe), never missed
        in_flight = sum(not f.done() for f in self.pending)
        unseeded = in_flight + self.content.unseeded_count()
        if unseeded >= self.cfg.run.max_unseeded_drafts:
            return f"{unseeded} drafts wait for a seed ([run] max_unseeded_drafts); mark some or raise it"
        free = self.content.free_gb()
        if free < self.cfg.run.min_free_gb:
            return f"only {free:.1f} GB free on the content disk ([run] min_free_gb = {self.cfg.run.min_free_gb})"
        return None

    def _idle(self, why: str, seconds: float) -> None:
        self._status(f"idle: {why}")
        self.drain()
        if self.wake.wait(timeout=seconds):
            self.wake.clear()

    def _status(self, doing: str) -> None:
        try:
            self.content.write_status({"doing": doing, **self.made})
        except AiimgError:
            pass  # status is informational; a full disk is reported where it matters

    # -- signals and the watcher --------------------------------------------------------------

    def request_stop(self, *_) -> None:
        if self.stopping:  # a second Ctrl-C: leave now
            raise KeyboardInterrupt
        self.stopping = True
        self.wake.set()
        log.info("stopping after the current step (Ctrl-C again to force)")

    def on_change(self, paths: list) -> None:
        """The watcher's signal (it does no work): a marker changed, or anything did."""
        if any(markers.is_marker_name(p.name) for p in paths):
            trace("marker_event", path=str(paths[0]))
            self.marker_event.set()
            self.prefetch.signal()
        self.wake.set()


def trace(event: str, **fields) -> None:
    path = os.environ.get("AIIMG_TRACE")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"t": time.time(), "event": event, **fields}) + "\n")


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
            for _i in range(count):
                studio.make_draft(preemptible=False)
        finally:
            studio.close()
        seconds = time.perf_counter() - started
        log.info("%s in %.1f s (%.2f s per draft)", _totals(studio.made), seconds, seconds / max(count, 1))
        if studio.made["errors"]:
            raise AiimgError(f"{studio.made['errors']} draft(s) could not be saved (see above)")


def draft_from_command(cfg, source, seed: int | None = None, prompt: str = "", negative: str = "") -> str:
    """`aiimg draft --from FILE`: remake an image from what it says it was made with; the new draft's folder."""
    from pipeline import reproduce

    # 1. what the image was made with, and this machine's files for it (an error names what lacks)
    imported = reproduce.recipe_from(source)
    dirs = conditioning.Dirs.of(cfg)
    resolved = reproduce.check_available(imported, dirs.loras, dirs.embeddings)
    for note in resolved.notes:
        log.warning("%s", note)
    content = Content(cfg.content_dir)
    content.ensure()
    with content.lock("draft --from"):
        studio = Studio(cfg, content)
        studio.start(drafting=False)
        try:
            # 2. the recipe (its LoRAs, sampler... found before a pixel is made), 3. the draft
            recipe = drafts.plan_from(cfg, studio.model, imported, resolved, seed, prompt, negative)
            image = drafts.make(studio.model, recipe, studio._stop_now, studio.dirs)
            drafts.save(content, recipe, image)
        finally:
            studio.close()
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
                for seed in chosen:
                    studio.serve(seed)
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
    return "\n".join(lines)


def _loop_line(state: dict | None) -> str:
    if not state:
        return "not running"
    return f"pid {state['pid']}: {state.get('doing', '?')} (since {state.get('updated', '?')})"
