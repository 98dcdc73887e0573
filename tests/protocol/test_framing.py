"""The sans-IO framing: both length styles, every error, splits, keep-alive, the buffer bound."""

from __future__ import annotations

import random
from collections.abc import Iterable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smsgw.protocol.framing import (
    NEED_DATA,
    ConnectionClosed,
    LengthStyle,
    LocalProtocolError,
    NeedData,
    RemoteProtocolError,
    Request,
    RequestDecoder,
    Response,
    ResponseDecoder,
    canonical_credential,
    encode_request,
    encode_response,
    pad_credential,
    response_command,
)
from smsgw.protocol.status import Status

BODY = b'[{"phone":"13800000000","message":"hi","msgid":"1","msgtype":1}]'
STYLES = [LengthStyle.DECIMAL, LengthStyle.BINARY]
HEADER_SIZE = {LengthStyle.DECIMAL: 40, LengthStyle.BINARY: 38}

Event = Request | Response | ConnectionClosed | NeedData


def drain(decoder: RequestDecoder | ResponseDecoder) -> list[Event]:
    """Every event available now, up to and including the first NEED_DATA/ConnectionClosed."""
    events: list[Event] = []
    for _ in range(10_000):
        event = decoder.next_event()
        events.append(event)
        if isinstance(event, NeedData | ConnectionClosed):
            return events
    raise AssertionError("decoder never asked for data")


def feed_chunks(
    decoder: RequestDecoder | ResponseDecoder, chunks: Iterable[bytes], *, eof: bool = True
) -> list[Event]:
    """Feed chunk by chunk (each only after NEED_DATA); the frames and the final event."""
    events: list[Event] = [event for event in drain(decoder) if not isinstance(event, NeedData)]
    for chunk in chunks:
        decoder.receive_data(chunk)
        events += [event for event in drain(decoder) if not isinstance(event, NeedData)]
    if eof:
        decoder.receive_data(b"")
        events += drain(decoder)
    return events


def split_randomly(data: bytes, rng: random.Random) -> list[bytes]:
    chunks = []
    position = 0
    while position < len(data):
        size = rng.randint(1, 20)
        chunks.append(data[position : position + size])
        position += size
    return chunks


def raises_remote(decoder: RequestDecoder | ResponseDecoder) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        drain(decoder)
    return info.value


# --- encoding -----------------------------------------------------------------------------


def test_decimal_request_layout() -> None:
    frame = encode_request("A001", "demo", "secret", b"[]")
    assert frame == b"000002A001" + b"00000000000demo" + b"000000000secret" + b"[]"


def test_binary_request_layout() -> None:
    frame = encode_request("A001", "demo", "secret", b"[]", LengthStyle.BINARY)
    assert frame == b"\x00\x00\x00\x02A001" + b"00000000000demo" + b"000000000secret" + b"[]"


def test_response_layout_both_styles() -> None:
    assert encode_response("B001", b'{"status":"0"}') == b"000014B001" + b'{"status":"0"}'
    binary = encode_response("B001", b"{}", LengthStyle.BINARY)
    assert binary == b"\x00\x00\x00\x02B001{}"


@pytest.mark.parametrize("style", STYLES)
def test_request_round_trip(style: LengthStyle) -> None:
    decoder = RequestDecoder(max_body=1000)
    events = feed_chunks(decoder, [encode_request("A001", "demo", "pw", BODY, style)])
    assert events == [
        Request("A001", "00000000000demo", "0000000000000pw", BODY, style),
        ConnectionClosed(),
    ]


@pytest.mark.parametrize("style", STYLES)
def test_response_round_trip(style: LengthStyle) -> None:
    decoder = ResponseDecoder(max_body=1000)
    events = feed_chunks(decoder, [encode_response("B001", b'{"status":"0"}', style)])
    assert events == [Response("B001", b'{"status":"0"}', style), ConnectionClosed()]


