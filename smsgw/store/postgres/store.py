"""The PostgreSQL store: `SMSGW_DB=postgresql://user:password@host:port/dbname`.

psycopg's asynchronous API needs asyncio, so the store drives its synchronous API from
worker threads: writes through `Writer` (one thread hop per group commit), reads on a small
pool of connections under a `trio.CapacityLimiter` (one hop per read, each read one
read-only REPEATABLE READ transaction), wake-ups from other gateways through `Listener`.
The one exception to group commits: a pushed frame's acknowledgement, idempotent, is
recorded at once on a connection of its own (`_write_alone`).

Read-only (`smsgw status`, `smsgw inbox`): no writer, no migration, no LISTEN; a database
without smsgw's schema, or of another schema version, is refused with one line.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from typing import Final, TypeVar

import psycopg
import trio
from psycopg.conninfo import make_conninfo

from smsgw.carriers.base import MobileOriginated
from smsgw.config import redact_url
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
    StoreClosed,
    StoreError,
)
from smsgw.store.postgres import queries
from smsgw.store.postgres.listener import Listener
from smsgw.store.postgres.notify import Wakes
from smsgw.store.postgres.schema import SCHEMA_VERSION, migrate, schema_version
from smsgw.store.postgres.url import connection_settings, mask_password
from smsgw.store.postgres.writer import (
    DEFAULT_MAX_GROUP_LOCKS,
    DEFAULT_MAX_GROUP_OPS,
    DEFAULT_MAX_GROUP_ROWS,
    Writer,
)
from smsgw.store.wake import Wake

T = TypeVar("T")
ReadFn = Callable[[queries.Conn], T]

DEFAULT_READERS: Final = 4


def _check_limit(limit: int) -> None:
    if limit < 0:
        raise ValueError(f"limit must not be negative, got {limit}")


class PostgresStore:
    """The shared store (see the module doc). `commit_count` counts successful commits."""

    def __init__(
        self,
        url: str,
        *,
        max_group_ops: int = DEFAULT_MAX_GROUP_OPS,
        max_group_rows: int = DEFAULT_MAX_GROUP_ROWS,
        max_group_locks: int = DEFAULT_MAX_GROUP_LOCKS,
        readers: int = DEFAULT_READERS,
        read_only: bool = False,
    ) -> None:
        if readers < 1:
            raise ValueError("readers must be at least 1")
        self.url = url
        # ValueError for a URL libpq refuses; the settings as one libpq conninfo string.
        self._conninfo = make_conninfo("", **connection_settings(url))
        self.read_only = read_only
        self.writer = Writer(
            self._open_writer,
            self._describe,
            max_group_ops=max_group_ops,
            max_group_rows=max_group_rows,
            max_group_locks=max_group_locks,
        )
        self.listener = Listener(
            lambda: self._open(autocommit=True),
            self._describe,
            lambda: self.writer.backend_pid,
        )
        self._read_limiter = trio.CapacityLimiter(readers)
        self._idle_readers: list[queries.Conn] = []
        self._alone_lock = trio.Lock()
        self._idle_alone: list[queries.Conn] = []  # `_write_alone`'s connection
        self._started = False
        self._running = False

    def __repr__(self) -> str:
        return f"PostgresStore({redact_url(self.url)!r})"

    @property
    def commit_count(self) -> int:
        return self.writer.commit_count

    @property
    def ops_committed(self) -> int:
        return self.writer.ops_committed

    def on_wake(self, callback: Callable[[Wake], None]) -> None:
        """Call `callback` for every commit group of another gateway that made messages due
        or pushes pending (and once after each reconnect of the LISTEN connection)."""
        self.listener.subscribe(callback)

    # ------------------------------------------------------------------ connections

    def _describe(self, exc: BaseException) -> str:
        text = " ".join(str(exc).split()) or type(exc).__name__
        return mask_password(f"PostgreSQL {redact_url(self.url)}: {text}", self.url)

    def _open(self, *, autocommit: bool) -> queries.Conn:
        conn: queries.Conn = psycopg.connect(self._conninfo, autocommit=autocommit)
        return conn

    def _open_writer(self) -> queries.Conn:
        conn = self._open(autocommit=True)
        try:
            # Durable when COMMIT returns, whatever the database's default: only "off" is not
            # ("local", "remote_write", "remote_apply" are kept as the operator set them).
            row = conn.execute("SHOW synchronous_commit").fetchone()
            if row is not None and row[0] == "off":
                conn.execute("SET synchronous_commit TO on")
            conn.execute(queries.WRITER_SETTINGS)
        except BaseException:
            conn.close()
            raise
        return conn

    def _open_reader(self) -> queries.Conn:
        conn = self._open(autocommit=False)
        conn.read_only = True
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        return conn

    def _start_writer(self) -> None:
        try:
            conn = self._open_writer()
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect: {self._describe(exc)}") from None
        try:
            migrate(conn)
        except psycopg.Error as exc:
            conn.close()
            raise StoreError(f"cannot prepare the database: {self._describe(exc)}") from None
        except BaseException:
            conn.close()
            raise
        self.writer.open(conn)

    def _check_readable(self) -> None:
        try:
            conn = self._open(autocommit=True)
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect: {self._describe(exc)}") from None
        try:
            version = schema_version(conn)
        except psycopg.Error as exc:
            raise StoreError(f"cannot read the database: {self._describe(exc)}") from None
        finally:
            conn.close()
        if version != SCHEMA_VERSION:
            where = redact_url(self.url)
            if version == 0:
                raise StoreError(f"no smsgw database at {where}: `smsgw serve` creates it")
            raise StoreError(
                f"the database {where} has schema version {version}, this smsgw reads"
                f" version {SCHEMA_VERSION}: `smsgw serve` of this version migrates it"
            )

    def _close_readers(self) -> None:
        readers, self._idle_readers = self._idle_readers, []
        alone, self._idle_alone = self._idle_alone, []
        for conn in readers + alone:
            conn.close()

    # ------------------------------------------------------------------ lifecycle

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self._started:
            raise RuntimeError("PostgresStore.run() can only be called once")
        self._started = True
        try:
            if self.read_only:
                await trio.to_thread.run_sync(self._check_readable)
                self._running = True
                task_status.started()
                await trio.sleep_forever()
            await trio.to_thread.run_sync(self._start_writer)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.listener.run)
                self._running = True
                writer_started = trio.Event()
                nursery.start_soon(self._run_writer, nursery, writer_started)
                await writer_started.wait()
                task_status.started()
        finally:
            self._running = False
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._close_readers)

    async def _run_writer(self, nursery: trio.Nursery, started: trio.Event) -> None:
        try:
            started.set()
            await self.writer.run()
        finally:
            nursery.cancel_scope.cancel()  # the listener goes with the writer

    # ------------------------------------------------------------------ reads

    async def _read(self, fn: ReadFn[T]) -> T:
        if not self._running:
            raise StoreClosed("the store is not running")
        async with self._read_limiter:
            return await trio.to_thread.run_sync(
                self._on_pooled, self._idle_readers, self._open_reader, fn, "read"
            )

    async def _write_alone(self, fn: ReadFn[T]) -> T:
        """An idempotent write, outside the commit groups: on a connection of its own (in
        autocommit, so durable when it returns), one at a time."""
        if not self._running:
            raise StoreClosed("the store is not running")
        self._writable()
        async with self._alone_lock:
            return await trio.to_thread.run_sync(
                self._on_pooled, self._idle_alone, self._open_writer, fn, "write"
            )

    def _on_pooled(
        self,
        pool: list[queries.Conn],
        open_conn: Callable[[], queries.Conn],
        fn: ReadFn[T],
        what: str,
    ) -> T:
        # A pooled connection may have died with a server restart since its last use: the
        # work is run again once on a fresh one (reads, idempotent writes).
        for attempt in (1, 2):
            conn = pool.pop() if pool else None
            try:
                if conn is None:
                    conn = open_conn()
                if conn.autocommit:
                    result = fn(conn)
                else:
                    with conn.transaction():
                        result = fn(conn)
            except psycopg.Error as exc:
                lost = conn is None or conn.closed or conn.broken
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
                if lost and attempt == 1:
                    continue
                raise StoreError(f"{what} failed: {self._describe(exc)}") from None
            if self._running:
                pool.append(conn)
            else:
                conn.close()
            return result
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ accept path

    async def insert_messages(self, messages: Sequence[NewMessage], now_ms: int) -> list[bool]:
        if not messages:
            return []
        self._writable()
        return await self.writer.accept(tuple(messages), now_ms)

    def _writable(self) -> None:
        if self.read_only:
            raise StoreError("the store was opened read-only")

    async def _write(
        self,
        fn: Callable[[queries.Conn, Wakes], T],
        weight: int = 1,
        undo: Callable[[T], Callable[[queries.Conn, Wakes], object]] | None = None,
        part_ids: Iterable[str] = (),
    ) -> T:
        self._writable()
        return await self.writer.write(fn, weight, undo, part_ids)

    # ------------------------------------------------------------------ pipeline

    async def register_owner(self, owner: OwnerInfo, lease_until_ms: int) -> None:
        await self._write(lambda conn, wakes: queries.register_owner(conn, owner, lease_until_ms))

    async def renew_owner(self, owner_id: str, lease_until_ms: int) -> bool:
        return await self._write(
            lambda conn, wakes: queries.renew_owner(conn, owner_id, lease_until_ms)
        )

    async def release_owner(self, owner_id: str) -> None:
        await self._write(lambda conn, wakes: queries.release_owner(conn, owner_id))

    async def owners(self) -> list[OwnerRecord]:
        return await self._read(queries.owners)

    async def reclaim(self, claimant: str, now_ms: int, dead: Sequence[str] = ()) -> Reclaimed:
        named = tuple(dead)
        return await self._write(
            lambda conn, wakes: queries.reclaim(conn, claimant, now_ms, named, wakes)
        )

    async def claim_due(self, now_ms: int, limit: int, *, owner: str) -> list[MessageRecord]:
        _check_limit(limit)
        if limit == 0:
            return []

        def undo(claimed: list[MessageRecord]) -> Callable[[queries.Conn, Wakes], object]:
            ids = [record.id for record in claimed]
            return lambda conn, wakes: queries.unclaim(conn, ids, owner, wakes)

        return await self._write(
            lambda conn, wakes: queries.claim_due(conn, now_ms, limit, owner),
            weight=limit,
            undo=undo,
        )

    async def next_due_at(self) -> int | None:
        return await self._read(queries.next_due_at)

    async def overdue_submitted(self, submitted_before_ms: int, limit: int) -> list[MessageRecord]:
        _check_limit(limit)
        return await self._read(
            lambda conn: queries.overdue_submitted(conn, submitted_before_ms, limit)
        )

    async def apply(self, updates: Sequence[MessageUpdate]) -> list[Applied]:
        if not updates:
            return []
        self._writable()
        frozen = tuple(updates)
        return await self.writer.apply(
            frozen, sum(2 + len(u.part_ids) + len(u.pushes) for u in frozen)
        )

    async def find_by_part_id(self, carrier_msgid: str) -> PartMatch | None:
        def read(conn: queries.Conn) -> PartMatch | None:
            found = queries.find_part(conn, carrier_msgid)
            if found is None:
                return None
            return queries.part_match(conn, found[0], found[1], duplicate=False)

        return await self._read(read)

    async def record_part_reports(
        self, reports: Sequence[PartReport], now_ms: int
    ) -> list[PartMatch | None]:
        if not reports:
            return []
        frozen = tuple(reports)
        return await self._write(
            lambda conn, wakes: queries.record_part_reports(conn, frozen, now_ms),
            weight=len(frozen),
            part_ids=(report.carrier_msgid for report in frozen),
        )

    async def fully_reported(self, reported_before_ms: int, limit: int) -> list[PartMatch]:
        _check_limit(limit)
        return await self._read(
            lambda conn: queries.fully_reported(conn, reported_before_ms, limit)
        )

    async def expire_early_reports(self, received_before_ms: int, limit: int) -> int:
        return await self._delete_oldest(
            queries.EXPIRE_EARLY_REPORTS_SQL, received_before_ms, limit
        )

    async def claim_pushes(self, appid: str, owner: str) -> bool:
        return await self._write(lambda conn, wakes: queries.claim_pushes(conn, appid, owner))

    # ------------------------------------------------------------------ pushes

    async def due_pushes(self, appid: str, now_ms: int, limit: int) -> list[PushRecord]:
        _check_limit(limit)
        return await self._read(lambda conn: queries.due_pushes(conn, appid, now_ms, limit))

    async def apps_with_due_pushes(self, now_ms: int) -> list[str]:
        return await self._read(lambda conn: queries.apps_with_due_pushes(conn, now_ms))

    async def next_push_due_at(self, appid: str) -> int | None:
        return await self._read(lambda conn: queries.next_push_due_at(conn, appid))

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

        def record(conn: queries.Conn) -> None:
            queries.record_push_result(conn, ids, ok, error, now_ms, max_attempts, retry_at_ms)

        if ok:
            # Only pending pushes change, so recording a success twice is harmless: it goes
            # at once, rather than behind the commit group in flight and then in the next,
            # which the pusher (one frame in flight per app) waited for on every round.
            await self._write_alone(record)
            return
        await self._write(lambda conn, wakes: record(conn), weight=len(ids))

    # ------------------------------------------------------------------ queries

    async def history(self, msgid: str, appid: str | None = None) -> list[MessageHistory]:
        return await self._read(lambda conn: queries.history(conn, msgid, appid))

    async def counts(self) -> dict[str, int]:
        return await self._read(lambda conn: queries.counts(conn, "messages", list(State)))

    async def push_counts(self) -> dict[str, int]:
        return await self._read(lambda conn: queries.counts(conn, "pushes", list(PushState)))

    # ------------------------------------------------------------------ retention

    async def delete_finished(self, final_before_ms: int, limit: int) -> int:
        # events, message_parts and pushes follow by ON DELETE CASCADE.
        return await self._delete_oldest(queries.DELETE_FINISHED_SQL, final_before_ms, limit)

    async def delete_inbound(self, received_before_ms: int, limit: int) -> int:
        return await self._delete_oldest(queries.DELETE_INBOUND_SQL, received_before_ms, limit)

    async def _delete_oldest(self, sql: str, before_ms: int, limit: int) -> int:
        _check_limit(limit)
        if not limit:
            return 0
        statement = sql.encode()
        return await self._write(
            lambda conn, wakes: conn.execute(statement, (before_ms, limit)).rowcount, weight=limit
        )

    # ------------------------------------------------------------------ inbound

    async def insert_inbound(self, messages: Sequence[MobileOriginated]) -> None:
        if not messages:
            return
        frozen = tuple(messages)
        await self._write(
            lambda conn, wakes: queries.insert_inbound(conn, frozen), weight=len(frozen)
        )

    async def recent_inbound(
        self, limit: int, *, before_id: int | None = None
    ) -> list[InboundRecord]:
        _check_limit(limit)
        return await self._read(lambda conn: queries.recent_inbound(conn, limit, before_id))
