"""`python -m tests.ismg [options]`: the ISMG simulator as a process (see tests.ismg.cli).

Events go to stdout as JSON lines (nothing is kept in memory, so long benchmark runs stay
small); commands come from stdin, one JSON object per line, and each is answered by a
``{"event": "reply", "id": ..., "ok": ...}`` line. The process ends on stdin EOF (unless
``--no-stdin``), SIGTERM or SIGINT, after a ``{"event": "stopped", "stats": {...}}`` line.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

import trio

from .cli import parse_args
from .events import Event, EventLog, IsmgError
from .server import Ismg, IsmgOptions


class StdoutLog(EventLog):
    """Prints each event as it comes instead of keeping it."""

    def add(self, event: Event) -> None:
        sys.stdout.write(json.dumps(event, ensure_ascii=False) + "\n")
        sys.stdout.flush()


async def _serve_commands(ismg: Ismg) -> None:
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    pending = b""
    async with stdin:
        async for chunk in stdin:
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                if line.strip():
                    ismg.log.add(await _reply(ismg, line))


async def _reply(ismg: Ismg, line: bytes) -> Event:
    command_id: Any = None
    try:
        command = json.loads(line)
        if not isinstance(command, dict):
            raise IsmgError("a command is a JSON object")
        command_id = command.get("id")
        reply = await ismg.command(command)
    except (ValueError, IsmgError) as exc:
        return {"event": "reply", "id": command_id, "ok": False, "error": str(exc)}
    return {**reply, "id": command_id}


async def main(options: IsmgOptions, use_stdin: bool) -> None:
    ismg = Ismg(options)
    ismg.log = StdoutLog()
    reason = "signal"
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(ismg.run)

            async def stop_on_eof() -> None:
                nonlocal reason
                await _serve_commands(ismg)
                reason = "stdin closed"
                nursery.cancel_scope.cancel()

            if use_stdin:
                nursery.start_soon(stop_on_eof)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break
    ismg.log.add({"event": "stopped", "reason": reason, "stats": dict(ismg.stats_counters)})


if __name__ == "__main__":
    trio.run(main, *parse_args())
