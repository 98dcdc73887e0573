"""Sans-IO CMPP 2.0 / 3.0 codec: typed PDUs, their wire encoding, and a byte-stream connection.

The same shape as `smsgw.carriers.smpp.codec` (h11's style): feed received bytes to
``CmppConnection.receive_data``, pull typed PDUs with ``next_event`` until it returns
``NEED_DATA``, and write what ``send`` returns. Every PDU is a frozen attrs class carrying
``sequence_number`` (CMPP's Sequence_Id) and, from its class, ``command_id`` and
``is_response``. The 12-byte header is Total_Length, Command_Id, Sequence_Id (big-endian).

One codec serves both versions; ``CmppConnection.version`` says which layout to *write*.
Field widths differ (terminal ids 21 vs 32 octets, the status / result u8 vs u32, Reserve 8
vs LinkID 20, Fee_terminal_type / Src_terminal_type / Dest_terminal_type only in 3.0, the
status report 60 vs 71 octets). Reading is lenient about the version, because ISMGs and SPs
in the field mix them: a response's width is taken from its length, a SUBMIT or DELIVER is
read in the connection's version and then in the other one when its length does not fit,
and a status report is read by its size (60 or 71). Version-specific fields missing from the
layout read as their defaults; 2.0's Reserve is read into ``link_id``.

Decoding is strict about structure and lenient about content: a PDU whose fields do not fit
its Total_Length raises ``CmppPduError`` (the bad PDU is consumed, the stream goes on); a
Total_Length that cannot be trusted raises ``CmppFramingError`` and the connection is
unusable from then on. Octet strings are fixed-width, NUL-padded, and read up to their first
NUL as Latin-1 (one character per octet) so any byte sequence decodes.
"""

from __future__ import annotations

import enum
import struct
from typing import Any, ClassVar, Final, Self, TypeVar, overload

import attrs

from smsgw.sansio import NEED_DATA, LengthPrefixedStream, NeedData, PduProtocolError

__all__ = [
    "HEADER_LENGTH",
    "MAX_PDU_LENGTH",
    "MAX_SEQUENCE_NUMBER",
    "NEED_DATA",
    "PDU_CLASSES",
    "ActiveTest",
    "ActiveTestResp",
    "CmppConnection",
    "CmppFramingError",
    "CmppPduError",
    "CmppProtocolError",
    "CmppVersion",
    "CommandId",
    "Connect",
    "ConnectResp",
    "Deliver",
    "DeliverResp",
    "Header",
    "NeedData",
    "Pdu",
    "StatusReport",
    "Submit",
    "SubmitResp",
    "Terminate",
    "TerminateResp",
    "decode_pdu",
    "describe_connect_status",
    "describe_result",
    "encode_pdu",
    "read_header",
    "response_for",
]

HEADER_LENGTH: Final = 12
# gocmpp's largest packets are 2477 (2.0) and 3335 (3.0) octets: a SUBMIT to 99 terminals.
MAX_PDU_LENGTH: Final = 4096
# Sequence_Id is a u32, but Java ISMGs keep it in a signed int: stay below 2**31.
MAX_SEQUENCE_NUMBER: Final = 0x7FFFFFFF
MAX_DESTINATIONS: Final = 99  # DestUsr_tl: "小于100个用户"
MAX_ASCII_CONTENT: Final = 159  # Msg_Fmt 0: fewer than 160 octets
MAX_CONTENT: Final = 140  # every other Msg_Fmt
_RESPONSE_BIT: Final = 0x80000000

_HEADER = struct.Struct(">III")
_U32 = struct.Struct(">I")


class CmppVersion(enum.IntEnum):
    """The protocol version, as its Version octet (high nibble major, low nibble minor)."""

    V20 = 0x20
    V30 = 0x30

    @classmethod
    def from_octet(cls, value: int) -> CmppVersion | None:
        """The layout a Version octet asks for by its major number (0x21, as pycmpp sends,
        is 2.0's layout), or None for a major version this codec does not speak."""
        return {2: cls.V20, 3: cls.V30}.get(value >> 4)

    @property
    def other(self) -> CmppVersion:
        return CmppVersion.V30 if self is CmppVersion.V20 else CmppVersion.V20

    @property
    def terminal_id_length(self) -> int:
        return 21 if self is CmppVersion.V20 else 32

    @property
    def status_length(self) -> int:
        """Width of CONNECT_RESP's Status and of SUBMIT_RESP's / DELIVER_RESP's Result."""
        return 1 if self is CmppVersion.V20 else 4

    @property
    def reserve_length(self) -> int:
        """2.0's Reserve or 3.0's LinkID, the last field of SUBMIT and DELIVER."""
        return 8 if self is CmppVersion.V20 else 20

    @property
    def report_length(self) -> int:
        return 60 if self is CmppVersion.V20 else 71

    @property
    def label(self) -> str:
        return "2.0" if self is CmppVersion.V20 else "3.0"


