"""Accepting TCP connections: `trio.serve_listeners` without its costs per connection.

Merchants open a connection per request (DESIGN: short connections), so what a connection
costs is paid by every request. `serve_listeners` hands each socket to its handler through
`SocketListener.accept` and closes it afterwards with `aclose_forcefully`: a cancel scope, a
cancellation and a checkpoint for every connection. A bare Trio server spent 135 us of CPU
per request with it and 94 us with this loop (bench/accept.py's baseline, both ways, on
the same machine); the gateway saves the same 40 us. Here the socket is closed at once,
without a checkpoint, when the handler returns; errors of `accept` are handled as
`serve_listeners` handles them.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Awaitable, Callable, Sequence

import trio

log = logging.getLogger("smsgw.acceptor")

# Out of descriptors or memory: retried after a pause (the connections in hand will free
# some), as `serve_listeners` does.
ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
CAPACITY_PAUSE_S = 0.1
# A connection that failed between the client's connect and our accept: the next one.
_IGNORED_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "EPERM",
        "ECONNABORTED",
        "EPROTO",
        "ENETDOWN",
        "ENOPROTOOPT",
        "EHOSTDOWN",
        "ENONET",
        "EHOSTUNREACH",
        "EOPNOTSUPP",
        "ENETUNREACH",
        "ENOSR",
        "ESOCKTNOSUPPORT",
        "EPROTONOSUPPORT",
        "ETIMEDOUT",
        "ECONNRESET",
    )
    if hasattr(errno, name)
)

Handler = Callable[[trio.SocketStream], Awaitable[object]]


async def serve_sockets(
    handler: Handler, listeners: Sequence[trio.SocketListener], handler_nursery: trio.Nursery
) -> None:
    """Accept on every listener until cancelled (or a listener is closed), running
    `handler` for each connection in `handler_nursery`; the socket is closed when it
    returns. The handler must catch its own errors: one that escapes ends the nursery."""
    async with trio.open_nursery() as accepting:
        for listener in listeners:
            accepting.start_soon(_accept_loop, listener.socket, handler, handler_nursery)


async def _accept_loop(
    listening: trio.socket.SocketType, handler: Handler, handler_nursery: trio.Nursery
) -> None:
    while True:
        try:
            sock, _ = await listening.accept()
        except trio.ClosedResourceError:
            return  # the listener was closed while we waited
        except OSError as exc:
            if exc.errno in ACCEPT_CAPACITY_ERRNOS:
                log.error(
                    "accept returned %s (%s); retrying in %s seconds",
                    errno.errorcode[exc.errno],
                    os.strerror(exc.errno),
                    CAPACITY_PAUSE_S,
                )
                await trio.sleep(CAPACITY_PAUSE_S)
            elif exc.errno in (errno.EBADF, errno.ENOTSOCK):
                return  # the listener was closed
            elif exc.errno not in _IGNORED_ERRNOS:
                raise
            continue
        handler_nursery.start_soon(_connection, sock, handler)


async def _connection(sock: trio.socket.SocketType, handler: Handler) -> None:
    try:
        await handler(trio.SocketStream(sock))
    finally:
        sock.close()
