"""The SMPP carrier's settings: ``smpp://system_id:password@host:port?param=value&...``.

Every parameter is optional; the defaults are shown. Values are percent-decoded (``%26`` for
``&``, ``%40`` for ``@`` in a password); ``+`` stays a plus sign (so ``bind=tx+rx`` works).
A bad value raises ValueError naming the parameter; no message ever repeats the password.

- ``host`` is required; ``port`` defaults to 2775. ``system_id`` is required (1-15
  characters), ``password`` may be empty (at most 8 characters, SMPP 3.4 §5.2.1).
- ``source_addr`` (``""``: the SMSC fills in the account's default), at most 20 characters.
- ``source_addr_ton`` / ``source_addr_npi``: by default 5/0 (alphanumeric) when source_addr
  has a character other than digits and ``+``, else 1/1 when it starts with ``+``, else 0/0.
- ``dest_addr_ton`` / ``dest_addr_npi``: by default 1/1 (international, E.164). A phone's
  leading ``+`` is always removed from destination_addr (SMPP says "international" by TON).
- ``system_type`` (``""``, at most 12) sent in the bind; ``service_type`` (``""``, at most 5)
  sent in each submit_sm.
- ``registered_delivery`` 1: ask for delivery receipts (the carrier then `gives_reports`);
  0: never (accepted by the SMSC is final).
- ``window`` 10: submit_sm outstanding per bind (1..1000).
- ``tps`` 0: most submit_sm per second per bind, evenly spaced (0 = unlimited).
- ``binds`` 1: sessions per carrier (1..64); ``bind`` ``trx`` (one transceiver connection)
  or ``tx+rx`` (a transmitter and a receiver connection per session).
- ``enquire_link`` 30: seconds between enquire_link (0 = never).
- ``response_timeout`` 10: seconds to wait for any response (submit_sm_resp, enquire_link_resp,
  unbind_resp) and for a stalled write.
- ``bind_timeout`` 10: seconds for the TCP connect plus the bind response.
- ``bind_wait`` 5: seconds a submit waits for a bound session before failing TEMPORARY.
- ``reconnect_min`` 1 / ``reconnect_max`` 60: the reconnect backoff (doubles per failed bind
  or lost link, with jitter, capped at reconnect_max; back to reconnect_min once a bind has
  stayed up 10 s, so a link that flaps does not reconnect at full speed).
- ``throttle_pause`` 1: seconds a bind stops submitting after ESME_RTHROTTLED/ESME_RMSGQFUL.
- ``long`` ``udh``: how a multi-segment message goes out: ``udh`` (one submit_sm per part with
  a concatenation UDH), ``sar`` (one per part with the sar_* TLVs) or ``payload`` (one
  submit_sm with the whole text in message_payload).
- ``id_format`` ``hex_dec``: how message ids are matched (see `smsgw.carriers.smpp.outbound`):
  ``as_is`` exact, ``hex_dec`` ignoring case and leading zeros.
- ``receipt_id`` ``same``: the base the SMSC writes the id in the receipt *text* when it differs
  from its submit_sm_resp: ``decimal`` (submit ids are hex, the text says decimal) or ``hex``
  (the reverse). Used only when a receipt has no receipted_message_id TLV.
"""

from __future__ import annotations

import enum

import attrs

from smsgw.carriers.link.settings import check_endpoint, check_link_settings
from smsgw.carriers.url import (
    check_non_negative,
    check_range,
    parameter_error,
    parse_carrier_url,
    parse_choice,
    parse_values,
)

__all__ = [
    "SMPP_PARAMETERS",
    "BindMode",
    "IdFormat",
    "LongMode",
    "ReceiptIdBase",
    "SmppConfig",
    "parse_smpp_url",
]

DEFAULT_PORT = 2775

SMPP_PARAMETERS = (
    "source_addr",
    "source_addr_ton",
    "source_addr_npi",
    "dest_addr_ton",
    "dest_addr_npi",
    "system_type",
    "service_type",
    "registered_delivery",
    "window",
    "tps",
    "binds",
    "enquire_link",
    "response_timeout",
    "bind_timeout",
    "bind_wait",
    "reconnect_min",
    "reconnect_max",
    "throttle_pause",
    "bind",
    "long",
    "id_format",
    "receipt_id",
)


class BindMode(enum.Enum):
    TRANSCEIVER = "trx"
    TRANSMITTER_RECEIVER = "tx+rx"


class LongMode(enum.Enum):
    UDH = "udh"
    SAR = "sar"
    PAYLOAD = "payload"


class IdFormat(enum.Enum):
    AS_IS = "as_is"
    HEX_DEC = "hex_dec"


class ReceiptIdBase(enum.Enum):
    SAME = "same"
    DECIMAL = "decimal"
    HEX = "hex"


