"""The CMPP 2.0 / 3.0 carrier: `binds` connections to one ISMG behind the `Carrier` interface.

URL and parameters: `smsgw.carriers.cmpp.settings`. Connections, window, TPS, the in-order
parts, in-doubt mapping and draining: the link runtime (`smsgw.carriers.link`, module
`pool`). CONNECT, ACTIVE_TEST and the Result table: `smsgw.carriers.cmpp.dialect`. Stats of
the runtime's own failures: ``CMPP_NO_BIND``, ``CMPP_CLOSED``, ``CMPP_BAD_MESSAGE``,
``CMPP_LINK_LOST``, ``CMPP_TIMEOUT``, ``CMPP_BAD_RESPONSE``; a SUBMIT refused by the ISMG
fails with the table's kind and stat ``CMPP_RESULT_<n>``.

Submits: one SUBMIT per part to one destination (DestUsr_tl 1: no group-send id ranges):
Msg_src = the SP_Id, Src_Id = ``src_id``, Service_Id and the fee fields from the settings,
Registered_Delivery = ``registered_delivery`` (1 by default: reports requested). ASCII text
goes as Msg_Fmt 0, anything else as UCS2 (Msg_Fmt 8); a long text as parts with TP_udhi 1,
the 6-octet concatenation UDH and Pk_total / Pk_number (`smsgw.carriers.cmpp.text`). The
destination is the phone without its leading ``+``. Each accepted part's id is its
SUBMIT_RESP Msg_Id as 16 hex digits.

Status reports (a DELIVER with Registered_Delivery 1) become DeliveryReport(carrier_msgid =
the report's Msg_Id as 16 hex digits, delivered = Stat is DELIVRD, stat = Stat verbatim
(``MK:0001`` and every other code an ISMG invents are kept as they are; anything but DELIVRD
is undelivered), error = ``stat:<Stat>`` when not delivered). They are matched by Msg_Id
whichever connection brings them (the spec ties a report to the SP, not to a connection).
ACCEPTD is intermediate: acknowledged, not reported. The DELIVER_RESP follows once the
report is in the reports channel.

MOs (a DELIVER with Registered_Delivery 0): decoded by Msg_Fmt (0 ASCII, 8 UCS2, 15
GB18030) after the UDH when TP_udhi is 1, stored, and answered DELIVER_RESP Result 0 only
once stored; Result 8 (the ISMG delivers it again later) when it could not be.
"""

from __future__ import annotations

from collections.abc import Callable

from smsgw.carriers.base import DeliveryReport, MobileOriginated, OutboundSms, SubmitErrorKind
from smsgw.carriers.cmpp import codec
from smsgw.carriers.cmpp.codec import Deliver, Pdu, Submit, SubmitResp, describe_result, encode_pdu
from smsgw.carriers.cmpp.dialect import CmppDialect, classify_result, log, result_stat
from smsgw.carriers.cmpp.msgid import format_msg_id, normalize_msg_id
from smsgw.carriers.cmpp.settings import CmppConfig
from smsgw.carriers.cmpp.text import decode_content, split_message, split_udh
from smsgw.carriers.link.link import Connect, open_tcp
from smsgw.carriers.link.pool import (
    MO_BUFFER,
    REPORT_BUFFER,
    LinkPool,
    LinkStats,
    LinkSubmitError,
)

__all__ = ["STATS", "CmppCarrier", "destination_id"]

STATS = LinkStats.named("CMPP")
STAT_INTERMEDIATE = "ACCEPTD"
ESM_CLASS_UDHI = 0x40  # how a MobileOriginated says "the text had a UDH" (SMPP's esm_class)


def destination_id(phone: str, width: int) -> str:
    """The Dest_terminal_Id for a phone: its digits without the leading ``+``."""
    number = phone.strip().removeprefix("+")
    if not number.isdigit() or not number.isascii():
        raise ValueError(f"phone {phone!r} is not a number of digits")
    if len(number) > width:
        raise ValueError(f"phone {phone!r} has more than the {width} digits a terminal id holds")
    return number


