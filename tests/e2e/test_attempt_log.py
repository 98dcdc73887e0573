"""Failed and retried carrier attempts show in the real gateway's log at the default level."""

from __future__ import annotations

from pathlib import Path

from smsgw.client import submit
from tests.e2e.delivery_support import (
    APPID,
    FAST_TIMERS,
    PHONES,
    SECRET,
    all_settled,
    sim_url,
    wait_until,
)
from tests.gateway_process import gateway_process


async def test_each_failed_attempt_is_logged_with_app_msgid_attempt_and_stat(
    tmp_path: Path,
) -> None:
    env = {
        "SMSGW_APPS": f"{APPID}:{SECRET}",
        "SMSGW_CARRIER": sim_url(tmp_path / "sim.log", fail=1),
        "SMSGW_MAX_RETRIES": "2",
        **FAST_TIMERS,
    }
    async with gateway_process(tmp_path, env) as gw:
        reply = await submit(
            gw.address,
            APPID,
            SECRET,
            [{"phone": PHONES[0], "message": "notice", "msgid": "n1", "msgtype": 1}],
        )
        assert reply.status == "0"
        await wait_until(lambda: all_settled(tmp_path / "smsgw.db"), timeout=15, what="final")
    lines = [line for line in gw.log_text().splitlines() if "carrier attempt failed" in line]
    assert len(lines) == 3, lines
    for attempt, line in enumerate(lines, start=1):
        assert f"app={APPID} msgid=n1 " in line
        assert f"attempt={attempt} stat=SIM_FAIL" in line
    assert all(" INFO " in line and "will retry" in line for line in lines[:2])
    assert " WARNING " in lines[2] and "final: RETRY_LIMIT" in lines[2]
