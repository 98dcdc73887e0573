import itertools
import random
import struct

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsgw.carriers.smpp import codec
from smsgw.carriers.smpp.codec import (
    CommandId,
    Pdu,
    RawTlv,
    SmppConnection,
    SmppFramingError,
    SmppPduError,
    SmppProtocolError,
    Tlvs,
    decode_pdu,
    encode_pdu,
)
from smsgw.sansio import NEED_DATA

from ..stream_support import drain, feed_in_pieces
from .samples import SAMPLE_PDUS, sample_stream


def header(length: int, command_id: int, status: int = 0, sequence: int = 1) -> bytes:
    return struct.pack(">IIII", length, command_id, status, sequence)


def frame(command_id: int, body: bytes, sequence: int = 1, status: int = 0) -> bytes:
    return header(16 + len(body), command_id, status, sequence) + body


SUBMIT_BODY_HEAD = (
    b"\x00"  # service_type
    b"\x01\x01" + b"123\x00"  # source ton, npi, addr
    b"\x01\x01" + b"456\x00"  # dest ton, npi, addr
    b"\x00\x00\x00"  # esm_class, protocol_id, priority_flag
    b"\x00\x00"  # schedule_delivery_time, validity_period
    b"\x01\x00\x00\x00"  # registered_delivery, replace_if_present, data_coding, default_msg_id
)


# --- round trips ----------------------------------------------------------------------------


def test_samples_cover_every_command() -> None:
    assert {pdu.command_id for pdu in SAMPLE_PDUS} == set(CommandId)
    assert set(codec.PDU_CLASSES) == set(CommandId)


@pytest.mark.parametrize("pdu", SAMPLE_PDUS, ids=lambda pdu: type(pdu).__name__)
def test_round_trip(pdu: Pdu) -> None:
    data = encode_pdu(pdu)
    length, command_id, status, sequence = struct.unpack_from(">IIII", data)
    assert (length, command_id, status, sequence) == (
        len(data),
        pdu.command_id,
        pdu.command_status,
        pdu.sequence_number,
    )
    assert decode_pdu(data) == pdu


def test_enquire_link_bytes_match_the_specification() -> None:
    assert encode_pdu(codec.EnquireLink(sequence_number=1)) == bytes.fromhex(
        "00000010000000150000000000000001"
    )


def test_submit_sm_bytes_match_a_hand_built_pdu() -> None:
    pdu = codec.SubmitSm(
        sequence_number=2,
        source_addr_ton=1,
        source_addr_npi=1,
        source_addr="123",
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr="456",
        registered_delivery=1,
        short_message=b"hi",
        tlvs=Tlvs(sar_msg_ref_num=0x0102),
    )
    body = SUBMIT_BODY_HEAD + b"\x02hi" + b"\x02\x0c\x00\x02\x01\x02"
    assert encode_pdu(pdu) == frame(CommandId.SUBMIT_SM, body, sequence=2)


def test_unknown_tlvs_are_kept_in_order_and_written_back() -> None:
    tlvs = b"\x14\x00\x00\x02ab" + b"\x02\x0c\x00\x02\x00\x07" + b"\x00\x05\x00\x00"
    pdu = decode_pdu(frame(CommandId.SUBMIT_SM, SUBMIT_BODY_HEAD + b"\x00" + tlvs))
    assert isinstance(pdu, codec.SubmitSm)
    assert pdu.tlvs.sar_msg_ref_num == 7
    assert pdu.tlvs.unknown == (RawTlv(0x1400, b"ab"), RawTlv(0x0005, b""))
    assert decode_pdu(encode_pdu(pdu)) == pdu


def test_later_duplicate_tlv_wins() -> None:
    tlvs = b"\x04\x27\x00\x01\x01" + b"\x04\x27\x00\x01\x02"
    pdu = decode_pdu(frame(CommandId.DELIVER_SM, SUBMIT_BODY_HEAD + b"\x00" + tlvs))
    assert isinstance(pdu, codec.DeliverSm)
    assert pdu.tlvs.message_state == codec.MessageState.DELIVERED


