"""What the link runtime needs to know about one protocol (SMPP, CMPP; later SGIP, SMGP).

The runtime (`link`, `session`, `pool`) moves frames: it numbers requests, matches responses
by sequence, keeps windows, timers, binds and reconnects. Everything it must ask of the
protocol is here: how bytes become frames (the sans-IO `FrameCodec`), how to log in and keep
the link alive, what a submit response does to the link, and where an inbound request goes.
A dialect holds no I/O and no state of a connection; the frames are its codec's own types.

SGIP 1.2 and SMGP 3.0 fit as further dialects: every one of these headers has the command id
at octets 4-8 and a sequence the codec numbers (`number_request`; SGIP's 12-octet
node/time/counter sequence is one Python int), SMGP's Login/Active_Test map onto `logins` /
`keep_alive` as CMPP's do, and SGIP, which has no heartbeat, sets a `KeepAlive` interval of
0. What SGIP adds is the SMG connecting back to the SP for Deliver and Report: a listener
beside the sessions whose links only take deliveries (`Route.DELIVERY`), its sessions made
from accepted streams instead of `Connect`.
"""

from __future__ import annotations

import enum
import logging
from typing import Generic, Protocol, TypeVar

import attrs

from smsgw.sansio import NeedData

__all__ = [
    "Dialect",
    "Frame",
    "FrameCodec",
    "KeepAlive",
    "LoginRefused",
    "Malformed",
    "Route",
    "SubmitEffect",
]


class Frame(Protocol):
    """A decoded PDU of any dialect: what the runtime reads of it."""

    @property
    def sequence_number(self) -> int: ...

    @property
    def is_response(self) -> bool: ...


FrameT = TypeVar("FrameT", bound=Frame)


class FrameCodec(Protocol[FrameT]):
    """Byte stream ⇄ frames for one connection, plus sequence numbers (h11 style)."""

    def receive_data(self, data: bytes | bytearray) -> None: ...

    def next_event(self) -> FrameT | NeedData:
        """The next frame or NEED_DATA; raises the dialect's `frame_error` for a malformed
        frame (consumed: call again) and its `framing_error` when the stream is lost."""
        ...

    def send(self, frame: FrameT) -> bytes: ...

    def send_request(self, frame: FrameT) -> tuple[FrameT, bytes]:
        """The request with a fresh sequence number, and its bytes."""
        ...

    def number_request(self, data: bytes) -> tuple[int, bytes]:
        """An encoded request given a fresh sequence number: the number and the bytes."""
        ...


class Route(enum.Enum):
    """Where an inbound request goes."""

    DELIVERY = "delivery"  # a report or an MO: the carrier's handler says what to answer
    KEEP_ALIVE = "keep_alive"  # answered at once
    LOGOUT = "logout"  # answered, then the link is closed (the session logs in again)
    REFUSE = "refuse"  # nothing a client accepts: answered with a refusal


class SubmitEffect(enum.Enum):
    """What a submit's answer does to the session that sent it."""

    NONE = "none"
    THROTTLE = "throttle"  # the operator asks us to slow down: pause, halve the rate
    LOSE_LINK = "lose_link"  # the operator says the link is not logged in: reconnect


@attrs.frozen
class KeepAlive:
    """Probe a link every `interval` seconds (only once it has received nothing for that
    long, when `when_idle`); a probe not answered within `timeout` is sent again, and after
    `tries` unanswered probes in a row the link is dead."""

    interval: float  # 0: never
    timeout: float
    tries: int = 1
    when_idle: bool = False


@attrs.frozen
class Malformed(Generic[FrameT]):
    """How to handle a frame the codec could not decode (but could delimit)."""

    message: str  # what was wrong
    status: str  # the status it is refused with / the log's name for it
    answered: int | None  # a malformed *response*: the sequence of the request it answered
    is_response: bool
    reply: FrameT | None  # a malformed request: the frame to answer it with (None: none)


class LoginRefused(Exception):
    """The operator refused the login (or answered it with something unusable)."""


class Dialect(Protocol[FrameT]):
    """One protocol, as the runtime sees it (module docstring)."""

    @property
    def log(self) -> logging.Logger: ...

    @property
    def peer(self) -> str:
        """The operator's side in log lines: "SMSC", "ISMG"."""
        ...

    @property
    def login_name(self) -> str:
        """The login in log lines and session names: "bind", "connect"."""
        ...

    @property
    def ok_status(self) -> int:
        """A delivery's answer when all went well (or its handler failed)."""
        ...

    @property
    def keep_alive(self) -> KeepAlive: ...

    @property
    def frame_error(self) -> type[Exception]:
        """What the codec raises for a malformed frame (the stream goes on)."""
        ...

    @property
    def framing_error(self) -> type[Exception]:
        """What the codec raises when the stream cannot be framed any more."""
        ...

    def new_codec(self) -> FrameCodec[FrameT]: ...

    def command_name(self, command_id: int) -> str:
        """A request's command for log lines and errors ("submit_sm")."""
        ...

    def frame_name(self, frame: FrameT) -> str: ...

    # -- logging in and out ----------------------------------------------------------------

    def logins(self) -> list[tuple[str, FrameT]]:
        """One (role, login request) per connection a session opens, in order."""
        ...

    def login_answer(self, request: FrameT, answer: FrameT) -> str | None:
        """None when `answer` (a response with the request's sequence) is not the login's
        answer; else what to log on success. Raises LoginRefused."""
        ...

    def logout(self) -> FrameT: ...

    def describe_answer(self, answer: FrameT) -> str:
        """A response's status for log lines ("ESME_ROK", "Result 8")."""
        ...

    def keep_alive_request(self) -> FrameT: ...

    # -- inbound ---------------------------------------------------------------------------

    def route(self, frame: FrameT) -> Route: ...

    def response_for(self, frame: FrameT, status: int) -> FrameT:
        """The answer to an inbound request (a delivery, keep-alive or logout)."""
        ...

    def refusal(self, frame: FrameT) -> FrameT | None:
        """The answer to a request that is refused (`Route.REFUSE`); None: left unanswered."""
        ...

    def malformed(self, error: Exception) -> Malformed[FrameT]: ...

    def framing_reply(self, error: Exception) -> FrameT | None:
        """The last frame to send before closing a link whose framing is lost."""
        ...

    def error_message(self, error: Exception) -> str: ...

    # -- submitting ------------------------------------------------------------------------

    def submit_effect(self, response: FrameT) -> SubmitEffect: ...
