"""The SQLite store's writer: WAL, synchronous=FULL, one writer task doing group commits.

Every write is an *op*: a function run against the writer connection. Callers queue ops;
the writer task takes the first queued op plus whatever else is queued (up to a cap), runs
them all in ONE transaction in a worker thread — an op that raises is rolled back alone (the
group is then run again with a SAVEPOINT per op) — commits once (one fsync for the whole
group), then wakes each caller with its result. While a commit runs, new ops accumulate for
the next group.

Checkpoints (copying the WAL's pages into the database file, and its fsync) run on a
connection of their own, every CHECKPOINT_INTERVAL_S after commits: left to SQLite, each
1,000th page written makes one commit do it, and every request waiting for that commit with
it.

Reads use separate query_only connections in worker threads, so they never wait for a
commit (WAL readers see the last committed state).

sqlite3 connections are created with check_same_thread=False because trio's worker
threads are pooled; each connection is still used by one thread at a time (the writer
connection only by the writer task, a reader only by the read that checked it out).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from typing import Any, Final, TypeVar, cast

import attrs
import trio

from smsgw.logs import RepeatLog
from smsgw.store.base import CommitFailed, StoreClosed, StoreError
from smsgw.store.group import GroupCommits, QueuedOp
from smsgw.store.sqlite.schema import SCHEMA_VERSION, migrate, schema_version

log = logging.getLogger("smsgw.store")

T = TypeVar("T")
OpFn = Callable[[sqlite3.Connection], T]

DEFAULT_MAX_GROUP_OPS: Final = 2_000
DEFAULT_MAX_GROUP_ROWS: Final = 20_000
DEFAULT_READERS: Final = 4
BUSY_TIMEOUT_S: Final = 10.0
# The writer's pauses between tries for the write lock: doubling from the first to the last.
_FIRST_PAUSE_S: Final = 0.00005
_LAST_PAUSE_S: Final = 0.001
# Checkpoints by a connection of their own (see the module doc), this long apart; the writer
# itself checkpoints only when the WAL grows past WAL_BACKSTOP_PAGES (checkpoints failing).
CHECKPOINT_INTERVAL_S: Final = 0.5
WAL_BACKSTOP_PAGES: Final = 16_384
# The writer's page cache. Small on purpose: RAM must not grow with the backlog (bench/
# pipeline.py compares 100,000 queued against 1,000); the OS page cache holds the rest.
CACHE_KIB: Final = 4_096


def _store_error(what: str, exc: sqlite3.Error) -> StoreError:
    error = StoreError(f"{what}: {exc}")
    error.__cause__ = exc
    return error


@attrs.define(eq=False, kw_only=True)
class _Op(QueuedOp[T]):
    fn: OpFn[T]
    undo: Callable[[T], OpFn[object]] | None = None  # see `QueuedOp.undo_op`

    def undo_op(self) -> _Op[object] | None:
        if self.undo is None:
            return None
        return _Op(fn=self.undo(cast(T, self.result)), weight=1)


class GroupWriter(GroupCommits):
    """The connections and the group-commit writer (see the module doc) under `SqliteStore`.
    `commit_count` counts successful commits."""

    def __init__(
        self,
        path: str,
        *,
        max_group_ops: int = DEFAULT_MAX_GROUP_OPS,
        max_group_rows: int = DEFAULT_MAX_GROUP_ROWS,
        readers: int = DEFAULT_READERS,
        read_only: bool = False,
        checkpoint_interval: float = CHECKPOINT_INTERVAL_S,
    ) -> None:
        if not path or path == ":memory:" or path.startswith("file:"):
            raise ValueError(f"SQLite store needs a file path, got {path!r}")
        if max_group_ops < 1 or max_group_rows < 1 or readers < 1:
            raise ValueError("max_group_ops, max_group_rows and readers must be at least 1")
        # SQLite ops name no lock keys (its one writer locks the whole database): the lock
        # budget never binds.
        super().__init__(max_group_ops, max_group_rows, max_group_locks=1)
        self.path = path
        # Read-only (`smsgw status`, `smsgw inbox`): no writer, no migration, and a database
        # of another schema version refused rather than changed under a running gateway.
        self.read_only = read_only
        self.checkpoint_interval = checkpoint_interval
        self.checkpoints = 0  # checkpoints that copied every page of the WAL (tests)
        self._checkpoint_failures = RepeatLog(log)
        self._read_limiter = trio.CapacityLimiter(readers)
        self._writer: sqlite3.Connection | None = None
        self._idle_readers: list[sqlite3.Connection] = []
        self._started = False
        self._running = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"

    # ------------------------------------------------------------------ lifecycle

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self._started:
            raise RuntimeError(f"{type(self).__name__}.run() can only be called once")
        self._started = True
        if self.read_only:
            await self._run_read_only(task_status)
            return
        self._writer = await trio.to_thread.run_sync(self._open_writer)
        try:
            self._running = True
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._checkpoint_loop, self.commit_count)
                task_status.started()
                await self._commit_groups()
        finally:
            self._running = False
            with trio.CancelScope(shield=True):
                await self._flush()
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
            # From here the writer waits for the write lock in `_begin_immediate`, not in
            # SQLite's busy handler.
            conn.execute("PRAGMA busy_timeout=0")
            conn.execute(f"PRAGMA wal_autocheckpoint={WAL_BACKSTOP_PAGES}")
        except sqlite3.Error as exc:
            conn.close()
            raise _store_error(f"cannot prepare SQLite database {self.path!r}", exc) from exc
        except BaseException:
            conn.close()
            raise
        return conn

    # ------------------------------------------------------------------ checkpoints

    async def _checkpoint_loop(self, checkpointed: int) -> None:
        """`checkpointed`: the commit count already in the database file. Taken when the
        writer starts, not after this connection is open: commits made meanwhile count."""
        conn = await trio.to_thread.run_sync(self._open_checkpointer)
        try:
            while True:
                await trio.sleep(self.checkpoint_interval)
                if self.commit_count == checkpointed:
                    continue
                checkpointed = self.commit_count
                try:
                    done = await trio.to_thread.run_sync(_checkpoint, conn)
                except sqlite3.Error as exc:
                    # A full disk fails the commits too, and they say so; this is one line.
                    self._checkpoint_failures.log(
                        logging.WARNING,
                        str(exc),
                        f"WAL checkpoint of {self.path!r} failed: {exc}",
                        trio.current_time(),
                    )
                    continue
                self.checkpoints += done
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(conn.close)

    def _open_checkpointer(self) -> sqlite3.Connection:
        # FULL: the database file is fsynced after the pages are copied into it.
        return self._connect("PRAGMA synchronous=FULL", timeout=0)

    def _open_reader(self) -> sqlite3.Connection:
        return self._connect("PRAGMA query_only=ON", timeout=BUSY_TIMEOUT_S)

    def _connect(self, *pragmas: str, timeout: float) -> sqlite3.Connection:
        """A connection besides the writer's, set up by `pragmas`."""
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=timeout
            )
            for pragma in pragmas:
                conn.execute(pragma)
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
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
        return await self._submit(_Op(fn=fn, weight=max(1, weight), undo=undo))

    def _run_group(self, group: list[QueuedOp[Any]]) -> None:
        """In a worker thread: run the group in one transaction. An op that raises must
        leave no trace while the others commit; rather than a SAVEPOINT around every op (two
        statements each, for the rare failure), the ops run bare and, if one raises, the
        transaction is rolled back and the group run again with a SAVEPOINT per op."""
        conn = self._writer
        assert conn is not None
        ops = cast("list[_Op[Any]]", group)  # the only ops `_write` queues
        try:
            _begin_immediate(conn)
            if not _run_ops(conn, ops):
                conn.execute("ROLLBACK")
                _begin_immediate(conn)
                _run_ops_isolated(conn, ops)
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


# ---------------------------------------------------------------------- ops (worker thread)


def _begin_immediate(conn: sqlite3.Connection) -> None:
    """BEGIN IMMEDIATE, waiting up to BUSY_TIMEOUT_S for the write lock. SQLite's own busy
    handler sleeps 1, 2, 5, 10 … 100 ms between tries: against another smsgw process, which
    holds the lock about a millisecond at a time, a waiting writer slept long after the lock
    was free (the wait's p99 was 9 ms with two workers, its worst 80 ms). Tried again here
    after at most a millisecond."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    pause = _FIRST_PAUSE_S
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                raise
            if time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, _LAST_PAUSE_S)


def _checkpoint(conn: sqlite3.Connection) -> bool:
    """A PASSIVE checkpoint: it copies what no reader still needs and never waits for, nor
    blocks, the writers of any process. True when it copied the whole WAL."""
    busy, wal_pages, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return not busy and wal_pages == copied


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
