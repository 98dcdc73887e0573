"""The Node SMSC (tests/smsc/smsc.js) driven through tests/smsc_process.py.

smpplib plays the ESME: it is a blocking client, so every call runs in a worker thread, and
its socket timeout bounds each call.
"""

from __future__ import annotations

import functools
import re
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import pytest
import smpplib.client
import smpplib.exceptions
import smpplib.smpp
import trio

from tests.smsc_process import (
    ESME_RBINDFAIL,
    ESME_RINVBNDSTS,
    ESME_RINVCMDID,
    ESME_RSYSERR,
    ESME_RTHROTTLED,
    SmscCommandError,
    SmscError,
    SmscOptions,
    run_blast,
    running_smsc,
)

RECEIPT = re.compile(
    r"id:(?P<id>\S+) sub:001 dlvrd:(?P<dlvrd>\d{3}) submit date:\d{10} done date:\d{10}"
    r" stat:(?P<stat>[A-Z]+) err:(?P<err>\d{3}) text:(?P<text>.*)"
)


class Esme:
    """A blocking smpplib client; call its methods through `call` (a worker thread)."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.client: Any = smpplib.client.Client(
            "127.0.0.1", port, timeout=timeout, allow_unknown_opt_params=True
        )
        self.client.connect()
        self.unread: list[Any] = []  # PDUs read while waiting for another command

    def bind(self, mode: str = "transceiver", password: str = "secret") -> None:
        getattr(self.client, f"bind_{mode}")(system_id="smsgw", password=password)

    def submit(self, **fields: Any) -> Any:
        """Send one submit_sm and return its submit_sm_resp."""
        fields.setdefault("source_addr", "12345")
        fields.setdefault("destination_addr", "8613800000000")
        fields.setdefault("short_message", b"hello")
        self.client.send_message(**fields)
        return self.read("submit_sm_resp")

    def send(self, command: str, **fields: Any) -> None:
        self.client.send_pdu(smpplib.smpp.make_pdu(command, client=self.client, **fields))

    def read(self, command: str) -> Any:
        """The next PDU of this command, keeping the others for later reads."""
        for index, pdu in enumerate(self.unread):
            if pdu.command == command:
                return self.unread.pop(index)
        while True:
            pdu = self.client.read_pdu()
            if pdu.command == command:
                return pdu
            self.unread.append(pdu)

    def answer(self, request: Any, status: int = 0) -> None:
        """Send the response to a request the SMSC sent us."""
        response = smpplib.smpp.make_pdu(
            f"{request.command}_resp", client=self.client, status=status
        )
        response.sequence = request.sequence
        self.client.send_pdu(response)

    def unbind(self) -> Any:
        return self.client.unbind()

    def close(self) -> None:
        self.client.disconnect()


async def call(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await trio.to_thread.run_sync(functools.partial(function, *args, **kwargs))


async def open_esme(port: int, mode: str | None = "transceiver", timeout: float = 5.0) -> Esme:
    esme: Esme = await call(Esme, port, timeout)
    if mode is not None:
        try:
            await call(esme.bind, mode)
        except BaseException:
            await call(esme.close)
            raise
    return esme


def parse_receipt(deliver: Any) -> re.Match[str]:
    match = RECEIPT.fullmatch(deliver.short_message.decode("latin1"))
    assert match is not None, deliver.short_message
    return match


async def test_bind_submit_and_receive_a_receipt() -> None:
    async with running_smsc() as smsc:
        esme = await open_esme(smsc.port)
        try:
            resp = await call(
                esme.submit,
                source_addr="12345",
                destination_addr="8613800000000",
                short_message=b"hello receipt",
                registered_delivery=1,
            )
            receipt = await call(esme.read, "deliver_sm")
            await call(esme.answer, receipt)
            await call(esme.unbind)
        finally:
            await call(esme.close)

        assert resp.status == 0
        message_id = resp.message_id.decode()
        assert receipt.esm_class == 0x04
        assert receipt.receipted_message_id.decode() == message_id
        assert receipt.message_state == 2
        # A receipt travels back: from the handset to the sender.
        assert receipt.source_addr == b"8613800000000"
        assert receipt.destination_addr == b"12345"
        fields = parse_receipt(receipt)
        assert fields["id"] == message_id
        assert (fields["stat"], fields["dlvrd"], fields["err"]) == ("DELIVRD", "001", "000")
        assert fields["text"] == "hello receipt"

        bind = await smsc.next_event("bind")
        assert (bind["mode"], bind["ok"], bind["system_id"]) == ("transceiver", True, "smsgw")
        submit = await smsc.next_event("submit_sm")
        assert submit["short_message"] == b"hello receipt".hex()
        assert (submit["source"], submit["destination"]) == ("12345", "8613800000000")
        assert (submit["registered_delivery"], submit["status"]) == (1, 0)
        assert submit["message_id"] == message_id
        deliver = await smsc.next_event("deliver_sm", kind="receipt")
        assert deliver["message_id"] == message_id
        assert deliver["tlvs"] == {"receipted_message_id": message_id, "message_state": 2}
        assert (await smsc.next_event("deliver_sm_resp"))["status"] == 0
        await smsc.next_event("unbind")
        await smsc.next_event("disconnect")
        stats = await smsc.stats()
        assert (stats["submit_sm"], stats["submit_ok"], stats["deliver_sm_ok"]) == (1, 1, 1)
    assert smsc.returncode == 0
    assert smsc.events[-1]["event"] == "stopped"


async def test_wrong_password_is_refused_with_bindfail() -> None:
    async with running_smsc(password="right") as smsc:
        esme = await open_esme(smsc.port, mode=None)
        try:
            with pytest.raises(smpplib.exceptions.PDUError) as refused:
                await call(esme.bind, "transmitter", password="wrong")
        finally:
            await call(esme.close)
        assert refused.value.args[1] == ESME_RBINDFAIL
        bind = await smsc.next_event("bind")
        assert (bind["ok"], bind["status"], bind["mode"]) == (False, ESME_RBINDFAIL, "transmitter")
        await smsc.next_event("disconnect")
        assert (await smsc.stats())["bind_failures"] == 1


async def test_message_ids_count_up_from_id_start() -> None:
    async with running_smsc(id_start=500) as smsc:
        esme = await open_esme(smsc.port, "transmitter")
        try:
            ids = [(await call(esme.submit)).message_id for _ in range(3)]
        finally:
            await call(esme.close)
        assert ids == [b"500", b"501", b"502"]
        submits = await smsc.wait_for_count("submit_sm", 3)
        assert [event["message_id"] for event in submits] == ["500", "501", "502"]


async def test_throttle_answers_the_next_n_submits_with_rthrottled() -> None:
    async with running_smsc() as smsc:
        await smsc.throttle(2)
        esme = await open_esme(smsc.port)
        try:
            statuses = [(await call(esme.submit)).status for _ in range(3)]
        finally:
            await call(esme.close)
        assert statuses == [ESME_RTHROTTLED, ESME_RTHROTTLED, 0]
        submits = await smsc.wait_for_count("submit_sm", 3)
        assert [event["message_id"] for event in submits] == [None, None, "1"]
        stats = await smsc.stats()
        assert (stats["submit_throttled"], stats["submit_ok"]) == (2, 1)


async def test_fail_takes_a_status_number_or_name_in_order() -> None:
    async with running_smsc() as smsc:
        await smsc.fail("ESME_RSYSERR", n=1)
        await smsc.fail(0x45, n=2)
        esme = await open_esme(smsc.port)
        try:
            statuses = [(await call(esme.submit)).status for _ in range(4)]
        finally:
            await call(esme.close)
        assert statuses == [ESME_RSYSERR, 0x45, 0x45, 0]
        assert (await smsc.stats())["submit_failed"] == 3


async def test_silent_leaves_submits_unanswered() -> None:
    async with running_smsc() as smsc:
        await smsc.silent(True)
        esme = await open_esme(smsc.port, timeout=0.5)
        try:
            with pytest.raises(socket.timeout):
                await call(esme.submit)
            await smsc.silent(False)
            answered = await call(esme.submit)
        finally:
            await call(esme.close)
        first, second = await smsc.wait_for_count("submit_sm", 2)
        assert (first["status"], first["message_id"]) == (None, None)
        assert second["status"] == 0
        # The answer that arrives is the second submit's, not a late one for the first.
        assert answered.sequence == second["seq"]
        assert (await smsc.stats())["submit_unanswered"] == 1


async def test_drop_destroys_every_connection() -> None:
    async with running_smsc() as smsc:
        first = await open_esme(smsc.port, "transmitter")
        second = await open_esme(smsc.port, "receiver")
        try:
            assert await smsc.drop() == 2
            for esme in (first, second):
                with pytest.raises(smpplib.exceptions.ConnectionError):
                    await call(esme.read, "deliver_sm")
        finally:
            await call(first.close)
            await call(second.close)
        await smsc.wait_for_count("disconnect", 2)
        stats = await smsc.stats()
        assert (stats["drops"], stats["sessions"]) == (2, 0)
        # The SMSC itself keeps serving.
        third = await open_esme(smsc.port)
        try:
            assert (await call(third.submit)).status == 0
        finally:
            await call(third.close)


async def test_receipt_reaches_the_receiver_of_a_transmitter_submit() -> None:
    async with running_smsc(dlr_delay=0.05) as smsc:
        transmitter = await open_esme(smsc.port, "transmitter")
        receiver = await open_esme(smsc.port, "receiver")
        try:
            resp = await call(transmitter.submit, registered_delivery=1)
            receipt = await call(receiver.read, "deliver_sm")
            await call(receiver.answer, receipt)
        finally:
            await call(transmitter.close)
            await call(receiver.close)
        assert receipt.receipted_message_id == resp.message_id
        deliver = await smsc.next_event("deliver_sm")
        receiver_bind = await smsc.next_event("bind", mode="receiver")
        assert deliver["session"] == receiver_bind["session"]


async def test_unacknowledged_receipt_is_sent_again_after_a_reconnect() -> None:
    async with running_smsc() as smsc:
        first = await open_esme(smsc.port)
        try:
            resp = await call(first.submit, registered_delivery=1)
            await call(first.read, "deliver_sm")  # read, never acknowledged
        finally:
            await call(first.close)
        disconnect = await smsc.next_event("disconnect")
        assert disconnect["requeued"] == 1

        second = await open_esme(smsc.port)
        try:
            again = await call(second.read, "deliver_sm")
            await call(second.answer, again)
        finally:
            await call(second.close)
        assert again.receipted_message_id == resp.message_id
        delivers = await smsc.wait_for_count("deliver_sm", 2)
        assert [event["attempt"] for event in delivers] == [1, 2]
        assert (await smsc.next_event("deliver_sm_resp"))["status"] == 0


async def test_hex_ids_and_the_decimal_receipt_quirk() -> None:
    async with running_smsc(id_style="hex", id_start=0xABC, receipt_id="decimal") as smsc:
        esme = await open_esme(smsc.port)
        try:
            resp = await call(esme.submit, registered_delivery=1)
            receipt = await call(esme.read, "deliver_sm")
            await call(esme.answer, receipt)
        finally:
            await call(esme.close)
        assert resp.message_id == b"00000abc"
        assert receipt.receipted_message_id == b"00000abc"
        assert parse_receipt(receipt)["id"] == str(0xABC)


async def test_undeliv_share_and_forced_outcomes() -> None:
    async with running_smsc(undeliv=1.0) as smsc:
        await smsc.dlr("EXPIRED", n=1)
        esme = await open_esme(smsc.port)
        try:
            await call(esme.submit, registered_delivery=1)
            expired = await call(esme.read, "deliver_sm")
            await call(esme.answer, expired)
            await call(esme.submit, registered_delivery=1)
            undelivered = await call(esme.read, "deliver_sm")
            await call(esme.answer, undelivered)
        finally:
            await call(esme.close)
        assert (expired.message_state, parse_receipt(expired)["stat"]) == (3, "EXPIRED")
        fields = parse_receipt(undelivered)
        assert (undelivered.message_state, fields["stat"]) == (5, "UNDELIV")
        assert (fields["dlvrd"], fields["err"]) == ("000", "001")


async def test_registered_delivery_decides_whether_a_receipt_is_sent() -> None:
    async with running_smsc() as smsc:
        esme = await open_esme(smsc.port)
        try:
            await call(esme.submit, registered_delivery=0)
            await call(esme.submit, registered_delivery=2)  # failure only; this one succeeds
            await smsc.dlr("UNDELIV", n=1)
            failed = await call(esme.submit, registered_delivery=2)
            receipt = await call(esme.read, "deliver_sm")
            await call(esme.answer, receipt)
        finally:
            await call(esme.close)
        assert receipt.receipted_message_id == failed.message_id
        assert (await smsc.stats())["receipts"] == 1


async def test_mo_waits_for_a_receiver_then_is_delivered() -> None:
    async with running_smsc() as smsc:
        queued = await smsc.mo("8613800000000", "12345", "STOP", tlvs={"user_message_reference": 9})
        assert queued is True
        esme = await open_esme(smsc.port, "receiver")
        try:
            mo = await call(esme.read, "deliver_sm")
            await call(esme.answer, mo)
        finally:
            await call(esme.close)
        assert (mo.esm_class, mo.short_message) == (0, b"STOP")
        assert (mo.source_addr, mo.destination_addr) == (b"8613800000000", b"12345")
        assert mo.user_message_reference == 9
        resp = await smsc.next_event("deliver_sm_resp")
        assert (resp["kind"], resp["status"]) == ("mo", 0)


async def test_ucs2_payload_and_tlvs_are_recorded_as_sent() -> None:
    text = "你好"
    async with running_smsc() as smsc:
        esme = await open_esme(smsc.port)
        try:
            await call(
                esme.submit,
                short_message=text.encode("utf-16-be"),
                data_coding=0x08,
                source_addr_ton=5,
                user_message_reference=7,
                sar_msg_ref_num=0x1234,
                sar_total_segments=2,
                sar_segment_seqnum=1,
            )
        finally:
            await call(esme.close)
        submit = await smsc.next_event("submit_sm")
        assert submit["short_message"] == text.encode("utf-16-be").hex()
        assert (submit["data_coding"], submit["source_ton"]) == (0x08, 5)
        assert submit["tlvs"] == {
            "user_message_reference": 7,
            "sar_msg_ref_num": 0x1234,
            "sar_total_segments": 2,
            "sar_segment_seqnum": 1,
        }


async def test_enquire_link_and_unbind_are_answered() -> None:
    async with running_smsc() as smsc:
        esme = await open_esme(smsc.port)
        try:
            await call(esme.send, "enquire_link")
            link = await call(esme.read, "enquire_link_resp")
            unbound = await call(esme.unbind)
        finally:
            await call(esme.close)
        assert (link.status, unbound.command, unbound.status) == (0, "unbind_resp", 0)
        await smsc.next_event("enquire_link")
        await smsc.next_event("unbind")
        assert smsc.count("enquire_link") == 1


async def raw_exchange(port: int, request: bytes, answer_size: int) -> bytes:
    """Send raw bytes on a new connection; return the first answer_size bytes answered."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request)
        received = b""
        with trio.fail_after(5):
            while len(received) < answer_size:
                chunk = await stream.receive_some()
                assert chunk, f"connection closed after {received!r}"
                received += chunk
    return received[:answer_size]


