"""cmpp:// URLs: defaults, every parameter, and errors that name the bad part and never the
shared secret."""

from __future__ import annotations

import pytest

from smsgw.carriers import open_carrier
from smsgw.carriers.cmpp.carrier import CmppCarrier
from smsgw.carriers.cmpp.codec import CmppVersion
from smsgw.carriers.cmpp.settings import CMPP_PARAMETERS, CmppConfig, parse_cmpp_url

SECRET = "s3cr%40t"  # decodes to "s3cr@t": must never appear in an error
BASE = f"cmpp://901234:{SECRET}@ismg.example.net"


def test_defaults() -> None:
    config = parse_cmpp_url(f"{BASE}?src_id=106900")
    assert config == CmppConfig(
        host="ismg.example.net", sp_id="901234", secret="s3cr@t", src_id="106900"
    )
    assert (config.port, config.version, config.window, config.binds) == (
        7890,
        CmppVersion.V30,
        16,
        1,
    )
    assert (config.active_test, config.active_test_timeout, config.active_test_tries) == (
        180,
        60,
        3,
    )
    assert (config.fee_user_type, config.fee_type, config.fee_code) == (2, "01", "000000")
    assert config.gives_reports and config.response_timeout == 60
    assert "s3cr" not in repr(config)


def test_every_parameter() -> None:
    config = parse_cmpp_url(
        f"{BASE}:7900?version=2.0&src_id=1069001234&service_id=MXX0001&registered_delivery=0"
        "&fee_user_type=0&fee_terminal_id=13800000000&fee_type=02&fee_code=10&window=32&tps=50"
        "&binds=2&active_test=30&active_test_timeout=5&active_test_tries=2&response_timeout=20"
        "&bind_timeout=3&bind_wait=1&reconnect_min=2&reconnect_max=30&throttle_pause=0.5"
    )
    assert config.port == 7900 and config.version is CmppVersion.V20
    assert (config.src_id, config.service_id, config.fee_terminal_id) == (
        "1069001234",
        "MXX0001",
        "13800000000",
    )
    assert not config.gives_reports
    assert (config.window, config.tps, config.binds) == (32, 50, 2)
    assert (config.active_test, config.active_test_timeout, config.active_test_tries) == (30, 5, 2)
    assert (config.reconnect_min, config.reconnect_max, config.throttle_pause) == (2, 30, 0.5)


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("", "src_id"),
        ("src_id=1&version=4.0", "version"),
        ("src_id=" + "1" * 22, "src_id"),
        ("src_id=1&service_id=" + "x" * 11, "service_id"),
        ("src_id=1&window=0", "window"),
        ("src_id=1&window=many", "window"),
        ("src_id=1&binds=65", "binds"),
        ("src_id=1&fee_type=1", "fee_type"),
        ("src_id=1&fee_code=abc", "fee_code"),
        ("src_id=1&fee_user_type=4", "fee_user_type"),
        ("src_id=1&active_test_tries=0", "active_test_tries"),
        ("src_id=1&reconnect_min=9&reconnect_max=3", "reconnect_max"),
        ("src_id=1&src_id=2", "src_id"),
        ("src_id=1&colour=red", "colour"),
    ],
)
def test_bad_parameters_name_themselves_and_hide_the_secret(query: str, named: str) -> None:
    with pytest.raises(ValueError, match=repr(named)) as caught:
        parse_cmpp_url(f"{BASE}?{query}")
    assert "s3cr" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("cmpp://901234:pw@/?src_id=1", "no host"),
        ("cmpp://:pw@ismg?src_id=1", "sp_id"),
        ("cmpp://9012345:pw@ismg?src_id=1", "sp_id"),
        ("cmpp://901234:pw@ismg:notaport?src_id=1", "port"),
        ("cmpp://901234:pw@ismg/path?src_id=1", "path"),
        ("smpp://901234:pw@ismg?src_id=1", "scheme"),
    ],
)
def test_bad_urls(url: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment) as caught:
        parse_cmpp_url(url)
    assert ":pw" not in str(caught.value)


def test_unknown_parameter_lists_the_known_ones() -> None:
    with pytest.raises(ValueError) as caught:
        parse_cmpp_url(f"{BASE}?src_id=1&delay=1")
    assert all(name in str(caught.value) for name in CMPP_PARAMETERS)


def test_open_carrier_builds_the_cmpp_carrier() -> None:
    carrier = open_carrier(f"{BASE}?src_id=106900&binds=3&window=8")
    assert isinstance(carrier, CmppCarrier)
    assert (carrier.name, carrier.gives_reports, carrier.concurrency) == ("cmpp", True, 24)
    assert len(carrier.sessions) == 3
