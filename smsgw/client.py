"""The merchant side as a library: submit SMS to a gateway (async or blocking), and receive
its receipt pushes (`ReceiptServer`).

from smsgw.client import submit_sync
reply = submit_sync("127.0.0.1:9000", "demo", "demo-secret",
                    [{"phone": "8613800138000", "message": "hi", "msgid": "m1", "msgtype": 1}])
assert reply.status == "0"

def on_items(kind, items):  # kind "A002" | "A003"; store them, then return
    ...
server = ReceiptServer(on_items)
port = await nursery.start(server.run, "0.0.0.0", 9100)
"""

from __future__ import annotations

import functools
import hmac
import inspect
import json
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final

import trio

from smsgw.config import Endpoint, parse_endpoint
from smsgw.protocol.framing import (
    ConnectionClosed,
    LengthStyle,
    ProtocolError,
    RemoteProtocolError,
    Request,
    RequestDecoder,
    Response,
    ResponseDecoder,
    canonical_credential,
    encode_request,
    encode_response,
    response_command,
)
from smsgw.protocol.messages import (
    Ack,
    BodyError,
    ReceiptItem,
    StatusReportItem,
    SubmitResponse,
    encode_json,
    parse_receipts,
    parse_status_reports,
    parse_submit_response,
)
from smsgw.protocol.status import Status
from smsgw.streams import RECEIVE_CHUNK, receive_event

log = logging.getLogger("smsgw.client")

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


OpenStream = Callable[[str, int], Awaitable[trio.abc.Stream]]


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
    open_stream: OpenStream | None = None,
) -> Response:
    """Send one request frame on a new connection and read the response frame.

    Everything, connecting included, happens within `timeout`. `open_stream(host, port)`
    replaces `trio.open_tcp_stream` (tests use in-memory streams). Raises ClientError, or
    LocalProtocolError when the frame cannot be encoded.
    """
    endpoint = _endpoint(address)
    frame = encode_request(command, appid, secret, body, length_style)
    decoder = ResponseDecoder(max_body=MAX_RESPONSE)
    connect = open_stream or trio.open_tcp_stream
    try:
        with trio.fail_after(timeout):
            stream: trio.abc.Stream = await connect(endpoint.host, endpoint.port)
            if ssl_context is not None:
                stream = trio.SSLStream(stream, ssl_context, server_hostname=endpoint.host)
            async with stream:
                await stream.send_all(frame)
                event = await receive_event(stream, decoder)
                if isinstance(event, ConnectionClosed):
                    raise ClientError("the gateway closed the connection without answering")
                return event
    except trio.TooSlowError:
        raise ClientError(f"no answer from {endpoint} within {timeout:g}s") from None
    except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
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


# --- receiving pushes (the merchant's side of A002 / A003) ---

PushItem = ReceiptItem | StatusReportItem
ReceiptHandler = Callable[[str, list[PushItem]], Awaitable[None] | None]

RECEIPT = "A002"
STATUS_REPORT = "A003"
DEFAULT_MAX_PUSH_BODY: Final = 1_048_576
# A silent server keeps the connection open (never answering) at most this long.
SILENT_HOLD_S: Final = 3600.0


class ReceiptServer:
    """Receives the gateway's pushes: one request frame per connection, read under a
    deadline; the items go to `handler(kind, items)` (sync or async; kind "A002" or "A003"),
    then the push is acknowledged with ``{"status": answer}`` and the connection closed.

    Answer only once the items are safe: when the handler raises, the push is answered
    9999 and the gateway sends it again. A bad frame or body gets its error status (1001,
    1002, 1003, 1004; 1005 when `credentials` (appid, secret) are given and do not match)
    and the handler is not called. `silent=True` never answers (to test a gateway's push
    timeout): the handler still gets the items.
    """

    def __init__(
        self,
        handler: ReceiptHandler,
        *,
        answer: str = "0",
        silent: bool = False,
        read_timeout: float = 10.0,
        max_body: int = DEFAULT_MAX_PUSH_BODY,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        self.handler = handler
        self.answer = answer
        self.silent = silent
        self.read_timeout = read_timeout
        self.max_body = max_body
        self._credentials = (
            None
            if credentials is None
            else (
                canonical_credential(credentials[0]).encode(),
                canonical_credential(credentials[1]).encode(),
            )
        )
        self.pushes_received = 0  # valid pushes handed to the handler

    async def run(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen until cancelled; `task_status.started(bound_port)`."""
        listeners = await trio.open_tcp_listeners(port, host=host)
        bound = int(listeners[0].socket.getsockname()[1])
        task_status.started(bound)
        await trio.serve_listeners(self.handle, listeners)

    async def handle(self, stream: trio.abc.Stream) -> None:
        """Serve one connection (any stream: tests hand in in-memory ones). Never raises
        but for cancellation."""
        try:
            await self._serve(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.debug("push connection broke: %s", exc)
        except Exception:
            log.exception("receipt server: connection handler failed")
        finally:
            with trio.move_on_after(1) as cleanup:
                cleanup.shield = True
                await stream.aclose()

    async def _serve(self, stream: trio.abc.Stream) -> None:
        decoder = RequestDecoder(max_body=self.max_body)
        try:
            with trio.fail_after(self.read_timeout):
                event = await receive_event(stream, decoder)
        except trio.TooSlowError:
            log.info("receipt server: no whole frame within %gs", self.read_timeout)
            return
        except RemoteProtocolError as exc:
            log.warning("receipt server: bad frame: %s", exc)
            await self._respond(stream, exc.command, exc.length_style, exc.status, str(exc))
            return
        if isinstance(event, ConnectionClosed):
            return
        status, error = await self._process(event)
        command = response_command(event.command)
        if self.silent:
            await _drain_until_closed(stream)
            return
        await self._respond(stream, command, event.length_style, status, error)

    async def _process(self, request: Request) -> tuple[str, str | None]:
        if self._credentials is not None:
            appid = canonical_credential(request.appid).encode()
            secret = canonical_credential(request.appsecret).encode()
            # Both compared every time, so neither mismatch answers faster.
            appid_ok = hmac.compare_digest(appid, self._credentials[0])
            secret_ok = hmac.compare_digest(secret, self._credentials[1])
            if not (appid_ok and secret_ok):
                return Status.AUTH_FAILED, "authentication failed"
        items: list[PushItem]
        try:
            if request.command == RECEIPT:
                items = list(parse_receipts(request.body))
            elif request.command == STATUS_REPORT:
                items = list(parse_status_reports(request.body))
            else:
                return Status.UNKNOWN_COMMAND, f"unknown command {request.command!r}"
        except BodyError as exc:
            return exc.status, str(exc)
        try:
            result = self.handler(request.command, items)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("receipt handler failed on a %s push", request.command)
            return Status.INTERNAL_ERROR, "the receiver failed to store the items"
        self.pushes_received += 1
        return self.answer, None

    async def _respond(
        self,
        stream: trio.abc.Stream,
        command: str,
        style: LengthStyle,
        status: str,
        error: str | None,
    ) -> None:
        frame = encode_response(command, encode_json(Ack(str(status), error)), style)
        with trio.fail_after(self.read_timeout):
            await stream.send_all(frame)


async def _drain_until_closed(stream: trio.abc.Stream) -> None:
    """Read and drop until the peer closes (or the hold time ends)."""
    with trio.move_on_after(SILENT_HOLD_S):
        while await stream.receive_some(RECEIVE_CHUNK):
            pass
