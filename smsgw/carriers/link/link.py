"""One connection to an operator, whatever the dialect: the stream, its sans-IO codec, the
outgoing queue and the requests waiting for their responses.

The requests' errors are the runtime's own (the carrier turns them into SubmitErrors):
`NotSent` (it never left), `LinkLost` (it was written, or half written, when the link died:
the operator may have it), `UnreadableResponse` (answered, but the answer could not be
decoded) and `ResponseTimeout` (no answer in time: the operator may have it).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Final, Generic, cast

import trio

from smsgw.carriers.link.dialect import Dialect, Frame, FrameT

__all__ = [
    "NACK_TIMEOUT",
    "Connect",
    "Link",
    "LinkLost",
    "NotSent",
    "ResponseTimeout",
    "UnreadableResponse",
    "open_tcp",
]

NACK_TIMEOUT: Final = 1.0  # seconds for a best-effort last frame before closing a link

Connect = Callable[[str, int], Awaitable[trio.abc.Stream]]


async def open_tcp(host: str, port: int) -> trio.abc.Stream:
    return await trio.open_tcp_stream(host, port)


class NotSent(Exception):
    """The request never left: no bind, the link was gone before the write, or closing."""


class LinkLost(Exception):
    """The link died with the request written (or half written): the operator may have it."""


class UnreadableResponse(LinkLost):
    """The operator answered but the answer could not be decoded: it may have the request."""


class ResponseTimeout(Exception):
    """No response within response_timeout: the operator may have it."""


class _Pending:
    """A request written (or queued to be) and waiting for its response."""

    __slots__ = (
        "command",
        "deadline",
        "failure",
        "response",
        "task",
        "timeout",
        "withdrawn",
        "written",
    )

    def __init__(self, command: int, timeout: float) -> None:
        self.command = command
        self.timeout = timeout
        self.deadline = trio.current_time() + timeout
        # Not generic: a Generic subclass costs twice as much to create, once per request.
        self.response: Frame | None = None
        self.failure: NotSent | LinkLost | ResponseTimeout | None = None
        self.task: trio.lowlevel.Task | None = None  # the requester, while it waits
        self.written = False  # taken by the writer: the operator may have it from now on
        self.withdrawn = False  # the requester left before that: never write it

    def finish(self) -> None:
        task, self.task = self.task, None
        if task is not None:
            trio.lowlevel.reschedule(task)


class Link(Generic[FrameT]):
    """One connection: the stream, its codec, its outgoing queue and its open requests.

    PDUs are not written by the tasks that send them: they are queued, and the link's writer
    task (`write_loop`, run by the session while the link is served) writes everything queued
    since its last write with one `send_all`, under ``write_timeout``. Under load that is one
    system call for a whole wave of submit_sm and deliver_sm_resp instead of one (plus a lock
    and a timer) per PDU. Likewise one `expire_loop` task per link enforces every request's
    response timeout, instead of a timer per request.

    `lose(reason)` marks it dead (idempotent): every open request fails at once — `LinkLost`
    when its bytes were handed to the stream (the operator may have it), `NotSent` when they were
    still queued — and the session's watcher ends the bind.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        name: str,
        dialect: Dialect[FrameT],
        *,
        write_timeout: float,
    ) -> None:
        self.stream = stream
        self.name = name
        self.dialect = dialect
        self.codec = dialect.new_codec()
        self.lost: str | None = None
        self.last_read = trio.current_time()  # when bytes last came (idle keep-alives only)
        self.lost_event = trio.Event()
        self._write_timeout = write_timeout
        self._pending: dict[int, _Pending] = {}
        # Queued for the writer: the bytes and, for a request, its _Pending.
        self._outgoing: list[tuple[bytes, _Pending | None]] = []
        self._writing = False  # the writer is in send_all
        self._writer_task: trio.lowlevel.Task | None = None  # parked, waiting for output
        self._flushed: trio.Event | None = None  # set once the queue is written out
        self._expiry_task: trio.lowlevel.Task | None = None  # parked, nothing to expire
        self._expiry_scope: trio.CancelScope | None = None  # sleeping until a deadline

    @property
    def alive(self) -> bool:
        return self.lost is None

    @property
    def outstanding(self) -> int:
        """Requests written (or queued) and not yet answered."""
        return len(self._pending)

    def lose(self, reason: str) -> None:
        if self.lost is not None:
            return
        self.lost = reason
        self.lost_event.set()
        pending_requests = list(self._pending.values())
        self._pending.clear()
        for pending in pending_requests:
            pending.failure = LinkLost(reason) if pending.written else NotSent(reason)
            pending.finish()
        self._outgoing.clear()
        if self._flushed is not None:
            self._flushed.set()

    # -- writing ---------------------------------------------------------------------------

    def _queue(self, data: bytes, pending: _Pending | None) -> None:
        self._outgoing.append((data, pending))
        task = self._writer_task
        if task is not None:
            self._writer_task = None
            trio.lowlevel.reschedule(task)

    def send_nowait(self, frame: FrameT) -> None:
        """Queue a frame that expects no answer (a response); dropped if the link is lost
        (an answer only matters to the link itself)."""
        if self.lost is None:
            self._queue(self.codec.send(frame), None)

    async def flush(self) -> None:
        """Wait until everything queued so far is written (or the link is lost)."""
        while self.lost is None and (self._outgoing or self._writing):
            if self._flushed is None:
                self._flushed = trio.Event()
            await self._flushed.wait()

    async def close_with(self, frame: FrameT | None, reason: str) -> None:
        """Send a last PDU (best effort, for at most NACK_TIMEOUT), then lose the link."""
        if frame is not None:
            self.send_nowait(frame)
        with trio.move_on_after(NACK_TIMEOUT):
            await self.flush()
        self.lose(reason)

    async def write_loop(self) -> None:
        """The writer task (see the class doc); returns once the link is lost."""
        try:
            while self.lost is None:
                if not self._outgoing:
                    if self._flushed is not None:
                        self._flushed.set()
                        self._flushed = None
                    await self._wait_for_output()
                    continue
                batch, self._outgoing = self._outgoing, []
                chunks: list[bytes] = []
                for data, pending in batch:
                    if pending is not None:
                        if pending.withdrawn:
                            continue
                        pending.written = True
                    chunks.append(data)
                if chunks:
                    await self._write(b"".join(chunks))
        finally:
            self._writer_task = None

    async def _wait_for_output(self) -> None:
        self._writer_task = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:
            self._writer_task = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    async def _write(self, data: bytes) -> None:
        finished = False
        self._writing = True
        try:
            with trio.move_on_after(self._write_timeout):
                await self.stream.send_all(data)
                finished = True
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as error:
            self.lose(f"write failed: {error!r}")
        finally:
            self._writing = False
            # Interrupted mid-PDU (stalled, cancelled, failed): the stream's framing is
            # lost for good, so is the link.
            if not finished:
                self.lose(f"write stalled for {self._write_timeout:g} s or was interrupted")

    # -- requests --------------------------------------------------------------------------

    async def request(self, frame: FrameT, timeout: float) -> FrameT:
        """Send a request and return its response (the matching resp or a generic_nack).

        Raises NotSent, LinkLost or ResponseTimeout.
        """
        if self.lost is not None:
            raise NotSent(self.lost)
        numbered, data = self.codec.send_request(frame)
        sequence = numbered.sequence_number
        return await self._exchange(sequence, data, int.from_bytes(data[4:8]), timeout)

    async def request_encoded(self, data: bytes, timeout: float) -> FrameT:
        """`request` for a request already encoded (any sequence number: it is renumbered)."""
        if self.lost is not None:
            raise NotSent(self.lost)
        sequence, numbered = self.codec.number_request(data)
        return await self._exchange(sequence, numbered, int.from_bytes(data[4:8]), timeout)

    async def _exchange(self, sequence: int, data: bytes, command: int, timeout: float) -> FrameT:
        pending = _Pending(command, timeout)
        self._pending[sequence] = pending
        self._queue(data, pending)
        self._watch_deadline(pending.deadline)
        pending.task = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:
            pending.task = None
            return trio.lowlevel.Abort.SUCCEEDED

        try:
            await trio.lowlevel.wait_task_rescheduled(abort)
        except BaseException:
            if not pending.written:
                pending.withdrawn = True  # still queued: it never leaves
            raise
        finally:
            if self._pending.get(sequence) is pending:
                del self._pending[sequence]
        if pending.response is not None:
            return cast(FrameT, pending.response)  # the answer to a request of this link
        assert pending.failure is not None
        raise pending.failure

    def answer(self, response: FrameT) -> bool:
        """Hand a response to the request waiting for it; False if none is (late or stray)."""
        pending = self._pending.pop(response.sequence_number, None)
        if pending is None:
            return False
        pending.response = response
        pending.finish()
        return True

    def fail_request(self, sequence: int, failure: LinkLost) -> None:
        pending = self._pending.pop(sequence, None)
        if pending is not None:
            pending.failure = failure
            pending.finish()

    # -- response timeouts -----------------------------------------------------------------

    def _watch_deadline(self, deadline: float) -> None:
        task = self._expiry_task
        if task is not None:
            self._expiry_task = None
            trio.lowlevel.reschedule(task)
        elif self._expiry_scope is not None and deadline < self._expiry_scope.deadline:
            self._expiry_scope.deadline = deadline

    async def expire_loop(self) -> None:
        """Fail the requests whose response did not come in time (ResponseTimeout)."""
        try:
            while True:
                now = trio.current_time()
                earliest = math.inf
                expired: list[tuple[int, _Pending]] = []
                for sequence, pending in self._pending.items():
                    if pending.deadline <= now:
                        expired.append((sequence, pending))
                    elif pending.deadline < earliest:
                        earliest = pending.deadline
                for sequence, pending in expired:
                    del self._pending[sequence]
                    command = self.dialect.command_name(pending.command)
                    pending.failure = ResponseTimeout(
                        f"no answer to {command} (sequence {sequence}) within {pending.timeout:g} s"
                    )
                    pending.finish()
                if earliest == math.inf:
                    self._expiry_task = trio.lowlevel.current_task()

                    def abort(_: object) -> trio.lowlevel.Abort:
                        self._expiry_task = None
                        return trio.lowlevel.Abort.SUCCEEDED

                    await trio.lowlevel.wait_task_rescheduled(abort)
                else:
                    with trio.CancelScope(deadline=earliest) as self._expiry_scope:
                        await trio.sleep_forever()
                    self._expiry_scope = None
        finally:
            self._expiry_task = None
            self._expiry_scope = None

    async def close(self, reason: str) -> None:
        self.lose(reason)
        await trio.aclose_forcefully(self.stream)