def test_receipted_message_id_without_nul_is_accepted() -> None:
    tlvs = b"\x00\x1e\x00\x03abc"
    pdu = decode_pdu(frame(CommandId.DELIVER_SM, SUBMIT_BODY_HEAD + b"\x00" + tlvs))
    assert isinstance(pdu, codec.DeliverSm)
    assert pdu.tlvs.receipted_message_id == "abc"


@pytest.mark.parametrize(
    ("command_id", "cls"),
    [
        (CommandId.SUBMIT_SM_RESP, codec.SubmitSmResp),
        (CommandId.DELIVER_SM_RESP, codec.DeliverSmResp),
        (CommandId.DATA_SM_RESP, codec.DataSmResp),
        (CommandId.BIND_TRANSCEIVER_RESP, codec.BindTransceiverResp),
    ],
)
def test_error_response_without_body_decodes(command_id: int, cls: type[Pdu]) -> None:
    pdu = decode_pdu(header(16, command_id, codec.ESME_RTHROTTLED, 9))
    assert pdu == cls(sequence_number=9, command_status=codec.ESME_RTHROTTLED)


def test_payload_property_prefers_short_message_then_message_payload() -> None:
    assert codec.SubmitSm(short_message=b"a").payload == b"a"
    assert codec.SubmitSm(tlvs=Tlvs(message_payload=b"long")).payload == b"long"
    assert codec.DataSm(tlvs=Tlvs(message_payload=b"d")).payload == b"d"
    assert codec.DataSm().payload == b""


def test_delivery_receipt_flag_reads_the_message_type_bits() -> None:
    assert codec.DeliverSm(esm_class=0x04).is_delivery_receipt
    assert codec.DeliverSm(esm_class=0x44).is_delivery_receipt  # with UDHI
    assert not codec.DeliverSm(esm_class=0x00).is_delivery_receipt
    assert not codec.DeliverSm(esm_class=0x08).is_delivery_receipt  # SME delivery ack


# --- stream feeding -------------------------------------------------------------------------


def test_whole_stream_at_once() -> None:
    conn = SmppConnection()
    conn.receive_data(sample_stream())
    assert drain(conn) == SAMPLE_PDUS
    assert conn.pending_bytes == 0


def test_byte_by_byte() -> None:
    received = feed_in_pieces(SmppConnection(), sample_stream(), itertools.repeat(1))
    assert received == SAMPLE_PDUS


@pytest.mark.parametrize("seed", range(20))
def test_random_splits(seed: int) -> None:
    rng = random.Random(seed)
    steps = (rng.randint(1, 80) for _ in itertools.count())
    received = feed_in_pieces(SmppConnection(), sample_stream(), steps)
    assert received == SAMPLE_PDUS


@given(st.lists(st.integers(min_value=1, max_value=200), min_size=1))
def test_hypothesis_splits(cuts: list[int]) -> None:
    received = feed_in_pieces(SmppConnection(), sample_stream(), cuts)
    assert received == SAMPLE_PDUS


def test_need_data_until_the_pdu_is_complete() -> None:
    data = encode_pdu(codec.EnquireLink(sequence_number=3))
    conn = SmppConnection()
    assert conn.next_event() is NEED_DATA
    conn.receive_data(data[:15])
    assert conn.next_event() is NEED_DATA
    assert conn.pending_bytes == 15
    conn.receive_data(data[15:])
    assert conn.next_event() == codec.EnquireLink(sequence_number=3)
    assert conn.next_event() is NEED_DATA


# --- malformed input --------------------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 4, 15])
def test_length_below_header_is_a_framing_error(length: int) -> None:
    conn = SmppConnection()
    conn.receive_data(header(length, CommandId.ENQUIRE_LINK, sequence=5))
    with pytest.raises(SmppFramingError) as info:
        conn.next_event()
    assert info.value.command_status == codec.ESME_RINVCMDLEN
    assert info.value.sequence_number == 5
    assert not info.value.recoverable
    assert conn.broken


