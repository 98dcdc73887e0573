"""End to end over SMPP, all real processes on loopback (issue 4):

    merchant (this test) --A001--> `smsgw serve` --SMPP--> the Node SMSC (tests/smsc)
    SMSC --deliver_sm receipt--> gateway --A002--> `smsgw listen` (tests/listen_process.py)

The SMSC's events say exactly what reached it (data_coding, esm_class, UDH, TLVs, one event
per submit_sm); the listener's output says what the merchant got. Texts are ASCII letters,
digits and punctuation whose GSM 03.38 septets equal their ASCII codes, so the expected bytes
are computed here without the gateway's own encoder.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

# APPID and SECRET are also taken from here by the other e2e tests against the SMSC.
from tests.e2e.delivery_support import APPID as APPID
from tests.e2e.delivery_support import SECRET as SECRET
from tests.e2e.delivery_support import now_ms
from tests.e2e.operator_support import (
    LONG_CHINESE,
    MIXED,
    PARTS,
    SHORT_CHINESE,
    SHORT_LATIN,
    GatewayDriver,
    Sms,
    assert_receipts,
    check_after_drop,
    merchant_and_gateway,
    stored_rows,
)
from tests.gateway_process import GatewayProcess, base_env, run_cli
from tests.http_client import http, scrape_until
from tests.listen_process import ListenProcess
from tests.smsc_process import ESME_ROK, ESME_RTHROTTLED, Event, Smsc, running_smsc

pytestmark = pytest.mark.e2e

GSM = 0x00  # data_coding: GSM 03.38 default alphabet, one septet a byte
UCS2 = 0x08
UDHI = 0x40  # esm_class: short_message starts with a User Data Header
GSM_PART = 153  # septets of text in one part of a concatenated message
UCS2_PART_OCTETS = 134  # 67 UCS-2 characters

# Short real timers: a lost bind comes back within ~0.5 s, a throttled bind pauses 0.1 s.
FAST_SMPP: dict[str, object] = {
    "reconnect_min": 0.1,
    "reconnect_max": 0.5,
    "response_timeout": 2,
    "bind_timeout": 2,
    "bind_wait": 5,
    "throttle_pause": 0.1,
    "enquire_link": 0,
}


@attrs.frozen
class Setup(GatewayDriver):
    smsc: Smsc
    merchant: ListenProcess
    gateway: GatewayProcess
    workdir: Path


def smpp_url(smsc: Smsc, **params: object) -> str:
    values = {**FAST_SMPP, **params}
    query = "&".join(f"{name}={value}" for name, value in values.items())
    return f"smpp://smsgw:secret@127.0.0.1:{smsc.port}?{query}"


@asynccontextmanager
async def smpp_gateway(
    tmp_path: Path,
    *,
    smsc_options: Mapping[str, Any] | None = None,
    carrier: Mapping[str, object] | None = None,
    env: Mapping[str, str] | None = None,
    links: int = 1,
) -> AsyncIterator[Setup]:
    """The SMSC, the merchant's `smsgw listen`, and `smsgw serve` between them, once the
    gateway has bound its `links` SMPP connections."""
    async with running_smsc(dlr_delay=0.02, **(smsc_options or {})) as smsc:
        carrier_url = smpp_url(smsc, **(carrier or {}))
        async with merchant_and_gateway(tmp_path, carrier_url, env) as (merchant, gateway, workdir):
            await smsc.wait_for_count("bind", links, timeout=10)
            yield Setup(smsc, merchant, gateway, workdir)


# -- reading what arrived ------------------------------------------------------------------


def submits_by_phone(smsc: Smsc) -> dict[str, list[Event]]:
    """The SMSC's submit_sm events per destination, in arrival order."""
    grouped: dict[str, list[Event]] = defaultdict(list)
    for event in smsc.events_of("submit_sm"):
        grouped[event["destination"]].append(event)
    return grouped


def short_message(event: Event) -> bytes:
    return bytes.fromhex(event["short_message"] or "")


def expected_octets(text: str) -> tuple[int, bytes]:
    """(data_coding, bytes) of a test text, computed without the gateway's encoder."""
    if text.isascii():
        return GSM, text.encode("ascii")
    return UCS2, text.encode("utf-16-be")


async def settle(smsc: Smsc, receipts: int) -> None:
    """Until the SMSC has had `receipts` deliver_sm acknowledged, then a moment more, so a
    duplicate A002 would have had time to arrive."""
    await smsc.wait_for_count("deliver_sm_resp", receipts, timeout=10)
    await trio.sleep(0.5)


# -- codings and long messages --------------------------------------------------------------


