"""Sending and receipts with real processes over loopback: `smsgw serve` on the simulator,
`smsgw listen` (or a `ReceiptServer` in this process) as the merchant's endpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio

from smsgw.client import PushItem, ReceiptServer, submit
from tests.e2e.delivery_support import (
    APPID,
    FAST_TIMERS,
    PHONES,
    SECRET,
    all_settled,
    by_pair,
    gateway_env,
    now_ms,
    query,
    sim_log,
    sim_url,
    submits_per_msgid,
    wait_until,
    write_apps_file,
)
from tests.gateway_process import base_env, gateway_process, run_cli
from tests.listen_process import listen_process

pytestmark = pytest.mark.e2e


async def submit_ok(address: str, items: list[dict[str, Any]]) -> None:
    reply = await submit(address, APPID, SECRET, items, timeout=10)
    assert reply.status == "0", reply
    assert all(result.status == "0" and not result.duplicate for result in reply.results)


async def test_receipts_once_per_phone_and_status_reports_show_every_step(
    tmp_path: Path,
) -> None:
    log = tmp_path / "sim.log"
    db = tmp_path / "smsgw.db"
    async with listen_process(tmp_path / "merchant") as merchant:
        apps = write_apps_file(tmp_path, merchant.address, status_reports=True)
        env = {"SMSGW_APPS_FILE": str(apps), "SMSGW_CARRIER": sim_url(log), **FAST_TIMERS}
        async with gateway_process(tmp_path, env) as gw:
            before = now_ms()
            await submit_ok(
                gw.address,
                [
                    {"phone": ",".join(PHONES), "message": "hello", "msgid": "m1", "msgtype": 1},
                    {"phone": PHONES[0], "message": "code 1234", "msgid": "m2", "msgtype": 2},
                ],
            )
            await wait_until(lambda: all_settled(db), timeout=15, what="all receipts pushed")
            after = now_ms()

    expected = {("m1", phone) for phone in PHONES} | {("m2", PHONES[0])}
    receipts = by_pair(merchant.receipts())
    assert set(receipts) == expected
    submitted = {(entry["msgid"], entry["phone"]): entry for entry in sim_log(log)}
    assert set(submitted) == expected  # each sent to the operator once
    for pair, items in receipts.items():
        assert len(items) == 1, f"{pair}: {items}"
        receipt = items[0]
        assert receipt["status"] == "1" and receipt["stat"] == "DELIVRD"
        # sendtime: ms when it went to the operator (before the operator logged it).
        assert before <= receipt["sendtime"] <= submitted[pair]["time"] <= after
        assert set(receipt) == {"kind", "msgid", "phone", "status", "sendtime", "stat"}

    reports = by_pair(merchant.status_reports())
    assert set(reports) == expected
    for pair, steps in reports.items():
        carrier_msgid = submitted[pair]["carrier_msgid"]
        assert [(s["status"], s["stat"], s["attempt"]) for s in steps] == [
            ("1", "ACCEPTD", 1),  # the operator took it
            ("1", "DELIVRD", 1),  # its delivery report
        ], pair
        assert all(s["carrier_msgid"] == carrier_msgid for s in steps)
        assert steps[0]["sendtime"] == receipts[pair][0]["sendtime"]


async def test_silent_endpoint_gets_three_sends_then_the_push_is_abandoned(
    tmp_path: Path,
) -> None:
    db = tmp_path / "smsgw.db"
    async with listen_process(tmp_path / "merchant", "--silent") as merchant:
        env = gateway_env(tmp_path, sim_url(tmp_path / "sim.log"), merchant.address)
        async with gateway_process(tmp_path, env) as gw:
            await submit_ok(
                gw.address, [{"phone": PHONES[0], "message": "hi", "msgid": "lost", "msgtype": 1}]
            )
            # 3 sends of 1 s each with 200 ms, 400 ms between them.
            await wait_until(lambda: all_settled(db), timeout=15, what="push abandoned")
            await merchant.wait_for(lambda items: len(items) >= 3, timeout=5)
            await trio.sleep(1.0)  # room for a wrong fourth send to show up
            shown = await run_cli(["status", "lost"], base_env(tmp_path, env))

    assert [(i["msgid"], i["kind"], i["stat"]) for i in merchant.items] == [
        ("lost", "A002", "DELIVRD")
    ] * 3
    assert shown.returncode == 0, shown.stderr
    [history] = json.loads(shown.stdout)
    assert history["message"]["state"] == "delivered"
    [push] = history["pushes"]
    assert push["kind"] == "A002"
    assert push["state"] == "abandoned"
    assert push["attempts"] == 3
    assert "no answer" in push["last_error"]
    assert push["body"]["msgid"] == "lost" and push["body"]["stat"] == "DELIVRD"


async def test_a_refused_push_is_sent_again_once(tmp_path: Path) -> None:
    """The endpoint answers status 1 to the first send and 0 to the second."""
    db = tmp_path / "smsgw.db"
    sends: list[list[PushItem]] = []

    def refuse_first(kind: str, items: list[PushItem]) -> None:
        sends.append(items)
        server.answer = "1" if len(sends) == 1 else "0"

    server = ReceiptServer(refuse_first)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.run, "127.0.0.1", 0)
        endpoint = f"127.0.0.1:{port}"
        env = gateway_env(tmp_path, sim_url(tmp_path / "sim.log"), endpoint)
        async with gateway_process(tmp_path, env) as gw:
            await submit_ok(
                gw.address,
                [{"phone": PHONES[0], "message": "hi", "msgid": "again", "msgtype": 1}],
            )
            await wait_until(lambda: all_settled(db), timeout=15, what="pushes acknowledged")
            await trio.sleep(1.0)  # room for a wrong third send to show up
        nursery.cancel_scope.cancel()

    assert len(sends) == 2, sends
    assert [(item.msgid, item.phone, item.stat) for item in sends[0]] == [
        ("again", PHONES[0], "DELIVRD")
    ]
    assert sends[1] == sends[0]  # the same item again
    rows = query(db, "SELECT state, attempts, last_error FROM pushes")
    assert rows == [("done", 2, "status 1")]


async def test_failing_carrier_code_is_sent_once_notice_until_its_retries_run_out(
    tmp_path: Path,
) -> None:
    log = tmp_path / "sim.log"
    db = tmp_path / "smsgw.db"
    async with listen_process(tmp_path / "merchant") as merchant:
        apps = write_apps_file(tmp_path, merchant.address, status_reports=True)
        env = {
            "SMSGW_APPS_FILE": str(apps),
            "SMSGW_CARRIER": sim_url(log, fail=1),
            "SMSGW_MAX_RETRIES": "3",
            **FAST_TIMERS,
        }
        async with gateway_process(tmp_path, env) as gw:
            await submit_ok(
                gw.address,
                [
                    {"phone": PHONES[0], "message": "code 1", "msgid": "code", "msgtype": 2},
                    {"phone": PHONES[0], "message": "notice", "msgid": "notice", "msgtype": 1},
                ],
            )
            await wait_until(lambda: all_settled(db), timeout=15, what="both final and pushed")
            await trio.sleep(0.5)  # room for a wrong extra submit to show up

    code, notice = ("code", PHONES[0]), ("notice", PHONES[0])
    assert submits_per_msgid(log) == {code: 1, notice: 4}
    assert [e["attempt"] for e in sim_log(log) if e["msgid"] == "notice"] == [1, 2, 3, 4]
    assert all(entry["outcome"] == "temporary" for entry in sim_log(log))

    receipts = by_pair(merchant.receipts())
    assert [(r["status"], r["stat"]) for r in receipts[code]] == [("2", "NO_RETRY")]
    assert [(r["status"], r["stat"]) for r in receipts[notice]] == [("2", "RETRY_LIMIT")]

    reports = by_pair(merchant.status_reports())
    assert [(s["status"], s["stat"], s["attempt"]) for s in reports[code]] == [("2", "NO_RETRY", 1)]
    assert [(s["status"], s["stat"], s["attempt"]) for s in reports[notice]] == [
        ("2", "SIM_FAIL", 1),
        ("2", "SIM_FAIL", 2),
        ("2", "SIM_FAIL", 3),
        ("2", "RETRY_LIMIT", 4),
    ]
    assert "SIM_FAIL" in reports[notice][-1]["error"]


async def test_a_scheduled_send_goes_out_no_earlier_than_its_time(tmp_path: Path) -> None:
    log = tmp_path / "sim.log"
    db = tmp_path / "smsgw.db"
    async with listen_process(tmp_path / "merchant") as merchant:
        env = gateway_env(tmp_path, sim_url(log), merchant.address)
        async with gateway_process(tmp_path, env) as gw:
            sendtime = now_ms() + 1500
            await submit_ok(
                gw.address,
                [
                    {
                        "phone": PHONES[0],
                        "message": "a",
                        "msgid": "later",
                        "msgtype": 1,
                        "sendtime": sendtime,
                    },
                    {"phone": PHONES[0], "message": "b", "msgid": "now", "msgtype": 1},
                ],
            )
            await wait_until(lambda: all_settled(db), timeout=15, what="both sent and pushed")

    sent = {entry["msgid"]: entry["time"] for entry in sim_log(log)}
    assert sent["now"] < sendtime  # not held back by its scheduled neighbour
    assert sendtime <= sent["later"] < sendtime + 2000
    receipts = by_pair(merchant.receipts())
    [later] = receipts[("later", PHONES[0])]
    assert later["status"] == "1" and later["sendtime"] >= sendtime


async def test_a_scheduled_send_survives_a_restart(tmp_path: Path) -> None:
    log = tmp_path / "sim.log"
    db = tmp_path / "smsgw.db"
    async with listen_process(tmp_path / "merchant") as merchant:
        env = gateway_env(tmp_path, sim_url(log), merchant.address)
        async with gateway_process(tmp_path, env) as gw:
            sendtime = now_ms() + 2000
            await submit_ok(
                gw.address,
                [
                    {
                        "phone": PHONES[0],
                        "message": "x",
                        "msgid": "kept",
                        "msgtype": 2,
                        "sendtime": sendtime,
                    }
                ],
            )
            assert await gw.terminate() == 0
        assert now_ms() < sendtime, "the first gateway took too long to stop"
        assert sim_log(log) == []
        assert query(db, "SELECT state FROM messages") == [("scheduled",)]

        async with gateway_process(tmp_path, env):
            await wait_until(lambda: all_settled(db), timeout=15, what="sent after the restart")

    [entry] = sim_log(log)
    assert entry["msgid"] == "kept" and entry["time"] >= sendtime
    [receipt] = merchant.receipts()
    assert (receipt["msgid"], receipt["status"], receipt["stat"]) == ("kept", "1", "DELIVRD")
