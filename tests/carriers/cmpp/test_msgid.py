import pytest
from hypothesis import given
from hypothesis import strategies as st

from smsgw.carriers.cmpp.msgid import (
    MsgIdParts,
    format_msg_id,
    make_msg_id,
    normalize_msg_id,
    parse_msg_id,
    split_msg_id,
)


def test_known_answer() -> None:
    # 11-30 12:00:00, gateway 123456, sequence 7: verified with tshark (see the CMPP notes).
    msg_id = make_msg_id(11, 30, 12, 0, 0, 123456, 7)
    assert msg_id == 0xBF300001E2400007
    assert format_msg_id(msg_id) == "bf300001e2400007"
    assert split_msg_id(msg_id) == MsgIdParts(11, 30, 12, 0, 0, 123456, 7)


def test_sequence_wraps_and_other_fields_must_fit() -> None:
    assert make_msg_id(1, 1, 0, 0, 0, 0, 0x10005) == make_msg_id(1, 1, 0, 0, 0, 0, 5)
    with pytest.raises(ValueError, match="month"):
        make_msg_id(16, 1, 0, 0, 0, 0, 0)
    with pytest.raises(ValueError, match="gateway"):
        make_msg_id(1, 1, 0, 0, 0, 1 << 22, 0)
    with pytest.raises(ValueError, match="minute"):
        make_msg_id(1, 1, 0, -1, 0, 0, 0)


@given(
    st.integers(1, 12),
    st.integers(1, 31),
    st.integers(0, 23),
    st.integers(0, 59),
    st.integers(0, 59),
    st.integers(0, (1 << 22) - 1),
    st.integers(0, 0xFFFF),
)
def test_fields_round_trip(
    month: int, day: int, hour: int, minute: int, second: int, gateway: int, seq: int
) -> None:
    msg_id = make_msg_id(month, day, hour, minute, second, gateway, seq)
    assert split_msg_id(msg_id) == MsgIdParts(month, day, hour, minute, second, gateway, seq)
    assert parse_msg_id(format_msg_id(msg_id)) == msg_id


def test_format_parse_normalize() -> None:
    assert format_msg_id(0) == "0000000000000000"
    assert format_msg_id((1 << 64) - 1) == "ffffffffffffffff"
    with pytest.raises(ValueError):
        format_msg_id(1 << 64)
    assert parse_msg_id("0xBF300001E2400007") == 0xBF300001E2400007
    assert parse_msg_id(" 7 ") == 7
    for bad in ("", "0x", "g", "1" * 17, "-1"):
        with pytest.raises(ValueError):
            parse_msg_id(bad)
    assert normalize_msg_id("BF300001E2400007") == "bf300001e2400007"
    assert normalize_msg_id("7") == "0000000000000007"
    assert normalize_msg_id(" Not-Hex ") == "not-hex"
