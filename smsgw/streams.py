"""The one place where bytes from a Trio stream are fed to a sans-IO frame decoder."""

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
