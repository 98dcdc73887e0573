"""The pusher: per-app receipt delivery, retries, abandonment, batching, isolation.

Most tests run on an in-memory outbox and in-memory streams served by `ReceiptServer.handle`,
so the autojump clock can run the 60 s push timeouts and the backoffs exactly. One test uses
the real SQLite store and real loopback sockets, with real short timings.
"""

from __future__ import annotations

import errno
import json
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio
import trio.testing

from smsgw.client import ReceiptServer
from smsgw.clock import WallClock
from smsgw.config import AppConfig, Config, Endpoint
from smsgw.lifecycle import Receipt
from smsgw.protocol.framing import LengthStyle, Request, RequestDecoder, encode_response
from smsgw.protocol.messages import ReceiptItem, StatusReportItem
from smsgw.pusher import MAX_PUSH_ITEMS, Pusher, push_backoff_s
from smsgw.store import (
    Event,
    MessageUpdate,
    NewMessage,
    OwnerInfo,
    OwnerRecord,
    PushKind,
    PushRecord,
    PushState,
    Reclaimed,
    SqliteStore,
    State,
)

Item = ReceiptItem | StatusReportItem


def receipt_body(msgid: str) -> str:
    item = {"msgid": msgid, "phone": "8613800000000", "status": "1", "sendtime": 1, "stat": "X"}
    return json.dumps(item)


def step_body(msgid: str) -> str:
    item = json.loads(receipt_body(msgid))
    return json.dumps({**item, "attempt": 1})


class MemoryOutbox:
    """The outbox part of the store, in memory, with the SQLite store's semantics."""

    def __init__(self) -> None:
        self.pushes: dict[int, PushRecord] = {}
        self._next_id = 1

    def add(self, appid: str, kind: str, body: str, due_ms: int) -> int:
        """An item whose encoding is `body` (the facts are read back from it)."""
        push_id = self._next_id
        self._next_id += 1
        item = json.loads(body)
        receipt = Receipt(
            final=kind == "A002",
            success=item["status"] == "1",
            stat=item["stat"],
            attempt=item.get("attempt", 0),
            sendtime_ms=item["sendtime"],
            carrier_msgid=item.get("carrier_msgid"),
            error=item.get("error"),
        )
        self.pushes[push_id] = PushRecord(
            push_id,
            appid,
            1,
            kind,
            item["msgid"],
            item["phone"],
            receipt,
            PushState.PENDING,
            0,
            due_ms,
            None,
            due_ms,
        )
        return push_id

    # The owner roles (the pusher's own lease) and its claim: one process, always its own.

    async def register_owner(self, owner: OwnerInfo, lease_until_ms: int) -> None:
        await trio.lowlevel.checkpoint()

    async def renew_owner(self, owner_id: str, lease_until_ms: int) -> bool:
        await trio.lowlevel.checkpoint()
        return True

    async def release_owner(self, owner_id: str) -> None:
        await trio.lowlevel.checkpoint()

    async def owners(self) -> list[OwnerRecord]:
        await trio.lowlevel.checkpoint()
        return []

    async def reclaim(self, claimant: str, now_ms: int, dead: Sequence[str] = ()) -> Reclaimed:
        await trio.lowlevel.checkpoint()
        return Reclaimed((), 0, ())

    async def claim_pushes(self, appid: str, owner: str) -> bool:
        await trio.lowlevel.checkpoint()
        return True

    async def apps_with_due_pushes(self, now_ms: int) -> list[str]:
        await trio.lowlevel.checkpoint()
        return sorted({p.appid for p in self.pushes.values() if p.next_attempt_at_ms <= now_ms})

    def _pending(self, appid: str) -> list[PushRecord]:
        return sorted(
            (p for p in self.pushes.values() if p.appid == appid and p.state is PushState.PENDING),
            key=lambda p: (p.next_attempt_at_ms, p.id),
        )

    async def due_pushes(self, appid: str, now_ms: int, limit: int) -> list[PushRecord]:
        await trio.lowlevel.checkpoint()
        return [p for p in self._pending(appid) if p.next_attempt_at_ms <= now_ms][:limit]

    async def next_push_due_at(self, appid: str) -> int | None:
        await trio.lowlevel.checkpoint()
        pending = self._pending(appid)
        return pending[0].next_attempt_at_ms if pending else None

    async def record_push_result(
        self,
        push_ids: Sequence[int],
        ok: bool,
        error: str | None,
        now_ms: int,
        max_attempts: int,
        retry_at_ms: int,
    ) -> None:
        await trio.lowlevel.checkpoint()
        for push_id in push_ids:
            push = self.pushes[push_id]
            if push.state is not PushState.PENDING:
                continue
            attempts = push.attempts + 1
            if ok:
                state = PushState.DONE
            else:
                state = PushState.ABANDONED if attempts >= max_attempts else PushState.PENDING
            self.pushes[push_id] = attrs.evolve(
                push,
                state=state,
                attempts=attempts,
                next_attempt_at_ms=push.next_attempt_at_ms if ok else retry_at_ms,
                last_error=error if error is not None else push.last_error,
                updated_at_ms=now_ms,
            )


