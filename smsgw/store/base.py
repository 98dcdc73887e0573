"""The store contract: records and the role protocols (docs/design.md).

The store is the source of truth and the enforcer of the message lifecycle
(`smsgw.lifecycle`); the pipeline's channels are only a fast path. Every backend (SQLite
now, PostgreSQL next) implements every role with the same guarantees; the backend
contract suite (tests/store/contract/) holds them to it:

* A write method returns only once its change is durable (committed and synced). Writes
  from many concurrent callers may share one commit (group commit).
* A write that raises has changed nothing. `StoreError` (or a subclass) means a database
  problem or a store that is not running; `ValueError` / `UnknownMessage` mean the caller
  asked for something impossible.
* A caller awaiting a write may be cancelled. A write that had already been handed to the
  backend is still committed (accepts are idempotent, so re-submitting is safe); one that
  had not is dropped.
* Several processes may share one store: every decision is applied by compare-and-set
  (`QueueStore.apply`), so two processes never both make a message final.

Owners and leases. Each process start is an *owner* (`OwnerInfo`, `OwnerStore`) holding a
lease it renews while it lives (SMSGW_LEASE). A dispatcher claims due rows for its owner
(`claim_due`: waiting → QUEUED, the row's owner set); a sender moves them to SUBMITTING and
then to the outcome, each update compare-and-set on the state and the owner. When an
owner's lease lapses (or its process is known dead), any live process reclaims its rows
(`OwnerStore.reclaim`): QUEUED rows go back to waiting, SUBMITTING rows pass to the
reclaimer, which decides them as in doubt (`smsgw.lifecycle.decide_in_doubt`). An app's
outbox is pushed by one owner at a time (`OutboxStore.claim_pushes`), claims that lapse
with the owner.

Delivery reports. `ReportStore.record_part_reports` marks the reported part in one write;
a report whose id matches no part yet is *stored* (an early report: it may have come on
another process's link before the submit was recorded) and matched in the very
transaction that records the parts (`apply` with `part_ids`: `Applied.early_reports`).
The report's decision is a second write (`apply`, expected SUBMITTED); a process lost
between the two leaves a SUBMITTED row whose parts have all reported, which
`ReportStore.fully_reported` finds for any process to finish.

All times are integers: milliseconds since the epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import attrs
import trio

# The lifecycle's names, re-exported: they were defined here before smsgw.lifecycle.
from smsgw.lifecycle import FINAL_STATES as FINAL_STATES
from smsgw.lifecycle import OWNED_STATES as OWNED_STATES
from smsgw.lifecycle import WAITING_STATES as WAITING_STATES
from smsgw.lifecycle import Event as Event
from smsgw.lifecycle import EventKind as EventKind
from smsgw.lifecycle import PushKind as PushKind
from smsgw.lifecycle import PushState as PushState
from smsgw.lifecycle import Receipt, Transition
from smsgw.lifecycle import State as State

# Re-exported: the stores' callers took it from here before smsgw.records.
from smsgw.records import InboundRecord as InboundRecord
from smsgw.records import MobileOriginated


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
    owner: str | None = None  # the owner that claimed it (QUEUED, SUBMITTING), else None


@attrs.frozen
class PushRecord:
    """An outbox item: the receipt facts of one step (A003) or outcome (A002) of a message;
    the pusher encodes the merchant's JSON from them."""

    id: int
    appid: str
    message_id: int
    kind: str  # PushKind: "A002" | "A003"
    msgid: str
    phone: str
    receipt: Receipt
    state: PushState
    attempts: int
    next_attempt_at_ms: int
    last_error: str | None
    updated_at_ms: int


@attrs.frozen
class PartRecord:
    """One segment of a sent message, as the operator identified it."""

    part_no: int  # 1-based segment number
    carrier_msgid: str
    reported: bool
    delivered: bool
    stat: str | None
    reported_at_ms: int | None


# The store applies lifecycle transitions (see `smsgw.lifecycle.Transition`).
MessageUpdate = Transition


