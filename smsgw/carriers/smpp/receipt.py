"""SMSC delivery receipts: the de facto text format of SMPP 3.4 Appendix B, and the TLVs.

    id:IIIIIIIIII sub:SSS dlvrd:DDD submit date:YYMMDDhhmm done date:YYMMDDhhmm
    stat:DDDDDDD err:E text:...

SMSCs vary: keys in any case, fields missing or reordered, ``submit_date`` spellings, dates
with seconds. Parsing never fails: a field that is absent or unreadable is None. ``text:``
is always last and runs to the end, so whatever it quotes is not mistaken for fields.
"""

from __future__ import annotations

import re
from datetime import datetime

import attrs

from smsgw.carriers.smpp.codec import DataSm, MessageState, NetworkErrorCode, ShortMessagePdu
from smsgw.encoding import DataCoding, decode_text

__all__ = [
    "DeliveryReceipt",
    "parse_receipt_date",
    "parse_receipt_text",
    "receipt_from_pdu",
    "state_from_stat",
]

_KEY = re.compile(
    r"(?<!\S)(id|sub|dlvrd|submit[ _]?date|done[ _]?date|stat|err|text)\s*:",
    re.IGNORECASE,
)
# The Appendix B layout exactly (lower-case keys, one space apart, every value a single word,
# text optional): what nearly every SMSC sends. A text it matches gives the same fields as
# the general parse above, in one match instead of a search per key and a slice per value.
_STANDARD = re.compile(
    r"id:(\S*) sub:(\S*) dlvrd:(\S*) submit date:(\S*) done date:(\S*) stat:(\S*) err:(\S*)"
    r"(?: text:(.*))?",
    re.DOTALL,
)

_STAT_STATES = {
    "ENROUTE": MessageState.ENROUTE,
    "DELIVRD": MessageState.DELIVERED,
    "DELIVERED": MessageState.DELIVERED,
    "EXPIRED": MessageState.EXPIRED,
    "DELETED": MessageState.DELETED,
    "UNDELIV": MessageState.UNDELIVERABLE,
    "UNDELIVERABLE": MessageState.UNDELIVERABLE,
    "UNDELIVERED": MessageState.UNDELIVERABLE,
    "ACCEPTD": MessageState.ACCEPTED,
    "ACCEPTED": MessageState.ACCEPTED,
    "UNKNOWN": MessageState.UNKNOWN,
    "REJECTD": MessageState.REJECTED,
    "REJECTED": MessageState.REJECTED,
}

# The receipt's own words for each message_state (for when only the TLV says it).
_STATE_STATS = {
    MessageState.ENROUTE: "ENROUTE",
    MessageState.DELIVERED: "DELIVRD",
    MessageState.EXPIRED: "EXPIRED",
    MessageState.DELETED: "DELETED",
    MessageState.UNDELIVERABLE: "UNDELIV",
    MessageState.ACCEPTED: "ACCEPTD",
    MessageState.UNKNOWN: "UNKNOWN",
    MessageState.REJECTED: "REJECTD",
}


def state_from_stat(stat: str | None) -> MessageState | None:
    """The message_state a receipt's ``stat`` word means (DELIVRD → DELIVERED, ...)."""
    if stat is None:
        return None
    return _STAT_STATES.get(stat.strip().upper())


@attrs.frozen(kw_only=True)
class DeliveryReceipt:
    """A delivery receipt's fields. ``message_state`` and ``network_error`` come from the
    TLVs when the receipt was a PDU that carried them."""

    message_id: str | None = None
    submitted: int | None = None
    delivered: int | None = None
    submit_date: str | None = None
    done_date: str | None = None
    stat: str | None = None
    err: str | None = None
    text: str | None = None
    message_state: int | None = None
    network_error: NetworkErrorCode | None = None

    @property
    def state(self) -> MessageState | None:
        """The outcome: the message_state TLV when present (structured, so trusted first),
        else what the ``stat`` word says."""
        if self.message_state is not None:
            try:
                return MessageState(self.message_state)
            except ValueError:
                pass
        return state_from_stat(self.stat)

    @property
    def is_delivered(self) -> bool:
        return self.state is MessageState.DELIVERED

    @property
    def stat_word(self) -> str:
        """The stat to report onward: the SMSC's word, else the TLV state's, else UNKNOWN."""
        if self.stat:
            return self.stat
        state = self.state
        return _STATE_STATS[state] if state is not None else "UNKNOWN"


