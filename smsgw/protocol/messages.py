"""The JSON bodies of the merchant protocol (docs/protocol.md): attrs classes and one converter.

``converter`` is the project's one cattrs converter: it structures (and validates) JSON into
these classes and unstructures them back, leaving out every field whose value is ``None``.
An A001 item is structured by per-field hooks that convert and check each field, so cattrs'
detailed validation names the field of every problem; ``cattrs.transform_error`` turns those
into the ``error`` text of a 2001 result.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any, Final, NoReturn, TypeGuard, TypeVar

import attrs
import cattrs
from cattrs.errors import ClassValidationError, IterableValidationError
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override
from cattrs.v import format_exception

from smsgw.encoding import count_segments
from smsgw.protocol.status import Status

__all__ = [
    "Ack",
    "AnswerTooLarge",
    "BodyError",
    "Delivery",
    "ItemResult",
    "ReceiptItem",
    "StatusReportItem",
    "SubmitItem",
    "SubmitLimits",
    "SubmitResponse",
    "converter",
    "encode_answer",
    "encode_json",
    "error_response",
    "parse_ack",
    "parse_receipts",
    "parse_status_reports",
    "parse_submit",
    "parse_submit_response",
    "submit_response",
]

T = TypeVar("T")

MAX_MSGID_LENGTH: Final = 64
MAX_PHONE_LENGTH: Final = 21  # "+" and 20 digits
# How much of a bad value an answer echoes back, and of one result's error text: an answer
# must stay small (bounded per result) whatever was sent.
ECHO_LIMIT: Final = 64
ERROR_LIMIT: Final = 200
# A result's error when the whole answer would not fit its length field with all of them.
_ERRORS_LEFT_OUT: Final = "details left out: the answer would be too large"
_MAX_TIME_DIGITS: Final = 20  # far beyond any real time in ms; keeps int() cheap
_PHONE: Final = re.compile(r"\+?[0-9]{5,20}")
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_ACCEPTED_SHAPES: Final = 'an array of items, one item object, or {"data": [items]}'


# --- errors -------------------------------------------------------------------------------


class BodyError(Exception):
    """The whole body is refused; ``status`` is what to answer."""

    status: Status

    def __init__(self, message: str, status: Status = Status.BAD_BODY) -> None:
        super().__init__(message)
        self.status = status


class FieldError(ValueError):
    """One field's value is invalid; the message says why (the field is named by its path)."""


# --- classes ------------------------------------------------------------------------------


@attrs.frozen
class SubmitLimits:
    max_batch: int  # max deliveries (phones) in one request
    max_segments: int
    max_schedule_ms: int


@attrs.frozen
class SubmitItem:
    """One A001 item as the merchant sent it, converted and checked field by field."""

    phone: tuple[str, ...]  # the comma-separated numbers, spaces removed, not yet checked
    message: str
    msgid: str
    msgtype: int
    sendtime: int | None = None  # ms since the epoch; None = not given


@attrs.frozen
class Delivery:
    """One (msgid, phone) the server must store."""

    msgid: str
    phone: str  # as given, stripped of spaces
    message: str
    msgtype: int  # 1 notification | 2 verification code
    send_at_ms: int | None  # None = now
    segments: int


@attrs.frozen
class ItemResult:
    msgid: str
    phone: str
    status: Status
    error: str | None = None
    duplicate: bool | None = None  # True only for duplicates; omitted otherwise


@attrs.frozen
class SubmitResponse:
    """The B001 body."""

    status: Status
    results: list[ItemResult] = attrs.field(factory=list)
    error: str | None = None  # set for whole-request errors (1xxx)


@attrs.frozen
class ReceiptItem:
    """One A002 item: the final outcome of one (msgid, phone)."""

    msgid: str
    phone: str
    status: str  # "1" delivered | "2" failed
    sendtime: int
    stat: str


@attrs.frozen
class StatusReportItem:
    """One A003 item: one step in the life of one (msgid, phone)."""

    msgid: str
    phone: str
    status: str
    sendtime: int
    stat: str
    attempt: int
    carrier_msgid: str | None = None
    error: str | None = None


@attrs.frozen
class Ack:
    """A B002/B003 body, or any ``{"status": ...}`` reply."""

    status: str
    error: str | None = None


# --- field hooks --------------------------------------------------------------------------


