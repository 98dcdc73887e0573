"""The message lifecycle, sans-IO: states, allowed transitions and the pure deciders.

Everything that affects a message's state machine lives here (h11's `_state.py` is the
model); no trio, no store. The pipeline's loops call the deciders with what happened (a
submit's outcome, a delivery report, a lost owner, a report timeout) and hand the returned
`Transition` to the store, which applies it only if the row is still where the decision
was made from (`Transition.expected`, and the claiming owner): compare-and-set. A
decision made from a stale view is therefore refused by the store, never applied twice.

    accepted ─┐                 ┌─> submitted ─┬─> submitted (a part's report: a step)
    scheduled ┴─> queued ─> submitting ─┤      ├─> delivered
                    │                  ├─> delivered | failed (final)
                    └─> accepted       └─> accepted (retry, throttled, in doubt: resend)

A message waiting before its next attempt is ACCEPTED with `next_attempt_at_ms` ahead.
QUEUED and SUBMITTING rows belong to an *owner* (one process start) holding a lease; when
the lease lapses another process reclaims them: QUEUED rows go back to waiting (they never
left the gateway), SUBMITTING rows are *in doubt* (`decide_in_doubt`): a verification code
(msgtype 2) fails UNKNOWN and is never sent again, a notification (msgtype 1) is sent again
as a new attempt while it has attempts left.

Every decider returns the update with its history event and, in `receipt`, the facts the
merchant hears about (an A003 step; the A002 as well when the update is final).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from enum import StrEnum
from typing import Final, Protocol

import attrs


class State(StrEnum):
    ACCEPTED = "accepted"  # waiting: due now, or retry-after when next_attempt_at is ahead
    SCHEDULED = "scheduled"  # waiting: the merchant asked for a later send time
    QUEUED = "queued"  # claimed by an owner's dispatcher, in that process's memory
    SUBMITTING = "submitting"  # handed to the carrier by its owner, no answer yet
    SUBMITTED = "submitted"  # accepted by the operator, waiting for its delivery report
    DELIVERED = "delivered"  # final
    FAILED = "failed"  # final


WAITING_STATES: Final[frozenset[State]] = frozenset({State.ACCEPTED, State.SCHEDULED})
FINAL_STATES: Final[frozenset[State]] = frozenset({State.DELIVERED, State.FAILED})
# States whose row belongs to an owner (a live process holding a lease).
OWNED_STATES: Final[frozenset[State]] = frozenset({State.QUEUED, State.SUBMITTING})

# The allowed transitions. A final state has none: a message is final once.
TRANSITIONS: Final[Mapping[State, frozenset[State]]] = {
    State.ACCEPTED: frozenset({State.QUEUED}),
    State.SCHEDULED: frozenset({State.QUEUED}),
    # back to waiting: put back at a stop, or reclaimed from a dead owner
    State.QUEUED: frozenset({State.SUBMITTING, State.ACCEPTED}),
    State.SUBMITTING: frozenset({State.SUBMITTED, State.DELIVERED, State.FAILED, State.ACCEPTED}),
    State.SUBMITTED: frozenset({State.SUBMITTED, State.DELIVERED, State.FAILED}),
    State.DELIVERED: frozenset(),
    State.FAILED: frozenset(),
}
# For each state, the states it may be reached from (what a store checks against).
PREDECESSORS: Final[Mapping[State, frozenset[State]]] = {
    target: frozenset(source for source, targets in TRANSITIONS.items() if target in targets)
    for target in State
}


class EventKind(StrEnum):
    """The event kinds smsgw writes (`Event.kind` is a plain str, so others may be added)."""

    ACCEPTED = "accepted"  # stored from an A001 (the message's accepted time: always first)
    SUBMITTED = "submitted"  # the operator accepted an attempt
    ATTEMPT_FAILED = "attempt_failed"  # an attempt failed (temporary, permanent, throttled)
    DELIVERY_REPORT = "delivery_report"  # the operator's report arrived
    FINAL = "final"  # the gateway decided the final outcome (e.g. retries exhausted)
    RECOVERED = "recovered"  # decided for a dead owner (an in-doubt SUBMITTING row)
    SUBMITTING = "submitting"  # an attempt is about to be handed to the carrier
    REQUEUED = "requeued"  # claimed but not sent: put back to waiting


class PushKind(StrEnum):
    RECEIPT = "A002"  # the final outcome
    STATUS_REPORT = "A003"  # every step


class PushState(StrEnum):
    PENDING = "pending"
    DONE = "done"
    ABANDONED = "abandoned"


# The gateway's own stats (the operator's come from the carrier).
STAT_ACCEPTED: Final = "ACCEPTD"  # accepted by the operator (final when it gives no reports)
STAT_RETRY_LIMIT: Final = "RETRY_LIMIT"  # msgtype 1: every attempt failed
STAT_NO_RETRY: Final = "NO_RETRY"  # msgtype 2: its one attempt failed
STAT_UNKNOWN: Final = "UNKNOWN"  # in doubt: it may or may not have reached the operator

THROTTLE_DELAY_MS: Final = 1000  # the operator asked us to slow down: try again in ~1 s
MAX_BACKOFF_S: Final = 3600.0

IN_DOUBT_RESEND: Final = "in doubt after its owner was lost: sending again"
IN_DOUBT_FAILED: Final = (
    "in doubt after its owner was lost: it may or may not have reached the operator"
)


class TransitionError(ValueError):
    """A transition the state machine does not allow (a bug in the caller)."""


def allowed(current: State, target: State) -> bool:
    return target in TRANSITIONS[current]


def check_transition(current: State, target: State) -> None:
    if not allowed(current, target):
        raise TransitionError(f"a message cannot go from {current} to {target}")


@attrs.frozen
class Event:
    """One step of a message's history (also the source of A003 items)."""

    kind: str  # an EventKind value, usually
    at_ms: int
    attempt: int  # 0 before the first attempt (the "accepted" event)
    stat: str | None = None
    error: str | None = None
    carrier_msgid: str | None = None