class CommandId(enum.IntEnum):
    CONNECT = 0x00000001
    CONNECT_RESP = 0x80000001
    TERMINATE = 0x00000002
    TERMINATE_RESP = 0x80000002
    SUBMIT = 0x00000004
    SUBMIT_RESP = 0x80000004
    DELIVER = 0x00000005
    DELIVER_RESP = 0x80000005
    ACTIVE_TEST = 0x00000008
    ACTIVE_TEST_RESP = 0x80000008


# CONNECT_RESP Status (CMPP 3.0 §8.4.1.2). Plain ints: an ISMG may answer any value.
CONNECT_OK: Final = 0
CONNECT_BAD_STRUCTURE: Final = 1
CONNECT_BAD_SOURCE_ADDR: Final = 2
CONNECT_AUTH_FAILED: Final = 3
CONNECT_VERSION_TOO_HIGH: Final = 4

_CONNECT_STATUS_NAMES: Final[dict[int, str]] = {
    CONNECT_OK: "ok",
    CONNECT_BAD_STRUCTURE: "bad structure",
    CONNECT_BAD_SOURCE_ADDR: "illegal Source_Addr",
    CONNECT_AUTH_FAILED: "authentication failed",
    CONNECT_VERSION_TOO_HIGH: "version too high",
}

# SUBMIT_RESP / DELIVER_RESP Result (CMPP 3.0 §8.4.3.2, §8.4.5.2; 100-199 vendor-defined).
RESULT_OK: Final = 0
RESULT_BAD_STRUCTURE: Final = 1
RESULT_BAD_COMMAND: Final = 2
RESULT_DUPLICATE_SEQUENCE: Final = 3
RESULT_BAD_LENGTH: Final = 4
RESULT_BAD_FEE_CODE: Final = 5
RESULT_MESSAGE_TOO_LONG: Final = 6
RESULT_BAD_SERVICE_ID: Final = 7
RESULT_FLOW_CONTROL: Final = 8
RESULT_FEE_NUMBER_NOT_SERVED: Final = 9
RESULT_BAD_SRC_ID: Final = 10
RESULT_BAD_MSG_SRC: Final = 11
RESULT_BAD_FEE_TERMINAL_ID: Final = 12
RESULT_BAD_DEST_TERMINAL_ID: Final = 13

_RESULT_NAMES: Final[dict[int, str]] = {
    RESULT_OK: "ok",
    RESULT_BAD_STRUCTURE: "bad structure",
    RESULT_BAD_COMMAND: "bad command id",
    RESULT_DUPLICATE_SEQUENCE: "duplicate sequence",
    RESULT_BAD_LENGTH: "bad length",
    RESULT_BAD_FEE_CODE: "bad fee code",
    RESULT_MESSAGE_TOO_LONG: "message too long",
    RESULT_BAD_SERVICE_ID: "bad Service_Id",
    RESULT_FLOW_CONTROL: "flow control",
    RESULT_FEE_NUMBER_NOT_SERVED: "fee number not served by this gateway",
    RESULT_BAD_SRC_ID: "bad Src_Id",
    RESULT_BAD_MSG_SRC: "bad Msg_src",
    RESULT_BAD_FEE_TERMINAL_ID: "bad Fee_terminal_Id",
    RESULT_BAD_DEST_TERMINAL_ID: "bad Dest_terminal_Id",
}


def describe_result(result: int) -> str:
    """``"8 (flow control)"``: a SUBMIT_RESP / DELIVER_RESP Result for logs."""
    name = _RESULT_NAMES.get(result)
    if name is None:
        name = "vendor-defined" if 100 <= result <= 199 else "unknown"
    return f"{result} ({name})"


def describe_connect_status(status: int) -> str:
    """``"3 (authentication failed)"``: a CONNECT_RESP Status for logs."""
    return f"{status} ({_CONNECT_STATUS_NAMES.get(status, 'other error')})"


# ---------------------------------------------------------------------------------------
# Errors


class CmppProtocolError(PduProtocolError):
    """Malformed input. ``command_status`` is the Result (or CONNECT Status) to answer with
    in the matching response, when ``command_id`` is a request that has one; CMPP has no
    generic_nack, so an unknown command cannot be answered. ``sequence_number`` is None
    when the header could not be read. ``recoverable`` says whether the stream can go on
    with the next PDU."""

    def __repr__(self) -> str:
        command = f"0x{self.command_id:08X}" if self.command_id is not None else None
        return (
            f"{type(self).__name__}({self.message!r}, command_status={self.command_status}, "
            f"sequence_number={self.sequence_number}, command_id={command})"
        )


class CmppFramingError(CmppProtocolError):
    """Total_Length cannot be trusted: PDU boundaries are lost, close the connection."""

    recoverable = False


class CmppPduError(CmppProtocolError):
    """One PDU was malformed but its length was sane: it was skipped, the stream goes on."""

    recoverable = True


