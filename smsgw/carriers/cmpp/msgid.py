"""CMPP Msg_Id: the ISMG's 64-bit message id (CMPP 3.0 §8.4.3.2).

Bits, most significant first: month (4), day (5), hour (5), minute (6), second (6), gateway
code (22), sequence (16). Implementations render it differently (decimal u64, hex of the
raw octets, field-wise digits); smsgw keys reports on `format_msg_id`, 16 lowercase hex
digits, which `normalize_msg_id` also produces from the other spellings it is given.
"""

from __future__ import annotations

import attrs

__all__ = [
    "MsgIdParts",
    "format_msg_id",
    "make_msg_id",
    "normalize_msg_id",
    "parse_msg_id",
    "split_msg_id",
]

_MAX = (1 << 64) - 1


@attrs.frozen
class MsgIdParts:
    month: int
    day: int
    hour: int
    minute: int
    second: int
    gateway: int
    sequence: int


# (field, shift, bits)
_LAYOUT = (
    ("month", 60, 4),
    ("day", 55, 5),
    ("hour", 50, 5),
    ("minute", 44, 6),
    ("second", 38, 6),
    ("gateway", 16, 22),
    ("sequence", 0, 16),
)


def make_msg_id(
    month: int, day: int, hour: int, minute: int, second: int, gateway: int, sequence: int
) -> int:
    """Pack a Msg_Id. The sequence wraps at 16 bits (it is cyclic); every other field must
    fit its width."""
    values = {
        "month": month,
        "day": day,
        "hour": hour,
        "minute": minute,
        "second": second,
        "gateway": gateway,
        "sequence": sequence & 0xFFFF,
    }
    msg_id = 0
    for name, shift, bits in _LAYOUT:
        value = values[name]
        if not 0 <= value < 1 << bits:
            raise ValueError(f"Msg_Id {name}={value} does not fit in {bits} bits")
        msg_id |= value << shift
    return msg_id


def split_msg_id(msg_id: int) -> MsgIdParts:
    """The fields of a Msg_Id (for logs; ids are matched whole)."""
    return MsgIdParts(
        **{name: (msg_id >> shift) & ((1 << bits) - 1) for name, shift, bits in _LAYOUT}
    )


def format_msg_id(msg_id: int) -> str:
    """The canonical rendering: 16 lowercase hex digits."""
    if not 0 <= msg_id <= _MAX:
        raise ValueError(f"Msg_Id {msg_id} is not a u64")
    return f"{msg_id:016x}"


def parse_msg_id(text: str) -> int:
    """A Msg_Id from 1 to 16 hex digits (an optional ``0x``); ValueError otherwise."""
    digits = text.strip().lower().removeprefix("0x")
    if not 1 <= len(digits) <= 16 or any(c not in "0123456789abcdef" for c in digits):
        raise ValueError(f"{text!r} is not a hex Msg_Id")
    return int(digits, 16)


def normalize_msg_id(text: str) -> str:
    """The key a report is matched on: `format_msg_id` of a hex Msg_Id; anything else
    (an id from another rendering) stripped and lowercased, so both sides still agree."""
    try:
        return format_msg_id(parse_msg_id(text))
    except ValueError:
        return text.strip().lower()