def _echo(text: str, limit: int = ECHO_LIMIT) -> str:
    """A value fit to echo in an answer: at most `limit` characters (and an ellipsis), each
    printable (anything else, surrogates included, becomes U+FFFD): a few bytes each in JSON."""
    if len(text) > limit:
        text = text[:limit] + "…"
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else "\ufffd" for char in text)


def _echo_msgid(value: object) -> str:
    """The msgid to answer an invalid item with: as given when it is a valid msgid (the
    merchant's key for the result), else shortened; "" when it is not text or a number."""
    if not (isinstance(value, str) or _is_int(value)):
        return ""
    text = str(value)
    valid = 0 < len(text) <= MAX_MSGID_LENGTH and _SURROGATE.search(text) is None
    return text if valid else _echo(text)


def _echo_phone(phone: str) -> str:
    return _echo(phone, MAX_PHONE_LENGTH)


def _error_text(text: str) -> str:
    return text if len(text) <= ERROR_LIMIT else text[:ERROR_LIMIT] + "…"


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


_JSON_TYPES: Final = {
    bool: "boolean",
    int: "number",
    float: "number",
    str: "string",
    list: "array",
    dict: "object",
    type(None): "null",
}


def _shown(value: object) -> str:
    """A given value as an error message quotes it: short, and never the whole of a big one."""
    if isinstance(value, str):
        return repr(_echo(value))
    if _is_int(value):
        return _echo(str(value))
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _check_encodable(text: str) -> None:
    if not text.isascii() and _SURROGATE.search(text) is not None:
        raise FieldError("contains an unpaired UTF-16 surrogate")


def _split_phones(value: object) -> tuple[str, ...] | None:
    """The numbers of a phone field, spaces removed; None when it is not text or a number."""
    if isinstance(value, str):
        return tuple(part.replace(" ", "") for part in value.split(","))
    if _is_int(value):
        return (str(value),)
    return None


def _structure_phone(value: object, _: object) -> tuple[str, ...]:
    if type(value) is str and "," not in value and " " not in value:
        return (value,)  # the common case, without the general path's work
    phones = _split_phones(value)
    if phones is None:
        raise FieldError(f"must be a string or an integer, got {_shown(value)}")
    return phones


def _structure_message(value: object, _: object) -> str:
    if not isinstance(value, str):
        raise FieldError(f"must be a string, got {_shown(value)}")
    if not value:
        raise FieldError("must not be empty")
    _check_encodable(value)
    return value


def _structure_msgid(value: object, _: object) -> str:
    if type(value) is str and 0 < len(value) <= MAX_MSGID_LENGTH and value.isascii():
        return value  # the common case: ASCII cannot hold a surrogate
    if isinstance(value, str):
        text = value
    elif _is_int(value):
        text = str(value)
    else:
        raise FieldError(f"must be a string or an integer, got {_shown(value)}")
    if not 1 <= len(text) <= MAX_MSGID_LENGTH:
        raise FieldError(f"must be 1-{MAX_MSGID_LENGTH} characters, got {len(text)}")
    _check_encodable(text)
    return text


def _structure_msgtype(value: object, _: object) -> int:
    if type(value) is int and value in (1, 2):
        return value
    if value in ("1", "2"):
        return 1 if value == "1" else 2
    raise FieldError(f"must be 1 (notification) or 2 (verification code), got {_shown(value)}")


def _time_ms(value: object) -> int:
    """Milliseconds since the epoch: a non-negative integer or a string of digits."""
    if _is_int(value):
        if value < 0:
            raise FieldError(f"must not be negative, got {value}")
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        if len(value) > _MAX_TIME_DIGITS:
            raise FieldError(f"{_echo(value)!r} has more than {_MAX_TIME_DIGITS} digits")
        return int(value)
    raise FieldError(f"must be milliseconds since the epoch (digits), got {_shown(value)}")


def _structure_sendtime(value: object, _: object) -> int | None:
    if type(value) is int and value >= 0:
        return value
    if (
        type(value) is str
        and value.isdigit()
        and value.isascii()
        and len(value) <= _MAX_TIME_DIGITS
    ):
        return int(value)
    if value is None or value == "":
        return None  # not given: send now
    return _time_ms(value)


def _structure_time(value: object, _: object) -> int:
    return _time_ms(value)


