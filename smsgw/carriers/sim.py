"""The simulator carrier: an in-process fake operator for demos, tests and benchmarks.

URL: ``sim://?fail=0.05&reject=0&latency=0&dlr_delay=1&dlr_fail=0&tps=0&seed=&log=PATH``
(every parameter optional; the values shown are the defaults, `seed` and `log` unset).

- ``fail``: share of submits answered with a TEMPORARY error (stat ``SIM_FAIL``), 0..1.
- ``reject``: share answered with a PERMANENT error (stat ``SIM_REJECT``), 0..1;
  ``fail + reject`` must not exceed 1.
- ``latency``: seconds before the operator answers a submit. Submits overlap: 100 concurrent
  submits at 1 s latency all answer after about 1 s.
- ``dlr_delay``: seconds from the answer to the delivery report (0 = together with the
  answer). ``none`` or a negative value: the operator gives no reports (`gives_reports` False).
- ``dlr_fail``: share of accepted messages whose report says ``UNDELIV``, 0..1. The draw is
  made once per message, so every part of a long SMS reports the same outcome and the share
  seen by the merchant is exactly this value.
- ``tps``: most submits the operator receives per second (0 = unlimited). Callers wait for
  their turn, first come first served (an evenly spaced schedule, no burst).
- ``seed``: integer seed of the outcome draws (the same seed and the same order of submits
  give the same outcomes). Operator ids are NOT seeded: they must never repeat across
  restarts.
- ``log``: a file to which every submit the operator receives appends one JSON line at once
  (msgid, phone, appid, attempt, message_id, outcome, carrier_msgid, part_ids, time), with
  one unbuffered write, so the file counts exactly what reached the operator even if the
  process is killed right after.

Values are percent-decoded (``%26`` for ``&``); ``+`` stays a plus sign.
"""

from __future__ import annotations

import heapq
import itertools
import json
import math
import os
import random
import secrets
from collections.abc import Callable

import attrs
import trio

from smsgw.carriers.base import (
    DeliveryReport,
    OutboundSms,
    SubmitAccepted,
    SubmitError,
    SubmitErrorKind,
)
from smsgw.carriers.url import parameter_error, parse_carrier_url, parse_float, parse_int
from smsgw.clock import WallClock
from smsgw.encoding import count_segments

SIM_PARAMETERS = ("fail", "reject", "latency", "dlr_delay", "dlr_fail", "tps", "seed", "log")

STAT_SIM_FAIL = "SIM_FAIL"
STAT_SIM_REJECT = "SIM_REJECT"
STAT_SIM_CLOSED = "SIM_CLOSED"
STAT_DELIVERED = "DELIVRD"
STAT_UNDELIVERED = "UNDELIV"

# The reports waiting for the consumer; beyond this the report task waits (backpressure)
# while new reports keep accumulating in the heap.
REPORT_BUFFER = 1024


def _problem(name: str, message: str) -> ValueError:
    return parameter_error("sim", name, message)


def _check_share(name: str, value: float) -> None:
    if not (0.0 <= value <= 1.0):  # also refuses NaN
        raise _problem(name, f"must be a share between 0 and 1, got {value!r}")


def _check_seconds(name: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 0.0):
        raise _problem(name, f"must be a finite number of seconds >= 0, got {value!r}")


def _no_reports_if_negative(value: float | None) -> float | None:
    # A negative delay is the documented way to say "this operator gives no reports".
    if value is not None and value < 0:
        return None
    return value


@attrs.frozen
class SimConfig:
    """The simulator's validated parameters (see the module docstring)."""

    fail: float = 0.05
    reject: float = 0.0
    latency: float = 0.0
    dlr_delay: float | None = attrs.field(default=1.0, converter=_no_reports_if_negative)
    dlr_fail: float = 0.0
    tps: float = 0.0
    seed: int | None = None
    log: str | None = None

    def __attrs_post_init__(self) -> None:
        _check_share("fail", self.fail)
        _check_share("reject", self.reject)
        if self.fail + self.reject > 1.0:
            raise _problem(
                "reject", f"fail + reject must not exceed 1, got {self.fail} + {self.reject}"
            )
        _check_seconds("latency", self.latency)
        if self.dlr_delay is not None:
            _check_seconds("dlr_delay", self.dlr_delay)
        _check_share("dlr_fail", self.dlr_fail)
        if not (math.isfinite(self.tps) and self.tps >= 0.0):
            raise _problem("tps", f"must be a finite number >= 0 (0 = unlimited), got {self.tps!r}")
        if self.log is not None and (self.log == "" or "\x00" in self.log):
            raise _problem("log", "must be a file path")