def test_empty_body_round_trip() -> None:
    decoder = RequestDecoder(max_body=0)
    events = feed_chunks(decoder, [encode_request("A009", "a", "b", b"")])
    assert events[0] == Request(
        "A009", "00000000000000a", "00000000000000b", b"", LengthStyle.DECIMAL
    )


def test_decimal_body_over_six_digits_cannot_be_encoded() -> None:
    with pytest.raises(LocalProtocolError) as info:
        encode_request("A001", "demo", "pw", b"x" * 1_000_000)
    assert info.value.status is Status.BODY_TOO_LARGE
    with pytest.raises(LocalProtocolError):
        encode_response("B001", b"x" * 1_000_000)
    # The binary style carries it.
    frame = encode_response("B001", b"x" * 1_000_000, LengthStyle.BINARY)
    assert frame[:4] == (1_000_000).to_bytes(4, "big")


@pytest.mark.parametrize("command", ["A01", "A0011", "A\x001", "Ä001", "", "A\n01"])
def test_encode_refuses_bad_command(command: str) -> None:
    with pytest.raises(LocalProtocolError):
        encode_request(command, "demo", "pw", b"{}")
    with pytest.raises(LocalProtocolError):
        encode_response(command, b"{}")


def test_pad_credential() -> None:
    assert pad_credential("demo") == b"00000000000demo"
    assert pad_credential("") == b"0" * 15
    assert pad_credential("x" * 15) == b"x" * 15
    assert pad_credential("demo\0\0") == b"000000000demo\0\0"
    for bad in ["x" * 16, "démo", "de\nmo"]:
        with pytest.raises(LocalProtocolError):
            pad_credential(bad)


def test_canonical_credential_treats_padding_variants_alike() -> None:
    variants: list[str | bytes] = [
        "demo",
        "00000000000demo",
        "demo           ",
        "       demo    ",
        "\0" * 11 + "demo",
        "demo" + "\0" * 11,
        b"demo           ",
        b"00000000000demo",
    ]
    assert {canonical_credential(variant) for variant in variants} == {"00000000000demo"}
    assert canonical_credential("demo1") != canonical_credential("demo")
    # Longer than 15 keeps its length, so it cannot match a configured 15-character key.
    assert canonical_credential("x" * 16) == "x" * 16


def test_padding_variants_decode_raw() -> None:
    for appid in ["demo           ", "\0" * 11 + "demo", "00000000000demo", "   demo        "]:
        frame = b"000002A001" + appid.encode("ascii") + b"pw".rjust(15, b" ") + b"{}"
        decoder = RequestDecoder(max_body=100)
        (request, _) = feed_chunks(decoder, [frame])
        assert isinstance(request, Request)
        assert request.appid == appid  # the raw 15 characters, padding still in
        assert request.appsecret == "             pw"
        assert canonical_credential(request.appid) == canonical_credential("demo")


def test_response_command() -> None:
    assert response_command("A001") == "B001"
    assert response_command("A002") == "B002"
    assert response_command("Z123") == "B123"
    assert response_command("A01") == "B000"
    assert response_command("A\x0001") == "B000"
    assert response_command("é001") == "B000"


# --- splits and keep-alive ----------------------------------------------------------------


@pytest.mark.parametrize("style", STYLES)
def test_byte_by_byte(style: LengthStyle) -> None:
    frames = [
        encode_request("A001", "demo", "pw", BODY, style),
        encode_request("A002", "other", "pw2", b"", style),
    ]
    data = b"".join(frames)
    decoder = RequestDecoder(max_body=1000)
    events = feed_chunks(decoder, [data[i : i + 1] for i in range(len(data))])
    assert events == [
        Request("A001", "00000000000demo", "0000000000000pw", BODY, style),
        Request("A002", "0000000000other", "000000000000pw2", b"", style),
        ConnectionClosed(),
    ]


