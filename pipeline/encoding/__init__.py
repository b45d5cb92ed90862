"""A1111 prompts -> embeddings for diffusers, as AUTOMATIC1111's webui computes them by default.

Written from A1111's documented behaviour (see /work/shared/FIELD_NOTES.md, "Prompts as A1111
reads them"), not from its code. What a prompt goes through, in order:

1. **Extra networks** ``<kind:name:args>`` (pattern ``<(\\w+):([^>]+)>``) are cut out of the
   prompt and returned as :class:`Network` (``<lora:x:0.6>``: te = unet = 0.6;
   ``<lora:x:0.6:0.2>`` or ``te=``/``unet=``: separate multipliers; no number: 1.0). Applying
   them is the caller's job, before encoding. The negative prompt is taken as text, as A1111
   takes it (its tags are not stripped, ``AND`` is a word there).
2. **AND** (composable diffusion: one UNet pass per sub-prompt) is refused with an AiimgError.
3. **Scheduling**: ``[from:to:when]`` (``when`` written with a decimal point: a fraction of the
   steps, ``int(when * steps)``, as A1111 >= 1.6 reads it by default; without one: a step number;
   switches after that step), ``[to:when]``, ``[from::when]``, and ``[a|b|...]`` (a new option every
   step). :func:`prompts_for_steps` lists the text in force for each stretch of steps, in A1111's
   numbering: sampling step ``i`` (0-based, as diffusers' callback counts it; in img2img, the
   first step actually run is 0) uses the first entry with ``i <= until_step``. Each distinct
   text is encoded once.
4. **Emphasis** ("original" parsing): ``(x)`` x1.1, ``[x]`` x1/1.1, ``(x:1.3)`` x1.3, nesting
   multiplies, a bracket left open applies to the end, ``\\( \\) \\[ \\] \\\\`` are literal, equal
   neighbours merge. ``BREAK`` (uppercase, whole word) ends a chunk.
5. **Chunks** of 75 tokens, BOS + tokens + EOS + padding (the tokenizer's pad token: EOS for
   OpenAI CLIP, ``!`` for OpenCLIP) = 77. A full chunk that meets one more token ends after its
   last comma when that comma is among its last 20 tokens. A textual-inversion embedding (the
   tokens ``name name_1 ...`` that diffusers' ``load_textual_inversion`` adds) is never split.
   No token is dropped (diffusers alone cuts at 77).
6. **Encoding**, chunk by chunk: SD 1.x/2.x use the text encoder's output, or with clip skip N
   (A1111's numbering, 1 = none) ``hidden_states[-N]`` + the final LayerNorm (ignored on SD 2.x
   and SDXL, as A1111 does). SDXL concatenates CLIP-L's and CLIP-G's penultimate hidden states
   (no final LayerNorm); its pooled vector is CLIP-G's projected EOS state of the first chunk,
   unweighted; an empty negative prompt is all zeros (embeddings and pooled).
7. **Weights**: ``z * w`` per token, then ``z *= mean_before / mean_after`` per chunk
   ("original"); "no-norm" skips the restore; "ignore" uses 1.0 everywhere. Chunks are
   concatenated on the sequence axis; the prompt and negative are padded to the same number of
   chunks with the encoding of an empty prompt.

Use::

    from pipeline.encoding import encode

    cond = encode(pipe, prompt, negative, clip_skip=1, emphasis="original", steps=steps)
    image = pipe(**cond.kwargs(), num_inference_steps=steps, ...,
                 callback_on_step_end=cond.callback,
                 callback_on_step_end_tensor_inputs=cond.tensor_inputs).images[0]

``cond.mode`` ("aiimg-a1111/1 emphasis=original") is what a recipe records; :func:`token_count`
reports tokens/chunks. Known differences from A1111: a prompt whose negative has a different
number of chunks is padded (A1111 may instead run the two separately); BREAK inside brackets
still breaks (A1111 then tokenizes the word).
"""

from pipeline.encoding.chunks import Chunk, TokenCount, chunk_fragments, token_count
from pipeline.encoding.encoder import ENCODER_VERSION, Conditioning, Stretch, encode, encoder_mode
from pipeline.encoding.syntax import (
    EMPHASIS_MODES,
    Fragment,
    Network,
    parse_emphasis,
    parse_networks,
    prompts_for_steps,
    refuse_and,
)
from pipeline.encoding.vocab import clip_tokenizer, write_tokenizer_files

__all__ = [
    "EMPHASIS_MODES",
    "ENCODER_VERSION",
    "Chunk",
    "Conditioning",
    "Fragment",
    "Network",
    "Stretch",
    "TokenCount",
    "chunk_fragments",
    "clip_tokenizer",
    "encode",
    "encoder_mode",
    "parse_emphasis",
    "parse_networks",
    "prompts_for_steps",
    "refuse_and",
    "token_count",
    "write_tokenizer_files",
]
