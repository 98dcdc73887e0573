"""One SMPP link's writer and response timeouts (`smsgw.carriers.link.link.Link`), against
a stream the test controls: PDUs queued together go out in one write; a request still queued
when the link dies was never sent (NotSent), one handed to the stream may have been
(LinkLost); a stalled write loses the link; a cancelled request that was not written never
is; responses are matched and unanswered requests time out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import pytest
import trio
import trio.testing

from smsgw.carriers.link.link import Link, LinkLost, NotSent, ResponseTimeout
from smsgw.carriers.smpp import codec
from smsgw.carriers.smpp.codec import (
    EnquireLink,
    EnquireLinkResp,
    Pdu,
    SmppConnection,
    SubmitSm,
    SubmitSmResp,
    encode_pdu,
)
from smsgw.carriers.smpp.dialect import SmppDialect
from smsgw.carriers.smpp.settings import parse_smpp_url
from smsgw.sansio import NEED_DATA

WRITE_TIMEOUT = 5.0


class ControlledStream(trio.abc.Stream):
    """Records each send_all; while `blocked`, send_all waits (a stalled peer)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.blocked = False
        self.unblocked = trio.Event()
        self.closed = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.closed:
            raise trio.ClosedResourceError
        self.writes.append(bytes(data))
        if self.blocked:
            await self.unblocked.wait()
        await trio.lowlevel.checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        self.closed = True
        await trio.lowlevel.checkpoint()

    def pdus(self) -> list[Pdu]:
        peer = SmppConnection()
        for data in self.writes:
            peer.receive_data(data)
        out: list[Pdu] = []
        while (event := peer.next_event()) is not NEED_DATA:
            out.append(event)
        return out


@asynccontextmanager
async def running_link() -> AsyncIterator[tuple[Link[Pdu], ControlledStream]]:
    stream = ControlledStream()
    dialect = SmppDialect(parse_smpp_url("smpp://test@smsc.test"))
    link = Link(stream, "test link", dialect, write_timeout=WRITE_TIMEOUT)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(link.write_loop)
        nursery.start_soon(link.expire_loop)
        yield link, stream
        nursery.cancel_scope.cancel()


def submit(n: int) -> SubmitSm:
    return SubmitSm(destination_addr=f"8613800000{n:03d}", short_message=b"hi")


