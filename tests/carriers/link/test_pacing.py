"""The per-bind pacer: evenly spaced slots, throttle back-off, recovery."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smsgw.carriers.link.pacing import MIN_RATE, Pacer


def test_unlimited_gives_every_slot_at_once() -> None:
    pacer = Pacer(0)
    assert [pacer.reserve(10.0) for _ in range(100)] == [10.0] * 100


def test_slots_are_evenly_spaced_without_burst() -> None:
    pacer = Pacer(4)
    assert [pacer.reserve(0.0) for _ in range(5)] == [0.0, 0.25, 0.5, 0.75, 1.0]
    # Idle time does not build up a burst allowance.
    assert pacer.reserve(10.0) == 10.0
    assert pacer.reserve(10.0) == 10.25


def test_throttle_pauses_then_halves() -> None:
    pacer = Pacer(10, pause=2.0, recover_after=5.0)
    pacer.reserve(0.0)
    pacer.throttled(0.1)
    assert pacer.rate == 5 and pacer.slowed
    assert pacer.reserve(0.2) == pytest.approx(2.1)
    assert pacer.reserve(0.2) == pytest.approx(2.3)


def test_a_wave_of_throttles_halves_once() -> None:
    pacer = Pacer(16, pause=1.0)
    for offset in range(10):
        pacer.throttled(5.0 + offset * 0.05)
    assert pacer.rate == 8
    pacer.throttled(6.5)  # after the pause: a new complaint
    assert pacer.rate == 4


def test_rate_never_drops_below_the_minimum() -> None:
    pacer = Pacer(3, pause=0.0)
    for n in range(20):
        pacer.throttled(float(n))
    assert pacer.rate == MIN_RATE


def test_recovers_to_the_configured_rate() -> None:
    pacer = Pacer(10, pause=1.0, recover_after=5.0)
    pacer.throttled(0.0)
    pacer.throttled(1.0)
    assert pacer.rate == 2.5
    pacer.reserve(5.5)  # 4.5 s since the last complaint: not yet
    assert pacer.rate == 2.5
    pacer.reserve(6.0)
    assert pacer.rate == 5
    pacer.reserve(11.0)
    assert pacer.rate == 10 and not pacer.slowed
    pacer.reserve(100.0)
    assert pacer.rate == 10


def test_unlimited_bind_slows_to_half_what_it_sent_then_unlimited_again() -> None:
    pacer = Pacer(0, pause=0.5, recover_after=5.0)
    for n in range(100):  # 100 submits in the second before the complaint
        pacer.reserve(0.0 + n * 0.0099)
    pacer.reserve(1.0)
    pacer.throttled(1.0)
    assert pacer.rate == 50
    first = pacer.reserve(1.0)
    assert first == pytest.approx(1.5)
    assert pacer.reserve(1.0) == pytest.approx(1.52)
    pacer.reserve(6.0)
    assert pacer.rate == 100
    pacer.reserve(11.0)
    assert pacer.rate == 0 and not pacer.slowed  # 200 >= twice 100: unlimited again


def test_bad_limit() -> None:
    with pytest.raises(ValueError):
        Pacer(-1)


@given(
    limit=st.floats(0.5, 1000),
    events=st.lists(st.tuples(st.floats(0, 0.5), st.booleans()), max_size=200),
)
def test_never_faster_than_the_rate_in_force(
    limit: float, events: list[tuple[float, bool]]
) -> None:
    pacer = Pacer(limit, pause=0.3, recover_after=2.0)
    now = 0.0
    last_slot = -1e9
    for step, throttle in events:
        now += step
        if throttle:
            pacer.throttled(now)
            continue
        slot = pacer.reserve(now)
        assert slot >= now
        assert slot >= pacer.paused_until  # nothing goes out during a pause
        assert pacer.rate <= limit
        # Consecutive slots are at least 1/limit apart (the cap is never exceeded).
        assert slot - last_slot >= 1 / limit - 1e-9
        last_slot = slot
