"""Weighted fragments -> 77-token chunks, as A1111 splits a long prompt (no torch; a tokenizer only).

A chunk holds up to 75 prompt tokens, wrapped as BOS + tokens + EOS and padded with the
tokenizer's pad token to 77 (for OpenAI CLIP the pad token is EOS itself, so this is also
"BOS + 75 padded + EOS"). When a chunk is full and one more token comes, a comma among its last
20 tokens marks where it ends: what follows the comma moves to the next chunk. BREAK ends a
chunk early. The vectors of one textual-inversion embedding stay in one chunk. No token is ever
dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.encoding.syntax import Fragment, parse_emphasis, parse_networks, prompts_for_steps, refuse_and
from pipeline.errors import AiimgError

CHUNK = 75
COMMA_BACKTRACK = 20


@dataclass(frozen=True)
class Chunk:
    """77 token ids and their weights (1.0 on BOS, EOS and padding); ``length`` prompt tokens."""

    ids: tuple[int, ...]
    weights: tuple[float, ...]
    length: int

    @property
    def eos_index(self) -> int:
        return 1 + self.length


@dataclass(frozen=True)
class _Unit:
    """Tokens that travel together: one word piece, or all vectors of one embedding."""

    ids: tuple[int, ...]
    weight: float


_BREAK_UNIT = _Unit((), 1.0)


@dataclass(frozen=True)
class TokenCount:
    """How much of the text encoder a prompt uses: A1111 shows ``tokens/limit``."""

    tokens: int
    chunks: int

    @property
    def limit(self) -> int:
        return self.chunks * CHUNK


def token_count(text: str, tokenizer=None, *, steps: int = 20, negative: bool = False) -> TokenCount:
    """Tokens and chunks of a prompt as encode() will split it (the largest scheduled text's).

    ``tokenizer``: the pipeline's (it knows the loaded embeddings); the vendored CLIP one if None.
    """
    if tokenizer is None:
        from pipeline.encoding.vocab import shared_tokenizer

        tokenizer = shared_tokenizer()
    if not negative:
        text, _ = parse_networks(text)
        refuse_and(text)
    counts = []
    for _, scheduled in prompts_for_steps(text, steps):
        chunks = chunk_fragments(parse_emphasis(scheduled), tokenizer)
        counts.append(TokenCount(sum(c.length for c in chunks), len(chunks)))
    return max(counts, key=lambda c: (c.chunks, c.tokens))


def chunk_fragments(fragments: list[Fragment], tokenizer) -> list[Chunk]:
    """The chunks of a parsed prompt; an empty prompt is one chunk of padding."""
    specials = _Specials.of(tokenizer)
    chunks: list[Chunk] = []
    current: list[_Unit] = []
    last_comma = None  # (unit index, token position) of the current chunk's last comma
    for unit in _units(fragments, tokenizer, specials):
        if unit is _BREAK_UNIT:
            chunks.append(specials.wrap(current))
            current, last_comma = [], None
            continue
        if len(unit.ids) > CHUNK:
            raise AiimgError(
                f"an embedding of {len(unit.ids)} vectors cannot fit in one {CHUNK}-token chunk; "
                f"use a smaller embedding"
            )
        is_comma = unit.ids == (specials.comma,)
        size = _size(current)
        if size == CHUNK and not is_comma and last_comma and last_comma[1] >= CHUNK - COMMA_BACKTRACK:
            cut = last_comma[0] + 1
            chunks.append(specials.wrap(current[:cut]))
            current, last_comma = current[cut:], None
        if _size(current) + len(unit.ids) > CHUNK:
            chunks.append(specials.wrap(current))
            current, last_comma = [], None
        if is_comma:
            last_comma = (len(current), _size(current))
        current.append(unit)
    if current or not chunks:
        chunks.append(specials.wrap(current))
    return chunks


def _size(units: list[_Unit]) -> int:
    return sum(len(u.ids) for u in units)


@dataclass(frozen=True)
class _Specials:
    bos: int
    eos: int
    pad: int
    comma: int
    embeddings: dict[int, tuple[int, ...]]  # first vector's id -> ids of all its vectors

    @classmethod
    def of(cls, tokenizer) -> _Specials:
        comma = tokenizer.convert_tokens_to_ids(",</w>")
        if comma is None or comma == tokenizer.unk_token_id:
            comma = -1  # a vocabulary without the CLIP comma: no backtracking
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        return cls(tokenizer.bos_token_id, tokenizer.eos_token_id, pad, comma, _embeddings(tokenizer))

    def wrap(self, units: list[_Unit]) -> Chunk:
        ids = [i for u in units for i in u.ids]
        weights = [u.weight for u in units for _ in u.ids]
        pad = CHUNK - len(ids)
        return Chunk(
            ids=(self.bos, *ids, self.eos, *[self.pad] * pad),
            weights=(1.0, *weights, 1.0, *[1.0] * pad),
            length=len(ids),
        )


def _embeddings(tokenizer) -> dict[int, tuple[int, ...]]:
    """Embeddings that diffusers' ``load_textual_inversion`` added: ``name``, ``name_1``, ``name_2``..."""
    added = {t: i for t, i in tokenizer.get_added_vocab().items() if t not in tokenizer.all_special_tokens}
    groups = {}
    for token, first in added.items():
        ids = [first]
        while f"{token}_{len(ids)}" in added:
            ids.append(added[f"{token}_{len(ids)}"])
        groups[first] = tuple(ids)
    # ``name_1`` alone is a vector of ``name``, not an embedding of its own
    vectors = {i for ids in groups.values() for i in ids[1:]}
    return {first: ids for first, ids in groups.items() if first not in vectors}


def _units(fragments: list[Fragment], tokenizer, specials: _Specials):
    for fragment in fragments:
        if fragment.is_break:
            yield _BREAK_UNIT
            continue
        ids = token_ids(tokenizer, fragment.text)
        pos = 0
        while pos < len(ids):
            group = specials.embeddings.get(ids[pos], (ids[pos],))
            yield _Unit(group, fragment.weight)
            # a prompt that already spells out "name name_1 ..." is not expanded twice
            pos += len(group) if tuple(ids[pos : pos + len(group)]) == group else 1


def token_ids(tokenizer, text: str) -> list[int]:
    """The text's tokens without BOS/EOS, never truncated nor padded."""
    if not text:
        return []
    # explicit: a fast tokenizer keeps the padding of its previous call; verbose=False: no
    # "longer than 77" warning, long prompts are the point here
    out = tokenizer(text, add_special_tokens=False, padding=False, truncation=False, verbose=False)
    return list(out["input_ids"])
