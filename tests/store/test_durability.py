"""Durability: a stored batch survives `kill -9` of the process that stored it."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import trio

from smsgw.store import SqliteStore, State
from tests.store.conftest import NOW

REPO = Path(__file__).resolve().parents[2]

# The child stores a batch, says so, then waits to be killed: nothing after the insert
# result (no close, no checkpoint) may be needed for the rows to survive.
CHILD = """
import sys, trio
from smsgw.store import NewMessage, SqliteStore

async def main() -> None:
    store = SqliteStore(sys.argv[1])
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        batch = [NewMessage("app1", f"m{n}", "+12345678", "hi", 1, None, 1) for n in range(50)]
        stored = await store.insert_messages(batch, int(sys.argv[2]))
        print("stored", sum(stored), flush=True)
        await trio.sleep_forever()

trio.run(main)
"""


async def test_rows_survive_kill_9(db_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", CHILD, str(db_path), str(NOW)],
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = b""
        with trio.fail_after(20):
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive_some(100)
                assert chunk, "the child exited before storing"
                line += chunk
        assert line == b"stored 50\n"
        process.send_signal(signal.SIGKILL)
    finally:
        if process.returncode is None:
            process.kill()
        with trio.move_on_after(10):
            await process.wait()
        if process.stdout is not None:
            await process.stdout.aclose()
    assert process.returncode == -signal.SIGKILL

    # a fresh connection, in this (other) process, sees every row
    conn = sqlite3.connect(str(db_path))
    try:
        assert conn.execute("SELECT COUNT(*) FROM messages").fetchone() == (50,)
    finally:
        conn.close()

    # and the store reopens the file after the crash
    store = SqliteStore(str(db_path))
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        (history,) = await store.history("m7")
        assert history.message.state is State.ACCEPTED
        assert [event.kind for event in history.events] == ["accepted"]
        assert (await store.counts())["accepted"] == 50
        nursery.cancel_scope.cancel()
