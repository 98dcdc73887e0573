"""The built zipapp (dist/smsgw.pyz) runs on its own: `make zipapp-test` builds and runs this."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.gateway_process import base_env, gateway_process, run_cli
from tests.http_client import http, samples

pytestmark = pytest.mark.zipapp


def test_the_zipapp_is_the_one_under_test() -> None:
    pyz = os.environ.get("SMSGW_PYZ", "")
    assert pyz.endswith(".pyz") and os.path.isfile(pyz), "run through `make zipapp-test`"


async def test_zipapp_serves_sends_and_stops(tmp_path: Path) -> None:
    version = await run_cli(["--version"], base_env(tmp_path, {}))
    assert version.returncode == 0 and version.stdout.startswith(b"smsgw ")
    async with gateway_process(tmp_path, {"SMSGW_METRICS": "127.0.0.1:0"}) as gw:
        metrics_port = await gw.metrics_port()
        assert (await http(metrics_port, "GET", "/healthz")).status == 200
        sent = await run_cli(
            [
                "send",
                "--server",
                gw.address,
                "--phone",
                "8613800138000",
                "--message",
                "zip",
                "--msgid",
                "z1",
            ],
            base_env(tmp_path, {}),
        )
        assert sent.returncode == 0, sent.stderr
        assert json.loads(sent.stdout)["status"] == "0"
        shown = await run_cli(["status", "z1"], base_env(tmp_path, {}))
        assert shown.returncode == 0 and b"8613800138000" in shown.stdout
        scraped = samples((await http(metrics_port, "GET", "/metrics")).body)
        assert scraped[("smsgw_messages_accepted_total", ())] == 1
    assert gw.process.returncode == 0


async def test_zipapp_runs_two_workers(tmp_path: Path) -> None:
    # The workers are started from the supervisor's interpreter and module path: the
    # zipapp's unpacked site-packages, not an installed smsgw.
    env = {"SMSGW_METRICS": "127.0.0.1:0", "SMSGW_WORKERS": "2"}
    async with gateway_process(tmp_path, env) as gw:
        metrics_port = await gw.metrics_port()
        health = await http(metrics_port, "GET", "/healthz")
        assert health.status == 200
        assert json.loads(health.body)["checks"]["workers"] == "2/2 up"
    assert gw.process.returncode == 0