class _BodyError(Exception):
    """Raised while reading a body; turned into CmppPduError with the header's details."""

    def __init__(self, message: str, command_status: int = RESULT_BAD_STRUCTURE) -> None:
        super().__init__(message)
        self.message = message
        self.command_status = command_status


# ---------------------------------------------------------------------------------------
# Wire primitives


def _uint(value: int, size: int, field: str) -> int:
    """``value``, checked to fit an unsigned integer of ``size`` octets."""
    if not 0 <= value < 1 << (8 * size):
        raise ValueError(f"{field}={value} does not fit in {size} octet(s)")
    return value


def _octet_string(value: str, width: int, field: str) -> bytes:
    """``value`` as Latin-1, checked to fit ``width`` octets (unpadded: struct pads)."""
    try:
        encoded = value.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"{field}={value!r} has characters outside Latin-1") from None
    if b"\x00" in encoded:
        raise ValueError(f"{field}={value!r} contains a NUL")
    if len(encoded) > width:
        raise ValueError(f"{field}={value!r} is longer than {width} octets")
    return encoded


def _text(raw: bytes) -> str:
    """A fixed-width octet string read: up to its first NUL (padding), as Latin-1."""
    return raw.partition(b"\x00")[0].decode("latin-1")


class _Reader:
    """Reads the fields of one PDU body."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def _short(self, length: int, field: str) -> _BodyError:
        return _BodyError(
            f"body ends inside {field} ({length} octets wanted, {self.remaining} left)",
            RESULT_BAD_LENGTH,
        )

    def octets(self, length: int, field: str) -> bytes:
        if length > self.remaining:
            raise self._short(length, field)
        value = self._data[self._pos : self._pos + length]
        self._pos += length
        return value

    def unpack(self, layout: struct.Struct, field: str) -> tuple[Any, ...]:
        """Several fixed-width fields at once."""
        if layout.size > self.remaining:
            raise self._short(layout.size, field)
        values = layout.unpack_from(self._data, self._pos)
        self._pos += layout.size
        return values

    def uint(self, size: int, field: str) -> int:
        return int.from_bytes(self.octets(size, field), "big")

    def u8(self, field: str) -> int:
        return self.uint(1, field)

    def u32(self, field: str) -> int:
        return self.uint(4, field)

    def u64(self, field: str) -> int:
        return self.uint(8, field)

    def text(self, width: int, field: str) -> str:
        return _text(self.octets(width, field))

    def end(self) -> None:
        if self.remaining:
            raise _BodyError(f"{self.remaining} octets after the last field", RESULT_BAD_LENGTH)


class _Writer:
    """Builds one PDU body, checking each field against its width."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def uint(self, value: int, size: int, field: str) -> None:
        self._parts.append(_uint(value, size, field).to_bytes(size, "big"))

    def u8(self, value: int, field: str) -> None:
        self.uint(value, 1, field)

    def u32(self, value: int, field: str) -> None:
        self.uint(value, 4, field)

    def u64(self, value: int, field: str) -> None:
        self.uint(value, 8, field)

    def text(self, value: str, width: int, field: str) -> None:
        self._parts.append(_octet_string(value, width, field).ljust(width, b"\x00"))

    def octets(self, value: bytes) -> None:
        self._parts.append(value)

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


# The fixed-width runs of SUBMIT (Msg_Id .. DestUsr_tl), DELIVER (Msg_Id .. Msg_Length) and
# the status report, per version: read and written in one struct call each.
_V20, _V30 = CmppVersion.V20, CmppVersion.V30
_SUBMIT_HEAD: Final = {
    _V20: struct.Struct(">QBBBB10sB21sBBB6s2s6s17s17s21sB"),
    _V30: struct.Struct(">QBBBB10sB32sBBBB6s2s6s17s17s21sB"),
}
_DELIVER_HEAD: Final = {
    _V20: struct.Struct(">Q21s10sBBB21sBB"),
    _V30: struct.Struct(">Q21s10sBBB32sBBB"),
}
_MSG_ID_RESULT: Final = {9: struct.Struct(">QB"), 12: struct.Struct(">QI")}  # by body size
_REPORT: Final = {_V20: struct.Struct(">Q7s10s10s21sI"), _V30: struct.Struct(">Q7s10s10s32sI")}


# ---------------------------------------------------------------------------------------
# PDUs


@attrs.frozen(kw_only=True)
class Pdu:
    """Base of every PDU. ``command_id`` is fixed per class."""

    command_id: ClassVar[CommandId]
    # SUBMIT and DELIVER are laid out per version; the responses carry their width in
    # their length and read any version.
    _version_sensitive: ClassVar[bool] = False

    sequence_number: int = 0

    @property
    def is_response(self) -> bool:
        return bool(self.command_id & _RESPONSE_BIT)

    def _encode_body(self, writer: _Writer, version: CmppVersion) -> None:
        """Header-only PDUs have no body."""

    @classmethod
    def _decode_body(cls, reader: _Reader, sequence_number: int, version: CmppVersion) -> Self:
        reader.end()
        return cls(sequence_number=sequence_number)