def app(appid: str, port: int, **options: Any) -> AppConfig:
    return AppConfig(
        appid, f"{appid}-secret", receipt_endpoint=Endpoint("10.9.9.9", port), **options
    )


def config(*apps: AppConfig, **changes: Any) -> Config:
    base = Config(apps=apps, push_timeout=60.0, push_attempts=3, push_backoff=5.0)
    return attrs.evolve(base, **changes)


@attrs.define
class Endpoints:
    """Fake merchant endpoints by port: a ReceiptServer each, or refused when missing."""

    nursery: trio.Nursery
    servers: dict[int, ReceiptServer] = attrs.field(factory=dict)
    received: dict[int, list[tuple[float, str, list[Item]]]] = attrs.field(factory=dict)
    dialled: list[tuple[str, int]] = attrs.field(factory=list)

    def serve(self, port: int, **options: Any) -> ReceiptServer:
        log = self.received.setdefault(port, [])

        def store(kind: str, items: list[Item]) -> None:
            log.append((trio.current_time(), kind, items))

        server = ReceiptServer(store, **options)
        self.servers[port] = server
        return server

    async def open_stream(self, host: str, port: int) -> trio.abc.Stream:
        self.dialled.append((host, port))
        await trio.lowlevel.checkpoint()
        server = self.servers.get(port)
        if server is None:
            raise ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
        client, remote = trio.testing.memory_stream_pair()
        self.nursery.start_soon(server.handle, remote)
        return client


@asynccontextmanager
async def pushing(
    cfg: Config, outbox: MemoryOutbox
) -> AsyncIterator[tuple[Pusher, Endpoints, WallClock]]:
    clock = WallClock()
    async with trio.open_nursery() as nursery:
        endpoints = Endpoints(nursery)
        pusher = Pusher(cfg, outbox, clock, open_stream=endpoints.open_stream)
        await nursery.start(pusher.run)
        yield pusher, endpoints, clock
        pusher.stop()
        nursery.cancel_scope.deadline = trio.current_time() + 120


async def until(check: Callable[[], bool], *, within: float = 3600) -> None:
    with trio.fail_after(within):
        while True:
            if check():
                return
            await trio.sleep(0.05)


def test_push_backoff_doubles_and_is_capped() -> None:
    assert [push_backoff_s(sends, 5.0) for sends in (1, 2, 3, 4)] == [5.0, 10.0, 20.0, 40.0]
    assert push_backoff_s(1000, 5.0) == 3600.0