def _structure_count(value: object, _: object) -> int:
    if not _is_int(value):
        raise FieldError(f"must be an integer, got {_shown(value)}")
    if value < 0:
        raise FieldError(f"must not be negative, got {value}")
    return value


def _structure_text(value: object, _: object) -> str:
    if not isinstance(value, str):
        raise FieldError(f"must be a string, got {_shown(value)}")
    return value


def _structure_optional_text(value: object, _: object) -> str | None:
    return None if value is None else _structure_text(value, _)


def _structure_code(value: object, _: object) -> str:
    """A string field for which a number is accepted too (msgid, phone, status codes)."""
    if _is_int(value):
        return str(value)
    return _structure_text(value, _)


def _structure_receipt_status(value: object, _: object) -> str:
    code = _structure_code(value, _)
    if code not in ("1", "2"):
        raise FieldError(f"must be '1' (delivered) or '2' (failed), got {_echo(code)!r}")
    return code


def _structure_status(value: object, _: object) -> Status:
    code = _structure_code(value, _)
    try:
        return Status(code)
    except ValueError:
        raise FieldError(f"unknown status {_echo(code)!r}") from None


def _structure_results(value: object, _: object) -> list[ItemResult]:
    if not isinstance(value, list):
        raise FieldError(f"must be an array, got {_shown(value)}")
    return converter.structure(value, list[ItemResult])


def _structure_optional_bool(value: object, _: object) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise FieldError(f"must be true or false, got {_shown(value)}")


# --- the converter ------------------------------------------------------------------------

converter: Final = cattrs.Converter()


def _unstructure_omitting_none(cls: type[Any]) -> Callable[[Any], dict[str, Any]]:
    """Unstructure attrs classes leaving out optional fields (default None) that are None."""
    # Typed Any: these go through **kwargs next to the function's own keyword flags.
    omit: dict[str, Any] = {
        field.name: override(omit_if_default=True)
        for field in attrs.fields(cls)
        if field.default is None
    }
    return make_dict_unstructure_fn(cls, converter, **omit)


converter.register_unstructure_hook_factory(attrs.has, _unstructure_omitting_none)


def _register(cls: type[T], **hooks: Callable[[Any, Any], Any]) -> Callable[[Any, Any], T]:
    """Register ``cls`` with one checking hook per field; return the generated function."""
    overrides: dict[str, Any] = {name: override(struct_hook=hook) for name, hook in hooks.items()}
    structure = make_dict_structure_fn(cls, converter, **overrides)
    converter.register_structure_hook(cls, structure)
    return structure


_structure_submit_item: Final = _register(
    SubmitItem,
    phone=_structure_phone,
    message=_structure_message,
    msgid=_structure_msgid,
    msgtype=_structure_msgtype,
    sendtime=_structure_sendtime,
)
_register(
    ItemResult,
    msgid=_structure_code,
    phone=_structure_code,
    status=_structure_status,
    error=_structure_optional_text,
    duplicate=_structure_optional_bool,
)
_register(
    SubmitResponse,
    status=_structure_status,
    results=_structure_results,
    error=_structure_optional_text,
)
_register(
    ReceiptItem,
    msgid=_structure_code,
    phone=_structure_code,
    status=_structure_receipt_status,
    sendtime=_structure_time,
    stat=_structure_text,
)
_register(
    StatusReportItem,
    msgid=_structure_code,
    phone=_structure_code,
    status=_structure_code,
    sendtime=_structure_time,
    stat=_structure_text,
    attempt=_structure_count,
    carrier_msgid=_structure_optional_text,
    error=_structure_optional_text,
)
_register(Ack, status=_structure_code, error=_structure_optional_text)


def encode_json(obj: object) -> bytes:
    """``obj`` unstructured to compact UTF-8 JSON."""
    data = converter.unstructure(obj)
    try:
        return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate cannot be UTF-8; as a \\u escape it is still valid JSON.
        return json.dumps(data, separators=(",", ":")).encode("ascii")


