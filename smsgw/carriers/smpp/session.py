"""One SMPP 3.4 bind to an SMSC, kept up by Trio: connect, bind, submit, keep alive, rebind.

An `SmppSession` owns one bind: one transceiver connection (``bind=trx``) or a transmitter
plus a receiver connection (``bind=tx+rx``), each a `Link` (stream + sans-IO
`SmppConnection` + the requests waiting for their responses). While the bind lives, one task
group runs per link a reader, a writer (every PDU queued since its last write goes out in
one `send_all`), a response-timeout keeper and an enquire_link keeper, plus a delivery
worker and a watcher that ends the group when any link is lost; then every request in
flight fails (`LinkLost`: the caller cannot know whether the SMSC got it; `NotSent` for one
still queued) and the session binds again after a backoff (`reconnect_min` doubling, with
jitter, up to `reconnect_max`).

- Window: at most ``window`` submit_sm outstanding per bind (a semaphore); responses are
  matched by sequence number; no response within ``response_timeout`` → `ResponseTimeout`.
- TPS: `smsgw.carriers.smpp.pacing.Pacer` spaces the submits and slows the bind down when the
  SMSC throttles.
- enquire_link every ``enquire_link`` seconds on each link; no answer within
  ``response_timeout`` → the link is dead: closed, rebound. The SMSC's own enquire_link and
  unbind are answered (an unbind also ends the link: the session binds again).
- deliver_sm / data_sm are handed to the carrier's callback and then ALWAYS answered (with
  the status the callback gives, ESME_ROK when it fails). The reader does it at once when
  the callback need not wait (`on_delivery_nowait`) and no earlier one is still with the
  delivery worker (answers keep the SMSC's order); otherwise the delivery worker does,
  waiting as long as the callback does. The answer follows the hand-off, so a full reports
  channel holds the SMSC back: it stops when its own window of unanswered deliver_sm is
  full. Up to INBOUND_BUFFER (64) of them wait without stopping this link's reader
  (submit_sm_resp and enquire_link_resp keep flowing); an SMSC with a larger window is then
  held back by the reader as well.
- A malformed request from the SMSC is answered with a generic_nack carrying the codec's
  status, and logged. A malformed *response* is not nacked (the SMSC would take the nack for
  an answer to its own request with that sequence number); the request it answered fails
  as in doubt. A framing error (the command_length cannot be trusted) gets a best-effort
  generic_nack, then the link is closed and rebound.

command_status of a submit_sm_resp (or generic_nack) → the `SubmitErrorKind` the carrier
reports, `stat` being the ESME_ name (`classify_status`):

=========== ==============================================================================
THROTTLED   ESME_RTHROTTLED, ESME_RMSGQFUL — also slow the bind down (pause, half rate)
TEMPORARY   ESME_RSYSERR, ESME_RX_T_APPN, ESME_RUNKNOWNERR, ESME_RSUBMITFAIL,
            ESME_RDELIVERYFAILURE, ESME_RINVBNDSTS (the link is also rebound), ESME_RALYBND,
            ESME_RBINDFAIL, ESME_RINVPASWD, ESME_RINVSYSID, and every status not listed
            here (vendor-specific 0x0400-0x04FF, reserved): a retry is bounded by the
            pipeline's attempts, a wrong PERMANENT would lose the message for good
PERMANENT   ESME_RINVMSGLEN, ESME_RINVCMDLEN, ESME_RINVCMDID, ESME_RINVPRTFLG,
            ESME_RINVREGDLVFLG, ESME_RINVSRCADR, ESME_RINVDSTADR, ESME_RINVMSGID,
            ESME_RINVSERTYP, ESME_RINVNUMDESTS, ESME_RINVDLNAME, ESME_RINVDESTFLAG,
            ESME_RINVSUBREP, ESME_RINVESMCLASS, ESME_RCNTSUBDL, ESME_RINVSRCTON,
            ESME_RINVSRCNPI, ESME_RINVDSTTON, ESME_RINVDSTNPI, ESME_RINVSYSTYP,
            ESME_RINVREPFLAG, ESME_RINVNUMMSGS, ESME_RINVSCHED, ESME_RINVEXPIRY,
            ESME_RINVDFTMSGID, ESME_RX_P_APPN, ESME_RX_R_APPN, ESME_RINVOPTPARSTREAM,
            ESME_ROPTPARNOTALLWD, ESME_RINVPARLEN, ESME_RMISSINGOPTPARAM,
            ESME_RINVOPTPARAMVAL: the message (or this account) is refused as it is
=========== ==============================================================================
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Awaitable, Callable
from typing import Final

import trio

from smsgw.carriers.base import SubmitErrorKind
from smsgw.carriers.smpp import codec
from smsgw.carriers.smpp.codec import (
    NEED_DATA,
    THROTTLING_STATUSES,
    Bind,
    BindReceiver,
    BindResp,
    BindTransceiver,
    BindTransmitter,
    CommandId,
    DataSm,
    DeliverSm,
    EnquireLink,
    GenericNack,
    Pdu,
    SmppConnection,
    SmppFramingError,
    SmppPduError,
    Unbind,
    describe_status,
    generic_nack_for,
    response_for,
)
from smsgw.carriers.smpp.pacing import Pacer
from smsgw.carriers.smpp.settings import BindMode, SmppConfig

__all__ = [
    "Connect",
    "DeliveryHandler",
    "Link",
    "LinkLost",
    "NotSent",
    "ResponseTimeout",
    "SmppSession",
    "UnreadableResponse",
    "classify_status",
    "open_tcp",
]

log = logging.getLogger("smsgw.carriers.smpp")

RECEIVE_SIZE: Final = 65536
INBOUND_BUFFER: Final = 64  # deliver_sm read but not yet handed over, per bind
NACK_TIMEOUT: Final = 1.0  # seconds for the best-effort generic_nack before closing a link
STABLE_LINK: Final = 10.0  # seconds a link must live for the reconnect backoff to start over

_PERMANENT_STATUSES: Final = frozenset(
    {
        codec.ESME_RINVMSGLEN,
        codec.ESME_RINVCMDLEN,
        codec.ESME_RINVCMDID,
        codec.ESME_RINVPRTFLG,
        codec.ESME_RINVREGDLVFLG,
        codec.ESME_RINVSRCADR,
        codec.ESME_RINVDSTADR,
        codec.ESME_RINVMSGID,
        codec.ESME_RINVSERTYP,
        codec.ESME_RINVNUMDESTS,
        codec.ESME_RINVDLNAME,
        codec.ESME_RINVDESTFLAG,
        codec.ESME_RINVSUBREP,
        codec.ESME_RINVESMCLASS,
        codec.ESME_RCNTSUBDL,
        codec.ESME_RINVSRCTON,
        codec.ESME_RINVSRCNPI,
        codec.ESME_RINVDSTTON,
        codec.ESME_RINVDSTNPI,
        codec.ESME_RINVSYSTYP,
        codec.ESME_RINVREPFLAG,
        codec.ESME_RINVNUMMSGS,
        codec.ESME_RINVSCHED,
        codec.ESME_RINVEXPIRY,
        codec.ESME_RINVDFTMSGID,
        codec.ESME_RX_P_APPN,
        codec.ESME_RX_R_APPN,
        codec.ESME_RINVOPTPARSTREAM,
        codec.ESME_ROPTPARNOTALLWD,
        codec.ESME_RINVPARLEN,
        codec.ESME_RMISSINGOPTPARAM,
        codec.ESME_RINVOPTPARAMVAL,
    }
)


def classify_status(command_status: int) -> SubmitErrorKind:
    """What a failed submit_sm's command_status means for the message (table above)."""
    if command_status in THROTTLING_STATUSES:
        return SubmitErrorKind.THROTTLED
    if command_status in _PERMANENT_STATUSES:
        return SubmitErrorKind.PERMANENT
    return SubmitErrorKind.TEMPORARY