@attrs.frozen
class Applied:
    """What `apply` did with one update."""

    applied: bool  # False: stale (the row was not in `expected`, not claimed by `owner`, or
    #                the transition is not allowed from its state): nothing of it written
    state: State  # the row's state after the call
    appid: str  # the message's app (whose pusher to wake when outbox items were written)
    # Early reports (stored before the parts were known) matched by this update's part ids,
    # each as its part stands once all of them are recorded; the caller decides them.
    early_reports: tuple[PartMatch, ...] = ()


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
class OwnerInfo:
    """One process start: the owner of the rows it claims."""

    id: str  # unique per process start (`smsgw.lease.new_owner`)
    host: str  # where it runs (a dead local pid needs no lease to lapse)
    pid: int
    started_at_ms: int


@attrs.frozen
class OwnerRecord:
    info: OwnerInfo
    lease_until_ms: int


@attrs.frozen
class Reclaimed:
    """What `OwnerStore.reclaim` took over from lost owners."""

    owners: tuple[str, ...]  # the owners removed (lease lapsed, or named dead)
    requeued: int  # their QUEUED rows put back to waiting (they never left the gateway)
    in_doubt: tuple[MessageRecord, ...]  # their SUBMITTING rows, now owned by the claimant


@attrs.frozen
class MessageHistory:
    """One (appid, msgid, phone) row with everything that happened to it."""

    message: MessageRecord
    events: tuple[Event, ...]
    parts: tuple[PartRecord, ...]
    pushes: tuple[PushRecord, ...]


class StoreService(Protocol):
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open, migrate, start the writer; `task_status.started()` once usable.

        On cancellation: commit what was already handed over, close, return.
        Use as `await nursery.start(store.run)`.
        """
        ...


class AcceptStore(Protocol):
    """The merchant edge (server.py)."""

    async def insert_messages(self, messages: Sequence[NewMessage], now_ms: int) -> list[bool]:
        """Store the messages durably; one bool each: True = newly stored, False = the
        (appid, msgid, phone) already existed (also earlier in the same call). New rows are
        SCHEDULED (send_at_ms after now_ms) or ACCEPTED, due at send_at_ms or now_ms, with
        an "accepted" event."""
        ...


class OwnerStore(Protocol):
    """Owners, leases and reclaiming what lost owners left (see the module doc)."""

    async def register_owner(self, owner: OwnerInfo, lease_until_ms: int) -> None:
        """Add (or renew) the owner with its lease."""
        ...

    async def renew_owner(self, owner_id: str, lease_until_ms: int) -> bool:
        """Extend the lease; False when the owner is gone (reclaimed: its claims are lost,
        register again)."""
        ...

    async def release_owner(self, owner_id: str) -> None:
        """A clean stop: the owner leaves; whatever it still holds is reclaimable at once."""
        ...

    async def owners(self) -> list[OwnerRecord]: ...

    async def reclaim(self, claimant: str, now_ms: int, dead: Sequence[str] = ()) -> Reclaimed:
        """In one transaction: remove the owners other than `claimant` whose lease ended
        before `now_ms` or that are named in `dead`, with their push claims; rows claimed by
        an owner that no longer exists (or by none) are taken over: QUEUED → ACCEPTED (due
        when they were due), SUBMITTING → owned by `claimant` and returned (in doubt: the
        claimant decides them with `decide_in_doubt`, compare-and-set on its ownership)."""
        ...


class QueueStore(Protocol):
    """The dispatcher and the senders."""

    async def claim_due(self, now_ms: int, limit: int, *, owner: str) -> list[MessageRecord]:
        """Waiting rows with next_attempt_at <= now_ms, oldest due first, at most `limit`,
        moved to QUEUED for `owner` and returned (in their QUEUED state)."""
        ...

    async def next_due_at(self) -> int | None:
        """The earliest next_attempt_at of the waiting rows (None: nothing waits)."""
        ...

    async def apply(self, updates: Sequence[MessageUpdate]) -> list[Applied]:
        """Apply the updates in order, in one transaction, each compare-and-set: an update
        is written (state, event, parts, outbox items) only if the row is in
        `update.expected` (when given), claimed by `update.owner` (when given), and the
        transition allowed (`smsgw.lifecycle.allowed`); else it is stale and changes
        nothing. Raises UnknownMessage (nothing written) for an id that does not exist.
        Entering a state other than QUEUED/SUBMITTING clears the row's owner. Recording
        part ids matches the early reports stored for them (see `Applied`)."""
        ...


class ReportStore(Protocol):
    """The delivery-report consumer and the sweeps (any process may run them)."""

    async def record_part_reports(
        self, reports: Sequence[PartReport], now_ms: int
    ) -> list[PartMatch | None]:
        """Durably mark each report's part reported, in order, all in one write (or none,
        raising StoreError); per report its match. A report whose id matches no part is
        stored as an early report (received at `now_ms`) and gets None: it is matched when
        the parts are recorded. A second report for a part (in the same call or later) is
        a duplicate and changes nothing."""
        ...

    async def find_by_part_id(self, carrier_msgid: str) -> PartMatch | None:
        """The message owning an operator id (any of its parts), or None."""
        ...

    async def overdue_submitted(self, submitted_before_ms: int, limit: int) -> list[MessageRecord]:
        """SUBMITTED rows (waiting for a delivery report) that went to the operator before
        `submitted_before_ms`, oldest first, at most `limit`."""
        ...

    async def fully_reported(self, reported_before_ms: int, limit: int) -> list[PartMatch]:
        """SUBMITTED rows whose parts have all reported, the last before
        `reported_before_ms` (the decision of their last report was lost with its process),
        each matching its last reported part; at most `limit`."""
        ...

    async def expire_early_reports(self, received_before_ms: int, limit: int) -> int:
        """Delete up to `limit` early reports stored before the time (their submit never
        came). Returns how many."""
        ...

    async def apply(self, updates: Sequence[MessageUpdate]) -> list[Applied]: ...


class OutboxStore(Protocol):
    """The pusher: one owner pushes an app's items at a time, in order."""

    async def claim_pushes(self, appid: str, owner: str) -> bool:
        """Take (or keep) the app's outbox for the owner: True when it is the owner's, False
        when a live other owner holds it."""
        ...

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
        """attempts += 1 for each pending push; then as `decide_push_result` says: done,
        pending again at retry_at_ms, or abandoned. Durable."""
        ...