async def test_a_never_answering_endpoint_gets_push_attempts_sends_then_abandoned(
    autojump_clock: trio.abc.Clock,
) -> None:
    outbox = MemoryOutbox()
    async with pushing(config(app("a", 1)), outbox) as (pusher, endpoints, clock):
        endpoints.serve(1, silent=True)
        push_id = outbox.add("a", "A002", receipt_body("m1"), clock.now_ms())
        pusher.wake("a")
        await until(lambda: outbox.pushes[push_id].state is not PushState.PENDING)
        await trio.sleep(7200)  # never sent again
    push = outbox.pushes[push_id]
    sends = endpoints.received[1]
    assert len(sends) == 3 and pusher.stats["a"].sends == 3
    assert (push.state, push.attempts) == (PushState.ABANDONED, 3)
    assert push.last_error is not None and "no answer" in push.last_error
    times = [at for at, _, _ in sends]
    # Each send waits out the 60 s timeout, then the backoff: 5 s, then 10 s.
    assert 65 <= times[1] - times[0] < 66
    assert 70 <= times[2] - times[1] < 71


async def test_an_endpoint_answering_1_then_0_gets_exactly_two_sends(
    autojump_clock: trio.abc.Clock,
) -> None:
    outbox = MemoryOutbox()
    async with pushing(config(app("a", 1)), outbox) as (pusher, endpoints, clock):
        server = endpoints.serve(1, answer="1")
        push_id = outbox.add("a", "A002", receipt_body("m1"), clock.now_ms())
        pusher.wake("a")
        await until(lambda: len(endpoints.received[1]) == 1)
        server.answer = "0"
        await until(lambda: outbox.pushes[push_id].state is PushState.DONE)
        await trio.sleep(3600)
    assert len(endpoints.received[1]) == 2
    assert outbox.pushes[push_id].attempts == 2
    first, second = (at for at, _, _ in endpoints.received[1])
    assert 5 <= second - first < 6  # push_backoff after the failed send
    assert outbox.pushes[push_id].last_error == "status 1"


async def test_a_refused_connection_is_a_failed_send(autojump_clock: trio.abc.Clock) -> None:
    outbox = MemoryOutbox()
    async with pushing(config(app("a", 1)), outbox) as (pusher, endpoints, clock):
        push_id = outbox.add("a", "A002", receipt_body("m1"), clock.now_ms())
        pusher.wake("a")
        await until(lambda: outbox.pushes[push_id].state is not PushState.PENDING)
    push = outbox.pushes[push_id]
    assert (push.state, push.attempts) == (PushState.ABANDONED, 3)
    assert push.last_error is not None and "cannot talk to" in push.last_error
    assert endpoints.dialled == [("10.9.9.9", 1)] * 3  # only ever the configured endpoint


async def test_a_dead_app_does_not_delay_another_app(autojump_clock: trio.abc.Clock) -> None:
    outbox = MemoryOutbox()
    cfg = config(app("dead", 1), app("live", 2))
    async with pushing(cfg, outbox) as (pusher, endpoints, clock):
        endpoints.serve(1, silent=True)
        endpoints.serve(2)
        start = trio.current_time()
        for number in range(3):
            outbox.add("dead", "A002", receipt_body(f"d{number}"), clock.now_ms())
        pusher.wake("dead")
        await until(lambda: len(endpoints.received.get(1, [])) == 1)  # dead app: stuck
        live_id = outbox.add("live", "A002", receipt_body("l1"), clock.now_ms())
        pusher.wake("live")
        await until(lambda: outbox.pushes[live_id].state is PushState.DONE)
        assert trio.current_time() - start < 1  # long before the dead app's 60 s timeout
        # And again later, while the dead app is still retrying.
        await trio.sleep(30)
        later_id = outbox.add("live", "A002", receipt_body("l2"), clock.now_ms())
        pusher.wake("live")
        await until(lambda: outbox.pushes[later_id].state is PushState.DONE, within=1)
    assert pusher.stats["live"].sends == 2