def test_length_above_maximum_is_a_framing_error_as_soon_as_it_is_read() -> None:
    conn = SmppConnection(max_pdu_length=1024)
    conn.receive_data(struct.pack(">I", 1025))  # only the length: no need to wait for more
    with pytest.raises(SmppFramingError) as info:
        conn.next_event()
    assert info.value.command_status == codec.ESME_RINVCMDLEN
    assert info.value.sequence_number is None


def test_default_maximum_is_64_kib() -> None:
    conn = SmppConnection()
    conn.receive_data(header(64 * 1024 + 1, CommandId.SUBMIT_SM))
    with pytest.raises(SmppFramingError):
        conn.next_event()
    ok = SmppConnection()
    ok.receive_data(header(64 * 1024, CommandId.SUBMIT_SM))
    assert ok.next_event() is NEED_DATA


def test_broken_stream_stays_broken() -> None:
    conn = SmppConnection()
    conn.receive_data(header(3, CommandId.ENQUIRE_LINK))
    with pytest.raises(SmppFramingError) as first:
        conn.next_event()
    conn.receive_data(encode_pdu(codec.EnquireLink(sequence_number=1)))
    with pytest.raises(SmppFramingError) as second:
        conn.next_event()
    assert second.value is first.value
    assert conn.pending_bytes == 0


@pytest.mark.parametrize(
    ("command_id", "body", "status"),
    [
        (0x00000099, b"", codec.ESME_RINVCMDID),
        (0x00000003, b"id\x00\x00\x00\x00", codec.ESME_RINVCMDID),  # query_sm: not supported
        (CommandId.SUBMIT_SM, b"\x00\x01\x01123", codec.ESME_RINVCMDLEN),  # unterminated
        (CommandId.SUBMIT_SM, SUBMIT_BODY_HEAD[:-1], codec.ESME_RINVCMDLEN),  # ends early
        (CommandId.SUBMIT_SM, SUBMIT_BODY_HEAD + b"\x05hi", codec.ESME_RINVMSGLEN),
        (CommandId.SUBMIT_SM, SUBMIT_BODY_HEAD + b"\x00\x02\x0c", codec.ESME_RINVOPTPARSTREAM),
        (
            CommandId.SUBMIT_SM,
            SUBMIT_BODY_HEAD + b"\x00\x02\x0c\x00\x05\x00",
            codec.ESME_RINVOPTPARSTREAM,
        ),
        (
            CommandId.SUBMIT_SM,
            SUBMIT_BODY_HEAD + b"\x00\x02\x0c\x00\x01\x07",
            codec.ESME_RINVPARLEN,
        ),
        (
            CommandId.DELIVER_SM,
            SUBMIT_BODY_HEAD + b"\x00\x04\x23\x00\x02\x03\x00",
            codec.ESME_RINVPARLEN,
        ),
        (CommandId.ENQUIRE_LINK, b"\x00", codec.ESME_RINVCMDLEN),
        (CommandId.BIND_TRANSMITTER, b"sys\x00pw\x00\x00", codec.ESME_RINVCMDLEN),
        (CommandId.SUBMIT_SM_RESP, b"abc", codec.ESME_RINVCMDLEN),
        (CommandId.DATA_SM, b"\x00\x01\x01", codec.ESME_RINVCMDLEN),
    ],
)
def test_malformed_pdu_is_skipped_and_the_stream_goes_on(
    command_id: int, body: bytes, status: int
) -> None:
    bad = frame(command_id, body, sequence=77)
    good = encode_pdu(codec.EnquireLink(sequence_number=78))
    conn = SmppConnection()
    conn.receive_data(bad + good)
    with pytest.raises(SmppPduError) as info:
        conn.next_event()
    error = info.value
    assert error.command_status == status
    assert error.sequence_number == 77
    assert error.command_id == command_id
    assert error.recoverable
    assert not conn.broken
    assert conn.next_event() == codec.EnquireLink(sequence_number=78)
    nack = codec.generic_nack_for(error)
    assert nack == codec.GenericNack(sequence_number=77, command_status=status)
    with pytest.raises(SmppPduError):
        decode_pdu(bad)


