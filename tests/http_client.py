"""A bare HTTP/1.1 client over raw loopback sockets, for the metrics endpoint's tests."""

from __future__ import annotations

from collections.abc import Callable

import attrs
import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import raw_exchange

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@attrs.frozen
class HttpReply:
    status: int
    headers: dict[str, str]
    body: bytes


def parse_http(raw: bytes) -> HttpReply:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return HttpReply(int(status_line.split()[1]), headers, body)


async def http(port: int, method: str, path: str, *, extra: bytes = b"") -> HttpReply:
    request = f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n".encode() + extra + b"\r\n"
    return parse_http(await raw_exchange(port, request))


def samples(text: bytes) -> Samples:
    """{(sample name, sorted labels): value} of an exposition."""
    found: Samples = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def scrape_until(
    port: int, ready: Callable[[Samples], bool], *, timeout: float = 10.0
) -> Samples:
    """Scrape /metrics until `ready` holds for what it shows (counters move asynchronously)."""
    with trio.fail_after(timeout):
        while True:
            found = samples((await http(port, "GET", "/metrics")).body)
            if ready(found):
                return found
            await trio.sleep(0.05)
