"""The one parser of carrier URLs: ``scheme://user:password@host:port?name=value&...``.

Every carrier (sim, smpp, cmpp) reads its URL here and validates the values in its own
settings module. Values are percent-decoded (``%26`` for ``&``, ``%40`` for ``@`` in a
password); ``+`` stays a plus sign (so ``bind=tx+rx`` works). Errors are ValueErrors naming
the scheme and the bad part, and never repeat the URL: it may hold a password.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import attrs

__all__ = [
    "CarrierUrl",
    "check_non_negative",
    "check_positive",
    "check_range",
    "parameter_error",
    "parse_carrier_url",
    "parse_choice",
    "parse_float",
    "parse_int",
    "parse_values",
]

EnumT = TypeVar("EnumT", bound=enum.Enum)


@attrs.frozen
class CarrierUrl:
    """The parts of a carrier URL, percent-decoded; `params` holds the raw query values."""

    host: str
    port: int | None  # None: the URL names no port
    username: str
    password: str = attrs.field(repr=False)
    params: Mapping[str, str]


def parameter_error(scheme: str, name: str, message: str) -> ValueError:
    return ValueError(f"{scheme} carrier parameter {name!r}: {message}")


def parse_carrier_url(
    url: str, scheme: str, known: tuple[str, ...], *, usage: str, server: bool = True
) -> CarrierUrl:
    """Split and check a URL of `scheme` whose query may name the `known` parameters, each at
    most once. `server` False: the URL must name no host and no path (``sim://?...``).
    `usage` is the shape shown in errors, e.g. ``smpp://id:password@host:port?...``."""
    # urllib's own messages could quote the netloc, password included: rephrased.
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ValueError(f"{scheme} carrier URL is malformed (check the host part)") from None
    if parts.scheme != scheme:
        raise ValueError(
            f"not a {scheme} carrier URL (scheme {parts.scheme!r}, expected {scheme!r})"
        )
    if not server and (parts.netloc or parts.path not in ("", "/")):
        raise ValueError(f"{scheme} carrier URL takes no host or path: write {usage}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{scheme} carrier URL: the port must be a number 1..65535") from None
    if parts.path not in ("", "/"):
        raise ValueError(f"{scheme} carrier URL takes no path: write {usage}")
    if parts.fragment:
        raise ValueError(f"{scheme} carrier URL takes no #fragment")
    params: dict[str, str] = {}
    for field in parts.query.split("&"):
        if not field:
            continue
        name, equals, value = field.partition("=")
        name = unquote(name)
        if name not in known:
            raise ValueError(
                f"{scheme} carrier: unknown parameter {name!r} (known: {', '.join(known)})"
            )
        if not equals:
            raise parameter_error(scheme, name, "has no value (write name=value)")
        if name in params:
            raise parameter_error(scheme, name, "is given twice")
        params[name] = unquote(value)
    return CarrierUrl(
        host=parts.hostname or "",
        port=port,
        username=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        params=params,
    )


def parse_int(scheme: str, name: str, raw: str) -> int:
    try:
        return int(raw.strip())
    except ValueError:
        raise parameter_error(scheme, name, f"must be an integer, got {raw!r}") from None


def parse_float(scheme: str, name: str, raw: str) -> float:
    try:
        return float(raw.strip())
    except ValueError:
        raise parameter_error(scheme, name, f"must be a number, got {raw!r}") from None


def parse_values(
    scheme: str,
    raw: Mapping[str, str],
    *,
    ints: tuple[str, ...] = (),
    floats: tuple[str, ...] = (),
    texts: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The parameters of ``raw`` that are named here, parsed (ints, then floats, then texts:
    the first bad one raises), as keyword arguments for the carrier's config class."""
    # Any: each value's type was checked by its own parser; the config validates ranges.
    values: dict[str, Any] = {}
    for name in ints:
        if name in raw:
            values[name] = parse_int(scheme, name, raw[name])
    for name in floats:
        if name in raw:
            values[name] = parse_float(scheme, name, raw[name])
    for name in texts:
        if name in raw:
            values[name] = raw[name]
    return values


def parse_choice(scheme: str, name: str, raw: str, choices: type[EnumT]) -> EnumT:
    for choice in choices:
        if choice.value == raw.strip().lower():
            return choice
    known = " | ".join(str(choice.value) for choice in choices)
    raise parameter_error(scheme, name, f"must be one of {known}, got {raw!r}")


def check_range(scheme: str, name: str, value: float, low: float, high: float) -> None:
    if not (math.isfinite(value) and low <= value <= high):
        raise parameter_error(scheme, name, f"must be between {low:g} and {high:g}, got {value!r}")


def check_positive(scheme: str, name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise parameter_error(
            scheme, name, f"must be a finite number of seconds > 0, got {value!r}"
        )


def check_non_negative(scheme: str, name: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise parameter_error(scheme, name, f"must be a finite number >= 0, got {value!r}")