async def test_items_go_in_frames_of_at_most_100_of_one_kind(
    autojump_clock: trio.abc.Clock,
) -> None:
    outbox = MemoryOutbox()
    async with pushing(config(app("a", 1, status_reports=True)), outbox) as (
        pusher,
        endpoints,
        clock,
    ):
        endpoints.serve(1)
        now = clock.now_ms()
        for number in range(250):
            outbox.add("a", "A002", receipt_body(f"m{number}"), now)
        for number in range(30):
            outbox.add("a", "A003", step_body(f"m{number}"), now)
        pusher.wake("a")
        await until(lambda: all(p.state is PushState.DONE for p in outbox.pushes.values()))
    frames = endpoints.received[1]
    assert all(len(items) <= MAX_PUSH_ITEMS for _, _, items in frames)
    assert [(kind, len(items)) for _, kind, items in frames] == [
        ("A002", 100),
        ("A002", 100),
        ("A002", 50),
        ("A003", 30),
    ]
    assert all(
        isinstance(item, ReceiptItem if kind == "A002" else StatusReportItem)
        for _, kind, items in frames
        for item in items
    )
    sent = [item.msgid for _, kind, items in frames if kind == "A002" for item in items]
    assert sorted(sent) == sorted(f"m{number}" for number in range(250))  # each once


async def test_pushes_due_later_wait_for_their_time(autojump_clock: trio.abc.Clock) -> None:
    outbox = MemoryOutbox()
    async with pushing(config(app("a", 1)), outbox) as (pusher, endpoints, clock):
        endpoints.serve(1)
        start = trio.current_time()
        push_id = outbox.add("a", "A002", receipt_body("m1"), clock.now_ms() + 42_000)
        pusher.wake("a")
        await until(lambda: outbox.pushes[push_id].state is PushState.DONE)
    (at, _, _) = endpoints.received[1][0]
    assert 42 <= at - start < 42.1


async def test_the_frame_carries_the_apps_credentials_and_length_style(
    autojump_clock: trio.abc.Clock,
) -> None:
    outbox = MemoryOutbox()
    requests: list[Request] = []

    async def raw_endpoint(stream: trio.abc.Stream) -> None:
        decoder = RequestDecoder(max_body=1 << 20)
        while True:
            event = decoder.next_event()
            if isinstance(event, Request):
                break
            decoder.receive_data(await stream.receive_some(65536))
        requests.append(event)
        await stream.send_all(encode_response("B002", b'{"status":"0"}', event.length_style))
        await stream.aclose()

    cfg = config(app("shop", 7, push_length_style=LengthStyle.BINARY))
    async with trio.open_nursery() as nursery:

        async def open_stream(host: str, port: int) -> trio.abc.Stream:
            await trio.lowlevel.checkpoint()
            client, remote = trio.testing.memory_stream_pair()
            nursery.start_soon(raw_endpoint, remote)
            return client

        clock = WallClock()
        pusher = Pusher(cfg, outbox, clock, open_stream=open_stream)
        await nursery.start(pusher.run)
        push_id = outbox.add("shop", "A002", receipt_body("m1"), clock.now_ms())
        pusher.wake("shop")
        await until(lambda: outbox.pushes[push_id].state is PushState.DONE)
        pusher.stop()
    (request,) = requests
    assert request.command == "A002"
    assert request.length_style is LengthStyle.BINARY
    assert (request.appid, request.appsecret) == (
        "shop".rjust(15, "0"),
        "shop-secret".rjust(15, "0"),
    )
    assert json.loads(request.body) == [json.loads(receipt_body("m1"))]


async def test_a_wrong_reply_command_or_body_is_a_failed_send(
    autojump_clock: trio.abc.Clock,
) -> None:
    outbox = MemoryOutbox()
    # Each is a failed send: the wrong command, a body that is no ack, a status other than 0.
    replies = [("B003", b'{"status":"0"}'), ("B002", b"[1]"), ("B002", b'{"status":"oops"}')]

    async def odd_endpoint(stream: trio.abc.Stream) -> None:
        decoder = RequestDecoder(max_body=1 << 20)
        while not isinstance(decoder.next_event(), Request):
            decoder.receive_data(await stream.receive_some(65536))
        command, body = replies.pop(0)
        await stream.send_all(encode_response(command, body))
        await stream.aclose()

    async with trio.open_nursery() as nursery:

        async def open_stream(host: str, port: int) -> trio.abc.Stream:
            await trio.lowlevel.checkpoint()
            client, remote = trio.testing.memory_stream_pair()
            nursery.start_soon(odd_endpoint, remote)
            return client

        clock = WallClock()
        pusher = Pusher(config(app("a", 1)), outbox, clock, open_stream=open_stream)
        await nursery.start(pusher.run)
        push_id = outbox.add("a", "A002", receipt_body("m1"), clock.now_ms())
        pusher.wake("a")
        await until(lambda: outbox.pushes[push_id].state is not PushState.PENDING)
        pusher.stop()
    push = outbox.pushes[push_id]
    assert (push.state, push.attempts) == (PushState.ABANDONED, 3)
    assert push.last_error == "status oops"
    assert replies == []


