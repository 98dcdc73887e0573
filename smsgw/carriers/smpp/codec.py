"""Sans-IO SMPP 3.4 codec: typed PDUs, their wire encoding, and a byte-stream connection.

No sockets and no trio here (h11's style): feed received bytes to
``SmppConnection.receive_data``, pull typed PDUs with ``next_event`` until it returns
``NEED_DATA``, and write what ``send`` returns. Every PDU is a frozen attrs class carrying
``sequence_number`` and ``command_status``.

Decoding is strict about structure and lenient about content: a PDU whose fields do not fit
its command_length, a truncated C-string or a broken TLV raises ``SmppPduError`` (the bad PDU
is consumed, the stream goes on); a command_length that cannot be trusted raises
``SmppFramingError`` and the connection is unusable from then on. C-strings are decoded as
Latin-1 (one character per octet) so any byte sequence decodes; their SMPP maximum lengths are
enforced only when encoding, so an SMSC's over-long message_id is still understood.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from typing import Any, ClassVar, Final, Self, TypeVar, overload

import attrs

from smsgw.sansio import LengthPrefixedStream, PduProtocolError

HEADER_LENGTH: Final = 16
MAX_PDU_LENGTH: Final = 64 * 1024
MAX_SEQUENCE_NUMBER: Final = 0x7FFFFFFF
INTERFACE_VERSION_34: Final = 0x34
_RESPONSE_BIT: Final = 0x80000000

_HEADER = struct.Struct(">IIII")
_U32 = struct.Struct(">I")


class CommandId(enum.IntEnum):
    GENERIC_NACK = 0x80000000
    BIND_RECEIVER = 0x00000001
    BIND_RECEIVER_RESP = 0x80000001
    BIND_TRANSMITTER = 0x00000002
    BIND_TRANSMITTER_RESP = 0x80000002
    SUBMIT_SM = 0x00000004
    SUBMIT_SM_RESP = 0x80000004
    DELIVER_SM = 0x00000005
    DELIVER_SM_RESP = 0x80000005
    UNBIND = 0x00000006
    UNBIND_RESP = 0x80000006
    BIND_TRANSCEIVER = 0x00000009
    BIND_TRANSCEIVER_RESP = 0x80000009
    ENQUIRE_LINK = 0x00000015
    ENQUIRE_LINK_RESP = 0x80000015
    DATA_SM = 0x00000103
    DATA_SM_RESP = 0x80000103


# command_status values (SMPP 3.4 §5.1.3). Plain ints: an SMSC may answer any value,
# including vendor-specific ones, so PDUs carry int rather than an enum.
ESME_ROK: Final = 0x00000000
ESME_RINVMSGLEN: Final = 0x00000001
ESME_RINVCMDLEN: Final = 0x00000002
ESME_RINVCMDID: Final = 0x00000003
ESME_RINVBNDSTS: Final = 0x00000004
ESME_RALYBND: Final = 0x00000005
ESME_RINVPRTFLG: Final = 0x00000006
ESME_RINVREGDLVFLG: Final = 0x00000007
ESME_RSYSERR: Final = 0x00000008
ESME_RINVSRCADR: Final = 0x0000000A
ESME_RINVDSTADR: Final = 0x0000000B
ESME_RINVMSGID: Final = 0x0000000C
ESME_RBINDFAIL: Final = 0x0000000D
ESME_RINVPASWD: Final = 0x0000000E
ESME_RINVSYSID: Final = 0x0000000F
ESME_RCANCELFAIL: Final = 0x00000011
ESME_RREPLACEFAIL: Final = 0x00000013
ESME_RMSGQFUL: Final = 0x00000014
ESME_RINVSERTYP: Final = 0x00000015
ESME_RINVNUMDESTS: Final = 0x00000033
ESME_RINVDLNAME: Final = 0x00000034
ESME_RINVDESTFLAG: Final = 0x00000040
ESME_RINVSUBREP: Final = 0x00000042
ESME_RINVESMCLASS: Final = 0x00000043
ESME_RCNTSUBDL: Final = 0x00000044
ESME_RSUBMITFAIL: Final = 0x00000045
ESME_RINVSRCTON: Final = 0x00000048
ESME_RINVSRCNPI: Final = 0x00000049
ESME_RINVDSTTON: Final = 0x00000050
ESME_RINVDSTNPI: Final = 0x00000051
ESME_RINVSYSTYP: Final = 0x00000053
ESME_RINVREPFLAG: Final = 0x00000054
ESME_RINVNUMMSGS: Final = 0x00000055
ESME_RTHROTTLED: Final = 0x00000058
ESME_RINVSCHED: Final = 0x00000061
ESME_RINVEXPIRY: Final = 0x00000062
ESME_RINVDFTMSGID: Final = 0x00000063
ESME_RX_T_APPN: Final = 0x00000064
ESME_RX_P_APPN: Final = 0x00000065
ESME_RX_R_APPN: Final = 0x00000066
ESME_RQUERYFAIL: Final = 0x00000067
ESME_RINVOPTPARSTREAM: Final = 0x000000C0
ESME_ROPTPARNOTALLWD: Final = 0x000000C1
ESME_RINVPARLEN: Final = 0x000000C2
ESME_RMISSINGOPTPARAM: Final = 0x000000C3
ESME_RINVOPTPARAMVAL: Final = 0x000000C4
ESME_RDELIVERYFAILURE: Final = 0x000000FE
ESME_RUNKNOWNERR: Final = 0x000000FF

_STATUS_NAMES: Final[dict[int, str]] = {
    value: name for name, value in globals().items() if name.startswith("ESME_R")
}

# The SMSC asks the ESME to slow down: submit again soon, the message was not refused.
THROTTLING_STATUSES: Final = frozenset({ESME_RTHROTTLED, ESME_RMSGQFUL})
# The SMSC failed for now rather than refusing the message: a later attempt may succeed.
# A default only: operators differ, and the carrier layer may classify per operator.
TRANSIENT_STATUSES: Final = frozenset({ESME_RSYSERR, ESME_RX_T_APPN, ESME_RUNKNOWNERR})


def describe_status(command_status: int) -> str:
    """The ESME_R* name of a command_status, or its hex value when it has none."""
    return _STATUS_NAMES.get(command_status, f"0x{command_status:08X}")


class MessageState(enum.IntEnum):
    """Values of the message_state TLV (SMPP 3.4 §5.2.28)."""

    ENROUTE = 1
    DELIVERED = 2
    EXPIRED = 3
    DELETED = 4
    UNDELIVERABLE = 5
    ACCEPTED = 6
    UNKNOWN = 7
    REJECTED = 8


# esm_class bits (SMPP 3.4 §5.2.12).
ESM_CLASS_TYPE_MASK: Final = 0x3C
ESM_CLASS_DELIVERY_RECEIPT: Final = 0x04
ESM_CLASS_UDHI: Final = 0x40


# ---------------------------------------------------------------------------------------
# Errors


class SmppProtocolError(PduProtocolError):
    """Malformed input. ``command_status`` is the status to answer with (in a generic_nack,
    or in the matching response when ``command_id`` is a known request); ``sequence_number``
    is None when the header could not be read. ``recoverable`` says whether the stream can
    go on with the next PDU."""

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, "
            f"command_status={describe_status(self.command_status)}, "
            f"sequence_number={self.sequence_number}, command_id={self.command_id})"
        )


class SmppFramingError(SmppProtocolError):
    """The command_length cannot be trusted: PDU boundaries are lost, close the session."""

    recoverable = False


class SmppPduError(SmppProtocolError):
    """One PDU was malformed but its length was sane: it was skipped, the stream goes on."""

    recoverable = True


class _BodyError(Exception):
    """Raised while reading a body; turned into SmppPduError with the header's details."""

    def __init__(self, message: str, command_status: int) -> None:
        super().__init__(message)
        self.message = message
        self.command_status = command_status