# --- decoding bodies ----------------------------------------------------------------------


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _load_json(body: bytes) -> Any:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError(f"body is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if text.startswith("\ufeff"):
        text = text[1:]  # a byte order mark is tolerated (RFC 8259 §8.1)
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise BodyError("body is not acceptable JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and integers over the digit limit
        raise BodyError(f"body is not JSON: {exc}") from None


def _load_items(body: bytes, *, allow_empty: bool) -> list[Any]:
    """The items of a body of any accepted shape."""
    data = _load_json(body)
    if isinstance(data, dict):
        if len(data) == 1:
            (value,) = data.values()
            items: list[Any] = value if isinstance(value, list) else [data]
        else:
            items = [data]
    elif isinstance(data, list):
        items = data
    else:
        raise BodyError(f"body must be {_ACCEPTED_SHAPES}, not {_shown(data)}")
    if not items and not allow_empty:
        raise BodyError("empty batch: the body holds no items")
    return items


def _format_exception(exc: BaseException, type_: type | None) -> str:
    if isinstance(exc, FieldError):
        return str(exc)
    return format_exception(exc, type_)


def _error_lines(exc: BaseException) -> list[str]:
    """cattrs' detailed errors as ``field: why`` lines."""
    lines = []
    for line in cattrs.transform_error(exc, path="$", format_exception=_format_exception):
        description, _, path = line.rpartition(" @ $")
        lines.append(f"{path.lstrip('.') or 'item'}: {description}")
    return lines


def _structure_body(body: bytes, cls: type[T], what: str) -> T:
    data = _load_json(body)
    if not isinstance(data, dict):
        raise BodyError(f"{what} body must be a JSON object, not {_shown(data)}")
    try:
        return converter.structure(data, cls)
    except (ClassValidationError, IterableValidationError) as exc:
        raise BodyError(f"bad {what} body: " + "; ".join(_error_lines(exc))) from None


def _structure_items(body: bytes, cls: type[T], what: str) -> list[T]:
    structured: list[T] = []
    errors: list[str] = []
    for index, item in enumerate(_load_items(body, allow_empty=True)):
        if not isinstance(item, dict):
            errors.append(f"[{index}]: must be a JSON object")
            continue
        try:
            structured.append(converter.structure(item, cls))
        except ClassValidationError as exc:
            errors.extend(f"[{index}].{line}" for line in _error_lines(exc))
    if errors:
        raise BodyError(f"bad {what} body: " + "; ".join(errors))
    return structured


# --- A001 ---------------------------------------------------------------------------------


def _too_many(limits: SubmitLimits) -> BodyError:
    return BodyError(
        f"more than {limits.max_batch} deliveries in one request (SMSGW_MAX_BATCH)",
        Status.BODY_TOO_LARGE,
    )


def _phone_error(phone: str) -> str | None:
    if _PHONE.fullmatch(phone) is None:
        return f"phone: {_echo(phone)!r} is not 5-20 digits (with an optional '+')"
    return None


def _join(*errors: str | None) -> str:
    return _error_text("; ".join(error for error in errors if error))


def _add_valid_item(
    slots: list[Delivery | ItemResult], item: SubmitItem, limits: SubmitLimits, now_ms: int
) -> None:
    status = Status.OK
    problems: list[str] = []
    segments = count_segments(item.message)
    if segments > limits.max_segments:
        status = Status.MESSAGE_TOO_LONG
        problems.append(
            f"message: needs {segments} segments, over the limit of {limits.max_segments}"
        )
    send_at = item.sendtime
    if send_at is not None:
        if send_at <= now_ms:
            send_at = None  # past or now: send at once
        elif send_at - now_ms > limits.max_schedule_ms:
            if status is Status.OK:
                status = Status.SENDTIME_TOO_FAR
            problems.append(
                f"sendtime: {send_at} is more than {limits.max_schedule_ms} ms ahead "
                "(SMSGW_MAX_SCHEDULE)"
            )
    error = "; ".join(problems) or None
    msgid = item.msgid
    for phone in item.phone:
        phone_error = _phone_error(phone)
        if phone_error is not None:
            slots.append(
                ItemResult(
                    msgid, _echo_phone(phone), Status.INVALID_ITEM, _join(phone_error, error)
                )
            )
        elif error is not None:
            slots.append(ItemResult(msgid, phone, status, error))
        else:
            slots.append(Delivery(msgid, phone, item.message, item.msgtype, send_at, segments))


def _add_invalid_item(
    slots: list[Delivery | ItemResult], raw: dict[str, Any], exc: ClassValidationError
) -> None:
    error = _error_text("; ".join(_error_lines(exc)))
    msgid = _echo_msgid(raw.get("msgid"))
    phones = _split_phones(raw.get("phone"))
    if phones is None:
        slots.append(ItemResult(msgid, "", Status.INVALID_ITEM, error))
        return
    for phone in phones:
        slots.append(
            ItemResult(
                msgid, _echo_phone(phone), Status.INVALID_ITEM, _join(_phone_error(phone), error)
            )
        )


def parse_submit(body: bytes, limits: SubmitLimits, now_ms: int) -> list[Delivery | ItemResult]:
    """The slots of an A001 body: one per (item, phone), in request order.

    Each slot is a Delivery to store or an ItemResult with the item's error (2001, 2003,
    2004). Raises BodyError for whole-request errors: 1003 (not UTF-8 JSON of an accepted
    shape, or no items) and 1002 (more than ``limits.max_batch`` deliveries).
    """
    items = _load_items(body, allow_empty=False)
    max_batch = limits.max_batch
    if len(items) > max_batch:
        raise _too_many(limits)
    slots: list[Delivery | ItemResult] = []
    structure = _structure_submit_item
    for raw in items:
        if not isinstance(raw, dict):
            slots.append(ItemResult("", "", Status.INVALID_ITEM, "item: must be a JSON object"))
        else:
            phone = raw.get("phone")
            # Counted before splitting: "1,1,1,…" must not turn into half a million slots.
            if isinstance(phone, str) and len(slots) + phone.count(",") >= max_batch:
                raise _too_many(limits)
            try:
                item = structure(raw, SubmitItem)
            except ClassValidationError as exc:
                _add_invalid_item(slots, raw, exc)
            else:
                _add_valid_item(slots, item, limits, now_ms)
        if len(slots) > max_batch:
            raise _too_many(limits)
    return slots


def submit_response(
    slots: Sequence[Delivery | ItemResult], stored: Sequence[bool]
) -> SubmitResponse:
    """The B001 body for ``slots``; ``stored`` holds one flag per Delivery, in order:
    True = newly stored, False = already there (answered 0 with ``duplicate``)."""
    results: list[ItemResult] = []
    flags = iter(stored)
    for slot in slots:
        if isinstance(slot, Delivery):
            try:
                new = next(flags)
            except StopIteration:
                raise ValueError("fewer stored flags than deliveries") from None
            results.append(
                ItemResult(slot.msgid, slot.phone, Status.OK, duplicate=None if new else True)
            )
        else:
            results.append(slot)
    if next(flags, None) is not None:
        raise ValueError("more stored flags than deliveries")
    statuses = {result.status for result in results}
    status = Status.MIXED if len(statuses) > 1 else next(iter(statuses), Status.OK)
    return SubmitResponse(status, results)


class AnswerTooLarge(Exception):
    """Even without its error texts, an answer is over the most its length field can say."""


def encode_answer(response: SubmitResponse, max_bytes: int) -> bytes:
    """``response`` as JSON of at most ``max_bytes``: when it is longer, with every result's
    error text replaced by a short note. Raises AnswerTooLarge when even that is too long."""
    body = encode_json(response)
    if len(body) <= max_bytes:
        return body
    shortened = attrs.evolve(
        response,
        results=[
            result if result.error is None else attrs.evolve(result, error=_ERRORS_LEFT_OUT)
            for result in response.results
        ],
    )
    body = encode_json(shortened)
    if len(body) > max_bytes:
        raise AnswerTooLarge(f"an answer of {len(body)} bytes is over the limit of {max_bytes}")
    return body


def error_response(status: Status, message: str) -> SubmitResponse:
    """The B001 body (or any reply body) refusing a whole request."""
    return SubmitResponse(status, [], message)


# --- pushes and replies -------------------------------------------------------------------


def parse_ack(body: bytes) -> Ack:
    """A B002/B003 body (any ``{"status": ...}`` reply). Raises BodyError."""
    return _structure_body(body, Ack, "reply")


def parse_receipts(body: bytes) -> list[ReceiptItem]:
    """The items of an A002 body. Raises BodyError."""
    return _structure_items(body, ReceiptItem, "A002")


def parse_status_reports(body: bytes) -> list[StatusReportItem]:
    """The items of an A003 body. Raises BodyError."""
    return _structure_items(body, StatusReportItem, "A003")


def parse_submit_response(body: bytes) -> SubmitResponse:
    """A B001 body, on the client side. Raises BodyError."""
    return _structure_body(body, SubmitResponse, "B001")
