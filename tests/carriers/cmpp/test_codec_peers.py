"""The CMPP codec against two independent implementations from PyPI: cmppy (3.0) and pycmpp
(2.0). Each encodes, ours decodes, and the other way round."""

from typing import Any

import pytest
from cmppy import ConnectReq, SubmitReq, parse_response
from pycmpp.request import ConnectRequestInstance, SubmitRequestInstance
from pycmpp.response import (
    ActiveTestResponseInstance,
    ConnectResponseInstance,
    SubmitResponseInstance,
)

from smsgw.carriers.cmpp import auth, codec
from smsgw.carriers.cmpp.codec import CmppVersion, decode_pdu, encode_pdu
from smsgw.carriers.cmpp.text import Concat, decode_content, split_udh

V20, V30 = CmppVersion.V20, CmppVersion.V30


# --- cmppy (3.0) ---------------------------------------------------------------------------


def test_cmppy_connect_is_read_and_authenticates() -> None:
    request = ConnectReq("901234", "secret")
    pdu = decode_pdu(request.message, V30)
    assert isinstance(pdu, codec.Connect)
    assert (pdu.source_addr, pdu.version) == ("901234", 0x30)
    assert pdu.authenticator_source == request.authenticator_source
    assert auth.check_authenticator_source(pdu, "secret")
    assert not auth.check_authenticator_source(pdu, "other")


def test_cmppy_submit_is_read() -> None:
    request = SubmitReq(
        "901234",
        "验证码 1234",
        src_id="1069001234",
        dest_terminal_id=["8613800138000", "8613900139000"],
        registered_delivery=1,
        service_id="MSMS",
        fee_terminal_id="8613800138000",
        fee_terminal_type=1,
        dest_terminal_type=1,
        feecode="000010",
        linkid="LINK",
    )
    pdu = decode_pdu(request.message, V30)
    assert pdu == codec.Submit(
        sequence_number=request.sequence,
        registered_delivery=1,
        service_id="MSMS",
        fee_user_type=2,
        fee_terminal_id="8613800138000",
        fee_terminal_type=1,
        msg_fmt=8,
        msg_src="901234",
        fee_type="01",
        fee_code="000010",
        src_id="1069001234",
        dest_terminal_ids=("8613800138000", "8613900139000"),
        dest_terminal_type=1,
        msg_content="验证码 1234".encode("utf-16-be"),
        link_id="LINK",
    )


def test_cmppy_reads_our_responses() -> None:
    request = decode_pdu(ConnectReq("901234", "secret").message, V30)
    assert isinstance(request, codec.Connect)
    response = auth.connect_response(request, 0, "secret", V30)
    parsed: Any = parse_response(encode_pdu(response, V30))
    assert (parsed.status, parsed.authenticator_ISMG, parsed.version) == (
        0,
        response.authenticator_ismg,
        0x30,
    )
    # cmppy's own (disabled) check: MD5(raw status + AuthenticatorSource + secret).
    import hashlib

    assert (
        parsed.authenticator_ISMG
        == hashlib.md5(parsed.raw_status + request.authenticator_source + b"secret").digest()
    )
    submit_resp = codec.SubmitResp(sequence_number=77, msg_id=0xBF300001E2400007, result=8)
    parsed = parse_response(encode_pdu(submit_resp, V30))
    assert (parsed.sequence, parsed.msg_id, parsed.result) == (77, 0xBF300001E2400007, 8)
    parsed = parse_response(encode_pdu(codec.TerminateResp(sequence_number=5), V30))
    assert (parsed.command_id, parsed.sequence, parsed.length) == (0x80000002, 5, 12)


# --- pycmpp (2.0) --------------------------------------------------------------------------


def test_pycmpp_connect_is_read_and_authenticates() -> None:
    request = ConnectRequestInstance()
    data = request.create("901234", "secret")
    pdu = decode_pdu(data, V20)
    assert isinstance(pdu, codec.Connect)
    assert (pdu.source_addr, pdu.version) == ("901234", 0x21)
    assert CmppVersion.from_octet(pdu.version) is V20
    assert pdu.authenticator_source == request.auth_source
    assert auth.check_authenticator_source(pdu, "secret")


