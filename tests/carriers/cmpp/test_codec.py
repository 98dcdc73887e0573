import itertools
import random
import struct

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsgw.carriers.cmpp import codec
from smsgw.carriers.cmpp.codec import (
    NEED_DATA,
    CmppConnection,
    CmppFramingError,
    CmppPduError,
    CmppProtocolError,
    CmppVersion,
    CommandId,
    Pdu,
    StatusReport,
    decode_pdu,
    encode_pdu,
)

from ..stream_support import drain, feed_in_pieces
from .samples import SAMPLE_PDUS, SAMPLE_REPORT

V20, V30 = CmppVersion.V20, CmppVersion.V30
BOTH = pytest.mark.parametrize("version", [V20, V30], ids=["2.0", "3.0"])
ALL_SAMPLES = [*SAMPLE_PDUS, SAMPLE_REPORT]


def frame(command_id: int, body: bytes, sequence: int = 1) -> bytes:
    return struct.pack(">III", 12 + len(body), command_id, sequence) + body


def stream(version: CmppVersion) -> bytes:
    return b"".join(encode_pdu(pdu, version) for pdu in ALL_SAMPLES)


# --- round trips and exact layouts ---------------------------------------------------------


def test_samples_cover_every_command() -> None:
    assert {pdu.command_id for pdu in SAMPLE_PDUS} == set(CommandId)
    assert set(codec.PDU_CLASSES) == set(CommandId)


@BOTH
@pytest.mark.parametrize("pdu", ALL_SAMPLES, ids=lambda pdu: type(pdu).__name__)
def test_round_trip(pdu: Pdu, version: CmppVersion) -> None:
    data = encode_pdu(pdu, version)
    length, command_id, sequence = struct.unpack_from(">III", data)
    assert (length, command_id, sequence) == (len(data), pdu.command_id, pdu.sequence_number)
    assert decode_pdu(data, version) == pdu
    # A PDU written in one version is still read by a connection set to the other.
    assert decode_pdu(data, version.other) == pdu


@pytest.mark.parametrize(
    ("pdu", "v20", "v30"),
    [
        # Total_Length of each PDU in each version (CMPP 3.0 §8.4; gocmpp's constants).
        (codec.Connect(), 39, 39),
        (codec.ConnectResp(), 30, 33),
        (codec.Terminate(), 12, 12),
        (codec.TerminateResp(), 12, 12),
        (codec.ActiveTest(), 12, 12),
        (codec.ActiveTestResp(), 13, 13),
        (codec.SubmitResp(), 21, 24),
        (codec.DeliverResp(), 21, 24),
        # One destination, 4 octets of UCS2: 163 (2.0) and 199 (3.0), as pycmpp and cmppy.
        (codec.Submit(dest_terminal_ids=("1",), msg_fmt=8, msg_content=b"1234"), 163, 199),
        # A report: 12 + 65 + 60 + 8 (2.0) and 12 + 77 + 71 + 20 (3.0).
        (SAMPLE_REPORT, 145, 180),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Pdu) else str(value),
)
def test_lengths_match_the_specification(pdu: Pdu, v20: int, v30: int) -> None:
    assert (len(encode_pdu(pdu, V20)), len(encode_pdu(pdu, V30))) == (v20, v30)


def test_active_test_bytes_match_the_specification() -> None:
    assert encode_pdu(codec.ActiveTest(sequence_number=1)) == bytes.fromhex(
        "0000000c0000000800000001"
    )


def test_submit_3_0_bytes_match_a_hand_built_pdu() -> None:
    pdu = codec.Submit(
        sequence_number=9,
        registered_delivery=1,
        service_id="MSMS",
        fee_user_type=2,
        fee_terminal_type=1,
        msg_fmt=8,
        msg_src="901234",
        src_id="1069001234",
        dest_terminal_ids=("8613800138000",),
        dest_terminal_type=1,
        msg_content="好".encode("utf-16-be"),
        link_id="abc",
    )
    body = (
        bytes(8)  # Msg_Id
        + b"\x01\x01\x01\x00"  # Pk_total, Pk_number, Registered_Delivery, Msg_level
        + b"MSMS".ljust(10, b"\x00")
        + b"\x02"  # Fee_UserType
        + bytes(32)  # Fee_terminal_Id
        + b"\x01"  # Fee_terminal_type
        + b"\x00\x00\x08"  # TP_pId, TP_udhi, Msg_Fmt
        + b"901234"
        + b"01"
        + b"000000"
        + bytes(17)
        + bytes(17)
        + b"1069001234".ljust(21, b"\x00")
        + b"\x01"  # DestUsr_tl
        + b"8613800138000".ljust(32, b"\x00")
        + b"\x01"  # Dest_terminal_type
        + b"\x02\x59\x7d"  # Msg_Length, Msg_Content
        + b"abc".ljust(20, b"\x00")
    )
    assert encode_pdu(pdu, V30) == frame(CommandId.SUBMIT, body, sequence=9)