# ---------------------------------------------------------------------------------------
# Wire primitives


class _Reader:
    """Reads the fields of one PDU body."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def u8(self, field: str) -> int:
        if self._pos >= len(self._data):
            raise _BodyError(f"body ends before {field}", ESME_RINVCMDLEN)
        value = self._data[self._pos]
        self._pos += 1
        return value

    def cstring(self, field: str) -> str:
        end = self._data.find(b"\x00", self._pos)
        if end < 0:
            raise _BodyError(f"{field} is not NUL-terminated within the PDU", ESME_RINVCMDLEN)
        value = self._data[self._pos : end].decode("latin-1")
        self._pos = end + 1
        return value

    def octets(self, length: int, field: str) -> bytes:
        if length > self.remaining:
            raise _BodyError(
                f"{field} declares {length} octets but only {self.remaining} remain",
                ESME_RINVMSGLEN,
            )
        value = self._data[self._pos : self._pos + length]
        self._pos += length
        return value

    def tlvs(self) -> Tlvs:
        if self._pos >= len(self._data):
            return _NO_TLVS  # the usual case for responses: no Tlvs object to build
        known: dict[str, Any] = {}
        unknown: list[RawTlv] = []
        data = self._data
        while self._pos < len(data):
            if self.remaining < 4:
                raise _BodyError(
                    f"{self.remaining} stray octets where a TLV header was expected",
                    ESME_RINVOPTPARSTREAM,
                )
            tag = (data[self._pos] << 8) | data[self._pos + 1]
            length = (data[self._pos + 2] << 8) | data[self._pos + 3]
            self._pos += 4
            if length > self.remaining:
                raise _BodyError(
                    f"TLV 0x{tag:04X} declares {length} octets but only {self.remaining} remain",
                    ESME_RINVOPTPARSTREAM,
                )
            value = data[self._pos : self._pos + length]
            self._pos += length
            spec = _TLV_BY_TAG.get(tag)
            if spec is None:
                unknown.append(RawTlv(tag=tag, value=value))
            else:
                known[spec.name] = spec.decode(value)
        return Tlvs(**known, unknown=tuple(unknown))


class _Writer:
    """Builds one PDU body, checking each field against its SMPP size limits."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def u8(self, value: int, field: str) -> None:
        if not 0 <= value <= 0xFF:
            raise ValueError(f"{field}={value} does not fit in one octet")
        self._parts.append(bytes((value,)))

    def cstring(self, value: str, max_octets: int, field: str) -> None:
        """``max_octets`` is the SMPP maximum, which counts the terminating NUL."""
        self._parts.append(_encode_cstring(value, max_octets, field))

    def octets(self, value: bytes) -> None:
        self._parts.append(value)

    def tlvs(self, tlvs: Tlvs) -> None:
        self._parts.append(tlvs.encode())

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


