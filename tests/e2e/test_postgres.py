"""The real `smsgw` process on PostgreSQL: serve, send, status, inbox; start-up refusals in one
line; PostgreSQL restarted, then down for a while, under load: answered 1008, survived
without a restart of ours, nothing acknowledged lost, everything then sent and reported by
the same gateway."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
import trio

from smsgw.client import submit
from tests.e2e.delivery_support import wait_until
from tests.gateway_process import base_env, gateway_process, run_cli
from tests.http_client import http, samples
from tests.pg_cluster import Cluster


def db_rows(url: str, statement: str) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute(statement.encode()).fetchall()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def item(msgid: str) -> dict[str, Any]:
    return {"phone": "8613800138000", "message": "你好", "msgid": msgid, "msgtype": 1}


async def test_serve_send_status_inbox_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    settings = {
        "SMSGW_DB": pg_url,
        "SMSGW_CARRIER": "sim://?fail=0&dlr_delay=0",
        "SMSGW_METRICS": "127.0.0.1:0",
    }
    async with gateway_process(tmp_path, settings) as gw:
        assert "store: postgresql://" in await gw.output_line("store:")
        reply = await submit(gw.address, "demo", "demo-secret", [item("pg-1")], timeout=20)
        assert reply.status == "0"
        await wait_until(
            lambda: db_rows(pg_url, "SELECT state FROM messages") == [("delivered",)],
            timeout=30,
            what="pg-1 delivered",
        )
        env = base_env(tmp_path, settings)
        shown = await run_cli(["status", "pg-1"], env)
        assert shown.returncode == 0, shown.stderr
        assert "delivered" in shown.stdout.decode()
        assert "你好" in shown.stdout.decode()
        inbox = await run_cli(["inbox"], env)
        assert inbox.returncode == 0, inbox.stderr
        metrics_port = await gw.metrics_port()
        assert (await http(metrics_port, "GET", "/healthz")).status == 200
        scraped = samples((await http(metrics_port, "GET", "/metrics")).body)
        assert scraped[("smsgw_store_commits_total", ())] >= 3  # accept, claim, outcome...
        assert scraped[("smsgw_messages", (("state", "delivered"),))] == 1
    assert gw.process.returncode == 0


async def test_postgresql_unreachable_or_refusing_stops_start_up_in_one_line(
    tmp_path: Path, pg_url: str
) -> None:
    unreachable = f"postgresql://gw:s3cret@127.0.0.1:{closed_port()}/sms"
    no_such_database = pg_url.replace("/smsgw_test_", "/no_such_", 1)
    cases = [
        (["serve"], unreachable),
        (["status", "m1"], unreachable),
        (["serve"], no_such_database),
        (["inbox"], pg_url),  # no smsgw schema there yet: a query creates none
        (["serve"], "postgresql://gw:s3cret@db/sms?bogus=1"),
    ]
    for args, url in cases:
        done = await run_cli(args, base_env(tmp_path, {"SMSGW_DB": url}))
        lines = done.stderr.decode().strip().splitlines()
        assert done.returncode == 2, (args, url, lines)
        assert len(lines) == 1 and "SMSGW_DB" in lines[0], (args, url, lines)
        assert "s3cret" not in lines[0]
    assert db_rows(pg_url, "SELECT to_regclass('messages')") == [(None,)]


@pytest.mark.slow
async def test_a_postgresql_restart_under_load_loses_nothing(
    tmp_path: Path, pg_cluster: Cluster, pg_url: str
) -> None:
    if pg_cluster.directory is None:
        pytest.skip("SMSGW_TEST_PG_DSN names a server these tests cannot restart")
    settings = {"SMSGW_DB": pg_url, "SMSGW_CARRIER": "sim://?fail=0&dlr_delay=0"}
    answers: dict[str, str] = {}
    async with gateway_process(tmp_path, settings) as gw:
        stop = trio.Event()

        async def client(worker: int) -> None:
            n = 0
            while not stop.is_set():
                msgid = f"w{worker}-{n}"
                n += 1
                try:
                    reply = await submit(
                        gw.address, "demo", "demo-secret", [item(msgid)], timeout=30
                    )
                except (OSError, trio.BrokenResourceError, trio.TooSlowError):
                    continue
                answers[msgid] = reply.status
                await trio.sleep(0.002)

        async with trio.open_nursery() as nursery:
            for worker in range(8):
                nursery.start_soon(client, worker)
            await trio.sleep(1.5)
            await trio.to_thread.run_sync(pg_cluster.restart)
            # Served again without a restart of ours: a new submit is stored.
            with trio.fail_after(30):
                while True:
                    reply = await submit(
                        gw.address, "demo", "demo-secret", [item("after")], timeout=30
                    )
                    if reply.status == "0":
                        break
                    await trio.sleep(0.1)
            # Down for a while: answered 1008 at once (a unix socket that is gone), not hung.
            await trio.to_thread.run_sync(pg_cluster.pg_ctl, "stop", "-m", "fast", "-w")
            try:
                with trio.fail_after(20):
                    down = await submit(
                        gw.address, "demo", "demo-secret", [item("during")], timeout=20
                    )
                assert down.status == "1008"
            finally:
                await trio.to_thread.run_sync(pg_cluster.start)
            await trio.sleep(1.0)
            stop.set()
        acknowledged = {msgid for msgid, status in answers.items() if status == "0"}
        assert set(answers.values()) <= {"0", "1008"}, set(answers.values())
        assert len(acknowledged) > 50
        stored = {row[0] for row in db_rows(pg_url, "SELECT msgid FROM messages")}
        assert acknowledged | {"after"} <= stored
        assert "during" not in stored
        # Everything stored is sent and reported by the same gateway: the updates that
        # failed while the server was away were retried until they committed.
        unfinished = "SELECT count(*) FROM messages WHERE final_at IS NULL"
        try:
            await wait_until(
                lambda: db_rows(pg_url, unfinished) == [(0,)], timeout=60, what="all final"
            )
        except trio.TooSlowError:
            states = db_rows(pg_url, "SELECT state, count(*) FROM messages GROUP BY state")
            raise AssertionError(f"not all final: {states}") from None
        log = gw.log_text()
    assert "Traceback" not in log, log[-3000:]
    print(json.dumps({"answers": len(answers), "refused": list(answers.values()).count("1008")}))