def check_short(events: list[Event], text: str) -> None:
    coding, octets = expected_octets(text)
    assert len(events) == 1
    (event,) = events
    assert event["data_coding"] == coding
    assert event["esm_class"] & UDHI == 0
    assert short_message(event) == octets
    assert "sar_msg_ref_num" not in event["tlvs"] and "message_payload" not in event["tlvs"]


def check_udh(events: list[Event], text: str) -> int:
    """The parts carry a concatenation UDH (IEI 0, 8-bit reference); returns the reference."""
    coding, octets = expected_octets(text)
    total = len(events)
    references: set[int] = set()
    body = b""
    for seq, event in enumerate(events, start=1):
        data = short_message(event)
        assert event["data_coding"] == coding
        assert event["esm_class"] & UDHI
        assert data[:3] == bytes([5, 0, 3]), data[:6].hex()  # UDHL 5, IEI 0, IEDL 3
        assert (data[4], data[5]) == (total, seq)
        references.add(data[3])
        part = data[6:]
        assert len(part) <= (GSM_PART if coding == GSM else UCS2_PART_OCTETS)
        if coding == UCS2:
            part.decode("utf-16-be")  # whole characters in every part
        body += part
    assert body == octets
    assert len(references) == 1
    return references.pop()


def check_sar(events: list[Event], text: str) -> int:
    """The parts carry the sar_* TLVs (16-bit reference) and no UDH; returns the reference."""
    coding, octets = expected_octets(text)
    total = len(events)
    references: set[int] = set()
    body = b""
    for seq, event in enumerate(events, start=1):
        tlvs = event["tlvs"]
        assert event["data_coding"] == coding
        assert event["esm_class"] & UDHI == 0
        assert (tlvs["sar_total_segments"], tlvs["sar_segment_seqnum"]) == (total, seq)
        references.add(tlvs["sar_msg_ref_num"])
        part = short_message(event)
        assert len(part) <= (GSM_PART if coding == GSM else UCS2_PART_OCTETS)
        body += part
    assert body == octets
    assert len(references) == 1
    return references.pop()


def check_payload(events: list[Event], text: str) -> None:
    """One submit_sm with the whole text in message_payload and an empty short_message."""
    coding, octets = expected_octets(text)
    assert len(events) == 1
    (event,) = events
    assert event["data_coding"] == coding
    assert event["esm_class"] & UDHI == 0
    assert short_message(event) == b""
    assert bytes.fromhex(event["tlvs"]["message_payload"]) == octets


@pytest.mark.parametrize("long", ["udh", "sar", "payload"])
async def test_codings_and_long_messages_end_to_end(tmp_path: Path, long: str) -> None:
    async with smpp_gateway(tmp_path, carrier={"long": long}) as setup:
        sent_after = await setup.submit(MIXED)
        receipts = await setup.receipts_for(len(MIXED))
        parts = sum(PARTS.values()) if long != "payload" else len(MIXED)
        await settle(setup.smsc, parts)

        by_phone = submits_by_phone(setup.smsc)
        assert sorted(by_phone) == sorted(sms.phone for sms in MIXED)
        references = []
        for sms in MIXED:
            events = by_phone[sms.phone]
            assert all(event["status"] == ESME_ROK for event in events)
            assert all(event["registered_delivery"] == 1 for event in events)
            assert all(event["dest_ton"] == 1 and event["dest_npi"] == 1 for event in events)
            if PARTS[sms.msgid] == 1:
                check_short(events, sms.text)
            elif long == "payload":
                check_payload(events, sms.text)
            else:
                assert len(events) == PARTS[sms.msgid], sms.msgid
                check = check_udh if long == "udh" else check_sar
                references.append(check(events, sms.text))
        # Two long messages in flight together must not share a concatenation reference.
        assert len(set(references)) == len(references)

        assert_receipts(
            receipts, {sms.key: ("1", "DELIVRD") for sms in MIXED}, sent_after_ms=sent_after
        )


