"""The smpp:// URL: defaults, every parameter, and clear errors that never show the password."""

from __future__ import annotations

import attrs
import pytest

from smsgw.carriers import open_carrier
from smsgw.carriers.smpp.carrier import SmppCarrier
from smsgw.carriers.smpp.settings import (
    SMPP_PARAMETERS,
    BindMode,
    IdFormat,
    LongMode,
    ReceiptIdBase,
    SmppConfig,
    parse_smpp_url,
)

PASSWORD = "pw%40x&y"  # decodes to "pw@x&y": must never appear in an error
BASE = f"smpp://esme1:{PASSWORD}@smsc.example.net:2776"


def test_defaults() -> None:
    config = parse_smpp_url("smpp://esme1:pw@smsc.example.net")
    assert config == SmppConfig(host="smsc.example.net", system_id="esme1", password="pw")
    assert config.port == 2775
    assert (config.window, config.tps, config.binds) == (10, 0.0, 1)
    assert (config.enquire_link, config.response_timeout) == (30.0, 10.0)
    assert config.bind is BindMode.TRANSCEIVER
    assert config.long is LongMode.UDH
    assert config.id_format is IdFormat.HEX_DEC
    assert config.receipt_id is ReceiptIdBase.SAME
    assert config.registered_delivery == 1 and config.gives_reports
    assert (config.source_ton, config.source_npi) == (0, 0)
    assert (config.dest_addr_ton, config.dest_addr_npi) == (1, 1)


def test_every_parameter() -> None:
    config = parse_smpp_url(
        "smpp://esme1:p%40ss@10.0.0.5:2776?source_addr=Shop%20One&source_addr_ton=5"
        "&source_addr_npi=0&dest_addr_ton=2&dest_addr_npi=1&system_type=VMA&service_type=CMT"
        "&registered_delivery=0&window=50&tps=25.5&binds=3&enquire_link=0&response_timeout=2.5"
        "&bind_timeout=4&bind_wait=1&reconnect_min=0.5&reconnect_max=30&throttle_pause=3"
        "&bind=tx+rx&long=payload&id_format=as_is&receipt_id=decimal"
    )
    assert config == SmppConfig(
        host="10.0.0.5",
        port=2776,
        system_id="esme1",
        password="p@ss",
        source_addr="Shop One",
        source_addr_ton=5,
        source_addr_npi=0,
        dest_addr_ton=2,
        dest_addr_npi=1,
        system_type="VMA",
        service_type="CMT",
        registered_delivery=0,
        window=50,
        tps=25.5,
        binds=3,
        enquire_link=0.0,
        response_timeout=2.5,
        bind_timeout=4.0,
        bind_wait=1.0,
        reconnect_min=0.5,
        reconnect_max=30.0,
        throttle_pause=3.0,
        bind=BindMode.TRANSMITTER_RECEIVER,
        long=LongMode.PAYLOAD,
        id_format=IdFormat.AS_IS,
        receipt_id=ReceiptIdBase.DECIMAL,
    )
    assert not config.gives_reports
    from_url = {"host", "port", "system_id", "password"}
    assert set(SMPP_PARAMETERS) == set(attrs.fields_dict(SmppConfig)) - from_url


@pytest.mark.parametrize(
    "source, ton, npi",
    [("Shop", 5, 0), ("+4412345", 1, 1), ("10655", 0, 0), ("", 0, 0)],
)
def test_source_ton_npi_follow_the_address(source: str, ton: int, npi: int) -> None:
    config = parse_smpp_url(f"{BASE}?source_addr={source.replace('+', '%2B')}")
    assert (config.source_ton, config.source_npi) == (ton, npi)


def test_password_is_not_in_repr() -> None:
    config = parse_smpp_url(BASE)
    assert config.password == "pw@x&y"
    assert "pw@x" not in repr(config)


@pytest.mark.parametrize(
    "query, named",
    [
        ("window=0", "window"),
        ("window=ten", "window"),
        ("window=1001", "window"),
        ("tps=-1", "tps"),
        ("tps=nan", "tps"),
        ("binds=0", "binds"),
        ("binds=65", "binds"),
        ("enquire_link=-5", "enquire_link"),
        ("response_timeout=0", "response_timeout"),
        ("bind_timeout=inf", "bind_timeout"),
        ("bind_wait=-1", "bind_wait"),
        ("reconnect_min=0", "reconnect_min"),
        ("reconnect_min=10&reconnect_max=5", "reconnect_max"),
        ("throttle_pause=x", "throttle_pause"),
        ("registered_delivery=2", "registered_delivery"),
        ("source_addr_ton=7", "source_addr_ton"),
        ("dest_addr_npi=19", "dest_addr_npi"),
        ("source_addr=123456789012345678901", "source_addr"),
        ("source_addr=%E4%BD%A0", "source_addr"),
        ("system_type=1234567890123", "system_type"),
        ("service_type=123456", "service_type"),
        ("bind=rx", "bind"),
        ("long=split", "long"),
        ("id_format=hex", "id_format"),
        ("receipt_id=octal", "receipt_id"),
        ("window", "window"),
        ("window=1&window=2", "window"),
        ("colour=red", "colour"),
    ],
)
def test_bad_parameters_name_themselves_and_hide_the_password(query: str, named: str) -> None:
    with pytest.raises(ValueError, match=repr(named)) as caught:
        parse_smpp_url(f"{BASE}?{query}")
    assert "pw@x" not in str(caught.value) and PASSWORD not in str(caught.value)


@pytest.mark.parametrize(
    "url, fragment",
    [
        ("smpp://esme1:pw@/?window=1", "no host"),
        ("smpp://:pw@smsc:2775", "system_id"),
        ("smpp://esme1:pw@smsc:notaport", "port"),
        ("smpp://esme1:pw@smsc:0", "port"),
        ("smpp://esme1:pw@smsc:2775/path", "path"),
        ("smpp://esme1:pw@smsc:2775#frag", "fragment"),
        ("smpp://esme1:Zz9Zz9Zz9@smsc", "password"),
        ("smpp://esme1234567890123:pw@smsc", "system_id"),
        ("smpp://esme1:pw@[::1:2775", "malformed"),
        ("sim://?fail=0", "scheme"),
    ],
)
def test_bad_urls(url: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment) as caught:
        parse_smpp_url(url)
    assert "Zz9" not in str(caught.value)
    assert ":pw" not in str(caught.value) and "'pw'" not in str(caught.value)


def test_long_password_error_does_not_echo_it() -> None:
    with pytest.raises(ValueError) as caught:
        parse_smpp_url("smpp://esme1:Sup3rS3cretPass@smsc")
    assert "Sup3rS3cret" not in str(caught.value)
    assert "'password'" in str(caught.value)


def test_open_carrier_builds_the_smpp_carrier() -> None:
    carrier = open_carrier(f"{BASE}?binds=2&registered_delivery=0")
    assert isinstance(carrier, SmppCarrier)
    assert carrier.name == "smpp"
    assert not carrier.gives_reports
    assert len(carrier.sessions) == 2
    with pytest.raises(ValueError, match="'window'") as caught:
        open_carrier(f"{BASE}?window=-1")
    assert "pw@x" not in str(caught.value)
