"""Sans-IO framing of the merchant protocol (docs/protocol.md).

A request frame is ``LENGTH CMD APPID APPSECRET BODY``, a response frame ``LENGTH CMD BODY``.
``LENGTH`` is the byte length of BODY, either six ASCII decimal digits or a 4-byte big-endian
unsigned integer; the first byte tells them apart (a digit, or a byte below ``0x30``). No
sockets here: feed bytes with ``receive_data`` and pull events with ``next_event``.
"""

from __future__ import annotations

import enum
from typing import Final

import attrs

from smsgw.protocol.status import Status
from smsgw.sansio import NEED_DATA, NeedData

__all__ = [
    "CREDENTIAL_SIZE",
    "NEED_DATA",
    "ConnectionClosed",
    "LengthStyle",
    "LocalProtocolError",
    "NeedData",
    "ProtocolError",
    "RemoteProtocolError",
    "Request",
    "RequestDecoder",
    "Response",
    "ResponseDecoder",
    "canonical_credential",
    "encode_request",
    "encode_response",
    "max_body_length",
    "pad_credential",
    "response_command",
]

COMMAND_SIZE: Final = 4
CREDENTIAL_SIZE: Final = 15
DECIMAL_LENGTH_SIZE: Final = 6
BINARY_LENGTH_SIZE: Final = 4
MAX_DECIMAL_LENGTH: Final = 999_999
# A binary length whose first byte is 0x30 or more would read as a decimal (or no) length.
MAX_BINARY_LENGTH: Final = 0x2FFF_FFFF
# Room a caller may add on top of one whole frame in a single receive_data (one socket read).
READ_ALLOWANCE: Final = 65536

_UNKNOWN_COMMAND: Final = "B000"
_PRINTABLE: Final = bytes(range(0x20, 0x7F))
_CREDENTIAL_BYTES: Final = _PRINTABLE + b"\x00"
_CREDENTIAL_CHARS: Final = frozenset(_CREDENTIAL_BYTES.decode("ascii"))
_CREDENTIAL_PADDING: Final = " \x00"


class LengthStyle(enum.Enum):
    DECIMAL = "decimal"
    BINARY = "binary"


_LENGTH_SIZE: Final = {
    LengthStyle.DECIMAL: DECIMAL_LENGTH_SIZE,
    LengthStyle.BINARY: BINARY_LENGTH_SIZE,
}
_MAX_LENGTH: Final = {
    LengthStyle.DECIMAL: MAX_DECIMAL_LENGTH,
    LengthStyle.BINARY: MAX_BINARY_LENGTH,
}


def max_body_length(style: LengthStyle) -> int:
    """The largest body a frame's LENGTH of this style can declare."""
    return _MAX_LENGTH[style]


@attrs.frozen
class Request:
    command: str
    appid: str  # the raw 15 characters as received (padding still in)
    appsecret: str  # the raw 15 characters as received
    body: bytes
    length_style: LengthStyle


@attrs.frozen
class Response:
    command: str
    body: bytes
    length_style: LengthStyle


@attrs.frozen
class ConnectionClosed:
    """The peer closed the connection cleanly, between frames."""


