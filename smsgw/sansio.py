"""What every sans-IO decoder in smsgw shares: the NEED_DATA sentinel, and the stream half
of a connection whose frames start with their own length.

A decoder's ``next_event()`` returns NEED_DATA when the bytes received so far hold no
complete event (h11's convention). One sentinel for all of them (the merchant framing, the
SMPP and CMPP codecs), so the code that drives a decoder never needs to know which it has.
"""

from __future__ import annotations

import enum
import struct
from typing import ClassVar, Final, Generic, Literal, TypeVar

__all__ = ["NEED_DATA", "LengthPrefixedStream", "NeedData", "PduProtocolError"]


class NeedData(enum.Enum):
    """Sentinel type: the decoder needs more bytes before it can produce an event."""

    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData.NEED_DATA


class PduProtocolError(Exception):
    """Malformed input on a PDU stream (SMPP, CMPP): ``command_status`` is the status to
    answer with, ``sequence_number`` None when the header could not be read, ``command_id``
    None when unknown. ``recoverable`` says whether the stream can go on with the next
    PDU. Each protocol subclasses it (its own docstring and repr)."""

    recoverable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        command_status: int,
        sequence_number: int | None = None,
        command_id: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.command_status = command_status
        self.sequence_number = sequence_number
        self.command_id = command_id


EventT = TypeVar("EventT")
FramingErrorT = TypeVar("FramingErrorT", bound=PduProtocolError)

_U32 = struct.Struct(">I")


class LengthPrefixedStream(Generic[EventT, FramingErrorT]):
    """Buffering, framing and the broken state for a stream of frames that each start with
    a 4-octet big-endian length counting the whole frame (SMPP's command_length, CMPP's
    Total_Length), plus the 31-bit sequence numbers both protocols allocate.

    A subclass says how a frame becomes an event (``_decode_frame``) and what error a length
    outside ``header_length..max_pdu_length`` is (``_framing_error``). After that error the
    stream cannot be resynchronised: it is raised again on every later ``next_event``.
    """

    _MAX_SEQUENCE_NUMBER: Final = 0x7FFFFFFF

    def __init__(self, *, header_length: int, max_pdu_length: int) -> None:
        if max_pdu_length < header_length:
            raise ValueError(f"max_pdu_length {max_pdu_length} is below the header size")
        self.max_pdu_length = max_pdu_length
        self._header_length = header_length
        self._buffer = bytearray()
        self._last_sequence = 0
        self._broken: FramingErrorT | None = None

    def _decode_frame(self, frame: bytes) -> EventT:
        """The event for one complete frame whose length is within the limits."""
        raise NotImplementedError

    def _framing_error(self, length: int, buffer: bytearray) -> FramingErrorT:
        """The error for a frame of ``length`` octets, too short or too long; ``buffer``
        starts with that frame's first octets (to name it in the error, when it can)."""
        raise NotImplementedError

    # receiving

    def receive_data(self, data: bytes | bytearray) -> None:
        """Add bytes read from the peer. Ignored once the stream is broken."""
        if self._broken is None:
            self._buffer += data

    @property
    def pending_bytes(self) -> int:
        """Octets received but not yet part of a returned PDU (a partial PDU at EOF)."""
        return len(self._buffer)

    @property
    def broken(self) -> bool:
        """True after a framing error: no further PDU can be read from this stream."""
        return self._broken is not None

    def next_event(self) -> EventT | Literal[NeedData.NEED_DATA]:
        """The next complete PDU, or NEED_DATA.

        Raises the protocol's PDU error for a malformed PDU (consumed; call again for the
        next one) and its framing error when the stream cannot be resynchronised (raised
        again on every later call).
        """
        if self._broken is not None:
            raise self._broken
        buffer = self._buffer
        if len(buffer) < 4:
            return NEED_DATA
        (length,) = _U32.unpack_from(buffer)
        if not self._header_length <= length <= self.max_pdu_length:
            self._broken = error = self._framing_error(length, buffer)
            buffer.clear()
            raise error
        if len(buffer) < length:
            return NEED_DATA
        frame = bytes(buffer[:length])
        del buffer[:length]
        return self._decode_frame(frame)

    # sending

    def next_sequence(self) -> int:
        """A fresh sequence number: 1, 2, ... 0x7FFFFFFF, then 1 again."""
        self._last_sequence = self._last_sequence % self._MAX_SEQUENCE_NUMBER + 1
        return self._last_sequence
