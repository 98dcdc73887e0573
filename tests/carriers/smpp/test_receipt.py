from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smsgw.carriers.smpp import codec
from smsgw.carriers.smpp.codec import MessageState, NetworkErrorCode, Tlvs
from smsgw.carriers.smpp.receipt import (
    DeliveryReceipt,
    parse_receipt_date,
    parse_receipt_text,
    receipt_from_pdu,
    state_from_stat,
)

from .samples import RECEIPT_TEXT

STANDARD = (
    "id:0123456789 sub:001 dlvrd:001 submit date:2401011200 done date:2401011201 "
    "stat:DELIVRD err:000 text:Your code is 4829"
)


def test_standard_receipt() -> None:
    assert parse_receipt_text(STANDARD) == DeliveryReceipt(
        message_id="0123456789",
        submitted=1,
        delivered=1,
        submit_date="2401011200",
        done_date="2401011201",
        stat="DELIVRD",
        err="000",
        text="Your code is 4829",
    )


def test_keys_in_any_case_and_stat_is_upper_cased() -> None:
    receipt = parse_receipt_text("ID:ab12 SUB:1 DLVRD:0 Submit Date:2401011200 STAT:undeliv Err:5")
    assert receipt.message_id == "ab12"
    assert (receipt.submitted, receipt.delivered) == (1, 0)
    assert receipt.submit_date == "2401011200"
    assert receipt.stat == "UNDELIV"
    assert receipt.err == "5"
    assert receipt.state is MessageState.UNDELIVERABLE
    assert not receipt.is_delivered


def test_missing_and_reordered_fields() -> None:
    receipt = parse_receipt_text("stat:EXPIRED id:77")
    assert receipt == DeliveryReceipt(message_id="77", stat="EXPIRED")
    assert receipt.state is MessageState.EXPIRED


def test_underscore_date_keys_and_seconds() -> None:
    receipt = parse_receipt_text(
        "id:1 submit_date:240101120059 done_date:240101120100 stat:DELIVRD"
    )
    assert (receipt.submit_date, receipt.done_date) == ("240101120059", "240101120100")
    assert parse_receipt_date(receipt.done_date) == datetime(2024, 1, 1, 12, 1, 0)


def test_text_runs_to_the_end_and_is_not_parsed() -> None:
    receipt = parse_receipt_text("id:9 stat:DELIVRD text:fake stat:UNDELIV id:0")
    assert (receipt.message_id, receipt.stat) == ("9", "DELIVRD")
    assert receipt.text == "fake stat:UNDELIV id:0"


def test_first_occurrence_wins() -> None:
    assert parse_receipt_text("id:1 id:2 stat:DELIVRD").message_id == "1"


def test_empty_values_are_none() -> None:
    receipt = parse_receipt_text("id: sub: dlvrd:abc stat:DELIVRD err:")
    assert receipt.message_id is None
    assert receipt.submitted is None
    assert receipt.delivered is None  # not a number
    assert receipt.err is None


@pytest.mark.parametrize("text", ["", "hello there", "ident:5 status:ok", ":::"])
def test_text_without_fields_gives_an_empty_receipt(text: str) -> None:
    receipt = parse_receipt_text(text)
    assert receipt == DeliveryReceipt()
    assert receipt.state is None
    assert receipt.stat_word == "UNKNOWN"


def test_key_must_start_a_word() -> None:
    # "paid:" contains "id:" but is not the id field.
    assert parse_receipt_text("paid:5 id:6").message_id == "6"


