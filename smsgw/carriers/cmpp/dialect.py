"""CMPP 2.0 / 3.0 as a dialect of the link runtime (`smsgw.carriers.link.dialect`).

A session is one connection logged in with CONNECT (AuthenticatorSource signed with the
shared secret and the local MMDDHHMMSS). A refused CONNECT (Status other than 0) fails the
login and is retried with backoff; an AuthenticatorISMG that does not prove the secret is
only a warning (ISMGs in the field get it wrong), as is a CONNECT_RESP version other than
ours. Keep-alive by the spec's C/T/N: ACTIVE_TEST once a connection has received nothing for
``active_test`` seconds, sent again when not answered within ``active_test_timeout``, the
connection dropped after ``active_test_tries`` unanswered ones in a row. The ISMG's own
ACTIVE_TEST is answered, its TERMINATE answered and the connection closed (and opened
again); a DELIVER (report or MO) goes to the carrier; a SUBMIT or CONNECT from the ISMG is
refused with Result 2. CMPP has no generic_nack: a malformed DELIVER is answered with the
codec's Result, other malformed requests are left unanswered, and a framing error closes the
connection without a last word.

Result of a SUBMIT_RESP → the `SubmitErrorKind` the carrier reports (`classify_result`),
stat ``CMPP_RESULT_<n>``:

=========== ==============================================================================
THROTTLED   8 (flow control) — also slow the connection down (pause, half rate); not an
            attempt
TEMPORARY   3 (duplicate sequence: the retry has a new one), and every Result not listed
            here (14-99 unassigned, 100-199 vendor-defined): a retry is bounded by the
            pipeline's attempts, a wrong PERMANENT would lose the message for good
PERMANENT   1 (structure), 2 (command id), 4 (length), 5 (fee code), 6 (message too long),
            7 (Service_Id), 9 (fee number not served by this gateway), 10 (Src_Id),
            11 (Msg_src), 12 (Fee_terminal_Id), 13 (Dest_terminal_Id): the same SUBMIT
            would be refused again
=========== ==============================================================================
"""

from __future__ import annotations

import datetime
import logging
from typing import Final

from smsgw.carriers.base import SubmitErrorKind
from smsgw.carriers.cmpp import codec
from smsgw.carriers.cmpp.auth import check_authenticator_ismg, connect_request
from smsgw.carriers.cmpp.codec import (
    ActiveTest,
    ActiveTestResp,
    CmppConnection,
    CmppFramingError,
    CmppPduError,
    CmppProtocolError,
    CommandId,
    Connect,
    ConnectResp,
    Deliver,
    DeliverResp,
    Pdu,
    Submit,
    SubmitResp,
    Terminate,
    TerminateResp,
    describe_connect_status,
    describe_result,
)
from smsgw.carriers.cmpp.settings import CmppConfig
from smsgw.carriers.link.dialect import KeepAlive, LoginRefused, Malformed, Route, SubmitEffect

__all__ = ["PERMANENT_RESULTS", "CmppDialect", "classify_result", "result_stat"]

log = logging.getLogger("smsgw.carriers.cmpp")

PERMANENT_RESULTS: Final = frozenset(
    {
        codec.RESULT_BAD_STRUCTURE,
        codec.RESULT_BAD_COMMAND,
        codec.RESULT_BAD_LENGTH,
        codec.RESULT_BAD_FEE_CODE,
        codec.RESULT_MESSAGE_TOO_LONG,
        codec.RESULT_BAD_SERVICE_ID,
        codec.RESULT_FEE_NUMBER_NOT_SERVED,
        codec.RESULT_BAD_SRC_ID,
        codec.RESULT_BAD_MSG_SRC,
        codec.RESULT_BAD_FEE_TERMINAL_ID,
        codec.RESULT_BAD_DEST_TERMINAL_ID,
    }
)


def classify_result(result: int) -> SubmitErrorKind:
    """What a refused SUBMIT's Result means for the message (table above)."""
    if result == codec.RESULT_FLOW_CONTROL:
        return SubmitErrorKind.THROTTLED
    if result in PERMANENT_RESULTS:
        return SubmitErrorKind.PERMANENT
    return SubmitErrorKind.TEMPORARY


def result_stat(result: int) -> str:
    return f"CMPP_RESULT_{result}"


_ROUTES: Final[dict[type[Pdu], Route]] = {
    Deliver: Route.DELIVERY,
    ActiveTest: Route.KEEP_ALIVE,
    Terminate: Route.LOGOUT,
}


