"""The SMPP 3.4 carrier: `binds` sessions to one SMSC behind the `Carrier` interface.

URL and parameters: `smsgw.carriers.smpp.settings`. Sessions, window, TPS, keep-alive and
the command_status table: `smsgw.carriers.smpp.session`. What goes on the wire and how ids
are matched: `smsgw.carriers.smpp.outbound`.

submit():
- waits at most ``bind_wait`` seconds for a bound session, then SubmitError TEMPORARY
  ``SMPP_NO_BIND``; picks the bound session with the most free window (round robin on ties).
  After `aclose` started: THROTTLED ``SMPP_CLOSED`` (never sent, so it costs no attempt).
- a text the SMSC cannot take (bad phone, too long): PERMANENT ``SMPP_BAD_MESSAGE``.
- the parts of a long message go one after the other on the same bind, each waiting for its
  submit_sm_resp, so they reach the SMSC in order and the first failure stops the rest.
  Returns SubmitAccepted(carrier_msgid = the first part's id, part_ids = every part's id).
- a part refused by the SMSC → SubmitError of the table's kind with stat = the ESME_ name;
  the link lost or no response within ``response_timeout`` once the part was written →
  IN_DOUBT (``SMPP_LINK_LOST`` / ``SMPP_TIMEOUT``; ``SMPP_BAD_RESPONSE`` when the answer
  could not be decoded); a later part that could not be sent at
  all (the bind went away between parts) → TEMPORARY ``SMPP_LINK_LOST``.
- when a later part fails after earlier ones were accepted, the failure is reported as it
  is (an `SmppSubmitError` whose `accepted_part_ids` lists the ids already accepted, named
  in `detail` as well): the pipeline decides, and a retry sends the whole message again
  with a new concatenation reference (the handset cannot mix the two sends' parts).

Delivery reports: a deliver_sm or data_sm that `receipt_from_pdu` reads as a receipt becomes
a DeliveryReport(carrier_msgid = the receipted_message_id TLV, else the text's ``id:`` in
the submit's base per ``receipt_id``; delivered = the state is DELIVERED; stat = the
receipt's word; error = "err:NNN" and the network error when not delivered; at_ms = when it
arrived) on the `reports()` channel, waiting while that channel is full (the SMSC is held
back: deliver_sm_resp is sent once the report is in the channel). Intermediate receipts
(esm_class intermediate notification, or state ENROUTE) are acknowledged and not reported.
A receipt without any id is logged and acknowledged.

Mobile-originated messages (a deliver_sm / data_sm of the default message type that is not a
receipt; other types, SME acknowledgements and the like, are only acknowledged) are logged
(numbers and length, not the text) and put on the `mo()` channel as a `ReceivedMo`; the
gateway stores them (`smsgw inbox` lists them). The deliver_sm_resp waits for the store:
ESME_ROK once the MO is durable, ESME_RX_T_APPN (the SMSC delivers it again later) when it
could not be stored, was not stored within MO_STORE_TIMEOUT_S, or the channel is full. So an
MO is never lost to a crash; one answered "again" after all may be stored twice (an MO has no
id to tell). The wait holds this bind's later deliver_sm back (their answers keep the SMSC's
order): fine at the MO rates of a notification gateway. Until something calls `mo()` (a
carrier used on its own), MOs are acknowledged and dropped.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

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
from smsgw.carriers.smpp import codec
from smsgw.carriers.smpp.codec import (
    ESM_CLASS_TYPE_MASK,
    ESM_CLASS_UDHI,
    DataSm,
    DeliverSm,
    MessageState,
    Pdu,
    SubmitSmResp,
    describe_status,
    encode_pdu,
)
from smsgw.carriers.smpp.outbound import (
    build_submits,
    normalize_message_id,
    receipt_id_in_submit_form,
)
from smsgw.carriers.smpp.receipt import DeliveryReceipt, receipt_from_pdu
from smsgw.carriers.smpp.session import (
    Connect,
    LinkLost,
    NotSent,
    ResponseTimeout,
    SmppSession,
    UnreadableResponse,
    classify_status,
    open_tcp,
)
from smsgw.carriers.smpp.settings import SmppConfig, parse_smpp_url
from smsgw.clock import WallClock
from smsgw.encoding import decode_text
from smsgw.observe import Check, Sample, gauge

__all__ = [
    "MO_BUFFER",
    "MO_STORE_TIMEOUT_S",
    "REPORT_BUFFER",
    "STAT_BAD_MESSAGE",
    "STAT_BAD_RESPONSE",
    "STAT_CLOSED",
    "STAT_LINK_LOST",
    "STAT_NO_BIND",
    "STAT_TIMEOUT",
    "SmppCarrier",
    "SmppSubmitError",
]

log = logging.getLogger("smsgw.carriers.smpp")

REPORT_BUFFER = 1024
MO_BUFFER = 1024
# How long a deliver_sm_resp waits for its MO to be stored (a group commit takes milliseconds;
# SMSCs wait tens of seconds for an answer before they resend).
MO_STORE_TIMEOUT_S = 10.0
ESM_CLASS_INTERMEDIATE: int = 0x20  # esm_class message type: intermediate delivery notification

STAT_NO_BIND = "SMPP_NO_BIND"
STAT_CLOSED = "SMPP_CLOSED"
STAT_BAD_MESSAGE = "SMPP_BAD_MESSAGE"
STAT_LINK_LOST = "SMPP_LINK_LOST"
STAT_TIMEOUT = "SMPP_TIMEOUT"
STAT_BAD_RESPONSE = "SMPP_BAD_RESPONSE"


class SmppSubmitError(SubmitError):
    """A SubmitError that also says what the SMSC answered and which parts it had accepted
    before the failure (empty for a one-part message or a failed first part)."""

    def __init__(
        self,
        kind: SubmitErrorKind,
        stat: str,
        detail: str,
        *,
        command_status: int | None = None,
        accepted_part_ids: tuple[str, ...] = (),
    ) -> None:
        if accepted_part_ids:
            detail = f"{detail} (parts already accepted: {', '.join(accepted_part_ids)})"
        super().__init__(kind, stat, detail)
        self.command_status = command_status
        self.accepted_part_ids = accepted_part_ids


def _closed_error() -> SmppSubmitError:
    return SmppSubmitError(
        SubmitErrorKind.THROTTLED, STAT_CLOSED, "smpp carrier is closing: not sent"
    )


def _split_udh(payload: bytes, esm_class: int) -> tuple[bytes, bytes]:
    if not esm_class & ESM_CLASS_UDHI or not payload:
        return b"", payload
    end = 1 + payload[0]
    return payload[:end], payload[end:]


class SmppCarrier:
    """An SMSC reached over SMPP 3.4 (implements `smsgw.carriers.base.Carrier`)."""

    def __init__(
        self,
        config: SmppConfig,
        *,
        now_ms: Callable[[], int] | None = None,
        connect: Connect = open_tcp,
        report_buffer: int = REPORT_BUFFER,
        mo_buffer: int = MO_BUFFER,
    ) -> None:
        """`now_ms` stamps reports (default: a `WallClock` made at first use, inside Trio);
        `connect(host, port)` opens a byte stream to the SMSC (tests pass in-memory ones)."""
        self.config = config
        self.name = "smpp"
        self.gives_reports = config.gives_reports
        self.concurrency = config.window * config.binds  # submit_sm outstanding at most
        self._now_ms = now_ms
        self._reports_send, self._reports_receive = trio.open_memory_channel[DeliveryReport](
            report_buffer
        )
        self._mo_send, self._mo_receive = trio.open_memory_channel[ReceivedMo](mo_buffer)
        self._mo_consumer = False
        self.sessions = [
            SmppSession(
                config,
                index,
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

    @classmethod
    def from_url(
        cls, url: str, *, now_ms: Callable[[], int] | None = None, connect: Connect = open_tcp
    ) -> SmppCarrier:
        return cls(parse_smpp_url(url), now_ms=now_ms, connect=connect)

    # -- Carrier ---------------------------------------------------------------------------

    def reports(self) -> trio.MemoryReceiveChannel[DeliveryReport]:
        return self._reports_receive

    def mo(self) -> trio.MemoryReceiveChannel[ReceivedMo]:
        """Mobile-originated messages, for ONE consumer; calling this turns buffering on."""
        self._mo_consumer = True
        return self._mo_receive

    def normalize_id(self, carrier_msgid: str) -> str:
        return normalize_message_id(carrier_msgid, self.config.id_format)

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
            raise RuntimeError("SmppCarrier.run() can only be started once")
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
            raise _closed_error()
        self._reference = (self._reference + 1) & 0xFFFF
        try:
            pdus = build_submits(
                self.config, phone=sms.phone, text=sms.text, reference=self._reference
            )
            # Any field the codec refuses fails here, before a part is sent; the bytes are
            # what goes on the wire (the session only writes the sequence number in).
            parts = [encode_pdu(pdu) for pdu in pdus]
        except ValueError as error:
            raise SmppSubmitError(SubmitErrorKind.PERMANENT, STAT_BAD_MESSAGE, str(error)) from None
        self._inflight += 1
        try:
            return await self._submit_parts(parts)
        finally:
            self._inflight -= 1
            if self._inflight == 0:
                self._drained.set()

    async def aclose(self) -> None:
        """Stop taking submits; let those in flight finish (at most response_timeout + 1 s);
        then unbind every session (each waits at most response_timeout for unbind_resp)."""
        self._closing = True
        self._state_changed()  # submits waiting for a bind give up now
        with trio.move_on_after(self.config.response_timeout + 1.0):
            while self._inflight:
                self._drained = trio.Event()
                await self._drained.wait()
        async with trio.open_nursery() as nursery:
            for session in self.sessions:
                nursery.start_soon(session.unbind)

    # -- submitting ------------------------------------------------------------------------

    def _state_changed(self) -> None:
        self._state_event.set()
        self._state_event = trio.Event()

    def _pick_session(self) -> SmppSession | None:
        if len(self.sessions) == 1:
            only = self.sessions[0]
            return only if only.bound else None
        bound = [session for session in self.sessions if session.bound]
        if not bound:
            return None
        self._turn = (self._turn + 1) % len(bound)
        rotated = bound[self._turn :] + bound[: self._turn]
        return max(rotated, key=lambda session: session.load)

    async def _submit_parts(self, pdus: list[bytes]) -> SubmitAccepted:
        session, response = await self._submit_first(pdus[0])
        accepted: tuple[str, ...] = (self._accepted_id(response, ()),)
        for pdu in pdus[1:]:
            try:
                response = await session.submit(pdu)
            except NotSent as error:
                raise SmppSubmitError(
                    SubmitErrorKind.TEMPORARY,
                    STAT_LINK_LOST,
                    f"part {len(accepted) + 1}/{len(pdus)} not sent: {error}",
                    accepted_part_ids=accepted,
                ) from None
            except (LinkLost, ResponseTimeout) as error:
                raise self._in_doubt(error, accepted) from None
            accepted += (self._accepted_id(response, accepted),)
        return SubmitAccepted(carrier_msgid=accepted[0], part_ids=accepted)

    async def _submit_first(self, pdu: bytes) -> tuple[SmppSession, Pdu]:
        deadline = trio.current_time() + self.config.bind_wait
        while True:
            if self._closing:
                raise _closed_error()
            session = self._pick_session()
            if session is not None:
                try:
                    return session, await session.submit(pdu)
                except NotSent:
                    pass  # gone before the write: another bind, or this one once back
                except (LinkLost, ResponseTimeout) as error:
                    raise self._in_doubt(error, ()) from None
            if trio.current_time() >= deadline:
                raise SmppSubmitError(
                    SubmitErrorKind.TEMPORARY,
                    STAT_NO_BIND,
                    f"no bound SMPP session to {self.config.address} "
                    f"within {self.config.bind_wait:g} s",
                )
            changed = self._state_event
            with trio.move_on_at(deadline):
                if session is None:
                    await changed.wait()
                else:
                    await trio.lowlevel.checkpoint()

    def _in_doubt(
        self, error: LinkLost | ResponseTimeout, accepted: tuple[str, ...]
    ) -> SmppSubmitError:
        if isinstance(error, ResponseTimeout):
            stat = STAT_TIMEOUT
        elif isinstance(error, UnreadableResponse):
            stat = STAT_BAD_RESPONSE
        else:
            stat = STAT_LINK_LOST
        log.warning("smpp submit in doubt (%s): %s", stat, error)
        return SmppSubmitError(
            SubmitErrorKind.IN_DOUBT, stat, str(error), accepted_part_ids=accepted
        )

    def _accepted_id(self, response: Pdu, accepted: tuple[str, ...]) -> str:
        status = response.command_status
        if status == codec.ESME_ROK and isinstance(response, SubmitSmResp):
            if not response.message_id:
                log.warning("smpp submit_sm_resp without a message_id: reports cannot match")
            return response.message_id
        if status == codec.ESME_ROK:  # a generic_nack saying "OK" answers nothing
            status = codec.ESME_RUNKNOWNERR
        stat = describe_status(status)
        raise SmppSubmitError(
            classify_status(status),
            stat,
            f"the SMSC answered {response.command_id.name.lower()} {stat}",
            command_status=status,
            accepted_part_ids=accepted,
        )

    # -- receiving -------------------------------------------------------------------------

    def _wall_clock_ms(self) -> int:
        if self._now_ms is None:
            self._now_ms = WallClock().now_ms
        return self._now_ms()

    async def _on_delivery(self, pdu: DeliverSm | DataSm) -> int:
        outcome = self._delivery_outcome(pdu)
        if isinstance(outcome, int):
            return outcome
        if isinstance(outcome, MobileOriginated):
            return await self._deliver_mo(outcome)
        try:
            await self._reports_send.send(outcome)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return self._report_not_taken(outcome)
        return codec.ESME_ROK

    def _on_delivery_nowait(self, pdu: DeliverSm | DataSm) -> int | None:
        """`_on_delivery` when it need not wait; None when the reports channel is full (the
        session then hands the PDU to `_on_delivery`, which works it out again)."""
        outcome = self._delivery_outcome(pdu)
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
        return codec.ESME_ROK

    def _report_not_taken(self, report: DeliveryReport) -> int:
        # Nobody reads reports any more (shutting down): let the SMSC send it again.
        log.warning(
            "smpp: report for %s not taken (closing); SMSC will resend", report.carrier_msgid
        )
        return codec.ESME_RX_T_APPN

    def _delivery_outcome(self, pdu: DeliverSm | DataSm) -> int | DeliveryReport | MobileOriginated:
        """What a deliver_sm / data_sm comes to: the status to answer it with at once, the
        report to put in the reports channel before answering ESME_ROK, or the MO to have
        stored before answering."""
        try:
            receipt = receipt_from_pdu(pdu)
        except Exception:
            log.exception("smpp: cannot read %s as a receipt; acknowledged", type(pdu).__name__)
            return codec.ESME_ROK
        if receipt is None:
            if pdu.esm_class & ESM_CLASS_TYPE_MASK:
                # An SME acknowledgement or a notification without receipt fields: nothing
                # a handset wrote, so not an MO.
                log.info("smpp: notification with esm_class 0x%02X acknowledged", pdu.esm_class)
                return codec.ESME_ROK
            return self._mobile_originated(pdu)
        return self._on_receipt(pdu, receipt)

    def _on_receipt(
        self, pdu: DeliverSm | DataSm, receipt: DeliveryReceipt
    ) -> int | DeliveryReport:
        message_id = receipt.message_id or ""
        if pdu.tlvs.receipted_message_id is None:
            message_id = receipt_id_in_submit_form(message_id, self.config.receipt_id)
        if not message_id.strip():
            log.warning("smpp: receipt without a message id acknowledged and ignored: %r", pdu)
            return codec.ESME_ROK
        state = receipt.state
        if (
            pdu.esm_class & ESM_CLASS_TYPE_MASK == ESM_CLASS_INTERMEDIATE
            or state is MessageState.ENROUTE
        ):
            log.debug("smpp: intermediate receipt for %s (%s)", message_id, receipt.stat_word)
            return codec.ESME_ROK
        delivered = state is MessageState.DELIVERED
        return DeliveryReport(
            carrier_msgid=message_id,
            delivered=delivered,
            stat=receipt.stat_word,
            error=None if delivered else _receipt_error(receipt),
            at_ms=self._wall_clock_ms(),
        )

    def _mobile_originated(self, pdu: DeliverSm | DataSm) -> MobileOriginated:
        udh, body = _split_udh(pdu.payload, pdu.esm_class)
        return MobileOriginated(
            source_addr=pdu.source_addr,
            destination_addr=pdu.destination_addr,
            text=decode_text(body, pdu.data_coding),
            data_coding=pdu.data_coding,
            esm_class=pdu.esm_class,
            udh=udh,
            at_ms=self._wall_clock_ms(),
        )

    def _drop_mo(self, mo: MobileOriginated) -> int:
        _log_mo(mo, "acknowledged and dropped: nothing takes MOs")
        return codec.ESME_ROK

    async def _deliver_mo(self, mo: MobileOriginated) -> int:
        if not self._mo_consumer:
            return self._drop_mo(mo)
        received = ReceivedMo(mo)
        try:
            self._mo_send.send_nowait(received)
        except trio.WouldBlock:
            _log_mo(mo, "MO channel full: answered ESME_RX_T_APPN, the SMSC will retry")
            return codec.ESME_RX_T_APPN
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return codec.ESME_RX_T_APPN
        if await received.wait_stored(MO_STORE_TIMEOUT_S):
            _log_mo(mo, "stored")
            return codec.ESME_ROK
        _log_mo(mo, "not stored: answered ESME_RX_T_APPN, the SMSC will retry")
        return codec.ESME_RX_T_APPN


def _log_mo(mo: MobileOriginated, what: str) -> None:
    # Numbers and length, never the text: it is the subscriber's.
    log.info(
        "smpp: MO from %s to %s (%d characters): %s",
        mo.source_addr,
        mo.destination_addr,
        len(mo.text),
        what,
    )


def _receipt_error(receipt: DeliveryReceipt) -> str | None:
    parts = []
    if receipt.err and receipt.err.strip("0"):
        parts.append(f"err:{receipt.err}")
    if receipt.network_error is not None:
        network = receipt.network_error
        parts.append(f"network error {network.network_type}/{network.error_code}")
    return ", ".join(parts) or None