def _encode_cstring(value: str, max_octets: int, field: str) -> bytes:
    try:
        encoded = value.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"{field}={value!r} has characters outside Latin-1") from None
    if b"\x00" in encoded:
        raise ValueError(f"{field}={value!r} contains a NUL")
    if len(encoded) + 1 > max_octets:
        raise ValueError(f"{field}={value!r} is longer than {max_octets - 1} octets")
    return encoded + b"\x00"


# ---------------------------------------------------------------------------------------
# TLVs (optional parameters)


@attrs.frozen
class RawTlv:
    """A TLV this codec does not interpret, kept as received so it can be logged or relayed."""

    tag: int
    value: bytes


@attrs.frozen
class NetworkErrorCode:
    """network_error_code TLV: network type (1 ANSI-136, 2 IS-95, 3 GSM, ...) + its code."""

    network_type: int
    error_code: int


@attrs.frozen
class _TlvSpec:
    name: str
    tag: int
    decode: Callable[[bytes], object]
    encode: Callable[[Any], bytes]


def _fixed_int_tlv(name: str, tag: int, size: int) -> _TlvSpec:
    def decode(value: bytes) -> int:
        if len(value) != size:
            raise _BodyError(
                f"TLV {name} has length {len(value)}, expected {size}", ESME_RINVPARLEN
            )
        return int.from_bytes(value, "big")

    def encode(value: int) -> bytes:
        try:
            return value.to_bytes(size, "big")
        except OverflowError:
            raise ValueError(f"{name}={value} does not fit in {size} octets") from None

    return _TlvSpec(name, tag, decode, encode)


def _cstring_tlv(name: str, tag: int, max_octets: int) -> _TlvSpec:
    def decode(value: bytes) -> str:
        # Length-delimited already; some SMSCs omit the NUL, which is harmless here.
        return value.split(b"\x00", 1)[0].decode("latin-1")

    def encode(value: str) -> bytes:
        return _encode_cstring(value, max_octets, name)

    return _TlvSpec(name, tag, decode, encode)


def _octets_tlv(name: str, tag: int) -> _TlvSpec:
    def decode(value: bytes) -> bytes:
        return value

    def encode(value: bytes) -> bytes:
        return value

    return _TlvSpec(name, tag, decode, encode)


def _decode_network_error(value: bytes) -> NetworkErrorCode:
    if len(value) != 3:
        raise _BodyError(
            f"TLV network_error_code has length {len(value)}, expected 3", ESME_RINVPARLEN
        )
    return NetworkErrorCode(value[0], (value[1] << 8) | value[2])


def _encode_network_error(value: NetworkErrorCode) -> bytes:
    if not (0 <= value.network_type <= 0xFF and 0 <= value.error_code <= 0xFFFF):
        raise ValueError(f"network_error_code {value} out of range")
    return bytes((value.network_type,)) + value.error_code.to_bytes(2, "big")


