"""The gateway: one Trio nursery tree, each part owning its tasks (DESIGN.md §2)."""

from __future__ import annotations

import logging

import attrs
import trio

from smsgw.config import Config, ConfigError, Endpoint
from smsgw.server import Server
from smsgw.store import open_store
from smsgw.store.base import Store

log = logging.getLogger("smsgw.gateway")


@attrs.frozen
class GatewayInfo:
    """What a started gateway tells its starter (tests use the bound port)."""

    listen: list[Endpoint]


def store_from_config(config: Config) -> Store:
    try:
        return open_store(config.db_url)
    except ValueError as exc:
        raise ConfigError("SMSGW_DB", str(exc)) from None


class Gateway:
    def __init__(self, config: Config, *, store: Store | None = None) -> None:
        self.config = config
        self.store = store or store_from_config(config)
        self.server = Server(config, self.store)
        self._shutdown = trio.Event()

    @property
    def shutdown_requested(self) -> bool:
        return self._shutdown.is_set()

    def shutdown(self) -> None:
        """Begin a graceful stop: stop accepting, finish what is in hand, flush, return."""
        self._shutdown.set()

    async def run(
        self, *, task_status: trio.TaskStatus[GatewayInfo] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as foundation:
            await foundation.start(self.store.run)
            async with trio.open_nursery() as services:
                listen = await services.start(self.server.run)
                task_status.started(GatewayInfo(listen=listen))
                await self._shutdown.wait()
                log.info("shutting down: no new connections, finishing requests in hand")
                self.server.stop_accepting()
                services.cancel_scope.deadline = (
                    trio.current_time() + self.config.shutdown_grace + 1
                )
            # Everything that writes to the store has returned: let it close cleanly.
            foundation.cancel_scope.cancel()
        log.info("stopped")