async def test_pdus_queued_during_a_write_go_out_in_the_next_one(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with running_link() as (link, stream):
        answers: list[Pdu] = []

        async def ask(n: int) -> None:
            answers.append(await link.request(submit(n), 30))

        async with trio.open_nursery() as nursery:
            stream.blocked = True
            link.send_nowait(EnquireLinkResp(sequence_number=99))
            await trio.testing.wait_all_tasks_blocked()  # the writer is in send_all
            for n in range(10):
                nursery.start_soon(ask, n)
            link.send_nowait(EnquireLinkResp(sequence_number=100))
            await trio.testing.wait_all_tasks_blocked()
            assert len(stream.writes) == 1
            stream.blocked = False
            stream.unblocked.set()
            await trio.testing.wait_all_tasks_blocked()
            assert len(stream.writes) == 2  # ten submit_sm and an answer, one write
            sent = stream.pdus()
            assert len(sent) == 12
            for pdu in sent:
                if isinstance(pdu, SubmitSm):
                    link.answer(SubmitSmResp(sequence_number=pdu.sequence_number, message_id="x"))
        assert len(answers) == 10
        assert all(isinstance(answer, SubmitSmResp) for answer in answers)
        assert link.outstanding == 0


async def test_encoded_request_gets_a_fresh_sequence_number(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with running_link() as (link, stream):
        data = encode_pdu(submit(1))  # sequence 0 as encoded

        async def answer_when_sent() -> None:
            await trio.testing.wait_all_tasks_blocked()
            (sent,) = stream.pdus()
            assert sent.sequence_number == 1
            link.answer(SubmitSmResp(sequence_number=1, message_id="abc"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(answer_when_sent)
            response = await link.request_encoded(data, 30)
        assert isinstance(response, SubmitSmResp) and response.message_id == "abc"


async def test_loss_fails_written_requests_as_lost_and_queued_ones_as_not_sent(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with running_link() as (link, stream):
        stream.blocked = True
        failures: dict[int, BaseException] = {}

        async def ask(n: int) -> None:
            try:
                await link.request(submit(n), 30)
            except (NotSent, LinkLost) as error:
                failures[n] = error

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, 1)
            await trio.testing.wait_all_tasks_blocked()  # 1 is in the (stalled) write
            nursery.start_soon(ask, 2)
            await trio.testing.wait_all_tasks_blocked()  # 2 waits in the queue
            link.lose("test")
        assert type(failures[1]) is LinkLost
        assert type(failures[2]) is NotSent
        assert len(stream.pdus()) == 1
        with pytest.raises(NotSent):
            await link.request(submit(3), 30)


async def test_a_stalled_write_loses_the_link(autojump_clock: trio.abc.Clock) -> None:
    async with running_link() as (link, stream):
        stream.blocked = True
        with pytest.raises(LinkLost):
            await link.request(submit(1), 60)
        assert trio.current_time() == pytest.approx(WRITE_TIMEOUT)
        assert link.lost is not None and "stalled" in link.lost


async def test_a_request_cancelled_before_its_write_is_never_written(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with running_link() as (link, stream):
        stream.blocked = True
        async with trio.open_nursery() as nursery:
            nursery.start_soon(link.request, submit(1), 30)
            await trio.testing.wait_all_tasks_blocked()  # 1 is being written
            with trio.CancelScope() as scope:
                scope.cancel()
                await link.request(submit(2), 30)  # queued, then cancelled
            assert link.outstanding == 1
            stream.blocked = False
            stream.unblocked.set()
            await trio.testing.wait_all_tasks_blocked()
            assert [pdu.sequence_number for pdu in stream.pdus()] == [1]
            nursery.cancel_scope.cancel()


async def test_unanswered_requests_time_out_each_after_its_own_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with running_link() as (link, _):
        ended: dict[str, float] = {}

        async def ask(name: str, timeout: float) -> None:
            with pytest.raises(ResponseTimeout) as caught:
                await link.request(EnquireLink(), timeout)
            assert f"within {timeout:g} s" in str(caught.value)
            ended[name] = trio.current_time()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, "long", 30)
            await trio.sleep(1)
            nursery.start_soon(ask, "short", 5)  # later, yet due first
        assert ended["short"] == pytest.approx(6)
        assert ended["long"] == pytest.approx(30)
        assert link.outstanding == 0
        assert link.alive  # a timeout fails the request, not the link


async def test_answers_after_loss_are_ignored_and_late_answers_find_nobody(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with running_link() as (link, _):
        with pytest.raises(ResponseTimeout):
            await link.request(EnquireLink(), 1)
        assert link.answer(EnquireLinkResp(sequence_number=1)) is False
        link.lose("gone")
        link.send_nowait(EnquireLinkResp(sequence_number=5))  # dropped quietly
        await link.flush()


def test_number_request_writes_a_fresh_sequence_number() -> None:
    conn = SmppConnection()
    data = encode_pdu(submit(1))
    assert conn.number_request(data) == (1, encode_pdu(attrs.evolve(submit(1), sequence_number=1)))
    sequence, again = conn.number_request(data)
    assert (sequence, codec.decode_pdu(again)) == (2, attrs.evolve(submit(1), sequence_number=2))
    with pytest.raises(ValueError, match="response"):
        conn.number_request(encode_pdu(SubmitSmResp(sequence_number=1)))
    with pytest.raises(ValueError, match="header"):
        conn.number_request(b"\x00" * 8)