class QueryStore(Protocol):
    """`smsgw status`, /metrics."""

    async def history(self, msgid: str, appid: str | None = None) -> list[MessageHistory]:
        """Every (appid, msgid, phone) row of the msgid with its events, parts and pushes."""
        ...

    async def counts(self) -> dict[str, int]:
        """Rows per message state (every State is present, 0 when none)."""
        ...

    async def push_counts(self) -> dict[str, int]:
        """Outbox items per push state (every PushState is present)."""
        ...


class RetentionStore(Protocol):
    async def delete_finished(self, final_before_ms: int, limit: int) -> int:
        """Delete up to `limit` messages final before the time, oldest first, with their
        events, parts and pushes; never one with a push still pending. Returns how many."""
        ...

    async def delete_inbound(self, received_before_ms: int, limit: int) -> int:
        """Delete up to `limit` MOs received before the time, oldest first. Returns how many."""
        ...


class InboundStore(Protocol):
    """Mobile-originated messages."""

    async def insert_inbound(self, messages: Sequence[MobileOriginated]) -> None:
        """Store MOs as received (a repeat is stored again: an MO has no id to tell). Durable."""
        ...

    async def recent_inbound(
        self, limit: int, *, before_id: int | None = None
    ) -> list[InboundRecord]:
        """The latest MOs, newest first, at most `limit`; only those older than `before_id`
        when given (to page back)."""
        ...


class PipelineStore(OwnerStore, QueueStore, ReportStore, Protocol):
    """Everything the pipeline uses."""


class Store(
    StoreService,
    AcceptStore,
    PipelineStore,
    OutboxStore,
    QueryStore,
    RetentionStore,
    InboundStore,
    Protocol,
):
    """A whole backend: every role."""
