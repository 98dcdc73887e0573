"""What only the PostgreSQL store does: group commits as one insert and one NOTIFY, claims
shared by several gateways, wake-ups between them, reconnects, start-up failures."""

from __future__ import annotations

import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import pytest
import trio

from smsgw.store import (
    Event,
    EventKind,
    MessageUpdate,
    PartReport,
    PushState,
    State,
    StoreError,
    UnknownMessage,
)
from tests.store.conftest import NOW, new_message, settle
from tests.store.postgres.conftest import postgres_store
from tests.store.test_sqlite_inbound import LEGACY_ROWS, legacy_mo, mo
from tests.store.test_sqlite_outbox import final_with_pushes

if TYPE_CHECKING:
    from smsgw.store.postgres import PostgresStore
    from smsgw.store.wake import Wake


def sql(url: str, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on a connection of its own (autocommit); its rows."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(statement.encode(), params)
        return cursor.fetchall() if cursor.description else []


@asynccontextmanager
async def running(url: str, **options: Any) -> AsyncIterator[PostgresStore]:
    store = postgres_store(url, **options)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        yield store
        nursery.cancel_scope.cancel()


class Gate:
    """An op that holds the writer thread until opened, so the next ops form one group."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def op(self, conn: object, wakes: object) -> None:
        self.entered.set()
        if not self.release.wait(10):
            raise TimeoutError("Gate was never opened")


async def hold_writer(store: PostgresStore, nursery: trio.Nursery) -> Gate:
    gate = Gate()
    nursery.start_soon(store.writer.write, gate.op)
    assert await trio.to_thread.run_sync(gate.entered.wait, 10), "the writer never took the gate"
    return gate


async def gather(
    calls: dict[str, Callable[[], Awaitable[object]]], gate: Gate
) -> dict[str, object]:
    """Start every call, in order, each queued behind the gate before the next starts; open
    the gate; each call's result or error."""
    outcomes: dict[str, object] = {}

    async def one(name: str, call: Callable[[], Awaitable[object]]) -> None:
        try:
            outcomes[name] = await call()
        except Exception as exc:
            outcomes[name] = exc

    async with trio.open_nursery() as callers:
        for name, call in calls.items():
            callers.start_soon(one, name, call)
            await settle()
        gate.release.set()
    return outcomes


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_a_group_of_accepts_is_one_commit_and_one_notify(
    pg_url: str, nursery: trio.Nursery
) -> None:
    import psycopg

    listener = await trio.to_thread.run_sync(lambda: psycopg.connect(pg_url, autocommit=True))
    try:
        listener.execute("LISTEN smsgw")
        async with running(pg_url) as store:
            gate = await hold_writer(store, nursery)
            before = store.commit_count

            def accept(n: int) -> Callable[[], Awaitable[object]]:
                return lambda: store.insert_messages([new_message(f"m{n % 7}")], NOW)

            outcomes = await gather({f"c{n}": accept(n) for n in range(20)}, gate)
            assert store.commit_count == before + 2  # the gate's, and ONE for the twenty
            for key in range(7):  # each key stored once, whichever caller came first
                answers = [outcomes[f"c{n}"] for n in range(key, 20, 7)]
                assert answers.count([True]) == 1
                assert answers.count([False]) == len(answers) - 1
        notes = list(listener.notifies(timeout=2))
        assert len(notes) == 1, notes
        assert notes[0].payload == f'{{"due":{NOW},"push":[]}}'
    finally:
        listener.close()


async def test_an_accept_postgresql_refuses_fails_alone(
    store: PostgresStore, nursery: trio.Nursery
) -> None:
    gate = await hold_writer(store, nursery)
    outcomes = await gather(
        {
            "before": lambda: store.insert_messages([new_message("a")], NOW),
            "nul": lambda: store.insert_messages([new_message("b", message="x\x00y")], NOW),
            "after": lambda: store.insert_messages([new_message("c")], NOW),
        },
        gate,
    )
    assert outcomes["before"] == [True]
    assert outcomes["after"] == [True]
    assert isinstance(outcomes["nul"], StoreError)
    assert await store.history("b") == []
    assert (await store.counts())["accepted"] == 2


async def test_applies_of_a_group_run_together_in_order_and_fail_alone(
    store: PostgresStore, nursery: trio.Nursery
) -> None:
    await store.insert_messages([new_message("m1"), new_message("m2")], NOW)
    first, second = await store.claim_due(NOW, 10, owner="a")

    def submitting(row_id: int) -> MessageUpdate:
        return MessageUpdate(row_id, State.SUBMITTING, Event(EventKind.SUBMITTING, NOW, 1))

    def submitted(row_id: int) -> MessageUpdate:
        event = Event(EventKind.SUBMITTED, NOW + 1, 1, carrier_msgid=f"op-{row_id}")
        return MessageUpdate(
            row_id, State.SUBMITTED, event, attempts=1, carrier_msgid=f"op-{row_id}"
        )

    gate = await hold_writer(store, nursery)
    before = store.commit_count
    outcomes = await gather(
        {
            "a": lambda: store.apply([submitting(first.id), submitting(second.id)]),
            "b": lambda: store.apply([submitting(424242)]),
            "c": lambda: store.apply([submitted(first.id)]),  # first again: a run of its own
            "d": lambda: store.record_part_reports(
                [PartReport(f"op-{first.id}", True, "DELIVRD", NOW + 2)], NOW + 2
            ),
            "e": lambda: store.apply([submitted(second.id)]),
        },
        gate,
    )
    assert store.commit_count == before + 2
    assert isinstance(outcomes["b"], UnknownMessage)
    for name in ("a", "c", "e"):
        results = outcomes[name]
        assert isinstance(results, list) and all(result.applied for result in results)
    reports = outcomes["d"]
    assert isinstance(reports, list) and reports[0] is not None
    assert not reports[0].duplicate and reports[0].all_delivered
    for row in (first, second):
        (history,) = await store.history(row.msgid)
        assert history.message.state is State.SUBMITTED
        assert [e.kind for e in history.events] == ["accepted", "submitting", "submitted"]
        assert [p.carrier_msgid for p in history.parts] == [f"op-{row.id}"]


async def test_two_gateways_never_claim_the_same_row(pg_url: str) -> None:
    async with running(pg_url) as first, running(pg_url) as second:
        for start in range(0, 600, 100):
            batch = [new_message(f"m{n}") for n in range(start, start + 100)]
            assert await first.insert_messages(batch, NOW) == [True] * 100
        claimed: dict[str, list[int]] = {"first": [], "second": []}

        async def drain(name: str, store: PostgresStore) -> None:
            while rows := await store.claim_due(NOW, 25, owner="a"):
                claimed[name] += [row.id for row in rows]
                assert all(row.state is State.QUEUED for row in rows)

        async with trio.open_nursery() as both:
            both.start_soon(drain, "first", first)
            both.start_soon(drain, "second", second)
        everything = claimed["first"] + claimed["second"]
        assert len(everything) == 600
        assert len(set(everything)) == 600
        assert (await first.counts())["queued"] == 600


async def test_another_gateways_commit_wakes_this_one(pg_url: str) -> None:
    async with running(pg_url) as first, running(pg_url) as second:
        seen: dict[str, list[Wake]] = {"first": [], "second": []}
        first.on_wake(seen["first"].append)
        second.on_wake(seen["second"].append)
        with trio.fail_after(10):
            await first.listener.connected.wait()
            await second.listener.connected.wait()
        seen["first"].clear()  # the wake-everything of their (re)connect
        seen["second"].clear()
        arrived = trio.Event()
        second.on_wake(lambda wake: arrived.set())
        await first.insert_messages([new_message("m1", send_at_ms=NOW + 5_000)], NOW)
        with trio.fail_after(10):
            await arrived.wait()
        assert [wake.due_ms for wake in seen["second"]] == [NOW + 5_000]
        assert second.listener.received == 1
        assert first.listener.received == 0  # its own commit: it woke its parts itself


async def test_reconnects_after_its_connections_are_killed(pg_url: str) -> None:
    async with running(pg_url) as store:
        assert await store.insert_messages([new_message("m1")], NOW) == [True]
        assert len(await store.history("m1")) == 1  # a reader connection is pooled now
        killed = sql(
            pg_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        assert len(killed) >= 3  # writer, reader, listener
        assert await store.insert_messages([new_message("m2")], NOW) == [True]
        assert [h.message.msgid for h in await store.history("m2")] == ["m2"]
        assert store.writer.reconnects == 1
        with trio.fail_after(20):  # the listener's first retry comes after half a second
            await store.listener.reconnected.wait()


async def test_an_unreachable_server_fails_the_start_in_one_line() -> None:
    store = postgres_store(
        f"postgresql://gw:s3cret@127.0.0.1:{closed_port()}/sms?connect_timeout=2"
    )
    async with trio.open_nursery() as nursery:
        with pytest.raises(StoreError, match="cannot connect") as info:
            await nursery.start(store.run)
    message = str(info.value)
    assert "s3cret" not in message
    assert "gw:***@127.0.0.1" in message
    assert "\n" not in message


async def test_gateways_starting_together_migrate_once(pg_url: str) -> None:
    from smsgw.store.postgres.schema import SCHEMA_VERSION

    async with running(pg_url), running(pg_url), running(pg_url):
        pass
    versions = sql(pg_url, "SELECT version FROM schema_version ORDER BY version")
    assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 1)]
    sql(pg_url, "INSERT INTO schema_version VALUES (99, 0)")
    async with trio.open_nursery() as nursery:
        with pytest.raises(StoreError, match="version 99, newer than this smsgw"):
            await nursery.start(postgres_store(pg_url).run)


