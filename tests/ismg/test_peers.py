"""The ISMG simulator with independent CMPP clients from PyPI: cmppy (3.0) and pycmpp (2.0),
so it is not only our codec talking to itself. Both are blocking: each call runs in a worker
thread, bounded by its socket timeout."""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator

import pytest
import trio
from cmppy import Cmppy, SubmitReq
from pycmpp.cmpp import Cmpp
from pycmpp.handlers import CmppActiveTestReqHandler
from pycmpp.request import ActiveTestRequestInstance
from pycmpp.response import ConnectResponseInstance, SubmitResponseInstance

from smsgw.carriers.cmpp import codec
from smsgw.carriers.cmpp.codec import CmppVersion, decode_pdu
from smsgw.carriers.cmpp.msgid import format_msg_id
from tests.ismg import Ismg, running_ismg

TIMEOUT = 5.0


@pytest.fixture
async def ismg() -> AsyncIterator[Ismg]:
    async with running_ismg() as running:
        yield running
        assert running.count("crash") == 0, running.events_of("crash")


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError(f"connection closed after {len(data)} of {size} octets")
        data += chunk
    return data


def read_frame(sock: socket.socket) -> bytes:
    """One whole PDU off a blocking socket (pycmpp's own reader trusts one recv)."""
    head = _recv_exact(sock, 4)
    (length,) = struct.unpack(">I", head)
    return head + _recv_exact(sock, length - 4)


def _command_id(frame: bytes) -> int:
    command_id: int = struct.unpack_from(">I", frame, 4)[0]
    return command_id


# --- cmppy: 3.0, connect → submit → terminate per call --------------------------------------


async def test_cmppy_submits_through_the_simulator(ismg: Ismg) -> None:
    client = Cmppy("127.0.0.1", ismg.port, "901234", "secret")
    client._so.settimeout(TIMEOUT)
    request = SubmitReq(
        "901234",
        "验证码 1234",
        src_id="1069001234",
        dest_terminal_id=["8613800138000"],
        service_id="MSMS",
        valid_time="\x00" * 17,
    )
    response = await trio.to_thread.run_sync(client.request, request)
    assert response.result == 0
    login = await ismg.next_event("login")
    assert (login["version"], login["status"]) == ("3.0", 0)
    submit = await ismg.next_event("submit")
    assert submit["msg_id"] == format_msg_id(response.msg_id)
    assert (submit["text"], submit["msg_fmt"], submit["src_id"], submit["dests"]) == (
        "验证码 1234",
        8,
        "1069001234",
        ["8613800138000"],
    )
    assert (await ismg.next_event("terminate"))["by"] == "sp"


async def test_cmppy_sees_a_throttle(ismg: Ismg) -> None:
    await ismg.throttle(1)
    client = Cmppy("127.0.0.1", ismg.port, "901234", "secret")
    client._so.settimeout(TIMEOUT)
    response = await trio.to_thread.run_sync(
        client.request, SubmitReq("901234", "hi", dest_terminal_id=["8613800138000"])
    )
    assert response.result == codec.RESULT_FLOW_CONTROL


async def test_cmppy_with_a_wrong_secret_is_refused(ismg: Ismg) -> None:
    client = Cmppy("127.0.0.1", ismg.port, "901234", "wrong")
    client._so.settimeout(TIMEOUT)
    response = await trio.to_thread.run_sync(
        client.request, SubmitReq("901234", "hi", dest_terminal_id=["8613800138000"])
    )
    assert response is None  # cmppy gives up when CONNECT_RESP's status is not 0
    assert (await ismg.next_event("login"))["status"] == codec.CONNECT_AUTH_FAILED
    assert ismg.count("submit") == 0


# --- pycmpp: 2.0 (Version 0x21), long messages, heartbeats ----------------------------------


def _pycmpp_client(port: int, secret: str = "secret") -> Cmpp:
    client = Cmpp("127.0.0.1", port, "901234", secret, "1069001234", delivery=1)
    client.so.settimeout(TIMEOUT)
    client.connect()
    return client


def _pycmpp_login(client: Cmpp) -> ConnectResponseInstance:
    client.auth()
    response = ConnectResponseInstance()
    response.resolve(read_frame(client.so))
    return response


