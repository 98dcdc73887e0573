"""A001 parsing and validation, B001 aggregation, JSON unstructuring, push bodies."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsgw.encoding import count_segments
from smsgw.protocol.messages import (
    Ack,
    AnswerTooLarge,
    BodyError,
    Delivery,
    ItemResult,
    ReceiptItem,
    StatusReportItem,
    SubmitLimits,
    SubmitResponse,
    converter,
    encode_answer,
    encode_json,
    error_response,
    parse_ack,
    parse_receipts,
    parse_status_reports,
    parse_submit,
    parse_submit_response,
    submit_response,
)
from smsgw.protocol.status import Status

NOW = 1_700_000_000_000
DAY_MS = 86_400_000
LIMITS = SubmitLimits(max_batch=1000, max_segments=10, max_schedule_ms=30 * DAY_MS)


def item(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"phone": "13800000000", "message": "hello", "msgid": "m1", "msgtype": 1}
    base.update(fields)
    return {key: value for key, value in base.items() if value is not ...}


def parse(body: Any, limits: SubmitLimits = LIMITS) -> list[Delivery | ItemResult]:
    return parse_submit(json.dumps(body).encode(), limits, NOW)


def only_result(body: Any) -> ItemResult:
    (slot,) = parse(body)
    assert isinstance(slot, ItemResult), slot
    return slot


def only_delivery(body: Any) -> Delivery:
    (slot,) = parse(body)
    assert isinstance(slot, Delivery), slot
    return slot


def body_error(body: bytes, limits: SubmitLimits = LIMITS) -> BodyError:
    with pytest.raises(BodyError) as info:
        parse_submit(body, limits, NOW)
    return info.value


# --- shapes -------------------------------------------------------------------------------


def test_array_of_items() -> None:
    slots = parse([item(msgid="a"), item(msgid="b", phone="13900000000")])
    assert slots == [
        Delivery("a", "13800000000", "hello", 1, None, 1),
        Delivery("b", "13900000000", "hello", 1, None, 1),
    ]


def test_one_item_object() -> None:
    assert parse(item()) == [Delivery("m1", "13800000000", "hello", 1, None, 1)]


@pytest.mark.parametrize("key", ["data", "items", "list"])
def test_object_holding_one_array(key: str) -> None:
    slots = parse({key: [item(msgid="a"), item(msgid="b")]})
    assert [slot.msgid for slot in slots] == ["a", "b"]
    assert all(isinstance(slot, Delivery) for slot in slots)


def test_unknown_fields_are_ignored() -> None:
    assert isinstance(only_delivery(item(extra="x", sign="shop")), Delivery)


@pytest.mark.parametrize("body", [b"5", b'"text"', b"null", b"true"])
def test_other_shapes_are_refused(body: bytes) -> None:
    error = body_error(body)
    assert error.status is Status.BAD_BODY
    assert "array" in str(error)


@pytest.mark.parametrize("body", [b"[]", b'{"data": []}'])
def test_empty_batch(body: bytes) -> None:
    error = body_error(body)
    assert error.status is Status.BAD_BODY
    assert "empty" in str(error)


@pytest.mark.parametrize(
    "body", [b"", b"{", b"[1,]", b"{'a': 1}", b"[NaN]", b"[Infinity]", b"1" * 5000]
)
def test_not_json(body: bytes) -> None:
    assert body_error(body).status is Status.BAD_BODY


@pytest.mark.parametrize("body", [b"\xff[]", b'[{"message": "\xc3"}]', b"\xed\xa0\x80"])
def test_invalid_utf8(body: bytes) -> None:
    error = body_error(body)
    assert error.status is Status.BAD_BODY
    assert "UTF-8" in str(error)


def test_utf16_is_not_utf8() -> None:
    body = json.dumps([item()]).encode("utf-16")
    assert body_error(body).status is Status.BAD_BODY


def test_byte_order_mark_is_tolerated() -> None:
    slots = parse_submit(b"\xef\xbb\xbf" + json.dumps(item()).encode(), LIMITS, NOW)
    assert isinstance(slots[0], Delivery)


@pytest.mark.parametrize("opening", ["[", '{"a":'])
def test_deep_nesting(opening: str) -> None:
    error = body_error((opening * 100_000).encode())
    assert error.status is Status.BAD_BODY


def test_deep_nesting_inside_an_item() -> None:
    body = '[{"phone": ' + "[" * 100_000 + "]" * 100_000 + "}]"
    assert body_error(body.encode()).status is Status.BAD_BODY


def test_item_that_is_not_an_object() -> None:
    slots = parse([item(msgid="a"), 5, "x", [item()]])
    assert isinstance(slots[0], Delivery)
    for slot in slots[1:]:
        assert isinstance(slot, ItemResult)
        assert slot.status is Status.INVALID_ITEM
        assert slot.error is not None and "object" in slot.error


# --- batch limits -------------------------------------------------------------------------


def test_batch_at_max_is_accepted() -> None:
    limits = SubmitLimits(max_batch=3, max_segments=10, max_schedule_ms=DAY_MS)
    slots = parse([item(msgid="a", phone="13800000001,13800000002"), item(msgid="b")], limits)
    assert len(slots) == 3


def test_batch_over_max_items() -> None:
    limits = SubmitLimits(max_batch=3, max_segments=10, max_schedule_ms=DAY_MS)
    error = body_error(json.dumps([item(msgid=str(i)) for i in range(4)]).encode(), limits)
    assert error.status is Status.BODY_TOO_LARGE
    assert "SMSGW_MAX_BATCH" in str(error)


def test_batch_over_max_counts_phones() -> None:
    limits = SubmitLimits(max_batch=3, max_segments=10, max_schedule_ms=DAY_MS)
    phones = ",".join(f"1380000000{i}" for i in range(4))
    error = body_error(json.dumps(item(phone=phones)).encode(), limits)
    assert error.status is Status.BODY_TOO_LARGE
    assert "SMSGW_MAX_BATCH" in str(error)


def test_batch_over_max_counts_phones_then_other_items() -> None:
    limits = SubmitLimits(max_batch=2, max_segments=10, max_schedule_ms=DAY_MS)
    body = json.dumps([item(phone="13800000001,13800000002"), 5]).encode()
    assert body_error(body, limits).status is Status.BODY_TOO_LARGE


def test_huge_phone_list_is_refused_before_it_is_split() -> None:
    body = json.dumps(item(phone="1," * 400_000)).encode()
    started = time.perf_counter()
    assert body_error(body).status is Status.BODY_TOO_LARGE
    assert time.perf_counter() - started < 0.5


def test_batch_over_max_counts_invalid_slots_too() -> None:
    limits = SubmitLimits(max_batch=2, max_segments=10, max_schedule_ms=DAY_MS)
    error = body_error(json.dumps([item(message=""), 1, 2]).encode(), limits)
    assert error.status is Status.BODY_TOO_LARGE


# --- phones -------------------------------------------------------------------------------


def test_comma_separated_phones_are_separate_deliveries() -> None:
    slots = parse(item(phone="13800000000, +8613900000000 ,13700000000"))
    assert [slot.phone for slot in slots] == ["13800000000", "+8613900000000", "13700000000"]
    assert all(isinstance(slot, Delivery) and slot.msgid == "m1" for slot in slots)


def test_spaces_inside_a_phone_are_removed() -> None:
    assert only_delivery(item(phone="+86 138 0000 0000")).phone == "+8613800000000"


def test_phone_as_number() -> None:
    assert only_delivery(item(phone=13800000000)).phone == "13800000000"


@pytest.mark.parametrize("phone", ["12345", "+12345", "1" * 20, "+" + "9" * 20])
def test_phone_boundaries_accepted(phone: str) -> None:
    assert only_delivery(item(phone=phone)).phone == phone


@pytest.mark.parametrize(
    "phone", ["12ab", "1234", "1" * 21, "++12345", "12345+", "", "١٢٣٤٥٦", "-12345", "123-456"]
)
def test_invalid_phone(phone: str) -> None:
    result = only_result(item(phone=phone))
    assert result.status is Status.INVALID_ITEM
    assert result.error is not None and result.error.startswith("phone:")
    assert result.msgid == "m1"


def test_invalid_phone_message_quotes_it() -> None:
    assert only_result(item(phone="12ab")).error == (
        "phone: '12ab' is not 5-20 digits (with an optional '+')"
    )


def test_only_the_bad_phone_of_a_list_fails() -> None:
    good, bad, empty = parse(item(phone="13800000000,12ab,"))
    assert isinstance(good, Delivery)
    assert isinstance(bad, ItemResult) and bad.phone == "12ab"
    assert isinstance(empty, ItemResult) and empty.phone == ""
    assert bad.status is empty.status is Status.INVALID_ITEM


@pytest.mark.parametrize("phone", [None, True, 1.5, ["13800000000"], {"n": 1}])
def test_phone_of_wrong_type(phone: Any) -> None:
    result = only_result(item(phone=phone))
    assert result.status is Status.INVALID_ITEM
    assert result.error is not None and result.error.startswith("phone: must be a string")


def test_negative_phone_number() -> None:
    assert only_result(item(phone=-13800000000)).status is Status.INVALID_ITEM


def test_missing_phone() -> None:
    result = only_result(item(phone=...))
    assert result.error == "phone: required field missing"
    assert result.phone == ""


# --- message ------------------------------------------------------------------------------


def test_empty_message() -> None:
    result = only_result(item(message=""))
    assert result.status is Status.INVALID_ITEM
    assert result.error == "message: must not be empty"


@pytest.mark.parametrize("message", [None, 5, ["hi"], {"text": "hi"}])
def test_message_of_wrong_type(message: Any) -> None:
    result = only_result(item(message=message))
    assert result.status is Status.INVALID_ITEM
    assert result.error is not None and result.error.startswith("message: must be a string")


def test_missing_message() -> None:
    assert only_result(item(message=...)).error == "message: required field missing"


def test_message_with_lone_surrogate() -> None:
    body = json.dumps(item(message="x")).replace('"x"', '"a\\ud800b"').encode()
    (slot,) = parse_submit(body, LIMITS, NOW)
    assert isinstance(slot, ItemResult) and slot.status is Status.INVALID_ITEM
    assert slot.error is not None and slot.error.startswith("message:")


def test_message_segments_counted() -> None:
    text = "é" * 200 + "中"
    assert only_delivery(item(message=text)).segments == count_segments(text)


def test_message_at_max_segments() -> None:
    limits = SubmitLimits(max_batch=10, max_segments=2, max_schedule_ms=DAY_MS)
    text = "a" * 300
    assert count_segments(text) == 2
    (slot,) = parse(item(message=text), limits)
    assert isinstance(slot, Delivery) and slot.segments == 2


def test_message_too_long() -> None:
    text = "a" * 2000
    assert count_segments(text) > LIMITS.max_segments
    slots = parse(item(message=text, phone="13800000000,13900000000"))
    for slot in slots:
        assert isinstance(slot, ItemResult)
        assert slot.status is Status.MESSAGE_TOO_LONG
        assert slot.error is not None and slot.error.startswith("message:")
        assert str(count_segments(text)) in slot.error


# --- msgid --------------------------------------------------------------------------------


def test_msgid_as_number() -> None:
    assert only_delivery(item(msgid=12345)).msgid == "12345"


@pytest.mark.parametrize("msgid", ["x", "x" * 64])
def test_msgid_length_boundaries_accepted(msgid: str) -> None:
    assert only_delivery(item(msgid=msgid)).msgid == msgid


@pytest.mark.parametrize("msgid", ["", "x" * 65])
def test_msgid_length(msgid: str) -> None:
    result = only_result(item(msgid=msgid))
    assert result.status is Status.INVALID_ITEM
    assert result.error is not None and result.error.startswith("msgid: must be 1-64")


def test_long_msgid_is_echoed_shortened() -> None:
    result = only_result(item(msgid="x" * 10_000))
    assert len(result.msgid) < 100 and result.msgid.startswith("x" * 64)


@pytest.mark.parametrize("msgid", [None, True, 1.5, ["a"], {"a": 1}])
def test_msgid_of_wrong_type(msgid: Any) -> None:
    result = only_result(item(msgid=msgid))
    assert result.status is Status.INVALID_ITEM
    assert result.error is not None and result.error.startswith("msgid:")
    assert result.msgid == ""


def test_missing_msgid() -> None:
    assert only_result(item(msgid=...)).error == "msgid: required field missing"


# --- msgtype ------------------------------------------------------------------------------


@pytest.mark.parametrize(("given", "expected"), [(1, 1), (2, 2), ("1", 1), ("2", 2)])
def test_msgtype_number_or_string(given: Any, expected: int) -> None:
    assert only_delivery(item(msgtype=given)).msgtype == expected


@pytest.mark.parametrize("msgtype", [0, 3, "3", "01", "", None, True, 1.5, "one"])
def test_invalid_msgtype(msgtype: Any) -> None:
    result = only_result(item(msgtype=msgtype))
    assert result.status is Status.INVALID_ITEM
    assert result.error is not None and result.error.startswith("msgtype: must be 1")


def test_missing_msgtype() -> None:
    assert only_result(item(msgtype=...)).error == "msgtype: required field missing"


# --- sendtime -----------------------------------------------------------------------------


@pytest.mark.parametrize("sendtime", [..., None, "", 0, NOW - 1, NOW, str(NOW), "0"])
def test_sendtime_missing_past_or_now_means_now(sendtime: Any) -> None:
    assert only_delivery(item(sendtime=sendtime)).send_at_ms is None


@pytest.mark.parametrize("sendtime", [NOW + 1, str(NOW + 60_000), NOW + 30 * DAY_MS])
def test_sendtime_in_the_future_is_scheduled(sendtime: Any) -> None:
    assert only_delivery(item(sendtime=sendtime)).send_at_ms == int(sendtime)


@pytest.mark.parametrize("sendtime", [NOW + 30 * DAY_MS + 1, str(NOW + 365 * DAY_MS), 10**30])
def test_sendtime_too_far(sendtime: Any) -> None:
    result = only_result(item(sendtime=sendtime))
    assert result.status is Status.SENDTIME_TOO_FAR
    assert result.error is not None and result.error.startswith("sendtime:")


@pytest.mark.parametrize("sendtime", [-1, "-1", "12:00", "1.5", 1.5, True, [1], "9" * 30, "１２"])
def test_invalid_sendtime(sendtime: Any) -> None:
    result = only_result(item(sendtime=sendtime))
    assert result.status is Status.INVALID_ITEM
    assert result.error is not None and result.error.startswith("sendtime:")


def test_every_problem_of_an_item_is_named() -> None:
    result = only_result(
        {"phone": "12ab", "message": "", "msgid": "", "msgtype": 9, "sendtime": "x"}
    )
    assert result.status is Status.INVALID_ITEM
    assert result.error is not None
    for field in ["phone:", "message:", "msgid:", "msgtype:", "sendtime:"]:
        assert field in result.error


def test_invalid_field_wins_over_limits() -> None:
    result = only_result(item(phone="12ab", message="a" * 2000))
    assert result.status is Status.INVALID_ITEM
    assert result.error is not None and "phone:" in result.error and "message:" in result.error


# --- B001 ---------------------------------------------------------------------------------


def test_all_stored_is_status_0() -> None:
    slots = parse([item(msgid="a"), item(msgid="b")])
    response = submit_response(slots, [True, True])
    assert response.status is Status.OK
    assert [(r.msgid, r.status, r.duplicate) for r in response.results] == [
        ("a", Status.OK, None),
        ("b", Status.OK, None),
    ]


def test_duplicates_are_0_with_flag() -> None:
    slots = parse([item(msgid="a"), item(msgid="b")])
    response = submit_response(slots, [False, True])
    assert response.status is Status.OK
    assert response.results[0].duplicate is True
    assert response.results[1].duplicate is None
    wire = json.loads(encode_json(response))
    assert wire["results"][0] == {
        "msgid": "a",
        "phone": "13800000000",
        "status": "0",
        "duplicate": True,
    }
    assert wire["results"][1] == {"msgid": "b", "phone": "13800000000", "status": "0"}


def test_mixed_statuses_are_2000() -> None:
    slots = parse([item(msgid="a"), item(msgid="b", message="")])
    response = submit_response(slots, [True])
    assert response.status is Status.MIXED
    assert [r.status for r in response.results] == [Status.OK, Status.INVALID_ITEM]


def test_common_error_status_is_the_top_status() -> None:
    slots = parse([item(msgid="a", message=""), item(msgid="b", phone="1")])
    response = submit_response(slots, [])
    assert response.status is Status.INVALID_ITEM


def test_stored_flags_must_match_deliveries() -> None:
    slots = parse([item(msgid="a"), item(msgid="b")])
    with pytest.raises(ValueError):
        submit_response(slots, [True])
    with pytest.raises(ValueError):
        submit_response(slots, [True, True, True])


def test_error_response() -> None:
    response = error_response(Status.AUTH_FAILED, "authentication failed")
    assert json.loads(encode_json(response)) == {
        "status": "1005",
        "results": [],
        "error": "authentication failed",
    }


def test_unstructure_omits_none_only() -> None:
    data = converter.unstructure(ItemResult("a", "1", Status.OK))
    assert data == {"msgid": "a", "phone": "1", "status": "0"}
    data = converter.unstructure(ItemResult("a", "1", Status.INVALID_ITEM, "why", None))
    assert data == {"msgid": "a", "phone": "1", "status": "2001", "error": "why"}
    assert converter.unstructure(Ack("0")) == {"status": "0"}


def test_encode_json_is_compact_utf8() -> None:
    body = encode_json(ItemResult("编号", "13800000000", Status.OK))
    assert body == '{"msgid":"编号","phone":"13800000000","status":"0"}'.encode()


def test_encode_json_survives_lone_surrogates() -> None:
    body = encode_json(Ack("0", "bad \ud800"))
    assert json.loads(body) == {"status": "0", "error": "bad \ud800"}


def test_b001_round_trip() -> None:
    slots = parse([item(msgid="a"), item(msgid="b", message=""), item(msgid="c")])
    response = submit_response(slots, [True, False])
    assert parse_submit_response(encode_json(response)) == response
    refused = error_response(Status.BAD_BODY, "body is not JSON")
    assert parse_submit_response(encode_json(refused)) == refused


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b'{"results": []}',
        b'{"status": "12345"}',
        b'{"status": "0", "results": "x"}',
        b'{"status": "0", "results": [{"msgid": "a", "phone": "1", "status": "0", "duplicate": 1}'
        b"]}",
        b'{"status": "0", "results": [{"msgid": "a", "phone": "1", "status": "77"}]}',
        b'{"status": "0", "results": [5]}',
        b"\xff",
    ],
)
def test_bad_b001(body: bytes) -> None:
    with pytest.raises(BodyError):
        parse_submit_response(body)


# --- pushes -------------------------------------------------------------------------------


def test_receipts_round_trip() -> None:
    items = [
        ReceiptItem("m1", "13800000000", "1", NOW, "DELIVRD"),
        ReceiptItem("m2", "13900000000", "2", NOW + 5, "RETRY_LIMIT"),
    ]
    body = encode_json(items)
    assert json.loads(body)[0] == {
        "msgid": "m1",
        "phone": "13800000000",
        "status": "1",
        "sendtime": NOW,
        "stat": "DELIVRD",
    }
    assert parse_receipts(body) == items
    assert parse_receipts(b'{"data": ' + body + b"}") == items


def test_receipts_accept_numbers_for_codes() -> None:
    body = b'[{"msgid": 7, "phone": 13800000000, "status": 1, "sendtime": "5", "stat": "DELIVRD"}]'
    assert parse_receipts(body) == [ReceiptItem("7", "13800000000", "1", 5, "DELIVRD")]


@pytest.mark.parametrize(
    "body",
    [
        b'[{"msgid": "m", "phone": "1", "status": "3", "sendtime": 1, "stat": "x"}]',
        b'[{"msgid": "m", "phone": "1", "status": "1", "sendtime": "x", "stat": "x"}]',
        b'[{"msgid": "m", "phone": "1", "status": "1", "sendtime": 1}]',
        b"[5]",
        b"5",
        b"[",
    ],
)
def test_bad_receipts(body: bytes) -> None:
    with pytest.raises(BodyError) as info:
        parse_receipts(body)
    assert info.value.status is Status.BAD_BODY


def test_bad_receipt_error_names_the_field() -> None:
    with pytest.raises(BodyError) as info:
        parse_receipts(b'[{"msgid": "m", "phone": "1", "status": "1", "sendtime": 1}]')
    assert "stat" in str(info.value)


def test_status_reports_round_trip() -> None:
    items = [
        StatusReportItem("m1", "13800000000", "1", NOW, "DELIVRD", 1, "c-1"),
        StatusReportItem("m1", "13800000000", "2", NOW, "ESME_RTHROTTLED", 2, None, "throttled"),
    ]
    body = encode_json(items)
    first, second = json.loads(body)
    assert "error" not in first and first["carrier_msgid"] == "c-1"
    assert "carrier_msgid" not in second and second["error"] == "throttled"
    assert parse_status_reports(body) == items


def test_bad_status_report() -> None:
    body = (
        b'[{"msgid": "m", "phone": "1", "status": "1", "sendtime": 1, "stat": "x", "attempt": "a"}]'
    )
    with pytest.raises(BodyError) as info:
        parse_status_reports(body)
    assert "attempt" in str(info.value)


def test_ack() -> None:
    assert parse_ack(b'{"status": "0"}') == Ack("0")
    assert parse_ack(b'{"status": 0, "extra": 1}') == Ack("0")
    assert parse_ack(encode_json(Ack("1003", "bad"))) == Ack("1003", "bad")
    for junk in [b"", b"[]", b'{"error": "x"}', b'{"status": null}', b"\xff"]:
        with pytest.raises(BodyError):
            parse_ack(junk)


def test_submit_response_class_defaults() -> None:
    assert SubmitResponse(Status.OK).results == []


# --- property: nothing crashes ------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)
field_values = st.one_of(
    json_values,
    st.sampled_from(["13800000000", "1,2", "+8613800000000", "hi", "1", "2", str(NOW + 1)]),
    st.integers(min_value=0, max_value=NOW * 2),
)
items_strategy = st.dictionaries(
    st.sampled_from(["phone", "message", "msgid", "msgtype", "sendtime", "other"]),
    field_values,
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(items_strategy, st.lists(items_strategy | json_values, max_size=5), json_values))
def test_fuzz_any_json_gives_slots_or_body_error(value: Any) -> None:
    body = json.dumps(value).encode()
    try:
        slots = parse_submit(body, LIMITS, NOW)
    except BodyError as error:
        assert error.status in (Status.BAD_BODY, Status.BODY_TOO_LARGE)
        return
    assert slots
    for slot in slots:
        if isinstance(slot, ItemResult):
            assert slot.status in (
                Status.INVALID_ITEM,
                Status.MESSAGE_TOO_LONG,
                Status.SENDTIME_TOO_FAR,
            )
            assert slot.error
        else:
            assert slot.msgtype in (1, 2) and slot.message
    deliveries = sum(isinstance(slot, Delivery) for slot in slots)
    response = submit_response(slots, [True] * deliveries)
    assert parse_submit_response(encode_json(response)) == response


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(body: bytes) -> None:
    try:
        parse_submit(body, LIMITS, NOW)
    except BodyError as error:
        assert error.status is Status.BAD_BODY


def test_an_answer_over_the_limit_leaves_out_the_error_texts_then_refuses() -> None:
    results = [ItemResult("m", "1", Status.INVALID_ITEM, "e" * 200) for _ in range(10)]
    response = SubmitResponse(Status.INVALID_ITEM, results)
    full = encode_answer(response, 10_000)
    assert full == encode_json(response)
    short = json.loads(encode_answer(response, len(full) - 1))
    assert [r["status"] for r in short["results"]] == ["2001"] * 10
    assert {r["error"] for r in short["results"]} == {
        "details left out: the answer would be too large"
    }
    with pytest.raises(AnswerTooLarge):
        encode_answer(response, 100)


def test_echoed_invalid_values_are_printable_and_bounded() -> None:
    result = only_result(item(phone="\u0001" * 100, msgtype="\u0002" * 100))
    assert result.phone == "\ufffd" * 21 + "…"
    assert result.error is not None and len(result.error) <= 201
    assert "\u0002" not in result.error
