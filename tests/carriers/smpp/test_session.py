"""The SMPP carrier against the real Node SMSC (tests/smsc, driven by tests/smsc_process.py).

Real loopback sockets, so real (short) timeouts: no autojump clock here. The timing-sensitive
cases (timeouts to the millisecond, malformed PDUs) are in test_session_fake.py.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from smsgw.carriers.base import MobileOriginated, SubmitErrorKind
from smsgw.carriers.link.pool import LinkSubmitError
from smsgw.carriers.smpp.carrier import (
    STAT_CLOSED,
    STAT_LINK_LOST,
    STAT_NO_BIND,
    STAT_TIMEOUT,
    SmppCarrier,
)
from smsgw.encoding import decode_text
from tests.smsc_process import Event, Smsc, running_smsc

from .fake_smsc import sms

CHINESE = "您的验证码是四八二九，请在五分钟内输入。"  # 20 characters
LATIN = "".join(chr(ord("a") + n % 26) for n in range(330))  # 3 GSM segments

# Short timers so that every test ends within a few seconds.
FAST = {
    "reconnect_min": 0.05,
    "reconnect_max": 0.5,
    "response_timeout": 2,
    "bind_timeout": 2,
    "bind_wait": 3,
    "enquire_link": 0,
}


@asynccontextmanager
async def carrier_for(
    smsc: Smsc, *, bound: bool = True, **params: Any
) -> AsyncIterator[SmppCarrier]:
    settings = {**FAST, **params}
    query = "&".join(f"{name}={value}" for name, value in settings.items())
    carrier = SmppCarrier.from_url(f"smpp://smsgw:secret@127.0.0.1:{smsc.port}?{query}")
    async with trio.open_nursery() as nursery:
        await nursery.start(carrier.run)
        if bound:
            with trio.fail_after(5):
                await carrier.wait_bound()
        try:
            yield carrier
        finally:
            nursery.cancel_scope.cancel()


async def failure(carrier: SmppCarrier, n: int = 1, text: str = "hello") -> LinkSubmitError:
    with pytest.raises(LinkSubmitError) as caught:
        await carrier.submit(sms(n, text))
    return caught.value


def udh_and_body(event: Event) -> tuple[bytes, bytes]:
    data = bytes.fromhex(event["short_message"])
    if event["esm_class"] & 0x40:
        return data[: data[0] + 1], data[data[0] + 1 :]
    return b"", data


# -- binding and what the SMSC receives ----------------------------------------------------


async def test_transceiver_bind_and_short_messages() -> None:
    async with running_smsc() as smsc, carrier_for(smsc, source_addr="Shop") as carrier:
        bind = await smsc.next_event("bind")
        assert (bind["mode"], bind["ok"], bind["system_id"]) == ("transceiver", True, "smsgw")
        assert bind["interface_version"] == 0x34

        gsm = await carrier.submit(sms(1, "Hello {you} €5"))
        event = await smsc.next_event("submit_sm")
        assert (event["data_coding"], event["esm_class"]) == (0, 0)
        assert bytes.fromhex(event["short_message"]) == b"Hello \x1b(you\x1b) \x1be5"
        assert (event["destination"], event["dest_ton"], event["dest_npi"]) == (
            "8613800000001",
            1,
            1,
        )
        assert (event["source"], event["source_ton"]) == ("Shop", 5)
        assert event["registered_delivery"] == 1
        assert gsm.part_ids == (event["message_id"],) and gsm.carrier_msgid == event["message_id"]

        ucs2 = await carrier.submit(sms(2, CHINESE))
        event = await smsc.next_event("submit_sm")
        assert (event["data_coding"], event["esm_class"], event["tlvs"]) == (8, 0, {})
        assert bytes.fromhex(event["short_message"]).decode("utf-16-be") == CHINESE
        assert ucs2.part_ids == (event["message_id"],)


async def test_transmitter_and_receiver_binds() -> None:
    async with (
        running_smsc() as smsc,
        carrier_for(smsc, bind="tx%2Brx") as carrier,
    ):
        modes = {(await smsc.next_event("bind"))["mode"] for _ in range(2)}
        assert modes == {"transmitter", "receiver"}
        accepted = await carrier.submit(sms())
        with trio.fail_after(5):
            report = await carrier.reports().receive()
        assert report.carrier_msgid == accepted.carrier_msgid and report.delivered
        stats = await smsc.stats()
        assert (stats["sessions"], stats["bound"], stats["deliver_sm_ok"]) == (2, 2, 1)


@pytest.mark.parametrize("long", ["udh", "sar", "payload"])
@pytest.mark.parametrize("text, coding", [(LATIN, 0), (CHINESE * 8, 8)], ids=["latin", "chinese"])
async def test_long_messages(long: str, text: str, coding: int) -> None:
    async with running_smsc() as smsc, carrier_for(smsc, long=long) as carrier:
        accepted = await carrier.submit(sms(1, text))
        parts = 1 if long == "payload" else 3
        events = await smsc.wait_for_count("submit_sm", parts)
        assert len(events) == parts
        assert accepted.part_ids == tuple(event["message_id"] for event in events)
        assert accepted.carrier_msgid == events[0]["message_id"]
        assert {event["data_coding"] for event in events} == {coding}
        if long == "payload":
            (event,) = events
            assert event["short_message"] == ""
            payload = bytes.fromhex(event["tlvs"]["message_payload"])
            assert decode_text(payload, coding) == text
            return
        bodies = []
        references = set()
        for seq, event in enumerate(events, start=1):
            udh, body = udh_and_body(event)
            bodies.append(body)
            if long == "udh":
                assert event["esm_class"] == 0x40
                assert udh[:3] == bytes((5, 0, 3)) and udh[4:] == bytes((3, seq))
                references.add(udh[3])
                assert event["tlvs"] == {}
            else:
                assert (event["esm_class"], udh) == (0, b"")
                tlvs = event["tlvs"]
                assert (tlvs["sar_total_segments"], tlvs["sar_segment_seqnum"]) == (3, seq)
                references.add(tlvs["sar_msg_ref_num"])
        assert len(references) == 1  # one reference for every part of the message
        assert decode_text(b"".join(bodies), coding) == text

        # The next message gets another reference.
        await carrier.submit(sms(2, text))
        nxt = (await smsc.wait_for_count("submit_sm", 2 * parts))[parts]
        if long == "udh":
            assert udh_and_body(nxt)[0][3] not in references
        else:
            assert nxt["tlvs"]["sar_msg_ref_num"] not in references


async def test_several_binds_share_the_submits() -> None:
    async with (
        running_smsc(latency=0.2) as smsc,
        carrier_for(smsc, binds=2, window=2) as carrier,
    ):
        async with trio.open_nursery() as nursery:
            for n in range(8):
                nursery.start_soon(carrier.submit, sms(n))
        events = smsc.events_of("submit_sm")
        assert len(events) == 8
        assert len({event["session"] for event in events}) == 2
        assert all(session.max_in_flight == 2 for session in carrier.sessions)


# -- window, throttling, refusals ----------------------------------------------------------


async def test_window_is_never_exceeded() -> None:
    async with (
        running_smsc(latency=0.1) as smsc,
        carrier_for(smsc, window=3, response_timeout=0.6) as carrier,
    ):
        ids: list[str] = []

        async def submit(n: int) -> None:
            ids.append((await carrier.submit(sms(n))).carrier_msgid)

        async with trio.open_nursery() as nursery:
            for n in range(12):
                nursery.start_soon(submit, n)
        assert len(set(ids)) == 12
        assert carrier.sessions[0].max_in_flight == 3

        # The SMSC's view: with nothing answered, exactly `window` submits reach it.
        await smsc.silent()
        async with trio.open_nursery() as nursery:
            for n in range(6):
                nursery.start_soon(failure, carrier, n)
            await trio.sleep(0.4)
            assert (await smsc.stats())["submit_unanswered"] == 3
        stats = await smsc.stats()
        assert (stats["submit_sm"], stats["submit_unanswered"]) == (18, 6)


async def test_throttled_submit_and_the_bind_slows_down() -> None:
    async with (
        running_smsc() as smsc,
        carrier_for(smsc, tps=20, throttle_pause=0.5) as carrier,
    ):
        await smsc.throttle(1)
        error = await failure(carrier)
        assert (error.kind, error.stat) == (SubmitErrorKind.THROTTLED, "ESME_RTHROTTLED")
        throttled_at = trio.current_time()
        pacer = carrier.sessions[0].pacer
        assert pacer.rate == 10 and pacer.slowed
        await carrier.submit(sms(2))
        assert trio.current_time() - throttled_at >= 0.45
        start = trio.current_time()
        for n in range(3):
            await carrier.submit(sms(3 + n))
        assert trio.current_time() - start >= 0.2 - 0.01  # 1/10 s apart, no longer 1/20
        assert (await smsc.stats())["submit_throttled"] == 1


@pytest.mark.parametrize(
    "status, kind",
    [
        ("ESME_RSYSERR", SubmitErrorKind.TEMPORARY),
        ("ESME_RX_T_APPN", SubmitErrorKind.TEMPORARY),
        ("ESME_RINVDSTADR", SubmitErrorKind.PERMANENT),
        ("ESME_RINVSRCADR", SubmitErrorKind.PERMANENT),
        ("ESME_RX_R_APPN", SubmitErrorKind.PERMANENT),
        ("ESME_RMSGQFUL", SubmitErrorKind.THROTTLED),
        (0x401, SubmitErrorKind.TEMPORARY),
    ],
)
async def test_refusals_follow_the_table(status: str | int, kind: SubmitErrorKind) -> None:
    async with running_smsc() as smsc, carrier_for(smsc, throttle_pause=0) as carrier:
        await smsc.fail(status)
        error = await failure(carrier)
        expected_stat = status if isinstance(status, str) else f"0x{status:08X}"
        assert (error.kind, error.stat) == (kind, expected_stat)
        assert (await carrier.submit(sms(2))).carrier_msgid  # the bind is still fine


async def test_later_part_refused_after_the_first_was_accepted() -> None:
    async with running_smsc() as smsc, carrier_for(smsc) as carrier:
        await smsc.command({"cmd": "fail", "status": "ESME_ROK", "n": 1})
        await smsc.fail("ESME_RSUBMITFAIL")
        error = await failure(carrier, text=LATIN)
        first = (await smsc.next_event("submit_sm"))["message_id"]
        assert (error.kind, error.stat) == (SubmitErrorKind.TEMPORARY, "ESME_RSUBMITFAIL")
        assert error.accepted_part_ids == (first,)
        assert smsc.count("submit_sm") == 2  # the third part was not sent


# -- link trouble --------------------------------------------------------------------------


async def test_silent_smsc_is_in_doubt_after_the_response_timeout() -> None:
    async with running_smsc() as smsc, carrier_for(smsc, response_timeout=0.5) as carrier:
        await smsc.silent()
        start = trio.current_time()
        error = await failure(carrier)
        assert (error.kind, error.stat) == (SubmitErrorKind.IN_DOUBT, STAT_TIMEOUT)
        assert 0.45 <= trio.current_time() - start <= 1.5
        await smsc.silent(False)
        assert (await carrier.submit(sms(2))).carrier_msgid


async def test_dropped_link_fails_in_flight_in_doubt_and_rebinds() -> None:
    async with running_smsc() as smsc, carrier_for(smsc, response_timeout=5) as carrier:
        await smsc.silent()
        failures: list[LinkSubmitError] = []

        async def submit(n: int) -> None:
            failures.append(await failure(carrier, n))

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(submit, 1)
            nursery.start_soon(submit, 2)
            await smsc.wait_for_count("submit_sm", 2)
            await smsc.silent(False)
            assert await smsc.drop() == 1
        assert [(f.kind, f.stat) for f in failures] == [
            (SubmitErrorKind.IN_DOUBT, STAT_LINK_LOST)
        ] * 2
        assert trio.current_time() - start < 2  # at once, not after the 5 s response timeout
        await smsc.wait_for_count("bind", 2)
        with trio.fail_after(5):
            await carrier.wait_bound()
        assert (await carrier.submit(sms(3))).carrier_msgid
        assert carrier.sessions[0].binds == 2


async def test_enquire_link_keeps_the_link_both_ways() -> None:
    async with (
        running_smsc(enquire_link=0.2) as smsc,
        carrier_for(smsc, enquire_link=0.2, response_timeout=0.5) as carrier,
    ):
        await trio.sleep(1.3)
        stats = await smsc.stats()
        assert stats["enquire_link"] >= 4  # ours, answered by the SMSC
        assert stats["enquire_link_resp"] >= 4  # the SMSC's, answered by us
        assert (stats["disconnects"], stats["binds"]) == (0, 1)
        assert carrier.sessions[0].bound
        assert (await carrier.submit(sms())).carrier_msgid


async def test_bind_failures_are_logged_and_retried(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "smsgw.carriers.smpp")
    async with running_smsc() as smsc:
        await smsc.command({"cmd": "bindfail", "n": 2})
        async with carrier_for(smsc, bound=False, bind_wait=0.01) as carrier:
            error = await failure(carrier)
            assert (error.kind, error.stat) == (SubmitErrorKind.TEMPORARY, STAT_NO_BIND)
            with trio.fail_after(5):
                await carrier.wait_bound()
            binds = smsc.events_of("bind")
            assert [bind["ok"] for bind in binds] == [False, False, True]
            assert (await carrier.submit(sms())).carrier_msgid
    lines = [record.getMessage() for record in caplog.records]
    refused = [line for line in lines if "bind failed" in line]
    assert len(refused) == 2
    assert all("ESME_RBINDFAIL" in line and "retrying in" in line for line in refused)
    assert not any("secret" in line for line in lines)


async def test_wrong_password_never_binds() -> None:
    async with (
        running_smsc(password="other") as smsc,
        carrier_for(smsc, bound=False, bind_wait=0.5) as carrier,
    ):
        error = await failure(carrier)
        assert (error.kind, error.stat) == (SubmitErrorKind.TEMPORARY, STAT_NO_BIND)
        assert smsc.count("bind") >= 2
        assert all(not bind["ok"] for bind in smsc.events_of("bind"))


async def test_aclose_unbinds() -> None:
    async with running_smsc() as smsc, carrier_for(smsc) as carrier:
        await carrier.submit(sms())
        with trio.fail_after(5):
            await carrier.aclose()
        await smsc.next_event("unbind")
        late = await failure(carrier, 2)
        assert (late.kind, late.stat) == (SubmitErrorKind.THROTTLED, STAT_CLOSED)
        await trio.sleep(0.3)
        assert smsc.count("bind") == 1  # no rebind after a graceful close


# -- receipts and MOs ----------------------------------------------------------------------


async def test_receipts_carry_the_submit_ids() -> None:
    # A quirky SMSC: hex ids, and receipt texts that print them in decimal.
    async with (
        running_smsc(id_style="hex", id_start=0xFFF0, receipt_id="decimal") as smsc,
        carrier_for(smsc) as carrier,
    ):
        await smsc.dlr("UNDELIV", 1)
        first = await carrier.submit(sms(1))
        second = await carrier.submit(sms(2, LATIN))
        assert first.carrier_msgid == "0000fff0"
        part_ids = [*first.part_ids, *second.part_ids]
        reports = []
        with trio.fail_after(5):
            for _ in part_ids:
                reports.append(await carrier.reports().receive())
        by_id = {carrier.normalize_id(report.carrier_msgid): report for report in reports}
        assert set(by_id) == {carrier.normalize_id(part) for part in part_ids}
        undelivered = by_id[carrier.normalize_id(first.carrier_msgid)]
        assert (undelivered.delivered, undelivered.stat, undelivered.error) == (
            False,
            "UNDELIV",
            "err:001",
        )
        for part in second.part_ids:
            report = by_id[carrier.normalize_id(part)]
            assert (report.delivered, report.stat, report.error) == (True, "DELIVRD", None)
        await smsc.wait_for_count("deliver_sm_resp", 4)
        assert all(event["status"] == 0 for event in smsc.events_of("deliver_sm_resp"))


async def test_mo_reaches_the_mo_channel() -> None:
    async with running_smsc() as smsc, carrier_for(smsc) as carrier:
        channel = carrier.mo()
        await smsc.mo("8613800000009", "10655", CHINESE, data_coding=8)
        with trio.fail_after(5):
            received = await channel.receive()
        received.stored()
        mo = received.mo
        assert mo == MobileOriginated(
            source_addr="8613800000009",
            destination_addr="10655",
            text=CHINESE,
            data_coding=8,
            esm_class=0,
            udh=b"",
            at_ms=mo.at_ms,
        )
        event = await smsc.next_event("deliver_sm_resp")
        assert (event["kind"], event["status"]) == ("mo", 0)
        assert carrier.reports().statistics().current_buffer_used == 0
