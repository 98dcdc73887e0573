import ipaddress
from pathlib import Path

import pytest

from smsgw.config import (
    DEMO_APPID,
    ConfigError,
    Endpoint,
    load_config,
    parse_duration,
    parse_endpoint,
    redact_url,
)
from smsgw.protocol.framing import LengthStyle


def test_nothing_set_is_the_loopback_demo() -> None:
    config = load_config({})
    assert config.listen == Endpoint("127.0.0.1", 9000)
    assert config.db_url == "sqlite:///./smsgw.db"
    assert config.carrier_url.startswith("sim://")
    assert config.demo
    assert [app.appid for app in config.apps] == [DEMO_APPID]


def test_compact_apps() -> None:
    config = load_config({"SMSGW_APPS": "shop1:s3cret@127.0.0.1:9100, shop2:other"})
    assert not config.demo
    shop1, shop2 = config.apps
    assert shop1.appid == "shop1" and shop1.secret == "s3cret"
    assert shop1.receipt_endpoint == Endpoint("127.0.0.1", 9100)
    assert shop2.receipt_endpoint is None


def test_apps_file(tmp_path: Path) -> None:
    path = tmp_path / "apps.toml"
    path.write_text(
        """
[apps.shop1]
secret = "s3cret"
receipt_endpoint = "[::1]:9100"
status_reports = true
keep_alive = true
networks = ["10.0.0.0/8", "127.0.0.1"]
tps = 50
push_length = "binary"
"""
    )
    (app,) = load_config({"SMSGW_APPS_FILE": str(path)}).apps
    assert app.receipt_endpoint == Endpoint("::1", 9100)
    assert app.status_reports and app.keep_alive
    assert app.networks == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("127.0.0.1/32"),
    )
    assert app.tps == 50
    assert app.push_length_style is LengthStyle.BINARY
    assert app.allows("10.1.2.3") and app.allows("127.0.0.1")
    assert not app.allows("192.0.2.1")


def test_report_timeout_defaults_to_three_days_and_takes_a_duration() -> None:
    assert load_config({}).report_timeout == 3 * 86400
    assert load_config({"SMSGW_REPORT_TIMEOUT": "12h"}).report_timeout == 12 * 3600


def test_secret_is_not_in_repr() -> None:
    config = load_config({"SMSGW_APPS": "shop1:topsecretvalue"})
    assert "topsecretvalue" not in repr(config)


@pytest.mark.parametrize(
    ("env", "variable", "reason"),
    [
        ({"SMSGW_LISTEN": "nowhere"}, "SMSGW_LISTEN", "host:port"),
        ({"SMSGW_LISTEN": "127.0.0.1:70000"}, "SMSGW_LISTEN", "out of range"),
        ({"SMSGW_MAX_BODY": "big"}, "SMSGW_MAX_BODY", "integer"),
        ({"SMSGW_MAX_BATCH": "0"}, "SMSGW_MAX_BATCH", "at least 1"),
        ({"SMSGW_READ_TIMEOUT": "soon"}, "SMSGW_READ_TIMEOUT", "duration"),
        ({"SMSGW_READ_TIMEOUT": "0"}, "SMSGW_READ_TIMEOUT", "more than zero"),
        ({"SMSGW_REPORT_TIMEOUT": "never"}, "SMSGW_REPORT_TIMEOUT", "duration"),
        ({"SMSGW_LOG_LEVEL": "loud"}, "SMSGW_LOG_LEVEL", "expected debug"),
        ({"SMSGW_LOG_FORMAT": "xml"}, "SMSGW_LOG_FORMAT", "text or json"),
        ({"SMSGW_APPS": "noseparator"}, "SMSGW_APPS", "appid:secret"),
        ({"SMSGW_APPS": "a:" + "x" * 16}, "SMSGW_APPS", "longer than 15"),
        ({"SMSGW_APPS": "123:a,0123:b"}, "SMSGW_APPS", "same id on the wire"),
        ({"SMSGW_APPS": "shop:a,shop:b"}, "SMSGW_APPS", "same id on the wire"),
        ({"SMSGW_APPS": "shop:a@nowhere"}, "SMSGW_APPS", "host:port"),
        ({"SMSGW_LISTEN": "0.0.0.0:9000"}, "SMSGW_APPS", "loopback"),
        ({"SMSGW_TLS_CERT": "/etc/hostname"}, "SMSGW_TLS_KEY", "both"),
        ({"SMSGW_TLS_CERT": "/no/such/file"}, "SMSGW_TLS_CERT", "cannot read"),
        ({"SMSGW_APPS_FILE": "/no/such/file"}, "SMSGW_APPS_FILE", "cannot read"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], variable: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(env)
    assert caught.value.variable == variable
    assert reason in str(caught.value)
    assert str(caught.value).startswith(f"{variable}: ")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[apps.a]\nsecret = 1\n", "must be a str"),
        ("[apps.a]\n", "secret is missing"),
        ('[apps.a]\nsecret = "x"\ncolour = "red"\n', "unknown key"),
        ('[apps.a]\nsecret = "x"\nnetworks = ["not-a-net"]\n', "not an IP network"),
        ('[apps.a]\nsecret = "x"\ntps = -1\n', "more than zero"),
        ('[apps.a]\nsecret = "x"\npush_length = "hex"\n', "decimal or binary"),
        ("this is not toml", "not valid TOML"),
        ("[other]\n", "at least one [apps.ID]"),
    ],
)
def test_bad_apps_file(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "apps.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config({"SMSGW_APPS_FILE": str(path)})
    assert caught.value.variable == "SMSGW_APPS_FILE"
    assert reason in str(caught.value)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10", 10.0),
        ("10s", 10.0),
        ("500ms", 0.5),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("30d", 2592000.0),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_endpoints() -> None:
    assert parse_endpoint("[::1]:0") == Endpoint("::1", 0)
    assert str(Endpoint("::1", 5)) == "[::1]:5"
    assert str(parse_endpoint("localhost:9")) == "localhost:9"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("smpp://esme:pa55@10.0.0.1:2775?window=10", "smpp://esme:***@10.0.0.1:2775?window=10"),
        ("smpp://esme:p@ss@host:2775", "smpp://esme:***@host:2775"),
        ("smpp://esme@host:2775", "smpp://esme@host:2775"),
        ("sim://?fail=0.05", "sim://?fail=0.05"),
        ("sqlite:///./smsgw.db", "sqlite:///./smsgw.db"),
        (
            "postgresql://gw:s3@db:5432/sms?sslmode=require",
            "postgresql://gw:***@db:5432/sms?sslmode=require",
        ),
        (
            "postgresql://gw@/sms?host=/run/pg&password=s3",
            "postgresql://gw@/sms?host=/run/pg&password=***",
        ),
    ],
)
def test_redact_url_hides_passwords(url: str, shown: str) -> None:
    assert redact_url(url) == shown
