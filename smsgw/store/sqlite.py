"""The SQLite store: WAL, synchronous=FULL, one writer task doing group commits.

Every write is an *op*: a function run against the writer connection. Callers queue ops;
the writer task takes the first queued op plus whatever else is queued (up to a cap), runs
them all in ONE transaction in a worker thread — an op that raises is rolled back alone (the
group is then run again with a SAVEPOINT per op) — commits once (one fsync for the whole
group), then wakes each caller with its result. While a commit runs, new ops accumulate for
the next group.

Reads use separate query_only connections in worker threads, so they never wait for a
commit (WAL readers see the last committed state).

sqlite3 connections are created with check_same_thread=False because trio's worker
threads are pooled; each connection is still used by one thread at a time (the writer
connection only by the writer task, a reader only by the read that checked it out).
"""

from __future__ import annotations

import collections
import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, Generic, TypeVar, cast

import attrs
import trio

from smsgw.carriers.base import MobileOriginated
from smsgw.store.base import (
    FINAL_STATES,
    WAITING_STATES,
    CommitFailed,
    Event,
    EventKind,
    InboundRecord,
    MessageHistory,
    MessageRecord,
    MessageUpdate,
    NewMessage,
    PartMatch,
    PartRecord,
    PartReport,
    PushRecord,
    PushState,
    RecoveryReport,
    State,
    StoreClosed,
    StoreError,
    UnknownMessage,
)

T = TypeVar("T")
OpFn = Callable[[sqlite3.Connection], T]

DEFAULT_MAX_GROUP_OPS: Final = 2_000
DEFAULT_MAX_GROUP_ROWS: Final = 20_000
DEFAULT_READERS: Final = 4
BUSY_TIMEOUT_S: Final = 10.0
# The writer's page cache. Small on purpose: RAM must not grow with the backlog (bench/
# pipeline.py compares 100,000 queued against 1,000); the OS page cache holds the rest.
CACHE_KIB: Final = 4_096

