"""`SMSGW_DB=postgresql://…`: the libpq URL, checked, with smsgw's connection defaults.

libpq parses the URL (every `?sslmode=`, `?host=/run/postgresql`, `?options=` … is passed
on as written). smsgw adds only what the URL leaves unset: a bounded connect time, TCP
keepalives and a TCP user timeout (a gateway must notice a vanished server in seconds, not
after the kernel's two hours), and its application name. No message repeats the password.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Final

SCHEMES: Final = ("postgresql", "postgres")
FORM: Final = "postgresql://user:password@host:port/dbname"

_USERINFO_PASSWORD: Final = re.compile(r"^[^:]*://[^/?#@:]*:([^/?#]*)@")
_QUERY_PASSWORD: Final = re.compile(r"[?&]password=([^&#]*)")

# Seconds / milliseconds as libpq takes them (strings: they go into a conninfo).
DEFAULTS: Final[dict[str, str]] = {
    "connect_timeout": "5",
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "10000",
    "application_name": "smsgw",
}


def mask_password(text: str, url: str) -> str:
    """`text` with the URL's password (as written, and decoded) replaced by `***`. Read
    without a URL parser: a URL libpq refuses may be one Python's parser refuses too."""
    found = _USERINFO_PASSWORD.search(url)
    secrets = {found.group(1)} if found and found.group(1) else set()
    secrets.update(_QUERY_PASSWORD.findall(url))
    secrets |= {urllib.parse.unquote(secret) for secret in secrets}
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def connection_settings(url: str) -> dict[str, str]:
    """The libpq keywords of a `postgresql://` URL plus smsgw's defaults. Raises ValueError
    (without the password) for a URL libpq refuses, or when psycopg / libpq are missing."""
    scheme = url.partition("://")[0].lower()
    if scheme not in SCHEMES:
        raise ValueError(f"not a PostgreSQL URL: expected {FORM}")
    try:
        from psycopg import conninfo
        from psycopg import errors as pg_errors
    except ImportError as exc:
        raise ValueError(
            "the PostgreSQL store needs psycopg and the system's libpq:"
            f" pip install 'smsgw[postgres]' and install libpq5 ({exc})"
        ) from None
    try:
        settings = conninfo.conninfo_to_dict(url)
    except pg_errors.Error as exc:
        reason = " ".join(str(exc).split())
        raise ValueError(
            mask_password(f"a PostgreSQL URL libpq cannot use: {reason}; expected {FORM}", url)
        ) from None
    keywords = {key: str(value) for key, value in settings.items() if value is not None}
    return {**DEFAULTS, **keywords}
