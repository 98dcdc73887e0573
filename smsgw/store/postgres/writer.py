"""The PostgreSQL writer: group commits from one connection, one thread hop per group.

Callers queue ops; the writer task takes the first queued op plus whatever else is queued
(up to a cap) and runs them in ONE transaction in a worker thread: every accept of the group
as one multi-row insert, then the other ops in order, then at most one NOTIFY, then COMMIT.
An op that raises is rolled back alone (the group is run again with a SAVEPOINT per op).
Ops that record parts or reports name their operator ids: the group locks them all, in
order, before anything else (`queries.begin`), so groups of two gateways cannot
deadlock on them; a group that is chosen as a deadlock victim anyway (row locks) or fails
to serialize is rolled back and run again whole.

The connection is the writer's alone. When it is lost (server restarted, network gone), a
group that had not yet sent COMMIT is run again once on a new connection; one whose COMMIT
was in flight fails with CommitFailed (its outcome is unknown: the callers answer "retry",
and a retried accept is idempotent). While the server cannot be reached, each group tries to
connect once and fails at once: callers get StoreError, never a success for nothing stored.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, TypeVar, cast

import attrs
import psycopg
import trio

from smsgw.store.base import (
    Applied,
    CommitFailed,
    MessageUpdate,
    NewMessage,
    StoreClosed,
    StoreError,
)
from smsgw.store.group import GroupCommits, QueuedOp
from smsgw.store.postgres import queries
from smsgw.store.postgres.notify import Wakes, notify_and_commit

log = logging.getLogger("smsgw.store.postgres")

T = TypeVar("T")
OpFn = Callable[[queries.Conn, Wakes], T]
Accept = tuple[Sequence[NewMessage], int]  # messages, now_ms

DEFAULT_MAX_GROUP_OPS: Final = 2_000
DEFAULT_MAX_GROUP_ROWS: Final = 20_000
# PostgreSQL's lock table is shared and small (max_locks_per_transaction x max_connections,
# 6,400 by default): a group holds at most this many part id locks (one op may hold more).
DEFAULT_MAX_GROUP_LOCKS: Final = 1_000
# Runs of a group that PostgreSQL rolled back as a deadlock victim or serialization failure.
ROLLED_BACK_RUNS: Final = 5


@attrs.define(eq=False, kw_only=True)
class _Op(QueuedOp[T]):
    """`locks`: queries.part_lock_keys of the ids it records."""

    fn: OpFn[T] | None  # None for an accept or an apply: batched across the group's ops
    accept: Accept | None = None
    updates: tuple[MessageUpdate, ...] | None = None
    undo: Callable[[T], OpFn[object]] | None = None  # see `QueuedOp.undo_op`

    def undo_op(self) -> _Op[object] | None:
        if self.undo is None:
            return None
        return _Op(fn=self.undo(cast(T, self.result)), weight=1)


def _lost(conn: queries.Conn) -> bool:
    return conn.closed or conn.broken


def _rolled_back(exc: Exception) -> bool:
    """The server rolled the transaction back (class 40: deadlock victim, serialization
    failure): nothing of it is stored and it may simply be run again."""
    return isinstance(exc, psycopg.Error) and (exc.sqlstate or "").startswith("40")


def _op_error(exc: Exception) -> BaseException:
    if isinstance(exc, psycopg.Error):
        error = StoreError(f"write failed: {exc}")
        error.__cause__ = exc
        return error
    return exc


class Writer(GroupCommits):
    """Group commits on a connection from `connect` (called in a worker thread)."""

    def __init__(
        self,
        connect: Callable[[], queries.Conn],
        describe: Callable[[BaseException], str],
        *,
        max_group_ops: int = DEFAULT_MAX_GROUP_OPS,
        max_group_rows: int = DEFAULT_MAX_GROUP_ROWS,
        max_group_locks: int = DEFAULT_MAX_GROUP_LOCKS,
    ) -> None:
        if max_group_ops < 1 or max_group_rows < 1 or max_group_locks < 1:
            raise ValueError("max_group_ops, max_group_rows and max_group_locks must be at least 1")
        super().__init__(max_group_ops, max_group_rows, max_group_locks)
        self._connect = connect
        self._describe = describe  # an error as one line, without secrets
        self.rolled_back_runs = 0  # deadlock victims and serialization failures, run again
        self.reconnects = 0
        self.backend_pid: int | None = None  # of the current connection (own NOTIFYs)
        self.running = False
        self._conn: queries.Conn | None = None

    # ------------------------------------------------------------------ callers

    def open(self, conn: queries.Conn) -> None:
        """Start with an already opened (and migrated) connection."""
        self._conn = conn
        self.backend_pid = conn.info.backend_pid

    async def write(
        self,
        fn: OpFn[T],
        weight: int = 1,
        undo: Callable[[T], OpFn[object]] | None = None,
        part_ids: Iterable[str] = (),
    ) -> T:
        """Queue a write for the next group commit and wait until it is durable. `part_ids`:
        the operator ids whose parts or reports it records (locked for the transaction)."""
        op = _Op(fn=fn, weight=max(1, weight), undo=undo, locks=queries.part_lock_keys(part_ids))
        return await self._submit(op)

    async def accept(self, messages: Sequence[NewMessage], now_ms: int) -> list[bool]:
        op: _Op[list[bool]] = _Op(fn=None, weight=max(1, len(messages)), accept=(messages, now_ms))
        return await self._submit(op)

    async def apply(self, updates: tuple[MessageUpdate, ...], weight: int) -> list[Applied]:
        part_ids = (
            part_id
            for u in updates
            for part_id in (u.part_ids or ((u.carrier_msgid,) if u.carrier_msgid else ()))
        )
        op: _Op[list[Applied]] = _Op(
            fn=None, weight=max(1, weight), updates=updates, locks=queries.part_lock_keys(part_ids)
        )
        return await self._submit(op)

    async def _submit(self, op: QueuedOp[T]) -> T:
        if not self.running:
            raise StoreClosed("the store is not running")
        return await super()._submit(op)

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        """Commit groups until cancelled; then commit what was handed over, and return."""
        self.running = True
        try:
            await self._commit_groups()
        finally:
            self.running = False
            with trio.CancelScope(shield=True):
                await self._flush()
                await trio.to_thread.run_sync(self.close)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    # ------------------------------------------------------------------ worker thread

    def _run_group(self, taken: list[QueuedOp[Any]]) -> None:
        group = cast("list[_Op[Any]]", taken)  # the only ops `_submit` is given
        locks = frozenset[int]().union(*(op.locks for op in group))
        reconnected = False
        rolled_back = 0
        while True:
            for op in group:  # a run again starts afresh
                op.result = op.error = None
            try:
                conn = self._connection()
            except (psycopg.Error, StoreError) as exc:
                self._fail(group, CommitFailed(self._describe(exc)), exc)
                return
            committing = False
            try:
                queries.begin(conn, locks)
                wakes = Wakes()
                if not self._run_ops(conn, group, wakes):
                    conn.execute("ROLLBACK")
                    queries.begin(conn, locks)
                    wakes = Wakes()
                    self._run_isolated(conn, group, wakes)
                committing = True
                queries.bare(conn, notify_and_commit(conn, wakes.payload()) if wakes else b"COMMIT")
            except Exception as exc:
                if not _lost(conn):
                    with contextlib.suppress(psycopg.Error):
                        conn.execute("ROLLBACK")
                    if _rolled_back(exc) and rolled_back < ROLLED_BACK_RUNS:
                        # Rolled back whole by the server (deadlock victim, serialization
                        # failure): nothing stored, the group runs again.
                        rolled_back += 1
                        self.rolled_back_runs += 1
                        log.info("group rolled back by PostgreSQL, run again: %s", exc)
                        continue
                    self._fail(
                        group, CommitFailed(f"group commit failed, nothing stored: {exc}"), exc
                    )
                    return
                self._drop_connection()
                if not committing and not reconnected:
                    reconnected = True
                    log.warning("PostgreSQL connection lost, reconnecting: %s", self._describe(exc))
                    continue  # nothing was committed: the group runs again on a new connection
                outcome = "outcome unknown" if committing else "nothing stored"
                self._fail(
                    group,
                    CommitFailed(f"PostgreSQL connection lost ({outcome}): {self._describe(exc)}"),
                    exc,
                )
                return
            self.commit_count += 1
            self.ops_committed += len(group)
            return

    def _connection(self) -> queries.Conn:
        conn = self._conn
        if conn is not None and not _lost(conn):
            return conn
        self._drop_connection()
        conn = self._connect()
        self._conn = conn
        self.backend_pid = conn.info.backend_pid
        self.reconnects += 1
        return conn

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    @staticmethod
    def _fail(group: list[_Op[Any]], error: StoreError, cause: BaseException) -> None:
        error.__cause__ = cause
        for op in group:
            op.result = None
            op.error = error

    @staticmethod
    def _run_ops(conn: queries.Conn, group: list[_Op[Any]], wakes: Wakes) -> bool:
        """Run the group in the open transaction; False as soon as an op raises (the caller
        rolls back). Raises when the connection itself broke.

        Every accept of the group goes first, in one insert (no other op can refer to rows
        its callers have not seen yet); consecutive applies go together, set-based, where
        they stand among the other ops (a report recorded after an apply must see its
        parts)."""
        accepts = [op for op in group if op.accept is not None]
        applies: list[_Op[Any]] = []
        try:
            if accepts:
                results = queries.insert_messages(
                    conn, [cast(Accept, op.accept) for op in accepts], wakes
                )
                for op, result in zip(accepts, results, strict=True):
                    op.result = result
            for op in group:
                if op.updates is not None:
                    applies.append(op)
                    continue
                Writer._apply_together(conn, applies, wakes)
                applies = []
                if op.fn is not None:
                    op.result = op.fn(conn, wakes)
            Writer._apply_together(conn, applies, wakes)
        except Exception as exc:
            if _lost(conn) or _rolled_back(exc):
                raise
            return False
        return True

    @staticmethod
    def _apply_together(conn: queries.Conn, ops: list[_Op[Any]], wakes: Wakes) -> None:
        """The ops' updates in one set-based apply; each op gets its own updates' results."""
        if not ops:
            return
        results = queries.apply(conn, [u for op in ops for u in op.updates or ()], wakes)
        start = 0
        for op in ops:
            end = start + len(op.updates or ())
            op.result = results[start:end]
            start = end

    @staticmethod
    def _run_isolated(conn: queries.Conn, group: list[_Op[Any]], wakes: Wakes) -> None:
        """Each op in its own SAVEPOINT: one that raises is rolled back alone with its error."""
        for op in group:
            conn.execute("SAVEPOINT op")
            try:
                if op.accept is not None:
                    (op.result,) = queries.insert_messages(conn, [op.accept], wakes)
                elif op.updates is not None:
                    op.result = queries.apply(conn, op.updates, wakes)
                else:
                    assert op.fn is not None
                    op.result = op.fn(conn, wakes)
            except Exception as exc:
                if _lost(conn) or _rolled_back(exc):
                    raise  # the group runs again (or fails) whole
                op.result = None
                op.error = _op_error(exc)
                conn.execute("ROLLBACK TO SAVEPOINT op")
            conn.execute("RELEASE SAVEPOINT op")
