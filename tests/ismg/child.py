"""A test peer run as a child process (the ISMG simulator's `tests.ismg.process`, the Node
SMSC's `tests.smsc_process`): its stream readers and its stop, around the test's block."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager, suppress

import trio

from .events import EventLog

STDERR_KEPT = 16 * 1024  # the tail of a child's stderr kept for error messages


async def read_events(stream: trio.abc.ReceiveStream | None, log: EventLog) -> None:
    """Each line the child prints on stdout, as one event of ``log`` (a line that is not a
    JSON object comes as ``{"event": "unparsed", "line": ...}``, and so does an unfinished
    last line); closes the log at EOF."""
    assert stream is not None, "the child is opened with a stdout pipe"

    def add(line: bytes) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            event = {"event": "unparsed", "line": line.decode("utf-8", "replace")}
        log.add(event)

    pending = bytearray()
    try:
        async for chunk in stream:
            pending += chunk
            while (end := pending.find(b"\n")) >= 0:
                add(bytes(pending[:end]))
                del pending[: end + 1]
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        if pending.strip():
            add(bytes(pending))
        log.close()


async def keep_tail(stream: trio.abc.ReceiveStream | None, tail: bytearray) -> None:
    """The last `STDERR_KEPT` bytes the child prints on stderr, kept in ``tail``."""
    assert stream is not None, "the child is opened with a stderr pipe"
    with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        async for chunk in stream:
            tail += chunk
            del tail[:-STDERR_KEPT]


@asynccontextmanager
async def supervised(
    process: trio.Process,
    readers: Iterable[Callable[[], Awaitable[None]]],
    stop: Callable[[], Awaitable[None]],
) -> AsyncIterator[None]:
    """Run ``readers`` (which never raise) while the block runs; on exit, ``stop`` the
    child (shielded, so a cancelled test still stops it) and kill it if it still runs.

    Whatever the block raises comes out as it was raised, not wrapped in the nursery's
    group (raised outside the handler, so that its own context stays as it was)."""
    unwrapped: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            for reader in readers:
                nursery.start_soon(reader)
            try:
                yield
            finally:
                with trio.CancelScope(shield=True):
                    await stop()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # Only the readers run in the nursery and they never raise: whatever it wraps came
        # from the block.
        if len(group.exceptions) != 1:
            raise
        unwrapped = group.exceptions[0]
    finally:
        if process.returncode is None:
            process.kill()
    if unwrapped is not None:
        raise unwrapped