async def test_undelivered_reports_fail_the_message(tmp_path: Path) -> None:
    async with smpp_gateway(tmp_path) as setup:
        smsc = setup.smsc
        expected: dict[tuple[str, str], tuple[str, str]] = {}
        sent_after = now_ms()

        # One short message, the SMSC reports it undelivered.
        await smsc.dlr("UNDELIV", n=1)
        short = Sms("undeliv-short", "8613800138011", SHORT_LATIN, msgtype=2)
        await setup.submit([short])
        expected[short.key] = ("2", "UNDELIV")
        await setup.receipts_for(len(expected))

        # A long message whose middle part alone is undelivered: the message failed.
        await smsc.dlr("DELIVRD", n=1)
        await smsc.dlr("UNDELIV", n=1)
        long = Sms("undeliv-long", "8613800138012", LONG_CHINESE)
        await setup.submit([long])
        expected[long.key] = ("2", "UNDELIV")
        await setup.receipts_for(len(expected))

        # Expired is a failure as well, reported with the operator's word.
        await smsc.dlr("EXPIRED", n=1)
        expired = Sms("expired", "8613800138013", SHORT_CHINESE)
        await setup.submit([expired])
        expected[expired.key] = ("2", "EXPIRED")
        receipts = await setup.receipts_for(len(expected))

        await settle(smsc, 1 + 3 + 1)
        reported = sorted((int(e["message_id"]), e["stat"]) for e in smsc.events_of("deliver_sm"))
        assert [stat for _, stat in reported] == [
            "UNDELIV", "DELIVRD", "UNDELIV", "DELIVRD", "EXPIRED"
        ]  # fmt: skip
        assert_receipts(receipts, expected, sent_after_ms=sent_after)
        # No retry after an operator's final "undelivered": one submit per part.
        by_phone = submits_by_phone(smsc)
        assert [len(by_phone[sms.phone]) for sms in (short, long, expired)] == [1, 3, 1]


# -- throttling -----------------------------------------------------------------------------


async def test_throttled_submits_are_delivered_without_consuming_attempts(tmp_path: Path) -> None:
    throttled = 6
    messages = [
        Sms(f"thr{n}", f"86138001390{n:02d}", f"Throttle check {n}", msgtype=1 + n % 2)
        for n in range(10)
    ]
    # No retries at all: a throttle that cost an attempt would fail the message.
    async with smpp_gateway(tmp_path, env={"SMSGW_MAX_RETRIES": "0"}) as setup:
        await setup.smsc.throttle(throttled)
        sent_after = await setup.submit(messages)
        receipts = await setup.receipts_for(len(messages))
        await settle(setup.smsc, len(messages))
        assert_receipts(
            receipts, {sms.key: ("1", "DELIVRD") for sms in messages}, sent_after_ms=sent_after
        )
        statuses = Counter(event["status"] for event in setup.smsc.events_of("submit_sm"))
        assert statuses == {ESME_RTHROTTLED: throttled, ESME_ROK: len(messages)}
    rows = stored_rows(setup.workdir)
    assert {msgid: row[:2] for msgid, row in rows.items()} == {
        sms.msgid: ("delivered", 1) for sms in messages
    }
    uri = f"file:{setup.workdir / 'smsgw.db'}?mode=ro"
    with sqlite3.connect(uri, uri=True) as db:
        (recorded,) = db.execute(
            "select count(*) from events where kind = 'attempt_failed' and stat = ?",
            ("ESME_RTHROTTLED",),
        ).fetchone()
    assert recorded == throttled


# -- a link killed mid-run ------------------------------------------------------------------


def marker_of(event: Event) -> str:
    """The msgid a drop-test text ends with."""
    return short_message(event).decode("ascii").rsplit(" ", 1)[-1]


