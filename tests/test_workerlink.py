"""The supervisor–worker link: JSON lines over a socket pair, fed in pieces."""

from __future__ import annotations

import socket

import pytest
import trio

from smsgw.observe import Check, counter, shared
from smsgw.worker import NUDGE_INTERVAL_S, Nudges
from smsgw.workerlink import Link, LinkClosed, decode_report, encode_report


def _pair() -> tuple[Link, socket.socket]:
    ours, theirs = socket.socketpair()
    return Link(ours), theirs


async def test_messages_arrive_whole_whatever_the_pieces() -> None:
    link, raw = _pair()
    with raw:
        data = b'{"ready": ["127.0.0.1:9000"]}\n{"collect": 7}\n'
        for byte in data:
            raw.send(bytes([byte]))
        assert await link.receive() == {"ready": ["127.0.0.1:9000"]}
        assert await link.receive() == {"collect": 7}
        raw.send(b"[1, 2]\n")
        with pytest.raises(LinkClosed, match="not a JSON object"):
            await link.receive()
    with pytest.raises(LinkClosed, match="closed"):
        await link.receive()
    await link.aclose()


async def test_a_report_survives_the_trip() -> None:
    left, right = socket.socketpair()
    sender, receiver = Link(left), Link(right)
    samples = [counter("requests", "r", 3, status="0"), shared(counter("rows", "n", 5))]
    checks = [Check("carrier", False, "0/1 binds up", any_worker=True)]
    await sender.send(encode_report(4, samples, checks))
    message = await receiver.receive()
    assert message["seq"] == 4
    assert decode_report(message) == (samples, checks)
    await sender.aclose()
    await receiver.aclose()


async def test_what_a_worker_stored_is_told_in_one_message_at_a_time(
    autojump_clock: trio.abc.Clock,
) -> None:
    link, raw = _pair()
    now = 10_000
    nudges = Nudges(link, lambda: now)
    async with trio.open_nursery() as nursery:
        nudges.pushes("shop")
        nudges.stored(now + 500)
        nudges.pushes("shop")
        nudges.stored(now)  # the earliest is what counts
        nudges.pushes("bank")
        nursery.start_soon(nudges.run)
        reader = Link(raw)
        assert await reader.receive() == {"nudge": {"pushes": ["bank", "shop"], "due_ms": now}}
        nudges.stored(now + 86_400_000)  # tomorrow: the others will look by then anyway
        nudges.stored(now + 900)
        nudges.stored(now + 600)
        started = trio.current_time()
        assert await reader.receive() == {"nudge": {"due_ms": now + 600}}
        assert trio.current_time() - started >= NUDGE_INTERVAL_S
        nursery.cancel_scope.cancel()
    await link.aclose()
