"""The store interface: records, states and the `Store` protocol (DESIGN.md §2).

The store is the source of truth; the pipeline's channels are only a fast path. Every
backend (SQLite now, PostgreSQL later) implements `Store` with the same guarantees:

* A write method returns only once its change is durable (committed and synced). Writes
  from many concurrent callers may share one commit (group commit).
* A write that raises has changed nothing. `StoreError` (or a subclass) means a database
  problem or a store that is not running; `ValueError` / `UnknownMessage` mean the caller
  asked for something impossible.
* A caller awaiting a write may be cancelled. A write that had already been handed to the
  backend is still committed (accepts are idempotent, so re-submitting is safe); one that
  had not is dropped.

Message states (`State`) follow DESIGN.md §2:

    accepted → (scheduled) → queued → submitting → submitted → delivered | failed

There is no separate "retry wait" state: a message waiting before its next attempt is
ACCEPTED with `next_attempt_at_ms` in the future. ACCEPTED and SCHEDULED are the *waiting*
states: the dispatcher claims rows in those states whose `next_attempt_at_ms` has come
(`Store.claim_due`), which moves them to QUEUED. QUEUED rows are in the gateway's memory
only, so after a crash they go back to ACCEPTED (`Store.recover`); SUBMITTING rows may or may
not have reached the operator, so `recover` hands them to the pipeline to decide. It also
hands over the SUBMITTED rows whose parts have all reported: a delivery report is recorded
(`record_part_reports`) and the message made final (`apply`) in two transactions, and a crash
between the two leaves a row waiting for a report that already came.

All times are integers: milliseconds since the epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import attrs
import trio

from smsgw.carriers.base import MobileOriginated

# The lifecycle's names, re-exported: they were defined here before smsgw.lifecycle.
from smsgw.lifecycle import FINAL_STATES as FINAL_STATES
from smsgw.lifecycle import OWNED_STATES as OWNED_STATES
from smsgw.lifecycle import WAITING_STATES as WAITING_STATES
from smsgw.lifecycle import Event as Event
from smsgw.lifecycle import EventKind as EventKind
from smsgw.lifecycle import PushKind as PushKind
from smsgw.lifecycle import PushState as PushState
from smsgw.lifecycle import State as State


class StoreError(Exception):
    """The database failed (I/O error, disk full, locked...): nothing of the write is stored."""


class CommitFailed(StoreError):
    """The group commit failed: every write of the group is rolled back and gets this error."""


class StoreClosed(StoreError):
    """The store is not running (not started yet, or shut down)."""


class UnknownMessage(LookupError):
    """An update names a message id that does not exist."""

    def __init__(self, message_id: int) -> None:
        super().__init__(f"no message with id {message_id}")
        self.message_id = message_id


@attrs.frozen
class NewMessage:
    """One delivery (one msgid to one phone) to store from an A001."""

    appid: str
    msgid: str
    phone: str
    message: str
    msgtype: int
    send_at_ms: int | None  # None (or not after the accept time) = due now; later = scheduled
    segments: int


@attrs.frozen
class MessageRecord:
    """A message row, as the pipeline and `smsgw status` see it."""

    id: int
    appid: str
    msgid: str
    phone: str
    message: str
    msgtype: int
    segments: int
    state: State
    attempts: int
    accepted_at_ms: int
    next_attempt_at_ms: int | None  # when due (waiting states, kept while QUEUED), else None
    submitted_at_ms: int | None
    final_at_ms: int | None
    carrier_msgid: str | None
    stat: str | None
    error: str | None


@attrs.frozen
class NewPush:
    """An outbox item to push to the merchant."""

    kind: str  # "A002" | "A003" (PushKind)
    body: str  # the JSON of ONE push item (the pusher batches items, up to 100 a frame)


@attrs.frozen
class PushRecord:
    id: int
    appid: str
    message_id: int
    kind: str
    body: str
    state: PushState
    attempts: int
    next_attempt_at_ms: int
    last_error: str | None
    updated_at_ms: int


@attrs.frozen
class InboundRecord:
    """A stored mobile-originated message (`Store.insert_inbound`)."""

    id: int
    mo: MobileOriginated


@attrs.frozen
class PartRecord:
    """One segment of a sent message, as the operator identified it."""

    part_no: int  # 1-based segment number
    carrier_msgid: str
    reported: bool
    delivered: bool
    stat: str | None
    reported_at_ms: int | None


@attrs.frozen
class MessageUpdate:
    """One state transition decided by the pipeline, applied atomically with its event.

    `next_attempt_at_ms` is used when `state` is a waiting state (ACCEPTED for a retry-after,
    SCHEDULED): the time the message becomes due, or `event.at_ms` (due now) when None.
    For every other state the row's next_attempt_at is cleared.
    A final state (DELIVERED, FAILED) sets the row's final time to `event.at_ms`.

    When the update carries operator ids (`part_ids`, or only `carrier_msgid` for a one-part
    message), they replace the message's part list: delivery reports are matched against
    the latest attempt's parts. Ids are stored as given: normalize them first
    (`Carrier.normalize_id`) and look them up normalized the same way.
    """

    message_id: int
    state: State
    event: Event
    attempts: int | None = None  # None = unchanged
    next_attempt_at_ms: int | None = None  # for ACCEPTED/SCHEDULED: see above
    carrier_msgid: str | None = None  # None = unchanged
    part_ids: tuple[str, ...] = ()  # operator ids of each segment (multi-part SMS)
    submitted_at_ms: int | None = None  # None = unchanged
    stat: str | None = None  # None = unchanged
    error: str | None = None  # None = unchanged (unless clear_error)
    clear_error: bool = False  # True: the row's error is cleared (error must then be None)
    pushes: tuple[NewPush, ...] = ()  # outbox items written in the SAME transaction

    def __attrs_post_init__(self) -> None:
        if self.clear_error and self.error is not None:
            raise ValueError("a MessageUpdate cannot both set and clear the error")


@attrs.frozen
class PartReport:
    """An operator's report on one part (`Store.record_part_reports`)."""

    carrier_msgid: str  # normalized as the part ids were when stored
    delivered: bool
    stat: str
    at_ms: int


