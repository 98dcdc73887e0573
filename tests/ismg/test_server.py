"""The ISMG simulator driven by a bare client on the CMPP codec: real loopback sockets, and
memory streams on Trio's autojump clock for everything that waits."""

from __future__ import annotations

import datetime
import struct
from collections.abc import AsyncIterator

import pytest
import trio

from smsgw.carriers.cmpp import auth, codec
from smsgw.carriers.cmpp.codec import CmppVersion, Deliver, SubmitResp
from smsgw.carriers.cmpp.msgid import format_msg_id, split_msg_id
from smsgw.carriers.cmpp.text import Concat, decode_content, split_udh
from tests.ismg import Ismg, IsmgError, IsmgOptions, running_ismg
from tests.ismg.client import SpClient, blast

V20, V30 = CmppVersion.V20, CmppVersion.V30
BOTH = pytest.mark.parametrize("version", [V20, V30], ids=["2.0", "3.0"])


@pytest.fixture
async def ismg() -> AsyncIterator[Ismg]:
    async with running_ismg() as running:
        yield running
        assert running.count("crash") == 0, running.events_of("crash")


async def logged_in(ismg: Ismg, version: CmppVersion = V30) -> SpClient:
    client = await SpClient.open(ismg.port, version)
    response = await client.login()
    assert response.status == 0
    return client


async def memory_ismg(nursery: trio.Nursery, **options: object) -> Ismg:
    ismg = Ismg(IsmgOptions(port=None, **options))  # type: ignore[arg-type]
    await nursery.start(ismg.run)
    return ismg


async def memory_client(ismg: Ismg, version: CmppVersion = V30) -> SpClient:
    client = SpClient(await ismg.connect_memory(), version)
    assert (await client.login()).status == 0
    return client


# --- login ---------------------------------------------------------------------------------


@BOTH
async def test_login_answers_in_the_clients_layout_with_a_true_authenticator(
    ismg: Ismg, version: CmppVersion
) -> None:
    client = await SpClient.open(ismg.port, version)
    response = await client.login()
    assert response.status == 0
    assert client.connect is not None
    assert auth.check_authenticator_ismg(response, client.connect, "secret", version)
    assert response.version == version
    event = await ismg.next_event("login")
    assert (event["sp_id"], event["version"], event["status"]) == ("901234", version.label, 0)
    await client.aclose()


async def test_pycmpp_version_0x21_is_the_2_0_layout(ismg: Ismg) -> None:
    client = await SpClient.open(ismg.port, V20)
    response = await client.login(version_octet=0x21)
    assert (response.status, response.version) == (0, 0x21)
    assert (await ismg.next_event("login"))["version"] == "2.0"
    await client.aclose()


@pytest.mark.parametrize(
    ("sp_id", "secret", "octet", "status"),
    [
        ("901234", "wrong", None, codec.CONNECT_AUTH_FAILED),
        ("999999", "secret", None, codec.CONNECT_BAD_SOURCE_ADDR),
        ("901234", "secret", 0x40, codec.CONNECT_VERSION_TOO_HIGH),
    ],
)
async def test_a_refused_login_is_answered_then_closed(
    ismg: Ismg, sp_id: str, secret: str, octet: int | None, status: int
) -> None:
    client = await SpClient.open(ismg.port, V30)
    response = await client.login(sp_id, secret, octet)
    assert response.status == status
    assert await client.receive() is None
    assert (await ismg.next_event("disconnect"))["sp_id"] is None
    await client.aclose()


async def test_only_the_configured_versions_are_accepted() -> None:
    async with running_ismg(versions=frozenset({V30})) as ismg:
        client = await SpClient.open(ismg.port, V20)
        assert (await client.login()).status == codec.CONNECT_VERSION_TOO_HIGH
        await client.aclose()


async def test_login_fail_on_demand(ismg: Ismg) -> None:
    await ismg.login_fail(status=5, n=1)
    first = await SpClient.open(ismg.port)
    assert (await first.login()).status == 5
    second = await SpClient.open(ismg.port)
    assert (await second.login()).status == 0
    await first.aclose()
    await second.aclose()


async def test_anything_before_connect_ends_the_link(ismg: Ismg) -> None:
    client = await SpClient.open(ismg.port)
    await client.send(codec.ActiveTest())
    assert await client.receive() is None
    await client.aclose()


