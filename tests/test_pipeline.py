"""The sending pipeline on a real SQLite store: retries, recovery, reports, receipts, memory.

Time-dependent tests use `autojump_clock`. The SQLite store works in threads, and a task
waiting for a thread counts as blocked: the mock clock would jump (to the next timer, and
the next...) while a commit runs, so virtual time would race ahead of the store. The tests
therefore use the store through `BusyStore`, which keeps a task runnable while a call is in
flight: the clock only jumps when the system is really idle.
"""

from __future__ import annotations

import itertools
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import attrs
import pytest
import trio

from smsgw.carriers.base import (
    DeliveryReport,
    MobileOriginated,
    OutboundSms,
    SubmitAccepted,
    SubmitError,
    SubmitErrorKind,
)
from smsgw.carriers.sim import SimCarrier, parse_sim_url
from smsgw.cli import _history_json
from smsgw.client import ReceiptServer, submit
from smsgw.clock import WallClock
from smsgw.config import AppConfig, Config, ConfigError, Endpoint
from smsgw.gateway import Gateway
from smsgw.pipeline import (
    MAX_BACKOFF_S,
    STAT_ACCEPTED,
    STAT_NO_RETRY,
    STAT_RETRY_LIMIT,
    STAT_UNKNOWN,
    Pipeline,
    retry_delay_s,
)
from smsgw.protocol.messages import ReceiptItem, StatusReportItem
from smsgw.pusher import encode_item
from smsgw.store import (
    Applied,
    Event,
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
    Reclaimed,
    SqliteStore,
    State,
    StoreError,
)
from tests.conftest import make_config
from tests.store.conftest import record_part_report, rows

T = TypeVar("T")

APP = "app1"
ENDPOINT = Endpoint("127.0.0.1", 9)  # never dialled here: the pusher is not running


def config(**changes: Any) -> Config:
    app = AppConfig(APP, "secret", receipt_endpoint=ENDPOINT, status_reports=True)
    base = Config(apps=(app,), senders=4, max_retries=3, retry_backoff=10.0)
    return attrs.evolve(base, **changes)


def message(
    msgid: str, *, msgtype: int = 1, send_at_ms: int | None = None, phone: str = "8613800000000"
) -> NewMessage:
    return NewMessage(APP, msgid, phone, "hello", msgtype, send_at_ms, 1)


# --- a scripted carrier ---------------------------------------------------------------------

Outcome = str | SubmitError | BaseException  # "accept" | "block" | an error to raise


class ScriptedCarrier:
    """Answers each msgid's submits from a script (then `default`); records every submit."""

    def __init__(
        self,
        *,
        gives_reports: bool = True,
        default: Outcome = "accept",
        parts: int = 1,
    ) -> None:
        self.name = "scripted"
        self.gives_reports = gives_reports
        self.concurrency = 0
        self.default = default
        self.parts = parts
        self.script: dict[str, list[Outcome]] = {}
        self.submits: list[tuple[float, OutboundSms]] = []
        self.accepted: dict[str, SubmitAccepted] = {}  # msgid → the last accepted submit
        self.release = trio.Event()  # lets "block" submits go on (accepted)
        self.in_flight = 0
        self.before_answer: Callable[[OutboundSms, SubmitAccepted], Awaitable[None]] | None = None
        self._counter = 0
        self._send, self._receive = trio.open_memory_channel[DeliveryReport](1000)

    def attempts_of(self, msgid: str) -> list[int]:
        return [sms.attempt for _, sms in self.submits if sms.msgid == msgid]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()

    async def submit(self, sms: OutboundSms) -> SubmitAccepted:
        self.submits.append((trio.current_time(), sms))
        queue = self.script.get(sms.msgid, [])
        outcome = queue.pop(0) if queue else self.default
        await trio.lowlevel.checkpoint()
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome == "block":
            self.in_flight += 1
            try:
                await self.release.wait()
            finally:
                self.in_flight -= 1
        self._counter += 1
        # Upper case: the pipeline must match reports through normalize_id (lower case).
        ids = tuple(f"C-{self._counter}-{part}" for part in range(1, self.parts + 1))
        accepted = SubmitAccepted(ids[0], ids)
        self.accepted[sms.msgid] = accepted
        if self.before_answer is not None:
            await self.before_answer(sms, accepted)
        return accepted

    async def report(self, carrier_msgid: str, delivered: bool = True, stat: str = "") -> None:
        stat = stat or ("DELIVRD" if delivered else "UNDELIV")
        error = None if delivered else "subscriber unreachable"
        await self._send.send(DeliveryReport(carrier_msgid, delivered, stat, error, 0))

    def reports(self) -> trio.MemoryReceiveChannel[DeliveryReport]:
        return self._receive

    def normalize_id(self, carrier_msgid: str) -> str:
        return carrier_msgid.strip().lower()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


def temporary(detail: str = "try later") -> SubmitError:
    return SubmitError(SubmitErrorKind.TEMPORARY, "TMP_FAIL", detail)


# --- harness ----------------------------------------------------------------------------------


async def busy(call: Callable[[], Awaitable[T]]) -> T:
    """Await `call()` while staying runnable, so that an autojump clock does not jump."""
    box: list[tuple[T] | Exception] = []

    async def run() -> None:
        try:
            box.append((await call(),))
        except Exception as exc:
            box.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        while True:  # a busy wait on purpose: this task never blocks
            if box:
                break
            await trio.lowlevel.checkpoint()
            time.sleep(0.0002)  # let the store's thread have the GIL meanwhile
    (result,) = box
    if isinstance(result, Exception):
        raise result
    return result[0]


