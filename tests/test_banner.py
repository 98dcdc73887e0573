"""The start-up banner (smsgw/banner.py): every app, never a secret."""

from __future__ import annotations

from smsgw import __version__
from smsgw.banner import banner
from smsgw.config import Endpoint, load_config
from smsgw.gateway import GatewayInfo

INFO = GatewayInfo(listen=[Endpoint("127.0.0.1", 9000)], metrics=Endpoint("127.0.0.1", 9102))


def test_carrier_password_is_masked_and_apps_are_listed_without_secrets() -> None:
    config = load_config(
        {
            "SMSGW_CARRIER": "smpp://esme:Zq7pw@10.0.0.1:2775?binds=2",
            "SMSGW_APPS": "shop1:Zq7Kx1@10.0.0.5:9100,shop2:Zq7Kx2",
        }
    )
    text = banner(config, INFO)
    assert "Zq7" not in text
    assert text.endswith("\n")
    assert text.splitlines() == [
        f"smsgw {__version__} listening on 127.0.0.1:9000 (1 worker)",
        "  store: sqlite:///./smsgw.db",
        "  carrier: smpp://esme:***@10.0.0.1:2775?binds=2",
        "  metrics: http://127.0.0.1:9102/metrics and /healthz",
        "  app shop1: receipts to 10.0.0.5:9100, from any address",
        "  app shop2: no receipts, from any address",
    ]


def test_the_demo_app_is_announced_with_its_public_credentials() -> None:
    lines = banner(load_config({}), INFO).splitlines()
    assert lines[-1].startswith("  demo app: appid=demo secret=demo-secret (loopback only")
    assert not any(line.startswith("  app ") for line in lines)
