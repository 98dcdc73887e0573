import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsgw.encoding import (
    DataCoding,
    choose_coding,
    concat_udh,
    count_segments,
    decode_text,
    encode_text,
    split_text,
    split_udh,
)
from smsgw.records import Concat

GSM_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXTENSION = "\f^{}\\[~]|€"
EMOJI = "😀"  # U+1F600: one character, a surrogate pair (2 units) in UTF-16


def _check_split(text: str) -> list[bytes]:
    """split_text agrees with count_segments and encode_text, and respects part limits."""
    coding, encoded = encode_text(text)
    parts = split_text(text, coding)
    assert len(parts) == count_segments(text)
    assert b"".join(parts) == encoded
    if len(parts) > 1:
        limit = 153 if coding is DataCoding.GSM7 else 134
        assert all(0 < len(part) <= limit for part in parts)
    return parts


# --- the alphabet -------------------------------------------------------------------------


def test_basic_table_has_127_distinct_characters_besides_the_escape() -> None:
    assert len(GSM_BASIC) == 127
    assert len(set(GSM_BASIC)) == 127
    coding, encoded = encode_text(GSM_BASIC)
    assert coding is DataCoding.GSM7
    assert sorted(encoded) == [septet for septet in range(128) if septet != 0x1B]


@pytest.mark.parametrize(
    ("char", "septets"),
    [
        ("@", b"\x00"),
        ("£", b"\x01"),
        ("$", b"\x02"),
        ("Δ", b"\x10"),
        ("ß", b"\x1e"),
        ("¤", b"\x24"),
        ("¡", b"\x40"),
        ("§", b"\x5f"),
        ("¿", b"\x60"),
        ("à", b"\x7f"),
        ("€", b"\x1b\x65"),
        ("[", b"\x1b\x3c"),
        ("|", b"\x1b\x40"),
        ("\f", b"\x1b\x0a"),
    ],
)
def test_known_septet_values(char: str, septets: bytes) -> None:
    assert encode_text(char) == (DataCoding.GSM7, septets)
    assert decode_text(septets, 0) == char


@pytest.mark.parametrize(
    ("text", "coding"),
    [
        ("", DataCoding.GSM7),
        ("Hello, world!", DataCoding.GSM7),
        ("Prix: 5€ {promo}", DataCoding.GSM7),
        ("Ç", DataCoding.GSM7),
        ("ç", DataCoding.UCS2),  # only the capital is in the GSM alphabet
        ("`", DataCoding.UCS2),
        ("\x1b", DataCoding.UCS2),  # the escape code is not a character
        ("验证码 123456", DataCoding.UCS2),
        (f"ok {EMOJI}", DataCoding.UCS2),
    ],
)
def test_choose_coding(text: str, coding: DataCoding) -> None:
    assert choose_coding(text) is coding
    assert encode_text(text)[0] is coding


# --- segment counting -------------------------------------------------------------------


def test_empty_text_is_one_segment() -> None:
    assert count_segments("") == 1
    assert split_text("", DataCoding.GSM7) == [b""]
    assert split_text("", DataCoding.UCS2) == [b""]


@pytest.mark.parametrize(
    ("length", "segments"),
    [(1, 1), (160, 1), (161, 2), (306, 2), (307, 3), (459, 3), (460, 4)],
)
def test_gsm_boundaries(length: int, segments: int) -> None:
    text = "a" * length
    assert count_segments(text) == segments
    _check_split(text)


def test_extension_characters_cost_two_septets() -> None:
    assert count_segments("€" * 80) == 1  # 160 septets
    assert count_segments("€" * 80 + "a") == 2
    assert count_segments("a" * 159 + "€") == 2  # 161 septets
    assert count_segments("a" * 158 + "€") == 1


