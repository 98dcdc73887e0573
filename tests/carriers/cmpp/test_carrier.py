"""The CMPP carrier against the ISMG simulator in process (tests/ismg), in both versions:
submits and their ids, long text, the Result table, throttling, reports matched by Msg_Id
(unknown Stat kept verbatim), MOs answered only once stored, ACTIVE_TEST by C/T/N and
reconnecting, on Trio's autojump clock where timers matter."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from smsgw.carriers.base import OutboundSms, ReceivedMo, SubmitErrorKind
from smsgw.carriers.cmpp import auth, codec
from smsgw.carriers.cmpp.carrier import STATS, CmppCarrier
from smsgw.carriers.cmpp.codec import ActiveTest, CmppConnection, CmppVersion, Connect
from smsgw.carriers.cmpp.settings import parse_cmpp_url
from smsgw.carriers.link.pool import LinkSubmitError
from smsgw.sansio import NEED_DATA
from tests.ismg import DEFAULT_SECRET, DEFAULT_SP_ID, Ismg, IsmgOptions

NOW_MS = 1_700_000_000_000
CHINESE = "您的验证码是一二三四五六，请在十分钟内完成验证。" * 4  # 108 characters: 2 parts
WRONG_SECRET = "Zq9Wx7"  # the silent peer's test: must never be logged
VERSIONS = pytest.mark.parametrize("version", ["3.0", "2.0"])


def sms(n: int = 1, text: str = "hello", phone: str = "+8613800000001") -> OutboundSms:
    return OutboundSms(
        message_id=n, appid="app1", msgid=f"m{n}", phone=phone, text=text, msgtype=1, attempt=1
    )


def url(secret: str = DEFAULT_SECRET, **params: object) -> str:
    params.setdefault("src_id", "106900")
    query = "&".join(f"{name}={value}" for name, value in params.items())
    return f"cmpp://{DEFAULT_SP_ID}:{secret}@ismg.test:7890?{query}"


@asynccontextmanager
async def carrier_with_ismg(
    options: dict[str, Any] | None = None, *, bound: bool = True, **params: Any
) -> AsyncIterator[tuple[CmppCarrier, Ismg]]:
    """A CmppCarrier (URL `params`) connected in memory to an in-process ISMG."""
    ismg = Ismg(IsmgOptions(port=None, **(options or {})))

    async def connect(host: str, port: int) -> trio.abc.Stream:
        return await ismg.connect_memory()

    async with trio.open_nursery() as nursery:
        await nursery.start(ismg.run)
        carrier = CmppCarrier(parse_cmpp_url(url(**params)), now_ms=lambda: NOW_MS, connect=connect)
        await nursery.start(carrier.run)
        if bound:
            with trio.fail_after(30):
                await carrier.wait_bound()
        try:
            yield carrier, ismg
        finally:
            nursery.cancel_scope.cancel()


async def submit_error(carrier: CmppCarrier, message: OutboundSms) -> LinkSubmitError:
    with pytest.raises(LinkSubmitError) as caught:
        await carrier.submit(message)
    return caught.value


# -- submitting ------------------------------------------------------------------------------


@VERSIONS
async def test_a_submit_carries_the_settings_and_its_report_matches(
    autojump_clock: trio.abc.Clock, version: str
) -> None:
    async with carrier_with_ismg(
        version=version, service_id="MXX0001", fee_type="02", fee_code="10"
    ) as (carrier, ismg):
        accepted = await carrier.submit(sms())
        submit = await ismg.next_event("submit")
        assert submit["version"] == version
        assert (submit["msg_src"], submit["src_id"], submit["service_id"]) == (
            DEFAULT_SP_ID,
            "106900",
            "MXX0001",
        )
        assert (submit["fee_type"], submit["fee_code"], submit["fee_user_type"]) == ("02", "10", 2)
        assert (submit["registered_delivery"], submit["dests"]) == (1, ["8613800000001"])
        assert accepted.part_ids == (submit["msg_id"],) and len(accepted.carrier_msgid) == 16
        report = await carrier.reports().receive()
        assert carrier.normalize_id(report.carrier_msgid) == carrier.normalize_id(
            accepted.carrier_msgid
        )
        assert (report.delivered, report.stat, report.error, report.at_ms) == (
            True,
            "DELIVRD",
            None,
            NOW_MS,
        )
        await ismg.next_event("deliver_resp", result=0)


@VERSIONS
async def test_long_chinese_text_goes_as_udh_parts_in_order(
    autojump_clock: trio.abc.Clock, version: str
) -> None:
    async with carrier_with_ismg(version=version) as (carrier, ismg):
        accepted = await carrier.submit(sms(text=CHINESE))
        message = await ismg.next_event("message")
        assert (message["text"], message["parts"]) == (CHINESE, 2)
        submits = ismg.events_of("submit")
        assert [(s["pk_total"], s["pk_number"], s["tp_udhi"], s["msg_fmt"]) for s in submits] == [
            (2, 1, 1, 8),
            (2, 2, 1, 8),
        ]
        assert accepted.part_ids == tuple(s["msg_id"] for s in submits)
        reports = [await carrier.reports().receive() for _ in range(2)]
        assert {r.carrier_msgid for r in reports} == set(accepted.part_ids)


async def test_a_long_ascii_text_is_split_too(autojump_clock: trio.abc.Clock) -> None:
    text = "x" * 200
    async with carrier_with_ismg() as (carrier, ismg):
        accepted = await carrier.submit(sms(text=text))
        assert len(accepted.part_ids) == 2
        message = await ismg.next_event("message")
        assert (message["text"], message["parts"]) == (text, 2)
        assert {s["msg_fmt"] for s in ismg.events_of("submit")} == {0}


@pytest.mark.parametrize(
    ("result", "kind"),
    [
        (8, SubmitErrorKind.THROTTLED),
        (1, SubmitErrorKind.PERMANENT),
        (13, SubmitErrorKind.PERMANENT),
        (9, SubmitErrorKind.PERMANENT),
        (3, SubmitErrorKind.TEMPORARY),
        (42, SubmitErrorKind.TEMPORARY),
        (150, SubmitErrorKind.TEMPORARY),
    ],
)
async def test_results_follow_the_table(
    autojump_clock: trio.abc.Clock, result: int, kind: SubmitErrorKind
) -> None:
    async with carrier_with_ismg() as (carrier, ismg):
        await ismg.fail(result)
        error = await submit_error(carrier, sms())
        assert (error.kind, error.stat, error.status) == (kind, f"CMPP_RESULT_{result}", result)
        assert (await carrier.submit(sms(2))).carrier_msgid  # the next one goes through


async def test_flow_control_slows_the_link_down(autojump_clock: trio.abc.Clock) -> None:
    async with carrier_with_ismg(throttle_pause=2) as (carrier, ismg):
        await ismg.throttle()
        error = await submit_error(carrier, sms())
        assert error.kind is SubmitErrorKind.THROTTLED
        pacer = carrier.sessions[0].pacer
        assert pacer.slowed
        before = trio.current_time()
        await carrier.submit(sms(2))
        assert trio.current_time() - before >= 2  # paused for throttle_pause


async def test_the_window_bounds_submits_in_flight(autojump_clock: trio.abc.Clock) -> None:
    async with carrier_with_ismg({"latency": 1.0}, window=3) as (carrier, ismg):
        async with trio.open_nursery() as nursery:
            for n in range(10):
                nursery.start_soon(carrier.submit, sms(n))
        assert carrier.sessions[0].max_in_flight == 3
        assert ismg.count("window") == 0  # never over the ISMG's window either


async def test_a_bad_phone_is_refused_before_sending(autojump_clock: trio.abc.Clock) -> None:
    async with carrier_with_ismg() as (carrier, ismg):
        error = await submit_error(carrier, sms(phone="+86abc"))
        assert (error.kind, error.stat) == (SubmitErrorKind.PERMANENT, STATS.bad_message)
        assert ismg.count("submit") == 0


async def test_a_link_dropped_with_a_submit_in_flight_puts_it_in_doubt(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with carrier_with_ismg() as (carrier, ismg):
        await ismg.silent()
        async with trio.open_nursery() as nursery:
            errors: list[LinkSubmitError] = []

            async def submit() -> None:
                errors.append(await submit_error(carrier, sms()))

            nursery.start_soon(submit)
            await ismg.next_event("submit")
            await ismg.drop()
        assert (errors[0].kind, errors[0].stat) == (SubmitErrorKind.IN_DOUBT, STATS.link_lost)
        await ismg.silent(False)
        with trio.fail_after(30):
            await carrier.wait_bound()
        assert (await carrier.submit(sms(2))).carrier_msgid
        assert carrier.sessions[0].binds == 2


async def test_an_unanswered_submit_times_out_in_doubt(autojump_clock: trio.abc.Clock) -> None:
    async with carrier_with_ismg(response_timeout=5) as (carrier, ismg):
        await ismg.silent()
        started = trio.current_time()
        error = await submit_error(carrier, sms())
        assert (error.kind, error.stat) == (SubmitErrorKind.IN_DOUBT, STATS.timeout)
        assert trio.current_time() - started == pytest.approx(5)


# -- reports ---------------------------------------------------------------------------------


async def test_unknown_stat_codes_are_kept_verbatim(autojump_clock: trio.abc.Clock) -> None:
    async with carrier_with_ismg() as (carrier, ismg):
        await ismg.report("MK:0001")
        await ismg.report("ACCEPTD")
        first = await carrier.submit(sms(1))
        report = await carrier.reports().receive()
        assert (report.carrier_msgid, report.delivered, report.stat, report.error) == (
            first.carrier_msgid,
            False,
            "MK:0001",
            "stat:MK:0001",
        )
        await carrier.submit(sms(2))  # its ACCEPTD is intermediate: acknowledged, no report
        await ismg.next_event("deliver_resp", result=0)
        await ismg.next_event("deliver_resp", result=0)
        with trio.move_on_after(5):
            await carrier.reports().receive()
            raise AssertionError("an intermediate ACCEPTD was reported")


async def test_reports_come_on_any_link(autojump_clock: trio.abc.Clock) -> None:
    async with carrier_with_ismg({"report_delay": 5.0}, binds=2) as (carrier, ismg):
        ids = [(await carrier.submit(sms(n))).carrier_msgid for n in range(4)]
        assert {e["session"] for e in ismg.events_of("submit")} == {1, 2}
        # Both links go before any report is sent; the reports of both come on the links
        # that come back, whichever they are.
        await ismg.refuse()
        await ismg.drop()
        await ismg.refuse(False)
        reports = [await carrier.reports().receive() for _ in range(4)]
        assert sorted(r.carrier_msgid for r in reports) == sorted(ids)


async def test_a_report_on_another_link_still_matches(autojump_clock: trio.abc.Clock) -> None:
    async with carrier_with_ismg(binds=2) as (carrier, ismg):
        ids = [(await carrier.submit(sms(n))).carrier_msgid for n in range(8)]
        reports = [await carrier.reports().receive() for _ in range(8)]
        assert sorted(r.carrier_msgid for r in reports) == sorted(ids)
        submitted_on = {e["msg_id"]: e["session"] for e in ismg.events_of("submit")}
        delivered_on = {e["report_msg_id"]: e["session"] for e in ismg.events_of("deliver")}
        assert set(submitted_on.values()) == {1, 2}
        assert any(delivered_on[msg_id] != submitted_on[msg_id] for msg_id in ids)


# -- MOs -------------------------------------------------------------------------------------


async def test_an_mo_is_answered_only_once_stored(autojump_clock: trio.abc.Clock) -> None:
    async with carrier_with_ismg() as (carrier, ismg):
        mos = carrier.mo()
        await ismg.mo("13900000009", "你好，退订", destination="106900123")
        received: ReceivedMo = await mos.receive()
        assert (received.mo.source_addr, received.mo.destination_addr, received.mo.text) == (
            "13900000009",
            "106900123",
            "你好，退订",
        )
        await trio.sleep(1)
        assert ismg.count("deliver_resp") == 0  # not before it is stored
        received.stored()
        assert (await ismg.next_event("deliver_resp", kind="mo"))["result"] == 0


async def test_an_mo_not_stored_comes_again(autojump_clock: trio.abc.Clock) -> None:
    async with carrier_with_ismg({"deliver_retry": 1.0}) as (carrier, ismg):
        mos = carrier.mo()
        long_text = "退订" * 50  # two parts with a UDH
        await ismg.mo("13900000009", long_text)
        first = await mos.receive()
        assert first.mo.udh and first.mo.text == "退订" * 33 + "退"
        first.not_stored()
        assert (await ismg.next_event("deliver_resp", kind="mo"))["result"] == 8
        parts = [await mos.receive() for _ in range(2)]
        for part in parts:
            part.stored()
        again = await ismg.next_event("deliver", kind="mo", where=lambda e: e["attempt"] > 0)
        assert again["attempt"] >= 1


# -- keep-alive and logins -------------------------------------------------------------------


async def test_an_idle_link_is_probed_every_c_seconds(autojump_clock: trio.abc.Clock) -> None:
    async with carrier_with_ismg(active_test=180) as (carrier, ismg):
        start = trio.current_time()
        await ismg.next_event("active_test", timeout=200)
        assert trio.current_time() - start == pytest.approx(180, abs=1)
        await ismg.next_event("active_test", timeout=200)
        assert trio.current_time() - start == pytest.approx(360, abs=1)
        assert carrier.sessions[0].binds == 1


async def test_traffic_defers_the_probe(autojump_clock: trio.abc.Clock) -> None:
    async with carrier_with_ismg(active_test=180) as (carrier, ismg):
        start = trio.current_time()
        await trio.sleep(100)
        await carrier.submit(sms())  # its answer (and report) are traffic
        await ismg.next_event("active_test", timeout=300)
        assert trio.current_time() - start >= 280


class SilentIsmg:
    """Answers CONNECT (with an AuthenticatorISMG that proves nothing, as some ISMGs do)
    and then nothing at all; records what it reads."""

    def __init__(self) -> None:
        self.active_tests: list[float] = []
        self.connects = 0
        self.reconnected = trio.Event()
        self.nursery: trio.Nursery | None = None

    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        assert self.nursery is not None
        client, server = trio.testing.memory_stream_pair()
        self.nursery.start_soon(self.serve, server)
        return client

    async def serve(self, stream: trio.abc.Stream) -> None:
        conn = CmppConnection()
        async with stream:
            while data := await stream.receive_some(65536):
                conn.receive_data(data)
                while (pdu := conn.next_event()) is not NEED_DATA:
                    if isinstance(pdu, Connect):
                        self.connects += 1
                        if self.connects == 2:
                            self.reconnected.set()
                        answer = auth.connect_response(pdu, 0, "not the secret", CmppVersion.V30)
                        await stream.send_all(conn.send(answer))
                    elif isinstance(pdu, ActiveTest):
                        self.active_tests.append(trio.current_time())


async def test_three_unanswered_active_tests_drop_the_link_and_it_reconnects(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "smsgw.carriers.cmpp")
    peer = SilentIsmg()
    async with trio.open_nursery() as nursery:
        peer.nursery = nursery
        carrier = CmppCarrier(
            parse_cmpp_url(
                url(WRONG_SECRET, active_test=180, active_test_timeout=60, active_test_tries=3)
            ),
            now_ms=lambda: NOW_MS,
            connect=peer.connect,
        )
        await nursery.start(carrier.run)
        await carrier.wait_bound()
        start = trio.current_time()
        await peer.reconnected.wait()
        assert [round(t - start) for t in peer.active_tests] == [180, 240, 300]
        assert trio.current_time() - start == pytest.approx(360, abs=15)  # + the backoff
        nursery.cancel_scope.cancel()
    lines = [record.getMessage() for record in caplog.records]
    assert any("AuthenticatorISMG" in line and "connected anyway" in line for line in lines)
    assert any("no answer to ACTIVE_TEST within 60 s (3 in a row)" in line for line in lines)
    assert not any(WRONG_SECRET in line for line in lines)


async def test_a_refused_connect_is_retried_with_backoff(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "smsgw.carriers.cmpp")
    async with carrier_with_ismg(bound=False, reconnect_min=1, reconnect_max=4) as (
        carrier,
        ismg,
    ):
        await ismg.login_fail(codec.CONNECT_AUTH_FAILED, n=3)
        with trio.fail_after(60):
            await carrier.wait_bound()
        logins = ismg.events_of("login")
        assert [event["status"] for event in logins][-1] == 0
    refused = [r.getMessage() for r in caplog.records if "connect failed" in r.getMessage()]
    assert refused and all("authentication failed" in line for line in refused)


async def test_the_ismgs_terminate_is_answered_and_the_link_comes_back(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with carrier_with_ismg() as (carrier, ismg):
        assert await ismg.terminate() == 1
        await ismg.next_event("terminate_resp", timeout=10)
        await ismg.wait_for_count("login", 2, timeout=30)
        with trio.fail_after(30):
            await carrier.wait_bound()
        assert carrier.sessions[0].binds == 2
        assert (await carrier.submit(sms())).carrier_msgid


async def test_aclose_sends_terminate(autojump_clock: trio.abc.Clock) -> None:
    async with carrier_with_ismg() as (carrier, ismg):
        await carrier.aclose()
        await ismg.next_event("terminate", by="sp")
        error = await submit_error(carrier, sms())
        assert (error.kind, error.stat) == (SubmitErrorKind.THROTTLED, STATS.closed)
