"""A test peer run as a child process (the ISMG simulator's `tests.ismg.process`, the Node
SMSC's `tests.smsc_process`): its stream readers and its stop, around the test's block."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager

import trio


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