async def test_read_only_reads_and_refuses_to_write_or_to_create(pg_url: str) -> None:
    async with trio.open_nursery() as nursery:
        with pytest.raises(StoreError, match="no smsgw database"):
            await nursery.start(postgres_store(pg_url, read_only=True).run)
    assert sql(pg_url, "SELECT to_regclass('messages')") == [(None,)]  # nothing created
    async with running(pg_url) as store:
        await store.insert_messages([new_message("m1")], NOW)
    async with running(pg_url, read_only=True) as reader:
        assert [h.message.msgid for h in await reader.history("m1")] == ["m1"]
        with pytest.raises(StoreError, match="read-only"):
            await reader.insert_messages([new_message("m2")], NOW)


async def test_a_report_taken_on_two_gateways_at_once_counts_once(pg_url: str) -> None:
    async with running(pg_url) as first, running(pg_url) as second:
        await first.insert_messages([new_message(f"m{n}") for n in range(50)], NOW)
        rows = await first.claim_due(NOW, 50, owner="a")
        await first.apply(
            [
                MessageUpdate(row.id, State.SUBMITTING, Event(EventKind.SUBMITTING, NOW, 1))
                for row in rows
            ]
        )
        await first.apply(
            [
                MessageUpdate(
                    row.id,
                    State.SUBMITTED,
                    Event(EventKind.SUBMITTED, NOW, 1, carrier_msgid=f"op-{row.id}"),
                    attempts=1,
                    carrier_msgid=f"op-{row.id}",
                    submitted_at_ms=NOW,
                )
                for row in rows
            ]
        )
        reports = [PartReport(f"op-{row.id}", True, "DELIVRD", NOW + 1) for row in rows]
        results: dict[str, list[Any]] = {}

        async def report(name: str, store: PostgresStore) -> None:
            results[name] = await store.record_part_reports(reports, NOW + 1)

        async with trio.open_nursery() as both:
            both.start_soon(report, "first", first)
            both.start_soon(report, "second", second)
        for n in range(len(rows)):
            pair = [results["first"][n], results["second"][n]]
            assert all(match is not None for match in pair)
            assert sorted(match.duplicate for match in pair) == [False, True]


