"""Authentication against guessing, over real loopback sockets from many source addresses
(127.0.0.0/8 is all loopback on Linux): a per-app failure budget that rotation cannot escape,
and an allowlist that answers before the secret is looked at."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import item, make_config, running_gateway, submit_raw


def loopback(n: int) -> str:
    return f"127.0.0.{n}"


async def test_rotating_addresses_cannot_escape_the_per_app_budget(tmp_path: Path) -> None:
    config = make_config(tmp_path, SMSGW_AUTH_FAIL_LIMIT="3", SMSGW_AUTH_FAIL_APP_LIMIT="20")
    async with running_gateway(config) as gw:
        # The merchant's own client authenticates first: its address is known to the app.
        assert (await submit_raw(gw.port, [item(msgid="own-1")], source=loopback(1)))[
            "status"
        ] == "0"
        statuses = []
        for n in range(2, 102):  # 100 addresses, two guesses each: under the per-address limit
            for _ in range(2):
                reply = await submit_raw(gw.port, [item()], secret="guess", source=loopback(n))
                statuses.append(reply["status"])
        assert statuses[:20] == ["1005"] * 20
        assert set(statuses[20:]) == {"1007"}
        # The right secret from a new address is refused too (else a 0 would end the search)...
        fresh = await submit_raw(gw.port, [item(msgid="new")], source=loopback(200))
        assert fresh["status"] == "1007"
        # ...but the app's own client is never locked out.
        own = await submit_raw(gw.port, [item(msgid="own-2")], source=loopback(1))
        assert own["status"] == "0"


async def test_an_apps_networks_are_never_locked_out(tmp_path: Path) -> None:
    apps = tmp_path / "apps.toml"
    apps.write_text('[apps.shop1]\nsecret = "s3cret"\nnetworks = ["127.0.0.0/26"]\n')
    config = make_config(
        tmp_path,
        SMSGW_APPS="",
        SMSGW_APPS_FILE=str(apps),
        SMSGW_AUTH_FAIL_LIMIT="3",
        SMSGW_AUTH_FAIL_APP_LIMIT="5",
    )
    async with running_gateway(config) as gw:
        inside = [
            (await submit_raw(gw.port, [item()], secret="guess", source=loopback(n)))["status"]
            for n in range(2, 42)
        ]
        outside = [
            (await submit_raw(gw.port, [item()], secret="guess", source=loopback(n)))["status"]
            for n in range(64, 104)
        ]
        assert set(inside) == {"1005"}  # each inside address only meets its own limit
        assert set(outside) == {"1006"}
        reply = await submit_raw(gw.port, [item(msgid="inside")], source=loopback(50))
        assert reply["status"] == "0"
