"""The gateway: one Trio nursery tree, each part owning its tasks (docs/design.md).

Start-up order: store (and the metrics endpoint, up until the store closes), carrier,
pusher, pipeline (which first reclaims what lost owners left: smsgw.lease), listener. A
graceful shutdown goes the other way round, all within one `shutdown_grace` from the
request: the listener stops accepting and finishes the requests in hand; the pipeline stops
claiming and its senders finish (and record) the submits in flight; the pusher finishes its
pushes in flight; the carrier closes; the MOs it handed over are stored; the store flushes
and closes last.
"""

from __future__ import annotations

import logging

import attrs
import trio

from smsgw.carriers import open_carrier
from smsgw.carriers.base import Carrier, ReceivedMo, ReceivesMo
from smsgw.clock import WallClock
from smsgw.collectors import GatewayCollector, PipelineCollector, StoreCollector
from smsgw.config import Config, ConfigError, Endpoint
from smsgw.inbox import store_inbound
from smsgw.lease import Lease
from smsgw.metrics import MetricsServer
from smsgw.observe import Check, Observed, Sample, checks_of, samples_of
from smsgw.pipeline import Pipeline
from smsgw.pusher import Pusher
from smsgw.retention import Retention
from smsgw.server import Server
from smsgw.shares import ALONE, Share
from smsgw.store import open_store
from smsgw.store.base import Store, StoreError
from smsgw.store.wake import Wake, WakeSource

log = logging.getLogger("smsgw.gateway")

# A carrier's close waits for its own submits; it gets this long past the grace.
CARRIER_CLOSE_MARGIN_S = 1.0


@attrs.frozen
class GatewayInfo:
    """What a started gateway tells its starter (tests use the bound port)."""

    listen: list[Endpoint]
    metrics: Endpoint | None = None  # where /metrics and /healthz answer (SMSGW_METRICS)


def store_from_config(config: Config, *, read_only: bool = False) -> Store:
    try:
        return open_store(config.db_url, read_only=read_only)
    except ValueError as exc:
        raise ConfigError("SMSGW_DB", str(exc)) from None


def carrier_from_config(config: Config, clock: WallClock, share: Share = ALONE) -> Carrier:
    try:
        return open_carrier(config.carrier_url, now_ms=clock.now_ms, share=share)
    except ValueError as exc:
        raise ConfigError("SMSGW_CARRIER", str(exc)) from None


async def start_store(nursery: trio.Nursery, store: Store) -> None:
    """Start the store; one that cannot be opened is a ConfigError naming SMSGW_DB."""
    try:
        await nursery.start(store.run)
    except StoreError as exc:
        raise ConfigError("SMSGW_DB", str(exc)) from None


