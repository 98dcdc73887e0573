"""What the gateway's parts tell `/metrics` and `/healthz`: samples and health checks.

A leaf module: each part (server, pipeline, pusher, carrier, store, retention) is an
`Observed` — it hands out its own samples and checks — and the metrics server renders
whatever a `Source` gives it, knowing none of the parts. Samples and checks are plain data,
so the supervisor of several worker processes gets each worker's over a pipe and merges
them (`merge_samples`, `merge_checks`) into the answer for the whole gateway.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

import attrs

from smsgw.histogram import Histogram


class Kind(enum.Enum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


class Scope(enum.Enum):
    """How the samples of several workers combine."""

    WORKER = "worker"  # each worker's own: summed (connections, requests, binds up)
    SHARED = "shared"  # a fact every worker sees alike (rows in the shared store): taken once


@attrs.frozen
class Sample:
    """One value of a metric family: a counter's total, a gauge, or a histogram's
    cumulative `buckets` ((le, count), the last one +Inf) with `value` their sum."""

    name: str
    doc: str
    kind: Kind
    value: float
    labels: tuple[tuple[str, str], ...] = ()
    buckets: tuple[tuple[str, float], ...] = ()
    scope: Scope = Scope.WORKER


@attrs.frozen
class Check:
    """One line of /healthz. With several workers a check holds when it holds in every
    worker, or, for an `any_worker` check (carrier binds: one worker's binds can send for
    all), in at least one."""

    name: str
    ok: bool
    detail: str
    any_worker: bool = False


@runtime_checkable
class Observed(Protocol):
    """A part with something to show: its samples now and its health checks (none if it
    has nothing that can fail on its own)."""

    async def samples(self) -> list[Sample]: ...

    async def checks(self) -> list[Check]: ...


class Source(Protocol):
    """What the metrics server serves: one gateway process, or a supervisor's workers."""

    async def samples(self) -> list[Sample]: ...

    async def checks(self) -> list[Check]: ...


def counter(name: str, doc: str, value: float, **labels: str) -> Sample:
    return Sample(name, doc, Kind.COUNTER, value, tuple(labels.items()))


def gauge(name: str, doc: str, value: float, **labels: str) -> Sample:
    return Sample(name, doc, Kind.GAUGE, value, tuple(labels.items()))


def shared(sample: Sample) -> Sample:
    """The sample as a fact every worker sees alike (see `Scope`)."""
    return attrs.evolve(sample, scope=Scope.SHARED)


def histogram(name: str, doc: str, observed: Histogram) -> Sample:
    buckets = tuple((le, float(count)) for le, count in observed.cumulative())
    return Sample(name, doc, Kind.HISTOGRAM, observed.total_s, buckets=buckets)


async def samples_of(parts: Iterable[Observed]) -> list[Sample]:
    return [sample for part in parts for sample in await part.samples()]


async def checks_of(parts: Iterable[Observed]) -> list[Check]:
    return [check for part in parts for check in await part.checks()]


def _key(sample: Sample) -> tuple[str, tuple[tuple[str, str], ...]]:
    return sample.name, sample.labels


def merge_samples(reports: Sequence[Sequence[Sample]]) -> list[Sample]:
    """One set of samples from several workers': WORKER samples summed (histograms bucket
    by bucket), SHARED ones taken from the first report that has them."""
    merged: dict[tuple[str, tuple[tuple[str, str], ...]], Sample] = {}
    for report in reports:
        for sample in report:
            key = _key(sample)
            seen = merged.get(key)
            if seen is None:
                merged[key] = sample
            elif sample.scope is Scope.WORKER and seen.kind is sample.kind:
                merged[key] = attrs.evolve(
                    seen,
                    value=seen.value + sample.value,
                    buckets=_add_buckets(seen.buckets, sample.buckets),
                )
    return list(merged.values())


def _add_buckets(
    left: tuple[tuple[str, float], ...], right: tuple[tuple[str, float], ...]
) -> tuple[tuple[str, float], ...]:
    if not right:
        return left
    if not left:
        return right
    counts = dict(right)
    return tuple((le, count + counts.get(le, 0.0)) for le, count in left)


def retired(samples: Sequence[Sample]) -> list[Sample]:
    """What a worker that is gone still adds to the gateway's totals: its counters and
    histograms (so they never go backwards when it is replaced), not its gauges."""
    return [s for s in samples if s.kind is not Kind.GAUGE and s.scope is Scope.WORKER]


def merge_checks(reports: Sequence[tuple[str, Sequence[Check]]]) -> list[Check]:
    """One check per name from several workers' (see `Check`), each report named by its
    worker; the details name the workers when they differ."""
    by_name: dict[str, list[tuple[str, Check]]] = {}
    for who, report in reports:
        for check in report:
            by_name.setdefault(check.name, []).append((who, check))
    merged = []
    for name, found in by_name.items():
        oks = [check.ok for _, check in found]
        any_worker = found[0][1].any_worker
        details = {check.detail for _, check in found}
        if len(details) == 1:
            detail = details.pop()
        else:
            detail = "; ".join(f"{who}: {check.detail}" for who, check in found)
        merged.append(Check(name, any(oks) if any_worker else all(oks), detail, any_worker))
    return merged
