"""The settings every session reads, whatever the dialect, and their one validation."""

from __future__ import annotations

from typing import Protocol

from smsgw.carriers.url import check_non_negative, check_positive, check_range, parameter_error

__all__ = ["LinkSettings", "check_endpoint", "check_link_settings"]


class LinkSettings(Protocol):
    """The settings every session reads, whatever the dialect (attributes of its config)."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def address(self) -> str: ...
    @property
    def window(self) -> int: ...
    @property
    def tps(self) -> float: ...
    @property
    def binds(self) -> int: ...
    @property
    def response_timeout(self) -> float: ...
    @property
    def bind_timeout(self) -> float: ...
    @property
    def bind_wait(self) -> float: ...
    @property
    def reconnect_min(self) -> float: ...
    @property
    def reconnect_max(self) -> float: ...
    @property
    def throttle_pause(self) -> float: ...


def check_endpoint(scheme: str, host: str, port: int, *, usage: str) -> None:
    """Raise ValueError when the URL has no host or its port is out of range; ``usage``
    shows how to write the URL."""
    if not host:
        raise ValueError(f"{scheme} carrier URL has no host: write {usage}")
    if not 1 <= port <= 65535:
        raise ValueError(f"{scheme} carrier URL: port must be 1..65535, got {port}")


def check_link_settings(scheme: str, config: LinkSettings) -> None:
    """Raise ValueError naming the first of the runtime's parameters that is out of range."""
    check_range(scheme, "window", config.window, 1, 1000)
    check_non_negative(scheme, "tps", config.tps)
    check_range(scheme, "binds", config.binds, 1, 64)
    check_positive(scheme, "response_timeout", config.response_timeout)
    check_positive(scheme, "bind_timeout", config.bind_timeout)
    check_non_negative(scheme, "bind_wait", config.bind_wait)
    check_positive(scheme, "reconnect_min", config.reconnect_min)
    check_positive(scheme, "reconnect_max", config.reconnect_max)
    if config.reconnect_min > config.reconnect_max:
        raise parameter_error(
            scheme,
            "reconnect_max",
            f"must be >= reconnect_min ({config.reconnect_min:g}), got {config.reconnect_max:g}",
        )
    check_non_negative(scheme, "throttle_pause", config.throttle_pause)
