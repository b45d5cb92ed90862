"""LoRAs and embeddings on a loaded diffusers pipeline (SD1/SD2/SDXL), switched per image.

One :class:`Adapters` per set of model weights: the txt2img pipeline and the img2img one built
from it with ``from_pipe`` share their UNet and text encoders, so what is loaded through one is
active in both. Each LoRA file is loaded once as a peft adapter named after its hash; an image
then only switches which adapters are active and at what weights (no weights are copied or
merged), and an image without LoRA runs with every adapter disabled: the very pixels of a model
that never had one. At most ``max_loaded`` adapters stay resident; the least recently used
inactive ones are deleted past that.

Embeddings (textual inversion) are added to the tokenizer(s) once, under their file stem, the
word A1111 triggers them by; SDXL files load ``clip_l`` into the first text encoder and
``clip_g`` into the second.
"""

from __future__ import annotations

import logging
import warnings
from collections import OrderedDict

from pipeline import resources
from pipeline.errors import AiimgError
from pipeline.resources import EmbeddingFile, LoraFile

log = logging.getLogger("aiimg.resources")

MAX_LOADED = 8


class Adapters:
    """The LoRAs and embeddings of one pipeline (and of every pipeline sharing its modules)."""

    def __init__(self, pipe, max_loaded: int = MAX_LOADED):
        self.pipe = pipe
        self.max_loaded = max_loaded
        self._loaded: OrderedDict[str, LoraFile] = OrderedDict()  # adapter name -> file, least recent first
        self.active: list[str] = []
        self.embeddings: dict[str, list[str]] = {}  # lower-case stem -> its tokens, one per vector
        self._embedding_hashes: dict[str, str] = {}

    # -- LoRA -----------------------------------------------------------------------------------

    @property
    def loaded(self) -> list[str]:
        return list(self._loaded)

    def activate(self, loras: list[tuple[LoraFile, float, float]]) -> None:
        """Make exactly these LoRAs active, each at its (text encoder, UNet) weights; ``[]``
        disables every adapter. The same file twice adds its weights (A1111 applies both)."""
        wanted = _merge(loras, self._adapter_name)
        try:
            for name, (lora, _, _) in wanted.items():
                self._ensure(name, lora)
        except AiimgError:
            self.activate([])  # a load may have switched adapters: leave a known state, no LoRA
            raise
        if not wanted:
            if self._loaded:
                self.pipe.disable_lora()
            self.active = []
            return
        parts = self.pipe.get_list_adapters()
        weights = [_component_weights(name, te, unet, parts) for name, (_, te, unet) in wanted.items()]
        self.pipe.enable_lora()  # disable_lora holds until enabled again, whatever set_adapters says
        self.pipe.set_adapters(list(wanted), adapter_weights=weights)
        self.active = list(wanted)
        for name in self.active:
            self._loaded.move_to_end(name)
        self._trim()

    def evict(self, names: list[str] | None = None) -> list[str]:
        """Delete adapters from memory (default: every inactive one); returns the names deleted."""
        names = [n for n in (names if names is not None else self._loaded) if n in self._loaded]
        names = [n for n in names if n not in self.active]
        if names:
            self.pipe.delete_adapters(names)
            for name in names:
                del self._loaded[name]
        return names

    def _trim(self) -> None:
        spare = [n for n in self._loaded if n not in self.active]
        excess = len(self._loaded) - self.max_loaded
        if excess > 0:
            log.debug("evicting LoRA adapters %s (more than %d loaded)", spare[:excess], self.max_loaded)
            self.evict(spare[:excess])

    @staticmethod
    def _adapter_name(lora: LoraFile) -> str:
        # the content's hash, not the file name: a renamed file stays loaded, an edited one reloads
        return f"lora_{lora.hash}"

    def _ensure(self, name: str, lora: LoraFile) -> None:
        if name in self._loaded:
            return
        resources.check_lora(lora.path)
        state = resources.read_lora(lora.path)
        log.info("loading LoRA %s", lora.path)
        try:
            with warnings.catch_warnings():
                # peft warns on every adapter after the first: several resident adapters is the point
                warnings.filterwarnings("ignore", message="Already found a `peft_config`")
                self.pipe.load_lora_weights(state, adapter_name=name)
        except (ValueError, RuntimeError, KeyError, IndexError, TypeError) as exc:
            self._forget(name)
            raise AiimgError(
                f"{lora.path}: cannot be applied to this model ({_gist(exc)}); "
                f"is it a LoRA for another base model (SD1 vs SDXL)?"
            ) from None
        if not any(name in names for names in self.pipe.get_list_adapters().values()):
            raise AiimgError(f"{lora.path}: none of its layers match this model; is it for another base model?")
        self._loaded[name] = lora

    def _forget(self, name: str) -> None:
        """Remove what a failed load left behind, so the next try starts clean."""
        try:
            if any(name in names for names in self.pipe.get_list_adapters().values()):
                self.pipe.delete_adapters([name])
        except (ValueError, KeyError) as exc:
            log.debug("could not clean up adapter %s: %s", name, exc)

    # -- embeddings -----------------------------------------------------------------------------

    def ensure_embeddings(self, embeddings: list[EmbeddingFile]) -> dict[str, list[str]]:
        """Load each embedding not loaded yet; returns ``{lower-case stem: tokens}`` of all loaded."""
        for emb in embeddings:
            key = emb.name.lower()
            if key in self.embeddings:
                if self._embedding_hashes[key] != emb.hash:
                    log.warning("%s changed on disk; restart to use the new version", emb.path)
                continue
            self._load_embedding(emb)
            self._embedding_hashes[key] = emb.hash
        return dict(self.embeddings)

    def _load_embedding(self, emb: EmbeddingFile) -> None:
        vectors = resources.load_embedding(emb)
        targets = self._text_encoders()
        tensors = [_vectors_for(emb, vectors, key, encoder) for encoder, _, key in targets]
        log.info("loading embedding %s", emb.path)
        # A tokenizer matches an added token anywhere, even inside a word ("Starrynight"), and a
        # name that is a vocabulary piece ("red") cannot be added: the vectors go under a
        # placeholder no prompt contains, and expand_embeddings puts it where the name stands
        # as a whole word, as A1111 matches.
        token = f"<emb-{emb.hash}>"
        for (encoder, tokenizer, _), tensor in zip(targets, tensors):
            try:
                self.pipe.load_textual_inversion(tensor, token=token, text_encoder=encoder, tokenizer=tokenizer)
            except ValueError as exc:
                raise AiimgError(f"{emb.path}: cannot be added to the tokenizer ({_first_line(exc)})") from None
        count = tensors[0].shape[0]
        self.embeddings[emb.name.lower()] = [token] + [f"{token}_{i}" for i in range(1, count)]

    def _text_encoders(self) -> list[tuple]:
        pipe = self.pipe
        if getattr(pipe, "text_encoder_2", None) is not None:
            return [(pipe.text_encoder, pipe.tokenizer, "clip_l"), (pipe.text_encoder_2, pipe.tokenizer_2, "clip_g")]
        return [(pipe.text_encoder, pipe.tokenizer, "clip_l")]

    def expand_embeddings(self, text: str, names: list[str] | None = None) -> str:
        """The prompt with each embedding's name (a whole word, any case; of ``names`` only, when
        given: the recipe's own) replaced by its tokens, one per vector: ``EasyNegative`` ->
        ``<emb-HASH> <emb-HASH>_1 ...``."""
        wanted = {n.lower() for n in names} if names is not None else set(self.embeddings)
        loaded = {n: t for n, t in self.embeddings.items() if n in wanted}
        if not loaded:
            return text
        return resources.whole_words(loaded).sub(lambda m: " ".join(loaded[m.group(1).lower()]), text)


