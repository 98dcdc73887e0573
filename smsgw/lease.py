"""Owners and leases: this process start as the owner of the rows it claims.

An owner id is unique per process start. `Lease.run` registers it with a lease of
SMSGW_LEASE and renews it every third of that while the process lives; a lease that
lapses (the process died, hung, or could not reach the store for a whole lease) lets any
other process reclaim what the owner held (`smsgw.store.base.OwnerStore.reclaim`). An
owner on this host whose process is gone needs no lapse (`dead_local_owners`): a restart
takes over at once what its predecessor left.

Store failures are retried until they commit, logged one line per failure with the
repeats counted (`RetryLog`), never as tracebacks.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Sequence
from typing import Final

import trio

from smsgw.clock import WallClock
from smsgw.store.base import OwnerInfo, OwnerRecord, OwnerStore, StoreError

log = logging.getLogger("smsgw.lease")

DEFAULT_LEASE_S: Final = 30.0
RELEASE_TIMEOUT_S: Final = 2.0

# Owners of this process that are running (several gateways in one process in tests).
_LIVE: set[str] = set()


def new_owner(now_ms: int) -> OwnerInfo:
    host = socket.gethostname()
    pid = os.getpid()
    return OwnerInfo(f"{host}:{pid}:{secrets.token_hex(4)}", host, pid, now_ms)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def dead_local_owners(owners: Sequence[OwnerRecord], *, host: str | None = None) -> list[str]:
    """The owners on this host whose process is gone (or, in this process, stopped)."""
    here = host if host is not None else socket.gethostname()
    me = os.getpid()
    dead: list[str] = []
    for record in owners:
        info = record.info
        if info.host != here:
            continue
        if info.pid == me:
            if info.id not in _LIVE:
                dead.append(info.id)
        elif not _pid_alive(info.pid):
            dead.append(info.id)
    return dead


class RetryLog:
    """One log line per failure of a retried store write, with the repeats counted; one
    more when it succeeds again."""

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self._log = logger
        self._what = what
        self.failures = 0

    def failed(self, exc: BaseException) -> None:
        self.failures += 1
        self._log.error(
            "%s: store error (failure %d, retrying): %s", self._what, self.failures, exc
        )

    def succeeded(self) -> None:
        if self.failures:
            self._log.warning("%s: stored after %d failures", self._what, self.failures)
            self.failures = 0


class Lease:
    """This process's owner id and its lease (see the module doc).

    `generation` goes up each time the owner had to register again (it was reclaimed:
    whatever it had claimed, pushes included, is no longer its own).
    """

    def __init__(
        self, store: OwnerStore, clock: WallClock, duration_s: float = DEFAULT_LEASE_S
    ) -> None:
        if duration_s <= 0:
            raise ValueError("a lease lasts more than 0 s")
        self.store = store
        self.clock = clock
        self.duration_s = duration_s
        self.info = new_owner(clock.now_ms())
        self.generation = 0
        self.renewals = 0
        self._started = False

    @property
    def owner(self) -> str:
        return self.info.id

    def _until(self) -> int:
        return self.clock.now_ms() + round(self.duration_s * 1000)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Register (retrying store errors), then renew until cancelled; on the way out the
        owner is released: what it still holds is reclaimable at once."""
        if self._started:
            raise RuntimeError("Lease.run() can only be called once")
        self._started = True
        retry = RetryLog(log, f"registering owner {self.owner}")
        while True:
            try:
                await self.store.register_owner(self.info, self._until())
                break
            except StoreError as exc:
                retry.failed(exc)
                await trio.sleep(min(1.0, self.duration_s / 3))
        retry.succeeded()
        _LIVE.add(self.owner)
        try:
            task_status.started()
            await self._renew_forever()
        finally:
            _LIVE.discard(self.owner)
            with trio.move_on_after(RELEASE_TIMEOUT_S) as cleanup:
                cleanup.shield = True
                try:
                    await self.store.release_owner(self.owner)
                except StoreError as exc:
                    log.warning("owner %s not released (its lease will lapse): %s", self.owner, exc)

    async def _renew_forever(self) -> None:
        retry = RetryLog(log, f"renewing the lease of {self.owner}")
        while True:
            await trio.sleep(self.duration_s / 3)
            try:
                if await self.store.renew_owner(self.owner, self._until()):
                    self.renewals += 1
                else:
                    # Reclaimed by another process (our lease lapsed): what we held is
                    # theirs now, our stale updates are refused; carry on as a new owner.
                    log.error(
                        "owner %s was reclaimed after its lease lapsed: registering again",
                        self.owner,
                    )
                    await self.store.register_owner(self.info, self._until())
                    self.generation += 1
            except StoreError as exc:
                retry.failed(exc)
                continue
            retry.succeeded()
