"""The SMPP session and carrier against an in-memory SMSC (tests/carriers/smpp/fake_smsc.py),
on Trio's autojump clock: timeouts, keep-alive, rebinding, malformed input, shutdown."""

from __future__ import annotations

import logging
import random
import struct
from collections.abc import Awaitable

import pytest
import trio

from smsgw.carriers.base import MobileOriginated, SubmitErrorKind
from smsgw.carriers.link.pool import MO_STORE_TIMEOUT_S, LinkSubmitError
from smsgw.carriers.smpp import codec
from smsgw.carriers.smpp.carrier import (
    STAT_BAD_RESPONSE,
    STAT_CLOSED,
    STAT_LINK_LOST,
    STAT_NO_BIND,
    STAT_TIMEOUT,
)
from smsgw.carriers.smpp.codec import (
    BindReceiver,
    BindTransmitter,
    CommandId,
    DataSm,
    DeliverSm,
    DeliverSmResp,
    EnquireLink,
    GenericNack,
    SmppPduError,
    SubmitSm,
    SubmitSmResp,
    Tlvs,
    Unbind,
    UnbindResp,
    decode_pdu,
)
from smsgw.carriers.smpp.dialect import classify_status

from .fake_smsc import NOW_MS, FakeSmsc, carrier_with_fake, sms

SECRET = "secret"  # the fake URL's password: must never be logged


def receipt(
    message_id: str, stat: str = "DELIVRD", *, tlv: bool = True, err: str = "000"
) -> DeliverSm:
    text = (
        f"id:{message_id} sub:001 dlvrd:001 submit date:2401011200 done date:2401011201 "
        f"stat:{stat} err:{err} text:hello"
    )
    state = {"DELIVRD": 2, "UNDELIV": 5, "EXPIRED": 3, "ENROUTE": 1}[stat]
    return DeliverSm(
        esm_class=codec.ESM_CLASS_DELIVERY_RECEIPT,
        short_message=text.encode(),
        tlvs=Tlvs(receipted_message_id=message_id, message_state=state) if tlv else Tlvs(),
    )


def raw_pdu(command_id: int, body: bytes, sequence: int = 77, status: int = 0) -> bytes:
    return struct.pack(">IIII", 16 + len(body), command_id, status, sequence) + body


async def submit_error(submit: Awaitable[object]) -> LinkSubmitError:
    """Await a submit that must fail; return its error."""
    with pytest.raises(LinkSubmitError) as caught:
        await submit
    return caught.value


# -- submitting ----------------------------------------------------------------------------