@pytest.mark.parametrize("style", STYLES)
def test_response_byte_by_byte(style: LengthStyle) -> None:
    data = encode_response("B002", b'{"status":"0"}', style)
    decoder = ResponseDecoder(max_body=1000)
    events = feed_chunks(decoder, [data[i : i + 1] for i in range(len(data))])
    assert events == [Response("B002", b'{"status":"0"}', style), ConnectionClosed()]


def test_random_splits() -> None:
    rng = random.Random(1234)
    for _ in range(200):
        expected = []
        frames = []
        for index in range(rng.randint(1, 4)):
            style = rng.choice(STYLES)
            body = rng.randbytes(rng.randint(0, 300))
            frames.append(encode_request(f"A{index:03d}", "id", "secret", body, style))
            expected.append(
                Request(f"A{index:03d}", "0000000000000id", "000000000secret", body, style)
            )
        decoder = RequestDecoder(max_body=300)
        events = feed_chunks(decoder, split_randomly(b"".join(frames), rng))
        assert events == [*expected, ConnectionClosed()]


def test_keep_alive_frames_back_to_back_leave_the_rest_buffered() -> None:
    first = encode_request("A001", "demo", "pw", b"[1]")
    second = encode_request("A001", "demo", "pw", b"[2]", LengthStyle.BINARY)
    third = encode_request("A001", "demo", "pw", b"[3]")
    decoder = RequestDecoder(max_body=100)
    decoder.receive_data(first + second + third[:12])
    one = decoder.next_event()
    assert isinstance(one, Request) and one.body == b"[1]"
    assert decoder.trailing_data == second + third[:12]
    two = decoder.next_event()
    assert isinstance(two, Request) and two.body == b"[2]"
    assert two.length_style is LengthStyle.BINARY
    assert decoder.trailing_data == third[:12]
    assert decoder.next_event() is NEED_DATA
    decoder.receive_data(third[12:])
    three = decoder.next_event()
    assert isinstance(three, Request) and three.body == b"[3]"
    assert decoder.trailing_data == b""
    assert decoder.next_event() is NEED_DATA


def test_eof_at_start_is_a_clean_close() -> None:
    decoder = RequestDecoder(max_body=100)
    assert decoder.next_event() is NEED_DATA
    decoder.receive_data(b"")
    assert decoder.next_event() == ConnectionClosed()
    assert decoder.next_event() == ConnectionClosed()


def test_eof_between_frames_is_a_clean_close() -> None:
    decoder = RequestDecoder(max_body=100)
    events = feed_chunks(decoder, [encode_request("A001", "d", "p", b"{}")])
    assert isinstance(events[0], Request)
    assert events[1:] == [ConnectionClosed()]


def test_data_after_eof_is_a_caller_bug() -> None:
    decoder = RequestDecoder(max_body=100)
    decoder.receive_data(b"")
    with pytest.raises(RuntimeError):
        decoder.receive_data(b"0")


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("first", [b"a", b"Z", b"{", b"\x7f", b"\xff", b"@"])
def test_first_byte_that_is_no_length(first: bytes) -> None:
    decoder = RequestDecoder(max_body=100)
    decoder.receive_data(first)
    error = raises_remote(decoder)
    assert error.status is Status.MALFORMED_FRAME
    assert error.command == "B000"
    assert error.length_style is LengthStyle.DECIMAL


@pytest.mark.parametrize("length", [b"00a012", b"0000 2", b"0-0002", b"1\x0000002"[:6], b"9999.9"])
def test_letters_in_decimal_length(length: bytes) -> None:
    decoder = RequestDecoder(max_body=100)
    decoder.receive_data(length + b"A001" + b"0" * 30 + b"{}")
    error = raises_remote(decoder)
    assert error.status is Status.MALFORMED_FRAME
    assert "length" in str(error)


def test_binary_length_too_big_is_refused_before_the_body() -> None:
    decoder = RequestDecoder(max_body=1000)
    decoder.receive_data((1001).to_bytes(4, "big") + b"A001")
    error = raises_remote(decoder)
    assert error.status is Status.BODY_TOO_LARGE
    assert error.command == "B001"
    assert error.length_style is LengthStyle.BINARY


