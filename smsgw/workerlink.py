"""The link between the supervisor and one worker process: JSON lines over a socket pair.

The worker says `{"ready": [endpoints]}` once it serves; the supervisor asks
`{"collect": seq}` and the worker answers `{"seq": seq, "samples": [...], "checks": [...]}`;
the supervisor says `{"stop": "graceful"}` or `{"stop": "now"}`. A request waits in the
socket's buffer until the worker reads it, so a stop sent to a worker still starting is
never lost (a signal sent then would kill it before its handler is installed). The end of
the link tells the worker its supervisor is gone.
"""

from __future__ import annotations

import json
import socket
from typing import Any, Final

import trio

from smsgw.observe import Check, Sample
from smsgw.protocol.messages import converter

MAX_LINE: Final = 16 * 1024 * 1024  # a worker's samples are a few tens of kB


class LinkClosed(Exception):
    """The other end closed the link (or sent something that is not a line of JSON)."""


class Link:
    def __init__(self, sock: socket.socket) -> None:
        self.stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        self._buffer = b""
        self._send_lock = trio.Lock()

    async def send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        async with self._send_lock:
            await self.stream.send_all(data)

    async def receive(self) -> dict[str, Any]:
        while b"\n" not in self._buffer:
            if len(self._buffer) > MAX_LINE:
                raise LinkClosed("line too long")
            try:
                chunk = await self.stream.receive_some(65536)
            except trio.BrokenResourceError as exc:
                raise LinkClosed(str(exc)) from None
            if not chunk:
                raise LinkClosed("closed")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            message = json.loads(line)
        except ValueError:
            raise LinkClosed("not JSON") from None
        if not isinstance(message, dict):
            raise LinkClosed("not a JSON object")
        return message

    async def aclose(self) -> None:
        await self.stream.aclose()


def encode_report(seq: int, samples: list[Sample], checks: list[Check]) -> dict[str, Any]:
    return {
        "seq": seq,
        "samples": converter.unstructure(samples),
        "checks": converter.unstructure(checks),
    }


def decode_report(message: dict[str, Any]) -> tuple[list[Sample], list[Check]]:
    return (
        converter.structure(message.get("samples", []), list[Sample]),
        converter.structure(message.get("checks", []), list[Check]),
    )
