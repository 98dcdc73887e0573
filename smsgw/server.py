"""The merchant listener: TCP (optionally TLS), one task per connection, each under deadlines.

Every connection handler catches its own errors: `serve_listeners` would let an escaping one
crash the whole server. A request's items are answered `0` only after the store's commit.
"""

from __future__ import annotations

import collections
import contextlib
import hmac
import logging
import ssl
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import trio

from smsgw.clock import WallClock
from smsgw.config import AppConfig, Config, ConfigError, Endpoint, open_listeners
from smsgw.histogram import Histogram
from smsgw.observe import Check, Sample, counter, gauge, histogram
from smsgw.protocol.framing import (
    ConnectionClosed,
    LengthStyle,
    RemoteProtocolError,
    Request,
    RequestDecoder,
    canonical_credential,
    encode_response,
    response_command,
)
from smsgw.protocol.messages import (
    BodyError,
    Delivery,
    SubmitLimits,
    SubmitResponse,
    encode_json,
    error_response,
    parse_submit,
    submit_response,
)
from smsgw.protocol.status import Status
from smsgw.ratelimit import FailureLimiter, TokenBucket
from smsgw.store.base import NewMessage, Store, StoreClosed
from smsgw.streams import RECEIVE_CHUNK, discard_input, receive_event

log = logging.getLogger("smsgw.server")

SUBMIT = "A001"
# A secret to compare against when the appid is unknown, so both failures take the same time.
_NO_SECRET = canonical_credential("\x7f" * 15).encode()


@attrs.frozen
class Outcome:
    """What a request came to: the response to send and the facts for its log line."""

    response: SubmitResponse
    app: AppConfig | None = None
    items: int = 0


