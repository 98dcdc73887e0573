"""The ISMG simulator as a subprocess (`python -m tests.ismg`), driven through the same
`IsmgControl` interface as in process:

    async with running_ismg_process(report_delay=0.1) as ismg:
        ...connect an SP to 127.0.0.1:ismg.port...
        await ismg.next_event("submit")
        await ismg.throttle(5)
        ismg.process.kill()   # a real crash, when a test wants one

Events reach ``ismg.log`` a moment after the simulator acted; a command's reply is a
barrier: once `command` returns, every event printed before it has been collected.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import attrs
import trio

from .child import keep_tail, read_events, supervised
from .cli import to_args
from .events import Event, EventLog, IsmgError
from .server import IsmgControl, IsmgOptions

REPO_ROOT = Path(__file__).resolve().parents[2]
_STOP_GRACE = 5.0  # seconds to exit after stdin EOF, before SIGTERM


class IsmgProcess(IsmgControl):
    def __init__(self, process: trio.Process, options: IsmgOptions) -> None:
        self.process = process
        self.options = options
        self.log = EventLog()
        self.port = 0
        self.stderr = bytearray()
        self._next_id = 1
        self._send_lock = trio.Lock()

    async def command(self, command: Mapping[str, Any], timeout: float = 5.0) -> Event:
        command_id = self._next_id
        self._next_id += 1
        line = json.dumps({**command, "id": command_id}) + "\n"
        assert self.process.stdin is not None
        async with self._send_lock:
            try:
                await self.process.stdin.send_all(line.encode())
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise IsmgError(f"the ISMG is gone: {self.stderr_text}") from exc
        reply = await self.log.next_event("reply", timeout, id=command_id)
        if not reply.get("ok"):
            raise IsmgError(f"the ISMG refused {command.get('cmd')!r}: {reply.get('error')}")
        return reply

    @property
    def stderr_text(self) -> str:
        return self.stderr.decode("utf-8", "replace").strip()

    async def _read_stdout(self) -> None:
        await read_events(self.process.stdout, self.log)

    async def _read_stderr(self) -> None:
        await keep_tail(self.process.stderr, self.stderr)

    async def _stop(self) -> None:
        """stdin EOF (a clean exit), then SIGTERM, then SIGKILL."""
        if self.process.stdin is not None:
            with suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                await self.process.stdin.aclose()
        for escalate in (self.process.terminate, self.process.kill):
            with trio.move_on_after(_STOP_GRACE):
                await self.process.wait()
                return
            escalate()
        await self.process.wait()


@asynccontextmanager
async def running_ismg_process(
    *, start_timeout: float = 10.0, **options: Any
) -> AsyncIterator[IsmgProcess]:
    """Start `python -m tests.ismg` with these `IsmgOptions`, wait until it listens, yield
    it, stop it on exit. IsmgError when it cannot start."""
    settings = attrs.evolve(IsmgOptions(), **options)
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "tests.ismg", *to_args(settings)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO_ROOT,
    )
    ismg = IsmgProcess(process, settings)
    async with supervised(process, (ismg._read_stdout, ismg._read_stderr), ismg._stop):
        try:
            listening = await ismg.log.next_event("listening", start_timeout)
        except IsmgError:
            with trio.move_on_after(2):
                await process.wait()
            raise IsmgError(
                f"the ISMG did not start (exit {process.returncode}): {ismg.stderr_text}"
            ) from None
        ismg.port = int(listening["port"])
        yield ismg
