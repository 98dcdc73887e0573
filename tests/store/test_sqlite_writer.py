"""The SQLite writer's dealings with other processes' writers: how it waits for the write
lock, and checkpoints kept out of its commits."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from smsgw.store import SqliteStore
from smsgw.store.sqlite import writer
from tests.e2e.delivery_support import wait_until
from tests.store.conftest import NOW, new_message


@pytest.fixture
def lock_holder(db_path: Path) -> Iterator[sqlite3.Connection]:
    """Another writer (as another process would be) holding the write lock."""
    conn = sqlite3.connect(str(db_path), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (x)")
    conn.execute("BEGIN IMMEDIATE")
    yield conn
    conn.close()


def waiting_connection(db_path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(db_path), isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=0")  # as the writer sets it
    return conn


def test_the_write_lock_is_tried_again_within_a_millisecond(
    db_path: Path, lock_holder: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's own busy handler would sleep up to 100 ms between tries; released during the
    twentieth pause, the lock is taken right after it."""
    pauses: list[float] = []

    def pause(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 20:
            lock_holder.execute("COMMIT")

    monkeypatch.setattr(time, "sleep", pause)
    conn = waiting_connection(db_path)
    writer._begin_immediate(conn)
    assert conn.in_transaction
    conn.execute("INSERT INTO t VALUES (1)")  # it holds the write lock
    conn.execute("COMMIT")
    assert len(pauses) == 20
    assert pauses[0] == writer._FIRST_PAUSE_S
    assert max(pauses) == writer._LAST_PAUSE_S <= 0.001
    assert pauses == sorted(pauses)


def test_the_wait_for_the_write_lock_is_bounded(
    db_path: Path, lock_holder: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer, "BUSY_TIMEOUT_S", 0.05)
    conn = waiting_connection(db_path)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        writer._begin_immediate(conn)
    assert not conn.in_transaction


def test_other_errors_are_not_waited_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_pause(seconds: float) -> None:
        raise AssertionError("paused for an error that is not a busy lock")

    monkeypatch.setattr(time, "sleep", no_pause)
    conn = waiting_connection(tmp_path / "db")
    conn.execute("BEGIN")
    with pytest.raises(sqlite3.OperationalError, match="within a transaction"):
        writer._begin_immediate(conn)


async def test_the_store_commits_while_another_process_holds_the_lock_briefly(
    db_path: Path, nursery: trio.Nursery
) -> None:
    store = SqliteStore(str(db_path))
    await nursery.start(store.run)
    holder = sqlite3.connect(str(db_path), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    async with trio.open_nursery() as callers:
        callers.start_soon(store.insert_messages, [new_message("m1")], NOW)
        await trio.sleep(0.2)
        assert store.commit_count == 0  # waiting for the lock, not failed
        holder.execute("COMMIT")
    holder.close()
    assert store.commit_count == 1
    assert (await store.counts())["accepted"] == 1


async def test_commits_are_checkpointed_by_the_checkpointer(
    db_path: Path, nursery: trio.Nursery
) -> None:
    store = SqliteStore(str(db_path), checkpoint_interval=0.01)
    await nursery.start(store.run)
    assert store._writer is not None
    assert store._writer.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == (
        writer.WAL_BACKSTOP_PAGES
    )
    await store.insert_messages([new_message(f"m{i}") for i in range(200)], NOW)
    await wait_until(lambda: store.checkpoints > 0, timeout=10, interval=0.01, what="checkpoint")
    # Everything the commit wrote is in the database file now: nothing left to copy.
    conn = sqlite3.connect(str(db_path), isolation_level=None)
    busy, wal_pages, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    conn.close()
    assert (busy, copied) == (0, wal_pages)


async def test_an_idle_store_does_not_checkpoint(db_path: Path, nursery: trio.Nursery) -> None:
    store = SqliteStore(str(db_path), checkpoint_interval=0.01)
    await nursery.start(store.run)
    await store.insert_messages([new_message("m1")], NOW)
    await wait_until(lambda: store.checkpoints > 0, timeout=10, interval=0.01, what="checkpoint")
    await trio.sleep(0.3)  # thirty intervals without a commit
    assert store.checkpoints == 1


async def test_commits_made_while_the_checkpointer_opens_are_checkpointed(
    db_path: Path, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a loaded machine the checkpointer's connection may open after the first commits:
    they must not be taken for checkpointed ones."""
    store = SqliteStore(str(db_path), checkpoint_interval=0.01)
    opened = threading.Event()
    open_checkpointer = store._open_checkpointer

    def slow_open() -> sqlite3.Connection:
        opened.wait(10)
        return open_checkpointer()

    monkeypatch.setattr(store, "_open_checkpointer", slow_open)
    await nursery.start(store.run)
    await store.insert_messages([new_message("m1")], NOW)
    opened.set()
    await wait_until(lambda: store.checkpoints > 0, timeout=10, interval=0.01, what="checkpoint")