def _int_or_none(value: str | None) -> int | None:
    # isdecimal, not isdigit: "²" is a digit that int() refuses.
    return int(value) if value is not None and value.isdecimal() else None


# id, sub, dlvrd, submit date, done date, stat, err, text: None when absent or empty.
_Fields = tuple[
    str | None, str | None, str | None, str | None, str | None, str | None, str | None, str | None
]


def _general_fields(text: str) -> _Fields:
    """Any layout: each key found where a word starts, its value running to the next key."""
    values: dict[str, str | None] = {}
    matches = list(_KEY.finditer(text))
    for index, match in enumerate(matches):
        key = re.sub(r"[ _]", "", match.group(1).lower())
        if key == "text":
            values.setdefault(key, text[match.end() :])
            break
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        value = text[match.end() : end].strip()
        values.setdefault(key, value or None)
    get = values.get
    return (
        get("id"),
        get("sub"),
        get("dlvrd"),
        get("submitdate"),
        get("donedate"),
        get("stat"),
        get("err"),
        get("text"),
    )


def _fields(text: str) -> _Fields:
    standard = _STANDARD.fullmatch(text)
    if standard is None:
        return _general_fields(text)
    id_, sub, dlvrd, submit_date, done_date, stat, err, body = standard.groups()
    return (
        id_ or None,
        sub or None,
        dlvrd or None,
        submit_date or None,
        done_date or None,
        stat or None,
        err or None,
        body,
    )


def parse_receipt_text(text: str) -> DeliveryReceipt:
    """The fields of a receipt text; absent or empty fields are None."""
    return _receipt(text, None, None, None)


def _receipt(
    text: str,
    message_id: str | None,
    message_state: int | None,
    network_error: NetworkErrorCode | None,
) -> DeliveryReceipt:
    """The receipt of a text, with the TLVs' values (an id given replaces the text's)."""
    id_, sub, dlvrd, submit_date, done_date, stat, err, body = _fields(text)
    return DeliveryReceipt(
        message_id=message_id or id_,
        submitted=_int_or_none(sub),
        delivered=_int_or_none(dlvrd),
        submit_date=submit_date,
        done_date=done_date,
        stat=stat.upper() if stat else None,
        err=err,
        text=body,
        message_state=message_state,
        network_error=network_error,
    )


def parse_receipt_date(value: str | None) -> datetime | None:
    """YYMMDDhhmm or YYMMDDhhmmss → a naive datetime (SMSC local time); None if unreadable."""
    if value is None or not value.isdigit() or len(value) not in (10, 12):
        return None
    pattern = "%y%m%d%H%M%S" if len(value) == 12 else "%y%m%d%H%M"
    try:
        return datetime.strptime(value, pattern)
    except ValueError:
        return None


def receipt_from_pdu(pdu: ShortMessagePdu | DataSm) -> DeliveryReceipt | None:
    """The receipt a deliver_sm / data_sm carries, or None when it is not a receipt
    (neither esm_class says so nor a receipted_message_id TLV is present).

    The receipted_message_id TLV wins over the text's ``id:``: it is the untruncated id
    as the submit_sm_resp gave it, where some SMSCs print the text id in another base.
    """
    tlvs = pdu.tlvs
    if not pdu.is_delivery_receipt and tlvs.receipted_message_id is None:
        return None
    payload = pdu.payload
    # Receipt text is ASCII whatever data_coding 0 would mean for a real message.
    text = (
        decode_text(payload, DataCoding.UCS2)
        if pdu.data_coding == DataCoding.UCS2
        else payload.decode("latin-1")
    )
    return _receipt(text, tlvs.receipted_message_id, tlvs.message_state, tlvs.network_error_code)
