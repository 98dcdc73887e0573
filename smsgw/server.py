"""The merchant listener: TCP (optionally TLS), one task per connection, each under deadlines.

Every connection handler catches its own errors: `serve_sockets` would let an escaping one
crash the whole server. A request's items are answered `0` only after the store's commit.
"""

from __future__ import annotations

import collections
import contextlib
import hmac
import logging
import resource
import ssl
import time
import uuid
from collections.abc import Callable, Sequence

import attrs
import trio

from smsgw.acceptor import serve_sockets
from smsgw.admission import Admission, Slot
from smsgw.clock import WallClock
from smsgw.config import AppConfig, Config, ConfigError, Endpoint, open_listeners
from smsgw.histogram import Histogram
from smsgw.logs import RepeatLog
from smsgw.observe import Check, Sample, counter, gauge, histogram
from smsgw.protocol.framing import (
    ConnectionClosed,
    LengthStyle,
    RemoteProtocolError,
    Request,
    RequestDecoder,
    canonical_credential,
    encode_response,
    max_body_length,
    response_command,
)
from smsgw.protocol.messages import (
    AnswerTooLarge,
    BodyError,
    Delivery,
    SubmitLimits,
    SubmitResponse,
    encode_answer,
    encode_json,
    error_response,
    parse_submit,
    submit_response,
)
from smsgw.protocol.status import Status
from smsgw.ratelimit import FailureLimiter, RecentKeys, TokenBucket
from smsgw.store.base import AcceptStore, NewMessage, StoreClosed, StoreError
from smsgw.streams import RECEIVE_CHUNK, discard_input, receive_event

log = logging.getLogger("smsgw.server")

SUBMIT = "A001"
# Descriptors kept for everything but merchant connections (store, links, pushes, metrics).
DESCRIPTOR_RESERVE = 256
# A secret to compare against when the appid is unknown, so both failures take the same time.
_NO_SECRET = canonical_credential("\x7f" * 15).encode()


@attrs.frozen
class Outcome:
    """What a request came to: the response to send and the facts for its log line."""

    response: SubmitResponse
    app: AppConfig | None = None
    items: int = 0