# Order here is the order TLVs are written in.
_TLV_SPECS: Final = (
    _fixed_int_tlv("user_message_reference", 0x0204, 2),
    _fixed_int_tlv("sar_msg_ref_num", 0x020C, 2),
    _fixed_int_tlv("sar_total_segments", 0x020E, 1),
    _fixed_int_tlv("sar_segment_seqnum", 0x020F, 1),
    _fixed_int_tlv("more_messages_to_send", 0x0426, 1),
    _fixed_int_tlv("payload_type", 0x0019, 1),
    _octets_tlv("message_payload", 0x0424),
    _cstring_tlv("receipted_message_id", 0x001E, 65),
    _fixed_int_tlv("message_state", 0x0427, 1),
    _TlvSpec("network_error_code", 0x0423, _decode_network_error, _encode_network_error),
    _fixed_int_tlv("delivery_failure_reason", 0x0425, 1),
    _cstring_tlv("additional_status_info_text", 0x001D, 256),
    _fixed_int_tlv("sc_interface_version", 0x0210, 1),
)
_TLV_BY_TAG: Final = {spec.tag: spec for spec in _TLV_SPECS}


@attrs.frozen(kw_only=True, repr=False)
class Tlvs:
    """The optional parameters of a PDU: the ones this gateway uses, typed; others raw.

    A tag that appears twice keeps its last value. ``unknown`` TLVs are written back after
    the known ones, in their original order.
    """

    user_message_reference: int | None = None
    sar_msg_ref_num: int | None = None
    sar_total_segments: int | None = None
    sar_segment_seqnum: int | None = None
    more_messages_to_send: int | None = None
    payload_type: int | None = None
    message_payload: bytes | None = None
    receipted_message_id: str | None = None
    message_state: int | None = None
    network_error_code: NetworkErrorCode | None = None
    delivery_failure_reason: int | None = None
    additional_status_info_text: str | None = None
    sc_interface_version: int | None = None
    unknown: tuple[RawTlv, ...] = ()

    def __repr__(self) -> str:
        # Only what is present: a PDU's repr in a log line stays readable.
        fields = [
            f"{spec.name}={getattr(self, spec.name)!r}"
            for spec in _TLV_SPECS
            if getattr(self, spec.name) is not None
        ]
        if self.unknown:
            fields.append(f"unknown={self.unknown!r}")
        return f"Tlvs({', '.join(fields)})"

    def encode(self) -> bytes:
        parts: list[bytes] = []
        for spec in _TLV_SPECS:
            value = getattr(self, spec.name)
            if value is not None:
                parts.append(_tlv_bytes(spec.tag, spec.encode(value), spec.name))
        for raw in self.unknown:
            if not 0 <= raw.tag <= 0xFFFF:
                raise ValueError(f"TLV tag {raw.tag} does not fit in two octets")
            parts.append(_tlv_bytes(raw.tag, raw.value, f"TLV 0x{raw.tag:04X}"))
        return b"".join(parts)


def _tlv_bytes(tag: int, value: bytes, name: str) -> bytes:
    if len(value) > 0xFFFF:
        raise ValueError(f"{name} is {len(value)} octets, more than a TLV can hold")
    return struct.pack(">HH", tag, len(value)) + value


_NO_TLVS: Final = Tlvs()


# ---------------------------------------------------------------------------------------
# PDUs


@attrs.frozen(kw_only=True)
class Pdu:
    """Base of every PDU. ``command_id`` is fixed per class."""

    command_id: ClassVar[CommandId]
    # A response may arrive with an empty body when its status is an error (SMPP 3.4 says
    # the body is then not returned); such a body decodes to the class's defaults.
    _body_may_be_empty: ClassVar[bool] = False

    sequence_number: int = 0
    command_status: int = ESME_ROK

    @property
    def is_response(self) -> bool:
        return bool(self.command_id & _RESPONSE_BIT)

    def _encode_body(self, writer: _Writer) -> None:
        """Header-only PDUs have no body."""

    @classmethod
    def _decode_body(cls, reader: _Reader, sequence_number: int, command_status: int) -> Self:
        if reader.remaining:
            raise _BodyError(
                f"{cls.command_id.name.lower()} has no body but {reader.remaining} octets came",
                ESME_RINVCMDLEN,
            )
        return cls(sequence_number=sequence_number, command_status=command_status)


@attrs.frozen(kw_only=True)
class GenericNack(Pdu):
    command_id = CommandId.GENERIC_NACK


@attrs.frozen(kw_only=True)
class Unbind(Pdu):
    command_id = CommandId.UNBIND


@attrs.frozen(kw_only=True)
class UnbindResp(Pdu):
    command_id = CommandId.UNBIND_RESP


@attrs.frozen(kw_only=True)
class EnquireLink(Pdu):
    command_id = CommandId.ENQUIRE_LINK


@attrs.frozen(kw_only=True)
class EnquireLinkResp(Pdu):
    command_id = CommandId.ENQUIRE_LINK_RESP


