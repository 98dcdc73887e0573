"""A CMPP 2.0 / 3.0 ISMG (China Mobile's SMS gateway) simulator on Trio, for tests and
benchmarks: the peer an SP's CMPP carrier talks to, as tests/smsc is for SMPP.

    async with running_ismg(report_delay=0.1) as ismg:
        ...connect an SP to 127.0.0.1:ismg.port...
        submit = await ismg.next_event("submit")
        await ismg.throttle(5)

What it does, per connection (a "link"):

- Login: the first PDU must be a CONNECT, within ``login_timeout``. An unknown Source_Addr
  gets Status 2, a wrong AuthenticatorSource Status 3, a Version whose layout is not in
  ``versions`` Status 4; then the link is closed. A good one gets Status 0 with the right
  AuthenticatorISMG and the link speaks the client's layout (2.x → 2.0, 3.x → 3.0).
- SUBMIT: Result 0 and a real Msg_Id (`make_msg_id` of the local time, ``gateway_id`` and a
  16-bit counter; n destinations reserve n consecutive ids). Result 8 (flow control) when
  the link already has ``window`` SUBMITs unanswered, when the SP is over ``tps``, or on
  demand (`throttle`); any Result on demand (`fail`); 11 when Msg_src is not the SP_Id and
  13 without destinations. ``latency`` delays the answer; `silent` leaves SUBMITs
  unanswered. Parts of a long message (TP_udhi) are put together: a "message" event carries
  the whole text once every part has come.
- Status reports: for each accepted SUBMIT with Registered_Delivery 1, one DELIVER per
  destination, ``report_delay`` after the SUBMIT_RESP, carrying the Msg_Id that SUBMIT_RESP
  gave and DELIVRD (or what `report` asks for). Reports and MOs are queued per SP and sent on
  ANY live link of that SP, at most ``deliver_window`` unanswered per link; held while none
  is up. A DELIVER answered with a non-zero Result is sent again after ``deliver_retry``
  (``max_deliver_attempts`` in all); one unanswered for ``deliver_timeout``, or still
  unanswered when its link goes, is sent again.
- MO (`mo`): a DELIVER with Registered_Delivery 0; a long text is split with the 6-octet UDH.
- ACTIVE_TEST is answered; the ISMG sends its own every ``active_test`` seconds (0: never)
  and on demand. TERMINATE is answered and ends the link; `terminate` sends one to every
  link. `drop` closes every link at once; `refuse` closes new connections at once.
- A malformed SUBMIT is answered with the codec's Result; any other malformed PDU is logged;
  a broken framing ends the link.

Every step is an event in `Ismg.log` (see `tests.ismg.events`); a "crash" event is a bug
in the simulator (the link it happened on is closed, the simulator goes on), which tests
should assert never happens. The control methods are async so a test drives the simulator
the same way in process and as a subprocess (`tests.ismg.process`). Not modelled: QUERY,
CANCEL, FWD and the MT/MO route commands; an SP that leaves the ISMG's ACTIVE_TEST
unanswered is not dropped.
"""

from __future__ import annotations

import collections
import datetime
import itertools
import math
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final, Literal

import attrs
import trio
import trio.testing

from smsgw.carriers.cmpp import auth, codec
from smsgw.carriers.cmpp.codec import (
    NEED_DATA,
    CmppConnection,
    CmppFramingError,
    CmppProtocolError,
    CmppVersion,
    Deliver,
    Pdu,
    StatusReport,
    Submit,
)
from smsgw.carriers.cmpp.msgid import format_msg_id, make_msg_id
from smsgw.carriers.cmpp.text import MsgFmt, decode_content, split_message, split_udh

from .events import Event, EventLog, EventWaiting, IsmgError

DEFAULT_SP_ID: Final = "901234"
DEFAULT_SECRET: Final = "secret"
RECEIVE_SIZE: Final = 64 * 1024
TERMINATE_WAIT: Final = 5.0  # seconds a TERMINATE the ISMG sent waits for its response
CLOSE_GRACE: Final = 1.0
PER_PDU_EVENTS: Final = frozenset(
    {"submit", "deliver", "deliver_resp", "active_test", "active_test_resp", "message", "queued"}
)

DeliveryKind = Literal["report", "mo"]