async def test_stop_lets_the_push_in_flight_finish(autojump_clock: trio.abc.Clock) -> None:
    outbox = MemoryOutbox()
    release = trio.Event()

    async def slow(kind: str, items: list[Item]) -> None:
        await release.wait()

    clock = WallClock()
    async with trio.open_nursery() as nursery:
        endpoints = Endpoints(nursery)
        endpoints.servers[1] = ReceiptServer(slow)
        pusher = Pusher(config(app("a", 1)), outbox, clock, open_stream=endpoints.open_stream)
        push_id = outbox.add("a", "A002", receipt_body("m1"), clock.now_ms())
        await nursery.start(pusher.run)
        await trio.sleep(5)  # the push is in flight
        pusher.stop()
        await trio.sleep(5)
        assert outbox.pushes[push_id].state is PushState.PENDING
        release.set()
        await until(lambda: outbox.pushes[push_id].state is PushState.DONE)
    assert pusher.stats["a"].sends == 1


async def test_apps_without_an_endpoint_get_no_task() -> None:
    outbox = MemoryOutbox()
    cfg = config(AppConfig("quiet", "secret"))
    pusher = Pusher(cfg, outbox, WallClock())
    with trio.fail_after(5):
        await pusher.run()  # nothing to do: returns at once
    pusher.wake("quiet")  # ignored
    assert pusher.stats == {}


async def test_with_the_sqlite_store_over_loopback(tmp_path: Path) -> None:
    """Real sockets and real time: one endpoint refuses, one answers."""
    with trio.socket.socket() as probe:
        await probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]  # closed again below: connections are refused
    got: list[Item] = []
    store = SqliteStore(str(tmp_path / "smsgw.db"))
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            port = await nursery.start(ReceiptServer(lambda kind, items: got.extend(items)).run)
            apps = (
                AppConfig("up", "s", receipt_endpoint=Endpoint("127.0.0.1", port)),
                AppConfig("down", "s", receipt_endpoint=Endpoint("127.0.0.1", closed_port)),
            )
            cfg = attrs.evolve(config(*apps), push_timeout=2.0, push_backoff=0.05, push_attempts=2)
            clock = WallClock()
            now = clock.now_ms()
            await store.insert_messages(
                [
                    NewMessage(appid, "m1", "8613800000000", "hi", 1, None, 1)
                    for appid in ("up", "down")
                ],
                now,
            )
            for row in await store.claim_due(now, 10, owner="sender"):
                (applied, _) = await store.apply(
                    [
                        MessageUpdate(row.id, State.SUBMITTING, Event("submitting", now, 1)),
                        MessageUpdate(
                            row.id,
                            State.DELIVERED,
                            Event("final", now, 1, "DELIVRD"),
                            receipt=Receipt(True, True, "X", 1, 1),
                            pushes=(PushKind.RECEIPT,),
                        ),
                    ]
                )
                assert applied.applied
            pusher = Pusher(cfg, store, clock)
            await nursery.start(pusher.run)
            while True:
                counts = await store.push_counts()
                if not counts["pending"]:
                    break
                await trio.sleep(0.02)
            pusher.stop()
            nursery.cancel_scope.cancel()
    assert [item.msgid for item in got] == ["m1"]
    assert (counts["done"], counts["abandoned"]) == (1, 1)
    assert pusher.stats["up"].acknowledged == 1
    assert pusher.stats["down"].failed == 2 and pusher.stats["down"].items_abandoned == 1
