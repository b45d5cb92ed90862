"""The creator's resources, found by name the way A1111 finds them, and hashed the way A1111 and
Civitai hash them.

- **LoRAs**: ``.safetensors`` (also ``.pt``/``.ckpt``) anywhere under the LoRA folders (A1111's
  ``models/Lora`` with its sub-folders works as it is), named case-insensitively by file stem or
  by the ``ss_output_name`` Kohya writes into the file. :func:`check_lora` refuses, from the
  header alone, the formats diffusers cannot apply (LyCORIS LoHa/LoKr/..., DoRA).
- **Embeddings** (textual inversion): ``.safetensors``/``.pt``/``.bin``; a prompt triggers one by
  its file stem as a whole word (:func:`embeddings_in`), as A1111 does.
- **VAE**: a diffusers VAE folder or a single ``.safetensors`` file (:func:`vae_file`).
- **Hashes**: AutoV2 (:func:`model_hash`), AutoV3 (:func:`lora_hash`), the TI hash
  (:func:`ti_hash`) and the full sha256, cached per file by (resolved path, size, mtime) in
  ``<cache>/hashes.json`` under ``"files"``, so a 2 GB checkpoint is read once.
- **Samplers** by A1111 name and schedule type (:func:`scheduler_for`, :func:`sampler_names`).

Folders are indexed once per process; a name that is not found re-reads the folders before
failing (a creator may add a file while the loop runs). No torch at import time.
"""

from __future__ import annotations

import difflib
import hashlib
import inspect
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import AiimgError

log = logging.getLogger("aiimg.resources")

LORA_SUFFIXES = (".safetensors", ".pt", ".ckpt")
EMBEDDING_SUFFIXES = (".safetensors", ".pt", ".bin")
EMBEDDING_RESCAN_S = 5.0  # embeddings_in runs per prompt: a short-lived index sees new files soon
EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")  # A1111's <lora:name:te:unet> and friends
_HEADER_LIMIT = 100 << 20  # a safetensors header larger than this is not a safetensors header


@dataclass(frozen=True)
class LoraFile:
    """A LoRA on disk; ``name`` is its file stem, ``alias`` the ``ss_output_name`` inside it."""

    path: Path
    name: str
    alias: str = ""

    @property
    def hash(self) -> str:
        """AutoV3, what A1111 writes in ``Lora hashes`` and Civitai links by."""
        return lora_hash(self.path)

    @property
    def sha256(self) -> str:
        return sha256(self.path)


@dataclass(frozen=True)
class EmbeddingFile:
    """A textual inversion on disk; a prompt triggers it by ``name`` (the file stem)."""

    path: Path
    name: str

    @property
    def hash(self) -> str:
        """What A1111 writes in ``TI hashes`` (12 hex of the whole file's sha256)."""
        return ti_hash(self.path)

    @property
    def sha256(self) -> str:
        return sha256(self.path)


@dataclass(frozen=True)
class VaeFile:
    """A VAE: ``path`` is a diffusers folder or a single file; ``weights`` is the file hashed."""

    path: Path
    name: str
    weights: Path
    is_folder: bool

    @property
    def hash(self) -> str:
        """AutoV2, what A1111 writes as ``VAE hash``."""
        return model_hash(self.weights)


# -- finding files ----------------------------------------------------------------------------


@dataclass
class _Index:
    by_name: dict[str, list] = field(default_factory=dict)  # lower-case name -> files, best first
    by_alias: dict[str, list] = field(default_factory=dict)
    files: list = field(default_factory=list)
    made: float = 0.0
    pattern: re.Pattern | None = None  # embeddings_in's whole-word matcher, made on first use


_LOCK = threading.RLock()
_LORA_INDEX: dict[tuple[str, ...], _Index] = {}
_EMBEDDING_INDEX: dict[tuple[str, ...], _Index] = {}
_HEADERS: dict[tuple[str, int, int], dict] = {}  # (path, size, mtime_ns) -> safetensors header


def _folders(dirs: Iterable[Path | str] | Path | str) -> tuple[str, ...]:
    if isinstance(dirs, str | Path):
        dirs = [dirs]
    return tuple(str(Path(d).expanduser()) for d in dirs)


