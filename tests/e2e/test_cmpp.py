"""End to end over CMPP, the real gateway process on loopback (issue 8):

    merchant (this test) --A001--> `smsgw serve` --CMPP--> the ISMG simulator (tests/ismg)
    ISMG --DELIVER report--> gateway --A002--> `smsgw listen` (tests/listen_process.py)

The ISMG runs in this test's process and listens on a real port; its events say what reached
it (each SUBMIT's fields, and each whole message once all its parts have come). Both CMPP
versions; ASCII and long Chinese text; flow control; a link dropped mid-load; MOs.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from tests.e2e.delivery_support import now_ms, query
from tests.e2e.operator_support import (
    MIXED,
    PARTS,
    SHORT_LATIN,
    GatewayDriver,
    Sms,
    assert_receipts,
    check_after_drop,
    merchant_and_gateway,
    stored_rows,
)
from tests.gateway_process import GatewayProcess, base_env, run_cli
from tests.ismg import DEFAULT_SECRET, DEFAULT_SP_ID, Ismg, running_ismg
from tests.listen_process import ListenProcess

pytestmark = pytest.mark.e2e

SRC_ID = "1069001"

# Short real timers: a lost connection comes back within ~0.5 s, flow control pauses 0.1 s.
FAST_CMPP: dict[str, object] = {
    "reconnect_min": 0.1,
    "reconnect_max": 0.5,
    "response_timeout": 2,
    "bind_timeout": 2,
    "bind_wait": 5,
    "throttle_pause": 0.1,
    "active_test": 0,
}


@attrs.frozen
class Setup(GatewayDriver):
    ismg: Ismg
    merchant: ListenProcess
    gateway: GatewayProcess
    workdir: Path


def cmpp_url(ismg: Ismg, **params: object) -> str:
    values = {"src_id": SRC_ID, **FAST_CMPP, **params}
    query_string = "&".join(f"{name}={value}" for name, value in values.items())
    return f"cmpp://{DEFAULT_SP_ID}:{DEFAULT_SECRET}@127.0.0.1:{ismg.port}?{query_string}"


@asynccontextmanager
async def cmpp_gateway(
    tmp_path: Path,
    *,
    ismg_options: Mapping[str, Any] | None = None,
    carrier: Mapping[str, object] | None = None,
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[Setup]:
    """The ISMG, the merchant's `smsgw listen`, and `smsgw serve` between them, once the
    gateway has logged in."""
    async with running_ismg(**(ismg_options or {})) as ismg:
        carrier_url = cmpp_url(ismg, **(carrier or {}))
        async with merchant_and_gateway(tmp_path, carrier_url, env) as (merchant, gateway, workdir):
            await ismg.next_event("login", timeout=10, status=0)
            yield Setup(ismg, merchant, gateway, workdir)


async def settle(ismg: Ismg, reports: int) -> None:
    """Until the ISMG has had `reports` DELIVERs answered Result 0, then a moment more, so a
    duplicate A002 would have had time to arrive."""
    await ismg.log.wait_for_count("deliver_resp", reports, timeout=10)
    await trio.sleep(0.5)


# -- codings and long messages --------------------------------------------------------------


@pytest.mark.parametrize("version", ["3.0", "2.0"])
async def test_ascii_and_long_chinese_text_in_both_versions(tmp_path: Path, version: str) -> None:
    async with cmpp_gateway(tmp_path, carrier={"version": version}) as setup:
        sent_after = now_ms()
        await setup.submit(MIXED)
        receipts = await setup.receipts_for(len(MIXED))
        await settle(setup.ismg, sum(PARTS.values()))
        ismg = setup.ismg
        logins = ismg.events_of("login")
        assert {event["version"] for event in logins} == {version}

        submits = ismg.events_of("submit")
        assert len(submits) == sum(PARTS.values())
        assert all(event["result"] == 0 and event["version"] == version for event in submits)
        assert {(e["msg_src"], e["src_id"], e["registered_delivery"]) for e in submits} == {
            (DEFAULT_SP_ID, SRC_ID, 1)
        }
        by_phone: dict[str, list[dict[str, Any]]] = {}
        for event in submits:
            (phone,) = event["dests"]
            by_phone.setdefault(phone, []).append(event)
        for sms in MIXED:
            parts = by_phone[sms.phone]
            assert len(parts) == PARTS[sms.msgid], sms.msgid
            assert [(p["pk_total"], p["pk_number"]) for p in parts] == [
                (len(parts), n) for n in range(1, len(parts) + 1)
            ]
            assert {p["tp_udhi"] for p in parts} == {int(len(parts) > 1)}
            assert {p["msg_fmt"] for p in parts} == {0 if sms.text.isascii() else 8}
        # What the handset gets: each text whole, put together from its parts.
        messages = {tuple(event["dests"]): event["text"] for event in ismg.events_of("message")}
        assert messages == {(sms.phone,): sms.text for sms in MIXED}

        assert_receipts(
            receipts, {sms.key: ("1", "DELIVRD") for sms in MIXED}, sent_after_ms=sent_after
        )


async def test_an_undelivered_stat_is_kept_verbatim(tmp_path: Path) -> None:
    async with cmpp_gateway(tmp_path) as setup:
        await setup.ismg.report("MK:0005")
        sms = Sms("mk", "8613800138021", SHORT_LATIN)
        sent_after = now_ms()
        await setup.submit([sms])
        receipts = await setup.receipts_for(1)
        await settle(setup.ismg, 1)
        assert_receipts(receipts, {sms.key: ("2", "MK:0005")}, sent_after_ms=sent_after)


# -- flow control ---------------------------------------------------------------------------


async def test_flow_control_is_retried_without_consuming_attempts(tmp_path: Path) -> None:
    throttled = 6
    messages = [
        Sms(f"thr{n}", f"86138001390{n:02d}", f"Throttle check {n}", msgtype=1 + n % 2)
        for n in range(10)
    ]
    # No retries at all: a Result 8 that cost an attempt would fail the message.
    async with cmpp_gateway(tmp_path, env={"SMSGW_MAX_RETRIES": "0"}) as setup:
        await setup.ismg.throttle(throttled)
        sent_after = now_ms()
        await setup.submit(messages)
        receipts = await setup.receipts_for(len(messages))
        await settle(setup.ismg, len(messages))
        assert_receipts(
            receipts, {sms.key: ("1", "DELIVRD") for sms in messages}, sent_after_ms=sent_after
        )
        results = Counter(event["result"] for event in setup.ismg.events_of("submit"))
        assert results == {8: throttled, 0: len(messages)}
    rows = stored_rows(setup.workdir)
    assert {msgid: row[:2] for msgid, row in rows.items()} == {
        sms.msgid: ("delivered", 1) for sms in messages
    }
    recorded = query(
        setup.workdir / "smsgw.db",
        "select count(*) from events where kind = 'attempt_failed' and stat = ?",
        "CMPP_RESULT_8",
    )
    assert recorded == [(throttled,)]


# -- a link killed mid-load -----------------------------------------------------------------


async def test_link_dropped_mid_load_loses_nothing_and_never_resends_codes(
    tmp_path: Path,
) -> None:
    count = 300
    messages = [
        Sms(f"d{n:03d}", f"8613900{n:06d}", f"Link drop check d{n:03d}", msgtype=1 + n % 2)
        for n in range(count)
    ]
    # 20 ms per SUBMIT_RESP keeps the window full: a drop catches about 16 in flight.
    async with cmpp_gateway(tmp_path, ismg_options={"latency": 0.02}) as setup:
        ismg = setup.ismg
        sent_after = now_ms()
        for start in range(0, count, 100):
            await setup.submit(messages[start : start + 100])
        await ismg.wait_for_count("submit", count // 3, timeout=10)
        assert await ismg.drop() == 1
        await setup.receipts_for(count, timeout=30)
        await trio.sleep(0.5)  # time for a duplicate A002 to show up
        receipts = setup.merchant.receipts()
        logins = [event for event in ismg.events_of("login") if event["status"] == 0]
        assert len(logins) >= 2, "the gateway did not log in again after the drop"
        # Every SUBMIT that reached the ISMG, by the msgid its text ends with.
        submits = Counter(event["text"].rsplit(" ", 1)[-1] for event in ismg.events_of("message"))

    check_after_drop(messages, submits, receipts, workdir=setup.workdir, sent_after=sent_after)


# -- replies from handsets ------------------------------------------------------------------


async def test_mobile_originated_messages_are_stored_and_listed(tmp_path: Path) -> None:
    replies = [
        ("13812345678", "106900123", "回复TD退订"),
        ("13912345678", "106900124", "STOP"),
        ("13712345678", "106900125", "很长的回复" * 20),  # 100 characters: two parts
    ]
    async with cmpp_gateway(tmp_path) as setup:
        for source, destination, text in replies:
            await setup.ismg.mo(source, text, destination=destination)
        answered = await setup.ismg.wait_for_count("deliver_resp", 4, timeout=10)
        assert [event["result"] for event in answered] == [0] * 4
        # Answered Result 0 only once stored: listed at once, no waiting.
        env = base_env(setup.workdir, {})
        listed = await run_cli(["inbox", "--limit", "10"], env)
        assert listed.returncode == 0, listed.stderr
        lines = [json.loads(line) for line in listed.stdout.decode().splitlines()]
    stored = [(m["from"], m["to"], m["text"]) for m in reversed(lines)]
    long_source, long_destination, long_text = replies[2]
    # A long MO is stored a part at a time (the gateway keeps MOs as they come).
    assert stored[:2] == replies[:2]
    assert stored[2:] == [
        (long_source, long_destination, long_text[:67]),
        (long_source, long_destination, long_text[67:]),
    ]
    assert {(m["carrier"], m["protocol"]) for m in lines} == {("cmpp", "cmpp")}
    assert [m["extra"]["msg_fmt"] for m in reversed(lines)] == [8, 0, 8, 8]
    assert [bool(m["extra"]["udh"]) for m in reversed(lines)] == [False, False, True, True]
    concats = [m["concat"] for m in reversed(lines)]
    assert concats[:2] == [None, None]
    assert [(c["total"], c["seq"]) for c in concats[2:]] == [(2, 1), (2, 2)]
    assert concats[2]["reference"] == concats[3]["reference"]
