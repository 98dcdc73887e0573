"""The accept loop under the merchant listener: real loopback sockets, and accept's errors."""

from __future__ import annotations

import errno
import logging
from typing import cast

import pytest
import trio
import trio.testing

from smsgw.acceptor import CAPACITY_PAUSE_S, _accept_loop, serve_sockets


async def test_each_connection_gets_its_handler_and_is_closed_after_it() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    seen: list[bytes] = []

    async def handler(stream: trio.SocketStream) -> None:
        seen.append(await stream.receive_some(100))
        await stream.send_all(b"answer")
        # Returns without closing: the acceptor closes the socket.

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_sockets, handler, listeners, nursery)
        for n in range(3):
            client = await trio.open_tcp_stream("127.0.0.1", port)
            await client.send_all(b"request %d" % n)
            received = b""
            with trio.fail_after(10):
                while chunk := await client.receive_some(100):  # to the server's close
                    received += chunk
            assert received == b"answer"
            await client.aclose()
        nursery.cancel_scope.cancel()
    assert seen == [b"request 0", b"request 1", b"request 2"]


class ScriptedListener:
    """A listening socket whose accept() fails as scripted, then reports itself closed."""

    def __init__(self, errors: list[int]) -> None:
        self.errors = errors

    async def accept(self) -> tuple[trio.socket.SocketType, object]:
        await trio.lowlevel.checkpoint()
        if self.errors:
            code = self.errors.pop(0)
            raise OSError(code, "scripted")
        raise trio.ClosedResourceError


async def run_scripted(errors: list[int]) -> None:
    async def handler(stream: trio.SocketStream) -> None:
        raise AssertionError("no connection was accepted")

    async with trio.open_nursery() as nursery:
        listening = cast(trio.socket.SocketType, ScriptedListener(errors))
        await _accept_loop(listening, handler, nursery)


async def test_out_of_descriptors_is_logged_and_accept_tried_again_after_a_pause(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    started = trio.current_time()
    with caplog.at_level(logging.ERROR, logger="smsgw.acceptor"):
        await run_scripted([errno.EMFILE, errno.ENFILE])
    assert trio.current_time() - started == pytest.approx(2 * CAPACITY_PAUSE_S)
    assert [r.getMessage().split(" ")[2] for r in caplog.records] == ["EMFILE", "ENFILE"]


async def test_a_connection_lost_before_its_accept_is_passed_over(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    started = trio.current_time()
    await run_scripted([errno.ECONNABORTED, errno.EPROTO, errno.ECONNRESET])
    assert trio.current_time() == started  # no pause
    assert not caplog.records


async def test_another_accept_error_is_raised() -> None:
    with pytest.RaisesGroup(pytest.RaisesExc(OSError, check=lambda exc: exc.errno == errno.EINVAL)):
        await run_scripted([errno.EINVAL])


async def test_a_closed_listener_ends_the_loop() -> None:
    await run_scripted([errno.EBADF])
    await run_scripted([])