async def test_a_version_1_database_keeps_its_mos_as_neutral_records(pg_url: str) -> None:
    import psycopg

    from smsgw.store.postgres.schema import SCHEMA_VERSION, migrate

    with psycopg.connect(pg_url, autocommit=True) as conn:
        migrate(conn, up_to=1)
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO inbound (source_addr, destination_addr, text, data_coding,"
                " esm_class, udh, received_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                LEGACY_ROWS,
            )
    async with running(pg_url) as store:
        await store.insert_inbound([mo(9)])
        records = await store.recent_inbound(10)
    assert [record.mo for record in records] == [
        mo(9),
        *(legacy_mo(row) for row in reversed(LEGACY_ROWS)),
    ]
    assert [record.id for record in records] == [5, 4, 3, 2, 1]  # ids kept, new ones after
    assert sql(pg_url, "SELECT max(version) FROM schema_version") == [(SCHEMA_VERSION,)]
    columns = sql(
        pg_url,
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'inbound'"
        " AND column_default IS NOT NULL AND column_name <> 'id'",
    )
    assert columns == []  # the conversion's defaults are gone: every insert says everything


class RolledBack:
    """An op that PostgreSQL itself rolls back as a deadlock victim (SQLSTATE 40P01) on its
    first `times` runs, then registers an owner."""

    def __init__(self, times: int) -> None:
        self.times = times
        self.runs = 0

    def op(self, conn: Any, wakes: object) -> str:
        self.runs += 1
        if self.runs <= self.times:
            conn.execute("DO $$BEGIN RAISE EXCEPTION 'victim' USING ERRCODE = '40P01'; END$$")
        conn.execute("INSERT INTO push_claims (appid, owner) VALUES ('rolled', 'back')")
        return "done"