def _walk(dirs: tuple[str, ...], suffixes: tuple[str, ...]) -> list[Path]:
    """Every file with one of ``suffixes`` under ``dirs``, sorted, hidden ones skipped; symlinked
    folders are followed (creators link shared model folders) but each real folder once."""
    found, seen = [], set()
    for top in dirs:
        for root, subdirs, files in os.walk(top, followlinks=True):
            real = os.path.realpath(root)
            if real in seen:
                subdirs[:] = []
                continue
            seen.add(real)
            subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
            found += [Path(root, f) for f in sorted(files) if not f.startswith(".") and f.lower().endswith(suffixes)]
    return found


def _lora_index(dirs: tuple[str, ...], refresh: bool) -> _Index:
    with _LOCK:
        if refresh or dirs not in _LORA_INDEX:
            index = _Index(made=time.monotonic())
            for path in _walk(dirs, LORA_SUFFIXES):
                lora = LoraFile(path, path.stem, _output_name(path))
                index.files.append(lora)
                index.by_name.setdefault(path.stem.lower(), []).append(lora)
                if lora.alias:
                    index.by_alias.setdefault(lora.alias.lower(), []).append(lora)
            _LORA_INDEX[dirs] = index
        return _LORA_INDEX[dirs]


def _embedding_index(dirs: tuple[str, ...]) -> _Index:
    with _LOCK:
        index = _EMBEDDING_INDEX.get(dirs)
        if index is None or time.monotonic() - index.made > EMBEDDING_RESCAN_S:
            index = _Index(made=time.monotonic())
            for path in _walk(dirs, EMBEDDING_SUFFIXES):
                emb = EmbeddingFile(path, path.stem)
                index.files.append(emb)
                index.by_name.setdefault(path.stem.lower(), []).append(emb)
            _EMBEDDING_INDEX[dirs] = index
        return index


_WARNED: set[str] = set()


def _pick(name: str, candidates: list):
    if len(candidates) > 1 and name.lower() not in _WARNED:
        _WARNED.add(name.lower())
        log.warning(
            "%d files answer to the name %r; using %s (rename the others to choose)",
            len(candidates),
            name,
            candidates[0].path,
        )
    return candidates[0]


def _not_found(what: str, name: str, dirs: tuple[str, ...], names: Iterable[str], hint: str) -> AiimgError:
    if not dirs:
        return AiimgError(f"{what} {name!r}: no {what} folders are configured; {hint}")
    absent = [d for d in dirs if not Path(d).is_dir()]
    if absent:
        hint = f"{', '.join(absent)} does not exist: fix [model] {what.lower()}_dirs in aiimg.toml. {hint}"
    names = sorted(set(names))
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    close += [n for n in difflib.get_close_matches(name.lower(), names, n=3, cutoff=0.5) if n not in close]
    closest = f"; closest: {', '.join(close[:3])}" if close else f"; {len(names)} {what} files there"
    return AiimgError(f"{what} {name!r} not found in {', '.join(dirs)}{closest}. {hint}")


def find_lora(name: str, dirs) -> LoraFile:
    """The LoRA that ``<lora:name:...>`` means: by file stem, else by ``ss_output_name``."""
    folders = _folders(dirs)
    started = time.monotonic()
    index = _lora_index(folders, refresh=False)
    found = _lookup(index, name)
    if found is None and index.made < started:  # an index from before: the file may be new
        index = _lora_index(folders, refresh=True)
        found = _lookup(index, name)
    if found is not None:
        return found
    names = [f.name for f in index.files] + [f.alias for f in index.files if f.alias]
    hint = f"Put {name}.safetensors in one of these folders, or fix the name in the prompt."
    raise _not_found("LoRA", name, folders, names, hint)


def _lookup(index: _Index, name: str) -> LoraFile | None:
    for table in (index.by_name, index.by_alias):
        if name.lower() in table:
            return _pick(name, table[name.lower()])
    return None


def lora_files(dirs) -> list[LoraFile]:
    """Every LoRA file under ``dirs`` (freshly listed)."""
    return list(_lora_index(_folders(dirs), True).files)


