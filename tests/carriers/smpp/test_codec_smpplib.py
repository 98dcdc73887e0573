"""Cross-check against smpplib, an independent SMPP implementation.

Our bytes must parse in smpplib with the same fields, and smpplib's bytes in our codec.
smpplib returns C-strings as bytes and leaves fields it did not see as None.
"""

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from smpplib import smpp

from smsgw.carriers.smpp import codec
from smsgw.carriers.smpp.codec import NetworkErrorCode, Pdu, Tlvs, decode_pdu, encode_pdu

from .samples import RECEIPT_TEXT

SMPPLIB_NAMES = {
    codec.CommandId.GENERIC_NACK: "generic_nack",
    codec.CommandId.BIND_RECEIVER: "bind_receiver",
    codec.CommandId.BIND_RECEIVER_RESP: "bind_receiver_resp",
    codec.CommandId.BIND_TRANSMITTER: "bind_transmitter",
    codec.CommandId.BIND_TRANSMITTER_RESP: "bind_transmitter_resp",
    codec.CommandId.BIND_TRANSCEIVER: "bind_transceiver",
    codec.CommandId.BIND_TRANSCEIVER_RESP: "bind_transceiver_resp",
    codec.CommandId.SUBMIT_SM: "submit_sm",
    codec.CommandId.SUBMIT_SM_RESP: "submit_sm_resp",
    codec.CommandId.DELIVER_SM: "deliver_sm",
    codec.CommandId.DELIVER_SM_RESP: "deliver_sm_resp",
    codec.CommandId.UNBIND: "unbind",
    codec.CommandId.UNBIND_RESP: "unbind_resp",
    codec.CommandId.ENQUIRE_LINK: "enquire_link",
    codec.CommandId.ENQUIRE_LINK_RESP: "enquire_link_resp",
    codec.CommandId.DATA_SM: "data_sm",
    codec.CommandId.DATA_SM_RESP: "data_sm_resp",
}


class _SequenceSource:
    """The client object smpplib asks for sequence numbers."""

    sequence = 0

    def next_sequence(self) -> int:
        self.sequence += 1
        return self.sequence


def smpplib_parse(data: bytes) -> Any:
    return smpp.parse_pdu(data, client=_SequenceSource())


def smpplib_make(name: str, sequence: int, status: int = 0, **fields: Any) -> bytes:
    pdu = smpp.make_pdu(name, client=_SequenceSource(), **fields)
    pdu.sequence = sequence  # make_pdu ignores a sequence keyword once a client is given
    pdu.status = status
    data: bytes = pdu.generate()
    return data


def text(value: str) -> bytes:
    return value.encode("latin-1")


# --- ours → smpplib ----------------------------------------------------------------------------

HEADER_ONLY = [
    codec.GenericNack(sequence_number=5, command_status=codec.ESME_RINVCMDLEN),
    codec.Unbind(sequence_number=6),
    codec.UnbindResp(sequence_number=6),
    codec.EnquireLink(sequence_number=7),
    codec.EnquireLinkResp(sequence_number=7),
]


@pytest.mark.parametrize("pdu", HEADER_ONLY, ids=lambda pdu: type(pdu).__name__)
def test_header_only_pdus_parse_in_smpplib(pdu: Pdu) -> None:
    parsed = smpplib_parse(encode_pdu(pdu))
    assert parsed.command == SMPPLIB_NAMES[pdu.command_id]
    assert (parsed.sequence, parsed.status) == (pdu.sequence_number, pdu.command_status)


@pytest.mark.parametrize("cls", [codec.BindTransmitter, codec.BindReceiver, codec.BindTransceiver])
def test_bind_parses_in_smpplib(cls: type[codec.Bind]) -> None:
    pdu = cls(
        sequence_number=1,
        system_id="smsgw",
        password="pw123",
        system_type="SMS",
        addr_ton=1,
        addr_npi=1,
        address_range="^86",
    )
    parsed = smpplib_parse(encode_pdu(pdu))
    assert parsed.command == SMPPLIB_NAMES[pdu.command_id]
    assert parsed.sequence == 1
    assert (parsed.system_id, parsed.password, parsed.system_type) == (b"smsgw", b"pw123", b"SMS")
    assert (parsed.interface_version, parsed.addr_ton, parsed.addr_npi) == (0x34, 1, 1)
    assert parsed.address_range == b"^86"


