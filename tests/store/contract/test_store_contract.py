"""What every backend guarantees (smsgw.store.base): compare-and-set, owners and leases,
early reports, fully reported rows, outbox facts and claims."""

from __future__ import annotations

import attrs
import pytest
import trio

from smsgw.lifecycle import (
    Accepted,
    Policy,
    PushKind,
    Receipt,
    decide_in_doubt,
    decide_submit,
    not_sent,
    submitting,
)
from smsgw.store import (
    Applied,
    Event,
    EventKind,
    MessageRecord,
    MessageUpdate,
    OwnerInfo,
    PartReport,
    State,
    Store,
    UnknownMessage,
)
from tests.store.conftest import NOW, new_message
from tests.store.contract.conftest import OpenStore

POLICY = Policy(max_retries=3)
LEASE_MS = 30_000


def owner(name: str, pid: int = 1) -> OwnerInfo:
    return OwnerInfo(name, "contract-host", pid, NOW)


async def claimed(
    store: Store, *msgids: str, by: str = "a", msgtype: int = 1
) -> list[MessageRecord]:
    await store.insert_messages([new_message(m, msgtype=msgtype) for m in msgids], NOW)
    rows = await store.claim_due(NOW, len(msgids), owner=by)
    assert sorted(r.msgid for r in rows) == sorted(msgids)
    assert all(r.state is State.QUEUED and r.owner == by for r in rows)
    return sorted(rows, key=lambda r: r.msgid)


async def sending(store: Store, record: MessageRecord, by: str = "a") -> MessageRecord:
    (result,) = await store.apply([submitting(record, NOW + 1, owner=by)])
    assert result.applied
    (found,) = await store.history(record.msgid)
    return found.message


def accepted(record: MessageRecord, *part_ids: str, by: str = "a") -> MessageUpdate:
    return decide_submit(
        record,
        record.attempts,
        NOW + 1,
        NOW + 2,
        Accepted(part_ids[0], part_ids),
        POLICY,
        retry_delay_ms=0,
        owner=by,
    )


# --------------------------------------------------------------------- compare-and-set


async def test_a_stale_update_changes_nothing(store: Store) -> None:
    (row,) = await claimed(store, "m1")
    sent = await sending(store, row)
    # Decided from the QUEUED view: the row has moved on.
    (stale,) = await store.apply([submitting(row, NOW + 5, owner="a")])
    assert stale == Applied(False, State.SUBMITTING, "app1")
    final = MessageUpdate(
        row.id,
        State.FAILED,
        Event(EventKind.FINAL, NOW + 3, 1, "X"),
        stat="X",
        receipt=Receipt(True, False, "X", 1, NOW),
        pushes=(PushKind.RECEIPT,),
        expected=State.SUBMITTING,
        owner="b",  # not the owner
    )
    (refused,) = await store.apply([final])
    assert not refused.applied
    (history,) = await store.history("m1")
    assert history.message == sent
    assert [e.kind for e in history.events] == ["accepted", "submitting"]
    assert history.pushes == ()


async def test_a_row_never_sent_goes_back_whether_its_submitting_committed_or_not(
    store: Store,
) -> None:
    """A write of SUBMITTING whose outcome is unknown (the connection died during COMMIT):
    the sender, which never handed the message to the carrier, puts it back from QUEUED or
    SUBMITTING alike, its attempts as they were; no other owner may."""
    queued, committed = await claimed(store, "m1", "m2")
    await sending(store, committed)  # the write that "failed" had committed after all
    (refused,) = await store.apply([not_sent(committed, NOW + 2, owner="b")])
    assert not refused.applied
    results = await store.apply(
        [not_sent(queued, NOW + 2, owner="a"), not_sent(committed, NOW + 2, owner="a")]
    )
    assert [r.applied for r in results] == [True, True]
    for msgid in ("m1", "m2"):
        (history,) = await store.history(msgid)
        assert history.message.state is State.ACCEPTED
        assert history.message.attempts == 0
        assert history.message.owner is None
    # Once back, a repeat of the undo (a retried write) changes nothing.
    (again,) = await store.apply([not_sent(committed, NOW + 3, owner="a")])
    assert not again.applied


async def test_a_final_state_is_never_left(store: Store) -> None:
    (row,) = await claimed(store, "m1")
    sent = await sending(store, row)
    done = accepted(sent, "c1")
    first = MessageUpdate(row.id, State.FAILED, Event("final", NOW + 3, 1), stat="A")
    again = attrs.evolve(first, stat="B")  # no expected state: only the table is checked
    results = await store.apply([first, done, again])
    assert [r.applied for r in results] == [True, False, False]
    (history,) = await store.history("m1")
    assert (history.message.state, history.message.stat) == (State.FAILED, "A")