def test_pycmpp_long_submit_is_read() -> None:
    udh = bytes.fromhex("0500032a0302")
    data = SubmitRequestInstance().create(
        msg_src="901234",
        msg_content="第二部分",
        dest_terminal_id=["8613800138000"],
        msg_head=udh,
        src_id="1069001234",
        pk_total=3,
        pk_number=2,
        registered_delivery=1,
        tp_pid=1,
        tp_udhi=1,
    )
    pdu = decode_pdu(data, V20)
    assert isinstance(pdu, codec.Submit)
    assert (pdu.pk_total, pdu.pk_number, pdu.tp_pid, pdu.tp_udhi, pdu.msg_fmt) == (3, 2, 1, 1, 8)
    assert (pdu.fee_user_type, pdu.fee_type, pdu.fee_code) == (2, "01", "000000")
    assert (pdu.msg_src, pdu.src_id, pdu.dest_terminal_ids) == (
        "901234",
        "1069001234",
        ("8613800138000",),
    )
    concat, payload = split_udh(pdu.msg_content)
    assert concat == Concat(0x2A, 3, 2)
    assert decode_content(pdu.msg_fmt, payload) == "第二部分"


def test_pycmpp_reads_our_submit() -> None:
    submit = codec.Submit(
        sequence_number=12,
        pk_total=2,
        pk_number=2,
        registered_delivery=1,
        service_id="MSMS",
        fee_user_type=2,
        tp_udhi=1,
        msg_fmt=8,
        msg_src="901234",
        src_id="1069001234",
        dest_terminal_ids=("8613800138000",),
        msg_content=bytes.fromhex("050003070202") + "你好".encode("utf-16-be"),
    )
    resolved = SubmitRequestInstance().resolve(encode_pdu(submit, V20))
    assert resolved["seq_id"] == 12
    assert (resolved["pk_total"], resolved["pk_number"], resolved["register_delivery"]) == (
        2,
        2,
        1,
    )
    assert resolved["msg_src"] == "901234"
    assert resolved["src_id"].rstrip("\x00") == "1069001234"
    assert resolved["service_id"].rstrip("\x00") == "MSMS"
    assert resolved["dest_terminal_id"].rstrip("\x00") == "8613800138000"
    assert resolved["msg_head"] == "\x05\x00\x03\x07\x02\x02"
    assert resolved["msg_content"] == "你好"
    assert resolved["reserve"] == "\x00" * 8


@pytest.mark.parametrize("status", [0, 3])
def test_pycmpp_reads_our_connect_resp(status: int) -> None:
    request = decode_pdu(ConnectRequestInstance().create("901234", "secret"), V20)
    assert isinstance(request, codec.Connect)
    response = auth.connect_response(request, status, "secret", V20)
    parsed = ConnectResponseInstance()
    parsed.resolve(encode_pdu(response, V20))
    assert (parsed.status, parsed.authenticator_ISMG, parsed.version) == (
        status,
        response.authenticator_ismg,
        0x20,
    )
    assert parsed.seq_id == request.sequence_number


def test_pycmpp_reads_our_submit_resp() -> None:
    parsed = SubmitResponseInstance()
    parsed.resolve(encode_pdu(codec.SubmitResp(sequence_number=3, msg_id=99, result=8), V20))
    assert (parsed.seq_id, parsed.msg_id, parsed.status) == (3, 99, 8)


def test_pycmpp_active_test_resp_quirk() -> None:
    # pycmpp declares 13 octets but writes the 4 ASCII octets "0x00" as the body: the first
    # 13 are a response whose Reserved octet is "0"; the 3 stray octets break the framing.
    data = ActiveTestResponseInstance().create(4)
    assert len(data) == 16
    assert decode_pdu(data[:13], V20) == codec.ActiveTestResp(sequence_number=4, reserved=0x30)
    conn = codec.CmppConnection(V20)
    conn.receive_data(data + encode_pdu(codec.ActiveTest(sequence_number=5)))
    assert conn.next_event() == codec.ActiveTestResp(sequence_number=4, reserved=0x30)
    with pytest.raises(codec.CmppFramingError):
        conn.next_event()
