"""SMPP 3.4 as a dialect of the link runtime (`smsgw.carriers.link.dialect`).

A session is one bind: one transceiver connection (``bind=trx``) or a transmitter plus a
receiver connection (``bind=tx+rx``). Keep-alive: enquire_link every ``enquire_link``
seconds on each link, no answer within ``response_timeout`` → the link is dead. The SMSC's
enquire_link is answered, its unbind answered and the link closed; deliver_sm / data_sm go to
the carrier; any other request is refused with ESME_RINVCMDID. A malformed request gets a
generic_nack carrying the codec's status; a framing error a best-effort generic_nack.

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
from typing import Final

from smsgw.carriers.base import SubmitErrorKind
from smsgw.carriers.link.dialect import KeepAlive, LoginRefused, Malformed, Route, SubmitEffect
from smsgw.carriers.smpp import codec
from smsgw.carriers.smpp.codec import (
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
    SmppProtocolError,
    Unbind,
    describe_status,
    generic_nack_for,
    response_for,
)
from smsgw.carriers.smpp.settings import BindMode, SmppConfig

__all__ = ["SmppDialect", "classify_status"]

log = logging.getLogger("smsgw.carriers.smpp")

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


_ROUTES: Final[dict[type[Pdu], Route]] = {
    DeliverSm: Route.DELIVERY,
    DataSm: Route.DELIVERY,
    EnquireLink: Route.KEEP_ALIVE,
    Unbind: Route.LOGOUT,
}


class SmppDialect:
    """SMPP for the link runtime (implements `Dialect[Pdu]`; module docstring)."""

    log = log
    peer = "SMSC"
    login_name = "bind"
    ok_status = codec.ESME_ROK
    frame_error = SmppPduError
    framing_error = SmppFramingError

    def __init__(self, config: SmppConfig) -> None:
        self.config = config
        self.keep_alive = KeepAlive(interval=config.enquire_link, timeout=config.response_timeout)

    def new_codec(self) -> SmppConnection:
        return SmppConnection()

    def command_name(self, command_id: int) -> str:
        return CommandId(command_id).name.lower()

    def frame_name(self, frame: Pdu) -> str:
        return frame.command_id.name.lower()

    def logins(self) -> list[tuple[str, Pdu]]:
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

    def login_answer(self, request: Pdu, answer: Pdu) -> str | None:
        if not isinstance(answer, BindResp | GenericNack):
            return None
        command = self.frame_name(request)
        if answer.command_status != codec.ESME_ROK:
            raise LoginRefused(f"{command} refused with {describe_status(answer.command_status)}")
        return f"{command}, SMSC system_id {getattr(answer, 'system_id', '')!r}"

    def logout(self) -> Pdu:
        return Unbind()

    def describe_answer(self, answer: Pdu) -> str:
        return describe_status(answer.command_status)

    def keep_alive_request(self) -> Pdu:
        return EnquireLink()

    def route(self, frame: Pdu) -> Route:
        return _ROUTES.get(type(frame), Route.REFUSE)

    def response_for(self, frame: Pdu, status: int) -> Pdu:
        return response_for(frame, status)

    def refusal(self, frame: Pdu) -> Pdu:
        try:
            return response_for(frame, codec.ESME_RINVCMDID)
        except ValueError:
            return GenericNack(
                sequence_number=frame.sequence_number, command_status=codec.ESME_RINVCMDID
            )

    def malformed(self, error: Exception) -> Malformed[Pdu]:
        assert isinstance(error, SmppPduError)
        status = describe_status(error.command_status)
        is_response = error.command_id is not None and bool(error.command_id & 0x80000000)
        return Malformed(
            message=error.message,
            status=status if is_response else f"generic_nack {status}",
            answered=error.sequence_number if is_response else None,
            is_response=is_response,
            reply=None if is_response else generic_nack_for(error),
        )

    def framing_reply(self, error: Exception) -> Pdu:
        assert isinstance(error, SmppFramingError)
        return generic_nack_for(error)

    def error_message(self, error: Exception) -> str:
        return error.message if isinstance(error, SmppProtocolError) else str(error)

    def submit_effect(self, response: Pdu) -> SubmitEffect:
        status = response.command_status
        if status in THROTTLING_STATUSES:
            return SubmitEffect.THROTTLE
        if status == codec.ESME_RINVBNDSTS:
            return SubmitEffect.LOSE_LINK
        return SubmitEffect.NONE