# ---------------------------------------------------------------------------------------
# Errors of a request (internal to the carrier: it turns them into SubmitError)


class NotSent(Exception):
    """The request never left: no bind, the link was gone before the write, or closing."""


class LinkLost(Exception):
    """The link died with the request written (or half written): the SMSC may have it."""


class UnreadableResponse(LinkLost):
    """The SMSC answered but the answer could not be decoded: the SMSC may have it."""


class ResponseTimeout(Exception):
    """No response within response_timeout: the SMSC may have it."""


class _BindFailed(Exception):
    """Connecting or binding failed; the message is the log line's reason."""


# ---------------------------------------------------------------------------------------
# One connection


Connect = Callable[[str, int], Awaitable[trio.abc.Stream]]
# Gets each deliver_sm / data_sm; returns the command_status to answer it with.
DeliveryHandler = Callable[[DeliverSm | DataSm], Awaitable[int]]
# The same without waiting: None when it would have to wait (then DeliveryHandler gets it).
DeliveryHandlerNowait = Callable[[DeliverSm | DataSm], int | None]


async def open_tcp(host: str, port: int) -> trio.abc.Stream:
    return await trio.open_tcp_stream(host, port)


class _Pending:
    """A request written (or queued to be) and waiting for its response."""

    __slots__ = (
        "command",
        "deadline",
        "failure",
        "response",
        "task",
        "timeout",
        "withdrawn",
        "written",
    )

    def __init__(self, command: int, timeout: float) -> None:
        self.command = command
        self.timeout = timeout
        self.deadline = trio.current_time() + timeout
        self.response: Pdu | None = None
        self.failure: NotSent | LinkLost | ResponseTimeout | None = None
        self.task: trio.lowlevel.Task | None = None  # the requester, while it waits
        self.written = False  # taken by the writer: the SMSC may have it from now on
        self.withdrawn = False  # the requester left before that: never write it

    def finish(self) -> None:
        task, self.task = self.task, None
        if task is not None:
            trio.lowlevel.reschedule(task)


