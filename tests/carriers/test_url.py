"""The one carrier URL parser (`smsgw.carriers.url`): percent-decoding, plus signs kept, each
parameter once, errors naming the scheme and never the password."""

from __future__ import annotations

import enum

import pytest

from smsgw.carriers.url import parse_carrier_url, parse_choice, parse_float, parse_int

KNOWN = ("mode", "n")


def test_parts_are_percent_decoded_and_plus_stays() -> None:
    url = parse_carrier_url(
        "x://us%40er:p%26w%40d@host.test:99?mode=a+b&n=%2012", "x", KNOWN, usage="x://"
    )
    assert (url.host, url.port, url.username, url.password) == ("host.test", 99, "us@er", "p&w@d")
    assert dict(url.params) == {"mode": "a+b", "n": " 12"}
    assert "p&w@d" not in repr(url)


def test_no_port_is_none_and_empty_fields_are_skipped() -> None:
    url = parse_carrier_url("x://host?&&n=1&", "x", KNOWN, usage="x://")
    assert (url.port, dict(url.params)) == (None, {"n": "1"})


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("x://h?n", "'n': has no value"),
        ("x://h?n=1&n=2", "'n': is given twice"),
        ("x://h?other=1", "unknown parameter 'other'"),
        ("y://h", "not a x carrier URL"),
        ("x://u:secretpw@h:port", "port"),
        ("x://u:secretpw@[::1", "malformed"),
    ],
)
def test_errors_name_the_part_and_not_the_password(url: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment) as caught:
        parse_carrier_url(url, "x", KNOWN, usage="x://")
    assert "secretpw" not in str(caught.value)


def test_a_serverless_url_takes_no_host() -> None:
    with pytest.raises(ValueError, match="no host or path"):
        parse_carrier_url("x://h?n=1", "x", KNOWN, usage="x://?n=1", server=False)


class Mode(enum.Enum):
    FAST = "fast"
    SLOW = "slow"


def test_value_parsers() -> None:
    assert parse_int("x", "n", " 7 ") == 7
    assert parse_float("x", "n", "0.5") == 0.5
    assert parse_choice("x", "mode", " SLOW", Mode) is Mode.SLOW
    with pytest.raises(ValueError, match="x carrier parameter 'n': must be an integer"):
        parse_int("x", "n", "7.5")
    with pytest.raises(ValueError, match=r"must be one of fast \| slow"):
        parse_choice("x", "mode", "medium", Mode)
