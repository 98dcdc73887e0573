"""The sending pipeline: dispatcher → senders → carrier, and the delivery-report consumer.

DESIGN.md §2. The store is the source of truth; the memory channel between the dispatcher
and the senders is only a fast path with a fixed capacity, so memory stays bounded whatever
the backlog: the dispatcher claims (`Store.claim_due`) only as many due rows as the channel
has room for.

A sender makes each attempt durable as SUBMITTING *before* handing the message to the
carrier, then records the outcome: in the same write as its next message's SUBMITTING when
one is waiting (one write a message under load), else on its own at once. After a crash
the store hands the SUBMITTING rows back (`Store.recover`) and `run()` decides them before
anything is sent: a verification code (msgtype 2) is failed with stat UNKNOWN, never
resent; a notification (msgtype 1) is sent again as a new attempt while it has attempts
left.

Every final outcome writes its A002 outbox item in the same `Store.apply` as the state
change, and only a transition out of SUBMITTING (sender, recovery) or SUBMITTED (report
consumer, recovery) is ever final, each decided by exactly one task: one A002 per
(msgid, phone).

A delivery report takes two writes: `Store.record_part_reports` marks the part, then an
`apply` records the step or the final outcome. A crash between the two would leave the
message SUBMITTED with every part reported, and a repeated report counts as a duplicate.
So such messages are made final at start-up (`Store.recover` returns them) and when a
repeated report arrives for one, by the same decision as the report that completed it
(`_report_update`, from the parts as stored).

A message whose report never comes would wait in SUBMITTED forever: the report consumer
(the one task that decides SUBMITTED rows) fails those submitted more than
`SMSGW_REPORT_TIMEOUT` ago with stat UNKNOWN, looking for them every minute at most. A report
that comes later still is ignored: the merchant has had its one A002.

Delivery reports are matched to messages by `Carrier.normalize_id`. A report can arrive
before the sender's SUBMITTED update (with the part ids) is committed; such reports are kept
in memory (bounded in number and age) and matched again once the sender has recorded its
part ids.
"""

from __future__ import annotations

import collections
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from typing import Final

import attrs
import trio

from smsgw.carriers.base import (
    Carrier,
    DeliveryReport,
    OutboundSms,
    SubmitAccepted,
    SubmitError,
    SubmitErrorKind,
)
from smsgw.clock import WallClock
from smsgw.config import AppConfig, Config
from smsgw.histogram import Histogram
from smsgw.protocol.messages import ReceiptItem, StatusReportItem, encode_json
from smsgw.store.base import (
    FINAL_STATES,
    EventKind,
    MessageRecord,
    MessageUpdate,
    NewPush,
    PartMatch,
    PartReport,
    PushKind,
    State,
    Store,
    StoreError,
)
from smsgw.store.base import Event as HistoryEvent

log = logging.getLogger("smsgw.pipeline")

# The gateway's own stats (the operator's come from the carrier).
STAT_ACCEPTED: Final = "ACCEPTD"  # accepted by the operator (final when it gives no reports)
STAT_RETRY_LIMIT: Final = "RETRY_LIMIT"  # msgtype 1: every attempt failed
STAT_NO_RETRY: Final = "NO_RETRY"  # msgtype 2: its one attempt failed
STAT_UNKNOWN: Final = "UNKNOWN"  # in doubt: it may or may not have reached the operator

# Item `status` of A002 / A003: "1" success (delivered, or a step that went well), "2" failure.
PUSH_SUCCESS: Final = "1"
PUSH_FAILURE: Final = "2"

THROTTLE_DELAY_MS: Final = 1000  # the operator asked us to slow down: try again in ~1 s
MAX_BACKOFF_S: Final = 3600.0
POLL_INTERVAL_S: Final = 1.0  # the dispatcher looks at the store at least this often
RECORD_TIMEOUT_S: Final = 10.0  # an outcome write is shielded from cancellation this long
RECOVERY_CHUNK: Final = 500  # in-doubt rows decided per store.apply at start-up
REPORT_BATCH: Final = 256  # reports recorded together (one group commit)
REPORT_SWEEP_MAX_S: Final = 60.0  # overdue reports are looked for at least this often
REPORT_SWEEP_BATCH: Final = 500  # overdue messages failed per store.apply
MAX_UNMATCHED: Final = 100_000  # reports kept while their submit is not recorded yet
UNMATCHED_TTL_S: Final = 600.0