def test_3_0_only_fields_round_trip_in_3_0_and_read_as_defaults_in_2_0() -> None:
    submit = codec.Submit(dest_terminal_ids=("1" * 32,), fee_terminal_type=1, dest_terminal_type=1)
    assert decode_pdu(encode_pdu(submit, V30), V30) == submit
    deliver = codec.Deliver(src_terminal_id="2" * 32, src_terminal_type=1, link_id="x" * 20)
    assert decode_pdu(encode_pdu(deliver, V30), V20) == deliver
    narrow = codec.Submit(dest_terminal_ids=("1",), fee_terminal_type=1, dest_terminal_type=1)
    assert decode_pdu(encode_pdu(narrow, V20), V20) == attrs.evolve(
        narrow, fee_terminal_type=0, dest_terminal_type=0
    )


@BOTH
def test_status_report_sizes(version: CmppVersion) -> None:
    assert SAMPLE_REPORT.report is not None
    data = SAMPLE_REPORT.report.encode(version)
    assert len(data) == version.report_length
    assert StatusReport.decode(data) == SAMPLE_REPORT.report


def test_a_3_0_deliver_carrying_a_60_octet_report_is_read() -> None:
    # gocmpp writes 60-octet reports in 3.0: both sizes are read in either layout.
    assert SAMPLE_REPORT.report is not None
    deliver_3_0 = bytearray(encode_pdu(SAMPLE_REPORT, V30))
    report_60 = SAMPLE_REPORT.report.encode(V20)
    content_at = 12 + 8 + 21 + 10 + 3 + 32 + 1 + 1
    deliver_3_0[content_at : content_at + 1 + 71] = bytes([60]) + report_60
    struct.pack_into(">I", deliver_3_0, 0, len(deliver_3_0))
    assert decode_pdu(bytes(deliver_3_0), V30) == SAMPLE_REPORT


def test_a_report_that_is_neither_size_is_a_pdu_error() -> None:
    conn = CmppConnection(V30)
    good = encode_pdu(SAMPLE_REPORT, V30)
    content_at = 12 + 8 + 21 + 10 + 3 + 32 + 1 + 1
    bad = bytearray(good[:content_at] + bytes([3]) + b"abc" + bytes(20))
    struct.pack_into(">I", bad, 0, len(bad))
    conn.receive_data(bytes(bad) + encode_pdu(codec.ActiveTest(sequence_number=2)))
    with pytest.raises(CmppPduError) as info:
        conn.next_event()
    assert info.value.command_id == CommandId.DELIVER
    assert info.value.sequence_number == SAMPLE_REPORT.sequence_number
    assert info.value.command_status == codec.RESULT_BAD_LENGTH
    assert drain(conn) == [codec.ActiveTest(sequence_number=2)]


def test_text_fields_stop_at_the_first_nul_and_read_any_octet() -> None:
    body = bytearray(encode_pdu(codec.Connect(source_addr="90"), V30)[12:])
    body[0:6] = b"9\x00\xff12\x00"
    pdu = decode_pdu(frame(CommandId.CONNECT, bytes(body)))
    assert isinstance(pdu, codec.Connect)
    assert pdu.source_addr == "9"
    body[0:6] = b"\xe9\xff1234"
    pdu = decode_pdu(frame(CommandId.CONNECT, bytes(body)))
    assert isinstance(pdu, codec.Connect)
    assert pdu.source_addr == "\xe9\xff1234"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"\x03", codec.ConnectResp(status=3, authenticator_ismg=b"", version=0)),
        (b"\x00\x00\x00\x03", codec.ConnectResp(status=3, authenticator_ismg=b"", version=0)),
        (
            b"\x00" + bytes(range(16)) + b"\x20",
            codec.ConnectResp(status=0, authenticator_ismg=bytes(range(16)), version=0x20),
        ),
    ],
)
def test_connect_resp_sizes(body: bytes, expected: codec.ConnectResp) -> None:
    assert decode_pdu(frame(CommandId.CONNECT_RESP, body, sequence=0)) == expected


