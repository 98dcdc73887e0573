"""Store faults strand nothing: a real `smsgw serve` under load meets a fault of its SQLite
store, which then clears. Submits during the fault are answered `1008`, never `0` for
something unstored. Without a restart, every message reaches its final state, no outcome
the operator gave is lost (nothing is in doubt: no owner died), no code is sent twice,
every A002 goes out once, and the failures are logged as counted lines, not tracebacks.

The faults, made deterministic and the same as root or not:
- the disk is full: the gateway's RLIMIT_FSIZE is lowered to one byte (`prlimit`); SQLite's
  writes fail with EFBIG (the "database or disk is full" of a full disk; Python ignores
  SIGXFSZ), then the limit is put back. Every file the gateway writes meets it, its log
  too (lines of that moment are lost): the carrier is the SMSC, another process, so that
  the fault is the store's alone;
- the database files are made unwritable, as a read-only remount does to a running
  process (`chmod` does not: the gateway's descriptors were opened read-write before, and
  root ignores modes): the gateway runs with `tests/faults/readonly_fs.c` preloaded, which
  fails every write, truncate and sync of a `*.db`, `-wal`, `-shm` or `-journal` file with
  EROFS while a flag file exists (SQLite: "disk I/O error", SQLITE_IOERR_WRITE); its log
  is not touched. The flag is removed once the gateway has logged the failures;
- the database is locked for 25 s by a second process holding `BEGIN IMMEDIATE`.
"""

from __future__ import annotations

import collections
import resource
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import attrs
import pytest
import trio

from smsgw.client import submit
from smsgw.protocol.status import Status
from tests.e2e.delivery_support import APPID, SECRET, all_settled, by_pair, query, wait_until
from tests.e2e.operator_support import Sms
from tests.e2e.test_smpp import marker_of, smpp_gateway
from tests.gateway_process import GatewayProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

COUNT = 400
LOCK_HELD_S = 25.0
UNWRITABLE_S = 5.0
READONLY_FS_SOURCE = Path(__file__).parent.parent / "faults" / "readonly_fs.c"
BUILD_FLAGS = ("-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror")


@attrs.frozen
class Fault:
    """A store fault: `active(gateway, db)` lasts as long as the fault does; `env` is what
    the gateway needs at its start for the fault to be possible. `refuses_writes`: the
    store fails a write at once (a submit meanwhile gets `1008`), rather than making it
    wait."""

    active: Callable[[GatewayProcess, Path], AbstractAsyncContextManager[None]]
    refuses_writes: bool
    env: Mapping[str, str] = attrs.field(factory=dict)


@asynccontextmanager
async def disk_full(gateway: GatewayProcess, db: Path) -> AsyncIterator[None]:
    pid = gateway.process.pid
    before = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (1, before[1]))
    try:
        yield
        await trio.sleep(5)
    finally:
        resource.prlimit(pid, resource.RLIMIT_FSIZE, before)