def test_extension_character_is_never_split_across_parts() -> None:
    # 306 septets would fit two 153-septet parts, but the escape pair would straddle them.
    text = "a" * 152 + "€" + "a" * 152
    assert count_segments(text) == 3
    parts = _check_split(text)
    assert parts[0] == b"a" * 152
    assert parts[1] == b"\x1b\x65" + b"a" * 151
    assert parts[2] == b"a"


def test_extension_character_that_fits_exactly_stays_in_its_part() -> None:
    text = "a" * 151 + "€" + "a" * 153
    assert count_segments(text) == 2
    parts = _check_split(text)
    assert parts[0].endswith(b"\x1b\x65")


@pytest.mark.parametrize(
    ("length", "segments"),
    [(1, 1), (70, 1), (71, 2), (134, 2), (135, 3), (201, 3), (202, 4)],
)
def test_ucs2_boundaries(length: int, segments: int) -> None:
    text = "中" * length
    assert count_segments(text) == segments
    _check_split(text)


def test_emoji_counts_two_units() -> None:
    assert count_segments(EMOJI * 35) == 1  # 70 units
    assert count_segments(EMOJI * 35 + "a") == 2
    assert count_segments("中" * 69 + EMOJI) == 2


def test_surrogate_pair_is_never_split_across_parts() -> None:
    # 134 units would fit two 67-unit parts, but the pair would straddle them.
    text = "中" * 66 + EMOJI + "中" * 66
    assert count_segments(text) == 3
    parts = _check_split(text)
    assert parts[0] == ("中" * 66).encode("utf-16-be")
    assert parts[1].startswith(EMOJI.encode("utf-16-be"))
    for part in parts:
        part.decode("utf-16-be")  # each part decodes alone: no half pair


def test_one_non_gsm_character_switches_the_whole_text_to_ucs2() -> None:
    assert count_segments("a" * 100) == 1
    assert count_segments("a" * 99 + "ç") == 2  # 100 UCS-2 units


def test_split_text_refuses_non_gsm_text_as_gsm() -> None:
    with pytest.raises(ValueError, match="GSM"):
        split_text("中", DataCoding.GSM7)


# --- encode / decode ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        GSM_BASIC + GSM_EXTENSION,
        "短信验证码：482913，五分钟内有效。请勿泄露给他人。",
        f"Готово {EMOJI} ✓",
        "",
    ],
)
def test_round_trip(text: str) -> None:
    coding, encoded = encode_text(text)
    assert decode_text(encoded, coding) == text


def test_chinese_text() -> None:
    text = "您的验证码是123456"
    assert encode_text(text) == (DataCoding.UCS2, text.encode("utf-16-be"))
    assert count_segments(text) == 1
    assert count_segments(text * 6) == 2  # 72 units


@pytest.mark.parametrize(
    ("data", "data_coding", "text"),
    [
        (b"Hi there", 1, "Hi there"),
        (b"caf\xe9", 3, "café"),
        (b"caf\xe9", 4, "café"),  # an unhandled coding decodes as Latin-1
        (b"\x00D\x00e", 8, "De"),
        (b"\xd8\x3d\xde\x00", 8, EMOJI),
        (b"\x1b\x65", 0, "€"),
    ],
)
def test_decode_by_data_coding(data: bytes, data_coding: int, text: str) -> None:
    assert decode_text(data, data_coding) == text


@pytest.mark.parametrize(
    ("data", "data_coding", "text"),
    [
        (b"A\x80B", 0, "A\ufffdB"),  # high bit set: not a septet
        (b"A\x1b", 0, "A"),  # dangling escape
        (b"\x1b\x41", 0, "A"),  # unknown extension: shown as the basic character
        (b"\x1b\x1b", 0, "\ufffd"),
        (b"\x00A\x00", 8, "A\ufffd"),  # odd length
        (b"\xd8\x3d", 8, "\ufffd"),  # lone surrogate
        (b"A\xffB", 1, "A\ufffdB"),
    ],
)
def test_decode_never_raises_on_bad_input(data: bytes, data_coding: int, text: str) -> None:
    assert decode_text(data, data_coding) == text