@attrs.frozen(kw_only=True)
class Terminate(Pdu):
    command_id = CommandId.TERMINATE


@attrs.frozen(kw_only=True)
class TerminateResp(Pdu):
    command_id = CommandId.TERMINATE_RESP


@attrs.frozen(kw_only=True)
class ActiveTest(Pdu):
    command_id = CommandId.ACTIVE_TEST


@attrs.frozen(kw_only=True)
class ActiveTestResp(Pdu):
    """One Reserved octet; read also without it (some 2.0 peers send a bare header)."""

    command_id = CommandId.ACTIVE_TEST_RESP

    reserved: int = 0

    def _encode_body(self, writer: _Writer, version: CmppVersion) -> None:
        writer.u8(self.reserved, "Reserved")

    @classmethod
    def _decode_body(cls, reader: _Reader, sequence_number: int, version: CmppVersion) -> Self:
        reserved = reader.u8("Reserved") if reader.remaining else 0
        reader.end()
        return cls(sequence_number=sequence_number, reserved=reserved)


@attrs.frozen(kw_only=True)
class Connect(Pdu):
    """CMPP_CONNECT, the same 27-octet body in 2.0 and 3.0. ``timestamp`` is the u32 whose
    decimal digits are MMDDHHMMSS; ``version`` the raw Version octet (see
    `CmppVersion.from_octet`). Build one with `smsgw.carriers.cmpp.auth.connect_request`."""

    command_id = CommandId.CONNECT

    source_addr: str = ""
    authenticator_source: bytes = bytes(16)
    version: int = CmppVersion.V30
    timestamp: int = 0

    def _encode_body(self, writer: _Writer, version: CmppVersion) -> None:
        writer.text(self.source_addr, 6, "Source_Addr")
        _write_authenticator(writer, self.authenticator_source, "AuthenticatorSource")
        writer.u8(self.version, "Version")
        writer.u32(self.timestamp, "Timestamp")

    @classmethod
    def _decode_body(cls, reader: _Reader, sequence_number: int, version: CmppVersion) -> Self:
        pdu = cls(
            sequence_number=sequence_number,
            source_addr=reader.text(6, "Source_Addr"),
            authenticator_source=reader.octets(16, "AuthenticatorSource"),
            version=reader.u8("Version"),
            timestamp=reader.u32("Timestamp"),
        )
        reader.end()
        return pdu


def _write_authenticator(writer: _Writer, value: bytes, field: str) -> None:
    if len(value) != 16:
        raise ValueError(f"{field} is {len(value)} octets, not 16")
    writer.octets(value)


@attrs.frozen(kw_only=True)
class ConnectResp(Pdu):
    """CMPP_CONNECT_RESP: Status is a u8 in 2.0 (30 octets) and a u32 in 3.0 (33 octets).
    A refusal may come with only its Status (AuthenticatorISMG "为空"): then
    ``authenticator_ismg`` is empty and ``version`` 0."""

    command_id = CommandId.CONNECT_RESP

    status: int = CONNECT_OK
    authenticator_ismg: bytes = bytes(16)
    version: int = CmppVersion.V30

    def _encode_body(self, writer: _Writer, version: CmppVersion) -> None:
        writer.uint(self.status, version.status_length, "Status")
        _write_authenticator(writer, self.authenticator_ismg, "AuthenticatorISMG")
        writer.u8(self.version, "Version")

    @classmethod
    def _decode_body(cls, reader: _Reader, sequence_number: int, version: CmppVersion) -> Self:
        size = reader.remaining
        if size in (1, 4):
            return cls(
                sequence_number=sequence_number,
                status=reader.uint(size, "Status"),
                authenticator_ismg=b"",
                version=0,
            )
        if size not in (18, 21):
            raise _BodyError(f"body is {size} octets, not 18 (2.0) or 21 (3.0)", RESULT_BAD_LENGTH)
        return cls(
            sequence_number=sequence_number,
            status=reader.uint(size - 17, "Status"),
            authenticator_ismg=reader.octets(16, "AuthenticatorISMG"),
            version=reader.u8("Version"),
        )


@attrs.frozen(kw_only=True)
class _MsgIdResult(Pdu):
    """SUBMIT_RESP and DELIVER_RESP: Msg_Id then Result (u8 in 2.0, u32 in 3.0)."""

    msg_id: int = 0
    result: int = RESULT_OK

    def _encode_body(self, writer: _Writer, version: CmppVersion) -> None:
        writer.u64(self.msg_id, "Msg_Id")
        writer.uint(self.result, version.status_length, "Result")

    @classmethod
    def _decode_body(cls, reader: _Reader, sequence_number: int, version: CmppVersion) -> Self:
        layout = _MSG_ID_RESULT.get(reader.remaining)
        if layout is None:
            raise _BodyError(
                f"body is {reader.remaining} octets, not 9 (2.0) or 12 (3.0)", RESULT_BAD_LENGTH
            )
        msg_id, result = reader.unpack(layout, "Msg_Id and Result")
        return cls(sequence_number=sequence_number, msg_id=msg_id, result=result)


