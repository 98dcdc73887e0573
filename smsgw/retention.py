"""`SMSGW_RETENTION`: old finished messages and old MOs leave the store.

A message is kept `retention` after it became final (delivered or failed), with its history,
parts and pushes; one whose push is still pending stays until the push is done or abandoned.
MOs are kept `retention` after they arrived. The sweep runs every `SWEEP_INTERVAL_S`, in
small deletes with pauses between them, so a large first sweep (retention switched on over
an old database) never holds the writer long enough to slow sending or accepting.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final

import attrs
import trio

from smsgw.clock import WallClock
from smsgw.observe import Check, Sample, counter
from smsgw.store.base import RetentionStore, StoreError

log = logging.getLogger("smsgw.retention")

SWEEP_INTERVAL_S: Final = 300.0
DELETE_BATCH: Final = 500
PAUSE_BETWEEN_BATCHES_S: Final = 0.05


@attrs.define
class RetentionStats:
    messages_deleted: int = 0
    inbound_deleted: int = 0
    sweeps: int = 0


class Retention:
    def __init__(self, store: RetentionStore, clock: WallClock, retention_s: float) -> None:
        self.store = store
        self.clock = clock
        self.retention_ms = int(retention_s * 1000)
        self.stats = RetentionStats()

    async def samples(self) -> list[Sample]:
        doc = "rows past SMSGW_RETENTION deleted"
        return [
            counter("smsgw_retention_deleted", doc, self.stats.messages_deleted, table="messages"),
            counter("smsgw_retention_deleted", doc, self.stats.inbound_deleted, table="inbound"),
        ]

    async def checks(self) -> list[Check]:
        return []  # a failed sweep is tried again; the store's own check tells of the store

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            try:
                await self.sweep()
            except StoreError as exc:  # the next sweep tries again
                log.error("retention sweep failed: %s", exc)
            await trio.sleep(SWEEP_INTERVAL_S)

    async def sweep(self) -> tuple[int, int]:
        """Delete what is past retention now; returns (messages, MOs) deleted."""
        cutoff = self.clock.now_ms() - self.retention_ms
        messages = await self._drain(self.store.delete_finished, cutoff)
        inbound = await self._drain(self.store.delete_inbound, cutoff)
        self.stats.messages_deleted += messages
        self.stats.inbound_deleted += inbound
        self.stats.sweeps += 1
        if messages or inbound:
            log.info(
                "retention: deleted %d finished messages and %d MOs older than %s",
                messages,
                inbound,
                f"{self.retention_ms / 86_400_000:g}d",
            )
        return messages, inbound

    async def _drain(self, delete: Callable[[int, int], Awaitable[int]], cutoff_ms: int) -> int:
        total = 0
        while True:
            deleted = await delete(cutoff_ms, DELETE_BATCH)
            total += deleted
            if deleted < DELETE_BATCH:
                return total
            await trio.sleep(PAUSE_BETWEEN_BATCHES_S)
