"""`SMSGW_METRICS`: a small HTTP endpoint with Prometheus-style `/metrics` and `/healthz`.

HTTP is h11 (sans-IO, like our own framing); the text exposition format is
prometheus_client's, fed by a collector built from the gateway's own counters at each scrape
(no global registry, nothing counted twice). One request per connection; every read and
write under a deadline; at most `MAX_CONNECTIONS` at once (more are answered 503 at once,
before their request is read).

`/healthz` answers 200 while the gateway can take and send messages: not shutting down, the
store answering a read, and (for carriers with binds) at least one bind up; else 503. Its
JSON body names each check, for whoever reads it at 3 a.m.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Final, Protocol, runtime_checkable

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

from smsgw import __version__
from smsgw.config import Endpoint, open_listeners
from smsgw.histogram import Histogram
from smsgw.pipeline import Pipeline
from smsgw.pusher import Pusher
from smsgw.retention import Retention
from smsgw.server import Server
from smsgw.store.base import State, Store, StoreError
from smsgw.streams import discard_input

log = logging.getLogger("smsgw.metrics")

MAX_CONNECTIONS: Final = 16
READ_TIMEOUT_S: Final = 10.0
WRITE_TIMEOUT_S: Final = 10.0
MAX_REQUEST_HEAD: Final = 16 * 1024  # request line and headers; a scraper's are a few hundred
STORE_TIMEOUT_S: Final = 5.0  # a store read for a scrape or a health check
# Counting messages by state reads an index of every row: scrapes closer together than this
# share one count, so a tight scrape loop cannot load the store.
COUNTS_MAX_AGE_S: Final = 5.0
RECEIVE_CHUNK: Final = 4096
DRAIN_TIMEOUT_S: Final = 1.0  # after answering a bad request, for the rest of it to arrive
_BUSY_BODY: Final = b"too many metrics connections\n"
_BUSY_RESPONSE: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: %d\r\nRetry-After: 1\r\nConnection: close\r\n\r\n%s"
    % (len(_BUSY_BODY), _BUSY_BODY)
)

_PIPELINE_COUNTERS: Final = (
    ("submits", "submit attempts handed to the carrier"),
    ("claimed", "messages claimed from the store for sending"),
    ("requeued", "claimed messages put back unsent (shutdown, throttling)"),
    ("recovered", "submits found in doubt at start-up and decided"),
    ("reports", "delivery reports read from the carrier"),
    ("reports_unmatched", "reports kept because their operator id was not known yet"),
    ("reports_rematched", "kept reports matched later"),
    ("reports_dropped", "kept reports given up (too many or too old)"),
    ("reports_duplicate", "reports for a part already reported"),
    ("reports_ignored", "reports for a message no longer waiting for one"),
    ("reports_timed_out", "messages failed because no report came (SMSGW_REPORT_TIMEOUT)"),
)
_PUSH_COUNTERS: Final = (
    ("sends", "push frames sent (or tried) to the merchant"),
    ("acknowledged", "push frames the merchant answered with status 0"),
    ("failed", "push frames that failed (no answer, refused, non-0 status)"),
    ("items_done", "receipt items acknowledged"),
    ("items_abandoned", "receipt items given up after SMSGW_PUSH_ATTEMPTS sends"),
)


@runtime_checkable
class CountsCommits(Protocol):
    """A store that counts its group commits (SqliteStore)."""

    commit_count: int
    ops_committed: int


@runtime_checkable
class HasBinds(Protocol):
    """A carrier with network binds (SMPP, CMPP): `sessions` configured, `bound_sessions` up."""

    @property
    def sessions(self) -> Sequence[object]: ...

    @property
    def bound_sessions(self) -> int: ...


@attrs.frozen
class Health:
    ok: bool
    checks: dict[str, str]

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
    """Serves the gateway's parts' counters; `shutting_down` tells /healthz to say 503."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        store: Store,
        carrier: object,
        server: Server,
        pipeline: Pipeline,
        pusher: Pusher,
        retention: Retention | None,
        shutting_down: Callable[[], bool],
    ) -> None:
        self.endpoint = endpoint
        self.store = store
        self.carrier = carrier
        self.server = server
        self.pipeline = pipeline
        self.pusher = pusher
        self.retention = retention
        self.shutting_down = shutting_down
        self.active_connections = 0
        self._counts_lock = trio.Lock()
        self._counts: tuple[dict[str, int], dict[str, int]] | None = None
        self._counts_at = -float("inf")

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
        return _Reply(200, CONTENT_TYPE_LATEST, await self.exposition())

    # --- content ---

    async def health(self) -> Health:
        checks: dict[str, str] = {}
        ok = True
        if self.shutting_down():
            checks["gateway"], ok = "shutting down", False
        else:
            checks["gateway"] = "ok"
        try:
            with trio.fail_after(STORE_TIMEOUT_S):
                await self.store.next_due_at()
            checks["store"] = "ok"
        except (StoreError, trio.TooSlowError) as exc:
            checks["store"], ok = f"not answering: {exc or 'timeout'}", False
        if isinstance(self.carrier, HasBinds):
            up, configured = self.carrier.bound_sessions, len(self.carrier.sessions)
            checks["carrier"] = f"{up}/{configured} binds up"
            ok = ok and up > 0
        return Health(ok, checks)

    async def exposition(self) -> bytes:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Families(await self.families()))
        return generate_latest(registry)

    async def families(self) -> list[Metric]:
        families: list[Metric] = []

        def gauge(name: str, doc: str, value: float) -> None:
            families.append(GaugeMetricFamily(name, doc, value=value))

        def counter(name: str, doc: str, value: float) -> None:
            families.append(CounterMetricFamily(name, doc, value=value))

        info = GaugeMetricFamily("smsgw_info", "the gateway's version", labels=["version"])
        info.add_metric([__version__], 1)
        families.append(info)
        gauge("smsgw_shutting_down", "1 once a graceful stop has begun", self.shutting_down())

        server = self.server
        gauge("smsgw_connections", "merchant connections open", server.active_connections)
        responses = CounterMetricFamily(
            "smsgw_responses", "answers to merchant requests, by status", labels=["status"]
        )
        for status, count in sorted(server.responses.items()):
            responses.add_metric([status], count)
        families.append(responses)
        counter(
            "smsgw_refused_busy",
            "connections answered 1008: over a connection cap, or shed to make room",
            server.refused_busy,
        )
        counter(
            "smsgw_refused_unanswered",
            "connections closed unanswered: as many refused ones were waiting to close",
            server.refused_unanswered,
        )
        counter(
            "smsgw_connections_shed",
            "connections closed before their first whole frame to make room for a new one",
            server.connections_shed,
        )
        counter(
            "smsgw_messages_accepted",
            "messages stored from A001 (answered 0, new)",
            server.messages_accepted,
        )

        families.append(
            _histogram(
                "smsgw_request_seconds",
                "merchant requests, from the start of the read to the answer written",
                server.request_seconds,
            )
        )

        stats = self.pipeline.stats
        for field, doc in _PIPELINE_COUNTERS:
            counter(f"smsgw_pipeline_{field}", doc, getattr(stats, field))

        families.append(
            _histogram(
                "smsgw_submit_seconds",
                "carrier submits of a message (all its parts), whatever their outcome",
                self.pipeline.submit_seconds,
            )
        )

        for field, doc in _PUSH_COUNTERS:
            family = CounterMetricFamily(f"smsgw_push_{field}", doc, labels=["appid"])
            for appid, app_stats in sorted(self.pusher.stats.items()):
                family.add_metric([appid], getattr(app_stats, field))
            families.append(family)

        if isinstance(self.carrier, HasBinds):
            gauge("smsgw_carrier_binds", "binds configured", len(self.carrier.sessions))
            gauge("smsgw_carrier_binds_up", "binds up", self.carrier.bound_sessions)

        if self.retention is not None:
            deleted = CounterMetricFamily(
                "smsgw_retention_deleted", "rows past SMSGW_RETENTION deleted", labels=["table"]
            )
            deleted.add_metric(["messages"], self.retention.stats.messages_deleted)
            deleted.add_metric(["inbound"], self.retention.stats.inbound_deleted)
            families.append(deleted)

        if isinstance(self.store, CountsCommits):
            counter("smsgw_store_commits", "group commits", self.store.commit_count)
            counter(
                "smsgw_store_ops_committed",
                "writes those commits carried",
                self.store.ops_committed,
            )
        counts = await self._store_counts()
        if counts is not None:
            messages, pushes = counts
            by_state = GaugeMetricFamily(
                "smsgw_messages", "messages in the store, by state", labels=["state"]
            )
            for state in State:
                by_state.add_metric([state.value], messages.get(state.value, 0))
            families.append(by_state)
            push_states = GaugeMetricFamily(
                "smsgw_pushes", "receipt push items in the store, by state", labels=["state"]
            )
            for state_name, count in sorted(pushes.items()):
                push_states.add_metric([state_name], count)
            families.append(push_states)
        gauge(
            "smsgw_store_up",
            "1 when the last count of the store's rows succeeded",
            counts is not None,
        )
        return families

    async def _store_counts(self) -> tuple[dict[str, int], dict[str, int]] | None:
        async with self._counts_lock:
            now = trio.current_time()
            if self._counts is None or now - self._counts_at >= COUNTS_MAX_AGE_S:
                try:
                    with trio.fail_after(STORE_TIMEOUT_S):
                        self._counts = (await self.store.counts(), await self.store.push_counts())
                except (StoreError, trio.TooSlowError) as exc:
                    log.warning("metrics: store counts failed: %s", exc or "timeout")
                    self._counts = None
                self._counts_at = now
            return self._counts


def _histogram(name: str, doc: str, histogram: Histogram) -> HistogramMetricFamily:
    return HistogramMetricFamily(
        name, doc, buckets=histogram.cumulative(), sum_value=histogram.total_s
    )


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