def test_generic_nack_for_an_unreadable_header_uses_sequence_zero() -> None:
    error = SmppFramingError("bad", command_status=codec.ESME_RINVCMDLEN)
    assert codec.generic_nack_for(error) == codec.GenericNack(
        sequence_number=0, command_status=codec.ESME_RINVCMDLEN
    )


def test_decode_pdu_requires_exactly_one_pdu() -> None:
    data = encode_pdu(codec.EnquireLink(sequence_number=1))
    with pytest.raises(SmppFramingError):
        decode_pdu(data + b"\x00")
    with pytest.raises(SmppFramingError):
        decode_pdu(data[:3])


# --- encoding limits ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pdu", "message"),
    [
        (codec.BindTransmitter(system_id="x" * 16), "system_id"),
        (codec.BindTransmitter(password="x" * 9), "password"),
        (codec.SubmitSm(destination_addr="1" * 21), "destination_addr"),
        (codec.SubmitSm(source_addr="a\x00b"), "NUL"),
        (codec.SubmitSm(source_addr="中"), "Latin-1"),
        (codec.SubmitSm(esm_class=256), "esm_class"),
        (codec.SubmitSm(short_message=b"x" * 255), "message_payload"),
        (
            codec.SubmitSm(short_message=b"x", tlvs=Tlvs(message_payload=b"y")),
            "both",
        ),
        (codec.SubmitSm(tlvs=Tlvs(sar_msg_ref_num=0x10000)), "sar_msg_ref_num"),
        (codec.SubmitSm(tlvs=Tlvs(message_payload=b"x" * 0x10000)), "message_payload"),
        (codec.SubmitSm(tlvs=Tlvs(unknown=(RawTlv(0x10000, b""),))), "tag"),
        (codec.SubmitSmResp(message_id="x" * 65), "message_id"),
        (codec.EnquireLink(sequence_number=-1), "sequence_number"),
        (codec.EnquireLink(command_status=1 << 32), "command_status"),
        (
            codec.DeliverSm(
                tlvs=Tlvs(
                    network_error_code=codec.NetworkErrorCode(network_type=3, error_code=1 << 16)
                )
            ),
            "network_error_code",
        ),
    ],
)
def test_encoding_refuses_fields_beyond_smpp_limits(pdu: Pdu, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_pdu(pdu)


def test_encoding_refuses_a_pdu_above_the_maximum() -> None:
    big = codec.SubmitSm(tlvs=Tlvs(unknown=tuple(RawTlv(0x1400, b"x" * 60_000) for _ in range(2))))
    with pytest.raises(ValueError, match="octets"):
        encode_pdu(big)


def test_longest_allowed_values_encode() -> None:
    pdu = codec.SubmitSm(source_addr="1" * 20, destination_addr="2" * 20, short_message=b"x" * 254)
    assert decode_pdu(encode_pdu(pdu)) == pdu


# --- sequence numbers and responses ---------------------------------------------------------------


def test_sequence_numbers_start_at_one_and_wrap() -> None:
    conn = SmppConnection()
    assert [conn.next_sequence() for _ in range(3)] == [1, 2, 3]
    conn._last_sequence = codec.MAX_SEQUENCE_NUMBER - 1
    assert conn.next_sequence() == 0x7FFFFFFF
    assert conn.next_sequence() == 1


def test_send_request_numbers_the_request() -> None:
    conn = SmppConnection()
    first, first_bytes = conn.send_request(codec.EnquireLink())
    second, second_bytes = conn.send_request(codec.SubmitSm(destination_addr="1"))
    assert (first.sequence_number, second.sequence_number) == (1, 2)
    assert decode_pdu(first_bytes) == first
    assert decode_pdu(second_bytes) == second
    assert conn.send(first) == first_bytes
    with pytest.raises(ValueError, match="response"):
        conn.send_request(codec.EnquireLinkResp())


@pytest.mark.parametrize(
    ("request_pdu", "response_cls"),
    [
        (codec.BindTransmitter(sequence_number=3), codec.BindTransmitterResp),
        (codec.BindReceiver(sequence_number=3), codec.BindReceiverResp),
        (codec.BindTransceiver(sequence_number=3), codec.BindTransceiverResp),
        (codec.SubmitSm(sequence_number=3), codec.SubmitSmResp),
        (codec.DeliverSm(sequence_number=3), codec.DeliverSmResp),
        (codec.DataSm(sequence_number=3), codec.DataSmResp),
        (codec.Unbind(sequence_number=3), codec.UnbindResp),
        (codec.EnquireLink(sequence_number=3), codec.EnquireLinkResp),
    ],
)
def test_response_for(request_pdu: Pdu, response_cls: type[Pdu]) -> None:
    response = codec.response_for(request_pdu, codec.ESME_RX_T_APPN)
    assert response == response_cls(sequence_number=3, command_status=codec.ESME_RX_T_APPN)
    assert response.is_response and not request_pdu.is_response


def test_response_for_is_typed_by_request() -> None:
    # The annotations are the test: mypy checks them against response_for's overloads.
    deliver_resp: codec.DeliverSmResp = codec.response_for(codec.DeliverSm(sequence_number=2))
    submit_resp: codec.SubmitSmResp = codec.response_for(codec.SubmitSm(sequence_number=3))
    assert deliver_resp.sequence_number == 2
    assert submit_resp.message_id == ""


def test_response_for_a_response_is_refused() -> None:
    with pytest.raises(ValueError):
        codec.response_for(codec.SubmitSmResp())


def test_describe_status() -> None:
    assert codec.describe_status(0) == "ESME_ROK"
    assert codec.describe_status(0x58) == "ESME_RTHROTTLED"
    assert codec.describe_status(0x14) == "ESME_RMSGQFUL"
    assert codec.describe_status(0x400) == "0x00000400"


def test_tlvs_repr_shows_only_present_fields() -> None:
    assert repr(Tlvs(message_state=2)) == "Tlvs(message_state=2)"
    assert repr(Tlvs()) == "Tlvs()"


# --- properties and fuzzing ------------------------------------------------------------------

cstrings = st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=255), max_size=20)
bytes_u8 = st.integers(min_value=0, max_value=255)
optional_u8 = st.none() | bytes_u8
optional_u16 = st.none() | st.integers(min_value=0, max_value=0xFFFF)
tlvs_strategy = st.builds(
    Tlvs,
    user_message_reference=optional_u16,
    sar_msg_ref_num=optional_u16,
    sar_total_segments=optional_u8,
    sar_segment_seqnum=optional_u8,
    message_payload=st.none() | st.binary(max_size=300),
    receipted_message_id=st.none() | cstrings,
    message_state=optional_u8,
    network_error_code=st.none()
    | st.builds(
        codec.NetworkErrorCode,
        network_type=bytes_u8,
        error_code=st.integers(min_value=0, max_value=0xFFFF),
    ),
    unknown=st.lists(
        st.builds(
            RawTlv,
            tag=st.integers(min_value=0x1400, max_value=0x3FFF),
            value=st.binary(max_size=20),
        ),
        max_size=3,
    ).map(tuple),
)