# --- UDH ------------------------------------------------------------------------------------


def test_concat_udh() -> None:
    assert concat_udh(0xAB, 3, 2) == b"\x05\x00\x03\xab\x03\x02"


@pytest.mark.parametrize(
    ("ref", "total", "seq"), [(256, 2, 1), (-1, 2, 1), (1, 0, 1), (1, 256, 1), (1, 2, 0), (1, 2, 3)]
)
def test_concat_udh_rejects_out_of_range(ref: int, total: int, seq: int) -> None:
    with pytest.raises(ValueError):
        concat_udh(ref, total, seq)


# --- properties -----------------------------------------------------------------------------

gsm_texts = st.text(alphabet=GSM_BASIC + GSM_EXTENSION, max_size=700)
mixed_texts = st.text(
    alphabet=st.one_of(
        st.sampled_from(GSM_BASIC + GSM_EXTENSION),
        st.sampled_from("中文验证码ñç"),
        st.sampled_from([EMOJI, "🇫", "𝄞"]),
    ),
    max_size=400,
)


@settings(max_examples=300)
@given(st.one_of(gsm_texts, mixed_texts, st.text(max_size=300)))
def test_split_agrees_with_count_and_encoding(text: str) -> None:
    parts = _check_split(text)
    coding = choose_coding(text)
    if coding is DataCoding.GSM7:
        # A part never ends on a bare escape: the pair stayed together.
        assert not any(part.endswith(b"\x1b") for part in parts[:-1])
    # Each part decodes alone to its share of the text: no escape or surrogate pair was cut.
    assert "".join(decode_text(part, coding) for part in parts) == text


@given(st.binary(max_size=300), st.integers(min_value=0, max_value=255))
def test_decode_text_accepts_any_bytes(data: bytes, data_coding: int) -> None:
    assert isinstance(decode_text(data, data_coding), str)


def _reference_count(text: str) -> int:
    """Naive oracle: walk character by character, never splitting a 2-unit character."""
    if all(char in GSM_BASIC + GSM_EXTENSION for char in text):
        costs = [2 if char in GSM_EXTENSION else 1 for char in text]
        single, multi = 160, 153
    else:
        costs = [2 if ord(char) > 0xFFFF else 1 for char in text]
        single, multi = 70, 67
    if sum(costs) <= single:
        return 1
    parts, used = 1, 0
    for cost in costs:
        if used + cost > multi:
            parts, used = parts + 1, 0
        used += cost
    return parts


@pytest.mark.parametrize("wide", ["€", EMOJI])
def test_count_matches_the_reference_around_every_part_boundary(wide: str) -> None:
    narrow = "a" if wide == "€" else "中"
    for before in range(0, 320):
        for gap in (0, 1, 2, 65, 66, 150, 151, 152):
            text = narrow * before + wide + narrow * gap + wide + narrow * 40
            assert count_segments(text) == _reference_count(text), (before, gap)


@given(st.binary(max_size=300))
def test_split_udh_never_fails_and_loses_nothing(content: bytes) -> None:
    concat, payload = split_udh(content)
    assert content.endswith(payload)
    header = content[: len(content) - len(payload)]
    assert header == b"" or len(header) == header[0] + 1  # the whole header, or none
    if concat is not None:
        assert header and 0 <= concat.reference <= 0xFFFF
        assert 0 <= concat.total <= 0xFF and 0 <= concat.seq <= 0xFF


@given(st.integers(0, 0xFF), st.integers(1, 0xFF), st.data())
def test_split_udh_reads_back_concat_udh(ref: int, total: int, data: st.DataObject) -> None:
    seq = data.draw(st.integers(1, total))
    assert split_udh(concat_udh(ref, total, seq) + b"text") == (Concat(ref, total, seq), b"text")