def test_active_test_resp_without_its_reserved_octet_is_read() -> None:
    assert decode_pdu(frame(CommandId.ACTIVE_TEST_RESP, b"")) == codec.ActiveTestResp(
        sequence_number=1
    )


# --- the stream ----------------------------------------------------------------------------


@BOTH
def test_whole_stream_at_once(version: CmppVersion) -> None:
    conn = CmppConnection(version)
    conn.receive_data(stream(version))
    assert drain(conn) == ALL_SAMPLES
    assert conn.pending_bytes == 0


@BOTH
def test_byte_by_byte(version: CmppVersion) -> None:
    out = feed_in_pieces(CmppConnection(version), stream(version), itertools.repeat(1))
    assert out == ALL_SAMPLES


@pytest.mark.parametrize("seed", range(5))
def test_random_splits(seed: int) -> None:
    rng = random.Random(seed)
    steps = (rng.randint(1, 60) for _ in itertools.count())
    out = feed_in_pieces(CmppConnection(V30), stream(V30), steps)
    assert out == ALL_SAMPLES


@given(st.lists(st.integers(min_value=1, max_value=200), min_size=1))
def test_hypothesis_splits(cuts: list[int]) -> None:
    out = feed_in_pieces(CmppConnection(V20), stream(V20), cuts)
    assert out == ALL_SAMPLES


def test_need_data_until_the_pdu_is_complete() -> None:
    data = encode_pdu(SAMPLE_PDUS[0])
    conn = CmppConnection()
    for index in range(len(data) - 1):
        conn.receive_data(data[index : index + 1])
        assert conn.next_event() is NEED_DATA
        assert conn.pending_bytes == index + 1
    conn.receive_data(data[-1:])
    assert conn.next_event() == SAMPLE_PDUS[0]


@pytest.mark.parametrize("length", [0, 4, 11])
def test_length_below_header_is_a_framing_error(length: int) -> None:
    conn = CmppConnection()
    conn.receive_data(struct.pack(">III", length, CommandId.ACTIVE_TEST, 5))
    with pytest.raises(CmppFramingError) as info:
        conn.next_event()
    assert info.value.command_status == codec.RESULT_BAD_LENGTH
    assert (info.value.command_id, info.value.sequence_number) == (CommandId.ACTIVE_TEST, 5)
    assert not info.value.recoverable


def test_length_above_maximum_is_a_framing_error_as_soon_as_it_is_read() -> None:
    conn = CmppConnection()
    conn.receive_data(struct.pack(">I", codec.MAX_PDU_LENGTH + 1))
    with pytest.raises(CmppFramingError):
        conn.next_event()
    assert conn.broken


def test_the_maximum_is_configurable_and_sane() -> None:
    conn = CmppConnection(max_pdu_length=100)
    conn.receive_data(encode_pdu(codec.Submit(dest_terminal_ids=("1",), msg_content=b"x")))
    with pytest.raises(CmppFramingError):
        conn.next_event()
    with pytest.raises(ValueError, match="header"):
        CmppConnection(max_pdu_length=11)


def test_broken_stream_stays_broken() -> None:
    conn = CmppConnection()
    conn.receive_data(struct.pack(">III", 3, 1, 1))
    with pytest.raises(CmppFramingError) as first:
        conn.next_event()
    conn.receive_data(encode_pdu(codec.ActiveTest()))
    with pytest.raises(CmppFramingError) as again:
        conn.next_event()
    assert again.value is first.value
    assert conn.pending_bytes == 0


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (frame(0x00000006, b"query"), codec.RESULT_BAD_COMMAND),  # QUERY: not supported
        (frame(0x12345678, b""), codec.RESULT_BAD_COMMAND),
        (frame(CommandId.TERMINATE, b"\x00"), codec.RESULT_BAD_LENGTH),
        (frame(CommandId.CONNECT, bytes(26)), codec.RESULT_BAD_LENGTH),
        (frame(CommandId.CONNECT, bytes(28)), codec.RESULT_BAD_LENGTH),
        (frame(CommandId.SUBMIT_RESP, bytes(10)), codec.RESULT_BAD_LENGTH),
        (frame(CommandId.CONNECT_RESP, bytes(19)), codec.RESULT_BAD_LENGTH),
        (frame(CommandId.ACTIVE_TEST_RESP, b"0x00"), codec.RESULT_BAD_LENGTH),
        (frame(CommandId.SUBMIT, bytes(100)), codec.RESULT_BAD_LENGTH),
        (frame(CommandId.DELIVER, bytes(60)), codec.RESULT_BAD_LENGTH),
    ],
)
def test_malformed_pdu_is_skipped_and_the_stream_goes_on(data: bytes, status: int) -> None:
    conn = CmppConnection()
    conn.receive_data(data + encode_pdu(codec.ActiveTest(sequence_number=3)))
    with pytest.raises(CmppPduError) as info:
        conn.next_event()
    assert info.value.recoverable
    assert info.value.command_status == status
    assert info.value.sequence_number == 1
    assert drain(conn) == [codec.ActiveTest(sequence_number=3)]


