"""Wake-ups from a shared store: another gateway's commit made messages due or pushes pending.

A store shared by several gateways (PostgreSQL) tells each of them about the others' commits,
so that a dispatcher or a pusher looks now rather than at its next poll. Polling stays the
fallback: a wake-up may be lost (a listener reconnecting) and then simply comes late.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import attrs


@attrs.frozen
class Wake:
    """Messages due from `due_ms` (None: none), pushes pending for `apps` (or `all_apps`)."""

    due_ms: int | None
    apps: tuple[str, ...]
    all_apps: bool = False


@runtime_checkable
class WakeSource(Protocol):
    def on_wake(self, callback: Callable[[Wake], None]) -> None:
        """Call `callback` (in the store's Trio task) for each wake-up from elsewhere."""
        ...