class CmppCarrier(LinkPool[Pdu]):
    """An ISMG reached over CMPP (implements `smsgw.carriers.base.Carrier`)."""

    again_status = codec.RESULT_FLOW_CONTROL

    def __init__(
        self,
        config: CmppConfig,
        *,
        now_ms: Callable[[], int] | None = None,
        connect: Connect = open_tcp,
        report_buffer: int = REPORT_BUFFER,
        mo_buffer: int = MO_BUFFER,
    ) -> None:
        self.config = config
        super().__init__(
            CmppDialect(config),
            config,
            name="cmpp",
            stats=STATS,
            now_ms=now_ms,
            connect=connect,
            report_buffer=report_buffer,
            mo_buffer=mo_buffer,
        )

    def normalize_id(self, carrier_msgid: str) -> str:
        return normalize_msg_id(carrier_msgid)

    # -- submitting ------------------------------------------------------------------------

    def encode(self, sms: OutboundSms, reference: int) -> list[bytes]:
        config = self.config
        destination = destination_id(sms.phone, config.version.terminal_id_length)
        return [
            encode_pdu(
                Submit(
                    pk_total=segment.pk_total,
                    pk_number=segment.pk_number,
                    registered_delivery=config.registered_delivery,
                    service_id=config.service_id,
                    fee_user_type=config.fee_user_type,
                    fee_terminal_id=config.fee_terminal_id,
                    tp_udhi=segment.tp_udhi,
                    msg_fmt=segment.msg_fmt,
                    msg_src=config.sp_id,
                    fee_type=config.fee_type,
                    fee_code=config.fee_code,
                    src_id=config.src_id,
                    dest_terminal_ids=(destination,),
                    msg_content=segment.content,
                ),
                config.version,
            )
            for segment in split_message(sms.text, reference & 0xFF)
        ]

    def accepted_id(self, response: Pdu, accepted: tuple[str, ...]) -> str:
        if not isinstance(response, SubmitResp):
            raise LinkSubmitError(
                SubmitErrorKind.TEMPORARY,
                self.stats.bad_response,
                f"the ISMG answered a SUBMIT with {response.command_id.name}",
                accepted_part_ids=accepted,
            )
        result = response.result
        if result == codec.RESULT_OK:
            return format_msg_id(response.msg_id)
        raise LinkSubmitError(
            classify_result(result),
            result_stat(result),
            f"the ISMG answered SUBMIT_RESP Result {describe_result(result)}",
            status=result,
            accepted_part_ids=accepted,
        )

    # -- receiving -------------------------------------------------------------------------

    def delivery(self, frame: Pdu) -> int | DeliveryReport | MobileOriginated:
        assert isinstance(frame, Deliver)  # the dialect routes nothing else here
        report = frame.report
        if report is None:
            return self._mobile_originated(frame)
        if report.stat == STAT_INTERMEDIATE:
            log.debug("cmpp: intermediate report for %s", format_msg_id(report.msg_id))
            return codec.RESULT_OK
        delivered = report.delivered
        return DeliveryReport(
            carrier_msgid=format_msg_id(report.msg_id),
            delivered=delivered,
            stat=report.stat,
            error=None if delivered else f"stat:{report.stat}",
            at_ms=self.wall_clock_ms(),
        )

    def _mobile_originated(self, frame: Deliver) -> MobileOriginated:
        udh = b""
        content = frame.msg_content
        if frame.tp_udhi:
            _, text_bytes = split_udh(content)
            udh = content[: len(content) - len(text_bytes)]
            content = text_bytes
        return MobileOriginated(
            source_addr=frame.src_terminal_id,
            destination_addr=frame.dest_id,
            text=decode_content(frame.msg_fmt, content),
            data_coding=frame.msg_fmt,
            esm_class=ESM_CLASS_UDHI if frame.tp_udhi else 0,
            udh=udh,
            at_ms=self.wall_clock_ms(),
        )