def find_embedding(name: str, dirs) -> EmbeddingFile:
    folders = _folders(dirs)
    index = _embedding_index(folders)
    if name.lower() not in index.by_name:
        with _LOCK:
            _EMBEDDING_INDEX.pop(folders, None)
        index = _embedding_index(folders)
    if name.lower() in index.by_name:
        return _pick(name, index.by_name[name.lower()])
    hint = f"Put {name}.safetensors (or .pt) in one of these folders."
    raise _not_found("embedding", name, folders, [f.name for f in index.files], hint)


def embedding_files(dirs) -> list[EmbeddingFile]:
    folders = _folders(dirs)
    with _LOCK:
        _EMBEDDING_INDEX.pop(folders, None)
    return list(_embedding_index(folders).files)


def embeddings_in(text: str, dirs) -> list[EmbeddingFile]:
    """The embeddings a prompt triggers, in order of first use: file stems that stand as whole
    words (any case: CLIP lower-cases the prompt before A1111 matches), outside ``<lora:...>``."""
    index = _embedding_index(_folders(dirs))
    if not index.by_name or not text:
        return []
    if index.pattern is None:
        index.pattern = whole_words(index.by_name)
    found: dict[str, EmbeddingFile] = {}
    for match in index.pattern.finditer(EXTRA_NETWORK.sub(" ", text)):
        key = match.group(1).lower()
        if key not in found:
            found[key] = _pick(match.group(1), index.by_name[key])
    return list(found.values())


def whole_words(names: Iterable[str]) -> re.Pattern:
    """Any of ``names`` standing as a whole word, in any case; the longest wins ("bad-hands-5" over "bad")."""
    ordered = sorted(names, key=len, reverse=True)
    return re.compile(r"(?<!\w)(" + "|".join(map(re.escape, ordered)) + r")(?!\w)", re.IGNORECASE)