def test_huge_binary_length_is_refused() -> None:
    decoder = RequestDecoder(max_body=1 << 20)
    decoder.receive_data(b"\x2f\xff\xff\xffA001")
    assert raises_remote(decoder).status is Status.BODY_TOO_LARGE


def test_decimal_body_over_max_is_refused_before_the_body() -> None:
    decoder = RequestDecoder(max_body=1000)
    decoder.receive_data(b"001001A001")  # nothing of the body (or credentials) sent yet
    error = raises_remote(decoder)
    assert error.status is Status.BODY_TOO_LARGE
    assert error.command == "B001"
    assert error.length_style is LengthStyle.DECIMAL
    # Exactly at the limit is fine.
    decoder = RequestDecoder(max_body=1000)
    events = feed_chunks(decoder, [encode_request("A001", "d", "p", b"x" * 1000)])
    assert isinstance(events[0], Request)


@pytest.mark.parametrize("command", [b"A\x001", b"A\xe901", b"\x00\x00\x00\x00", b"A0\n1"])
def test_non_ascii_command(command: bytes) -> None:
    decoder = RequestDecoder(max_body=100)
    decoder.receive_data(b"000002" + command + b"0" * 30 + b"{}")
    error = raises_remote(decoder)
    assert error.status is Status.MALFORMED_FRAME
    assert error.command == "B000"


@pytest.mark.parametrize(
    "credentials", [b"d\xe9mo" + b"0" * 26, b"0" * 15 + b"pw\x01" + b"0" * 12, b"\n" * 30]
)
def test_non_ascii_credentials(credentials: bytes) -> None:
    decoder = RequestDecoder(max_body=100)
    decoder.receive_data(b"\x00\x00\x00\x02A001" + credentials)  # refused before the body
    error = raises_remote(decoder)
    assert error.status is Status.MALFORMED_FRAME
    assert error.command == "B001"
    assert error.length_style is LengthStyle.BINARY


@pytest.mark.parametrize("style", STYLES)
def test_eof_mid_frame_at_every_point(style: LengthStyle) -> None:
    frame = encode_request("A001", "demo", "pw", BODY, style)
    for cut in range(1, len(frame)):
        decoder = RequestDecoder(max_body=1000)
        decoder.receive_data(frame[:cut])
        assert decoder.next_event() is NEED_DATA
        decoder.receive_data(b"")
        error = raises_remote(decoder)
        assert error.status is Status.MALFORMED_FRAME
        assert error.length_style is style
        # Once the command has arrived, the answer names it.
        expected = "B001" if cut >= HEADER_SIZE[style] - 30 else "B000"
        assert error.command == expected, cut


def test_response_decoder_errors() -> None:
    decoder = ResponseDecoder(max_body=10)
    decoder.receive_data(b"000011B001")
    assert raises_remote(decoder).status is Status.BODY_TOO_LARGE
    decoder = ResponseDecoder(max_body=10)
    decoder.receive_data(b"HTTP/1.1 200 OK\r\n")
    assert raises_remote(decoder).status is Status.MALFORMED_FRAME
    decoder = ResponseDecoder(max_body=10)
    decoder.receive_data(b"000005B001{}")
    decoder.receive_data(b"")
    assert raises_remote(decoder).status is Status.MALFORMED_FRAME


def test_errors_are_sticky() -> None:
    decoder = RequestDecoder(max_body=100)
    decoder.receive_data(b"xyz")
    first = raises_remote(decoder)
    decoder.receive_data(encode_request("A001", "d", "p", b"{}"))  # ignored: stream is broken
    assert raises_remote(decoder) is first


def test_buffer_bound_refuses_an_oversized_feed() -> None:
    decoder = RequestDecoder(max_body=100)
    bound = 40 + 100 + 65536
    assert decoder.buffer_bound == bound
    assert decoder.next_event() is NEED_DATA
    decoder.receive_data(b"0" * (bound + 1))
    assert len(decoder.trailing_data) <= bound
    error = raises_remote(decoder)
    assert error.status is Status.BODY_TOO_LARGE