async def test_link_dropped_mid_run_loses_nothing_and_never_resends_codes(
    tmp_path: Path,
) -> None:
    count = 300
    messages = [
        Sms(f"d{n:03d}", f"8613900{n:06d}", f"Link drop check d{n:03d}", msgtype=1 + n % 2)
        for n in range(count)
    ]
    # 20 ms per submit_sm_resp keeps the window full: a drop catches about 10 in flight.
    async with smpp_gateway(tmp_path, smsc_options={"latency": 0.02}) as setup:
        smsc = setup.smsc
        sent_after = now_ms()
        for start in range(0, count, 100):
            await setup.submit(messages[start : start + 100])
        await smsc.wait_for_count("submit_sm", count // 3, timeout=10)
        assert await smsc.drop() == 1
        receipts = await setup.receipts_for(count, timeout=30)
        await trio.sleep(0.5)  # time for a duplicate A002 to show up
        receipts = setup.merchant.receipts()

        binds = [event for event in smsc.events_of("bind") if event["ok"]]
        assert len(binds) >= 2, "the gateway did not bind again after the drop"
        submits = Counter(marker_of(event) for event in smsc.events_of("submit_sm"))

    check_after_drop(messages, submits, receipts, workdir=setup.workdir, sent_after=sent_after)


# -- several binds --------------------------------------------------------------------------


@pytest.mark.parametrize("bind", ["trx", "tx+rx"])
async def test_two_binds_are_both_used(tmp_path: Path, bind: str) -> None:
    messages = [Sms(f"b{n}", f"86137000{n:05d}", f"Two binds {n}") for n in range(40)]
    links = 2 if bind == "trx" else 4
    async with smpp_gateway(
        tmp_path,
        carrier={"binds": 2, "bind": bind},
        links=links,
        env={"SMSGW_METRICS": "127.0.0.1:0"},
    ) as setup:
        sent_after = await setup.submit(messages)
        receipts = await setup.receipts_for(len(messages))
        await settle(setup.smsc, len(messages))
        metrics_port = await setup.gateway.metrics_port()
        assert (await http(metrics_port, "GET", "/healthz")).status == 200
        done = ("smsgw_push_items_done_total", (("appid", APPID),))
        # The merchant printed the items; its answers may still be on their way.
        scraped = await scrape_until(metrics_port, lambda found: found.get(done) == len(messages))
        assert scraped[("smsgw_carrier_binds", ())] == 2
        assert scraped[("smsgw_carrier_binds_up", ())] == 2
        assert scraped[("smsgw_pipeline_submits_total", ())] == len(messages)
        assert scraped[("smsgw_submit_seconds_count", ())] == len(messages)
        assert scraped[("smsgw_pipeline_reports_total", ())] == len(messages)
        assert_receipts(
            receipts, {sms.key: ("1", "DELIVRD") for sms in messages}, sent_after_ms=sent_after
        )
        binds = [event for event in setup.smsc.events_of("bind") if event["ok"]]
        transmitting = {e["session"] for e in binds if e["mode"] in ("transceiver", "transmitter")}
        receiving = {e["session"] for e in binds if e["mode"] in ("transceiver", "receiver")}
        assert len(transmitting) == 2 and len(receiving) == 2
        per_session = Counter(event["session"] for event in setup.smsc.events_of("submit_sm"))
        assert set(per_session) == transmitting
        assert min(per_session.values()) >= len(messages) // 4, per_session
        assert {event["session"] for event in setup.smsc.events_of("deliver_sm")} <= receiving


# -- replies from handsets ----------------------------------------------------------------------


async def test_mobile_originated_messages_are_stored_and_listed(tmp_path: Path) -> None:
    replies = [
        ("8613812345678", "10690000", "回复TD退订", UCS2),
        ("8613912345678", "10690001", "STOP", GSM),
    ]
    async with smpp_gateway(tmp_path) as setup:
        for source, destination, text, coding in replies:
            await setup.smsc.mo(source, destination, text, data_coding=coding)
        answered = await setup.smsc.wait_for_count("deliver_sm_resp", len(replies), timeout=10)
        assert [event["status"] for event in answered] == [ESME_ROK] * len(replies)
        # Answered ESME_ROK only once stored: listed at once, no waiting.
        env = base_env(setup.workdir, {})
        listed = await run_cli(["inbox"], env)
        assert listed.returncode == 0, listed.stderr
        lines = [json.loads(line) for line in listed.stdout.decode().splitlines()]
        assert len(lines) == len(replies), lines
    # Newest first; still there once the gateway has stopped.
    after = await run_cli(["inbox", "--limit", "1"], env)
    assert [json.loads(line)["text"] for line in after.stdout.decode().splitlines()] == ["STOP"]
    assert [
        (m["from"], m["to"], m["text"], m["extra"]["data_coding"]) for m in reversed(lines)
    ] == replies
    assert all(m["extra"]["udh"] == "" and m["received_at"] > 0 for m in lines)
    assert all((m["carrier"], m["protocol"], m["concat"]) == ("smpp", "smpp", None) for m in lines)
    refused = await run_cli(["inbox", "--limit", "0"], env)
    assert refused.returncode == 2 and b"--limit" in refused.stderr


async def test_an_mo_answered_ok_survives_kill_9(tmp_path: Path) -> None:
    """deliver_sm_resp ESME_ROK only after the store's commit: a gateway killed mid-flow has
    every MO the SMSC saw acknowledged."""
    texts = [f"reply {n:03d}" for n in range(150)]
    async with smpp_gateway(tmp_path) as setup:
        for text in texts:
            await setup.smsc.mo("8613812345678", "10690000", text, data_coding=GSM)
        await setup.smsc.wait_for_count("deliver_sm_resp", 30, timeout=10)
        setup.gateway.kill()
        await setup.gateway.process.wait()
        sent = {
            (event["session"], event["seq"]): bytes.fromhex(event["short_message"]).decode()
            for event in setup.smsc.events_of("deliver_sm")
        }
        acknowledged = {
            sent[(event["session"], event["seq"])]
            for event in setup.smsc.events_of("deliver_sm_resp")
            if event["status"] == ESME_ROK
        }
    listed = await run_cli(["inbox", "--limit", "1000"], base_env(setup.workdir, {}))
    stored = {json.loads(line)["text"] for line in listed.stdout.decode().splitlines()}
    assert len(acknowledged) >= 30
    assert acknowledged <= stored, sorted(acknowledged - stored)