def accepted_later(store: PostgresStore, msgid: str) -> Callable[[], Awaitable[object]]:
    return lambda: store.insert_messages([new_message(msgid)], NOW)


async def test_a_group_rolled_back_by_the_server_runs_again_whole(
    store: PostgresStore, nursery: trio.Nursery
) -> None:
    victim = RolledBack(times=2)
    gate = await hold_writer(store, nursery)
    before = store.commit_count
    outcomes = await gather(
        {
            "accept": accepted_later(store, "m1"),
            "victim": lambda: store.writer.write(victim.op),
            "claim": lambda: store.claim_due(NOW, 10, owner="a"),
        },
        gate,
    )
    assert outcomes["accept"] == [True]
    assert outcomes["victim"] == "done"
    claimed = outcomes["claim"]
    assert isinstance(claimed, list) and [row.msgid for row in claimed] == ["m1"]
    assert store.commit_count == before + 2  # the gate's, then the group once
    assert store.writer.rolled_back_runs == 2
    assert sql(store.url, "SELECT count(*) FROM push_claims WHERE appid = 'rolled'") == [(1,)]
    assert (await store.counts())["queued"] == 1


async def test_a_group_the_server_keeps_rolling_back_fails_whole(
    store: PostgresStore, nursery: trio.Nursery
) -> None:
    from smsgw.store.postgres.writer import ROLLED_BACK_RUNS

    victim = RolledBack(times=ROLLED_BACK_RUNS + 1)
    gate = await hold_writer(store, nursery)
    outcomes = await gather(
        {"accept": accepted_later(store, "m1"), "victim": lambda: store.writer.write(victim.op)},
        gate,
    )
    assert isinstance(outcomes["accept"], StoreError)
    assert isinstance(outcomes["victim"], StoreError)
    assert victim.runs == ROLLED_BACK_RUNS + 1
    assert await store.history("m1") == []  # nothing of the group stored
    assert await store.insert_messages([new_message("m1")], NOW) == [True]  # and it goes on


async def test_a_report_waits_for_the_transaction_holding_its_part_id(pg_url: str) -> None:
    import psycopg

    from smsgw.store.postgres.queries import PART_LOCK_CLASS, part_lock_keys

    (key,) = part_lock_keys(["op-1"])
    holder = await trio.to_thread.run_sync(lambda: psycopg.connect(pg_url))
    try:
        holder.execute("SELECT pg_advisory_xact_lock(%s, %s)", (PART_LOCK_CLASS, key))
        async with running(pg_url) as store, trio.open_nursery() as nursery:
            done = trio.Event()

            async def report() -> None:
                await store.record_part_reports([PartReport("op-1", True, "DELIVRD", NOW)], NOW)
                done.set()

            nursery.start_soon(report)
            waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            for _ in range(500):  # the writer's lock request shows in pg_locks
                if sql(pg_url, waiting) == [(1,)]:
                    break
                await trio.sleep(0.01)
            else:
                raise AssertionError("the writer never waited for the lock")
            assert not done.is_set()
            await trio.to_thread.run_sync(holder.commit)
            with trio.fail_after(10):
                await done.wait()
        assert sql(pg_url, "SELECT count(*) FROM early_reports") == [(1,)]
    finally:
        holder.close()