def test_bind_resp_parses_in_smpplib() -> None:
    pdu = codec.BindTransceiverResp(
        sequence_number=2, system_id="SMSC", tlvs=Tlvs(sc_interface_version=0x34)
    )
    parsed = smpplib_parse(encode_pdu(pdu))
    assert (parsed.command, parsed.sequence) == ("bind_transceiver_resp", 2)
    assert (parsed.system_id, parsed.sc_interface_version) == (b"SMSC", 0x34)


@pytest.mark.parametrize("cls", [codec.SubmitSm, codec.DeliverSm])
def test_short_message_pdu_parses_in_smpplib(cls: type[codec.ShortMessagePdu]) -> None:
    pdu = cls(
        sequence_number=9,
        service_type="CMT",
        source_addr_ton=5,
        source_addr_npi=0,
        source_addr="SMSGW",
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr="8613800138000",
        esm_class=0x40,
        protocol_id=0,
        priority_flag=1,
        validity_period="000001000000000R",
        registered_delivery=1,
        data_coding=8,
        short_message=b"\x05\x00\x03\x2a\x02\x01" + "您好".encode("utf-16-be"),
        tlvs=Tlvs(
            user_message_reference=513,
            sar_msg_ref_num=42,
            sar_total_segments=2,
            sar_segment_seqnum=1,
        ),
    )
    parsed = smpplib_parse(encode_pdu(pdu))
    assert (parsed.command, parsed.sequence) == (SMPPLIB_NAMES[pdu.command_id], 9)
    assert parsed.service_type == b"CMT"
    assert (parsed.source_addr_ton, parsed.source_addr_npi, parsed.source_addr) == (
        5,
        0,
        b"SMSGW",
    )
    assert (parsed.dest_addr_ton, parsed.dest_addr_npi, parsed.destination_addr) == (
        1,
        1,
        b"8613800138000",
    )
    assert (parsed.esm_class, parsed.protocol_id, parsed.priority_flag) == (0x40, 0, 1)
    assert (parsed.schedule_delivery_time, parsed.validity_period) == (b"", b"000001000000000R")
    assert (parsed.registered_delivery, parsed.data_coding) == (1, 8)
    assert parsed.sm_length == len(pdu.short_message)
    assert parsed.short_message == pdu.short_message
    assert parsed.user_message_reference == 513
    assert (parsed.sar_msg_ref_num, parsed.sar_total_segments, parsed.sar_segment_seqnum) == (
        42,
        2,
        1,
    )


def test_long_submit_sm_with_message_payload_parses_in_smpplib() -> None:
    payload = b"long text " * 50
    pdu = codec.SubmitSm(
        sequence_number=3, destination_addr="123", tlvs=Tlvs(message_payload=payload)
    )
    parsed = smpplib_parse(encode_pdu(pdu))
    assert parsed.sm_length == 0
    assert parsed.message_payload == payload


def test_receipt_deliver_sm_parses_in_smpplib() -> None:
    pdu = codec.DeliverSm(
        sequence_number=4,
        source_addr="8613800138000",
        destination_addr="SMSGW",
        esm_class=codec.ESM_CLASS_DELIVERY_RECEIPT,
        short_message=RECEIPT_TEXT,
        tlvs=Tlvs(
            receipted_message_id="4d2f0a",
            message_state=codec.MessageState.UNDELIVERABLE,
            network_error_code=NetworkErrorCode(network_type=3, error_code=0x0102),
        ),
    )
    parsed = smpplib_parse(encode_pdu(pdu))
    assert parsed.short_message == RECEIPT_TEXT
    assert parsed.receipted_message_id == b"4d2f0a"
    assert parsed.message_state == 5
    assert parsed.network_error_code == b"\x03\x01\x02"


@pytest.mark.parametrize(
    "pdu",
    [
        codec.SubmitSmResp(sequence_number=10, message_id="0a1b2c3d"),
        codec.DeliverSmResp(sequence_number=11),
        codec.DataSmResp(sequence_number=12, message_id="abc"),
        codec.SubmitSmResp(sequence_number=13, command_status=codec.ESME_RTHROTTLED),
    ],
    ids=lambda pdu: type(pdu).__name__,
)
def test_message_id_responses_parse_in_smpplib(pdu: codec.SubmitSmResp) -> None:
    parsed = smpplib_parse(encode_pdu(pdu))
    assert (parsed.command, parsed.sequence, parsed.status) == (
        SMPPLIB_NAMES[pdu.command_id],
        pdu.sequence_number,
        pdu.command_status,
    )
    assert parsed.message_id == text(pdu.message_id)


