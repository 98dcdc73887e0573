"""SMSGW_DB=postgresql://…: libpq's URL passed on, smsgw's defaults, no password shown."""

from __future__ import annotations

import pytest

from smsgw.config import redact_url
from smsgw.store.postgres.url import DEFAULTS, connection_settings, mask_password


def test_the_url_is_passed_on_with_defaults_for_what_it_leaves_unset() -> None:
    settings = connection_settings(
        "postgresql://gw:p%40ss@db.example:6432/sms?sslmode=verify-full&connect_timeout=2"
    )
    assert settings["user"] == "gw"
    assert settings["password"] == "p@ss"
    assert settings["host"] == "db.example"
    assert settings["port"] == "6432"
    assert settings["dbname"] == "sms"
    assert settings["sslmode"] == "verify-full"
    assert settings["connect_timeout"] == "2"  # the URL's, not the default
    assert settings["application_name"] == DEFAULTS["application_name"]
    assert settings["tcp_user_timeout"] == DEFAULTS["tcp_user_timeout"]


def test_a_unix_socket_directory_in_the_query() -> None:
    settings = connection_settings("postgres://gw@/sms?host=/run/postgresql")
    assert settings["host"] == "/run/postgresql"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://gw:s3cret@[::1/sms",
        "postgresql://gw:s3cret@db/sms?bogus=1",
        "postgresql://gw@db/sms?password=s3cret&bogus=1",
    ],
)
def test_a_url_libpq_refuses_is_one_line_without_the_password(url: str) -> None:
    with pytest.raises(ValueError, match="PostgreSQL URL libpq cannot use") as info:
        connection_settings(url)
    assert "s3cret" not in str(info.value)
    assert "\n" not in str(info.value).strip()


def test_passwords_are_masked_wherever_they_appear() -> None:
    url = "postgresql://gw:p%40ss@db/sms?sslmode=require"
    assert mask_password("failed for p@ss and p%40ss", url) == "failed for *** and ***"
    assert "hunter2" not in redact_url("postgresql://gw@db/sms?password=hunter2")
    assert redact_url(url) == "postgresql://gw:***@db/sms?sslmode=require"
