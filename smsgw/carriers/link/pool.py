"""The carrier side of the link runtime: ``binds`` sessions behind the `Carrier` interface.

A dialect's carrier (`smsgw.carriers.smpp.carrier.SmppCarrier`, the CMPP one) subclasses
`LinkPool` and says only what is its protocol's: how an SMS becomes encoded submits
(`encode`), what a submit's answer means (`accepted_id`), what a delivery is (`delivery`:
a report, an MO, or a status to answer at once) and how ids are matched (`normalize_id`).

submit():
- waits at most ``bind_wait`` seconds for a logged-in session, then SubmitError TEMPORARY
  ``<P>_NO_BIND``; picks the session with the most free window (round robin on ties).
  After `aclose` started: THROTTLED ``<P>_CLOSED`` (never sent, so it costs no attempt).
- a text the operator cannot take (bad phone, too long): PERMANENT ``<P>_BAD_MESSAGE``.
- the parts of a long message go one after the other on the same session, each waiting for
  its answer, so they reach the operator in order and the first failure stops the rest.
  Returns SubmitAccepted(carrier_msgid = the first part's id, part_ids = every part's id).
- a part refused by the operator → the subclass's `LinkSubmitError`; the link lost or no
  response within ``response_timeout`` once the part was written → IN_DOUBT
  (``<P>_LINK_LOST`` / ``<P>_TIMEOUT``; ``<P>_BAD_RESPONSE`` when the answer could not be
  decoded); a later part that could not be sent at all (the session went away between
  parts) → TEMPORARY ``<P>_LINK_LOST``.
- when a later part fails after earlier ones were accepted, the failure is reported as it
  is (its `accepted_part_ids` lists the ids already accepted, named in `detail` as well):
  the pipeline decides, and a retry sends the whole message again with a new concatenation
  reference (the handset cannot mix the two sends' parts).

Deliveries: a report goes on the `reports()` channel, waiting while that channel is full
(the operator is held back: the delivery is answered once the report is in the channel). An
MO is put on the `mo()` channel as a `ReceivedMo` and answered ``ok_status`` only once its
consumer says it is durable; ``again_status`` (the operator delivers it again later) when it
could not be stored, was not stored within MO_STORE_TIMEOUT_S, or the channel is full. So an
MO is never lost to a crash; one answered "again" after all may be stored twice (an MO has no
id to tell). The wait holds this session's later deliveries back (their answers keep the
operator's order): fine at the MO rates of a notification gateway. Until something calls
`mo()` (a carrier used on its own), MOs are acknowledged and dropped.
"""

from __future__ import annotations

import abc
import random
from collections.abc import Callable
from typing import Generic, Protocol

import attrs
import trio

from smsgw.carriers.base import (
    DeliveryReport,
    MobileOriginated,
    OutboundSms,
    ReceivedMo,
    SubmitAccepted,
    SubmitError,
    SubmitErrorKind,
)
from smsgw.carriers.link.dialect import Dialect, FrameT
from smsgw.carriers.link.link import (
    Connect,
    LinkLost,
    NotSent,
    ResponseTimeout,
    UnreadableResponse,
    open_tcp,
)
from smsgw.carriers.link.session import Session
from smsgw.carriers.link.settings import LinkSettings
from smsgw.clock import WallClock
from smsgw.observe import Check, Sample, gauge

__all__ = [
    "MO_BUFFER",
    "MO_STORE_TIMEOUT_S",
    "REPORT_BUFFER",
    "LinkPool",
    "LinkStats",
    "LinkSubmitError",
    "PoolSettings",
]

REPORT_BUFFER = 1024
MO_BUFFER = 1024
# How long a delivery's answer waits for its MO to be stored (a group commit takes
# milliseconds; operators wait tens of seconds for an answer before they resend).
MO_STORE_TIMEOUT_S = 10.0


class PoolSettings(LinkSettings, Protocol):
    @property
    def gives_reports(self) -> bool: ...


