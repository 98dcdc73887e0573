"""Start the real `smsgw listen` (the merchant's receipt receiver) as a child process.

    async with listen_process(tmp_path) as merchant:            # or listen_process(p, "--silent")
        ...configure an app with receipt endpoint merchant.address...
        await merchant.wait_for(lambda items: len(items) >= 3, timeout=10)
        merchant.receipts()                                      # the A002 items it printed

`smsgw listen` announces "smsgw listen: listening on HOST:PORT" on stderr and prints one
JSON line per received item on stdout ({"kind": "A002"|"A003", "msgid", "phone", ...}).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from tests.gateway_process import base_env, smsgw_command

LISTENING = re.compile(rb"listening on (\S+):(\d+)")

Item = dict[str, Any]


@attrs.define
class ListenProcess:
    process: trio.Process
    port: int
    items: list[Item]  # every item printed so far, in order
    stderr: list[bytes]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def receipts(self) -> list[Item]:
        return [item for item in self.items if item["kind"] == "A002"]

    def status_reports(self) -> list[Item]:
        return [item for item in self.items if item["kind"] == "A003"]

    async def wait_for(
        self, condition: Callable[[list[Item]], bool], *, timeout: float = 10.0
    ) -> None:
        """Until `condition(items)` holds; TooSlowError (with what was seen) if it never does."""
        try:
            with trio.fail_after(timeout):
                while not condition(self.items):
                    if self.process.returncode is not None:
                        raise RuntimeError(f"smsgw listen exited {self.process.returncode}")
                    await trio.sleep(0.02)
        except trio.TooSlowError:
            raise trio.TooSlowError(
                f"condition not met within {timeout}s; items: {self.items[-20:]}"
            ) from None


async def _lines(stream: trio.abc.ReceiveStream) -> AsyncIterator[bytes]:
    buffer = b""
    async for chunk in stream:
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        for line in complete:
            yield line
    if buffer:
        yield buffer


@asynccontextmanager
async def listen_process(
    workdir: Path, *args: str, start_timeout: float = 15.0
) -> AsyncIterator[ListenProcess]:
    """A running `smsgw listen --port 0 ARGS`; on exit it gets SIGTERM and must exit 0."""
    workdir.mkdir(parents=True, exist_ok=True)
    process = await trio.lowlevel.open_process(
        [*smsgw_command(), "listen", "--port", "0", *args],
        env=base_env(workdir, {}),
        cwd=str(workdir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    items: list[Item] = []
    stderr: list[bytes] = []
    ports: list[int] = []
    found = trio.Event()

    async def pump_stdout() -> None:
        assert process.stdout is not None
        async for line in _lines(process.stdout):
            if line.strip():
                items.append(json.loads(line))

    async def pump_stderr() -> None:
        assert process.stderr is not None
        async for line in _lines(process.stderr):
            stderr.append(line)
            match = LISTENING.search(line)
            if match and not ports:
                ports.append(int(match.group(2)))
                found.set()
        found.set()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump_stdout)
            nursery.start_soon(pump_stderr)
            with trio.fail_after(start_timeout):
                await found.wait()
            if not ports:
                code = await process.wait()
                raise RuntimeError(f"smsgw listen exited {code}: {b''.join(stderr)[-2000:]!r}")
            listener = ListenProcess(process, ports[0], items, stderr)
            try:
                yield listener
            finally:
                with trio.CancelScope(shield=True):
                    process.send_signal(signal.SIGTERM)
                    with trio.move_on_after(10):
                        await process.wait()
                    if process.returncode is None:
                        process.kill()
                        await process.wait()
                # The pumps end at EOF; the deadline only guards against a stuck pipe.
                nursery.cancel_scope.deadline = trio.current_time() + 5
            assert process.returncode == 0, f"smsgw listen exited {process.returncode}"
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