@attrs.frozen
class PartMatch:
    """The message owning an operator id, and where its parts' reports stand."""

    message: MessageRecord
    part_no: int  # which part the operator id belongs to (1-based)
    part: PartRecord  # that part as stored (after this call)
    parts: int  # how many parts the message has
    reported: int  # how many of them have reported (after this call)
    delivered: int  # how many of them reported delivered
    failed_stat: str | None  # stat of the first part (by number) reported not delivered
    duplicate: bool = False  # record_part_reports: this part had already reported; the
    #                          first report is kept and nothing changed

    @property
    def all_reported(self) -> bool:
        return self.reported >= self.parts

    @property
    def all_delivered(self) -> bool:
        return self.delivered >= self.parts


@attrs.frozen
class RecoveryReport:
    """What `Store.recover` found at start-up."""

    requeued: int  # QUEUED rows put back to ACCEPTED (they never left the gateway)
    in_doubt: tuple[MessageRecord, ...]  # SUBMITTING rows: the pipeline decides (DESIGN §2)
    pending_pushes: int  # outbox items still to push (they simply stay pending)
    # SUBMITTED rows whose parts have all reported (the final update was lost in a crash):
    # the pipeline makes them final. Each matches its last reported part (latest report
    # time, then highest part number).
    reported: tuple[PartMatch, ...]


@attrs.frozen
class MessageHistory:
    """One (appid, msgid, phone) row with everything that happened to it."""

    message: MessageRecord
    events: tuple[Event, ...]
    parts: tuple[PartRecord, ...]
    pushes: tuple[PushRecord, ...]


