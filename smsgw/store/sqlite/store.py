"""The SQLite store: the store roles over the group-commit writer (writer.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

from smsgw.records import MobileOriginated
from smsgw.store.base import (
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
    PushState,
    Reclaimed,
    State,
)
from smsgw.store.inbound import INBOUND_COLUMNS, inbound_record, inbound_row
from smsgw.store.rows import MESSAGE_COLUMNS, message_record, push_record
from smsgw.store.sqlite.queries import (
    _DELETE_FINISHED_SQL,
    _DELETE_INBOUND_SQL,
    _EXPIRE_EARLY_REPORTS_SQL,
    _PENDING_PUSH,
    _PENDING_PUSHES,
    DUE_PUSHES_SQL,
    _apply_op,
    _check_limit,
    _claim_op,
    _claim_pushes_op,
    _find_part,
    _fully_reported,
    _history,
    _insert_op,
    _next_due_at,
    _owners,
    _part_match,
    _part_reports_op,
    _reclaim_op,
    _register_owner_op,
    _release_owner_op,
    _renew_owner_op,
    _unclaim_op,
)
from smsgw.store.sqlite.writer import GroupWriter


class SqliteStore(GroupWriter):
    # ------------------------------------------------------------------ accept path

    async def insert_messages(self, messages: Sequence[NewMessage], now_ms: int) -> list[bool]:
        if not messages:
            return []
        return await self._write(_insert_op(tuple(messages), now_ms), weight=len(messages))

    # ------------------------------------------------------------------ owners

    async def register_owner(self, owner: OwnerInfo, lease_until_ms: int) -> None:
        await self._write(_register_owner_op(owner, lease_until_ms))

    async def renew_owner(self, owner_id: str, lease_until_ms: int) -> bool:
        return await self._write(_renew_owner_op(owner_id, lease_until_ms))

    async def release_owner(self, owner_id: str) -> None:
        await self._write(_release_owner_op(owner_id))

    async def owners(self) -> list[OwnerRecord]:
        return await self._read(_owners)

    async def reclaim(self, claimant: str, now_ms: int, dead: Sequence[str] = ()) -> Reclaimed:
        return await self._write(_reclaim_op(claimant, now_ms, tuple(dead)))

    # ------------------------------------------------------------------ queue

    async def claim_due(self, now_ms: int, limit: int, *, owner: str) -> list[MessageRecord]:
        _check_limit(limit)
        if limit == 0:
            return []
        return await self._write(_claim_op(now_ms, limit, owner), weight=limit, undo=_unclaim_op)

    async def next_due_at(self) -> int | None:
        return await self._read(_next_due_at)

    async def apply(self, updates: Sequence[MessageUpdate]) -> list[Applied]:
        if not updates:
            return []
        rows = sum(2 + len(u.part_ids) + len(u.pushes) for u in updates)
        return await self._write(_apply_op(tuple(updates)), weight=rows)

    # ------------------------------------------------------------------ reports

    async def overdue_submitted(self, submitted_before_ms: int, limit: int) -> list[MessageRecord]:
        def read(conn: sqlite3.Connection) -> list[MessageRecord]:
            rows = conn.execute(
                f"SELECT {MESSAGE_COLUMNS} FROM messages INDEXED BY messages_awaiting_report"
                " WHERE state = 'submitted' AND submitted_at < ? ORDER BY submitted_at LIMIT ?",
                (submitted_before_ms, limit),
            ).fetchall()
            return [message_record(row) for row in rows]

        return await self._read(read)

    async def find_by_part_id(self, carrier_msgid: str) -> PartMatch | None:
        def read(conn: sqlite3.Connection) -> PartMatch | None:
            part = _find_part(conn, carrier_msgid)
            if part is None:
                return None
            return _part_match(conn, part[0], part[1], duplicate=False)

        return await self._read(read)

    async def record_part_reports(
        self, reports: Sequence[PartReport], now_ms: int
    ) -> list[PartMatch | None]:
        if not reports:
            return []
        return await self._write(_part_reports_op(tuple(reports), now_ms), weight=len(reports))

    async def fully_reported(self, reported_before_ms: int, limit: int) -> list[PartMatch]:
        _check_limit(limit)
        return await self._read(_fully_reported(reported_before_ms, limit))

    async def expire_early_reports(self, received_before_ms: int, limit: int) -> int:
        return await self._delete_oldest(_EXPIRE_EARLY_REPORTS_SQL, received_before_ms, limit)

    # ------------------------------------------------------------------ pushes

    async def claim_pushes(self, appid: str, owner: str) -> bool:
        return await self._write(_claim_pushes_op(appid, owner))

    async def due_pushes(self, appid: str, now_ms: int, limit: int) -> list[PushRecord]:
        _check_limit(limit)

        def read(conn: sqlite3.Connection) -> list[PushRecord]:
            rows = conn.execute(DUE_PUSHES_SQL, (appid, now_ms, limit)).fetchall()
            return [push_record(row) for row in rows]

        return await self._read(read)

    async def apps_with_due_pushes(self, now_ms: int) -> list[str]:
        def read(conn: sqlite3.Connection) -> list[str]:
            # A skip scan over the partial index: one probe per app, however many pushes
            # are pending (a merchant endpoint down for a day can pile up many).
            apps: list[str] = []
            row = conn.execute(
                f"SELECT appid FROM {_PENDING_PUSHES} WHERE {_PENDING_PUSH} ORDER BY appid LIMIT 1"
            ).fetchone()
            while row is not None:
                appid: str = row[0]
                due = conn.execute(
                    f"SELECT 1 FROM {_PENDING_PUSHES} WHERE {_PENDING_PUSH} AND appid = ?"
                    " AND next_attempt_at <= ? LIMIT 1",
                    (appid, now_ms),
                ).fetchone()
                if due is not None:
                    apps.append(appid)
                row = conn.execute(
                    f"SELECT appid FROM {_PENDING_PUSHES} WHERE {_PENDING_PUSH} AND appid > ?"
                    " ORDER BY appid LIMIT 1",
                    (appid,),
                ).fetchone()
            return apps

        return await self._read(read)

    async def next_push_due_at(self, appid: str) -> int | None:
        def read(conn: sqlite3.Connection) -> int | None:
            row = conn.execute(
                f"SELECT next_attempt_at FROM {_PENDING_PUSHES} WHERE {_PENDING_PUSH} AND appid = ?"
                " ORDER BY next_attempt_at LIMIT 1",
                (appid,),
            ).fetchone()
            return None if row is None else int(row[0])

        return await self._read(read)

    async def record_push_result(
        self,
        push_ids: Sequence[int],
        ok: bool,
        error: str | None,
        now_ms: int,
        max_attempts: int,
        retry_at_ms: int,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        if not push_ids:
            return
        ids = tuple(push_ids)

        def op(conn: sqlite3.Connection) -> None:
            # Only pending pushes change: a late result for a done/abandoned push is ignored.
            if ok:
                conn.executemany(
                    "UPDATE pushes SET state = 'done', attempts = attempts + 1, updated_at = ?"
                    f" WHERE id = ? AND {_PENDING_PUSH}",
                    [(now_ms, push_id) for push_id in ids],
                )
            else:
                conn.executemany(
                    "UPDATE pushes SET attempts = attempts + 1,"
                    " state = CASE WHEN attempts + 1 >= ? THEN 'abandoned' ELSE 'pending' END,"
                    " next_attempt_at = ?, last_error = COALESCE(?, last_error), updated_at = ?"
                    f" WHERE id = ? AND {_PENDING_PUSH}",
                    [(max_attempts, retry_at_ms, error, now_ms, push_id) for push_id in ids],
                )

        await self._write(op, weight=len(ids))

    # ------------------------------------------------------------------ queries

    async def history(self, msgid: str, appid: str | None = None) -> list[MessageHistory]:
        def read(conn: sqlite3.Connection) -> list[MessageHistory]:
            conn.execute("BEGIN")  # one snapshot for all the queries
            try:
                return _history(conn, msgid, appid)
            finally:
                conn.execute("COMMIT")

        return await self._read(read)

    async def counts(self) -> dict[str, int]:
        return await self._counts("SELECT state, COUNT(*) FROM messages GROUP BY state", State)

    async def push_counts(self) -> dict[str, int]:
        return await self._counts("SELECT state, COUNT(*) FROM pushes GROUP BY state", PushState)

    async def _counts(self, sql: str, states: Iterable[str]) -> dict[str, int]:
        """Every state of `states` with its count (0 for none) by `sql`'s (state, count)."""

        def read(conn: sqlite3.Connection) -> dict[str, int]:
            counts = {str(state): 0 for state in states}
            for state, count in conn.execute(sql):
                counts[state] = count
            return counts

        return await self._read(read)

    # ------------------------------------------------------------------ retention

    async def delete_finished(self, final_before_ms: int, limit: int) -> int:
        # events, message_parts and pushes follow by ON DELETE CASCADE.
        return await self._delete_oldest(_DELETE_FINISHED_SQL, final_before_ms, limit)

    async def delete_inbound(self, received_before_ms: int, limit: int) -> int:
        return await self._delete_oldest(_DELETE_INBOUND_SQL, received_before_ms, limit)

    async def _delete_oldest(self, sql: str, before_ms: int, limit: int) -> int:
        _check_limit(limit)
        if not limit:
            return 0

        def op(conn: sqlite3.Connection) -> int:
            return conn.execute(sql, (before_ms, limit)).rowcount

        return await self._write(op, weight=limit)

    # ------------------------------------------------------------------ inbound

    async def insert_inbound(self, messages: Sequence[MobileOriginated]) -> None:
        if not messages:
            return
        rows = [inbound_row(mo) for mo in messages]

        def op(conn: sqlite3.Connection) -> None:
            conn.executemany(
                f"INSERT INTO inbound ({INBOUND_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

        await self._write(op, weight=len(rows))

    async def recent_inbound(
        self, limit: int, *, before_id: int | None = None
    ) -> list[InboundRecord]:
        _check_limit(limit)

        def read(conn: sqlite3.Connection) -> list[InboundRecord]:
            found = conn.execute(
                f"SELECT id, {INBOUND_COLUMNS} FROM inbound WHERE id < ? ORDER BY id DESC LIMIT ?",
                (before_id if before_id is not None else 2**63 - 1, limit),
            ).fetchall()
            return [inbound_record(row) for row in found]

        return await self._read(read)
