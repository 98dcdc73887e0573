"""Owners and leases (smsgw.lease) on a real SQLite store, in real time (short leases)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from smsgw.clock import WallClock
from smsgw.lease import Lease, RetryLog, dead_local_owners, new_owner
from smsgw.store import OwnerInfo, OwnerRecord, SqliteStore, StoreError
from tests.test_pipeline import until


def record(info: OwnerInfo) -> OwnerRecord:
    return OwnerRecord(info, 0)


def test_owner_ids_are_unique_per_start() -> None:
    first, second = new_owner(1), new_owner(1)
    assert first.id != second.id
    assert (first.pid, first.host) == (os.getpid(), second.host)


def test_dead_local_owners() -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True)  # fmt: skip
    dead_pid = int(gone.stdout)
    here = new_owner(1).host
    stopped = OwnerInfo("stopped", here, os.getpid(), 1)  # this process, not running
    exited = OwnerInfo("exited", here, dead_pid, 1)
    alive = OwnerInfo("parent", here, os.getppid(), 1)
    elsewhere = OwnerInfo("elsewhere", "another-host", dead_pid, 1)
    owners = [record(o) for o in (stopped, exited, alive, elsewhere)]
    assert dead_local_owners(owners, host=here) == ["stopped", "exited"]


def test_retry_log_counts_repeats(caplog: pytest.LogCaptureFixture) -> None:
    retry = RetryLog(logging.getLogger("test"), "writing")
    with caplog.at_level(logging.WARNING):
        retry.failed(StoreError("disk full"))
        retry.failed(StoreError("disk full"))
        retry.succeeded()
        retry.succeeded()  # nothing more to say
    assert [r.getMessage() for r in caplog.records] == [
        "writing: store error (failure 1, retrying): disk full",
        "writing: store error (failure 2, retrying): disk full",
        "writing: stored after 2 failures",
    ]
    assert all("Traceback" not in (r.exc_text or "") for r in caplog.records)


async def test_a_lease_is_renewed_released_and_taken_again_after_a_reclaim(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    store = SqliteStore(str(tmp_path / "db"))
    await nursery.start(store.run)
    clock = WallClock()
    lease = Lease(store, clock, 0.3)
    async with trio.open_nursery() as running:
        await running.start(lease.run)
        (found,) = await store.owners()
        assert found.info == lease.info
        await until(lambda: lease.renewals >= 2, within=10, every=0.05)
        # Another process declares it dead: it registers again, as a new generation.
        await store.reclaim("other", clock.now_ms(), dead=[lease.owner])
        assert await store.owners() == []
        await until(lambda: lease.generation >= 1, within=10, every=0.05)
        assert [o.info.id for o in await store.owners()] == [lease.owner]
        running.cancel_scope.cancel()
    assert await store.owners() == []  # released on the way out
    with pytest.raises(RuntimeError):
        await lease.run()