def test_decode_pdu_requires_exactly_one_pdu() -> None:
    data = encode_pdu(codec.ActiveTest())
    with pytest.raises(CmppFramingError):
        decode_pdu(data + b"\x00")
    with pytest.raises(CmppFramingError):
        decode_pdu(data[:3])


# --- encoding limits -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pdu", "version", "message"),
    [
        (codec.Submit(dest_terminal_ids=()), V30, "destinations"),
        (codec.Submit(dest_terminal_ids=("1",) * 100), V30, "destinations"),
        (codec.Submit(dest_terminal_ids=("1" * 22,)), V20, "longer than 21"),
        (codec.Submit(dest_terminal_ids=("1" * 33,)), V30, "longer than 32"),
        (codec.Submit(dest_terminal_ids=("1",), link_id="123456789"), V20, "longer than 8"),
        (codec.Submit(dest_terminal_ids=("1",), msg_content=bytes(160)), V30, "159"),
        (
            codec.Submit(dest_terminal_ids=("1",), msg_fmt=8, msg_content=bytes(141)),
            V30,
            "140",
        ),
        (codec.Submit(dest_terminal_ids=("1",), pk_total=256), V30, "Pk_total"),
        (codec.Submit(dest_terminal_ids=("好",)), V30, "Latin-1"),
        (codec.Submit(dest_terminal_ids=("1\x002",)), V30, "NUL"),
        (codec.Submit(dest_terminal_ids=("1",), msg_id=1 << 64), V30, "Msg_Id"),
        (codec.Connect(authenticator_source=bytes(15)), V30, "16"),
        (codec.Connect(source_addr="1234567"), V30, "longer than 6"),
        (codec.ConnectResp(status=256), V20, "Status"),
        (codec.SubmitResp(result=1 << 32), V30, "Result"),
        (codec.Deliver(registered_delivery=1), V30, "without a report"),
        (
            attrs.evolve(SAMPLE_REPORT, msg_content=b"x"),
            V30,
            "no msg_content",
        ),
        (codec.ActiveTest(sequence_number=1 << 32), V30, "32 bits"),
    ],
)
def test_encoding_refuses_what_does_not_fit(pdu: Pdu, version: CmppVersion, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_pdu(pdu, version)


def test_longest_allowed_values_encode() -> None:
    pdu = codec.Submit(
        dest_terminal_ids=("1" * 32,) * codec.MAX_DESTINATIONS,
        msg_fmt=8,
        msg_content=bytes(140),
        link_id="L" * 20,
    )
    data = encode_pdu(pdu, V30)
    assert len(data) <= codec.MAX_PDU_LENGTH
    assert decode_pdu(data, V30) == pdu
    ascii_pdu = codec.Submit(dest_terminal_ids=("1",), msg_content=b"a" * 159)
    assert decode_pdu(encode_pdu(ascii_pdu, V20), V20) == ascii_pdu


# --- helpers and the connection's sending side ---------------------------------------------


def test_versions() -> None:
    assert CmppVersion.from_octet(0x30) is V30
    assert CmppVersion.from_octet(0x21) is V20  # pycmpp's Version
    assert CmppVersion.from_octet(0x20) is V20
    assert CmppVersion.from_octet(0x40) is None
    assert (V20.terminal_id_length, V30.terminal_id_length) == (21, 32)
    assert (V20.status_length, V30.status_length) == (1, 4)
    assert (V20.reserve_length, V30.reserve_length) == (8, 20)
    assert (V20.report_length, V30.report_length) == (60, 71)
    assert (V20.other, V30.other) == (V30, V20)
    assert (V20.label, V30.label) == ("2.0", "3.0")


def test_sequence_numbers_start_at_one_and_wrap() -> None:
    conn = CmppConnection()
    assert [conn.next_sequence() for _ in range(3)] == [1, 2, 3]
    conn._last_sequence = codec.MAX_SEQUENCE_NUMBER - 1
    assert [conn.next_sequence() for _ in range(3)] == [codec.MAX_SEQUENCE_NUMBER, 1, 2]


@BOTH
def test_send_request_and_number_request(version: CmppVersion) -> None:
    conn = CmppConnection(version)
    submit = codec.Submit(dest_terminal_ids=("1",), msg_content=b"hi")
    numbered, data = conn.send_request(submit)
    assert numbered == attrs.evolve(submit, sequence_number=1)
    assert data == encode_pdu(numbered, version)
    sequence, renumbered = conn.number_request(data)
    assert sequence == 2
    assert decode_pdu(renumbered, version) == attrs.evolve(submit, sequence_number=2)
    with pytest.raises(ValueError, match="response"):
        conn.send_request(codec.SubmitResp())
    with pytest.raises(ValueError, match="response"):
        conn.number_request(encode_pdu(codec.TerminateResp()))
    with pytest.raises(ValueError, match="header"):
        conn.number_request(b"\x00" * 11)
    assert conn.send(codec.SubmitResp(result=8)) == encode_pdu(codec.SubmitResp(result=8), version)


def test_read_header() -> None:
    assert codec.read_header(b"\x00" * 11) is None
    header = codec.read_header(encode_pdu(codec.SubmitResp(sequence_number=9)))
    assert header == codec.Header(24, CommandId.SUBMIT_RESP, 9)
    assert header is not None and header.is_response
    assert not codec.Header(12, CommandId.ACTIVE_TEST, 1).is_response


def test_response_for() -> None:
    submit = codec.Submit(sequence_number=4, dest_terminal_ids=("1",))
    assert codec.response_for(submit, msg_id=7, result=8) == codec.SubmitResp(
        sequence_number=4, msg_id=7, result=8
    )
    deliver = codec.Deliver(sequence_number=5, msg_id=99)
    assert codec.response_for(deliver, result=9) == codec.DeliverResp(
        sequence_number=5, msg_id=99, result=9
    )
    assert codec.response_for(codec.ActiveTest(sequence_number=6)) == codec.ActiveTestResp(
        sequence_number=6
    )
    assert codec.response_for(codec.Terminate(sequence_number=7)) == codec.TerminateResp(
        sequence_number=7
    )


def test_descriptions() -> None:
    assert codec.describe_result(8) == "8 (flow control)"
    assert codec.describe_result(150) == "150 (vendor-defined)"
    assert codec.describe_result(77) == "77 (unknown)"
    assert codec.describe_connect_status(3) == "3 (authentication failed)"
    assert codec.describe_connect_status(9) == "9 (other error)"
    error = CmppPduError("x", command_status=2, sequence_number=1, command_id=6)
    assert repr(error) == (
        "CmppPduError('x', command_status=2, sequence_number=1, command_id=0x00000006)"
    )


def test_pdus_are_frozen() -> None:
    pdu = codec.ActiveTest(sequence_number=1)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        pdu.sequence_number = 2  # type: ignore[misc]


# --- fuzzing: only PDUs, NEED_DATA or the protocol error ------------------------------------


def _feed_everything(conn: CmppConnection, data: bytes, cuts: list[int]) -> None:
    pos = 0
    for cut in [*cuts, len(data)]:
        conn.receive_data(data[pos : pos + cut])
        pos += cut
        for _ in range(10_000):
            try:
                event = conn.next_event()
            except CmppPduError:
                continue
            except CmppFramingError:
                assert conn.broken
                return
            if event is NEED_DATA:
                break
            assert isinstance(event, Pdu)
        else:
            raise AssertionError("next_event never returned NEED_DATA")


@settings(max_examples=300)
@given(
    st.binary(max_size=400),
    st.lists(st.integers(min_value=1, max_value=64), max_size=20),
    st.sampled_from([V20, V30]),
)
def test_fuzz_random_bytes(data: bytes, cuts: list[int], version: CmppVersion) -> None:
    _feed_everything(CmppConnection(version), data, cuts)


@settings(max_examples=300)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([int(c) for c in CommandId] + [6, 7, 0x80000006]),
            st.binary(max_size=300),
        ),
        max_size=5,
    ),
    st.sampled_from([V20, V30]),
)
def test_fuzz_well_framed_random_bodies(
    pdus: list[tuple[int, bytes]], version: CmppVersion
) -> None:
    data = b"".join(frame(command_id, body) for command_id, body in pdus)
    conn = CmppConnection(version)
    conn.receive_data(data)
    seen = 0
    for _ in range(len(pdus) + 1):
        try:
            event = conn.next_event()
        except CmppProtocolError as exc:
            assert exc.recoverable  # the framing is right: only this PDU is refused
            seen += 1
            continue
        if event is NEED_DATA:
            break
        seen += 1
    assert seen == len(pdus)
    assert conn.pending_bytes == 0


