"""Rate limits of the listener: a per-app message rate, failed-auth limits per address and
per app.

The limiters take the current time as an argument (Trio's clock in the server, anything in tests)
so they hold no clock of their own.
"""

from __future__ import annotations

import attrs


@attrs.define
class TokenBucket:
    """`rate` units a second on average, bursts of up to `rate` units.

    A request is admitted while the bucket is not empty and takes all its units, even into
    debt: a batch larger than one second's worth is still accepted, and the debt makes the
    following requests wait, so the long-run rate holds for any batch size.
    """

    rate: float
    tokens: float = attrs.field(default=None)
    updated: float = 0.0

    def __attrs_post_init__(self) -> None:
        if self.tokens is None:
            self.tokens = self.rate

    def try_take(self, units: int, now: float) -> bool:
        self.tokens = min(self.rate, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens <= 0:
            return False
        self.tokens -= units
        return True


@attrs.define
class FailureLimiter:
    """At most `limit` failures per key within `window` seconds; then the key is refused
    until the window that began with its first failure has passed.

    Memory stays bounded: expired keys are swept once the table passes `max_keys`, and if
    every key is still live the oldest are dropped (an attacker rotating addresses can only
    make us forget, never grow without bound).
    """

    limit: int
    window: float = 60.0
    max_keys: int = 100_000
    _failures: dict[str, tuple[float, int]] = attrs.field(factory=dict)

    def blocked(self, key: str, now: float) -> bool:
        entry = self._failures.get(key)
        if entry is None:
            return False
        started, count = entry
        if now - started >= self.window:
            del self._failures[key]
            return False
        return count >= self.limit

    def record_failure(self, key: str, now: float) -> None:
        started, count = self._failures.get(key, (now, 0))
        if now - started >= self.window:
            started, count = now, 0
        self._failures[key] = (started, count + 1)
        if len(self._failures) > self.max_keys:
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        live = {k: v for k, v in self._failures.items() if now - v[0] < self.window}
        if len(live) > self.max_keys // 2:
            oldest_first = sorted(live.items(), key=lambda item: item[1][0])
            live = dict(oldest_first[len(live) - self.max_keys // 2 :])
        self._failures = live


@attrs.define
class RecentKeys:
    """The last `max_keys` keys seen (least recently seen forgotten first): the addresses an
    app has authenticated from, which a lock-out of that app spares."""

    max_keys: int = 1024
    _keys: dict[str, None] = attrs.field(factory=dict)

    def add(self, key: str) -> None:
        self._keys.pop(key, None)  # re-inserted last: dicts keep insertion order
        self._keys[key] = None
        if len(self._keys) > self.max_keys:
            del self._keys[next(iter(self._keys))]

    def __contains__(self, key: object) -> bool:
        return key in self._keys
