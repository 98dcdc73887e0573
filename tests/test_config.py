import ipaddress
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from smsgw.config import (
    DEMO_APPID,
    SETTINGS,
    Config,
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
        ({"SMSGW_APPS": "123:a,0123:b"}, "SMSGW_APPS", "'0123' starts with 0"),
        ({"SMSGW_APPS": "shop:a,shop:b"}, "SMSGW_APPS", "'shop' is defined twice"),
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


# --- configuration that cannot be silently wrong (issue 10, items 5 and 6) ---


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("SMSGW_LISTENER", "did you mean SMSGW_LISTEN?"),
        ("SMSGW_MAXBODY", "did you mean SMSGW_MAX_BODY?"),
        ("SMSGW_APP", "did you mean SMSGW_APPS?"),
        ("SMSGW_COLOUR", "no such setting"),
    ],
)
def test_an_unknown_variable_stops_start_up_naming_the_closest(name: str, suggestion: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({name: "127.0.0.1:9000"})
    assert caught.value.variable == name
    assert str(caught.value) == (
        f"{name}: unknown variable, {suggestion} (`smsgw serve --help` lists them)"
    )


def test_test_harness_variables_are_not_the_gateways() -> None:
    assert load_config({"SMSGW_TEST_PYZ": "/x.pyz", "SMSGW_TEST_PG_DSN": "postgresql://"}).demo


def test_every_setting_is_read_and_its_default_is_the_default() -> None:
    defaults = Config()
    names = [setting.name for setting in SETTINGS]
    assert len(names) == len(set(names))
    for setting in SETTINGS:
        if setting.field is None:
            continue
        shown = setting.default.strip("`")
        if setting.default.startswith("`"):
            assert setting.parse(shown) == getattr(defaults, setting.field), setting.name
        else:
            assert getattr(defaults, setting.field) is None, setting.name


@pytest.mark.parametrize(
    ("apps", "reason"),
    [
        # One app whose secret would be `a;shop2:b` until the character set was checked.
        ("shop1:a;shop2:b", "secret of 'shop1' has a character outside"),
        ("shop1:a b", "secret of 'shop1' has a character outside"),
        ("sh op:abc", "appid 'sh op' has a character outside"),
        ("shop1:密码", "secret of 'shop1' has a character outside"),
        # Padding: an empty field opens `000`, and `0123456789` is `123456789`.
        ("shop1:000", "secret of 'shop1' starts with 0"),
        ("shop1:0123456789", "secret of 'shop1' starts with 0"),
        ("0shop:abc", "appid '0shop' starts with 0"),
        ("000:abc", "appid '000' starts with 0"),
        ("shop1:", "secret of 'shop1' is empty"),
    ],
)
def test_app_ids_and_secrets_have_a_checked_character_set(apps: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({"SMSGW_APPS": apps})
    assert caught.value.variable == "SMSGW_APPS"
    assert reason in str(caught.value)


def test_the_character_set_is_checked_in_the_apps_file_too(tmp_path: Path) -> None:
    path = tmp_path / "apps.toml"
    for table, reason in [
        ('[apps.shop1]\nsecret = "a;b"\n', "has a character outside"),
        ('[apps.shop1]\nsecret = "007"\n', "starts with 0"),
        ('[apps."0shop"]\nsecret = "abc"\n', "appid '0shop' starts with 0"),
    ]:
        path.write_text(table)
        with pytest.raises(ConfigError) as caught:
            load_config({"SMSGW_APPS_FILE": str(path)})
        assert reason in str(caught.value), table


@pytest.mark.parametrize(
    "apps",
    [
        "shop1:MyVeryLongZq7KxValue",
        "shop1:Zq7Kx;2",
        "shop1:0Zq7Kx",
        "shop1Zq7Kx",  # no colon: the whole entry may be the secret
        "shop1=Zq7Kx",
    ],
)
def test_no_error_quotes_a_secret(apps: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({"SMSGW_APPS": apps})
    assert "Zq7" not in str(caught.value)


def test_base64_and_token_urlsafe_secrets_are_accepted() -> None:
    config = load_config({"SMSGW_APPS": "shop-1.eu:aB3+/x=_~-.9,shop_2:Zk9_q-1"})
    assert [(app.appid, app.secret) for app in config.apps] == [
        ("shop-1.eu", "aB3+/x=_~-.9"),
        ("shop_2", "Zk9_q-1"),
    ]


def settings_table() -> str:
    """README's configuration table, as SETTINGS makes it."""
    rows = [f"| `{s.name}` | {s.default} | {s.meaning} |" for s in SETTINGS]
    return "\n".join(["| variable | default | meaning |", "|---|---|---|", *rows]) + "\n"


def test_readme_configuration_table_is_the_settings_table() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    table = settings_table()
    assert table in readme, f"README's configuration table should read:\n{table}"


class Recording(Mapping[str, str]):
    """An environment that remembers every name looked up in it."""

    def __init__(self, values: dict[str, str]) -> None:
        self.given = values
        self.looked_up: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.looked_up.add(name)
        return self.given[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.given)

    def __len__(self) -> int:
        return len(self.given)


def test_every_variable_load_config_reads_is_a_setting() -> None:
    """A variable read outside SETTINGS would work and yet be refused as unknown, and be
    missing from --help and README: a new one is a row of SETTINGS."""
    env = Recording({})
    load_config(env)
    assert {name for name in env.looked_up if name.startswith("SMSGW_")} == {
        setting.name for setting in SETTINGS
    }