@attrs.frozen(kw_only=True)
class Bind(Pdu):
    """Fields shared by bind_transmitter, bind_receiver and bind_transceiver."""

    system_id: str = ""
    password: str = ""
    system_type: str = ""
    interface_version: int = INTERFACE_VERSION_34
    addr_ton: int = 0
    addr_npi: int = 0
    address_range: str = ""
    tlvs: Tlvs = _NO_TLVS

    def _encode_body(self, writer: _Writer) -> None:
        writer.cstring(self.system_id, 16, "system_id")
        writer.cstring(self.password, 9, "password")
        writer.cstring(self.system_type, 13, "system_type")
        writer.u8(self.interface_version, "interface_version")
        writer.u8(self.addr_ton, "addr_ton")
        writer.u8(self.addr_npi, "addr_npi")
        writer.cstring(self.address_range, 41, "address_range")
        writer.tlvs(self.tlvs)

    @classmethod
    def _decode_body(cls, reader: _Reader, sequence_number: int, command_status: int) -> Self:
        return cls(
            sequence_number=sequence_number,
            command_status=command_status,
            system_id=reader.cstring("system_id"),
            password=reader.cstring("password"),
            system_type=reader.cstring("system_type"),
            interface_version=reader.u8("interface_version"),
            addr_ton=reader.u8("addr_ton"),
            addr_npi=reader.u8("addr_npi"),
            address_range=reader.cstring("address_range"),
            tlvs=reader.tlvs(),
        )


@attrs.frozen(kw_only=True)
class BindTransmitter(Bind):
    command_id = CommandId.BIND_TRANSMITTER


@attrs.frozen(kw_only=True)
class BindReceiver(Bind):
    command_id = CommandId.BIND_RECEIVER


@attrs.frozen(kw_only=True)
class BindTransceiver(Bind):
    command_id = CommandId.BIND_TRANSCEIVER


@attrs.frozen(kw_only=True)
class BindResp(Pdu):
    """Fields shared by the three bind responses; sc_interface_version is in ``tlvs``."""

    _body_may_be_empty = True

    system_id: str = ""
    tlvs: Tlvs = _NO_TLVS

    def _encode_body(self, writer: _Writer) -> None:
        writer.cstring(self.system_id, 16, "system_id")
        writer.tlvs(self.tlvs)

    @classmethod
    def _decode_body(cls, reader: _Reader, sequence_number: int, command_status: int) -> Self:
        return cls(
            sequence_number=sequence_number,
            command_status=command_status,
            system_id=reader.cstring("system_id"),
            tlvs=reader.tlvs(),
        )


@attrs.frozen(kw_only=True)
class BindTransmitterResp(BindResp):
    command_id = CommandId.BIND_TRANSMITTER_RESP


@attrs.frozen(kw_only=True)
class BindReceiverResp(BindResp):
    command_id = CommandId.BIND_RECEIVER_RESP


@attrs.frozen(kw_only=True)
class BindTransceiverResp(BindResp):
    command_id = CommandId.BIND_TRANSCEIVER_RESP


