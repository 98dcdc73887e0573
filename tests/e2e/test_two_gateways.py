"""Two `smsgw serve` on one store (an SQLite file, a PostgreSQL database) and one SMSC that
sends each delivery report to any live bind of the system_id: one gateway is killed with
`kill -9` mid-load. The survivor takes over what the dead one held (a short SMSGW_LEASE; a
dead local pid is seen at once) and matches its reports: every message ends final, with
exactly one A002 decided, and no verification code reaches the operator twice."""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trio

from smsgw.client import submit
from smsgw.protocol.status import Status
from tests.e2e.delivery_support import query as sqlite_query
from tests.e2e.operator_support import FAST_GATEWAY, Sms
from tests.e2e.test_smpp import APPID, SECRET, marker_of, smpp_url
from tests.gateway_process import gateway_process
from tests.listen_process import listen_process
from tests.smsc_process import running_smsc

COUNT = 300


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_kill_9_of_one_of_two_gateways_on_one_store(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    messages = [
        Sms(f"k{n:03d}", f"8613700{n:06d}", f"Two gateways k{n:03d}", msgtype=1 + n % 2)
        for n in range(COUNT)
    ]
    by_msgid = {sms.msgid: sms for sms in messages}
    if backend == "postgresql":
        db_url: str = request.getfixturevalue("pg_url")
    else:
        db_url = f"sqlite:///{tmp_path / 'shared.db'}"

    def query(sql: str) -> list[Any]:
        if backend == "sqlite":
            return sqlite_query(tmp_path / "shared.db", sql)
        import psycopg

        with psycopg.connect(db_url) as conn:
            return conn.execute(sql.encode()).fetchall()

    # 20 ms a submit keeps each window busy; reports 0.3 s later: many are still to come
    # when the kill lands, and go to the survivor's bind.
    async with (
        running_smsc(latency=0.02, dlr_delay=0.3, dlr_any=True) as smsc,
        listen_process(tmp_path / "merchant") as merchant,
    ):
        env = {
            "SMSGW_APPS": f"{APPID}:{SECRET}@{merchant.address}",
            "SMSGW_CARRIER": smpp_url(smsc),
            "SMSGW_DB": db_url,
            "SMSGW_LEASE": "2s",
            **FAST_GATEWAY,
        }
        async with gateway_process(tmp_path / "a", env) as doomed:
            await smsc.wait_for_count("bind", 1, timeout=10)
            doomed_session = next(e["session"] for e in smsc.events_of("bind") if e["ok"])
            async with gateway_process(tmp_path / "b", env) as survivor:
                await smsc.wait_for_count("bind", 2, timeout=10)
                for start in range(0, COUNT, 50):
                    gateway = doomed if start % 100 == 0 else survivor
                    await submit_all(gateway.address, messages[start : start + 50])
                await smsc.wait_for_count("submit_sm", COUNT // 3, timeout=30)
                doomed.kill()
                assert await doomed.process.wait() == -signal.SIGKILL
                killed_at = len(smsc.events_of("submit_sm"))

                await merchant.wait_for(
                    lambda _: len({(i["msgid"], i["phone"]) for i in merchant.receipts()}) >= COUNT,
                    timeout=60,
                )
                await trio.sleep(1)  # time for a duplicate to show up
                receipts = merchant.receipts()
                submits = smsc.events_of("submit_sm")
                reports = smsc.events_of("deliver_sm")
            assert "Traceback" not in survivor.log_text(), survivor.log_text()[-3000:]

    assert killed_at < COUNT, "the kill came after every submit: nothing was mid-load"
    rows = {
        msgid: (state, stat)
        for msgid, state, stat in query("SELECT msgid, state, stat FROM messages")
    }
    assert len(rows) == COUNT
    assert {state for state, _ in rows.values()} <= {"delivered", "failed"}, Counter(
        state for state, _ in rows.values()
    )
    # One final outcome decided per (msgid, phone): exactly one A002 in the outbox...
    decided = Counter(
        msgid
        for (msgid,) in query(
            "SELECT m.msgid FROM pushes p JOIN messages m ON m.id = p.message_id"
            " WHERE p.kind = 'A002'",
        )
    )
    assert set(decided) == set(by_msgid) and set(decided.values()) == {1}
    # ...and the merchant got it, saying what the store says (a push the dead gateway had
    # in flight may arrive twice: the merchant's answer died with it).
    for item in receipts:
        state, stat = rows[item["msgid"]]
        assert (item["status"], item["stat"]) == ("1" if state == "delivered" else "2", stat)
    duplicates = sum(n - 1 for n in Counter(i["msgid"] for i in receipts).values())
    # No code reached the operator twice; codes in doubt failed UNKNOWN.
    sent = Counter(marker_of(event) for event in submits)
    for msgid, sms in by_msgid.items():
        if sms.msgtype == 2:
            assert sent[msgid] <= 1, msgid
        state, stat = rows[msgid]
        if state == "failed":
            assert (sms.msgtype, stat) == (2, "UNKNOWN"), (msgid, state, stat)
    # The dead gateway's reports went to the survivor, which matched them.
    doomed_ids = {e["message_id"] for e in submits if e["session"] == doomed_session}
    taken_over = {
        e["message_id"]
        for e in reports
        if e["kind"] == "receipt"
        and e["session"] != doomed_session
        and e["message_id"] in doomed_ids
    }
    assert taken_over, "no report of the dead gateway's submits reached the survivor"
    matched = {
        msgid
        for msgid, carrier_msgid in query("SELECT msgid, carrier_msgid FROM messages")
        if carrier_msgid in taken_over
    }
    assert matched and all(rows[msgid] == ("delivered", "DELIVRD") for msgid in matched)
    unknown = sum(stat == "UNKNOWN" for _, stat in rows.values())
    print(
        f"{backend}: two gateways, one killed after {killed_at} submits: {len(taken_over)} of"
        f" its reports matched by the survivor, {unknown} codes failed UNKNOWN,"
        f" {duplicates} duplicate A002"
    )


async def submit_all(address: str, batch: list[Sms]) -> None:
    reply = await submit(address, APPID, SECRET, [sms.item() for sms in batch], timeout=10)
    assert [result.status for result in reply.results] == [Status.OK] * len(batch), reply