class BusyStore:
    """A SqliteStore whose calls keep a task runnable while its threads work (module doc)."""

    def __init__(self, store: SqliteStore) -> None:
        self.inner = store

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.inner.run(task_status=task_status)

    async def insert_messages(self, messages: Sequence[NewMessage], now_ms: int) -> list[bool]:
        return await busy(lambda: self.inner.insert_messages(messages, now_ms))

    async def register_owner(self, owner: OwnerInfo, lease_until_ms: int) -> None:
        await busy(lambda: self.inner.register_owner(owner, lease_until_ms))

    async def renew_owner(self, owner_id: str, lease_until_ms: int) -> bool:
        return await busy(lambda: self.inner.renew_owner(owner_id, lease_until_ms))

    async def release_owner(self, owner_id: str) -> None:
        await busy(lambda: self.inner.release_owner(owner_id))

    async def owners(self) -> list[OwnerRecord]:
        return await busy(self.inner.owners)

    async def reclaim(self, claimant: str, now_ms: int, dead: Sequence[str] = ()) -> Reclaimed:
        return await busy(lambda: self.inner.reclaim(claimant, now_ms, dead))

    async def claim_due(self, now_ms: int, limit: int, *, owner: str) -> list[MessageRecord]:
        return await busy(lambda: self.inner.claim_due(now_ms, limit, owner=owner))

    async def next_due_at(self) -> int | None:
        return await busy(self.inner.next_due_at)

    async def apply(self, updates: Sequence[MessageUpdate]) -> list[Applied]:
        return await busy(lambda: self.inner.apply(updates))

    async def fully_reported(self, reported_before_ms: int, limit: int) -> list[PartMatch]:
        return await busy(lambda: self.inner.fully_reported(reported_before_ms, limit))

    async def expire_early_reports(self, received_before_ms: int, limit: int) -> int:
        return await busy(lambda: self.inner.expire_early_reports(received_before_ms, limit))

    async def claim_pushes(self, appid: str, owner: str) -> bool:
        return await busy(lambda: self.inner.claim_pushes(appid, owner))

    async def overdue_submitted(self, submitted_before_ms: int, limit: int) -> list[MessageRecord]:
        return await busy(lambda: self.inner.overdue_submitted(submitted_before_ms, limit))

    async def insert_inbound(self, messages: Sequence[MobileOriginated]) -> None:
        await busy(lambda: self.inner.insert_inbound(messages))

    async def recent_inbound(
        self, limit: int, *, before_id: int | None = None
    ) -> list[InboundRecord]:
        return await busy(lambda: self.inner.recent_inbound(limit, before_id=before_id))

    async def delete_finished(self, final_before_ms: int, limit: int) -> int:
        return await busy(lambda: self.inner.delete_finished(final_before_ms, limit))

    async def delete_inbound(self, received_before_ms: int, limit: int) -> int:
        return await busy(lambda: self.inner.delete_inbound(received_before_ms, limit))

    async def find_by_part_id(self, carrier_msgid: str) -> PartMatch | None:
        return await busy(lambda: self.inner.find_by_part_id(carrier_msgid))

    async def record_part_reports(
        self, reports: Sequence[PartReport], now_ms: int
    ) -> list[PartMatch | None]:
        return await busy(lambda: self.inner.record_part_reports(reports, now_ms))

    async def due_pushes(self, appid: str, now_ms: int, limit: int) -> list[PushRecord]:
        return await busy(lambda: self.inner.due_pushes(appid, now_ms, limit))

    async def apps_with_due_pushes(self, now_ms: int) -> list[str]:
        return await busy(lambda: self.inner.apps_with_due_pushes(now_ms))

    async def next_push_due_at(self, appid: str) -> int | None:
        return await busy(lambda: self.inner.next_push_due_at(appid))

    async def record_push_result(
        self,
        push_ids: Sequence[int],
        ok: bool,
        error: str | None,
        now_ms: int,
        max_attempts: int,
        retry_at_ms: int,
    ) -> None:
        await busy(
            lambda: self.inner.record_push_result(
                push_ids, ok, error, now_ms, max_attempts, retry_at_ms
            )
        )

    async def history(self, msgid: str, appid: str | None = None) -> list[MessageHistory]:
        return await busy(lambda: self.inner.history(msgid, appid))

    async def counts(self) -> dict[str, int]:
        return await busy(self.inner.counts)

    async def push_counts(self) -> dict[str, int]:
        return await busy(self.inner.push_counts)


@asynccontextmanager
async def open_store(path: Path) -> AsyncIterator[BusyStore]:
    store = BusyStore(SqliteStore(str(path)))
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        yield store
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def running(
    store: BusyStore,
    carrier: Any,
    cfg: Config | None = None,
    *,
    clock: WallClock | None = None,
    **options: Any,
) -> AsyncIterator[Pipeline]:
    """A started pipeline, stopped gracefully at the end of the block."""
    clock = clock or WallClock()
    pipeline = Pipeline(cfg or config(), store, carrier, clock, rng=random.Random(7), **options)
    async with trio.open_nursery() as nursery:
        await nursery.start(pipeline.run)
        yield pipeline
        pipeline.stop()


async def insert(store: BusyStore, owner: Pipeline | WallClock, *messages: NewMessage) -> None:
    """Store messages as accepted now (by the pipeline's clock: under a mock clock, two
    WallClocks made at different real instants disagree by the real time between them)."""
    if isinstance(owner, Pipeline):
        await store.insert_messages(messages, owner.clock.now_ms())
        owner.wake()
    else:
        await store.insert_messages(messages, owner.now_ms())


async def history(store: BusyStore, msgid: str) -> MessageHistory:
    (found,) = await store.history(msgid, APP)
    return found


async def final(store: BusyStore, msgid: str, *, within: float = 7200) -> MessageHistory:
    """The message's history once it reached a final state."""
    with trio.fail_after(within):
        while True:
            found = await history(store, msgid)
            if found.message.state in (State.DELIVERED, State.FAILED):
                return found
            await trio.sleep(0.5)


async def until(check: Callable[[], bool], *, within: float = 600, every: float = 0.1) -> None:
    """Poll `check` (a condition on plain attributes, which cannot signal an Event)."""
    with trio.fail_after(within):
        while True:
            if check():
                return
            await trio.sleep(every)


def receipts(found: MessageHistory) -> list[ReceiptItem]:
    return [
        ReceiptItem(**json.loads(encode_item(push))) for push in found.pushes if push.kind == "A002"
    ]


def status_reports(found: MessageHistory) -> list[StatusReportItem]:
    return [
        StatusReportItem(**json.loads(encode_item(push)))
        for push in found.pushes
        if push.kind == "A003"
    ]


# --- backoff ----------------------------------------------------------------------------------