@attrs.frozen(kw_only=True)
class ShortMessagePdu(Pdu):
    """The body shared by submit_sm and deliver_sm (SMPP 3.4 §4.4.1 and §4.6.1).

    ``short_message`` holds at most 254 octets (sm_length is derived from it); longer
    content goes in ``tlvs.message_payload`` with an empty short_message.
    """

    service_type: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""
    esm_class: int = 0
    protocol_id: int = 0
    priority_flag: int = 0
    schedule_delivery_time: str = ""
    validity_period: str = ""
    registered_delivery: int = 0
    replace_if_present_flag: int = 0
    data_coding: int = 0
    sm_default_msg_id: int = 0
    short_message: bytes = b""
    tlvs: Tlvs = _NO_TLVS

    def _encode_body(self, writer: _Writer) -> None:
        if len(self.short_message) > 254:
            raise ValueError(
                f"short_message is {len(self.short_message)} octets (max 254): "
                "use tlvs.message_payload"
            )
        if self.short_message and self.tlvs.message_payload is not None:
            raise ValueError("short_message and message_payload must not both be set")
        writer.cstring(self.service_type, 6, "service_type")
        writer.u8(self.source_addr_ton, "source_addr_ton")
        writer.u8(self.source_addr_npi, "source_addr_npi")
        writer.cstring(self.source_addr, 21, "source_addr")
        writer.u8(self.dest_addr_ton, "dest_addr_ton")
        writer.u8(self.dest_addr_npi, "dest_addr_npi")
        writer.cstring(self.destination_addr, 21, "destination_addr")
        writer.u8(self.esm_class, "esm_class")
        writer.u8(self.protocol_id, "protocol_id")
        writer.u8(self.priority_flag, "priority_flag")
        writer.cstring(self.schedule_delivery_time, 17, "schedule_delivery_time")
        writer.cstring(self.validity_period, 17, "validity_period")
        writer.u8(self.registered_delivery, "registered_delivery")
        writer.u8(self.replace_if_present_flag, "replace_if_present_flag")
        writer.u8(self.data_coding, "data_coding")
        writer.u8(self.sm_default_msg_id, "sm_default_msg_id")
        writer.u8(len(self.short_message), "sm_length")
        writer.octets(self.short_message)
        writer.tlvs(self.tlvs)

    @classmethod
    def _decode_body(cls, reader: _Reader, sequence_number: int, command_status: int) -> Self:
        return cls(
            sequence_number=sequence_number,
            command_status=command_status,
            service_type=reader.cstring("service_type"),
            source_addr_ton=reader.u8("source_addr_ton"),
            source_addr_npi=reader.u8("source_addr_npi"),
            source_addr=reader.cstring("source_addr"),
            dest_addr_ton=reader.u8("dest_addr_ton"),
            dest_addr_npi=reader.u8("dest_addr_npi"),
            destination_addr=reader.cstring("destination_addr"),
            esm_class=reader.u8("esm_class"),
            protocol_id=reader.u8("protocol_id"),
            priority_flag=reader.u8("priority_flag"),
            schedule_delivery_time=reader.cstring("schedule_delivery_time"),
            validity_period=reader.cstring("validity_period"),
            registered_delivery=reader.u8("registered_delivery"),
            replace_if_present_flag=reader.u8("replace_if_present_flag"),
            data_coding=reader.u8("data_coding"),
            sm_default_msg_id=reader.u8("sm_default_msg_id"),
            short_message=reader.octets(reader.u8("sm_length"), "short_message"),
            tlvs=reader.tlvs(),
        )

    @property
    def payload(self) -> bytes:
        """The message content: short_message, or message_payload when that carries it."""
        if not self.short_message and self.tlvs.message_payload is not None:
            return self.tlvs.message_payload
        return self.short_message

    @property
    def is_delivery_receipt(self) -> bool:
        return self.esm_class & ESM_CLASS_TYPE_MASK == ESM_CLASS_DELIVERY_RECEIPT


@attrs.frozen(kw_only=True)
class SubmitSm(ShortMessagePdu):
    command_id = CommandId.SUBMIT_SM


@attrs.frozen(kw_only=True)
class DeliverSm(ShortMessagePdu):
    command_id = CommandId.DELIVER_SM


@attrs.frozen(kw_only=True)
class _MessageIdResp(Pdu):
    _body_may_be_empty = True

    message_id: str = ""
    tlvs: Tlvs = _NO_TLVS

    def _encode_body(self, writer: _Writer) -> None:
        writer.cstring(self.message_id, 65, "message_id")
        writer.tlvs(self.tlvs)

    @classmethod
    def _decode_body(cls, reader: _Reader, sequence_number: int, command_status: int) -> Self:
        return cls(
            sequence_number=sequence_number,
            command_status=command_status,
            message_id=reader.cstring("message_id"),
            tlvs=reader.tlvs(),
        )


@attrs.frozen(kw_only=True)
class SubmitSmResp(_MessageIdResp):
    command_id = CommandId.SUBMIT_SM_RESP


@attrs.frozen(kw_only=True)
class DeliverSmResp(_MessageIdResp):
    """message_id is unused by SMPP 3.4 (always empty) but kept for symmetry."""

    command_id = CommandId.DELIVER_SM_RESP


@attrs.frozen(kw_only=True)
class DataSmResp(_MessageIdResp):
    command_id = CommandId.DATA_SM_RESP


@attrs.frozen(kw_only=True)
class DataSm(Pdu):
    """data_sm (SMPP 3.4 §4.7.1): the content is in ``tlvs.message_payload``."""

    command_id = CommandId.DATA_SM

    service_type: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""
    esm_class: int = 0
    registered_delivery: int = 0
    data_coding: int = 0
    tlvs: Tlvs = _NO_TLVS

    def _encode_body(self, writer: _Writer) -> None:
        writer.cstring(self.service_type, 6, "service_type")
        writer.u8(self.source_addr_ton, "source_addr_ton")
        writer.u8(self.source_addr_npi, "source_addr_npi")
        writer.cstring(self.source_addr, 65, "source_addr")
        writer.u8(self.dest_addr_ton, "dest_addr_ton")
        writer.u8(self.dest_addr_npi, "dest_addr_npi")
        writer.cstring(self.destination_addr, 65, "destination_addr")
        writer.u8(self.esm_class, "esm_class")
        writer.u8(self.registered_delivery, "registered_delivery")
        writer.u8(self.data_coding, "data_coding")
        writer.tlvs(self.tlvs)

    @classmethod
    def _decode_body(cls, reader: _Reader, sequence_number: int, command_status: int) -> Self:
        return cls(
            sequence_number=sequence_number,
            command_status=command_status,
            service_type=reader.cstring("service_type"),
            source_addr_ton=reader.u8("source_addr_ton"),
            source_addr_npi=reader.u8("source_addr_npi"),
            source_addr=reader.cstring("source_addr"),
            dest_addr_ton=reader.u8("dest_addr_ton"),
            dest_addr_npi=reader.u8("dest_addr_npi"),
            destination_addr=reader.cstring("destination_addr"),
            esm_class=reader.u8("esm_class"),
            registered_delivery=reader.u8("registered_delivery"),
            data_coding=reader.u8("data_coding"),
            tlvs=reader.tlvs(),
        )

    @property
    def payload(self) -> bytes:
        return self.tlvs.message_payload or b""

    @property
    def is_delivery_receipt(self) -> bool:
        return self.esm_class & ESM_CLASS_TYPE_MASK == ESM_CLASS_DELIVERY_RECEIPT