@attrs.frozen
class Receipt:
    """What the merchant hears about one step (A003) or the final outcome (A002, `final`).

    Facts, not JSON: the pusher (the merchant edge) encodes them."""

    final: bool  # the message's final outcome (an A002 as well as an A003)
    success: bool  # delivered / a step that went well
    stat: str
    attempt: int
    sendtime_ms: int  # when the attempt went out
    carrier_msgid: str | None = None
    error: str | None = None


@attrs.frozen
class Transition:
    """One transition, applied by the store atomically with its event, parts and outbox
    items — only if the row is still in `expected` (and claimed by `owner` when given):
    compare-and-set. `expected` None lets the store check only that the transition is
    allowed from whatever state the row is in.

    `next_attempt_at_ms` is used when `state` is a waiting state (ACCEPTED for a retry-after,
    SCHEDULED): the time the message becomes due, or `event.at_ms` (due now) when None.
    For every other state the row's next_attempt_at is cleared.
    A final state (DELIVERED, FAILED) sets the row's final time to `event.at_ms`.

    When the update carries operator ids (`part_ids`, or only `carrier_msgid` for a one-part
    message), they replace the message's part list: delivery reports are matched against
    the latest attempt's parts. Ids are stored as given: normalize them first
    (`Carrier.normalize_id`) and look them up normalized the same way.

    `receipt` is what the merchant hears (written to the outbox in the same transaction when
    the app takes receipts: see `outbox_kinds`).
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
    receipt: Receipt | None = None
    # The outbox items to write for `receipt` (`outbox_kinds`): the decider leaves them
    # empty, the caller who knows the app's receipt settings fills them in.
    pushes: tuple[PushKind, ...] = ()
    expected: State | None = None  # compare-and-set: the state the decision was made from
    owner: str | None = None  # compare-and-set: the owner the row must be claimed by

    def __attrs_post_init__(self) -> None:
        if self.clear_error and self.error is not None:
            raise ValueError("a Transition cannot both set and clear the error")
        if self.expected is not None:
            check_transition(self.expected, self.state)
        if self.pushes and self.receipt is None:
            raise ValueError("outbox items need the receipt they push")
        if self.receipt is not None and self.receipt.final != (self.state in FINAL_STATES):
            raise ValueError("a final receipt goes with a final state, and only then")


class Subject(Protocol):
    """What the deciders read of a message row (`smsgw.store.base.MessageRecord`)."""

    @property
    def id(self) -> int: ...
    @property
    def msgtype(self) -> int: ...
    @property
    def state(self) -> State: ...
    @property
    def attempts(self) -> int: ...
    @property
    def submitted_at_ms(self) -> int | None: ...
    @property
    def carrier_msgid(self) -> str | None: ...
    @property
    def next_attempt_at_ms(self) -> int | None: ...


class PartsView(Protocol):
    """Where a message's parts' reports stand (`smsgw.store.base.PartMatch`)."""

    @property
    def message(self) -> Subject: ...
    @property
    def part(self) -> PartView: ...
    @property
    def all_reported(self) -> bool: ...
    @property
    def all_delivered(self) -> bool: ...
    @property
    def failed_stat(self) -> str | None: ...


class PartView(Protocol):
    @property
    def carrier_msgid(self) -> str: ...
    @property
    def delivered(self) -> bool: ...
    @property
    def stat(self) -> str | None: ...


@attrs.frozen
class Policy:
    """The configuration the deciders follow."""

    max_retries: int = 3  # msgtype 1: attempts after the first
    gives_reports: bool = True  # the carrier sends delivery reports
    report_timeout_s: float = 172_800.0


# --------------------------------------------------------------------- submit outcomes


@attrs.frozen
class Accepted:
    """The operator took the attempt; ids already normalized."""

    carrier_msgid: str
    part_ids: tuple[str, ...]  # one per segment; empty: the single `carrier_msgid`


class FailureKind(enum.Enum):
    TEMPORARY = "temporary"  # retry (counts as a failed attempt)
    PERMANENT = "permanent"  # never retry
    THROTTLED = "throttled"  # slow down: retry soon, NOT a failed attempt
    IN_DOUBT = "in_doubt"  # the link died with the submit in flight


@attrs.frozen
class Failed:
    kind: FailureKind
    stat: str
    detail: str


def may_retry(msgtype: int, attempt: int, policy: Policy) -> bool:
    """Only notifications are retried: after the first attempt, up to max_retries more."""
    return msgtype == 1 and attempt < 1 + policy.max_retries


def requeue(record: Subject, now: int, *, owner: str | None = None) -> Transition:
    """A claimed row not sent (a stop): waiting again, due when it was due."""
    return Transition(
        record.id,
        State.ACCEPTED,
        Event(EventKind.REQUEUED, now, record.attempts),
        next_attempt_at_ms=record.next_attempt_at_ms,
        expected=State.QUEUED,
        owner=owner,
    )


def not_sent(record: Subject, now: int, *, owner: str) -> Transition:
    """A claimed row its owner never handed to the carrier, after a write of its SUBMITTING
    whose outcome is unknown (the connection died during COMMIT): waiting again, its
    attempts as they were, from QUEUED or SUBMITTING alike — whichever the write left. Only
    its owner may, and only it knows that the carrier never saw it."""
    return Transition(
        record.id,
        State.ACCEPTED,
        Event(EventKind.REQUEUED, now, record.attempts),
        attempts=record.attempts,
        next_attempt_at_ms=record.next_attempt_at_ms,
        expected=None,
        owner=owner,
    )


def submitting(record: Subject, now: int, *, owner: str | None = None) -> Transition:
    """The next attempt, durable before the carrier sees it."""
    attempt = record.attempts + 1
    return Transition(
        record.id,
        State.SUBMITTING,
        Event(EventKind.SUBMITTING, now, attempt),
        attempts=attempt,
        expected=State.QUEUED,
        owner=owner,
    )


def decide_submit(
    record: Subject,
    attempt: int,
    started: int,
    now: int,
    outcome: Accepted | Failed,
    policy: Policy,
    *,
    retry_delay_ms: int,
    owner: str | None = None,
) -> Transition:
    """The outcome of attempt `attempt` (started at `started`) of a SUBMITTING row.
    `retry_delay_ms` is the wait before the next attempt should there be one."""
    if isinstance(outcome, Accepted):
        return _accepted(record, attempt, started, now, outcome, policy, owner)
    kind, stat, detail = outcome.kind, outcome.stat, outcome.detail
    if kind is FailureKind.THROTTLED:
        # Not a failed attempt: the count goes back to what it was.
        return Transition(
            record.id,
            State.ACCEPTED,
            Event(EventKind.ATTEMPT_FAILED, now, attempt, stat, detail),
            attempts=attempt - 1,
            next_attempt_at_ms=now + THROTTLE_DELAY_MS,
            receipt=Receipt(False, False, stat, attempt, started, error=detail),
            expected=State.SUBMITTING,
            owner=owner,
        )
    if kind is FailureKind.PERMANENT:
        return _failed(record, attempt, now, stat, detail, None, owner, State.SUBMITTING)
    # TEMPORARY, or IN_DOUBT (the link died mid-submit: as after a lost owner).
    if may_retry(record.msgtype, attempt, policy):
        return Transition(
            record.id,
            State.ACCEPTED,
            Event(EventKind.ATTEMPT_FAILED, now, attempt, stat, detail),
            next_attempt_at_ms=now + retry_delay_ms,
            error=detail,
            receipt=Receipt(False, False, stat, attempt, started, error=detail),
            expected=State.SUBMITTING,
            owner=owner,
        )
    if kind is FailureKind.IN_DOUBT:
        final_stat = STAT_UNKNOWN
    elif record.msgtype == 1:
        final_stat = STAT_RETRY_LIMIT
    else:
        final_stat = STAT_NO_RETRY
    return _failed(record, attempt, now, final_stat, detail, stat, owner, State.SUBMITTING)


def _accepted(
    record: Subject,
    attempt: int,
    started: int,
    now: int,
    outcome: Accepted,
    policy: Policy,
    owner: str | None,
) -> Transition:
    carrier_msgid = outcome.carrier_msgid
    part_ids = outcome.part_ids or (carrier_msgid,)
    if policy.gives_reports:
        return Transition(
            record.id,
            State.SUBMITTED,
            Event(EventKind.SUBMITTED, now, attempt, STAT_ACCEPTED, carrier_msgid=carrier_msgid),
            carrier_msgid=carrier_msgid,
            part_ids=part_ids,
            submitted_at_ms=started,
            clear_error=True,  # an earlier attempt's error is no longer the story
            receipt=Receipt(False, True, STAT_ACCEPTED, attempt, started, carrier_msgid),
            expected=State.SUBMITTING,
            owner=owner,
        )
    # No reports will come: the operator's acceptance is the final outcome.
    return Transition(
        record.id,
        State.DELIVERED,
        Event(EventKind.FINAL, now, attempt, STAT_ACCEPTED, carrier_msgid=carrier_msgid),
        carrier_msgid=carrier_msgid,
        part_ids=part_ids,
        submitted_at_ms=started,
        stat=STAT_ACCEPTED,
        clear_error=True,
        receipt=Receipt(True, True, STAT_ACCEPTED, attempt, started, carrier_msgid),
        expected=State.SUBMITTING,
        owner=owner,
    )


def _failed(
    record: Subject,
    attempt: int,
    now: int,
    stat: str,
    detail: str,
    carrier_stat: str | None,
    owner: str | None,
    expected: State,
    *,
    kind: str = EventKind.FINAL,
    carrier_msgid: str | None = None,
) -> Transition:
    # When the gateway's stat replaces the operator's, the error text keeps the latter.
    error = detail if carrier_stat is None else f"{carrier_stat}: {detail}"
    sendtime = record.submitted_at_ms or now
    return Transition(
        record.id,
        State.FAILED,
        Event(kind, now, attempt, stat, error),
        stat=stat,
        error=error,
        receipt=Receipt(True, False, stat, attempt, sendtime, carrier_msgid, error),
        expected=expected,
        owner=owner,
    )


# --------------------------------------------------------------------- lost owners


def decide_in_doubt(
    record: Subject, now: int, policy: Policy, *, owner: str | None = None
) -> Transition:
    """A SUBMITTING row whose owner was lost (taken over by `owner`): the attempt may or may
    not have reached the operator. A notification is sent again while it has attempts
    left; anything else (a verification code above all) fails as UNKNOWN rather than risk
    a second SMS."""
    attempt = record.attempts
    if may_retry(record.msgtype, attempt, policy):
        return Transition(
            record.id,
            State.ACCEPTED,
            Event(EventKind.RECOVERED, now, attempt, STAT_UNKNOWN, IN_DOUBT_RESEND),
            next_attempt_at_ms=now,
            receipt=Receipt(False, False, STAT_UNKNOWN, attempt, now, error=IN_DOUBT_RESEND),
            expected=State.SUBMITTING,
            owner=owner,
        )
    return _failed(
        record,
        attempt,
        now,
        STAT_UNKNOWN,
        IN_DOUBT_FAILED,
        None,
        owner,
        State.SUBMITTING,
        kind=EventKind.RECOVERED,
    )


# --------------------------------------------------------------------- reports


def decide_report(match: PartsView, now: int, *, error: str | None = None) -> Transition:
    """The update for the report of `match.part` (as recorded) of a SUBMITTED message: a
    step while other parts have not reported, else the message's final outcome. `error` is
    the report's text (only a live report has one: the store keeps the part's stat)."""
    message = match.message
    part = match.part
    part_id = part.carrier_msgid
    part_stat = part.stat if part.stat is not None else STAT_UNKNOWN
    attempt = message.attempts
    sendtime = message.submitted_at_ms or now
    event = Event(EventKind.DELIVERY_REPORT, now, attempt, part_stat, error, carrier_msgid=part_id)
    if not match.all_reported:
        return Transition(
            message.id,
            State.SUBMITTED,
            event,
            receipt=Receipt(False, part.delivered, part_stat, attempt, sendtime, part_id, error),
            expected=State.SUBMITTED,
        )
    if match.all_delivered:
        state, stat, final_error = State.DELIVERED, part_stat, None
    else:
        state = State.FAILED
        stat = match.failed_stat or part_stat
        final_error = error if not part.delivered else None
    success = state is State.DELIVERED
    return Transition(
        message.id,
        state,
        event,
        stat=stat,
        error=final_error,
        clear_error=success,
        receipt=Receipt(True, success, stat, attempt, sendtime, part_id, final_error),
        expected=State.SUBMITTED,
    )


def decide_timeout(record: Subject, now: int, policy: Policy) -> Transition:
    """A SUBMITTED message whose report did not come within the report timeout."""
    return _failed(
        record,
        record.attempts,
        now,
        STAT_UNKNOWN,
        f"no delivery report within {policy.report_timeout_s:g} s",
        None,
        None,
        State.SUBMITTED,
        carrier_msgid=record.carrier_msgid,
    )


# --------------------------------------------------------------------- receipts


def outbox_kinds(receipt: Receipt, *, status_reports: bool) -> tuple[PushKind, ...]:
    """The outbox items a receipt makes for an app with a receipt endpoint."""
    kinds = (PushKind.RECEIPT,) if receipt.final else ()
    return (*kinds, PushKind.STATUS_REPORT) if status_reports else kinds


def decide_push_result(sends: int, ok: bool, max_attempts: int) -> PushState:
    """An outbox item after its `sends`-th send: done when acknowledged, abandoned once it
    has been sent `max_attempts` times, else pending (due again after a backoff)."""
    if ok:
        return PushState.DONE
    return PushState.ABANDONED if sends >= max_attempts else PushState.PENDING