def test_data_sm_parses_in_smpplib() -> None:
    pdu = codec.DataSm(
        sequence_number=14,
        service_type="WAP",
        source_addr="4915112345678",
        destination_addr="4915187654321",
        esm_class=3,
        registered_delivery=1,
        data_coding=4,
        tlvs=Tlvs(message_payload=b"\x00\x01binary", sar_msg_ref_num=7),
    )
    parsed = smpplib_parse(encode_pdu(pdu))
    assert (parsed.command, parsed.sequence) == ("data_sm", 14)
    assert (parsed.service_type, parsed.source_addr, parsed.destination_addr) == (
        b"WAP",
        b"4915112345678",
        b"4915187654321",
    )
    assert (parsed.esm_class, parsed.registered_delivery, parsed.data_coding) == (3, 1, 4)
    assert (parsed.message_payload, parsed.sar_msg_ref_num) == (b"\x00\x01binary", 7)


# --- smpplib → ours ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["generic_nack", "unbind", "unbind_resp", "enquire_link", "enquire_link_resp"]
)
def test_smpplib_header_only_pdus_decode(name: str) -> None:
    pdu = decode_pdu(smpplib_make(name, sequence=21, status=0))
    assert SMPPLIB_NAMES[pdu.command_id] == name
    assert pdu.sequence_number == 21


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("bind_transmitter", codec.BindTransmitter),
        ("bind_receiver", codec.BindReceiver),
        ("bind_transceiver", codec.BindTransceiver),
    ],
)
def test_smpplib_bind_decodes(name: str, cls: type[codec.Bind]) -> None:
    data = smpplib_make(
        name,
        sequence=1,
        system_id="esme",
        password="pw",
        system_type="",
        addr_ton=2,
        addr_npi=8,
        address_range="",
    )
    assert decode_pdu(data) == cls(
        sequence_number=1, system_id="esme", password="pw", addr_ton=2, addr_npi=8
    )


def test_smpplib_bind_resp_decodes() -> None:
    data = smpplib_make(
        "bind_transmitter_resp", sequence=1, system_id="SMSC", sc_interface_version=0x34
    )
    assert decode_pdu(data) == codec.BindTransmitterResp(
        sequence_number=1, system_id="SMSC", tlvs=Tlvs(sc_interface_version=0x34)
    )


def test_smpplib_submit_sm_decodes() -> None:
    data = smpplib_make(
        "submit_sm",
        sequence=30,
        service_type="",
        source_addr_ton=1,
        source_addr_npi=1,
        source_addr="10086",
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr="8613900000000",
        esm_class=0x40,
        protocol_id=0,
        priority_flag=0,
        schedule_delivery_time="",
        validity_period="",
        registered_delivery=1,
        replace_if_present_flag=0,
        data_coding=0,
        sm_default_msg_id=0,
        short_message=b"\x05\x00\x03\x01\x02\x02tail",
        sar_msg_ref_num=1,
        sar_total_segments=2,
        sar_segment_seqnum=2,
        user_message_reference=77,
    )
    assert decode_pdu(data) == codec.SubmitSm(
        sequence_number=30,
        source_addr_ton=1,
        source_addr_npi=1,
        source_addr="10086",
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr="8613900000000",
        esm_class=0x40,
        registered_delivery=1,
        short_message=b"\x05\x00\x03\x01\x02\x02tail",
        tlvs=Tlvs(
            sar_msg_ref_num=1, sar_total_segments=2, sar_segment_seqnum=2, user_message_reference=77
        ),
    )