def _merge(loras, adapter_name) -> dict[str, tuple[LoraFile, float, float]]:
    merged: dict[str, tuple[LoraFile, float, float]] = {}
    for lora, te, unet in loras:
        name = adapter_name(lora)
        _, te0, unet0 = merged.get(name, (lora, 0.0, 0.0))
        merged[name] = (lora, te0 + float(te), unet0 + float(unet))
    return merged


def _component_weights(name: str, te: float, unet: float, parts: dict[str, list[str]]) -> dict[str, float]:
    """Weights only for the parts this adapter has (diffusers warns about the others)."""
    return {part: unet if part == "unet" else te for part, names in parts.items() if name in names}


def _vectors_for(emb: EmbeddingFile, vectors: dict, key: str, encoder):
    width = encoder.get_input_embeddings().weight.shape[1]
    tensor = vectors.get(key, vectors.get("") if key == "clip_l" else None)
    if tensor is None:
        raise AiimgError(
            f"{emb.path}: an SD1/SD2 embedding (one set of vectors); this SDXL model needs one with "
            f"clip_l and clip_g: use an embedding made for SDXL"
        )
    if tensor.shape[1] != width:
        raise AiimgError(
            f"{emb.path}: its vectors are {tensor.shape[1]} wide but this model's text encoder takes {width}: "
            f"it was made for another base model (SD1 768, SD2 1024, SDXL 768+1280)"
        )
    return tensor.to(encoder.get_input_embeddings().weight.dtype)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _gist(exc: Exception, limit: int = 300) -> str:
    """The first two lines: torch's state-dict errors say what failed only on the second."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()][:2]
    text = " ".join(lines) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