class Server:
    def __init__(self, config: Config, store: Store, clock: WallClock | None = None) -> None:
        self.config = config
        self.store = store
        self._clock = clock
        self._apps = config.app_by_key()
        self._limits = SubmitLimits(
            max_batch=config.max_batch,
            max_segments=config.max_segments,
            max_schedule_ms=int(config.max_schedule * 1000),
        )
        self._auth_failures = FailureLimiter(limit=config.auth_fail_limit)
        self._buckets = {app.appid: TokenBucket(app.tps) for app in config.apps if app.tps}
        self._ssl_context = _ssl_context(config) if config.tls_cert else None
        # Called after each commit of new messages with the earliest time (epoch ms) one of
        # them is due (the pipeline's dispatcher wakes up if it would sleep past it).
        self.on_stored: Callable[[int], None] = lambda due_ms: None
        self._accept_scope: trio.CancelScope | None = None
        self._stopping = False
        self.active_connections = 0
        self.requests_served = 0
        # For /metrics: answers by status, connections refused busy, new messages stored.
        self.responses: collections.Counter[str] = collections.Counter()
        self.refused_busy = 0
        self.messages_accepted = 0
        # From the start of a request's read to its answer written (on a keep-alive
        # connection the read starts with the wait for the next request).
        self.request_seconds = Histogram()

    @property
    def clock(self) -> WallClock:
        if self._clock is None:
            self._clock = WallClock()
        return self._clock

    async def run(
        self, *, task_status: trio.TaskStatus[list[Endpoint]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until `stop_accepting()`; then wait for the connections in hand to finish,
        for at most the shutdown grace period."""
        listen = self.config.listen
        tcp_listeners = await open_listeners(
            "SMSGW_LISTEN", listen, reuse_port=self.config.workers > 1
        )
        listeners: list[trio.abc.Listener[Any]] = list(tcp_listeners)
        if self._ssl_context is not None:
            listeners = [
                trio.SSLListener(listener, self._ssl_context, https_compatible=False)
                for listener in tcp_listeners
            ]
        bound = [Endpoint.of_sockname(listener.socket.getsockname()) for listener in tcp_listeners]
        async with trio.open_nursery() as handlers:
            with trio.CancelScope() as self._accept_scope:
                if self._stopping:
                    self._accept_scope.cancel()
                task_status.started(bound)
                await trio.serve_listeners(self._handle, listeners, handler_nursery=handlers)
            with trio.CancelScope(shield=True):
                for listener in listeners:
                    await listener.aclose()
            handlers.cancel_scope.deadline = trio.current_time() + self.config.shutdown_grace
        log.info("listener stopped", extra={"requests": self.requests_served})

    def stop_accepting(self) -> None:
        self._stopping = True
        if self._accept_scope is not None:
            self._accept_scope.cancel()

    # --- /metrics and /healthz ---

    async def samples(self) -> list[Sample]:
        return [
            gauge("smsgw_connections", "merchant connections open", self.active_connections),
            *(
                counter(
                    "smsgw_responses", "answers to merchant requests, by status", n, status=status
                )
                for status, n in sorted(self.responses.items())
            ),
            counter(
                "smsgw_refused_busy",
                "connections refused over SMSGW_MAX_CONNECTIONS",
                self.refused_busy,
            ),
            counter(
                "smsgw_messages_accepted",
                "messages stored from A001 (answered 0, new)",
                self.messages_accepted,
            ),
            histogram(
                "smsgw_request_seconds",
                "merchant requests, from the start of the read to the answer written",
                self.request_seconds,
            ),
        ]

    async def checks(self) -> list[Check]:
        return []  # what it needs to answer is the store's check

    # --- one connection ---

    async def _handle(self, stream: trio.abc.Stream) -> None:
        peer = _peer_address(stream)
        if self.active_connections >= self.config.max_connections:
            await self._refuse_busy(stream, peer)
            return
        self.active_connections += 1
        try:
            await self._serve_connection(stream, peer)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.debug("connection from %s broke: %s", peer, exc)
        except Exception:
            # Anything else is a bug; it must cost this connection only, never the server.
            log.exception("connection handler failed", extra={"peer": peer})
        finally:
            self.active_connections -= 1
            await _close_tls(stream)

    async def _serve_connection(self, stream: trio.abc.Stream, peer: str) -> None:
        decoder = RequestDecoder(max_body=self.config.max_body)
        timeout = self.config.read_timeout
        while True:
            started = time.perf_counter()
            try:
                # move_on_after, not fail_after: a plain scope, no generator, on every request.
                with trio.move_on_after(timeout) as reading:
                    event = await receive_event(stream, decoder)
            except RemoteProtocolError as exc:
                outcome = Outcome(error_response(exc.status, str(exc)))
                await self._respond(stream, exc.command, exc.length_style, outcome)
                self._log_request(exc.command, outcome, peer, started)
                return
            if reading.cancelled_caught:
                if timeout == self.config.read_timeout:
                    log.info("read timeout: connection cut off", extra={"peer": peer})
                return
            if isinstance(event, ConnectionClosed):
                return
            outcome = await self._process(event, peer)
            command = response_command(event.command)
            await self._respond(stream, command, event.length_style, outcome)
            self._log_request(command, outcome, peer, started)
            if outcome.app is None or not outcome.app.keep_alive or self._stopping:
                return
            timeout = self.config.idle_timeout

    async def _respond(
        self, stream: trio.abc.Stream, command: str, style: LengthStyle, outcome: Outcome
    ) -> None:
        frame = encode_response(command, encode_json(outcome.response), style)
        with trio.move_on_after(self.config.read_timeout) as writing:
            await stream.send_all(frame)
        if writing.cancelled_caught:
            # The client stopped reading. The connection is closed by the caller; what was
            # stored stays stored (a re-submit is answered as a duplicate).
            log.info("write timeout: client not reading its answer")
            raise trio.BrokenResourceError("write timeout")
        self.requests_served += 1
        self.responses[outcome.response.status.value] += 1

    async def _refuse_busy(self, stream: trio.abc.Stream, peer: str) -> None:
        log.warning("too many connections: refusing %s", peer)
        self.refused_busy += 1
        body = encode_json(error_response(Status.BUSY, "gateway busy: retry later"))
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            with trio.move_on_after(1):
                await stream.send_all(encode_response("B000", body))
            # The answer, then our end of the stream: a client reading to the end has all of
            # it now. Then wait for the client's own close, reading what it still sends: a
            # close that meets unread input resets the connection, and the reset destroys
            # the answer still unread on the client's side. A loaded client can take seconds
            # to write its request, so the wait is the read timeout, not a fixed second.
            if isinstance(stream, trio.abc.HalfCloseableStream):
                await stream.send_eof()
            with trio.move_on_after(self.config.read_timeout):
                await discard_input(stream, RECEIVE_CHUNK * 4)
        await _close_tls(stream)

    # --- one request ---

    async def _process(self, request: Request, peer: str) -> Outcome:
        now = trio.current_time()
        if self._auth_failures.blocked(peer, now):
            return Outcome(error_response(Status.RATE_LIMITED, "too many failed authentications"))
        app = self._authenticate(request)
        if app is None:
            self._auth_failures.record_failure(peer, now)
            return Outcome(error_response(Status.AUTH_FAILED, "authentication failed"))
        if not app.allows(peer):
            return Outcome(
                error_response(Status.SOURCE_NOT_ALLOWED, f"source {peer} not allowed"), app
            )
        if request.command != SUBMIT:
            return Outcome(
                error_response(Status.UNKNOWN_COMMAND, f"unknown command {request.command!r}"),
                app,
            )
        try:
            return await self._submit(request, app, now)
        except StoreClosed:
            return Outcome(error_response(Status.BUSY, "gateway shutting down: retry later"), app)
        except Exception:
            request_id = uuid.uuid4().hex[:12]
            log.exception("internal error", extra={"request_id": request_id, "app": app.appid})
            return Outcome(
                error_response(Status.INTERNAL_ERROR, f"internal error (request {request_id})"),
                app,
            )

    def _authenticate(self, request: Request) -> AppConfig | None:
        app = self._apps.get(canonical_credential(request.appid))
        given = canonical_credential(request.appsecret).encode()
        expected = canonical_credential(app.secret).encode() if app else _NO_SECRET
        # compare_digest always runs, so an unknown appid and a wrong secret take equal time.
        if hmac.compare_digest(given, expected) and app is not None:
            return app
        return None

    async def _submit(self, request: Request, app: AppConfig, now: float) -> Outcome:
        try:
            slots = parse_submit(request.body, self._limits, self.clock.now_ms())
        except BodyError as exc:
            return Outcome(error_response(exc.status, str(exc)), app)
        deliveries = [slot for slot in slots if isinstance(slot, Delivery)]
        bucket = self._buckets.get(app.appid)
        if bucket is not None and not bucket.try_take(len(slots), now):
            return Outcome(
                error_response(Status.RATE_LIMITED, f"rate limit of {app.tps:g}/s exceeded"),
                app,
                len(slots),
            )
        stored: Sequence[bool] = []
        if deliveries:
            now_ms = self.clock.now_ms()
            messages = [_new_message(app.appid, delivery) for delivery in deliveries]
            stored = await self.store.insert_messages(messages, now_ms)
            self.messages_accepted += sum(stored)
            due = [
                now_ms if m.send_at_ms is None else m.send_at_ms
                for m, new in zip(messages, stored, strict=True)
                if new
            ]
            if due:
                self.on_stored(min(due))
        return Outcome(submit_response(slots, stored), app, len(slots))

    def _log_request(self, command: str, outcome: Outcome, peer: str, started: float) -> None:
        seconds = time.perf_counter() - started
        self.request_seconds.observe(seconds)
        log.info(
            "%s app=%s items=%d status=%s %.1fms peer=%s",
            command,
            outcome.app.appid if outcome.app else "-",
            outcome.items,
            outcome.response.status.value,
            seconds * 1000,
            peer,
        )


async def _close_tls(stream: trio.abc.Stream) -> None:
    """Close a TLS stream politely (close_notify, for at most a second, even when cancelled).
    A plain socket needs nothing here: `serve_listeners` closes every stream once its
    handler returns, so a scope and a close of our own would only be work twice."""
    if isinstance(stream, trio.SSLStream):
        with trio.move_on_after(1) as cleanup:
            cleanup.shield = True
            await stream.aclose()


def _new_message(appid: str, delivery: Delivery) -> NewMessage:
    return NewMessage(
        appid=appid,
        msgid=delivery.msgid,
        phone=delivery.phone,
        message=delivery.message,
        msgtype=delivery.msgtype,
        send_at_ms=delivery.send_at_ms,
        segments=delivery.segments,
    )


def _ssl_context(config: Config) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(str(config.tls_cert), str(config.tls_key))
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError("SMSGW_TLS_CERT", f"cannot load certificate and key: {exc}") from None
    return context


def _peer_address(stream: trio.abc.Stream) -> str:
    transport = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
    if isinstance(transport, trio.SocketStream):
        try:
            return str(transport.socket.getpeername()[0])
        except OSError:
            return "?"
    return "?"