def vae_file(spec: str | Path) -> VaeFile:
    """A VAE given as a diffusers folder (config.json + weights) or a single weights file."""
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix.lower() in (".safetensors", ".pt", ".ckpt", ".bin"):
        return VaeFile(path, path.name, path, False)
    if path.is_dir():
        weights = [path / n for n in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")]
        weights = [w for w in weights if w.is_file()]
        if (path / "config.json").is_file() and weights:
            return VaeFile(path, path.name, weights[0], True)
        raise AiimgError(
            f"VAE {str(path)!r}: a folder needs config.json and diffusion_pytorch_model.safetensors "
            f"(what `vae.save_pretrained(folder)` writes)"
        )
    raise AiimgError(f"VAE {str(path)!r}: not found; give a .safetensors file or a diffusers VAE folder")


# -- what a recipe records of them -----------------------------------------------------------


def lora_entry(lora: LoraFile, te: float, unet: float, name: str = "") -> dict:
    """A recipe's ``loras`` item: the name as the prompt wrote it, weights, AutoV3 (for ``Lora
    hashes``) and the full sha256 (its first 10 hex are the AutoV2 of ``Hashes``)."""
    return {"name": name or lora.name, "te": te, "unet": unet, "hash": lora.hash, "sha256": lora.sha256}


def embedding_entry(emb: EmbeddingFile) -> dict:
    """A recipe's ``embeddings`` item (``TI hashes``; ``Hashes`` takes the first 10 hex)."""
    return {"name": emb.name, "hash": emb.hash}


def vae_entry(vae: VaeFile) -> dict:
    return {"name": vae.name, "hash": vae.hash}


# -- LoRA formats -----------------------------------------------------------------------------

# Key fragments of the formats diffusers 0.42 cannot apply: LyCORIS variants fail to load, and
# DoRA's scale is dropped with only a warning (the LoRA would silently look different).
_REFUSED = (
    (r"dora_scale", "DoRA (diffusers drops its dora_scale and would apply it as a plain LoRA)"),
    (r"\.hada_", "LyCORIS LoHa"),
    (r"\.lokr_", "LyCORIS LoKr"),
    (r"\.lora_mid\.", "LyCORIS LoCon with a CP-decomposed middle (lora_mid)"),
    (r"\.oft_", "OFT"),
    (r"\.boft_", "BOFT"),
    (r"\.on_input$", "LyCORIS (IA)^3"),
    (r"\.a1\.weight$", "LyCORIS GLoRA"),
    (r"\.diff(_b)?$", "LyCORIS full/diff"),
    (r"\.[wb]_norm$", "LyCORIS norm"),
)
_LORA_ENDINGS = (
    ".lora_down.weight",
    ".lora_up.weight",
    ".alpha",
    ".lora_A.weight",
    ".lora_B.weight",
    ".lora_A.bias",
    ".lora_B.bias",
    ".lora.down.weight",
    ".lora.up.weight",
    "_lora.down.weight",
    "_lora.up.weight",
    ".lora_magnitude_vector",
)
_LORA_PREFIXES = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_", "unet.", "text_encoder.", "text_encoder_2.")


def check_lora(path: str | Path) -> str:
    """``"kohya"`` or ``"diffusers"`` when diffusers can apply the file; else an AiimgError naming
    the file and its format. Reads only the header of a ``.safetensors`` file."""
    path = Path(path)
    keys = lora_keys(path)
    for pattern, fmt in _REFUSED:
        if any(re.search(pattern, k) for k in keys):
            raise AiimgError(
                f"{path}: a {fmt} file, which diffusers cannot apply faithfully; "
                f"use a plain LoRA (lora_down/lora_up) version of it, or remove it from the prompt"
            )
    odd = [k for k in keys if not (k.endswith(_LORA_ENDINGS) and k.startswith(_LORA_PREFIXES))]
    if odd or not keys:
        raise AiimgError(
            f"{path}: not an SD1/SDXL LoRA diffusers can apply (unexpected keys such as {odd[:3]}); "
            f"is it a LoRA for another model family, or a checkpoint in the LoRA folder?"
        )
    return "kohya" if keys[0].startswith("lora_") else "diffusers"


def lora_keys(path: Path) -> list[str]:
    if path.suffix.lower() == ".safetensors":
        return sorted(k for k in safetensors_header(path) if k != "__metadata__")
    return sorted(read_pickled_state(path))


def read_lora(path: Path) -> dict:
    """The LoRA's tensors on the CPU, for ``load_lora_weights``."""
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return read_pickled_state(path)


def read_pickled_state(path: Path) -> dict:
    """A ``.pt``/``.ckpt``/``.bin`` state dict, loaded without running pickled code."""
    import pickle

    import torch

    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError) as exc:
        raise AiimgError(f"{path}: cannot be read safely ({_first_line(exc)}); convert it to .safetensors") from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise AiimgError(f"{path}: holds a {type(data).__name__}, not a dictionary of tensors")
    return data


