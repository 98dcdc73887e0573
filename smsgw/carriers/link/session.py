"""One session with an operator, kept up by Trio: connect, log in, submit, keep alive, log in
again — for any `Dialect` (SMPP's bind, CMPP's CONNECT, ...).

A `Session` owns one login: one connection per `Dialect.logins()` entry (SMPP ``trx``: one
transceiver; ``tx+rx``: a transmitter and a receiver; CMPP: one), each a `Link`. While the
login lives, one task group runs per link a reader, a writer (every frame queued since its
last write goes out in one `send_all`), a response-timeout keeper and a keep-alive keeper,
plus a delivery worker and a watcher that ends the group when any link is lost; then every
request in flight fails (`LinkLost`: the caller cannot know whether the operator got it;
`NotSent` for one still queued) and the session logs in again after a backoff
(`reconnect_min` doubling, with jitter, up to `reconnect_max`; back to `reconnect_min` once a
login has lasted STABLE_LINK seconds).

- Window: at most ``window`` submits outstanding per session (a semaphore); responses are
  matched by sequence number; no response within ``response_timeout`` → `ResponseTimeout`.
- TPS: `smsgw.carriers.link.pacing.Pacer` spaces the submits and slows the session down
  when a submit's answer says so (`SubmitEffect.THROTTLE`); `SubmitEffect.LOSE_LINK` closes
  the link (the operator says it is not logged in).
- Keep-alive by the dialect's `KeepAlive` (SMPP enquire_link, CMPP ACTIVE_TEST); the
  operator's own keep-alive and logout are answered (a logout also ends the link).
- Deliveries (reports, MOs) are handed to the carrier's callback and then ALWAYS answered
  (with the status the callback gives, the dialect's `ok_status` when it fails). The reader
  does it at once when the callback need not wait (`on_delivery_nowait`) and no earlier one
  is still with the delivery worker (answers keep the operator's order); otherwise the
  delivery worker does, waiting as long as the callback does. The answer follows the
  hand-off, so a full reports channel holds the operator back: it stops when its own window
  of unanswered deliveries is full. Up to INBOUND_BUFFER (64) of them wait without stopping
  this link's reader (submit and keep-alive answers keep flowing); an operator with a larger
  window is then held back by the reader as well.
- A malformed request is answered as the dialect says (SMPP: generic_nack with the codec's
  status), and logged. A malformed *response* is not answered (the operator would take the
  answer for one to its own request with that sequence number); the request it answered
  fails as in doubt. A framing error (the length cannot be trusted) gets the dialect's
  best-effort last frame, then the link is closed and the session logs in again.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Final, Generic

import trio

from smsgw.carriers.link.dialect import (
    Dialect,
    FrameT,
    LoginRefused,
    Route,
    SubmitEffect,
)
from smsgw.carriers.link.link import (
    Connect,
    Link,
    LinkLost,
    NotSent,
    ResponseTimeout,
    UnreadableResponse,
    open_tcp,
)
from smsgw.carriers.link.pacing import Pacer
from smsgw.carriers.link.settings import LinkSettings
from smsgw.sansio import NEED_DATA

__all__ = [
    "INBOUND_BUFFER",
    "RECEIVE_SIZE",
    "STABLE_LINK",
    "DeliveryHandler",
    "DeliveryHandlerNowait",
    "Session",
]

RECEIVE_SIZE: Final = 65536
INBOUND_BUFFER: Final = 64  # deliveries read but not yet handed over, per session
STABLE_LINK: Final = 10.0  # seconds a link must live for the reconnect backoff to start over

# Gets each delivery (report or MO); returns the status to answer it with.
DeliveryHandler = Callable[[FrameT], Awaitable[int]]
# The same without waiting: None when it would have to wait (then DeliveryHandler gets it).
DeliveryHandlerNowait = Callable[[FrameT], int | None]


class _LoginFailed(Exception):
    """Connecting or logging in failed; the message is the log line's reason."""