def header(command_id: int, sequence: int, body: bytes = b"", length: int | None = None) -> bytes:
    size = 16 + len(body) if length is None else length
    return struct.pack(">IIII", size, command_id, 0, sequence) + body


async def test_unknown_command_gets_generic_nack_and_unbound_submit_rinvbndsts() -> None:
    async with running_smsc() as smsc:
        nack = await raw_exchange(smsc.port, header(0x00000999, 7), 16)
        assert struct.unpack(">IIII", nack) == (16, 0x80000000, ESME_RINVCMDID, 7)
        # service_type, source ton/npi/addr, dest ton/npi/addr, then ten zero octets up to
        # sm_length: an empty short message.
        submit_body = b"\x00" + b"\x00\x00" + b"1\x00" + b"\x00\x00" + b"2\x00" + bytes(10)
        resp = await raw_exchange(smsc.port, header(0x00000004, 8, submit_body), 16)
        assert struct.unpack(">IIII", resp) == (16, 0x80000004, ESME_RINVBNDSTS, 8)
        assert (await smsc.next_event("submit_sm"))["status"] == ESME_RINVBNDSTS


async def test_malformed_pdu_closes_only_that_connection() -> None:
    async with running_smsc() as smsc:
        stream = await trio.open_tcp_stream("127.0.0.1", smsc.port)
        async with stream:
            await stream.send_all(header(0x00000004, 1, length=0x7FFFFFFF))
            with trio.fail_after(5):
                assert await stream.receive_some() == b""
        error = await smsc.next_event("error")
        assert "too large" in error["message"]
        await smsc.next_event("disconnect")
        esme = await open_esme(smsc.port)
        try:
            assert (await call(esme.submit)).status == 0
        finally:
            await call(esme.close)


