"""`smsgw.client.ReceiptServer` (the merchant's receiver of A002/A003) and `smsgw listen`."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smsgw.client import ReceiptServer, exchange
from smsgw.protocol.framing import (
    ConnectionClosed,
    LengthStyle,
    Response,
    ResponseDecoder,
    encode_request,
)
from smsgw.protocol.messages import ReceiptItem, StatusReportItem

APPID = "shop1"
SECRET = "s3cret"
RECEIPT: dict[str, Any] = {
    "msgid": "m1",
    "phone": "8613800138000",
    "status": "1",
    "sendtime": 17,
    "stat": "DELIVRD",
}
STEP: dict[str, Any] = {**RECEIPT, "attempt": 2, "carrier_msgid": "c-9", "error": "x"}


class Collector:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[ReceiptItem | StatusReportItem]]] = []

    def __call__(self, kind: str, items: list[ReceiptItem | StatusReportItem]) -> None:
        self.calls.append((kind, items))


def push_frame(
    body: Any,
    *,
    command: str = "A002",
    style: LengthStyle = LengthStyle.DECIMAL,
    appid: str = APPID,
    secret: str = SECRET,
) -> bytes:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return encode_request(command, appid, secret, raw, style)


async def converse(
    server: ReceiptServer,
    data: bytes,
    *,
    chunks: list[bytes] | None = None,
    send_eof: bool = False,
) -> bytes:
    """Send bytes to `server.handle` over an in-memory stream; all it answers until close."""
    client, remote = trio.testing.memory_stream_pair()
    received = bytearray()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.handle, remote)
        for piece in chunks if chunks is not None else [data]:
            await client.send_all(piece)
            await trio.lowlevel.checkpoint()
        if send_eof:
            await client.send_eof()
        while chunk := await client.receive_some(65536):
            received += chunk
        await client.aclose()
    return bytes(received)


def answer_of(data: bytes) -> tuple[Response, dict[str, Any]]:
    decoder = ResponseDecoder(max_body=1 << 20)
    decoder.receive_data(data)
    decoder.receive_data(b"")
    event = decoder.next_event()
    assert isinstance(event, Response), data
    assert isinstance(decoder.next_event(), ConnectionClosed)  # exactly one frame
    body = json.loads(event.body)
    assert isinstance(body, dict)
    return event, body


# --- valid pushes -----------------------------------------------------------------------------


async def test_a002_items_reach_the_handler_and_are_acknowledged() -> None:
    collected = Collector()
    server = ReceiptServer(collected)
    response, body = answer_of(await converse(server, push_frame([RECEIPT, RECEIPT])))
    assert (response.command, body) == ("B002", {"status": "0"})
    assert collected.calls == [("A002", [ReceiptItem(**RECEIPT), ReceiptItem(**RECEIPT)])]
    assert server.pushes_received == 1


async def test_a003_items_and_an_async_handler() -> None:
    got: list[tuple[str, list[ReceiptItem | StatusReportItem]]] = []

    async def handler(kind: str, items: list[ReceiptItem | StatusReportItem]) -> None:
        await trio.lowlevel.checkpoint()
        got.append((kind, items))

    response, body = answer_of(
        await converse(ReceiptServer(handler), push_frame([STEP], command="A003"))
    )
    assert (response.command, body) == ("B003", {"status": "0"})
    assert got == [("A003", [StatusReportItem(**STEP)])]


async def test_the_answer_is_configurable_and_keeps_the_length_style() -> None:
    server = ReceiptServer(Collector(), answer="1")
    response, body = answer_of(
        await converse(server, push_frame([RECEIPT], style=LengthStyle.BINARY))
    )
    assert response.length_style is LengthStyle.BINARY
    assert body == {"status": "1"}


async def test_a_frame_fed_one_byte_at_a_time_or_in_random_splits() -> None:
    frame = push_frame([RECEIPT] * 5)
    rng = random.Random(4)
    cuts = sorted(rng.sample(range(1, len(frame)), 12))
    splits = [frame[a:b] for a, b in zip([0, *cuts], [*cuts, len(frame)], strict=True)]
    for chunks in ([bytes([byte]) for byte in frame], splits):
        collected = Collector()
        _, body = answer_of(await converse(ReceiptServer(collected), b"", chunks=chunks))
        assert body == {"status": "0"}
        assert len(collected.calls[0][1]) == 5


async def test_credentials_are_checked_when_given() -> None:
    collected = Collector()
    server = ReceiptServer(collected, credentials=(APPID, SECRET))
    _, good = answer_of(await converse(server, push_frame([RECEIPT], appid="0000000000shop1")))
    _, bad = answer_of(await converse(server, push_frame([RECEIPT], secret="wrong")))
    assert good == {"status": "0"}
    assert bad["status"] == "1005"
    assert len(collected.calls) == 1


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "command", "status"),
    [
        (b"hello there, this is not a frame", "B000", "1001"),
        (b"00001xA002", "B000", "1001"),  # a length that is not six digits
        (push_frame(b"[" + b"1" * 2_000_000 + b"]", style=LengthStyle.BINARY), "B002", "1002"),
        (push_frame(b"{not json"), "B002", "1003"),
        (push_frame(b"\xff\xfe"), "B002", "1003"),
        (push_frame([{"msgid": "m1"}]), "B002", "1003"),  # fields missing
        (push_frame([{**RECEIPT, "status": "7"}]), "B002", "1003"),
        (push_frame([STEP], command="A003")[:-3], "B003", "1001"),  # cut short, then EOF
        (push_frame([RECEIPT], command="A001"), "B001", "1004"),
    ],
)
async def test_bad_frames_get_the_right_status_and_never_reach_the_handler(
    data: bytes, command: str, status: str
) -> None:
    collected = Collector()
    response, body = answer_of(await converse(ReceiptServer(collected), data, send_eof=True))
    assert (response.command, body["status"]) == (command, status)
    assert body.get("error")
    assert collected.calls == []


async def test_a_failing_handler_answers_9999_so_the_gateway_sends_again() -> None:
    def broken(kind: str, items: list[ReceiptItem | StatusReportItem]) -> None:
        raise OSError("disk full")

    _, body = answer_of(await converse(ReceiptServer(broken), push_frame([RECEIPT])))
    assert body["status"] == "9999"


async def test_a_client_that_sends_nothing_is_cut_off_after_the_read_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    client, remote = trio.testing.memory_stream_pair()
    server = ReceiptServer(Collector(), read_timeout=10)
    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.handle, remote)
        await client.send_all(push_frame([RECEIPT])[:20])
        assert await client.receive_some(100) == b""  # closed, no answer
    assert 10 <= trio.current_time() - started < 11


async def test_a_silent_server_takes_the_items_but_never_answers(
    autojump_clock: trio.abc.Clock,
) -> None:
    collected = Collector()
    client, remote = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ReceiptServer(collected, silent=True).handle, remote)
        await client.send_all(push_frame([RECEIPT]))
        with trio.move_on_after(300) as waited:
            await client.receive_some(100)
        assert waited.cancelled_caught
        await client.aclose()  # the gateway gives up: the server lets go too
    assert len(collected.calls) == 1


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.one_of(
        st.binary(max_size=300),
        st.builds(
            lambda body, cut: push_frame(body)[:cut],
            st.binary(max_size=200),
            st.integers(min_value=0, max_value=300),
        ),
    )
)
def test_fuzzed_input_never_crashes_and_answers_at_most_one_frame(data: bytes) -> None:
    async def scenario() -> bytes:
        with trio.fail_after(5):
            return await converse(ReceiptServer(Collector(), read_timeout=1), data, send_eof=True)

    answer = trio.run(scenario)
    decoder = ResponseDecoder(max_body=1 << 20)
    decoder.receive_data(answer)
    decoder.receive_data(b"")
    event = decoder.next_event()
    if answer:
        assert isinstance(event, Response)
        assert json.loads(event.body)["status"] in {"0", "1001", "1002", "1003", "1004"}
        assert isinstance(decoder.next_event(), ConnectionClosed)
    else:
        assert isinstance(event, ConnectionClosed)


# --- over TCP ---------------------------------------------------------------------------------


async def test_over_tcp_with_the_client_exchange() -> None:
    collected = Collector()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(ReceiptServer(collected).run)
            response = await exchange(
                f"127.0.0.1:{port}", "A002", APPID, SECRET, json.dumps([RECEIPT]).encode()
            )
            nursery.cancel_scope.cancel()
    assert (response.command, json.loads(response.body)) == ("B002", {"status": "0"})
    assert collected.calls == [("A002", [ReceiptItem(**RECEIPT)])]


# --- smsgw listen -----------------------------------------------------------------------------


async def start_listen(*args: str) -> tuple[trio.Process, int]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "smsgw", "listen", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert process.stderr is not None
    banner = b""
    with trio.fail_after(20):
        while b"\n" not in banner:
            chunk = await process.stderr.receive_some(4096)
            assert chunk, "smsgw listen exited before listening"
            banner += chunk
    port = int(banner.split(b"\n")[0].rsplit(b":", 1)[1])
    return process, port


async def read_lines(process: trio.Process, count: int) -> list[dict[str, Any]]:
    assert process.stdout is not None
    data = b""
    with trio.fail_after(10):
        while data.count(b"\n") < count:
            chunk = await process.stdout.receive_some(4096)
            assert chunk, "stdout closed"
            data += chunk
    return [json.loads(line) for line in data.splitlines()]


async def test_listen_prints_json_lines_answers_and_stops_on_sigterm() -> None:
    process, port = await start_listen()
    try:
        with trio.fail_after(20):
            first = await exchange(
                f"127.0.0.1:{port}", "A002", APPID, SECRET, json.dumps([RECEIPT] * 2).encode()
            )
            second = await exchange(
                f"127.0.0.1:{port}", "A003", APPID, SECRET, json.dumps([STEP]).encode()
            )
            lines = await read_lines(process, 3)
            process.send_signal(signal.SIGTERM)
            code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert json.loads(first.body) == json.loads(second.body) == {"status": "0"}
    assert lines == [{"kind": "A002", **RECEIPT}] * 2 + [{"kind": "A003", **STEP}]
    assert code == 0


async def test_listen_answers_what_it_is_told_and_stops_on_sigint() -> None:
    process, port = await start_listen("--answer", "1")
    try:
        with trio.fail_after(20):
            reply = await exchange(
                f"127.0.0.1:{port}", "A002", APPID, SECRET, json.dumps([RECEIPT]).encode()
            )
            await read_lines(process, 1)
            process.send_signal(signal.SIGINT)
            code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert json.loads(reply.body) == {"status": "1"}
    assert code == 0


async def test_listen_refuses_a_port_in_use() -> None:
    with trio.socket.socket() as taken:
        await taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with trio.fail_after(20):
            done = await trio.run_process(
                [sys.executable, "-m", "smsgw", "listen", "--port", str(port)],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
    assert done.returncode == 2
    assert b"cannot listen" in done.stderr