def parse_sim_url(url: str) -> SimConfig:
    """Parse and validate a ``sim://?...`` URL; ValueError names the bad parameter."""
    raw = parse_carrier_url(
        url, "sim", SIM_PARAMETERS, usage="sim://?name=value&...", server=False
    ).params

    defaults = SimConfig()

    def number(name: str, default: float) -> float:
        return parse_float("sim", name, raw[name]) if name in raw else default

    dlr_delay = defaults.dlr_delay
    if "dlr_delay" in raw:
        text = raw["dlr_delay"]
        dlr_delay = (
            None if text.strip().lower() == "none" else parse_float("sim", "dlr_delay", text)
        )
    seed = None
    if raw.get("seed"):  # an empty seed means "not seeded"
        seed = parse_int("sim", "seed", raw["seed"])
    return SimConfig(
        fail=number("fail", defaults.fail),
        reject=number("reject", defaults.reject),
        latency=number("latency", defaults.latency),
        dlr_delay=dlr_delay,
        dlr_fail=number("dlr_fail", defaults.dlr_fail),
        tps=number("tps", defaults.tps),
        seed=seed,
        log=raw.get("log") or None,  # an empty log means "no log"
    )


def _closed_error() -> SubmitError:
    # THROTTLED, not TEMPORARY: the message never reached the operator, so it must not
    # cost the message an attempt (a msgtype 2 would otherwise be failed for nothing).
    return SubmitError(
        SubmitErrorKind.THROTTLED, STAT_SIM_CLOSED, "simulator carrier is closing: not sent"
    )