class Link:
    """One SMPP connection: the stream, its codec, its outgoing queue and its open requests.

    PDUs are not written by the tasks that send them: they are queued, and the link's writer
    task (`write_loop`, run by the session while the link is served) writes everything queued
    since its last write with one `send_all`, under ``write_timeout``. Under load that is one
    system call for a whole wave of submit_sm and deliver_sm_resp instead of one (plus a lock
    and a timer) per PDU. Likewise one `expire_loop` task per link enforces every request's
    response timeout, instead of a timer per request.

    `lose(reason)` marks it dead (idempotent): every open request fails at once — `LinkLost`
    when its bytes were handed to the stream (the SMSC may have it), `NotSent` when they were
    still queued — and the session's watcher ends the bind.
    """

    def __init__(self, stream: trio.abc.Stream, name: str, *, write_timeout: float) -> None:
        self.stream = stream
        self.name = name
        self.codec = SmppConnection()
        self.lost: str | None = None
        self.lost_event = trio.Event()
        self._write_timeout = write_timeout
        self._pending: dict[int, _Pending] = {}
        # Queued for the writer: the bytes and, for a request, its _Pending.
        self._outgoing: list[tuple[bytes, _Pending | None]] = []
        self._writing = False  # the writer is in send_all
        self._writer_task: trio.lowlevel.Task | None = None  # parked, waiting for output
        self._flushed: trio.Event | None = None  # set once the queue is written out
        self._expiry_task: trio.lowlevel.Task | None = None  # parked, nothing to expire
        self._expiry_scope: trio.CancelScope | None = None  # sleeping until a deadline

    @property
    def alive(self) -> bool:
        return self.lost is None

    @property
    def outstanding(self) -> int:
        """Requests written (or queued) and not yet answered."""
        return len(self._pending)

    def lose(self, reason: str) -> None:
        if self.lost is not None:
            return
        self.lost = reason
        self.lost_event.set()
        pending_requests = list(self._pending.values())
        self._pending.clear()
        for pending in pending_requests:
            pending.failure = LinkLost(reason) if pending.written else NotSent(reason)
            pending.finish()
        self._outgoing.clear()
        if self._flushed is not None:
            self._flushed.set()

    # -- writing ---------------------------------------------------------------------------

    def _queue(self, data: bytes, pending: _Pending | None) -> None:
        self._outgoing.append((data, pending))
        task = self._writer_task
        if task is not None:
            self._writer_task = None
            trio.lowlevel.reschedule(task)

    def send_nowait(self, pdu: Pdu) -> None:
        """Queue a PDU that expects no answer (a response); dropped if the link is lost
        (an answer only matters to the link itself)."""
        if self.lost is None:
            self._queue(self.codec.send(pdu), None)

    async def flush(self) -> None:
        """Wait until everything queued so far is written (or the link is lost)."""
        while self.lost is None and (self._outgoing or self._writing):
            if self._flushed is None:
                self._flushed = trio.Event()
            await self._flushed.wait()

    async def close_with(self, pdu: Pdu, reason: str) -> None:
        """Send a last PDU (best effort, for at most NACK_TIMEOUT), then lose the link."""
        self.send_nowait(pdu)
        with trio.move_on_after(NACK_TIMEOUT):
            await self.flush()
        self.lose(reason)

    async def write_loop(self) -> None:
        """The writer task (see the class doc); returns once the link is lost."""
        try:
            while self.lost is None:
                if not self._outgoing:
                    if self._flushed is not None:
                        self._flushed.set()
                        self._flushed = None
                    await self._wait_for_output()
                    continue
                batch, self._outgoing = self._outgoing, []
                chunks: list[bytes] = []
                for data, pending in batch:
                    if pending is not None:
                        if pending.withdrawn:
                            continue
                        pending.written = True
                    chunks.append(data)
                if chunks:
                    await self._write(b"".join(chunks))
        finally:
            self._writer_task = None

    async def _wait_for_output(self) -> None:
        self._writer_task = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:
            self._writer_task = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    async def _write(self, data: bytes) -> None:
        finished = False
        self._writing = True
        try:
            with trio.move_on_after(self._write_timeout):
                await self.stream.send_all(data)
                finished = True
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as error:
            self.lose(f"write failed: {error!r}")
        finally:
            self._writing = False
            # Interrupted mid-PDU (stalled, cancelled, failed): the stream's framing is
            # lost for good, so is the link.
            if not finished:
                self.lose(f"write stalled for {self._write_timeout:g} s or was interrupted")

    # -- requests --------------------------------------------------------------------------

    async def request(self, pdu: Pdu, timeout: float) -> Pdu:
        """Send a request and return its response (the matching resp or a generic_nack).

        Raises NotSent, LinkLost or ResponseTimeout.
        """
        if self.lost is not None:
            raise NotSent(self.lost)
        numbered, data = self.codec.send_request(pdu)
        return await self._exchange(numbered.sequence_number, data, pdu.command_id, timeout)

    async def request_encoded(self, data: bytes, timeout: float) -> Pdu:
        """`request` for a request already encoded (`encode_pdu`, any sequence number)."""
        if self.lost is not None:
            raise NotSent(self.lost)
        sequence, numbered = self.codec.number_request(data)
        return await self._exchange(sequence, numbered, int.from_bytes(data[4:8]), timeout)

    async def _exchange(self, sequence: int, data: bytes, command: int, timeout: float) -> Pdu:
        pending = _Pending(command, timeout)
        self._pending[sequence] = pending
        self._queue(data, pending)
        self._watch_deadline(pending.deadline)
        pending.task = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:
            pending.task = None
            return trio.lowlevel.Abort.SUCCEEDED

        try:
            await trio.lowlevel.wait_task_rescheduled(abort)
        except BaseException:
            if not pending.written:
                pending.withdrawn = True  # still queued: it never leaves
            raise
        finally:
            if self._pending.get(sequence) is pending:
                del self._pending[sequence]
        if pending.response is not None:
            return pending.response
        assert pending.failure is not None
        raise pending.failure

    def answer(self, response: Pdu) -> bool:
        """Hand a response to the request waiting for it; False if none is (late or stray)."""
        pending = self._pending.pop(response.sequence_number, None)
        if pending is None:
            return False
        pending.response = response
        pending.finish()
        return True

    def fail_request(self, sequence: int, failure: LinkLost) -> None:
        pending = self._pending.pop(sequence, None)
        if pending is not None:
            pending.failure = failure
            pending.finish()

    # -- response timeouts -----------------------------------------------------------------

    def _watch_deadline(self, deadline: float) -> None:
        task = self._expiry_task
        if task is not None:
            self._expiry_task = None
            trio.lowlevel.reschedule(task)
        elif self._expiry_scope is not None and deadline < self._expiry_scope.deadline:
            self._expiry_scope.deadline = deadline

    async def expire_loop(self) -> None:
        """Fail the requests whose response did not come in time (ResponseTimeout)."""
        try:
            while True:
                now = trio.current_time()
                earliest = math.inf
                expired: list[tuple[int, _Pending]] = []
                for sequence, pending in self._pending.items():
                    if pending.deadline <= now:
                        expired.append((sequence, pending))
                    elif pending.deadline < earliest:
                        earliest = pending.deadline
                for sequence, pending in expired:
                    del self._pending[sequence]
                    command = CommandId(pending.command).name.lower()
                    pending.failure = ResponseTimeout(
                        f"no answer to {command} (sequence {sequence}) within {pending.timeout:g} s"
                    )
                    pending.finish()
                if earliest == math.inf:
                    self._expiry_task = trio.lowlevel.current_task()

                    def abort(_: object) -> trio.lowlevel.Abort:
                        self._expiry_task = None
                        return trio.lowlevel.Abort.SUCCEEDED

                    await trio.lowlevel.wait_task_rescheduled(abort)
                else:
                    with trio.CancelScope(deadline=earliest) as self._expiry_scope:
                        await trio.sleep_forever()
                    self._expiry_scope = None
        finally:
            self._expiry_task = None
            self._expiry_scope = None

    async def close(self, reason: str) -> None:
        self.lose(reason)
        await trio.aclose_forcefully(self.stream)


