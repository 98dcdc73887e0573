"""Latency histograms for /metrics: fixed buckets, counted where the time is measured."""

from __future__ import annotations

import bisect
from typing import Final

import attrs

# Seconds; Prometheus's `le` bounds. From a commit-bound millisecond to an operator's timeout.
BUCKETS_S: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@attrs.define
class Histogram:
    """Observations per bucket (the last one: above every bound) and their sum."""

    counts: list[int] = attrs.field(factory=lambda: [0] * (len(BUCKETS_S) + 1))
    total_s: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS_S, seconds)] += 1
        self.total_s += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """(le, observations at or below it) for each bound, then ("+Inf", all)."""
        running = 0
        buckets = []
        for bound, count in zip((*map(repr, BUCKETS_S), "+Inf"), self.counts, strict=True):
            running += count
            buckets.append((bound, running))
        return buckets