class Gateway:
    """Build inside `trio.run` (the clock follows Trio's). `store=` / `carrier=` replace
    the ones the configuration names (tests). `share`: this process is one of several
    workers (`smsgw.supervisor`): it gets its share of the carrier's limits, and only the
    first worker pushes receipts and deletes old rows (pushes to one app stay in order)."""

    def __init__(
        self,
        config: Config,
        *,
        store: Store | None = None,
        carrier: Carrier | None = None,
        clock: WallClock | None = None,
        share: Share = ALONE,
    ) -> None:
        self.config = config
        self.share = share
        self.clock = clock or WallClock()
        self.store = store or store_from_config(config)
        self.carrier = carrier or carrier_from_config(config, self.clock, share)
        self.server = Server(config, self.store, self.clock)
        # This process's owner of the rows it claims and the outboxes it pushes.
        self.lease = Lease(self.store, self.clock, config.lease)
        self.pipeline = Pipeline(config, self.store, self.carrier, self.clock, lease=self.lease)
        self.pusher = Pusher(config, self.store, self.clock, lease=self.lease)
        self.server.on_stored = self.pipeline.wake
        self.pipeline.on_pushes = self.pusher.wake
        if isinstance(self.store, WakeSource):  # other gateways' commits on a shared store
            self.store.on_wake(self._woken)
        self._shutdown = trio.Event()
        self.retention = (
            Retention(self.store, self.clock, config.retention)
            if config.retention is not None and share.first
            else None
        )
        self.observed: list[Observed] = [
            GatewayCollector(lambda: self.shutdown_requested),
            self.server,
            PipelineCollector(self.pipeline),
            self.pusher,
            *([self.carrier] if isinstance(self.carrier, Observed) else []),
            *([self.retention] if self.retention is not None else []),
            StoreCollector(self.store),
        ]
        self.metrics = MetricsServer(config.metrics, self) if config.metrics else None

    async def samples(self) -> list[Sample]:
        """What /metrics shows: every part's samples (the gateway is a `Source`)."""
        return await samples_of(self.observed)

    async def checks(self) -> list[Check]:
        """What /healthz checks: every part's checks."""
        return await checks_of(self.observed)

    def _woken(self, wake: Wake) -> None:
        if wake.due_ms is not None:
            self.pipeline.wake(wake.due_ms)
        apps = [app.appid for app in self.config.apps] if wake.all_apps else wake.apps
        for appid in apps:
            self.pusher.wake(appid)

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
            await start_store(foundation, self.store)
            # Up from the store's start to its close: /healthz says 503 through a shutdown.
            metrics = await foundation.start(self.metrics.run) if self.metrics else None
            if self.retention is not None:
                await foundation.start(self.retention.run)
            inbox_done = trio.Event()
            if isinstance(self.carrier, ReceivesMo):
                # Taken before the carrier runs: from then on its MOs are kept, not dropped.
                foundation.start_soon(self._inbox, self.carrier.mo(), inbox_done)
            else:
                inbox_done.set()
            async with trio.open_nursery() as upstream:
                # Released when upstream ends, while the store still runs.
                await upstream.start(self.lease.run)
                await upstream.start(self.carrier.run)
                async with trio.open_nursery() as pushing:
                    if self.share.first:
                        await pushing.start(self.pusher.run)
                    async with trio.open_nursery() as sending:
                        await sending.start(self.pipeline.run)
                        deadline = await self._serve(task_status, metrics)
                        log.info("stopping the pipeline: finishing the submits in flight")
                        self.pipeline.stop()
                        # The carrier stops taking submits now, while the senders finish: one
                        # still waiting for its turn (tps, window) is turned away (throttled:
                        # put back, not an attempt) rather than cancelled mid-submit at the
                        # deadline, which would leave its row in doubt.
                        carrier_closed = trio.Event()
                        upstream.start_soon(self._close_carrier, deadline, carrier_closed)
                        sending.cancel_scope.deadline = deadline
                    log.info("stopping the pusher: finishing the pushes in flight")
                    self.pusher.stop()
                    pushing.cancel_scope.deadline = deadline
                await carrier_closed.wait()
                upstream.cancel_scope.cancel()
            # The carrier closed its MO channel: what it holds (and still waits for) is
            # stored, then nothing more writes to the store and it may close cleanly.
            with trio.move_on_after(CARRIER_CLOSE_MARGIN_S):
                await inbox_done.wait()
            foundation.cancel_scope.cancel()
        log.info("stopped")

    async def _inbox(self, mo: trio.MemoryReceiveChannel[ReceivedMo], done: trio.Event) -> None:
        try:
            await store_inbound(mo, self.store)
        finally:
            done.set()

    async def _close_carrier(self, deadline: float, closed: trio.Event) -> None:
        try:
            with trio.move_on_at(deadline + CARRIER_CLOSE_MARGIN_S) as closing:
                closing.shield = True
                await self.carrier.aclose()
        finally:
            closed.set()

    async def _serve(
        self, task_status: trio.TaskStatus[GatewayInfo], metrics: Endpoint | None
    ) -> float:
        """Run the listener until shutdown() and its drain; return the shutdown deadline."""
        async with trio.open_nursery() as services:
            listen = await services.start(self.server.run)
            task_status.started(GatewayInfo(listen=listen, metrics=metrics))
            await self._shutdown.wait()
            deadline = trio.current_time() + self.config.shutdown_grace
            log.info("shutting down: no new connections, finishing requests in hand")
            self.server.stop_accepting()
            services.cancel_scope.deadline = deadline + 1
        return deadline