@attrs.frozen(kw_only=True)
class SubmitResp(_MsgIdResult):
    """``msg_id`` is the ISMG's id for the message (its report carries the same one)."""

    command_id = CommandId.SUBMIT_RESP


@attrs.frozen(kw_only=True)
class DeliverResp(_MsgIdResult):
    """``msg_id`` echoes the DELIVER's Msg_Id."""

    command_id = CommandId.DELIVER_RESP


def _content_limit(msg_fmt: int) -> int:
    return MAX_ASCII_CONTENT if msg_fmt == 0 else MAX_CONTENT


@attrs.frozen(kw_only=True)
class Submit(Pdu):
    """CMPP_SUBMIT. Text fields are the fixed-width octet strings of the spec (ValueError
    when one is too wide for the version written); ``link_id`` is 3.0's LinkID or 2.0's
    Reserve. ``fee_terminal_type`` and ``dest_terminal_type`` exist only in 3.0.
    ``msg_content`` holds the UDH when ``tp_udhi`` is 1; see `smsgw.carriers.cmpp.text`."""

    command_id = CommandId.SUBMIT
    _version_sensitive = True

    msg_id: int = 0
    pk_total: int = 1
    pk_number: int = 1
    registered_delivery: int = 0
    msg_level: int = 0
    service_id: str = ""
    fee_user_type: int = 0
    fee_terminal_id: str = ""
    fee_terminal_type: int = 0
    tp_pid: int = 0
    tp_udhi: int = 0
    msg_fmt: int = 0
    msg_src: str = ""
    fee_type: str = "01"
    fee_code: str = "000000"
    valid_time: str = ""
    at_time: str = ""
    src_id: str = ""
    dest_terminal_ids: tuple[str, ...] = ()
    dest_terminal_type: int = 0
    msg_content: bytes = b""
    link_id: str = ""

    def _encode_body(self, writer: _Writer, version: CmppVersion) -> None:
        terminal = version.terminal_id_length
        if not 1 <= len(self.dest_terminal_ids) <= MAX_DESTINATIONS:
            raise ValueError(
                f"{len(self.dest_terminal_ids)} destinations: CMPP takes 1..{MAX_DESTINATIONS}"
            )
        limit = _content_limit(self.msg_fmt)
        if len(self.msg_content) > limit:
            raise ValueError(
                f"Msg_Content is {len(self.msg_content)} octets, more than {limit} "
                f"for Msg_Fmt {self.msg_fmt}"
            )
        v3 = version is CmppVersion.V30
        head: list[Any] = [
            _uint(self.msg_id, 8, "Msg_Id"),
            _uint(self.pk_total, 1, "Pk_total"),
            _uint(self.pk_number, 1, "Pk_number"),
            _uint(self.registered_delivery, 1, "Registered_Delivery"),
            _uint(self.msg_level, 1, "Msg_level"),
            _octet_string(self.service_id, 10, "Service_Id"),
            _uint(self.fee_user_type, 1, "Fee_UserType"),
            _octet_string(self.fee_terminal_id, terminal, "Fee_terminal_Id"),
        ]
        if v3:
            head.append(_uint(self.fee_terminal_type, 1, "Fee_terminal_type"))
        head += [
            _uint(self.tp_pid, 1, "TP_pId"),
            _uint(self.tp_udhi, 1, "TP_udhi"),
            _uint(self.msg_fmt, 1, "Msg_Fmt"),
            _octet_string(self.msg_src, 6, "Msg_src"),
            _octet_string(self.fee_type, 2, "FeeType"),
            _octet_string(self.fee_code, 6, "FeeCode"),
            _octet_string(self.valid_time, 17, "ValId_Time"),
            _octet_string(self.at_time, 17, "At_Time"),
            _octet_string(self.src_id, 21, "Src_Id"),
            len(self.dest_terminal_ids),
        ]
        writer.octets(_SUBMIT_HEAD[version].pack(*head))
        for dest in self.dest_terminal_ids:
            writer.text(dest, terminal, "Dest_terminal_Id")
        if v3:
            writer.u8(self.dest_terminal_type, "Dest_terminal_type")
        writer.u8(len(self.msg_content), "Msg_Length")
        writer.octets(self.msg_content)
        writer.text(self.link_id, version.reserve_length, "LinkID/Reserve")

    @classmethod
    def _decode_body(cls, reader: _Reader, sequence_number: int, version: CmppVersion) -> Self:
        terminal = version.terminal_id_length
        head = reader.unpack(_SUBMIT_HEAD[version], "the fixed fields")
        if version is CmppVersion.V30:
            (msg_id, pk_total, pk_number, registered, level, service_id, fee_user_type,
             fee_terminal_id, fee_terminal_type, tp_pid, tp_udhi, msg_fmt, msg_src, fee_type,
             fee_code, valid_time, at_time, src_id, count) = head  # fmt: skip
        else:
            (msg_id, pk_total, pk_number, registered, level, service_id, fee_user_type,
             fee_terminal_id, tp_pid, tp_udhi, msg_fmt, msg_src, fee_type, fee_code,
             valid_time, at_time, src_id, count) = head  # fmt: skip
            fee_terminal_type = 0
        dests = tuple(reader.text(terminal, "Dest_terminal_Id") for _ in range(count))
        dest_terminal_type = reader.u8("Dest_terminal_type") if version is CmppVersion.V30 else 0
        msg_content = reader.octets(reader.u8("Msg_Length"), "Msg_Content")
        link_id = reader.text(version.reserve_length, "LinkID/Reserve")
        reader.end()
        return cls(
            sequence_number=sequence_number,
            msg_id=msg_id,
            pk_total=pk_total,
            pk_number=pk_number,
            registered_delivery=registered,
            msg_level=level,
            service_id=_text(service_id),
            fee_user_type=fee_user_type,
            fee_terminal_id=_text(fee_terminal_id),
            fee_terminal_type=fee_terminal_type,
            tp_pid=tp_pid,
            tp_udhi=tp_udhi,
            msg_fmt=msg_fmt,
            msg_src=_text(msg_src),
            fee_type=_text(fee_type),
            fee_code=_text(fee_code),
            valid_time=_text(valid_time),
            at_time=_text(at_time),
            src_id=_text(src_id),
            dest_terminal_ids=dests,
            dest_terminal_type=dest_terminal_type,
            msg_content=msg_content,
            link_id=link_id,
        )


