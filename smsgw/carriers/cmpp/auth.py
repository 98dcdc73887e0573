"""CMPP login: the CONNECT authenticators (CMPP 3.0 §8.4.1).

AuthenticatorSource = MD5(Source_Addr + 9 zero octets + shared secret + timestamp), the
timestamp being MMDDHHMMSS as 10 zero-padded decimal digits; AuthenticatorISMG =
MD5(Status + AuthenticatorSource + secret), Status at its wire width (1 octet in 2.0, 4 in
3.0). ISMGs in the field compute the latter wrongly (gocmpp's example server hashes the
Status alone), so an SP should only warn when `check_authenticator_ismg` fails.
"""

from __future__ import annotations

import datetime
import hashlib

from smsgw.carriers.cmpp.codec import CONNECT_OK, CmppVersion, Connect, ConnectResp

__all__ = [
    "authenticator_ismg",
    "authenticator_source",
    "check_authenticator_ismg",
    "check_authenticator_source",
    "connect_request",
    "connect_response",
    "timestamp_of",
]


def _secret_bytes(secret: str | bytes) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else secret


def timestamp_of(moment: datetime.datetime) -> int:
    """The CONNECT Timestamp for ``moment``: the u32 whose digits are MMDDHHMMSS."""
    return int(moment.strftime("%m%d%H%M%S"))


def authenticator_source(source_addr: str, secret: str | bytes, timestamp: int) -> bytes:
    """The 16-octet AuthenticatorSource of a CONNECT."""
    if not 0 <= timestamp <= 9_999_999_999:
        raise ValueError(f"timestamp {timestamp} is not MMDDHHMMSS")
    addr = source_addr.encode("latin-1")
    if len(addr) > 6:
        raise ValueError(f"Source_Addr {source_addr!r} is longer than 6 octets")
    digest = hashlib.md5(
        addr + bytes(9) + _secret_bytes(secret) + b"%010d" % timestamp, usedforsecurity=False
    )
    return digest.digest()


def authenticator_ismg(
    status: int, source: bytes, secret: str | bytes, version: CmppVersion
) -> bytes:
    """The 16-octet AuthenticatorISMG of a CONNECT_RESP answering AuthenticatorSource
    ``source``."""
    packed = status.to_bytes(version.status_length, "big")
    return hashlib.md5(packed + source + _secret_bytes(secret), usedforsecurity=False).digest()


def connect_request(
    source_addr: str,
    secret: str | bytes,
    moment: datetime.datetime,
    version: CmppVersion = CmppVersion.V30,
) -> Connect:
    """The CONNECT an SP sends at ``moment`` (local time of the ISMG, by convention)."""
    timestamp = timestamp_of(moment)
    return Connect(
        source_addr=source_addr,
        authenticator_source=authenticator_source(source_addr, secret, timestamp),
        version=version,
        timestamp=timestamp,
    )


def check_authenticator_source(request: Connect, secret: str | bytes) -> bool:
    """Whether a CONNECT was made with ``secret`` (the ISMG's check)."""
    try:
        expected = authenticator_source(request.source_addr, secret, request.timestamp)
    except ValueError:
        return False
    return expected == request.authenticator_source


def connect_response(
    request: Connect, status: int, secret: str | bytes, version: CmppVersion
) -> ConnectResp:
    """The CONNECT_RESP an ISMG answers ``request`` with; on a refusal the authenticator
    is left zero, there being nothing to prove."""
    authenticator = (
        authenticator_ismg(status, request.authenticator_source, secret, version)
        if status == CONNECT_OK
        else bytes(16)
    )
    return ConnectResp(
        sequence_number=request.sequence_number,
        status=status,
        authenticator_ismg=authenticator,
        version=version,
    )


def check_authenticator_ismg(
    response: ConnectResp, request: Connect, secret: str | bytes, version: CmppVersion
) -> bool:
    """Whether the ISMG proved it knows ``secret``. A False is worth a warning only: real
    ISMGs get this wrong."""
    expected = authenticator_ismg(response.status, request.authenticator_source, secret, version)
    return expected == response.authenticator_ismg