async def test_blast_counts_every_submit_and_quiet_hides_them() -> None:
    async with running_smsc(quiet=True) as smsc:
        result = await run_blast(smsc.port, count=300, window=20)
        assert (result.submits, result.ok, result.failed) == (300, 300, 0)
        assert result.seconds > 0
        assert result.per_second == pytest.approx(300 / result.seconds, rel=0.01)
        stats = await smsc.stats()
        assert (stats["submit_sm"], stats["submit_ok"]) == (300, 300)
        assert smsc.count("submit_sm") == 0
        await smsc.next_event("bind", mode="transmitter")


async def test_blast_with_receipts_takes_every_receipt_before_it_leaves() -> None:
    # Otherwise the receipts still queued at the SMSC go to the next ESME with its system_id
    # (the gateway, in bench/smpp.py) and slow it down.
    async with running_smsc(quiet=True, dlr_delay=0.0) as smsc:
        result = await run_blast(
            smsc.port, count=500, window=64, bind="transceiver", registered_delivery=1
        )
        assert result.ok == 500
        stats = await smsc.stats()
        assert (stats["deliver_sm_ok"], stats["pending_deliveries"]) == (500, 0)


async def test_blast_reports_a_refused_bind() -> None:
    async with running_smsc() as smsc:
        with pytest.raises(SmscError, match="refused with status 13"):
            await run_blast(smsc.port, count=1, window=1, password="wrong")