async def test_an_unknown_message_raises_and_writes_nothing(store: Store) -> None:
    (row,) = await claimed(store, "m1")
    with pytest.raises(UnknownMessage):
        await store.apply(
            [
                submitting(row, NOW, owner="a"),
                MessageUpdate(10**9, State.FAILED, Event("final", NOW, 1)),
            ]
        )
    (history,) = await store.history("m1")
    assert history.message.state is State.QUEUED


async def test_two_stores_never_claim_the_same_row(open_backend: OpenStore) -> None:
    first, second = await open_backend(), await open_backend()
    await first.insert_messages([new_message(f"m{n}") for n in range(200)], NOW)
    got: dict[str, list[MessageRecord]] = {"a": [], "b": []}

    async def claim(store: Store, by: str) -> None:
        while rows := await store.claim_due(NOW, 7, owner=by):
            got[by].extend(rows)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(claim, first, "a")
        nursery.start_soon(claim, second, "b")
    ids = [r.id for r in got["a"] + got["b"]]
    assert len(ids) == len(set(ids)) == 200


# --------------------------------------------------------------------- owners and leases


async def test_reclaim_takes_over_what_a_lapsed_owner_held(open_backend: OpenStore) -> None:
    store_a, store_b = await open_backend(), await open_backend()
    await store_a.register_owner(owner("a"), NOW + LEASE_MS)
    await store_b.register_owner(owner("b"), NOW + LEASE_MS)
    _, sent_row, code_row = await claimed(store_a, "q", "s", "t")
    sent = await sending(store_a, sent_row)
    await sending(store_a, code_row)
    await store_a.claim_pushes("app1", "a")

    # Alive: nothing to take.
    early = await store_b.reclaim("b", NOW + LEASE_MS - 1)
    assert (early.owners, early.requeued, early.in_doubt) == ((), 0, ())

    found = await store_b.reclaim("b", NOW + LEASE_MS + 1)
    assert found.owners == ("a",)
    assert found.requeued == 1
    assert [(r.msgid, r.owner) for r in found.in_doubt] == [("s", "b"), ("t", "b")]
    assert not await store_a.renew_owner("a", NOW + 2 * LEASE_MS)  # it is gone
    assert [o.info.id for o in await store_b.owners()] == ["b"]
    assert await store_b.claim_pushes("app1", "b")  # its outbox claim went with it

    # The lost owner's late outcome is refused; the heir's decision holds.
    (late,) = await store_a.apply([accepted(sent, "c1", by="a")])
    assert not late.applied
    heir = [decide_in_doubt(r, NOW + LEASE_MS + 2, POLICY, owner="b") for r in found.in_doubt]
    assert [r.applied for r in await store_b.apply(heir)] == [True, True]
    (requeued,) = await store_b.history("q")
    assert (requeued.message.state, requeued.message.owner) == (State.ACCEPTED, None)
    assert (await store_b.claim_due(NOW + LEASE_MS, 10, owner="b"))[0].msgid == "q"


async def test_owners_named_dead_are_reclaimed_at_once(store: Store) -> None:
    await store.register_owner(owner("a"), NOW + LEASE_MS)
    await store.register_owner(owner("b"), NOW + LEASE_MS)
    (row,) = await claimed(store, "m1")
    await sending(store, row)
    found = await store.reclaim("b", NOW, dead=["a"])
    assert found.owners == ("a",) and [r.msgid for r in found.in_doubt] == ["m1"]
    # Never the claimant itself, whatever it is told.
    await store.claim_due(NOW, 1, owner="b")
    assert (await store.reclaim("b", NOW + 10 * LEASE_MS, dead=["b"])).owners == ()


async def test_rows_of_an_owner_that_never_registered_are_reclaimed(store: Store) -> None:
    await store.register_owner(owner("b"), NOW + LEASE_MS)
    await claimed(store, "m1", by="ghost")
    found = await store.reclaim("b", NOW)
    assert (found.requeued, found.in_doubt) == (1, ())


async def test_renew_and_release(store: Store) -> None:
    await store.register_owner(owner("a"), NOW + LEASE_MS)
    assert await store.renew_owner("a", NOW + 2 * LEASE_MS)
    (record,) = await store.owners()
    assert (record.info, record.lease_until_ms) == (owner("a"), NOW + 2 * LEASE_MS)
    await store.release_owner("a")
    assert await store.owners() == []
    assert not await store.renew_owner("a", NOW)


async def test_an_outbox_is_pushed_by_one_live_owner(open_backend: OpenStore) -> None:
    store_a, store_b = await open_backend(), await open_backend()
    await store_a.register_owner(owner("a"), NOW + LEASE_MS)
    await store_b.register_owner(owner("b"), NOW + LEASE_MS)
    assert await store_a.claim_pushes("app1", "a")
    assert await store_a.claim_pushes("app1", "a")  # kept
    assert not await store_b.claim_pushes("app1", "b")
    assert await store_b.claim_pushes("app2", "b")
    assert not await store_b.claim_pushes("app1", "nobody")  # not a live owner
    await store_a.release_owner("a")
    assert await store_b.claim_pushes("app1", "b")


