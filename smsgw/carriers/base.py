"""What every upstream carrier (simulator, SMPP, CMPP) offers the pipeline.

The pipeline only talks to this interface: it submits one `OutboundSms` at a time (many
concurrently), gets a `SubmitAccepted` or a `SubmitError` whose `kind` tells it what to do
next, and reads `DeliveryReport`s from one channel. Reports are matched to submits by
`normalize_id(carrier_msgid)` on both sides, because operators are not always consistent
about the case or padding of their own ids.
"""

from __future__ import annotations

import enum
from typing import Protocol, runtime_checkable

import attrs
import trio


@attrs.frozen
class OutboundSms:
    """One delivery (one phone) handed to a carrier."""

    message_id: int  # the store's row id
    appid: str
    msgid: str
    phone: str
    text: str
    msgtype: int
    attempt: int  # 1 for the first try


@attrs.frozen
class SubmitAccepted:
    """The operator took the message; reports will refer to `part_ids`."""

    carrier_msgid: str  # operator id of the (first) part
    part_ids: tuple[str, ...]  # one operator id per segment (len 1 for a short SMS)


class SubmitErrorKind(enum.Enum):
    TEMPORARY = "temporary"  # retry (counts as a failed attempt)
    PERMANENT = "permanent"  # never retry
    THROTTLED = "throttled"  # operator asked us to slow down: retry soon, NOT a failed attempt
    IN_DOUBT = "in_doubt"  # link died with the submit in flight: treat as a crash (DESIGN §2)


class SubmitError(Exception):
    """A submit that did not end with the operator accepting the message."""

    def __init__(self, kind: SubmitErrorKind, stat: str, detail: str) -> None:
        super().__init__(kind, stat, detail)
        self.kind = kind
        self.stat = stat  # short code for receipts: "SIM_FAIL", "ESME_RSUBMITFAIL", ...
        self.detail = detail  # human text for logs / the A003 `error`

    def __str__(self) -> str:
        return f"{self.kind.value} {self.stat}: {self.detail}"


@attrs.frozen
class MobileOriginated:
    """A message from a handset to one of our source addresses (an SMPP deliver_sm / data_sm
    that is not a receipt; CMPP's MO deliver)."""

    source_addr: str  # the handset
    destination_addr: str  # our address it was sent to
    text: str  # decoded by data_coding, without the UDH
    data_coding: int
    esm_class: int
    udh: bytes  # the User Data Header when esm_class has UDHI, else b""
    at_ms: int  # when the gateway received it: wall-clock ms since the epoch


@attrs.define(eq=False)
class ReceivedMo:
    """An MO a carrier has handed over but not yet acknowledged to the operator. Its consumer
    calls `stored()` once it is durable, or `not_stored()` when it could not be stored; the
    carrier answers the operator accordingly (not stored: the operator sends it again).
    `given_up` is set when the carrier stopped waiting (it answered "send it again"), so
    a consumer that is late does not store what will come again."""

    mo: MobileOriginated
    given_up: bool = attrs.field(default=False, init=False)
    _ok: bool = attrs.field(default=False, init=False)
    _decided: trio.Event = attrs.field(factory=trio.Event, init=False)

    def stored(self) -> None:
        self._ok = True
        self._decided.set()

    def not_stored(self) -> None:
        self._decided.set()

    async def wait_stored(self, timeout: float) -> bool:
        """For the carrier: True once stored; False when not, or not decided in time."""
        try:
            with trio.move_on_after(timeout):
                await self._decided.wait()
        finally:  # timed out, or cancelled (the link went away): the operator will resend
            if not self._decided.is_set():
                self.given_up = True
        return self._ok


@attrs.frozen
class DeliveryReport:
    carrier_msgid: str  # as the operator gave it (the carrier normalizes before matching)
    delivered: bool
    stat: str  # "DELIVRD", "UNDELIV", "EXPIRED", "REJECTD", ...
    error: str | None
    at_ms: int  # wall-clock ms since the epoch


class Carrier(Protocol):
    """An upstream operator connection.

    `name`, `gives_reports` and `concurrency` are read-only properties so that an
    implementation may hold them as plain attributes or compute them.
    """

    @property
    def name(self) -> str: ...

    @property
    def gives_reports(self) -> bool:
        """False: "accepted by the operator" is final (A002 status 1)."""
        ...

    @property
    def concurrency(self) -> int:
        """How many submits the carrier can have in flight at once (SMPP: window × binds),
        0 when it sets no such limit. The pipeline runs this many senders (SMSGW_SENDERS
        when 0): every window slot filled, and no message held SUBMITTING while it waits
        for one."""
        ...

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the carrier's sessions and tasks; start with `nursery.start`; runs until
        cancelled, then closes the reports channel."""
        ...

    async def submit(self, sms: OutboundSms) -> SubmitAccepted:
        """Send one message; raises `SubmitError`. Safe to call concurrently."""
        ...

    def reports(self) -> trio.MemoryReceiveChannel[DeliveryReport]:
        """The delivery reports, for ONE consumer (the pipeline)."""
        ...

    def normalize_id(self, carrier_msgid: str) -> str:
        """The key used to match reports to submits."""
        ...

    async def aclose(self) -> None:
        """Graceful: stop taking submits, let the in-flight ones finish."""
        ...


@runtime_checkable
class ReceivesMo(Protocol):
    """A carrier that also receives mobile-originated messages (SMPP, CMPP; not the simulator)."""

    def mo(self) -> trio.MemoryReceiveChannel[ReceivedMo]:
        """The MO channel, for ONE consumer; closed when the carrier's run() ends. Each MO
        is acknowledged to the operator once its consumer says it is stored."""
        ...
