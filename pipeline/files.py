"""The one way aiimg writes a file: atomically, with one message for a full or read-only disk.

Every write goes to a temp file ``.<name>.<pid>-<token>.tmp`` in the destination's folder, is
flushed (and, when ``durable``, fsynced), then renamed over the destination with
``os.replace``: a reader sees the old bytes or all the new ones, never half. A process killed
between the two leaves only a temp file; :func:`clean_temp` removes those whose process is gone
(the pid in the name is dead, or is ours under another token: a restart that reused the pid).
Temp names start with a dot, so static hosts and file managers hide them even before a clean.

The studio writes ``durable`` (content/ is the only state); the gallery does not fsync
(output/ is rebuilt from content/ at will) but cleans its debris before every build.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import AiimgError

_TOKEN = secrets.token_hex(4)  # this process's temp files, even if a dead one had our pid
TEMP = re.compile(r"^\..+\.(\d+)-([0-9a-f]+)\.tmp$")


def temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}-{_TOKEN}.tmp")


def atomic_write_bytes(path: Path, data: bytes, durable: bool = True) -> None:
    """Write ``data`` so that ``path`` is either absent, the old bytes or all the new bytes."""
    _atomic(Path(path), lambda tmp: _write(tmp, data, durable), durable)


def atomic_write_text(path: Path, text: str, durable: bool = True) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), durable)


def atomic_write_json(path: Path, data: dict, durable: bool = True) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True) + "\n", durable)


def atomic_copy(src: Path, dest: Path, durable: bool = False) -> None:
    """A copy of ``src`` at ``dest`` (a reflink where the file system has them), never a hard
    link: a tool that rewrites the copy in place must not touch the original."""
    if not Path(src).is_file():
        raise AiimgError(f"{src}: missing, so it cannot be copied to {dest}; restore it")
    _atomic(Path(dest), lambda tmp: _copy(Path(src), tmp, durable), durable)


def _atomic(path: Path, fill, durable: bool) -> None:
    tmp = temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fill(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise AiimgError(f"{path}: cannot write ({why(exc)}); nothing was changed") from exc
    if durable:
        _fsync_dir(path.parent)


def _write(tmp: Path, data: bytes, durable: bool) -> None:
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        if durable:
            os.fsync(fh.fileno())


def _copy(src: Path, tmp: Path, durable: bool) -> None:
    if not _reflink(src, tmp):
        shutil.copyfile(src, tmp)
    if durable:
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())


def _reflink(src: Path, dest: Path) -> bool:
    """Linux FICLONE (btrfs, XFS, bcachefs): the copy shares blocks until either is written."""
    if not sys.platform.startswith("linux"):
        return False
    import fcntl  # POSIX only, and only here: Windows never reaches this line

    ficlone = 0x40049409
    try:
        with open(src, "rb") as s, open(dest, "wb") as d:
            fcntl.ioctl(d.fileno(), ficlone, s.fileno())
        return True
    except OSError:
        with contextlib.suppress(OSError):
            dest.unlink()
        return False


def _fsync_dir(folder: Path) -> None:
    if os.name == "nt":  # Windows cannot open a folder for fsync; NTFS journals the rename
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def why(exc: OSError) -> str:
    """The one wording of a write failure the user can act on."""
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return "disk full: free some space and run it again"
    if read_only(exc):
        return f"{exc.strerror or 'not writable'}: check the folder's permissions"
    return exc.strerror or str(exc)


def read_only(exc: BaseException | None) -> bool:
    """Whether a write failed for want of permission (a read-only disk or folder), not space."""
    return isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM)


# -- debris of killed processes ---------------------------------------------------------------


def clean_temp(root: Path, depth: int) -> int:
    """Remove temp files left by killed processes under ``root``; returns how many."""
    removed = 0
    for folder in walk(Path(root), depth):
        for entry in _files(folder):
            m = TEMP.match(entry.name)
            if m and _debris(int(m.group(1)), m.group(2)):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed += 1
    return removed


def _debris(pid: int, token: str) -> bool:
    return not alive(pid) or (pid == os.getpid() and token != _TOKEN)


def alive(pid: int) -> bool:
    """Whether a process with this pid runs (psutil: os.kill(pid, 0) kills it on Windows).
    A zombie (killed, not yet reaped by its parent) is dead: its temp files are debris."""
    import psutil

    try:
        return pid > 0 and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def subdirs(folder: Path) -> list[Path]:
    try:
        return sorted(Path(e.path) for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
    except OSError:
        return []


def _files(folder: Path) -> list[os.DirEntry]:
    try:
        return [e for e in os.scandir(folder) if e.is_file()]
    except OSError:
        return []


def walk(folder: Path, depth: int) -> Iterator[Path]:
    yield Path(folder)
    if depth > 0:
        for sub in subdirs(folder):
            yield from walk(sub, depth - 1)
