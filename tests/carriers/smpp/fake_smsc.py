"""An SMSC in memory for the SMPP session tests: each `connect` hands the carrier one end of
a `trio.testing.memory_stream_pair`, and a `PeerLink` task plays the SMSC on the other end,
so tests can use `autojump_clock` and send the carrier any bytes, malformed ones included.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import attrs
import trio
import trio.testing

from smsgw.carriers.base import OutboundSms
from smsgw.carriers.link.pool import MO_BUFFER, REPORT_BUFFER
from smsgw.carriers.smpp import codec
from smsgw.carriers.smpp.carrier import SmppCarrier
from smsgw.carriers.smpp.codec import (
    Bind,
    EnquireLink,
    Pdu,
    SmppConnection,
    SmppProtocolError,
    SubmitSm,
    Unbind,
    response_for,
)
from smsgw.carriers.smpp.settings import parse_smpp_url
from smsgw.sansio import NEED_DATA

PduT = TypeVar("PduT", bound=Pdu)

# What the fake answers a submit_sm with: a message id, a command_status, or None (silence).
SubmitAnswer = str | int | None


def sms(n: int = 1, text: str = "hello", phone: str = "+8613800000001") -> OutboundSms:
    return OutboundSms(
        message_id=n, appid="app1", msgid=f"m{n}", phone=phone, text=text, msgtype=1, attempt=1
    )


@attrs.define(eq=False)
class PeerLink:
    """The SMSC's side of one connection."""

    smsc: FakeSmsc
    stream: trio.abc.Stream
    number: int
    codec: SmppConnection = attrs.field(factory=SmppConnection)
    received: list[Pdu] = attrs.field(factory=list)
    errors: list[SmppProtocolError] = attrs.field(factory=list)
    bound_as: str | None = None
    closed: trio.Event = attrs.field(factory=trio.Event)
    arrived: trio.Event = attrs.field(factory=trio.Event)
    _write_lock: trio.Lock = attrs.field(factory=trio.Lock)

    async def send(self, pdu: Pdu) -> None:
        await self.send_raw(self.codec.send(pdu))

    async def send_request(self, pdu: Pdu) -> Pdu:
        numbered, data = self.codec.send_request(pdu)
        await self.send_raw(data)
        return numbered

    async def send_raw(self, data: bytes) -> None:
        async with self._write_lock:
            await self.stream.send_all(data)

    async def close(self) -> None:
        await trio.aclose_forcefully(self.stream)
        self.closed.set()

    def of_type(self, kind: type[PduT]) -> list[PduT]:
        return [pdu for pdu in self.received if isinstance(pdu, kind)]

    async def wait_for(self, kind: type[PduT], count: int = 1) -> list[PduT]:
        while len(self.of_type(kind)) < count:
            await self.arrived.wait()
        return self.of_type(kind)

    async def run(self) -> None:
        try:
            while True:
                data = await self.stream.receive_some(65536)
                if not data:
                    break
                self.codec.receive_data(bytes(data))
                while True:
                    try:
                        pdu = self.codec.next_event()
                    except SmppProtocolError as error:
                        self.errors.append(error)
                        if self.codec.broken:
                            return
                        continue
                    if pdu is NEED_DATA:
                        break
                    self.received.append(pdu)
                    self.arrived.set()
                    self.arrived = trio.Event()
                    await self._answer(pdu)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self.closed.set()
            self.arrived.set()

    async def _answer(self, pdu: Pdu) -> None:
        smsc = self.smsc
        if isinstance(pdu, Bind):
            status = smsc.bind_statuses.pop(0) if smsc.bind_statuses else codec.ESME_ROK
            if status == codec.ESME_ROK:
                self.bound_as = pdu.command_id.name.lower()
            if smsc.answer_binds:
                await self.send(response_for(pdu, status))
        elif isinstance(pdu, SubmitSm):
            answer = smsc.submit_answer(pdu)
            if isinstance(answer, str):
                await self.send(attrs.evolve(response_for(pdu), message_id=answer))
            elif answer is not None:
                await self.send(response_for(pdu, answer))
        elif isinstance(pdu, EnquireLink):
            if smsc.answer_enquire_link:
                await self.send(response_for(pdu))
        elif isinstance(pdu, Unbind):
            await self.send(response_for(pdu))
            await self.close()


@attrs.define(eq=False)
class FakeSmsc:
    nursery: trio.Nursery
    links: list[PeerLink] = attrs.field(factory=list)
    bind_statuses: list[int] = attrs.field(factory=list)  # answers to the next binds
    answer_binds: bool = True
    answer_enquire_link: bool = True
    # Answers to the next submit_sm, in order; when empty, `default_answer` decides.
    submit_answers: list[SubmitAnswer] = attrs.field(factory=list)
    silent: bool = False
    connect_times: list[float] = attrs.field(factory=list)
    refuse_connections: bool = False
    _ids: itertools.count[int] = attrs.field(factory=lambda: itertools.count(1))
    _connected: trio.Event = attrs.field(factory=trio.Event)

    def submit_answer(self, pdu: SubmitSm) -> SubmitAnswer:
        if self.submit_answers:
            return self.submit_answers.pop(0)
        if self.silent:
            return None
        return str(next(self._ids))

    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        self.connect_times.append(trio.current_time())
        self._connected.set()
        self._connected = trio.Event()
        if self.refuse_connections:
            raise OSError(111, "Connection refused")
        ours, theirs = trio.testing.memory_stream_pair()
        link = PeerLink(self, theirs, len(self.links) + 1)
        self.links.append(link)
        self.nursery.start_soon(link.run)
        return ours

    async def wait_connects(self, count: int) -> None:
        """Wait until `count` connection attempts were made (refused ones included)."""
        while len(self.connect_times) < count:
            await self._connected.wait()

    async def wait_links(self, count: int) -> PeerLink:
        """Wait until `count` connections were made and the last one is bound."""
        while len(self.links) < count:
            await self._connected.wait()
        link = self.links[count - 1]
        while link.bound_as is None:
            await link.arrived.wait()
        return link

    def all_received(self, kind: type[PduT]) -> list[PduT]:
        return [pdu for link in self.links for pdu in link.of_type(kind)]


def fake_url(**params: object) -> str:
    query = "&".join(f"{name}={value}" for name, value in params.items())
    return f"smpp://smsgw:secret@smsc.test:2775?{query}"


NOW_MS = 1_700_000_000_000


@asynccontextmanager
async def carrier_with_fake(
    *,
    now_ms: Callable[[], int] | None = None,
    mo_buffer: int = MO_BUFFER,
    report_buffer: int = REPORT_BUFFER,
    prepare: Callable[[FakeSmsc], None] = lambda smsc: None,
    **params: object,
) -> AsyncIterator[tuple[SmppCarrier, FakeSmsc]]:
    """A running SmppCarrier (URL `params`) connecting to a FakeSmsc (set up by `prepare`
    before the carrier starts); cancelled on exit."""
    params.setdefault("enquire_link", 0)
    async with trio.open_nursery() as nursery:
        smsc = FakeSmsc(nursery)
        prepare(smsc)
        carrier = SmppCarrier(
            parse_smpp_url(fake_url(**params)),
            now_ms=now_ms or (lambda: NOW_MS),
            connect=smsc.connect,
            mo_buffer=mo_buffer,
            report_buffer=report_buffer,
        )
        await nursery.start(carrier.run)
        try:
            yield carrier, smsc
        finally:
            nursery.cancel_scope.cancel()
