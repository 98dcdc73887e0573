"""The sending pipeline: dispatcher → senders → carrier, and the delivery-report consumer.

docs/design.md. Thin loops around the lifecycle (`smsgw.lifecycle`: what a message may do
next) and the store (which applies each decision compare-and-set): this module holds only
performance buffers — the channel between the dispatcher and the senders, a sender's
last outcome not written yet, reports read but not recorded yet.

The dispatcher claims due rows for this process's owner (`smsgw.lease`) only as many as
the channel has room for, so memory stays bounded whatever the backlog. A sender makes
each attempt durable as SUBMITTING *before* handing the message to the carrier, then
records the outcome: in the same write as its next message's SUBMITTING when one is
waiting (one write a message under load), else on its own at once. A write refused as
stale (the row was reclaimed by another process after this one's lease lapsed) is
dropped: the store says so and nothing of it is written, outbox items included.

Lost owners. Every process reclaims, at start and every half lease, what owners whose
lease lapsed (or whose process on this host is gone) left (`OwnerStore.reclaim`): their
QUEUED rows go back to waiting, their SUBMITTING rows are decided as in doubt — a
verification code (msgtype 2) fails UNKNOWN, never resent; a notification is sent again
as a new attempt while it has attempts left.

Store faults strand nothing: an outcome or a report this process holds is retried until it
commits (one log line per failure, repeats counted); only a shutdown's deadline ends the
retries, and what is left then is what a dead owner leaves.

Delivery reports are matched to parts by `Carrier.normalize_id`, in the store. A report
that comes before its submit is recorded (on any process's link) is stored and matched in
the transaction that records the parts: the sender hands the matches to the report
consumer. A report takes two writes (mark the part, then the decision, compare-and-set on
SUBMITTED): what a process lost between them is found by `ReportStore.fully_reported`
and finished by any process's sweep, which also fails the messages whose report never
came (`SMSGW_REPORT_TIMEOUT`, stat UNKNOWN) — a report that comes later still is ignored:
the merchant has had its one A002.
"""

from __future__ import annotations

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
from smsgw.lease import Lease, RetryLog, dead_local_owners

# The stats and limits are the lifecycle's; re-exported for the pipeline's users.
from smsgw.lifecycle import MAX_BACKOFF_S as MAX_BACKOFF_S
from smsgw.lifecycle import STAT_ACCEPTED as STAT_ACCEPTED
from smsgw.lifecycle import STAT_NO_RETRY as STAT_NO_RETRY
from smsgw.lifecycle import STAT_RETRY_LIMIT as STAT_RETRY_LIMIT
from smsgw.lifecycle import STAT_UNKNOWN as STAT_UNKNOWN
from smsgw.lifecycle import (
    Accepted,
    Failed,
    FailureKind,
    Policy,
    decide_in_doubt,
    decide_report,
    decide_submit,
    decide_timeout,
    not_sent,
    outbox_kinds,
    requeue,
    submitting,
)
from smsgw.store.base import (
    FINAL_STATES,
    Applied,
    MessageRecord,
    MessageUpdate,
    PartMatch,
    PartReport,
    PipelineStore,
    State,
    StoreError,
)

log = logging.getLogger("smsgw.pipeline")

POLL_INTERVAL_S: Final = 1.0  # the dispatcher looks at the store at least this often
STORE_RETRY_S: Final = 1.0  # a write that failed is tried again after this
RECOVERY_CHUNK: Final = 500  # in-doubt rows decided per store.apply
REPORT_BATCH: Final = 256  # reports recorded together (one group commit)
REPORT_SWEEP_MAX_S: Final = 60.0  # overdue reports are looked for at least this often
REPORT_SWEEP_BATCH: Final = 500  # overdue messages failed per store.apply
UNMATCHED_TTL_S: Final = 600.0  # a stored early report waits this long for its submit


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
    recovered: int = 0  # in-doubt rows of lost owners decided here
    reclaimed_owners: int = 0  # lost owners whose rows this process reclaimed
    finished_late: int = 0  # all parts reported but not made final (a process lost
    #                         between the two writes of a report): made final by a sweep
    stale: int = 0  # updates the store refused: the row had moved on (another process)
    reports: int = 0  # reports read from the carrier
    reports_unmatched: int = 0  # reports stored because their id was not known yet
    reports_rematched: int = 0  # stored early reports matched when a sender recorded parts
    reports_dropped: int = 0  # stored early reports expired (their submit never came)
    reports_duplicate: int = 0
    reports_ignored: int = 0  # for a message no longer waiting for its report
    reports_timed_out: int = 0  # messages failed for want of a report (report_timeout)