async def test_refused_commands_raise() -> None:
    async with running_smsc() as smsc:
        with pytest.raises(SmscCommandError, match="unknown cmd"):
            await smsc.command({"cmd": "explode"})
        with pytest.raises(SmscCommandError, match="bad status"):
            await smsc.fail("ESME_NOPE")
        with pytest.raises(SmscCommandError, match="source"):
            await smsc.command({"cmd": "mo", "text": "x"})
        # A refused command changes nothing.
        assert (await smsc.stats())["mo"] == 0


async def test_sigterm_stops_the_smsc_cleanly() -> None:
    async with running_smsc() as smsc:
        smsc.process.terminate()
        stopped = await smsc.next_event("stopped")
        assert stopped["reason"] == "SIGTERM"
        await smsc.process.wait()
    assert smsc.returncode == 0


async def test_a_busy_port_is_a_clear_start_error() -> None:
    async with running_smsc() as first:
        with pytest.raises(SmscError, match="EADDRINUSE"):
            async with running_smsc(port=first.port):
                pytest.fail("a second SMSC cannot listen on the same port")


async def test_next_event_times_out_with_what_it_saw() -> None:
    # Real time: autojump_clock would also jump past the subprocess' start-up.
    async with running_smsc() as smsc:
        with pytest.raises(
            SmscError, match=r"no submit_sm event .*within 0.2s; last: \['listening'\]"
        ):
            await smsc.next_event("submit_sm", 0.2)