class Store(Protocol):
    """The durable store. Every write is durable when it returns (see the module doc)."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open, migrate, start the writer; `task_status.started()` once usable.

        On cancellation: commit what was already handed over, close, return.
        Use as `await nursery.start(store.run)`.
        """
        ...

    # accept path
    async def insert_messages(self, messages: Sequence[NewMessage], now_ms: int) -> list[bool]:
        """Store the messages durably; one bool each: True = newly stored, False = the
        (appid, msgid, phone) already existed (also earlier in the same call). New rows are
        SCHEDULED (send_at_ms after now_ms) or ACCEPTED, due at send_at_ms or now_ms, with
        an "accepted" event."""
        ...

    # pipeline
    async def recover(self, now_ms: int) -> RecoveryReport:
        """At start-up, before the dispatcher runs: QUEUED → ACCEPTED (due when they were
        due); SUBMITTING rows, and SUBMITTED rows whose parts have all reported, are
        returned for the pipeline to decide (it applies MessageUpdates for them). Pending
        pushes stay pending. `now_ms` is the recovery time, for backends that record it."""
        ...

    async def claim_due(self, now_ms: int, limit: int) -> list[MessageRecord]:
        """Waiting rows with next_attempt_at <= now_ms, oldest due first, at most `limit`,
        moved to QUEUED and returned (in their QUEUED state)."""
        ...

    async def next_due_at(self) -> int | None:
        """The earliest next_attempt_at of the waiting rows (None: nothing waits)."""
        ...

    async def overdue_submitted(self, submitted_before_ms: int, limit: int) -> list[MessageRecord]:
        """SUBMITTED rows (waiting for a delivery report) that went to the operator before
        `submitted_before_ms`, oldest first, at most `limit`."""
        ...

    async def apply(self, updates: Sequence[MessageUpdate]) -> None:
        """Apply all the updates (with their events, parts and pushes) durably, all or none."""
        ...

    async def find_by_part_id(self, carrier_msgid: str) -> PartMatch | None:
        """The message owning an operator id (any of its parts), or None."""
        ...

    async def record_part_reports(self, reports: Sequence[PartReport]) -> list[PartMatch | None]:
        """Durably mark each report's part reported, in order, all in one write (or none,
        raising StoreError); per report its match, None if the id is unknown. A second
        report for a part (in the same call or later) is a duplicate and changes nothing."""
        ...

    # pushes (outbox)
    async def due_pushes(self, appid: str, now_ms: int, limit: int) -> list[PushRecord]:
        """Pending pushes of the app due at now_ms, oldest first, at most `limit`."""
        ...

    async def apps_with_due_pushes(self, now_ms: int) -> list[str]: ...

    async def next_push_due_at(self, appid: str) -> int | None: ...

    async def record_push_result(
        self,
        push_ids: Sequence[int],
        ok: bool,
        error: str | None,
        now_ms: int,
        max_attempts: int,
        retry_at_ms: int,
    ) -> None:
        """attempts += 1 for each pending push; ok → done; else pending again at retry_at_ms,
        or abandoned once attempts reach max_attempts. Durable."""
        ...

    # queries
    async def history(self, msgid: str, appid: str | None = None) -> list[MessageHistory]:
        """Every (appid, msgid, phone) row of the msgid with its events, parts and pushes."""
        ...

    async def counts(self) -> dict[str, int]:
        """Rows per message state (every State is present, 0 when none)."""
        ...

    async def push_counts(self) -> dict[str, int]:
        """Outbox items per push state (every PushState is present)."""
        ...

    # retention
    async def delete_finished(self, final_before_ms: int, limit: int) -> int:
        """Delete up to `limit` messages final before the time, oldest first, with their
        events, parts and pushes; never one with a push still pending. Returns how many."""
        ...

    async def delete_inbound(self, received_before_ms: int, limit: int) -> int:
        """Delete up to `limit` MOs received before the time, oldest first. Returns how many."""
        ...

    # mobile-originated messages
    async def insert_inbound(self, messages: Sequence[MobileOriginated]) -> None:
        """Store MOs as received (a repeat is stored again: an MO has no id to tell). Durable."""
        ...

    async def recent_inbound(
        self, limit: int, *, before_id: int | None = None
    ) -> list[InboundRecord]:
        """The latest MOs, newest first, at most `limit`; only those older than `before_id`
        when given (to page back)."""
        ...
