"""Merging several workers' samples and checks into the answer for the whole gateway."""

from __future__ import annotations

from smsgw.histogram import Histogram
from smsgw.metrics import families
from smsgw.observe import (
    Check,
    Kind,
    Sample,
    counter,
    gauge,
    histogram,
    merge_checks,
    merge_samples,
    retired,
    shared,
)


def _by_key(samples: list[Sample]) -> dict[tuple[str, tuple[tuple[str, str], ...]], Sample]:
    return {(s.name, s.labels): s for s in samples}


def test_worker_samples_are_summed_and_shared_ones_taken_once() -> None:
    fast, slow = Histogram(), Histogram()
    fast.observe(0.001)
    slow.observe(0.5)
    slow.observe(20.0)
    one = [
        counter("requests", "r", 3, status="0"),
        gauge("connections", "c", 2),
        shared(gauge("messages", "m", 10, state="queued")),
        histogram("latency", "l", fast),
    ]
    two = [
        counter("requests", "r", 4, status="0"),
        counter("requests", "r", 1, status="1005"),
        gauge("connections", "c", 5),
        shared(gauge("messages", "m", 11, state="queued")),  # counted a moment later
        histogram("latency", "l", slow),
    ]
    merged = _by_key(merge_samples([one, two]))
    assert merged[("requests", (("status", "0"),))].value == 7
    assert merged[("requests", (("status", "1005"),))].value == 1
    assert merged[("connections", ())].value == 7
    assert merged[("messages", (("state", "queued"),))].value == 10
    latency = merged[("latency", ())]
    assert latency.value == 0.001 + 0.5 + 20.0
    assert dict(latency.buckets)["+Inf"] == 3
    assert dict(latency.buckets)["0.001"] == 1
    assert dict(latency.buckets)["0.5"] == 2


def test_a_gone_workers_counters_stay_in_the_totals_but_not_its_gauges() -> None:
    gone = [counter("requests", "r", 5), gauge("connections", "c", 9)]
    kept = retired(gone)
    assert [(s.name, s.kind) for s in kept] == [("requests", Kind.COUNTER)]
    merged = _by_key(merge_samples([[counter("requests", "r", 1)], kept]))
    assert merged[("requests", ())].value == 6


def test_checks_hold_in_every_worker_or_for_binds_in_any() -> None:
    one = [Check("store", True, "ok"), Check("carrier", False, "0/1 binds up", any_worker=True)]
    two = [Check("store", False, "not answering"), Check("carrier", True, "1/1 binds up", True)]
    merged = {c.name: c for c in merge_checks([("worker 1", one), ("worker 2", two)])}
    assert not merged["store"].ok
    assert merged["store"].detail == "worker 1: ok; worker 2: not answering"
    assert merged["carrier"].ok
    same = merge_checks([("worker 1", one[:1]), ("worker 2", one[:1])])
    assert same == [Check("store", True, "ok")]


def test_families_render_each_kind_with_its_labels() -> None:
    observed = Histogram()
    observed.observe(0.002)
    rendered = families(
        [
            counter("requests", "answers", 2, status="0"),
            counter("requests", "answers", 1, status="1005"),
            gauge("up", "up", 1),
            histogram("latency", "latency", observed),
        ]
    )
    assert [(f.name, f.type) for f in rendered] == [
        ("requests", "counter"),
        ("up", "gauge"),
        ("latency", "histogram"),
    ]
    assert {s.labels["status"]: s.value for s in rendered[0].samples} == {"0": 2, "1005": 1}
    assert {s.name: s.value for s in rendered[2].samples if not s.labels} == {
        "latency_count": 1,
        "latency_sum": 0.002,
    }
