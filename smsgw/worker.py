"""One worker process of `SMSGW_WORKERS=N`: a whole gateway with its share of the limits,
started by `smsgw.supervisor` and linked to it (`smsgw.workerlink`).

It reads the same `SMSGW_*` environment as its supervisor; its argv says which worker it
is, the listener's port and the link's descriptor. It stops gracefully when the supervisor
says so, when the link ends (the supervisor is gone), or on SIGTERM/SIGINT of its own.
"""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any, Final

import trio

from smsgw.cli import raise_open_files_limit, stop_on_signals
from smsgw.config import Config, ConfigError, config_error_in, load_config
from smsgw.gateway import Gateway, GatewayInfo
from smsgw.logs import setup_logging
from smsgw.shares import Share, worker_config
from smsgw.workerlink import Link, LinkClosed, encode_report

log = logging.getLogger("smsgw.worker")

EXIT_CONFIG = 2


def main(argv: Sequence[str]) -> int:
    index, count, port, fd = (int(arg) for arg in argv)
    share = Share(index, count)
    try:
        config = load_config()
        setup_logging(config.log_level, config.log_format, worker=index + 1)
        gateway_config = worker_config(config, share, port)
        trio.run(_run, gateway_config, share, socket.socket(fileno=fd))
    except (ConfigError, BaseExceptionGroup) as exc:
        error = config_error_in(exc)
        if error is None:
            raise
        print(f"smsgw: {share.name}: configuration error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    return 0


async def _run(config: Config, share: Share, sock: socket.socket) -> None:
    raise_open_files_limit()
    link = Link(sock)
    gateway = Gateway(config, share=share)
    nudges = Nudges(link, gateway.clock.now_ms)
    # The other workers hear of what this one stored: their dispatchers look at the store
    # now rather than at their next poll, and worker 1 pushes the receipts written here.
    gateway.server.on_stored = _both(gateway.pipeline.wake, nudges.stored)
    if not share.first:
        gateway.pipeline.on_pushes = nudges.pushes
    async with trio.open_nursery() as outer:
        outer.start_soon(stop_on_signals, gateway, outer.cancel_scope)
        async with trio.open_nursery() as inner:

            async def serve(task_status: trio.TaskStatus[GatewayInfo]) -> None:
                await gateway.run(task_status=task_status)
                inner.cancel_scope.cancel()  # done: the link's task ends with it

            info = await inner.start(serve)
            await link.send({"ready": [str(endpoint) for endpoint in info.listen]})
            inner.start_soon(_follow_link, link, gateway, outer.cancel_scope)
            inner.start_soon(nudges.run)
        outer.cancel_scope.cancel()


# A nudge costs the three processes a wake-up each: at most one per this interval, with
# everything that came meanwhile (a few hundredths of a second matter little next to the
# other workers' own look at the store, at least every second).
NUDGE_INTERVAL_S: Final = 0.05
# Messages due later than this are found by the other workers' own look at the store.
NUDGE_HORIZON_MS: Final = 1000


class Nudges:
    """Tells the supervisor, for the other workers, the earliest time new messages stored
    here are due (when that is soon) and the apps with new receipts: at most one message
    per NUDGE_INTERVAL_S, what comes meanwhile goes in the next."""

    def __init__(self, link: Link, now_ms: Callable[[], int]) -> None:
        self.link = link
        self.now_ms = now_ms
        self._apps: set[str] = set()
        self._due_ms: int | None = None
        self._named = trio.Event()

    def stored(self, due_ms: int) -> None:
        if due_ms > self.now_ms() + NUDGE_HORIZON_MS:
            return
        self._due_ms = due_ms if self._due_ms is None else min(self._due_ms, due_ms)
        self._named.set()

    def pushes(self, appid: str) -> None:
        self._apps.add(appid)
        self._named.set()

    async def run(self) -> None:
        while True:
            await self._named.wait()
            self._named = trio.Event()
            nudge: dict[str, object] = {}
            if self._apps:
                nudge["pushes"], self._apps = sorted(self._apps), set()
            if self._due_ms is not None:
                nudge["due_ms"], self._due_ms = self._due_ms, None
            try:
                await self.link.send({"nudge": nudge})
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return  # the supervisor is gone: the link's reader stops the gateway
            await trio.sleep(NUDGE_INTERVAL_S)


def _both(first: Callable[[int], None], second: Callable[[int], None]) -> Callable[[int], None]:
    def call(due_ms: int) -> None:
        first(due_ms)
        second(due_ms)

    return call


def apply_nudge(gateway: Gateway, nudge: dict[str, Any]) -> None:
    """What another worker did, told by the supervisor (see `Nudges`)."""
    for appid in nudge.get("pushes", ()):
        gateway.pusher.wake(str(appid))
    if nudge.get("due_ms") is not None:
        gateway.pipeline.wake(int(nudge["due_ms"]))


async def _follow_link(link: Link, gateway: Gateway, everything: trio.CancelScope) -> None:
    while True:
        try:
            message = await link.receive()
        except LinkClosed:
            if not gateway.shutdown_requested:
                log.warning("the supervisor is gone: stopping")
                gateway.shutdown()
            return
        if "collect" in message:
            samples = await gateway.samples()
            checks = await gateway.checks()
            try:
                await link.send(encode_report(int(message["collect"]), samples, checks))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                continue  # the next receive sees the end of the link
        elif "nudge" in message:
            apply_nudge(gateway, message["nudge"])
        elif message.get("stop") == "now":
            everything.cancel()
            return
        elif message.get("stop") == "graceful":
            gateway.shutdown()
