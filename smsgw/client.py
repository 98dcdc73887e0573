"""The merchant side as a library: submit SMS to a gateway (async or blocking).

from smsgw.client import submit_sync
reply = submit_sync("127.0.0.1:9000", "demo", "demo-secret",
                    [{"phone": "8613800138000", "message": "hi", "msgid": "m1", "msgtype": 1}])
assert reply.status == "0"
"""

from __future__ import annotations

import functools
import json
import ssl
from collections.abc import Mapping, Sequence
from typing import Any

import trio

from smsgw.config import Endpoint, parse_endpoint
from smsgw.protocol.framing import (
    ConnectionClosed,
    LengthStyle,
    NeedData,
    ProtocolError,
    Response,
    ResponseDecoder,
    encode_request,
)
from smsgw.protocol.messages import BodyError, SubmitResponse, parse_submit_response

MAX_RESPONSE = 16 * 1024 * 1024


class ClientError(Exception):
    """The gateway could not be reached or did not answer with a proper frame."""


def _endpoint(address: str | Endpoint) -> Endpoint:
    if isinstance(address, Endpoint):
        return address
    try:
        return parse_endpoint(address)
    except ValueError as exc:
        raise ClientError(str(exc)) from None


async def exchange(
    address: str | Endpoint,
    command: str,
    appid: str,
    secret: str,
    body: bytes,
    *,
    length_style: LengthStyle = LengthStyle.DECIMAL,
    timeout: float = 30.0,
    ssl_context: ssl.SSLContext | None = None,
) -> Response:
    """Send one request frame on a new connection and read the response frame."""
    endpoint = _endpoint(address)
    frame = encode_request(command, appid, secret, body, length_style)
    decoder = ResponseDecoder(max_body=MAX_RESPONSE)
    try:
        with trio.fail_after(timeout):
            stream: trio.abc.Stream = await trio.open_tcp_stream(endpoint.host, endpoint.port)
            if ssl_context is not None:
                stream = trio.SSLStream(stream, ssl_context, server_hostname=endpoint.host)
            async with stream:
                await stream.send_all(frame)
                while True:
                    event = decoder.next_event()
                    if isinstance(event, Response):
                        return event
                    if isinstance(event, ConnectionClosed):
                        raise ClientError("the gateway closed the connection without answering")
                    assert isinstance(event, NeedData)
                    decoder.receive_data(await stream.receive_some(65536))
    except trio.TooSlowError:
        raise ClientError(f"no answer from {endpoint} within {timeout:g}s") from None
    except (OSError, trio.BrokenResourceError) as exc:
        raise ClientError(f"cannot talk to {endpoint}: {exc}") from None
    except ProtocolError as exc:
        raise ClientError(f"bad response frame: {exc}") from None


async def submit(
    address: str | Endpoint,
    appid: str,
    secret: str,
    items: Sequence[Mapping[str, Any]] | Mapping[str, Any] | bytes,
    *,
    length_style: LengthStyle = LengthStyle.DECIMAL,
    timeout: float = 30.0,
    ssl_context: ssl.SSLContext | None = None,
) -> SubmitResponse:
    """A001: submit items (or a ready JSON body); returns the parsed B001."""
    if isinstance(items, bytes):
        body = items
    else:
        body = json.dumps(items, ensure_ascii=False, separators=(",", ":")).encode()
    response = await exchange(
        address,
        "A001",
        appid,
        secret,
        body,
        length_style=length_style,
        timeout=timeout,
        ssl_context=ssl_context,
    )
    try:
        return parse_submit_response(response.body)
    except BodyError as exc:
        raise ClientError(f"bad B001 body: {exc}") from None


def submit_sync(
    address: str | Endpoint,
    appid: str,
    secret: str,
    items: Sequence[Mapping[str, Any]] | Mapping[str, Any] | bytes,
    **options: Any,
) -> SubmitResponse:
    """`submit()` for code that is not async (one Trio run per call)."""
    return trio.run(functools.partial(submit, address, appid, secret, items, **options))
