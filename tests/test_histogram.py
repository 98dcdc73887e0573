"""The latency histogram behind /metrics."""

from __future__ import annotations

import pytest

from smsgw.histogram import BUCKETS_S, Histogram


def test_observations_land_in_the_first_bucket_at_or_above_them() -> None:
    histogram = Histogram()
    for seconds in (0.0, 0.001, 0.0011, 0.3, 10.0, 11.0):
        histogram.observe(seconds)
    cumulative = dict(histogram.cumulative())
    assert cumulative["0.001"] == 2  # le is inclusive
    assert cumulative["0.0025"] == 3
    assert cumulative["0.25"] == 3 and cumulative["0.5"] == 4
    assert cumulative["10.0"] == 5
    assert cumulative["+Inf"] == histogram.count == 6
    assert histogram.total_s == pytest.approx(21.3021)
    counts = [count for _, count in histogram.cumulative()]
    assert counts == sorted(counts) and len(counts) == len(BUCKETS_S) + 1