async def test_no_connect_in_time_ends_the_link(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    ismg = await memory_ismg(nursery, login_timeout=10.0)
    client = SpClient(await ismg.connect_memory())
    started = trio.current_time()
    assert await client.receive(timeout=60) is None
    assert trio.current_time() - started == pytest.approx(10.0)
    assert (await ismg.next_event("error"))["message"] == "no CONNECT in time"


async def test_refuse_closes_new_connections(ismg: Ismg) -> None:
    await ismg.refuse()
    client = await SpClient.open(ismg.port)
    assert await client.receive() is None
    assert (await ismg.next_event("connect"))["refused"] is True
    await ismg.refuse(False)
    await (await logged_in(ismg)).aclose()


# --- submits -------------------------------------------------------------------------------


@BOTH
async def test_submit_gets_a_real_msg_id_and_a_report_with_it(
    ismg: Ismg, version: CmppVersion
) -> None:
    client = await logged_in(ismg, version)
    response = await client.submit(registered_delivery=1, src_id="1069001234")
    assert response.result == 0
    parts = split_msg_id(response.msg_id)
    now = datetime.datetime.now()
    assert (parts.month, parts.gateway) == (now.month, 123456)
    report = await client.expect(Deliver)
    assert report.report is not None
    assert report.report.msg_id == response.msg_id
    assert (report.report.stat, report.report.dest_terminal_id) == ("DELIVRD", "8613800138000")
    assert (report.dest_id, report.src_terminal_id, report.registered_delivery) == (
        "1069001234",
        "8613800138000",
        1,
    )
    await client.answer(report)
    resp = await ismg.next_event("deliver_resp")
    assert (resp["kind"], resp["result"]) == ("report", 0)
    submit = await ismg.next_event("submit")
    assert submit["msg_id"] == format_msg_id(response.msg_id)
    assert submit["version"] == version.label
    await client.aclose()


async def test_one_id_and_one_report_per_destination(ismg: Ismg) -> None:
    client = await logged_in(ismg)
    submit = codec.Submit(
        msg_src="901234",
        registered_delivery=1,
        dest_terminal_ids=("8613800000001", "8613800000002"),
        msg_content=b"hi",
    )
    response = await client.request(submit)
    assert isinstance(response, SubmitResp)
    reports = [await client.expect(Deliver), await client.expect(Deliver)]
    assert {(d.report.msg_id, d.report.dest_terminal_id) for d in reports if d.report} == {
        (response.msg_id, "8613800000001"),
        (response.msg_id + 1, "8613800000002"),
    }
    # The next SUBMIT's id is past the range.
    following = await client.submit()
    assert split_msg_id(following.msg_id).sequence >= split_msg_id(response.msg_id).sequence + 2
    await client.aclose()


async def test_report_stat_on_demand(ismg: Ismg) -> None:
    await ismg.report("MK:0001", n=1)
    client = await logged_in(ismg)
    await client.submit(registered_delivery=1)
    await client.submit(registered_delivery=1)
    stats = []
    for _ in range(2):
        deliver = await client.expect(Deliver)
        assert deliver.report is not None
        stats.append(deliver.report.stat)
    assert stats == ["MK:0001", "DELIVRD"]
    await client.aclose()


async def test_throttle_and_fail_on_demand_in_order(ismg: Ismg) -> None:
    await ismg.throttle(2)
    await ismg.fail(13, n=1)
    client = await logged_in(ismg)
    results = [(await client.submit()).result for _ in range(4)]
    assert results == [8, 8, 13, 0]
    assert (await ismg.stats())["submit_result_8"] == 2
    await client.aclose()


async def test_msg_src_must_be_the_sp_id(ismg: Ismg) -> None:
    client = await logged_in(ismg)
    assert (await client.submit(msg_src="000000")).result == codec.RESULT_BAD_MSG_SRC
    await client.aclose()


async def test_window_is_enforced_with_result_8(ismg: Ismg) -> None:
    await ismg.silent()
    client = await logged_in(ismg)
    for _ in range(16):
        await client.send(codec.Submit(msg_src="901234", dest_terminal_ids=("1",)))
    over = await client.request(codec.Submit(msg_src="901234", dest_terminal_ids=("1",)))
    assert isinstance(over, SubmitResp)
    assert over.result == codec.RESULT_FLOW_CONTROL
    assert (await ismg.next_event("window"))["seq"] == over.sequence_number
    await client.aclose()


async def test_latency_delays_the_answer_and_counts_in_the_window(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    ismg = await memory_ismg(nursery, latency=2.0, window=2)
    client = await memory_client(ismg)
    started = trio.current_time()
    first = await client.send(codec.Submit(msg_src="901234", dest_terminal_ids=("1",)))
    await client.send(codec.Submit(msg_src="901234", dest_terminal_ids=("1",)))
    third = await client.request(codec.Submit(msg_src="901234", dest_terminal_ids=("1",)))
    assert isinstance(third, SubmitResp) and third.result == 8
    assert trio.current_time() == started  # refused at once
    answer = await client.expect(SubmitResp, sequence_number=first.sequence_number)
    assert answer.result == 0
    assert trio.current_time() - started == pytest.approx(2.0)


async def test_tps_limit_answers_result_8(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    ismg = await memory_ismg(nursery, tps=2.0)
    client = await memory_client(ismg)
    assert [(await client.submit()).result for _ in range(3)] == [0, 0, 8]
    await trio.sleep(1.0)
    assert (await client.submit()).result == 0


async def test_malformed_submit_is_answered_with_the_codecs_result(ismg: Ismg) -> None:
    client = await logged_in(ismg)
    await client.send_bytes(struct.pack(">III", 12 + 5, codec.CommandId.SUBMIT, 77) + b"short")
    response = await client.expect(SubmitResp)
    assert (response.sequence_number, response.result) == (77, codec.RESULT_BAD_LENGTH)
    assert (await client.submit()).result == 0  # the link goes on
    await client.aclose()


async def test_broken_framing_ends_the_link(ismg: Ismg) -> None:
    client = await logged_in(ismg)
    await client.send_bytes(struct.pack(">III", 5, 1, 1))
    assert await client.receive() is None
    assert "Total_Length" in (await ismg.next_event("error"))["message"]
    await client.aclose()


async def test_long_message_parts_make_one_message_event(ismg: Ismg) -> None:
    from smsgw.carriers.cmpp.text import split_message

    client = await logged_in(ismg, V20)
    text = "您好，这是一条很长的中文短信。" * 10
    for segment in split_message(text, reference=42):
        response = await client.submit(
            content=segment.content,
            msg_fmt=segment.msg_fmt,
            tp_udhi=segment.tp_udhi,
            pk_total=segment.pk_total,
            pk_number=segment.pk_number,
        )
        assert response.result == 0
    message = await ismg.next_event("message")
    assert (message["text"], message["parts"]) == (text, 3)
    await client.aclose()


# --- deliveries on any link ----------------------------------------------------------------


async def test_reports_are_held_while_no_link_is_up_then_sent_on_the_next(ismg: Ismg) -> None:
    await ismg.set(report_delay=0.2)
    first = await logged_in(ismg)
    response = await first.submit(registered_delivery=1)
    await first.send(codec.Terminate())
    await first.expect(codec.TerminateResp)
    await first.aclose()
    await ismg.next_event("disconnect")
    # The report comes due while no link is up: it waits.
    assert (await ismg.next_event("queued", kind="report"))["live_links"] == 0
    assert (await ismg.links())["pending"] == 1
    assert ismg.count("deliver") == 0
    second = await logged_in(ismg, V20)
    report = await second.expect(Deliver)
    assert report.report is not None and report.report.msg_id == response.msg_id
    await second.answer(report)
    await second.aclose()


async def test_a_report_goes_out_on_another_link_of_the_sp(ismg: Ismg) -> None:
    await ismg.set(report_delay=0.3)
    submitter = await logged_in(ismg)
    other = await logged_in(ismg)
    response = await submitter.submit(registered_delivery=1)
    await submitter.aclose()  # the submitting link goes before its report is due
    report = await other.expect(Deliver, timeout=10)
    assert report.report is not None and report.report.msg_id == response.msg_id
    await other.aclose()


async def test_unanswered_delivers_are_sent_again_on_the_next_link(ismg: Ismg) -> None:
    first = await logged_in(ismg)
    await first.submit(registered_delivery=1)
    deliver = await first.expect(Deliver)
    assert await ismg.drop() == 1
    assert (await ismg.next_event("disconnect"))["requeued"] == 1
    await first.aclose()
    second = await logged_in(ismg)
    again = await second.expect(Deliver)
    assert again.report == deliver.report
    assert (await ismg.next_event("deliver", attempt=2))["report_msg_id"] == format_msg_id(
        deliver.report.msg_id if deliver.report else 0
    )
    await second.answer(again)
    await second.aclose()


async def test_a_failed_deliver_resp_is_retried(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    ismg = await memory_ismg(nursery, deliver_retry=5.0)
    client = await memory_client(ismg)
    assert not await ismg.mo("8613800138000", "hi")
    first = await client.expect(Deliver)
    await client.answer(first, result=9)
    started = trio.current_time()
    second = await client.expect(Deliver, timeout=60)
    assert trio.current_time() - started == pytest.approx(5.0)
    assert second.msg_content == first.msg_content == b"hi"
    assert second.sequence_number != first.sequence_number
    await client.answer(second)
    assert (await ismg.next_event("deliver_resp", result=0))["kind"] == "mo"


async def test_an_unanswered_deliver_is_sent_again_after_the_timeout(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    ismg = await memory_ismg(nursery, deliver_timeout=60.0)
    client = await memory_client(ismg)
    await ismg.mo("8613800138000", "hi")
    first = await client.expect(Deliver)
    started = trio.current_time()
    second = await client.expect(Deliver, timeout=120)
    assert trio.current_time() - started == pytest.approx(60.0)
    assert second.msg_id == first.msg_id
    assert ismg.count("deliver_timeout") == 1


async def test_the_deliver_window_holds_back_the_rest(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    ismg = await memory_ismg(nursery, deliver_window=2, deliver_timeout=0.0)
    client = await memory_client(ismg)
    for n in range(3):
        await ismg.mo("8613800138000", f"m{n}")
    first = await client.expect(Deliver)
    await client.expect(Deliver)
    with trio.move_on_after(30):
        await client.expect(Deliver, timeout=60)
        pytest.fail("a third DELIVER came with two unanswered")
    await client.answer(first)
    third = await client.expect(Deliver)
    assert third.msg_content == b"m2"


# --- MO ------------------------------------------------------------------------------------


@BOTH
async def test_mo_text_in_each_format(ismg: Ismg, version: CmppVersion) -> None:
    client = await logged_in(ismg, version)
    await ismg.mo("8613800138000", "hello", destination="1069001234", service_id="MSMS")
    await ismg.mo("8613800138000", "你好", msg_fmt=15)
    await ismg.mo("8613800138000", "你好")
    ascii_mo, gb_mo, ucs2_mo = [await client.expect(Deliver) for _ in range(3)]
    assert (ascii_mo.msg_fmt, ascii_mo.msg_content, ascii_mo.dest_id, ascii_mo.service_id) == (
        0,
        b"hello",
        "1069001234",
        "MSMS",
    )
    assert ascii_mo.report is None and ascii_mo.registered_delivery == 0
    assert decode_content(gb_mo.msg_fmt, gb_mo.msg_content) == "你好"
    assert (ucs2_mo.msg_fmt, decode_content(8, ucs2_mo.msg_content)) == (8, "你好")
    for mo in (ascii_mo, gb_mo, ucs2_mo):
        await client.answer(mo)
    await client.aclose()


async def test_long_mo_is_split_with_a_udh(ismg: Ismg) -> None:
    client = await logged_in(ismg)
    text = "长" * 100
    await ismg.mo("8613800138000", text, reference=7)
    parts = [await client.expect(Deliver) for _ in range(2)]
    decoded = [split_udh(part.msg_content) for part in parts]
    assert [concat for concat, _ in decoded] == [Concat(7, 2, 1), Concat(7, 2, 2)]
    assert all(part.tp_udhi == 1 for part in parts)
    assert "".join(decode_content(8, payload) for _, payload in decoded) == text
    await client.aclose()


async def test_mo_waits_for_a_link(ismg: Ismg) -> None:
    assert await ismg.mo("8613800138000", "early", hex="6869") is True
    client = await logged_in(ismg)
    mo = await client.expect(Deliver)
    assert mo.msg_content == b"hi"
    await client.aclose()


# --- keep-alive, terminate, drop -----------------------------------------------------------


async def test_active_test_both_ways(ismg: Ismg) -> None:
    client = await logged_in(ismg)
    response = await client.request(codec.ActiveTest())
    assert isinstance(response, codec.ActiveTestResp)
    assert await ismg.active_test() == 1
    probe = await client.expect(codec.ActiveTest)
    await client.send(codec.response_for(probe))
    assert (await ismg.next_event("active_test_resp"))["seq"] == probe.sequence_number
    await client.aclose()


async def test_active_test_every_interval(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    ismg = await memory_ismg(nursery, active_test=180.0)
    client = await memory_client(ismg)
    started = trio.current_time()
    await client.expect(codec.ActiveTest, timeout=200)
    await client.expect(codec.ActiveTest, timeout=200)
    assert trio.current_time() - started == pytest.approx(360.0)


async def test_terminate_from_the_sp(ismg: Ismg) -> None:
    client = await logged_in(ismg)
    assert isinstance(await client.request(codec.Terminate()), codec.TerminateResp)
    assert await client.receive() is None
    assert (await ismg.next_event("terminate"))["by"] == "sp"
    await client.aclose()


async def test_terminate_from_the_ismg(ismg: Ismg) -> None:
    client = await logged_in(ismg)
    assert await ismg.terminate() == 1
    request = await client.expect(codec.Terminate)
    await client.send(codec.response_for(request))
    assert await client.receive() is None
    await ismg.next_event("terminate_resp")
    await client.aclose()


async def test_drop_closes_every_link(ismg: Ismg) -> None:
    clients = [await logged_in(ismg) for _ in range(2)]
    assert await ismg.drop() == 2
    for client in clients:
        assert await client.receive() is None
        await client.aclose()
    await ismg.wait_for_count("disconnect", 2)
    assert (await ismg.links())["901234"] == 0


# --- control channel -----------------------------------------------------------------------


async def test_bad_commands_are_refused(ismg: Ismg) -> None:
    with pytest.raises(IsmgError, match="unknown command"):
        await ismg.command({"cmd": "nope"})
    with pytest.raises(IsmgError, match="n must be"):
        await ismg.throttle(-1)
    with pytest.raises(IsmgError, match="result"):
        await ismg.fail(0)
    with pytest.raises(IsmgError, match="stat"):
        await ismg.report("TOOLONGSTAT")
    with pytest.raises(IsmgError, match="latency"):
        await ismg.set(latency=-1.0)
    with pytest.raises(IsmgError, match="nobody"):
        await ismg.mo("1", "x", sp_id="nobody")


async def test_reset_forgets_overrides(ismg: Ismg) -> None:
    await ismg.throttle(5)
    await ismg.silent()
    await ismg.reset()
    client = await logged_in(ismg)
    assert (await client.submit()).result == 0
    await client.aclose()


async def test_quiet_drops_per_pdu_events(ismg: Ismg) -> None:
    await ismg.quiet()
    client = await logged_in(ismg)
    await client.submit()
    await ismg.quiet(False)
    await client.submit()
    assert ismg.count("submit") == 1
    assert (await ismg.stats())["submit"] == 2
    await client.aclose()


async def test_blast_measures_the_simulators_capacity(ismg: Ismg) -> None:
    result = await blast(ismg.port, count=300, window=16, registered_delivery=1)
    assert (result.submits, result.ok, result.failed) == (300, 300, 0)
    assert result.per_second > 0


@pytest.mark.parametrize("seed", range(4))
async def test_garbage_costs_the_sender_its_link_and_nothing_else(ismg: Ismg, seed: int) -> None:
    import random

    rng = random.Random(seed)
    client = await logged_in(ismg)
    valid = codec.encode_pdu(codec.Submit(msg_src="901234", dest_terminal_ids=("1",)), V30)
    for _ in range(20):
        noise = bytearray(valid)
        for _ in range(rng.randint(1, 4)):
            noise[rng.randrange(len(noise))] = rng.randrange(256)
        try:
            await client.send_bytes(bytes(noise) + rng.randbytes(rng.randint(0, 8)))
        except trio.BrokenResourceError:
            break  # the simulator gave up on this link, as it may
    await client.aclose()
    await ismg.next_event("disconnect")
    survivor = await logged_in(ismg)
    assert (await survivor.submit()).result == 0
    await survivor.aclose()
