"""What a test peer did, as a list of JSON-able events a test can wait for.

The same log serves the ISMG simulator in process (`Ismg.log`) and run as a subprocess
(`tests.ismg.process`, which fills it from the child's stdout lines), and the Node SMSC
(`tests.smsc_process`): `EventWaiting` gives each of them the same waiting methods.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

# One event: {"event": kind, ...fields}.
Event = dict[str, Any]

_MISSING = object()


class IsmgError(Exception):
    """The simulator did not start, died, refused a command, or an awaited event did not
    come."""


class EventLog:
    """``error`` is what a wait that fails raises. ``exit_report``, when given, says how the
    peer ended: a wait for an event then fails at once when the log closes, with that report
    (without it, the wait ends with the usual "within {timeout}s" error)."""

    def __init__(
        self,
        error: type[Exception] = IsmgError,
        exit_report: Callable[[], Awaitable[str]] | None = None,
    ) -> None:
        self.events: list[Event] = []  # every event, in order
        self._consumed: set[int] = set()  # indexes already returned by next_event
        self._arrived = trio.Event()
        self._error = error
        self._exit_report = exit_report
        self.closed = False  # no event will come any more

    def add(self, event: Event) -> None:
        self.events.append(event)
        self._wake()

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        self._arrived.set()
        self._arrived = trio.Event()

    def events_of(self, kind: str) -> list[Event]:
        """Every event of this kind so far (returned by next_event or not)."""
        return [event for event in self.events if event.get("event") == kind]

    def count(self, kind: str) -> int:
        return len(self.events_of(kind))

    async def next_event(
        self,
        kind: str,
        /,
        timeout: float = 5.0,
        *,
        where: Callable[[Event], bool] | None = None,
        **fields: object,
    ) -> Event:
        """The oldest event of this kind not yet returned by next_event whose ``fields`` all
        match (any event field, "kind" included) and that ``where`` accepts, waiting up to
        ``timeout`` seconds for it."""

        def matches(event: Event) -> bool:
            return (
                event.get("event") == kind
                and all(event.get(name, _MISSING) == value for name, value in fields.items())
                and (where is None or where(event))
            )

        with trio.move_on_after(timeout):
            checked = 0
            while True:
                for index in range(checked, len(self.events)):
                    if index not in self._consumed and matches(self.events[index]):
                        self._consumed.add(index)
                        return self.events[index]
                checked = len(self.events)
                if self.closed:
                    if self._exit_report is not None:
                        report = await self._exit_report()
                        raise self._error(f"no {kind} event {fields or ''}: {report}")
                    break
                await self._arrived.wait()
        recent = [event.get("event") for event in self.events[-10:]]
        raise self._error(f"no {kind} event {fields or ''} within {timeout}s; last: {recent}")

    async def wait_for_count(self, kind: str, count: int, timeout: float = 5.0) -> list[Event]:
        """Wait until ``count`` events of this kind have come; returns all of them."""
        with trio.move_on_after(timeout):
            while True:
                found = self.events_of(kind)
                if len(found) >= count or self.closed:
                    break
                await self._arrived.wait()
        found = self.events_of(kind)
        if len(found) < count:
            raise self._error(f"{len(found)} {kind} events, expected {count} within {timeout}s")
        return found


class EventWaiting:
    """A test peer's waiting methods, answered by its ``log``."""

    log: EventLog

    def events_of(self, kind: str) -> list[Event]:
        """Every event of this kind so far (returned by next_event or not)."""
        return self.log.events_of(kind)

    def count(self, kind: str) -> int:
        return self.log.count(kind)

    async def next_event(
        self,
        kind: str,
        /,
        timeout: float = 5.0,
        *,
        where: Callable[[Event], bool] | None = None,
        **fields: object,
    ) -> Event:
        """`EventLog.next_event`: the oldest matching event not yet returned, waited for."""
        return await self.log.next_event(kind, timeout, where=where, **fields)

    async def wait_for_count(self, kind: str, count: int, timeout: float = 5.0) -> list[Event]:
        """Wait until ``count`` events of this kind have come; returns all of them."""
        return await self.log.wait_for_count(kind, count, timeout)
