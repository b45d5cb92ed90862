"""Jobs and results: what crosses between the owner of content/ and a worker, and the one place
where a worker turns a job into pixels.

A job is one image: a draft (its recipe) or one variation (its recipe and the draft's pixels).
The owner plans every recipe before it sends the job, so the seed, size and prompt are data
that a job carries, whichever worker runs it; a job run twice (its first worker died) makes the
same pixels. A worker returns the image, the recipe as made (its seconds, what the run adds:
Deep Shrink, finishing steps) and, with ``[finish]`` on, the finished copy. It never reads or
writes content/: the owner writes every file (studio.py).

:class:`Runner` lives beside the model in each worker (in this process, a subprocess or a Ray
actor). It keeps the latents of the last draft it encoded: every variation of a round starts
from them, so a worker that makes three variations of a seed encodes the draft once, and it
can encode them ahead (:meth:`Runner.prefetch`) on a second thread while a draft it was told to
stop finishes its step.
"""

from __future__ import annotations

import threading
import time
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from PIL import Image

from pipeline import conditioning, drafts, finishing, variations
from pipeline.errors import AiimgError, MarkerError
from pipeline.logs import trace, tracing
from pipeline.recipes import DraftRecipe, VariationRecipe


class Stopped(Exception):
    """Raised from a step callback: the owner asked this worker to stop the job in progress."""


@dataclass
class Job:
    """One image to make. ``id`` is unique in the owner's run: a result is matched to the job by
    it, so the late result of a job given to another worker meanwhile is recognised and dropped."""

    id: int
    recipe: DraftRecipe | VariationRecipe
    source: Image.Image | None = None  # a variation's draft, as the draft.png holds it

    @property
    def kind(self) -> str:
        return "variation" if isinstance(self.recipe, VariationRecipe) else "draft"

    def describe(self) -> str:
        r = self.recipe
        return f"variation {r.parent} #{r.index}" if self.kind == "variation" else f"draft {r.id}"


@dataclass
class Result:
    """What a worker hands back: the image and the recipe as made, or why there is none."""

    job_id: int
    recipe: DraftRecipe | VariationRecipe | None = None
    image: Image.Image | None = None
    finished: Image.Image | None = None  # [finish]: the finished copy of a variation
    stopped: bool = False  # preempted (a draft) or stopped at shutdown: nothing was made
    error: str = ""  # the job failed; the worker goes on
    marker_error: bool = False  # the seed asked for something that cannot run (answered beside its marker)
    details: str = ""  # an unexpected failure's traceback, for the owner's log
    seconds: float = 0.0  # wall time in the worker, from the job's arrival to its result


class Runner:
    """A model on one device and what it keeps between jobs."""

    def __init__(self, cfg, model):
        self.cfg, self.model = cfg, model
        self.dirs = conditioning.Dirs.of(cfg)
        self.deep_shrink = finishing.deep_shrink_end(cfg)
        self.encoder = ThreadPoolExecutor(1, thread_name_prefix="aiimg-encode")
        self.latents: tuple[tuple, Future] | None = None  # ((draft id, size), its encode)
        self.lock = threading.Lock()
        self.first_step_due = False
        self.progress = (0, 0)  # (steps done, steps) of the job in progress
        self.abort = None  # the draft in progress's should_stop: read between the UNet's blocks too
        unet = model.txt2img.unet
        blocks = [b for b in (*unet.down_blocks, unet.mid_block, *unet.up_blocks) if b is not None]
        self.hooks = [b.register_forward_pre_hook(self._abort_between_blocks) for b in blocks]
        if tracing():
            self.hooks.append(unet.register_forward_pre_hook(self._trace_first_step))

    def run(self, job: Job, should_stop) -> Result:
        """Make the job's image; ``should_stop()`` is read after every denoising step."""
        started = time.perf_counter()
        try:
            result = self._make(job, should_stop)
        except (drafts.Preempted, Stopped):
            result = Result(job.id, stopped=True)
        except MarkerError as exc:
            result = Result(job.id, error=str(exc), marker_error=True)
        except AiimgError as exc:
            result = Result(job.id, error=str(exc))
        except (KeyboardInterrupt, MemoryError):
            raise
        except Exception as exc:  # the owner logs the traceback and answers the seed; the worker goes on
            result = Result(job.id, error=f"{type(exc).__name__}: {exc}", details=traceback.format_exc())
        result.seconds = time.perf_counter() - started
        return result

    def _make(self, job: Job, should_stop) -> Result:
        recipe = job.recipe
        self.progress = (0, recipe.steps)
        if job.kind == "draft":
            self.abort = should_stop
            try:
                image = drafts.make(self.model, recipe, self._counting(should_stop), self.dirs, self.deep_shrink)
            finally:
                self.abort = None
            return Result(job.id, recipe, image)
        self.first_step_due = True
        image = variations.make(
            self.model,
            job.source,
            recipe,
            on_step=self._stopping(should_stop),
            latents=self.encoded(job),
            dirs=self.dirs,
            upscaler=variations.ladder_upscaler(self.cfg),  # loaded once per file, then cached
        )
        finished = finishing.finished_copy(self.cfg, image, recipe, self.model.device)
        return Result(job.id, recipe, image, finished)

    def _counting(self, should_stop):
        def check() -> bool:
            self.progress = (self.progress[0] + 1, self.progress[1])
            return should_stop()

        return check

    def _stopping(self, should_stop):
        def on_step(step: int) -> None:
            self.progress = (step + 1, self.progress[1])
            if should_stop():
                raise Stopped()

        return on_step

    # -- the latents of a round -----------------------------------------------------------------

    def prefetch(self, job: Job) -> Future:
        """Encode a variation's draft now, on the second thread (the draft in progress finishes its
        step meanwhile); called from the worker's own thread and from whoever hands it jobs."""
        key = _latents_key(job)
        with self.lock:
            # an encode that failed (out of memory beside a draft...) is tried again, not handed on
            if self.latents is None or self.latents[0] != key or _failed(self.latents[1]):
                self.latents = (key, self.encoder.submit(self._encode, job.source, key))
                trace("prefetched", id=key[0])
            return self.latents[1]

    def _encode(self, source, key: tuple):
        latents = variations.encode(self.model, source, key[1])
        trace("encoded", id=key[0])
        return latents

    def encoded(self, job: Job):
        """The first stage's latents of this variation's draft: prefetched, kept from the last
        variation of the same round, or encoded now."""
        return self.prefetch(job).result()

    def close(self) -> None:
        """Let go of the model: its hooks are removed (a model outlives its runner in tests)."""
        self.encoder.shutdown(wait=True)
        for hook in self.hooks:
            hook.remove()

    def _abort_between_blocks(self, module, args) -> None:
        """A draft asked to stop stops at the next UNet block, not at the end of its step: the
        variation waiting for this worker starts a fraction of a step sooner (what is left of
        the step is thrown away with the rest of the draft anyway)."""
        if self.abort is not None and self.abort():
            raise drafts.Preempted()

    def _trace_first_step(self, module, args) -> None:
        # a forward pre-hook on the UNet: fires as a denoising step *starts* (bench/ measures latency to it)
        if self.first_step_due:
            self.first_step_due = False
            trace("variation_first_step")


def _failed(future: Future) -> bool:
    return future.done() and (future.cancelled() or future.exception() is not None)


def _latents_key(job: Job) -> tuple:
    return job.recipe.parent, variations.first_stage_size(job.source, job.recipe.stage_areas)
