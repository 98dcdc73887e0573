"""LISTEN for the other gateways' commit groups, waited on Trio-natively.

One autocommit connection LISTENs on the channel; the task sleeps in
`trio.lowlevel.wait_readable` on its socket (no thread), then drains what arrived without
blocking (`notifies(timeout=0)`), at most every `DRAIN_EVERY_S`. Notifications from this
process's own writer are skipped: it already woke its own parts. A lost connection is
reopened with a growing pause, and on every (re)connect everything is woken once, because
notifications sent meanwhile are lost; the pipeline's and the pusher's polling remain the
fallback throughout.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

import psycopg
import trio

from smsgw.store.postgres import queries
from smsgw.store.postgres.notify import CHANNEL, decode
from smsgw.store.wake import Wake

log = logging.getLogger("smsgw.store.postgres")

RETRY_MIN_S: Final = 0.5
RETRY_MAX_S: Final = 10.0
# With nothing arriving, the connection is checked this often (a vanished server leaves a
# socket that never becomes readable when keepalives are off).
CHECK_EVERY_S: Final = 30.0
RECONNECT_WAKE: Final = Wake(0, (), all_apps=True)
# After a drain, what arrives meanwhile waits this long for the next: every commit group of
# this process's own writer comes back here too, and under load a wake of the event loop per
# group cost it more than this delay costs the other gateways.
DRAIN_EVERY_S: Final = 0.02


class Listener:
    def __init__(
        self,
        connect: Callable[[], queries.Conn],
        describe: Callable[[BaseException], str],
        own_pid: Callable[[], int | None],
    ) -> None:
        self._connect = connect
        self._describe = describe
        self._own_pid = own_pid
        self._subscribers: list[Callable[[Wake], None]] = []
        self.received = 0  # notifications from other processes (tests, metrics)
        self.connected = trio.Event()  # set once LISTEN is in place (tests)
        self.reconnected = trio.Event()  # set once LISTEN is in place again after a loss

    def subscribe(self, callback: Callable[[Wake], None]) -> None:
        self._subscribers.append(callback)

    def _deliver(self, wake: Wake) -> None:
        for callback in self._subscribers:
            callback(wake)

    async def run(self) -> None:
        pause = RETRY_MIN_S
        while True:
            try:
                conn = await trio.to_thread.run_sync(self._open)
            except psycopg.Error as exc:
                log.warning("LISTEN connection failed (retrying): %s", self._describe(exc))
                await trio.sleep(pause)
                pause = min(pause * 2, RETRY_MAX_S)
                continue
            pause = RETRY_MIN_S
            try:
                if self.connected.is_set():
                    self.reconnected.set()
                self.connected.set()
                self._deliver(RECONNECT_WAKE)
                await self._listen(conn)
            except psycopg.Error as exc:
                log.warning("LISTEN connection lost (reconnecting): %s", self._describe(exc))
            finally:
                conn.close()

    def _open(self) -> queries.Conn:
        conn = self._connect()
        try:
            conn.execute(f"LISTEN {CHANNEL}")
        except BaseException:
            conn.close()
            raise
        return conn

    async def _listen(self, conn: queries.Conn) -> None:
        while True:
            with trio.move_on_after(CHECK_EVERY_S) as idle:
                await trio.lowlevel.wait_readable(conn.fileno())
            if idle.cancelled_caught:
                await trio.to_thread.run_sync(conn.execute, "SELECT 1")
            own = self._own_pid()
            for notify in conn.notifies(timeout=0):
                if notify.pid == own:
                    continue
                self.received += 1
                self._deliver(decode(notify.payload))
            await trio.sleep(DRAIN_EVERY_S)
