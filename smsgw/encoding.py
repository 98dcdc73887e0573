"""SMS text encoding: GSM 03.38 default alphabet or UCS-2, segment counting and splitting.

GSM text is carried as unpacked septets, one per byte (the usual SMPP data_coding 0 form);
the SMSC packs them for the air interface. UCS-2 text is carried as UTF-16-BE, so characters
outside the Basic Multilingual Plane take a surrogate pair (two units), as handsets expect.
"""

from __future__ import annotations

import enum
import re

from smsgw.records import Concat

__all__ = [
    "GSM_MULTIPART_SEPTETS",
    "GSM_SINGLE_SEPTETS",
    "UCS2_MULTIPART_UNITS",
    "UCS2_SINGLE_UNITS",
    "DataCoding",
    "choose_coding",
    "concat_udh",
    "count_segments",
    "decode_text",
    "encode_text",
    "split_text",
    "split_udh",
]

GSM_SINGLE_SEPTETS = 160
GSM_MULTIPART_SEPTETS = 153  # 160 minus the 6-byte concatenation UDH (7 septets with fill)
UCS2_SINGLE_UNITS = 70
UCS2_MULTIPART_UNITS = 67  # 140 bytes minus the 6-byte UDH, in 2-byte units

_ESCAPE = 0x1B

# GSM 03.38 basic character set, indexed by septet. Position 0x1B is the escape to the
# extension table, not a character: the placeholder is never mapped.
_GSM_BASIC_TABLE = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
assert len(_GSM_BASIC_TABLE) == 128

# GSM 03.38 basic-character-set extension table: sent as ESC followed by this septet.
_GSM_EXTENSION_TABLE = {
    "\f": 0x0A,
    "^": 0x14,
    "{": 0x28,
    "}": 0x29,
    "\\": 0x2F,
    "[": 0x3C,
    "~": 0x3D,
    "]": 0x3E,
    "|": 0x40,
    "€": 0x65,
}

_GSM_BASIC_ENCODE: dict[str, int] = {
    char: septet for septet, char in enumerate(_GSM_BASIC_TABLE) if septet != _ESCAPE
}
_GSM_BASIC_CHARS = frozenset(_GSM_BASIC_ENCODE)
_GSM_EXTENSION_CHARS = frozenset(_GSM_EXTENSION_TABLE)
_GSM_ALL_CHARS = _GSM_BASIC_CHARS | _GSM_EXTENSION_CHARS
_GSM_EXTENSION_PATTERN = re.compile("[" + re.escape("".join(_GSM_EXTENSION_TABLE)) + "]")
_ASTRAL_PATTERN = re.compile("[\U00010000-\U0010ffff]")  # a surrogate pair in UTF-16
_GSM_EXTENSION_DECODE = {septet: char for char, septet in _GSM_EXTENSION_TABLE.items()}

# Whole-string GSM encoding through str.translate (C speed): each char maps to its septet
# bytes, decoded back as latin-1 so translate can produce a str.
_GSM_TRANSLATE: dict[int, str] = {
    ord(char): chr(septet) for char, septet in _GSM_BASIC_ENCODE.items()
} | {ord(char): chr(_ESCAPE) + chr(septet) for char, septet in _GSM_EXTENSION_TABLE.items()}


class DataCoding(enum.IntEnum):
    """The SMPP data_coding values this gateway sends with."""

    GSM7 = 0
    UCS2 = 8


def _is_gsm(text: str) -> bool:
    return _GSM_ALL_CHARS.issuperset(text)


def choose_coding(text: str) -> DataCoding:
    """GSM 7-bit when every character is in the default alphabet or its extension, else UCS-2."""
    return DataCoding.GSM7 if _is_gsm(text) else DataCoding.UCS2


def _count_parts(text: str, wide: re.Pattern[str], total: int, part_size: int) -> int:
    """Parts of ``part_size`` units needed for ``total`` units, where each character matching
    ``wide`` takes two units that must stay in one part; the rest take one.

    Only the wide characters are visited (in C, by the regex): a part ends one unit early
    exactly when a wide character would start on its last unit.
    """
    wide_starts = {match.start() + before for before, match in enumerate(wide.finditer(text))}
    parts = 0
    start = 0
    while start < total:
        end = start + part_size
        if end - 1 in wide_starts:
            end -= 1
        start = end
        parts += 1
    return parts


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def count_segments(text: str) -> int:
    """How many SMS segments ``text`` needs (see the module docstring for the rules)."""
    if not text:
        return 1
    distinct = set(text)
    if _GSM_ALL_CHARS.issuperset(distinct):
        extended = distinct & _GSM_EXTENSION_CHARS
        septets = len(text) + sum(text.count(char) for char in extended)
        if septets <= GSM_SINGLE_SEPTETS:
            return 1
        if not extended:
            return _ceil_div(septets, GSM_MULTIPART_SEPTETS)
        return _count_parts(text, _GSM_EXTENSION_PATTERN, septets, GSM_MULTIPART_SEPTETS)
    units = len(text.encode("utf-16-le", "surrogatepass")) // 2
    if units <= UCS2_SINGLE_UNITS:
        return 1
    if units == len(text):
        return _ceil_div(units, UCS2_MULTIPART_UNITS)
    return _count_parts(text, _ASTRAL_PATTERN, units, UCS2_MULTIPART_UNITS)


