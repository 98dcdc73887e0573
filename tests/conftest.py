"""Shared fixtures: an in-process gateway on a real loopback socket, and raw socket helpers."""

from __future__ import annotations

import json
import os
import resource
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from smsgw.config import Config, load_config
from smsgw.gateway import Gateway, GatewayInfo
from smsgw.protocol.framing import (
    LengthStyle,
    Response,
    ResponseDecoder,
    encode_request,
)
from smsgw.store.base import Store
from tests.pg_cluster import REQUIRE_VARIABLE, Cluster, start_cluster, unavailable_reason

# Connection storms open thousands of sockets in one test process.
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (_hard, _hard))

APPID = "shop1"
SECRET = "s3cret"


def make_config(tmp_path: Path, **env: str) -> Config:
    base = {
        "SMSGW_LISTEN": "127.0.0.1:0",
        "SMSGW_DB": f"sqlite:///{tmp_path / 'smsgw.db'}",
        "SMSGW_APPS": f"{APPID}:{SECRET}",
        "SMSGW_SHUTDOWN_GRACE": "2",
    }
    base.update(env)
    return load_config(base)


@attrs.define
class RunningGateway:
    gateway: Gateway
    port: int
    info: GatewayInfo

    @property
    def store(self) -> Store:
        return self.gateway.store


@asynccontextmanager
async def running_gateway(
    config: Config, *, store: Store | None = None
) -> AsyncIterator[RunningGateway]:
    gateway = Gateway(config, store=store)
    async with trio.open_nursery() as nursery:
        info = await nursery.start(gateway.run)
        yield RunningGateway(gateway, info.listen[0].port, info)
        gateway.shutdown()


async def raw_exchange(
    port: int,
    data: bytes,
    *,
    timeout: float = 10.0,
    shutdown_write: bool = False,
    source: str | None = None,
) -> bytes:
    """Send raw bytes, read everything the server sends until it closes. `source`: the
    local address to connect from (any of 127.0.0.0/8 works on Linux)."""
    with trio.fail_after(timeout):
        stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=source)
        async with stream:
            if data:
                await stream.send_all(data)
            if shutdown_write:
                await stream.send_eof()
            received = bytearray()
            while chunk := await stream.receive_some(65536):
                received += chunk
            return bytes(received)


def parse_reply(data: bytes) -> Response:
    decoder = ResponseDecoder(max_body=16 * 1024 * 1024)
    decoder.receive_data(data)
    decoder.receive_data(b"")
    event = decoder.next_event()
    assert isinstance(event, Response), f"not a response frame: {data[:80]!r}"
    return event


def reply_body(data: bytes) -> dict[str, Any]:
    body = json.loads(parse_reply(data).body)
    assert isinstance(body, dict)
    return body


def submit_frame(
    body: Any,
    *,
    appid: str = APPID,
    secret: str = SECRET,
    command: str = "A001",
    style: LengthStyle = LengthStyle.DECIMAL,
) -> bytes:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return encode_request(command, appid, secret, raw, style)


def item(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "phone": "8613800138000",
        "message": "hello",
        "msgid": "m1",
        "msgtype": 1,
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


async def submit_raw(
    port: int, body: Any, *, source: str | None = None, **options: Any
) -> dict[str, Any]:
    return reply_body(await raw_exchange(port, submit_frame(body, **options), source=source))


# ---------------------------------------------------------------------- PostgreSQL

_pg_skipped: list[str] = []  # the reason, once, when the PostgreSQL tests were left out


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that need PostgreSQL (the `pg_cluster` fixture) are left out, with one line in
    the summary, where none can be had; never when SMSGW_TEST_REQUIRE_PG is set (CI): there
    they run and fail."""
    needing = [item for item in items if _needs_postgresql(item)]
    if not needing or os.environ.get(REQUIRE_VARIABLE):
        return
    reason = unavailable_reason()
    if reason is None:
        return
    config.hook.pytest_deselected(items=needing)
    left = set(needing)
    items[:] = [item for item in items if item not in left]
    _pg_skipped.append(f"{len(needing)} PostgreSQL tests skipped: {reason}")


def _needs_postgresql(item: pytest.Item) -> bool:
    if "pg_cluster" in getattr(item, "fixturenames", ()):
        return True
    callspec = getattr(item, "callspec", None)  # a backend parameter (the contract suite)
    return callspec is not None and "postgresql" in callspec.params.values()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for line in _pg_skipped:
        terminalreporter.write_line(line, yellow=True)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    reason = unavailable_reason()
    if reason is not None:
        pytest.fail(f"PostgreSQL required ({REQUIRE_VARIABLE}) but {reason}")
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: Cluster) -> Iterator[str]:
    """A new empty database on the test server, as a libpq URL; dropped afterwards."""
    url = pg_cluster.new_database()
    try:
        yield url
    finally:
        pg_cluster.drop_database(url)
