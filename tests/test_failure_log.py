"""A failing store costs one log line per failure, with repeats counted, not a traceback
per request (real sockets, an in-process gateway whose store always fails)."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from smsgw.gateway import store_from_config
from smsgw.logs import RepeatLog
from smsgw.store.base import CommitFailed, NewMessage
from tests.conftest import item, make_config, running_gateway, submit_raw
from tests.test_server import FailingStore

REQUESTS = 20


class FullDisk(FailingStore):
    """The real store, except that every insert fails as on a full disk."""

    async def insert_messages(self, messages: Sequence[NewMessage], now_ms: int) -> list[bool]:
        raise CommitFailed("group commit failed, nothing stored: database or disk is full")


def occurrences(line: str) -> int:
    match = re.search(r"\(repeated (\d+) times? in the last \d+ s\)$", line)
    return int(match.group(1)) if match else 1


async def test_a_full_disk_logs_one_line_per_failure_with_repeats_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="smsgw.server")
    config = make_config(tmp_path)
    store: Any = FullDisk(store_from_config(config))
    async with running_gateway(config, store=store) as gw:
        for n in range(REQUESTS):
            reply = await submit_raw(gw.port, [item(msgid=f"f{n}")])
            assert reply["status"] == "1008"
    errors = [
        r for r in caplog.records if r.name == "smsgw.server" and r.levelno >= logging.WARNING
    ]
    lines = [record.getMessage() for record in errors]
    assert not [record for record in errors if record.exc_info], "no tracebacks"
    assert all("\n" not in line and "disk is full" in line for line in lines)
    # Each failure is in the log once: on its own line or in a count (the last ones flushed
    # when the listener stops); within 10 s that is a handful of lines, not twenty.
    assert sum(occurrences(line) for line in lines) == REQUESTS
    assert len(lines) <= 3, lines


def test_repeats_are_counted_until_the_window_passes() -> None:
    logger = logging.getLogger("test.repeats")
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger.addHandler(Collect())
    try:
        repeats = RepeatLog(logger, window=10)
        for second in range(5):
            repeats.log(logging.ERROR, "disk", f"disk full (request {second})", float(second))
        repeats.log(logging.ERROR, "other", "something else", 5.0)
        repeats.log(logging.ERROR, "disk", "disk full (request 12)", 12.0)
        repeats.log(logging.ERROR, "disk", "disk full (request 13)", 13.0)
        repeats.flush(14.0)
    finally:
        logger.handlers.clear()
    assert records == [
        "disk full (request 0)",
        "something else",
        "disk full (request 12) (repeated 5 times in the last 12 s)",
        "disk full (request 13) (repeated 1 time in the last 2 s)",
    ]
