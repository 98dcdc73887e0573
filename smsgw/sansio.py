"""What every sans-IO decoder in smsgw shares: the NEED_DATA sentinel.

A decoder's ``next_event()`` returns NEED_DATA when the bytes received so far hold no
complete event (h11's convention). One sentinel for all of them (the merchant framing, the
SMPP and CMPP codecs), so the code that drives a decoder never needs to know which it has.
"""

from __future__ import annotations

import enum
from typing import Final

__all__ = ["NEED_DATA", "NeedData"]


class NeedData(enum.Enum):
    """Sentinel type: the decoder needs more bytes before it can produce an event."""

    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData.NEED_DATA
