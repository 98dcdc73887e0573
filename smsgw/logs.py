"""Logging set-up: one line per record, as text or as JSON (`SMSGW_LOG_FORMAT`)."""

from __future__ import annotations

import json
import logging
import sys
from typing import Literal

import attrs

# Attributes every LogRecord has; anything else passed in `extra=` is a structured field.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class _WorkerField(logging.Filter):
    """Adds the worker's number to each record (a structured field in JSON lines)."""

    def __init__(self, worker: int) -> None:
        super().__init__()
        self.worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.worker
        return True


def setup_logging(level: str, fmt: Literal["text", "json"], *, worker: int | None = None) -> None:
    """`worker`: this process is that worker (1-based) of several; each line says so."""
    # Fields no line shows, skipped as the logging HOWTO's "Optimization" section says: the
    # calling frame's file and line (a stack walk per record), thread and process names.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        tag = "" if worker is None else f"[worker {worker}] "
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s %(name)s {tag}%(message)s")
        )
    if worker is not None:
        handler.addFilter(_WorkerField(worker))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


@attrs.define
class _Repeats:
    since: float  # when the key was last logged
    held: int = 0  # occurrences since, not logged
    level: int = logging.ERROR
    message: str = ""  # the last of them


@attrs.define
class RepeatLog:
    """One line per failure, repeats counted: the first occurrence of a key is logged; further
    ones within `window` seconds are only counted, and the first one after that logs itself
    with the count (`… (repeated 57 times in the last 12 s)`). A full disk fails every
    request alike: the log must not grow faster than the cause changes.

    `now` is passed in (Trio's clock in the server), as the rate limiters take it.
    """

    logger: logging.Logger
    window: float = 10.0
    max_keys: int = 256
    _keys: dict[str, _Repeats] = attrs.field(factory=dict)

    def log(
        self,
        level: int,
        key: str,
        message: str,
        now: float,
        *,
        exc_info: BaseException | None = None,
    ) -> None:
        """Log `message` (or count it); `key` is what repeats, without what varies (ids)."""
        entry = self._keys.get(key)
        if entry is not None and now - entry.since < self.window:
            entry.held += 1
            entry.level, entry.message = level, message
            return
        if entry is None:
            self.logger.log(level, "%s", message, exc_info=exc_info)
        else:
            del self._keys[key]  # re-inserted last: the oldest key is the first forgotten
            self.logger.log(level, "%s", _counted(message, entry.held + 1, now - entry.since))
        self._keys[key] = _Repeats(now)
        if len(self._keys) > self.max_keys:
            oldest = next(iter(self._keys))
            self._flush(oldest, now)
            del self._keys[oldest]

    def flush(self, now: float) -> None:
        """Log every count still held back (at shutdown)."""
        for key in self._keys:
            self._flush(key, now)

    def _flush(self, key: str, now: float) -> None:
        entry = self._keys[key]
        if entry.held:
            self.logger.log(
                entry.level, "%s", _counted(entry.message, entry.held, now - entry.since)
            )
            entry.held = 0


def _counted(message: str, times: int, seconds: float) -> str:
    plural = "" if times == 1 else "s"
    return f"{message} (repeated {times} time{plural} in the last {seconds:.0f} s)"
