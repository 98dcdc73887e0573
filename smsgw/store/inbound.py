"""How a `MobileOriginated` is kept in a row of the `inbound` table, for both stores, and
how the rows stored before the protocol-neutral record (SQLite schema 6, PostgreSQL 1: SMPP
columns data_coding, esm_class, udh) are converted by the migrations.

`extra` is one JSON object (SQLite TEXT, PostgreSQL jsonb), written compact with sorted keys
so that equal records are stored equally.
"""

from __future__ import annotations

import json
from typing import Any, Final

from smsgw.encoding import split_udh
from smsgw.records import Concat, Extra, InboundRecord, MobileOriginated

# The columns, in the order of `inbound_row` and of `inbound_record`'s row (after the id).
INBOUND_COLUMNS: Final = (
    "sender, recipient, text, received_at, carrier, protocol,"
    " concat_ref, concat_total, concat_seq, extra"
)

Row = tuple[str, str, str, int, str, str, int | None, int | None, int | None, str]


def extra_json(extra: Extra) -> str:
    return json.dumps(dict(extra), ensure_ascii=False, separators=(",", ":"), sort_keys=True)


ConcatColumns = tuple[int | None, int | None, int | None]  # concat_ref, concat_total, concat_seq


def concat_columns(concat: Concat | None) -> ConcatColumns:
    if concat is None:
        return None, None, None
    return concat.reference, concat.total, concat.seq


def inbound_row(mo: MobileOriginated) -> Row:
    return (
        mo.sender,
        mo.recipient,
        mo.text,
        mo.received_at_ms,
        mo.carrier,
        mo.protocol,
        *concat_columns(mo.concat),
        extra_json(mo.extra),
    )


def inbound_record(row: tuple[Any, ...]) -> InboundRecord:
    """A row of `SELECT id, <INBOUND_COLUMNS>`; `extra` as JSON text (SQLite) or already
    decoded (PostgreSQL jsonb)."""
    mo_id, sender, recipient, text, received_at, carrier, protocol, ref, total, seq, extra = row
    return InboundRecord(
        int(mo_id),
        MobileOriginated(
            sender=sender,
            recipient=recipient,
            text=text,
            received_at_ms=int(received_at),
            carrier=carrier,
            protocol=protocol,
            concat=None if ref is None else Concat(int(ref), int(total), int(seq)),
            extra=json.loads(extra) if isinstance(extra, str) else dict(extra),
        ),
    )


def legacy_columns(
    data_coding: int, esm_class: int, udh: bytes
) -> tuple[int | None, int | None, int | None, str]:
    """The concat columns and the `extra` JSON of an MO stored with SMPP-shaped columns.
    Which protocol brought it was not recorded (CMPP's were stored as SMPP's), so the
    columns are kept as they were, under their SMPP names."""
    concat = split_udh(udh)[0] if udh else None
    extra: Extra = {"data_coding": data_coding, "esm_class": esm_class, "udh": udh.hex()}
    return (*concat_columns(concat), extra_json(extra))