def test_options_become_smsc_arguments() -> None:
    args = SmscOptions(id_style="hex", dlr_delay=0.25, undeliv=0.5, quiet=True).args()
    pairs = dict(zip(args[0::2], args[1::2], strict=False))
    assert pairs["--id-style"] == "hex"
    assert float(pairs["--dlr-delay"]) == 0.25
    assert float(pairs["--undeliv"]) == 0.5
    assert pairs["--port"] == "0"
    assert args[-1] == "--quiet"
    with pytest.raises(ValueError):
        SmscOptions(undeliv=1.5)
    with pytest.raises(ValueError):
        SmscOptions(dlr_delay=-1)


async def test_data_sm_is_answered_and_its_payload_recorded() -> None:
    async with running_smsc() as smsc:
        esme = await open_esme(smsc.port)
        try:
            await call(
                esme.send,
                "data_sm",
                source_addr="12345",
                destination_addr="8613800000000",
                registered_delivery=1,
                message_payload=b"payload text",
            )
            resp = await call(esme.read, "data_sm_resp")
            receipt = await call(esme.read, "deliver_sm")
            await call(esme.answer, receipt)
        finally:
            await call(esme.close)
        assert resp.status == 0
        assert receipt.receipted_message_id == resp.message_id
        assert parse_receipt(receipt)["text"] == "payload text"
        data_sm = await smsc.next_event("data_sm")
        assert data_sm["tlvs"] == {"message_payload": b"payload text".hex()}
        assert data_sm["message_id"] == resp.message_id.decode()


