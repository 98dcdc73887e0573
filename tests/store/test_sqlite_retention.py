"""Retention in the SQLite store: delete_finished and delete_inbound."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from smsgw.carriers.base import MobileOriginated
from smsgw.lifecycle import Receipt
from smsgw.store import (
    Event,
    EventKind,
    MessageUpdate,
    PushKind,
    SqliteStore,
    State,
    Store,
)
from smsgw.store.sqlite import DELETE_FINISHED_SELECT, migrate
from tests.store.conftest import NOW, OWNER, new_message, rows

DAY = 86_400_000


async def finished(
    store: Store, msgid: str, at_ms: int, *, push: bool = True, state: State = State.DELIVERED
) -> int:
    """A message made final at `at_ms` (with a part, and an A002 in the outbox)."""
    assert await store.insert_messages([new_message(msgid)], NOW) == [True]
    (claimed,) = await store.claim_due(2**62, 1, owner=OWNER)
    await store.apply(
        [
            MessageUpdate(claimed.id, State.SUBMITTING, Event(EventKind.SUBMITTING, at_ms - 2, 1)),
            MessageUpdate(
                claimed.id,
                State.SUBMITTED,
                Event(EventKind.SUBMITTED, at_ms - 1, 1, carrier_msgid=f"c-{msgid}"),
                attempts=1,
                carrier_msgid=f"c-{msgid}",
                submitted_at_ms=at_ms - 1,
            ),
            MessageUpdate(
                claimed.id,
                state,
                Event(EventKind.DELIVERY_REPORT, at_ms, 1, stat="DELIVRD"),
                stat="DELIVRD",
                receipt=Receipt(True, state is State.DELIVERED, "DELIVRD", 1, at_ms - 1),
                pushes=(PushKind.RECEIPT,) if push else (),
            ),
        ]
    )
    return claimed.id


def table_counts(db_path: Path) -> dict[str, int]:
    return {
        table: len(rows(db_path, f"SELECT 1 FROM {table}"))
        for table in ("messages", "events", "message_parts", "pushes")
    }


async def done_pushes(store: Store, appid: str = "app1") -> None:
    due = await store.due_pushes(appid, 2**62, 1000)
    await store.record_push_result([p.id for p in due], True, None, NOW, 3, NOW)


async def test_old_finished_messages_go_with_their_history(
    store: SqliteStore, db_path: Path
) -> None:
    await finished(store, "old", NOW)
    await finished(store, "new", NOW + 2 * DAY)
    await finished(store, "old-failed", NOW + 1, state=State.FAILED)
    await done_pushes(store)
    assert await store.insert_messages([new_message("waiting")], NOW) == [True]
    before = table_counts(db_path)

    assert await store.delete_finished(NOW + DAY, 100) == 2
    remaining = sorted(str(r[0]) for r in rows(db_path, "SELECT msgid FROM messages"))
    assert remaining == ["new", "waiting"]  # never a message that is not final
    after = table_counts(db_path)
    assert after["events"] == before["events"] - 6  # submitting, submitted, final each
    assert after["message_parts"] == before["message_parts"] - 2
    assert after["pushes"] == before["pushes"] - 2
    assert await store.history("old") == []
    assert await store.delete_finished(NOW + DAY, 100) == 0


async def test_a_message_whose_push_is_pending_is_kept(store: SqliteStore) -> None:
    await finished(store, "pushing", NOW)
    assert await store.delete_finished(NOW + DAY, 100) == 0
    await done_pushes(store)
    assert await store.delete_finished(NOW + DAY, 100) == 1


async def test_deletes_take_the_oldest_first_up_to_the_limit(
    store: SqliteStore, db_path: Path
) -> None:
    for n in range(5):
        await finished(store, f"m{n}", NOW + (5 - n) * 1000, push=False)
    assert await store.delete_finished(NOW + DAY, 2) == 2
    assert sorted(str(r[0]) for r in rows(db_path, "SELECT msgid FROM messages")) == [
        "m0",
        "m1",
        "m2",
    ]
    assert await store.delete_finished(NOW + DAY, 0) == 0


async def test_old_inbound_messages_go(store: SqliteStore) -> None:
    await store.insert_inbound(
        [
            MobileOriginated("86138", "1069", f"reply {n}", 0, 0, b"", NOW + n * DAY)
            for n in range(4)
        ]
    )
    assert await store.delete_inbound(NOW + 2 * DAY, 1) == 1
    assert await store.delete_inbound(NOW + 2 * DAY, 10) == 1
    left = await store.recent_inbound(10)
    assert [record.mo.text for record in left] == ["reply 3", "reply 2"]


def test_the_retention_query_reads_the_index(tmp_path: Path) -> None:
    conn = sqlite3.connect(str(tmp_path / "plan.db"), isolation_level=None)
    migrate(conn)
    plan = " | ".join(
        row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {DELETE_FINISHED_SELECT}", (NOW, 10))
    )
    assert "messages_finished" in plan, plan
    assert "TEMP B-TREE" not in plan, plan
    conn.close()
