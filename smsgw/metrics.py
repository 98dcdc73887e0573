"""`SMSGW_METRICS`: a small HTTP endpoint with Prometheus-style `/metrics` and `/healthz`.

HTTP is h11 (sans-IO, like our own framing); the text exposition format is
prometheus_client's, fed at each scrape by the samples a `smsgw.observe.Source` gives (one
gateway process, or a supervisor merging its workers'): this module knows none of the
gateway's parts, only how to serve what they show (no global registry, nothing counted
twice). One request per connection; every read and
write under a deadline; at most `MAX_CONNECTIONS` at once (more are answered 503 at once,
before their request is read).

`/healthz` answers 200 while every check the source gives holds (the gateway's: not
shutting down, the store answering a read, for carriers with binds at least one bind up);
else 503. Its JSON body names each check, for whoever reads it at 3 a.m.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterable, Sequence
from typing import Final

import attrs
import h11
import trio
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from smsgw.config import Endpoint, open_listeners
from smsgw.observe import Check, Kind, Sample, Source
from smsgw.streams import discard_input

log = logging.getLogger("smsgw.metrics")

MAX_CONNECTIONS: Final = 16
READ_TIMEOUT_S: Final = 10.0
WRITE_TIMEOUT_S: Final = 10.0
MAX_REQUEST_HEAD: Final = 16 * 1024  # request line and headers; a scraper's are a few hundred
SOURCE_TIMEOUT_S: Final = 10.0  # past this a scrape answers 503 rather than wait on
RECEIVE_CHUNK: Final = 4096
DRAIN_TIMEOUT_S: Final = 1.0  # after answering a bad request, for the rest of it to arrive
_BUSY_BODY: Final = b"too many metrics connections\n"
_BUSY_RESPONSE: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: %d\r\nRetry-After: 1\r\nConnection: close\r\n\r\n%s"
    % (len(_BUSY_BODY), _BUSY_BODY)
)


@attrs.frozen
class Health:
    ok: bool
    checks: dict[str, str]

    @classmethod
    def of(cls, checks: Sequence[Check]) -> Health:
        return cls(all(check.ok for check in checks), {c.name: c.detail for c in checks})

    def body(self) -> bytes:
        status = "ok" if self.ok else "unavailable"
        return json.dumps({"status": status, "checks": self.checks}).encode() + b"\n"


@attrs.frozen
class _Reply:
    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


class _Families(Collector):
    """A collector over metric families gathered before the exposition is written."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