async def test_submit_returns_the_smsc_id_and_the_receipt_comes_out_of_reports(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with carrier_with_fake() as (carrier, smsc):
        accepted = await carrier.submit(sms())
        assert (accepted.carrier_msgid, accepted.part_ids) == ("1", ("1",))
        link = smsc.links[0]
        assert link.bound_as == "bind_transceiver"
        submit = link.of_type(SubmitSm)[0]
        assert submit.destination_addr == "8613800000001"
        assert (submit.dest_addr_ton, submit.dest_addr_npi) == (1, 1)
        assert submit.registered_delivery == 1

        sent = await link.send_request(receipt("0001", "UNDELIV", err="005"))
        with trio.fail_after(5):
            report = await carrier.reports().receive()
        assert report.carrier_msgid == "0001"
        assert not report.delivered
        assert (report.stat, report.error, report.at_ms) == ("UNDELIV", "err:005", NOW_MS)
        assert carrier.normalize_id(report.carrier_msgid) == carrier.normalize_id("1")
        responses = await link.wait_for(DeliverSmResp)
        assert [(r.sequence_number, r.command_status) for r in responses] == [
            (sent.sequence_number, codec.ESME_ROK)
        ]


async def test_response_timeout_is_in_doubt_and_frees_the_window_slot(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with carrier_with_fake(window=1, response_timeout=5) as (carrier, smsc):
        await carrier.wait_bound()
        smsc.submit_answers = [None]
        started = trio.current_time()
        error = await submit_error(carrier.submit(sms()))
        assert (error.kind, error.stat) == (SubmitErrorKind.IN_DOUBT, STAT_TIMEOUT)
        assert trio.current_time() - started == pytest.approx(5, abs=0.01)
        # The one window slot is free again and the link is still up.
        accepted = await carrier.submit(sms(2))
        assert accepted.carrier_msgid == "1"
        assert len(smsc.links) == 1


async def test_refusals_follow_the_status_table(autojump_clock: trio.abc.Clock) -> None:
    cases = [
        (codec.ESME_RSYSERR, SubmitErrorKind.TEMPORARY, "ESME_RSYSERR"),
        (codec.ESME_RX_T_APPN, SubmitErrorKind.TEMPORARY, "ESME_RX_T_APPN"),
        (codec.ESME_RINVDSTADR, SubmitErrorKind.PERMANENT, "ESME_RINVDSTADR"),
        (codec.ESME_RX_P_APPN, SubmitErrorKind.PERMANENT, "ESME_RX_P_APPN"),
        (codec.ESME_RMSGQFUL, SubmitErrorKind.THROTTLED, "ESME_RMSGQFUL"),
        (0x0400, SubmitErrorKind.TEMPORARY, "0x00000400"),
    ]
    async with carrier_with_fake(throttle_pause=0) as (carrier, smsc):
        for status, kind, stat in cases:
            smsc.submit_answers = [status]
            error = await submit_error(carrier.submit(sms()))
            assert (error.kind, error.stat, error.status) == (kind, stat, status)


def test_status_table() -> None:
    assert classify_status(codec.ESME_RTHROTTLED) is SubmitErrorKind.THROTTLED
    assert classify_status(codec.ESME_RUNKNOWNERR) is SubmitErrorKind.TEMPORARY
    assert classify_status(codec.ESME_RINVSRCADR) is SubmitErrorKind.PERMANENT
    assert classify_status(codec.ESME_RX_R_APPN) is SubmitErrorKind.PERMANENT
    assert classify_status(codec.ESME_RINVMSGLEN) is SubmitErrorKind.PERMANENT
    assert classify_status(0x12345) is SubmitErrorKind.TEMPORARY


async def test_generic_nack_to_a_submit_is_a_refusal(autojump_clock: trio.abc.Clock) -> None:
    async with carrier_with_fake() as (carrier, smsc):
        await carrier.wait_bound()
        smsc.submit_answers = [None]
        task_error: list[LinkSubmitError] = []

        async def submit() -> None:
            task_error.append(await submit_error(carrier.submit(sms())))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(submit)
            link = smsc.links[0]
            (pending,) = await link.wait_for(SubmitSm)
            await link.send(
                GenericNack(
                    sequence_number=pending.sequence_number,
                    command_status=codec.ESME_RINVCMDLEN,
                )
            )
        assert (task_error[0].kind, task_error[0].stat) == (
            SubmitErrorKind.PERMANENT,
            "ESME_RINVCMDLEN",
        )


async def test_throttle_pauses_and_halves_the_rate(autojump_clock: trio.abc.Clock) -> None:
    async with carrier_with_fake(tps=10, throttle_pause=2) as (carrier, smsc):
        await carrier.wait_bound()
        smsc.submit_answers = [codec.ESME_RTHROTTLED]
        error = await submit_error(carrier.submit(sms()))
        assert (error.kind, error.stat) == (SubmitErrorKind.THROTTLED, "ESME_RTHROTTLED")
        throttled_at = trio.current_time()
        assert carrier.sessions[0].pacer.rate == 5
        await carrier.submit(sms(2))
        assert trio.current_time() - throttled_at >= 2
        # The next ones are spaced at the halved rate: 1/5 s apart.
        before = trio.current_time()
        await carrier.submit(sms(3))
        await carrier.submit(sms(4))
        assert trio.current_time() - before == pytest.approx(0.4, abs=0.01)


async def test_later_part_failure_reports_the_parts_already_accepted(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with carrier_with_fake() as (carrier, smsc):
        await carrier.wait_bound()
        smsc.submit_answers = ["100", codec.ESME_RINVDSTADR]
        error = await submit_error(carrier.submit(sms(text="x" * 400)))  # 3 GSM segments
        assert (error.kind, error.stat) == (SubmitErrorKind.PERMANENT, "ESME_RINVDSTADR")
        assert error.accepted_part_ids == ("100",)
        assert "100" in error.detail
        assert len(smsc.all_received(SubmitSm)) == 2  # the third part was never sent


async def test_a_message_that_cannot_be_encoded_is_permanent(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with carrier_with_fake() as (carrier, smsc):
        error = await submit_error(carrier.submit(sms(phone="+12ab")))
        assert error.kind is SubmitErrorKind.PERMANENT
        assert smsc.all_received(SubmitSm) == []


async def test_window_caps_outstanding_submits(autojump_clock: trio.abc.Clock) -> None:
    async with carrier_with_fake(window=3, response_timeout=30) as (carrier, smsc):
        await carrier.wait_bound()
        smsc.silent = True
        results: list[str] = []

        async def submit(n: int) -> None:
            results.append((await carrier.submit(sms(n))).carrier_msgid)

        async with trio.open_nursery() as nursery:
            for n in range(7):
                nursery.start_soon(submit, n)
            await trio.sleep(1)
            link = smsc.links[0]
            assert len(link.of_type(SubmitSm)) == 3
            # Answer one at a time: each answer lets exactly one more through.
            for answered in range(7):
                pending = link.of_type(SubmitSm)
                assert len(pending) == min(7, answered + 3)
                await link.send(
                    SubmitSmResp(
                        sequence_number=pending[answered].sequence_number,
                        message_id=f"id{answered}",
                    )
                )
                await trio.sleep(0.5)
        assert sorted(results) == sorted(f"id{n}" for n in range(7))
        assert carrier.sessions[0].max_in_flight == 3


async def test_several_binds_share_the_load(autojump_clock: trio.abc.Clock) -> None:
    async with carrier_with_fake(binds=2, window=1, response_timeout=2) as (carrier, smsc):
        await carrier.wait_bound()
        smsc.silent = True
        async with trio.open_nursery() as nursery:
            for n in range(2):
                nursery.start_soon(submit_error, carrier.submit(sms(n)))
            await trio.sleep(1)
            assert [len(link.of_type(SubmitSm)) for link in smsc.links] == [1, 1]


# -- binding -------------------------------------------------------------------------------


async def test_bind_failures_back_off_and_submit_gives_up_with_no_bind(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "smsgw.carriers.smpp")

    def refuse_four_binds(smsc: FakeSmsc) -> None:
        smsc.bind_statuses = [codec.ESME_RBINDFAIL] * 4

    async with carrier_with_fake(
        prepare=refuse_four_binds, reconnect_min=1, reconnect_max=4, bind_wait=2
    ) as (carrier, smsc):
        started = trio.current_time()
        error = await submit_error(carrier.submit(sms()))
        assert (error.kind, error.stat) == (SubmitErrorKind.TEMPORARY, STAT_NO_BIND)
        assert trio.current_time() - started == pytest.approx(2, abs=0.01)
        await smsc.wait_links(5)
        gaps = [b - a for a, b in zip(smsc.connect_times, smsc.connect_times[1:], strict=False)]
        for gap, expected in zip(gaps, [1, 2, 4, 4], strict=True):
            assert expected * 0.8 <= gap <= expected * 1.2
        await carrier.wait_bound()
        assert (await carrier.submit(sms(2))).carrier_msgid == "1"
    failures = [r.getMessage() for r in caplog.records if "bind failed" in r.getMessage()]
    assert len(failures) == 4
    assert "bind_transceiver refused with ESME_RBINDFAIL" in failures[0]
    assert all(SECRET not in record.getMessage() for record in caplog.records)


async def test_unanswered_bind_times_out_and_is_retried(autojump_clock: trio.abc.Clock) -> None:
    def mute(smsc: FakeSmsc) -> None:
        smsc.answer_binds = False

    async with carrier_with_fake(prepare=mute, bind_timeout=3, reconnect_min=1) as (carrier, smsc):
        await smsc.wait_connects(2)
        assert 3.8 <= smsc.connect_times[1] - smsc.connect_times[0] <= 4.2
        assert smsc.links[0].closed.is_set()
        smsc.answer_binds = True
        with trio.fail_after(10):
            await carrier.wait_bound()


async def test_refused_connections_are_retried(autojump_clock: trio.abc.Clock) -> None:
    def refuse(smsc: FakeSmsc) -> None:
        smsc.refuse_connections = True

    async with carrier_with_fake(prepare=refuse, reconnect_min=0.5, reconnect_max=1) as (
        carrier,
        smsc,
    ):
        await trio.sleep(3)
        assert 3 <= len(smsc.connect_times) <= 5
        assert not carrier.sessions[0].bound
        smsc.refuse_connections = False
        with trio.fail_after(5):
            await carrier.wait_bound()


async def test_transmitter_and_receiver_binds(autojump_clock: trio.abc.Clock) -> None:
    async with carrier_with_fake(bind="tx%2Brx") as (carrier, smsc):
        accepted = await carrier.submit(sms())
        tx, rx = smsc.links
        assert (tx.bound_as, rx.bound_as) == ("bind_transmitter", "bind_receiver")
        assert isinstance(tx.received[0], BindTransmitter)
        assert isinstance(rx.received[0], BindReceiver)
        assert len(tx.of_type(SubmitSm)) == 1 and rx.of_type(SubmitSm) == []
        await rx.send_request(receipt(accepted.carrier_msgid))
        with trio.fail_after(5):
            report = await carrier.reports().receive()
        assert report.carrier_msgid == accepted.carrier_msgid and report.delivered
        assert len(await rx.wait_for(DeliverSmResp)) == 1


# -- keep-alive and link loss --------------------------------------------------------------


async def test_enquire_link_keeps_the_link_and_answers_the_smsc(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with carrier_with_fake(enquire_link=2, response_timeout=1) as (carrier, smsc):
        link = await smsc.wait_links(1)
        await trio.sleep(9)
        assert len(link.of_type(EnquireLink)) == 4
        assert len(smsc.links) == 1 and carrier.sessions[0].bound
        asked = await link.send_request(EnquireLink())
        answers = [
            pdu
            for pdu in await link.wait_for(codec.EnquireLinkResp)
            if pdu.sequence_number == asked.sequence_number
        ]
        assert len(answers) == 1


async def test_unanswered_enquire_link_closes_the_link_in_doubt_and_rebinds(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with carrier_with_fake(enquire_link=1, response_timeout=3, reconnect_min=1) as (
        carrier,
        smsc,
    ):
        await carrier.wait_bound()
        smsc.answer_enquire_link = False
        smsc.silent = True
        await trio.sleep(1.5)  # the enquire_link went out at 1 s: dead at 4 s
        error = await submit_error(carrier.submit(sms()))
        assert (error.kind, error.stat) == (SubmitErrorKind.IN_DOUBT, STAT_LINK_LOST)
        assert "enquire_link" in error.detail
        assert trio.current_time() == pytest.approx(4, abs=0.01)
        smsc.answer_enquire_link = True
        smsc.silent = False
        await smsc.wait_links(2)
        assert smsc.links[0].closed.is_set()
        with trio.fail_after(5):
            await carrier.wait_bound()
        assert (await carrier.submit(sms(2))).carrier_msgid == "1"
        assert carrier.sessions[0].binds == 2


async def test_peer_closing_the_link_fails_in_flight_in_doubt(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with carrier_with_fake(reconnect_min=1, response_timeout=30) as (carrier, smsc):
        await carrier.wait_bound()
        smsc.silent = True
        failures: list[LinkSubmitError] = []

        async def submit() -> None:
            failures.append(await submit_error(carrier.submit(sms())))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(submit)
            nursery.start_soon(submit)
            await smsc.links[0].wait_for(SubmitSm, 2)
            await smsc.links[0].close()
        assert [(f.kind, f.stat) for f in failures] == [
            (SubmitErrorKind.IN_DOUBT, STAT_LINK_LOST)
        ] * 2
        assert trio.current_time() < 1  # at once, not after the response timeout
        await smsc.wait_links(2)


async def test_smsc_unbind_is_answered_and_the_session_binds_again(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with carrier_with_fake(reconnect_min=1) as (carrier, smsc):
        link = await smsc.wait_links(1)
        asked = await link.send_request(Unbind())
        (answer,) = await link.wait_for(UnbindResp)
        assert (answer.sequence_number, answer.command_status) == (asked.sequence_number, 0)
        await smsc.wait_links(2)
        with trio.fail_after(5):
            await carrier.wait_bound()


# -- malformed input -----------------------------------------------------------------------

_RECEIPT_BODY = codec.encode_pdu(receipt("9"))[16:]


@pytest.mark.parametrize(
    "command_id, body",
    [
        (CommandId.DELIVER_SM, b""),  # no body at all
        (CommandId.DELIVER_SM, b"\x00\x01\x01abc"),  # source_addr never NUL-terminated
        (CommandId.DELIVER_SM, _RECEIPT_BODY + b"\x04\x27\x00\x09\x01"),  # TLV overruns the PDU
        (CommandId.DELIVER_SM, _RECEIPT_BODY + b"\x04"),  # stray octet after the TLVs
        (CommandId.ENQUIRE_LINK, b"junk"),  # a header-only PDU with a body
        (0x00000099, b""),  # unknown command
    ],
)
async def test_malformed_request_gets_the_codecs_generic_nack_and_the_link_lives(
    autojump_clock: trio.abc.Clock, command_id: int, body: bytes
) -> None:
    data = raw_pdu(command_id, body, sequence=77)
    with pytest.raises(SmppPduError) as decoded:
        decode_pdu(data)
    async with carrier_with_fake() as (carrier, smsc):
        link = await smsc.wait_links(1)
        await link.send_raw(data)
        (nack,) = await link.wait_for(GenericNack)
        assert (nack.sequence_number, nack.command_status) == (77, decoded.value.command_status)
        assert (await carrier.submit(sms())).carrier_msgid == "1"
        assert len(smsc.links) == 1


async def test_framing_error_closes_the_link_and_rebinds(autojump_clock: trio.abc.Clock) -> None:
    async with carrier_with_fake(reconnect_min=1) as (carrier, smsc):
        link = await smsc.wait_links(1)
        # command_length 8 cannot even hold the header: the stream cannot be framed any more.
        await link.send_raw(struct.pack(">IIII", 8, CommandId.DELIVER_SM, 0, 5))
        (nack,) = await link.wait_for(GenericNack)
        assert (nack.sequence_number, nack.command_status) == (5, codec.ESME_RINVCMDLEN)
        with trio.fail_after(5):
            await link.closed.wait()
        await smsc.wait_links(2)
        assert (await carrier.submit(sms())).carrier_msgid == "1"


async def test_malformed_submit_resp_is_in_doubt_at_once_and_not_nacked(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with carrier_with_fake(response_timeout=30) as (carrier, smsc):
        await carrier.wait_bound()
        smsc.silent = True
        failures: list[LinkSubmitError] = []

        async def submit() -> None:
            failures.append(await submit_error(carrier.submit(sms())))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(submit)
            link = smsc.links[0]
            (pending,) = await link.wait_for(SubmitSm)
            # message_id without its NUL terminator
            await link.send_raw(
                raw_pdu(CommandId.SUBMIT_SM_RESP, b"12345", sequence=pending.sequence_number)
            )
        assert (failures[0].kind, failures[0].stat) == (
            SubmitErrorKind.IN_DOUBT,
            STAT_BAD_RESPONSE,
        )
        assert trio.current_time() < 1
        await trio.sleep(1)
        assert link.of_type(GenericNack) == []
        smsc.silent = False
        assert (await carrier.submit(sms(2))).carrier_msgid == "1"


async def test_stray_response_is_ignored(autojump_clock: trio.abc.Clock) -> None:
    async with carrier_with_fake() as (carrier, smsc):
        link = await smsc.wait_links(1)
        await link.send(SubmitSmResp(sequence_number=999, message_id="ghost"))
        assert (await carrier.submit(sms())).carrier_msgid == "1"
        assert link.of_type(GenericNack) == []


async def test_requests_an_esme_does_not_take_are_refused(autojump_clock: trio.abc.Clock) -> None:
    async with carrier_with_fake() as (carrier, smsc):
        link = await smsc.wait_links(1)
        asked = await link.send_request(SubmitSm(destination_addr="1", short_message=b"x"))
        (answer,) = await link.wait_for(SubmitSmResp)
        assert (answer.sequence_number, answer.command_status) == (
            asked.sequence_number,
            codec.ESME_RINVCMDID,
        )
        assert carrier.sessions[0].bound


# -- receipts and MOs ----------------------------------------------------------------------


async def test_every_deliver_sm_is_answered_even_when_it_cannot_be_read(
    autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with carrier_with_fake() as (carrier, smsc):
        link = await smsc.wait_links(1)
        # A receipt without any id, an intermediate one, then one whose parsing blows up.
        no_id = DeliverSm(esm_class=0x04, short_message=b"stat:DELIVRD err:000")
        enroute = receipt("5", "ENROUTE")
        await link.send_request(no_id)
        await link.send_request(enroute)
        await link.wait_for(DeliverSmResp, 2)

        def broken(pdu: object) -> None:
            raise RuntimeError("parser bug")

        monkeypatch.setattr("smsgw.carriers.smpp.carrier.receipt_from_pdu", broken)
        await link.send_request(receipt("6"))
        answers = await link.wait_for(DeliverSmResp, 3)
        assert [answer.command_status for answer in answers] == [0, 0, 0]
        assert carrier.reports().statistics().current_buffer_used == 0


async def test_data_sm_receipt_and_expired_state(autojump_clock: trio.abc.Clock) -> None:
    async with carrier_with_fake() as (carrier, smsc):
        link = await smsc.wait_links(1)
        data_sm = DataSm(
            esm_class=0x04,
            tlvs=Tlvs(
                receipted_message_id="ab",
                message_state=3,
                network_error_code=codec.NetworkErrorCode(3, 27),
            ),
        )
        await link.send_request(data_sm)
        with trio.fail_after(5):
            report = await carrier.reports().receive()
        assert (report.carrier_msgid, report.delivered, report.stat) == ("ab", False, "EXPIRED")
        assert report.error == "network error 3/27"
        (answer,) = await link.wait_for(codec.DataSmResp)
        assert answer.command_status == 0


async def test_receipt_text_id_in_decimal_is_converted_to_the_submit_form(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with carrier_with_fake(receipt_id="decimal") as (carrier, smsc):
        link = await smsc.wait_links(1)
        await link.send_request(receipt("123", tlv=False))  # 123 = 0x7b
        await link.send_request(receipt("0000007B"))  # the TLV is the submit's own form
        with trio.fail_after(5):
            first = await carrier.reports().receive()
            second = await carrier.reports().receive()
        assert first.carrier_msgid == "7b"
        assert second.carrier_msgid == "0000007B"
        assert carrier.normalize_id(first.carrier_msgid) == carrier.normalize_id("0000007b")
        assert carrier.normalize_id(second.carrier_msgid) == "7b"


async def test_full_reports_channel_holds_the_answer_back(autojump_clock: trio.abc.Clock) -> None:
    async with carrier_with_fake(report_buffer=1) as (carrier, smsc):
        link = await smsc.wait_links(1)
        await link.send_request(receipt("1"))
        await link.send_request(receipt("2"))
        await link.wait_for(DeliverSmResp, 1)
        await trio.sleep(5)
        assert len(link.of_type(DeliverSmResp)) == 1  # the second waits for room
        # ...while the link itself keeps working.
        assert (await carrier.submit(sms())).carrier_msgid == "1"
        assert (await carrier.reports().receive()).carrier_msgid == "1"
        await link.wait_for(DeliverSmResp, 2)
        assert (await carrier.reports().receive()).carrier_msgid == "2"


async def test_mo_goes_to_the_mo_channel_once_someone_reads_it(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with carrier_with_fake(mo_buffer=1) as (carrier, smsc):
        link = await smsc.wait_links(1)
        mo = DeliverSm(
            source_addr="8613800000009",
            destination_addr="1065",
            data_coding=8,
            esm_class=0x40,
            short_message=bytes.fromhex("050003010201") + "你好".encode("utf-16-be"),
        )
        await link.send_request(mo)  # nobody reads MOs yet: acknowledged, dropped
        await link.wait_for(DeliverSmResp, 1)
        channel = carrier.mo()
        await link.send_request(mo)
        received = await channel.receive()
        assert received.mo == MobileOriginated(
            source_addr="8613800000009",
            destination_addr="1065",
            text="你好",
            data_coding=8,
            esm_class=0x40,
            udh=bytes.fromhex("050003010201"),
            at_ms=NOW_MS,
        )
        await trio.sleep(MO_STORE_TIMEOUT_S / 2)
        assert len(link.of_type(DeliverSmResp)) == 1  # not answered before it is stored
        received.stored()
        answers = await link.wait_for(DeliverSmResp, 2)
        assert answers[-1].command_status == codec.ESME_ROK
        assert carrier.reports().statistics().current_buffer_used == 0


async def test_an_mo_not_stored_is_asked_for_again(autojump_clock: trio.abc.Clock) -> None:
    async with carrier_with_fake(mo_buffer=1) as (carrier, smsc):
        link = await smsc.wait_links(1)
        channel = carrier.mo()
        mo = DeliverSm(source_addr="861", destination_addr="1065", short_message=b"hi")

        await link.send_request(mo)  # the store failed
        (await channel.receive()).not_stored()
        (answer,) = await link.wait_for(DeliverSmResp, 1)
        assert answer.command_status == codec.ESME_RX_T_APPN

        await link.send_request(mo)  # nobody stores it in time
        slow = await channel.receive()
        started = trio.current_time()
        answers = await link.wait_for(DeliverSmResp, 2)
        assert trio.current_time() - started == pytest.approx(MO_STORE_TIMEOUT_S, abs=0.1)
        assert answers[-1].command_status == codec.ESME_RX_T_APPN
        assert slow.given_up  # a consumer coming late skips it: the SMSC sends it again

        await link.send_request(mo)  # left in the channel: times out as well...
        await link.send_request(mo)  # ...and this one finds the channel (1) full: refused
        answers = await link.wait_for(DeliverSmResp, 4)
        assert [a.command_status for a in answers[2:]] == [codec.ESME_RX_T_APPN] * 2
        assert channel.receive_nowait().given_up
        assert channel.statistics().current_buffer_used == 0


# -- shutdown ------------------------------------------------------------------------------


async def test_aclose_lets_in_flight_finish_then_unbinds(autojump_clock: trio.abc.Clock) -> None:
    async with carrier_with_fake(response_timeout=10) as (carrier, smsc):
        await carrier.wait_bound()
        smsc.silent = True
        accepted: list[str] = []

        async def submit() -> None:
            accepted.append((await carrier.submit(sms())).carrier_msgid)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(submit)
            link = smsc.links[0]
            (pending,) = await link.wait_for(SubmitSm)
            nursery.start_soon(carrier.aclose)
            await trio.sleep(2)
            late = await submit_error(carrier.submit(sms(2)))
            assert (late.kind, late.stat) == (SubmitErrorKind.THROTTLED, STAT_CLOSED)
            assert link.of_type(Unbind) == []  # still waiting for the in-flight submit
            await link.send(SubmitSmResp(sequence_number=pending.sequence_number, message_id="z"))
        assert accepted == ["z"]
        assert len(link.of_type(Unbind)) == 1
        assert link.closed.is_set()
        await trio.sleep(5)
        assert len(smsc.links) == 1  # no rebind after a graceful close


async def test_aclose_bounds_the_wait_and_fails_the_rest(autojump_clock: trio.abc.Clock) -> None:
    async with carrier_with_fake(response_timeout=4, window=1) as (carrier, smsc):
        await carrier.wait_bound()
        smsc.silent = True
        failures: list[LinkSubmitError] = []

        async def submit(n: int) -> None:
            failures.append(await submit_error(carrier.submit(sms(n))))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(submit, 1)
            await smsc.links[0].wait_for(SubmitSm)
            nursery.start_soon(submit, 2)  # waits for the one window slot
            await trio.sleep(0.5)
            started = trio.current_time()
            await carrier.aclose()
            # In-flight submits get response_timeout + 1 s, then the unbind ends the rest.
            assert trio.current_time() - started == pytest.approx(5, abs=0.01)
        # The first timed out at 4 s; the second then got the slot and was still in flight.
        assert [(f.kind, f.stat) for f in failures] == [
            (SubmitErrorKind.IN_DOUBT, STAT_TIMEOUT),
            (SubmitErrorKind.IN_DOUBT, STAT_LINK_LOST),
        ]
        assert len(smsc.links[0].of_type(Unbind)) == 1


async def test_aclose_while_unbound_returns(autojump_clock: trio.abc.Clock) -> None:
    def refuse(smsc: FakeSmsc) -> None:
        smsc.refuse_connections = True

    async with carrier_with_fake(prepare=refuse, reconnect_min=1) as (carrier, _):
        waiting: list[LinkSubmitError] = []

        async def submit() -> None:
            waiting.append(await submit_error(carrier.submit(sms())))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(submit)
            await trio.sleep(0.5)
            with trio.fail_after(1):
                await carrier.aclose()
        assert [(w.kind, w.stat) for w in waiting] == [(SubmitErrorKind.THROTTLED, STAT_CLOSED)]
        await carrier.sessions[0].wait_stopped()


async def test_reports_channel_closes_when_run_ends(autojump_clock: trio.abc.Clock) -> None:
    async with carrier_with_fake() as (carrier, _):
        await carrier.wait_bound()
        reports = carrier.reports()
    with pytest.raises(trio.EndOfChannel):
        await reports.receive()


async def test_sme_acknowledgement_is_not_an_mo(autojump_clock: trio.abc.Clock) -> None:
    async with carrier_with_fake() as (carrier, smsc):
        channel = carrier.mo()
        link = await smsc.wait_links(1)
        await link.send_request(DeliverSm(esm_class=0x08, short_message=b"ack"))  # SME ack
        (answer,) = await link.wait_for(DeliverSmResp)
        assert answer.command_status == 0
        assert channel.statistics().current_buffer_used == 0
        assert carrier.reports().statistics().current_buffer_used == 0


@pytest.mark.parametrize("seed", [None, 1, 2, 3])
async def test_pdus_split_anyhow_on_the_wire(
    autojump_clock: trio.abc.Clock, seed: int | None
) -> None:
    """Receipts sent one byte at a time (seed None) or in random chunks spanning PDUs."""
    async with carrier_with_fake() as (carrier, smsc):
        link = await smsc.wait_links(1)
        data = b""
        for n in range(5):
            _, wire = link.codec.send_request(receipt(f"{n:04d}"))
            data += wire
        if seed is None:
            chunks = [data[i : i + 1] for i in range(len(data))]
        else:
            rng = random.Random(seed)
            cuts = sorted(rng.sample(range(1, len(data)), 12))
            chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        for chunk in chunks:
            await link.send_raw(chunk)
            await trio.sleep(0.001)
        with trio.fail_after(5):
            ids = [(await carrier.reports().receive()).carrier_msgid for _ in range(5)]
        assert ids == [f"{n:04d}" for n in range(5)]
        assert len(await link.wait_for(DeliverSmResp, 5)) == 5
        assert link.of_type(GenericNack) == []
