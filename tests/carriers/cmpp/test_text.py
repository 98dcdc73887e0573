import pytest
from hypothesis import given
from hypothesis import strategies as st

from smsgw.carriers.cmpp.codec import CmppVersion, Submit, decode_pdu, encode_pdu
from smsgw.carriers.cmpp.text import (
    Concat,
    MsgFmt,
    Segment,
    decode_content,
    split_message,
    split_udh,
)


def test_short_ascii_is_one_msg_fmt_0_part() -> None:
    assert split_message("Your code is 1234", 9) == [
        Segment(MsgFmt.ASCII, 0, 1, 1, b"Your code is 1234")
    ]
    assert len(split_message("a" * 159, 9)) == 1


def test_long_ascii_parts_are_153_characters_behind_the_udh() -> None:
    parts = split_message("a" * 160, 0x2A)
    assert [(p.pk_total, p.pk_number, p.tp_udhi) for p in parts] == [(2, 1, 1), (2, 2, 1)]
    assert parts[0].content == bytes.fromhex("0500032a0201") + b"a" * 153
    assert parts[1].content == bytes.fromhex("0500032a0202") + b"a" * 7


def test_chinese_text_is_ucs2_70_unsplit_67_a_part() -> None:
    (single,) = split_message("好" * 70, 1)
    assert (single.msg_fmt, single.tp_udhi, len(single.content)) == (MsgFmt.UCS2, 0, 140)
    parts = split_message("好" * 71, 1)
    assert [len(p.content) for p in parts] == [6 + 134, 6 + 8]
    assert all(p.msg_fmt is MsgFmt.UCS2 and p.tp_udhi == 1 for p in parts)


def test_a_surrogate_pair_is_never_cut() -> None:
    text = "好" * 66 + "😀" + "好" * 10
    parts = split_message(text, 3)
    assert [split_udh(p.content)[1].decode("utf-16-be") for p in parts] == [
        "好" * 66,
        "😀" + "好" * 10,
    ]


def test_too_many_parts_is_refused() -> None:
    with pytest.raises(ValueError, match="255"):
        split_message("好" * (67 * 255 + 1), 1)


@given(st.text(max_size=600), st.integers(0, 255))
def test_every_part_fits_a_submit_and_rejoins_to_the_text(text: str, reference: int) -> None:
    parts = split_message(text, reference)
    rebuilt = []
    for number, part in enumerate(parts, start=1):
        submit = Submit(
            dest_terminal_ids=("1",),
            pk_total=part.pk_total,
            pk_number=part.pk_number,
            tp_udhi=part.tp_udhi,
            msg_fmt=part.msg_fmt,
            msg_content=part.content,
        )
        assert decode_pdu(encode_pdu(submit, CmppVersion.V20), CmppVersion.V20) == submit
        concat, payload = split_udh(part.content) if part.tp_udhi else (None, part.content)
        if len(parts) > 1:
            assert concat == Concat(reference, len(parts), number)
        rebuilt.append(payload)
    fmt = parts[0].msg_fmt
    joined = b"".join(rebuilt)
    expected = (
        text.encode("ascii") if fmt is MsgFmt.ASCII else text.encode("utf-16-be", "surrogatepass")
    )
    assert joined == expected


def test_split_udh_forms() -> None:
    assert split_udh(bytes.fromhex("050003090302") + b"hi") == (Concat(9, 3, 2), b"hi")
    assert split_udh(bytes.fromhex("06080401020302") + b"hi") == (Concat(0x102, 3, 2), b"hi")
    # Another IE before the concatenation one.
    assert split_udh(bytes.fromhex("0a 0a 03 000000 00 03 07 02 01") + b"x") == (
        Concat(7, 2, 1),
        b"x",
    )
    assert split_udh(bytes.fromhex("0201ff") + b"x") == (None, b"x")  # no concat IE
    assert split_udh(bytes.fromhex("0a0003")) == (None, bytes.fromhex("0a0003"))  # too long
    assert split_udh(b"") == (None, b"")


@pytest.mark.parametrize(
    ("msg_fmt", "content", "text"),
    [
        (0, b"hello", "hello"),
        (0, b"h\xffi", "h\ufffdi"),
        (8, "你好😀".encode("utf-16-be"), "你好😀"),
        (8, b"\x00", "\ufffd"),
        (15, "你好".encode("gb18030"), "你好"),
        (15, "你好".encode("gbk"), "你好"),
        (4, b"\x01\xff", "\x01\xff"),
    ],
)
def test_decode_content(msg_fmt: int, content: bytes, text: str) -> None:
    assert decode_content(msg_fmt, content) == text
