"""The accept path of the SQLite store: insert_messages, group commits, history, lifecycle."""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio

from smsgw.store import (
    CommitFailed,
    EventKind,
    MessageUpdate,
    SqliteStore,
    State,
    StoreClosed,
    StoreError,
    UnknownMessage,
)
from smsgw.store.base import Event
from smsgw.store.sqlite import SCHEMA_VERSION
from tests.store.conftest import NOW, new_message, pause_writer, queue_gate, rows, settle


async def test_insert_then_history_shows_rows(store: SqliteStore) -> None:
    stored = await store.insert_messages(
        [
            new_message("m1", "+111111", message="now"),
            new_message("m1", "+222222", message="later", send_at_ms=NOW + 60_000),
            new_message("m1", "+333333", message="past", send_at_ms=NOW - 5),
        ],
        NOW,
    )
    assert stored == [True, True, True]

    history = await store.history("m1")
    assert [h.message.phone for h in history] == ["+111111", "+222222", "+333333"]
    by_phone = {h.message.phone: h for h in history}

    now_row = by_phone["+111111"].message
    assert now_row.state is State.ACCEPTED
    assert now_row.next_attempt_at_ms == NOW
    assert now_row.accepted_at_ms == NOW
    assert now_row.attempts == 0
    assert now_row.message == "now"
    assert (now_row.appid, now_row.msgtype, now_row.segments) == ("app1", 1, 1)
    assert now_row.submitted_at_ms is None and now_row.final_at_ms is None

    later_row = by_phone["+222222"].message
    assert later_row.state is State.SCHEDULED
    assert later_row.next_attempt_at_ms == NOW + 60_000

    past_row = by_phone["+333333"].message
    assert past_row.state is State.ACCEPTED  # a sendtime in the past means "send now"
    assert past_row.next_attempt_at_ms == NOW

    for item in history:
        assert item.events == (Event(EventKind.ACCEPTED, NOW, 0),)
        assert item.parts == () and item.pushes == ()
    assert await store.counts() == {
        "accepted": 2,
        "scheduled": 1,
        "queued": 0,
        "submitting": 0,
        "submitted": 0,
        "delivered": 0,
        "failed": 0,
    }


async def test_history_filters_by_appid_and_unknown_msgid(store: SqliteStore) -> None:
    await store.insert_messages(
        [new_message("m1", appid="app1"), new_message("m1", appid="app2")], NOW
    )
    assert [h.message.appid for h in await store.history("m1")] == ["app1", "app2"]
    assert [h.message.appid for h in await store.history("m1", "app2")] == ["app2"]
    assert await store.history("m1", "app3") == []
    assert await store.history("nope") == []


async def test_empty_insert_returns_empty_without_a_commit(store: SqliteStore) -> None:
    before = store.commit_count
    assert await store.insert_messages([], NOW) == []
    assert store.commit_count == before


async def test_duplicate_within_one_call(store: SqliteStore) -> None:
    stored = await store.insert_messages(
        [new_message("m1"), new_message("m1"), new_message("m2"), new_message("m1")], NOW
    )
    assert stored == [True, False, True, False]
    assert len(await store.history("m1")) == 1


async def test_duplicate_across_calls_keeps_the_first(store: SqliteStore) -> None:
    assert await store.insert_messages([new_message("m1", message="first")], NOW) == [True]
    stored = await store.insert_messages(
        [new_message("m1", message="second"), new_message("m1", "+999999")], NOW + 10
    )
    assert stored == [False, True]
    history = await store.history("m1")
    assert len(history) == 2
    first = next(h for h in history if h.message.phone == "+8613800000000")
    assert first.message.message == "first"
    assert first.message.accepted_at_ms == NOW
    assert len(first.events) == 1  # no second "accepted" event for the duplicate


async def test_key_is_appid_msgid_phone(store: SqliteStore) -> None:
    stored = await store.insert_messages(
        [
            new_message("m1", "+111111", appid="a"),
            new_message("m1", "+111111", appid="b"),
            new_message("m2", "+111111", appid="a"),
            new_message("m1", "+222222", appid="a"),
        ],
        NOW,
    )
    assert stored == [True, True, True, True]