@attrs.frozen(kw_only=True)
class StatusReport:
    """The Msg_Content of a DELIVER with Registered_Delivery 1: 60 octets in 2.0 (21-octet
    Dest_terminal_Id), 71 in 3.0 (32). ``stat`` is kept verbatim (DELIVRD, UNDELIV,
    MK:0001, ...); ``submit_time`` / ``done_time`` are YYMMDDHHMM."""

    msg_id: int
    stat: str
    submit_time: str = ""
    done_time: str = ""
    dest_terminal_id: str = ""
    smsc_sequence: int = 0

    @property
    def delivered(self) -> bool:
        return self.stat == "DELIVRD"

    def encode(self, version: CmppVersion) -> bytes:
        return _REPORT[version].pack(
            _uint(self.msg_id, 8, "Msg_Id"),
            _octet_string(self.stat, 7, "Stat"),
            _octet_string(self.submit_time, 10, "Submit_time"),
            _octet_string(self.done_time, 10, "Done_time"),
            _octet_string(self.dest_terminal_id, version.terminal_id_length, "Dest_terminal_Id"),
            _uint(self.smsc_sequence, 4, "SMSC_sequence"),
        )

    @classmethod
    def decode(cls, data: bytes) -> StatusReport:
        """Reads either size; raises ValueError for any other."""
        for layout in _REPORT.values():
            if len(data) == layout.size:
                msg_id, stat, submitted, done, dest, sequence = layout.unpack(data)
                return cls(
                    msg_id=msg_id,
                    stat=_text(stat),
                    submit_time=_text(submitted),
                    done_time=_text(done),
                    dest_terminal_id=_text(dest),
                    smsc_sequence=sequence,
                )
        raise ValueError(f"a status report is 60 or 71 octets, not {len(data)}")


