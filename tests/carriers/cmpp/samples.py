"""One instance of every CMPP PDU class, with non-default values in the fields it has, each
valid in both versions (terminal ids fit 21 octets, LinkID fits 2.0's 8-octet Reserve)."""

from smsgw.carriers.cmpp import codec
from smsgw.carriers.cmpp.codec import StatusReport

SAMPLE_PDUS: list[codec.Pdu] = [
    codec.Connect(
        sequence_number=1,
        source_addr="901234",
        authenticator_source=bytes(range(16)),
        version=0x30,
        timestamp=1130120000,
    ),
    codec.ConnectResp(
        sequence_number=1, status=3, authenticator_ismg=bytes(range(16, 32)), version=0x30
    ),
    codec.Terminate(sequence_number=2),
    codec.TerminateResp(sequence_number=2),
    codec.ActiveTest(sequence_number=0x7FFFFFFF),
    codec.ActiveTestResp(sequence_number=0x7FFFFFFF, reserved=0),
    codec.Submit(
        sequence_number=5,
        pk_total=2,
        pk_number=1,
        registered_delivery=1,
        msg_level=1,
        service_id="MSMS",
        fee_user_type=2,
        fee_terminal_id="8613800138001",
        tp_pid=1,
        tp_udhi=1,
        msg_fmt=8,
        msg_src="901234",
        fee_type="02",
        fee_code="000010",
        valid_time="261130120000032+",
        at_time="261130110000032+",
        src_id="1069001234",
        dest_terminal_ids=("8613800138000", "8613900139000"),
        msg_content=b"\x05\x00\x03\x2a\x02\x01" + "您好".encode("utf-16-be"),
        link_id="L1",
    ),
    codec.SubmitResp(sequence_number=5, msg_id=0xBF300001E2400007, result=8),
    codec.Deliver(
        sequence_number=6,
        msg_id=0xBF300001E2400008,
        dest_id="1069001234",
        service_id="MSMS",
        tp_pid=0,
        tp_udhi=0,
        msg_fmt=15,
        src_terminal_id="8613800138000",
        registered_delivery=0,
        msg_content="你好".encode("gb18030"),
        link_id="L2",
    ),
    codec.DeliverResp(sequence_number=6, msg_id=0xBF300001E2400008, result=0),
]

SAMPLE_REPORT = codec.Deliver(
    sequence_number=7,
    msg_id=0xBF300001E2400009,
    dest_id="1069001234",
    service_id="MSMS",
    src_terminal_id="8613800138000",
    registered_delivery=1,
    report=StatusReport(
        msg_id=0xBF300001E2400007,
        stat="DELIVRD",
        submit_time="2611301200",
        done_time="2611301201",
        dest_terminal_id="8613800138000",
        smsc_sequence=42,
    ),
)