# Ordered migrations: version N is MIGRATIONS[N - 1]. Append, never edit a released one.
# Foreign keys are DEFERRABLE INITIALLY DEFERRED: checked at COMMIT, so a group that would
# leave an orphan fails as a whole (and rows may be written in any order inside a group).
MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        """CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            appid TEXT NOT NULL,
            msgid TEXT NOT NULL,
            phone TEXT NOT NULL,
            message TEXT NOT NULL,
            msgtype INTEGER NOT NULL,
            segments INTEGER NOT NULL,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            accepted_at INTEGER NOT NULL,
            next_attempt_at INTEGER,
            submitted_at INTEGER,
            final_at INTEGER,
            carrier_msgid TEXT,
            stat TEXT,
            error TEXT
        )""",
        # The idempotency key; msgid first so `smsgw status MSGID` without an appid uses it.
        "CREATE UNIQUE INDEX messages_key ON messages (msgid, appid, phone)",
        # Waiting rows in due order: claim_due / next_due_at read it with a LIMIT, so they
        # stay fast however many rows wait. The WHERE must match the queries' text exactly.
        """CREATE INDEX messages_due ON messages (next_attempt_at)
            WHERE state IN ('accepted', 'scheduled')""",
        # counts() and recover() (queued / submitting rows).
        "CREATE INDEX messages_state ON messages (state)",
        """CREATE TABLE message_parts (
            message_id INTEGER NOT NULL
                REFERENCES messages (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
            part_no INTEGER NOT NULL,
            carrier_msgid TEXT NOT NULL,
            reported INTEGER NOT NULL DEFAULT 0,
            delivered INTEGER NOT NULL DEFAULT 0,
            stat TEXT,
            reported_at INTEGER,
            PRIMARY KEY (message_id, part_no)
        ) WITHOUT ROWID""",
        "CREATE INDEX message_parts_carrier ON message_parts (carrier_msgid)",
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            message_id INTEGER NOT NULL
                REFERENCES messages (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
            kind TEXT NOT NULL,
            at INTEGER NOT NULL,
            attempt INTEGER NOT NULL,
            stat TEXT,
            error TEXT,
            carrier_msgid TEXT
        )""",
        "CREATE INDEX events_message ON events (message_id)",
        """CREATE TABLE pushes (
            id INTEGER PRIMARY KEY,
            appid TEXT NOT NULL,
            message_id INTEGER NOT NULL
                REFERENCES messages (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
            kind TEXT NOT NULL,
            body TEXT NOT NULL,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at INTEGER NOT NULL,
            last_error TEXT,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL
        )""",
        """CREATE INDEX pushes_due ON pushes (appid, next_attempt_at)
            WHERE state = 'pending'""",
        "CREATE INDEX pushes_message ON pushes (message_id)",
        "CREATE INDEX pushes_state ON pushes (state)",
    ),
    # 2: messages waiting for a delivery report, by when they went out (report timeout).
    (
        """CREATE INDEX messages_awaiting_report ON messages (submitted_at)
            WHERE state = 'submitted'""",
    ),
    # 3: the "accepted" event is the message row's accepted_at (`_history` puts it first),
    # not a row of its own: a third of what storing an accepted message cost.
    ("DELETE FROM events WHERE kind = 'accepted'",),
    # 4: mobile-originated messages (replies from handsets).
    (
        """CREATE TABLE inbound (
            id INTEGER PRIMARY KEY,
            source_addr TEXT NOT NULL,
            destination_addr TEXT NOT NULL,
            text TEXT NOT NULL,
            data_coding INTEGER NOT NULL,
            esm_class INTEGER NOT NULL,
            udh BLOB NOT NULL,
            received_at INTEGER NOT NULL
        )""",
    ),
    # 5: retention (SMSGW_RETENTION) finds old rows without reading the others.
    (
        """CREATE INDEX messages_finished ON messages (final_at)
            WHERE final_at IS NOT NULL""",
        "CREATE INDEX inbound_received ON inbound (received_at)",
    ),
)
SCHEMA_VERSION: Final = len(MIGRATIONS)

_MESSAGE_COLUMNS: Final = (
    "id, appid, msgid, phone, message, msgtype, segments, state, attempts, accepted_at,"
    " next_attempt_at, submitted_at, final_at, carrier_msgid, stat, error"
)
_PUSH_COLUMNS: Final = (
    "id, appid, message_id, kind, body, state, attempts, next_attempt_at, last_error, updated_at"
)
# The partial indexes are usable only by queries that repeat their WHERE verbatim, and the
# planner would rather pick the plain state index and sort: INDEXED BY pins them (and
# fails loudly if a query stops matching).
_WAITING: Final = "state IN ('accepted', 'scheduled')"
_WAITING_ROWS: Final = "messages INDEXED BY messages_due"
_PENDING_PUSH: Final = "state = 'pending'"
_PENDING_PUSHES: Final = "pushes INDEXED BY pushes_due"
# The dispatcher's hot queries (public for the query-plan test).
CLAIM_SQL: Final = (
    f"SELECT {_MESSAGE_COLUMNS} FROM {_WAITING_ROWS} WHERE {_WAITING}"
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
_UPDATE_MESSAGE: Final = (
    "UPDATE messages SET state = ?, attempts = COALESCE(?, attempts), next_attempt_at = ?,"
    " carrier_msgid = COALESCE(?, carrier_msgid), submitted_at = COALESCE(?, submitted_at),"
    " final_at = ?, stat = COALESCE(?, stat),"
    " error = CASE WHEN ? THEN NULL ELSE COALESCE(?, error) END"
    " WHERE id = ? RETURNING appid"
)
# SUBMITTED rows (messages_state index) with parts, none unreported; each with its part
# reported last (latest report time, then highest number).
_REPORTED_SUBMITTED_SQL: Final = (
    "SELECT m.id, (SELECT p.part_no FROM message_parts p WHERE p.message_id = m.id"
    " ORDER BY p.reported_at DESC, p.part_no DESC LIMIT 1)"
    " FROM messages m WHERE m.state = 'submitted'"
    " AND EXISTS (SELECT 1 FROM message_parts p WHERE p.message_id = m.id)"
    " AND NOT EXISTS (SELECT 1 FROM message_parts p WHERE p.message_id = m.id AND NOT p.reported)"
    " ORDER BY m.id"
)
# The report path's queries (public for the query-plan test). The first marks the part a
# report is for, when one waits for it: of the parts with the id, the newest message's
# (operators may recycle ids; `_find_part` has the same preference).
TAKE_PART_REPORT_SQL: Final = (
    "UPDATE message_parts SET reported = 1, delivered = ?, stat = ?, reported_at = ?"
    " WHERE (message_id, part_no) = (SELECT message_id, part_no FROM message_parts"
    " WHERE carrier_msgid = ? AND NOT reported ORDER BY message_id DESC LIMIT 1)"
    " RETURNING message_id, part_no"
)
_MESSAGE_COLUMN_NAMES: Final = tuple(name.strip() for name in _MESSAGE_COLUMNS.split(","))
MESSAGE_WITH_PARTS_SQL: Final = (
    f"SELECT {', '.join(f'm.{name}' for name in _MESSAGE_COLUMN_NAMES)},"
    " p.part_no, p.carrier_msgid, p.reported, p.delivered, p.stat, p.reported_at"
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
    "INSERT INTO pushes (appid, message_id, kind, body, state, attempts, next_attempt_at,"
    " created_at, updated_at) VALUES (?, ?, ?, ?, 'pending', 0, ?, ?, ?)"
)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _message(row: Sequence[Any]) -> MessageRecord:
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
    )


def _push(row: Sequence[Any]) -> PushRecord:
    return PushRecord(
        id=row[0],
        appid=row[1],
        message_id=row[2],
        kind=row[3],
        body=row[4],
        state=PushState(row[5]),
        attempts=row[6],
        next_attempt_at_ms=row[7],
        last_error=row[8],
        updated_at_ms=row[9],
    )


def _store_error(what: str, exc: sqlite3.Error) -> StoreError:
    error = StoreError(f"{what}: {exc}")
    error.__cause__ = exc
    return error


def _check_limit(limit: int) -> None:
    if limit < 0:
        raise ValueError(f"limit must not be negative, got {limit}")


@attrs.define(eq=False)
class _Op(Generic[T]):
    """One queued write and, once the writer ran it, its outcome."""

    fn: OpFn[T]
    weight: int  # rows it touches, roughly: bounds the size of a group
    # Given the result, a compensating write to queue when the caller stopped waiting after
    # the op was taken (claim_due: put the claimed rows back).
    undo: Callable[[T], OpFn[object]] | None = None
    done: trio.Event = attrs.field(factory=trio.Event)
    taken: bool = False  # handed to the writer: it will be committed
    cancelled: bool = False  # the caller left before the writer took it: skip it
    abandoned: bool = False  # the caller left after the writer took it
    result: T | None = None
    error: BaseException | None = None


class SqliteStore:
    """The embedded store (see the module doc). `commit_count` counts successful commits."""

    def __init__(
        self,
        path: str,
        *,
        max_group_ops: int = DEFAULT_MAX_GROUP_OPS,
        max_group_rows: int = DEFAULT_MAX_GROUP_ROWS,
        readers: int = DEFAULT_READERS,
        read_only: bool = False,
    ) -> None:
        if not path or path == ":memory:" or path.startswith("file:"):
            raise ValueError(f"SQLite store needs a file path, got {path!r}")
        if max_group_ops < 1 or max_group_rows < 1 or readers < 1:
            raise ValueError("max_group_ops, max_group_rows and readers must be at least 1")
        self.path = path
        # Read-only (`smsgw status`, `smsgw inbox`): no writer, no migration, and a database
        # of another schema version refused rather than changed under a running gateway.
        self.read_only = read_only
        self.max_group_ops = max_group_ops
        self.max_group_rows = max_group_rows
        self.commit_count = 0  # successful group commits (tests, metrics)
        self.ops_committed = 0  # ops those commits carried
        self._read_limiter = trio.CapacityLimiter(readers)
        self._writer: sqlite3.Connection | None = None
        self._idle_readers: list[sqlite3.Connection] = []
        self._queue: collections.deque[_Op[Any]] = collections.deque()
        self._wakeup = trio.Event()
        self._started = False
        self._running = False

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r})"

    # ------------------------------------------------------------------ lifecycle

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self._started:
            raise RuntimeError("SqliteStore.run() can only be called once")
        self._started = True
        if self.read_only:
            await self._run_read_only(task_status)
            return
        self._writer = await trio.to_thread.run_sync(self._open_writer)
        try:
            self._running = True
            task_status.started()
            await self._writer_loop()
        finally:
            self._running = False
            # Commit what callers already handed over (their B001 may still be sent), then
            # close. Shielded: this is the flush of a shutdown.
            with trio.CancelScope(shield=True):
                while self._queue:
                    group = self._take_group()
                    if group:
                        await self._commit(group)
                await trio.to_thread.run_sync(self._close_connections)

    async def _run_read_only(self, task_status: trio.TaskStatus[None]) -> None:
        await trio.to_thread.run_sync(self._check_readable)
        try:
            self._running = True
            task_status.started()
            await trio.sleep_forever()
        finally:
            self._running = False
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._close_connections)

    def _check_readable(self) -> None:
        if not os.path.exists(self.path):  # connecting would create an empty one
            raise StoreError(f"no SQLite database at {self.path!r}")
        conn = self._open_reader()
        try:
            version = schema_version(conn)
        except sqlite3.Error as exc:
            raise _store_error(f"cannot read SQLite database {self.path!r}", exc) from exc
        finally:
            conn.close()
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"the database {self.path!r} has schema version {version}, this smsgw reads"
                f" version {SCHEMA_VERSION}: `smsgw serve` of this version migrates it"
            )

    def _open_writer(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_S
            )
        except sqlite3.Error as exc:
            raise _store_error(f"cannot open SQLite database {self.path!r}", exc) from exc
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(
                    f"SQLite database {self.path!r} cannot use WAL mode (got {mode!r})"
                )
            conn.execute("PRAGMA synchronous=FULL")  # durable when COMMIT returns
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            # The sub-journals that let each op's SAVEPOINT roll back alone live in memory
            # (at most one op's pages: emptied at each RELEASE), not in a temporary file:
            # otherwise a dozen or more write() calls for every message sent.
            conn.execute("PRAGMA temp_store=MEMORY")
            migrate(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise _store_error(f"cannot prepare SQLite database {self.path!r}", exc) from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _open_reader(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_S
            )
            conn.execute("PRAGMA query_only=ON")
        except sqlite3.Error as exc:
            raise _store_error(f"cannot open SQLite database {self.path!r}", exc) from exc
        return conn

    def _close_connections(self) -> None:
        readers, self._idle_readers = self._idle_readers, []
        for conn in readers:
            conn.close()
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # ------------------------------------------------------------------ the writer

    async def _write(
        self,
        fn: OpFn[T],
        weight: int = 1,
        undo: Callable[[T], OpFn[object]] | None = None,
    ) -> T:
        """Queue a write for the next group commit and wait until it is durable."""
        if not self._running:
            raise StoreClosed("the store is not running")
        if self.read_only:
            raise StoreError("the store was opened read-only")
        op: _Op[T] = _Op(fn, max(1, weight), undo)
        self._queue.append(op)
        self._wakeup.set()
        try:
            await op.done.wait()
        except BaseException:
            if not op.taken:
                op.cancelled = True  # still queued: it will never run
            elif op.done.is_set():
                self._queue_undo(op)  # committed, but the caller will not see the result
            else:
                op.abandoned = True  # being committed: the writer undoes it afterwards
            raise
        if op.error is not None:
            raise op.error
        return cast(T, op.result)

    async def _writer_loop(self) -> None:
        while True:
            group = self._take_group()
            if not group:
                # No checkpoint between the empty check and the new Event: no lost wakeup.
                self._wakeup = trio.Event()
                await self._wakeup.wait()
                continue
            await self._commit(group)

    def _take_group(self) -> list[_Op[Any]]:
        group: list[_Op[Any]] = []
        rows = 0
        queue = self._queue
        while queue and len(group) < self.max_group_ops:
            op = queue[0]
            if op.cancelled:
                queue.popleft()
                continue
            if group and rows + op.weight > self.max_group_rows:
                break
            queue.popleft()
            op.taken = True
            group.append(op)
            rows += op.weight
        return group

    async def _commit(self, group: list[_Op[Any]]) -> None:
        try:
            # The ops are taken: they must run and their callers be woken, so neither the
            # thread nor the start of it may be cancelled.
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._run_group, group)
        except Exception as exc:  # a bug in _run_group itself: fail the group, keep serving
            for op in group:
                op.result = None
                op.error = CommitFailed(f"group commit failed: {exc!r}")
                op.error.__cause__ = exc
        for op in group:
            op.done.set()
            if op.abandoned:
                self._queue_undo(op)

    def _queue_undo(self, op: _Op[Any]) -> None:
        if op.undo is None or op.error is not None:
            return
        self._queue.append(_Op(op.undo(op.result), 1))
        self._wakeup.set()

    def _run_group(self, group: list[_Op[Any]]) -> None:
        """In a worker thread: run the group in one transaction. An op that raises must
        leave no trace while the others commit; rather than a SAVEPOINT around every op (two
        statements each, for the rare failure), the ops run bare and, if one raises, the
        transaction is rolled back and the group run again with a SAVEPOINT per op."""
        conn = self._writer
        assert conn is not None
        try:
            conn.execute("BEGIN IMMEDIATE")
            if not _run_ops(conn, group):
                conn.execute("ROLLBACK")
                conn.execute("BEGIN IMMEDIATE")
                _run_ops_isolated(conn, group)
            conn.execute("COMMIT")
        except Exception as exc:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            for op in group:
                op.result = None
                op.error = CommitFailed(f"group commit failed, nothing stored: {exc}")
                op.error.__cause__ = exc
            return
        self.commit_count += 1
        self.ops_committed += len(group)

    # ------------------------------------------------------------------ reads

    async def _read(self, fn: OpFn[T]) -> T:
        if not self._running:
            raise StoreClosed("the store is not running")
        async with self._read_limiter:
            if self._idle_readers:
                conn = self._idle_readers.pop()
            else:
                conn = await trio.to_thread.run_sync(self._open_reader)
            try:
                return await trio.to_thread.run_sync(_run_read, fn, conn)
            finally:
                if self._running:
                    self._idle_readers.append(conn)
                else:
                    conn.close()

    # ------------------------------------------------------------------ accept path

    async def insert_messages(self, messages: Sequence[NewMessage], now_ms: int) -> list[bool]:
        if not messages:
            return []
        return await self._write(_insert_op(tuple(messages), now_ms), weight=len(messages))

    # ------------------------------------------------------------------ pipeline

    async def recover(self, now_ms: int) -> RecoveryReport:
        return await self._write(_recover_op)

    async def claim_due(self, now_ms: int, limit: int) -> list[MessageRecord]:
        _check_limit(limit)
        if limit == 0:
            return []
        return await self._write(_claim_op(now_ms, limit), weight=limit, undo=_unclaim_op)

    async def next_due_at(self) -> int | None:
        return await self._read(_next_due_at)

    async def overdue_submitted(self, submitted_before_ms: int, limit: int) -> list[MessageRecord]:
        def read(conn: sqlite3.Connection) -> list[MessageRecord]:
            rows = conn.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages INDEXED BY messages_awaiting_report"
                " WHERE state = 'submitted' AND submitted_at < ? ORDER BY submitted_at LIMIT ?",
                (submitted_before_ms, limit),
            ).fetchall()
            return [_message(row) for row in rows]

        return await self._read(read)

    async def apply(self, updates: Sequence[MessageUpdate]) -> None:
        if not updates:
            return
        rows = sum(2 + len(u.part_ids) + len(u.pushes) for u in updates)
        await self._write(_apply_op(tuple(updates)), weight=rows)

    async def find_by_part_id(self, carrier_msgid: str) -> PartMatch | None:
        def read(conn: sqlite3.Connection) -> PartMatch | None:
            part = _find_part(conn, carrier_msgid)
            if part is None:
                return None
            return _part_match(conn, part[0], part[1], duplicate=False)

        return await self._read(read)

    async def record_part_reports(self, reports: Sequence[PartReport]) -> list[PartMatch | None]:
        if not reports:
            return []
        return await self._write(_part_reports_op(tuple(reports)), weight=len(reports))

    # ------------------------------------------------------------------ pushes

    async def due_pushes(self, appid: str, now_ms: int, limit: int) -> list[PushRecord]:
        _check_limit(limit)

        def read(conn: sqlite3.Connection) -> list[PushRecord]:
            rows = conn.execute(
                f"SELECT {_PUSH_COLUMNS} FROM {_PENDING_PUSHES} WHERE {_PENDING_PUSH} AND appid = ?"
                " AND next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT ?",
                (appid, now_ms, limit),
            ).fetchall()
            return [_push(row) for row in rows]

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
        def read(conn: sqlite3.Connection) -> dict[str, int]:
            counts = {str(state): 0 for state in State}
            for state, count in conn.execute("SELECT state, COUNT(*) FROM messages GROUP BY state"):
                counts[state] = count
            return counts

        return await self._read(read)

    async def push_counts(self) -> dict[str, int]:
        def read(conn: sqlite3.Connection) -> dict[str, int]:
            counts = {str(state): 0 for state in PushState}
            for state, count in conn.execute("SELECT state, COUNT(*) FROM pushes GROUP BY state"):
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
        rows = [
            (
                mo.source_addr,
                mo.destination_addr,
                mo.text,
                mo.data_coding,
                mo.esm_class,
                mo.udh,
                mo.at_ms,
            )
            for mo in messages
        ]

        def op(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO inbound (source_addr, destination_addr, text, data_coding,"
                " esm_class, udh, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

        await self._write(op, weight=len(rows))

    async def recent_inbound(
        self, limit: int, *, before_id: int | None = None
    ) -> list[InboundRecord]:
        _check_limit(limit)

        def read(conn: sqlite3.Connection) -> list[InboundRecord]:
            found = conn.execute(
                "SELECT id, source_addr, destination_addr, text, data_coding, esm_class, udh,"
                " received_at FROM inbound WHERE id < ? ORDER BY id DESC LIMIT ?",
                (before_id if before_id is not None else 2**63 - 1, limit),
            ).fetchall()
            return [InboundRecord(row[0], MobileOriginated(*row[1:])) for row in found]

        return await self._read(read)


# ---------------------------------------------------------------------- schema


def schema_version(conn: sqlite3.Connection) -> int:
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if row is None:
        return 0
    return int(conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0])


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the missing migrations, each in its own transaction; return the version."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version"
        " (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)"
    )
    for version in range(1, SCHEMA_VERSION + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Read under the write lock: another process may have migrated meanwhile.
            current = schema_version(conn)
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"the database schema is version {current}, newer than this smsgw"
                    f" supports ({SCHEMA_VERSION}): upgrade smsgw"
                )
            if current < version:
                for statement in MIGRATIONS[version - 1]:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                    (version, _now_ms()),
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    current = schema_version(conn)
    if current > SCHEMA_VERSION:
        raise StoreError(
            f"the database schema is version {current}, newer than this smsgw"
            f" supports ({SCHEMA_VERSION}): upgrade smsgw"
        )
    return current


# ---------------------------------------------------------------------- ops (worker thread)


def _run_ops(conn: sqlite3.Connection, group: list[_Op[Any]]) -> bool:
    """Run the ops in the open transaction; False as soon as one raises (the caller rolls
    back: the ops' writes cannot be told apart). Raises when SQLite itself ended the
    transaction (I/O error, disk full)."""
    for op in group:
        try:
            op.result = op.fn(conn)
        except Exception:
            if not conn.in_transaction:
                raise
            return False
    return True


def _run_ops_isolated(conn: sqlite3.Connection, group: list[_Op[Any]]) -> None:
    """Run the ops, each in its own SAVEPOINT: one that raises is rolled back alone and
    gets its error; the others keep their writes."""
    for op in group:
        conn.execute("SAVEPOINT op")
        try:
            op.result = op.fn(conn)
        except Exception as exc:
            op.result = None
            op.error = _store_error("write failed", exc) if isinstance(exc, sqlite3.Error) else exc
            if not conn.in_transaction:
                # SQLite rolled the whole transaction back (I/O error, disk full): the ops
                # before this one are gone too.
                raise
            conn.execute("ROLLBACK TO op")
        conn.execute("RELEASE op")


def _run_read(fn: OpFn[T], conn: sqlite3.Connection) -> T:
    try:
        return fn(conn)
    except sqlite3.Error as exc:
        raise _store_error("read failed", exc) from exc
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")


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


def _recover_op(conn: sqlite3.Connection) -> RecoveryReport:
    # QUEUED rows never left the gateway: waiting again, due when they were due.
    requeued = conn.execute(
        "UPDATE messages SET state = 'accepted' WHERE state = 'queued'"
    ).rowcount
    in_doubt = conn.execute(
        f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE state = 'submitting' ORDER BY id"
    ).fetchall()
    pending = conn.execute(
        f"SELECT COUNT(*) FROM {_PENDING_PUSHES} WHERE {_PENDING_PUSH}"
    ).fetchone()[0]
    # Every part reported, yet still SUBMITTED: the crash came between record_part_reports
    # and the final apply. No report will come again (a repeat counts as a duplicate).
    reported = [
        _part_match(conn, message_id, part_no, duplicate=False)
        for message_id, part_no in conn.execute(_REPORTED_SUBMITTED_SQL).fetchall()
    ]
    return RecoveryReport(
        requeued=requeued,
        in_doubt=tuple(_message(row) for row in in_doubt),
        pending_pushes=int(pending),
        reported=tuple(reported),
    )


def _claim_op(now_ms: int, limit: int) -> OpFn[list[MessageRecord]]:
    def op(conn: sqlite3.Connection) -> list[MessageRecord]:
        rows = conn.execute(CLAIM_SQL, (now_ms, limit)).fetchall()
        conn.executemany(
            "UPDATE messages SET state = 'queued' WHERE id = ?", [(row[0],) for row in rows]
        )
        return [attrs.evolve(_message(row), state=State.QUEUED) for row in rows]

    return op


def _unclaim_op(claimed: list[MessageRecord]) -> OpFn[object]:
    ids = [(record.id,) for record in claimed]

    def op(conn: sqlite3.Connection) -> object:
        conn.executemany(
            "UPDATE messages SET state = 'accepted' WHERE id = ? AND state = 'queued'", ids
        )
        return None

    return op


def _next_due_at(conn: sqlite3.Connection) -> int | None:
    row = conn.execute(NEXT_DUE_SQL).fetchone()
    return None if row is None else int(row[0])


def _apply_op(updates: tuple[MessageUpdate, ...]) -> OpFn[None]:
    def op(conn: sqlite3.Connection) -> None:
        for update in updates:
            _apply_one(conn, update)

    return op


def _apply_one(conn: sqlite3.Connection, u: MessageUpdate) -> None:
    state = State(u.state)
    at_ms = u.event.at_ms
    if state in WAITING_STATES:
        next_attempt_at: int | None = (
            u.next_attempt_at_ms if u.next_attempt_at_ms is not None else at_ms
        )
    else:
        next_attempt_at = None
    rows = conn.execute(
        _UPDATE_MESSAGE,
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
            u.message_id,
        ),
    ).fetchall()
    if not rows:
        raise UnknownMessage(u.message_id)
    appid: str = rows[0][0]
    e = u.event
    conn.execute(
        _INSERT_EVENT,
        (u.message_id, e.kind, e.at_ms, e.attempt, e.stat, e.error, e.carrier_msgid),
    )
    part_ids = u.part_ids or ((u.carrier_msgid,) if u.carrier_msgid is not None else ())
    if part_ids:
        # A new attempt's ids replace the previous attempt's: reports match the latest send.
        conn.execute("DELETE FROM message_parts WHERE message_id = ?", (u.message_id,))
        conn.executemany(
            "INSERT INTO message_parts (message_id, part_no, carrier_msgid) VALUES (?, ?, ?)",
            [(u.message_id, number, part_id) for number, part_id in enumerate(part_ids, 1)],
        )
    if u.pushes:
        conn.executemany(
            _INSERT_PUSH,
            [(appid, u.message_id, p.kind, p.body, at_ms, at_ms, at_ms) for p in u.pushes],
        )


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
    reported = delivered = failed = 0
    failed_stat: str | None = None  # of the first part (by number) reported not delivered
    part: PartRecord | None = None
    for row in rows:
        part_columns = row[len(_MESSAGE_COLUMN_NAMES) :]
        number, carrier_msgid, was_reported, was_delivered, stat, reported_at = part_columns
        if was_reported:
            reported += 1
            if was_delivered:
                delivered += 1
            else:
                if not failed:
                    failed_stat = stat
                failed += 1
        if number == part_no:
            part = PartRecord(
                number, carrier_msgid, bool(was_reported), bool(was_delivered), stat, reported_at
            )
    if part is None:
        raise UnknownMessage(message_id)  # the caller found the part: cannot happen
    return PartMatch(
        message=_message(rows[0]),
        part_no=part_no,
        part=part,
        parts=len(rows),
        reported=reported,
        delivered=delivered,
        failed_stat=failed_stat,
        duplicate=duplicate,
    )


def _part_reports_op(reports: tuple[PartReport, ...]) -> OpFn[list[PartMatch | None]]:
    def op(conn: sqlite3.Connection) -> list[PartMatch | None]:
        return [_record_part_report(conn, report) for report in reports]

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


def _history(conn: sqlite3.Connection, msgid: str, appid: str | None) -> list[MessageHistory]:
    if appid is None:
        rows = conn.execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE msgid = ? ORDER BY appid, phone, id",
            (msgid,),
        ).fetchall()
    else:
        rows = conn.execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE msgid = ? AND appid = ?"
            " ORDER BY phone, id",
            (msgid, appid),
        ).fetchall()
    histories: list[MessageHistory] = []
    for row in rows:
        message = _message(row)
        accepted = Event(EventKind.ACCEPTED.value, message.accepted_at_ms, 0)
        stored_events = conn.execute(
            "SELECT kind, at, attempt, stat, error, carrier_msgid FROM events"
            " WHERE message_id = ? ORDER BY id",
            (message.id,),
        )
        events = (accepted, *(Event(*event) for event in stored_events))
        parts = tuple(
            PartRecord(part_no, carrier_msgid, bool(reported), bool(delivered), stat, at)
            for part_no, carrier_msgid, reported, delivered, stat, at in conn.execute(
                "SELECT part_no, carrier_msgid, reported, delivered, stat, reported_at"
                " FROM message_parts WHERE message_id = ? ORDER BY part_no",
                (message.id,),
            )
        )
        pushes = tuple(
            _push(push)
            for push in conn.execute(
                f"SELECT {_PUSH_COLUMNS} FROM pushes WHERE message_id = ? ORDER BY id",
                (message.id,),
            )
        )
        histories.append(MessageHistory(message, events, parts, pushes))
    return histories
