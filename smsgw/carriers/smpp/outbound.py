"""What the SMPP carrier puts on the wire for one SMS, and how it matches message ids.

Pure functions, no I/O.

Coding and segments: GSM 03.38 (data_coding 0, unpacked septets) when every character is in
the default alphabet or its extension table, else UCS-2 (data_coding 8); the segments are
`smsgw.encoding.split_text`'s. A one-segment text is one submit_sm with the text in
short_message. Longer texts, by the ``long`` setting:

- ``udh``: one submit_sm per segment, esm_class |= 0x40 (UDHI), short_message = the 6-byte
  concatenation UDH (IE 0x00, 8-bit reference, total, sequence 1..total) + the segment.
- ``sar``: one submit_sm per segment with the sar_msg_ref_num (16-bit reference),
  sar_total_segments and sar_segment_seqnum TLVs; short_message = the segment.
- ``payload``: one submit_sm whose message_payload TLV holds the whole encoded text
  (short_message empty); the SMSC segments it.

Message ids (``id_format``) — what `normalize_message_id` returns, the key the pipeline
matches receipts with:

- ``as_is``: the id with surrounding whitespace removed; matched exactly.
- ``hex_dec``: also lower-cased, and when the id is made only of hexadecimal digits its
  leading zeros are removed ("0000007B", "7b" and "007b" match; "000" is "0"). So ids that
  differ only in case or zero padding match; nothing else does (the key stays one-to-one for
  an SMSC that writes its ids one way).

An id written in another base (the submit_sm_resp says hex "7b", the receipt text says
decimal "123") cannot be recognised from the id alone: "123" is also a valid hex id. The
receipt's receipted_message_id TLV carries the id as submit_sm_resp gave it and is always
preferred; for SMSCs that leave it out and print the text id in the other base, the
``receipt_id`` setting says which base the text uses, and `receipt_id_in_submit_form`
converts it before matching ("123" with receipt_id=decimal becomes "7b").
"""

from __future__ import annotations

import attrs

from smsgw.carriers.smpp.codec import ESM_CLASS_UDHI, SubmitSm, Tlvs
from smsgw.carriers.smpp.settings import IdFormat, LongMode, ReceiptIdBase, SmppConfig
from smsgw.encoding import choose_coding, concat_udh, encode_text, split_text

__all__ = [
    "MAX_PAYLOAD_OCTETS",
    "MAX_SEGMENTS",
    "build_submits",
    "destination_addr",
    "normalize_message_id",
    "receipt_id_in_submit_form",
]

MAX_SEGMENTS = 255  # the concatenation UDH and sar_total_segments count in one octet
# message_payload shares the 64 KiB PDU limit with the fixed fields.
MAX_PAYLOAD_OCTETS = 60_000
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_MAX_CONVERTED_ID = 40  # longer "numbers" are not ids worth converting between bases


def destination_addr(phone: str) -> str:
    """The destination_addr for a phone: without its leading ``+`` (TON says international)."""
    address = phone.strip().removeprefix("+")
    if not address.isdigit() or not address.isascii():
        raise ValueError(f"phone {phone!r} is not a number of digits")
    if len(address) > 20:
        raise ValueError(f"phone {phone!r} has more than the 20 digits SMPP allows")
    return address


def build_submits(config: SmppConfig, *, phone: str, text: str, reference: int) -> list[SubmitSm]:
    """The submit_sm PDUs (sequence numbers unset) for one message, in send order.

    ``reference`` identifies the message among its concatenated parts: its low 8 bits go in
    the UDH, its low 16 bits in sar_msg_ref_num. Raises ValueError for a message that cannot
    be sent (bad phone, too many segments, too long for message_payload).
    """
    coding = choose_coding(text)
    address = destination_addr(phone)
    segments = split_text(text, coding)
    base = SubmitSm(
        service_type=config.service_type,
        source_addr_ton=config.source_ton,
        source_addr_npi=config.source_npi,
        source_addr=config.source_addr,
        dest_addr_ton=config.dest_addr_ton,
        dest_addr_npi=config.dest_addr_npi,
        destination_addr=address,
        registered_delivery=config.registered_delivery,
        data_coding=int(coding),
        short_message=segments[0] if len(segments) == 1 else b"",
    )
    if len(segments) == 1:  # the usual case: built once, not built then evolved
        return [base]
    if config.long is LongMode.PAYLOAD:
        _, payload = encode_text(text)
        if len(payload) > MAX_PAYLOAD_OCTETS:
            raise ValueError(
                f"message is {len(payload)} octets, more than {MAX_PAYLOAD_OCTETS} "
                "for message_payload"
            )
        return [attrs.evolve(base, tlvs=Tlvs(message_payload=payload))]
    total = len(segments)
    if total > MAX_SEGMENTS:
        raise ValueError(f"message needs {total} segments, more than {MAX_SEGMENTS}")
    if config.long is LongMode.UDH:
        ref = reference & 0xFF
        return [
            attrs.evolve(
                base,
                esm_class=base.esm_class | ESM_CLASS_UDHI,
                short_message=concat_udh(ref, total, seq) + segment,
            )
            for seq, segment in enumerate(segments, start=1)
        ]
    sar_ref = reference & 0xFFFF
    return [
        attrs.evolve(
            base,
            short_message=segment,
            tlvs=Tlvs(sar_msg_ref_num=sar_ref, sar_total_segments=total, sar_segment_seqnum=seq),
        )
        for seq, segment in enumerate(segments, start=1)
    ]


def _is_hex(value: str) -> bool:
    return bool(value) and _HEX_DIGITS.issuperset(value)


def normalize_message_id(message_id: str, id_format: IdFormat) -> str:
    """The matching key of a message id (module docstring)."""
    value = message_id.strip()
    if id_format is IdFormat.AS_IS:
        return value
    value = value.lower()
    if _is_hex(value):
        value = value.lstrip("0") or "0"
    return value


def receipt_id_in_submit_form(text_id: str, base: ReceiptIdBase) -> str:
    """A receipt text's id rewritten in the base of the submit_sm_resp ids (module
    docstring); unchanged when it is not a number in the stated base."""
    value = text_id.strip()
    if base is ReceiptIdBase.SAME or not value or len(value) > _MAX_CONVERTED_ID:
        return value
    if base is ReceiptIdBase.DECIMAL:
        return format(int(value), "x") if value.isdigit() and value.isascii() else value
    return str(int(value, 16)) if _is_hex(value) else value