@attrs.frozen(kw_only=True)
class Deliver(Pdu):
    """CMPP_DELIVER: an MO (``report`` is None, the text in ``msg_content``) or a status
    report (Registered_Delivery 1: ``report`` is set and ``msg_content`` empty).
    ``src_terminal_type`` exists only in 3.0; ``link_id`` is 3.0's LinkID or 2.0's Reserve."""

    command_id = CommandId.DELIVER
    _version_sensitive = True

    msg_id: int = 0
    dest_id: str = ""
    service_id: str = ""
    tp_pid: int = 0
    tp_udhi: int = 0
    msg_fmt: int = 0
    src_terminal_id: str = ""
    src_terminal_type: int = 0
    registered_delivery: int = 0
    msg_content: bytes = b""
    report: StatusReport | None = None
    link_id: str = ""

    @property
    def is_report(self) -> bool:
        return self.report is not None

    def _encode_body(self, writer: _Writer, version: CmppVersion) -> None:
        if self.report is not None:
            if self.registered_delivery != 1 or self.msg_content:
                raise ValueError("a report DELIVER has Registered_Delivery 1 and no msg_content")
            content = self.report.encode(version)
        elif self.registered_delivery == 1:
            raise ValueError("Registered_Delivery 1 without a report")
        else:
            content = self.msg_content
        head: list[Any] = [
            _uint(self.msg_id, 8, "Msg_Id"),
            _octet_string(self.dest_id, 21, "Dest_Id"),
            _octet_string(self.service_id, 10, "Service_Id"),
            _uint(self.tp_pid, 1, "TP_pid"),
            _uint(self.tp_udhi, 1, "TP_udhi"),
            _uint(self.msg_fmt, 1, "Msg_Fmt"),
            _octet_string(self.src_terminal_id, version.terminal_id_length, "Src_terminal_Id"),
        ]
        if version is CmppVersion.V30:
            head.append(_uint(self.src_terminal_type, 1, "Src_terminal_type"))
        head += [_uint(self.registered_delivery, 1, "Registered_Delivery"), len(content)]
        writer.octets(_DELIVER_HEAD[version].pack(*head))
        writer.octets(content)
        writer.text(self.link_id, version.reserve_length, "LinkID/Reserve")

    @classmethod
    def _decode_body(cls, reader: _Reader, sequence_number: int, version: CmppVersion) -> Self:
        head = reader.unpack(_DELIVER_HEAD[version], "the fixed fields")
        if version is CmppVersion.V30:
            (msg_id, dest_id, service_id, tp_pid, tp_udhi, msg_fmt, src_terminal_id,
             src_terminal_type, registered, length) = head  # fmt: skip
        else:
            (msg_id, dest_id, service_id, tp_pid, tp_udhi, msg_fmt, src_terminal_id,
             registered, length) = head  # fmt: skip
            src_terminal_type = 0
        msg_content = reader.octets(length, "Msg_Content")
        link_id = reader.text(version.reserve_length, "LinkID/Reserve")
        reader.end()
        report = None
        if registered == 1:
            try:
                report = StatusReport.decode(msg_content)
            except ValueError as exc:
                raise _BodyError(f"status report: {exc}", RESULT_BAD_LENGTH) from None
            msg_content = b""
        return cls(
            sequence_number=sequence_number,
            msg_id=msg_id,
            dest_id=_text(dest_id),
            service_id=_text(service_id),
            tp_pid=tp_pid,
            tp_udhi=tp_udhi,
            msg_fmt=msg_fmt,
            src_terminal_id=_text(src_terminal_id),
            src_terminal_type=src_terminal_type,
            registered_delivery=registered,
            msg_content=msg_content,
            report=report,
            link_id=link_id,
        )


PDU_CLASSES: Final[dict[int, type[Pdu]]] = {
    cls.command_id: cls
    for cls in (
        Connect,
        ConnectResp,
        Terminate,
        TerminateResp,
        Submit,
        SubmitResp,
        Deliver,
        DeliverResp,
        ActiveTest,
        ActiveTestResp,
    )
}


# ---------------------------------------------------------------------------------------
# Whole-PDU encoding and decoding


@attrs.frozen
class Header:
    """The 12-octet header: Total_Length, Command_Id, Sequence_Id."""

    length: int
    command_id: int
    sequence_number: int

    @property
    def is_response(self) -> bool:
        return bool(self.command_id & _RESPONSE_BIT)


def read_header(data: bytes | bytearray) -> Header | None:
    """The header at the start of ``data``, or None when fewer than 12 octets are there.
    Nothing is checked: see `CmppConnection.next_event` for the limits."""
    if len(data) < HEADER_LENGTH:
        return None
    return Header(*_HEADER.unpack_from(data))


def encode_pdu(pdu: Pdu, version: CmppVersion = CmppVersion.V30) -> bytes:
    """The wire form of ``pdu`` in ``version``'s layout. Raises ValueError when a field
    does not fit."""
    if not 0 <= pdu.sequence_number <= 0xFFFFFFFF:
        raise ValueError(f"sequence_number {pdu.sequence_number} does not fit in 32 bits")
    writer = _Writer()
    pdu._encode_body(writer, version)
    body = writer.getvalue()
    length = HEADER_LENGTH + len(body)
    if length > MAX_PDU_LENGTH:
        raise ValueError(f"PDU would be {length} octets, more than {MAX_PDU_LENGTH}")
    return _HEADER.pack(length, pdu.command_id, pdu.sequence_number) + body


def _decode_frame(frame: bytes, version: CmppVersion) -> Pdu:
    """Decode one complete PDU whose Total_Length has already been checked."""
    _, command_id, sequence_number = _HEADER.unpack_from(frame)
    cls = PDU_CLASSES.get(command_id)
    if cls is None:
        raise CmppPduError(
            f"unknown Command_Id 0x{command_id:08X}",
            command_status=RESULT_BAD_COMMAND,
            sequence_number=sequence_number,
            command_id=command_id,
        )
    body = frame[HEADER_LENGTH:]
    versions = (version, version.other) if cls._version_sensitive else (version,)
    first: _BodyError | None = None
    for layout in versions:
        try:
            return cls._decode_body(_Reader(body), sequence_number, layout)
        except _BodyError as exc:
            first = first or exc
    assert first is not None
    raise CmppPduError(
        f"{cls.command_id.name}: {first.message}",
        command_status=first.command_status,
        sequence_number=sequence_number,
        command_id=command_id,
    )