def safetensors_header(path: Path) -> dict:
    """The JSON header of a safetensors file (8-byte little-endian length, then JSON), cached."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    with _LOCK:
        if key in _HEADERS:
            return _HEADERS[key]
    try:
        with open(path, "rb") as fh:
            size = int.from_bytes(fh.read(8), "little")
            if not 2 <= size <= min(_HEADER_LIMIT, stat.st_size - 8):
                raise ValueError(f"header length {size} does not fit a {stat.st_size}-byte file")
            header = json.loads(fh.read(size))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
    except (OSError, ValueError) as exc:
        raise AiimgError(f"{path}: not a readable .safetensors file ({exc}); re-download it") from None
    with _LOCK:
        _HEADERS[key] = header
    return header


def _output_name(path: Path) -> str:
    if path.suffix.lower() != ".safetensors":
        return ""
    try:
        meta = safetensors_header(path).get("__metadata__") or {}
    except AiimgError as exc:
        log.warning("%s", exc)
        return ""
    name = meta.get("ss_output_name", "") if isinstance(meta, dict) else ""
    return name if isinstance(name, str) else ""


# -- embeddings -------------------------------------------------------------------------------


def load_embedding(emb: EmbeddingFile) -> dict:
    """The vectors of an embedding, each ``(n_vectors, width)``: ``{"clip_l": ..., "clip_g": ...}``
    for SDXL files, ``{"": ...}`` for SD1/SD2 ones (A1111 ``emb_params``, A1111 ``.pt``
    ``string_to_param["*"]``, or a diffusers file with one key)."""
    path = emb.path
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        data = load_file(str(path))
    else:
        data = read_pickled_state(path)
    if "clip_l" in data and "clip_g" in data:
        return {"clip_l": _rows(data["clip_l"]), "clip_g": _rows(data["clip_g"])}
    if "emb_params" in data:
        return {"": _rows(data["emb_params"])}
    if isinstance(data.get("string_to_param"), dict) and "*" in data["string_to_param"]:
        return {"": _rows(data["string_to_param"]["*"])}
    tensors = [v for v in data.values() if hasattr(v, "shape")]
    if len(data) == 1 and tensors:
        return {"": _rows(tensors[0])}
    raise AiimgError(
        f"{path}: not an embedding aiimg knows (keys {sorted(data)[:5]}); expected A1111's emb_params "
        f"or string_to_param, or SDXL's clip_l and clip_g"
    )


def _rows(tensor):
    tensor = tensor.detach().float()
    return tensor.unsqueeze(0) if tensor.dim() == 1 else tensor


# -- hashes -----------------------------------------------------------------------------------

_MEMO: dict[str, dict] = {}  # resolved path -> entry, so each image's infotext costs a stat, not a read


def sha256(path: str | Path) -> str:
    """The full sha256 of a file (hex)."""
    return _entry(Path(path), autov3=False)["sha256"]


def model_hash(path: str | Path) -> str:
    """AutoV2: the first 10 hex of the whole file's sha256 (A1111's ``Model hash``, ``VAE hash``)."""
    legacy = _legacy_hash(Path(path))
    return legacy or sha256(path)[:10]


def ti_hash(path: str | Path) -> str:
    """A1111's ``TI hashes`` value: the first 12 hex of the whole file's sha256."""
    return sha256(path)[:12]


def lora_hash(path: str | Path) -> str:
    """AutoV3: the first 12 hex of the sha256 of a safetensors file's bytes after its header
    (so editing the metadata keeps the hash). Other files: their whole sha256 (12 hex)."""
    return _entry(Path(path), autov3=True)["autov3"][:12]


def hash_cache_path() -> Path:
    from pipeline.models import cache_dir

    return cache_dir() / "hashes.json"


def _entry(path: Path, autov3: bool) -> dict:
    try:
        stat = path.stat()
    except OSError as exc:
        raise AiimgError(f"{path}: cannot hash ({exc.strerror or exc}); is the file there?") from None
    resolved = str(path.resolve())
    with _LOCK:
        entry = _MEMO.get(resolved) or _read_cache().get("files", {}).get(resolved)
        if _fresh(entry, stat, autov3):
            _MEMO[resolved] = entry
            return entry
        entry = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, **_digest(path, autov3)}
        _MEMO[resolved] = entry
        _write_cache(resolved, entry)
        return entry


def _fresh(entry, stat, autov3: bool) -> bool:
    return (
        isinstance(entry, dict)
        and entry.get("size") == stat.st_size
        and entry.get("mtime_ns") == stat.st_mtime_ns
        and "sha256" in entry
        and (not autov3 or "autov3" in entry)
    )


def _digest(path: Path, autov3: bool) -> dict:
    """One pass over the file: the whole sha256 and, when asked, the sha256 after the header."""
    log.info("hashing %s", path)
    whole, body = hashlib.sha256(), hashlib.sha256()
    after_header = autov3 and path.suffix.lower() == ".safetensors"
    with open(path, "rb") as fh:
        if after_header:
            head = fh.read(8)
            if not 2 <= int.from_bytes(head, "little") <= min(_HEADER_LIMIT, path.stat().st_size - 8):
                raise AiimgError(f"{path}: not a readable .safetensors file (bad header length); re-download it")
            head += fh.read(int.from_bytes(head, "little"))
            whole.update(head)
        for block in iter(lambda: fh.read(1 << 22), b""):
            whole.update(block)
            if after_header:
                body.update(block)
    out = {"sha256": whole.hexdigest()}
    if autov3:
        out["autov3"] = body.hexdigest() if after_header else out["sha256"]
    return out


def _legacy_hash(path: Path) -> str:
    """An AutoV2 that pipeline.models.file_hash cached before this cache had ``"files"``."""
    try:
        stat = path.stat()
    except OSError:
        return ""
    value = _read_cache().get(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}")
    return value if isinstance(value, str) and len(value) == 10 else ""


def _read_cache() -> dict:
    try:
        data = json.loads(hash_cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(resolved: str, entry: dict) -> None:
    from pipeline.files import atomic_write_json

    # re-read right before writing: another process may have added its own files meanwhile
    data = _read_cache()
    files = data.get("files") if isinstance(data.get("files"), dict) else {}
    data["files"] = {**files, resolved: entry}
    try:
        atomic_write_json(hash_cache_path(), data, durable=False)
    except AiimgError as exc:
        log.debug("hash cache not written: %s", exc)  # a read-only cache only costs a rehash


# -- samplers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sampler:
    """An A1111 sampler as a diffusers scheduler; ``schedule`` is what A1111's "Automatic" schedule
    type picks for it (A1111 1.9 and later)."""

    name: str
    scheduler: str
    kwargs: tuple = ()
    schedule: str = "Uniform"


SAMPLERS = {
    s.name: s
    for s in (
        Sampler("Euler a", "EulerAncestralDiscreteScheduler"),
        Sampler("Euler", "EulerDiscreteScheduler"),
        Sampler("LMS", "LMSDiscreteScheduler"),
        Sampler("Heun", "HeunDiscreteScheduler"),
        Sampler("DPM2", "KDPM2DiscreteScheduler", schedule="Karras"),
        Sampler("DPM2 a", "KDPM2AncestralDiscreteScheduler", schedule="Karras"),
        Sampler(
            "DPM++ 2M",
            "DPMSolverMultistepScheduler",
            (("algorithm_type", "dpmsolver++"), ("solver_order", 2)),
            "Karras",
        ),
        Sampler(
            "DPM++ 2M SDE",
            "DPMSolverMultistepScheduler",
            (("algorithm_type", "sde-dpmsolver++"), ("solver_order", 2)),
            "Exponential",
        ),
        Sampler("DPM++ SDE", "DPMSolverSDEScheduler", schedule="Karras"),
        Sampler("DDIM", "DDIMScheduler"),
        Sampler("PLMS", "PNDMScheduler", (("skip_prk_steps", True),)),
        Sampler("UniPC", "UniPCMultistepScheduler"),
        Sampler("LCM", "LCMScheduler"),
    )
}
# A1111 schedule type -> diffusers scheduler arguments ("Uniform": the model's own timesteps)
SCHEDULES = {
    "Uniform": {},
    "Karras": {"use_karras_sigmas": True},
    "Exponential": {"use_exponential_sigmas": True},
    "Beta": {"use_beta_sigmas": True},
    "SGM Uniform": {"timestep_spacing": "trailing"},
}
AUTOMATIC = ("", "Automatic")
# older spellings A1111 still accepts in infotexts and its API
_SAMPLER_ALIASES = {
    "k_euler_a": "Euler a",
    "k_euler": "Euler",
    "k_lms": "LMS",
    "k_heun": "Heun",
    "k_dpm_2": "DPM2",
    "k_dpm_2_a": "DPM2 a",
    "k_dpmpp_2m": "DPM++ 2M",
    "k_dpmpp_sde": "DPM++ SDE",
    "k_dpmpp_2m_sde": "DPM++ 2M SDE",
}
_SCHEDULE_ALIASES = {"normal": "Uniform"}  # A1111 1.10's "Normal": evenly spaced timesteps, as "Uniform"
_SIGMA_FLAGS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")


def split_sampler(sampler: str, schedule: str = "") -> tuple[str, str]:
    """(A1111 sampler, schedule type) from either the separate fields of A1111 1.9+ or the older
    combined name: ``("DPM++ 2M Karras", "")`` -> ``("DPM++ 2M", "Karras")``. An explicit schedule
    wins over a suffix; "" stays "" (Automatic)."""
    schedule = _schedule_name(schedule)
    name = _sampler_name(sampler)
    if name:
        return name, schedule
    for sched in sorted(SCHEDULES, key=len, reverse=True):
        base = sampler[: -len(sched) - 1] if sampler.lower().endswith(" " + sched.lower()) else ""
        if base and _sampler_name(base):
            return _sampler_name(base), schedule or sched
    raise AiimgError(f"sampler {sampler!r} has no diffusers equivalent here; known: {', '.join(SAMPLERS)}")


def _sampler_name(name: str) -> str:
    lower = {n.lower(): n for n in SAMPLERS}
    name = _SAMPLER_ALIASES.get(name.strip(), name.strip())
    return lower.get(name.lower(), "")


def _schedule_name(schedule: str) -> str:
    if schedule.strip() in AUTOMATIC:
        return ""
    lower = {n.lower(): n for n in SCHEDULES}
    key = schedule.strip().lower()
    found = lower.get(key) or _SCHEDULE_ALIASES.get(key)
    if not found:
        raise AiimgError(
            f"schedule type {schedule!r} has no diffusers equivalent here; known: Automatic, {', '.join(SCHEDULES)}"
        )
    return found


def resolve_sampler(sampler: str, schedule: str = "") -> tuple[Sampler, str]:
    """The sampler and the schedule it runs with ("Automatic" resolved as A1111 resolves it)."""
    name, sched = split_sampler(sampler, schedule)
    spec = SAMPLERS[name]
    return spec, sched or spec.schedule


def scheduler_for(sampler: str, schedule: str, base_config):
    """A diffusers scheduler for an A1111 sampler and schedule type, built on the model's own
    scheduler config (``pipe.scheduler.config``: betas, prediction type, offsets)."""
    spec, sched = resolve_sampler(sampler, schedule)
    cls = _scheduler_class(spec)
    accepted = set(inspect.signature(cls.__init__).parameters)
    wanted = SCHEDULES[sched]
    if not set(wanted) <= accepted:
        raise AiimgError(
            f"sampler {spec.name!r} with schedule type {sched!r}: diffusers' {spec.scheduler} has no such "
            f"schedule; use schedule type Automatic, or a sampler that has it (e.g. DPM++ 2M, Euler)"
        )
    kwargs = {flag: False for flag in _SIGMA_FLAGS if flag in accepted}  # the base config may set one
    kwargs.update(dict(spec.kwargs), **wanted)
    try:
        return cls.from_config(dict(base_config), **kwargs)
    except ImportError as exc:  # e.g. Beta sigmas need scipy, which the studio extra does not pull
        needs = getattr(exc, "name", None) or _first_line(exc)
        raise AiimgError(
            f"sampler {spec.name!r} with schedule type {sched!r} needs {needs}: pip install {needs}"
        ) from None


def _scheduler_class(spec: Sampler):
    import diffusers

    cls = getattr(diffusers, spec.scheduler)
    # diffusers puts a stand-in with _backends where a class needs a package that is missing
    missing = [b for b in getattr(cls, "_backends", ()) if not _importable(b)]
    if missing:
        needs = " ".join(missing)
        raise AiimgError(f"sampler {spec.name!r} needs the {needs} package here: pip install {needs}")
    return cls


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def sampler_names(scheduler) -> tuple[str, str]:
    """(A1111 sampler, schedule type) of a diffusers scheduler, for the recipe and infotext; the
    schedule is "" when it is the one A1111's "Automatic" would pick for that sampler."""
    cls = type(scheduler).__name__
    config = scheduler.config
    for spec in SAMPLERS.values():
        if spec.scheduler == cls and all(config.get(k) == v for k, v in spec.kwargs):
            sched = _schedule_of(config)
            return spec.name, "" if sched == spec.schedule else sched
    from pipeline.metadata import SAMPLER_NAMES

    return SAMPLER_NAMES.get(cls, cls), ""


def _schedule_of(config) -> str:
    for name, kwargs in SCHEDULES.items():
        if kwargs and all(config.get(k) == v for k, v in kwargs.items()):
            return name
    return "Uniform"


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def forget() -> None:
    """Drop the in-process indexes and hash memo (tests; a long-lived process never needs it)."""
    with _LOCK:
        _LORA_INDEX.clear()
        _EMBEDDING_INDEX.clear()
        _HEADERS.clear()
        _MEMO.clear()
        _WARNED.clear()