def _log_failed_attempt(
    record: MessageRecord, attempt: int, error: SubmitError, update: MessageUpdate
) -> None:
    """The one line of a carrier attempt that did not go through: info while the message
    will be tried again, a warning when it has failed for good."""
    final = update.state is State.FAILED
    log.log(
        logging.WARNING if final else logging.INFO,
        "carrier attempt failed: app=%s msgid=%s id=%d attempt=%d stat=%s (%s): %s",
        record.appid,
        record.msgid,
        record.id,
        attempt,
        error.stat,
        f"final: {update.stat}" if final else "will retry",
        error.detail,
    )


def retry_delay_s(attempt: int, base_s: float, rng: random.Random) -> float:
    """Seconds before the attempt after failed attempt `attempt` (1 for the first):
    base × 2^(attempt-1), jittered ×0.5–1.5 so failed batches do not come back together,
    capped at an hour."""
    exponent = min(max(attempt - 1, 0), 64)
    return float(min(base_s * 2.0**exponent * rng.uniform(0.5, 1.5), MAX_BACKOFF_S))


@attrs.define
class PipelineStats:
    """Counters for tests and metrics."""

    claims: int = 0  # claim_due calls that returned rows
    claimed: int = 0  # rows claimed in all
    largest_claim: int = 0
    peak_buffered: int = 0  # most rows ever waiting in the channel
    submits: int = 0  # carrier.submit calls
    requeued: int = 0
    recovered: int = 0  # in-doubt rows decided at start-up
    finished_late: int = 0  # all parts reported but not made final (a crash between the
    #                         two writes of a report): made final at start-up or on a repeat
    reports: int = 0  # reports read from the carrier
    reports_unmatched: int = 0  # reports kept because their id was not known yet
    reports_rematched: int = 0  # kept reports matched later
    reports_dropped: int = 0  # kept reports given up (too many, or too old)
    reports_duplicate: int = 0
    reports_ignored: int = 0  # for a message no longer waiting for its report
    reports_timed_out: int = 0  # messages failed for want of a report (report_timeout)


_Outcome = tuple[str, MessageUpdate]  # (appid, update) of a decided submit


@attrs.frozen
class _Step:
    """One step of a message's life, as the merchant hears about it (A002 / A003)."""

    success: bool
    stat: str
    attempt: int
    sendtime: int
    carrier_msgid: str | None = None
    error: str | None = None


def _finishing(seconds: float) -> trio.CancelScope:
    """Shield a write that records what already happened from a shutdown's cancellation,
    for a bounded time (a scope to enter; plain, not a generator: it runs per message)."""
    return trio.CancelScope(deadline=trio.current_time() + seconds, shield=True)