class ProtocolError(Exception):
    """A framing error, carrying what to answer with: status, response command, length style."""

    status: Status
    command: str
    length_style: LengthStyle

    def __init__(
        self,
        message: str,
        *,
        status: Status,
        command: str = _UNKNOWN_COMMAND,
        length_style: LengthStyle = LengthStyle.DECIMAL,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.command = command
        self.length_style = length_style


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that break the framing."""


class LocalProtocolError(ProtocolError):
    """We were asked to encode something the framing cannot carry."""


def _is_printable(data: bytes | bytearray) -> bool:
    return not data.translate(None, _PRINTABLE)


def _is_credential(data: bytes | bytearray) -> bool:
    return not data.translate(None, _CREDENTIAL_BYTES)


def _is_command(command: str) -> bool:
    return len(command) == COMMAND_SIZE and command.isascii() and command.isprintable()


def response_command(command: str) -> str:
    """The response to a request command: ``A001`` → ``B001``; ``B000`` when it is not one."""
    if not _is_command(command):
        return _UNKNOWN_COMMAND
    return "B" + command[1:]


class _FrameDecoder:
    """The state machine shared by both decoders.

    The buffer only ever holds the current (partial) frame plus what the last read brought
    beyond it; a returned frame is cut off the front, so keep-alive frames stay queued.
    """

    def __init__(self, *, max_body: int, credentials: bool) -> None:
        if max_body < 0:
            raise ValueError(f"max_body must not be negative, got {max_body}")
        self._max_body = max_body
        self._credentials = credentials
        # After LENGTH: the command, then (requests only) appid and appsecret.
        self._fields_size = COMMAND_SIZE + (2 * CREDENTIAL_SIZE if credentials else 0)
        self._bound = DECIMAL_LENGTH_SIZE + self._fields_size + max_body + READ_ALLOWANCE
        self._buffer = bytearray()
        self._eof = False
        self._error: RemoteProtocolError | None = None
        self._reset_frame()

    def _reset_frame(self) -> None:
        self._style: LengthStyle | None = None
        self._length_size = 0
        self._body_length = -1  # -1 until LENGTH and CMD are parsed
        self._command = ""
        self._credentials_checked = False

    @property
    def trailing_data(self) -> bytes:
        """The bytes buffered beyond the frames returned so far."""
        return bytes(self._buffer)

    @property
    def buffer_bound(self) -> int:
        """The most bytes this decoder ever holds."""
        return self._bound

    def receive_data(self, data: bytes | bytearray) -> None:
        """Feed bytes read from the peer; ``b""`` means the peer closed its side (EOF)."""
        if self._error is not None:
            return
        if not data:
            self._eof = True
            return
        if self._eof:
            raise RuntimeError("receive_data() called with data after EOF")
        if len(self._buffer) + len(data) > self._bound:
            # Refused without buffering: memory stays bounded whatever the caller feeds.
            self._error = self._fail(
                Status.BODY_TOO_LARGE,
                f"more than {self._bound} bytes buffered for one frame",
            )
            return
        self._buffer += data

    def _fail(self, status: Status, message: str) -> RemoteProtocolError:
        command = response_command(self._command) if self._command else _UNKNOWN_COMMAND
        return RemoteProtocolError(
            message,
            status=status,
            command=command,
            length_style=self._style or LengthStyle.DECIMAL,
        )

    def _need(self, wanted: int) -> NeedData:
        if self._eof:
            raise self._fail(
                Status.MALFORMED_FRAME,
                f"connection closed in the middle of a frame ({len(self._buffer)} of "
                f"at least {wanted} bytes received)",
            )
        return NEED_DATA

    def _next_frame(self) -> tuple[str, str, str, bytes, LengthStyle] | ConnectionClosed | NeedData:
        """The next whole frame as (command, appid, appsecret, body, style)."""
        if self._error is not None:
            raise self._error
        try:
            return self._parse()
        except RemoteProtocolError as exc:
            self._error = exc  # a broken stream stays broken: no resync on garbage
            raise

    def _parse(self) -> tuple[str, str, str, bytes, LengthStyle] | ConnectionClosed | NeedData:
        buffer = self._buffer
        if self._style is None:
            if not buffer:
                return ConnectionClosed() if self._eof else NEED_DATA
            first = buffer[0]
            if 0x30 <= first <= 0x39:
                self._style = LengthStyle.DECIMAL
            elif first < 0x30:
                self._style = LengthStyle.BINARY
            else:
                raise self._fail(
                    Status.MALFORMED_FRAME,
                    f"frame does not start with a length (first byte {bytes([first])!r})",
                )
            self._length_size = _LENGTH_SIZE[self._style]
        size = self._length_size
        if self._body_length < 0:
            if len(buffer) < size + COMMAND_SIZE:
                return self._need(size + COMMAND_SIZE)
            if self._style is LengthStyle.DECIMAL:
                digits = buffer[:size]
                if not digits.isdigit():  # bytes.isdigit is ASCII digits only
                    raise self._fail(
                        Status.MALFORMED_FRAME,
                        f"length field {bytes(digits)!r} is not six decimal digits",
                    )
                length = int(digits)
            else:
                length = int.from_bytes(buffer[:size], "big")
            command = buffer[size : size + COMMAND_SIZE]
            if not _is_printable(command):
                raise self._fail(
                    Status.MALFORMED_FRAME,
                    f"command {bytes(command)!r} is not 4 printable ASCII characters",
                )
            self._command = command.decode("ascii")
            # Refused as soon as LENGTH and CMD are known (so the answer names the right
            # command), long before a body that big could arrive.
            if length > self._max_body:
                raise self._fail(
                    Status.BODY_TOO_LARGE,
                    f"body of {length} bytes is over the limit of {self._max_body}",
                )
            self._body_length = length
        header_size = size + self._fields_size
        if self._credentials and not self._credentials_checked:
            if len(buffer) < header_size:
                return self._need(header_size)
            start = size + COMMAND_SIZE
            if not _is_credential(buffer[start:header_size]):
                raise self._fail(
                    Status.MALFORMED_FRAME,
                    "appid/appsecret are not 15 printable ASCII characters each",
                )
            self._credentials_checked = True
        frame_size = header_size + self._body_length
        if len(buffer) < frame_size:
            return self._need(frame_size)
        appid = appsecret = ""
        if self._credentials:
            start = size + COMMAND_SIZE
            middle = start + CREDENTIAL_SIZE
            appid = buffer[start:middle].decode("ascii")
            appsecret = buffer[middle:header_size].decode("ascii")
        body = bytes(buffer[header_size:frame_size])
        del buffer[:frame_size]  # bytearray drops a prefix without copying the rest
        command_text, style = self._command, self._style
        self._reset_frame()
        return command_text, appid, appsecret, body, style


class RequestDecoder:
    """Decodes request frames (``LENGTH CMD APPID APPSECRET BODY``): the server side."""

    def __init__(self, *, max_body: int) -> None:
        self._decoder = _FrameDecoder(max_body=max_body, credentials=True)

    def receive_data(self, data: bytes | bytearray) -> None:
        """Feed bytes; ``b""`` means EOF. Feed only after ``next_event`` returned NEED_DATA."""
        self._decoder.receive_data(data)

    def next_event(self) -> Request | ConnectionClosed | NeedData:
        """The next request, NEED_DATA, or ConnectionClosed; raises RemoteProtocolError."""
        frame = self._decoder._next_frame()
        if isinstance(frame, tuple):
            command, appid, appsecret, body, style = frame
            return Request(command, appid, appsecret, body, style)
        return frame

    @property
    def trailing_data(self) -> bytes:
        return self._decoder.trailing_data

    @property
    def buffer_bound(self) -> int:
        return self._decoder.buffer_bound


class ResponseDecoder:
    """Decodes response frames (``LENGTH CMD BODY``): the client and pusher side."""

    def __init__(self, *, max_body: int) -> None:
        self._decoder = _FrameDecoder(max_body=max_body, credentials=False)

    def receive_data(self, data: bytes | bytearray) -> None:
        """Feed bytes; ``b""`` means EOF. Feed only after ``next_event`` returned NEED_DATA."""
        self._decoder.receive_data(data)

    def next_event(self) -> Response | ConnectionClosed | NeedData:
        """The next response, NEED_DATA, or ConnectionClosed; raises RemoteProtocolError."""
        frame = self._decoder._next_frame()
        if isinstance(frame, tuple):
            command, _, _, body, style = frame
            return Response(command, body, style)
        return frame

    @property
    def trailing_data(self) -> bytes:
        return self._decoder.trailing_data

    @property
    def buffer_bound(self) -> int:
        return self._decoder.buffer_bound


def _encode_length(length: int, style: LengthStyle) -> bytes:
    if style is LengthStyle.DECIMAL:
        if length > MAX_DECIMAL_LENGTH:
            raise LocalProtocolError(
                f"a body of {length} bytes does not fit a six-digit length",
                status=Status.BODY_TOO_LARGE,
            )
        return b"%06d" % length
    if length > MAX_BINARY_LENGTH:
        raise LocalProtocolError(
            f"a body of {length} bytes is too large for a binary length",
            status=Status.BODY_TOO_LARGE,
            length_style=style,
        )
    return length.to_bytes(BINARY_LENGTH_SIZE, "big")


def _encode_command(command: str) -> bytes:
    if not _is_command(command):
        raise LocalProtocolError(
            f"command {command!r} is not 4 printable ASCII characters",
            status=Status.MALFORMED_FRAME,
        )
    return command.encode("ascii")


def pad_credential(value: str) -> bytes:
    """An appid/appsecret as its 15 wire bytes, left-padded with ``0`` (String(15))."""
    if len(value) > CREDENTIAL_SIZE or not _CREDENTIAL_CHARS.issuperset(value):
        raise LocalProtocolError(
            f"credential {value!r} is not at most 15 printable ASCII characters",
            status=Status.MALFORMED_FRAME,
        )
    return value.rjust(CREDENTIAL_SIZE, "0").encode("ascii")


def canonical_credential(raw: str | bytes) -> str:
    """The comparison key of an appid/appsecret: padding stripped, then left-padded with ``0``.

    ``"demo"``, ``"00000000000demo"``, ``"demo           "`` and NUL-padded ``"demo"`` all map
    to the same key. A value longer than 15 keeps its length, so it matches nothing padded.
    """
    text = raw.decode("latin-1") if isinstance(raw, bytes) else raw
    return text.strip(_CREDENTIAL_PADDING).rjust(CREDENTIAL_SIZE, "0")


def encode_request(
    command: str,
    appid: str,
    appsecret: str,
    body: bytes,
    length_style: LengthStyle = LengthStyle.DECIMAL,
) -> bytes:
    """One request frame. Raises LocalProtocolError for what the framing cannot carry."""
    return b"".join(
        (
            _encode_length(len(body), length_style),
            _encode_command(command),
            pad_credential(appid),
            pad_credential(appsecret),
            body,
        )
    )


def encode_response(
    command: str, body: bytes, length_style: LengthStyle = LengthStyle.DECIMAL
) -> bytes:
    """One response frame. Raises LocalProtocolError for what the framing cannot carry."""
    return b"".join((_encode_length(len(body), length_style), _encode_command(command), body))
