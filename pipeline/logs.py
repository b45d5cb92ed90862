"""Logging, configured once by the CLI; library modules only call ``logging.getLogger("aiimg.<stage>")``.

On the terminal: INFO lines (what was made, skipped, where to look) on stdout as plain text,
warnings and errors on stderr as ``aiimg: warning: ...``; ``-v`` adds DEBUG, ``-q`` keeps only
warnings and errors. In the content folder: ``content/.aiimg/logs/aiimg.log`` (rotating, 1 MB x 5)
gets every record at INFO and above with its time, and every unexpected exception with its
traceback; ``seed.error.txt`` and the CLI's last line name that file. The file is opened on
the first record, so commands that log nothing leave no trace.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import sys
import time
from pathlib import Path

ROOT = "aiimg"
FILE_NAME = "aiimg.log"
_FILE_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"


class _Console(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.levelno >= logging.WARNING:
            text = f"aiimg: {record.levelname.lower()}: {text}"
        if record.exc_info and logging.getLogger(ROOT).isEnabledFor(logging.DEBUG):
            text += "\n" + self.formatException(record.exc_info)
        return text


class _Below(logging.Filter):
    def __init__(self, level: int):
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < self.level


class _LazyRotatingFile(logging.handlers.RotatingFileHandler):
    """Creates its folder and file on the first record only."""

    def _open(self):
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


def configure(verbosity: int = 0) -> None:
    """Console handlers for the ``aiimg`` loggers; verbosity -1 (quiet), 0, 1 (verbose)."""
    logger = logging.getLogger(ROOT)
    for handler in list(logger.handlers):
        if not isinstance(handler, _LazyRotatingFile):
            logger.removeHandler(handler)
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    out = logging.StreamHandler(sys.stdout)
    out.addFilter(_Below(logging.WARNING))
    err = logging.StreamHandler(sys.stderr)
    err.setLevel(logging.WARNING)
    for handler in (out, err):
        handler.setFormatter(_Console())
        logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def log_to(folder: Path) -> Path:
    """Also log to ``folder/aiimg.log`` (rotating); returns that path. Idempotent per folder."""
    logger = logging.getLogger(ROOT)
    path = (Path(folder) / FILE_NAME).resolve()
    for handler in list(logger.handlers):
        if isinstance(handler, _LazyRotatingFile):
            if Path(handler.baseFilename) == path:
                return path
            logger.removeHandler(handler)
            handler.close()
    handler = _LazyRotatingFile(path, maxBytes=1_000_000, backupCount=5, encoding="utf-8", delay=True)
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter(_FILE_FORMAT))
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)  # the file gets INFO even under -q; the console filters itself
        _console_level(logging.WARNING)
    return path


def _console_level(level: int) -> None:
    for handler in logging.getLogger(ROOT).handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, _LazyRotatingFile):
            handler.setLevel(max(handler.level, level))


def log_file() -> Path | None:
    """The file this process logs to, if any: what error messages point the user at."""
    for handler in logging.getLogger(ROOT).handlers:
        if isinstance(handler, _LazyRotatingFile):
            return Path(handler.baseFilename)
    return None


def traceback_to_file(message: str, details: str = "") -> Path | None:
    """Record the exception being handled, with its traceback, in the log file only (the
    terminal gets one line from the caller); returns the file, or None when there is none.
    ``details``: a traceback already formatted (a worker process sent it) instead."""
    logger = logging.getLogger(ROOT)
    for handler in logger.handlers:
        if isinstance(handler, _LazyRotatingFile):
            text = f"{message}\n{details.rstrip()}" if details else message
            record = logger.makeRecord(logger.name, logging.ERROR, "", 0, text, (), None if details else sys.exc_info())
            handler.handle(record)
            return Path(handler.baseFilename)
    return None


def tracing() -> bool:
    """``AIIMG_TRACE=FILE``: :func:`trace` appends an event per line there (what bench/ measures latency with)."""
    return bool(os.environ.get("AIIMG_TRACE"))


def trace(event: str, **fields) -> None:
    """One JSON line with a wall-clock time (marker seen, draft preempted, first denoising step of a
    variation...), from any process: workers append to the same file as the owner."""
    path = os.environ.get("AIIMG_TRACE")
    if path:
        line = json.dumps({"t": time.time(), "event": event, "pid": os.getpid(), **fields}) + "\n"
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line)