class Server:
    def __init__(self, config: Config, store: AcceptStore, clock: WallClock | None = None) -> None:
        self.config = config
        self.store = store
        self._clock = clock
        self._apps = config.app_by_key()
        self._limits = SubmitLimits(
            max_batch=config.max_batch,
            max_segments=config.max_segments,
            max_schedule_ms=int(config.max_schedule * 1000),
        )
        self._log_repeats = RepeatLog(log)
        self._auth_failures = FailureLimiter(limit=config.auth_fail_limit)
        self._app_failures = FailureLimiter(limit=config.auth_fail_app_limit)
        self._proven_addresses = {app.key: RecentKeys() for app in config.apps}
        self._buckets = {app.appid: TokenBucket(app.tps) for app in config.apps if app.tps}
        self._ssl_context = _ssl_context(config) if config.tls_cert else None
        # Called after each commit of new messages with the earliest time (epoch ms) one of
        # them is due (the pipeline's dispatcher wakes up if it would sleep past it).
        self.on_stored: Callable[[int], None] = lambda due_ms: None
        self._accept_scope: trio.CancelScope | None = None
        self._stopping = False
        self._admission = Admission(config.max_connections, config.max_connections_per_address)
        self.requests_served = 0
        # For /metrics: answers by status, connections refused busy, new messages stored.
        self.responses: collections.Counter[str] = collections.Counter()
        self.refused_busy = 0
        self.refused_unanswered = 0
        self._refusing = 0  # refused connections waiting for their client's close
        self._max_refusing = _descriptors_for_refusals(config.max_connections)
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
        listeners = await open_listeners("SMSGW_LISTEN", listen, reuse_port=self.config.workers > 1)
        bound = [Endpoint.of_sockname(listener.socket.getsockname()) for listener in listeners]
        async with trio.open_nursery() as handlers:
            with trio.CancelScope() as self._accept_scope:
                if self._stopping:
                    self._accept_scope.cancel()
                task_status.started(bound)
                await serve_sockets(self._handle_socket, listeners, handlers)
            with trio.CancelScope(shield=True):
                for listener in listeners:
                    await listener.aclose()
            handlers.cancel_scope.deadline = trio.current_time() + self.config.shutdown_grace
        self._log_repeats.flush(trio.current_time())
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
                "connections answered 1008: over a connection cap, or shed to make room",
                self.refused_busy,
            ),
            counter(
                "smsgw_refused_unanswered",
                "connections closed unanswered: as many refused ones were waiting to close",
                self.refused_unanswered,
            ),
            counter(
                "smsgw_connections_shed",
                "connections closed before their first whole frame to make room for a new one",
                self.connections_shed,
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

    @property
    def active_connections(self) -> int:
        return self._admission.active

    @property
    def connections_shed(self) -> int:
        return self._admission.shed_count

    async def _handle_socket(self, stream: trio.SocketStream) -> None:
        if self._ssl_context is None:
            await self._handle(stream)
        else:
            tls = trio.SSLStream(stream, self._ssl_context, server_side=True)
            await self._handle(tls)

    async def _handle(self, stream: trio.abc.Stream) -> None:
        peer = _peer_address(stream)
        slot = self._admission.admit(peer)
        if slot is None:
            await self._refuse(stream, peer, "too many connections: refusing")
            return
        try:
            with slot.scope:
                await self._serve_connection(stream, peer, slot)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.debug("connection from %s broke: %s", peer, exc)
        except Exception:
            # Anything else is a bug; it must cost this connection only, never the server.
            log.exception("connection handler failed", extra={"peer": peer})
        finally:
            self._admission.release(slot)
            if not slot.shed:
                await _close_tls(stream)
        if slot.shed:
            await self._refuse(stream, peer, "connection without a whole frame shed for a new one:")

    async def _refuse(self, stream: trio.abc.Stream, peer: str, why: str) -> None:
        """Answer 1008 and wait for the client's close, unless the descriptors left for
        that are taken: then close at once, unanswered. A refused connection holds no slot;
        without this bound a flood would hold one descriptor per refusal until accept()
        fails with EMFILE, for everyone. Logged once, with repeats counted: a flood must
        not write a line per connection."""
        self._log_repeats.log(logging.WARNING, why, f"{why} {peer}", trio.current_time())
        if self._refusing >= self._max_refusing:
            self.refused_unanswered += 1
            return  # the acceptor closes the socket
        self._refusing += 1
        try:
            await self._refuse_busy(stream, peer)
        finally:
            self._refusing -= 1

    async def _serve_connection(self, stream: trio.abc.Stream, peer: str, slot: Slot) -> None:
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
            self._admission.frame_received(slot)
            outcome = await self._process(event, peer)
            command = response_command(event.command)
            await self._respond(stream, command, event.length_style, outcome)
            self._log_request(command, outcome, peer, started, event.appid)
            if outcome.app is None or not outcome.app.keep_alive or self._stopping:
                return
            timeout = self.config.idle_timeout

    async def _respond(
        self, stream: trio.abc.Stream, command: str, style: LengthStyle, outcome: Outcome
    ) -> None:
        response = outcome.response
        try:
            body = encode_answer(response, max_body_length(style))
        except AnswerTooLarge as exc:
            # Whatever was stored stays stored (a re-submit is answered as duplicates, by
            # then maybe in a smaller request); never an unanswered request.
            request_id = uuid.uuid4().hex[:12]
            log.error("%s (request %s)", exc, request_id)
            response = error_response(
                Status.INTERNAL_ERROR,
                f"answer too large: send fewer deliveries per request (request {request_id})",
            )
            body = encode_json(response)
        frame = encode_response(command, body, style)
        with trio.move_on_after(self.config.read_timeout) as writing:
            await stream.send_all(frame)
        if writing.cancelled_caught:
            # The client stopped reading. The connection is closed by the caller; what was
            # stored stays stored (a re-submit is answered as a duplicate).
            log.info("write timeout: client not reading its answer")
            raise trio.BrokenResourceError("write timeout")
        self.requests_served += 1
        self.responses[response.status.value] += 1

    async def _refuse_busy(self, stream: trio.abc.Stream, peer: str) -> None:
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
        app = self._admit_credentials(request, peer, now)
        if isinstance(app, Outcome):
            return app
        if request.command != SUBMIT:
            return Outcome(
                error_response(Status.UNKNOWN_COMMAND, f"unknown command {request.command!r}"),
                app,
            )
        try:
            return await self._submit(request, app, now)
        except StoreClosed:
            return Outcome(error_response(Status.BUSY, "gateway shutting down: retry later"), app)
        except StoreError as exc:
            # The database failed or cannot be reached (a full disk, a PostgreSQL restart):
            # nothing is answered 0, and a re-send is safe whether or not the commit got
            # through. The disk's fault, not ours: one line, no traceback, repeats counted.
            self._log_repeats.log(
                logging.WARNING,
                f"{type(exc).__name__}: {exc}",
                f"store unavailable (app {app.appid}): {exc}",
                now,
            )
            return Outcome(error_response(Status.BUSY, "store unavailable: retry later"), app)
        except Exception as exc:
            request_id = uuid.uuid4().hex[:12]
            # A bug gets its traceback once; its repeats are counted.
            self._log_repeats.log(
                logging.ERROR,
                f"{type(exc).__name__}: {exc}",
                f"internal error (app {app.appid}, request {request_id}): "
                f"{type(exc).__name__}: {exc}",
                now,
                exc_info=exc,
            )
            return Outcome(
                error_response(Status.INTERNAL_ERROR, f"internal error (request {request_id})"),
                app,
            )

    def _admit_credentials(self, request: Request, peer: str, now: float) -> AppConfig | Outcome:
        """The app the request authenticates as, or the refusal to answer with."""
        if self._auth_failures.blocked(peer, now):
            return Outcome(error_response(Status.RATE_LIMITED, "too many failed authentications"))
        claimed = self._apps.get(canonical_credential(request.appid))
        if claimed is None:
            guarded = False
        elif not claimed.allows(peer):
            # Answered before the secret is looked at: from here a right and a wrong secret
            # must get the same answer, or the allowlist tells a guesser when it is right.
            # No app in the outcome: nothing was authenticated, so no keep-alive either.
            return Outcome(error_response(Status.SOURCE_NOT_ALLOWED, f"source {peer} not allowed"))
        else:
            # Failures from outside the app's own networks (for an app open to all: from an
            # address it has not authenticated from) also count against the app, so rotating
            # addresses buys no more guesses, and its own clients are never locked out.
            guarded = not claimed.networks and peer not in self._proven(claimed)
            if guarded and self._app_failures.blocked(claimed.key, now):
                return Outcome(
                    error_response(
                        Status.RATE_LIMITED, "too many failed authentications for this app"
                    )
                )
        app = self._authenticate(request, claimed)
        if app is None:
            self._auth_failures.record_failure(peer, now)
            if guarded and claimed is not None:
                self._app_failures.record_failure(claimed.key, now)
            return Outcome(error_response(Status.AUTH_FAILED, "authentication failed"))
        self._proven(app).add(peer)
        return app

    def _authenticate(self, request: Request, app: AppConfig | None) -> AppConfig | None:
        """`app` (the one the request's appid names) if the secret is its own, else None."""
        given = canonical_credential(request.appsecret).encode()
        expected = canonical_credential(app.secret).encode() if app else _NO_SECRET
        # compare_digest always runs, so an unknown appid and a wrong secret take equal time.
        if hmac.compare_digest(given, expected) and app is not None:
            return app
        return None

    def _proven(self, app: AppConfig) -> RecentKeys:
        """The addresses `app` has recently authenticated from."""
        return self._proven_addresses[app.key]

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

    def _log_request(
        self, command: str, outcome: Outcome, peer: str, started: float, tried: str = ""
    ) -> None:
        """One line per answer; `tried` is the request's raw APPID field, shown when it named
        no app (a `1005` says which id was tried)."""
        seconds = time.perf_counter() - started
        self.request_seconds.observe(seconds)
        log.info(
            "%s app=%s items=%d status=%s %.1fms peer=%s",
            command,
            outcome.app.appid if outcome.app else _shown_appid(tried),
            outcome.items,
            outcome.response.status.value,
            seconds * 1000,
            peer,
        )


def _shown_appid(raw: str) -> str:
    """A request's APPID field for a log line: without its padding (configured ids never
    start with 0), quoted when that leaves it empty or with a space or NUL in it (the
    framing lets only printable ASCII and NUL through)."""
    if not raw:
        return "-"
    appid = raw.strip(" \x00").lstrip("0")
    return appid if appid and appid.isprintable() and " " not in appid else repr(appid)


async def _close_tls(stream: trio.abc.Stream) -> None:
    """Close a TLS stream politely (close_notify, for at most a second, even when cancelled).
    A plain socket needs nothing here: the acceptor closes every socket once its
    handler returns, so a scope and a close of our own would only be work twice."""
    if isinstance(stream, trio.SSLStream):
        with trio.move_on_after(1) as cleanup:
            cleanup.shield = True
            await stream.aclose()


def _descriptors_for_refusals(max_connections: int) -> int:
    """How many refused connections may wait for their client's close: the open-files limit
    less what the admitted connections and the rest of the gateway (store, carrier links,
    pushes, metrics) may need."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return max_connections * 16
    return max(0, soft - max_connections - DESCRIPTOR_RESERVE)


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
