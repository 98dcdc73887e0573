"""The PostgreSQL store's statements, run in worker threads on a psycopg connection.

Write ops take the writer connection (inside the group's transaction) and the group's
`Wakes`; read functions take a reader connection (inside a read-only REPEATABLE READ
transaction, so a multi-query read sees one snapshot).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Sequence
from typing import Any, Final

import attrs
from psycopg import Connection, OperationalError, errors, pq
from psycopg.rows import TupleRow

from smsgw.carriers.base import MobileOriginated
from smsgw.lifecycle import OWNED_STATES, PREDECESSORS
from smsgw.store.base import (
    FINAL_STATES,
    WAITING_STATES,
    Applied,
    InboundRecord,
    MessageHistory,
    MessageRecord,
    MessageUpdate,
    NewMessage,
    OwnerInfo,
    OwnerRecord,
    PartMatch,
    PartReport,
    PushRecord,
    Reclaimed,
    State,
    UnknownMessage,
)
from smsgw.store.history import history_sql, read_history
from smsgw.store.inbound import INBOUND_COLUMNS, inbound_record, inbound_row
from smsgw.store.postgres.notify import Wakes
from smsgw.store.rows import (
    MESSAGE_COLUMNS,
    MESSAGE_WITH_PART_COLUMNS,
    PUSH_COLUMNS,
    message_record,
    part_match_record,
    push_record,
)

Conn = Connection[TupleRow]
Key = tuple[int, int]  # a part: message id, part number

WAITING: Final = "state IN ('accepted', 'scheduled')"  # the text of the messages_due index

# The writer's statements join a group's rows (json_to_recordset, which the planner always
# guesses at 100 rows) to the tables by key. With the tables' statistics behind their growth
# and every row cached, the planner chose hash joins over a sequential scan of all of
# `messages` (dead versions included) for each apply: most of the server's CPU under load.
# Index lookups are what every one of them needs, whatever the tables' size.
WRITER_SETTINGS: Final = b"SET enable_hashjoin TO off; SET enable_mergejoin TO off"

# One statement per group for every accept of the group: the rows in, the keys of those that
# were new out. ON CONFLICT DO NOTHING also skips a repeat later in the same group; rows go in
# in order, so the first of a repeated key is the one stored. Rows travel as one JSON
# document each way rather than as arrays: json.dumps / json.loads run in C, where psycopg's
# pure-Python array and row adaptation cost more than the database's whole insert.
INSERT_MESSAGES_SQL: Final = (
    "WITH stored AS (INSERT INTO messages (appid, msgid, phone, message, msgtype, segments,"
    " state, attempts, accepted_at, next_attempt_at)"
    " SELECT a, m, p, t, y, s, st, 0, at, due FROM ROWS FROM (json_to_recordset(%s::json)"
    " AS (a text, m text, p text, t text, y integer, s integer, st text, at bigint, due bigint))"
    " WITH ORDINALITY AS r(a, m, p, t, y, s, st, at, due, n)"
    " ORDER BY n ON CONFLICT (msgid, appid, phone) DO NOTHING RETURNING msgid, appid, phone)"
    " SELECT COALESCE(json_agg(json_build_array(msgid, appid, phone)), '[]')::text FROM stored"
)
# The queue: the due rows no other gateway is claiming right now, in one statement.
# Rows come back as one JSON value (see INSERT_MESSAGES_SQL), oldest due first.
CLAIM_SQL: Final = (
    "WITH claimed AS (UPDATE messages SET state = 'queued', owner = %s WHERE id IN (SELECT id"
    " FROM messages"
    f" WHERE {WAITING} AND next_attempt_at <= %s ORDER BY next_attempt_at, id LIMIT %s"
    f" FOR UPDATE SKIP LOCKED) RETURNING {MESSAGE_COLUMNS})"
    f" SELECT COALESCE(json_agg(json_build_array({MESSAGE_COLUMNS})"
    " ORDER BY next_attempt_at, id), '[]')::text FROM claimed"
)
DUE_PUSHES_SQL: Final = (
    f"SELECT COALESCE(json_agg(json_build_array({PUSH_COLUMNS})"
    " ORDER BY p.next_attempt_at, p.id), '[]')::text FROM (SELECT * FROM pushes"
    " WHERE state = 'pending' AND appid = %s AND next_attempt_at <= %s"
    " ORDER BY next_attempt_at, id LIMIT %s) p JOIN messages m ON m.id = p.message_id"
)
NEXT_DUE_SQL: Final = (
    f"SELECT next_attempt_at FROM messages WHERE {WAITING} ORDER BY next_attempt_at, id LIMIT 1"
)
# `apply`, a statement per table for a run of updates (each run's message ids distinct),
# the rows as JSON as for accepts. Events and pushes go in in the updates' order (their ids
# are the history's order).
APPLY_UPDATE_SQL: Final = (
    "WITH changed AS (UPDATE messages m SET state = r.st, attempts = COALESCE(r.a, m.attempts),"
    " next_attempt_at = r.due, carrier_msgid = COALESCE(r.c, m.carrier_msgid),"
    " submitted_at = COALESCE(r.sub, m.submitted_at), final_at = r.fin,"
    " stat = COALESCE(r.s, m.stat), error = CASE WHEN r.clr THEN NULL ELSE COALESCE(r.e, m.error)"
    " END, owner = CASE WHEN r.keep THEN m.owner END"
    " FROM json_to_recordset(%s::json) AS r(id bigint, st text, a integer, due bigint,"
    " c text, sub bigint, fin bigint, s text, clr boolean, e text, keep boolean, src text[],"
    " exp text, own text) WHERE m.id = r.id"
    # Compare-and-set: from a state the lifecycle allows, the expected one, the owner's.
    " AND m.state = ANY(r.src)"
    " AND (r.exp IS NULL OR m.state = r.exp) AND (r.own IS NULL OR m.owner = r.own)"
    " RETURNING m.id, m.appid)"
    " SELECT COALESCE(json_agg(json_build_array(id, appid)), '[]')::text FROM changed"
)
APPLY_EVENTS_SQL: Final = (
    "INSERT INTO events (message_id, kind, at, attempt, stat, error, carrier_msgid)"
    " SELECT i, k, at, a, s, e, c FROM ROWS FROM (json_to_recordset(%s::json) AS (i bigint,"
    " k text, at bigint, a integer, s text, e text, c text)) WITH ORDINALITY"
    " AS r(i, k, at, a, s, e, c, n) ORDER BY n"
)
APPLY_DELETE_PARTS_SQL: Final = (
    "DELETE FROM message_parts WHERE message_id IN"
    " (SELECT value::bigint FROM json_array_elements_text(%s::json))"
)
APPLY_PARTS_SQL: Final = (
    "INSERT INTO message_parts (message_id, part_no, carrier_msgid)"
    " SELECT i, n, c FROM json_to_recordset(%s::json) AS r(i bigint, n integer, c text)"
)
APPLY_PUSHES_SQL: Final = (
    "INSERT INTO pushes (appid, message_id, kind, final, success, stat, attempt, sendtime,"
    " carrier_msgid, error, state, attempts, next_attempt_at, created_at, updated_at)"
    " SELECT m.appid, r.i, r.k, r.f, r.ok, r.s, r.a, r.st, r.c, r.e, 'pending', 0, r.at, r.at,"
    " r.at FROM ROWS FROM (json_to_recordset(%s::json) AS (i bigint, k text, f boolean,"
    " ok boolean, s text, a integer, st bigint, c text, e text, at bigint))"
    " WITH ORDINALITY AS r(i, k, f, ok, s, a, st, c, e, at, n) JOIN messages m ON m.id = r.i"
    " ORDER BY r.n"
)
# The rows an apply left alone (stale): where they stand.
APPLY_STALE_SQL: Final = (
    "SELECT COALESCE(json_agg(json_build_array(id, state, appid)), '[]')::text FROM messages"
    " WHERE id IN (SELECT value::bigint FROM json_array_elements_text(%s::json))"
)
# Early reports for any of these operator ids, the first stored of each.
EARLY_REPORTS_SQL: Final = (
    "SELECT COALESCE(json_agg(json_build_array(carrier_msgid, delivered, stat, at)), '[]')::text"
    " FROM (SELECT DISTINCT ON (carrier_msgid) carrier_msgid, delivered, stat, at"
    " FROM early_reports WHERE carrier_msgid IN"
    " (SELECT json_array_elements_text(%s::json)) ORDER BY carrier_msgid, id) first"
)
INSERT_EARLY_REPORTS_SQL: Final = (
    "INSERT INTO early_reports (carrier_msgid, delivered, stat, at, received_at)"
    " SELECT c, d, s, at, %s FROM ROWS FROM (json_to_recordset(%s::json) AS (c text,"
    " d boolean, s text, at bigint)) WITH ORDINALITY AS r(c, d, s, at, n) ORDER BY n"
)
EXPIRE_EARLY_REPORTS_SQL: Final = (
    "DELETE FROM early_reports WHERE id IN (SELECT id FROM early_reports WHERE received_at < %s"
    " ORDER BY received_at LIMIT %s FOR UPDATE SKIP LOCKED)"
)
# Rows claimed by an owner that no longer exists (or by none), other than the claimant.
_ORPHANED: Final = (
    "(owner IS NULL OR owner NOT IN (SELECT id FROM owners)) AND owner IS DISTINCT FROM %s"
)
# Every report of a run in one statement: each takes, of the parts with its id still waiting,
# the newest message's (operators may recycle ids), returned by the report's position.
# `AND NOT p.reported` again in the UPDATE itself: when another gateway's transaction took
# the same part first, PostgreSQL re-checks that condition on the row it waited for, and
# this report becomes a duplicate.
TAKE_PART_REPORTS_SQL: Final = (
    "WITH r AS (SELECT * FROM ROWS FROM (json_to_recordset(%s::json) AS (c text, d boolean,"
    " s text, at bigint)) WITH ORDINALITY AS r(c, d, s, at, n)),"
    " target AS (SELECT DISTINCT ON (r.n) r.n, r.d, r.s, r.at, p.message_id, p.part_no FROM r"
    " JOIN message_parts p ON p.carrier_msgid = r.c AND NOT p.reported"
    " ORDER BY r.n, p.message_id DESC),"
    " taken AS (UPDATE message_parts p SET reported = true, delivered = t.d, stat = t.s,"
    " reported_at = t.at FROM target t"
    " WHERE (p.message_id, p.part_no) = (t.message_id, t.part_no) AND NOT p.reported"
    " RETURNING t.n, p.message_id, p.part_no)"
    " SELECT COALESCE(json_agg(json_build_array(n, message_id, part_no)), '[]')::text FROM taken"
)
# A report and the parts it is for may be recorded at once by two gateways. Under READ
# COMMITTED neither transaction sees the other's uncommitted rows: the report would be stored
# as early after the parts looked for early reports, and lost. So both take a transaction
# advisory lock per operator id first (`begin`): the second waits for the first to
# commit, and its statements, run after, see it. The two-key space, class "smsp" (the
# migrations lock in the one-key space); the key is the id's CRC-32 (a collision only makes
# two unrelated ids wait for each other).
PART_LOCK_CLASS: Final = 0x736D7370
LOCK_PART_IDS_SQL: Final = (
    "BEGIN; SELECT count(pg_advisory_xact_lock({}, k)) FROM unnest(ARRAY[{}]::int4[]) AS k"
)
MESSAGE_WITH_PARTS_SQL: Final = (
    f"SELECT {MESSAGE_WITH_PART_COLUMNS}"
    " FROM messages m JOIN message_parts p ON p.message_id = m.id"
    " WHERE m.id = %s ORDER BY p.part_no"
)
MESSAGES_WITH_PARTS_SQL: Final = (
    f"SELECT COALESCE(json_agg(json_build_array({MESSAGE_WITH_PART_COLUMNS})"
    " ORDER BY m.id, p.part_no), '[]')::text"
    " FROM messages m JOIN message_parts p ON p.message_id = m.id"
    " WHERE m.id IN (SELECT value::bigint FROM json_array_elements_text(%s::json))"
)
_FULLY_REPORTED_SQL: Final = (
    "SELECT m.id, (SELECT p.part_no FROM message_parts p WHERE p.message_id = m.id"
    " ORDER BY p.reported_at DESC, p.part_no DESC LIMIT 1)"
    " FROM messages m WHERE m.state = 'submitted'"
    " AND EXISTS (SELECT 1 FROM message_parts p WHERE p.message_id = m.id)"
    " AND NOT EXISTS (SELECT 1 FROM message_parts p WHERE p.message_id = m.id AND NOT p.reported)"
    " AND (SELECT MAX(p.reported_at) FROM message_parts p WHERE p.message_id = m.id) < %s"
    " ORDER BY m.id LIMIT %s"
)
DELETE_FINISHED_SQL: Final = (
    "DELETE FROM messages WHERE id IN (SELECT m.id FROM messages m"
    " WHERE m.final_at IS NOT NULL AND m.final_at < %s"
    " AND NOT EXISTS (SELECT 1 FROM pushes p WHERE p.message_id = m.id AND p.state = 'pending')"
    " ORDER BY m.final_at LIMIT %s FOR UPDATE SKIP LOCKED)"
)
DELETE_INBOUND_SQL: Final = (
    "DELETE FROM inbound WHERE id IN (SELECT id FROM inbound WHERE received_at < %s"
    " ORDER BY received_at LIMIT %s FOR UPDATE SKIP LOCKED)"
)


# ---------------------------------------------------------------------- accept


def insert_messages(
    conn: Conn, batches: Sequence[tuple[Sequence[NewMessage], int]], wakes: Wakes
) -> list[list[bool]]:
    """Every (messages, now_ms) batch of a group in ONE insert; per batch, per message:
    newly stored or not."""
    rows: list[dict[str, object]] = []
    for messages, now_ms in batches:
        for m in messages:
            scheduled = m.send_at_ms is not None and m.send_at_ms > now_ms
            rows.append(
                {
                    "a": m.appid,
                    "m": m.msgid,
                    "p": m.phone,
                    "t": m.message,
                    "y": m.msgtype,
                    "s": m.segments,
                    "st": State.SCHEDULED.value if scheduled else State.ACCEPTED.value,
                    "at": now_ms,
                    "due": m.send_at_ms if scheduled else now_ms,
                }
            )
    found = conn.execute(INSERT_MESSAGES_SQL, (json.dumps(rows, ensure_ascii=False),)).fetchone()
    new = {tuple(key) for key in json.loads(found[0] if found else "[]")}
    results: list[list[bool]] = []
    for messages, now_ms in batches:
        stored: list[bool] = []
        for m in messages:
            key = (m.msgid, m.appid, m.phone)
            stored.append(key in new)
            if key in new:
                new.discard(key)  # a repeat later in the group was not the one stored
                due = m.send_at_ms if m.send_at_ms is not None and m.send_at_ms > now_ms else now_ms
                wakes.due(due)
        results.append(stored)
    return results


# ---------------------------------------------------------------------- pipeline


def register_owner(conn: Conn, owner: OwnerInfo, lease_until_ms: int) -> None:
    conn.execute(
        "INSERT INTO owners (id, host, pid, started_at, lease_until) VALUES (%s, %s, %s, %s, %s)"
        " ON CONFLICT (id) DO UPDATE SET lease_until = excluded.lease_until",
        (owner.id, owner.host, owner.pid, owner.started_at_ms, lease_until_ms),
    )


def renew_owner(conn: Conn, owner_id: str, lease_until_ms: int) -> bool:
    renewed = conn.execute(
        "UPDATE owners SET lease_until = GREATEST(lease_until, %s) WHERE id = %s",
        (lease_until_ms, owner_id),
    )
    return renewed.rowcount == 1


def release_owner(conn: Conn, owner_id: str) -> None:
    conn.execute("DELETE FROM owners WHERE id = %s", (owner_id,))
    conn.execute("DELETE FROM push_claims WHERE owner = %s", (owner_id,))


def owners(conn: Conn) -> list[OwnerRecord]:
    return [
        OwnerRecord(OwnerInfo(owner_id, host, pid, started_at), lease_until)
        for owner_id, host, pid, started_at, lease_until in conn.execute(
            "SELECT id, host, pid, started_at, lease_until FROM owners ORDER BY started_at, id"
        ).fetchall()
    ]


def reclaim(conn: Conn, claimant: str, now_ms: int, dead: Sequence[str], wakes: Wakes) -> Reclaimed:
    lost = [
        str(row[0])
        for row in conn.execute(
            "DELETE FROM owners WHERE id <> %s AND (lease_until < %s"
            " OR id IN (SELECT json_array_elements_text(%s::json))) RETURNING id",
            (claimant, now_ms, json.dumps(list(dead))),
        ).fetchall()
    ]
    conn.execute("DELETE FROM push_claims WHERE owner NOT IN (SELECT id FROM owners)")
    # QUEUED rows never left their owner's process: waiting again, due when they were.
    requeued = conn.execute(
        "UPDATE messages SET state = 'accepted', owner = NULL"
        f" WHERE state = 'queued' AND {_ORPHANED} RETURNING next_attempt_at",
        (claimant,),
    ).fetchall()
    for (due,) in requeued:
        if due is not None:
            wakes.due(int(due))
    in_doubt = conn.execute(
        f"UPDATE messages SET owner = %s WHERE state = 'submitting' AND {_ORPHANED}"
        f" RETURNING {MESSAGE_COLUMNS}",
        (claimant, claimant),
    ).fetchall()
    return Reclaimed(
        owners=tuple(sorted(lost)),
        requeued=len(requeued),
        in_doubt=tuple(sorted((message_record(row) for row in in_doubt), key=lambda m: m.id)),
    )


def claim_pushes(conn: Conn, appid: str, owner: str) -> bool:
    if conn.execute("SELECT 1 FROM owners WHERE id = %s", (owner,)).fetchone() is None:
        return False  # not a live owner (reclaimed, or never registered)
    # The app's claim row locked: two owners claiming at once take turns here.
    holder = conn.execute(
        "SELECT owner FROM push_claims WHERE appid = %s FOR UPDATE", (appid,)
    ).fetchone()
    if holder is not None and holder[0] != owner:
        alive = conn.execute("SELECT 1 FROM owners WHERE id = %s", (holder[0],)).fetchone()
        if alive is not None:
            return False
    conn.execute(
        "INSERT INTO push_claims (appid, owner) VALUES (%s, %s)"
        " ON CONFLICT (appid) DO UPDATE SET owner = excluded.owner",
        (appid, owner),
    )
    return True


def fully_reported(conn: Conn, reported_before_ms: int, limit: int) -> list[PartMatch]:
    found = conn.execute(_FULLY_REPORTED_SQL, (reported_before_ms, limit)).fetchall()
    return [part_match(conn, message_id, part_no, duplicate=False) for message_id, part_no in found]


def claim_due(conn: Conn, now_ms: int, limit: int, owner: str) -> list[MessageRecord]:
    found = conn.execute(CLAIM_SQL, (owner, now_ms, limit)).fetchone()
    return [message_record(row) for row in json.loads(found[0] if found else "[]")]


def unclaim(conn: Conn, ids: Sequence[int], owner: str, wakes: Wakes) -> None:
    """Claimed rows the caller never saw go back to waiting, due when they were due."""
    rows = conn.execute(
        "UPDATE messages SET state = 'accepted', owner = NULL WHERE id = ANY(%s)"
        " AND state = 'queued' AND owner = %s RETURNING next_attempt_at",
        (list(ids), owner),
    ).fetchall()
    for (due,) in rows:
        if due is not None:
            wakes.due(int(due))


def next_due_at(conn: Conn) -> int | None:
    row = conn.execute(NEXT_DUE_SQL).fetchone()
    return None if row is None else int(row[0])


def overdue_submitted(conn: Conn, submitted_before_ms: int, limit: int) -> list[MessageRecord]:
    rows = conn.execute(
        f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE state = 'submitted'"
        " AND submitted_at < %s ORDER BY submitted_at, id LIMIT %s",
        (submitted_before_ms, limit),
    ).fetchall()
    return [message_record(row) for row in rows]


def apply(conn: Conn, updates: Sequence[MessageUpdate], wakes: Wakes) -> list[Applied]:
    """The updates in order, each compare-and-set, set-based: a statement per table for every
    run of updates to distinct messages (a message updated twice starts a new run)."""
    applied: list[Applied] = []
    run: list[MessageUpdate] = []
    seen: set[int] = set()
    for update in updates:
        if update.message_id in seen:
            applied += _apply_run(conn, run, wakes)
            run, seen = [], set()
        run.append(update)
        seen.add(update.message_id)
    if run:
        applied += _apply_run(conn, run, wakes)
    return applied


def _json(rows: list[dict[str, Any]]) -> tuple[str]:
    return (json.dumps(rows, ensure_ascii=False),)


def _one_json(conn: Conn, sql: str, params: tuple[Any, ...]) -> Any:
    found = conn.execute(sql.encode(), params).fetchone()
    return json.loads(found[0] if found else "[]")


@attrs.frozen
class _Target:
    """What an update to this state sends along, worked out once."""

    state: State
    sources: list[str]  # the states it may come from (compare-and-set)
    waiting: bool
    final: bool
    owned: bool


_TARGETS: Final = {
    state: _Target(
        state,
        sorted(source.value for source in sources),
        state in WAITING_STATES,
        state in FINAL_STATES,
        state in OWNED_STATES,
    )
    for state, sources in PREDECESSORS.items()
}


def _apply_run(conn: Conn, updates: Sequence[MessageUpdate], wakes: Wakes) -> list[Applied]:
    rows: list[dict[str, Any]] = []
    targets = [_TARGETS[State(u.state)] for u in updates]
    for u, target in zip(updates, targets, strict=True):
        at_ms = u.event.at_ms
        next_attempt_at: int | None = None
        if target.waiting:
            next_attempt_at = u.next_attempt_at_ms if u.next_attempt_at_ms is not None else at_ms
        rows.append(
            {
                "id": u.message_id,
                "st": target.state.value,
                "a": u.attempts,
                "due": next_attempt_at,
                "c": u.carrier_msgid,
                "sub": u.submitted_at_ms,
                "fin": at_ms if target.final else None,
                "s": u.stat,
                "clr": u.clear_error,
                "e": u.error,
                "keep": target.owned,
                "src": target.sources,
                "exp": None if u.expected is None else State(u.expected).value,
                "own": u.owner,
            }
        )
    changed = {int(i): str(appid) for i, appid in _one_json(conn, APPLY_UPDATE_SQL, _json(rows))}
    stale_ids = [u.message_id for u in updates if u.message_id not in changed]
    stale = {
        int(i): (State(state), str(appid))
        for i, state, appid in (
            _one_json(conn, APPLY_STALE_SQL, (json.dumps(stale_ids),)) if stale_ids else []
        )
    }
    for message_id in stale_ids:
        if message_id not in stale:
            raise UnknownMessage(message_id)
    done = [(u, t) for u, t in zip(updates, targets, strict=True) if u.message_id in changed]
    events: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    replaced: list[int] = []
    pushes: list[dict[str, Any]] = []
    for u, target in done:
        if target.waiting:
            due = u.next_attempt_at_ms if u.next_attempt_at_ms is not None else u.event.at_ms
            wakes.due(due)
        e = u.event
        events.append(
            {
                "i": u.message_id,
                "k": e.kind,
                "at": e.at_ms,
                "a": e.attempt,
                "s": e.stat,
                "e": e.error,
                "c": e.carrier_msgid,
            }
        )
        part_ids = u.part_ids or ((u.carrier_msgid,) if u.carrier_msgid is not None else ())
        if part_ids:
            # A new attempt's ids replace the previous attempt's: reports match the latest.
            replaced.append(u.message_id)
            parts += [
                {"i": u.message_id, "n": n, "c": part_id} for n, part_id in enumerate(part_ids, 1)
            ]
        if u.pushes:
            r = u.receipt
            assert r is not None  # Transition checks it
            pushes += [
                {
                    "i": u.message_id,
                    "k": str(kind),
                    "f": r.final,
                    "ok": r.success,
                    "s": r.stat,
                    "a": r.attempt,
                    "st": r.sendtime_ms,
                    "c": r.carrier_msgid,
                    "e": r.error,
                    "at": e.at_ms,
                }
                for kind in u.pushes
            ]
            wakes.push(changed[u.message_id])
    if events:
        conn.execute(APPLY_EVENTS_SQL, _json(events))
    if replaced:
        conn.execute(APPLY_DELETE_PARTS_SQL, (json.dumps(replaced),))
        conn.execute(APPLY_PARTS_SQL, _json(parts))
    if pushes:
        conn.execute(APPLY_PUSHES_SQL, _json(pushes))
    early = _match_early_reports(
        conn,
        [u for u, t in done if t.state is State.SUBMITTED and u.message_id in replaced],
    )
    results: list[Applied] = []
    for u, target in zip(updates, targets, strict=True):
        if u.message_id in changed:
            results.append(
                Applied(True, target.state, changed[u.message_id], early.get(u.message_id, ()))
            )
        else:
            state, appid = stale[u.message_id]
            results.append(Applied(False, state, appid))
    return results


def _match_early_reports(
    conn: Conn, submitted: Sequence[MessageUpdate]
) -> dict[int, tuple[PartMatch, ...]]:
    """Reports stored before these parts were recorded (they may have come on another
    process's link): each part takes its first, the repeats go. Each match is as its part
    stands once recorded, in part order (the last one completes the message). One query
    for the whole run; the rest only when one was stored (rare)."""
    part_ids = {
        part_id: (u.message_id, n)
        for u in submitted
        for n, part_id in enumerate(
            u.part_ids or ((u.carrier_msgid,) if u.carrier_msgid is not None else ()), 1
        )
    }
    if not part_ids:
        return {}
    found = _one_json(conn, EARLY_REPORTS_SQL, (json.dumps(sorted(part_ids)),))
    early = {carrier_msgid: (delivered, stat, at) for carrier_msgid, delivered, stat, at in found}
    matches: dict[int, list[PartMatch]] = {}
    # In part order, each match read right after its part is recorded.
    for part_id, (message_id, part_no) in sorted(part_ids.items(), key=lambda item: item[1]):
        if part_id not in early:
            continue
        conn.execute("DELETE FROM early_reports WHERE carrier_msgid = %s", (part_id,))
        conn.execute(
            "UPDATE message_parts SET reported = true, delivered = %s, stat = %s,"
            " reported_at = %s WHERE message_id = %s AND part_no = %s",
            (*early[part_id], message_id, part_no),
        )
        matches.setdefault(message_id, []).append(
            part_match(conn, message_id, part_no, duplicate=False)
        )
    return {message_id: tuple(found) for message_id, found in matches.items()}


def part_lock_keys(part_ids: Iterable[str]) -> frozenset[int]:
    return frozenset(
        key - 2**32 if key >= 2**31 else key
        for key in (zlib.crc32(part_id.encode()) for part_id in part_ids)
    )


def bare(conn: Conn, statement: bytes) -> None:
    """A statement with neither parameters nor rows wanted (BEGIN, COMMIT: twice per group),
    straight through libpq (`PQexec`, in psycopg's documented `pq` layer): psycopg's cursor
    machinery cost more Python than the statement. Its errors are psycopg's classes."""
    result = conn.pgconn.exec_(statement)
    if result.status in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK):
        return
    message = (result.error_message or conn.pgconn.error_message).decode(errors="replace")
    sqlstate = result.error_field(pq.DiagnosticField.SQLSTATE)
    if sqlstate is None:
        raise OperationalError(message.strip() or "the statement failed")
    try:
        error = errors.lookup(sqlstate.decode())
    except KeyError:  # a code psycopg does not know
        error = errors.DatabaseError
    raise error(message.strip())


def begin(conn: Conn, keys: Iterable[int]) -> None:
    """BEGIN and lock these part id keys, in ascending order (so two transactions locking
    overlapping sets cannot deadlock on them), before anything else: one round trip, as
    one simple query (no parameters: the keys are integers made by `part_lock_keys`)."""
    ordered = sorted(keys)
    if not ordered:
        bare(conn, b"BEGIN")
        return
    bare(conn, LOCK_PART_IDS_SQL.format(PART_LOCK_CLASS, ",".join(map(str, ordered))).encode())


def find_part(conn: Conn, carrier_msgid: str) -> tuple[int, int, bool] | None:
    """The part with this id (message, part number, reported): operators may recycle ids
    over time, so a part still waiting for its report first, then the newest message's."""
    row = conn.execute(
        "SELECT message_id, part_no, reported FROM message_parts WHERE carrier_msgid = %s"
        " ORDER BY reported, message_id DESC LIMIT 1",
        (carrier_msgid,),
    ).fetchone()
    return None if row is None else (int(row[0]), int(row[1]), bool(row[2]))


def part_match(conn: Conn, message_id: int, part_no: int, *, duplicate: bool) -> PartMatch:
    rows = conn.execute(MESSAGE_WITH_PARTS_SQL, (message_id,)).fetchall()
    if not rows:
        raise UnknownMessage(message_id)  # the caller found the part: cannot happen
    return part_match_record(rows, part_no, duplicate=duplicate)


def record_part_reports(
    conn: Conn, reports: Sequence[PartReport], now_ms: int
) -> list[PartMatch | None]:
    """Set-based, for every run of reports with distinct operator ids (a repeated id starts
    a new run: its second report must see the first). Each match is as of its own report:
    parts taken by later reports of the call are shown unreported. A report whose id
    matches no part is stored as an early report (received at `now_ms`)."""
    matches = _record_reports(conn, reports)
    early = [
        {"c": r.carrier_msgid, "d": r.delivered, "s": r.stat, "at": r.at_ms}
        for r, match in zip(reports, matches, strict=True)
        if match is None
    ]
    if early:
        conn.execute(INSERT_EARLY_REPORTS_SQL, (now_ms, *_json(early)))
    return matches


def _record_reports(conn: Conn, reports: Sequence[PartReport]) -> list[PartMatch | None]:
    matches: list[PartMatch | None] = []
    run: list[PartReport] = []
    ids: set[str] = set()
    for report in reports:
        if report.carrier_msgid in ids:
            matches += _record_run(conn, run)
            run, ids = [], set()
        run.append(report)
        ids.add(report.carrier_msgid)
    if run:
        matches += _record_run(conn, run)
    return matches


def _take(conn: Conn, reports: Sequence[PartReport], indices: Sequence[int]) -> dict[int, Key]:
    """The parts these reports take (one statement), by the report's index in `indices`."""
    rows = [{"c": r.carrier_msgid, "d": r.delivered, "s": r.stat, "at": r.at_ms} for r in reports]
    return {
        indices[int(n) - 1]: (int(message_id), int(part_no))
        for n, message_id, part_no in _one_json(conn, TAKE_PART_REPORTS_SQL, _json(rows))
    }


def _record_run(conn: Conn, reports: Sequence[PartReport]) -> list[PartMatch | None]:
    taken = _take(conn, reports, range(len(reports)))
    # A repeat, or an id not known (yet): one by one, the rare path.
    found = {
        index: find_part(conn, report.carrier_msgid)
        for index, report in enumerate(reports)
        if index not in taken
    }
    # A part found still waiting was not there for the statement above (recorded since, by
    # a transaction that committed in between): this report takes it, it is no duplicate.
    waiting = [index for index, part in found.items() if part is not None and not part[2]]
    if waiting:
        taken |= _take(conn, [reports[index] for index in waiting], waiting)
        for index in waiting:
            found[index] = None if index in taken else find_part(conn, reports[index].carrier_msgid)
    repeats = {
        index: None if part is None else (part[0], part[1])
        for index, part in found.items()
        if index not in taken
    }
    messages = {key[0] for key in taken.values()} | {
        key[0] for key in repeats.values() if key is not None
    }
    by_message: dict[int, list[list[Any]]] = {}
    if messages:
        for row in _one_json(conn, MESSAGES_WITH_PARTS_SQL, (json.dumps(sorted(messages)),)):
            by_message.setdefault(int(row[0]), []).append(row)
    # Per message, its parts taken here by report index: a match shows those of later
    # reports unreported.
    taken_by_message: dict[int, list[tuple[int, int]]] = {}
    for n, (message_id, part_no) in taken.items():
        taken_by_message.setdefault(message_id, []).append((n, part_no))
    matches: list[PartMatch | None] = []
    for index in range(len(reports)):
        key = taken.get(index) or repeats[index]
        if key is None:
            matches.append(None)
            continue
        message_id, part_no = key
        later = frozenset(part for n, part in taken_by_message.get(message_id, ()) if n > index)
        matches.append(
            part_match_record(
                by_message[message_id], part_no, duplicate=index not in taken, unreported=later
            )
        )
    return matches


# ---------------------------------------------------------------------- pushes


def due_pushes(conn: Conn, appid: str, now_ms: int, limit: int) -> list[PushRecord]:
    found = conn.execute(DUE_PUSHES_SQL, (appid, now_ms, limit)).fetchone()
    return [push_record(row) for row in json.loads(found[0] if found else "[]")]


def apps_with_due_pushes(conn: Conn, now_ms: int) -> list[str]:
    rows = conn.execute(
        "SELECT DISTINCT appid FROM pushes WHERE state = 'pending' AND next_attempt_at <= %s"
        " ORDER BY appid",
        (now_ms,),
    ).fetchall()
    return [str(row[0]) for row in rows]


def next_push_due_at(conn: Conn, appid: str) -> int | None:
    row = conn.execute(
        "SELECT next_attempt_at FROM pushes WHERE state = 'pending' AND appid = %s"
        " ORDER BY next_attempt_at LIMIT 1",
        (appid,),
    ).fetchone()
    return None if row is None else int(row[0])


# By primary key, one id at a time: `id = ANY(…)` had the planner scan every pending push
# (a repeated id updates its row once all the same).
_PUSH_IDS: Final = (
    "FROM (SELECT value::bigint AS id FROM json_array_elements_text(%s::json)) i"
    " WHERE p.id = i.id AND p.state = 'pending'"
)


def record_push_result(
    conn: Conn,
    ids: Sequence[int],
    ok: bool,
    error: str | None,
    now_ms: int,
    max_attempts: int,
    retry_at_ms: int,
) -> None:
    # Only pending pushes change: a late result for a done/abandoned push is ignored.
    if ok:
        conn.execute(
            "UPDATE pushes p SET state = 'done', attempts = p.attempts + 1, updated_at = %s"
            f" {_PUSH_IDS}",
            (now_ms, json.dumps(list(ids))),
        )
    else:
        conn.execute(
            "UPDATE pushes p SET attempts = p.attempts + 1,"
            " state = CASE WHEN p.attempts + 1 >= %s THEN 'abandoned' ELSE 'pending' END,"
            " next_attempt_at = %s, last_error = COALESCE(%s, p.last_error), updated_at = %s"
            f" {_PUSH_IDS}",
            (max_attempts, retry_at_ms, error, now_ms, json.dumps(list(ids))),
        )


# ---------------------------------------------------------------------- queries


_HISTORY_SQL: Final = history_sql("%s")


def history(conn: Conn, msgid: str, appid: str | None) -> list[MessageHistory]:
    return read_history(
        lambda sql, params: conn.execute(sql, params).fetchall(), _HISTORY_SQL, msgid, appid
    )


def counts(conn: Conn, table: str, states: Sequence[str]) -> dict[str, int]:
    found = {str(state): 0 for state in states}
    sql = {
        "messages": "SELECT state, count(*) FROM messages GROUP BY state",
        "pushes": "SELECT state, count(*) FROM pushes GROUP BY state",
    }[table]
    for state, count in conn.execute(sql.encode()).fetchall():
        found[state] = int(count)
    return found


# ---------------------------------------------------------------------- inbound


def insert_inbound(conn: Conn, messages: Sequence[MobileOriginated]) -> None:
    with conn.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO inbound ({INBOUND_COLUMNS})"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb)".encode(),
            [inbound_row(mo) for mo in messages],
        )


def recent_inbound(conn: Conn, limit: int, before_id: int | None) -> list[InboundRecord]:
    rows = conn.execute(
        f"SELECT id, {INBOUND_COLUMNS} FROM inbound WHERE id < %s"
        " ORDER BY id DESC LIMIT %s".encode(),
        (before_id if before_id is not None else 2**63 - 1, limit),
    ).fetchall()
    return [inbound_record(row) for row in rows]