@settings(max_examples=300)
@given(
    st.sampled_from(ALL_SAMPLES),
    st.sampled_from([V20, V30]),
    st.integers(min_value=0, max_value=400),
    st.integers(min_value=0, max_value=255),
)
def test_fuzz_mutated_valid_pdus(pdu: Pdu, version: CmppVersion, index: int, value: int) -> None:
    data = bytearray(encode_pdu(pdu, version))
    data[index % len(data)] = value
    _feed_everything(CmppConnection(version), bytes(data), [])


# --- generated PDUs round-trip -------------------------------------------------------------


def octet_strings(width: int) -> st.SearchStrategy[str]:
    return st.text(st.characters(min_codepoint=1, max_codepoint=255), max_size=width)


u8 = st.integers(min_value=0, max_value=255)
u64 = st.integers(min_value=0, max_value=(1 << 64) - 1)


@st.composite
def submits(draw: st.DrawFn, version: CmppVersion) -> codec.Submit:
    terminal = version.terminal_id_length
    v3 = version is V30
    msg_fmt = draw(u8)
    return codec.Submit(
        sequence_number=draw(st.integers(min_value=0, max_value=0xFFFFFFFF)),
        msg_id=draw(u64),
        pk_total=draw(u8),
        pk_number=draw(u8),
        registered_delivery=draw(u8),
        msg_level=draw(u8),
        service_id=draw(octet_strings(10)),
        fee_user_type=draw(u8),
        fee_terminal_id=draw(octet_strings(terminal)),
        fee_terminal_type=draw(u8) if v3 else 0,
        tp_pid=draw(u8),
        tp_udhi=draw(u8),
        msg_fmt=msg_fmt,
        msg_src=draw(octet_strings(6)),
        fee_type=draw(octet_strings(2)),
        fee_code=draw(octet_strings(6)),
        valid_time=draw(octet_strings(17)),
        at_time=draw(octet_strings(17)),
        src_id=draw(octet_strings(21)),
        dest_terminal_ids=tuple(draw(st.lists(octet_strings(terminal), min_size=1, max_size=5))),
        dest_terminal_type=draw(u8) if v3 else 0,
        msg_content=draw(st.binary(max_size=codec._content_limit(msg_fmt))),
        link_id=draw(octet_strings(version.reserve_length)),
    )