async def test_duplicate_across_concurrent_callers(store: SqliteStore) -> None:
    results: list[list[bool]] = []

    async def submit(index: int) -> None:
        # every caller sends the shared key plus one of its own
        results.append(
            await store.insert_messages([new_message("shared"), new_message(f"own{index}")], NOW)
        )

    async with trio.open_nursery() as nursery:
        for index in range(30):
            nursery.start_soon(submit, index)

    assert sorted(r[0] for r in results).count(True) == 1
    assert all(r[1] for r in results)
    assert len(await store.history("shared")) == 1
    assert (await store.counts())["accepted"] == 31


async def test_duplicates_inside_one_group(store: SqliteStore, nursery: trio.Nursery) -> None:
    gate = await pause_writer(store, nursery)
    results: dict[int, list[bool]] = {}

    async def submit(index: int) -> None:
        results[index] = await store.insert_messages([new_message("same")], NOW + index)

    async with trio.open_nursery() as callers:
        for index in range(10):
            callers.start_soon(submit, index)
        await settle()
        assert len(store._queue) == 10  # all queued behind the gate: one group
        commits = store.commit_count
        gate.open()
    assert store.commit_count == commits + 2  # the gate's group, then the ten callers
    assert sum(r == [True] for r in results.values()) == 1
    assert sum(r == [False] for r in results.values()) == 9


async def test_concurrent_calls_share_commits(store: SqliteStore) -> None:
    calls = 200
    before = store.commit_count

    async def submit(index: int) -> None:
        messages = [new_message(f"c{index}", f"+{100000 + n}") for n in range(5)]
        assert await store.insert_messages(messages, NOW) == [True] * 5

    async with trio.open_nursery() as nursery:
        for index in range(calls):
            nursery.start_soon(submit, index)

    commits = store.commit_count - before
    print(f"\n{calls} concurrent insert calls -> {commits} commits")
    assert 1 <= commits <= calls // 4
    assert (await store.counts())["accepted"] == calls * 5


async def test_group_is_capped(db_path: Path, nursery: trio.Nursery) -> None:
    store = SqliteStore(str(db_path), max_group_ops=3, max_group_rows=1000)
    await nursery.start(store.run)
    gate = await pause_writer(store, nursery)
    async with trio.open_nursery() as callers:
        for index in range(7):
            callers.start_soon(store.insert_messages, [new_message(f"m{index}")], NOW)
        await settle()
        before = store.commit_count
        gate.open()
    assert store.commit_count - before == 1 + 3  # gate, then 3 + 3 + 1
    assert (await store.counts())["accepted"] == 7


async def test_row_cap_splits_groups(db_path: Path, nursery: trio.Nursery) -> None:
    store = SqliteStore(str(db_path), max_group_rows=10)
    await nursery.start(store.run)
    gate = await pause_writer(store, nursery)
    async with trio.open_nursery() as callers:
        for index in range(4):
            batch = [new_message(f"m{index}", f"+{100000 + n}") for n in range(6)]
            callers.start_soon(store.insert_messages, batch, NOW)
        await settle()
        before = store.commit_count
        gate.open()
    assert store.commit_count - before == 1 + 4  # 6 + 6 > 10: one call a group
    assert (await store.counts())["accepted"] == 24