class MetricsServer:
    """Serves what `source` shows: its samples at /metrics, its checks at /healthz."""

    def __init__(self, endpoint: Endpoint, source: Source) -> None:
        self.endpoint = endpoint
        self.source = source
        self.active_connections = 0

    async def run(
        self, *, task_status: trio.TaskStatus[Endpoint] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await open_listeners("SMSGW_METRICS", self.endpoint)
        task_status.started(Endpoint.of_sockname(listeners[0].socket.getsockname()))
        await trio.serve_listeners(self._handle, listeners)

    # --- HTTP ---

    async def _handle(self, stream: trio.SocketStream) -> None:
        if self.active_connections >= MAX_CONNECTIONS:
            await _refuse_busy(stream)
            return
        self.active_connections += 1
        try:
            await self._serve_one(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.debug("metrics connection broke: %s", exc)
        except Exception:
            log.exception("metrics handler failed")  # costs this connection only
        finally:
            self.active_connections -= 1

    async def _serve_one(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD)
        request: h11.Request | None = None
        try:
            with trio.move_on_after(READ_TIMEOUT_S):
                request = await _read_request(stream, conn)
        except h11.RemoteProtocolError as exc:
            if conn.our_state not in {h11.IDLE, h11.SEND_RESPONSE}:
                return  # too late to answer (cannot happen before our response; be safe)
            status = exc.error_status_hint
            await _send(stream, conn, _text(status, f"bad request: {exc}\n"), head_only=False)
            await _end_and_drain(stream)  # the rest of a bad request may still be coming
            return
        if request is None:  # closed, or silent past the deadline
            return
        reply = await self._route(request)
        await _send(stream, conn, reply, head_only=request.method == b"HEAD")

    async def _route(self, request: h11.Request) -> _Reply:
        path = request.target.split(b"?", 1)[0]
        if path not in (b"/metrics", b"/healthz"):
            return _text(404, "not found: try /metrics or /healthz\n")
        if request.method not in (b"GET", b"HEAD"):
            return _text(405, "method not allowed\n", (("Allow", "GET, HEAD"),))
        if path == b"/healthz":
            health = await self.health()
            return _Reply(200 if health.ok else 503, "application/json", health.body())
        exposition = await self.exposition()
        if exposition is None:
            return _text(503, "the gateway did not answer in time\n")
        return _Reply(200, CONTENT_TYPE_LATEST, exposition)

    # --- content ---

    async def health(self) -> Health:
        with trio.move_on_after(SOURCE_TIMEOUT_S):
            return Health.of(await self.source.checks())
        return Health(False, {"gateway": "not answering"})

    async def exposition(self) -> bytes | None:
        with trio.move_on_after(SOURCE_TIMEOUT_S):
            found = await self.source.samples()
            registry = CollectorRegistry(auto_describe=False)
            registry.register(_Families(families(found)))
            return generate_latest(registry)
        return None


def families(samples: Iterable[Sample]) -> list[Metric]:
    """Prometheus metric families of samples, in the order their names first appear."""
    by_name: dict[str, list[Sample]] = {}
    for sample in samples:
        by_name.setdefault(sample.name, []).append(sample)
    found: list[Metric] = []
    for name, group in by_name.items():
        first = group[0]
        labels = [label for label, _ in first.labels]
        family: CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily
        if first.kind is Kind.HISTOGRAM:
            family = HistogramMetricFamily(name, first.doc, labels=labels)
            for sample in group:
                values = [value for _, value in sample.labels]
                family.add_metric(values, list(sample.buckets), sample.value)
        else:
            kind = CounterMetricFamily if first.kind is Kind.COUNTER else GaugeMetricFamily
            family = kind(name, first.doc, labels=labels)
            for sample in group:
                family.add_metric([value for _, value in sample.labels], sample.value)
        found.append(family)
    return found


async def _refuse_busy(stream: trio.SocketStream) -> None:
    """Over MAX_CONNECTIONS: 503 at once, without waiting for the request (so a flood costs
    each connection a couple of seconds at most), then take what the client sent and close."""
    with (
        trio.move_on_after(DRAIN_TIMEOUT_S),
        contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
    ):
        await stream.send_all(_BUSY_RESPONSE)
    await _end_and_drain(stream)


async def _end_and_drain(stream: trio.SocketStream) -> None:
    """After an answer sent before the whole request was read: end our side, take what the
    client still sends (for at most DRAIN_TIMEOUT_S), so the close does not reset the
    connection and destroy the answer in flight."""
    with (
        trio.move_on_after(DRAIN_TIMEOUT_S),
        contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
    ):
        await stream.send_eof()
        await discard_input(stream, MAX_REQUEST_HEAD * 4)


async def _read_request(stream: trio.SocketStream, conn: h11.Connection) -> h11.Request | None:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(RECEIVE_CHUNK))
            continue
        if isinstance(event, h11.Request):
            return event
        return None  # ConnectionClosed (a request cannot be preceded by anything else)


async def _send(
    stream: trio.SocketStream, conn: h11.Connection, reply: _Reply, *, head_only: bool
) -> None:
    headers: list[tuple[str, str]] = [
        ("Content-Type", reply.content_type),
        ("Content-Length", str(len(reply.body))),
        ("Connection", "close"),
        ("Cache-Control", "no-store"),
        *reply.headers,
    ]
    data = conn.send(h11.Response(status_code=reply.status, headers=headers))
    if not head_only:  # a HEAD answer declares the body's length and sends none
        data += conn.send(h11.Data(data=reply.body))
    data += conn.send(h11.EndOfMessage())
    with trio.move_on_after(WRITE_TIMEOUT_S):
        await stream.send_all(data)


def _text(status: int, text: str, headers: tuple[tuple[str, str], ...] = ()) -> _Reply:
    return _Reply(status, "text/plain; charset=utf-8", text.encode(), headers)