class CmppDialect:
    """CMPP for the link runtime (implements `Dialect[Pdu]`; module docstring)."""

    log = log
    peer = "ISMG"
    login_name = "connect"
    ok_status = codec.RESULT_OK
    frame_error = CmppPduError
    framing_error = CmppFramingError

    def __init__(self, config: CmppConfig) -> None:
        self.config = config
        self.keep_alive = KeepAlive(
            interval=config.active_test,
            timeout=config.active_test_timeout,
            tries=config.active_test_tries,
            when_idle=True,
        )

    def new_codec(self) -> CmppConnection:
        return CmppConnection(self.config.version)

    def command_name(self, command_id: int) -> str:
        try:
            return CommandId(command_id).name
        except ValueError:
            return f"command 0x{command_id:08X}"

    def frame_name(self, frame: Pdu) -> str:
        return frame.command_id.name

    def logins(self) -> list[tuple[str, Pdu]]:
        config = self.config
        # The ISMG checks the timestamp against its own clock: local time, by convention.
        now = datetime.datetime.now()
        return [("sp", connect_request(config.sp_id, config.secret, now, config.version))]

    def login_answer(self, request: Pdu, answer: Pdu) -> str | None:
        if not isinstance(answer, ConnectResp) or not isinstance(request, Connect):
            return None
        if answer.status != codec.CONNECT_OK:
            raise LoginRefused(
                f"CONNECT refused with Status {describe_connect_status(answer.status)}"
            )
        version = self.config.version
        if not check_authenticator_ismg(answer, request, self.config.secret, version):
            log.warning(
                "the ISMG's AuthenticatorISMG does not prove the shared secret "
                "(many ISMGs compute it wrongly): connected anyway"
            )
        if answer.version >> 4 != version >> 4:
            log.warning(
                "the ISMG answered CONNECT with version 0x%02X; speaking %s as configured",
                answer.version,
                version.label,
            )
        return f"CMPP {version.label}, ISMG version 0x{answer.version:02X}"

    def logout(self) -> Pdu:
        return Terminate()

    def describe_answer(self, answer: Pdu) -> str:
        if isinstance(answer, SubmitResp | DeliverResp):
            return f"Result {describe_result(answer.result)}"
        if isinstance(answer, ConnectResp):
            return f"Status {describe_connect_status(answer.status)}"
        return answer.command_id.name

    def keep_alive_request(self) -> Pdu:
        return ActiveTest()

    def route(self, frame: Pdu) -> Route:
        return _ROUTES.get(type(frame), Route.REFUSE)

    def response_for(self, frame: Pdu, status: int) -> Pdu:
        if isinstance(frame, Deliver):
            return DeliverResp(
                sequence_number=frame.sequence_number, msg_id=frame.msg_id, result=status
            )
        if isinstance(frame, ActiveTest):
            return ActiveTestResp(sequence_number=frame.sequence_number)
        if isinstance(frame, Terminate):
            return TerminateResp(sequence_number=frame.sequence_number)
        raise ValueError(f"{frame.command_id.name} is not answered by an SP")

    def refusal(self, frame: Pdu) -> Pdu | None:
        if isinstance(frame, Submit):
            return SubmitResp(
                sequence_number=frame.sequence_number, result=codec.RESULT_BAD_COMMAND
            )
        return None  # a CONNECT or an unknown command has no answer an SP can give

    def malformed(self, error: Exception) -> Malformed[Pdu]:
        assert isinstance(error, CmppPduError)
        command = error.command_id
        is_response = command is not None and bool(command & 0x80000000)
        reply: Pdu | None = None
        if error.sequence_number is not None and command == CommandId.DELIVER:
            reply = DeliverResp(sequence_number=error.sequence_number, result=error.command_status)
        elif error.sequence_number is not None and command == CommandId.ACTIVE_TEST:
            reply = ActiveTestResp(sequence_number=error.sequence_number)
        return Malformed(
            message=error.message,
            status=f"Result {describe_result(error.command_status)}" if reply else "nothing",
            answered=error.sequence_number if is_response else None,
            is_response=is_response,
            reply=reply,
        )

    def framing_reply(self, error: Exception) -> Pdu | None:
        return None  # CMPP has no generic_nack: the connection is just closed

    def error_message(self, error: Exception) -> str:
        return error.message if isinstance(error, CmppProtocolError) else str(error)

    def submit_effect(self, response: Pdu) -> SubmitEffect:
        if isinstance(response, SubmitResp) and response.result == codec.RESULT_FLOW_CONTROL:
            return SubmitEffect.THROTTLE
        return SubmitEffect.NONE