@attrs.frozen
class LinkStats:
    """The `SubmitError.stat` codes of the runtime's own failures, with a dialect prefix."""

    no_bind: str
    closed: str
    bad_message: str
    link_lost: str
    timeout: str
    bad_response: str

    @classmethod
    def named(cls, prefix: str) -> LinkStats:
        return cls(
            no_bind=f"{prefix}_NO_BIND",
            closed=f"{prefix}_CLOSED",
            bad_message=f"{prefix}_BAD_MESSAGE",
            link_lost=f"{prefix}_LINK_LOST",
            timeout=f"{prefix}_TIMEOUT",
            bad_response=f"{prefix}_BAD_RESPONSE",
        )


class LinkSubmitError(SubmitError):
    """A SubmitError that also says what the operator answered (`status`: SMPP's
    command_status, CMPP's Result) and which parts it had accepted before the failure
    (empty for a one-part message or a failed first part)."""

    def __init__(
        self,
        kind: SubmitErrorKind,
        stat: str,
        detail: str,
        *,
        status: int | None = None,
        accepted_part_ids: tuple[str, ...] = (),
    ) -> None:
        if accepted_part_ids:
            detail = f"{detail} (parts already accepted: {', '.join(accepted_part_ids)})"
        super().__init__(kind, stat, detail)
        self.status = status
        self.accepted_part_ids = accepted_part_ids