async def test_refuse_and_bindfail_turn_connections_away() -> None:
    async with running_smsc() as smsc:
        await smsc.command({"cmd": "refuse", "on": True})
        refused = await call(Esme, smsc.port)
        try:
            with pytest.raises(smpplib.exceptions.ConnectionError):
                await call(refused.bind)
        finally:
            await call(refused.close)
        assert (await smsc.next_event("connect"))["refused"] is True

        await smsc.command({"cmd": "refuse", "on": False})
        await smsc.command({"cmd": "bindfail", "n": 1})
        first = await call(Esme, smsc.port)
        try:
            with pytest.raises(smpplib.exceptions.PDUError) as failed:
                await call(first.bind)  # the right password, refused all the same
        finally:
            await call(first.close)
        assert failed.value.args[1] == ESME_RBINDFAIL
        second = await open_esme(smsc.port)
        await call(second.close)
        binds = await smsc.wait_for_count("bind", 2)
        assert [bind["ok"] for bind in binds] == [False, True]


async def test_latency_delays_every_answer() -> None:
    async with running_smsc() as smsc:
        reply = await smsc.command({"cmd": "set", "latency": 0.3})
        assert reply["latency"] == 0.3
        esme = await open_esme(smsc.port)
        try:
            started = time.monotonic()
            resp = await call(esme.submit)
            waited = time.monotonic() - started
        finally:
            await call(esme.close)
        assert resp.status == 0
        assert waited >= 0.29


async def test_enquire_link_option_probes_bound_sessions() -> None:
    async with running_smsc(enquire_link=0.05) as smsc:
        esme = await open_esme(smsc.port)
        try:
            probe = await call(esme.read, "enquire_link")
            await call(esme.answer, probe)
            # The submit travels after the enquire_link_resp on the same connection, so its
            # answer proves that the SMSC has read the enquire_link_resp.
            await call(esme.submit)
        finally:
            await call(esme.close)
        stats = await smsc.stats()
        assert stats["enquire_link_sent"] >= 1
        assert stats["enquire_link_resp"] >= 1


async def test_temporary_deliver_errors_are_retried_permanent_ones_abandoned() -> None:
    esme_rx_t_appn, esme_rx_p_appn = 0x64, 0x65
    async with running_smsc(dlr_retry=0.05) as smsc:
        esme = await open_esme(smsc.port)
        try:
            first = await call(esme.submit, registered_delivery=1)
            receipt = await call(esme.read, "deliver_sm")
            await call(esme.answer, receipt, esme_rx_t_appn)
            retried = await call(esme.read, "deliver_sm")
            await call(esme.answer, retried)
            await call(esme.submit, registered_delivery=1)
            refused = await call(esme.read, "deliver_sm")
            await call(esme.answer, refused, esme_rx_p_appn)
        finally:
            await call(esme.close)
        assert retried.receipted_message_id == first.message_id
        await smsc.next_event("deliver_sm_resp", status=esme_rx_p_appn)
        stats = await smsc.stats()
        assert (stats["deliver_sm_sent"], stats["deliver_sm_ok"]) == (3, 1)
        assert (stats["deliver_sm_failed"], stats["deliver_sm_abandoned"]) == (2, 1)


async def test_deliver_window_holds_receipts_until_acknowledged() -> None:
    async with running_smsc(deliver_window=2) as smsc:
        esme = await open_esme(smsc.port)
        try:
            for _ in range(5):
                await call(esme.submit, registered_delivery=1)
            held = [await call(esme.read, "deliver_sm") for _ in range(2)]
            for _ in range(50):  # receipts are queued a tick after each answer
                stats = await smsc.stats()
                if stats["pending_deliveries"] + stats["outstanding_deliveries"] == 5:
                    break
                await trio.sleep(0.02)
            assert (stats["outstanding_deliveries"], stats["pending_deliveries"]) == (2, 3)
            for deliver in held:
                await call(esme.answer, deliver)
            for _ in range(3):
                await call(esme.answer, await call(esme.read, "deliver_sm"))
        finally:
            await call(esme.close)
        await smsc.wait_for_count("deliver_sm_resp", 5)
        stats = await smsc.stats()
        assert (stats["deliver_sm_sent"], stats["deliver_sm_ok"]) == (5, 5)
