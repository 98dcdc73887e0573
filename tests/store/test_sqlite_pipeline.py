"""The pipeline side of the SQLite store: claim_due, reclaim, apply, delivery-report parts."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import attrs
import pytest
import trio

from smsgw.lifecycle import Receipt
from smsgw.store import (
    Applied,
    Event,
    EventKind,
    MessageRecord,
    MessageUpdate,
    PartRecord,
    PartReport,
    PushKind,
    PushState,
    SqliteStore,
    State,
    UnknownMessage,
)
from smsgw.store.sqlite import (
    CLAIM_SQL,
    MESSAGE_WITH_PARTS_SQL,
    NEXT_DUE_SQL,
    TAKE_PART_REPORT_SQL,
)
from tests.store.conftest import (
    NOW,
    OWNER,
    make_version_1_database,
    new_message,
    pause_writer,
    queue_gate,
    record_part_report,
    rows,
    settle,
)


async def claim_one(store: SqliteStore, msgid: str = "m1", segments: int = 1) -> MessageRecord:
    assert await store.insert_messages([new_message(msgid, segments=segments)], NOW) == [True]
    (claimed,) = await store.claim_due(NOW, 1, owner=OWNER)
    assert claimed.msgid == msgid
    return claimed


def submitting(message_id: int, attempt: int = 1) -> MessageUpdate:
    return MessageUpdate(
        message_id=message_id,
        state=State.SUBMITTING,
        event=Event("submitting", NOW + 1, attempt),
        attempts=attempt,
    )


def submitted(
    message_id: int, *part_ids: str, carrier_msgid: str = "c1", receipt: Receipt | None = None
) -> MessageUpdate:
    return MessageUpdate(
        message_id=message_id,
        state=State.SUBMITTED,
        event=Event(EventKind.SUBMITTED, NOW + 2, 1, carrier_msgid=carrier_msgid),
        carrier_msgid=carrier_msgid,
        part_ids=part_ids,
        submitted_at_ms=NOW + 2,
        receipt=receipt,
        pushes=(PushKind.STATUS_REPORT,) if receipt is not None else (),
    )


async def test_claim_due_order_limit_and_schedule(store: SqliteStore) -> None:
    await store.insert_messages(
        [
            new_message("a"),  # due NOW
            new_message("b", send_at_ms=NOW + 1_000),  # scheduled
            new_message("d", send_at_ms=NOW + 500),  # scheduled, due before b
        ],
        NOW,
    )
    await store.insert_messages([new_message("c")], NOW + 10)  # accepted later: due NOW+10

    first = await store.claim_due(NOW + 5, 10, owner=OWNER)
    assert [m.msgid for m in first] == ["a"]
    assert first[0].state is State.QUEUED

    second = await store.claim_due(NOW + 2_000, 2, owner=OWNER)  # the limit holds back b
    assert [m.msgid for m in second] == ["c", "d"]
    assert [m.next_attempt_at_ms for m in second] == [NOW + 10, NOW + 500]

    assert [m.msgid for m in await store.claim_due(NOW + 2_000, 10, owner=OWNER)] == ["b"]
    assert await store.claim_due(NOW + 10_000, 10, owner=OWNER) == []
    counts = await store.counts()
    assert counts["queued"] == 4
    assert counts["accepted"] == counts["scheduled"] == 0


async def test_scheduled_rows_are_not_claimed_early(store: SqliteStore) -> None:
    await store.insert_messages([new_message("s", send_at_ms=NOW + 60_000)], NOW)
    assert await store.claim_due(NOW + 59_999, 10, owner=OWNER) == []
    (row,) = await store.claim_due(NOW + 60_000, 10, owner=OWNER)
    assert row.msgid == "s"


async def test_same_due_time_keeps_arrival_order(store: SqliteStore) -> None:
    await store.insert_messages([new_message(f"m{n}") for n in range(5)], NOW)
    claimed = await store.claim_due(NOW, 3, owner=OWNER) + await store.claim_due(
        NOW, 3, owner=OWNER
    )
    assert [m.msgid for m in claimed] == [f"m{n}" for n in range(5)]


async def test_claim_limit_edges(store: SqliteStore) -> None:
    await store.insert_messages([new_message("a")], NOW)
    assert await store.claim_due(NOW, 0, owner=OWNER) == []
    with pytest.raises(ValueError, match="limit"):
        await store.claim_due(NOW, -1, owner=OWNER)
    assert (await store.counts())["accepted"] == 1


async def test_next_due_at(store: SqliteStore) -> None:
    assert await store.next_due_at() is None
    await store.insert_messages([new_message("later", send_at_ms=NOW + 1_000)], NOW)
    assert await store.next_due_at() == NOW + 1_000
    await store.insert_messages([new_message("now")], NOW + 20)
    assert await store.next_due_at() == NOW + 20
    await store.claim_due(NOW + 20, 10, owner=OWNER)
    assert await store.next_due_at() == NOW + 1_000
    await store.claim_due(NOW + 1_000, 10, owner=OWNER)
    assert await store.next_due_at() is None  # queued rows are not waiting


async def test_reclaim_from_an_owner_that_never_registered(store: SqliteStore) -> None:
    await store.insert_messages([new_message(f"m{n}") for n in range(4)], NOW)
    claimed = await store.claim_due(NOW, 3, owner=OWNER)  # m0 m1 m2 queued, m3 waiting
    await store.apply(
        [submitting(claimed[0].id), submitting(claimed[1].id), submitted(claimed[1].id)]
    )

    report = await store.reclaim("heir", NOW + 100)
    assert report.requeued == 1  # m2
    assert [m.msgid for m in report.in_doubt] == ["m0"]
    assert report.in_doubt[0].state is State.SUBMITTING
    assert (report.in_doubt[0].attempts, report.in_doubt[0].owner) == (1, "heir")
    counts = await store.counts()
    assert (counts["accepted"], counts["queued"], counts["submitting"]) == (2, 0, 1)
    assert counts["submitted"] == 1
    # the requeued row is due again, in its original order
    assert [m.msgid for m in await store.claim_due(NOW + 100, 10, owner=OWNER)] == ["m2", "m3"]


async def test_fully_reported_returns_submitted_messages_whose_parts_all_reported(
    store: SqliteStore,
) -> None:
    # A crash between record_part_reports and the final apply leaves these SUBMITTED.
    claimed = {msgid: await claim_one(store, msgid, segments=2) for msgid in ("ko", "half", "ok")}
    done = await claim_one(store, "done")
    await store.apply(
        [
            submitting(claimed["ko"].id),
            submitted(claimed["ko"].id, "k1", "k2", carrier_msgid="k1"),
            submitting(claimed["half"].id),
            submitted(claimed["half"].id, "h1", "h2", carrier_msgid="h1"),
            submitting(claimed["ok"].id),
            submitted(claimed["ok"].id, "o1", "o2", carrier_msgid="o1"),
            submitting(done.id),
            submitted(done.id, carrier_msgid="d1"),
        ]
    )
    await record_part_report(store, "k2", False, "UNDELIV", NOW + 10)
    await record_part_report(store, "k1", True, "DELIVRD", NOW + 20)  # reported last
    await record_part_report(store, "h1", True, "DELIVRD", NOW + 10)  # h2 still to come
    await record_part_report(store, "o1", True, "DELIVRD", NOW + 30)  # same time: the
    await record_part_report(store, "o2", True, "DELIVRD", NOW + 30)  # higher part number
    await record_part_report(store, "d1", True, "DELIVRD", NOW + 10)
    final = Event(EventKind.DELIVERY_REPORT, NOW + 40, 1, "DELIVRD")
    await store.apply([MessageUpdate(done.id, State.DELIVERED, final, stat="DELIVRD")])

    assert await store.fully_reported(NOW + 20, 10) == []  # none reported before NOW + 20
    assert [m.message.msgid for m in await store.fully_reported(NOW + 21, 10)] == ["ko"]
    assert [m.message.msgid for m in await store.fully_reported(NOW + 31, 1)] == ["ko"]
    reported = await store.fully_reported(NOW + 100, 10)
    assert [m.message.msgid for m in reported] == ["ko", "ok"]
    ko, ok = reported
    assert ko.message.state is State.SUBMITTED
    assert (ko.parts, ko.reported, ko.delivered, ko.failed_stat) == (2, 2, 1, "UNDELIV")
    assert ko.all_reported and not ko.all_delivered and not ko.duplicate
    assert ko.part_no == 1
    assert ko.part == PartRecord(1, "k1", True, True, "DELIVRD", NOW + 20)
    assert ok.all_delivered
    assert ok.part == PartRecord(2, "o2", True, True, "DELIVRD", NOW + 30)
    assert (await store.counts())["submitted"] == 3  # a read: it changes none of them

    # Once made final, they are not returned again.
    await store.apply(
        [
            MessageUpdate(claimed["ko"].id, State.FAILED, final, stat="UNDELIV"),
            MessageUpdate(claimed["ok"].id, State.DELIVERED, final, stat="DELIVRD"),
        ]
    )
    assert await store.fully_reported(NOW + 200, 10) == []


async def test_part_match_carries_the_part_as_stored(store: SqliteStore) -> None:
    row = await claim_one(store, segments=2)
    await store.apply([submitting(row.id), submitted(row.id, "p1", "p2", carrier_msgid="p1")])
    found = await store.find_by_part_id("p2")
    assert found is not None
    assert found.part == PartRecord(2, "p2", False, False, None, None)
    first = await record_part_report(store, "p2", False, "EXPIRED", NOW + 5)
    assert first is not None
    assert first.part == PartRecord(2, "p2", True, False, "EXPIRED", NOW + 5)
    again = await record_part_report(store, "p2", True, "DELIVRD", NOW + 6)
    assert again is not None and again.duplicate
    assert again.part == first.part  # the first report is kept


async def test_clear_error(store: SqliteStore) -> None:
    row = await claim_one(store)
    failed = Event(EventKind.ATTEMPT_FAILED, NOW + 5, 1, "TMP_FAIL", "network down")
    await store.apply([MessageUpdate(row.id, State.ACCEPTED, failed, error="network down")])
    assert [r.id for r in await store.claim_due(NOW + 5, 1, owner=OWNER)] == [row.id]
    await store.apply([submitting(row.id, attempt=2)])
    assert (await store.history("m1"))[0].message.error == "network down"  # None: unchanged
    await store.apply([attrs.evolve(submitted(row.id), clear_error=True)])
    (history,) = await store.history("m1")
    assert (history.message.state, history.message.error) == (State.SUBMITTED, None)
    assert history.events[1].error == "network down"  # the history keeps it


def test_an_update_cannot_both_set_and_clear_the_error() -> None:
    event = Event(EventKind.FINAL, NOW, 1)
    with pytest.raises(ValueError, match="error"):
        MessageUpdate(1, State.FAILED, event, error="boom", clear_error=True)


async def test_apply_submitted_with_parts_and_pushes(store: SqliteStore) -> None:
    row = await claim_one(store)
    receipt = Receipt(False, True, "ACCEPTD", 1, NOW + 2, "p1")
    await store.apply([submitting(row.id)])
    update = submitted(row.id, "p1", "p2", carrier_msgid="p1", receipt=receipt)
    (applied,) = await store.apply([update])
    assert applied == Applied(True, State.SUBMITTED, "app1")

    (history,) = await store.history("m1")
    message = history.message
    assert message.state is State.SUBMITTED
    assert message.carrier_msgid == "p1"
    assert message.submitted_at_ms == NOW + 2
    assert message.attempts == 1
    assert message.next_attempt_at_ms is None
    assert [e.kind for e in history.events] == ["accepted", "submitting", "submitted"]
    assert history.events[-1].carrier_msgid == "p1"
    assert history.parts == (
        PartRecord(1, "p1", False, False, None, None),
        PartRecord(2, "p2", False, False, None, None),
    )
    (stored_push,) = history.pushes
    assert (stored_push.appid, stored_push.kind, stored_push.receipt) == ("app1", "A003", receipt)
    assert (stored_push.msgid, stored_push.phone) == ("m1", "+8613800000000")
    assert stored_push.state is PushState.PENDING
    assert stored_push.attempts == 0
    assert stored_push.next_attempt_at_ms == NOW + 2


async def test_apply_is_all_or_nothing(store: SqliteStore) -> None:
    row = await claim_one(store)
    good = submitting(row.id)
    bad = MessageUpdate(message_id=row.id + 1000, state=State.FAILED, event=Event("final", 1, 1))
    with pytest.raises(UnknownMessage) as info:
        await store.apply([good, bad])
    assert info.value.message_id == row.id + 1000
    (history,) = await store.history("m1")
    assert history.message.state is State.QUEUED
    assert len(history.events) == 1


async def test_retry_after(store: SqliteStore) -> None:
    row = await claim_one(store)
    await store.apply(
        [
            MessageUpdate(
                message_id=row.id,
                state=State.ACCEPTED,
                event=Event(EventKind.ATTEMPT_FAILED, NOW + 5, 1, "SIM_FAIL", "temporary"),
                attempts=1,
                next_attempt_at_ms=NOW + 30_000,
                stat="SIM_FAIL",
                error="temporary",
            )
        ]
    )
    assert await store.claim_due(NOW + 29_999, 10, owner=OWNER) == []
    assert await store.next_due_at() == NOW + 30_000
    (again,) = await store.claim_due(NOW + 30_000, 10, owner=OWNER)
    assert (again.id, again.attempts, again.stat, again.error) == (
        row.id,
        1,
        "SIM_FAIL",
        "temporary",
    )


async def test_waiting_update_without_time_is_due_at_the_event(store: SqliteStore) -> None:
    row = await claim_one(store)
    update = MessageUpdate(row.id, State.ACCEPTED, Event(EventKind.ATTEMPT_FAILED, NOW + 7, 1))
    await store.apply([update])
    assert await store.next_due_at() == NOW + 7


async def test_final_state_and_unchanged_fields(store: SqliteStore) -> None:
    row = await claim_one(store)
    await store.apply([submitting(row.id), submitted(row.id, carrier_msgid="c9")])
    await store.apply(
        [
            MessageUpdate(
                row.id,
                State.DELIVERED,
                Event(EventKind.DELIVERY_REPORT, NOW + 50, 1, "DELIVRD"),
                stat="DELIVRD",
            )
        ]
    )
    (history,) = await store.history("m1")
    message = history.message
    assert message.state is State.DELIVERED
    assert message.final_at_ms == NOW + 50
    assert message.stat == "DELIVRD"
    # None in an update leaves the field as it was
    assert (message.carrier_msgid, message.attempts, message.submitted_at_ms) == (
        "c9",
        1,
        NOW + 2,
    )
    assert (await store.counts())["delivered"] == 1


async def test_carrier_msgid_alone_makes_one_part(store: SqliteStore) -> None:
    row = await claim_one(store)
    assert await store.find_by_part_id("c1") is None
    await store.apply([submitting(row.id), submitted(row.id, carrier_msgid="c1")])
    match = await store.find_by_part_id("c1")
    assert match is not None
    assert (match.message.id, match.part_no, match.parts, match.reported) == (row.id, 1, 1, 0)
    assert not match.all_reported
    assert not match.duplicate


async def test_part_reports(store: SqliteStore, db_path: Path) -> None:
    row = await claim_one(store, segments=3)
    await store.apply([submitting(row.id), submitted(row.id, "p1", "p2", "p3", carrier_msgid="p1")])
    assert await record_part_report(store, "zzz", True, "DELIVRD", NOW) is None

    first = await record_part_report(store, "p2", True, "DELIVRD", NOW + 10)
    assert first is not None
    assert (first.part_no, first.parts, first.reported, first.delivered) == (2, 3, 1, 1)
    assert not first.all_reported and not first.duplicate
    assert first.failed_stat is None
    # durable: visible to another connection as soon as the call returns
    assert rows(
        db_path,
        "SELECT reported, delivered, stat, reported_at FROM message_parts WHERE carrier_msgid = ?",
        ("p2",),
    ) == [(1, 1, "DELIVRD", NOW + 10)]

    second = await record_part_report(store, "p1", False, "UNDELIV", NOW + 11)
    assert second is not None
    assert (second.reported, second.delivered, second.failed_stat) == (2, 1, "UNDELIV")

    again = await record_part_report(store, "p1", True, "DELIVRD", NOW + 12)
    assert again is not None and again.duplicate
    assert (again.reported, again.delivered, again.failed_stat) == (2, 1, "UNDELIV")

    last = await record_part_report(store, "p3", True, "DELIVRD", NOW + 13)
    assert last is not None
    assert last.all_reported and not last.all_delivered
    assert last.message.id == row.id
    found = await store.find_by_part_id("p3")
    assert found is not None
    assert (found.part_no, found.reported, found.duplicate) == (3, 3, False)
    (history,) = await store.history("m1")
    assert [(p.part_no, p.reported, p.delivered, p.stat) for p in history.parts] == [
        (1, True, False, "UNDELIV"),
        (2, True, True, "DELIVRD"),
        (3, True, True, "DELIVRD"),
    ]


async def test_part_reports_in_one_call_are_taken_in_order(store: SqliteStore) -> None:
    row = await claim_one(store, segments=2)
    await store.apply([submitting(row.id), submitted(row.id, "q1", "q2", carrier_msgid="q1")])
    commits = store.commit_count
    matches = await store.record_part_reports(
        [
            PartReport("q2", True, "DELIVRD", NOW + 1),
            PartReport("nobody", True, "DELIVRD", NOW + 2),
            PartReport("q2", False, "UNDELIV", NOW + 3),  # a repeat within the call
            PartReport("q1", True, "DELIVRD", NOW + 4),
        ],
        NOW + 5,
    )
    assert store.commit_count == commits + 1
    first, unknown, repeat, last = matches
    assert unknown is None
    assert first is not None and (first.reported, first.duplicate) == (1, False)
    assert repeat is not None and repeat.duplicate and repeat.reported == 1
    assert last is not None and last.all_reported and last.all_delivered
    assert await store.record_part_reports([], NOW) == []


async def test_all_parts_delivered(store: SqliteStore) -> None:
    row = await claim_one(store, segments=2)
    await store.apply([submitting(row.id), submitted(row.id, "x1", "x2", carrier_msgid="x1")])
    await record_part_report(store, "x1", True, "DELIVRD", NOW)
    match = await record_part_report(store, "x2", True, "DELIVRD", NOW)
    assert match is not None and match.all_reported and match.all_delivered


async def test_new_attempt_replaces_parts(store: SqliteStore) -> None:
    row = await claim_one(store)
    await store.apply([submitting(row.id), submitted(row.id, "old1", "old2", carrier_msgid="old1")])
    await store.apply([submitted(row.id, "new1", carrier_msgid="new1")])
    assert await store.find_by_part_id("old1") is None
    match = await store.find_by_part_id("new1")
    assert match is not None and match.parts == 1


async def test_recycled_operator_id_goes_to_the_waiting_part(store: SqliteStore) -> None:
    first = await claim_one(store, "first")
    await store.apply([submitting(first.id), submitted(first.id, carrier_msgid="same")])
    await record_part_report(store, "same", True, "DELIVRD", NOW)
    second = await claim_one(store, "second")
    await store.apply([submitting(second.id), submitted(second.id, carrier_msgid="same")])
    match = await record_part_report(store, "same", False, "EXPIRED", NOW + 1)
    assert match is not None
    assert match.message.msgid == "second" and not match.duplicate


async def test_cancelled_claim_puts_rows_back(store: SqliteStore, nursery: trio.Nursery) -> None:
    await store.insert_messages([new_message(f"m{n}") for n in range(3)], NOW)
    first = await pause_writer(store, nursery)
    second = await queue_gate(store, nursery)
    scope = trio.CancelScope()

    async def cancelled_claim() -> None:
        with scope:
            await store.claim_due(NOW, 10, owner=OWNER)

    async with trio.open_nursery() as callers:
        callers.start_soon(cancelled_claim)
        await settle()
        first.open()  # the writer takes [second gate, claim]
        assert await trio.to_thread.run_sync(second.entered.wait, 5)
        scope.cancel()
    second.open()
    await store.insert_messages([new_message("probe")], NOW)  # after the claim and its undo
    counts = await store.counts()
    assert counts["queued"] == 0
    assert counts["accepted"] == 4
    assert [m.msgid for m in await store.claim_due(NOW, 10, owner=OWNER)] == [
        "m0",
        "m1",
        "m2",
        "probe",
    ]


async def test_claim_cancelled_while_queued_claims_nothing(
    store: SqliteStore, nursery: trio.Nursery
) -> None:
    await store.insert_messages([new_message("m0")], NOW)
    gate = await pause_writer(store, nursery)
    with trio.CancelScope() as scope:
        scope.cancel()
        await store.claim_due(NOW, 10, owner=OWNER)
    gate.open()
    await store.insert_messages([new_message("probe")], NOW)
    assert (await store.counts())["queued"] == 0


def test_due_queries_use_the_partial_index(tmp_path: Path) -> None:
    from smsgw.store.sqlite import migrate

    conn = sqlite3.connect(str(tmp_path / "plan.db"), isolation_level=None)
    migrate(conn)
    for sql, params in ((CLAIM_SQL, (NOW, 10)), (NEXT_DUE_SQL, ())):
        plan = " | ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
        assert "messages_due" in plan, plan
        assert "TEMP B-TREE" not in plan, plan  # no sort of the whole backlog
    conn.close()


def test_report_queries_use_indexes(tmp_path: Path) -> None:
    from smsgw.store.sqlite import migrate

    conn = sqlite3.connect(str(tmp_path / "plan.db"), isolation_level=None)
    migrate(conn)
    take = [
        row[3]
        for row in conn.execute(f"EXPLAIN QUERY PLAN {TAKE_PART_REPORT_SQL}", (1, "s", 0, "id"))
    ]
    assert any("message_parts_carrier" in step for step in take), take
    both = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {MESSAGE_WITH_PARTS_SQL}", (1,))]
    steps = [step for step in take + both if not step.startswith("SCALAR SUBQUERY")]
    assert all(step.startswith("SEARCH") for step in steps), (take, both)  # never a SCAN
    assert not any("TEMP B-TREE" in step for step in take + both), (take, both)
    conn.close()


async def test_claim_stays_fast_with_a_large_backlog(store: SqliteStore, db_path: Path) -> None:
    backlog = 200_000
    conn = sqlite3.connect(str(db_path))
    with conn:
        conn.executemany(
            "INSERT INTO messages (appid, msgid, phone, message, msgtype, segments, state,"
            " accepted_at, next_attempt_at) VALUES ('app1', ?, '+1', 'x', 1, 1, ?, ?, ?)",
            (
                (f"b{n}", "scheduled" if n % 2 else "accepted", NOW, NOW + (n * 7919) % backlog)
                for n in range(backlog)
            ),
        )
    conn.close()
    started = time.perf_counter()
    claimed = await store.claim_due(NOW + backlog, 100, owner=OWNER)
    elapsed = time.perf_counter() - started
    print(
        f"\nclaim_due(limit=100, owner=OWNER) with {backlog} waiting rows: {elapsed * 1000:.1f} ms"
    )
    assert len(claimed) == 100
    # next_attempt_at runs over a permutation of NOW .. NOW + backlog - 1: the 100 earliest
    assert [m.next_attempt_at_ms for m in claimed] == [NOW + n for n in range(100)]
    assert await store.next_due_at() == NOW + 100


async def test_overdue_submitted_finds_rows_waiting_too_long_for_a_report(
    store: SqliteStore,
) -> None:
    old = await claim_one(store, "old")
    recent = await claim_one(store, "recent")
    waiting = await claim_one(store, "still-submitting")
    await store.apply([submitting(old.id), submitted(old.id, "o1")])
    await store.apply(
        [
            submitting(recent.id),
            attrs.evolve(submitted(recent.id, "r1", carrier_msgid="c2"), submitted_at_ms=NOW + 50),
        ]
    )
    await store.apply([submitting(waiting.id)])
    assert [m.msgid for m in await store.overdue_submitted(NOW + 10, 10)] == ["old"]
    overdue = await store.overdue_submitted(NOW + 100, 10)
    assert [m.msgid for m in overdue] == ["old", "recent"]
    assert all(m.state is State.SUBMITTED for m in overdue)
    assert len(await store.overdue_submitted(NOW + 100, 1)) == 1


async def test_a_version_1_database_is_migrated(db_path: Path) -> None:
    make_version_1_database(db_path)
    store = SqliteStore(str(db_path))
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        assert await store.overdue_submitted(NOW, 10) == []
        nursery.cancel_scope.cancel()
    indexes = {name for (name,) in rows(db_path, "SELECT name FROM sqlite_master")}
    assert "messages_awaiting_report" in indexes


async def test_a_version_2_database_loses_its_stored_accepted_events(db_path: Path) -> None:
    from smsgw.store.sqlite import MIGRATIONS

    conn = sqlite3.connect(str(db_path))
    conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at INTEGER)")
    for statement in (*MIGRATIONS[0], *MIGRATIONS[1]):
        conn.execute(statement)
    conn.execute("INSERT INTO schema_version VALUES (1, 0), (2, 0)")
    # What a version 2 store wrote for an accepted, then submitted message.
    conn.execute(
        "INSERT INTO messages (id, appid, msgid, phone, message, msgtype, segments, state,"
        " accepted_at) VALUES (1, 'app1', 'old', '8613800000000', 'hi', 1, 1, 'submitted', ?)",
        (NOW,),
    )
    conn.execute(
        "INSERT INTO events (message_id, kind, at, attempt) VALUES"
        " (1, 'accepted', ?, 0), (1, 'submitted', ?, 1)",
        (NOW, NOW + 5),
    )
    conn.commit()
    conn.close()
    store = SqliteStore(str(db_path))
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        (history,) = await store.history("old")
        nursery.cancel_scope.cancel()
    assert [(event.kind, event.at_ms) for event in history.events] == [
        ("accepted", NOW),
        ("submitted", NOW + 5),
    ]
