"""The push outbox of the SQLite store: due lookups, attempts, done, abandoned."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import trio

from smsgw.lifecycle import Receipt
from smsgw.pusher import encode_item
from smsgw.store import (
    Event,
    EventKind,
    MessageUpdate,
    PushKind,
    PushRecord,
    PushState,
    SqliteStore,
    State,
    Store,
)
from smsgw.store.sqlite import migrate
from tests.store.conftest import NOW, OWNER, new_message

RETRY = 60_000


async def final_with_pushes(
    store: Store, msgid: str, appid: str = "app1", at_ms: int = NOW, kinds: str = "A002"
) -> list[PushRecord]:
    """Store a message, claim it, fail it finally with one push per kind; return the pushes."""
    assert await store.insert_messages([new_message(msgid, appid=appid)], NOW) == [True]
    (row,) = [m for m in await store.claim_due(NOW, 100, owner=OWNER) if m.msgid == msgid]
    receipt = Receipt(True, False, "NO_RETRY", 1, at_ms - 1, error=msgid)
    await store.apply(
        [
            MessageUpdate(row.id, State.SUBMITTING, Event(EventKind.SUBMITTING, at_ms - 1, 1)),
            MessageUpdate(
                row.id,
                State.FAILED,
                Event(EventKind.FINAL, at_ms, 1, "NO_RETRY"),
                stat="NO_RETRY",
                receipt=receipt,
                pushes=tuple(PushKind(kind) for kind in kinds.split(",")),
            ),
        ]
    )
    (history,) = await store.history(msgid, appid)
    return list(history.pushes)


async def test_pushes_become_due_in_order(store: SqliteStore) -> None:
    pushes = await final_with_pushes(store, "m1", kinds="A003,A002")
    assert [p.kind for p in pushes] == ["A003", "A002"]
    assert await store.apps_with_due_pushes(NOW) == ["app1"]
    assert await store.apps_with_due_pushes(NOW - 1) == []
    assert await store.next_push_due_at("app1") == NOW
    assert await store.next_push_due_at("other") is None
    due = await store.due_pushes("app1", NOW, 10)
    assert due == pushes
    assert (due[0].msgid, due[0].phone) == ("m1", "+8613800000000")
    assert due[0].receipt == Receipt(True, False, "NO_RETRY", 1, NOW - 1, error="m1")
    assert await store.due_pushes("app1", NOW, 1) == pushes[:1]
    assert await store.due_pushes("app1", NOW - 1, 10) == []
    with pytest.raises(ValueError):
        await store.due_pushes("app1", NOW, -1)


async def test_failed_push_is_retried_then_abandoned(store: SqliteStore) -> None:
    pushes = await final_with_pushes(store, "m1", kinds="A002,A003")
    ids = [p.id for p in pushes]
    now = NOW
    for attempt in (1, 2):
        await store.record_push_result(ids, False, f"refused {attempt}", now, 3, now + RETRY)
        due = await store.due_pushes("app1", now + RETRY - 1, 10)
        assert due == []
        assert await store.apps_with_due_pushes(now + RETRY - 1) == []
        assert await store.next_push_due_at("app1") == now + RETRY
        now += RETRY
        due = await store.due_pushes("app1", now, 10)
        assert [p.id for p in due] == ids
        assert all(p.attempts == attempt and p.state is PushState.PENDING for p in due)
        assert all(p.last_error == f"refused {attempt}" for p in due)
        assert all(p.updated_at_ms == now - RETRY for p in due)

    await store.record_push_result(ids, False, None, now, 3, now + RETRY)
    assert await store.due_pushes("app1", now + 10 * RETRY, 10) == []
    assert await store.next_push_due_at("app1") is None
    (history,) = await store.history("m1")
    assert all(p.state is PushState.ABANDONED and p.attempts == 3 for p in history.pushes)
    assert all(p.last_error == "refused 2" for p in history.pushes)  # None keeps the last one
    assert await store.push_counts() == {"pending": 0, "done": 0, "abandoned": 2}


async def test_successful_push_is_done_and_late_results_are_ignored(store: SqliteStore) -> None:
    (push,) = await final_with_pushes(store, "m1")
    await store.record_push_result([push.id], True, None, NOW + 5, 3, NOW + RETRY)
    assert await store.due_pushes("app1", NOW + 10 * RETRY, 10) == []
    await store.record_push_result([push.id], False, "late", NOW + 6, 3, NOW + RETRY)
    (history,) = await store.history("m1")
    (done,) = history.pushes
    assert (done.state, done.attempts, done.updated_at_ms, done.last_error) == (
        PushState.DONE,
        1,
        NOW + 5,
        None,
    )
    assert await store.push_counts() == {"pending": 0, "done": 1, "abandoned": 0}


async def test_one_attempt_allowed_abandons_at_once(store: SqliteStore) -> None:
    (push,) = await final_with_pushes(store, "m1")
    await store.record_push_result([push.id], False, "timeout", NOW, 1, NOW + RETRY)
    (history,) = await store.history("m1")
    assert history.pushes[0].state is PushState.ABANDONED
    with pytest.raises(ValueError, match="max_attempts"):
        await store.record_push_result([push.id], False, "x", NOW, 0, NOW)
    await store.record_push_result([], True, None, NOW, 3, NOW)  # nothing to do


async def test_apps_with_due_pushes_skips_apps_not_due(store: SqliteStore) -> None:
    for appid in ("c", "a", "b", "d"):
        await final_with_pushes(store, f"m-{appid}", appid=appid)
    (b_push,) = (await store.history("m-b", "b"))[0].pushes
    await store.record_push_result([b_push.id], False, "down", NOW, 3, NOW + RETRY)
    (d_push,) = (await store.history("m-d", "d"))[0].pushes
    await store.record_push_result([d_push.id], True, None, NOW, 3, NOW + RETRY)
    assert await store.apps_with_due_pushes(NOW) == ["a", "c"]
    assert await store.apps_with_due_pushes(NOW + RETRY) == ["a", "b", "c"]
    assert await store.next_push_due_at("b") == NOW + RETRY
    assert await store.next_push_due_at("d") is None


async def test_due_pushes_oldest_first_across_messages(store: SqliteStore) -> None:
    late = await final_with_pushes(store, "late", at_ms=NOW + 20)
    early = await final_with_pushes(store, "early", at_ms=NOW + 10)
    due = await store.due_pushes("app1", NOW + 100, 10)
    assert [p.id for p in due] == [early[0].id, late[0].id]


async def test_reclaim_keeps_pushes_pending(store: SqliteStore) -> None:
    await final_with_pushes(store, "m1", kinds="A002,A003")
    await store.reclaim("someone", NOW)
    assert len(await store.due_pushes("app1", NOW, 10)) == 2


async def test_pushes_of_a_version_5_database_keep_their_json_as_facts(
    db_path: Path, nursery: trio.Nursery
) -> None:
    """Migration 6: the outbox's JSON bodies become receipt facts the pusher encodes the same."""
    conn = sqlite3.connect(str(db_path))
    migrate(conn, up_to=5)
    conn.execute(
        "INSERT INTO messages (id, appid, msgid, phone, message, msgtype, segments, state,"
        " attempts, accepted_at) VALUES (1, 'app1', 'm1', '86138', 'x', 1, 1, 'delivered', 2, 0)"
    )
    a002 = {"msgid": "m1", "phone": "86138", "status": "1", "sendtime": 5, "stat": "DELIVRD"}
    a003 = {**a002, "status": "2", "attempt": 1, "carrier_msgid": "c1", "error": "boom"}
    for kind, body in (("A002", a002), ("A003", a003)):
        conn.execute(
            "INSERT INTO pushes (appid, message_id, kind, body, state, attempts,"
            " next_attempt_at, created_at, updated_at) VALUES ('app1', 1, ?, ?, 'pending', 0,"
            " 0, 0, 0)",
            (kind, json.dumps(body)),
        )
    conn.commit()
    conn.close()
    store = SqliteStore(str(db_path))
    await nursery.start(store.run)
    receipt, report = await store.due_pushes("app1", 10, 10)
    assert json.loads(encode_item(receipt)) == a002
    assert json.loads(encode_item(report)) == a003
    assert report.receipt == Receipt(False, False, "DELIVRD", 1, 5, "c1", "boom")
    assert receipt.receipt.attempt == 2  # A002 bodies had none: the message's attempts
