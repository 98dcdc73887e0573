"""The real `smsgw` process: start, send, status, configuration errors, graceful stop."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import trio

from smsgw.client import submit
from tests.gateway_process import base_env, gateway_process, run_cli


async def test_serve_send_status_and_stop(tmp_path: Path) -> None:
    async with gateway_process(tmp_path) as gw:
        demo = await gw.output_line("demo app:")
        assert "appid=demo secret=demo-secret" in demo
        env = base_env(tmp_path, {})
        sent = await run_cli(
            [
                "send",
                "--server",
                gw.address,
                "--phone",
                "8613800138000",
                "--message",
                "你好",
                "--msgid",
                "cli-1",
            ],
            env,
        )
        assert sent.returncode == 0, sent.stderr
        reply = json.loads(sent.stdout)
        assert reply["status"] == "0"
        assert reply["results"] == [{"msgid": "cli-1", "phone": "8613800138000", "status": "0"}]

        shown = await run_cli(["status", "cli-1"], env)
        assert shown.returncode == 0, shown.stderr
        assert "8613800138000" in shown.stdout.decode()
        assert "你好" in shown.stdout.decode()

        missing = await run_cli(["status", "no-such-id"], env)
        assert missing.returncode == 1

        rejected = await run_cli(
            ["send", "--server", gw.address, "--phone", "12", "--message", "x"], env
        )
        assert rejected.returncode == 1
        assert json.loads(rejected.stdout)["results"][0]["status"] == "2001"
    assert gw.process.returncode == 0
    log = gw.log_text()
    assert "demo-secret" not in log  # request lines never carry secrets
    assert "B001 app=demo items=1 status=0" in log


async def test_send_from_a_file_with_binary_length(tmp_path: Path) -> None:
    async with gateway_process(tmp_path) as gw:
        body = tmp_path / "batch.json"
        body.write_text(
            json.dumps(
                {
                    "data": [
                        {"phone": "8613800138000", "message": "m", "msgid": f"f{n}", "msgtype": 2}
                        for n in range(3)
                    ]
                }
            )
        )
        done = await run_cli(
            ["send", "--server", gw.address, "--file", str(body), "--binary-length"],
            base_env(tmp_path, {}),
        )
        assert done.returncode == 0, done.stderr
        assert len(json.loads(done.stdout)["results"]) == 3


async def test_bad_configuration_stops_start_up_with_one_line(tmp_path: Path) -> None:
    env = base_env(tmp_path, {"SMSGW_MAX_BATCH": "lots"})
    done = await run_cli(["serve"], env)
    assert done.returncode == 2
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1
    assert "SMSGW_MAX_BATCH" in lines[0] and "integer" in lines[0]

    done = await run_cli(["serve"], base_env(tmp_path, {"SMSGW_DB": "mysql://x"}))
    assert done.returncode == 2
    assert "SMSGW_DB" in done.stderr.decode()


async def test_what_start_up_cannot_have_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    not_a_database = tmp_path / "garbage.db"
    not_a_database.write_bytes(b"this is not SQLite" * 100)
    taken = trio.socket.socket()
    await taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    cases = [
        (["serve"], {"SMSGW_DB": f"sqlite:///{not_a_database}"}, "SMSGW_DB"),
        (["status", "m1"], {"SMSGW_DB": f"sqlite:///{not_a_database}"}, "SMSGW_DB"),
        (["inbox"], {"SMSGW_DB": f"sqlite:///{tmp_path}/no/such/dir/db"}, "SMSGW_DB"),
        (["status", "m1"], {"SMSGW_DB": f"sqlite:///{tmp_path}/none.db"}, "SMSGW_DB"),
        (["serve"], {"SMSGW_LISTEN": f"127.0.0.1:{port}"}, "SMSGW_LISTEN"),
        (["serve"], {"SMSGW_METRICS": f"127.0.0.1:{port}"}, "SMSGW_METRICS"),
    ]
    with taken:
        for args, settings, variable in cases:
            done = await run_cli(args, base_env(tmp_path, settings))
            lines = done.stderr.decode().strip().splitlines()
            assert done.returncode == 2, (args, settings, lines)
            assert len(lines) == 1 and variable in lines[0], (args, settings, lines)
    assert not_a_database.read_bytes() == b"this is not SQLite" * 100
    assert not (tmp_path / "none.db").exists()  # a query never creates a database


async def test_version(tmp_path: Path) -> None:
    done = await run_cli(["--version"], base_env(tmp_path, {}))
    assert done.returncode == 0
    assert done.stdout.decode().startswith("smsgw ")


async def test_sigterm_mid_load_loses_nothing_acknowledged(tmp_path: Path) -> None:
    acknowledged: list[str] = []
    async with gateway_process(tmp_path, {"SMSGW_APPS": "shop:key"}) as gw:

        async def client(worker: int) -> None:
            for n in range(10_000):
                msgid = f"w{worker}-{n}"
                try:
                    reply = await submit(
                        gw.address,
                        "shop",
                        "key",
                        [{"phone": "8613800138000", "message": "m", "msgid": msgid, "msgtype": 1}],
                        timeout=10,
                    )
                except Exception:
                    return  # the gateway stopped accepting
                if reply.status == "0":
                    acknowledged.append(msgid)

        async with trio.open_nursery() as nursery:
            for worker in range(8):
                nursery.start_soon(client, worker)
            await trio.sleep(1.0)
            code = await gw.terminate()
        assert code == 0
    assert len(acknowledged) > 10
    # Every acknowledged message is in the store after the stop.
    with sqlite3.connect(tmp_path / "smsgw.db") as db:
        stored = {row[0] for row in db.execute("select msgid from messages")}
    assert set(acknowledged) <= stored
