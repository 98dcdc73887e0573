"""Send pacing for one session: a TPS cap that backs off when the operator throttles.

Pure (times are passed in), so it is tested without a clock.

Slots are evenly spaced, 1/rate apart, first come first served. `smsgw.ratelimit.TokenBucket`
is not reused on purpose: it admits a burst of a whole second's worth at once, and an
operator that enforces its TPS over a sliding second then throttles the burst that follows.

On a throttling answer (`throttled`: SMPP ESME_RTHROTTLED, CMPP Result 8): no slot is given
before `pause` seconds have passed, and the rate is halved — the configured rate, or with no
cap the rate actually sent over the last second — but at most once per pause, because the
whole window of submits sent before the pause tends to come back throttled together. Each
`recover_after` seconds without a throttle the rate doubles again, up to the configured cap
(or, with no cap, until it is twice the rate at which the operator first complained: then
unlimited again).
"""

from __future__ import annotations

import math

import attrs

__all__ = ["MIN_RATE", "RECOVER_AFTER", "Pacer"]

MIN_RATE = 1.0  # submits a second: a throttled session never stops for good
RECOVER_AFTER = 5.0  # seconds without a throttle before the rate doubles


@attrs.define
class Pacer:
    limit: float  # the configured cap in submits a second; 0 = unlimited
    pause: float = 1.0
    recover_after: float = RECOVER_AFTER
    rate: float = attrs.field(init=False)  # the cap in force now; 0 = unlimited
    paused_until: float = attrs.field(init=False, default=-math.inf)
    _next_slot: float = attrs.field(init=False, default=-math.inf)
    _last_change: float = attrs.field(init=False, default=-math.inf)
    _last_throttle: float = attrs.field(init=False, default=-math.inf)
    _free_above: float = attrs.field(init=False, default=math.inf)
    _second_start: float = attrs.field(init=False, default=-math.inf)
    _this_second: int = attrs.field(init=False, default=0)
    _last_second: int = attrs.field(init=False, default=0)

    def __attrs_post_init__(self) -> None:
        if not (math.isfinite(self.limit) and self.limit >= 0):
            raise ValueError(f"limit must be a finite rate >= 0, got {self.limit!r}")
        self.rate = self.limit

    @property
    def slowed(self) -> bool:
        """True while the rate is below what the configuration allows."""
        return self.rate != self.limit

    def reserve(self, now: float) -> float:
        """Take the next send slot: the time (>= now) at which the caller may send."""
        self._recover(now)
        slot = max(now, self._next_slot, self.paused_until)
        if self.rate > 0:
            self._next_slot = slot + 1.0 / self.rate
        self._count(slot)
        return slot

    def throttled(self, now: float) -> None:
        """The operator asked us to slow down at `now`."""
        if now < self._last_throttle + self.pause:
            return  # the same wave of throttled responses: slowed down once already
        if self.rate > 0:
            # Never below MIN_RATE, nor above a configured cap that is lower still.
            self.rate = max(min(MIN_RATE, self.limit), self.rate / 2)
        else:
            observed = max(self._last_second, self._this_second, 2 * MIN_RATE)
            self._free_above = 2 * observed
            self.rate = max(MIN_RATE, observed / 2)
        self.paused_until = now + self.pause
        self._next_slot = max(self._next_slot, self.paused_until)
        self._last_change = now
        self._last_throttle = now

    def _recover(self, now: float) -> None:
        while self.slowed and now - self._last_change >= max(self.recover_after, self.pause):
            self.rate *= 2
            self._last_change += max(self.recover_after, self.pause)
            if self.limit > 0 and self.rate >= self.limit:
                self.rate = self.limit
            elif self.limit == 0 and self.rate >= self._free_above:
                self.rate = 0.0
                self._free_above = math.inf

    def _count(self, at: float) -> None:
        # Sends per whole second, to know what "half the rate" means with no cap.
        if at - self._second_start >= 1.0:
            self._last_second = self._this_second if at - self._second_start < 2.0 else 0
            self._second_start = at
            self._this_second = 0
        self._this_second += 1
