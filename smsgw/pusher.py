"""Receipt delivery: pushes the outbox (A002 receipts, A003 status reports) to merchants.

docs/protocol.md, "A002 receipt" and "A003 status report". One task per app that has a receipt
endpoint, all in one nursery, so a slow or dead endpoint only ever delays its own app. Each
round takes up to 100 due items of one kind, sends them as ONE request frame (the app's own
appid/secret, its length style) to the app's configured endpoint — never to an address
taken from a request — and records the result: acknowledged (`{"status": "0"}`), or failed
and due again after a backoff, or abandoned after `push_attempts` sends.

The outbox holds receipt facts (`smsgw.lifecycle.Receipt`); the JSON of A002 / A003 items is
made here, at the merchant edge. Several processes may share the store: an app's outbox is
pushed by one owner at a time (`OutboxStore.claim_pushes`, held while the owner's lease
lives), so its items go out in order and once.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Sequence
from typing import Final, Protocol

import attrs
import trio

from smsgw.client import ClientError, OpenStream, exchange
from smsgw.clock import WallClock
from smsgw.config import AppConfig, Config
from smsgw.lease import Lease, RetryLog
from smsgw.lifecycle import PushKind
from smsgw.observe import Check, Sample, counter
from smsgw.protocol.framing import ProtocolError, response_command
from smsgw.protocol.messages import (
    BodyError,
    ReceiptItem,
    StatusReportItem,
    encode_json,
    parse_ack,
)
from smsgw.protocol.status import Status
from smsgw.store.base import OutboxStore, OwnerStore, PushRecord, StoreError

log = logging.getLogger("smsgw.pusher")

MAX_PUSH_ITEMS: Final = 100
POLL_INTERVAL_S: Final = 5.0  # an app task looks at the outbox at least this often
STORE_RETRY_S: Final = 1.0
MAX_PUSH_BACKOFF_S: Final = 3600.0


class PusherStore(OutboxStore, OwnerStore, Protocol):
    """The roles the pusher uses (the owner roles for its own lease when given none)."""


# Item `status` of A002 / A003: "1" success (delivered, or a step that went well), "2" failure.
PUSH_SUCCESS: Final = "1"
PUSH_FAILURE: Final = "2"


def encode_item(push: PushRecord) -> bytes:
    """The JSON of one outbox item, from its receipt facts."""
    r = push.receipt
    status = PUSH_SUCCESS if r.success else PUSH_FAILURE
    if push.kind == PushKind.RECEIPT:
        return encode_json(ReceiptItem(push.msgid, push.phone, status, r.sendtime_ms, r.stat))
    return encode_json(
        StatusReportItem(
            push.msgid,
            push.phone,
            status,
            r.sendtime_ms,
            r.stat,
            r.attempt,
            r.carrier_msgid,
            r.error,
        )
    )


def push_backoff_s(sends: int, base_s: float) -> float:
    """Seconds before the next send of an item that has failed `sends` sends so far."""
    return float(min(base_s * 2.0 ** min(max(sends - 1, 0), 64), MAX_PUSH_BACKOFF_S))


_PUSH_COUNTERS: Final = (
    ("sends", "push frames sent (or tried) to the merchant"),
    ("acknowledged", "push frames the merchant answered with status 0"),
    ("failed", "push frames that failed (no answer, refused, non-0 status)"),
    ("items_done", "receipt items acknowledged"),
    ("items_abandoned", "receipt items given up after SMSGW_PUSH_ATTEMPTS sends"),
)


@attrs.define
class AppPushStats:
    sends: int = 0  # frames sent (or tried)
    acknowledged: int = 0  # frames answered {"status": "0"}
    failed: int = 0
    items_done: int = 0
    items_abandoned: int = 0
    largest_batch: int = 0


class Pusher:
    """Per-app push tasks (see the module doc)."""

    def __init__(
        self,
        config: Config,
        store: PusherStore,
        clock: WallClock,
        *,
        open_stream: OpenStream | None = None,
        lease: Lease | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.lease = lease if lease is not None else Lease(store, clock, config.lease)
        self._own_lease = lease is None
        self._claimed: dict[str, int] = {}  # appid → the lease generation it was claimed in
        self._open_stream = open_stream
        self._apps = [app for app in config.apps if app.receipt_endpoint is not None]
        self._wakes = {app.appid: trio.Event() for app in self._apps}
        self.stats: dict[str, AppPushStats] = {app.appid: AppPushStats() for app in self._apps}
        self._stopping = False

    async def samples(self) -> list[Sample]:
        return [
            counter(f"smsgw_push_{field}", doc, getattr(stats, field), appid=appid)
            for field, doc in _PUSH_COUNTERS
            for appid, stats in sorted(self.stats.items())
        ]

    async def checks(self) -> list[Check]:
        return []  # a merchant's endpoint being down is the merchant's, not the gateway's

    def wake(self, appid: str) -> None:
        """The app has new outbox items: its task looks now (unknown apps are ignored)."""
        event = self._wakes.get(appid)
        if event is not None:
            event.set()

    def stop(self) -> None:
        """Graceful: every app task finishes the push in hand, then returns."""
        self._stopping = True
        for event in self._wakes.values():
            event.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as leasing:
            if self._own_lease:
                await leasing.start(self.lease.run)
            async with trio.open_nursery() as nursery:
                for app in self._apps:
                    nursery.start_soon(self._serve_app, app)
                task_status.started()
            leasing.cancel_scope.cancel()

    # ------------------------------------------------------------------ one app

    async def _serve_app(self, app: AppConfig) -> None:
        appid = app.appid
        retry = RetryLog(log, f"pushes of app {appid}")
        while not self._stopping:
            # Reset before looking, so a wake() during the round is not lost.
            self._wakes[appid] = trio.Event()
            try:
                if not await self._claim(appid):
                    # Another live process pushes this app: look again later.
                    with trio.move_on_after(POLL_INTERVAL_S):
                        await self._wakes[appid].wait()
                    continue
                if await self._push_round(app):
                    continue  # more may be due right away
                next_due = await self.store.next_push_due_at(appid)
            except StoreError as exc:
                retry.failed(exc)
                await trio.sleep(STORE_RETRY_S)
                continue
            retry.succeeded()
            deadline = trio.current_time() + POLL_INTERVAL_S
            if next_due is not None:
                # +1 ms: at that trio time the wall clock reads next_due even after rounding.
                deadline = min(deadline, self.clock.trio_time(next_due) + 0.001)
            with trio.move_on_at(deadline):
                await self._wakes[appid].wait()

    async def _claim(self, appid: str) -> bool:
        generation = self.lease.generation
        if self._claimed.get(appid) == generation:
            return True
        if not await self.store.claim_pushes(appid, self.lease.owner):
            return False
        self._claimed[appid] = generation
        return True

    async def _push_round(self, app: AppConfig) -> bool:
        """Send one frame of due items; False when nothing was due."""
        due = await self.store.due_pushes(app.appid, self.clock.now_ms(), MAX_PUSH_ITEMS)
        if not due:
            return False
        kind = due[0].kind
        batch = [push for push in due if push.kind == kind]
        stats = self.stats[app.appid]
        stats.sends += 1
        stats.largest_batch = max(stats.largest_batch, len(batch))
        error = await self._send(app, kind, batch)
        now = self.clock.now_ms()
        if error is None:
            stats.acknowledged += 1
            stats.items_done += len(batch)
            await self._record(
                [push.id for push in batch], True, None, now, self.config.push_attempts, now
            )
            return True
        stats.failed += 1
        # Items of one frame may have been sent a different number of times before.
        by_sends: dict[int, list[PushRecord]] = collections.defaultdict(list)
        for push in batch:
            by_sends[push.attempts + 1].append(push)
        for sends, pushes in sorted(by_sends.items()):
            retry_at = now + int(push_backoff_s(sends, self.config.push_backoff) * 1000)
            await self._record(
                [push.id for push in pushes],
                False,
                error,
                now,
                self.config.push_attempts,
                retry_at,
            )
            if sends >= self.config.push_attempts:
                stats.items_abandoned += len(pushes)
                log.warning(
                    "app %s: %d %s items abandoned after %d sends: %s",
                    app.appid,
                    len(pushes),
                    kind,
                    sends,
                    error,
                    extra={"app": app.appid, "push_ids": [push.id for push in pushes]},
                )
        log.info("app %s: %s push of %d items failed: %s", app.appid, kind, len(batch), error)
        return True

    async def _record(
        self,
        push_ids: Sequence[int],
        ok: bool,
        error: str | None,
        now_ms: int,
        max_attempts: int,
        retry_at_ms: int,
    ) -> None:
        """Record a send's result, retried until it commits: the items went out, and not
        recording it would send them to the merchant again."""
        retry = RetryLog(log, f"recording {len(push_ids)} push results")
        while True:
            try:
                await self.store.record_push_result(
                    push_ids, ok, error, now_ms, max_attempts, retry_at_ms
                )
            except StoreError as exc:
                retry.failed(exc)
                await trio.sleep(STORE_RETRY_S)
                continue
            retry.succeeded()
            return

    async def _send(self, app: AppConfig, kind: str, batch: Sequence[PushRecord]) -> str | None:
        """Push one frame; None when acknowledged, else why it failed."""
        endpoint = app.receipt_endpoint
        assert endpoint is not None
        body = b"[" + b",".join(encode_item(push) for push in batch) + b"]"
        try:
            response = await exchange(
                endpoint,
                kind,
                app.appid,
                app.secret,
                body,
                length_style=app.push_length_style,
                timeout=self.config.push_timeout,
                open_stream=self._open_stream,
            )
        except ClientError as exc:
            return str(exc)
        except ProtocolError as exc:
            return f"cannot frame the push: {exc}"
        expected = response_command(kind)
        if response.command != expected:
            return f"answered {response.command!r} instead of {expected!r}"
        try:
            ack = parse_ack(response.body)
        except BodyError as exc:
            return f"bad {expected} body: {exc}"
        if ack.status != Status.OK:
            return f"status {ack.status}" + (f": {ack.error}" if ack.error else "")
        return None