def _finishing() -> trio.CancelScope:
    """Shield a write that records what already happened from a shutdown's cancellation.
    No deadline: a write cut short would leave it unknown whether it committed; the store
    answers every write (committed, or an error once its busy timeout is spent), and only
    the waits between retries are cancelled."""
    return trio.CancelScope(shield=True)


class Pipeline:
    """Dispatcher, senders and report consumer (see the module doc).

    `on_pushes(appid)` is called after each commit that wrote outbox items for the app (the
    gateway wires it to `Pusher.wake`). `lease` is this process's owner; without one the
    pipeline runs its own.
    """

    def __init__(
        self,
        config: Config,
        store: PipelineStore,
        carrier: Carrier,
        clock: WallClock,
        *,
        lease: Lease | None = None,
        rng: random.Random | None = None,
        unmatched_ttl_s: float = UNMATCHED_TTL_S,
    ) -> None:
        self.config = config
        self.store = store
        self.carrier = carrier
        self.clock = clock
        self.lease = lease if lease is not None else Lease(store, clock, config.lease)
        self._own_lease = lease is None
        self.on_pushes: Callable[[str], None] = lambda appid: None
        # A carrier with a window gets exactly as many senders as it has slots: a sender
        # holds its message SUBMITTING, and one waiting for a slot would leave a message in
        # doubt after a crash that was never sent. SMSGW_SENDERS is for the others.
        self.senders = carrier.concurrency or config.senders
        self.capacity = 2 * self.senders
        self.stats = PipelineStats()
        self.submit_seconds = Histogram()  # carrier.submit calls, whatever their outcome
        self._apps = {app.appid: app for app in config.apps}
        self.policy = Policy(
            max_retries=config.max_retries,
            gives_reports=carrier.gives_reports,
            report_timeout_s=config.report_timeout,
        )
        self._rng = rng or random.Random()
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
        self._early: list[PartMatch] = []  # early reports a sender's parts matched
        self._unrecorded: list[DeliveryReport] = []  # reports a store error left unrecorded
        self._unapplied: list[MessageUpdate] = []  # decisions a store error left unapplied
        self._consumer_wait: trio.CancelScope | None = None  # the idle consumer's wait
        self._reports_ended = False  # the carrier closed its reports channel
        # A tenth of the timeout, so a message fails at most 10% late; not more often than
        # every second nor less often than every minute.
        self._sweep_interval_s = min(REPORT_SWEEP_MAX_S, max(1.0, config.report_timeout / 10))
        self._next_sweep = -math.inf  # trio time of the next sweep

    @property
    def owner(self) -> str:
        return self.lease.owner

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

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Reclaim what lost owners left, then dispatch, send, consume reports and reclaim
        every half lease until `stop()`."""
        if self._started:
            raise RuntimeError("Pipeline.run() can only be called once")
        self._started = True
        async with trio.open_nursery() as leasing:
            if self._own_lease:
                await leasing.start(self.lease.run)
            await self._reclaim()
            leasing.start_soon(self._reclaim_forever)
            async with trio.open_nursery() as reports:
                reports.start_soon(self._consume_reports)
                async with trio.open_nursery() as workers:
                    for _ in range(self.senders):
                        workers.start_soon(self._sender, self._queue_receive.clone())
                    workers.start_soon(self._dispatch)
                    task_status.started()
                # Every claimed row is recorded or put back: nothing more to submit.
                reports.cancel_scope.cancel()
            leasing.cancel_scope.cancel()
        log.info("pipeline stopped", extra={"submits": self.stats.submits})

    # ------------------------------------------------------------------ lost owners

    async def _reclaim_forever(self) -> None:
        while True:
            await trio.sleep(self.lease.duration_s / 2)
            await self._reclaim()

    async def _reclaim(self) -> None:
        """Take over what lost owners left and decide their in-doubt submits (retried until
        it commits: the rows are this owner's now, nobody else decides them)."""
        retry = RetryLog(log, "reclaiming rows of lost owners")
        while True:
            try:
                now = self.clock.now_ms()
                dead = dead_local_owners(await self.store.owners())
                found = await self.store.reclaim(self.owner, now, dead)
                break
            except StoreError as exc:
                retry.failed(exc)
                await trio.sleep(STORE_RETRY_S)
        retry.succeeded()
        updates = [
            self._with_pushes(
                record.appid, decide_in_doubt(record, now, self.policy, owner=self.owner)
            )
            for record in found.in_doubt
        ]
        for start in range(0, len(updates), RECOVERY_CHUNK):
            await self._apply_until_committed(updates[start : start + RECOVERY_CHUNK], "in-doubt")
        self.stats.recovered += len(found.in_doubt)
        self.stats.reclaimed_owners += len(found.owners)
        if found.owners or found.requeued or found.in_doubt:
            log.info(
                "reclaimed from %d lost owners: %d queued rows requeued, %d in-doubt submits"
                " decided",
                len(found.owners),
                found.requeued,
                len(found.in_doubt),
            )

    # ------------------------------------------------------------------ dispatcher

    async def _dispatch(self) -> None:
        retry = RetryLog(log, "dispatcher")
        try:
            with self._dispatch_scope:
                while True:
                    try:
                        await self._dispatch_once()
                    except StoreError as exc:
                        retry.failed(exc)
                        await trio.sleep(POLL_INTERVAL_S)
                    else:
                        retry.succeeded()
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
            claimed = await self.store.claim_due(now, free, owner=self.owner)
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
            # Claimed elsewhere meanwhile (another process on the store): poll.
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
        """Claimed rows not sent go back to waiting (retried until it commits: they are in
        no one else's hands while this owner lives)."""
        if not records:
            return
        now = self.clock.now_ms()
        updates = [requeue(record, now, owner=self.owner) for record in records]
        await self._apply_until_committed(updates, "requeue")
        self.stats.requeued += len(records)

    # ------------------------------------------------------------------ senders

    async def _sender(self, receive: trio.MemoryReceiveChannel[MessageRecord]) -> None:
        # The outcome of this sender's last submit while it is not written yet. Under load it
        # goes in the same store.apply as the next message's SUBMITTING (one write and one
        # wait a message instead of two); with no message waiting, on its own at once.
        unrecorded: MessageUpdate | None = None
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
                    except Exception:
                        # A bug must cost this message (decided when this owner is gone),
                        # not the pipeline.
                        log.exception("message %d: sender failed", record.id)
            finally:
                if unrecorded is not None:
                    await self._record_outcome(unrecorded)

    async def _send_one(
        self, record: MessageRecord, previous: MessageUpdate | None
    ) -> MessageUpdate | None:
        """Submit one message; return its outcome, for the caller to record (None: not
        sent). `previous`, the sender's last outcome not recorded yet, is recorded with
        this one's SUBMITTING."""
        started = self.clock.now_ms()
        attempt = submitting(record, started, owner=self.owner)
        # Durable BEFORE the carrier sees it: should this process die, the row is in doubt.
        if not await self._record_with_submitting(previous, attempt, record):
            return None
        sms = OutboundSms(
            message_id=record.id,
            appid=record.appid,
            msgid=record.msgid,
            phone=record.phone,
            text=record.message,
            msgtype=record.msgtype,
            attempt=record.attempts + 1,
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
        attempt_no = record.attempts + 1
        update = self._decide(record, attempt_no, started, outcome)
        if isinstance(outcome, SubmitError):
            _log_failed_attempt(record, attempt_no, outcome, update)
        return update

    def _decide(
        self,
        record: MessageRecord,
        attempt: int,
        started: int,
        outcome: SubmitAccepted | SubmitError,
    ) -> MessageUpdate:
        result: Accepted | Failed
        if isinstance(outcome, SubmitAccepted):
            normalize = self.carrier.normalize_id
            result = Accepted(
                normalize(outcome.carrier_msgid),
                tuple(normalize(part) for part in outcome.part_ids),
            )
        else:
            result = Failed(FailureKind(outcome.kind.value), outcome.stat, outcome.detail)
        delay_ms = int(retry_delay_s(attempt, self.config.retry_backoff, self._rng) * 1000)
        transition = decide_submit(
            record,
            attempt,
            started,
            self.clock.now_ms(),
            result,
            self.policy,
            retry_delay_ms=delay_ms,
            owner=self.owner,
        )
        return self._with_pushes(record.appid, transition)

    async def _record_with_submitting(
        self, previous: MessageUpdate | None, attempt: MessageUpdate, record: MessageRecord
    ) -> bool:
        """Record a sender's last outcome and its next message's SUBMITTING in one write;
        True when the message may be sent. A SUBMITTING the store refused (stale: the row
        was reclaimed) means not sending; one it could not write puts the row back."""
        updates = [attempt] if previous is None else [previous, attempt]
        try:
            # Shielded: the outcome records what already happened.
            with _finishing():
                results = await self._apply(updates)
        except StoreError as exc:
            log.error("message %d: store error, not sent: %s", record.id, exc)
            # All or none: the outcome on its own (until it commits), the row put back —
            # from QUEUED, or from SUBMITTING should the failed write have committed after
            # all (a connection lost during COMMIT): this sender knows it never sent it.
            if previous is not None:
                await self._record_outcome(previous)
            undo = not_sent(record, self.clock.now_ms(), owner=self.owner)
            await self._apply_until_committed([undo], f"message {record.id}")
            self.stats.requeued += 1
            return False
        if previous is not None:
            self._outcome_recorded(previous, results[0])
        return results[-1].applied

    async def _record_outcome(self, outcome: MessageUpdate) -> None:
        """Write a submit's outcome, retried until it commits (the operator's answer is
        known only here)."""
        (result,) = await self._apply_until_committed([outcome], f"message {outcome.message_id}")
        self._outcome_recorded(outcome, result)

    def _outcome_recorded(self, update: MessageUpdate, result: Applied) -> None:
        if not result.applied:
            return
        if update.state is State.ACCEPTED and update.next_attempt_at_ms is not None:
            self._due_at(update.next_attempt_at_ms)
        if result.early_reports:
            self._early.extend(result.early_reports)
            self.stats.reports_rematched += len(result.early_reports)
            if self._consumer_wait is not None:
                self._consumer_wait.cancel()

    # ------------------------------------------------------------------ reports

    async def _next_report(self) -> list[DeliveryReport]:
        """Wait for a report from the carrier (in a list), or for a sender's early matches
        or the next sweep (an empty list)."""
        # Read straight from the carrier's channel: not `async with`, closing it is the
        # carrier's business.
        reports = self.carrier.reports()
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
        retry = RetryLog(log, "delivery reports")
        while True:
            if trio.current_time() >= self._next_sweep and not self._unapplied:
                await self._sweep()
            batch: list[DeliveryReport] = []
            if not (self._early or self._unrecorded or self._unapplied):
                batch = await self._next_report()
            while len(batch) < REPORT_BATCH and not self._reports_ended:
                try:
                    batch.append(reports.receive_nowait())
                except trio.EndOfChannel:
                    self._reports_ended = True
                except trio.WouldBlock:
                    break
            self.stats.reports += len(batch)
            try:
                with _finishing():
                    await self._process_reports(batch)
            except StoreError as exc:
                # What failed is kept (_unrecorded, _unapplied) and tried again.
                retry.failed(exc)
                await trio.sleep(STORE_RETRY_S)
            else:
                retry.succeeded()

    async def _process_reports(self, batch: list[DeliveryReport]) -> None:
        reports = [*self._unrecorded, *batch]
        self._unrecorded = []
        normalize = self.carrier.normalize_id
        matches: list[PartMatch | None] = []
        failure: StoreError | None = None
        now = self.clock.now_ms()
        try:
            # The whole batch in one write; the unknown ids are stored as early reports.
            matches = await self.store.record_part_reports(
                [
                    PartReport(
                        normalize(report.carrier_msgid), report.delivered, report.stat, report.at_ms
                    )
                    for report in reports
                ],
                now,
            )
        except StoreError as exc:  # nothing recorded: the reports are tried again
            failure = exc
            self._unrecorded, reports = reports, []

        now = self.clock.now_ms()
        steps: list[MessageUpdate] = []
        finals: list[MessageUpdate] = []
        # Messages made final by an update not committed yet (this batch, or one a store
        # error left): a repeated report need not be decided again.
        finishing = {
            update.message_id for update in self._unapplied if update.state in FINAL_STATES
        }
        repeated: list[PartMatch] = []  # duplicates of a message with every part reported
        live = [(match, report.error) for report, match in zip(reports, matches, strict=True)]
        early, self._early = self._early, []
        for match, error in [*live, *((match, None) for match in early)]:
            if match is None:
                self.stats.reports_unmatched += 1
                continue
            message = match.message
            if match.duplicate:
                self.stats.reports_duplicate += 1
                if message.state is State.SUBMITTED and match.all_reported:
                    repeated.append(match)
                continue
            if message.state is not State.SUBMITTED or message.id in finishing:
                self.stats.reports_ignored += 1
                continue
            update = self._with_pushes(message.appid, decide_report(match, now, error=error))
            if update.state is State.SUBMITTED:
                steps.append(update)
            else:
                finishing.add(message.id)
                finals.append(update)
        # Looked at after the batch's own reports: the one that completed a message in this
        # batch also reads SUBMITTED, and its final (with the report's text) is the one kept.
        for match in repeated:
            if match.message.id in finishing:
                continue
            # Every part had reported, yet the message is not final: its final update was
            # lost (a process lost between the two writes). Decided from the parts as stored.
            finishing.add(match.message.id)
            self.stats.finished_late += 1
            finals.append(self._with_pushes(match.message.appid, decide_report(match, now)))

        # The parts are recorded now, so these updates must not be lost: a report sent
        # again would count as a duplicate. A failed apply changed nothing and is retried.
        # Steps go before finals: a step after its message's final would be refused.
        updates = [*self._unapplied, *steps, *finals]
        self._unapplied = []
        try:
            await self._apply(updates)
        except StoreError:
            self._unapplied = updates
            raise
        if failure is not None:
            raise failure

    async def _sweep(self) -> None:
        """Fail the messages that waited longer than report_timeout for their report, finish
        those whose last report's decision was lost, expire early reports. Any process may
        sweep: every decision is compare-and-set."""
        now = self.clock.now_ms()
        try:
            await self._fail_overdue(now)
            finished = await self.store.fully_reported(
                now - round(self.lease.duration_s * 1000), REPORT_SWEEP_BATCH
            )
            if finished:
                results = await self._apply(
                    [
                        self._with_pushes(match.message.appid, decide_report(match, now))
                        for match in finished
                    ]
                )
                self.stats.finished_late += sum(result.applied for result in results)
            expired = await self.store.expire_early_reports(
                now - round(self._unmatched_ttl_s * 1000), REPORT_SWEEP_BATCH
            )
            if expired:
                self.stats.reports_dropped += expired
                log.warning("%d delivery reports for unknown ids dropped after waiting", expired)
        except StoreError as exc:
            log.error("sweep of delivery reports: store error: %s", exc)
        self._next_sweep = trio.current_time() + self._sweep_interval_s

    async def _fail_overdue(self, now: int) -> None:
        submitted_before = now - round(self.config.report_timeout * 1000)
        while True:
            overdue = await self.store.overdue_submitted(submitted_before, REPORT_SWEEP_BATCH)
            if not overdue:
                break
            with _finishing():
                results = await self._apply(
                    [
                        self._with_pushes(record.appid, decide_timeout(record, now, self.policy))
                        for record in overdue
                    ]
                )
            failed = sum(result.applied for result in results)
            self.stats.reports_timed_out += failed
            log.warning(
                "%d messages failed with stat %s: no delivery report within %g s",
                failed,
                STAT_UNKNOWN,
                self.config.report_timeout,
            )
            if len(overdue) < REPORT_SWEEP_BATCH:
                break

    # ------------------------------------------------------------------ the store

    def _with_pushes(self, appid: str, update: MessageUpdate) -> MessageUpdate:
        """The update with the outbox items its receipt makes for the app's endpoint."""
        app: AppConfig | None = self._apps.get(appid)
        if update.receipt is None or app is None or app.receipt_endpoint is None:
            return update
        kinds = outbox_kinds(update.receipt, status_reports=app.status_reports)
        return attrs.evolve(update, pushes=kinds) if kinds else update

    async def _apply(self, updates: Sequence[MessageUpdate]) -> list[Applied]:
        """Apply the updates in one commit, then wake the pusher of each app that got
        outbox items; a stale update (refused by the store) is counted and dropped."""
        if not updates:
            return []
        results = await self.store.apply(updates)
        apps: set[str] = set()
        for update, result in zip(updates, results, strict=True):
            if not result.applied:
                self.stats.stale += 1
            elif update.pushes:
                apps.add(result.appid)
        for appid in apps:
            self.on_pushes(appid)
        return results

    async def _apply_until_committed(
        self, updates: Sequence[MessageUpdate], what: str
    ) -> list[Applied]:
        """`_apply`, tried again after each store error until it commits (shielded for a
        while each time, so a shutdown does not cut a write in the middle)."""
        retry = RetryLog(log, what)
        while True:
            try:
                with _finishing():
                    results = await self._apply(updates)
            except StoreError as exc:
                retry.failed(exc)
                await trio.sleep(STORE_RETRY_S)
                continue
            retry.succeeded()
            return results
