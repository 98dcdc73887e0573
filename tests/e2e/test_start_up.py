"""What an operator sees of a real `smsgw` process: the banner, request lines, `--help`, and
configuration mistakes stopped at start (issue 10, items 5 to 8)."""

from __future__ import annotations

import json
from pathlib import Path

from smsgw.config import SETTINGS
from tests.gateway_process import base_env, gateway_process, run_cli

APPS = """\
[apps.shop1]
secret = "Zq7Kx-one"
receipt_endpoint = "127.0.0.1:9"
status_reports = true
networks = ["127.0.0.0/8", "192.0.2.0/24"]
tps = 50

[apps.shop2]
secret = "Zq7Kx-two"
"""


async def test_the_banner_names_each_app_never_its_secret(tmp_path: Path) -> None:
    apps = tmp_path / "apps.toml"
    apps.write_text(APPS)
    async with gateway_process(tmp_path, {"SMSGW_APPS_FILE": str(apps)}) as gw:
        await gw.output_line("app shop2:")
        banner = b"\n".join(gw.stdout).decode()
        wrong_app = ["--appid", "ghost", "--secret", "Zq7Kx-one"]
        message = ["--phone", "8613800138000", "--message", "hi"]
        sent = await run_cli(
            ["send", "--server", gw.address, *wrong_app, *message], base_env(tmp_path, {})
        )
        assert json.loads(sent.stdout)["status"] == "1005"
    lines = banner.splitlines()
    assert lines[0].endswith(" (1 worker)")
    assert (
        "  app shop1: receipts to 127.0.0.1:9 (and A003 status reports), "
        "from 127.0.0.0/8, 192.0.2.0/24, 50 msg/s"
    ) in lines
    assert "  app shop2: no receipts, from any address" in lines
    assert "demo" not in banner and "Zq7" not in banner
    log = gw.log_text()
    # The app id that was tried, not `app=-`; the secret that was tried never.
    assert "B001 app=ghost items=0 status=1005" in log
    assert "Zq7" not in log


async def test_a_misspelt_variable_stops_start_up_with_one_line(tmp_path: Path) -> None:
    env = base_env(tmp_path, {"SMSGW_LISTENER": "0.0.0.0:9000"})
    for command in (["serve"], ["status", "m1"], ["inbox"]):
        done = await run_cli(command, env)
        assert done.returncode == 2
        assert done.stderr.decode().splitlines() == [
            "smsgw: configuration error: SMSGW_LISTENER: unknown variable, did you mean "
            "SMSGW_LISTEN? (`smsgw serve --help` lists them)"
        ]
    assert not (tmp_path / "smsgw.db").exists()


async def test_apps_separated_by_semicolons_stop_start_up(tmp_path: Path) -> None:
    done = await run_cli(["serve"], base_env(tmp_path, {"SMSGW_APPS": "shop1:a;shop2:b"}))
    assert done.returncode == 2
    (line,) = done.stderr.decode().splitlines()
    assert "secret of 'shop1' has a character outside" in line
    assert "separate apps with commas" in line and "shop2" not in line


async def test_a_too_long_secret_is_refused_without_being_printed(tmp_path: Path) -> None:
    env = base_env(tmp_path, {"SMSGW_APPS": "shop1:MyVeryLongSecretValue"})
    done = await run_cli(["serve"], env)
    assert done.returncode == 2
    assert b"MyVeryLong" not in done.stderr + done.stdout
    assert b"secret of 'shop1' is longer than 15 characters" in done.stderr


async def test_help_tells_every_variable_and_default(tmp_path: Path) -> None:
    env = base_env(tmp_path, {})
    serve = (await run_cli(["serve", "--help"], env)).stdout.decode()
    for setting in SETTINGS:
        assert f"{setting.name} (default: {setting.default.strip('`')})" in serve
    assert "SMSGW_TEST_" in serve  # the exemption is documented where the names are
    send = (await run_cli(["send", "--help"], env)).stdout.decode()
    for default in ("(default: 127.0.0.1:9000)", "(default: demo)", "(default: 30.0)"):
        assert default in send
    listen = (await run_cli(["listen", "--help"], env)).stdout.decode()
    assert "(default: 9100;" in listen
    for command in ("status", "inbox"):
        shown = (await run_cli([command, "--help"], env)).stdout.decode()
        assert "SMSGW_DB" in shown.replace("\n", " ")