async def test_failing_op_fails_alone(store: SqliteStore, nursery: trio.Nursery) -> None:
    def half_write_then_raise(conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO messages (appid, msgid, phone, message, msgtype, segments, state,"
            " accepted_at) VALUES ('app1', 'ghost', '+1', 'x', 1, 1, 'accepted', 0)"
        )
        raise ValueError("boom")

    gate = await pause_writer(store, nursery)
    outcomes: dict[str, object] = {}

    async def run(name: str, call: Callable[[], Awaitable[object]]) -> None:
        try:
            outcomes[name] = await call()
        except Exception as exc:
            outcomes[name] = exc

    async with trio.open_nursery() as callers:
        callers.start_soon(run, "before", lambda: store.insert_messages([new_message("a")], NOW))
        callers.start_soon(run, "raises", lambda: store._write(half_write_then_raise))
        update = MessageUpdate(
            message_id=424242, state=State.FAILED, event=Event(EventKind.FINAL, NOW, 1)
        )
        callers.start_soon(run, "unknown", lambda: store.apply([update]))
        callers.start_soon(run, "after", lambda: store.insert_messages([new_message("b")], NOW))
        await settle()
        before = store.commit_count
        gate.open()

    assert store.commit_count == before + 2  # the gate's group and ONE group for the four
    assert outcomes["before"] == [True]
    assert outcomes["after"] == [True]
    assert isinstance(outcomes["raises"], ValueError)
    assert isinstance(outcomes["unknown"], UnknownMessage)
    assert await store.history("ghost") == []  # the failing op's own write was rolled back
    assert len(await store.history("a")) == 1
    assert len(await store.history("b")) == 1


def orphan_event(conn: sqlite3.Connection) -> None:
    # The foreign keys are deferred: this succeeds now and makes the COMMIT fail.
    conn.execute("INSERT INTO events (message_id, kind, at, attempt) VALUES (987654321, 'x', 0, 0)")


async def test_failing_commit_fails_the_whole_group(
    store: SqliteStore, nursery: trio.Nursery, db_path: Path
) -> None:
    gate = await pause_writer(store, nursery)
    outcomes: list[BaseException | list[bool] | None] = []

    async def insert(msgid: str) -> None:
        try:
            outcomes.append(await store.insert_messages([new_message(msgid)], NOW))
        except Exception as exc:
            outcomes.append(exc)

    async def inject() -> None:
        try:
            outcomes.append(await store._write(orphan_event))
        except Exception as exc:
            outcomes.append(exc)

    async with trio.open_nursery() as callers:
        callers.start_soon(insert, "a")
        callers.start_soon(inject)
        callers.start_soon(insert, "b")
        await settle()
        before = store.commit_count
        gate.open()

    assert len(outcomes) == 3
    assert all(isinstance(outcome, CommitFailed) for outcome in outcomes)
    assert all(isinstance(outcome, StoreError) for outcome in outcomes)
    assert store.commit_count == before + 1  # only the gate's group committed
    assert rows(db_path, "SELECT COUNT(*) FROM messages") == [(0,)]
    assert rows(db_path, "SELECT COUNT(*) FROM events") == [(0,)]
    # the writer keeps serving, and the callers' retry is stored
    assert await store.insert_messages([new_message("a"), new_message("b")], NOW) == [True, True]


async def test_reads_do_not_wait_for_a_commit(store: SqliteStore, nursery: trio.Nursery) -> None:
    await store.insert_messages([new_message("m1")], NOW)
    gate = await pause_writer(store, nursery)
    try:
        with trio.fail_after(5):
            assert (await store.counts())["accepted"] == 1
            assert len(await store.history("m1")) == 1
    finally:
        gate.open()


async def test_cancelled_before_taken_is_dropped(store: SqliteStore, nursery: trio.Nursery) -> None:
    gate = await pause_writer(store, nursery)
    scope = trio.CancelScope()

    async def cancelled_insert() -> None:
        with scope:
            await store.insert_messages([new_message("dropped")], NOW)

    async with trio.open_nursery() as callers:
        callers.start_soon(cancelled_insert)
        callers.start_soon(store.insert_messages, [new_message("kept")], NOW)
        await settle()
        scope.cancel()
        await settle()
        gate.open()
    assert scope.cancelled_caught
    assert len(await store.history("kept")) == 1
    assert await store.history("dropped") == []


async def test_cancelled_after_taken_is_still_committed(
    store: SqliteStore, nursery: trio.Nursery
) -> None:
    first = await pause_writer(store, nursery)
    second = await queue_gate(store, nursery)
    scope = trio.CancelScope()

    async def cancelled_insert() -> None:
        with scope:
            await store.insert_messages([new_message("handed-over")], NOW)

    async with trio.open_nursery() as callers:
        callers.start_soon(cancelled_insert)
        await settle()
        first.open()  # the writer now takes [second gate, insert] and blocks in the gate
        await trio.to_thread.run_sync(second.entered.wait, 5)
        assert not store._queue  # the insert was handed to the writer
        scope.cancel()
    assert scope.cancelled_caught
    second.open()
    # writes commit in order: once a later one returns, the abandoned one is committed
    assert await store.insert_messages([new_message("probe")], NOW) == [True]
    # nothing half-written, and the store still works
    (history,) = await store.history("handed-over")
    assert history.events == (Event(EventKind.ACCEPTED, NOW, 0),)
    assert await store.insert_messages([new_message("handed-over")], NOW) == [False]


async def test_closed_store_refuses(db_path: Path) -> None:
    store = SqliteStore(str(db_path))
    with pytest.raises(StoreClosed):
        await store.insert_messages([new_message()], NOW)
    with pytest.raises(StoreClosed):
        await store.counts()
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        assert await store.insert_messages([new_message()], NOW) == [True]
        nursery.cancel_scope.cancel()
    with pytest.raises(StoreClosed):
        await store.insert_messages([new_message("m2")], NOW)
    with pytest.raises(StoreClosed):
        await store.history("m1")
    with pytest.raises(RuntimeError):
        await store.run()


async def test_shutdown_commits_what_was_handed_over(db_path: Path) -> None:
    store = SqliteStore(str(db_path))
    results: list[list[bool]] = []

    async def insert(msgid: str) -> None:
        results.append(await store.insert_messages([new_message(msgid)], NOW))

    async with trio.open_nursery() as callers, trio.open_nursery() as store_nursery:
        await store_nursery.start(store.run)
        gate = await pause_writer(store, store_nursery)
        for index in range(5):
            callers.start_soon(insert, f"m{index}")
        await settle()
        store_nursery.cancel_scope.cancel()
        gate.open()
    assert results == [[True]] * 5
    assert rows(db_path, "SELECT COUNT(*) FROM messages") == [(5,)]
    assert rows(db_path, "PRAGMA journal_mode") == [("wal",)]


async def test_open_fails_clearly_on_a_bad_path(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "missing-dir" / "smsgw.db"))
    async with trio.open_nursery() as nursery:
        with pytest.raises(StoreError, match="cannot open SQLite database"):
            await nursery.start(store.run)


