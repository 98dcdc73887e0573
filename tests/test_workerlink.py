"""The supervisor–worker link: JSON lines over a socket pair, fed in pieces."""

from __future__ import annotations

import socket

import pytest
import trio

from smsgw.observe import Check, counter, shared
from smsgw.worker import PushesElsewhere
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


async def test_new_receipts_are_named_to_the_supervisor_together() -> None:
    link, raw = _pair()
    pushes = PushesElsewhere(link)
    async with trio.open_nursery() as nursery:
        pushes.wake("shop")
        pushes.wake("shop")
        pushes.wake("bank")
        nursery.start_soon(pushes.run)
        reader = Link(raw)
        assert await reader.receive() == {"wake_pushes": ["bank", "shop"]}
        pushes.wake("shop")
        assert await reader.receive() == {"wake_pushes": ["shop"]}
        nursery.cancel_scope.cancel()
    await link.aclose()
