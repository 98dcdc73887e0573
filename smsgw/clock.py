"""Wall-clock milliseconds that follow Trio's clock.

Stored times are epoch milliseconds (sendtime is one), but every wait goes through Trio so a
test's `autojump_clock` moves both: `now_ms()` is the epoch time when the clock was made plus
whatever Trio's clock has advanced since.
"""

from __future__ import annotations

import time

import trio


class WallClock:
    def __init__(self) -> None:
        self._offset = time.time() - trio.current_time()

    def now_ms(self) -> int:
        return int((trio.current_time() + self._offset) * 1000)

    async def sleep_until_ms(self, when_ms: int) -> None:
        await trio.sleep_until(when_ms / 1000 - self._offset)

    def trio_time(self, when_ms: int) -> float:
        """The `trio.current_time()` value at which the wall clock reads `when_ms`."""
        return when_ms / 1000 - self._offset


def epoch_ms() -> int:
    """Real wall-clock milliseconds, for code that runs outside Trio."""
    return time.time_ns() // 1_000_000