@pytest.mark.parametrize(
    ("stat", "state"),
    [
        ("DELIVRD", MessageState.DELIVERED),
        ("delivered", MessageState.DELIVERED),
        ("UNDELIV", MessageState.UNDELIVERABLE),
        ("EXPIRED", MessageState.EXPIRED),
        ("DELETED", MessageState.DELETED),
        ("ACCEPTD", MessageState.ACCEPTED),
        ("REJECTD", MessageState.REJECTED),
        ("ENROUTE", MessageState.ENROUTE),
        ("UNKNOWN", MessageState.UNKNOWN),
        ("WHATEVER", None),
        (None, None),
    ],
)
def test_state_from_stat(stat: str | None, state: MessageState | None) -> None:
    assert state_from_stat(stat) is state


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("2401011200", datetime(2024, 1, 1, 12, 0)),
        ("991231235959", datetime(1999, 12, 31, 23, 59, 59)),
        ("2413011200", None),  # month 13
        ("24010112", None),
        ("24010112000", None),
        ("abcdefghij", None),
        (None, None),
    ],
)
def test_parse_receipt_date(value: str | None, parsed: datetime | None) -> None:
    assert parse_receipt_date(value) == parsed


# --- from PDUs ------------------------------------------------------------------------------


def test_receipt_from_deliver_sm_prefers_the_tlvs() -> None:
    pdu = codec.DeliverSm(
        esm_class=codec.ESM_CLASS_DELIVERY_RECEIPT,
        short_message=b"id:1234 stat:DELIVRD err:000",
        tlvs=Tlvs(
            receipted_message_id="4d2",  # the same id in hex, as the submit_sm_resp gave it
            message_state=MessageState.UNDELIVERABLE,
            network_error_code=NetworkErrorCode(network_type=3, error_code=1),
        ),
    )
    receipt = receipt_from_pdu(pdu)
    assert receipt is not None
    assert receipt.message_id == "4d2"
    assert receipt.stat == "DELIVRD"
    assert receipt.state is MessageState.UNDELIVERABLE
    assert receipt.network_error == NetworkErrorCode(network_type=3, error_code=1)


def test_receipt_from_deliver_sm_text_only() -> None:
    pdu = codec.DeliverSm(esm_class=codec.ESM_CLASS_DELIVERY_RECEIPT, short_message=RECEIPT_TEXT)
    receipt = receipt_from_pdu(pdu)
    assert receipt is not None
    assert (receipt.message_id, receipt.stat, receipt.is_delivered) == ("4d2f0a", "DELIVRD", True)


def test_receipt_with_only_tlvs_reports_the_tlv_state_word() -> None:
    pdu = codec.DeliverSm(tlvs=Tlvs(receipted_message_id="x1", message_state=MessageState.EXPIRED))
    receipt = receipt_from_pdu(pdu)
    assert receipt is not None
    assert (receipt.message_id, receipt.stat, receipt.stat_word) == ("x1", None, "EXPIRED")


def test_receipt_in_message_payload_and_ucs2() -> None:
    pdu = codec.DataSm(
        esm_class=codec.ESM_CLASS_DELIVERY_RECEIPT,
        data_coding=8,
        tlvs=Tlvs(message_payload="id:55 stat:REJECTD".encode("utf-16-be")),
    )
    receipt = receipt_from_pdu(pdu)
    assert receipt is not None
    assert (receipt.message_id, receipt.state) == ("55", MessageState.REJECTED)


def test_unknown_message_state_falls_back_to_the_stat_word() -> None:
    pdu = codec.DeliverSm(
        esm_class=codec.ESM_CLASS_DELIVERY_RECEIPT,
        short_message=b"id:1 stat:DELIVRD",
        tlvs=Tlvs(message_state=99),
    )
    receipt = receipt_from_pdu(pdu)
    assert receipt is not None
    assert receipt.state is MessageState.DELIVERED


def test_mobile_originated_message_is_not_a_receipt() -> None:
    assert receipt_from_pdu(codec.DeliverSm(short_message=b"id:1 stat:DELIVRD")) is None


@given(st.text(max_size=300))
def test_parse_never_fails(text: str) -> None:
    receipt = parse_receipt_text(text)
    assert isinstance(receipt.stat_word, str)


@given(st.binary(max_size=300), st.integers(0, 255))
def test_receipt_from_any_payload(payload: bytes, data_coding: int) -> None:
    pdu = codec.DeliverSm(esm_class=0x04, data_coding=data_coding, short_message=payload[:254])
    assert receipt_from_pdu(pdu) is not None