HOLD_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
"""


@asynccontextmanager
async def write_lock_held(gateway: GatewayProcess, db: Path) -> AsyncIterator[None]:
    async with trio.open_nursery() as nursery:
        locked = trio.Event()

        async def hold() -> None:
            process = await trio.lowlevel.open_process(
                [sys.executable, "-c", HOLD_LOCK, str(db), str(LOCK_HELD_S)],
                stdout=-1,
            )
            assert process.stdout is not None
            assert (await process.stdout.receive_some()).startswith(b"locked")
            locked.set()
            with trio.fail_after(LOCK_HELD_S + 30):
                assert await process.wait() == 0

        nursery.start_soon(hold)
        await locked.wait()
        yield


@pytest.fixture(scope="session")
def readonly_fs_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/faults/readonly_fs.c, built once per session."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.fail(f"gcc is needed to build {READONLY_FS_SOURCE} (the unwritable-database fault)")
    library = tmp_path_factory.mktemp("faults") / "readonly_fs.so"
    built = subprocess.run(
        [gcc, *BUILD_FLAGS, "-o", str(library), str(READONLY_FS_SOURCE), "-ldl"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    return library


def unwritable(library: Path, flag: Path) -> Fault:
    """The database files fail every write while `flag` exists (see the module doc)."""

    @asynccontextmanager
    async def active(gateway: GatewayProcess, db: Path) -> AsyncIterator[None]:
        flag.touch()
        try:
            yield
            # Held until the gateway has met it (a loaded machine may take a while to get
            # there), then a while more.
            await wait_until(
                lambda: "store error" in gateway.log_text(),
                timeout=30,
                what="a store error logged (is the shim preloaded?)",
            )
            await trio.sleep(UNWRITABLE_S)
        finally:
            flag.unlink(missing_ok=True)

    return Fault(
        active,
        refuses_writes=True,
        env={"LD_PRELOAD": str(library), "FAULT_READONLY_FLAG": str(flag)},
    )


@pytest.fixture(params=["disk_full", "locked", "unwritable"])
def fault(request: pytest.FixtureRequest, tmp_path: Path) -> Fault:
    if request.param == "disk_full":
        return Fault(disk_full, refuses_writes=True)
    if request.param == "locked":
        return Fault(write_lock_held, refuses_writes=False)
    library = request.getfixturevalue("readonly_fs_library")
    return unwritable(library, tmp_path / "unwritable.flag")


async def test_a_store_fault_strands_nothing(tmp_path: Path, fault: Fault) -> None:
    messages = [
        Sms(f"f{n:03d}", f"8613600{n:06d}", f"Fault check f{n:03d}", msgtype=1 + n % 2)
        for n in range(COUNT)
    ]
    refused = [Sms(f"r{n:03d}", f"8613700{n:06d}", f"Refused r{n:03d}") for n in range(10)]
    # tps=100: the fault lands while most messages are still to be sent.
    async with smpp_gateway(
        tmp_path, smsc_options={"latency": 0.01}, carrier={"tps": 100}, env=fault.env
    ) as setup:
        db = setup.workdir / "smsgw.db"
        for start in range(0, COUNT, 100):
            await setup.submit(messages[start : start + 100])
        await setup.smsc.wait_for_count("submit_sm", 50, timeout=20)
        async with fault.active(setup.gateway, db):
            sent_in_fault = len(setup.smsc.events_of("submit_sm"))
            if fault.refuses_writes:
                reply = await submit(
                    setup.gateway.address,
                    APPID,
                    SECRET,
                    [sms.item() for sms in refused],
                    timeout=10,
                )
                assert reply.status == Status.BUSY, reply
                assert all(result.status != Status.OK for result in reply.results), reply
            await trio.sleep(1)
        await wait_until(lambda: all_settled(db), timeout=90, what="everything final")
        receipts = await setup.receipts_for(COUNT, timeout=30)
        await trio.sleep(1)  # time for a duplicate to show up
        receipts = setup.merchant.receipts()
        submits = collections.Counter(
            marker_of(event) for event in setup.smsc.events_of("submit_sm")
        )
        logged = setup.gateway.log_text()

    assert sent_in_fault < COUNT, "the fault came after every submit"
    assert query(db, "PRAGMA integrity_check") == [("ok",)]
    rows = query(db, "SELECT msgid, state, stat FROM messages")
    # Nothing answered 1008 was stored.
    assert len(rows) == COUNT
    # Nothing in doubt: every outcome the operator gave was recorded.
    assert {(state, stat) for _, state, stat in rows} == {("delivered", "DELIVRD")}
    assert set(submits) == {sms.msgid for sms in messages}
    assert set(submits.values()) == {1}, collections.Counter(submits.values())
    grouped = by_pair(receipts)
    assert len(grouped) == COUNT and {len(each) for each in grouped.values()} == {1}
    # One line per failure, repeats counted; one more when it went through.
    assert "stored after" in logged, logged[-3000:]
    assert "Traceback" not in logged, logged[-3000:]
