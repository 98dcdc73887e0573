"""Fixtures and helpers for the store tests: real SQLite files in tmp_path."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing

from smsgw.store import NewMessage, PartMatch, PartReport, ReportStore, SqliteStore

NOW = 1_700_000_000_000  # a fixed "now" in ms: the store takes time from its callers
OWNER = "owner-1"  # the owner the tests claim rows for


def new_message(
    msgid: str = "m1",
    phone: str = "+8613800000000",
    *,
    appid: str = "app1",
    message: str = "hello",
    msgtype: int = 1,
    send_at_ms: int | None = None,
    segments: int = 1,
) -> NewMessage:
    return NewMessage(
        appid=appid,
        msgid=msgid,
        phone=phone,
        message=message,
        msgtype=msgtype,
        send_at_ms=send_at_ms,
        segments=segments,
    )


async def record_part_report(
    store: ReportStore, carrier_msgid: str, delivered: bool, stat: str, at_ms: int
) -> PartMatch | None:
    """One report on its own (`ReportStore.record_part_reports` of one)."""
    (match,) = await store.record_part_reports(
        [PartReport(carrier_msgid, delivered, stat, at_ms)], at_ms
    )
    return match


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "smsgw.db"


@pytest.fixture
async def store(db_path: Path, nursery: trio.Nursery) -> AsyncIterator[SqliteStore]:
    running = SqliteStore(str(db_path))
    await nursery.start(running.run)
    yield running


class WriterGate:
    """Holds the writer thread inside an op so that the next ops pile up in one group."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def op(self, conn: sqlite3.Connection) -> None:
        self.entered.set()
        # Bounded: a failing test must not hang the writer thread forever.
        if not self.release.wait(10):
            raise TimeoutError("WriterGate was never released")

    def open(self) -> None:
        self.release.set()


async def pause_writer(store: SqliteStore, nursery: trio.Nursery) -> WriterGate:
    """Start an op that blocks the writer thread until `gate.open()`; return once it does."""
    gate = WriterGate()
    nursery.start_soon(store._write, gate.op)
    assert await trio.to_thread.run_sync(gate.entered.wait, 5), "the writer never took the gate"
    return gate


async def settle() -> None:
    """Let every task run until it blocks (callers have queued their ops)."""
    await trio.testing.wait_all_tasks_blocked()


def make_version_1_database(db_path: Path) -> None:
    """A database as the first release of smsgw left it (schema version 1)."""
    from smsgw.store.sqlite import MIGRATIONS

    conn = sqlite3.connect(str(db_path))
    conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at INTEGER)")
    for statement in MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("INSERT INTO schema_version VALUES (1, 0)")
    conn.commit()
    conn.close()


def rows(db_path: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Read the database file with a fresh connection, outside the store."""
    conn = sqlite3.connect(str(db_path))
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


async def queue_gate(store: SqliteStore, nursery: trio.Nursery) -> WriterGate:
    """Queue a gate op behind a paused writer: it blocks the writer once it is taken."""
    gate = WriterGate()
    nursery.start_soon(store._write, gate.op)
    await settle()
    return gate