def test_retry_delay_doubles_with_jitter_and_is_capped() -> None:
    rng = random.Random(3)
    for attempt in range(1, 8):
        for _ in range(50):
            delay = retry_delay_s(attempt, 10.0, rng)
            nominal = 10.0 * 2 ** (attempt - 1)
            assert 0.5 * nominal <= delay <= min(1.5 * nominal, MAX_BACKOFF_S)
    assert retry_delay_s(100, 10.0, rng) == MAX_BACKOFF_S
    assert retry_delay_s(10_000, 10.0, rng) == MAX_BACKOFF_S  # no overflow


# --- retries ----------------------------------------------------------------------------------


async def test_notification_retried_max_retries_times_then_retry_limit(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    carrier = ScriptedCarrier(default=temporary("network down"))
    async with open_store(tmp_path / "db") as store, running(store, carrier) as pipeline:
        await insert(store, pipeline, message("m1"))
        found = await final(store, "m1")
        await trio.sleep(600)  # and nothing more happens
    assert carrier.attempts_of("m1") == [1, 2, 3, 4]  # first attempt + max_retries (3)
    times = [at for at, _ in carrier.submits]
    for attempt, (before, after) in enumerate(itertools.pairwise(times), 1):
        assert after - before >= 0.5 * 10.0 * 2 ** (attempt - 1)  # backoff, with jitter
    assert found.message.state is State.FAILED
    assert (found.message.stat, found.message.attempts) == (STAT_RETRY_LIMIT, 4)
    assert found.message.error == "TMP_FAIL: network down"
    (receipt,) = receipts(found)
    assert (receipt.status, receipt.stat) == ("2", STAT_RETRY_LIMIT)
    steps = status_reports(found)
    assert [(s.attempt, s.status, s.stat) for s in steps] == [
        (1, "2", "TMP_FAIL"),
        (2, "2", "TMP_FAIL"),
        (3, "2", "TMP_FAIL"),
        (4, "2", STAT_RETRY_LIMIT),
    ]


async def test_verification_code_is_submitted_once(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    carrier = ScriptedCarrier(default=temporary())
    async with open_store(tmp_path / "db") as store, running(store, carrier) as pipeline:
        await insert(store, pipeline, message("code", msgtype=2))
        found = await final(store, "code")
        await trio.sleep(600)
    assert carrier.attempts_of("code") == [1]
    assert (found.message.state, found.message.stat) == (State.FAILED, STAT_NO_RETRY)
    assert [(r.status, r.stat) for r in receipts(found)] == [("2", STAT_NO_RETRY)]


@pytest.mark.parametrize("gives_reports", [True, False])
async def test_a_later_attempt_clears_the_error_of_a_failed_one(
    tmp_path: Path, autojump_clock: trio.abc.Clock, gives_reports: bool
) -> None:
    carrier = ScriptedCarrier(gives_reports=gives_reports)
    carrier.script["m1"] = [temporary("network down")]
    async with open_store(tmp_path / "db") as store, running(store, carrier) as pipeline:
        await insert(store, pipeline, message("m1"))
        if gives_reports:
            await until_state(store, "m1", State.SUBMITTED)
            submitted = await history(store, "m1")
            assert (submitted.message.attempts, submitted.message.error) == (2, None)
            await carrier.report(carrier.accepted["m1"].carrier_msgid)
        found = await final(store, "m1")
    assert carrier.attempts_of("m1") == [1, 2]
    assert (found.message.state, found.message.error) == (State.DELIVERED, None)
    # The history still tells what happened to the first attempt.
    failed = [event for event in found.events if event.kind == "attempt_failed"]
    assert [(event.attempt, event.error) for event in failed] == [(1, "network down")]


async def test_permanent_failure_is_not_retried(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    carrier = ScriptedCarrier(
        default=SubmitError(SubmitErrorKind.PERMANENT, "ESME_RINVDSTADR", "bad number")
    )
    async with open_store(tmp_path / "db") as store, running(store, carrier) as pipeline:
        await insert(store, pipeline, message("m1"))
        found = await final(store, "m1")
        await trio.sleep(600)
    assert carrier.attempts_of("m1") == [1]
    assert (found.message.state, found.message.stat) == (State.FAILED, "ESME_RINVDSTADR")
    assert found.message.error == "bad number"
    assert [(r.status, r.stat) for r in receipts(found)] == [("2", "ESME_RINVDSTADR")]


async def test_throttling_is_not_a_failed_attempt(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    throttled = SubmitError(SubmitErrorKind.THROTTLED, "ESME_RTHROTTLED", "slow down")
    carrier = ScriptedCarrier(gives_reports=False)
    # Both types: even a verification code may be tried again after throttling.
    carrier.script["m1"] = [throttled] * 6
    carrier.script["code"] = [throttled] * 6
    async with open_store(tmp_path / "db") as store, running(store, carrier) as pipeline:
        await insert(store, pipeline, message("m1"), message("code", msgtype=2))
        notice = await final(store, "m1")
        code = await final(store, "code")
    for msgid, found in (("m1", notice), ("code", code)):
        assert carrier.attempts_of(msgid) == [1] * 7  # never counted as an attempt
        assert found.message.attempts == 1
        assert (found.message.state, found.message.stat) == (State.DELIVERED, STAT_ACCEPTED)
        assert [(r.status, r.stat) for r in receipts(found)] == [("1", STAT_ACCEPTED)]
        assert sum(s.stat == "ESME_RTHROTTLED" for s in status_reports(found)) == 6


async def test_carrier_exception_counts_as_in_doubt(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    carrier = ScriptedCarrier(gives_reports=False)
    carrier.script["m1"] = [RuntimeError("driver bug")]
    carrier.script["code"] = [RuntimeError("driver bug")]
    async with open_store(tmp_path / "db") as store, running(store, carrier) as pipeline:
        await insert(store, pipeline, message("m1"), message("code", msgtype=2))
        notice = await final(store, "m1")
        code = await final(store, "code")
    assert carrier.attempts_of("m1") == [1, 2]  # a notification is sent again
    assert notice.message.state is State.DELIVERED
    assert carrier.attempts_of("code") == [1]  # a code may have gone out: never resent
    assert (code.message.state, code.message.stat) == (State.FAILED, STAT_UNKNOWN)


async def test_in_doubt_submit_exhausting_the_attempts_fails_unknown(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    carrier = ScriptedCarrier(
        default=SubmitError(SubmitErrorKind.IN_DOUBT, "LINK_DOWN", "connection lost")
    )
    async with (
        open_store(tmp_path / "db") as store,
        running(store, carrier, config(max_retries=1)) as pipeline,
    ):
        await insert(store, pipeline, message("m1"))
        found = await final(store, "m1")
    assert carrier.attempts_of("m1") == [1, 2]
    assert (found.message.state, found.message.stat) == (State.FAILED, STAT_UNKNOWN)


# --- scheduling -------------------------------------------------------------------------------


async def test_scheduled_send_goes_out_at_its_time(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    carrier = ScriptedCarrier(gives_reports=False)
    async with open_store(tmp_path / "db") as store, running(store, carrier) as pipeline:
        send_at = pipeline.clock.now_ms() + 120_000
        await insert(store, pipeline, message("later", send_at_ms=send_at), message("now"))
        await final(store, "now")
        await trio.sleep(100)
        assert carrier.attempts_of("later") == []
        found = await final(store, "later")
    assert carrier.attempts_of("later") == [1]
    assert found.message.submitted_at_ms is not None  # when it went to the operator
    assert send_at <= found.message.submitted_at_ms <= send_at + 2000


async def test_scheduled_send_survives_a_restart(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    clock = WallClock()
    send_at = clock.now_ms() + 600_000
    async with open_store(tmp_path / "db") as store:
        first = ScriptedCarrier(gives_reports=False)
        async with running(store, first, clock=clock) as pipeline:
            await insert(store, pipeline, message("later", send_at_ms=send_at))
            await trio.sleep(60)
        assert first.submits == []
        await trio.sleep(120)  # the gateway is down for a while
        second = ScriptedCarrier(gives_reports=False)
        async with running(store, second, clock=clock):
            found = await final(store, "later")
    assert second.attempts_of("later") == [1]
    assert found.message.submitted_at_ms is not None
    assert send_at <= found.message.submitted_at_ms <= send_at + 2000


async def test_retry_wait_survives_a_restart(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    async with open_store(tmp_path / "db") as store:
        first = ScriptedCarrier(default=temporary())
        async with running(store, first) as pipeline:
            await insert(store, pipeline, message("m1"))
            await until(lambda: len(first.submits) == 1)
            await trio.sleep(1)
        waiting = (await history(store, "m1")).message
        assert (waiting.state, waiting.attempts) == (State.ACCEPTED, 1)
        second = ScriptedCarrier(gives_reports=False)
        async with running(store, second):
            found = await final(store, "m1")
    assert second.attempts_of("m1") == [2]  # the attempt count carried over
    assert found.message.state is State.DELIVERED


# --- crash recovery ---------------------------------------------------------------------------


async def make_submitting(store: BusyStore, clock: WallClock, attempts: dict[str, int]) -> None:
    """Leave the rows (msgid → attempts) as a crash in the middle of their submits does: an
    owner (never registered, so as good as dead) claimed them and made them SUBMITTING."""
    claimed = {
        record.msgid: record
        for record in await store.claim_due(clock.now_ms(), 1000, owner="crashed")
    }
    assert set(attempts) <= set(claimed)
    await store.apply(
        [
            MessageUpdate(
                claimed[msgid].id,
                State.SUBMITTING,
                Event("submitting", clock.now_ms(), count),
                attempts=count,
            )
            for msgid, count in attempts.items()
        ]
    )


async def test_recovery_of_in_doubt_submits(tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    clock = WallClock()
    async with open_store(tmp_path / "db") as store:
        await insert(store, clock, message("notice"), message("code", msgtype=2), message("tired"))
        # "tired" has had 1 + max_retries attempts: none left.
        await make_submitting(store, clock, {"notice": 1, "code": 1, "tired": 4})
        carrier = ScriptedCarrier(gives_reports=False)
        async with running(store, carrier, clock=clock) as pipeline:
            notice = await final(store, "notice")
            code = await final(store, "code")
            tired = await final(store, "tired")
            assert pipeline.stats.recovered == 3
        # A second restart changes nothing: each row was decided once.
        async with running(store, carrier, clock=clock):
            await trio.sleep(60)
        again = {msgid: await history(store, msgid) for msgid in ("notice", "code", "tired")}
    assert carrier.attempts_of("notice") == [2]
    assert (notice.message.state, notice.message.attempts) == (State.DELIVERED, 2)
    assert carrier.attempts_of("code") == []  # never resent
    assert (code.message.state, code.message.stat) == (State.FAILED, STAT_UNKNOWN)
    assert carrier.attempts_of("tired") == []
    assert (tired.message.state, tired.message.stat) == (State.FAILED, STAT_UNKNOWN)
    for found in again.values():
        assert len(receipts(found)) == 1
    assert [(r.status, r.stat) for r in receipts(again["code"])] == [("2", STAT_UNKNOWN)]
    assert [(r.status, r.stat) for r in receipts(again["notice"])] == [("1", STAT_ACCEPTED)]


async def test_crash_in_the_middle_of_submits(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    async with open_store(tmp_path / "db") as store:
        stuck = ScriptedCarrier(default="block")
        pipeline = Pipeline(config(), store, stuck, WallClock())
        async with trio.open_nursery() as crashing:
            await crashing.start(pipeline.run)
            await insert(store, pipeline, message("notice"), message("code", msgtype=2))
            await until(lambda: stuck.in_flight == 2)
            crashing.cancel_scope.cancel()  # no stop(): as if the process died
        assert {(await history(store, msgid)).message.state for msgid in ("notice", "code")} == {
            State.SUBMITTING
        }
        carrier = ScriptedCarrier()
        async with running(store, carrier):
            await until(lambda: "notice" in carrier.accepted)
            await carrier.report(carrier.accepted["notice"].carrier_msgid)
            notice = await final(store, "notice")
            code = await final(store, "code")
    assert carrier.attempts_of("notice") == [2]
    assert carrier.attempts_of("code") == []
    assert [(r.status, r.stat) for r in receipts(notice)] == [("1", "DELIVRD")]
    assert [(r.status, r.stat) for r in receipts(code)] == [("2", STAT_UNKNOWN)]


async def test_a_crash_between_recording_a_report_and_the_final_update(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    """The report's part is recorded but the process dies before the final update: the
    next start makes the message final, with exactly one A002."""
    carrier = ScriptedCarrier(parts=2)
    async with open_store(tmp_path / "db") as store:
        async with running(store, carrier) as pipeline:
            await insert(store, pipeline, message("ok"), message("ko"), message("half"))
            for msgid in ("ok", "ko", "half"):
                await until_state(store, msgid, State.SUBMITTED)
        # The first of the report consumer's two writes, and nothing after it.
        outcomes = {"ok": (True, True), "ko": (True, False), "half": (True,)}
        for msgid, delivered in outcomes.items():
            part_ids = carrier.accepted[msgid].part_ids[: len(delivered)]
            for part_id, part_delivered in zip(part_ids, delivered, strict=True):
                stat = "DELIVRD" if part_delivered else "UNDELIV"
                recorded = await record_part_report(
                    store, carrier.normalize_id(part_id), part_delivered, stat, 0
                )
                assert recorded is not None and recorded.message.state is State.SUBMITTED
        restarted = ScriptedCarrier()
        async with running(store, restarted) as pipeline:
            ok = await final(store, "ok")
            ko = await final(store, "ko")
            assert pipeline.stats.finished_late == 2
            # The operator repeats a report: a duplicate, nothing more.
            await restarted.report(carrier.accepted["ok"].part_ids[1])
            await until(lambda: pipeline.stats.reports_duplicate == 1)
            assert pipeline.stats.finished_late == 2
        async with running(store, ScriptedCarrier()) as pipeline:
            await trio.sleep(10)
            assert pipeline.stats.finished_late == 0  # each was made final once
        again = {msgid: await history(store, msgid) for msgid in ("ok", "ko", "half")}
    assert restarted.submits == []
    assert (ok.message.state, ok.message.stat, ok.message.error) == (
        State.DELIVERED,
        "DELIVRD",
        None,
    )
    # The event the lost update would have written (no "recovered": nothing was in doubt).
    kinds = [event.kind for event in ok.events]
    assert kinds == ["accepted", "submitting", "submitted", "delivery_report"]
    assert [(r.status, r.stat) for r in receipts(ok)] == [("1", "DELIVRD")]
    assert (ko.message.state, ko.message.stat) == (State.FAILED, "UNDELIV")
    assert [(r.status, r.stat) for r in receipts(ko)] == [("2", "UNDELIV")]
    # The A003 of the step that was lost: the last part's, with the final outcome.
    last_step = status_reports(ko)[-1]
    assert (last_step.status, last_step.stat, last_step.attempt) == ("2", "UNDELIV", 1)
    assert last_step.carrier_msgid == carrier.accepted["ko"].part_ids[1].lower()
    assert again["half"].message.state is State.SUBMITTED  # still waits for its part 2
    assert receipts(again["half"]) == []
    assert receipts(again["ok"]) == receipts(ok) and receipts(again["ko"]) == receipts(ko)


async def test_a_repeated_report_finishes_a_message_whose_final_update_was_lost(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    carrier = ScriptedCarrier()
    async with open_store(tmp_path / "db") as store, running(store, carrier) as pipeline:
        await insert(store, pipeline, message("m1"))
        await until_state(store, "m1", State.SUBMITTED)
        part_id = carrier.accepted["m1"].carrier_msgid
        # Only the first write of the report, as a consumer dying right after it leaves it.
        await record_part_report(store, carrier.normalize_id(part_id), False, "EXPIRED", 0)
        await trio.sleep(10)
        assert (await history(store, "m1")).message.state is State.SUBMITTED
        await carrier.report(part_id, True)  # the operator sends it again
        found = await final(store, "m1")
        await trio.sleep(10)
        assert (pipeline.stats.reports_duplicate, pipeline.stats.finished_late) == (1, 1)
        found = await history(store, "m1")
    # Decided from the report as first recorded.
    assert (found.message.state, found.message.stat) == (State.FAILED, "EXPIRED")
    assert [(r.status, r.stat) for r in receipts(found)] == [("2", "EXPIRED")]
    assert found.events[-1].kind == "delivery_report"


# --- delivery reports -------------------------------------------------------------------------


async def test_report_completes_the_message(tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    carrier = ScriptedCarrier()
    async with open_store(tmp_path / "db") as store, running(store, carrier) as pipeline:
        await insert(store, pipeline, message("ok"), message("ko"))
        await until(lambda: len(carrier.accepted) == 2)
        await until_state(store, "ok", State.SUBMITTED)
        await until_state(store, "ko", State.SUBMITTED)
        await carrier.report(carrier.accepted["ok"].carrier_msgid, True)
        await carrier.report(carrier.accepted["ko"].carrier_msgid, False, "EXPIRED")
        ok = await final(store, "ok")
        ko = await final(store, "ko")
        # A repeated report changes nothing.
        await carrier.report(carrier.accepted["ok"].carrier_msgid, False)
        await until(lambda: pipeline.stats.reports_duplicate == 1)
    assert (ok.message.state, ok.message.stat) == (State.DELIVERED, "DELIVRD")
    assert ok.message.carrier_msgid == carrier.accepted["ok"].carrier_msgid.lower()
    assert [(r.status, r.stat) for r in receipts(ok)] == [("1", "DELIVRD")]
    assert receipts(ok)[0].sendtime == ok.message.submitted_at_ms
    assert (ko.message.state, ko.message.stat) == (State.FAILED, "EXPIRED")
    assert [(r.status, r.stat) for r in receipts(ko)] == [("2", "EXPIRED")]
    assert [(s.status, s.stat) for s in status_reports(ko)] == [
        ("1", STAT_ACCEPTED),
        ("2", "EXPIRED"),
    ]


async def test_a_message_whose_report_never_comes_fails_unknown_after_report_timeout(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    carrier = ScriptedCarrier()
    timeout = 3600.0
    async with (
        open_store(tmp_path / "db") as store,
        running(store, carrier, config(report_timeout=timeout)) as pipeline,
    ):
        await insert(store, pipeline, message("silent"), message("reported"))
        await until(lambda: len(carrier.accepted) == 2)
        await until_state(store, "silent", State.SUBMITTED)
        submitted_at = trio.current_time()
        await carrier.report(carrier.accepted["reported"].carrier_msgid, True)
        await final(store, "reported")
        await trio.sleep(timeout * 0.9)
        assert (await history(store, "silent")).message.state is State.SUBMITTED
        silent = await final(store, "silent")
        # Looked for every tenth of the timeout: failed at most that late.
        assert trio.current_time() - submitted_at <= timeout * 1.1 + 1
        # The report that comes after all changes nothing: the merchant had its A002.
        await carrier.report(carrier.accepted["silent"].carrier_msgid, True)
        await until(lambda: pipeline.stats.reports_ignored == 1)
        after = await history(store, "silent")
        reported = await history(store, "reported")
        assert pipeline.stats.reports_timed_out == 1
    assert (silent.message.state, silent.message.stat) == (State.FAILED, STAT_UNKNOWN)
    assert silent.message.error == "no delivery report within 3600 s"
    assert [(r.status, r.stat) for r in receipts(silent)] == [("2", STAT_UNKNOWN)]
    assert receipts(silent)[0].sendtime == silent.message.submitted_at_ms
    assert [(s.status, s.stat, s.error) for s in status_reports(silent)] == [
        ("1", STAT_ACCEPTED, None),
        ("2", STAT_UNKNOWN, "no delivery report within 3600 s"),
    ]
    assert after.message.state is State.FAILED and receipts(after) == receipts(silent)
    assert reported.message.state is State.DELIVERED


async def test_overdue_messages_are_failed_in_batches_after_a_restart(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    carrier = ScriptedCarrier()
    count = 1200  # more than one sweep batch
    async with open_store(tmp_path / "db") as store:
        clock = WallClock()
        async with running(store, carrier, config(senders=32), clock=clock) as pipeline:
            await insert(store, pipeline, *(message(f"m{n}") for n in range(count)))
            await until(lambda: len(carrier.accepted) == count, within=7200)
            await until_state(store, f"m{count - 1}", State.SUBMITTED)
        # Down for four days: the default timeout (3 days) passed while nobody looked.
        await trio.sleep(4 * 86400)
        assert (await store.counts())["submitted"] == count
        async with running(store, ScriptedCarrier(), config(), clock=clock) as restarted:
            await until(lambda: restarted.stats.reports_timed_out == count, within=600)
        counts = await store.counts()
    assert (counts["failed"], counts["submitted"]) == (count, 0)


async def until_state(store: BusyStore, msgid: str, state: State) -> None:
    with trio.fail_after(600):
        while True:
            if (await history(store, msgid)).message.state is state:
                return
            await trio.sleep(0.1)


async def test_a_report_for_a_message_already_final_is_ignored(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    carrier = ScriptedCarrier(gives_reports=False)  # final on accept...
    async with open_store(tmp_path / "db") as store, running(store, carrier) as pipeline:
        await insert(store, pipeline, message("m1"))
        before = await final(store, "m1")
        await carrier.report(carrier.accepted["m1"].carrier_msgid, False)  # ...yet a report
        await until(lambda: pipeline.stats.reports_ignored == 1)
        after = await history(store, "m1")
    assert (after.message.state, after.message.stat) == (State.DELIVERED, STAT_ACCEPTED)
    assert receipts(after) == receipts(before) and len(receipts(after)) == 1


async def test_report_arriving_before_the_submit_is_recorded_is_matched_late(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    carrier = ScriptedCarrier()
    pipeline_box: list[Pipeline] = []

    async def report_first(sms: OutboundSms, accepted: SubmitAccepted) -> None:
        # The operator's report overtakes its submit response (sim dlr_delay=0, SMPP).
        await carrier.report(accepted.carrier_msgid, True)
        await until(lambda: pipeline_box[0].stats.reports_unmatched == 1)

    carrier.before_answer = report_first
    async with open_store(tmp_path / "db") as store, running(store, carrier) as pipeline:
        pipeline_box.append(pipeline)
        await insert(store, pipeline, message("m1"))
        found = await final(store, "m1")
        assert rows(tmp_path / "db", "SELECT COUNT(*) FROM early_reports") == [(0,)]
        assert (pipeline.stats.reports_unmatched, pipeline.stats.reports_rematched) == (1, 1)
    assert (found.message.state, found.message.stat) == (State.DELIVERED, "DELIVRD")
    assert len(receipts(found)) == 1


async def test_multi_part_message_waits_for_every_part(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    carrier = ScriptedCarrier(parts=3)
    async with open_store(tmp_path / "db") as store, running(store, carrier) as pipeline:
        await insert(store, pipeline, message("good"), message("bad"))
        await until_state(store, "good", State.SUBMITTED)
        await until_state(store, "bad", State.SUBMITTED)
        good = carrier.accepted["good"].part_ids
        bad = carrier.accepted["bad"].part_ids
        await carrier.report(good[0])
        await carrier.report(good[2])
        await carrier.report(bad[1], False, "UNDELIV")
        await carrier.report(bad[0])
        await until(lambda: pipeline.stats.reports == 4)
        await trio.sleep(5)
        assert (await history(store, "good")).message.state is State.SUBMITTED
        assert (await history(store, "bad")).message.state is State.SUBMITTED
        await carrier.report(f"  {good[1].lower()} ")  # ids are matched normalized
        await carrier.report(bad[2])
        good_found = await final(store, "good")
        bad_found = await final(store, "bad")
    assert (good_found.message.state, good_found.message.stat) == (State.DELIVERED, "DELIVRD")
    assert (bad_found.message.state, bad_found.message.stat) == (State.FAILED, "UNDELIV")
    assert [(r.status, r.stat) for r in receipts(good_found)] == [("1", "DELIVRD")]
    assert [(r.status, r.stat) for r in receipts(bad_found)] == [("2", "UNDELIV")]
    assert all(part.reported for part in good_found.parts + bad_found.parts)
    # A003: accepted, then one step per part report, the last one final.
    # A003: accepted, then one step per part report in arrival order, the last one final.
    assert [(s.status, s.stat) for s in status_reports(bad_found)] == [
        ("1", STAT_ACCEPTED),
        ("2", "UNDELIV"),
        ("1", "DELIVRD"),
        ("2", "UNDELIV"),
    ]
    assert [s.carrier_msgid for s in status_reports(good_found)][1:] == [
        part.lower() for part in (good[0], good[2], good[1])
    ]


class FlakyStore(BusyStore):
    """Fails the next `record_failures` report writes and `apply_failures` applies of
    delivery reports (as a full disk would: nothing written)."""

    record_failures = 0
    apply_failures = 0

    async def record_part_reports(
        self, reports: Sequence[PartReport], now_ms: int
    ) -> list[PartMatch | None]:
        if self.record_failures:
            self.record_failures -= 1
            raise StoreError("disk I/O error")
        return await super().record_part_reports(reports, now_ms)

    async def apply(self, updates: Sequence[MessageUpdate]) -> list[Applied]:
        if self.apply_failures and any(u.event.kind == "delivery_report" for u in updates):
            self.apply_failures -= 1
            raise StoreError("disk I/O error")
        return await super().apply(updates)


async def test_store_errors_while_handling_reports_are_retried(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    store = FlakyStore(SqliteStore(str(tmp_path / "db")))
    carrier = ScriptedCarrier(parts=2)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        async with running(store, carrier) as pipeline:
            await insert(store, pipeline, message("m1"), message("m2"))
            await until_state(store, "m1", State.SUBMITTED)
            await until_state(store, "m2", State.SUBMITTED)
            store.record_failures = 1
            await carrier.report(carrier.accepted["m1"].part_ids[0])
            await carrier.report(carrier.accepted["m1"].part_ids[1])
            m1 = await final(store, "m1")
            store.apply_failures = 2
            await carrier.report(carrier.accepted["m2"].part_ids[0])
            await carrier.report(carrier.accepted["m2"].part_ids[1], False)
            m2 = await final(store, "m2")
        nursery.cancel_scope.cancel()
    assert (store.record_failures, store.apply_failures) == (0, 0)
    assert (m1.message.state, len(receipts(m1))) == (State.DELIVERED, 1)
    assert (m2.message.state, m2.message.stat) == (State.FAILED, "UNDELIV")
    assert [(r.status, r.stat) for r in receipts(m2)] == [("2", "UNDELIV")]


async def test_a_repeated_report_never_makes_a_message_final_twice(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    """A repeat read while the message's final update is not committed yet (same batch, or
    left by a store error) must not write a second final update (and A002)."""
    store = FlakyStore(SqliteStore(str(tmp_path / "db")))
    carrier = ScriptedCarrier()
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        async with running(store, carrier) as pipeline:
            await insert(store, pipeline, message("m1"), message("m2"))
            await until_state(store, "m1", State.SUBMITTED)
            await until_state(store, "m2", State.SUBMITTED)
            # m1: the report is not recorded; its repeat arrives while the consumer waits
            # to try again, so both are recorded in one batch (one of them as a duplicate).
            store.record_failures = 1
            await carrier.report(carrier.accepted["m1"].carrier_msgid)
            await until(lambda: store.record_failures == 0, every=0.01)
            await carrier.report(carrier.accepted["m1"].carrier_msgid)
            m1 = await final(store, "m1")
            # m2: the report is recorded but the final update fails; the repeat is read with
            # that update still to apply.
            store.apply_failures = 1
            await carrier.report(carrier.accepted["m2"].carrier_msgid, False)
            await until(lambda: store.apply_failures == 0, every=0.01)
            await carrier.report(carrier.accepted["m2"].carrier_msgid, False)
            m2 = await final(store, "m2")
            await until(lambda: pipeline.stats.reports_duplicate == 2)
            await trio.sleep(10)
            assert pipeline.stats.finished_late == 0
            m1, m2 = await history(store, "m1"), await history(store, "m2")
        nursery.cancel_scope.cancel()
    assert (m1.message.state, m2.message.state) == (State.DELIVERED, State.FAILED)
    assert [(r.status, r.stat) for r in receipts(m1)] == [("1", "DELIVRD")]
    assert [(r.status, r.stat) for r in receipts(m2)] == [("2", "UNDELIV")]
    # The final update kept is the live report's, with its text.
    assert m2.message.error == "subscriber unreachable"


async def test_reports_for_unknown_ids_are_stored_until_they_expire(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    """Kept in the store, not in memory (any process's submit may match them), and dropped
    once older than the early-report time to live."""
    carrier = ScriptedCarrier()
    db = tmp_path / "db"
    async with open_store(db) as store, running(store, carrier, unmatched_ttl_s=600) as pipeline:
        for number in range(5):
            await carrier.report(f"nobody-{number}")
        await until(lambda: pipeline.stats.reports_unmatched == 5)
        assert rows(db, "SELECT COUNT(*) FROM early_reports") == [(5,)]
        await trio.sleep(601 + 60)  # past the time to live, and a sweep
        await until(lambda: pipeline.stats.reports_dropped == 5)
        assert rows(db, "SELECT COUNT(*) FROM early_reports") == [(0,)]


# --- exactly one receipt --------------------------------------------------------------------


async def test_exactly_one_receipt_per_message_with_the_simulator(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    sim = SimCarrier(
        parse_sim_url("sim://?fail=0.3&reject=0.1&dlr_fail=0.3&dlr_delay=0&latency=0.2&seed=5")
    )
    msgids = [f"m{number}" for number in range(120)]
    async with open_store(tmp_path / "db") as store, trio.open_nursery() as carrier_nursery:
        await carrier_nursery.start(sim.run)
        async with running(store, sim, config(retry_backoff=1.0)) as pipeline:
            await insert(
                store,
                pipeline,
                *(message(msgid, msgtype=1 + number % 2) for number, msgid in enumerate(msgids)),
            )
            found = [await final(store, msgid) for msgid in msgids]
            await trio.sleep(60)
        carrier_nursery.cancel_scope.cancel()
        found = [await history(store, msgid) for msgid in msgids]
    stats = {"delivered": 0, "failed": 0}
    for entry in found:
        (receipt,) = receipts(entry)
        delivered = entry.message.state is State.DELIVERED
        stats["delivered" if delivered else "failed"] += 1
        assert receipt.status == ("1" if delivered else "2")
        assert receipt.stat == entry.message.stat
        if entry.message.msgtype == 2:
            assert entry.message.attempts == 1
    assert stats["delivered"] > 0 and stats["failed"] > 0


# --- memory -----------------------------------------------------------------------------------


async def test_a_huge_backlog_never_puts_more_than_the_channel_in_memory(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    carrier = ScriptedCarrier(gives_reports=False, default="block")
    cfg = config(senders=4)
    clock = WallClock()
    async with open_store(tmp_path / "db") as store:
        for chunk in range(10):
            await insert(store, clock, *(message(f"m{chunk}-{number}") for number in range(10_000)))
        async with running(store, carrier, cfg, clock=clock) as pipeline:
            await until(lambda: carrier.in_flight == 4)
            await trio.sleep(30)  # the dispatcher keeps polling: it must not claim more
            counts = await store.counts()
            in_memory = counts["queued"] + counts["submitting"]
            assert pipeline.capacity == 8
            assert pipeline.stats.largest_claim <= pipeline.capacity
            assert pipeline.stats.peak_buffered <= pipeline.capacity
            assert pipeline.stats.claimed == in_memory == pipeline.capacity + 4
            carrier.release.set()  # the four in flight finish; the stop returns the rest
        counts = await store.counts()
    assert counts["delivered"] >= 4
    assert counts["queued"] == counts["submitting"] == 0
    assert counts["accepted"] + counts["delivered"] == 100_000


@pytest.mark.parametrize("configured", [4, 64])
async def test_senders_fill_the_carriers_window_whatever_smsgw_senders_says(
    tmp_path: Path, autojump_clock: trio.abc.Clock, configured: int
) -> None:
    carrier = ScriptedCarrier(gives_reports=False, default="block")
    carrier.concurrency = 12  # e.g. SMPP window 6 on 2 binds
    async with (
        open_store(tmp_path / "db") as store,
        running(store, carrier, config(senders=configured)) as pipeline,
    ):
        await insert(store, pipeline, *(message(f"m{number}") for number in range(40)))
        await until(lambda: carrier.in_flight == 12)
        await trio.sleep(5)
        assert carrier.in_flight == 12
        assert (pipeline.senders, pipeline.capacity) == (12, 24)
        carrier.release.set()
        for number in range(40):
            await final(store, f"m{number}")


async def test_stop_finishes_the_submits_in_flight_and_requeues_the_rest(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    carrier = ScriptedCarrier(gives_reports=False, default="block")
    async with open_store(tmp_path / "db") as store:
        async with trio.open_nursery() as nursery:
            pipeline = Pipeline(config(senders=2), store, carrier, WallClock())
            await nursery.start(pipeline.run)
            await insert(store, pipeline, *(message(f"m{number}") for number in range(10)))
            await until(lambda: carrier.in_flight == 2)
            await until(lambda: pipeline.stats.claimed == 6)
            pipeline.stop()
            await trio.sleep(5)
            assert carrier.in_flight == 2  # stop() waits for the submits in hand
            carrier.release.set()
        counts = await store.counts()
        requeued = pipeline.stats.requeued
        later = ScriptedCarrier(gives_reports=False)
        async with running(store, later):
            for number in range(10):
                await final(store, f"m{number}")
    assert counts["delivered"] == 2
    assert counts["accepted"] == 8 and requeued == 4
    assert len(carrier.submits) == 2 and len(later.submits) == 8
    assert all(sms.attempt == 1 for _, sms in later.submits)


# --- history for `smsgw status` -------------------------------------------------------------


async def test_status_output_shows_state_attempts_events_and_pushes(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    carrier = ScriptedCarrier(gives_reports=False)
    carrier.script["m1"] = [temporary()]
    async with open_store(tmp_path / "db") as store, running(store, carrier) as pipeline:
        await insert(store, pipeline, message("m1"))
        found = await final(store, "m1")
    shown = json.loads(json.dumps(_history_json(found)))
    assert shown["message"]["state"] == "delivered"
    assert shown["message"]["attempts"] == 2
    kinds = [event["kind"] for event in shown["events"]]
    assert kinds == ["accepted", "submitting", "attempt_failed", "submitting", "final"]
    pushes = shown["pushes"]
    assert {push["kind"] for push in pushes} == {"A002", "A003"}
    receipt = next(push for push in pushes if push["kind"] == "A002")
    assert receipt["body"]["status"] == "1" and receipt["state"] == "pending"


# --- the gateway, wired -----------------------------------------------------------------------


async def test_gateway_sends_and_pushes_receipts_end_to_end(tmp_path: Path) -> None:
    """Real sockets and real time: submit → sim → report → A002/A003 at the merchant."""
    received: list[tuple[str, ReceiptItem | StatusReportItem]] = []

    def store_items(kind: str, items: list[ReceiptItem | StatusReportItem]) -> None:
        received.extend((kind, item) for item in items)

    receiver = ReceiptServer(store_items)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(receiver.run)
            apps = tmp_path / "apps.toml"
            apps.write_text(
                f'[apps.shop1]\nsecret = "s3cret"\nreceipt_endpoint = "127.0.0.1:{port}"\n'
                "status_reports = true\n"
            )
            cfg = make_config(
                tmp_path,
                SMSGW_APPS="",
                SMSGW_APPS_FILE=str(apps),
                SMSGW_CARRIER="sim://?fail=0&dlr_delay=0",
            )
            gateway = Gateway(cfg)
            async with trio.open_nursery() as gateway_nursery:
                info = await gateway_nursery.start(gateway.run)
                items = [
                    {"phone": "8613800138000", "message": "hi", "msgid": f"e{n}", "msgtype": 1}
                    for n in range(3)
                ]
                address = f"127.0.0.1:{info.listen[0].port}"
                reply = await submit(address, "shop1", "s3cret", items)
                assert reply.status == "0"
                await until(lambda: sum(kind == "A002" for kind, _ in received) >= 3, every=0.02)
                gateway.shutdown()  # the gateway nursery ends when run() returns
            nursery.cancel_scope.cancel()
    finals = sorted(item.msgid for kind, item in received if kind == "A002")
    assert finals == ["e0", "e1", "e2"]
    assert all(
        item.status == "1" and item.stat == "DELIVRD" for kind, item in received if kind == "A002"
    )
    steps = [item for kind, item in received if kind == "A003"]
    assert {item.msgid for item in steps} == {"e0", "e1", "e2"}
    assert all(isinstance(item, StatusReportItem) and item.attempt == 1 for item in steps)


def test_a_bad_carrier_url_is_a_configuration_error(tmp_path: Path) -> None:
    async def build() -> None:
        Gateway(make_config(tmp_path, SMSGW_CARRIER="carrier-pigeon://coop"))

    with pytest.raises(ConfigError) as raised:
        trio.run(build)
    assert raised.value.variable == "SMSGW_CARRIER"
