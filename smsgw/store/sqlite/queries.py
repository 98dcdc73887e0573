"""The SQLite store's statements and the ops that run them in the writer or a reader thread."""

from __future__ import annotations

import json
import sqlite3
from typing import Final

import attrs

from smsgw.lifecycle import OWNED_STATES, PREDECESSORS
from smsgw.store.base import (
    FINAL_STATES,
    WAITING_STATES,
    Applied,
    MessageHistory,
    MessageRecord,
    MessageUpdate,
    NewMessage,
    OwnerInfo,
    OwnerRecord,
    PartMatch,
    PartReport,
    Reclaimed,
    State,
    UnknownMessage,
)
from smsgw.store.history import history_sql, read_history
from smsgw.store.rows import (
    MESSAGE_COLUMNS,
    MESSAGE_WITH_PART_COLUMNS,
    PUSH_COLUMNS,
    message_record,
    part_match_record,
)
from smsgw.store.sqlite.writer import OpFn

# The partial indexes are usable only by queries that repeat their WHERE verbatim, and the
# planner would rather pick the plain state index and sort: INDEXED BY pins them (and
# fails loudly if a query stops matching).
_WAITING: Final = "state IN ('accepted', 'scheduled')"
_WAITING_ROWS: Final = "messages INDEXED BY messages_due"
_PENDING_PUSH: Final = "state = 'pending'"
_PENDING_PUSHES: Final = "pushes INDEXED BY pushes_due"
# The dispatcher's hot queries (public for the query-plan test).
CLAIM_SQL: Final = (
    f"SELECT {MESSAGE_COLUMNS} FROM {_WAITING_ROWS} WHERE {_WAITING}"
    " AND next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT ?"
)
NEXT_DUE_SQL: Final = (
    f"SELECT next_attempt_at FROM {_WAITING_ROWS} WHERE {_WAITING} ORDER BY next_attempt_at LIMIT 1"
)