def _problem(name: str, message: str) -> ValueError:
    return parameter_error("smpp", name, message)


def _check_text(name: str, value: str, max_chars: int, *, show: bool = True) -> None:
    shown = f" {value!r}" if show else ""
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise _problem(name, f"must be Latin-1 text, got{shown or ' other characters'}") from None
    if "\x00" in value:
        raise _problem(name, "must not contain a NUL")
    if len(value) > max_chars:
        raise _problem(name, f"is longer than {max_chars} characters{shown and ':' + shown}")


def _default_source_ton(source_addr: str) -> int:
    if not source_addr:
        return 0
    if not source_addr.lstrip("+").isdigit():
        return 5  # alphanumeric sender
    return 1 if source_addr.startswith("+") else 0


@attrs.frozen(kw_only=True)
class SmppConfig:
    """The validated parameters (module docstring). ``password`` never shows in repr."""

    host: str
    port: int = DEFAULT_PORT
    system_id: str
    password: str = attrs.field(default="", repr=False)
    source_addr: str = ""
    source_addr_ton: int | None = None  # None: derived from source_addr (module docstring)
    source_addr_npi: int | None = None
    dest_addr_ton: int = 1
    dest_addr_npi: int = 1
    system_type: str = ""
    service_type: str = ""
    registered_delivery: int = 1
    window: int = 10
    tps: float = 0.0
    binds: int = 1
    enquire_link: float = 30.0
    response_timeout: float = 10.0
    bind_timeout: float = 10.0
    bind_wait: float = 5.0
    reconnect_min: float = 1.0
    reconnect_max: float = 60.0
    throttle_pause: float = 1.0
    bind: BindMode = BindMode.TRANSCEIVER
    long: LongMode = LongMode.UDH
    id_format: IdFormat = IdFormat.HEX_DEC
    receipt_id: ReceiptIdBase = ReceiptIdBase.SAME

    def __attrs_post_init__(self) -> None:
        check_endpoint("smpp", self.host, self.port, usage="smpp://id:password@host:port")
        if not self.system_id:
            raise _problem("system_id", "is required (smpp://system_id:password@host:port)")
        _check_text("system_id", self.system_id, 15)
        _check_text("password", self.password, 8, show=False)
        _check_text("source_addr", self.source_addr, 20)
        _check_text("system_type", self.system_type, 12)
        _check_text("service_type", self.service_type, 5)
        if self.source_addr_ton is not None:
            check_range("smpp", "source_addr_ton", self.source_addr_ton, 0, 6)
        if self.source_addr_npi is not None:
            check_range("smpp", "source_addr_npi", self.source_addr_npi, 0, 18)
        check_range("smpp", "dest_addr_ton", self.dest_addr_ton, 0, 6)
        check_range("smpp", "dest_addr_npi", self.dest_addr_npi, 0, 18)
        if self.registered_delivery not in (0, 1):
            raise _problem("registered_delivery", f"must be 0 or 1, got {self.registered_delivery}")
        check_non_negative("smpp", "enquire_link", self.enquire_link)
        check_link_settings("smpp", self)

    @property
    def source_ton(self) -> int:
        if self.source_addr_ton is not None:
            return self.source_addr_ton
        return _default_source_ton(self.source_addr)

    @property
    def source_npi(self) -> int:
        if self.source_addr_npi is not None:
            return self.source_addr_npi
        return 1 if self.source_ton == 1 else 0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def gives_reports(self) -> bool:
        return self.registered_delivery == 1


_INTS = (
    "source_addr_ton",
    "source_addr_npi",
    "dest_addr_ton",
    "dest_addr_npi",
    "registered_delivery",
    "window",
    "binds",
)
_FLOATS = (
    "tps",
    "enquire_link",
    "response_timeout",
    "bind_timeout",
    "bind_wait",
    "reconnect_min",
    "reconnect_max",
    "throttle_pause",
)
_TEXTS = ("source_addr", "system_type", "service_type")


def parse_smpp_url(url: str) -> SmppConfig:
    """Parse and validate an ``smpp://`` URL; ValueError names the bad part."""
    parts = parse_carrier_url(
        url, "smpp", SMPP_PARAMETERS, usage="smpp://id:password@host:port?..."
    )
    raw = parts.params
    values = parse_values("smpp", raw, ints=_INTS, floats=_FLOATS, texts=_TEXTS)
    choice_types: dict[str, type[enum.Enum]] = {
        "bind": BindMode,
        "long": LongMode,
        "id_format": IdFormat,
        "receipt_id": ReceiptIdBase,
    }
    for name, choices in choice_types.items():
        if name in raw:
            values[name] = parse_choice("smpp", name, raw[name], choices)

    return SmppConfig(
        host=parts.host,
        port=DEFAULT_PORT if parts.port is None else parts.port,
        system_id=parts.username,
        password=parts.password,
        **values,
    )
