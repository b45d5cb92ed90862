"""The CLIP BPE vocabulary, vendored (pipeline/data/clip/, MIT): real token counts with no download.

Every CLIP text encoder that Stable Diffusion uses (OpenAI CLIP-L for SD 1.x and SDXL, OpenCLIP
ViT-H for SD 2.x, OpenCLIP ViT-bigG for SDXL) shares one vocabulary, built from the merges file
the same way the original CLIP tokenizer builds it: the 256 byte symbols, the same with ``</w>``,
one entry per merge, then ``<|startoftext|>`` and ``<|endoftext|>`` (49408 entries). Only the
padding token differs: ``<|endoftext|>`` for OpenAI CLIP, ``!`` (id 0) for OpenCLIP.
"""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from pathlib import Path

from pipeline.errors import AiimgError

BPE_FILE = Path(__file__).resolve().parent.parent / "data" / "clip" / "bpe_simple_vocab_16e6.txt.gz"
VOCAB_SIZE = 49408
MAX_LENGTH = 77
BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
OPENCLIP_PAD = "!"
# the merges file holds more merges than CLIP was trained with; CLIP keeps the first ones
_MERGE_COUNT = VOCAB_SIZE - 2 * 256 - 2


@lru_cache(maxsize=1)
def byte_symbols() -> tuple[str, ...]:
    """One printable character per byte value, printable bytes first (GPT-2's byte-level BPE order)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    # bytes without a printable face borrow code points from 256 up, in byte order
    others = [b for b in range(256) if b not in set(printable)]
    return tuple(chr(b) for b in printable) + tuple(chr(256 + i) for i in range(len(others)))


@lru_cache(maxsize=1)
def vocab_and_merges() -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    """The vocabulary (token -> id) and the merges, parsed from the vendored file once per process."""
    try:
        lines = gzip.decompress(BPE_FILE.read_bytes()).decode("utf-8").split("\n")
    except OSError as exc:
        raise AiimgError(f"{BPE_FILE}: cannot read the vendored CLIP vocabulary ({exc}); reinstall aiimg") from None
    # line 0 is the "#version" header
    merges = tuple(tuple(line.split()) for line in lines[1 : 1 + _MERGE_COUNT])
    symbols = byte_symbols()
    tokens = [*symbols, *(s + "</w>" for s in symbols), *("".join(m) for m in merges), BOS, EOS]
    vocab = {token: index for index, token in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE or any(len(m) != 2 for m in merges):
        raise AiimgError(f"{BPE_FILE}: not the CLIP merges file ({len(vocab)} entries, want {VOCAB_SIZE})")
    return vocab, merges


def clip_tokenizer(pad_token: str = EOS):
    """A fresh transformers CLIPTokenizer (fresh: loading an embedding adds tokens to it).

    ``pad_token``: ``<|endoftext|>`` for SD 1.x and SDXL's first tokenizer, ``!`` for SD 2.x and
    SDXL's tokenizer_2 (OpenCLIP).
    """
    from transformers import CLIPTokenizer

    vocab, merges = vocab_and_merges()
    if pad_token not in vocab:
        raise AiimgError(f"pad token {pad_token!r} is not in the CLIP vocabulary; use {EOS!r} or {OPENCLIP_PAD!r}")
    # transformers 5 ignores vocab_file=/merges_file= here: only in-memory data builds the BPE
    tok = CLIPTokenizer(vocab=dict(vocab), merges=list(merges), pad_token=pad_token, model_max_length=MAX_LENGTH)
    if len(tok) != VOCAB_SIZE:
        raise AiimgError(
            f"the CLIP tokenizer came out with {len(tok)} entries, not {VOCAB_SIZE}: "
            f"this transformers version builds CLIPTokenizer differently; pin transformers 5"
        )
    return tok


@lru_cache(maxsize=1)
def shared_tokenizer():
    """One CLIP tokenizer for counting tokens; never load an embedding into it (use clip_tokenizer)."""
    return clip_tokenizer()


def write_tokenizer_files(folder: Path, pad_token: str = EOS) -> None:
    """vocab.json, merges.txt and the configs, as in a diffusers ``tokenizer/`` folder.

    ``CLIPTokenizer.from_pretrained(folder)`` (what ``from_single_file(config=...)`` runs) then
    gives the same tokenizer as :func:`clip_tokenizer`.
    """
    vocab, merges = vocab_and_merges()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges_text = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
    (folder / "merges.txt").write_text(merges_text, encoding="utf-8")
    specials = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": pad_token}
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": MAX_LENGTH,
        "do_lower_case": True,
        "errors": "replace",
        **specials,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(json.dumps(specials, indent=2), encoding="utf-8")
