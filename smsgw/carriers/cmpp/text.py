"""CMPP message content: Msg_Fmt, long-message splitting and the concatenation UDH.

An SP sends ASCII text as Msg_Fmt 0 and anything else as UCS2 (Msg_Fmt 8, UTF-16-BE). Text
that does not fit one SUBMIT is split into parts with TP_udhi = 1, each Msg_Content starting
with the 6-octet UDH ``05 00 03 ref total seq`` and Pk_total / Pk_number set to the same
count and index: at most 67 UCS2 characters a part (70 unsplit), 153 ASCII characters a part
(159 unsplit: Msg_Fmt 0 content must be shorter than 160 octets). On receipt Msg_Fmt 0 is
ASCII, 8 UCS2, 15 GB18030 (which covers GBK); anything else is read as Latin-1 so every
octet stays visible.
"""

from __future__ import annotations

import enum
from typing import Final

import attrs

from smsgw.encoding import UCS2_SINGLE_UNITS, DataCoding, concat_udh, split_text

__all__ = [
    "ASCII_MULTIPART_CHARS",
    "ASCII_SINGLE_CHARS",
    "Concat",
    "MsgFmt",
    "Segment",
    "decode_content",
    "split_message",
    "split_udh",
]

ASCII_SINGLE_CHARS: Final = 159
ASCII_MULTIPART_CHARS: Final = 153  # + the 6-octet UDH = 159
MAX_PARTS: Final = 255  # Pk_total is one octet


class MsgFmt(enum.IntEnum):
    ASCII = 0
    WRITE_CARD = 3
    BINARY = 4
    UCS2 = 8
    GB = 15


@attrs.frozen
class Segment:
    """One SUBMIT's worth of a message: its Msg_Fmt, TP_udhi, Pk_total / Pk_number and
    Msg_Content (UDH included when ``tp_udhi`` is 1)."""

    msg_fmt: MsgFmt
    tp_udhi: int
    pk_total: int
    pk_number: int
    content: bytes


def split_message(text: str, reference: int) -> list[Segment]:
    """The SUBMIT contents for ``text``; ``reference`` (0..255) is the UDH reference that
    ties the parts of one message together. ValueError when more than 255 parts are
    needed."""
    if text.isascii():
        encoded = text.encode("ascii")
        if len(encoded) <= ASCII_SINGLE_CHARS:
            return [Segment(MsgFmt.ASCII, 0, 1, 1, encoded)]
        chunks = [
            encoded[start : start + ASCII_MULTIPART_CHARS]
            for start in range(0, len(encoded), ASCII_MULTIPART_CHARS)
        ]
        return _with_udh(MsgFmt.ASCII, chunks, reference)
    # split_text keeps a surrogate pair in one part and leaves 70 units unsplit.
    chunks = split_text(text, DataCoding.UCS2)
    if len(chunks) == 1:
        assert len(chunks[0]) <= 2 * UCS2_SINGLE_UNITS
        return [Segment(MsgFmt.UCS2, 0, 1, 1, chunks[0])]
    return _with_udh(MsgFmt.UCS2, chunks, reference)


def _with_udh(msg_fmt: MsgFmt, chunks: list[bytes], reference: int) -> list[Segment]:
    total = len(chunks)
    if total > MAX_PARTS:
        raise ValueError(f"the message needs {total} parts, more than {MAX_PARTS}")
    return [
        Segment(msg_fmt, 1, total, number, concat_udh(reference, total, number) + chunk)
        for number, chunk in enumerate(chunks, start=1)
    ]


@attrs.frozen
class Concat:
    """What a concatenation UDH says: the message's reference, its part count, this part's
    number (from 1)."""

    reference: int
    total: int
    number: int


def split_udh(content: bytes) -> tuple[Concat | None, bytes]:
    """The concatenation information of a Msg_Content sent with TP_udhi = 1 and the text
    after its UDH. Both the 8-bit (IE 0x00) and the 16-bit (IE 0x08) reference forms are
    understood; a UDH without either gives None. A UDH longer than the content is not a
    UDH: the content is returned whole."""
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


def decode_content(msg_fmt: int, content: bytes) -> str:
    """Msg_Content (without its UDH) as text; never raises."""
    if msg_fmt == MsgFmt.ASCII:
        return content.decode("ascii", "replace")
    if msg_fmt == MsgFmt.UCS2:
        return content.decode("utf-16-be", "replace")
    if msg_fmt == MsgFmt.GB:
        return content.decode("gb18030", "replace")
    return content.decode("latin-1")
