"""What goes on the wire for one SMS (coding, segments, UDH/SAR/payload) and id matching."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smsgw.carriers.smpp.codec import ESM_CLASS_UDHI, decode_pdu, encode_pdu
from smsgw.carriers.smpp.outbound import (
    build_submits,
    destination_addr,
    normalize_message_id,
    receipt_id_in_submit_form,
)
from smsgw.carriers.smpp.settings import IdFormat, LongMode, ReceiptIdBase, SmppConfig
from smsgw.encoding import count_segments, decode_text

CHINESE = "您的验证码是四八二九，请在五分钟内输入。"  # 20 characters


def config(long: LongMode = LongMode.UDH, **fields: object) -> SmppConfig:
    return SmppConfig(host="smsc", system_id="esme", long=long, source_addr="Shop", **fields)  # type: ignore[arg-type]


def test_short_gsm_message() -> None:
    (pdu,) = build_submits(config(), phone="+8613800000001", text="Hello {name}€", reference=7)
    assert pdu.data_coding == 0
    assert pdu.esm_class == 0
    assert pdu.destination_addr == "8613800000001"
    assert (pdu.dest_addr_ton, pdu.dest_addr_npi) == (1, 1)
    assert (pdu.source_addr, pdu.source_addr_ton, pdu.source_addr_npi) == ("Shop", 5, 0)
    assert pdu.registered_delivery == 1
    # GSM 03.38 unpacked septets; { } € go through the escape table.
    assert pdu.short_message == b"Hello \x1b(name\x1b)\x1be"


def test_short_ucs2_message() -> None:
    (pdu,) = build_submits(config(), phone="+8613800000001", text=CHINESE, reference=7)
    assert pdu.data_coding == 8
    assert pdu.short_message == CHINESE.encode("utf-16-be")


def test_long_gsm_with_udh() -> None:
    text = "".join(chr(ord("a") + n % 26) for n in range(400))
    pdus = build_submits(config(), phone="+1555000", text=text, reference=0x1A2B)
    assert len(pdus) == 3
    for seq, pdu in enumerate(pdus, start=1):
        assert pdu.esm_class & ESM_CLASS_UDHI
        assert pdu.data_coding == 0
        assert pdu.short_message[:6] == bytes((0x05, 0x00, 0x03, 0x2B, 3, seq))
        assert len(pdu.short_message) <= 6 + 153
    assert b"".join(pdu.short_message[6:] for pdu in pdus).decode("latin-1") == text


def test_long_chinese_with_sar() -> None:
    text = CHINESE * 8  # 160 UCS-2 units: 3 parts of at most 67
    pdus = build_submits(config(LongMode.SAR), phone="+8613800000001", text=text, reference=0x1A2B)
    assert len(pdus) == 3
    for seq, pdu in enumerate(pdus, start=1):
        assert pdu.esm_class == 0
        assert pdu.data_coding == 8
        tlvs = pdu.tlvs
        assert (tlvs.sar_msg_ref_num, tlvs.sar_total_segments, tlvs.sar_segment_seqnum) == (
            0x1A2B,
            3,
            seq,
        )
        assert len(pdu.short_message) <= 134
    assert b"".join(pdu.short_message for pdu in pdus).decode("utf-16-be") == text


def test_long_message_as_payload() -> None:
    text = CHINESE * 8
    (pdu,) = build_submits(config(LongMode.PAYLOAD), phone="+86138", text=text, reference=1)
    assert pdu.short_message == b""
    assert pdu.tlvs.message_payload == text.encode("utf-16-be")
    assert pdu.data_coding == 8


def test_one_segment_ignores_the_long_mode() -> None:
    for mode in LongMode:
        (pdu,) = build_submits(config(mode), phone="+86138", text="short", reference=1)
        assert pdu.short_message == b"short" and pdu.tlvs.message_payload is None


@pytest.mark.parametrize("phone", ["+12ab", "", "+", "+123456789012345678901", "+١٢٣٤٥"])
def test_bad_phone_is_refused(phone: str) -> None:
    with pytest.raises(ValueError, match="phone"):
        build_submits(config(), phone=phone, text="hi", reference=1)


def test_phone_without_plus_is_kept() -> None:
    assert destination_addr("13800138000") == "13800138000"
    assert destination_addr(" +4412 ".strip()) == "4412"


def test_too_many_segments() -> None:
    with pytest.raises(ValueError, match="segments"):
        build_submits(config(), phone="+86138", text="x" * 153 * 256, reference=1)
    with pytest.raises(ValueError, match="message_payload"):
        build_submits(config(LongMode.PAYLOAD), phone="+86138", text="你" * 40_000, reference=1)


@given(
    text=st.text(
        alphabet=st.sampled_from([*"abc €{}你好 ", "\U0001f600"]), min_size=0, max_size=700
    ),
    mode=st.sampled_from(list(LongMode)),
    reference=st.integers(0, 0xFFFFFFFF),
)
def test_parts_reassemble_into_the_text(text: str, mode: LongMode, reference: int) -> None:
    pdus = build_submits(config(mode), phone="+86138", text=text, reference=reference)
    if mode is not LongMode.PAYLOAD:
        assert len(pdus) == count_segments(text)
    payload = b""
    for seq, pdu in enumerate(pdus, start=1):
        assert decode_pdu(encode_pdu(pdu)) == pdu  # every PDU is valid on the wire
        body = pdu.payload
        if pdu.esm_class & ESM_CLASS_UDHI:
            assert body[:6] == bytes((5, 0, 3, reference & 0xFF, len(pdus), seq))
            body = body[6:]
        payload += body
    assert decode_text(payload, pdus[0].data_coding) == text


@pytest.mark.parametrize(
    "a, b",
    [("0000007B", "7b"), ("007b", "7B"), ("00123", "123"), ("000", "0"), (" abc ", "ABC")],
)
def test_hex_dec_matches_case_and_zero_padding(a: str, b: str) -> None:
    assert normalize_message_id(a, IdFormat.HEX_DEC) == normalize_message_id(b, IdFormat.HEX_DEC)


@pytest.mark.parametrize("a, b", [("7b", "123"), ("1a", "26"), ("10", "16"), ("12-ab", "12ab")])
def test_hex_dec_never_matches_different_ids(a: str, b: str) -> None:
    assert normalize_message_id(a, IdFormat.HEX_DEC) != normalize_message_id(b, IdFormat.HEX_DEC)


def test_as_is_only_trims() -> None:
    assert normalize_message_id(" 007B ", IdFormat.AS_IS) == "007B"
    assert normalize_message_id("007B", IdFormat.AS_IS) != normalize_message_id(
        "7b", IdFormat.AS_IS
    )


@given(st.integers(0, 2**64))
def test_hex_dec_is_one_to_one_on_hex_ids(number: int) -> None:
    padded = f"{number:016X}"
    assert normalize_message_id(padded, IdFormat.HEX_DEC) == f"{number:x}"


@pytest.mark.parametrize(
    "text_id, base, expected",
    [
        ("123", ReceiptIdBase.DECIMAL, "7b"),
        ("0000000123", ReceiptIdBase.DECIMAL, "7b"),
        ("7b", ReceiptIdBase.DECIMAL, "7b"),  # not decimal: left as it is
        ("7B", ReceiptIdBase.HEX, "123"),
        ("xyz", ReceiptIdBase.HEX, "xyz"),
        ("123", ReceiptIdBase.SAME, "123"),
        ("9" * 50, ReceiptIdBase.DECIMAL, "9" * 50),  # too long to be a numeric id
    ],
)
def test_receipt_id_conversion(text_id: str, base: ReceiptIdBase, expected: str) -> None:
    assert receipt_id_in_submit_form(text_id, base) == expected