_INSERT_MESSAGE: Final = (
    "INSERT INTO messages (appid, msgid, phone, message, msgtype, segments, state, attempts,"
    " accepted_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?)"
    " ON CONFLICT (msgid, appid, phone) DO NOTHING"
)
_INSERT_EVENT: Final = (
    "INSERT INTO events (message_id, kind, at, attempt, stat, error, carrier_msgid)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def _update_sql(target: State) -> str:
    """The compare-and-set update into `target`: only from a state the lifecycle allows
    (`PREDECESSORS`), the expected state and owner when the update names them."""
    sources = ", ".join(f"'{state.value}'" for state in sorted(PREDECESSORS[target]))
    return (
        "UPDATE messages SET state = ?, attempts = COALESCE(?, attempts), next_attempt_at = ?,"
        " carrier_msgid = COALESCE(?, carrier_msgid), submitted_at = COALESCE(?, submitted_at),"
        " final_at = ?, stat = COALESCE(?, stat),"
        " error = CASE WHEN ? THEN NULL ELSE COALESCE(?, error) END,"
        " owner = CASE WHEN ? THEN owner ELSE NULL END"
        f" WHERE id = ? AND state IN ({sources}) AND (? IS NULL OR state = ?)"
        " AND (? IS NULL OR owner = ?) RETURNING appid"
    )


# Public for the tests: one statement per target state.
UPDATE_SQL: Final = {target: _update_sql(target) for target in State}
# SUBMITTED rows (messages_state index) with parts, none unreported, the last report
# before a time; each with its part reported last (latest report time, then highest number).
_FULLY_REPORTED_SQL: Final = (
    "SELECT m.id, (SELECT p.part_no FROM message_parts p WHERE p.message_id = m.id"
    " ORDER BY p.reported_at DESC, p.part_no DESC LIMIT 1)"
    " FROM messages m WHERE m.state = 'submitted'"
    " AND EXISTS (SELECT 1 FROM message_parts p WHERE p.message_id = m.id)"
    " AND NOT EXISTS (SELECT 1 FROM message_parts p WHERE p.message_id = m.id AND NOT p.reported)"
    " AND (SELECT MAX(p.reported_at) FROM message_parts p WHERE p.message_id = m.id) < ?"
    " ORDER BY m.id LIMIT ?"
)
# Rows claimed by an owner that no longer exists (or by none), other than the claimant.
_ORPHANED: Final = "(owner IS NULL OR owner NOT IN (SELECT id FROM owners)) AND owner IS NOT ?"
# The report path's queries (public for the query-plan test). The first marks the part a
# report is for, when one waits for it: of the parts with the id, the newest message's
# (operators may recycle ids; `_find_part` has the same preference).
TAKE_PART_REPORT_SQL: Final = (
    "UPDATE message_parts SET reported = 1, delivered = ?, stat = ?, reported_at = ?"
    " WHERE (message_id, part_no) = (SELECT message_id, part_no FROM message_parts"
    " WHERE carrier_msgid = ? AND NOT reported ORDER BY message_id DESC LIMIT 1)"
    " RETURNING message_id, part_no"
)
MESSAGE_WITH_PARTS_SQL: Final = (
    f"SELECT {MESSAGE_WITH_PART_COLUMNS}"
    " FROM messages m JOIN message_parts p ON p.message_id = m.id"
    " WHERE m.id = ? ORDER BY p.part_no"
)
# Public for the query-plan test: it must walk messages_finished, not the table.
DELETE_FINISHED_SELECT: Final = (
    "SELECT m.id FROM messages m INDEXED BY messages_finished"
    " WHERE m.final_at IS NOT NULL AND m.final_at < ?"
    " AND NOT EXISTS (SELECT 1 FROM pushes p WHERE p.message_id = m.id AND p.state = 'pending')"
    " ORDER BY m.final_at LIMIT ?"
)
_DELETE_FINISHED_SQL: Final = f"DELETE FROM messages WHERE id IN ({DELETE_FINISHED_SELECT})"
_DELETE_INBOUND_SQL: Final = (
    "DELETE FROM inbound WHERE id IN (SELECT id FROM inbound INDEXED BY inbound_received"
    " WHERE received_at < ? ORDER BY received_at LIMIT ?)"
)
_INSERT_PUSH: Final = (
    "INSERT INTO pushes (appid, message_id, kind, final, success, stat, attempt, sendtime,"
    " carrier_msgid, error, state, attempts, next_attempt_at, created_at, updated_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?)"
)
_EXPIRE_EARLY_REPORTS_SQL: Final = (
    "DELETE FROM early_reports WHERE id IN (SELECT id FROM early_reports"
    " INDEXED BY early_reports_received WHERE received_at < ? ORDER BY received_at LIMIT ?)"
)
# Public for the query-plan test: the pusher's read walks the partial index.
DUE_PUSHES_SQL: Final = (
    f"SELECT {PUSH_COLUMNS} FROM pushes AS p INDEXED BY pushes_due"
    " JOIN messages m ON m.id = p.message_id"
    " WHERE p.state = 'pending' AND p.appid = ? AND p.next_attempt_at <= ?"
    " ORDER BY p.next_attempt_at, p.id LIMIT ?"
)
_INSERT_EARLY_REPORT: Final = (
    "INSERT INTO early_reports (carrier_msgid, delivered, stat, at, received_at)"
    " VALUES (?, ?, ?, ?, ?)"
)


def _check_limit(limit: int) -> None:
    if limit < 0:
        raise ValueError(f"limit must not be negative, got {limit}")


def _insert_op(messages: tuple[NewMessage, ...], now_ms: int) -> OpFn[list[bool]]:
    def op(conn: sqlite3.Connection) -> list[bool]:
        stored: list[bool] = []
        execute = conn.execute
        for m in messages:
            scheduled = m.send_at_ms is not None and m.send_at_ms > now_ms
            cursor = execute(
                _INSERT_MESSAGE,
                (
                    m.appid,
                    m.msgid,
                    m.phone,
                    m.message,
                    m.msgtype,
                    m.segments,
                    State.SCHEDULED.value if scheduled else State.ACCEPTED.value,
                    now_ms,
                    m.send_at_ms if scheduled else now_ms,
                ),
            )
            # rowcount 0: (appid, msgid, phone) exists, an idempotent re-submit.
            stored.append(cursor.rowcount == 1)
        return stored

    return op


def _reclaim_op(claimant: str, now_ms: int, dead: tuple[str, ...]) -> OpFn[Reclaimed]:
    def op(conn: sqlite3.Connection) -> Reclaimed:
        lost = [
            str(row[0])
            for row in conn.execute(
                "SELECT id FROM owners WHERE id != ?"
                " AND (lease_until < ? OR id IN (SELECT value FROM json_each(?)))",
                (claimant, now_ms, json.dumps(dead)),
            )
        ]
        conn.executemany("DELETE FROM owners WHERE id = ?", [(owner,) for owner in lost])
        conn.execute("DELETE FROM push_claims WHERE owner NOT IN (SELECT id FROM owners)")
        # QUEUED rows never left their owner's process: waiting again, due when they were.
        requeued = conn.execute(
            f"UPDATE messages SET state = 'accepted', owner = NULL"
            f" WHERE state = 'queued' AND {_ORPHANED}",
            (claimant,),
        ).rowcount
        in_doubt = conn.execute(
            f"UPDATE messages SET owner = ? WHERE state = 'submitting' AND {_ORPHANED}"
            f" RETURNING {MESSAGE_COLUMNS}",
            (claimant, claimant),
        ).fetchall()
        return Reclaimed(
            owners=tuple(lost),
            requeued=requeued,
            in_doubt=tuple(sorted((message_record(row) for row in in_doubt), key=lambda m: m.id)),
        )

    return op


def _register_owner_op(owner: OwnerInfo, lease_until_ms: int) -> OpFn[None]:
    def op(conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO owners (id, host, pid, started_at, lease_until) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET lease_until = excluded.lease_until",
            (owner.id, owner.host, owner.pid, owner.started_at_ms, lease_until_ms),
        )

    return op


def _renew_owner_op(owner_id: str, lease_until_ms: int) -> OpFn[bool]:
    def op(conn: sqlite3.Connection) -> bool:
        return (
            conn.execute(
                "UPDATE owners SET lease_until = MAX(lease_until, ?) WHERE id = ?",
                (lease_until_ms, owner_id),
            ).rowcount
            == 1
        )

    return op


def _release_owner_op(owner_id: str) -> OpFn[None]:
    def op(conn: sqlite3.Connection) -> None:
        conn.execute("DELETE FROM owners WHERE id = ?", (owner_id,))
        conn.execute("DELETE FROM push_claims WHERE owner = ?", (owner_id,))

    return op


def _owners(conn: sqlite3.Connection) -> list[OwnerRecord]:
    return [
        OwnerRecord(OwnerInfo(owner_id, host, pid, started_at), lease_until)
        for owner_id, host, pid, started_at, lease_until in conn.execute(
            "SELECT id, host, pid, started_at, lease_until FROM owners ORDER BY started_at, id"
        )
    ]


def _claim_pushes_op(appid: str, owner: str) -> OpFn[bool]:
    def op(conn: sqlite3.Connection) -> bool:
        if conn.execute("SELECT 1 FROM owners WHERE id = ?", (owner,)).fetchone() is None:
            return False  # not a live owner (reclaimed, or never registered)
        holder = conn.execute("SELECT owner FROM push_claims WHERE appid = ?", (appid,)).fetchone()
        if holder is not None and holder[0] != owner:
            alive = conn.execute("SELECT 1 FROM owners WHERE id = ?", (holder[0],)).fetchone()
            if alive is not None:
                return False
        conn.execute(
            "INSERT INTO push_claims (appid, owner) VALUES (?, ?)"
            " ON CONFLICT (appid) DO UPDATE SET owner = excluded.owner",
            (appid, owner),
        )
        return True

    return op


def _fully_reported(reported_before_ms: int, limit: int) -> OpFn[list[PartMatch]]:
    def read(conn: sqlite3.Connection) -> list[PartMatch]:
        found = conn.execute(_FULLY_REPORTED_SQL, (reported_before_ms, limit)).fetchall()
        return [
            _part_match(conn, message_id, part_no, duplicate=False) for message_id, part_no in found
        ]

    return read


def _claim_op(now_ms: int, limit: int, owner: str) -> OpFn[list[MessageRecord]]:
    def op(conn: sqlite3.Connection) -> list[MessageRecord]:
        rows = conn.execute(CLAIM_SQL, (now_ms, limit)).fetchall()
        conn.executemany(
            "UPDATE messages SET state = 'queued', owner = ? WHERE id = ?",
            [(owner, row[0]) for row in rows],
        )
        return [attrs.evolve(message_record(row), state=State.QUEUED, owner=owner) for row in rows]

    return op


def _unclaim_op(claimed: list[MessageRecord]) -> OpFn[object]:
    ids = [(record.id, record.owner) for record in claimed]

    def op(conn: sqlite3.Connection) -> object:
        conn.executemany(
            "UPDATE messages SET state = 'accepted', owner = NULL"
            " WHERE id = ? AND state = 'queued' AND owner IS ?",
            ids,
        )
        return None

    return op


def _next_due_at(conn: sqlite3.Connection) -> int | None:
    row = conn.execute(NEXT_DUE_SQL).fetchone()
    return None if row is None else int(row[0])


def _apply_op(updates: tuple[MessageUpdate, ...]) -> OpFn[list[Applied]]:
    def op(conn: sqlite3.Connection) -> list[Applied]:
        return [_apply_one(conn, update) for update in updates]

    return op


def _apply_one(conn: sqlite3.Connection, u: MessageUpdate) -> Applied:
    state = State(u.state)
    at_ms = u.event.at_ms
    if state in WAITING_STATES:
        next_attempt_at: int | None = (
            u.next_attempt_at_ms if u.next_attempt_at_ms is not None else at_ms
        )
    else:
        next_attempt_at = None
    expected = None if u.expected is None else State(u.expected).value
    rows = conn.execute(
        UPDATE_SQL[state],
        (
            state.value,
            u.attempts,
            next_attempt_at,
            u.carrier_msgid,
            u.submitted_at_ms,
            at_ms if state in FINAL_STATES else None,
            u.stat,
            int(u.clear_error),
            u.error,
            int(state in OWNED_STATES),
            u.message_id,
            expected,
            expected,
            u.owner,
            u.owner,
        ),
    ).fetchall()
    if not rows:
        current = conn.execute(
            "SELECT state, appid FROM messages WHERE id = ?", (u.message_id,)
        ).fetchone()
        if current is None:
            raise UnknownMessage(u.message_id)
        return Applied(False, State(current[0]), current[1])  # stale: nothing written
    appid: str = rows[0][0]
    e = u.event
    conn.execute(
        _INSERT_EVENT,
        (u.message_id, e.kind, e.at_ms, e.attempt, e.stat, e.error, e.carrier_msgid),
    )
    if u.pushes:
        r = u.receipt
        assert r is not None  # Transition checks it
        conn.executemany(
            _INSERT_PUSH,
            [
                (
                    appid,
                    u.message_id,
                    str(kind),
                    int(r.final),
                    int(r.success),
                    r.stat,
                    r.attempt,
                    r.sendtime_ms,
                    r.carrier_msgid,
                    r.error,
                    at_ms,
                    at_ms,
                    at_ms,
                )
                for kind in u.pushes
            ],
        )
    part_ids = u.part_ids or ((u.carrier_msgid,) if u.carrier_msgid is not None else ())
    if not part_ids:
        return Applied(True, state, appid)
    # A new attempt's ids replace the previous attempt's: reports match the latest send.
    conn.execute("DELETE FROM message_parts WHERE message_id = ?", (u.message_id,))
    conn.executemany(
        "INSERT INTO message_parts (message_id, part_no, carrier_msgid) VALUES (?, ?, ?)",
        [(u.message_id, number, part_id) for number, part_id in enumerate(part_ids, 1)],
    )
    if state is not State.SUBMITTED:
        return Applied(True, state, appid)
    return Applied(True, state, appid, _match_early_reports(conn, u.message_id, part_ids))


def _match_early_reports(
    conn: sqlite3.Connection, message_id: int, part_ids: tuple[str, ...]
) -> tuple[PartMatch, ...]:
    """Reports stored before these parts were recorded (they may have come on another
    process's link): each part takes its first, the repeats go. Each match is as its part
    stands once recorded, in part order (the last one completes the message)."""
    matches: list[PartMatch] = []
    for part_no, part_id in enumerate(part_ids, 1):
        early = conn.execute(
            "SELECT delivered, stat, at FROM early_reports WHERE carrier_msgid = ?"
            " ORDER BY id LIMIT 1",
            (part_id,),
        ).fetchone()
        if early is None:
            continue
        conn.execute("DELETE FROM early_reports WHERE carrier_msgid = ?", (part_id,))
        conn.execute(
            "UPDATE message_parts SET reported = 1, delivered = ?, stat = ?, reported_at = ?"
            " WHERE message_id = ? AND part_no = ?",
            (*early, message_id, part_no),
        )
        matches.append(_part_match(conn, message_id, part_no, duplicate=False))
    return tuple(matches)


def _find_part(conn: sqlite3.Connection, carrier_msgid: str) -> tuple[int, int, bool] | None:
    # Operators may recycle ids over time: prefer a part still waiting for its report,
    # then the newest message.
    row = conn.execute(
        "SELECT message_id, part_no, reported FROM message_parts WHERE carrier_msgid = ?"
        " ORDER BY reported, message_id DESC LIMIT 1",
        (carrier_msgid,),
    ).fetchone()
    if row is None:
        return None
    return int(row[0]), int(row[1]), bool(row[2])


def _part_match(
    conn: sqlite3.Connection, message_id: int, part_no: int, *, duplicate: bool
) -> PartMatch:
    # The message with all its parts (one for most messages) in one query: this runs for
    # every delivery report.
    rows = conn.execute(MESSAGE_WITH_PARTS_SQL, (message_id,)).fetchall()
    if not rows:
        raise UnknownMessage(message_id)  # the caller found the part: cannot happen
    return part_match_record(rows, part_no, duplicate=duplicate)


def _part_reports_op(reports: tuple[PartReport, ...], now_ms: int) -> OpFn[list[PartMatch | None]]:
    def op(conn: sqlite3.Connection) -> list[PartMatch | None]:
        matches: list[PartMatch | None] = []
        for report in reports:
            match = _record_part_report(conn, report)
            if match is None:  # its parts are not recorded yet: kept until they are
                conn.execute(
                    _INSERT_EARLY_REPORT,
                    (
                        report.carrier_msgid,
                        int(report.delivered),
                        report.stat,
                        report.at_ms,
                        now_ms,
                    ),
                )
            matches.append(match)
        return matches

    return op


def _record_part_report(conn: sqlite3.Connection, report: PartReport) -> PartMatch | None:
    # The usual case in one statement: a part waiting for this report takes it.
    taken = conn.execute(
        TAKE_PART_REPORT_SQL,
        (int(report.delivered), report.stat, report.at_ms, report.carrier_msgid),
    ).fetchone()
    if taken is not None:
        return _part_match(conn, int(taken[0]), int(taken[1]), duplicate=False)
    part = _find_part(conn, report.carrier_msgid)  # a repeat, or an id not known (yet)
    if part is None:
        return None
    message_id, part_no, _ = part
    return _part_match(conn, message_id, part_no, duplicate=True)


_HISTORY_SQL: Final = history_sql("?")


def _history(conn: sqlite3.Connection, msgid: str, appid: str | None) -> list[MessageHistory]:
    return read_history(
        lambda sql, params: conn.execute(sql, params).fetchall(), _HISTORY_SQL, msgid, appid
    )