def short_message_pdus(
    cls: type[codec.ShortMessagePdu],
) -> st.SearchStrategy[codec.ShortMessagePdu]:
    return st.builds(
        cls,
        sequence_number=st.integers(min_value=0, max_value=0xFFFFFFFF),
        command_status=st.integers(min_value=0, max_value=0xFFFFFFFF),
        service_type=st.text(alphabet="CMTWAP", max_size=5),
        source_addr_ton=bytes_u8,
        source_addr_npi=bytes_u8,
        source_addr=cstrings,
        dest_addr_ton=bytes_u8,
        destination_addr=cstrings,
        esm_class=bytes_u8,
        priority_flag=bytes_u8,
        validity_period=st.sampled_from(["", "000001000000000R"]),
        registered_delivery=bytes_u8,
        data_coding=bytes_u8,
        short_message=st.binary(max_size=254),
        tlvs=tlvs_strategy,
    ).filter(lambda pdu: not (pdu.short_message and pdu.tlvs.message_payload is not None))


@given(st.sampled_from([codec.SubmitSm, codec.DeliverSm]).flatmap(short_message_pdus))
def test_generated_pdus_round_trip(pdu: codec.ShortMessagePdu) -> None:
    assert decode_pdu(encode_pdu(pdu)) == pdu