@st.composite
def delivers(draw: st.DrawFn, version: CmppVersion) -> codec.Deliver:
    terminal = version.terminal_id_length
    report = draw(
        st.none()
        | st.builds(
            StatusReport,
            msg_id=u64,
            stat=octet_strings(7),
            submit_time=octet_strings(10),
            done_time=octet_strings(10),
            dest_terminal_id=octet_strings(terminal),
            smsc_sequence=st.integers(min_value=0, max_value=0xFFFFFFFF),
        )
    )
    return codec.Deliver(
        sequence_number=draw(st.integers(min_value=0, max_value=0xFFFFFFFF)),
        msg_id=draw(u64),
        dest_id=draw(octet_strings(21)),
        service_id=draw(octet_strings(10)),
        tp_pid=draw(u8),
        tp_udhi=draw(u8),
        msg_fmt=draw(u8),
        src_terminal_id=draw(octet_strings(terminal)),
        src_terminal_type=draw(u8) if version is V30 else 0,
        registered_delivery=1 if report else draw(st.sampled_from([0, 2, 255])),
        msg_content=b"" if report else draw(st.binary(max_size=255)),
        report=report,
        link_id=draw(octet_strings(version.reserve_length)),
    )


@settings(max_examples=200)
@given(
    st.sampled_from([V20, V30]).flatmap(
        lambda version: st.tuples(st.just(version), submits(version) | delivers(version))
    )
)
def test_generated_pdus_round_trip(case: tuple[CmppVersion, Pdu]) -> None:
    version, pdu = case
    data = encode_pdu(pdu, version)
    assert decode_pdu(data, version) == pdu
    conn = CmppConnection(version)
    conn.receive_data(data)
    assert drain(conn) == [pdu]