def _length_error(length: int, max_length: int) -> CmppFramingError:
    """The error for a Total_Length outside ``HEADER_LENGTH..max_length``."""
    if length < HEADER_LENGTH:
        return CmppFramingError(
            f"Total_Length {length} is shorter than the 12-octet header",
            command_status=RESULT_BAD_LENGTH,
        )
    return CmppFramingError(
        f"Total_Length {length} is more than the {max_length}-octet maximum",
        command_status=RESULT_BAD_LENGTH,
    )


def decode_pdu(
    data: bytes, version: CmppVersion = CmppVersion.V30, *, max_length: int = MAX_PDU_LENGTH
) -> Pdu:
    """Decode exactly one PDU from ``data`` (which must hold nothing else)."""
    if len(data) < 4:
        raise CmppFramingError(
            f"{len(data)} octets cannot hold a Total_Length", command_status=RESULT_BAD_LENGTH
        )
    (length,) = _U32.unpack_from(data)
    if not HEADER_LENGTH <= length <= max_length:
        raise _length_error(length, max_length)
    if length != len(data):
        raise CmppFramingError(
            f"Total_Length {length} but {len(data)} octets given",
            command_status=RESULT_BAD_LENGTH,
        )
    return _decode_frame(bytes(data), version)


# ---------------------------------------------------------------------------------------
# Helpers for answering


@overload
def response_for(request: Submit, *, msg_id: int, result: int = ...) -> SubmitResp: ...
@overload
def response_for(request: Deliver, *, result: int = ...) -> DeliverResp: ...
@overload
def response_for(request: ActiveTest) -> ActiveTestResp: ...
@overload
def response_for(request: Terminate) -> TerminateResp: ...
def response_for(
    request: Submit | Deliver | ActiveTest | Terminate, *, msg_id: int = 0, result: int = 0
) -> Pdu:
    """The response to a request, with its sequence number (a DELIVER_RESP echoes the
    DELIVER's Msg_Id). CONNECT_RESP needs the authenticator: see
    `smsgw.carriers.cmpp.auth.connect_response`."""
    sequence = request.sequence_number
    if isinstance(request, Submit):
        return SubmitResp(sequence_number=sequence, msg_id=msg_id, result=result)
    if isinstance(request, Deliver):
        return DeliverResp(sequence_number=sequence, msg_id=request.msg_id, result=result)
    if isinstance(request, ActiveTest):
        return ActiveTestResp(sequence_number=sequence)
    if isinstance(request, Terminate):
        return TerminateResp(sequence_number=sequence)
    raise ValueError(f"{type(request).__name__} is not a request with a response")


# ---------------------------------------------------------------------------------------
# The connection

PduT = TypeVar("PduT", bound=Pdu)


class CmppConnection(LengthPrefixedStream[Pdu, CmppFramingError]):
    """Byte stream ⇄ PDUs for one CMPP connection, plus Sequence_Id allocation (the stream
    half, shared with SMPP, is `smsgw.sansio.LengthPrefixedStream`).

    ``version`` is the layout written and tried first when reading; an ISMG sets it from
    the CONNECT it accepts. The connection holds no session state (logged in or not,
    outstanding requests): that belongs to the layer that moves the bytes.
    """

    def __init__(
        self, version: CmppVersion = CmppVersion.V30, *, max_pdu_length: int = MAX_PDU_LENGTH
    ) -> None:
        super().__init__(header_length=HEADER_LENGTH, max_pdu_length=max_pdu_length)
        self.version = version

    def _decode_frame(self, frame: bytes) -> Pdu:
        return _decode_frame(frame, self.version)

    def _framing_error(self, length: int, buffer: bytearray) -> CmppFramingError:
        error = _length_error(length, self.max_pdu_length)
        header = read_header(buffer)
        if header is not None:  # best effort, to name the PDU in the log
            error.command_id, error.sequence_number = header.command_id, header.sequence_number
        return error

    # sending

    def send(self, pdu: Pdu) -> bytes:
        """The bytes to write for ``pdu``, exactly as given, in this connection's version."""
        return encode_pdu(pdu, self.version)

    def send_request(self, pdu: PduT) -> tuple[PduT, bytes]:
        """Give a request a fresh Sequence_Id; returns it (to match the response) and its
        bytes."""
        if pdu.is_response:
            raise ValueError(f"{pdu.command_id.name} is a response, not a request")
        numbered = attrs.evolve(pdu, sequence_number=self.next_sequence())
        return numbered, encode_pdu(numbered, self.version)

    def number_request(self, data: bytes) -> tuple[int, bytes]:
        """`send_request` for a request already encoded (whatever Sequence_Id it holds):
        returns the fresh Sequence_Id and the bytes carrying it."""
        header = read_header(data)
        if header is None:
            raise ValueError(f"{len(data)} octets cannot hold a PDU header")
        if header.is_response:
            raise ValueError(f"Command_Id 0x{header.command_id:08X} is a response, not a request")
        sequence = self.next_sequence()
        return sequence, data[:8] + _U32.pack(sequence) + data[HEADER_LENGTH:]
