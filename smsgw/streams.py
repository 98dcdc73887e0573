"""Reading Trio streams: the one place where bytes are fed to a sans-IO frame decoder, and
the draining of unread input before a close."""

from __future__ import annotations

from typing import Final, overload

import trio

from smsgw.protocol.framing import (
    ConnectionClosed,
    NeedData,
    Request,
    RequestDecoder,
    Response,
    ResponseDecoder,
)

RECEIVE_CHUNK: Final = 65536


@overload
async def receive_event(
    stream: trio.abc.ReceiveStream, decoder: RequestDecoder
) -> Request | ConnectionClosed: ...


@overload
async def receive_event(
    stream: trio.abc.ReceiveStream, decoder: ResponseDecoder
) -> Response | ConnectionClosed: ...


async def receive_event(
    stream: trio.abc.ReceiveStream, decoder: RequestDecoder | ResponseDecoder
) -> Request | Response | ConnectionClosed:
    """The decoder's next frame (or the peer's clean close), reading from the stream only
    while the decoder needs data."""
    while True:
        event = decoder.next_event()
        if not isinstance(event, NeedData):
            return event
        decoder.receive_data(await stream.receive_some(RECEIVE_CHUNK))


async def discard_input(stream: trio.abc.ReceiveStream, max_bytes: int) -> None:
    """Read and drop what the peer still sends until it closes (or `max_bytes`): closing a
    socket with unread input resets the connection, which can destroy an answer still in
    flight. Call it under a deadline."""
    drained = 0
    while drained < max_bytes and (chunk := await stream.receive_some(RECEIVE_CHUNK)):
        drained += len(chunk)
