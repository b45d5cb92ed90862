"""The creator's marker ``seed.txt`` and aiimg's answer ``seed.error.txt``, beside a draft.

::

    drafts/YYYY-MM-DD/<draft-id>/
        seed.txt          any case, or Windows' seed.txt.txt (hidden extensions); empty, or TOML
                          overrides for this seed only (the keys config.py marks per-seed:
                          count, strength, steps, guidance_scale, prompt, negative_prompt, by)
        seed.error.txt    why the marker could not be honoured; its last line
                          ``marker: <signature>`` names the version of seed.txt it answers

A marker *version* is its ``signature``: mtime + sha256 of its bytes, read in one open so the two
agree. Editing seed.txt makes a new version, which asks for a new round (see rounds.py) and
retries a marker in error. The signature is recorded in the error file rather than compared by
mtime, which coarse file systems (FAT, network drives) round to seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from pipeline import config, logs
from pipeline.errors import ConfigError, MarkerError
from pipeline.files import atomic_write_bytes

NAMES = ("seed.txt", "seed.txt.txt")
ERROR_NAME = "seed.error.txt"


def is_marker_name(name: str) -> bool:
    """Whether a file name (no folder) is a marker: what the watcher and the scanner both ask."""
    return name.lower() in NAMES


@dataclass(frozen=True)
class Marker:
    path: Path  # the seed.txt (whatever its case)
    folder: Path  # the folder it was dropped in
    mtime_ns: int
    signature: str  # "<mtime_ns>-<sha256[:16]>": one version of the marker
    data: bytes | None = None  # the bytes the signature was made of (None: unreadable)


def path_for(folder: Path) -> Path:
    """Where a new marker goes (what aiimg writes when it marks a draft itself)."""
    return Path(folder) / NAMES[0]


def find(folder: Path) -> Path | None:
    """seed.txt in any case, or Windows' seed.txt.txt; the first by name when several."""
    try:
        names = sorted(e.name for e in os.scandir(folder) if e.is_file())
    except OSError:
        return None
    return next((Path(folder) / n for n in names if is_marker_name(n)), None)


def read(path: Path) -> Marker | None:
    """The marker's current version (one open: its bytes and mtime agree), or None if gone."""
    try:
        with open(path, "rb") as fh:
            mtime = os.fstat(fh.fileno()).st_mtime_ns
            data = fh.read()
    except FileNotFoundError:
        return None
    except OSError:  # there but unreadable: a marker all the same, whose parse says why
        try:
            mtime = os.stat(path).st_mtime_ns
        except OSError:
            return None
        return Marker(Path(path), Path(path).parent, mtime, f"{mtime}-unreadable", None)
    digest = hashlib.sha256(data).hexdigest()[:16]
    return Marker(Path(path), Path(path).parent, mtime, f"{mtime}-{digest}", data)


def current(folder: Path) -> Marker | None:
    """The marker in ``folder`` as it is now, or None."""
    path = find(folder)
    return read(path) if path else None


def parse(path: Path, data: bytes | None = None) -> dict:
    """The overrides in a seed.txt (empty file: none). MarkerError says what is wrong.

    ``data``: the bytes a Marker was read with, so that a round's overrides and its signature
    come from the same version of the file even when the creator saves it twice quickly."""
    try:
        text = (Path(path).read_bytes() if data is None else data).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise MarkerError(f"{path}: not UTF-8 text; save it as UTF-8 (or empty it)") from None
    except OSError as exc:
        raise MarkerError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        values = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MarkerError(f"{path}: not valid TOML ({exc}); write lines like: count = 5") from None
    try:
        return config.seed_overrides(values, str(path))
    except ConfigError as exc:
        raise MarkerError(str(exc)) from None


# -- the answer: seed.error.txt --------------------------------------------------------------


def error_path(folder: Path) -> Path:
    return Path(folder) / ERROR_NAME


def answered(marker: Marker) -> bool:
    """An error file answers this very version of the marker (its last line names it)."""
    try:
        text = error_path(marker.folder).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return text.rstrip().endswith(f"marker: {marker.signature}")


def write_error(marker: Marker, message: str) -> Path:
    """seed.error.txt beside the marker, naming the log with the details; editing the marker retries."""
    log = logs.log_file()
    details = f"Details (and any traceback) are in {log}\n\n" if log else ""
    text = (
        f"aiimg could not make variations from {marker.path.name}:\n\n{message}\n\n{details}"
        f"Edit or re-save {marker.path.name} to try again; delete it to give up.\n\n"
        f"marker: {marker.signature}\n"
    )
    path = error_path(marker.folder)
    atomic_write_bytes(path, text.encode("utf-8", errors="replace"))
    return path


def clear_error(folder: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        error_path(folder).unlink()
