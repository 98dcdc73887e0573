"""SMSGW_METRICS: /metrics and /healthz over real loopback HTTP, and their limits."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from smsgw import collectors
from smsgw import metrics as metrics_module
from smsgw.gateway import Gateway
from smsgw.metrics import MAX_CONNECTIONS, MAX_REQUEST_HEAD, MetricsServer
from tests.conftest import item, make_config, raw_exchange, running_gateway, submit_raw
from tests.http_client import http, parse_http, samples


@asynccontextmanager
async def metrics_only(gateway: Gateway, *, with_store: bool) -> AsyncIterator[int]:
    """The gateway's metrics endpoint (and its store, if asked) without the rest of it, so
    a test decides what is up and what is not."""
    assert gateway.metrics is not None
    async with trio.open_nursery() as nursery:
        if with_store:
            await nursery.start(gateway.store.run)
        endpoint = await nursery.start(gateway.metrics.run)
        yield endpoint.port
        nursery.cancel_scope.cancel()


async def test_metrics_count_requests_messages_and_states(tmp_path: Path) -> None:
    config = make_config(tmp_path, SMSGW_METRICS="127.0.0.1:0", SMSGW_CARRIER="sim://?latency=60")
    async with running_gateway(config) as gw:
        metrics_port = gw.info.metrics.port if gw.info.metrics else 0
        items = [item(msgid=f"m{i}", phone=f"861380013800{i}") for i in range(3)]
        assert (await submit_raw(gw.port, items))["status"] == "0"
        assert (await submit_raw(gw.port, items[:1]))["status"] == "0"  # a duplicate
        assert (await submit_raw(gw.port, items, secret="wrong"))["status"] == "1005"

        reply = await http(metrics_port, "GET", "/metrics")
        assert reply.status == 200
        assert reply.headers["content-type"].startswith("text/plain; version=")
        found = samples(reply.body)
        assert found[("smsgw_info", (("version", "0.1.0"),))] == 1
        assert found[("smsgw_messages_accepted_total", ())] == 3  # the duplicate is not new
        assert found[("smsgw_responses_total", (("status", "0"),))] == 2
        assert found[("smsgw_responses_total", (("status", "1005"),))] == 1
        states = {labels[0][1]: value for (name, labels), value in found.items()
                  if name == "smsgw_messages"}  # fmt: skip
        assert sum(states.values()) == 3
        assert set(states) >= {"accepted", "submitting", "delivered", "failed"}
        assert found[("smsgw_store_up", ())] == 1
        assert found[("smsgw_shutting_down", ())] == 0
        assert found[("smsgw_store_commits_total", ())] >= 1
        assert ("smsgw_carrier_binds", ()) not in found  # the simulator has no binds
        assert found[("smsgw_retention_deleted_total", (("table", "messages"),))] == 0
        assert found[("smsgw_request_seconds_count", ())] == 3
        assert found[("smsgw_request_seconds_bucket", (("le", "+Inf"),))] == 3
        assert found[("smsgw_request_seconds_sum", ())] > 0
        assert found[("smsgw_submit_seconds_count", ())] == 0  # none back from the carrier yet


async def test_healthz_is_200_while_serving_and_503_once_stopping(tmp_path: Path) -> None:
    gateway = Gateway(make_config(tmp_path, SMSGW_METRICS="127.0.0.1:0"))
    async with metrics_only(gateway, with_store=True) as port:
        reply = await http(port, "GET", "/healthz")
        assert reply.status == 200
        assert json.loads(reply.body) == {
            "status": "ok",
            "checks": {"gateway": "ok", "store": "ok"},
        }
        gateway.shutdown()
        reply = await http(port, "GET", "/healthz")
        assert reply.status == 503
        assert json.loads(reply.body)["checks"]["gateway"] == "shutting down"
        found = samples((await http(port, "GET", "/metrics")).body)
        assert found[("smsgw_shutting_down", ())] == 1


async def test_healthz_is_503_when_the_store_does_not_answer(tmp_path: Path) -> None:
    gateway = Gateway(make_config(tmp_path, SMSGW_METRICS="127.0.0.1:0"))
    async with metrics_only(gateway, with_store=False) as port:
        reply = await http(port, "GET", "/healthz")
        assert reply.status == 503
        body = json.loads(reply.body)
        assert body["status"] == "unavailable"
        assert body["checks"]["store"].startswith("not answering")
        found = samples((await http(port, "GET", "/metrics")).body)
        assert found[("smsgw_store_up", ())] == 0  # the scrape still answers
        assert ("smsgw_messages", (("state", "accepted"),)) not in found


async def test_healthz_and_metrics_show_smpp_binds(tmp_path: Path) -> None:
    # An SMPP carrier that is not running has none of its binds up.
    config = make_config(
        tmp_path,
        SMSGW_METRICS="127.0.0.1:0",
        SMSGW_CARRIER="smpp://esme:pw@127.0.0.1:9?binds=2",
    )
    gateway = Gateway(config)
    async with metrics_only(gateway, with_store=True) as port:
        reply = await http(port, "GET", "/healthz")
        assert reply.status == 503
        assert json.loads(reply.body)["checks"]["carrier"] == "0/2 binds up"
        found = samples((await http(port, "GET", "/metrics")).body)
        assert found[("smsgw_carrier_binds", ())] == 2
        assert found[("smsgw_carrier_binds_up", ())] == 0


async def test_store_counts_are_shared_by_scrapes_close_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = make_config(tmp_path, SMSGW_METRICS="127.0.0.1:0", SMSGW_CARRIER="sim://?latency=60")
    async with running_gateway(config) as gw:
        assert gw.info.metrics is not None
        port = gw.info.metrics.port

        async def stored() -> float:
            found = samples((await http(port, "GET", "/metrics")).body)
            return sum(v for (name, _), v in found.items() if name == "smsgw_messages")

        assert await stored() == 0
        assert (await submit_raw(gw.port, [item()]))["status"] == "0"
        assert await stored() == 0  # within COUNTS_MAX_AGE_S: the earlier count
        monkeypatch.setattr(collectors, "COUNTS_MAX_AGE_S", 0.0)
        assert await stored() == 1


async def test_http_errors_are_answered_not_crashed(tmp_path: Path) -> None:
    gateway = Gateway(make_config(tmp_path, SMSGW_METRICS="127.0.0.1:0"))
    async with metrics_only(gateway, with_store=True) as port:
        assert (await http(port, "GET", "/nope")).status == 404
        posted = await http(port, "POST", "/metrics", extra=b"Content-Length: 0\r\n")
        assert posted.status == 405
        assert posted.headers["allow"] == "GET, HEAD"
        head = await http(port, "HEAD", "/healthz")
        assert head.status == 200 and head.body == b""
        assert int(head.headers["content-length"]) > 0
        assert (await http(port, "GET", "/healthz?verbose=1")).status == 200

        garbage = parse_http(await raw_exchange(port, b"\x00\x01 not http\r\n\r\n"))
        assert garbage.status == 400
        no_host = parse_http(await raw_exchange(port, b"GET /metrics HTTP/1.1\r\n\r\n"))
        assert no_host.status == 400  # HTTP/1.1 requires Host
        # h11 checks the limit while the head is incomplete: one read past it is refused.
        huge = b"X-Filler: " + b"a" * (MAX_REQUEST_HEAD + metrics_module.RECEIVE_CHUNK) + b"\r\n"
        too_big = await http(port, "GET", "/metrics", extra=huge)
        assert too_big.status == 431
        # Still serving.
        assert (await http(port, "GET", "/healthz")).status == 200


async def test_silent_and_half_sent_requests_are_cut_off(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    gateway = Gateway(make_config(tmp_path, SMSGW_METRICS="127.0.0.1:0"))
    async with metrics_only(gateway, with_store=False) as port:
        with trio.fail_after(2 * metrics_module.READ_TIMEOUT_S + 5):
            assert await raw_exchange(port, b"", timeout=60) == b""
            assert await raw_exchange(port, b"GET /metrics HTTP/1.1\r\nHo", timeout=60) == b""
        assert trio.current_time() >= 2 * metrics_module.READ_TIMEOUT_S - 1


async def test_connections_over_the_cap_get_503(tmp_path: Path) -> None:
    gateway = Gateway(make_config(tmp_path, SMSGW_METRICS="127.0.0.1:0"))
    server = gateway.metrics
    assert isinstance(server, MetricsServer)
    async with metrics_only(gateway, with_store=True) as port:
        idle = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(MAX_CONNECTIONS)]
        try:
            with trio.fail_after(10):
                while server.active_connections < MAX_CONNECTIONS:  # noqa: ASYNC110 - a count
                    await trio.sleep(0.01)
            busy = await http(port, "GET", "/healthz")
            assert busy.status == 503 and busy.headers["retry-after"] == "1"
            # Refused before any request is read: a client that sends nothing gets it too.
            silent = parse_http(await raw_exchange(port, b"", timeout=5))
            assert silent.status == 503
            assert server.active_connections == MAX_CONNECTIONS  # the refused are not counted
        finally:
            for stream in idle:
                await stream.aclose()
        with trio.fail_after(10):
            while server.active_connections:  # noqa: ASYNC110 - a count, not an event
                await trio.sleep(0.01)
        assert (await http(port, "GET", "/healthz")).status == 200