def _encode_gsm(text: str) -> bytes:
    if not _is_gsm(text):
        bad = next(char for char in text if char not in _GSM_ALL_CHARS)
        raise ValueError(f"character {bad!r} is not in the GSM 03.38 default alphabet")
    return text.translate(_GSM_TRANSLATE).encode("latin-1")


def _encode_ucs2(text: str) -> bytes:
    # surrogatepass: a lone surrogate in the str is still sent as the unit it is.
    return text.encode("utf-16-be", "surrogatepass")


def encode_text(text: str) -> tuple[DataCoding, bytes]:
    """The data_coding to send ``text`` with, and its encoded bytes."""
    coding = choose_coding(text)
    if coding is DataCoding.GSM7:
        return coding, _encode_gsm(text)
    return coding, _encode_ucs2(text)


def _decode_gsm(data: bytes) -> str:
    out: list[str] = []
    index = 0
    length = len(data)
    while index < length:
        septet = data[index]
        index += 1
        if septet == _ESCAPE:
            if index >= length:
                break  # a dangling escape at the end carries no character
            following = data[index]
            index += 1
            extension = _GSM_EXTENSION_DECODE.get(following)
            if extension is not None:
                out.append(extension)
            elif following < 0x80 and following != _ESCAPE:
                # 03.38: an unknown extension is shown as the basic-table character.
                out.append(_GSM_BASIC_TABLE[following])
            else:
                out.append("\ufffd")
        elif septet < 0x80:
            out.append(_GSM_BASIC_TABLE[septet])
        else:
            out.append("\ufffd")  # not a septet: unpacked GSM never sets the high bit
    return "".join(out)


def decode_text(data: bytes, data_coding: int) -> str:
    """Decode a short_message / message_payload by its data_coding; never raises.

    0 GSM 03.38 unpacked, 1 IA5 (ASCII), 3 Latin-1, 8 UCS-2 (UTF-16-BE, so surrogate pairs
    sent by handsets decode to their character); any other value is decoded as Latin-1, the
    best effort that keeps every byte visible.
    """
    if data_coding == DataCoding.GSM7:
        return _decode_gsm(data)
    if data_coding == 1:
        return data.decode("ascii", "replace")
    if data_coding == DataCoding.UCS2:
        return data.decode("utf-16-be", "replace")
    return data.decode("latin-1")


def _split_units(units: list[bytes], part_size: int) -> list[bytes]:
    """Group encoded characters into parts of at most ``part_size`` (in their unit sizes)."""
    parts: list[bytes] = []
    current: list[bytes] = []
    used = 0
    for unit in units:
        if used + len(unit) > part_size:
            parts.append(b"".join(current))
            current = []
            used = 0
        current.append(unit)
        used += len(unit)
    parts.append(b"".join(current))
    return parts


def split_text(text: str, coding: DataCoding) -> list[bytes]:
    """The encoded payload of each segment of ``text`` (no UDH: the SMPP layer adds it).

    Never splits a GSM escape sequence or a UTF-16 surrogate pair. Raises ValueError when
    ``coding`` is GSM7 and the text has a character outside the GSM alphabet.
    """
    if coding is DataCoding.GSM7:
        encoded = _encode_gsm(text)
        if len(encoded) <= GSM_SINGLE_SEPTETS:
            return [encoded]
        chars = [char.translate(_GSM_TRANSLATE).encode("latin-1") for char in text]
        return _split_units(chars, GSM_MULTIPART_SEPTETS)
    if coding is DataCoding.UCS2:
        encoded = _encode_ucs2(text)
        if len(encoded) <= 2 * UCS2_SINGLE_UNITS:
            return [encoded]
        chars = [_encode_ucs2(char) for char in text]
        return _split_units(chars, 2 * UCS2_MULTIPART_UNITS)
    raise ValueError(f"cannot split text for data_coding {coding!r}")


def concat_udh(ref: int, total: int, seq: int) -> bytes:
    """The 6-byte concatenation User Data Header (IE 0x00, 8-bit reference)."""
    if not 0 <= ref <= 0xFF:
        raise ValueError(f"concatenation reference {ref} is not 0..255")
    if not 1 <= total <= 0xFF:
        raise ValueError(f"segment total {total} is not 1..255")
    if not 1 <= seq <= total:
        raise ValueError(f"segment number {seq} is not 1..{total}")
    return bytes((0x05, 0x00, 0x03, ref, total, seq))


def split_udh(content: bytes) -> tuple[Concat | None, bytes]:
    """The concatenation information of user data that starts with a User Data Header
    (SMPP esm_class UDHI, CMPP TP_udhi = 1) and the text after the header. Both the 8-bit
    (IE 0x00) and the 16-bit (IE 0x08) reference forms are understood; a UDH without either
    gives None. A UDH longer than the content is not a UDH: the content is returned whole."""
    if not content or content[0] + 1 > len(content):
        return None, content
    header_end = content[0] + 1
    payload = content[header_end:]
    concat = None
    pos = 1
    while pos + 2 <= header_end:
        ie, size = content[pos], content[pos + 1]
        value = content[pos + 2 : pos + 2 + size]
        if len(value) != size:
            break
        if ie == 0x00 and size == 3 and concat is None:
            concat = Concat(value[0], value[1], value[2])
        elif ie == 0x08 and size == 4 and concat is None:
            concat = Concat((value[0] << 8) | value[1], value[2], value[3])
        pos += 2 + size
    return concat, payload
