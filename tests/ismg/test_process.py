"""The ISMG simulator as a subprocess, and its command line."""

from __future__ import annotations

import pytest

from smsgw.carriers.cmpp import codec
from smsgw.carriers.cmpp.codec import CmppVersion, Deliver
from tests.ismg import IsmgError, IsmgOptions
from tests.ismg.cli import parse_args, to_args
from tests.ismg.client import SpClient
from tests.ismg.process import running_ismg_process


def test_options_survive_the_command_line() -> None:
    options = IsmgOptions(
        port=7890,
        accounts={"901234": "secret", "905555": "pa:ss"},
        versions=frozenset({CmppVersion.V20}),
        window=4,
        tps=50.5,
        report_delay=0.25,
        report_stat="UNDELIV",
        active_test=180.0,
        quiet=True,
    )
    assert parse_args(to_args(options)) == (options, True)
    assert parse_args(["--no-stdin"]) == (IsmgOptions(), False)
    with pytest.raises(SystemExit):
        parse_args(["--account", "nocolon"])
    with pytest.raises(SystemExit):
        parse_args(["--window", "0"])
    with pytest.raises(ValueError, match="port"):
        to_args(IsmgOptions(port=None))


async def test_the_subprocess_serves_and_obeys_its_control_channel() -> None:
    async with running_ismg_process(report_delay=0.05) as ismg:
        assert ismg.port > 0
        client = await SpClient.open(ismg.port, CmppVersion.V20)
        assert (await client.login()).status == 0
        await ismg.throttle(1)
        assert (await client.submit()).result == codec.RESULT_FLOW_CONTROL
        response = await client.submit(registered_delivery=1)
        assert response.result == 0
        report = await client.expect(Deliver)
        assert report.report is not None and report.report.msg_id == response.msg_id
        await client.answer(report)
        assert not await ismg.mo("8613800138000", "你好")
        mo = await client.expect(Deliver)
        assert mo.msg_content == "你好".encode("utf-16-be")
        submit = await ismg.next_event("submit", result=0)
        assert submit["version"] == "2.0"
        assert (await ismg.stats())["submit"] == 2
        with pytest.raises(IsmgError, match="unknown command"):
            await ismg.command({"cmd": "nope"})
        # A crash, as a test of the carrier's reconnection would cause.
        ismg.process.kill()
        assert await client.receive() is None
        await client.aclose()


async def test_a_simulator_that_cannot_start_says_why() -> None:
    with pytest.raises(IsmgError, match="did not start"):
        async with running_ismg_process(host="256.0.0.1", start_timeout=10):
            pass
