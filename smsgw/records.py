"""Protocol-neutral records: what the gateway keeps of a mobile-originated message (MO),
whichever carrier protocol brought it.

A leaf module (it imports nothing from smsgw): carriers produce these records, the inbox and
the stores keep them, `smsgw inbox` prints them. What every protocol has is a field; what only
one protocol has (SMPP's data_coding and esm_class, CMPP's Msg_Fmt, the raw User Data Header)
goes in `extra`, a small JSON object, so another carrier protocol fits without a schema
migration.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeAlias

import attrs

__all__ = ["Concat", "Extra", "InboundRecord", "MobileOriginated"]

# A value of `extra`: JSON scalars only, so both stores keep it as one JSON object as is.
Extra: TypeAlias = Mapping[str, str | int | bool | None]


@attrs.frozen
class Concat:
    """One part of a concatenated (long) message: the message's reference, its part count,
    this part's number (from 1). However the protocol said it (UDH, SMPP sar_* TLVs)."""

    reference: int
    total: int
    seq: int


@attrs.frozen
class MobileOriginated:
    """A message from a handset to one of our addresses (SMPP deliver_sm / data_sm that is
    not a receipt, CMPP's MO DELIVER, ...)."""

    sender: str  # the handset
    recipient: str  # our address it was sent to
    text: str  # decoded, without any header
    received_at_ms: int  # when the gateway received it: wall-clock ms since the epoch
    carrier: str  # the name of the carrier that brought it (`Carrier.name`)
    protocol: str  # "smpp", "cmpp", ...; "" for MOs stored before protocols were recorded
    concat: Concat | None = None  # None: a message of its own (or not said)
    # Protocol-specific facts, e.g. {"data_coding": 8, "esm_class": 64, "udh": "050003..."}.
    extra: Extra = attrs.field(factory=dict, hash=False)


@attrs.frozen
class InboundRecord:
    """A stored MO: the store's id (newest is highest) and the message."""

    id: int
    mo: MobileOriginated