async def test_pycmpp_long_message_gets_an_id_and_a_report_per_part(ismg: Ismg) -> None:
    client = _pycmpp_client(ismg.port)
    try:
        login = await trio.to_thread.run_sync(_pycmpp_login, client)
        assert (login.status, login.version) == (0, 0x21)
        text = "这是一条超过七十个字的长短信，" * 7  # 105 characters: two parts of 64 and 41

        def submit_and_collect() -> tuple[list[SubmitResponseInstance], list[codec.Deliver]]:
            client.submit(text, ["8613800138000"])
            responses: list[SubmitResponseInstance] = []
            reports: list[codec.Deliver] = []
            while len(responses) < 2 or len(reports) < 2:
                frame = read_frame(client.so)
                if _command_id(frame) == codec.CommandId.SUBMIT_RESP:
                    response = SubmitResponseInstance()
                    response.resolve(frame)
                    responses.append(response)
                else:
                    # pycmpp has no DELIVER handler: read the 2.0 report with our codec and
                    # answer it, as pycmpp never would.
                    deliver = decode_pdu(frame, CmppVersion.V20)
                    assert isinstance(deliver, codec.Deliver)
                    reports.append(deliver)
                    answer = codec.response_for(deliver)
                    client.send(codec.encode_pdu(answer, CmppVersion.V20))
            return responses, reports

        responses, reports = await trio.to_thread.run_sync(submit_and_collect)
        assert [response.status for response in responses] == [0, 0]
        assert sorted(d.report.msg_id for d in reports if d.report) == sorted(
            response.msg_id for response in responses
        )
        message = await ismg.next_event("message")
        assert (message["text"], message["parts"]) == (text, 2)
        submits = ismg.events_of("submit")
        assert [(s["pk_total"], s["pk_number"], s["tp_pid"], s["tp_udhi"]) for s in submits] == [
            (2, 1, 1, 1),
            (2, 2, 1, 1),
        ]
        await ismg.wait_for_count("deliver_resp", 2)
    finally:
        client.close()


async def test_pycmpp_heartbeat_is_answered(ismg: Ismg) -> None:
    client = _pycmpp_client(ismg.port)
    try:
        await trio.to_thread.run_sync(_pycmpp_login, client)

        def ping() -> bytes:
            client.send(ActiveTestRequestInstance().create())
            return read_frame(client.so)

        frame = await trio.to_thread.run_sync(ping)
        assert decode_pdu(frame, CmppVersion.V20) == codec.ActiveTestResp(
            sequence_number=struct.unpack_from(">I", frame, 8)[0]
        )
        await ismg.next_event("active_test")
    finally:
        client.close()


async def test_pycmpp_broken_active_test_resp_costs_it_the_link(ismg: Ismg) -> None:
    # pycmpp answers ACTIVE_TEST with 16 octets declared as 13: the simulator reads the
    # response, and the 3 stray octets misframe pycmpp's next PDU, which ends the link
    # (a real ISMG would do no better); the simulator itself goes on.
    client = _pycmpp_client(ismg.port)
    try:
        await trio.to_thread.run_sync(_pycmpp_login, client)
        assert await ismg.active_test() == 1

        def answer_then_submit() -> None:
            frame = read_frame(client.so)
            assert _command_id(frame) == codec.CommandId.ACTIVE_TEST
            CmppActiveTestReqHandler(client, frame)()
            client.submit("hi", ["8613800138000"])

        await trio.to_thread.run_sync(answer_then_submit)
        await ismg.next_event("active_test_resp")
        error = await ismg.next_event("error")
        assert "Total_Length" in error["message"]
        await ismg.next_event("disconnect")
    finally:
        client.close()
    again = _pycmpp_client(ismg.port)
    try:
        login = await trio.to_thread.run_sync(_pycmpp_login, again)
        assert login.status == 0
    finally:
        again.close()


async def test_pycmpp_with_a_wrong_secret_gets_status_3(ismg: Ismg) -> None:
    client = _pycmpp_client(ismg.port, secret="wrong")
    try:
        login = await trio.to_thread.run_sync(_pycmpp_login, client)
        assert login.status == codec.CONNECT_AUTH_FAILED
    finally:
        client.close()
