"""The column lists of `messages` and `pushes` and the records built from their rows, for
both stores: the two schemas hold the same columns in the same order (see inbound.py for
the `inbound` table's)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from smsgw.lifecycle import Receipt
from smsgw.store.base import (
    MessageRecord,
    PartMatch,
    PartRecord,
    PushRecord,
    PushState,
    State,
    UnknownMessage,
)

# The columns of a `MessageRecord`, in the order `message_record` reads them.
MESSAGE_COLUMNS: Final = (
    "id, appid, msgid, phone, message, msgtype, segments, state, attempts, accepted_at,"
    " next_attempt_at, submitted_at, final_at, carrier_msgid, stat, error, owner"
)
MESSAGE_COLUMN_NAMES: Final = tuple(MESSAGE_COLUMNS.split(", "))
# The same of `messages m` (in a join with `message_parts p`), then the part's columns.
MESSAGE_WITH_PART_COLUMNS: Final = (
    ", ".join(f"m.{name}" for name in MESSAGE_COLUMN_NAMES)
    + ", p.part_no, p.carrier_msgid, p.reported, p.delivered, p.stat, p.reported_at"
)
# An outbox item with its message's msgid and phone (`pushes p JOIN messages m`).
PUSH_COLUMNS: Final = (
    "p.id, p.appid, p.message_id, p.kind, m.msgid, m.phone, p.final, p.success, p.stat,"
    " p.attempt, p.sendtime, p.carrier_msgid, p.error, p.state, p.attempts,"
    " p.next_attempt_at, p.last_error, p.updated_at"
)


def message_record(row: Sequence[Any]) -> MessageRecord:
    """A row of `SELECT <MESSAGE_COLUMNS>` (or one that starts with them)."""
    return MessageRecord(
        id=row[0],
        appid=row[1],
        msgid=row[2],
        phone=row[3],
        message=row[4],
        msgtype=row[5],
        segments=row[6],
        state=State(row[7]),
        attempts=row[8],
        accepted_at_ms=row[9],
        next_attempt_at_ms=row[10],
        submitted_at_ms=row[11],
        final_at_ms=row[12],
        carrier_msgid=row[13],
        stat=row[14],
        error=row[15],
        owner=row[16],
    )


def push_record(row: Sequence[Any]) -> PushRecord:
    """A row of `SELECT <PUSH_COLUMNS>`; `final` and `success` as SQLite's 0/1 or as
    PostgreSQL's booleans."""
    return PushRecord(
        id=row[0],
        appid=row[1],
        message_id=row[2],
        kind=row[3],
        msgid=row[4],
        phone=row[5],
        receipt=Receipt(
            final=bool(row[6]),
            success=bool(row[7]),
            stat=row[8],
            attempt=row[9],
            sendtime_ms=row[10],
            carrier_msgid=row[11],
            error=row[12],
        ),
        state=PushState(row[13]),
        attempts=row[14],
        next_attempt_at_ms=row[15],
        last_error=row[16],
        updated_at_ms=row[17],
    )


def part_match_record(
    rows: Sequence[Sequence[Any]],
    part_no: int,
    *,
    duplicate: bool,
    unreported: frozenset[int] = frozenset(),
) -> PartMatch:
    """The match of one part from its message's rows of `<MESSAGE_WITH_PART_COLUMNS>` (one
    per part, by number); the parts in `unreported` are shown as they were before this call
    (reported later in it)."""
    reported = delivered = 0
    failed_stat: str | None = None  # of the first part (by number) reported not delivered
    failed = False
    part: PartRecord | None = None
    for row in rows:
        number, carrier_msgid, was_reported, was_delivered, stat, reported_at = row[
            len(MESSAGE_COLUMN_NAMES) :
        ]
        if number in unreported:
            was_reported, was_delivered, stat, reported_at = False, False, None, None
        if was_reported:
            reported += 1
            if was_delivered:
                delivered += 1
            elif not failed:
                failed, failed_stat = True, stat
        if number == part_no:
            part = PartRecord(
                number, carrier_msgid, bool(was_reported), bool(was_delivered), stat, reported_at
            )
    if part is None:
        raise UnknownMessage(int(rows[0][0]))  # the caller found the part: cannot happen
    return PartMatch(
        message=message_record(rows[0]),
        part_no=part_no,
        part=part,
        parts=len(rows),
        reported=reported,
        delivered=delivered,
        failed_stat=failed_stat,
        duplicate=duplicate,
    )
