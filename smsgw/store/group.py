"""The group-commit queue under both stores' writers (sqlite/writer.py, postgres/writer.py).

Callers queue ops and wait; the writer takes the first queued op plus whatever else is
queued, up to the caps, as one group, runs it in ONE transaction in a worker thread (how is
the backend's own `_run_group`), then wakes each caller with its result. While a group
commits, new ops accumulate for the next. A caller that leaves before its op is taken
cancels it; one that leaves after gets the op's compensating write (`undo_op`) queued once
the op is committed.
"""

from __future__ import annotations

import collections
from typing import Any, Generic, TypeVar, cast

import attrs
import trio

from smsgw.store.base import CommitFailed

T = TypeVar("T")


@attrs.define(eq=False, kw_only=True)
class QueuedOp(Generic[T]):
    """One queued write and, once the writer ran it, its outcome."""

    weight: int  # rows it touches, roughly: bounds the size of a group
    locks: frozenset[int] = frozenset()  # lock keys it takes (PostgreSQL): bounds a group too
    done: trio.Event = attrs.field(factory=trio.Event)
    taken: bool = False  # handed to the writer: it will be committed
    cancelled: bool = False  # the caller left before the writer took it: skip it
    abandoned: bool = False  # the caller left after the writer took it
    result: T | None = None
    error: BaseException | None = None

    def undo_op(self) -> QueuedOp[Any] | None:
        """Given the result, a compensating write to queue when the caller stopped waiting
        after the op was taken (claim_due: put the claimed rows back)."""
        return None


class GroupCommits:
    """The queue and the group commit loop; a backend supplies `_run_group`."""

    def __init__(self, max_group_ops: int, max_group_rows: int, max_group_locks: int) -> None:
        self.max_group_ops = max_group_ops
        self.max_group_rows = max_group_rows
        self.max_group_locks = max_group_locks
        self.commit_count = 0  # successful group commits (tests, metrics)
        self.ops_committed = 0  # ops those commits carried
        self._queue: collections.deque[QueuedOp[Any]] = collections.deque()
        self._wakeup = trio.Event()

    def _run_group(self, group: list[QueuedOp[Any]]) -> None:
        """In a worker thread: run the group in one transaction and commit it; each op gets
        its result or its error."""
        raise NotImplementedError

    async def _submit(self, op: QueuedOp[T]) -> T:
        """Queue a write for the next group commit and wait until it is durable."""
        self._queue.append(op)
        self._wakeup.set()
        try:
            await op.done.wait()
        except BaseException:
            if not op.taken:
                op.cancelled = True  # still queued: it will never run
            elif op.done.is_set():
                self._queue_undo(op)  # committed, but the caller will not see the result
            else:
                op.abandoned = True  # being committed: undone afterwards
            raise
        if op.error is not None:
            raise op.error
        return cast(T, op.result)

    async def _commit_groups(self) -> None:
        """Commit groups until cancelled."""
        while True:
            group = self._take_group()
            if not group:
                # No checkpoint between the empty check and the new Event: no lost wakeup.
                self._wakeup = trio.Event()
                await self._wakeup.wait()
                continue
            await self._commit(group)

    async def _flush(self) -> None:
        """Commit what callers already handed over (their B001 may still be sent); to be
        called shielded, as the flush of a shutdown."""
        while self._queue:
            group = self._take_group()
            if group:
                await self._commit(group)

    def _take_group(self) -> list[QueuedOp[Any]]:
        group: list[QueuedOp[Any]] = []
        rows = locks = 0
        queue = self._queue
        while queue and len(group) < self.max_group_ops:
            op = queue[0]
            if op.cancelled:
                queue.popleft()
                continue
            if group and (
                rows + op.weight > self.max_group_rows
                or locks + len(op.locks) > self.max_group_locks
            ):
                break
            queue.popleft()
            op.taken = True
            group.append(op)
            rows += op.weight
            locks += len(op.locks)
        return group

    async def _commit(self, group: list[QueuedOp[Any]]) -> None:
        try:
            # The ops are taken: they must run and their callers be woken, so neither the
            # thread nor the start of it may be cancelled.
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._run_group, group)
        except Exception as exc:  # a bug in _run_group itself: fail the group, keep serving
            for op in group:
                op.result = None
                op.error = CommitFailed(f"group commit failed: {exc!r}")
                op.error.__cause__ = exc
        for op in group:
            op.done.set()
            if op.abandoned:
                self._queue_undo(op)

    def _queue_undo(self, op: QueuedOp[Any]) -> None:
        if op.error is not None:
            return
        undo = op.undo_op()
        if undo is None:
            return
        self._queue.append(undo)
        self._wakeup.set()