def _pull_all(conn: SmppConnection, budget: int) -> None:
    """Pull events until NEED_DATA or a broken stream; only PDUs or protocol errors."""
    for _ in range(budget):
        try:
            event = conn.next_event()
        except SmppFramingError:
            assert conn.broken
            return
        except SmppPduError as error:
            assert error.recoverable and error.sequence_number is not None
            continue
        if event is NEED_DATA:
            return
        assert isinstance(event, Pdu)
        try:
            reencoded = encode_pdu(event)
        except ValueError:
            continue  # decoding is lenient where encoding enforces SMPP limits
        assert decode_pdu(reencoded) == event
    raise AssertionError("the decoder did not settle")


@settings(max_examples=300)
@given(st.binary(max_size=400), st.lists(st.integers(min_value=1, max_value=64), max_size=20))
def test_fuzz_random_bytes(data: bytes, cuts: list[int]) -> None:
    conn = SmppConnection(max_pdu_length=4096)
    position = 0
    for cut in [*cuts, len(data)]:
        conn.receive_data(data[position : position + cut])
        position += cut
        _pull_all(conn, budget=len(data) + 2)


@settings(max_examples=500)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([*CommandId, 0x00000003, 0x80000104]),
            st.binary(max_size=120),
            st.integers(min_value=0, max_value=0xFFFFFFFF),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_fuzz_well_framed_random_bodies(pdus: list[tuple[int, bytes, int]]) -> None:
    """Sane lengths with random bodies reach the body parsers; every PDU is consumed."""
    stream = b"".join(frame(command_id, body, sequence=seq) for command_id, body, seq in pdus)
    conn = SmppConnection()
    conn.receive_data(stream)
    outcomes = 0
    for _ in range(len(pdus) + 1):
        try:
            event = conn.next_event()
        except SmppPduError:
            outcomes += 1
            continue
        if event is NEED_DATA:
            break
        outcomes += 1
    assert outcomes == len(pdus)
    assert conn.pending_bytes == 0 and not conn.broken


@given(
    st.sampled_from(SAMPLE_PDUS),
    st.integers(min_value=16, max_value=400),
    st.integers(min_value=0, max_value=399),
    bytes_u8,
)
def test_fuzz_mutated_valid_pdus(pdu: Pdu, cut: int, index: int, value: int) -> None:
    """Valid PDUs with one byte changed or the tail cut (length fixed up) never crash."""
    data = bytearray(encode_pdu(pdu))
    data[index % len(data)] = value
    data = data[: max(16, min(cut, len(data)))]
    data[0:4] = struct.pack(">I", len(data))
    conn = SmppConnection()
    conn.receive_data(bytes(data))
    try:
        event = conn.next_event()
    except SmppProtocolError as error:
        assert error.command_status != codec.ESME_ROK
    else:
        assert isinstance(event, Pdu)
    assert conn.pending_bytes == 0


def test_attrs_evolve_keeps_pdus_frozen() -> None:
    pdu = codec.SubmitSm(destination_addr="1")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        pdu.destination_addr = "2"  # type: ignore[misc]
    assert attrs.evolve(pdu, sequence_number=4).sequence_number == 4