async def test_migrations_recorded_and_idempotent(db_path: Path) -> None:
    for _ in range(2):
        store = SqliteStore(str(db_path))
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            await store.insert_messages([new_message()], NOW)
            nursery.cancel_scope.cancel()
    versions = rows(db_path, "SELECT version FROM schema_version ORDER BY version")
    assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 1)]
    tables = {name for (name,) in rows(db_path, "SELECT name FROM sqlite_master")}
    assert {"messages", "message_parts", "events", "pushes", "schema_version"} <= tables
    assert rows(db_path, "SELECT COUNT(*) FROM messages") == [(1,)]


async def test_newer_schema_is_refused(db_path: Path) -> None:
    conn = sqlite3.connect(str(db_path))
    conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at INTEGER)")
    conn.execute("INSERT INTO schema_version VALUES (99, 0)")
    conn.commit()
    conn.close()
    store = SqliteStore(str(db_path))
    async with trio.open_nursery() as nursery:
        with pytest.raises(StoreError, match="newer than this smsgw"):
            await nursery.start(store.run)


def test_constructor_rejects_non_files() -> None:
    for path in ("", ":memory:", "file::memory:?cache=shared"):
        with pytest.raises(ValueError, match="file path"):
            SqliteStore(path)
    with pytest.raises(ValueError):
        SqliteStore("x.db", max_group_ops=0)


async def test_random_duplicates_match_a_model(store: SqliteStore) -> None:
    """Seeded random batches: True exactly for the first occurrence of each key."""
    rng = random.Random(1234)
    seen: set[tuple[str, str, str]] = set()
    for _ in range(20):
        batch = [
            new_message(
                f"m{rng.randrange(15)}", f"+{100000 + rng.randrange(3)}", appid=rng.choice("ab")
            )
            for _ in range(rng.randrange(1, 12))
        ]
        expected = []
        for m in batch:
            key = (m.appid, m.msgid, m.phone)
            expected.append(key not in seen)
            seen.add(key)
        assert await store.insert_messages(batch, NOW) == expected
    assert (await store.counts())["accepted"] == len(seen)


async def test_insert_throughput(store: SqliteStore) -> None:
    """A measurement, not a pass/fail bar: 100-row calls from 50 concurrent tasks."""
    tasks, calls_per_task, batch = 50, 4, 100

    async def worker(task: int) -> None:
        for call in range(calls_per_task):
            messages = [
                new_message(f"t{task}c{call}", f"+{1000000 + n}", message="x" * 70)
                for n in range(batch)
            ]
            assert await store.insert_messages(messages, NOW) == [True] * batch

    before = store.commit_count
    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for task in range(tasks):
            nursery.start_soon(worker, task)
    elapsed = time.perf_counter() - started
    total = tasks * calls_per_task * batch
    commits = store.commit_count - before
    print(
        f"\ninsert throughput: {total} rows in {elapsed:.2f}s = {total / elapsed:,.0f} rows/s,"
        f" {tasks * calls_per_task} calls in {commits} commits"
    )
    assert (await store.counts())["accepted"] == total
