"""Samples and health checks of the parts whose modules are the store's and the pipeline's
own (kept beside them rather than in them, so those modules hold their logic only), and of
the gateway as a whole. Each class here is an `smsgw.observe.Observed`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final, Protocol, runtime_checkable

import trio

from smsgw import __version__
from smsgw.observe import Check, Sample, counter, gauge, histogram, shared
from smsgw.pipeline import Pipeline
from smsgw.store.base import State, Store, StoreError

log = logging.getLogger("smsgw.metrics")

STORE_TIMEOUT_S: Final = 5.0  # a store read for a scrape or a health check
# Counting messages by state reads an index of every row: scrapes closer together than this
# share one count, so a tight scrape loop cannot load the store.
COUNTS_MAX_AGE_S: Final = 5.0

_PIPELINE_COUNTERS: Final = (
    ("submits", "submit attempts handed to the carrier"),
    ("claimed", "messages claimed from the store for sending"),
    ("requeued", "claimed messages put back unsent (shutdown, throttling)"),
    ("recovered", "submits in doubt after a lost owner, decided here"),
    ("reclaimed_owners", "lost owners (processes) whose rows this process reclaimed"),
    ("stale", "updates the store refused: the row had moved on in another process"),
    ("reports", "delivery reports read from the carrier"),
    ("reports_unmatched", "reports stored because their operator id was not known yet"),
    ("reports_rematched", "stored reports matched when their parts were recorded"),
    ("reports_dropped", "stored reports given up (too old)"),
    ("reports_duplicate", "reports for a part already reported"),
    ("reports_ignored", "reports for a message no longer waiting for one"),
    ("reports_timed_out", "messages failed because no report came (SMSGW_REPORT_TIMEOUT)"),
)


class GatewayCollector:
    """The gateway's version and whether it is stopping (then /healthz says 503)."""

    def __init__(self, shutting_down: Callable[[], bool]) -> None:
        self.shutting_down = shutting_down

    async def samples(self) -> list[Sample]:
        info = gauge("smsgw_info", "the gateway's version", 1, version=__version__)
        stopping = gauge(
            "smsgw_shutting_down", "1 once a graceful stop has begun", self.shutting_down()
        )
        return [shared(info), shared(stopping)]

    async def checks(self) -> list[Check]:
        if self.shutting_down():
            return [Check("gateway", False, "shutting down")]
        return [Check("gateway", True, "ok")]


class PipelineCollector:
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    async def samples(self) -> list[Sample]:
        stats = self.pipeline.stats
        found = [
            counter(f"smsgw_pipeline_{field}", doc, getattr(stats, field))
            for field, doc in _PIPELINE_COUNTERS
        ]
        found.append(
            histogram(
                "smsgw_submit_seconds",
                "carrier submits of a message (all its parts), whatever their outcome",
                self.pipeline.submit_seconds,
            )
        )
        return found

    async def checks(self) -> list[Check]:
        return []  # it runs while the gateway runs; what it needs has checks of its own


@runtime_checkable
class CountsCommits(Protocol):
    """A store that counts its group commits (SqliteStore)."""

    commit_count: int
    ops_committed: int


class StoreCollector:
    """The store's commits (this process's writer), its rows by state (the same for every
    process on the store), and whether it answers a read."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._counts_lock = trio.Lock()
        self._counts: tuple[dict[str, int], dict[str, int]] | None = None
        self._counts_at = -float("inf")

    async def samples(self) -> list[Sample]:
        found: list[Sample] = []
        if isinstance(self.store, CountsCommits):
            found.append(counter("smsgw_store_commits", "group commits", self.store.commit_count))
            found.append(
                counter(
                    "smsgw_store_ops_committed",
                    "writes those commits carried",
                    self.store.ops_committed,
                )
            )
        counts = await self._store_counts()
        in_store: list[Sample] = []
        if counts is not None:
            messages, pushes = counts
            in_store.extend(
                gauge(
                    "smsgw_messages",
                    "messages in the store, by state",
                    messages.get(state.value, 0),
                    state=state.value,
                )
                for state in State
            )
            in_store.extend(
                gauge(
                    "smsgw_pushes",
                    "receipt push items in the store, by state",
                    count,
                    state=name,
                )
                for name, count in sorted(pushes.items())
            )
        in_store.append(
            gauge(
                "smsgw_store_up",
                "1 when the last count of the store's rows succeeded",
                counts is not None,
            )
        )
        return found + [shared(sample) for sample in in_store]

    async def checks(self) -> list[Check]:
        try:
            with trio.fail_after(STORE_TIMEOUT_S):
                await self.store.next_due_at()
        except (StoreError, trio.TooSlowError) as exc:
            return [Check("store", False, f"not answering: {exc or 'timeout'}")]
        return [Check("store", True, "ok")]

    async def _store_counts(self) -> tuple[dict[str, int], dict[str, int]] | None:
        async with self._counts_lock:
            now = trio.current_time()
            if self._counts is None or now - self._counts_at >= COUNTS_MAX_AGE_S:
                try:
                    with trio.fail_after(STORE_TIMEOUT_S):
                        self._counts = (await self.store.counts(), await self.store.push_counts())
                except (StoreError, trio.TooSlowError) as exc:
                    log.warning("metrics: store counts failed: %s", exc or "timeout")
                    self._counts = None
                self._counts_at = now
            return self._counts