class Pipeline:
    """Dispatcher, senders and report consumer (see the module doc).

    `on_pushes(appid)` is called after each commit that wrote outbox items for the app (the
    gateway wires it to `Pusher.wake`).
    """

    def __init__(
        self,
        config: Config,
        store: Store,
        carrier: Carrier,
        clock: WallClock,
        *,
        rng: random.Random | None = None,
        max_unmatched: int = MAX_UNMATCHED,
        unmatched_ttl_s: float = UNMATCHED_TTL_S,
    ) -> None:
        self.config = config
        self.store = store
        self.carrier = carrier
        self.clock = clock
        self.on_pushes: Callable[[str], None] = lambda appid: None
        # A carrier with a window gets exactly as many senders as it has slots: a sender
        # holds its message SUBMITTING, and one waiting for a slot would leave a message in
        # doubt after a crash that was never sent. SMSGW_SENDERS is for the others.
        self.senders = carrier.concurrency or config.senders
        self.capacity = 2 * self.senders
        self.stats = PipelineStats()
        self.submit_seconds = Histogram()  # carrier.submit calls, whatever their outcome
        self._apps = {app.appid: app for app in config.apps}
        self._rng = rng or random.Random()
        self._max_unmatched = max_unmatched
        self._unmatched_ttl_s = unmatched_ttl_s
        self._started = False
        self._stopping = False
        self._dispatch_scope = trio.CancelScope()
        self._wake_event = trio.Event()
        self._sleep_until = math.inf  # the dispatcher's deadline while it sleeps, else inf
        self._space = trio.Event()
        self._queue_send, self._queue_receive = trio.open_memory_channel[MessageRecord](
            self.capacity
        )
        # normalized id → (trio time kept, report); insertion order = age order
        self._unmatched: collections.OrderedDict[str, tuple[float, DeliveryReport]] = (
            collections.OrderedDict()
        )
        self._rematch: list[DeliveryReport] = []  # kept reports whose parts were recorded
        self._unrecorded: list[DeliveryReport] = []  # reports a store error left unrecorded
        self._unapplied: list[tuple[str, MessageUpdate]] = []  # updates a store error left
        self._consumer_busy = False
        # Part ids senders committed while a kept report might be waiting for them.
        self._recorded_parts: list[tuple[str, ...]] = []
        self._consumer_wait: trio.CancelScope | None = None  # the idle consumer's wait
        self._reports_ended = False  # the carrier closed its reports channel
        # A tenth of the timeout, so a message fails at most 10% late; not more often than
        # every second nor less often than every minute.
        self._sweep_interval_s = min(REPORT_SWEEP_MAX_S, max(1.0, config.report_timeout / 10))
        self._next_sweep = -math.inf  # trio time of the next look for overdue reports

    # ------------------------------------------------------------------ control

    def wake(self, due_ms: int | None = None) -> None:
        """New messages were stored, due at `due_ms` at the earliest (None: now): the
        dispatcher looks at the store now unless it will anyway by then (a message
        scheduled for tomorrow costs no look)."""
        if due_ms is None:
            self._wake_event.set()
        else:
            self._due_at(due_ms)

    def stop(self) -> None:
        """Graceful stop: no more claims; senders finish (and record) the submit in hand."""
        self._stopping = True
        self._dispatch_scope.cancel()
        self._wake_event.set()
        self._space.set()

    @property
    def unmatched_reports(self) -> int:
        return len(self._unmatched)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Recover in-doubt rows, then dispatch, send and consume reports until `stop()`."""
        if self._started:
            raise RuntimeError("Pipeline.run() can only be called once")
        self._started = True
        await self._recover()
        async with trio.open_nursery() as reports:
            reports.start_soon(self._consume_reports)
            async with trio.open_nursery() as workers:
                for _ in range(self.senders):
                    workers.start_soon(self._sender, self._queue_receive.clone())
                workers.start_soon(self._dispatch)
                task_status.started()
            # Every claimed row is recorded or put back: nothing more to submit.
            reports.cancel_scope.cancel()
        log.info("pipeline stopped", extra={"submits": self.stats.submits})

    # ------------------------------------------------------------------ recovery

    async def _recover(self) -> None:
        now = self.clock.now_ms()
        report = await self.store.recover(now)
        updates = [(record.appid, self._decide_in_doubt(record, now)) for record in report.in_doubt]
        # Their last report was recorded but the crash lost its final update: the update the
        # report consumer would have applied (without the report's text: it is not stored).
        updates += [
            (match.message.appid, self._report_update(match, now)) for match in report.reported
        ]
        for start in range(0, len(updates), RECOVERY_CHUNK):
            await self._apply(updates[start : start + RECOVERY_CHUNK])
        self.stats.recovered += len(report.in_doubt)
        self.stats.finished_late += len(report.reported)
        if report.requeued or report.in_doubt or report.reported or report.pending_pushes:
            log.info(
                "recovered: %d queued rows requeued, %d in-doubt submits decided,"
                " %d fully reported messages made final, %d pushes pending",
                report.requeued,
                len(report.in_doubt),
                len(report.reported),
                report.pending_pushes,
            )

    def _decide_in_doubt(self, record: MessageRecord, now: int) -> MessageUpdate:
        """A SUBMITTING row found at start-up: the attempt may or may not have reached the
        operator. A notification is sent again while it has attempts left; anything else
        (a verification code above all) fails as UNKNOWN rather than risk a second SMS."""
        attempt = record.attempts
        if self._may_retry(record, attempt):
            step = _Step(
                False,
                STAT_UNKNOWN,
                attempt,
                now,
                error="in doubt after a restart: sending again",
            )
            return MessageUpdate(
                record.id,
                State.ACCEPTED,
                HistoryEvent(EventKind.RECOVERED, now, attempt, STAT_UNKNOWN, step.error),
                next_attempt_at_ms=now,
                pushes=self._pushes(record, step, final=False),
            )
        reason = "in doubt after a restart: it may or may not have reached the operator"
        step = _Step(False, STAT_UNKNOWN, attempt, record.submitted_at_ms or now, error=reason)
        return MessageUpdate(
            record.id,
            State.FAILED,
            HistoryEvent(EventKind.RECOVERED, now, attempt, STAT_UNKNOWN, reason),
            stat=STAT_UNKNOWN,
            error=reason,
            pushes=self._pushes(record, step, final=True),
        )

    # ------------------------------------------------------------------ dispatcher

    async def _dispatch(self) -> None:
        try:
            with self._dispatch_scope:
                while True:
                    try:
                        await self._dispatch_once()
                    except StoreError as exc:
                        log.error("dispatcher: store error, retrying in 1 s: %s", exc)
                        await trio.sleep(POLL_INTERVAL_S)
            await self._return_buffered()
        finally:
            self._queue_send.close()

    async def _dispatch_once(self) -> None:
        free = self.capacity - self._queue_send.statistics().current_buffer_used
        if free <= 0:
            # No checkpoint between the check and the new Event: a sender's set() is not lost.
            self._space = trio.Event()
            await self._space.wait()
            return
        self._wake_event = trio.Event()
        self._sleep_until = math.inf  # mid-round: a row due any time wakes us (see _due_at)
        now = self.clock.now_ms()
        # A read first: claiming is a durable write, too dear to run on every idle poll.
        next_due = await self.store.next_due_at()
        deadline = trio.current_time() + POLL_INTERVAL_S
        if next_due is not None and next_due <= now:
            claimed = await self.store.claim_due(now, free)
            if claimed:
                self.stats.claims += 1
                self.stats.claimed += len(claimed)
                self.stats.largest_claim = max(self.stats.largest_claim, len(claimed))
                for record in claimed:
                    # Fits: only this task sends, and senders only take rows out meanwhile.
                    self._queue_send.send_nowait(record)
                buffered = self._queue_send.statistics().current_buffer_used
                self.stats.peak_buffered = max(self.stats.peak_buffered, buffered)
                return  # more may be due: the next round looks again
            # Claimed elsewhere meanwhile (another gateway on a shared store): poll.
        elif next_due is not None:
            # +1 ms: at that trio time the wall clock reads next_due even after rounding.
            deadline = min(deadline, self.clock.trio_time(next_due) + 0.001)
        self._sleep_until = deadline
        with trio.move_on_at(deadline):
            await self._wake_event.wait()

    def _due_at(self, when_ms: int) -> None:
        """A row written back to waiting is due at `when_ms`: wake the dispatcher if it would
        otherwise sleep past that (a retry after 50 ms must not wait for the 1 s poll)."""
        if self.clock.trio_time(when_ms) < self._sleep_until:
            self._wake_event.set()

    async def _return_buffered(self) -> None:
        """At stop: rows claimed but not taken by a sender go back to waiting."""
        records: list[MessageRecord] = []
        while True:
            try:
                records.append(self._queue_receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        await self._requeue(records)

    async def _requeue(self, records: Sequence[MessageRecord]) -> None:
        if not records:
            return
        now = self.clock.now_ms()
        updates = [
            MessageUpdate(
                record.id,
                State.ACCEPTED,
                HistoryEvent(EventKind.REQUEUED, now, record.attempts),
                next_attempt_at_ms=record.next_attempt_at_ms,
            )
            for record in records
        ]
        try:
            with _finishing(RECORD_TIMEOUT_S):
                await self.store.apply(updates)
        except StoreError as exc:
            # They stay QUEUED: `recover()` puts them back at the next start.
            log.error("could not requeue %d claimed messages: %s", len(records), exc)
            return
        self.stats.requeued += len(records)

    # ------------------------------------------------------------------ senders

    async def _sender(self, receive: trio.MemoryReceiveChannel[MessageRecord]) -> None:
        # The outcome of this sender's last submit while it is not written yet. Under load it
        # goes in the same store.apply as the next message's SUBMITTING (one write and one
        # wait a message instead of two); with no message waiting, on its own at once.
        unrecorded: _Outcome | None = None
        async with receive:
            try:
                while True:
                    try:
                        # Under load a row is waiting: take it without a trip through the
                        # scheduler (_send_one's writes are the checkpoints).
                        record = receive.receive_nowait()
                    except trio.WouldBlock:
                        if unrecorded is not None:
                            outcome, unrecorded = unrecorded, None
                            await self._record_outcome(outcome)
                        try:
                            record = await receive.receive()
                        except trio.EndOfChannel:
                            return
                    except trio.EndOfChannel:
                        return
                    if not self._space.is_set():
                        self._space.set()
                    previous, unrecorded = unrecorded, None
                    if self._stopping:
                        if previous is not None:
                            await self._record_outcome(previous)
                        await self._requeue([record])
                        continue
                    try:
                        unrecorded = await self._send_one(record, previous)
                    except StoreError as exc:
                        log.error("message %d: store error: %s", record.id, exc)
                    except Exception:
                        # A bug must cost this message (decided at the next start), not the
                        # pipeline.
                        log.exception("message %d: sender failed", record.id)
            finally:
                if unrecorded is not None:
                    await self._record_outcome(unrecorded)

    async def _send_one(self, record: MessageRecord, previous: _Outcome | None) -> _Outcome:
        """Submit one message; return its outcome, for the caller to record. `previous`, the
        sender's last outcome not recorded yet, is recorded with this one's SUBMITTING."""
        attempt = record.attempts + 1
        started = self.clock.now_ms()
        submitting = MessageUpdate(
            record.id,
            State.SUBMITTING,
            HistoryEvent(EventKind.SUBMITTING, started, attempt),
            attempts=attempt,
        )
        # Durable BEFORE the carrier sees it: after a crash this row is known to be in doubt.
        if previous is None:
            await self.store.apply([submitting])
        else:
            await self._record_with_submitting(previous, (record.appid, submitting))
        sms = OutboundSms(
            message_id=record.id,
            appid=record.appid,
            msgid=record.msgid,
            phone=record.phone,
            text=record.message,
            msgtype=record.msgtype,
            attempt=attempt,
        )
        self.stats.submits += 1
        outcome: SubmitAccepted | SubmitError
        submit_started = time.perf_counter()
        try:
            outcome = await self.carrier.submit(sms)
        except SubmitError as exc:
            outcome = exc
        except Exception as exc:
            log.exception("message %d: carrier %s failed", record.id, self.carrier.name)
            outcome = SubmitError(SubmitErrorKind.IN_DOUBT, "CARRIER_ERROR", repr(exc))
        self.submit_seconds.observe(time.perf_counter() - submit_started)
        update = self._decide(record, attempt, started, outcome)
        if isinstance(outcome, SubmitError):
            _log_failed_attempt(record, attempt, outcome, update)
        return record.appid, update

    async def _record_with_submitting(self, previous: _Outcome, submitting: _Outcome) -> None:
        """Record a sender's last outcome and its next message's SUBMITTING in one write;
        raises StoreError when the SUBMITTING could not be written (the message is not to be
        sent)."""
        try:
            # Shielded: the outcome records what already happened.
            with _finishing(RECORD_TIMEOUT_S):
                await self._apply([previous, submitting])
        except StoreError:
            # All or none: each on its own, so that one's failure does not cost the other.
            await self._record_outcome(previous)
            await self.store.apply([submitting[1]])
            return
        self._outcome_recorded(previous[1])

    async def _record_outcome(self, outcome: _Outcome) -> None:
        """Write a submit's outcome; a store error is logged (the row stays SUBMITTING, so the
        next start decides it as in doubt)."""
        try:
            with _finishing(RECORD_TIMEOUT_S):
                await self._apply([outcome])
        except StoreError as exc:
            log.error("message %d: store error: %s", outcome[1].message_id, exc)
            return
        self._outcome_recorded(outcome[1])

    def _outcome_recorded(self, update: MessageUpdate) -> None:
        if update.state is State.ACCEPTED and update.next_attempt_at_ms is not None:
            self._due_at(update.next_attempt_at_ms)
        if update.part_ids and update.state is State.SUBMITTED:
            self._parts_recorded(update.part_ids)

    def _decide(
        self,
        record: MessageRecord,
        attempt: int,
        started: int,
        outcome: SubmitAccepted | SubmitError,
    ) -> MessageUpdate:
        now = self.clock.now_ms()
        if isinstance(outcome, SubmitAccepted):
            return self._accepted(record, attempt, started, now, outcome)
        kind, stat, detail = outcome.kind, outcome.stat, outcome.detail
        if kind is SubmitErrorKind.THROTTLED:
            # Not a failed attempt: the count goes back to what it was.
            step = _Step(False, stat, attempt, started, error=detail)
            return MessageUpdate(
                record.id,
                State.ACCEPTED,
                HistoryEvent(EventKind.ATTEMPT_FAILED, now, attempt, stat, detail),
                attempts=record.attempts,
                next_attempt_at_ms=now + THROTTLE_DELAY_MS,
                pushes=self._pushes(record, step, final=False),
            )
        if kind is SubmitErrorKind.PERMANENT:
            return self._failed(record, attempt, now, stat, detail, carrier_stat=None)
        # TEMPORARY, or IN_DOUBT (the link died mid-submit: handled as after a crash).
        if self._may_retry(record, attempt):
            delay_ms = int(retry_delay_s(attempt, self.config.retry_backoff, self._rng) * 1000)
            step = _Step(False, stat, attempt, started, error=detail)
            return MessageUpdate(
                record.id,
                State.ACCEPTED,
                HistoryEvent(EventKind.ATTEMPT_FAILED, now, attempt, stat, detail),
                next_attempt_at_ms=now + delay_ms,
                error=detail,
                pushes=self._pushes(record, step, final=False),
            )
        if kind is SubmitErrorKind.IN_DOUBT:
            final_stat = STAT_UNKNOWN
        elif record.msgtype == 1:
            final_stat = STAT_RETRY_LIMIT
        else:
            final_stat = STAT_NO_RETRY
        return self._failed(record, attempt, now, final_stat, detail, carrier_stat=stat)

    def _accepted(
        self,
        record: MessageRecord,
        attempt: int,
        started: int,
        now: int,
        outcome: SubmitAccepted,
    ) -> MessageUpdate:
        normalize = self.carrier.normalize_id
        carrier_msgid = normalize(outcome.carrier_msgid)
        part_ids = tuple(normalize(part) for part in outcome.part_ids) or (carrier_msgid,)
        step = _Step(True, STAT_ACCEPTED, attempt, started, carrier_msgid)
        if self.carrier.gives_reports:
            return MessageUpdate(
                record.id,
                State.SUBMITTED,
                HistoryEvent(
                    EventKind.SUBMITTED, now, attempt, STAT_ACCEPTED, carrier_msgid=carrier_msgid
                ),
                carrier_msgid=carrier_msgid,
                part_ids=part_ids,
                submitted_at_ms=started,
                clear_error=True,  # an earlier attempt's error is no longer the story
                pushes=self._pushes(record, step, final=False),
            )
        # No reports will come: the operator's acceptance is the final outcome.
        return MessageUpdate(
            record.id,
            State.DELIVERED,
            HistoryEvent(EventKind.FINAL, now, attempt, STAT_ACCEPTED, carrier_msgid=carrier_msgid),
            carrier_msgid=carrier_msgid,
            part_ids=part_ids,
            submitted_at_ms=started,
            stat=STAT_ACCEPTED,
            clear_error=True,
            pushes=self._pushes(record, step, final=True),
        )

    def _failed(
        self,
        record: MessageRecord,
        attempt: int,
        now: int,
        stat: str,
        detail: str,
        *,
        carrier_stat: str | None,
        carrier_msgid: str | None = None,
    ) -> MessageUpdate:
        # When the gateway's stat replaces the operator's, the error text keeps the latter.
        error = detail if carrier_stat is None else f"{carrier_stat}: {detail}"
        step = _Step(False, stat, attempt, record.submitted_at_ms or now, carrier_msgid, error)
        return MessageUpdate(
            record.id,
            State.FAILED,
            HistoryEvent(EventKind.FINAL, now, attempt, stat, error),
            stat=stat,
            error=error,
            pushes=self._pushes(record, step, final=True),
        )

    def _may_retry(self, record: MessageRecord, attempt: int) -> bool:
        """Only notifications are retried: after the first attempt, up to max_retries more."""
        return record.msgtype == 1 and attempt < 1 + self.config.max_retries

    # ------------------------------------------------------------------ reports

    def _parts_recorded(self, part_ids: tuple[str, ...]) -> None:
        # Needed only if a report for these ids may have missed them: one is kept, or the
        # consumer is recording reports right now (its lookup may have run before our
        # commit). Any report still to be read will find the parts.
        if self._unmatched or self._consumer_busy or self._rematch:
            self._recorded_parts.append(part_ids)
            if self._consumer_wait is not None:
                self._consumer_wait.cancel()  # a kept report may match now

    async def _next_report(self) -> list[DeliveryReport]:
        """Wait for a report from the carrier (in a list), or for senders to record parts or
        the next sweep for overdue reports (an empty list)."""
        # Read straight from the carrier's channel: not `async with`, closing it is the
        # carrier's business.
        reports = self.carrier.reports()
        # Woken at the next sweep's time too (then an empty list).
        with trio.CancelScope(deadline=self._next_sweep) as self._consumer_wait:
            try:
                if not self._reports_ended:
                    try:
                        return [await reports.receive()]
                    except trio.EndOfChannel:
                        self._reports_ended = True
                await trio.sleep_forever()
            finally:
                self._consumer_wait = None
        return []

    async def _consume_reports(self) -> None:
        reports = self.carrier.reports()
        while True:
            if trio.current_time() >= self._next_sweep and not self._unapplied:
                await self._fail_overdue()
            batch: list[DeliveryReport] = []
            if not (
                self._rematch
                or self._unrecorded
                or self._unapplied
                or (self._recorded_parts and self._unmatched)
            ):
                batch = await self._next_report()
            while len(batch) < REPORT_BATCH and not self._reports_ended:
                try:
                    batch.append(reports.receive_nowait())
                except trio.WouldBlock:
                    break
                except trio.EndOfChannel:
                    self._reports_ended = True
            self.stats.reports += len(batch)
            self._consumer_busy = True
            try:
                with _finishing(RECORD_TIMEOUT_S):
                    await self._process_reports(batch)
            except StoreError as exc:
                # What failed is kept (_unrecorded, _unapplied) and tried again.
                log.error("delivery reports: store error, retrying in 1 s: %s", exc)
                await trio.sleep(POLL_INTERVAL_S)
            finally:
                self._consumer_busy = False

    async def _process_reports(self, batch: list[DeliveryReport]) -> None:
        rematched = len(self._rematch)
        reports = [
            *self._rematch,
            *self._unrecorded,
            *batch,
        ]
        self._rematch, self._unrecorded = [], []
        normalize = self.carrier.normalize_id
        ids = [normalize(report.carrier_msgid) for report in reports]
        matches: list[PartMatch | None] = []
        failure: StoreError | None = None
        try:
            # The whole batch in one write.
            matches = await self.store.record_part_reports(
                [
                    PartReport(part_id, report.delivered, report.stat, report.at_ms)
                    for part_id, report in zip(ids, reports, strict=True)
                ]
            )
        except StoreError as exc:  # nothing recorded: the reports are tried again
            failure = exc
            self._unrecorded, reports, rematched = reports, [], 0

        now = self.clock.now_ms()
        steps: list[tuple[str, MessageUpdate]] = []
        finals: list[tuple[str, MessageUpdate]] = []
        # Messages made final by an update not committed yet (this batch, or one a store
        # error left): a repeated report must not make them final a second time.
        finishing = {
            update.message_id for _, update in self._unapplied if update.state in FINAL_STATES
        }
        repeated: list[PartMatch] = []  # duplicates of a message with every part reported
        for index, (report, match) in enumerate(zip(reports, matches, strict=True)):
            if match is None:
                self._keep_unmatched(ids[index], report)
                continue
            if index < rematched:
                self.stats.reports_rematched += 1
            message = match.message
            if match.duplicate:
                self.stats.reports_duplicate += 1
                if message.state is State.SUBMITTED and match.all_reported:
                    repeated.append(match)
                continue
            if message.state is not State.SUBMITTED or message.id in finishing:
                self.stats.reports_ignored += 1
                continue
            update = self._report_update(match, now, error=report.error)
            if update.state is State.SUBMITTED:
                steps.append((message.appid, update))
            else:
                finishing.add(message.id)
                finals.append((message.appid, update))
        # Looked at after the batch's own reports: the one that completed a message in this
        # batch also reads SUBMITTED, and its final (with the report's text) is the one kept.
        for match in repeated:
            if match.message.id in finishing:
                continue
            # Every part had reported, yet the message is not final: its final update was
            # lost (a crash between the two writes). Decided from the parts as stored.
            finishing.add(match.message.id)
            self.stats.finished_late += 1
            finals.append((match.message.appid, self._report_update(match, now)))

        # After this batch's unmatched reports were kept: parts recorded while it looked
        # them up are in the list.
        recorded, self._recorded_parts = self._recorded_parts, []
        if self._unmatched:
            for part_ids in recorded:
                for part_id in part_ids:
                    kept = self._unmatched.pop(part_id, None)
                    if kept is not None:
                        self._rematch.append(kept[1])

        # The parts are recorded now, so these updates must not be lost: a report sent
        # again would count as a duplicate. A failed apply changed nothing and is retried.
        # Only the report that completed a message's parts is final, and it goes last:
        # a step of the same message applied after it would undo the final state.
        updates = [*self._unapplied, *steps, *finals]
        self._unapplied = []
        try:
            await self._apply(updates)
        except StoreError:
            self._unapplied = updates
            raise
        if failure is not None:
            raise failure

    async def _fail_overdue(self) -> None:
        """Fail the messages that waited longer than report_timeout for their report. Runs
        in the report consumer, so that it and a live report never both decide a message."""
        now = self.clock.now_ms()
        submitted_before = now - round(self.config.report_timeout * 1000)
        try:
            while True:
                overdue = await self.store.overdue_submitted(submitted_before, REPORT_SWEEP_BATCH)
                if not overdue:
                    break
                with _finishing(RECORD_TIMEOUT_S):
                    await self._apply(
                        [(record.appid, self._timed_out(record, now)) for record in overdue]
                    )
                self.stats.reports_timed_out += len(overdue)
                log.warning(
                    "%d messages failed with stat %s: no delivery report within %g s",
                    len(overdue),
                    STAT_UNKNOWN,
                    self.config.report_timeout,
                )
                if len(overdue) < REPORT_SWEEP_BATCH:
                    break
        except StoreError as exc:
            log.error("looking for overdue delivery reports: store error: %s", exc)
        self._next_sweep = trio.current_time() + self._sweep_interval_s

    def _timed_out(self, record: MessageRecord, now: int) -> MessageUpdate:
        return self._failed(
            record,
            record.attempts,
            now,
            STAT_UNKNOWN,
            f"no delivery report within {self.config.report_timeout:g} s",
            carrier_stat=None,
            carrier_msgid=record.carrier_msgid,
        )

    def _report_update(
        self, match: PartMatch, now: int, *, error: str | None = None
    ) -> MessageUpdate:
        """The update for the report of `match.part` (as recorded): a step while other parts
        have not reported, else the message's final outcome. `error` is the report's text
        (only a live report has one: the store keeps the part's stat, not its text)."""
        message = match.message
        part = match.part
        part_id = part.carrier_msgid
        part_stat = part.stat if part.stat is not None else STAT_UNKNOWN
        attempt = message.attempts
        sendtime = message.submitted_at_ms or now
        event = HistoryEvent(
            EventKind.DELIVERY_REPORT, now, attempt, part_stat, error, carrier_msgid=part_id
        )
        part_step = _Step(part.delivered, part_stat, attempt, sendtime, part_id, error)
        if not match.all_reported:
            return MessageUpdate(
                message.id,
                State.SUBMITTED,
                event,
                pushes=self._pushes(message, part_step, final=False),
            )
        if match.all_delivered:
            state, stat, final_error = State.DELIVERED, part_stat, None
        else:
            state = State.FAILED
            stat = match.failed_stat or part_stat
            final_error = error if not part.delivered else None
        step = _Step(state is State.DELIVERED, stat, attempt, sendtime, part_id, final_error)
        return MessageUpdate(
            message.id,
            state,
            event,
            stat=stat,
            error=final_error,
            clear_error=state is State.DELIVERED,
            pushes=self._pushes(message, step, final=True),
        )

    def _keep_unmatched(self, part_id: str, report: DeliveryReport) -> None:
        now = trio.current_time()
        unmatched = self._unmatched
        while unmatched:
            oldest_id, (kept_at, _) = next(iter(unmatched.items()))
            if now - kept_at < self._unmatched_ttl_s:
                break
            del unmatched[oldest_id]
            self.stats.reports_dropped += 1
            log.warning("delivery report for unknown id %s dropped after waiting", oldest_id)
        if part_id in unmatched:
            self.stats.reports_duplicate += 1
            return
        unmatched[part_id] = (now, report)
        self.stats.reports_unmatched += 1
        if len(unmatched) > self._max_unmatched:
            dropped_id, _ = unmatched.popitem(last=False)
            self.stats.reports_dropped += 1
            log.warning("too many unmatched delivery reports: dropped the one for %s", dropped_id)

    # ------------------------------------------------------------------ outbox

    def _pushes(self, record: MessageRecord, step: _Step, *, final: bool) -> tuple[NewPush, ...]:
        app: AppConfig | None = self._apps.get(record.appid)
        if app is None or app.receipt_endpoint is None:
            return ()
        status = PUSH_SUCCESS if step.success else PUSH_FAILURE
        pushes: list[NewPush] = []
        if final:
            receipt = ReceiptItem(record.msgid, record.phone, status, step.sendtime, step.stat)
            pushes.append(NewPush(PushKind.RECEIPT, encode_json(receipt).decode()))
        if app.status_reports:
            report = StatusReportItem(
                record.msgid,
                record.phone,
                status,
                step.sendtime,
                step.stat,
                step.attempt,
                step.carrier_msgid,
                step.error,
            )
            pushes.append(NewPush(PushKind.STATUS_REPORT, encode_json(report).decode()))
        return tuple(pushes)

    async def _apply(self, updates: Sequence[tuple[str, MessageUpdate]]) -> None:
        """Apply (appid, update) pairs in one commit, then wake the pusher of each app that
        got outbox items."""
        if not updates:
            return
        await self.store.apply([update for _, update in updates])
        for appid in {appid for appid, update in updates if update.pushes}:
            self.on_pushes(appid)