def test_smpplib_receipt_deliver_sm_decodes() -> None:
    data = smpplib_make(
        "deliver_sm",
        sequence=31,
        service_type="",
        source_addr_ton=1,
        source_addr_npi=1,
        source_addr="8613900000000",
        dest_addr_ton=0,
        dest_addr_npi=0,
        destination_addr="10086",
        esm_class=4,
        protocol_id=0,
        priority_flag=0,
        schedule_delivery_time="",
        validity_period="",
        registered_delivery=0,
        replace_if_present_flag=0,
        data_coding=0,
        sm_default_msg_id=0,
        short_message=RECEIPT_TEXT,
        receipted_message_id="4d2f0a",
        message_state=2,
        network_error_code=b"\x03\x00\x00",
    )
    pdu = decode_pdu(data)
    assert isinstance(pdu, codec.DeliverSm)
    assert pdu.sequence_number == 31
    assert (pdu.source_addr, pdu.destination_addr) == ("8613900000000", "10086")
    assert pdu.is_delivery_receipt
    assert pdu.short_message == RECEIPT_TEXT
    assert pdu.tlvs == Tlvs(
        receipted_message_id="4d2f0a",
        message_state=codec.MessageState.DELIVERED,
        network_error_code=NetworkErrorCode(network_type=3, error_code=0),
    )


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("submit_sm_resp", codec.SubmitSmResp),
        ("deliver_sm_resp", codec.DeliverSmResp),
        ("data_sm_resp", codec.DataSmResp),
    ],
)
def test_smpplib_message_id_responses_decode(name: str, cls: type[codec.SubmitSmResp]) -> None:
    data = smpplib_make(name, sequence=40, status=codec.ESME_RMSGQFUL, message_id="id-40")
    assert decode_pdu(data) == cls(
        sequence_number=40, command_status=codec.ESME_RMSGQFUL, message_id="id-40"
    )


def test_smpplib_data_sm_decodes() -> None:
    data = smpplib_make(
        "data_sm",
        sequence=50,
        service_type="",
        source_addr_ton=1,
        source_addr_npi=1,
        source_addr="111",
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr="222",
        esm_class=0,
        registered_delivery=1,
        data_coding=8,
        message_payload="hi".encode("utf-16-be"),
    )
    assert decode_pdu(data) == codec.DataSm(
        sequence_number=50,
        source_addr_ton=1,
        source_addr_npi=1,
        source_addr="111",
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr="222",
        registered_delivery=1,
        data_coding=8,
        tlvs=Tlvs(message_payload="hi".encode("utf-16-be")),
    )


# --- generated cross-checks -----------------------------------------------------------------

ascii_fields = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=20)


@given(
    source_addr=ascii_fields,
    destination_addr=ascii_fields,
    esm_class=st.integers(0, 255),
    data_coding=st.integers(0, 255),
    registered_delivery=st.integers(0, 255),
    short_message=st.binary(min_size=1, max_size=254),
    sequence=st.integers(1, 0x7FFFFFFF),
    sar=st.none() | st.tuples(st.integers(0, 0xFFFF), st.integers(1, 255), st.integers(1, 255)),
)
def test_generated_submit_sm_agrees_both_ways(
    source_addr: str,
    destination_addr: str,
    esm_class: int,
    data_coding: int,
    registered_delivery: int,
    short_message: bytes,
    sequence: int,
    sar: tuple[int, int, int] | None,
) -> None:
    tlvs = Tlvs()
    sar_fields: dict[str, int] = {}
    if sar is not None:
        tlvs = Tlvs(sar_msg_ref_num=sar[0], sar_total_segments=sar[1], sar_segment_seqnum=sar[2])
        sar_fields = dict(
            sar_msg_ref_num=sar[0], sar_total_segments=sar[1], sar_segment_seqnum=sar[2]
        )
    ours = codec.SubmitSm(
        sequence_number=sequence,
        source_addr=source_addr,
        destination_addr=destination_addr,
        esm_class=esm_class,
        registered_delivery=registered_delivery,
        data_coding=data_coding,
        short_message=short_message,
        tlvs=tlvs,
    )
    parsed = smpplib_parse(encode_pdu(ours))
    assert (parsed.sequence, parsed.source_addr, parsed.destination_addr) == (
        sequence,
        text(source_addr),
        text(destination_addr),
    )
    assert (parsed.esm_class, parsed.data_coding, parsed.registered_delivery) == (
        esm_class,
        data_coding,
        registered_delivery,
    )
    assert parsed.short_message == short_message
    assert (parsed.sar_msg_ref_num, parsed.sar_total_segments, parsed.sar_segment_seqnum) == (
        sar if sar is not None else (None, None, None)
    )

    theirs = smpplib_make(
        "submit_sm",
        sequence=sequence,
        service_type="",
        source_addr_ton=0,
        source_addr_npi=0,
        source_addr=source_addr,
        dest_addr_ton=0,
        dest_addr_npi=0,
        destination_addr=destination_addr,
        esm_class=esm_class,
        protocol_id=0,
        priority_flag=0,
        schedule_delivery_time="",
        validity_period="",
        registered_delivery=registered_delivery,
        replace_if_present_flag=0,
        data_coding=data_coding,
        sm_default_msg_id=0,
        short_message=short_message,
        **sar_fields,
    )
    assert decode_pdu(theirs) == ours
