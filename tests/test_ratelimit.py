from smsgw.ratelimit import FailureLimiter, RecentKeys, TokenBucket


def test_bucket_admits_rate_per_second_and_lets_a_big_batch_into_debt() -> None:
    bucket = TokenBucket(rate=10)
    assert bucket.try_take(10, now=0.0)
    assert not bucket.try_take(1, now=0.0)
    assert bucket.try_take(1, now=0.2)  # two tokens back
    # A batch larger than a second's worth goes through once, then pays its debt.
    assert bucket.try_take(100, now=0.3)
    assert not bucket.try_take(1, now=5.0)
    assert bucket.try_take(1, now=10.5)


def test_failure_limiter_blocks_after_limit_until_window_passes() -> None:
    limiter = FailureLimiter(limit=3, window=60)
    for second in range(3):
        assert not limiter.blocked("10.0.0.1", second)
        limiter.record_failure("10.0.0.1", second)
    assert limiter.blocked("10.0.0.1", 10)
    assert not limiter.blocked("10.0.0.2", 10)
    assert not limiter.blocked("10.0.0.1", 61)


def test_failure_limiter_memory_is_bounded() -> None:
    limiter = FailureLimiter(limit=3, window=60, max_keys=100)
    for n in range(1000):
        limiter.record_failure(f"addr{n}", now=1.0)
    assert len(limiter._failures) <= 100
    # The most recent offenders are the ones remembered.
    limiter.record_failure("addr999", now=1.0)
    limiter.record_failure("addr999", now=1.0)
    assert limiter.blocked("addr999", now=2.0)


def test_recent_keys_forget_the_least_recently_seen() -> None:
    keys = RecentKeys(max_keys=2)
    keys.add("a")
    keys.add("b")
    keys.add("a")  # seen again: now the most recent
    keys.add("c")
    assert "a" in keys
    assert "c" in keys
    assert "b" not in keys