# --------------------------------------------------------------------- delivery reports


async def test_an_early_report_is_stored_and_matched_with_the_parts(
    open_backend: OpenStore,
) -> None:
    link, sender = await open_backend(), await open_backend()
    (row,) = await claimed(sender, "m1")
    sent = await sending(sender, row)
    # The report comes on another process's link before the submit is recorded.
    assert await link.record_part_reports(
        [PartReport("p2", False, "UNDELIV", NOW + 3), PartReport("p2", True, "DELIVRD", NOW + 4)],
        NOW + 3,
    ) == [None, None]
    (result,) = await sender.apply([accepted(sent, "p1", "p2")])
    (match,) = result.early_reports
    assert (match.part_no, match.part.stat, match.reported, match.parts) == (2, "UNDELIV", 1, 2)
    assert match.message.state is State.SUBMITTED
    # The repeat went with it; the other part's report completes the message.
    assert await link.expire_early_reports(NOW + 10**6, 100) == 0
    (last,) = await link.record_part_reports([PartReport("p1", True, "DELIVRD", NOW + 5)], NOW)
    assert last is not None and last.all_reported and not last.all_delivered
    assert last.failed_stat == "UNDELIV"


async def test_early_reports_of_every_part_match_in_part_order(store: Store) -> None:
    (row,) = await claimed(store, "m1")
    sent = await sending(store, row)
    await store.record_part_reports(
        [PartReport("p2", True, "DELIVRD", NOW), PartReport("p1", True, "DELIVRD", NOW)], NOW
    )
    (result,) = await store.apply([accepted(sent, "p1", "p2")])
    assert [(m.part_no, m.reported, m.all_reported) for m in result.early_reports] == [
        (1, 1, False),
        (2, 2, True),
    ]


async def test_early_reports_expire(store: Store) -> None:
    await store.record_part_reports([PartReport("x", True, "DELIVRD", NOW)], NOW)
    await store.record_part_reports([PartReport("y", True, "DELIVRD", NOW)], NOW + 100)
    assert await store.expire_early_reports(NOW + 1, 10) == 1
    assert await store.expire_early_reports(NOW + 1, 10) == 0
    assert await store.expire_early_reports(NOW + 101, 10) == 1


async def test_fully_reported_finds_a_lost_decision(store: Store) -> None:
    (row,) = await claimed(store, "m1")
    sent = await sending(store, row)
    await store.apply([accepted(sent, "p1")])
    await store.record_part_reports([PartReport("p1", True, "DELIVRD", NOW + 9)], NOW + 9)
    assert await store.fully_reported(NOW + 9, 10) == []
    (match,) = await store.fully_reported(NOW + 10, 10)
    assert match.all_delivered and match.message.state is State.SUBMITTED


# --------------------------------------------------------------------- outbox facts


async def test_the_outbox_keeps_receipt_facts(store: Store) -> None:
    (row,) = await claimed(store, "m1")
    sent = await sending(store, row)
    update = accepted(sent, "c1")
    assert update.receipt is not None
    (result,) = await store.apply([attrs.evolve(update, pushes=(PushKind.STATUS_REPORT,))])
    assert result.applied
    (push,) = await store.due_pushes("app1", NOW + 2, 10)
    assert (push.kind, push.msgid, push.phone, push.receipt) == (
        "A003",
        "m1",
        "+8613800000000",
        update.receipt,
    )


async def test_a_report_racing_its_parts_is_matched_exactly_once(
    open_backend: OpenStore,
) -> None:
    """Reports recorded on one store while another records the parts they are for: each
    report is matched once, in whichever transaction comes second (never lost between the
    two, never matched twice)."""
    link, sender = await open_backend(), await open_backend()
    count = 60
    rows = await claimed(sender, *(f"m{n:02d}" for n in range(count)))
    sent = [await sending(sender, row) for row in rows]
    matched_live: list[str] = []
    matched_early: list[str] = []

    async def report_all() -> None:
        for n in range(count):
            (match,) = await link.record_part_reports(
                [PartReport(f"c{n:02d}", True, "DELIVRD", NOW + 9)], NOW + 9
            )
            if match is not None:
                assert not match.duplicate
                matched_live.append(match.part.carrier_msgid)

    async def record_parts() -> None:
        for n, record in enumerate(sent):
            (result,) = await sender.apply([accepted(record, f"c{n:02d}")])
            assert result.applied
            matched_early.extend(m.part.carrier_msgid for m in result.early_reports)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(report_all)
        nursery.start_soon(record_parts)
    assert sorted(matched_live + matched_early) == [f"c{n:02d}" for n in range(count)]
    assert await link.expire_early_reports(NOW + 10**9, 1000) == 0  # none left behind
