"""The SMPP 3.4 carrier: `binds` sessions to one SMSC behind the `Carrier` interface.

URL and parameters: `smsgw.carriers.smpp.settings`. Binds, window, TPS, keep-alive, the
in-order parts, in-doubt mapping and draining: the link runtime (`smsgw.carriers.link`,
module `pool` for what submit() and the MO hand-over promise). The bind, enquire_link and the
command_status table: `smsgw.carriers.smpp.dialect`. What goes on the wire and how ids are
matched: `smsgw.carriers.smpp.outbound`. Stats: ``SMPP_NO_BIND``, ``SMPP_CLOSED``,
``SMPP_BAD_MESSAGE``, ``SMPP_LINK_LOST``, ``SMPP_TIMEOUT``, ``SMPP_BAD_RESPONSE``; a part
refused by the SMSC fails with the table's kind and stat = the ESME_ name.

Delivery reports: a deliver_sm or data_sm that `receipt_from_pdu` reads as a receipt becomes
a DeliveryReport(carrier_msgid = the receipted_message_id TLV, else the text's ``id:`` in
the submit's base per ``receipt_id``; delivered = the state is DELIVERED; stat = the
receipt's word; error = "err:NNN" and the network error when not delivered; at_ms = when it
arrived) on the `reports()` channel, waiting while that channel is full (the SMSC is held
back: deliver_sm_resp is sent once the report is in the channel). Intermediate receipts
(esm_class intermediate notification, or state ENROUTE) are acknowledged and not reported.
A receipt without any id is logged and acknowledged.

Mobile-originated messages: a deliver_sm / data_sm of the default message type that is not a
receipt (other types, SME acknowledgements and the like, are only acknowledged). Answered
ESME_ROK once stored, ESME_RX_T_APPN (the SMSC delivers it again later) when not.
"""

from __future__ import annotations

from collections.abc import Callable

from smsgw.carriers.base import (
    DeliveryReport,
    MobileOriginated,
    OutboundSms,
)
from smsgw.carriers.link.link import Connect, open_tcp
from smsgw.carriers.link.pool import (
    MO_BUFFER,
    REPORT_BUFFER,
    LinkPool,
    LinkStats,
    LinkSubmitError,
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
from smsgw.carriers.smpp.dialect import SmppDialect, classify_status, log
from smsgw.carriers.smpp.outbound import (
    build_submits,
    normalize_message_id,
    receipt_id_in_submit_form,
)
from smsgw.carriers.smpp.receipt import DeliveryReceipt, receipt_from_pdu
from smsgw.carriers.smpp.settings import SmppConfig, parse_smpp_url
from smsgw.encoding import decode_text

__all__ = [
    "STATS",
    "STAT_BAD_MESSAGE",
    "STAT_BAD_RESPONSE",
    "STAT_CLOSED",
    "STAT_LINK_LOST",
    "STAT_NO_BIND",
    "STAT_TIMEOUT",
    "SmppCarrier",
]

ESM_CLASS_INTERMEDIATE: int = 0x20  # esm_class message type: intermediate delivery notification

STATS = LinkStats.named("SMPP")
STAT_NO_BIND = STATS.no_bind
STAT_CLOSED = STATS.closed
STAT_BAD_MESSAGE = STATS.bad_message
STAT_LINK_LOST = STATS.link_lost
STAT_TIMEOUT = STATS.timeout
STAT_BAD_RESPONSE = STATS.bad_response


def _split_udh(payload: bytes, esm_class: int) -> tuple[bytes, bytes]:
    if not esm_class & ESM_CLASS_UDHI or not payload:
        return b"", payload
    end = 1 + payload[0]
    return payload[:end], payload[end:]


class SmppCarrier(LinkPool[Pdu]):
    """An SMSC reached over SMPP 3.4 (implements `smsgw.carriers.base.Carrier`)."""

    again_status = codec.ESME_RX_T_APPN

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
        super().__init__(
            SmppDialect(config),
            config,
            name="smpp",
            stats=STATS,
            now_ms=now_ms,
            connect=connect,
            report_buffer=report_buffer,
            mo_buffer=mo_buffer,
        )

    @classmethod
    def from_url(
        cls, url: str, *, now_ms: Callable[[], int] | None = None, connect: Connect = open_tcp
    ) -> SmppCarrier:
        return cls(parse_smpp_url(url), now_ms=now_ms, connect=connect)

    def normalize_id(self, carrier_msgid: str) -> str:
        return normalize_message_id(carrier_msgid, self.config.id_format)

    # -- submitting ------------------------------------------------------------------------

    def encode(self, sms: OutboundSms, reference: int) -> list[bytes]:
        pdus = build_submits(self.config, phone=sms.phone, text=sms.text, reference=reference)
        return [encode_pdu(pdu) for pdu in pdus]

    def accepted_id(self, response: Pdu, accepted: tuple[str, ...]) -> str:
        status = response.command_status
        if status == codec.ESME_ROK and isinstance(response, SubmitSmResp):
            if not response.message_id:
                log.warning("smpp submit_sm_resp without a message_id: reports cannot match")
            return response.message_id
        if status == codec.ESME_ROK:  # a generic_nack saying "OK" answers nothing
            status = codec.ESME_RUNKNOWNERR
        stat = describe_status(status)
        raise LinkSubmitError(
            classify_status(status),
            stat,
            f"the SMSC answered {response.command_id.name.lower()} {stat}",
            status=status,
            accepted_part_ids=accepted,
        )

    # -- receiving -------------------------------------------------------------------------

    def delivery(self, frame: Pdu) -> int | DeliveryReport | MobileOriginated:
        assert isinstance(frame, DeliverSm | DataSm)  # the dialect routes nothing else here
        return self._delivery_outcome(frame)

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
            at_ms=self.wall_clock_ms(),
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
            at_ms=self.wall_clock_ms(),
        )


def _receipt_error(receipt: DeliveryReceipt) -> str | None:
    parts = []
    if receipt.err and receipt.err.strip("0"):
        parts.append(f"err:{receipt.err}")
    if receipt.network_error is not None:
        network = receipt.network_error
        parts.append(f"network error {network.network_type}/{network.error_code}")
    return ", ".join(parts) or None
