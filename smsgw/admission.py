"""Which merchant connections the listener keeps: at most `max_connections` in all and
`max_per_address` from one source address.

A new connection over either cap first takes the place of the oldest connection (from that
address, or from anywhere) that has not yet sent a complete frame: a client holding sockets
open without sending anything must not keep a working one out. Only when every connection
in the way is busy with a request is the new one refused. No I/O here: the listener cancels
a shed connection through its `Slot.scope`.
"""

from __future__ import annotations

import attrs
import trio


@attrs.define(eq=False)
class Slot:
    """One admitted connection."""

    peer: str
    # Cancelled when the connection is shed; the handler runs inside it.
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    shed: bool = False
    waiting: bool = True  # no complete frame received yet: may be shed


class Admission:
    def __init__(self, max_connections: int, max_per_address: int) -> None:
        self.max_connections = max_connections
        self.max_per_address = max_per_address
        self.active = 0
        self.shed_count = 0
        # Waiting slots, oldest first (dicts keep insertion order), in all and per address;
        # an address's entry goes when its last connection does, so memory follows load.
        self._waiting: dict[Slot, None] = {}
        self._by_address: dict[str, dict[Slot, None]] = {}
        self._per_address: dict[str, int] = {}

    def admit(self, peer: str) -> Slot | None:
        """A slot for a new connection from `peer` (shedding waiting ones as needed), or None
        when it must be refused."""
        crowded = self._per_address.get(peer, 0) >= self.max_per_address
        if crowded and not self._shed_oldest(self._by_address.get(peer)):
            return None
        if self.active >= self.max_connections and not self._shed_oldest(self._waiting):
            return None
        slot = Slot(peer)
        self.active += 1
        self._per_address[peer] = self._per_address.get(peer, 0) + 1
        self._waiting[slot] = None
        self._by_address.setdefault(peer, {})[slot] = None
        return slot

    def frame_received(self, slot: Slot) -> None:
        """The connection sent a complete frame: it is working, never shed from now on."""
        if slot.waiting:
            self._forget_waiting(slot)

    def release(self, slot: Slot) -> None:
        """The connection's handler is done (a shed slot was released when it was shed)."""
        if slot.shed:
            return
        self._remove(slot)

    def _shed_oldest(self, waiting: dict[Slot, None] | None) -> bool:
        if not waiting:
            return False
        victim = next(iter(waiting))
        victim.shed = True
        victim.scope.cancel()
        self.shed_count += 1
        self._remove(victim)
        return True

    def _remove(self, slot: Slot) -> None:
        self.active -= 1
        remaining = self._per_address[slot.peer] - 1
        if remaining:
            self._per_address[slot.peer] = remaining
        else:
            del self._per_address[slot.peer]
        if slot.waiting:
            self._forget_waiting(slot)

    def _forget_waiting(self, slot: Slot) -> None:
        # Not waiting from now on, so never forgotten twice: a connection shed while its
        # frame was arriving still reports that frame (the cancellation reaches its handler
        # at the next checkpoint).
        slot.waiting = False
        del self._waiting[slot]
        same_address = self._by_address[slot.peer]
        del same_address[slot]
        if not same_address:
            del self._by_address[slot.peer]