# ---------------------------------------------------------------------------------------
# The session


class SmppSession:
    """One bind, kept up until `unbind()` (see the module docstring)."""

    def __init__(
        self,
        config: SmppConfig,
        index: int,
        *,
        on_delivery: DeliveryHandler,
        on_delivery_nowait: DeliveryHandlerNowait | None = None,
        on_state_change: Callable[[], None] = lambda: None,
        connect: Connect = open_tcp,
    ) -> None:
        self.config = config
        self.index = index
        self.name = f"smpp bind {index} to {config.address}"
        self.pacer = Pacer(config.tps, pause=config.throttle_pause)
        self.binds = 0  # successful binds so far
        self.max_in_flight = 0  # the most submit_sm ever outstanding at once on this bind
        self._on_delivery = on_delivery
        self._on_delivery_nowait = on_delivery_nowait
        self._handed_to_worker = 0  # deliver_sm given to the delivery worker, not answered yet
        self._on_state_change = on_state_change
        self._connect = connect
        self._window = trio.Semaphore(config.window)
        self._in_flight = 0
        self._queued = 0  # submits waiting for a window slot
        self._tx: Link | None = None
        self._links: list[Link] = []
        self._stopping = False
        self._stop_requested = trio.Event()
        self._stopped = trio.Event()
        self._attempt_scope: trio.CancelScope | None = None
        self._waiting_scopes: set[trio.CancelScope] = set()
        self._rng = random.Random()

    # -- state -----------------------------------------------------------------------------

    @property
    def bound(self) -> bool:
        """Bound and taking submits."""
        return not self._stopping and self._tx is not None and self._tx.alive

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def load(self) -> int:
        """Free window slots minus the submits already queued for them (higher is freer)."""
        return int(self._window.value) - self._queued

    @property
    def links(self) -> tuple[Link, ...]:
        return tuple(self._links)

    # -- submitting ------------------------------------------------------------------------

    async def submit(self, data: bytes) -> Pdu:
        """Send one submit_sm, as `encode_pdu` made it, and return the SMSC's answer
        (submit_sm_resp or generic_nack, whatever its status). Raises NotSent, LinkLost or
        ResponseTimeout."""
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
        status = response.command_status
        if status in THROTTLING_STATUSES:
            slowed_before = self.pacer.rate
            self.pacer.throttled(trio.current_time())
            if self.pacer.rate != slowed_before:
                log.warning(
                    "%s: SMSC answered %s: pausing %g s, rate now %g/s",
                    self.name,
                    describe_status(status),
                    self.config.throttle_pause,
                    self.pacer.rate,
                )
        elif status == codec.ESME_RINVBNDSTS:
            link.lose("the SMSC says this link is not bound (ESME_RINVBNDSTS)")
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
        """Bind, serve, rebind after losses, until `unbind()`; never raises otherwise."""
        task_status.started()
        delay = self.config.reconnect_min
        try:
            while not self._stopping:
                links: list[Link] = []
                try:
                    with trio.CancelScope() as self._attempt_scope:
                        links = await self._connect_and_bind()
                except _BindFailed as failure:
                    wait = self._jitter(delay)
                    log.warning("%s: bind failed: %s; retrying in %.1f s", self.name, failure, wait)
                    await self._sleep_unless_stopped(wait)
                    delay = min(delay * 2, self.config.reconnect_max)
                    continue
                except Exception:
                    log.exception("%s: unexpected error while binding", self.name)
                    await self._sleep_unless_stopped(self._jitter(delay))
                    delay = min(delay * 2, self.config.reconnect_max)
                    continue
                finally:
                    self._attempt_scope = None
                if self._stopping:
                    # Bound just as unbind() came (no reader runs to get an unbind_resp).
                    await self._close_all(links, "stopping")
                    break
                bound_at = trio.current_time()
                reason = await self._serve(links)
                if self._stopping:
                    break
                if trio.current_time() - bound_at >= STABLE_LINK:
                    delay = self.config.reconnect_min
                wait = self._jitter(delay)
                log.warning("%s: link lost (%s); binding again in %.1f s", self.name, reason, wait)
                await self._sleep_unless_stopped(wait)
                delay = min(delay * 2, self.config.reconnect_max)
        finally:
            self._stopped.set()

    async def unbind(self) -> None:
        """Graceful stop: no more submits, unbind every link (each answer waited for at
        most response_timeout), close. The session's run() then returns."""
        self.stop_submits()
        if self._attempt_scope is not None:
            self._attempt_scope.cancel()
        links = list(self._links)
        await self._unbind_links(links)
        for link in links:
            link.lose("unbound")
        self._on_state_change()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    def _jitter(self, delay: float) -> float:
        # Several binds (or gateways) losing the SMSC together must not come back together.
        return delay * self._rng.uniform(0.8, 1.2)

    async def _sleep_unless_stopped(self, seconds: float) -> None:
        with trio.move_on_after(seconds):
            await self._stop_requested.wait()

    # -- binding ---------------------------------------------------------------------------

    def _bind_requests(self) -> list[tuple[str, Bind]]:
        config = self.config
        if config.bind is BindMode.TRANSCEIVER:
            kinds: list[tuple[str, type[Bind]]] = [("trx", BindTransceiver)]
        else:
            kinds = [("tx", BindTransmitter), ("rx", BindReceiver)]
        return [
            (
                role,
                kind(
                    system_id=config.system_id,
                    password=config.password,
                    system_type=config.system_type,
                ),
            )
            for role, kind in kinds
        ]

    async def _connect_and_bind(self) -> list[Link]:
        links: list[Link] = []
        try:
            with trio.fail_after(self.config.bind_timeout):
                for role, request in self._bind_requests():
                    try:
                        stream = await self._connect(self.config.host, self.config.port)
                    except OSError as error:
                        raise _BindFailed(f"cannot connect: {error.strerror or error}") from None
                    link = Link(
                        stream,
                        f"{self.name} ({role})",
                        write_timeout=self.config.response_timeout,
                    )
                    links.append(link)
                    await self._bind(link, request)
        except trio.TooSlowError:
            await self._close_all(links, "bind timed out")
            raise _BindFailed(
                f"no bind answer within {self.config.bind_timeout:g} s (bind_timeout)"
            ) from None
        except BaseException:
            await self._close_all(links, "bind failed")
            raise
        return links

    async def _bind(self, link: Link, request: Bind) -> None:
        command = request.command_id.name.lower()
        numbered, data = link.codec.send_request(request)
        try:
            await link.stream.send_all(data)
            while True:
                while True:
                    try:
                        event = link.codec.next_event()
                    except codec.SmppProtocolError as error:
                        raise _BindFailed(
                            f"malformed PDU from the SMSC during {command}: {error.message}"
                        ) from None
                    if event is NEED_DATA:
                        break
                    if event.sequence_number == numbered.sequence_number and isinstance(
                        event, BindResp | GenericNack
                    ):
                        if event.command_status != codec.ESME_ROK:
                            raise _BindFailed(
                                f"{command} refused with {describe_status(event.command_status)}"
                            )
                        log.info(
                            "%s: bound (%s, SMSC system_id %r)",
                            link.name,
                            command,
                            getattr(event, "system_id", ""),
                        )
                        return
                    if isinstance(event, EnquireLink):
                        await link.stream.send_all(link.codec.send(response_for(event)))
                    else:
                        log.info("%s: ignored %r while binding", link.name, event)
                chunk = await link.stream.receive_some(RECEIVE_SIZE)
                if not chunk:
                    raise _BindFailed(f"the SMSC closed the connection before answering {command}")
                link.codec.receive_data(chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as error:
            raise _BindFailed(f"connection failed during {command}: {error!r}") from None

    async def _close_all(self, links: list[Link], reason: str) -> None:
        for link in links:
            await link.close(reason)

    async def _unbind_links(self, links: list[Link]) -> None:
        async with trio.open_nursery() as nursery:
            for link in links:
                nursery.start_soon(self._unbind_link, link)

    async def _unbind_link(self, link: Link) -> None:
        try:
            response = await link.request(Unbind(), self.config.response_timeout)
        except (NotSent, LinkLost, ResponseTimeout) as error:
            log.info("%s: unbind not answered (%s)", link.name, error)
            return
        log.info("%s: unbound (%s)", link.name, describe_status(response.command_status))

    # -- serving a bind --------------------------------------------------------------------

    async def _serve(self, links: list[Link]) -> str:
        """Run the bind's tasks until a link is lost; returns why."""
        inbound_send, inbound_receive = trio.open_memory_channel[tuple[Link, DeliverSm | DataSm]](
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
                    if self.config.enquire_link > 0:
                        nursery.start_soon(self._keep_alive, link)
                nursery.start_soon(self._deliveries, inbound_receive)
                self._links = links
                self._tx = links[0]
                self.binds += 1
                self._on_state_change()
        except Exception:
            log.exception("%s: unexpected error; closing the bind", self.name)
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

    async def _watch(self, link: Link, scope: trio.CancelScope) -> None:
        await link.lost_event.wait()
        scope.cancel()

    async def _read_loop(
        self,
        link: Link,
        inbound: trio.MemorySendChannel[tuple[Link, DeliverSm | DataSm]],
    ) -> None:
        try:
            while True:
                if not await self._drain(link, inbound):
                    return
                data = await link.stream.receive_some(RECEIVE_SIZE)
                if not data:
                    link.lose("the SMSC closed the connection")
                    return
                link.codec.receive_data(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as error:
            link.lose(f"read failed: {error!r}")

    async def _drain(
        self,
        link: Link,
        inbound: trio.MemorySendChannel[tuple[Link, DeliverSm | DataSm]],
    ) -> bool:
        """Handle every complete PDU received; False once the stream cannot be framed."""
        while True:
            try:
                event = link.codec.next_event()
            except SmppPduError as error:
                self._malformed(link, error)
                continue
            except SmppFramingError as error:
                log.warning(
                    "%s: unrecoverable framing from the SMSC: %s; closing the link",
                    link.name,
                    error.message,
                )
                await link.close_with(generic_nack_for(error), f"framing error: {error.message}")
                return False
            if event is NEED_DATA:
                return True
            await self._dispatch(link, event, inbound)

    def _malformed(self, link: Link, error: SmppPduError) -> None:
        status = describe_status(error.command_status)
        if error.command_id is not None and error.command_id & 0x80000000:
            log.warning(
                "%s: malformed response from the SMSC (%s, %s): its request is in doubt",
                link.name,
                error.message,
                status,
            )
            if error.sequence_number is not None:
                link.fail_request(
                    error.sequence_number, UnreadableResponse(f"unreadable answer: {error.message}")
                )
            return
        log.warning(
            "%s: malformed PDU from the SMSC (%s): answered generic_nack %s",
            link.name,
            error.message,
            status,
        )
        link.send_nowait(generic_nack_for(error))

    async def _dispatch(
        self,
        link: Link,
        pdu: Pdu,
        inbound: trio.MemorySendChannel[tuple[Link, DeliverSm | DataSm]],
    ) -> None:
        if pdu.is_response:
            if not link.answer(pdu):
                log.info(
                    "%s: %s for sequence %d that nothing waits for (late?): ignored",
                    link.name,
                    pdu.command_id.name.lower(),
                    pdu.sequence_number,
                )
            return
        if isinstance(pdu, DeliverSm | DataSm):
            # Handled here when it can be at once and nothing handed to the worker before it
            # is still unanswered (the answers keep the order the SMSC sent in).
            if self._on_delivery_nowait is not None and not self._handed_to_worker:
                try:
                    status = self._on_delivery_nowait(pdu)
                except Exception:
                    log.exception("%s: error handling %r; acknowledged anyway", link.name, pdu)
                    status = codec.ESME_ROK
                if status is not None:
                    link.send_nowait(response_for(pdu, status))
                    return
            self._handed_to_worker += 1
            await inbound.send((link, pdu))
        elif isinstance(pdu, EnquireLink):
            link.send_nowait(response_for(pdu))
        elif isinstance(pdu, Unbind):
            log.warning("%s: the SMSC unbound", link.name)
            await link.close_with(response_for(pdu), "the SMSC unbound")
        else:
            log.warning(
                "%s: the SMSC sent %s, which an ESME does not accept: refused",
                link.name,
                pdu.command_id.name.lower(),
            )
            try:
                refusal = response_for(pdu, codec.ESME_RINVCMDID)
            except ValueError:
                refusal = GenericNack(
                    sequence_number=pdu.sequence_number, command_status=codec.ESME_RINVCMDID
                )
            link.send_nowait(refusal)

    async def _deliveries(
        self, inbound: trio.MemoryReceiveChannel[tuple[Link, DeliverSm | DataSm]]
    ) -> None:
        async for link, pdu in inbound:
            try:
                status = await self._on_delivery(pdu)
            except Exception:
                log.exception("%s: error handling %r; acknowledged anyway", link.name, pdu)
                status = codec.ESME_ROK
            finally:
                self._handed_to_worker -= 1
            link.send_nowait(response_for(pdu, status))

    async def _keep_alive(self, link: Link) -> None:
        while True:
            await trio.sleep(self.config.enquire_link)
            try:
                await link.request(EnquireLink(), self.config.response_timeout)
            except ResponseTimeout:
                link.lose(f"no enquire_link_resp within {self.config.response_timeout:g} s")
                return
            except (NotSent, LinkLost):
                return