PDU_CLASSES: Final[dict[int, type[Pdu]]] = {
    cls.command_id: cls
    for cls in (
        GenericNack,
        BindReceiver,
        BindReceiverResp,
        BindTransmitter,
        BindTransmitterResp,
        BindTransceiver,
        BindTransceiverResp,
        SubmitSm,
        SubmitSmResp,
        DeliverSm,
        DeliverSmResp,
        Unbind,
        UnbindResp,
        EnquireLink,
        EnquireLinkResp,
        DataSm,
        DataSmResp,
    )
}

_RESPONSE_CLASSES: Final[dict[int, type[Pdu]]] = {
    CommandId.BIND_RECEIVER: BindReceiverResp,
    CommandId.BIND_TRANSMITTER: BindTransmitterResp,
    CommandId.BIND_TRANSCEIVER: BindTransceiverResp,
    CommandId.SUBMIT_SM: SubmitSmResp,
    CommandId.DELIVER_SM: DeliverSmResp,
    CommandId.UNBIND: UnbindResp,
    CommandId.ENQUIRE_LINK: EnquireLinkResp,
    CommandId.DATA_SM: DataSmResp,
}


# ---------------------------------------------------------------------------------------
# Whole-PDU encoding and decoding


def encode_pdu(pdu: Pdu) -> bytes:
    """The wire form of ``pdu``. Raises ValueError when a field breaks its SMPP limits."""
    if not 0 <= pdu.sequence_number <= 0xFFFFFFFF:
        raise ValueError(f"sequence_number {pdu.sequence_number} does not fit in 32 bits")
    if not 0 <= pdu.command_status <= 0xFFFFFFFF:
        raise ValueError(f"command_status {pdu.command_status} does not fit in 32 bits")
    writer = _Writer()
    pdu._encode_body(writer)
    body = writer.getvalue()
    length = HEADER_LENGTH + len(body)
    if length > MAX_PDU_LENGTH:
        raise ValueError(f"PDU would be {length} octets, more than {MAX_PDU_LENGTH}")
    return _HEADER.pack(length, pdu.command_id, pdu.command_status, pdu.sequence_number) + body


def _decode_frame(frame: bytes) -> Pdu:
    """Decode one complete PDU whose command_length has already been checked."""
    _, command_id, command_status, sequence_number = _HEADER.unpack_from(frame)
    cls = PDU_CLASSES.get(command_id)
    if cls is None:
        raise SmppPduError(
            f"unknown command_id 0x{command_id:08X}",
            command_status=ESME_RINVCMDID,
            sequence_number=sequence_number,
            command_id=command_id,
        )
    if len(frame) == HEADER_LENGTH and cls._body_may_be_empty:
        return cls(sequence_number=sequence_number, command_status=command_status)
    try:
        return cls._decode_body(_Reader(frame[HEADER_LENGTH:]), sequence_number, command_status)
    except _BodyError as exc:
        raise SmppPduError(
            f"{cls.command_id.name.lower()}: {exc.message}",
            command_status=exc.command_status,
            sequence_number=sequence_number,
            command_id=command_id,
        ) from None


def _length_error(length: int, max_length: int) -> SmppFramingError:
    """The error for a command_length outside ``HEADER_LENGTH..max_length``."""
    if length < HEADER_LENGTH:
        return SmppFramingError(
            f"command_length {length} is shorter than the 16-octet header",
            command_status=ESME_RINVCMDLEN,
        )
    return SmppFramingError(
        f"command_length {length} is more than the {max_length}-octet maximum",
        command_status=ESME_RINVCMDLEN,
    )


