"""Upstream carriers: the interface (base.py) and `open_carrier` to build one from a URL."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

import attrs

from smsgw.carriers.base import (
    Carrier,
    DeliveryReport,
    OutboundSms,
    SubmitAccepted,
    SubmitError,
    SubmitErrorKind,
)
from smsgw.carriers.sim import SimCarrier, parse_sim_url
from smsgw.shares import ALONE, Share

__all__ = [
    "Carrier",
    "DeliveryReport",
    "OutboundSms",
    "SimCarrier",
    "SubmitAccepted",
    "SubmitError",
    "SubmitErrorKind",
    "divisions",
    "open_carrier",
]


def open_carrier(
    url: str, *, now_ms: Callable[[], int] | None = None, share: Share = ALONE
) -> Carrier:
    """Build the carrier a URL names (``sim://?...``, ``smpp://id:password@host:port?...``
    or ``cmpp://SP_ID:SECRET@host:port?src_id=...``).

    Raises ValueError with a message naming the bad part; the message never repeats the
    URL itself, which may hold a password. `now_ms` (epoch ms, e.g. `WallClock().now_ms`)
    stamps reports; by default each carrier makes its own `smsgw.clock.WallClock`. `share`:
    one worker of several gets its part of the operator's limits (`smsgw.shares`): of the
    simulator's tps, of the SMPP binds or CMPP connections (each keeps its own tps).
    """
    try:
        scheme = urlsplit(url).scheme
    except ValueError as error:
        raise ValueError(f"carrier URL is malformed: {error}") from None
    if scheme == "sim":
        sim = parse_sim_url(url)
        return SimCarrier(attrs.evolve(sim, tps=share.rate(sim.tps)), now_ms=now_ms)
    if scheme == "smpp":
        # Imported here: the SMPP stack is only loaded by gateways that use it.
        from smsgw.carriers.smpp.carrier import SmppCarrier
        from smsgw.carriers.smpp.settings import parse_smpp_url

        smpp = parse_smpp_url(url)
        return SmppCarrier(attrs.evolve(smpp, binds=_binds(smpp.binds, share)), now_ms=now_ms)
    if scheme == "cmpp":
        from smsgw.carriers.cmpp.carrier import CmppCarrier
        from smsgw.carriers.cmpp.settings import parse_cmpp_url

        cmpp = parse_cmpp_url(url)
        return CmppCarrier(attrs.evolve(cmpp, binds=_binds(cmpp.binds, share)), now_ms=now_ms)
    if not scheme:
        raise ValueError("carrier URL has no scheme: expected sim://..., smpp://... or cmpp://...")
    raise ValueError(f"unknown carrier scheme {scheme!r}: expected sim://, smpp:// or cmpp://")


def _binds(total: int, share: Share) -> int:
    """A worker's part of the connections (SMPP binds, CMPP connections); each keeps its
    own tps, so the operator's total is divided with them."""
    binds = share.of(total)
    if binds == 0:
        raise ValueError(
            f"binds={total} cannot be shared by {share.count} workers "
            "(each worker needs a bind of its own): raise binds or lower SMSGW_WORKERS"
        )
    return binds


def divisions(url: str) -> int | None:
    """Among how many workers at most the carrier a URL names can be shared (SMPP, CMPP:
    its binds, one each at least), or None when any number can. A bad URL: ValueError."""
    scheme = urlsplit(url).scheme
    if scheme == "smpp":
        from smsgw.carriers.smpp.settings import parse_smpp_url

        return parse_smpp_url(url).binds
    if scheme == "cmpp":
        from smsgw.carriers.cmpp.settings import parse_cmpp_url

        return parse_cmpp_url(url).binds
    return None
