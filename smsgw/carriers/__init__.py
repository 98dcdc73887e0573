"""Upstream carriers: the interface (base.py) and `open_carrier` to build one from a URL."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from smsgw.carriers.base import (
    Carrier,
    DeliveryReport,
    OutboundSms,
    SubmitAccepted,
    SubmitError,
    SubmitErrorKind,
)
from smsgw.carriers.sim import SimCarrier, parse_sim_url

__all__ = [
    "Carrier",
    "DeliveryReport",
    "OutboundSms",
    "SimCarrier",
    "SubmitAccepted",
    "SubmitError",
    "SubmitErrorKind",
    "open_carrier",
]


def open_carrier(url: str, *, now_ms: Callable[[], int] | None = None) -> Carrier:
    """Build the carrier a URL names (``sim://?...``, ``smpp://id:password@host:port?...``
    or ``cmpp://SP_ID:SECRET@host:port?src_id=...``).

    Raises ValueError with a message naming the bad part; the message never repeats the
    URL itself, which may hold a password. `now_ms` (epoch ms, e.g. `WallClock().now_ms`)
    stamps reports; by default each carrier makes its own `smsgw.clock.WallClock`.
    """
    try:
        scheme = urlsplit(url).scheme
    except ValueError as error:
        raise ValueError(f"carrier URL is malformed: {error}") from None
    if scheme == "sim":
        return SimCarrier(parse_sim_url(url), now_ms=now_ms)
    if scheme == "smpp":
        # Imported here: the SMPP stack is only loaded by gateways that use it.
        from smsgw.carriers.smpp.carrier import SmppCarrier
        from smsgw.carriers.smpp.settings import parse_smpp_url

        return SmppCarrier(parse_smpp_url(url), now_ms=now_ms)
    if scheme == "cmpp":
        from smsgw.carriers.cmpp.carrier import CmppCarrier
        from smsgw.carriers.cmpp.settings import parse_cmpp_url

        return CmppCarrier(parse_cmpp_url(url), now_ms=now_ms)
    if not scheme:
        raise ValueError("carrier URL has no scheme: expected sim://..., smpp://... or cmpp://...")
    raise ValueError(f"unknown carrier scheme {scheme!r}: expected sim://, smpp:// or cmpp://")