def test_buffer_stays_bounded_with_pipelined_reads() -> None:
    max_body = 5000
    frames = [encode_request("A001", "d", "p", bytes(4000 + i)) for i in range(60)]
    data = b"".join(frames)
    decoder = RequestDecoder(max_body=max_body)
    received = 0
    for start in range(0, len(data), 65536):
        assert decoder.next_event() is NEED_DATA
        decoder.receive_data(data[start : start + 65536])
        assert len(decoder.trailing_data) <= decoder.buffer_bound
        while isinstance(decoder.next_event(), Request):
            received += 1
        # Only a partial frame stays.
        assert len(decoder.trailing_data) < 40 + max_body
    assert received == len(frames)


# --- property: random and mutated frames, random splits -----------------------------------

printable = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E))
credential = st.one_of(
    printable.filter(lambda text: len(text) <= 15),
    st.builds(
        lambda text, pad: (text + pad * 15)[:15],
        st.text(alphabet="abcdef012", max_size=15),
        st.sampled_from([" ", "\0", "0"]),
    ),
)
frame_parts = st.tuples(
    printable.filter(lambda text: len(text) == 4) | st.sampled_from(["A001", "A002", "A003"]),
    credential,
    credential,
    st.binary(max_size=300),
    st.sampled_from(STYLES),
)


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[int], bool, bool]:
    frames = [encode_request(*parts) for parts in draw(st.lists(frame_parts, max_size=4))]
    data = bytearray(b"".join(frames))
    mutations = draw(st.integers(0, 3))
    for _ in range(mutations):
        if not data:
            break
        position = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "delete", "insert"]))
        if action == "flip":
            data[position] = draw(st.integers(0, 255))
        elif action == "delete":
            del data[position]
        else:
            data.insert(position, draw(st.integers(0, 255)))
    sizes = draw(st.lists(st.integers(1, 64), max_size=60))
    return bytes(data), sizes, draw(st.booleans()), mutations > 0


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams())
def test_fuzz_requests_in_random_splits(stream: tuple[bytes, list[int], bool, bool]) -> None:
    data, sizes, eof, mutated = stream
    max_body = 300
    decoder = RequestDecoder(max_body=max_body)
    fed = 0  # bytes given to the decoder
    consumed = 0  # bytes of the frames it returned
    size_index = 0
    for _ in range(len(data) + 10):
        try:
            event = decoder.next_event()
        except RemoteProtocolError as error:
            assert mutated, "valid frames must decode"
            assert error.status in (Status.MALFORMED_FRAME, Status.BODY_TOO_LARGE)
            with pytest.raises(RemoteProtocolError):
                decoder.next_event()
            return
        assert len(decoder.trailing_data) <= decoder.buffer_bound
        if isinstance(event, Request):
            size = HEADER_SIZE[event.length_style] + len(event.body)
            # It read exactly one frame: what it returned re-encodes to those bytes ...
            assert data[consumed : consumed + size] == encode_request(
                event.command, event.appid, event.appsecret, event.body, event.length_style
            )
            consumed += size
            # ... and everything after it is still buffered, untouched.
            assert decoder.trailing_data == data[consumed:fed]
        elif isinstance(event, ConnectionClosed):
            assert eof and fed == consumed == len(data)
            return
        else:
            assert isinstance(event, NeedData)
            assert decoder.trailing_data == data[consumed:fed]
            if fed < len(data):
                size = sizes[size_index % len(sizes)] if sizes else len(data)
                size_index += 1
                decoder.receive_data(data[fed : fed + size])
                fed += size
                fed = min(fed, len(data))
            elif eof:
                decoder.receive_data(b"")
            else:
                assert mutated or consumed == len(data)
                return
    raise AssertionError("decoder did not finish")