class LinkPool(abc.ABC, Generic[FrameT]):
    """Sessions of one dialect to one operator (implements `smsgw.carriers.base.Carrier`
    and `ReceivesMo`; module docstring)."""

    again_status: int  # a delivery's answer meaning "send it again later"

    def __init__(
        self,
        dialect: Dialect[FrameT],
        config: PoolSettings,
        *,
        name: str,
        stats: LinkStats,
        now_ms: Callable[[], int] | None = None,
        connect: Connect = open_tcp,
        report_buffer: int = REPORT_BUFFER,
        mo_buffer: int = MO_BUFFER,
    ) -> None:
        """`now_ms` stamps reports (default: a `WallClock` made at first use, inside Trio);
        `connect(host, port)` opens a byte stream to the operator (tests pass in-memory
        ones)."""
        self.name = name
        self.gives_reports = config.gives_reports
        self.concurrency = config.window * config.binds  # submits outstanding at most
        self.stats = stats
        self._dialect = dialect
        self._settings = config
        self._log = dialect.log
        self._now_ms = now_ms
        self._reports_send, self._reports_receive = trio.open_memory_channel[DeliveryReport](
            report_buffer
        )
        self._mo_send, self._mo_receive = trio.open_memory_channel[ReceivedMo](mo_buffer)
        self._mo_consumer = False
        self.sessions = [
            Session(
                dialect,
                config,
                f"{name} {dialect.login_name} {index} to {config.address}",
                on_delivery=self._on_delivery,
                on_delivery_nowait=self._on_delivery_nowait,
                on_state_change=self._state_changed,
                connect=connect,
            )
            for index in range(1, config.binds + 1)
        ]
        self._state_event = trio.Event()
        self._reference = random.randrange(0x10000)
        self._turn = 0
        self._closing = False
        self._inflight = 0
        self._drained = trio.Event()
        self._run_started = False

    # -- what a dialect's carrier says -----------------------------------------------------

    @abc.abstractmethod
    def encode(self, sms: OutboundSms, reference: int) -> list[bytes]:
        """The encoded submits of one message, in send order (any sequence numbers);
        `reference` tells its parts from another message's. ValueError: it cannot be sent."""

    @abc.abstractmethod
    def accepted_id(self, response: FrameT, accepted: tuple[str, ...]) -> str:
        """The operator's id from a submit's answer; raises LinkSubmitError when refused."""

    @abc.abstractmethod
    def delivery(self, frame: FrameT) -> int | DeliveryReport | MobileOriginated:
        """What a delivery comes to: the status to answer it with at once, the report to
        put in the reports channel before answering, or the MO to have stored first."""

    @abc.abstractmethod
    def normalize_id(self, carrier_msgid: str) -> str: ...

    # -- Carrier ---------------------------------------------------------------------------

    def reports(self) -> trio.MemoryReceiveChannel[DeliveryReport]:
        return self._reports_receive

    def mo(self) -> trio.MemoryReceiveChannel[ReceivedMo]:
        """Mobile-originated messages, for ONE consumer; calling this turns buffering on."""
        self._mo_consumer = True
        return self._mo_receive

    @property
    def bound_sessions(self) -> int:
        return sum(session.bound for session in self.sessions)

    async def samples(self) -> list[Sample]:
        return [
            gauge("smsgw_carrier_binds", "binds configured", len(self.sessions)),
            gauge("smsgw_carrier_binds_up", "binds up", self.bound_sessions),
        ]

    async def checks(self) -> list[Check]:
        # Any bind up sends for the whole gateway: the others' messages wait in the store.
        up = self.bound_sessions
        return [Check("carrier", up > 0, f"{up}/{len(self.sessions)} binds up", any_worker=True)]

    async def wait_bound(self, count: int | None = None) -> None:
        """Wait until `count` sessions (default: all) are bound; for tests and start-up."""
        wanted = len(self.sessions) if count is None else count
        while self.bound_sessions < wanted:
            await self._state_event.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self._run_started:
            raise RuntimeError(f"the {self.name} carrier's run() can only be started once")
        self._run_started = True
        try:
            async with trio.open_nursery() as nursery:
                for session in self.sessions:
                    await nursery.start(session.run)
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._reports_send.close()
            self._mo_send.close()

    async def submit(self, sms: OutboundSms) -> SubmitAccepted:
        if self._closing:
            raise self._closed_error()
        self._reference = (self._reference + 1) & 0xFFFF
        try:
            # Any field the codec refuses fails here, before a part is sent; the bytes are
            # what goes on the wire (the session only writes the sequence number in).
            parts = self.encode(sms, self._reference)
        except ValueError as error:
            raise LinkSubmitError(
                SubmitErrorKind.PERMANENT, self.stats.bad_message, str(error)
            ) from None
        self._inflight += 1
        try:
            return await self._submit_parts(parts)
        finally:
            self._inflight -= 1
            if self._inflight == 0:
                self._drained.set()

    async def aclose(self) -> None:
        """Stop taking submits; let those in flight finish (at most response_timeout + 1 s);
        then log every session out (each waits at most response_timeout for the answer)."""
        self._closing = True
        self._state_changed()  # submits waiting for a session give up now
        with trio.move_on_after(self._settings.response_timeout + 1.0):
            while self._inflight:
                self._drained = trio.Event()
                await self._drained.wait()
        async with trio.open_nursery() as nursery:
            for session in self.sessions:
                nursery.start_soon(session.unbind)

    # -- submitting ------------------------------------------------------------------------

    def _closed_error(self) -> LinkSubmitError:
        return LinkSubmitError(
            SubmitErrorKind.THROTTLED,
            self.stats.closed,
            f"{self.name} carrier is closing: not sent",
        )

    def _state_changed(self) -> None:
        self._state_event.set()
        self._state_event = trio.Event()

    def _pick_session(self) -> Session[FrameT] | None:
        if len(self.sessions) == 1:
            only = self.sessions[0]
            return only if only.bound else None
        bound = [session for session in self.sessions if session.bound]
        if not bound:
            return None
        self._turn = (self._turn + 1) % len(bound)
        rotated = bound[self._turn :] + bound[: self._turn]
        return max(rotated, key=lambda session: session.load)

    async def _submit_parts(self, parts: list[bytes]) -> SubmitAccepted:
        session, response = await self._submit_first(parts[0])
        accepted: tuple[str, ...] = (self.accepted_id(response, ()),)
        for part in parts[1:]:
            try:
                response = await session.submit(part)
            except NotSent as error:
                raise LinkSubmitError(
                    SubmitErrorKind.TEMPORARY,
                    self.stats.link_lost,
                    f"part {len(accepted) + 1}/{len(parts)} not sent: {error}",
                    accepted_part_ids=accepted,
                ) from None
            except (LinkLost, ResponseTimeout) as error:
                raise self._in_doubt(error, accepted) from None
            accepted += (self.accepted_id(response, accepted),)
        return SubmitAccepted(carrier_msgid=accepted[0], part_ids=accepted)

    async def _submit_first(self, part: bytes) -> tuple[Session[FrameT], FrameT]:
        deadline = trio.current_time() + self._settings.bind_wait
        while True:
            if self._closing:
                raise self._closed_error()
            session = self._pick_session()
            if session is not None:
                try:
                    return session, await session.submit(part)
                except NotSent:
                    pass  # gone before the write: another session, or this one once back
                except (LinkLost, ResponseTimeout) as error:
                    raise self._in_doubt(error, ()) from None
            if trio.current_time() >= deadline:
                raise LinkSubmitError(
                    SubmitErrorKind.TEMPORARY,
                    self.stats.no_bind,
                    f"no bound {self.name} session to {self._settings.address} "
                    f"within {self._settings.bind_wait:g} s",
                )
            changed = self._state_event
            with trio.move_on_at(deadline):
                if session is None:
                    await changed.wait()
                else:
                    await trio.lowlevel.checkpoint()

    def _in_doubt(
        self, error: LinkLost | ResponseTimeout, accepted: tuple[str, ...]
    ) -> LinkSubmitError:
        if isinstance(error, ResponseTimeout):
            stat = self.stats.timeout
        elif isinstance(error, UnreadableResponse):
            stat = self.stats.bad_response
        else:
            stat = self.stats.link_lost
        self._log.warning("%s submit in doubt (%s): %s", self.name, stat, error)
        return LinkSubmitError(
            SubmitErrorKind.IN_DOUBT, stat, str(error), accepted_part_ids=accepted
        )

    # -- receiving -------------------------------------------------------------------------

    def wall_clock_ms(self) -> int:
        if self._now_ms is None:
            self._now_ms = WallClock().now_ms
        return self._now_ms()

    async def _on_delivery(self, frame: FrameT) -> int:
        outcome = self.delivery(frame)
        if isinstance(outcome, int):
            return outcome
        if isinstance(outcome, MobileOriginated):
            return await self._deliver_mo(outcome)
        try:
            await self._reports_send.send(outcome)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return self._report_not_taken(outcome)
        return self._dialect.ok_status

    def _on_delivery_nowait(self, frame: FrameT) -> int | None:
        """`_on_delivery` when it need not wait; None when the reports channel is full (the
        session then hands the frame to `_on_delivery`, which works it out again)."""
        outcome = self.delivery(frame)
        if isinstance(outcome, int):
            return outcome
        if isinstance(outcome, MobileOriginated):
            # Answered once stored: `_on_delivery` waits for that (none to wait for: dropped).
            return None if self._mo_consumer else self._drop_mo(outcome)
        try:
            self._reports_send.send_nowait(outcome)
        except trio.WouldBlock:
            return None
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return self._report_not_taken(outcome)
        return self._dialect.ok_status

    def _report_not_taken(self, report: DeliveryReport) -> int:
        # Nobody reads reports any more (shutting down): let the operator send it again.
        self._log.warning(
            "%s: report for %s not taken (closing); the %s will resend",
            self.name,
            report.carrier_msgid,
            self._dialect.peer,
        )
        return self.again_status

    def _drop_mo(self, mo: MobileOriginated) -> int:
        self._log_mo(mo, "acknowledged and dropped: nothing takes MOs")
        return self._dialect.ok_status

    async def _deliver_mo(self, mo: MobileOriginated) -> int:
        if not self._mo_consumer:
            return self._drop_mo(mo)
        received = ReceivedMo(mo)
        try:
            self._mo_send.send_nowait(received)
        except trio.WouldBlock:
            self._log_mo(mo, "MO channel full: answered 'send again later'")
            return self.again_status
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return self.again_status
        if await received.wait_stored(MO_STORE_TIMEOUT_S):
            self._log_mo(mo, "stored")
            return self._dialect.ok_status
        self._log_mo(mo, "not stored: answered 'send again later'")
        return self.again_status

    def _log_mo(self, mo: MobileOriginated, what: str) -> None:
        # Numbers and length, never the text: it is the subscriber's.
        self._log.info(
            "%s: MO from %s to %s (%d characters): %s",
            self.name,
            mo.sender,
            mo.recipient,
            len(mo.text),
            what,
        )