def decode_pdu(data: bytes, *, max_length: int = MAX_PDU_LENGTH) -> Pdu:
    """Decode exactly one PDU from ``data`` (which must hold nothing else)."""
    if len(data) < 4:
        raise SmppFramingError(
            f"{len(data)} octets cannot hold a command_length", command_status=ESME_RINVCMDLEN
        )
    (length,) = _U32.unpack_from(data)
    if not HEADER_LENGTH <= length <= max_length:
        raise _length_error(length, max_length)
    if length != len(data):
        raise SmppFramingError(
            f"command_length {length} but {len(data)} octets given",
            command_status=ESME_RINVCMDLEN,
        )
    return _decode_frame(bytes(data))


# ---------------------------------------------------------------------------------------
# Helpers for answering


PduT = TypeVar("PduT", bound=Pdu)


@overload
def response_for(request: BindTransmitter, command_status: int = ...) -> BindTransmitterResp: ...
@overload
def response_for(request: BindReceiver, command_status: int = ...) -> BindReceiverResp: ...
@overload
def response_for(request: BindTransceiver, command_status: int = ...) -> BindTransceiverResp: ...
@overload
def response_for(request: SubmitSm, command_status: int = ...) -> SubmitSmResp: ...
@overload
def response_for(request: DeliverSm, command_status: int = ...) -> DeliverSmResp: ...
@overload
def response_for(request: DataSm, command_status: int = ...) -> DataSmResp: ...
@overload
def response_for(request: Unbind, command_status: int = ...) -> UnbindResp: ...
@overload
def response_for(request: EnquireLink, command_status: int = ...) -> EnquireLinkResp: ...
@overload
def response_for(request: Pdu, command_status: int = ...) -> Pdu: ...
def response_for(request: Pdu, command_status: int = ESME_ROK) -> Pdu:
    """The default response to a request (same sequence number), e.g. deliver_sm →
    deliver_sm_resp. Fill response-specific fields with ``attrs.evolve`` when needed."""
    cls = _RESPONSE_CLASSES.get(request.command_id)
    if cls is None:
        raise ValueError(f"{request.command_id.name.lower()} is not a request with a response")
    return cls(sequence_number=request.sequence_number, command_status=command_status)


def generic_nack_for(error: SmppProtocolError) -> GenericNack:
    """The generic_nack that answers a malformed PDU (sequence 0 when it was unreadable)."""
    return GenericNack(
        sequence_number=error.sequence_number or 0, command_status=error.command_status
    )


# ---------------------------------------------------------------------------------------
# The connection


class SmppConnection(LengthPrefixedStream[Pdu, SmppFramingError]):
    """Byte stream ⇄ PDUs for one SMPP session, plus sequence-number allocation (the
    stream half, shared with CMPP, is `smsgw.sansio.LengthPrefixedStream`).

    It holds no session state (bound or not, outstanding requests): that belongs to the
    layer that moves the bytes and keeps the timers.
    """

    def __init__(self, *, max_pdu_length: int = MAX_PDU_LENGTH) -> None:
        super().__init__(header_length=HEADER_LENGTH, max_pdu_length=max_pdu_length)

    # A plain function, so decoding a PDU costs no extra call.
    _decode_frame = staticmethod(_decode_frame)

    def _framing_error(self, length: int, buffer: bytearray) -> SmppFramingError:
        error = _length_error(length, self.max_pdu_length)
        # Best effort, so the generic_nack can name the PDU it refuses.
        if len(buffer) >= HEADER_LENGTH:
            _, error.command_id, _, error.sequence_number = _HEADER.unpack_from(buffer)
        return error

    # sending

    def send(self, pdu: Pdu) -> bytes:
        """The bytes to write for ``pdu``, exactly as given."""
        return encode_pdu(pdu)

    def send_request(self, pdu: PduT) -> tuple[PduT, bytes]:
        """Give a request a fresh sequence number; returns it (to match the response) and
        its bytes."""
        if pdu.is_response:
            raise ValueError(f"{pdu.command_id.name.lower()} is a response, not a request")
        numbered = attrs.evolve(pdu, sequence_number=self.next_sequence())
        return numbered, encode_pdu(numbered)

    def number_request(self, data: bytes) -> tuple[int, bytes]:
        """`send_request` for a request already encoded (`encode_pdu`, whatever sequence
        number it holds): returns the fresh sequence number and the bytes carrying it, so a
        PDU encoded once (to check it) need not be built and encoded again."""
        if len(data) < HEADER_LENGTH:
            raise ValueError(f"{len(data)} octets cannot hold a PDU header")
        (command_id,) = _U32.unpack_from(data, 4)
        if command_id & _RESPONSE_BIT:
            raise ValueError(f"command_id 0x{command_id:08X} is a response, not a request")
        sequence = self.next_sequence()
        return sequence, data[:12] + _U32.pack(sequence) + data[HEADER_LENGTH:]