def _finite_non_negative(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{attribute.name} must be a finite number >= 0, not {value!r}")


def _positive(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 1:
        raise ValueError(f"{attribute.name} must be at least 1, not {value!r}")


@attrs.frozen(kw_only=True)
class IsmgOptions:
    """How the simulator behaves; the module docstring says what each does. ``port`` None
    listens nowhere (connections come through `Ismg.connect_memory`)."""

    host: str = "127.0.0.1"
    port: int | None = 0
    accounts: Mapping[str, str] = attrs.field(factory=lambda: {DEFAULT_SP_ID: DEFAULT_SECRET})
    versions: frozenset[CmppVersion] = frozenset(CmppVersion)
    gateway_id: int = attrs.field(default=123456, validator=attrs.validators.lt(1 << 22))
    window: int = attrs.field(default=16, validator=_positive)
    tps: float = attrs.field(default=0.0, validator=_finite_non_negative)  # 0: no limit
    latency: float = attrs.field(default=0.0, validator=_finite_non_negative)
    report_delay: float = attrs.field(default=0.0, validator=_finite_non_negative)
    report_stat: str = "DELIVRD"
    deliver_window: int = attrs.field(default=16, validator=_positive)
    deliver_timeout: float = attrs.field(default=60.0, validator=_finite_non_negative)
    deliver_retry: float = attrs.field(default=1.0, validator=_finite_non_negative)
    max_deliver_attempts: int = attrs.field(default=10, validator=_positive)
    active_test: float = attrs.field(default=0.0, validator=_finite_non_negative)
    login_timeout: float = attrs.field(default=10.0, validator=_finite_non_negative)
    quiet: bool = False


@attrs.define(eq=False)
class _Delivery:
    """A DELIVER waiting for, or on, a link; each sending numbers ``pdu`` afresh."""

    kind: DeliveryKind
    pdu: Deliver
    attempt: int = 0


@attrs.define(eq=False)
class _Sp:
    """One SP account: its live links and the DELIVERs waiting for one."""

    sp_id: str
    links: list[_Link] = attrs.field(factory=list)
    pending: collections.deque[_Delivery] = attrs.field(factory=collections.deque)
    tokens: float = 0.0
    refilled: float | None = None  # a full bucket to start with


@attrs.define(eq=False)
class _Link:
    number: int
    stream: trio.abc.Stream
    conn: CmppConnection = attrs.field(factory=CmppConnection)
    sp: _Sp | None = None
    out: list[bytes] = attrs.field(factory=list)
    wake: trio.Event = attrs.field(factory=trio.Event)
    closing: bool = False
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    unanswered_submits: int = 0
    delivers: dict[int, _Delivery] = attrs.field(factory=dict)  # by Sequence_Id
    # (deadline, Sequence_Id, DELIVER) in sending order, for _expire_delivers
    expiries: collections.deque[tuple[float, int, _Delivery]] = attrs.field(
        factory=collections.deque
    )
    expiry_wake: trio.Event = attrs.field(factory=trio.Event)
    requests: dict[int, str] = attrs.field(factory=dict)  # the ISMG's own, by Sequence_Id

    def send(self, pdu: Pdu) -> None:
        if not self.closing:
            self.out.append(self.conn.send(pdu))
            self.wake.set()

    def send_request(self, pdu: Pdu, kind: str) -> int:
        numbered, data = self.conn.send_request(pdu)
        self.requests[numbered.sequence_number] = kind
        if not self.closing:
            self.out.append(data)
            self.wake.set()
        return numbered.sequence_number

    def close(self) -> None:
        """Graceful: what is queued is written, then the link ends."""
        self.closing = True
        self.wake.set()


@attrs.define
class _Override:
    value: Any
    left: int


def _take(overrides: list[_Override]) -> Any:
    """The value of the oldest override with uses left (consuming one), or None."""
    while overrides:
        first = overrides[0]
        if first.left > 0:
            first.left -= 1
            if first.left == 0:
                overrides.pop(0)
            return first.value
        overrides.pop(0)
    return None


def _report_time(moment: datetime.datetime) -> str:
    return moment.strftime("%y%m%d%H%M")


def _as_count(command: Mapping[str, Any], default: int = 1) -> int:
    n = command.get("n", default)
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise IsmgError(f"n must be an integer >= 0, not {n!r}")
    return n


def _as_flag(command: Mapping[str, Any]) -> bool:
    on = command.get("on", True)
    if not isinstance(on, bool):
        raise IsmgError(f"on must be true or false, not {on!r}")
    return on


class IsmgControl(EventWaiting):
    """The control interface, the same for the simulator in process and as a subprocess:
    typed methods over `command` (one JSON-able dict, answered by a reply dict), and the
    waiting methods of `EventWaiting` over ``log``."""

    async def command(self, command: Mapping[str, Any]) -> Event:
        raise NotImplementedError

    # commands

    async def throttle(self, n: int = 1) -> None:
        """Answer the next n SUBMITs with Result 8 (flow control)."""
        await self.command({"cmd": "throttle", "n": n})

    async def fail(self, result: int, n: int = 1) -> None:
        """Answer the next n SUBMITs with ``result``."""
        await self.command({"cmd": "fail", "result": result, "n": n})

    async def report(self, stat: str, n: int = 1) -> None:
        """The next n accepted messages (each destination) end with ``stat``."""
        await self.command({"cmd": "report", "stat": stat, "n": n})

    async def login_fail(self, status: int = codec.CONNECT_AUTH_FAILED, n: int = 1) -> None:
        """Refuse the next n CONNECTs with ``status``."""
        await self.command({"cmd": "login_fail", "status": status, "n": n})

    async def silent(self, on: bool = True) -> None:
        """Stop (or resume) answering SUBMITs."""
        await self.command({"cmd": "silent", "on": on})

    async def refuse(self, on: bool = True) -> None:
        """Close (or stop closing) new connections at once."""
        await self.command({"cmd": "refuse", "on": on})

    async def drop(self) -> int:
        """Close every link now; returns how many there were."""
        dropped: int = (await self.command({"cmd": "drop"}))["dropped"]
        return dropped

    async def terminate(self) -> int:
        """Send TERMINATE on every logged-in link; returns how many."""
        sent: int = (await self.command({"cmd": "terminate"}))["sent"]
        return sent

    async def active_test(self) -> int:
        """Send ACTIVE_TEST on every logged-in link; returns how many."""
        sent: int = (await self.command({"cmd": "active_test"}))["sent"]
        return sent

    async def mo(
        self,
        source: str,
        text: str | None = None,
        *,
        destination: str = "",
        hex: str | None = None,
        msg_fmt: int | None = None,
        sp_id: str | None = None,
        service_id: str = "",
        reference: int = 0,
    ) -> bool:
        """Queue a mobile-originated message from ``source`` to the SP (``destination`` is
        the Dest_Id, its service number). ``text`` is sent as ASCII or UCS2 (split with a
        UDH when long) unless ``msg_fmt`` is given (15 encodes it as GB18030); ``hex`` sends
        raw Msg_Content. Returns True when no link of the SP is up (the MO waits)."""
        command: dict[str, Any] = {
            "cmd": "mo",
            "source": source,
            "destination": destination,
            "service_id": service_id,
            "reference": reference,
        }
        for name, value in (("text", text), ("hex", hex), ("msg_fmt", msg_fmt), ("sp_id", sp_id)):
            if value is not None:
                command[name] = value
        queued: bool = (await self.command(command))["queued"]
        return queued

    async def set(self, **values: float | str) -> None:
        """Change ``latency``, ``report_delay``, ``tps`` or ``report_stat`` at run time."""
        await self.command({"cmd": "set", **values})

    async def reset(self) -> None:
        """Forget throttle, fail, report, login_fail, silent and refuse."""
        await self.command({"cmd": "reset"})

    async def quiet(self, on: bool = True) -> None:
        """Stop (or resume) the per-PDU events."""
        await self.command({"cmd": "quiet", "on": on})

    async def stats(self) -> dict[str, int]:
        stats: dict[str, int] = (await self.command({"cmd": "stats"}))["stats"]
        return stats

    async def links(self) -> dict[str, int]:
        """Logged-in links per SP_Id, and the DELIVERs waiting for one under ``pending``."""
        links: dict[str, int] = (await self.command({"cmd": "links"}))["links"]
        return links


class Ismg(IsmgControl):
    """The simulator in process: `run` it in a nursery (``await nursery.start(ismg.run)``
    returns the port), or use `running_ismg`."""

    def __init__(self, options: IsmgOptions | None = None) -> None:
        self.options = options or IsmgOptions()
        self.log = EventLog()
        self.port = 0
        self.stats_counters: collections.Counter[str] = collections.Counter()
        self._quiet = self.options.quiet
        self._latency = self.options.latency
        self._report_delay = self.options.report_delay
        self._report_stat = self.options.report_stat
        self._tps = self.options.tps
        self._silent = False
        self._refuse = False
        self._results: list[_Override] = []
        self._stats_overrides: list[_Override] = []
        self._logins: list[_Override] = []
        self._sps = {sp_id: _Sp(sp_id) for sp_id in self.options.accounts}
        self._links: set[_Link] = set()
        self._numbers = itertools.count(1)
        self._msg_sequence = 0
        self._smsc_sequence = itertools.count(1)
        self._parts: dict[tuple[object, ...], dict[int, str]] = {}
        self._nursery: trio.Nursery | None = None

    # -- running ----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                if self.options.port is not None:
                    listeners = await trio.open_tcp_listeners(
                        self.options.port, host=self.options.host
                    )
                    self.port = listeners[0].socket.getsockname()[1]
                    await nursery.start(trio.serve_listeners, self.serve_stream, listeners)
                self.emit("listening", host=self.options.host, port=self.port)
                task_status.started(self.port)
                await trio.sleep_forever()
            finally:
                self._nursery = None

    async def connect_memory(self) -> trio.abc.Stream:
        """A connection in memory (for tests on a mock clock): the client's end."""
        assert self._nursery is not None, "the ISMG is not running"
        client, server = trio.testing.memory_stream_pair()
        self._nursery.start_soon(self.serve_stream, server)
        return client

    def emit(self, event: str, /, **fields: Any) -> None:
        if self._quiet and event in PER_PDU_EVENTS:
            return
        self.log.add({"event": event, **fields})

    # -- one connection ---------------------------------------------------------------------

    async def serve_stream(self, stream: trio.abc.Stream) -> None:
        """Serve one connection until it ends; never raises (errors become events)."""
        link = _Link(number=next(self._numbers), stream=stream)
        self.stats_counters["connections"] += 1
        self.emit("connect", session=link.number, refused=self._refuse)
        try:
            if not self._refuse:
                self._links.add(link)
                with link.scope:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._write_loop, link)
                        nursery.start_soon(self._read_loop, link, nursery)
        except Exception as exc:  # a bug here must not take the server down, nor go unseen
            self.stats_counters["crashes"] += 1
            self.emit("crash", session=link.number, message=repr(exc))
        finally:
            self._links.discard(link)
            requeued = self._unregister(link)
            with trio.move_on_after(CLOSE_GRACE) as cleanup:
                cleanup.shield = True
                await stream.aclose()
            self.stats_counters["disconnects"] += 1
            self.emit(
                "disconnect",
                session=link.number,
                sp_id=link.sp.sp_id if link.sp else None,
                requeued=requeued,
            )

    def _unregister(self, link: _Link) -> int:
        """Take the link out of its SP; its unanswered DELIVERs go back to the queue front."""
        sp = link.sp
        if sp is None:
            return 0
        if link in sp.links:
            sp.links.remove(link)
        waiting = sorted(link.delivers.items())
        link.delivers.clear()
        for _, delivery in reversed(waiting):
            sp.pending.appendleft(delivery)
        self._drain(sp)
        return len(waiting)

    async def _write_loop(self, link: _Link) -> None:
        try:
            while True:
                if link.out:
                    data = b"".join(link.out)
                    link.out.clear()
                    await link.stream.send_all(data)
                    continue
                if link.closing:
                    break
                link.wake = trio.Event()
                await link.wake.wait()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        link.scope.cancel()

    async def _read_loop(self, link: _Link, nursery: trio.Nursery) -> None:
        try:
            with trio.move_on_after(self.options.login_timeout) as login_wait:
                while link.sp is None and not link.closing:
                    if not await self._receive(link, nursery):
                        return
            if login_wait.cancelled_caught:
                self.emit("error", session=link.number, message="no CONNECT in time")
                return
            while not link.closing:
                if not await self._receive(link, nursery):
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            link.close()

    async def _receive(self, link: _Link, nursery: trio.Nursery) -> bool:
        """Read once and handle every complete PDU; False at EOF or on broken framing."""
        data = await link.stream.receive_some(RECEIVE_SIZE)
        if not data:
            return False
        link.conn.receive_data(data)
        while not link.closing:
            try:
                event = link.conn.next_event()
            except CmppProtocolError as exc:
                self._malformed(link, exc)
                if isinstance(exc, CmppFramingError):
                    return False
                continue
            if event is NEED_DATA:
                break
            if link.sp is None:
                self._login(link, event, nursery)
            else:
                self._dispatch(link, event, nursery)
        return True

    def _malformed(self, link: _Link, exc: CmppProtocolError) -> None:
        self.stats_counters["errors"] += 1
        self.emit("error", session=link.number, message=exc.message, status=exc.command_status)
        if exc.command_id == codec.CommandId.SUBMIT and exc.sequence_number is not None:
            link.send(
                codec.SubmitResp(sequence_number=exc.sequence_number, result=exc.command_status)
            )

    # -- login ------------------------------------------------------------------------------

    def _login(self, link: _Link, pdu: Pdu, nursery: trio.Nursery) -> None:
        if not isinstance(pdu, codec.Connect):
            self.emit("error", session=link.number, message=f"{type(pdu).__name__} before login")
            link.close()
            return
        version = CmppVersion.from_octet(pdu.version)
        link.conn.version = version or CmppVersion.V30
        secret = self.options.accounts.get(pdu.source_addr)
        status = _take(self._logins)
        if status is None:
            if secret is None:
                status = codec.CONNECT_BAD_SOURCE_ADDR
            elif version is None or version not in self.options.versions:
                status = codec.CONNECT_VERSION_TOO_HIGH
            elif not auth.check_authenticator_source(pdu, secret):
                status = codec.CONNECT_AUTH_FAILED
            else:
                status = codec.CONNECT_OK
        response = auth.connect_response(pdu, status, secret or "", link.conn.version)
        link.send(attrs.evolve(response, version=pdu.version))
        self.emit(
            "login",
            session=link.number,
            sp_id=pdu.source_addr,
            version=link.conn.version.label,
            version_octet=pdu.version,
            status=status,
        )
        if status != codec.CONNECT_OK:
            self.stats_counters["login_failures"] += 1
            link.close()
            return
        self.stats_counters["logins"] += 1
        sp = self._sps[pdu.source_addr]
        link.sp = sp
        sp.links.append(link)
        self._drain(sp)
        nursery.start_soon(self._expire_delivers, link)
        if self.options.active_test > 0:
            nursery.start_soon(self._keep_alive, link)

    async def _keep_alive(self, link: _Link) -> None:
        while True:
            await trio.sleep(self.options.active_test)
            self._active_test(link)

    def _active_test(self, link: _Link) -> None:
        seq = link.send_request(codec.ActiveTest(), "active_test")
        self.stats_counters["active_test_sent"] += 1
        self.emit("active_test_sent", session=link.number, seq=seq)

    # -- requests and responses from the SP -------------------------------------------------

    def _dispatch(self, link: _Link, pdu: Pdu, nursery: trio.Nursery) -> None:
        if isinstance(pdu, Submit):
            self._submit(link, pdu, nursery)
        elif isinstance(pdu, codec.DeliverResp):
            self._deliver_resp(link, pdu)
        elif isinstance(pdu, codec.ActiveTest):
            self.stats_counters["active_test"] += 1
            self.emit("active_test", session=link.number, seq=pdu.sequence_number)
            link.send(codec.response_for(pdu))
        elif isinstance(pdu, codec.ActiveTestResp):
            link.requests.pop(pdu.sequence_number, None)
            self.stats_counters["active_test_resp"] += 1
            self.emit("active_test_resp", session=link.number, seq=pdu.sequence_number)
        elif isinstance(pdu, codec.Terminate):
            self.stats_counters["terminate"] += 1
            self.emit("terminate", session=link.number, by="sp")
            link.send(codec.response_for(pdu))
            link.close()
        elif isinstance(pdu, codec.TerminateResp):
            self.emit("terminate_resp", session=link.number)
            link.close()
        else:
            self.emit("error", session=link.number, message=f"unexpected {type(pdu).__name__}")

    def _submit_result(self, link: _Link, pdu: Submit, sp: _Sp) -> int | None:
        """The Result for a SUBMIT, or None to leave it unanswered."""
        if link.unanswered_submits >= self.options.window:
            self.stats_counters["window_exceeded"] += 1
            self.emit("window", session=link.number, seq=pdu.sequence_number)
            return codec.RESULT_FLOW_CONTROL
        forced: int | None = _take(self._results)
        if forced is not None:
            return forced
        if pdu.msg_src != sp.sp_id:
            return codec.RESULT_BAD_MSG_SRC
        if not pdu.dest_terminal_ids:
            return codec.RESULT_BAD_DEST_TERMINAL_ID
        if self._tps > 0 and not self._take_token(sp):
            return codec.RESULT_FLOW_CONTROL
        if self._silent:
            return None
        return codec.RESULT_OK

    def _take_token(self, sp: _Sp) -> bool:
        now = trio.current_time()
        elapsed = math.inf if sp.refilled is None else now - sp.refilled
        sp.tokens = min(self._tps, sp.tokens + elapsed * self._tps)
        sp.refilled = now
        if sp.tokens >= 1:
            sp.tokens -= 1
            return True
        return False

    def _submit(self, link: _Link, pdu: Submit, nursery: trio.Nursery) -> None:
        sp = link.sp
        assert sp is not None
        self.stats_counters["submit"] += 1
        result = self._submit_result(link, pdu, sp)
        msg_id = self._allocate_ids(len(pdu.dest_terminal_ids)) if result == 0 else 0
        self.stats_counters[f"submit_result_{result}"] += 1
        if not self._quiet:
            self._record_submit(link, sp, pdu, result, msg_id)
        if result is None:
            link.unanswered_submits += 1
            return
        if result == 0 and self._latency > 0:
            link.unanswered_submits += 1
            nursery.start_soon(self._answer_later, link, pdu, msg_id, self._latency)
            return
        self._answer(link, pdu, msg_id, result)

    def _record_submit(
        self, link: _Link, sp: _Sp, pdu: Submit, result: int | None, msg_id: int
    ) -> None:
        """The "submit" event, and the "message" event once a message is whole."""
        concat, payload = split_udh(pdu.msg_content) if pdu.tp_udhi else (None, pdu.msg_content)
        text = decode_content(pdu.msg_fmt, payload)
        accepted = result == codec.RESULT_OK
        self.emit(
            "submit",
            session=link.number,
            sp_id=sp.sp_id,
            seq=pdu.sequence_number,
            version=link.conn.version.label,
            result=result,
            msg_id=format_msg_id(msg_id) if accepted else None,
            msg_ids=[format_msg_id(msg_id + i) for i in range(len(pdu.dest_terminal_ids))]
            if accepted
            else [],
            dests=list(pdu.dest_terminal_ids),
            pk_total=pdu.pk_total,
            pk_number=pdu.pk_number,
            tp_pid=pdu.tp_pid,
            tp_udhi=pdu.tp_udhi,
            msg_fmt=pdu.msg_fmt,
            registered_delivery=pdu.registered_delivery,
            service_id=pdu.service_id,
            msg_src=pdu.msg_src,
            src_id=pdu.src_id,
            fee_user_type=pdu.fee_user_type,
            fee_type=pdu.fee_type,
            fee_code=pdu.fee_code,
            link_id=pdu.link_id,
            content=pdu.msg_content.hex(),
            text=text,
            concat=attrs.astuple(concat) if concat else None,
        )
        if accepted:
            self._collect_parts(sp, pdu, concat, text)

    def _allocate_ids(self, count: int, now: datetime.datetime | None = None) -> int:
        """The first of ``count`` consecutive Msg_Ids (the range never wraps the 16-bit
        sequence into the gateway code)."""
        if self._msg_sequence + count > 0x10000:
            self._msg_sequence = 0
        now = now or datetime.datetime.now()
        first = make_msg_id(
            now.month,
            now.day,
            now.hour,
            now.minute,
            now.second,
            self.options.gateway_id,
            self._msg_sequence,
        )
        self._msg_sequence = (self._msg_sequence + count) & 0xFFFF
        return first

    async def _answer_later(self, link: _Link, pdu: Submit, msg_id: int, delay: float) -> None:
        await trio.sleep(delay)
        link.unanswered_submits -= 1
        self._answer(link, pdu, msg_id, codec.RESULT_OK)

    def _answer(self, link: _Link, pdu: Submit, msg_id: int, result: int) -> None:
        link.send(codec.response_for(pdu, msg_id=msg_id, result=result))
        if result != 0 or pdu.registered_delivery != 1:
            return
        sp = link.sp
        assert sp is not None
        submitted = datetime.datetime.now()
        stamp = _report_time(submitted)
        for index, dest in enumerate(pdu.dest_terminal_ids):
            stat = _take(self._stats_overrides) or self._report_stat
            report = StatusReport(
                msg_id=msg_id + index,
                stat=stat,
                submit_time=stamp,
                done_time=stamp,
                dest_terminal_id=dest,
                smsc_sequence=next(self._smsc_sequence) & 0xFFFFFFFF,
            )
            deliver = Deliver(
                msg_id=self._allocate_ids(1, submitted),
                dest_id=pdu.src_id,
                service_id=pdu.service_id,
                src_terminal_id=dest,
                registered_delivery=1,
                report=report,
            )
            self._queue_later(sp, _Delivery("report", deliver), self._report_delay)

    def _collect_parts(self, sp: _Sp, pdu: Submit, concat: Any, text: str) -> None:
        """A "message" event once a message's parts have all come (at once if single)."""
        dests = list(pdu.dest_terminal_ids)
        if concat is None or concat.total <= 1:
            self.emit("message", sp_id=sp.sp_id, dests=dests, parts=1, text=text)
            return
        key = (sp.sp_id, tuple(dests), pdu.src_id, concat.reference, concat.total)
        parts = self._parts.setdefault(key, {})
        parts[concat.seq] = text
        if len(parts) == concat.total:
            del self._parts[key]
            whole = "".join(parts[number] for number in sorted(parts))
            self.emit("message", sp_id=sp.sp_id, dests=dests, parts=concat.total, text=whole)

    # -- DELIVERs to the SP -----------------------------------------------------------------

    def _queue(self, sp: _Sp, delivery: _Delivery) -> None:
        sp.pending.append(delivery)
        self.emit("queued", kind=delivery.kind, sp_id=sp.sp_id, live_links=len(sp.links))
        self._drain(sp)

    def _queue_later(self, sp: _Sp, delivery: _Delivery, delay: float) -> None:
        if delay <= 0:
            self._queue(sp, delivery)
            return
        assert self._nursery is not None

        async def later() -> None:
            await trio.sleep(delay)
            self._queue(sp, delivery)

        self._nursery.start_soon(later)

    def _drain(self, sp: _Sp) -> None:
        """Send this SP's waiting DELIVERs on its links while they have room; called
        whenever a DELIVER is queued, answered or taken back, or a link logs in."""
        window = self.options.deliver_window
        for link in sp.links:
            while sp.pending and len(link.delivers) < window and not link.closing:
                self._send_deliver(link, sp.pending.popleft())
            if not sp.pending:
                return

    def _send_deliver(self, link: _Link, delivery: _Delivery) -> None:
        delivery.attempt += 1
        pdu = delivery.pdu
        seq, data = link.conn.number_request(link.conn.send(pdu))
        link.delivers[seq] = delivery
        link.out.append(data)
        link.wake.set()
        self.stats_counters[f"deliver_{delivery.kind}"] += 1
        if not self._quiet:
            report = pdu.report
            self.emit(
                "deliver",
                kind=delivery.kind,
                session=link.number,
                seq=seq,
                attempt=delivery.attempt,
                msg_id=format_msg_id(pdu.msg_id),
                report_msg_id=format_msg_id(report.msg_id) if report else None,
                stat=report.stat if report else None,
                source=pdu.src_terminal_id,
            )
        if self.options.deliver_timeout > 0:
            deadline = trio.current_time() + self.options.deliver_timeout
            link.expiries.append((deadline, seq, delivery))
            link.expiry_wake.set()

    async def _expire_delivers(self, link: _Link) -> None:
        """Send again, on any link, each DELIVER unanswered for ``deliver_timeout``. The
        deadlines come in sending order: one timer at a time, for the oldest."""
        expiries = link.expiries
        while True:
            if not expiries:
                link.expiry_wake = trio.Event()
                await link.expiry_wake.wait()
                continue
            deadline, seq, delivery = expiries[0]
            if link.delivers.get(seq) is delivery:
                await trio.sleep_until(deadline)
            expiries.popleft()
            if link.delivers.get(seq) is delivery and link.sp is not None:
                del link.delivers[seq]
                self.stats_counters["deliver_timeout"] += 1
                self.emit("deliver_timeout", kind=delivery.kind, session=link.number, seq=seq)
                self._queue(link.sp, delivery)

    def _deliver_resp(self, link: _Link, pdu: codec.DeliverResp) -> None:
        sp = link.sp
        assert sp is not None
        delivery = link.delivers.pop(pdu.sequence_number, None)
        if not self._quiet:
            self.emit(
                "deliver_resp",
                kind=delivery.kind if delivery else None,
                session=link.number,
                seq=pdu.sequence_number,
                result=pdu.result,
                msg_id=format_msg_id(pdu.msg_id),
            )
        if delivery is None:
            self.stats_counters["deliver_resp_unexpected"] += 1
        elif pdu.result == 0:
            self.stats_counters["deliver_ok"] += 1
        elif delivery.attempt < self.options.max_deliver_attempts:
            self.stats_counters["deliver_failed"] += 1
            self._queue_later(sp, delivery, self.options.deliver_retry)
        else:
            self.stats_counters["deliver_abandoned"] += 1
            self.emit("deliver_abandoned", kind=delivery.kind, attempt=delivery.attempt)
        self._drain(sp)  # room on this link

    # -- commands ---------------------------------------------------------------------------

    async def command(self, command: Mapping[str, Any]) -> Event:
        """Run one control command; IsmgError when it is refused."""
        name = command.get("cmd")
        handler = _COMMANDS.get(name) if isinstance(name, str) else None
        if handler is None:
            raise IsmgError(f"unknown command {name!r}")
        try:
            fields = handler(self, command)
        except (KeyError, TypeError, ValueError) as exc:
            raise IsmgError(f"{name}: {exc!r}") from None
        return {"event": "reply", "cmd": name, "ok": True, **fields}

    def _logged_in(self) -> list[_Link]:
        return [link for link in self._links if link.sp is not None and not link.closing]

    def _cmd_throttle(self, command: Mapping[str, Any]) -> dict[str, Any]:
        n = _as_count(command)
        self._results.append(_Override(codec.RESULT_FLOW_CONTROL, n))
        return {"n": n}

    def _cmd_fail(self, command: Mapping[str, Any]) -> dict[str, Any]:
        n = _as_count(command)
        result = int(command["result"])
        if not 0 < result <= 0xFF:
            raise ValueError(f"result {result} is not 1..255")
        self._results.append(_Override(result, n))
        return {"n": n, "result": result}

    def _cmd_report(self, command: Mapping[str, Any]) -> dict[str, Any]:
        n = _as_count(command)
        stat = str(command["stat"])
        if not 0 < len(stat) <= 7:
            raise ValueError(f"stat {stat!r} is not 1..7 characters")
        self._stats_overrides.append(_Override(stat, n))
        return {"n": n, "stat": stat}

    def _cmd_login_fail(self, command: Mapping[str, Any]) -> dict[str, Any]:
        n = _as_count(command)
        status = int(command.get("status", codec.CONNECT_AUTH_FAILED))
        self._logins.append(_Override(status, n))
        return {"n": n, "status": status}

    def _cmd_silent(self, command: Mapping[str, Any]) -> dict[str, Any]:
        self._silent = _as_flag(command)
        return {"on": self._silent}

    def _cmd_refuse(self, command: Mapping[str, Any]) -> dict[str, Any]:
        self._refuse = _as_flag(command)
        return {"on": self._refuse}

    def _cmd_quiet(self, command: Mapping[str, Any]) -> dict[str, Any]:
        self._quiet = _as_flag(command)
        return {"on": self._quiet}

    def _cmd_drop(self, command: Mapping[str, Any]) -> dict[str, Any]:
        links = list(self._links)
        for link in links:
            link.scope.cancel()
        self.stats_counters["drops"] += len(links)
        return {"dropped": len(links)}

    def _cmd_terminate(self, command: Mapping[str, Any]) -> dict[str, Any]:
        links = self._logged_in()
        for link in links:
            link.send_request(codec.Terminate(), "terminate")
            self.emit("terminate", session=link.number, by="ismg")
            assert self._nursery is not None
            self._nursery.start_soon(self._end_after, link, TERMINATE_WAIT)
        return {"sent": len(links)}

    async def _end_after(self, link: _Link, delay: float) -> None:
        await trio.sleep(delay)
        link.close()

    def _cmd_active_test(self, command: Mapping[str, Any]) -> dict[str, Any]:
        links = self._logged_in()
        for link in links:
            self._active_test(link)
        return {"sent": len(links)}

    def _cmd_mo(self, command: Mapping[str, Any]) -> dict[str, Any]:
        sp_id = str(command.get("sp_id", next(iter(self.options.accounts))))
        sp = self._sps[sp_id]
        source = str(command["source"])
        msg_fmt = command.get("msg_fmt")
        reference = int(command.get("reference", 0))
        if "hex" in command:
            contents = [(int(msg_fmt or 0), 0, bytes.fromhex(str(command["hex"])))]
        elif msg_fmt is None:
            contents = [
                (segment.msg_fmt, segment.tp_udhi, segment.content)
                for segment in split_message(str(command["text"]), reference)
            ]
        else:
            encoding = {MsgFmt.ASCII: "ascii", MsgFmt.UCS2: "utf-16-be", MsgFmt.GB: "gb18030"}
            contents = [(int(msg_fmt), 0, str(command["text"]).encode(encoding[msg_fmt]))]
        for fmt, udhi, content in contents:
            deliver = Deliver(
                msg_id=self._allocate_ids(1),
                dest_id=str(command.get("destination", "")),
                service_id=str(command.get("service_id", "")),
                tp_udhi=udhi,
                msg_fmt=fmt,
                src_terminal_id=source,
                msg_content=content,
            )
            self._queue(sp, _Delivery("mo", deliver))
        self.stats_counters["mo"] += 1
        return {"queued": not sp.links, "parts": len(contents)}

    def _cmd_set(self, command: Mapping[str, Any]) -> dict[str, Any]:
        changed: dict[str, Any] = {}
        for name in ("latency", "report_delay", "tps"):
            if name in command:
                value = float(command[name])
                if not (math.isfinite(value) and value >= 0):
                    raise ValueError(f"{name} must be a finite number >= 0")
                setattr(self, f"_{name}", value)
                changed[name] = value
        if "report_stat" in command:
            self._report_stat = changed["report_stat"] = str(command["report_stat"])
        return changed

    def _cmd_reset(self, command: Mapping[str, Any]) -> dict[str, Any]:
        self._results.clear()
        self._stats_overrides.clear()
        self._logins.clear()
        self._silent = self._refuse = False
        return {}

    def _cmd_stats(self, command: Mapping[str, Any]) -> dict[str, Any]:
        return {"stats": dict(self.stats_counters)}

    def _cmd_links(self, command: Mapping[str, Any]) -> dict[str, Any]:
        links = {sp.sp_id: len(sp.links) for sp in self._sps.values()}
        links["pending"] = sum(len(sp.pending) for sp in self._sps.values())
        return {"links": links}


_COMMANDS: Final = {
    "throttle": Ismg._cmd_throttle,
    "fail": Ismg._cmd_fail,
    "report": Ismg._cmd_report,
    "login_fail": Ismg._cmd_login_fail,
    "silent": Ismg._cmd_silent,
    "refuse": Ismg._cmd_refuse,
    "quiet": Ismg._cmd_quiet,
    "drop": Ismg._cmd_drop,
    "terminate": Ismg._cmd_terminate,
    "active_test": Ismg._cmd_active_test,
    "mo": Ismg._cmd_mo,
    "set": Ismg._cmd_set,
    "reset": Ismg._cmd_reset,
    "stats": Ismg._cmd_stats,
    "links": Ismg._cmd_links,
}


@asynccontextmanager
async def running_ismg(**options: Any) -> AsyncIterator[Ismg]:
    """An `Ismg` with these `IsmgOptions`, listening (port 0 by default) for the block."""
    ismg = Ismg(IsmgOptions(**options))
    unwrapped: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(ismg.run)
            try:
                yield ismg
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The simulator's tasks never raise: whatever the nursery wraps came from the block,
        # so hand it back as it was raised.
        if len(group.exceptions) != 1:
            raise
        unwrapped = group.exceptions[0]
    if unwrapped is not None:
        raise unwrapped
