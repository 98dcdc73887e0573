"""The simulator carrier: URL parameters, outcomes, reports, latency, tps, log, shutdown."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from smsgw.carriers import Carrier, open_carrier
from smsgw.carriers.base import DeliveryReport, OutboundSms, SubmitError, SubmitErrorKind
from smsgw.carriers.sim import SIM_PARAMETERS, SimCarrier, SimConfig, parse_sim_url
from smsgw.encoding import count_segments

WALL_MS = 1_700_000_000_000


def sms(n: int = 1, text: str = "hello", attempt: int = 1) -> OutboundSms:
    return OutboundSms(
        message_id=n,
        appid="app1",
        msgid=f"m{n}",
        phone=f"+861380000{n:04d}",
        text=text,
        msgtype=1,
        attempt=attempt,
    )


def sim(url: str) -> SimCarrier:
    return SimCarrier(parse_sim_url(url), now_ms=lambda: WALL_MS)


async def outcome(carrier: SimCarrier, message: OutboundSms) -> str:
    try:
        await carrier.submit(message)
    except SubmitError as error:
        return error.kind.value
    return "accepted"


@asynccontextmanager
async def running(carrier: SimCarrier) -> AsyncIterator[SimCarrier]:
    # A lost wake-up must fail the test, not hang it (the mock clock jumps to this deadline).
    with trio.fail_after(10_000):
        async with trio.open_nursery() as nursery:
            await nursery.start(carrier.run)
            try:
                yield carrier
            finally:
                nursery.cancel_scope.cancel()


def count_tasks() -> int:
    def walk(task: trio.lowlevel.Task) -> int:
        return 1 + sum(walk(child) for n in task.child_nurseries for child in n.child_tasks)

    root = trio.lowlevel.current_root_task()
    assert root is not None
    return walk(root)


# --------------------------------------------------------------------------- URL parameters


@pytest.mark.parametrize("url", ["sim://", "sim://?", "sim:", "sim:///", "SIM://?&&"])
def test_bare_url_gives_the_documented_defaults(url: str) -> None:
    config = parse_sim_url(url)
    assert (config.fail, config.reject, config.latency) == (0.05, 0.0, 0.0)
    assert (config.dlr_delay, config.dlr_fail, config.tps) == (1.0, 0.0, 0.0)
    assert config.seed is None
    assert config.log is None


def test_every_parameter_is_parsed(tmp_path: Path) -> None:
    log = tmp_path / "sim log.jsonl"
    config = parse_sim_url(
        "sim://?fail=0.25&reject=0.5&latency=1.5&dlr_delay=2.5&dlr_fail=0.75&tps=12.5"
        f"&seed=-42&log={str(log).replace(' ', '%20')}"
    )
    assert config == SimConfig(
        fail=0.25,
        reject=0.5,
        latency=1.5,
        dlr_delay=2.5,
        dlr_fail=0.75,
        tps=12.5,
        seed=-42,
        log=str(log),
    )


@pytest.mark.parametrize("value", ["none", "NONE", " None ", "-1", "-0.001"])
def test_dlr_delay_none_or_negative_means_no_reports(value: str) -> None:
    config = parse_sim_url(f"sim://?dlr_delay={value}")
    assert config.dlr_delay is None
    assert SimCarrier(config).gives_reports is False


def test_dlr_delay_zero_still_gives_reports() -> None:
    assert sim("sim://?dlr_delay=0").gives_reports is True


def test_empty_seed_and_log_mean_unset() -> None:
    config = parse_sim_url("sim://?seed=&log=")
    assert config.seed is None
    assert config.log is None


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("fail=1.5", "fail"),
        ("fail=-0.1", "fail"),
        ("fail=abc", "fail"),
        ("fail=nan", "fail"),
        ("fail=", "fail"),
        ("fail", "fail"),
        ("fail=0.1&fail=0.2", "fail"),
        ("reject=2", "reject"),
        ("reject=x", "reject"),
        ("fail=0.6&reject=0.5", "reject"),
        ("latency=-1", "latency"),
        ("latency=inf", "latency"),
        ("latency=1s", "latency"),
        ("dlr_delay=inf", "dlr_delay"),
        ("dlr_delay=nan", "dlr_delay"),
        ("dlr_delay=later", "dlr_delay"),
        ("dlr_fail=1.01", "dlr_fail"),
        ("dlr_fail=-1", "dlr_fail"),
        ("tps=-5", "tps"),
        ("tps=inf", "tps"),
        ("tps=fast", "tps"),
        ("seed=1.5", "seed"),
        ("seed=abc", "seed"),
        ("colour=red", "colour"),
        ("FAIL=0", "FAIL"),
    ],
)
def test_bad_parameter_is_named(query: str, named: str) -> None:
    with pytest.raises(ValueError, match=f"'{named}'"):
        parse_sim_url(f"sim://?{query}")
    with pytest.raises(ValueError, match=f"'{named}'"):
        open_carrier(f"sim://?{query}")


def test_unknown_parameter_lists_the_known_ones() -> None:
    with pytest.raises(ValueError) as caught:
        parse_sim_url("sim://?delay=1")
    for name in SIM_PARAMETERS:
        assert name in str(caught.value)


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("sim://localhost?fail=0", "no host or path"),
        ("sim:/some/path", "no host or path"),
        ("sim://?fail=0#top", "fragment"),
        ("sim://[::1?fail=0", "malformed"),
    ],
)
def test_bad_sim_url_shapes(url: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_sim_url(url)


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://example.com/", "unknown carrier scheme 'http'"),
        ("", "no scheme"),
        ("fail=0.1", "no scheme"),
        ("smpp://user:secret@127.0.0.1:2775?window=0", "smpp carrier parameter .window."),
        ("sim://[::1", "malformed"),
    ],
)
def test_open_carrier_rejects_what_it_cannot_build(url: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment) as caught:
        open_carrier(url)
    assert "secret" not in str(caught.value)


def test_open_carrier_builds_the_simulator() -> None:
    carrier = open_carrier("sim://?fail=0&dlr_delay=none&seed=3")
    assert isinstance(carrier, SimCarrier)
    assert carrier.name == "sim"
    assert carrier.gives_reports is False
    assert carrier.config.seed == 3


def test_config_validates_when_built_in_code_too() -> None:
    with pytest.raises(ValueError, match="'tps'"):
        SimConfig(tps=math.nan)
    with pytest.raises(ValueError, match="'log'"):
        SimConfig(log="")


def test_unopenable_log_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'log'.*No such file"):
        open_carrier(f"sim://?log={tmp_path}/missing/dir/sim.log")
    with pytest.raises(ValueError, match="'log'"):
        open_carrier(f"sim://?log={tmp_path}")  # a directory


async def test_log_path_is_percent_decoded(tmp_path: Path) -> None:
    carrier = sim(f"sim://?fail=0&log={tmp_path}/a%26b+c.log")
    await carrier.submit(sms())
    await carrier.aclose()
    assert (tmp_path / "a&b+c.log").read_text().count("\n") == 1


QUERY_PIECES = st.lists(
    st.tuples(
        st.sampled_from([*SIM_PARAMETERS, "x", "", "fail=", "%66ail"]),
        st.sampled_from(["", "=", "=="]),
        st.one_of(
            st.text(max_size=8),
            st.floats(allow_nan=True).map(str),
            st.integers(-5, 5).map(str),
            st.sampled_from(["none", "0", "1", "0.5", "-1", "inf", "1e400"]),
        ),
    ).map(lambda piece: f"{piece[0]}{piece[1]}{piece[2]}"),
    max_size=6,
).map("&".join)


@given(query=QUERY_PIECES)
def test_fuzzed_queries_give_a_config_or_a_value_error(query: str) -> None:
    try:
        config = parse_sim_url(f"sim://?{query}")
    except ValueError as error:
        assert str(error)
    else:
        assert 0 <= config.fail + config.reject <= 1
        assert config.dlr_delay is None or math.isfinite(config.dlr_delay)
        assert math.isfinite(config.tps) and config.tps >= 0


@given(url=st.text(max_size=40))
def test_fuzzed_urls_never_crash_open_carrier(url: str) -> None:
    # anything that could be a sim URL is only parsed: a fuzzed `log=` must not create files
    try:
        if "sim" in url.lower():
            parse_sim_url(url)
        else:
            open_carrier(url)
    except ValueError as error:
        assert str(error)


# ----------------------------------------------------------------------------- outcomes


async def test_accepted_submits_get_unique_ids_matching_normalize() -> None:
    carrier: Carrier = sim("sim://?fail=0&dlr_delay=none")
    ids = []
    for n in range(200):
        accepted = await carrier.submit(sms(n))
        assert accepted.part_ids == (accepted.carrier_msgid,)
        ids.append(accepted.carrier_msgid)
    assert len(set(ids)) == 200
    for carrier_msgid in ids[:5]:
        assert carrier.normalize_id(f"  {carrier_msgid.upper()} ") == carrier_msgid
        assert carrier.normalize_id(carrier_msgid) == carrier_msgid


async def test_ids_are_not_reused_by_a_restarted_carrier_even_with_the_same_seed() -> None:
    first = [(await sim("sim://?fail=0&seed=1").submit(sms(n))).carrier_msgid for n in range(3)]
    again = [(await sim("sim://?fail=0&seed=1").submit(sms(n))).carrier_msgid for n in range(3)]
    assert not set(first) & set(again)


@pytest.mark.parametrize(
    ("url", "kind", "stat"),
    [
        ("sim://?fail=1", SubmitErrorKind.TEMPORARY, "SIM_FAIL"),
        ("sim://?fail=0&reject=1", SubmitErrorKind.PERMANENT, "SIM_REJECT"),
    ],
)
async def test_forced_failures(url: str, kind: SubmitErrorKind, stat: str) -> None:
    carrier = sim(url)
    for n in range(20):
        with pytest.raises(SubmitError) as caught:
            await carrier.submit(sms(n))
        assert caught.value.kind is kind
        assert caught.value.stat == stat
        assert caught.value.detail
        assert stat in str(caught.value)


async def test_fail_and_reject_shares_with_a_seed() -> None:
    carrier = sim("sim://?fail=0.2&reject=0.1&seed=7&dlr_delay=none")
    counts = Counter([await outcome(carrier, sms(n)) for n in range(4000)])
    assert abs(counts["temporary"] / 4000 - 0.2) < 0.03
    assert abs(counts["permanent"] / 4000 - 0.1) < 0.03
    assert counts["accepted"] + counts["temporary"] + counts["permanent"] == 4000


async def test_fail_plus_reject_of_one_never_accepts() -> None:
    carrier = sim("sim://?fail=0.5&reject=0.5&seed=2")
    counts = Counter([await outcome(carrier, sms(n)) for n in range(500)])
    assert counts["accepted"] == 0
    assert counts["temporary"] > 150
    assert counts["permanent"] > 150


async def run_scenario(url: str) -> tuple[list[str], list[bool]]:
    """Sequential submits; the outcomes and the delivered flag of each report."""
    carrier = sim(url)
    async with running(carrier):
        outcomes = [await outcome(carrier, sms(n)) for n in range(300)]
        reports = [await carrier.reports().receive() for _ in range(outcomes.count("accepted"))]
        await trio.sleep(2)
        assert carrier.pending_reports == 0
    return outcomes, [report.delivered for report in reports]


async def test_same_seed_same_outcomes_and_reports(autojump_clock: trio.testing.MockClock) -> None:
    url = "sim://?fail=0.3&reject=0.1&dlr_fail=0.4&dlr_delay=1&seed=12345"
    first = await run_scenario(url)
    second = await run_scenario(url)
    assert first == second
    assert set(first[0]) == {"accepted", "temporary", "permanent"}
    assert set(first[1]) == {True, False}
    other = await run_scenario(url.replace("seed=12345", "seed=54321"))
    assert other != first


async def test_long_text_gets_one_id_per_segment(autojump_clock: trio.testing.MockClock) -> None:
    carrier = sim("sim://?fail=0&dlr_delay=0")
    texts = ["x" * 160, "x" * 161, "x" * 500, "短信" * 40, "😀" * 100]
    async with running(carrier):
        for n, text in enumerate(texts):
            accepted = await carrier.submit(sms(n, text=text))
            assert len(accepted.part_ids) == count_segments(text)
            assert len(set(accepted.part_ids)) == len(accepted.part_ids)
            assert accepted.carrier_msgid == accepted.part_ids[0]
            reported = [await carrier.reports().receive() for _ in accepted.part_ids]
            assert [r.carrier_msgid for r in reported] == list(accepted.part_ids)
    # the texts really are multi-part (33 emoji a part: a surrogate pair is never split)
    assert [count_segments(text) for text in texts] == [1, 2, 4, 2, 4]


# ------------------------------------------------------------------------------ reports


async def test_report_comes_dlr_delay_after_the_answer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    carrier = sim("sim://?fail=0&latency=2&dlr_delay=3")
    async with running(carrier):
        start = trio.current_time()
        accepted = await carrier.submit(sms())
        assert trio.current_time() - start == pytest.approx(2)
        assert carrier.pending_reports == 1
        report = await carrier.reports().receive()
        assert trio.current_time() - start == pytest.approx(5)
        assert report == DeliveryReport(
            carrier_msgid=accepted.carrier_msgid,
            delivered=True,
            stat="DELIVRD",
            error=None,
            at_ms=WALL_MS,
        )
        assert carrier.pending_reports == 0


async def test_default_clock_follows_trio_time(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    log = tmp_path / "sim.jsonl"
    carrier = open_carrier(f"sim://?fail=0&dlr_delay=60&log={log}")
    assert isinstance(carrier, SimCarrier)
    async with running(carrier):
        await carrier.submit(sms())
        report = await carrier.reports().receive()
    submitted_ms = json.loads(log.read_text())["time"]
    assert abs(submitted_ms - time.time() * 1000) < 10_000
    assert report.at_ms - submitted_ms == pytest.approx(60_000, abs=2)


async def test_reports_follow_their_own_submit_times(
    autojump_clock: trio.testing.MockClock,
) -> None:
    carrier = sim("sim://?fail=0&dlr_delay=5")
    arrivals: dict[str, float] = {}
    async with running(carrier):
        start = trio.current_time()
        first = await carrier.submit(sms(1))
        await trio.sleep(3)
        second = await carrier.submit(sms(2))
        for _ in range(2):
            report = await carrier.reports().receive()
            arrivals[report.carrier_msgid] = trio.current_time() - start
    assert arrivals[first.carrier_msgid] == pytest.approx(5)
    assert arrivals[second.carrier_msgid] == pytest.approx(8)


async def test_zero_dlr_delay_reports_at_once(autojump_clock: trio.testing.MockClock) -> None:
    carrier = sim("sim://?fail=0&dlr_delay=0")
    async with running(carrier):
        start = trio.current_time()
        accepted = await carrier.submit(sms())
        report = await carrier.reports().receive()
        assert report.carrier_msgid == accepted.carrier_msgid
        assert trio.current_time() == start


async def test_dlr_fail_one_reports_undelivered(autojump_clock: trio.testing.MockClock) -> None:
    carrier = sim("sim://?fail=0&dlr_fail=1&dlr_delay=1")
    async with running(carrier):
        accepted = [await carrier.submit(sms(n)) for n in range(10)]
        reports = [await carrier.reports().receive() for _ in accepted]
    assert [r.carrier_msgid for r in reports] == [a.carrier_msgid for a in accepted]
    for report in reports:
        assert report.delivered is False
        assert report.stat == "UNDELIV"
        assert report.error


async def test_dlr_fail_share_with_a_seed(autojump_clock: trio.testing.MockClock) -> None:
    carrier = sim("sim://?fail=0&dlr_fail=0.25&dlr_delay=1&seed=99")
    async with running(carrier):
        for n in range(2000):
            await carrier.submit(sms(n))
        reports = [await carrier.reports().receive() for _ in range(2000)]
    undelivered = sum(not report.delivered for report in reports)
    assert abs(undelivered / 2000 - 0.25) < 0.03


async def test_failed_submits_give_no_reports(autojump_clock: trio.testing.MockClock) -> None:
    carrier = sim("sim://?fail=0.5&reject=0.5&dlr_delay=0")
    async with running(carrier):
        for n in range(20):
            await outcome(carrier, sms(n))
        await trio.sleep(10)
        assert carrier.pending_reports == 0
        with pytest.raises(trio.WouldBlock):
            carrier.reports().receive_nowait()


async def test_no_reports_when_dlr_delay_none(autojump_clock: trio.testing.MockClock) -> None:
    carrier = sim("sim://?fail=0&dlr_delay=none")
    async with running(carrier):
        for n in range(5):
            await carrier.submit(sms(n))
        await trio.sleep(1000)
        assert carrier.pending_reports == 0
        with pytest.raises(trio.WouldBlock):
            carrier.reports().receive_nowait()


async def test_many_pending_reports_use_one_task(autojump_clock: trio.testing.MockClock) -> None:
    carrier = sim("sim://?fail=0&dlr_delay=100")
    async with running(carrier):
        baseline = count_tasks()
        async with trio.open_nursery() as nursery:
            for n in range(3000):
                nursery.start_soon(carrier.submit, sms(n))
        assert carrier.pending_reports == 3000
        assert count_tasks() == baseline
        await trio.sleep(50)
        assert carrier.pending_reports == 3000  # none early
        received = [await carrier.reports().receive() for _ in range(3000)]
        assert carrier.pending_reports == 0
    assert len({report.carrier_msgid for report in received}) == 3000


async def test_reports_submitted_before_run_flow_once_it_runs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    carrier = sim("sim://?fail=0&dlr_delay=1")
    accepted = await carrier.submit(sms())
    await trio.sleep(5)
    async with running(carrier):
        report = await carrier.reports().receive()
    assert report.carrier_msgid == accepted.carrier_msgid


async def test_cancelled_run_closes_the_reports_channel() -> None:
    carrier = sim("sim://?fail=0")
    async with running(carrier):
        pass
    with pytest.raises(trio.EndOfChannel):
        await carrier.reports().receive()


async def test_run_can_start_only_once() -> None:
    carrier = sim("sim://")
    async with running(carrier):
        with pytest.raises(RuntimeError, match="once"):
            await carrier.run()


# ---------------------------------------------------------------------- latency and tps


async def test_latency_overlaps_concurrent_submits(autojump_clock: trio.testing.MockClock) -> None:
    carrier = sim("sim://?fail=0&latency=1&dlr_delay=none")
    done: list[float] = []

    async def one(n: int) -> None:
        await carrier.submit(sms(n))
        done.append(trio.current_time())

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for n in range(100):
            nursery.start_soon(one, n)
    assert len(done) == 100
    assert min(done) - start == pytest.approx(1)
    assert max(done) - start == pytest.approx(1)


async def test_latency_applies_to_failures_too(autojump_clock: trio.testing.MockClock) -> None:
    carrier = sim("sim://?fail=1&latency=0.5")
    start = trio.current_time()
    assert await outcome(carrier, sms()) == "temporary"
    assert trio.current_time() - start == pytest.approx(0.5)


async def test_tps_caps_submits_per_second(autojump_clock: trio.testing.MockClock) -> None:
    carrier = sim("sim://?fail=0&tps=10&dlr_delay=none")
    done: list[float] = []

    async def one(n: int) -> None:
        await carrier.submit(sms(n))
        done.append(trio.current_time())

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for n in range(35):
            nursery.start_soon(one, n)
    offsets = sorted(t - start for t in done)
    assert offsets[-1] == pytest.approx(3.4)
    for first in offsets:  # no one-second window holds more than tps submits
        assert sum(first <= t < first + 1 - 1e-9 for t in offsets) <= 10


async def test_tps_does_not_save_up_a_burst(autojump_clock: trio.testing.MockClock) -> None:
    carrier = sim("sim://?fail=0&tps=2&dlr_delay=none")
    await carrier.submit(sms(0))
    await trio.sleep(60)
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for n in range(5):
            nursery.start_soon(carrier.submit, sms(n))
    assert trio.current_time() - start == pytest.approx(2.0)


async def test_tps_zero_is_unlimited(autojump_clock: trio.testing.MockClock) -> None:
    carrier = sim("sim://?fail=0&tps=0&dlr_delay=none")
    start = trio.current_time()
    for n in range(1000):
        await carrier.submit(sms(n))
    assert trio.current_time() == start


# -------------------------------------------------------------------------------- log


async def test_log_has_one_flushed_line_per_received_submit(tmp_path: Path) -> None:
    log = tmp_path / "sim.jsonl"
    carrier = sim(f"sim://?fail=0.4&reject=0.2&seed=5&log={log}")
    results = [await outcome(carrier, sms(n, attempt=n % 3 + 1)) for n in range(30)]
    # read while the carrier is still open: every line is already in the file
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(lines) == 30
    assert [line["outcome"] for line in lines] == results
    for n, line in enumerate(lines):
        assert line["msgid"] == f"m{n}"
        assert line["phone"] == sms(n).phone
        assert line["appid"] == "app1"
        assert line["message_id"] == n
        assert line["attempt"] == n % 3 + 1
        assert line["time"] == WALL_MS
        if line["outcome"] == "accepted":
            assert line["carrier_msgid"] == line["part_ids"][0]
        else:
            assert line["carrier_msgid"] is None
            assert line["part_ids"] == []
    await carrier.aclose()


async def test_log_appends_across_carriers(tmp_path: Path) -> None:
    log = tmp_path / "sim.jsonl"
    for _ in range(2):
        carrier = sim(f"sim://?fail=0&log={log}")
        await carrier.submit(sms())
        await carrier.aclose()
    assert len(log.read_text().splitlines()) == 2


def test_log_survives_kill_9(tmp_path: Path) -> None:
    log = tmp_path / "sim.jsonl"
    script = textwrap.dedent(
        f"""
        import os, signal, trio
        from smsgw.carriers import open_carrier, OutboundSms

        async def main():
            carrier = open_carrier({f"sim://?fail=0&log={log}"!r})
            for n in range(7):
                await carrier.submit(OutboundSms(n, "a", f"m{{n}}", "+8613800000000", "t", 1, 1))
            os.kill(os.getpid(), signal.SIGKILL)

        trio.run(main)
        """
    )
    project = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(project)}
    result = subprocess.run([sys.executable, "-c", script], env=env, timeout=30, check=False)
    assert result.returncode == -signal.SIGKILL
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["msgid"] for line in lines] == [f"m{n}" for n in range(7)]


# --------------------------------------------------------------------------- shutdown


async def test_aclose_lets_in_flight_submits_finish(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    log = tmp_path / "sim.jsonl"
    carrier = sim(f"sim://?fail=0&latency=2&dlr_delay=none&log={log}")
    results: list[str] = []

    async def one(n: int) -> None:
        results.append(await outcome(carrier, sms(n)))

    async with trio.open_nursery() as nursery:
        for n in range(5):
            nursery.start_soon(one, n)
        await trio.sleep(0.5)
        start = trio.current_time()
        await carrier.aclose()
        assert trio.current_time() - start == pytest.approx(1.5)
    assert results == ["accepted"] * 5

    with pytest.raises(SubmitError) as caught:
        await carrier.submit(sms(9))
    assert caught.value.kind is SubmitErrorKind.THROTTLED
    assert caught.value.stat == "SIM_CLOSED"
    assert len(log.read_text().splitlines()) == 5
    await carrier.aclose()  # twice is fine


async def test_aclose_turns_away_submits_waiting_for_tps(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    log = tmp_path / "sim.jsonl"
    carrier = sim(f"sim://?fail=0&tps=1&dlr_delay=none&log={log}")
    results: list[str] = []

    async def one(n: int) -> None:
        results.append(await outcome(carrier, sms(n)))

    async with trio.open_nursery() as nursery:
        for n in range(5):
            nursery.start_soon(one, n)
        await trio.sleep(0.5)
        start = trio.current_time()
        await carrier.aclose()
        assert trio.current_time() == start
    assert sorted(results) == ["accepted"] + ["throttled"] * 4
    assert carrier.received == 1
    assert len(log.read_text().splitlines()) == 1


async def test_aclose_with_nothing_in_flight_is_immediate() -> None:
    carrier = sim("sim://?fail=0")
    await carrier.aclose()
    with pytest.raises(SubmitError, match="SIM_CLOSED"):
        await carrier.submit(sms())