class SimCarrier:
    """A fake operator living in the gateway's process (implements `Carrier`)."""

    def __init__(
        self,
        config: SimConfig,
        *,
        now_ms: Callable[[], int] | None = None,
        report_buffer: int = REPORT_BUFFER,
    ) -> None:
        """`now_ms` gives the epoch ms written in reports and the log; by default a
        `WallClock` made at first use (inside Trio), so it follows a test's mock clock."""
        self.config = config
        self.name = "sim"
        self.gives_reports = config.dlr_delay is not None
        self.concurrency = 0  # no window: as many submits at once as the pipeline sends
        self.received = 0  # submits that reached the operator (logged ones)
        self._now_ms = now_ms
        self._rng = random.Random(config.seed)
        # A fresh random prefix per carrier: a restarted gateway never reuses an id.
        self._id_prefix = secrets.token_hex(4)
        self._id_counter = itertools.count(1)
        self._report_send, self._report_receive = trio.open_memory_channel[DeliveryReport](
            report_buffer
        )
        # Pending reports: (due trio time, tie-breaker, part ids, delivered). One heap and
        # one task, whatever the number of pending reports.
        self._pending: list[tuple[float, int, tuple[str, ...], bool]] = []
        self._pending_seq = itertools.count()
        self._pending_reports = 0
        self._pending_changed = trio.Event()
        self._next_slot = -math.inf  # trio time of the next free tps slot
        self._inflight = 0
        self._closing = trio.Event()
        self._drained = trio.Event()
        self._run_started = False
        self._log_fd: int | None = None
        if config.log is not None:
            try:
                self._log_fd = os.open(
                    config.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644
                )
            except OSError as error:
                raise _problem(
                    "log", f"cannot open {config.log!r}: {error.strerror or error}"
                ) from None

    @classmethod
    def from_url(cls, url: str, *, now_ms: Callable[[], int] | None = None) -> SimCarrier:
        return cls(parse_sim_url(url), now_ms=now_ms)

    @property
    def pending_reports(self) -> int:
        """Delivery reports scheduled but not yet handed to the reports channel."""
        return self._pending_reports

    def reports(self) -> trio.MemoryReceiveChannel[DeliveryReport]:
        return self._report_receive

    def normalize_id(self, carrier_msgid: str) -> str:
        return carrier_msgid.strip().lower()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self._run_started:
            raise RuntimeError("SimCarrier.run() can only be started once")
        self._run_started = True
        try:
            task_status.started()
            await self._emit_reports_forever()
        finally:
            self._report_send.close()

    async def submit(self, sms: OutboundSms) -> SubmitAccepted:
        if self._closing.is_set():
            raise _closed_error()
        self._inflight += 1
        try:
            await self._wait_for_tps_slot()
            return await self._handle(sms)
        finally:
            self._inflight -= 1
            if self._inflight == 0 and self._closing.is_set():
                self._drained.set()

    async def aclose(self) -> None:
        self._closing.set()
        if self._inflight:
            await self._drained.wait()
        else:
            await trio.lowlevel.checkpoint()
        if self._log_fd is not None:
            os.close(self._log_fd)
            self._log_fd = None

    async def _wait_for_tps_slot(self) -> None:
        if self.config.tps == 0:
            return
        now = trio.current_time()
        slot = max(now, self._next_slot)
        self._next_slot = slot + 1.0 / self.config.tps
        if slot > now:
            with trio.move_on_at(slot):
                await self._closing.wait()
            if self._closing.is_set():
                raise _closed_error()

    async def _handle(self, sms: OutboundSms) -> SubmitAccepted:
        # Draw both numbers every time so the stream of draws does not depend on outcomes.
        outcome_draw = self._rng.random()
        report_draw = self._rng.random()
        kind: SubmitErrorKind | None = None
        if outcome_draw < self.config.fail:
            kind = SubmitErrorKind.TEMPORARY
        elif outcome_draw < self.config.fail + self.config.reject:
            kind = SubmitErrorKind.PERMANENT

        part_ids: tuple[str, ...] = ()
        if kind is None:
            part_ids = tuple(self._new_id() for _ in range(count_segments(sms.text)))
        # From here on the operator has the message: it is logged and (when accepted) will
        # be reported even if our caller is cancelled while waiting for the answer, just as
        # a real operator delivers a message whose submit response got lost.
        self.received += 1
        self._log(sms, "accepted" if kind is None else kind.value, part_ids)
        if kind is None and self.config.dlr_delay is not None:
            due = trio.current_time() + self.config.latency + self.config.dlr_delay
            self._schedule_report(due, part_ids, report_draw >= self.config.dlr_fail)

        await trio.sleep(self.config.latency)
        if kind is SubmitErrorKind.TEMPORARY:
            raise SubmitError(kind, STAT_SIM_FAIL, "simulated temporary failure")
        if kind is SubmitErrorKind.PERMANENT:
            raise SubmitError(kind, STAT_SIM_REJECT, "simulated permanent rejection")
        return SubmitAccepted(carrier_msgid=part_ids[0], part_ids=part_ids)

    def _wall_clock_ms(self) -> int:
        if self._now_ms is None:
            self._now_ms = WallClock().now_ms
        return self._now_ms()

    def _new_id(self) -> str:
        return f"{self._id_prefix}{next(self._id_counter):08x}"

    def _log(self, sms: OutboundSms, outcome: str, part_ids: tuple[str, ...]) -> None:
        if self._log_fd is None:
            return
        line = json.dumps(
            {
                "msgid": sms.msgid,
                "phone": sms.phone,
                "appid": sms.appid,
                "attempt": sms.attempt,
                "message_id": sms.message_id,
                "outcome": outcome,
                "carrier_msgid": part_ids[0] if part_ids else None,
                "part_ids": list(part_ids),
                "time": self._wall_clock_ms(),
            }
        )
        data = (line + "\n").encode()
        # One O_APPEND write straight to the OS (no Python buffer): the line survives a
        # kill -9 the moment this returns. A small local write; not worth a thread hop.
        while data:
            written = os.write(self._log_fd, data)
            data = data[written:]

    def _schedule_report(self, due: float, part_ids: tuple[str, ...], delivered: bool) -> None:
        heapq.heappush(self._pending, (due, next(self._pending_seq), part_ids, delivered))
        self._pending_reports += len(part_ids)
        if self._pending[0][0] == due:  # the new report is now the earliest: re-arm the timer
            self._pending_changed.set()

    async def _emit_reports_forever(self) -> None:
        while True:
            while self._pending and self._pending[0][0] <= trio.current_time():
                _, _, part_ids, delivered = heapq.heappop(self._pending)
                at_ms = self._wall_clock_ms()
                for part_id in part_ids:
                    self._pending_reports -= 1
                    await self._report_send.send(
                        DeliveryReport(
                            carrier_msgid=part_id,
                            delivered=delivered,
                            stat=STAT_DELIVERED if delivered else STAT_UNDELIVERED,
                            error=None if delivered else "simulated: subscriber unreachable",
                            at_ms=at_ms,
                        )
                    )
            self._pending_changed = trio.Event()
            deadline = self._pending[0][0] if self._pending else math.inf
            with trio.move_on_at(deadline):
                await self._pending_changed.wait()
