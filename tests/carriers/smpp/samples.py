"""One instance of every PDU class, each with non-default values in every field it has."""

from smsgw.carriers.smpp import codec
from smsgw.carriers.smpp.codec import NetworkErrorCode, RawTlv, Tlvs

RECEIPT_TEXT = (
    b"id:4d2f0a sub:001 dlvrd:001 submit date:2401011200 done date:2401011201 "
    b"stat:DELIVRD err:000 text:Your code is"
)

SAMPLE_PDUS: list[codec.Pdu] = [
    codec.GenericNack(sequence_number=11, command_status=codec.ESME_RINVCMDID),
    codec.BindTransmitter(
        sequence_number=1,
        system_id="smsgw",
        password="secret",
        system_type="SMS",
        addr_ton=1,
        addr_npi=1,
        address_range="^86",
    ),
    codec.BindReceiver(sequence_number=2, system_id="rx", password="pw"),
    codec.BindTransceiver(
        sequence_number=3, system_id="trx", password="pw", interface_version=0x33
    ),
    codec.BindTransmitterResp(sequence_number=1, system_id="SMSC"),
    codec.BindReceiverResp(
        sequence_number=2, command_status=codec.ESME_RBINDFAIL, system_id="SMSC"
    ),
    codec.BindTransceiverResp(
        sequence_number=3, system_id="SMSC", tlvs=Tlvs(sc_interface_version=0x34)
    ),
    codec.Unbind(sequence_number=4),
    codec.UnbindResp(sequence_number=4),
    codec.EnquireLink(sequence_number=0x7FFFFFFF),
    codec.EnquireLinkResp(sequence_number=0x7FFFFFFF),
    codec.SubmitSm(
        sequence_number=5,
        service_type="CMT",
        source_addr_ton=5,
        source_addr_npi=0,
        source_addr="SMSGW",
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr="8613800138000",
        esm_class=codec.ESM_CLASS_UDHI,
        protocol_id=0,
        priority_flag=1,
        schedule_delivery_time="240101120000000+",
        validity_period="000001000000000R",
        registered_delivery=1,
        replace_if_present_flag=0,
        data_coding=8,
        sm_default_msg_id=0,
        short_message=b"\x05\x00\x03\x2a\x02\x01" + "您好".encode("utf-16-be"),
        tlvs=Tlvs(
            user_message_reference=0xBEEF,
            sar_msg_ref_num=42,
            sar_total_segments=2,
            sar_segment_seqnum=1,
            more_messages_to_send=1,
            unknown=(RawTlv(tag=0x1400, value=b"vendor"), RawTlv(tag=0x0005, value=b"")),
        ),
    ),
    codec.SubmitSm(
        sequence_number=6,
        source_addr="10690000",
        destination_addr="+447700900123",
        tlvs=Tlvs(message_payload=b"x" * 600, payload_type=0),
    ),
    codec.SubmitSmResp(sequence_number=5, message_id="0a1b2c3d"),
    codec.SubmitSmResp(sequence_number=6, command_status=codec.ESME_RTHROTTLED),
    codec.DeliverSm(
        sequence_number=7,
        source_addr="8613800138000",
        destination_addr="SMSGW",
        esm_class=codec.ESM_CLASS_DELIVERY_RECEIPT,
        short_message=RECEIPT_TEXT,
        tlvs=Tlvs(
            receipted_message_id="4d2f0a",
            message_state=codec.MessageState.DELIVERED,
            network_error_code=NetworkErrorCode(network_type=3, error_code=0x0102),
        ),
    ),
    codec.DeliverSmResp(sequence_number=7),
    codec.DataSm(
        sequence_number=8,
        service_type="WAP",
        source_addr_ton=1,
        source_addr_npi=1,
        source_addr="4915112345678",
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr="4915187654321",
        esm_class=3,
        registered_delivery=1,
        data_coding=4,
        tlvs=Tlvs(message_payload=b"\x00\x01binary", user_message_reference=9),
    ),
    codec.DataSmResp(
        sequence_number=8,
        command_status=codec.ESME_RDELIVERYFAILURE,
        message_id="m-8",
        tlvs=Tlvs(delivery_failure_reason=2, additional_status_info_text="absent subscriber"),
    ),
]


def sample_stream() -> bytes:
    return b"".join(codec.encode_pdu(pdu) for pdu in SAMPLE_PDUS)
