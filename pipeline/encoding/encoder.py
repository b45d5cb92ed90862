"""Prompt -> embeddings for a diffusers SD 1.x/2.x or SDXL pipeline, the way A1111 computes them.

torch is imported inside functions: the text-only modules of this package import without it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from pipeline.encoding.chunks import Chunk, chunk_fragments
from pipeline.encoding.syntax import Network, check_emphasis, parse_emphasis, parse_networks, prompts_for_steps
from pipeline.encoding.syntax import refuse_and as _refuse_and
from pipeline.errors import AiimgError

log = logging.getLogger("aiimg.encoding")

ENCODER_VERSION = "aiimg-a1111/1"


def encoder_mode(emphasis: str = "original") -> str:
    """What a recipe records of how its prompt became embeddings."""
    return f"{ENCODER_VERSION} emphasis={check_emphasis(emphasis)}"


@dataclass(frozen=True)
class Stretch:
    """The conditioning for sampling steps up to ``until_step`` (A1111's numbering, see prompts_for_steps)."""

    until_step: int
    prompt: str
    negative: str
    prompt_embeds: Any
    negative_prompt_embeds: Any
    pooled: Any = None
    negative_pooled: Any = None


@dataclass(frozen=True)
class Conditioning:
    """Embeddings for a whole run: ``kwargs()`` for the call, ``on_step`` to switch mid-run."""

    stretches: tuple[Stretch, ...]
    networks: tuple[Network, ...]
    mode: str
    sdxl: bool
    chunks: int

    @property
    def scheduled(self) -> bool:
        """True when prompt editing or alternation changes the conditioning during the run."""
        return len(self.stretches) > 1

    @property
    def tensor_inputs(self) -> list[str]:
        """For ``callback_on_step_end_tensor_inputs``: what ``on_step`` must be able to replace."""
        return ["prompt_embeds", "add_text_embeds"] if self.sdxl else ["prompt_embeds"]

    def stretch_at(self, step: int) -> Stretch:
        """The stretch in force at sampling step ``step`` (0-based, as diffusers counts)."""
        for stretch in self.stretches:
            if step <= stretch.until_step:
                return stretch
        return self.stretches[-1]

    def kwargs(self) -> dict:
        """Pass to the pipeline call instead of ``prompt``/``negative_prompt``."""
        first = self.stretches[0]
        out = {"prompt_embeds": first.prompt_embeds, "negative_prompt_embeds": first.negative_prompt_embeds}
        if self.sdxl:
            out |= {"pooled_prompt_embeds": first.pooled, "negative_pooled_prompt_embeds": first.negative_pooled}
        return out

    def on_step(self, step: int, callback_kwargs: dict, *, cfg: bool = True) -> dict:
        """From diffusers' ``callback_on_step_end``: install the conditioning for step ``step + 1``.

        Under classifier-free guidance (``cfg``, the pipeline's ``do_classifier_free_guidance``)
        the pipeline holds ``[negative, positive]`` concatenated on the batch axis. ``step`` is
        diffusers' loop index, one per UNet call: a scheduler that calls the UNet twice per step
        (Heun, DPM2) or adds a warm-up call (PNDM) moves the switch earlier, as A1111's counter of
        denoiser calls does for its second-order samplers.
        """
        if not self.scheduled:
            return callback_kwargs
        missing = [k for k in self.tensor_inputs if k not in callback_kwargs]
        if missing:
            raise AiimgError(
                f"this prompt changes during sampling but the step callback was not given {missing}; "
                f"call the pipeline with callback_on_step_end_tensor_inputs=conditioning.tensor_inputs"
            )
        now, following = self.stretch_at(step), self.stretch_at(step + 1)
        if following is now:
            return callback_kwargs
        callback_kwargs["prompt_embeds"] = _batch(
            callback_kwargs["prompt_embeds"], following.negative_prompt_embeds, following.prompt_embeds, cfg
        )
        if self.sdxl:
            callback_kwargs["add_text_embeds"] = _batch(
                callback_kwargs["add_text_embeds"], following.negative_pooled, following.pooled, cfg
            )
        return callback_kwargs

    def callback(self, pipe, step: int, timestep, callback_kwargs: dict) -> dict:
        """``on_step`` with diffusers' callback signature, usable as ``callback_on_step_end`` as is."""
        return self.on_step(step, callback_kwargs, cfg=bool(getattr(pipe, "do_classifier_free_guidance", True)))


def _batch(current, negative, positive, cfg: bool):
    import torch

    rows = current.shape[0]
    if cfg:
        half = rows // 2
        new = torch.cat([negative.expand(half, *negative.shape[1:]), positive.expand(half, *positive.shape[1:])])
    else:
        new = positive.expand(rows, *positive.shape[1:])
    return new.to(device=current.device, dtype=current.dtype)


# -- the text encoders of a pipeline -------------------------------------------------------------


@dataclass(frozen=True)
class _TextEncoder:
    tokenizer: Any
    model: Any
    # hidden_states index counted from the end; None = the model's own output
    hidden_layer: int | None
    final_norm: bool
    pooled: bool


def _text_encoders(pipe, clip_skip: int) -> list[_TextEncoder]:
    if getattr(pipe, "text_encoder", None) is None or getattr(pipe, "tokenizer", None) is None:
        raise AiimgError(
            f"{type(pipe).__name__} has no text_encoder/tokenizer (an SDXL refiner?): "
            f"A1111 prompt encoding needs SD 1.x/2.x or SDXL base"
        )
    if getattr(pipe, "text_encoder_2", None) is not None:
        if clip_skip != 1:
            log.info("clip skip %d ignored on SDXL, as A1111 does", clip_skip)
        # SDXL: both penultimate layers, without the final LayerNorm
        return [
            _TextEncoder(pipe.tokenizer, pipe.text_encoder, 2, False, False),
            _TextEncoder(pipe.tokenizer_2, pipe.text_encoder_2, 2, False, True),
        ]
    layers = pipe.text_encoder.config.num_hidden_layers
    if not 1 <= clip_skip <= layers:
        raise AiimgError(f"clip skip = {clip_skip}: use 1 (no skip) to {layers} for this model's text encoder")
    if clip_skip != 1 and pipe.text_encoder.config.hidden_act == "gelu":
        # OpenCLIP (SD 2.x, gelu; OpenAI CLIP uses quick_gelu): A1111 leaves its layer as it is
        log.info("clip skip %d ignored on SD 2.x, as A1111 does", clip_skip)
        clip_skip = 1
    return [_TextEncoder(pipe.tokenizer, pipe.text_encoder, None if clip_skip == 1 else clip_skip, True, False)]


# -- encoding ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Encoded:
    embeds: Any  # [1, 77 * chunks, features]
    pooled: Any  # [1, projection] or None
    chunks: int


def encode(
    pipe, prompt: str, negative: str, *, clip_skip: int = 1, emphasis: str = "original", steps: int
) -> Conditioning:
    """The prompt and negative prompt of one run as embeddings, for every stretch of its steps.

    Extra networks (``<lora:...>``) are removed from the prompt and returned in
    ``Conditioning.networks``; apply them to the pipeline *before* calling this (a LoRA changes
    the text encoder). The negative prompt is taken as text, as A1111 takes it.
    """
    check_emphasis(emphasis)
    if isinstance(clip_skip, bool) or not isinstance(clip_skip, int):
        raise AiimgError(f"clip skip = {clip_skip!r}: use a whole number, 1 for none")
    text, networks = parse_networks(prompt)
    _refuse_and(text)
    encoders = _text_encoders(pipe, clip_skip)
    schedule = _joint_schedule(prompts_for_steps(text, steps), prompts_for_steps(negative, steps))
    stretches = _stretches(schedule, _Cache(encoders, emphasis), zero_negative=len(encoders) == 2 and negative == "")
    return Conditioning(
        stretches=tuple(stretches),
        networks=tuple(networks),
        mode=encoder_mode(emphasis),
        sdxl=len(encoders) == 2,
        chunks=max(s.prompt_embeds.shape[1] // 77 for s in stretches),
    )


@dataclass
class _Cache:
    """Each distinct text encoded once per run (editing and alternation repeat texts)."""

    encoders: list[_TextEncoder]
    emphasis: str
    done: dict[str, _Encoded] = field(default_factory=dict)

    def get(self, text: str) -> _Encoded:
        if text not in self.done:
            self.done[text] = _encode_text(text, self.encoders, self.emphasis)
        return self.done[text]


def _stretches(schedule: list[tuple[int, str, str]], cache: _Cache, zero_negative: bool) -> list[Stretch]:
    """The embeddings of each stretch, prompt and negative padded to one length.

    ``zero_negative``: SDXL's empty negative prompt is all zeros in A1111 (diffusers zeroes only
    a missing one, not ``""``).
    """
    out = []
    for until, pos_text, neg_text in schedule:
        pos = cache.get(pos_text)
        neg = _zeros_like(pos) if zero_negative else cache.get(neg_text)
        size = max(pos.chunks, neg.chunks)
        pos, neg = (_padded(e, size, cache) for e in (pos, neg))
        out.append(Stretch(until, pos_text, neg_text, pos.embeds, neg.embeds, pos.pooled, neg.pooled))
    return out


def _joint_schedule(pos: list[tuple[int, str]], neg: list[tuple[int, str]]) -> list[tuple[int, str, str]]:
    """One list of stretches where neither the prompt nor the negative changes inside a stretch."""
    joint: list[tuple[int, str, str]] = []
    for until in sorted({u for u, _ in pos} | {u for u, _ in neg}):
        pair = (_text_at(pos, until), _text_at(neg, until))
        if joint and joint[-1][1:] == pair:
            joint[-1] = (until, *pair)
        else:
            joint.append((until, *pair))
    return joint


def _text_at(schedule: list[tuple[int, str]], step: int) -> str:
    return next((t for u, t in schedule if step <= u), schedule[-1][1])


def _encode_text(text: str, encoders: list[_TextEncoder], emphasis: str) -> _Encoded:
    import torch

    fragments = parse_emphasis(text, emphasis)
    per_encoder = [chunk_fragments(fragments, enc.tokenizer) for enc in encoders]
    counts = {len(chunks) for chunks in per_encoder}
    if len(counts) != 1:
        raise AiimgError(
            f"prompt {text[:60]!r} splits into {sorted(counts)} chunks for SDXL's two tokenizers: "
            f"an embedding is loaded into only one of them or with different lengths; load it into both"
        )
    outputs = [_run(enc, chunks, emphasis) for enc, chunks in zip(encoders, per_encoder)]
    embeds = torch.cat([z for z, _ in outputs], dim=-1)
    pooled = next((p for (_, p), enc in zip(outputs, encoders) if enc.pooled), None)
    return _Encoded(embeds, pooled, len(per_encoder[0]))


def _run(enc: _TextEncoder, chunks: list[Chunk], emphasis: str):
    """One text encoder on every chunk: weighted hidden states [1, 77 * n, d], and the pooled vector."""
    import torch

    model = enc.model
    ids = torch.tensor([c.ids for c in chunks], device=model.device)
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
        if enc.hidden_layer is None:
            z = out.last_hidden_state
        else:
            z = out.hidden_states[-enc.hidden_layer]
            if enc.final_norm:
                z = _text_model(model).final_layer_norm(z)
        pooled = None
        if enc.pooled:
            # A1111's pooled vector: the first chunk's, at its EOS, unweighted (not diffusers' argmax,
            # which lands on an embedding's added token ids above EOS)
            first = out.last_hidden_state[0, chunks[0].eos_index]
            pooled = model.text_projection(first).unsqueeze(0)
        z = _weighted(z, chunks, emphasis)
    return z.reshape(1, -1, z.shape[-1]), pooled


def _weighted(z, chunks: list[Chunk], emphasis: str):
    """Per chunk: ``z * w`` per token, then (original) ``z *= mean_before / mean_after``."""
    import torch

    if emphasis == "ignore":
        return z
    weights = torch.tensor([c.weights for c in chunks], device=z.device, dtype=torch.float32).unsqueeze(-1)
    z32 = z.float()
    scaled = z32 * weights
    if emphasis == "original":
        before = z32.mean(dim=(1, 2), keepdim=True)
        after = scaled.mean(dim=(1, 2), keepdim=True)
        # a mean of exactly 0 (all-zero states) has nothing to restore; 0/0 would be NaN
        scaled = scaled * torch.where(after == 0, torch.ones_like(after), before / after)
    return scaled.to(z.dtype)


def _text_model(model):
    # transformers 5: CLIPTextModel is the text model itself; CLIPTextModelWithProjection wraps one
    return getattr(model, "text_model", model)


def _zeros_like(e: _Encoded) -> _Encoded:
    import torch

    return _Encoded(torch.zeros_like(e.embeds), None if e.pooled is None else torch.zeros_like(e.pooled), e.chunks)


def _padded(e: _Encoded, chunks: int, cache: _Cache) -> _Encoded:
    """``e`` extended to ``chunks`` chunks with the encoding of an empty prompt (zeros stay zeros)."""
    import torch

    if e.chunks >= chunks:
        return e
    empty = cache.get("").embeds
    filler = torch.zeros_like(empty) if _is_zero(e) else empty
    return _Encoded(torch.cat([e.embeds, *[filler] * (chunks - e.chunks)], dim=1), e.pooled, chunks)


def _is_zero(e: _Encoded) -> bool:
    return not bool(e.embeds.any())