class Session(Generic[FrameT]):
    """One login, kept up until `unbind()` (see the module docstring)."""

    def __init__(
        self,
        dialect: Dialect[FrameT],
        config: LinkSettings,
        name: str,
        *,
        on_delivery: DeliveryHandler[FrameT],
        on_delivery_nowait: DeliveryHandlerNowait[FrameT] | None = None,
        on_state_change: Callable[[], None] = lambda: None,
        connect: Connect = open_tcp,
    ) -> None:
        self.dialect = dialect
        self.config = config
        self.name = name
        self.pacer = Pacer(config.tps, pause=config.throttle_pause)
        self.binds = 0  # successful logins so far
        self.max_in_flight = 0  # the most submits ever outstanding at once on this session
        self._log = dialect.log
        self._on_delivery = on_delivery
        self._on_delivery_nowait = on_delivery_nowait
        self._handed_to_worker = 0  # deliveries given to the delivery worker, not answered yet
        self._on_state_change = on_state_change
        self._connect = connect
        self._window = trio.Semaphore(config.window)
        self._in_flight = 0
        self._queued = 0  # submits waiting for a window slot
        self._tx: Link[FrameT] | None = None
        self._links: list[Link[FrameT]] = []
        self._stopping = False
        self._stop_requested = trio.Event()
        self._stopped = trio.Event()
        self._attempt_scope: trio.CancelScope | None = None
        self._waiting_scopes: set[trio.CancelScope] = set()
        self._rng = random.Random()

    # -- state -----------------------------------------------------------------------------

    @property
    def bound(self) -> bool:
        """Logged in and taking submits."""
        return not self._stopping and self._tx is not None and self._tx.alive

    @property
    def load(self) -> int:
        """Free window slots minus the submits already queued for them (higher is freer)."""
        return int(self._window.value) - self._queued

    @property
    def links(self) -> tuple[Link[FrameT], ...]:
        return tuple(self._links)

    # -- submitting ------------------------------------------------------------------------

    async def submit(self, data: bytes) -> FrameT:
        """Send one submit, as the dialect's codec encoded it, and return the operator's
        answer (whatever its status). Raises NotSent, LinkLost or ResponseTimeout."""
        if not self.bound:
            raise NotSent("not bound")
        window = self._window
        if window.value:
            # A free slot means nobody waits for one (release hands it to a waiter), so
            # taking it at once is fair; the request below is the checkpoint.
            window.acquire_nowait()
        else:
            self._queued += 1
            try:
                await self._before_send(window.acquire())
            finally:
                self._queued -= 1
        self._in_flight += 1
        if self._in_flight > self.max_in_flight:
            self.max_in_flight = self._in_flight
        try:
            now = trio.current_time()
            slot = self.pacer.reserve(now)
            if slot > now:
                await self._before_send(trio.sleep_until(slot))
            link = self._tx
            if self._stopping or link is None or not link.alive:
                raise NotSent("the bind was lost before sending")
            response = await link.request_encoded(data, self.config.response_timeout)
        finally:
            self._in_flight -= 1
            window.release()
        effect = self.dialect.submit_effect(response)
        if effect is SubmitEffect.THROTTLE:
            slowed_before = self.pacer.rate
            self.pacer.throttled(trio.current_time())
            if self.pacer.rate != slowed_before:
                self._log.warning(
                    "%s: %s answered %s: pausing %g s, rate now %g/s",
                    self.name,
                    self.dialect.peer,
                    self.dialect.describe_answer(response),
                    self.config.throttle_pause,
                    self.pacer.rate,
                )
        elif effect is SubmitEffect.LOSE_LINK:
            link.lose(
                f"the {self.dialect.peer} says this link is not bound "
                f"({self.dialect.describe_answer(response)})"
            )
        return response

    async def _before_send(self, wait: Awaitable[None]) -> None:
        """Wait for something before the write; `stop_submits` interrupts it (NotSent)."""
        with trio.CancelScope() as scope:
            self._waiting_scopes.add(scope)
            try:
                await wait
            finally:
                self._waiting_scopes.discard(scope)
        if scope.cancelled_caught:
            raise NotSent("the carrier is closing")

    def stop_submits(self) -> None:
        """Refuse new submits; those still waiting for a window slot or a TPS slot give up."""
        self._stopping = True
        self._stop_requested.set()
        for scope in list(self._waiting_scopes):
            scope.cancel()

    # -- life cycle ------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Log in, serve, log in again after losses, until `unbind()`; never raises
        otherwise."""
        task_status.started()
        delay = self.config.reconnect_min
        login = self.dialect.login_name
        try:
            while not self._stopping:
                links: list[Link[FrameT]] = []
                try:
                    with trio.CancelScope() as self._attempt_scope:
                        links = await self._connect_and_login()
                except _LoginFailed as failure:
                    wait = self._jitter(delay)
                    self._log.warning(
                        "%s: %s failed: %s; retrying in %.1f s", self.name, login, failure, wait
                    )
                    await self._sleep_unless_stopped(wait)
                    delay = min(delay * 2, self.config.reconnect_max)
                    continue
                except Exception:
                    self._log.exception("%s: unexpected error during %s", self.name, login)
                    await self._sleep_unless_stopped(self._jitter(delay))
                    delay = min(delay * 2, self.config.reconnect_max)
                    continue
                finally:
                    self._attempt_scope = None
                if self._stopping:
                    # Logged in just as unbind() came (no reader runs to get the answer).
                    await self._close_all(links, "stopping")
                    break
                bound_at = trio.current_time()
                reason = await self._serve(links)
                if self._stopping:
                    break
                if trio.current_time() - bound_at >= STABLE_LINK:
                    delay = self.config.reconnect_min
                wait = self._jitter(delay)
                self._log.warning(
                    "%s: link lost (%s); %s again in %.1f s", self.name, reason, login, wait
                )
                await self._sleep_unless_stopped(wait)
                delay = min(delay * 2, self.config.reconnect_max)
        finally:
            self._stopped.set()

    async def unbind(self) -> None:
        """Graceful stop: no more submits, log every link out (each answer waited for at
        most response_timeout), close. The session's run() then returns."""
        self.stop_submits()
        if self._attempt_scope is not None:
            self._attempt_scope.cancel()
        links = list(self._links)
        async with trio.open_nursery() as nursery:
            for link in links:
                nursery.start_soon(self._logout, link)
        for link in links:
            link.lose("unbound")
        self._on_state_change()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    def _jitter(self, delay: float) -> float:
        # Several sessions (or gateways) losing the operator together must not come back
        # together.
        return delay * self._rng.uniform(0.8, 1.2)

    async def _sleep_unless_stopped(self, seconds: float) -> None:
        with trio.move_on_after(seconds):
            await self._stop_requested.wait()

    # -- logging in and out ----------------------------------------------------------------

    async def _connect_and_login(self) -> list[Link[FrameT]]:
        links: list[Link[FrameT]] = []
        config = self.config
        try:
            with trio.fail_after(config.bind_timeout):
                for role, request in self.dialect.logins():
                    try:
                        stream = await self._connect(config.host, config.port)
                    except OSError as error:
                        raise _LoginFailed(f"cannot connect: {error.strerror or error}") from None
                    link = Link(
                        stream,
                        f"{self.name} ({role})",
                        self.dialect,
                        write_timeout=config.response_timeout,
                    )
                    links.append(link)
                    await self._login(link, request)
        except trio.TooSlowError:
            await self._close_all(links, f"{self.dialect.login_name} timed out")
            raise _LoginFailed(
                f"no {self.dialect.login_name} answer within {config.bind_timeout:g} s "
                "(bind_timeout)"
            ) from None
        except BaseException:
            await self._close_all(links, f"{self.dialect.login_name} failed")
            raise
        return links

    async def _login(self, link: Link[FrameT], request: FrameT) -> None:
        dialect = self.dialect
        command = dialect.frame_name(request)
        numbered, data = link.codec.send_request(request)
        try:
            await link.stream.send_all(data)
            while True:
                while True:
                    try:
                        event = link.codec.next_event()
                    except (dialect.frame_error, dialect.framing_error) as error:
                        raise _LoginFailed(
                            f"malformed PDU from the {dialect.peer} during {command}: "
                            f"{dialect.error_message(error)}"
                        ) from None
                    if event is NEED_DATA:
                        break
                    if event.is_response and event.sequence_number == numbered.sequence_number:
                        try:
                            logged_in = dialect.login_answer(numbered, event)
                        except LoginRefused as refused:
                            raise _LoginFailed(str(refused)) from None
                        if logged_in is not None:
                            self._log.info("%s: bound (%s)", link.name, logged_in)
                            return
                    elif not event.is_response and dialect.route(event) is Route.KEEP_ALIVE:
                        await link.stream.send_all(
                            link.codec.send(dialect.response_for(event, dialect.ok_status))
                        )
                        continue
                    self._log.info("%s: ignored %r while logging in", link.name, event)
                chunk = await link.stream.receive_some(RECEIVE_SIZE)
                if not chunk:
                    raise _LoginFailed(
                        f"the {dialect.peer} closed the connection before answering {command}"
                    )
                link.codec.receive_data(chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as error:
            raise _LoginFailed(f"connection failed during {command}: {error!r}") from None

    async def _close_all(self, links: list[Link[FrameT]], reason: str) -> None:
        for link in links:
            await link.close(reason)

    async def _logout(self, link: Link[FrameT]) -> None:
        try:
            response = await link.request(self.dialect.logout(), self.config.response_timeout)
        except (NotSent, LinkLost, ResponseTimeout) as error:
            self._log.info("%s: unbind not answered (%s)", link.name, error)
            return
        self._log.info("%s: unbound (%s)", link.name, self.dialect.describe_answer(response))

    # -- serving a login -------------------------------------------------------------------

    async def _serve(self, links: list[Link[FrameT]]) -> str:
        """Run the login's tasks until a link is lost; returns why."""
        inbound_send, inbound_receive = trio.open_memory_channel[tuple[Link[FrameT], FrameT]](
            INBOUND_BUFFER
        )
        self._handed_to_worker = 0
        try:
            async with trio.open_nursery() as nursery:
                for link in links:
                    nursery.start_soon(self._watch, link, nursery.cancel_scope)
                    nursery.start_soon(link.write_loop)
                    nursery.start_soon(link.expire_loop)
                    nursery.start_soon(self._read_loop, link, inbound_send)
                    if self.dialect.keep_alive.interval > 0:
                        nursery.start_soon(self._keep_alive, link)
                nursery.start_soon(self._deliveries, inbound_receive)
                self._links = links
                self._tx = links[0]
                self.binds += 1
                self._on_state_change()
        except Exception:
            self._log.exception("%s: unexpected error; closing the bind", self.name)
            for link in links:
                link.lose("internal error")
        finally:
            self._tx = None
            self._links = []
            reason = next((link.lost for link in links if link.lost), "stopped")
            with trio.CancelScope(shield=True):
                await self._close_all(links, reason)
            self._on_state_change()
        return reason

    async def _watch(self, link: Link[FrameT], scope: trio.CancelScope) -> None:
        await link.lost_event.wait()
        scope.cancel()

    async def _read_loop(
        self,
        link: Link[FrameT],
        inbound: trio.MemorySendChannel[tuple[Link[FrameT], FrameT]],
    ) -> None:
        track_idle = self.dialect.keep_alive.when_idle
        try:
            while True:
                if not await self._drain(link, inbound):
                    return
                data = await link.stream.receive_some(RECEIVE_SIZE)
                if not data:
                    link.lose(f"the {self.dialect.peer} closed the connection")
                    return
                if track_idle:
                    link.last_read = trio.current_time()
                link.codec.receive_data(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as error:
            link.lose(f"read failed: {error!r}")

    async def _drain(
        self,
        link: Link[FrameT],
        inbound: trio.MemorySendChannel[tuple[Link[FrameT], FrameT]],
    ) -> bool:
        """Handle every complete frame received; False once the stream cannot be framed."""
        dialect = self.dialect
        codec = link.codec
        while True:
            try:
                event = codec.next_event()
            except dialect.framing_error as error:
                message = dialect.error_message(error)
                self._log.warning(
                    "%s: unrecoverable framing from the %s: %s; closing the link",
                    link.name,
                    dialect.peer,
                    message,
                )
                await link.close_with(dialect.framing_reply(error), f"framing error: {message}")
                return False
            except dialect.frame_error as error:
                self._malformed(link, error)
                continue
            if event is NEED_DATA:
                return True
            await self._dispatch(link, event, inbound)

    def _malformed(self, link: Link[FrameT], error: Exception) -> None:
        malformed = self.dialect.malformed(error)
        if malformed.is_response:
            self._log.warning(
                "%s: malformed response from the %s (%s, %s): its request is in doubt",
                link.name,
                self.dialect.peer,
                malformed.message,
                malformed.status,
            )
            if malformed.answered is not None:
                link.fail_request(
                    malformed.answered,
                    UnreadableResponse(f"unreadable answer: {malformed.message}"),
                )
            return
        self._log.warning(
            "%s: malformed PDU from the %s (%s): answered %s",
            link.name,
            self.dialect.peer,
            malformed.message,
            malformed.status,
        )
        if malformed.reply is not None:
            link.send_nowait(malformed.reply)

    async def _dispatch(
        self,
        link: Link[FrameT],
        frame: FrameT,
        inbound: trio.MemorySendChannel[tuple[Link[FrameT], FrameT]],
    ) -> None:
        if frame.is_response:
            if not link.answer(frame):
                self._log.info(
                    "%s: %s for sequence %d that nothing waits for (late?): ignored",
                    link.name,
                    self.dialect.frame_name(frame),
                    frame.sequence_number,
                )
            return
        route = self.dialect.route(frame)
        if route is Route.DELIVERY:
            # Handled here when it can be at once and nothing handed to the worker before it
            # is still unanswered (the answers keep the order the operator sent in).
            if self._on_delivery_nowait is not None and not self._handed_to_worker:
                try:
                    status = self._on_delivery_nowait(frame)
                except Exception:
                    self._log.exception(
                        "%s: error handling %r; acknowledged anyway", link.name, frame
                    )
                    status = self.dialect.ok_status
                if status is not None:
                    link.send_nowait(self.dialect.response_for(frame, status))
                    return
            self._handed_to_worker += 1
            await inbound.send((link, frame))
        elif route is Route.KEEP_ALIVE:
            link.send_nowait(self.dialect.response_for(frame, self.dialect.ok_status))
        elif route is Route.LOGOUT:
            self._log.warning("%s: the %s unbound", link.name, self.dialect.peer)
            await link.close_with(
                self.dialect.response_for(frame, self.dialect.ok_status),
                f"the {self.dialect.peer} unbound",
            )
        else:
            self._log.warning(
                "%s: the %s sent %s, which a client does not accept: refused",
                link.name,
                self.dialect.peer,
                self.dialect.frame_name(frame),
            )
            refusal = self.dialect.refusal(frame)
            if refusal is not None:
                link.send_nowait(refusal)

    async def _deliveries(
        self, inbound: trio.MemoryReceiveChannel[tuple[Link[FrameT], FrameT]]
    ) -> None:
        async for link, frame in inbound:
            try:
                status = await self._on_delivery(frame)
            except Exception:
                self._log.exception("%s: error handling %r; acknowledged anyway", link.name, frame)
                status = self.dialect.ok_status
            finally:
                self._handed_to_worker -= 1
            link.send_nowait(self.dialect.response_for(frame, status))

    async def _keep_alive(self, link: Link[FrameT]) -> None:
        keep_alive = self.dialect.keep_alive
        while True:
            if not keep_alive.when_idle:
                await trio.sleep(keep_alive.interval)
            elif (due := link.last_read + keep_alive.interval) > trio.current_time():
                # Probe only a link that has been quiet for a whole interval.
                await trio.sleep_until(due)
                continue
            for _ in range(keep_alive.tries):
                probe = self.dialect.keep_alive_request()
                try:
                    await link.request(probe, keep_alive.timeout)
                    break
                except ResponseTimeout:
                    continue
                except (NotSent, LinkLost):
                    return
            else:
                tries = f" ({keep_alive.tries} in a row)" if keep_alive.tries > 1 else ""
                link.lose(
                    f"no answer to {self.dialect.frame_name(probe)} within "
                    f"{keep_alive.timeout:g} s{tries}"
                )
                return