async def test_a_group_holds_at_most_max_group_locks(pg_url: str, nursery: trio.Nursery) -> None:
    async with running(pg_url, max_group_locks=3) as store:
        gate = await hold_writer(store, nursery)
        before = store.commit_count

        def report(*ids: str) -> Callable[[], Awaitable[object]]:
            return lambda: store.record_part_reports(
                [PartReport(i, True, "DELIVRD", NOW) for i in ids], NOW
            )

        outcomes = await gather(
            {
                "a": report("a1", "a2"),
                "b": report("b1"),  # 3 locks: with a
                "c": report("c1", "c2"),  # 5: a group of its own
                "d": report("d1", "d2", "d3", "d4"),  # more than the cap alone: still runs
            },
            gate,
        )
        for name, size in (("a", 2), ("b", 1), ("c", 2), ("d", 4)):
            assert outcomes[name] == [None] * size  # no parts yet: stored as early reports
        assert store.commit_count == before + 1 + 3
        assert sql(pg_url, "SELECT count(*) FROM early_reports") == [(9,)]


async def test_the_writer_finds_a_groups_rows_by_key_whatever_the_statistics(
    store: PostgresStore,
) -> None:
    """Statistics taken while the table was small, rows added since, every page cached: the
    planner's own choice for the writer's joins was a hash join over a scan of every row."""
    import json

    from smsgw.store.postgres import queries

    await store.insert_messages([new_message(f"m{n}") for n in range(200)], NOW)
    await store.writer.write(lambda conn, wakes: conn.execute("ANALYZE messages"))
    await store.insert_messages([new_message(f"n{n}") for n in range(3_000)], NOW)
    claimed = await store.claim_due(NOW, 300, owner="a")
    rows = [{"id": row.id, "st": "submitting", "src": ["queued"], "keep": True} for row in claimed]

    def explain(conn: queries.Conn, wakes: object) -> str:
        statement = b"EXPLAIN " + queries.APPLY_UPDATE_SQL.encode()
        plan = conn.execute(statement, (json.dumps(rows),))
        return "\n".join(str(line[0]) for line in plan.fetchall())

    plan = await store.writer.write(explain)
    assert "Index Scan using messages_pkey" in plan, plan
    assert "Seq Scan" not in plan, plan


async def test_a_pushed_frame_is_recorded_at_once_on_a_connection_of_its_own(
    pg_url: str, nursery: trio.Nursery
) -> None:
    async with running(pg_url) as store:
        first = await final_with_pushes(store, "m1")
        second = await final_with_pushes(store, "m2")
        gate = await hold_writer(store, nursery)
        try:  # not behind the commit group in flight
            with trio.fail_after(10):
                await store.record_push_result([p.id for p in first], True, None, NOW, 3, NOW)
        finally:
            gate.release.set()
        assert [p.msgid for p in await store.due_pushes("app1", NOW, 10)] == ["m2"]
        # Its connection lost since (a server restart): recorded on a new one.
        sql(
            pg_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        await store.record_push_result([p.id for p in second], True, None, NOW, 3, NOW)
        for msgid in ("m1", "m2"):
            (history,) = await store.history(msgid)
            assert [p.state for p in history.pushes] == [PushState.DONE]


def test_a_bare_statement_fails_with_psycopgs_error_classes(pg_url: str) -> None:
    """BEGIN and COMMIT go straight through libpq: a failure must still say what it was,
    since a rolled-back group (class 40) is run again and a lost connection reconnects."""
    import psycopg
    from psycopg import errors

    from smsgw.store.postgres import queries

    with psycopg.connect(pg_url, autocommit=True) as conn:
        queries.bare(conn, b"BEGIN")
        with pytest.raises(errors.DivisionByZero) as division:
            queries.bare(conn, b"SELECT 1 / 0")
        assert division.value.sqlstate == "22012"
        with pytest.raises(errors.InFailedSqlTransaction):
            queries.bare(conn, b"SELECT 1")
        queries.bare(conn, b"ROLLBACK")
        sql(pg_url, f"SELECT pg_terminate_backend({conn.info.backend_pid})")
        with pytest.raises(psycopg.OperationalError):
            queries.bare(conn, b"BEGIN")
        assert conn.closed  # the writer sees the connection lost
